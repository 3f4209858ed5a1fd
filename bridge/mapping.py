"""Warehouse file layouts: `mappings/<name>.toml` → a frozen, compiled `Mapping`.

A mapping is data, not code: which file format the warehouse reads, how files are named, and
which order field goes in which column or element. `load_mapping` checks every key and reports
every problem at once (`ConfigError`, one `file: key: why` per problem); what it returns is
compiled: each column carries a ready-made function that turns an order (and a line) into the
cell text, so rendering does no lookups.

The orders section
------------------
::

    [orders]
    format = "csv"                  # csv | xml | xlsx
    file_per = "order"              # order: one file per order | run: one file per run
    file_name = "ORD_{order_id}.csv"
    timezone = "UTC"                # zoneinfo name; dates and times are shown in this zone
    date_format = "%Y-%m-%d"        # default strftime format of date sources
    datetime_format = "%Y-%m-%d %H:%M:%S"
    decimal_separator = "."         # csv, xml: "." or ","  (xlsx writes real numbers)
    true_value = "1"                # how booleans are written
    false_value = "0"
    encoding = "utf-8"              # csv, xml: utf-8 | utf-8-sig (with BOM) | cp1252
    # csv only
    unencodable = "fail"            # fail: the order is held | replace: written as "?" |
                                    # transliterate: its closest ASCII spelling (Ł -> L)
    formula_guard = "reject"        # text from buyers and listings starting with = + - @:
                                    # reject: the order is held | quote: prefixed with ' | off
    delimiter = ","                 # one character ("\\t" for tab)
    quoting = "minimal"             # minimal | all
    header = true                   # write a header row
    line_terminator = "crlf"        # crlf | lf
    # xlsx only
    sheet = "Orders"
    # xml only
    root = "Orders"                 # document element
    order_element = "Order"         # one per order, inside root
    lines_element = "Lines"         # wrapper of the lines inside the order; "" for none
    line_element = "Line"           # one per order line

    [[orders.columns]]              # csv, xlsx: one row per order line, order fields repeat
    header = "OrderNumber"
    source = "order.id"             # a source field (below) ...
    # value = "FIXED"               # ... or a constant (exactly one of source/value)
    # format = "%d.%m.%Y"           # date/datetime sources: strftime format for this column
    # decimals = 2                  # decimal sources: fixed number of decimals
    # default = "n/a"               # written when the value is empty
    # max_length = 35               # longer values hold the order (RenderError naming the field)
    # truncate = true               # ... or are cut to max_length
    # map = { STANDARD = "DHL_PAKET", EXPEDITED = "DHL_EXPRESS" }
    #                               # text sources: Amazon's value -> the warehouse's code; a
    #                               # value with no entry holds the order until one is added
    #                               # (an empty value stays empty unless the map has "" = ...)
    # unencodable = "transliterate" # csv: this column's choice, over the layout's

    [[orders.fields]]               # xml: once per order, inside the order element
    element = "ShipTo/Name"         # a path makes nested elements; "Total@currency" or
    source = "ship_to.name"         # "@id" sets an attribute; same options as columns
    [[orders.line_fields]]          # xml: inside each line element; may use line.* sources
    element = "SKU"
    source = "line.sku"

File name placeholders: `{order_id}` and `{marketplace_id}` (file_per = "order" only, and
`{order_id}` is required there so files do not overwrite each other), `{run_time:%Y%m%d%H%M%S}`
(the run's start in UTC; required when file_per = "run", and then with the full date and time,
down to the seconds), `{seq}` or `{seq:04d}` (1-based position of the file in the run).
Placeholder values are sanitised: anything but letters, digits, `.`, `_` and `-` becomes `_`,
so an order id cannot climb out of the folder. Should a per-run name already be taken (two runs
in one second), the ledger gives the file the next free `NAME-2.csv`, `NAME-3.csv`, ...

What reaches the warehouse: no field may hold a control character or line break (the order is
held, naming the field and position); in CSV, free text from buyers and listings (FREE_TEXT)
starting with `=`, `+`, `-` or `@` is what `formula_guard` decides (spreadsheets run
such cells as formulas); an XLSX cell holds at most 32,767 characters.

The sections `stock` (stock files) and `shipments` (the warehouse's confirmation files) are
described and checked at the end of this module; any other top-level key is an error.

Source fields
-------------
Dates and times are converted to the layout's `timezone` first. *date* sources use
`date_format`, *datetime* sources `datetime_format` (a column's `format` overrides either).
Decimals are written without exponent, with `decimal_separator`; empty when Amazon sent none.

============================  ========  ==================================================
order.id                      text      Amazon order id (``123-1234567-1234567``)
order.marketplace_id          text      e.g. ``A1PA6795UKMFR9`` (amazon.de)
order.purchase_date           date      when the order was placed
order.purchase_datetime       datetime  when the order was placed
order.last_updated            datetime  Amazon's last change to the order
order.status                  text      UNSHIPPED, PARTIALLY_SHIPPED, ...
order.service_level           text      STANDARD, EXPEDITED, SECOND_DAY, ...
order.ship_by                 datetime  end of the ship-by window
order.ship_by_date            date      end of the ship-by window
order.deliver_by              date      end of the promised delivery window
order.total                   decimal   grand total
order.currency                text      ISO 4217 code of the total
order.is_prime                bool      Prime order
order.is_business             bool      Amazon Business order
order.line_count              int       number of lines
order.total_quantity          int       sum of the lines' quantities
buyer.name                    text
buyer.email                   text      Amazon's anonymised relay address
ship_to.name                  text
ship_to.company               text
ship_to.line1                 text
ship_to.line2                 text
ship_to.line3                 text
ship_to.city                  text
ship_to.district              text
ship_to.state                 text      state or region
ship_to.postal_code           text
ship_to.country_code          text      ISO 3166-1 alpha-2
ship_to.phone                 text
ship_to.address_type          text      RESIDENTIAL or COMMERCIAL
line.number                   int       1-based position of the line in the order
line.order_item_id            text      Amazon's order item id (needed to confirm shipment)
line.sku                      text      seller SKU
line.asin                     text
line.title                    text
line.quantity                 int       quantity ordered
line.quantity_shipped         int       units Amazon showed as shipped when the order was pulled
line.quantity_unshipped       int       quantity - quantity_shipped: what is left to ship
line.unit_price               decimal
line.line_total               decimal   unit_price × quantity
line.currency                 text      the line's currency, else the order's
============================  ========  ==================================================
"""

from __future__ import annotations

import difflib
import functools
import re
import string
import tomllib
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.errors import ConfigError, RenderError
from bridge.records import Line, Order

# A compiled column: (order, line, line number) -> cell text. Raises RenderError.
Getter = Callable[[Order, Line, int], str]

FORMATS = ("csv", "xml", "xlsx")
FILE_PER = ("order", "run")
ENCODINGS = ("utf-8", "utf-8-sig", "cp1252")
UNENCODABLE = ("fail", "replace", "transliterate")
FORMULA_GUARDS = ("reject", "quote", "off")
XLSX_CELL_MAX = 32767  # Excel's limit: a longer cell is cut or refused by the reader
QUOTING = ("minimal", "all")
LINE_TERMINATORS = {"crlf": "\r\n", "lf": "\n"}


def _ship_to(name: str) -> Callable[[Order, Line, int], Any]:
    return lambda order, line, number: getattr(order.ship_to, name)


def _line_total(order: Order, line: Line, number: int) -> Decimal | None:
    return None if line.unit_price is None else line.unit_price * line.quantity


# name -> (kind, raw getter). Kinds: text, date, datetime, decimal, int, bool.
SOURCES: dict[str, tuple[str, Callable[[Order, Line, int], Any]]] = {
    "order.id": ("text", lambda o, l, n: o.order_id),
    "order.marketplace_id": ("text", lambda o, l, n: o.marketplace_id),
    "order.purchase_date": ("date", lambda o, l, n: o.purchase_date),
    "order.purchase_datetime": ("datetime", lambda o, l, n: o.purchase_date),
    "order.last_updated": ("datetime", lambda o, l, n: o.last_updated),
    "order.status": ("text", lambda o, l, n: o.status),
    "order.service_level": ("text", lambda o, l, n: o.service_level),
    "order.ship_by": ("datetime", lambda o, l, n: o.ship_by),
    "order.ship_by_date": ("date", lambda o, l, n: o.ship_by),
    "order.deliver_by": ("date", lambda o, l, n: o.deliver_by),
    "order.total": ("decimal", lambda o, l, n: o.order_total),
    "order.currency": ("text", lambda o, l, n: o.currency),
    "order.is_prime": ("bool", lambda o, l, n: o.is_prime),
    "order.is_business": ("bool", lambda o, l, n: o.is_business),
    "order.line_count": ("int", lambda o, l, n: len(o.lines)),
    "order.total_quantity": ("int", lambda o, l, n: sum(x.quantity for x in o.lines)),
    "buyer.name": ("text", lambda o, l, n: o.buyer_name),
    "buyer.email": ("text", lambda o, l, n: o.buyer_email),
    **{
        f"ship_to.{name}": ("text", _ship_to(name))
        for name in (
            "name", "company", "line1", "line2", "line3", "city", "district", "state",
            "postal_code", "country_code", "phone", "address_type",
        )
    },
    "line.number": ("int", lambda o, l, n: n),
    "line.order_item_id": ("text", lambda o, l, n: l.order_item_id),
    "line.sku": ("text", lambda o, l, n: l.sku),
    "line.asin": ("text", lambda o, l, n: l.asin),
    "line.title": ("text", lambda o, l, n: l.title),
    "line.quantity": ("int", lambda o, l, n: l.quantity),
    "line.quantity_shipped": ("int", lambda o, l, n: l.shipped),
    "line.quantity_unshipped": ("int", lambda o, l, n: max(l.quantity - l.shipped, 0)),
    "line.unit_price": ("decimal", lambda o, l, n: l.unit_price),
    "line.line_total": ("decimal", _line_total),
    "line.currency": ("text", lambda o, l, n: l.currency or o.currency),
}
NUMBER_KINDS = ("int", "decimal")
# Text that buyers and listings write freely: what formula_guard looks at. Never ids, codes,
# numbers, dates or phone numbers ("+49 ..." is a phone number, not a formula).
FREE_TEXT = frozenset({
    "buyer.name", "ship_to.name", "ship_to.company", "ship_to.line1", "ship_to.line2",
    "ship_to.line3", "ship_to.city", "ship_to.district", "ship_to.state", "ship_to.postal_code",
    "line.title",
})
# Cells a spreadsheet opening a CSV file takes as formulas (OWASP's list; its tab and carriage
# return are control characters, which no field may hold at all).
FORMULA_START = ("=", "+", "-", "@")


@dataclass(frozen=True)
class Column:
    """One column (csv, xlsx) or element/attribute (xml) and how its text is made."""

    name: str  # the header (csv, xlsx) or the element path (xml)
    source: str | None  # a SOURCES key, or None for a constant
    value: str | None  # the constant when source is None
    kind: str  # SOURCES kind; "text" for constants
    format: str | None = None
    decimals: int | None = None
    default: str = ""
    max_length: int | None = None
    truncate: bool = False
    map: tuple[tuple[str, str], ...] | None = None  # Amazon's value -> the warehouse's code
    unencodable: str | None = None  # csv: this column's choice; None: the layout's
    get: Getter = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    @property
    def label(self) -> str:
        """How failure reasons name this column: its source field, else its name."""
        return self.source or f"'{self.name}'"

    @property
    def is_number(self) -> bool:
        return self.kind in NUMBER_KINDS


@dataclass(frozen=True)
class OrderLayout:
    format: str
    file_per: str
    file_name: str
    timezone: str = "UTC"
    date_format: str = "%Y-%m-%d"
    datetime_format: str = "%Y-%m-%d %H:%M:%S"
    decimal_separator: str = "."
    true_value: str = "1"
    false_value: str = "0"
    encoding: str = "utf-8"
    unencodable: str = "fail"
    formula_guard: str = "reject"
    delimiter: str = ","
    quoting: str = "minimal"
    header: bool = True
    line_terminator: str = "\r\n"  # the characters, not the TOML name
    sheet: str = "Orders"
    root: str = "Orders"
    order_element: str = "Order"
    lines_element: str = "Lines"
    line_element: str = "Line"
    columns: tuple[Column, ...] = ()  # csv, xlsx
    fields: tuple[Column, ...] = ()  # xml, order level
    line_fields: tuple[Column, ...] = ()  # xml, per line


@dataclass(frozen=True)
class Mapping:
    name: str  # the file's stem: mappings/acme-csv.toml -> "acme-csv"
    orders: OrderLayout
    stock: StockLayout | None = None  # the [stock] section, when the warehouse sends stock files
    shipments: "ShipmentLayout | None" = None  # None: the warehouse sends no confirmation files


def shipped_mappings() -> Path:
    """The folder of the mappings that ship with the bridge (acme-csv, globex-xml, ...).

    In a checkout they are `mappings/` beside the package; an installed bridge carries them
    inside the package (pyproject maps `bridge.mappings` to that folder).
    """
    package = Path(__file__).resolve().parent
    installed = package / "mappings"
    return installed if installed.is_dir() else package.parent / "mappings"


def load_mapping(path: Path, *, warnings: list[str] | None = None) -> Mapping:
    """Read and check `path`; raise ConfigError listing every problem found.

    With a `warnings` list (`fbm-bridge preview`, which lays out orders only), the problems of the
    [stock] and [shipments] sections (e.g. a stock SKU map not copied beside the mapping) go
    there instead, and a section with problems is left out of the Mapping."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as problem:
        raise ConfigError([f"{where}: file: cannot read ({problem.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: file: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as problem:
        raise ConfigError([f"{where}: syntax: {problem}"]) from None
    problems: list[str] = []
    layout = _Checker(where, problems).mapping(data)
    stock_problems = problems if warnings is None else []
    stock = _stock_section(data, where, Path(path).parent, stock_problems)
    shipments_problems = problems if warnings is None else []
    shipments = _ShipmentsChecker(where, shipments_problems).section(data.get("shipments"))
    if warnings is not None:
        warnings += stock_problems + shipments_problems
        stock = None if stock_problems else stock
        shipments = None if shipments_problems else shipments
    if problems:
        raise ConfigError(problems)
    assert layout is not None
    return Mapping(name=Path(path).stem, orders=layout, stock=stock, shipments=shipments)


# --- checking -------------------------------------------------------------------------------

_TOP_LEVEL = {"orders", "stock", "shipments"}
_COMMON_KEYS = {
    "format", "file_per", "file_name", "timezone", "date_format", "datetime_format",
    "true_value", "false_value",
}
_FORMAT_KEYS = {
    "csv": {"decimal_separator", "encoding", "unencodable", "formula_guard", "delimiter",
            "quoting", "header", "line_terminator", "columns"},
    "xlsx": {"sheet", "columns"},
    "xml": {"decimal_separator", "encoding", "root", "order_element", "lines_element",
            "line_element", "fields", "line_fields"},
}
_COLUMN_KEYS = {"source", "value", "format", "decimals", "default", "max_length", "truncate", "map",
                "unencodable"}
_PLACEHOLDERS = {"order_id", "marketplace_id", "run_time", "seq"}
# strftime directives and the parts of a date and time each writes; '%%' is a literal percent
# sign, not a directive. %I and %l (12-hour clock) count as hours only beside %p or %P.
_DIRECTIVE = re.compile(r"%[-_0^#]*(.)")
_TIME_PARTS = {
    "year": frozenset("YyGgFDxcs"),
    "month": frozenset("mbBhFDxcsj"),
    "day": frozenset("deFDxcsj"),
    "hours": frozenset("HkTXRcs"),
    "minutes": frozenset("MTXRcs"),
    "seconds": frozenset("STXcs"),
}


def _missing_time_parts(spec: str) -> list[str]:
    """The parts of a full date and time a `{run_time:...}` strftime spec does not write."""
    if not spec:
        return []  # str(datetime): the full date and time
    found = set(_DIRECTIVE.findall(spec))
    if found & set("Il") and found & set("pP"):
        found.add("H")
    return [part for part, directives in _TIME_PARTS.items() if not found & directives]


_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]|\.\.")


# What Amazon sends for the text sources a map translates (Orders API v2026-01-01's model:
# OrderFulfillment.fulfillmentServiceLevel; v0's spellings are converted to these).
AMAZON_VALUES = {
    "order.service_level": ("EXPEDITED", "FREE_ECONOMY", "NEXT_DAY", "PRIORITY", "SAME_DAY", "SECOND_DAY",
                            "SCHEDULED", "STANDARD"),
}


def _named_by(name: Any, name_key: str) -> str:
    """` (header 'Name')`: a column found by its header, not only by its 0-based index."""
    if not isinstance(name, str) or not name:
        return ""
    return f" ({name_key} {name if len(name) <= 40 else name[:40] + '...'!r})"


def _choices(allowed: tuple[str, ...]) -> str:
    """`csv, xml, xlsx`, but `'.', ','`: words plain, anything else quoted so it can be read."""
    plain = all(a.replace("-", "").replace("_", "").isalnum() for a in allowed)
    return ", ".join(a if plain else repr(a) for a in allowed)


class _Checker:
    """Walks the TOML data, appending `file: key: why` to problems; returns what it can."""

    def __init__(self, where: str, problems: list[str]):
        self.where = where
        self.problems = problems
        self.format: str | None = None

    def problem(self, key: str, why: str) -> None:
        self.problems.append(f"{self.where}: {key}: {why}")

    def mapping(self, data: dict[str, Any]) -> OrderLayout | None:
        for key in sorted(set(data) - _TOP_LEVEL):
            self.problem(key, "unknown section (known: orders, shipments, stock)")
        orders = data.get("orders")
        if orders is None:
            self.problem("orders", "missing section")
            return None
        if not isinstance(orders, dict):
            self.problem("orders", "must be a table")
            return None
        return self.orders(orders)

    def orders(self, data: dict[str, Any]) -> OrderLayout | None:
        fmt = self.choice(data, "format", FORMATS, None)
        file_per = self.choice(data, "file_per", FILE_PER, None)
        if fmt is not None:
            allowed = _COMMON_KEYS | _FORMAT_KEYS[fmt]
            for key in sorted(set(data) - allowed):
                known = {k for keys in _FORMAT_KEYS.values() for k in keys} | _COMMON_KEYS
                why = (f"not used by format '{fmt}'" if key in known
                       else f"unknown key (known: {', '.join(sorted(allowed))})")
                self.problem(f"orders.{key}", why)
        tz = self.timezone(data)
        options: dict[str, Any] = {
            "timezone": tz,
            "date_format": self.strftime(data, "orders.date_format", "%Y-%m-%d"),
            "datetime_format": self.strftime(data, "orders.datetime_format",
                                             "%Y-%m-%d %H:%M:%S"),
            "decimal_separator": self.choice(data, "decimal_separator", (".", ","), "."),
            "true_value": self.text(data, "orders.true_value", "1"),
            "false_value": self.text(data, "orders.false_value", "0"),
        }
        file_name = self.file_name(data, file_per)
        if fmt is None or file_per is None:
            return None
        self.format = fmt
        if fmt == "csv":
            options.update(  # first: the columns are compiled with them
                encoding=self.choice(data, "encoding", ENCODINGS, "utf-8"),
                unencodable=self.choice(data, "unencodable", UNENCODABLE, "fail"),
                formula_guard=self.choice(data, "formula_guard", FORMULA_GUARDS, "reject"),
            )
            options.update(
                delimiter=self.delimiter(data),
                quoting=self.choice(data, "quoting", QUOTING, "minimal"),
                header=self.boolean(data, "orders.header", True),
                line_terminator=LINE_TERMINATORS.get(
                    self.choice(data, "line_terminator", tuple(LINE_TERMINATORS), "crlf"),
                    "\r\n"),
                columns=self.columns(data, "columns", options, lines=True, xml=False),
            )
        elif fmt == "xlsx":
            options.update(
                sheet=self.sheet(data),
                columns=self.columns(data, "columns", options, lines=True, xml=False),
            )
        else:
            options.update(
                encoding=self.choice(data, "encoding", ENCODINGS, "utf-8"),
                root=self.element(data, "root", "Orders", required=True),
                order_element=self.element(data, "order_element", "Order", required=True),
                lines_element=self.element(data, "lines_element", "Lines", required=False),
                line_element=self.element(data, "line_element", "Line", required=True),
                fields=self.columns(data, "fields", options, lines=False, xml=True),
                line_fields=self.columns(data, "line_fields", options, lines=True, xml=True,
                                         required=False),
            )
        if None in options.values():
            return None
        if fmt == "csv":
            self.encodable(options["columns"], options["encoding"])
        return OrderLayout(format=fmt, file_per=file_per, file_name=file_name, **options)

    def encodable(self, columns: tuple[Column, ...], encoding: str) -> None:
        """Headers and constants are the mapping's own text: they must fit the encoding."""
        for index, column in enumerate(columns):
            for key, text in (("header", column.name), ("value", column.value),
                              ("default", column.default)):
                try:
                    (text or "").encode(encoding)
                except UnicodeEncodeError as problem:
                    self.problem(f"orders.columns[{index}].{key}",
                                 f"{text[problem.start]!r} cannot be written in {encoding}")

    # -- scalar keys --

    def value(self, data: dict[str, Any], key: str, kind: type, default: Any) -> Any:
        leaf = key.rsplit(".", 1)[-1]
        if leaf not in data:
            return default
        value = data[leaf]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            self.problem(key, f"must be {_KIND_NAMES[kind]}, not {type(value).__name__}")
            return None
        return value

    def text(self, data: dict[str, Any], key: str, default: str | None) -> str | None:
        return self.value(data, key, str, default)

    def boolean(self, data: dict[str, Any], key: str, default: bool) -> bool | None:
        return self.value(data, key, bool, default)

    def choice(self, data: dict[str, Any], key: str, allowed: tuple[str, ...],
               default: str | None) -> str | None:
        value = self.text(data, f"orders.{key}", default)
        if value is None:
            if default is None and key not in data:
                self.problem(f"orders.{key}", f"missing (one of: {_choices(allowed)})")
            return None
        if value not in allowed:
            self.problem(f"orders.{key}",
                         f"unknown value {value!r} (one of: {_choices(allowed)})")
            return None
        return value

    def timezone(self, data: dict[str, Any]) -> str | None:
        name = self.text(data, "orders.timezone", "UTC")
        if name is None:
            return None
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem("orders.timezone", f"unknown time zone {name!r} (e.g. 'Europe/Berlin')")
            return None
        return name

    def strftime(self, data: dict[str, Any], key: str, default: str | None) -> str | None:
        fmt = self.text(data, key, default)
        if fmt is None:
            return None
        if "%" not in fmt:
            self.problem(key, f"{fmt!r} has no strftime directive (e.g. '%d.%m.%Y')")
            return None
        return fmt

    def delimiter(self, data: dict[str, Any]) -> str | None:
        value = self.text(data, "orders.delimiter", ",")
        if value is not None and (len(value) != 1 or value in "\"\r\n"):
            self.problem("orders.delimiter",
                         f"must be one character other than a quote or newline, not {value!r}")
            return None
        return value

    def sheet(self, data: dict[str, Any]) -> str | None:
        value = self.text(data, "orders.sheet", "Orders")
        if value is not None and not (0 < len(value) <= 31 and not set(value) & set("[]:*?/\\")):
            self.problem("orders.sheet", "must be 1-31 characters without [ ] : * ? / \\")
            return None
        return value

    def element(self, data: dict[str, Any], key: str, default: str,
                required: bool) -> str | None:
        value = self.text(data, f"orders.{key}", default)
        if value is None or value == "" and not required:
            return value
        if not _XML_NAME.match(value) or value.lower().startswith("xml"):
            self.problem(f"orders.{key}", f"{value!r} is not a usable XML element name")
            return None
        return value

    def file_name(self, data: dict[str, Any], file_per: str | None) -> str | None:
        key = "orders.file_name"
        template = self.text(data, key, None)
        if template is None:
            if "file_name" not in data:
                self.problem(key, "missing")
            return None
        ok = True
        if not template or _UNSAFE_NAME.search(template) or template.startswith("."):
            self.problem(key, "must be a plain file name: no '/', '\\', '..', control "
                              "characters or leading '.'")
            ok = False
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as problem:
            self.problem(key, f"bad placeholder syntax ({problem})")
            return None
        used = set()
        run_time_specs = []
        for _, name, spec, conversion in parts:
            if name is None:
                continue
            used.add(name)
            if name == "run_time":
                run_time_specs.append(spec)
            if name not in _PLACEHOLDERS:
                self.problem(key, f"unknown placeholder {{{name}}} "
                                  f"(known: {', '.join(sorted(_PLACEHOLDERS))})")
                ok = False
            elif conversion or (spec and name in ("order_id", "marketplace_id")):
                self.problem(key, f"placeholder {{{name}}} takes no format or conversion")
                ok = False
            elif spec and name == "seq":
                try:
                    format(1, spec)
                except ValueError:
                    self.problem(key, f"bad format {spec!r} for {{seq}} (e.g. '04d')")
                    ok = False
        if file_per == "run":
            for name in sorted(used & {"order_id", "marketplace_id"}):
                self.problem(key, f"{{{name}}} cannot be used when file_per = 'run' "
                                  f"(one file holds many orders)")
                ok = False
            if "run_time" not in used:
                self.problem(key, "needs {run_time:...} when file_per = 'run', "
                                  "or every run overwrites the last file")
                ok = False
            for spec in run_time_specs:
                missing = _missing_time_parts(spec)
                if missing:
                    self.problem(key, f"{{run_time:{spec}}} must write the full date and time "
                                      f"when file_per = 'run' (e.g. %Y%m%d%H%M%S); it lacks "
                                      f"the {', '.join(missing)}")
                    ok = False
        elif file_per == "order" and "order_id" not in used:
            self.problem(key, "needs {order_id} when file_per = 'order', "
                              "or the orders of a run overwrite each other")
            ok = False
        return template if ok else None

    # -- columns --

    def columns(self, data: dict[str, Any], key: str, options: dict[str, Any], *,
                lines: bool, xml: bool, required: bool = True) -> tuple[Column, ...] | None:
        path = f"orders.{key}"
        items = data.get(key)
        if items is None:
            if required:
                self.problem(path, f"missing: add at least one [[{path}]]")
                return None
            return ()
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            self.problem(path, f"must be an array of tables ([[{path}]])")
            return None
        if required and not items:
            self.problem(path, f"empty: add at least one [[{path}]]")
            return None
        columns: list[Column | None] = []
        seen: dict[str, int] = {}
        name_key = "element" if xml else "header"
        for index, item in enumerate(items):
            where = f"{path}[{index}]"
            column = self.column(item, where, name_key, options, lines=lines, xml=xml)
            columns.append(column)
            if column is not None:
                if column.name in seen:
                    self.problem(f"{where}.{name_key}", f"duplicate {column.name!r} "
                                 f"(also {path}[{seen[column.name]}])")
                seen.setdefault(column.name, index)
        if None in columns:
            return None
        return tuple(columns)  # type: ignore[arg-type]

    def column(self, item: dict[str, Any], index_where: str, name_key: str,
               options: dict[str, Any], *, lines: bool, xml: bool) -> Column | None:
        # Problems name the column by its header too (`columns[5] (header 'Name').max_length`),
        # but those of the header itself by its place only.
        where = index_where + _named_by(item.get(name_key), name_key)
        for key in sorted(set(item) - _COLUMN_KEYS - {name_key}):
            self.problem(f"{where}.{key}", f"unknown key (known: "
                         f"{', '.join(sorted(_COLUMN_KEYS | {name_key}))})")
        bad = len(self.problems)
        name = self.text(item, f"{index_where}.{name_key}", None)
        if name is None and name_key not in item:
            self.problem(f"{index_where}.{name_key}", "missing")
        elif name is not None and xml:
            self.xml_path(name, f"{index_where}.{name_key}")
        elif name is not None and not name:
            self.problem(f"{index_where}.{name_key}", "must not be empty")
        source = self.text(item, f"{where}.source", None)
        value = self.text(item, f"{where}.value", None)
        kind = "text"
        if ("source" in item) == ("value" in item):
            self.problem(where, "needs exactly one of 'source' (a field) or 'value' (a constant)")
        elif source is not None:
            if source not in SOURCES:
                self.problem(f"{where}.source", f"unknown field {source!r} "
                             f"(known: {', '.join(SOURCES)})")
            elif source.startswith("line.") and not lines:
                self.problem(f"{where}.source", f"{source!r} is a line field: put it in "
                             f"[[orders.line_fields]]")
            else:
                kind = SOURCES[source][0]
        fmt = self.text(item, f"{where}.format", None)
        if fmt is not None:
            if kind not in ("date", "datetime") or source is None:
                self.problem(f"{where}.format", "only for date and datetime sources")
            else:
                fmt = self.strftime(item, f"{where}.format", None)
        decimals = self.value(item, f"{where}.decimals", int, None)
        if decimals is not None and (kind != "decimal" or not 0 <= decimals <= 6):
            self.problem(f"{where}.decimals", "only for decimal sources, 0 to 6")
        default = self.text(item, f"{where}.default", "")
        max_length = self.value(item, f"{where}.max_length", int, None)
        if max_length is not None and max_length < 1:
            self.problem(f"{where}.max_length", "must be at least 1")
        if max_length is not None and self.format == "xlsx" and max_length > XLSX_CELL_MAX:
            self.problem(f"{where}.max_length", f"at most {XLSX_CELL_MAX} in an XLSX file "
                                                f"(Excel's limit for a cell)")
        truncate = self.boolean(item, f"{where}.truncate", False)
        if truncate and "max_length" not in item:
            self.problem(f"{where}.truncate", "needs max_length")
        value_map = self.value_map(item, f"{where}.map", source)
        unencodable = self.column_unencodable(item, f"{where}.unencodable")
        if len(self.problems) > bad or None in options.values():
            return None
        column = Column(name=name, source=source, value=value, kind=kind, format=fmt,
                        decimals=decimals, default=default, max_length=max_length,
                        truncate=bool(truncate), map=value_map, unencodable=unencodable)
        return _with_getter(column, dict(options, format=self.format))

    def column_unencodable(self, item: dict[str, Any], key: str) -> str | None:
        """A CSV column's own choice for characters the encoding lacks (else the layout's)."""
        if "unencodable" not in item:
            return None
        if self.format != "csv":
            self.problem(key, "only for csv columns (XML writes every character, XLSX is "
                              "Unicode)")
            return None
        value = self.text(item, key, None)
        if value is not None and value not in UNENCODABLE:
            self.problem(key, f"unknown value {value!r} (one of: {', '.join(UNENCODABLE)})")
            return None
        return value

    def value_map(self, item: dict[str, Any], key: str, source: str | None) -> tuple[tuple[str, str], ...] | None:
        """`map = { STANDARD = "DHL_PAKET", ... }`: a text source's value → the warehouse's
        code. A value with no entry holds the order (unrenderable) until the map has one."""
        if "map" not in item:
            return None
        table = item["map"]
        if source is None or SOURCES.get(source, ("",))[0] != "text":
            self.problem(key, "only for text sources (e.g. order.service_level)")
            return None
        if not isinstance(table, dict) or not table:
            self.problem(key, "must be a table of Amazon value = warehouse value, e.g. { STANDARD = \"DHL\" }")
            return None
        for amazon_value, code in table.items():
            if not isinstance(code, str):
                self.problem(f"{key}.{amazon_value}", f"must be a string, not {type(code).__name__}")
            self.amazon_value(f"{key}.{amazon_value}", source, str(amazon_value))
        return tuple((str(a), c) for a, c in table.items() if isinstance(c, str))

    def amazon_value(self, key: str, source: str, value: str) -> None:
        """A map entry that is a near miss of one of Amazon's values (`STANDART`) would never
        match, holding every such order: refused. Other unknown values are let be, in case
        Amazon adds one."""
        known = AMAZON_VALUES.get(source)
        if known is None or value in known:
            return
        near = difflib.get_close_matches(value.upper(), known, n=1, cutoff=0.75)
        if near:
            self.problem(key, f"{value!r} is not one of Amazon's values for {source}: {near[0]!r}?"
                              f" (Amazon sends {', '.join(known)})")

    def xml_path(self, path: str, key: str) -> None:
        elements, _, attribute = path.partition("@")
        names = elements.split("/") if elements else []
        if attribute:
            names.append(attribute)
        if not names or not all(_XML_NAME.match(n) for n in names):
            self.problem(key, f"{path!r} is not an element path like 'ShipTo/Name', "
                         f"'Total@currency' or '@id'")


_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


# --- compiling ------------------------------------------------------------------------------


def _with_getter(column: Column, options: dict[str, Any]) -> Column:
    return replace(column, get=_compile(column, options))


def _compile(column: Column, options: dict[str, Any]) -> Getter:
    """One function per column: raw value → text → formula guard → map → default →
    unencodable characters → length check."""
    if column.source is None:
        constant = column.value or column.default
        get: Getter = lambda order, line, number: constant  # noqa: E731
    else:
        get = _formatter(column, options)
    csv = options.get("format") == "csv"
    if csv and column.source in FREE_TEXT and column.map is None:
        guard = options["formula_guard"]
        if guard != "off":
            get = _formula_guarded(get, guard, column.label)
    if column.map is not None:
        get = _mapped(get, dict(column.map), column.label)
    if column.default:
        get = _defaulting(get, column.default)
    unencodable = column.unencodable or options.get("unencodable", "fail")
    if csv and column.source is not None and unencodable != "fail":
        get = _encodable(get, options["encoding"], unencodable)
    if column.max_length is not None:
        get = _limited(get, column.max_length, column.truncate, column.label)
    return get


def _formatter(column: Column, options: dict[str, Any]) -> Getter:
    kind, raw = SOURCES[column.source]  # type: ignore[index]
    if kind == "text":
        return raw
    if kind in ("date", "datetime"):
        zone = ZoneInfo(options["timezone"])
        fmt = column.format or options[f"{kind}_format"]

        def as_time(order: Order, line: Line, number: int) -> str:
            value: datetime | None = raw(order, line, number)
            return "" if value is None else value.astimezone(zone).strftime(fmt)
        return as_time
    if kind == "decimal":
        places = column.decimals
        separator = options["decimal_separator"]
        quantum = Decimal(1).scaleb(-places) if places is not None else None

        def as_decimal(order: Order, line: Line, number: int) -> str:
            value: Decimal | None = raw(order, line, number)
            if value is None:
                return ""
            text = format(value.quantize(quantum) if quantum is not None else value, "f")
            return text if separator == "." else text.replace(".", separator)
        return as_decimal
    if kind == "bool":
        true, false = options["true_value"], options["false_value"]
        return lambda order, line, number: true if raw(order, line, number) else false
    return lambda order, line, number: str(raw(order, line, number))  # int


def _mapped(get: Getter, table: dict[str, str], label: str) -> Getter:
    # Buyer fields are never named by value in a reason; Amazon's codes (service levels,
    # marketplaces, countries) are, so staff know which entry to add.
    private = label.startswith(("buyer.", "ship_to.")) and not label.endswith("country_code")

    def mapped(order: Order, line: Line, number: int) -> str:
        value = get(order, line, number)
        if value in table:
            return table[value]
        if not value:
            return value  # nothing to map: `default` (or a "" entry) decides
        shown = "its value" if private else f"value {value!r}"
        raise RenderError(f"{label}: {shown} has no entry in the column's map; add it to the mapping")
    return mapped


def _formula_guarded(get: Getter, guard: str, label: str) -> Getter:
    """Free text a spreadsheet would run as a formula: refused, or quoted as text."""
    def guarded(order: Order, line: Line, number: int) -> str:
        text = get(order, line, number)
        if not text.startswith(FORMULA_START):
            return text
        if guard == "quote":
            return "'" + text
        where = f"{label} (line {number})" if label.startswith("line.") else label
        raise RenderError(f"{where} starts with a character a spreadsheet reads as a formula; "
                          f"set formula_guard = \"quote\" in the mapping to send it as text")
    return guarded


def _encodable(get: Getter, encoding: str, unencodable: str) -> Getter:
    """Characters the encoding lacks, replaced by "?" or their ASCII spelling (only those:
    an umlaut the encoding has stays). What transliteration cannot spell stays, and the
    order waits as for "fail"."""
    if unencodable == "transliterate" and encoding.startswith("utf-8"):
        return get  # UTF-8 encodes every character

    def encodable(order: Order, line: Line, number: int) -> str:
        text = get(order, line, number)
        if text.isascii():
            return text
        if unencodable == "replace":
            return text.encode(encoding, "replace").decode(encoding)
        return transliterate(text, encoding)
    return encodable


def transliterate(text: str, encoding: str) -> str:
    """`text` with each character `encoding` lacks spelled in ASCII (Ł → L, ı → i, 中 → Zhong).

    Composed first (NFC), so a letter sent as letter + combining accent is kept whole where the
    encoding has it. A character with no ASCII spelling is left as it is.
    """
    text = unicodedata.normalize("NFC", text)
    spelled = []
    for char in text:
        try:
            char.encode(encoding)
            spelled.append(char)
        except UnicodeEncodeError:
            spelled.append(_anyascii(char) or char)
    return "".join(spelled)


def _defaulting(get: Getter, default: str) -> Getter:
    return lambda order, line, number: get(order, line, number) or default


def _limited(get: Getter, max_length: int, truncate: bool, label: str) -> Getter:
    def limited(order: Order, line: Line, number: int) -> str:
        text = get(order, line, number)
        if len(text) <= max_length:
            return text
        if truncate:
            return text[:max_length].rstrip()
        where = f"{label} (line {number})" if label.startswith("line.") else label
        raise RenderError(f"{where} is {len(text)} characters long, "
                          f"the warehouse takes at most {max_length}")
    return limited


# --- inbound files: what [stock] and [shipments] share -----------------------------------------
#
# Both sections read a file the warehouse writes, with the same keys and the same rules:
#
#     format = "csv"                  # csv | xlsx | xml
#     encoding = "cp1252"             # csv: utf-8 (a BOM is dropped) | cp1252 | utf-16
#     delimiter = ";"                 # csv: one character, "\t" for tab
#     header = true                   # csv, xlsx: false → the columns are 1-based positions
#     sheet = "Stock"                 # xlsx: "" or absent = the first sheet
#     record = "Inventory/Item"       # xml: the path of the element that makes one row, from
#                                     # the document element
#     timezone = "Europe/Berlin"      # the zone of the file's times
#     marker = "{name}.ok"            # optional: the WMS writes this file once NAME is complete
#     result_delimiter = ";"          # of the result files the bridge writes back
#
#     [<section>.columns]             # each field: a header name, a position (header = false)
#     sku = "Artikelnummer"           # or (xml) a path from the record element: "Quantity",
#                                     # "@sku", "Qty/Value", "../@trackingNumber"
#
# Row numbers in every message are the file's own: the line a CSV record starts on (the
# header is line 1), the sheet row, or the line of the XML record element.

INBOUND_FORMATS = ("csv", "xlsx", "xml")
INBOUND_ENCODINGS = ("utf-8", "cp1252", "utf-16")
_INBOUND_KEYS = {"format", "timezone", "marker", "result_delimiter", "columns"}
_INBOUND_FORMAT_KEYS = {"csv": {"encoding", "delimiter", "header"}, "xlsx": {"sheet", "header"},
                        "xml": {"record"}}


class _InboundTable:
    """Checks the keys that say how a warehouse's file is read, for one section ("stock",
    "shipments"), reporting through `checker` as `file: section.key: why`."""

    def __init__(self, checker: "_Checker", section: str, fields: tuple[str, ...],
                 required: tuple[str, ...], needed: str, example: str):
        self.checker = checker
        self.section = section
        self.fields = fields  # the fields the section's columns may name, in order
        self.required = required
        self.needed = needed  # the required fields in words, for the message when none are given
        self.example = example  # an xml record path for messages, e.g. 'Inventory/Item'

    def problem(self, key: str, why: str) -> None:
        self.checker.problem(f"{self.section}.{key}", why)

    def text(self, data: dict[str, Any], key: str, default: str | None) -> str | None:
        return self.checker.text(data, f"{self.section}.{key}", default)

    def options(self, data: dict[str, Any], own_keys: set[str]) -> tuple[str | None, dict[str, Any]]:
        """(format, the shared options); `own_keys` are the section's other keys."""
        fmt = self.checker.value(data, f"{self.section}.format", str, None)
        if fmt is None or fmt not in INBOUND_FORMATS:
            what = "missing" if fmt is None and "format" not in data else f"unknown value {fmt!r}"
            self.problem("format", f"{what} (one of: {', '.join(INBOUND_FORMATS)})")
            fmt = None
        else:
            allowed = _INBOUND_KEYS | own_keys | _INBOUND_FORMAT_KEYS[fmt]
            every = _INBOUND_KEYS | own_keys | set().union(*_INBOUND_FORMAT_KEYS.values())
            for key in sorted(set(data) - allowed):
                self.problem(key, f"not used by format '{fmt}'" if key in every
                             else f"unknown key (known: {', '.join(sorted(allowed))})")
        options = {
            "encoding": self.pick(data, "encoding", INBOUND_ENCODINGS, "utf-8"),
            "delimiter": self.one_character(data, "delimiter", ","),
            "header": self.checker.boolean(data, f"{self.section}.header", True),
            "sheet": self.text(data, "sheet", ""),
            "timezone": self.zone(data),
            "marker": self.marker(data),
            "result_delimiter": self.one_character(data, "result_delimiter", ","),
        }
        return fmt, options

    def pick(self, data: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str | None:
        value = self.text(data, key, default)
        if value is not None and value not in allowed:
            self.problem(key, f"unknown value {value!r} (one of: {', '.join(allowed)})")
            return None
        return value

    def one_character(self, data: dict[str, Any], key: str, default: str) -> str | None:
        value = self.text(data, key, default)
        if value is not None and (len(value) != 1 or value in "\"\r\n"):
            self.problem(key, f"must be one character other than a quote or newline, not {value!r}")
            return None
        return value

    def zone(self, data: dict[str, Any]) -> str | None:
        name = self.text(data, "timezone", "UTC")
        try:
            ZoneInfo(name or "")
        except (ZoneInfoNotFoundError, ValueError):
            self.problem("timezone", f"unknown time zone {name!r} (e.g. 'Europe/Berlin')")
            return None
        return name

    def marker(self, data: dict[str, Any]) -> str | None:
        marker = self.text(data, "marker", "")
        if marker and (not marker.startswith(("{name}", "{stem}")) or marker in ("{name}", "{stem}")
                       or _UNSAFE_NAME.search(marker)):
            self.problem("marker", f"{marker!r} must be {{name}} or {{stem}} followed by a "
                         "suffix, e.g. \"{name}.ok\" or \"{stem}.done\"")
            return None
        return marker

    def record(self, data: dict[str, Any], fmt: str | None) -> str:
        """xml: the path of the record element from the document element; "" otherwise."""
        record = self.text(data, "record", "") or ""
        if fmt != "xml":
            return record
        if "record" not in data:
            self.problem("record", "missing: the path of the element that makes one row, from the "
                         f"document element, e.g. '{self.example}'")
            return ""
        names = record.split("/")
        if len(names) < 2 or not all(_XML_NAME.match(n) for n in names):
            self.problem("record", f"{record!r} must be the path of the element that makes one row, "
                         f"from the document element: e.g. '{self.example}'")
            return ""
        return record

    def columns(self, items: Any, fmt: str | None, header: bool | None,
                record: str) -> tuple[tuple[str, str], ...]:
        """[section.columns]: (field, header name | position | xml path), in `fields` order."""
        if not isinstance(items, dict) or not items:
            self.problem("columns", f"missing: add a [{self.section}.columns] table naming where "
                         f"{self.needed} are")
            return ()
        for key in sorted(set(items) - set(self.fields)):
            self.problem(f"columns.{key}", f"unknown field (known: {', '.join(self.fields)})")
        for key in self.required:
            if key not in items:
                self.problem(f"columns.{key}", "missing")
        found = []
        for name in self.fields:
            if name not in items:
                continue
            value = self.column(items[name], f"columns.{name}", fmt, header, record)
            if value is not None:
                found.append((name, value))
        return tuple(found)

    def column(self, value: Any, key: str, fmt: str | None, header: bool | None, record: str) -> str | None:
        if header is False and fmt != "xml":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.problem(key, f"must be a column position (1, 2, ...) when header = false, not {value!r}")
                return None
            return str(value)
        if not isinstance(value, str) or not value.strip():
            self.problem(key, f"must be the {'element path' if fmt == 'xml' else 'header'} "
                         f"of the column, not {value!r}")
            return None
        if fmt == "xml" and not _is_field_path(value):
            self.problem(key, f"{value!r} is not a path like 'Quantity', '@sku', 'Qty/Value' "
                         "or '../@id'")
            return None
        if fmt == "xml" and record and value.split("/").count("..") > len(record.split("/")) - 2:
            self.problem(key, f"{value!r} climbs to the document element or above; fields may "
                         "refer to ancestors below it")
            return None
        return value


def _table_spec(layout: "StockLayout | ShipmentLayout", fields: tuple[str, ...]):
    """The reader's view of a layout (bridge.formats.readers.TableSpec)."""
    from bridge.formats.readers import TableSpec

    return TableSpec(format=layout.format, fields=tuple(dict.fromkeys(fields)), encoding=layout.encoding,
                     delimiter=layout.delimiter, header=layout.header, sheet=layout.sheet,
                     record=layout.record)


def _is_field_path(path: str) -> bool:
    parts = path.split("/")
    while parts and parts[0] == "..":
        parts.pop(0)
    if not parts:
        return False
    last, _, attribute = parts[-1].partition("@")
    names = parts[:-1] + ([last] if last else [])
    if "@" in parts[-1] and not _XML_NAME.match(attribute):
        return False
    return all(_XML_NAME.match(n) for n in names) and (bool(names) or bool(attribute))


# --- the stock section ----------------------------------------------------------------------
#
#     [stock]
#     format = "csv"                  # and the other keys every inbound file has (above):
#                                     # encoding, delimiter, header, sheet, record, timezone
#                                     # (of timestamps written without an offset), marker,
#                                     # result_delimiter
#     quantity_means = "available"    # available: net of what the WMS has allocated |
#                                     # on_hand: the bridge subtracts the units of orders it
#                                     # delivered that are not confirmed shipped at the file's time
#     decimal_separator = "."         # "." or ","; a quantity must still be a whole number
#     thousands_separator = ""        # "", ".", ",", " " or "'"
#     timestamp_format = "iso"        # strptime format of columns.timestamp, or "iso" (a date
#                                     # cell of a workbook is read as a date whatever it says)
#     sku_map = "acme-skus.csv"       # warehouse SKU -> seller SKU (others map one-to-one);
#                                     # relative to this file's folder
#     buffer = 0                      # units held back per SKU (floor 0) ...
#     buffers = { "MUG-1" = 5 }       # ... or this many for these seller SKUs
#     cap = 500                       # optional: never send more than this
#     leave_alone = ["*-FBA"]         # seller SKUs (or patterns with * and ?) never sent
#     product_type = "PRODUCT"        # Amazon product type of every message ...
#     product_types = { "MUG-1" = "DRINKING_CUP" }   # ... or of these seller SKUs
#     handling_time_days = 2          # optional: lead_time_to_ship_max_days (1-30) ...
#     handling_times = { "PLT-4" = 5 }               # ... or for these seller SKUs
#     max_missing_share = 0.10        # hold the feed when more of the last published SKUs
#                                     # are missing from the file
#     max_zero_share = 0.20           # hold the feed when more of the SKUs Amazon shows in
#                                     # stock would drop to zero
#     max_bad_row_share = 0.50        # hold the feed when more of the file's rows are bad
#
#     [stock.columns]                 # a header, a position or an xml path (above)
#     sku = "SKU"                     # required
#     quantity = "Qty"                # required
#     timestamp = "AsOf"              # optional: the stock's time (else the file's time)
#     lot = "Lot"                     # optional: rows of one SKU in several lots or
#     location = "Bin"                # locations are summed
#
# The SKU map is a CSV file with the header `warehouse_sku,seller_sku` (`,` or `;`, UTF-8); an
# empty seller_sku marks a warehouse SKU that is not sold on Amazon. Several warehouse SKUs may
# map to one seller SKU: their quantities are summed.

QUANTITY_MEANS = ("available", "on_hand")
THOUSANDS_SEPARATORS = ("", ".", ",", " ", "'")
MAX_SKU_LENGTH = 40  # Amazon's limit for a seller SKU
STOCK_FIELDS = ("sku", "quantity", "timestamp", "lot", "location")
_STOCK_KEYS = {
    "quantity_means", "decimal_separator", "thousands_separator", "timestamp_format", "sku_map",
    "buffer", "buffers", "cap", "leave_alone", "product_type", "product_types",
    "handling_time_days", "handling_times", "max_missing_share", "max_zero_share", "max_bad_row_share",
}
_PRODUCT_TYPE = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_MAX_UNITS = 10_000_000


@dataclass(frozen=True)
class StockColumns:
    """Where each value is: a header, a position ("3") or an xml path from the record."""

    sku: str
    quantity: str
    timestamp: str | None = None
    lot: str | None = None
    location: str | None = None

    def named(self) -> tuple[str, ...]:
        return tuple(value for value in (self.sku, self.quantity, self.timestamp, self.lot, self.location)
                     if value is not None)


@dataclass(frozen=True)
class StockLayout:
    format: str
    quantity_means: str
    columns: StockColumns
    encoding: str = "utf-8"
    delimiter: str = ","
    header: bool = True
    sheet: str = ""
    record: str = ""
    timezone: str = "UTC"
    marker: str = ""
    result_delimiter: str = ","
    decimal_separator: str = "."
    thousands_separator: str = ""
    timestamp_format: str = "iso"
    sku_map_file: str | None = None
    sku_map: dict[str, str] = field(default_factory=dict)  # warehouse SKU -> seller SKU ("" = not on Amazon)
    buffer: int = 0
    buffers: dict[str, int] = field(default_factory=dict)
    cap: int | None = None
    leave_alone: tuple[str, ...] = ()
    product_type: str = "PRODUCT"
    product_types: dict[str, str] = field(default_factory=dict)
    handling_time_days: int | None = None
    handling_times: dict[str, int] = field(default_factory=dict)
    max_missing_share: float = 0.10
    max_zero_share: float = 0.20
    max_bad_row_share: float = 0.50

    @property
    def table(self):
        """The reader's view of the layout (bridge.formats.readers.TableSpec)."""
        return _table_spec(self, self.columns.named())


def _stock_section(data: dict[str, Any], where: str, folder: Path,
                   problems: list[str]) -> StockLayout | None:
    """The `[stock]` section of a mapping, checked and compiled (None when absent or bad)."""
    if "stock" not in data:
        return None
    checker = _Checker(where, problems)
    section = data["stock"]
    if not isinstance(section, dict):
        checker.problem("stock", "must be a table")
        return None
    return _StockChecker(checker, folder).layout(section)


class _StockChecker:
    def __init__(self, checker: _Checker, folder: Path):
        self.checker = checker
        self.folder = folder
        self.table = _InboundTable(checker, "stock", STOCK_FIELDS, ("sku", "quantity"), "sku and quantity",
                                   "Inventory/Item")

    def problem(self, key: str, why: str) -> None:
        self.checker.problem(f"stock.{key}", why)

    def layout(self, data: dict[str, Any]) -> StockLayout | None:
        bad = len(self.checker.problems)
        if "fields" in data:  # the name [stock] had before it took [shipments]' convention
            self.problem("fields", "is now called [stock.columns], as in [shipments]: rename the table")
            data = {key: value for key, value in data.items() if key != "fields"} | {
                "columns": data.get("columns", data["fields"])}
        fmt, options = self.table.options(data, _STOCK_KEYS)
        means = self.choice(data, "quantity_means", QUANTITY_MEANS, None)
        record = self.table.record(data, fmt)
        columns = self.columns(data.get("columns"), fmt, options["header"], record)
        decimal = self.choice(data, "decimal_separator", (".", ","), ".")
        thousands = self.choice(data, "thousands_separator", THOUSANDS_SEPARATORS, "")
        if decimal is not None and decimal == thousands:
            self.problem("thousands_separator", f"must differ from decimal_separator ({decimal!r})")
        options.update({
            "record": record,
            "decimal_separator": decimal,
            "thousands_separator": thousands,
            "timestamp_format": self.timestamp_format(data, columns),
            "buffer": self.count(data, "buffer", 0),
            "buffers": self.sku_table(data, "buffers", self.units_value),
            "cap": self.count(data, "cap", None),
            "leave_alone": self.leave_alone(data),
            "product_type": self.product_type(data.get("product_type", "PRODUCT"), "product_type"),
            "product_types": self.sku_table(data, "product_types", self.product_type),
            "handling_time_days": self.handling_time(data.get("handling_time_days"), "handling_time_days"),
            "handling_times": self.sku_table(data, "handling_times", self.handling_time),
            "max_missing_share": self.share(data, "max_missing_share", 0.10),
            "max_zero_share": self.share(data, "max_zero_share", 0.20),
            "max_bad_row_share": self.share(data, "max_bad_row_share", 0.50),
        })
        sku_map_file = self.text(data, "sku_map", None) if "sku_map" in data else ""
        sku_map = self.sku_map(sku_map_file) if sku_map_file else {}
        if len(self.checker.problems) > bad or None in (fmt, means, columns, sku_map):
            return None
        return StockLayout(format=fmt, quantity_means=means, columns=columns,
                           sku_map_file=sku_map_file or None, sku_map=sku_map, **options)

    # -- keys --

    def text(self, data: dict[str, Any], key: str, default: str | None) -> str | None:
        return self.checker.value(data, f"stock.{key}", str, default)

    def choice(self, data: dict[str, Any], key: str, allowed: tuple[str, ...],
               default: str | None) -> str | None:
        if key not in data:
            if default is None:
                self.problem(key, f"missing (one of: {', '.join(allowed)})")
            return default
        value = self.text(data, key, default)
        if value is not None and value not in allowed:
            self.problem(key, f"unknown value {value!r} (one of: {_choices(allowed)})")
            return None
        return value

    def columns(self, items: Any, fmt: str | None, header: bool | None, record: str) -> StockColumns | None:
        found = dict(self.table.columns(items, fmt, header, record))
        used = list(found.values())
        for value in sorted({v for v in used if used.count(v) > 1}):
            self.problem("columns", f"{value!r} is used for more than one field")
        if "sku" not in found or "quantity" not in found or len(set(used)) < len(used):
            return None
        return StockColumns(**found)

    def timestamp_format(self, data: dict[str, Any], columns: StockColumns | None) -> str | None:
        value = self.text(data, "timestamp_format", "iso")
        if value is None:
            return None
        if "timestamp_format" in data and (columns is None or columns.timestamp is None):
            self.problem("timestamp_format", "needs columns.timestamp")
        if value != "iso" and "%" not in value:
            self.problem("timestamp_format", f"{value!r} is neither 'iso' nor a strptime format (e.g. '%d.%m.%Y %H:%M')")
            return None
        return value

    def count(self, data: dict[str, Any], key: str, default: int | None) -> int | None:
        if key not in data:
            return default
        return self.units_value(data[key], key)

    def units_value(self, value: Any, key: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_UNITS:
            self.problem(key, f"must be a whole number from 0 to {_MAX_UNITS:,}, not {value!r}")
            return None
        return value

    def share(self, data: dict[str, Any], key: str, default: float) -> float | None:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            self.problem(key, f"must be a share from 0 to 1 (0.1 = 10%), not {value!r}")
            return None
        return float(value)

    def product_type(self, value: Any, key: str) -> str | None:
        if not isinstance(value, str) or not _PRODUCT_TYPE.match(value):
            self.problem(key, f"must be an Amazon product type in capitals (e.g. 'PRODUCT'), not {value!r}")
            return None
        return value

    def handling_time(self, value: Any, key: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 30:
            self.problem(key, f"must be a whole number of days from 1 to 30, not {value!r}")
            return None
        return value

    def sku_table(self, data: dict[str, Any], key: str, check: Callable[[Any, str], Any]) -> dict | None:
        table = data.get(key, {})
        if not isinstance(table, dict):
            self.problem(key, "must be a table of seller SKU = value, e.g. { \"MUG-1\" = 5 }")
            return None
        checked = {sku: check(value, f"{key}.{sku}") for sku, value in table.items()}
        for sku in table:
            if not sku.strip() or len(sku) > MAX_SKU_LENGTH:
                self.problem(f"{key}.{sku}", f"is not a seller SKU (1 to {MAX_SKU_LENGTH} characters)")
        return None if None in checked.values() else checked

    def leave_alone(self, data: dict[str, Any]) -> tuple[str, ...] | None:
        value = data.get("leave_alone", [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.problem("leave_alone", "must be a list of seller SKUs or patterns, e.g. [\"*-FBA\"]")
            return None
        return tuple(value)

    def sku_map(self, name: str) -> dict[str, str] | None:
        path = Path(name) if Path(name).is_absolute() else self.folder / name
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            self.problem("sku_map", f"file {str(path)!r} not found")
            return None
        except OSError as problem:
            self.problem("sku_map", f"cannot read {str(path)!r} ({problem.strerror})")
            return None
        except UnicodeDecodeError:
            self.problem("sku_map", f"{str(path)!r} is not UTF-8 text")
            return None
        problems, table = _read_sku_map(text)
        for line, why in problems:
            self.checker.problems.append(f"{path}: line {line}: {why}")
        return None if problems else table


def _read_sku_map(text: str) -> tuple[list[tuple[int, str]], dict[str, str]]:
    """`warehouse_sku,seller_sku` lines → ({warehouse SKU: seller SKU}, problems by line)."""
    import csv

    lines = text.splitlines()
    header = lines[0] if lines else ""
    delimiter = next((d for d in ",;\t" if d in header), ",")
    rows = csv.reader(lines, delimiter=delimiter)
    problems: list[tuple[int, str]] = []
    if [cell.strip() for cell in next(rows, [])] != ["warehouse_sku", "seller_sku"]:
        return [(1, "the header must be warehouse_sku,seller_sku")], {}
    table: dict[str, str] = {}
    for number, row in enumerate(rows, 2):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if len(cells) != 2:
            problems.append((number, f"needs 2 fields (warehouse_sku, seller_sku), not {len(cells)}"))
        elif not cells[0]:
            problems.append((number, "warehouse_sku is empty"))
        elif len(cells[1]) > MAX_SKU_LENGTH:
            problems.append((number, f"seller_sku {cells[1]!r} is longer than Amazon's {MAX_SKU_LENGTH} characters"))
        elif cells[0] in table and table[cells[0]] != cells[1]:
            problems.append((number, f"warehouse_sku {cells[0]!r} is mapped twice "
                                     f"(to {table[cells[0]]!r} and {cells[1]!r})"))
        else:
            table[cells[0]] = cells[1]
    return problems, table




# --- [shipments]: the warehouse's shipment confirmation files -----------------------------------
#
#     [shipments]
#     format = "csv"                  # and the other keys every inbound file has (above):
#                                     # encoding, delimiter, header, sheet, record, timezone
#                                     # (of the ship dates), marker, result_delimiter
#     date_format = "%d.%m.%Y %H:%M"  # strftime; without a time the date counts as the day
#     unknown_carrier = "other"       # other: sent as "Other" with the warehouse's name | reject
#
#     [shipments.columns]             # header names (or positions, or xml paths) of:
#     order_id = "Auftragsnummer"     # required
#     sku = "Artikelnummer"           # exactly one of sku | order_item_id
#     quantity = "Menge"              # required
#     carrier = "Versandart"          # required
#     shipping_method = "Produkt"     # optional
#     tracking_number = "Sendungsnummer"   # required
#     ship_date = "Versanddatum"      # required
#
#     [shipments.carriers]            # the warehouse's carrier names → Amazon's carrier codes
#     DHL_PAKET = { code = "DHL", method = "DHL Paket" }
#     UPS = "UPS"
#     HERMES = { code = "Other", name = "Hermes Germany" }
#
# A carrier value the table lacks is used as it is when it is one of Amazon's codes (case is
# corrected), else sent as "Other" with the value as carrierName, or rejected (unknown_carrier).

SHIPMENT_FIELDS = ("order_id", "sku", "order_item_id", "quantity", "carrier", "shipping_method",
                   "tracking_number", "ship_date")
_REQUIRED_FIELDS = ("order_id", "quantity", "carrier", "tracking_number", "ship_date")
UNKNOWN_CARRIER = ("other", "reject")
_SHIPMENT_KEYS = {"date_format", "unknown_carrier", "carriers"}
_TIME_DIRECTIVES = frozenset("HIMSpXcTRrf")


@dataclass(frozen=True)
class Carrier:
    """What Amazon is told about a carrier: one of its codes; a name when the code is Other."""

    code: str
    name: str = ""
    method: str = ""  # the shipping method sent when the file gives none


@dataclass(frozen=True)
class ShipmentLayout:
    format: str
    columns: tuple[tuple[str, str], ...]  # field → header name, position ("3") or xml path
    encoding: str = "utf-8"
    delimiter: str = ","
    header: bool = True
    sheet: str = ""
    record: str = ""
    timezone: str = "UTC"
    date_format: str = "%Y-%m-%d %H:%M:%S"
    carriers: tuple[tuple[str, Carrier], ...] = ()
    unknown_carrier: str = "other"
    marker: str = ""
    result_delimiter: str = ","

    def column(self, field: str) -> str | None:
        return dict(self.columns).get(field)

    @property
    def item_field(self) -> str:
        """How rows name the item shipped: "sku" or "order_item_id"."""
        return "sku" if self.column("sku") is not None else "order_item_id"

    @property
    def date_only(self) -> bool:
        return not any(d in _TIME_DIRECTIVES for d in _DIRECTIVE.findall(self.date_format))

    @property
    def table(self):
        """The reader's view of the layout (bridge.formats.readers.TableSpec)."""
        return _table_spec(self, tuple(where for _, where in self.columns))


def amazon_carrier_codes() -> frozenset[str]:
    """Amazon's carrier codes, from the list the package carries (bridge/data/carrier_codes.txt)."""
    return _carrier_codes()


@functools.cache
def _carrier_codes() -> frozenset[str]:
    text = (Path(__file__).resolve().parent / "data" / "carrier_codes.txt").read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


class _ShipmentsChecker(_Checker):
    """[shipments] → ShipmentLayout, every problem as `file: shipments.key: why`."""

    def section(self, data: Any) -> ShipmentLayout | None:
        if data is None:
            return None
        if not isinstance(data, dict):
            self.problem("shipments", "must be a table")
            return None
        bad = len(self.problems)
        table = _InboundTable(self, "shipments", SHIPMENT_FIELDS, _REQUIRED_FIELDS,
                              f"{', '.join(_REQUIRED_FIELDS)} and sku or order_item_id", "Shipments/Shipment")
        fmt, options = table.options(data, _SHIPMENT_KEYS)
        options["date_format"] = self.date_format(data)
        options["unknown_carrier"] = table.pick(data, "unknown_carrier", UNKNOWN_CARRIER, "other")
        record = table.record(data, fmt)
        items = data.get("columns")
        columns = table.columns(items, fmt, options["header"], record)
        if isinstance(items, dict) and items and ("sku" in items) == ("order_item_id" in items):
            self.problem("shipments.columns", "needs exactly one of sku (the seller SKU) or order_item_id "
                         "(Amazon's order item id) to say which item a row ships")
        carriers = self.carriers(data.get("carriers", {}))
        if fmt is None or len(self.problems) > bad or None in options.values():
            return None
        return ShipmentLayout(format=fmt, columns=columns, record=record, carriers=carriers, **options)

    def date_format(self, data: dict[str, Any]) -> str | None:
        fmt = self.text(data, "shipments.date_format", "%Y-%m-%d %H:%M:%S")
        if fmt is None:
            return None
        sample = datetime(2026, 11, 20, 16, 45, 30)
        try:
            parsed = datetime.strptime(sample.strftime(fmt), fmt)
        except ValueError:
            parsed = None
        if "%" not in fmt or parsed is None or parsed.date() != sample.date():
            self.problem("shipments.date_format", f"{fmt!r} cannot read back a date it writes "
                         "(use strftime directives, e.g. '%d.%m.%Y %H:%M')")
            return None
        return fmt

    def carriers(self, table: Any) -> tuple[tuple[str, Carrier], ...]:
        if not isinstance(table, dict):
            self.problem("shipments.carriers", "must be a table of warehouse name = Amazon carrier code")
            return ()
        codes = amazon_carrier_codes()
        result = []
        for name, entry in table.items():
            where = f"shipments.carriers.{name}"
            if isinstance(entry, str):
                entry = {"code": entry}
            if not isinstance(entry, dict) or set(entry) - {"code", "name", "method"} or \
                    not all(isinstance(v, str) for v in entry.values()):
                self.problem(where, "must be an Amazon carrier code, or { code = \"...\", name = \"...\", "
                             "method = \"...\" } with strings")
                continue
            code = entry.get("code", "")
            if code not in codes:
                near = [c for c in sorted(codes) if c.casefold() == code.casefold()]
                hint = f" (did you mean {near[0]!r}?)" if near else " (see bridge/data/carrier_codes.txt)"
                self.problem(f"{where}.code" if "name" in entry or "method" in entry else where,
                             f"{code!r} is not one of Amazon's carrier codes{hint}")
                continue
            if code == "Other" and not entry.get("name", "").strip():
                self.problem(where, "code \"Other\" needs the carrier's name: { code = \"Other\", name = \"...\" }")
                continue
            result.append((str(name), Carrier(code, entry.get("name", ""), entry.get("method", ""))))
        return tuple(result)


def _anyascii(text: str) -> str:
    from anyascii import anyascii  # when a column transliterates, not for every command

    return anyascii(text)
