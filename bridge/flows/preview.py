"""Try a mapping: orders from a JSON file laid out as the warehouse would get them.

`fbm-bridge preview --mapping FILE --orders FILE` needs no config, no credentials, no Amazon and
no ledger: it is how a new or edited mapping is tried. Every order in the file is laid out,
whatever its status (preview tests the layout, not the routing). The orders file holds either

- records, as `samples/orders.json` (`records.order_to_dict`: keys like `order_id`), or
- Amazon's own searchOrders `Order` objects (Orders API v2026-01-01: keys like `orderId`), as
  `bridge/demo_data/sandbox-orders.json`, or a whole searchOrders answer `{"orders": [...]}`;

which of the two is told by the first order's keys. A file that is not such a list is refused
(FixTheSetup, exit 2); an order in it that cannot be read is listed with why, like an order the
mapping cannot lay out, and the others are laid out as usual.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.errors import BadRecord, FixTheSetup
from bridge.formats.amazon_orders import MAX_QUANTITY, order_from_v2026
from bridge.formats.orders import RenderedFile, render_orders
from bridge.mapping import Mapping, load_mapping
from bridge.records import Order, iso_z, order_from_dict, shown

RECORDS, AMAZON = "records", "Amazon searchOrders Order objects, v2026-01-01"


@dataclass(frozen=True)
class OrdersFile:
    kind: str  # RECORDS or AMAZON
    orders: tuple[Order, ...]
    unreadable: dict[str, str]  # order id (or orders[i]) -> why it cannot be read


@dataclass(frozen=True)
class MappingPreview:
    mapping: Mapping
    mapping_path: Path
    orders_path: Path
    run_time: datetime
    source: OrdersFile
    files: tuple[RenderedFile, ...]
    failures: dict[str, str]  # order id -> why the mapping cannot lay it out
    warnings: tuple[str, ...] = ()  # problems of the mapping's [stock] and [shipments]: not preview's

    def summary(self) -> str:
        layout = self.mapping.orders
        per = "one file per order" if layout.file_per == "order" else "one file per run"
        read = len(self.source.orders)
        total = read + len(self.source.unreadable)
        lines = [
            f"mapping {self.mapping.name} ({layout.format}, {per}) from {self.mapping_path}",
            f"orders: {read if read == total else f'{read} of {total}'} read from {self.orders_path} ({self.source.kind}), laid out as of {iso_z(self.run_time)}",
        ]
        for warning in self.warnings:
            lines.append(f"  warning: {warning} (preview lays out orders only; `check` and the service refuse"
                         " the mapping until this is fixed)")
        for rendered in self.files:
            lines.append(f"  would write {rendered.name} ({len(rendered.data)} bytes) orders={','.join(map(shown, rendered.order_ids))}")
        for where, why in self.source.unreadable.items():
            lines.append(f"  cannot read {where}: {why}")
        for order_id, why in sorted(self.failures.items()):
            lines.append(f"  would not lay out {shown(order_id)}: {why}")
        laid_out = sum(len(rendered.order_ids) for rendered in self.files)
        lines.append(f"files={len(self.files)} orders_laid_out={laid_out} not_laid_out={len(self.failures)}"
                     f" unreadable={len(self.source.unreadable)}")
        return "\n".join(lines)


def preview_mapping(mapping_path: Path, orders_path: Path, run_time: datetime) -> MappingPreview:
    """Load the mapping (ConfigError listing every problem) and the orders file (FixTheSetup if it
    is not one), and lay the orders out in memory."""
    warnings: list[str] = []
    mapping = load_mapping(mapping_path, warnings=warnings)
    try:
        data = Path(orders_path).read_bytes()
    except OSError as problem:
        raise FixTheSetup(f"{orders_path}: cannot read the orders file ({problem.strerror})") from None
    source = read_orders(data, str(orders_path))
    result = render_orders(mapping.orders, source.orders, run_time)
    return MappingPreview(mapping, Path(mapping_path), Path(orders_path), run_time, source,
                          result.files, dict(result.failures), tuple(warnings))


def write_files(preview: MappingPreview, out: Path) -> list[Path]:
    """Write the previewed files into `out`, each mode 0600 whatever the umask (they hold buyer
    data); an existing file of the same name is replaced, a link in its place is refused."""
    written = []
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        for rendered in preview.files:
            path = out / rendered.name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(rendered.data)
            written.append(path)
    except OSError as problem:
        raise FixTheSetup(f"cannot write the preview into {out}: {problem.strerror}"
                          f"{f' ({problem.filename})' if problem.filename else ''}") from None
    return written


# --- reading an orders file (pure) ------------------------------------------------------------

def read_orders(data: bytes, label: str) -> OrdersFile:
    """The orders in a JSON file's bytes; FixTheSetup when the file as a whole is not a list of
    orders, and each order that cannot be read listed in `unreadable` with why."""
    items = _items(data, label)
    kind = _kind(items[0], label)
    orders: list[Order] = []
    unreadable: dict[str, str] = {}
    for index, item in enumerate(items):
        where = f"orders[{index}]"
        if not isinstance(item, dict):
            unreadable[where] = "not a JSON object"
            continue
        key = "order_id" if kind == RECORDS else "orderId"
        if key not in item:
            unreadable[where] = f"no {key!r}: not an order of the same kind as the first ({kind})"
            continue
        try:
            orders.append(_record(item) if kind == RECORDS else order_from_v2026(item))
        except BadRecord as problem:
            unreadable[where] = str(problem)
    return OrdersFile(kind, tuple(orders), unreadable)


def _items(data: bytes, label: str) -> list[Any]:
    try:
        parsed = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise FixTheSetup(f"{label}: not UTF-8 text; an orders file is JSON") from None
    except json.JSONDecodeError as problem:
        raise FixTheSetup(f"{label}: not JSON: {problem.msg} (line {problem.lineno}, column {problem.colno})") from None
    except RecursionError:
        raise FixTheSetup(f"{label}: not an orders file: its lists or objects are nested too deeply to read") from None
    except ValueError:  # an integer of thousands of digits (Python's limit on int from text)
        raise FixTheSetup(f"{label}: not an orders file: it holds a number too long to read") from None
    if isinstance(parsed, dict) and isinstance(parsed.get("orders"), list):
        parsed = parsed["orders"]  # a whole searchOrders answer
    if not isinstance(parsed, list):
        raise FixTheSetup(
            f"{label}: expected a JSON list of orders (records like samples/orders.json, or Amazon's"
            f' searchOrders Order objects) or a searchOrders answer {{"orders": [...]}}, not a {_json_type(parsed)}'
        )
    if not parsed:
        raise FixTheSetup(f"{label}: holds no orders")
    return parsed


def _kind(first: Any, label: str) -> str:
    if isinstance(first, dict) and "order_id" in first:
        return RECORDS
    if isinstance(first, dict) and "orderId" in first:
        return AMAZON
    raise FixTheSetup(
        f"{label}: orders[0] is neither a records order (with 'order_id', like samples/orders.json)"
        " nor an Amazon searchOrders Order (with 'orderId')"
    )


def _record(item: dict[str, Any]) -> Order:
    """`records.order_from_dict`, its failures named by field (never by value: buyer data), and
    its numbers held to what an order from Amazon may carry, as the pull holds them."""
    order_id = _id(item, "order_id")
    try:
        return _checked_numbers(order_from_dict(item), order_id)
    except BadRecord:
        raise
    except KeyError as problem:
        why = f"missing field {problem.args[0]!r}"
    except TypeError as problem:
        unknown = re.search(r"unexpected keyword argument '([^']+)'", str(problem))
        missing = re.search(r"missing \d+ required (?:positional|keyword-only) arguments?: (.+)$", str(problem))
        why = (f"unknown field {unknown.group(1)!r}" if unknown
               else f"missing field {missing.group(1)}" if missing
               else "a field holds a value of the wrong type (a list or object where text is expected?)")
    except (ValueError, ArithmeticError, AttributeError) as problem:
        why = f"a field holds a value that cannot be read ({type(problem).__name__}; dates are ISO 8601, amounts decimal text)"
    raise BadRecord(f"order {order_id}: {why}")


def _checked_numbers(order: Order, order_id: str) -> Order:
    """Whole, positive quantities (not above MAX_QUANTITY) and finite amounts, as the pull's
    parser holds Amazon's data to (`formats.amazon_orders`)."""
    for number, line in enumerate(order.lines, 1):
        quantity = line.quantity
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            why = "is not a whole number"
        elif quantity < 0:
            why = "is negative"
        elif quantity == 0 and order.status != "CANCELLED":
            why = "is 0 in an order that is not cancelled"
        elif quantity > MAX_QUANTITY:
            why = f"is more than {MAX_QUANTITY} units"
        else:
            continue
        raise BadRecord(f"order {order_id}: lines[{number}].quantity {why}")
    amounts = [("order_total", order.order_total)] + [
        (f"lines[{number}].unit_price", line.unit_price) for number, line in enumerate(order.lines, 1)]
    for name, amount in amounts:
        if amount is not None and not amount.is_finite():
            raise BadRecord(f"order {order_id}: {name} is not a number")
    return order


def _id(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    return shown(value) if isinstance(value, str) and value else "?"


def _json_type(value: Any) -> str:
    return {dict: "JSON object", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")
