"""A simulated warehouse system: writes shipment confirmation and stock files the way a mapping's WMS does.

For the demo, the benchmarks and tests: `render_confirmations` lays out shipped lines in a
mapping's [shipments] format and `render_stock` counted stock in its [stock] format (the
inverse of bridge.formats.readers); `confirm_delivered` answers the orders the bridge
delivered to a warehouse with one confirmation file, and `drop_stock` drops a stock file, both
uploaded the careful way (temporary name, then rename).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from bridge.config import WarehouseSettings
from bridge.edges.folders import Drop
from bridge.ledger import Ledger, OrderStatus
from bridge.mapping import ShipmentLayout, StockLayout


@dataclass(frozen=True)
class Shipped:
    """One line a warehouse shipped: the values of a confirmation row."""

    order_id: str
    item: str  # SKU or Amazon order item id, as the layout's item column wants
    quantity: int
    carrier: str  # as the warehouse names it
    tracking: str
    ship_date: datetime  # aware
    method: str = ""


def render_confirmations(layout: ShipmentLayout, shipped: Iterable[Shipped]) -> bytes:
    rows = [_values(layout, line) for line in shipped]
    if layout.format == "csv":
        return _csv(layout, rows)
    if layout.format == "xlsx":
        return _xlsx(layout, rows)
    return _xml(layout, rows)


def _values(layout: ShipmentLayout, line: Shipped) -> dict[str, object]:
    local = line.ship_date.astimezone(ZoneInfo(layout.timezone))
    date = local.replace(tzinfo=None) if layout.format == "xlsx" else local.strftime(layout.date_format)
    return {"order_id": line.order_id, layout.item_field: line.item, "quantity": line.quantity,
            "carrier": line.carrier, "shipping_method": line.method,
            "tracking_number": line.tracking, "ship_date": date}


@dataclass(frozen=True)
class Counted:
    """One line of a warehouse's stock count: an article (the warehouse's SKU) in a lot and bin."""

    sku: str
    quantity: int
    lot: str = ""
    location: str = ""


@dataclass(frozen=True)
class _Table:
    """What the writers below need of a layout, for [stock] as for [shipments]."""

    format: str
    columns: tuple[tuple[str, str], ...]
    encoding: str
    delimiter: str
    header: bool
    sheet: str
    record: str


def render_stock(layout: StockLayout, counted: Iterable[Counted], counted_at: datetime) -> bytes:
    """A stock file as the layout's WMS writes it: one row per line counted, each stamped with
    the time of the count (`counted_at`, aware) when the layout has a timestamp column."""
    names = layout.columns
    columns = tuple((field, column) for field, column in (
        ("sku", names.sku), ("quantity", names.quantity), ("timestamp", names.timestamp),
        ("lot", names.lot), ("location", names.location)) if column is not None)
    table = _Table(layout.format, columns, layout.encoding, layout.delimiter, layout.header, layout.sheet,
                   layout.record)
    stamp = _stock_time(layout, counted_at)
    rows = [{"sku": line.sku, "quantity": line.quantity, "timestamp": stamp, "lot": line.lot,
             "location": line.location} for line in counted]
    if layout.format == "csv":
        return _csv(table, rows)
    if layout.format == "xlsx":
        return _xlsx(table, rows)
    return _xml(table, rows)


def _stock_time(layout: StockLayout, at: datetime) -> object:
    local = at.astimezone(ZoneInfo(layout.timezone))
    if layout.format == "xlsx":
        return local.replace(tzinfo=None, microsecond=0)  # a date cell
    if layout.timestamp_format == "iso":
        return local.isoformat(timespec="seconds")
    return local.strftime(layout.timestamp_format)


def _csv(layout: "ShipmentLayout | _Table", rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=layout.delimiter, lineterminator="\r\n")
    if layout.header:
        writer.writerow([column for _, column in layout.columns])
    for row in rows:
        if layout.header:
            writer.writerow([row.get(field, "") for field, _ in layout.columns])
        else:
            width = max(int(column) for _, column in layout.columns)
            cells = [""] * width
            for field, column in layout.columns:
                cells[int(column) - 1] = row.get(field, "")
            writer.writerow(cells)
    encoding = {"utf-8": "utf-8", "cp1252": "cp1252", "utf-16": "utf-16"}[layout.encoding]
    return out.getvalue().encode(encoding)


def _xlsx(layout: "ShipmentLayout | _Table", rows: list[dict]) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(layout.sheet or "Sheet1")
    if layout.header:
        sheet.append([column for _, column in layout.columns])
    for row in rows:
        sheet.append([row.get(field, "") for field, _ in layout.columns])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _xml(layout: "ShipmentLayout | _Table", rows: list[dict]) -> bytes:
    """Nests rows as the record path says: an ancestor element is shared by consecutive rows
    whose values at its level (and above) are the same."""
    from lxml import etree

    path = layout.record.split("/")
    depth = len(path) - 1  # levels below the document element; the record is at `depth`
    placed = [(field, *_placement(column)) for field, column in layout.columns]
    root = etree.Element(path[0])
    current: list[tuple[tuple, object]] = []
    for row in rows:
        parent = root
        for level in range(1, depth + 1):
            key = tuple(str(row.get(f, "")) for f, ups, _ in placed if depth - ups <= level)
            if level - 1 < len(current) and current[level - 1][0] == key and level < depth:
                parent = current[level - 1][1]
                continue
            element = etree.SubElement(parent, path[level])
            del current[level - 1:]
            current.append((key, element))
            for field, ups, steps in placed:  # this level's own fields first, records after
                if depth - ups == level:
                    _set(element, steps, row.get(field, ""))
            parent = element
    etree.indent(root, space="  ")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8") + b"\n"


def _placement(column: str) -> tuple[int, list[str]]:
    parts = column.split("/")
    ups = 0
    while parts and parts[0] == "..":
        ups += 1
        parts.pop(0)
    return ups, parts


def _set(element, steps: Sequence[str], value: object) -> None:
    from lxml import etree

    *names, last = steps
    name, _, attribute = last.partition("@")
    for child_name in [*names, *([name] if name else [])]:
        found = element.find(child_name)
        element = found if found is not None else etree.SubElement(element, child_name)
    if attribute:
        element.set(attribute, str(value))
    else:
        element.text = str(value)


def tracking_number(order_id: str, package: int = 1) -> str:
    """A made-up tracking number, stable for an order and package."""
    digest = hashlib.sha256(f"{order_id}/{package}".encode()).hexdigest()
    return "1Z" + str(int(digest[:16], 16))[:16]


def confirm_delivered(ledger: Ledger, warehouse: WarehouseSettings, drop: Drop, folder: str,
                      now: datetime, *, carrier: str | None = None,
                      order_ids: Iterable[str] | None = None) -> str | None:
    """The simulated WMS ships every order the bridge delivered to `warehouse` (or those of
    `order_ids`), each in one parcel with all its lines, and drops one confirmation file for
    them in `folder` of `drop` (temporary name, then rename), laid out by the warehouse's
    mapping. Returns the file's name, or None when there is nothing to confirm.

    For the demo: `confirm_delivered(service.ledger, warehouse, SftpDrop(warehouse.sftp),
    warehouse.shipments_folder, now)`, then `service.shipments.run(...)` takes it."""
    layout = warehouse.mapping.shipments
    if layout is None:
        return None
    wanted = set(order_ids) if order_ids is not None else None
    orders = [o for o in ledger.orders_in(OrderStatus.DELIVERED) if o.warehouse == warehouse.name
              and (wanted is None or o.order_id in wanted)]
    name_of = carrier or (layout.carriers[0][0] if layout.carriers else "UPS")
    shipped_at = now - timedelta(minutes=5)
    lines = [Shipped(stored.order_id, line.sku if layout.item_field == "sku" else line.order_item_id,
                     line.quantity, name_of, tracking_number(stored.order_id), max(shipped_at, stored.order.purchase_date))
             for stored in orders for line in stored.order.lines]
    if not lines:
        return None
    stamp = now.strftime("%Y%m%d%H%M%S")
    extension = {"csv": "csv", "xlsx": "xlsx", "xml": "xml"}[layout.format]
    name = f"SHIPPED_{warehouse.name}_{stamp}.{extension}"
    drop.put_bytes(render_confirmations(layout, lines), f"{folder.rstrip('/')}/{name}.tmp")
    drop.rename(f"{folder.rstrip('/')}/{name}.tmp", f"{folder.rstrip('/')}/{name}")
    return name


def drop_stock(warehouse: WarehouseSettings, counted: Sequence[Counted], drop: Drop, folder: str,
               counted_at: datetime, name: str | None = None) -> str:
    """The simulated WMS drops its stock count in `folder` of `drop` (temporary name, then
    rename), laid out by the warehouse's mapping. Returns the file's name."""
    layout = warehouse.mapping.stock
    if layout is None:
        raise ValueError(f"{warehouse.mapping.name} has no [stock] section")
    extension = {"csv": "csv", "xlsx": "xlsx", "xml": "xml"}[layout.format]
    name = name or f"STOCK_{warehouse.name}_{counted_at.strftime('%Y%m%d%H%M%S')}.{extension}"
    target = f"{folder.rstrip('/')}/{name}"
    drop.put_bytes(render_stock(layout, counted, counted_at), f"{target}.tmp")
    drop.rename(f"{target}.tmp", target)
    return name
