"""Shipment confirmation rows → checked packages → confirmShipment requests. Pure.

1. `parse_rows` turns the reader's rows into `ShipmentLine`s: typed values, or the problems that
   make a row unusable, each worded for a warehouse clerk and naming the file's column.
2. `plan` groups lines into packages (one per order and tracking number) and checks each
   against what the ledger knows of its order (`OrderFacts`): the bridge sent it to this
   warehouse, the item is in the order, the quantity is not above what is unshipped, the ship
   date is neither in the future nor before the order. A bad row rejects its package, never
   the file; the other packages go.
3. `confirm_request` is the exact ConfirmShipmentRequest body Amazon receives.

Time is a parameter: `plan(..., now)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence
from zoneinfo import ZoneInfo

from bridge.formats.readers import Row, cell_shown
from bridge.mapping import Carrier, ShipmentLayout, amazon_carrier_codes
from bridge.records import Line, how_long, iso_z, utc

ACCEPTED, REJECTED, DUPLICATE = "accepted", "rejected", "duplicate"
RESULT_HEADER = ("row", "result", "order", "item", "quantity", "tracking", "message")
_ORDER_ID = re.compile(r"\d{3}-\d{7}-\d{7}\Z", re.ASCII)  # not ١٢٣ or full-width digits
_TRACKING = re.compile(r"[A-Za-z0-9-]+\Z")
# a tracking number no check can refuse: letters, digits and '-' with a letter or '-' in it (all
# digits may be Excel's rounding, digits around an E its exponent); the length is checked apart
_PLAIN_TRACKING = re.compile(r"(?=[0-9-]*[A-DF-Za-df-z-])[A-Za-z0-9-]+\Z")
_EXPONENT = re.compile(r"\d(?:[.,]\d+)?E\+?\d+\Z", re.IGNORECASE)
_DIRECTIVE = re.compile(r"%[-_0^#]*(.)")
_HUMAN = {"d": "DD", "m": "MM", "Y": "YYYY", "y": "YY", "H": "hh", "I": "hh", "M": "mm",
          "S": "ss", "p": "AM/PM", "b": "Mon", "B": "Month", "z": "+hhmm", "f": "ffffff"}
MIN_TRACKING, MAX_TRACKING = 5, 40
MAX_FREE_TEXT = 50  # amzn-base.xsd's String: CarrierName, ShippingMethod, ShipperTrackingNumber
# Control characters (C0, DEL, C1), line and paragraph separators, and what XML cannot carry.
_NOT_SENDABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


class ShipmentLine(NamedTuple):
    """One row of a confirmation file, read and typed; `problems` empty when usable.
    (A named tuple: one is made per row, and a tuple is made fastest.)"""

    row: int
    order_id: str
    item: str  # the SKU or order item id, as the file gives it
    quantity_text: str
    tracking: str
    by: str = "sku"  # what `item` is: "sku" or "order_item_id"
    quantity: int = 0
    carrier: Carrier | None = None
    method: str = ""
    ship_date: datetime | None = None  # aware UTC; for date-only formats: local midnight
    ship_day: date | None = None  # the local day, for date-only formats
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class KnownPackage:
    """A package the ledger already holds for an order (accepted, sent or confirmed)."""

    id: int
    tracking: str
    items: tuple[tuple[str, int], ...]  # (order item id, quantity), sorted
    file: str
    row: int
    at: str  # when its file was received, ISO 8601
    status: str


@dataclass(frozen=True)
class OrderFacts:
    """What the ledger (or Amazon) knows of an order a confirmation row names."""

    order_id: str
    marketplace_id: str
    purchase_date: datetime
    lines: tuple[Line, ...]
    warehouse: str | None  # the warehouse it was delivered to; None when looked up on Amazon
    status: str = "delivered"  # the ledger's status
    cancelled: bool = False  # Amazon cancelled it (after it was delivered)
    shipped: tuple[tuple[str, int], ...] = ()  # order item id → units already in packages
    packages: tuple[KnownPackage, ...] = ()


@dataclass(frozen=True)
class PlannedPackage:
    order_id: str
    marketplace_id: str
    tracking: str
    carrier: Carrier
    method: str
    ship_date: datetime
    items: tuple[tuple[str, int], ...]  # (order item id, quantity), in row order
    rows: tuple[int, ...]


@dataclass
class Plan:
    """Packages to send, and what each row's result line says when it is not one of them."""

    packages: list[PlannedPackage] = field(default_factory=list)
    outcomes: dict[int, tuple[str, str]] = field(default_factory=dict)  # row → (result, message)
    lines: list[ShipmentLine] = field(default_factory=list)
    package_rows: dict[int, int] = field(default_factory=dict)  # row → index in packages


# --- 1. rows --------------------------------------------------------------------------------------

def parse_rows(rows: Iterable[Row], layout: ShipmentLayout) -> Iterator[ShipmentLine]:
    """Typed lines, streamed; a row's problems name the file's column and the value."""
    column = dict(layout.columns)
    order_key, item_key, quantity_key = column["order_id"], column[layout.item_field], column["quantity"]
    carrier_key, tracking_key, date_key = column["carrier"], column["tracking_number"], column["ship_date"]
    method_key = column.get("shipping_method")
    item_field = layout.item_field
    carriers = _carrier_lookup(layout)
    zone = ZoneInfo(layout.timezone)
    date_only = layout.date_only
    dates: dict[str, tuple] = {}  # a file repeats its timestamps: parse each once
    for number, values, problem in rows:
        get = values.get
        order_id, item, quantity_text, tracking = get(order_key, ""), get(item_key, ""), get(quantity_key, ""), \
            get(tracking_key, "")
        if problem:
            yield ShipmentLine(number, order_id, item, quantity_text, tracking, item_field, problems=(problem,))
            continue
        problems = [] if _ORDER_ID.match(order_id) else _order_id_problems(order_id, order_key)
        if not item:
            problems.append(f"{item_key}: empty")
        if quantity_text.isdigit() and quantity_text.isascii() and len(quantity_text) <= 9 \
                and quantity_text.strip("0"):
            quantity = int(quantity_text)
        else:
            quantity, why = _quantity(quantity_text, quantity_key)
            problems += why
        carrier_text = get(carrier_key, "")
        carrier = carriers.get(carrier_text)
        if carrier is None:
            carrier, why = _carrier(carrier_text, carrier_key, carriers, layout)
            problems += why
        if not (_PLAIN_TRACKING.match(tracking) and MIN_TRACKING <= len(tracking) <= MAX_TRACKING):
            problems += _tracking_problems(tracking, tracking_key)
        stamp = get(date_key, "")
        parsed = dates.get(stamp)
        if parsed is None:
            if len(dates) > 10_000:
                dates.clear()
            parsed = dates[stamp] = _ship_date(stamp, date_key, layout, zone, date_only)
        shipped, day, why = parsed
        if why:
            problems += why
        given_method = get(method_key, "") if method_key else ""
        method = given_method or (carrier.method if carrier else "")
        if carrier is not None and carrier.code == "Other":  # the file's own words go to Amazon
            problems += _free_text_problems(carrier.name, carrier_key)
        if given_method:
            problems += _free_text_problems(method, method_key)
        yield ShipmentLine(number, order_id, item, quantity_text, tracking, item_field, quantity, carrier, method,
                           shipped, day, tuple(problems))


def _order_id_problems(order_id: str, label: str) -> list[str]:
    if not order_id:
        return [f"{label}: empty"]
    if not _ORDER_ID.match(order_id):
        return [f"{label}: {cell_shown(order_id)} is not an Amazon order id (like 123-1234567-1234567)"]
    return []


def _quantity(text: str, label: str) -> tuple[int, list[str]]:
    if not text:
        return 0, [f"{label}: empty"]
    if not (text.isascii() and text.isdigit()):  # isdigit alone takes '²', which int() refuses
        return 0, [f"{label}: {cell_shown(text)} is not a whole number of units"]
    if len(text) > 9:
        return 0, [f"{label}: {cell_shown(text)} is more units than any parcel holds"]
    if int(text) < 1:
        return 0, [f"{label}: {cell_shown(text)} must be at least 1"]
    return int(text), []


def _carrier_lookup(layout: ShipmentLayout) -> dict[str, Carrier]:
    """The mapping's table first, then Amazon's codes; both matched ignoring case. Amazon's list
    has codes that differ only in case ("NACEX", "Nacex"): the exact one wins, else always the
    same one of them."""
    codes = amazon_carrier_codes()
    table = {name.casefold() for name, _ in layout.carriers}
    lookup = {code.casefold(): Carrier(code) for code in sorted(codes, reverse=True)}
    lookup.update((code, Carrier(code)) for code in codes if code.casefold() not in table)
    lookup.update((name.casefold(), carrier) for name, carrier in layout.carriers)
    lookup.update(layout.carriers)
    return lookup


def _carrier(text: str, label: str, carriers: dict[str, Carrier],
             layout: ShipmentLayout) -> tuple[Carrier | None, list[str]]:
    if not text:
        return None, [f"{label}: empty (Amazon needs the carrier)"]
    found = carriers.get(text) or carriers.get(text.casefold())
    if found is not None:
        return found, []
    if layout.unknown_carrier == "other":
        return Carrier("Other", name=text), []
    return None, [f"{label}: {cell_shown(text)} is neither in the mapping's carrier table nor one of "
                  f"Amazon's carrier codes"]


def _free_text_problems(text: str, label: str) -> list[str]:
    """A carrier name or shipping method from the file, as Amazon gets it: one line of at most
    MAX_FREE_TEXT characters (the order fulfillment feed's String type; confirmShipment's model
    sets no limit but Amazon shows the text to the buyer), no control characters, not a formula."""
    odd = _NOT_SENDABLE.search(text)
    if odd:
        return [f"{label}: has a control character or line break (U+{ord(odd.group()):04X}) at position "
                f"{odd.start() + 1}; Amazon gets one line of text"]
    if len(text) > MAX_FREE_TEXT:
        return [f"{label}: {len(text):,} characters, more than the {MAX_FREE_TEXT} Amazon takes"]
    if text.startswith("="):
        return [f"{label}: starts with '=' like a spreadsheet formula, not a name"]
    return []


def _tracking_problems(text: str, label: str) -> list[str]:
    if not text:
        return [f"{label}: empty"]
    if _EXPONENT.match(text):
        return [f"{label}: {cell_shown(text)} is a number Excel shortened and its digits are lost: format "
                "the column as text and export the file again"]
    if _excel_rounded(text):
        return [f"{label}: {cell_shown(text)} ends in zeros where Excel rounds a number of more than 15 digits: "
                "its last digits are probably lost: format the column as text and export the file again"]
    if not _TRACKING.match(text):
        return [f"{label}: {cell_shown(text)} has characters other than letters, digits and '-'"]
    if not MIN_TRACKING <= len(text) <= MAX_TRACKING:
        return [f"{label}: {cell_shown(text)} is not a tracking number ({MIN_TRACKING} to {MAX_TRACKING} "
                "characters)"]
    return []


def _excel_rounded(text: str) -> bool:
    """An all-digit number Excel kept only 15 significant digits of (a "Number" column with no
    decimals): 17 digits or more, the first not a zero (Excel writes no leading zero, so
    DHL's 00340... was text), and only zeros after the 15th. A real tracking number of 17 digits
    ends like that once in a hundred times, of 20 digits once in 100,000; a rounded one always
    does. A 16-digit number Excel rounded (its last digit made 0) cannot be told from a real one."""
    return len(text) >= 17 and text.isdigit() and text[0] != "0" and not text[15:].strip("0")


def _ship_date(text: str, label: str, layout: ShipmentLayout, zone: ZoneInfo,
               date_only: bool) -> tuple[datetime | None, date | None, list[str]]:
    if not text:
        return None, None, [f"{label}: empty"]
    local = _parse_local(text, layout.date_format, iso=layout.format == "xlsx")
    if local is None:
        return None, None, [f"{label}: {cell_shown(text)} {not_a_date(text, layout.date_format)}"]
    try:
        if date_only:
            local = datetime.combine(local.date(), time())
            return utc(local.replace(tzinfo=zone)), local.date(), []
        if local.tzinfo is None:
            local = local.replace(tzinfo=zone)
        return utc(local), None, []
    except (OverflowError, ValueError):  # the year 1 east of UTC, 9999 west of it
        return None, None, [f"{label}: {cell_shown(text)} is not a ship date the bridge can use (year "
                            f"{local.year})"]


def _parse_local(text: str, fmt: str, iso: bool) -> datetime | None:
    """The mapping's format; in a workbook also ISO 8601, which is how a date cell reads."""
    try:
        return datetime.strptime(text, fmt)
    except (ValueError, OverflowError):
        pass
    try:
        return datetime.fromisoformat(text) if iso else None
    except (ValueError, OverflowError):
        return None


def not_a_date(text: str, fmt: str) -> str:
    """Why text the mapping's date format did not take is not a date: a day that does not
    exist (31.11.), or another shape."""
    try:
        datetime.strptime(text, fmt)
    except ValueError as problem:
        if "day is out of range" in str(problem):
            return f"has the shape {human_format(fmt)} but is not a real date: the month has no such day"
    except OverflowError:
        pass
    return f"is not a date like {human_format(fmt)}"


def human_format(fmt: str) -> str:
    """'%d.%m.%Y %H:%M' → 'DD.MM.YYYY hh:mm', for messages a clerk reads."""
    return _DIRECTIVE.sub(lambda m: _HUMAN.get(m.group(1), m.group(0)), fmt).replace("%%", "%")


# --- 2. packages ----------------------------------------------------------------------------------

Verdict = "PlannedPackage | dict[int, tuple[str, str]]"  # a package, or each row's (result, message)


def plan(lines: Iterable[ShipmentLine], facts: Callable[[str], OrderFacts | None],
         warehouse: str, now: datetime, *, zone: str = "UTC",
         tolerance: timedelta = timedelta(minutes=15)) -> Plan:
    """Group lines into packages by order and tracking number and check each package, in
    memory (a dry run, tests; the service streams a file through `check_groups` instead).
    `tolerance`: how far ahead of `now` a ship date is taken as the WMS's clock running
    ahead (the package then ships at `now`) rather than a date in the future."""
    result = Plan()
    groups: dict[tuple[str, str], list[ShipmentLine]] = {}
    for line in lines:
        result.lines.append(line)
        groups.setdefault((line.order_id, line.tracking), []).append(line)
    by_order = sorted(groups.values(), key=lambda group: (group[0].order_id, group[0].row))
    verdicts = dict(check_groups(by_order, facts, warehouse, now, zone=zone, tolerance=tolerance))
    for group in groups.values():  # packages in the order the file first names them
        verdict = verdicts[group[0].row]
        if isinstance(verdict, PlannedPackage):
            result.package_rows.update((line.row, len(result.packages)) for line in group)
            result.packages.append(verdict)
        else:
            result.outcomes.update(verdict)
    return result


def check_groups(groups: Iterable[list[ShipmentLine]], facts: Callable[[str], OrderFacts | None],
                 warehouse: str, now: datetime, *, zone: str = "UTC",
                 tolerance: timedelta = timedelta(minutes=15)) -> Iterator[tuple[int, Verdict]]:
    """(first row, verdict) for each package group: its lines (one order and tracking number,
    in row order), the groups of one order one after another in the order the file first names
    them. Only the current order's facts and units are held: memory does not grow with the
    file. A package's units count against what earlier packages of its order in the same file
    took."""
    place = ZoneInfo(zone)
    current: str | None = None
    known: _Order | None = None
    looked_up = False
    for group in groups:
        order_id = group[0].order_id
        if order_id != current:
            current, known, looked_up = order_id, None, False
        if not looked_up and not any(line.problems for line in group):
            found = facts(order_id)
            known, looked_up = (_Order(found) if found is not None else None), True
        verdict = _check(group, known, warehouse, now, place, tolerance)
        if isinstance(verdict, PlannedPackage) and known is not None:
            for item_id, units in verdict.items:
                known.left[item_id] -= units  # later packages of the order count against it
        yield group[0].row, verdict


class _Order:
    """One order's facts indexed once, not once per package (an order of 20,000 lines in
    20,000 parcels must not cost lines × parcels): its lines by SKU and by order item, the
    units each item still has unshipped (less what earlier packages of the file took), its
    known packages by tracking number."""

    def __init__(self, facts: OrderFacts):
        self.facts = facts
        self.by_sku: dict[str, list[Line]] = {}
        self.by_item: dict[str, list[Line]] = {}
        for line in facts.lines:
            self.by_sku.setdefault(line.sku, []).append(line)
            self.by_item.setdefault(line.order_item_id, []).append(line)
        shipped = dict(facts.shipped)
        self.left = {line.order_item_id: line.quantity - shipped.get(line.order_item_id, 0) for line in facts.lines}
        self.packages: dict[str, KnownPackage] = {}
        for package in facts.packages:
            self.packages.setdefault(package.tracking, package)

    def lines_for(self, row: ShipmentLine) -> list[Line]:
        return (self.by_sku if row.by == "sku" else self.by_item).get(row.item, [])


def _check(group: list[ShipmentLine], order: _Order | None, warehouse: str, now: datetime,
           zone: ZoneInfo, tolerance: timedelta) -> PlannedPackage | dict[int, tuple[str, str]]:
    facts = order.facts if order is not None else None
    bad = {line.row: " / ".join(line.problems) for line in group if line.problems}
    if bad:
        return _reject_package(group, bad)
    first = group[0]
    problem = _order_problem(first.order_id, facts, warehouse)
    if problem:
        return {line.row: (REJECTED, problem) for line in group}
    assert facts is not None and order is not None
    disagree = _disagreement(group)
    if disagree:
        return {line.row: (REJECTED, disagree) for line in group}
    known = order.packages.get(first.tracking)
    items, bad = _items(group, order, dict(known.items) if known else {})  # as if that package were not there
    if bad:
        return _reject_package(group, bad)
    if known is not None:
        if tuple(sorted(items.items())) == known.items:
            return {line.row: (DUPLICATE, _already(known)) for line in group}
        sent = dict(known.items)
        if all(items.get(item, 0) >= units for item, units in sent.items()):
            return _part_sent(group, order, known, sent)
        why = (f"tracking number {first.tracking} of order {first.order_id} was already sent to "
               f"Amazon with other items ({known.file} row {known.row}); correct it in Seller "
               "Central")
        return {line.row: (REJECTED, why) for line in group}
    bad = {line.row: why for line in group if (why := _date_problem(line, facts, now, zone, tolerance))}
    if bad:
        return _reject_package(group, bad)
    return PlannedPackage(
        order_id=first.order_id, marketplace_id=facts.marketplace_id, tracking=first.tracking,
        carrier=first.carrier, method=first.method,
        ship_date=min(_ship_instant(first, facts), now), items=tuple(items.items()),
        rows=tuple(line.row for line in group))


def _part_sent(group: list[ShipmentLine], order: _Order, known: KnownPackage,
               sent: dict[str, int]) -> dict[int, tuple[str, str]]:
    """A parcel sent to Amazon with part of its rows (its file was taken while it was still
    being written): the rows it holds are duplicates, the others cannot join it here."""
    missing = (f"the parcel with tracking number {group[0].tracking} was {_state(known)} as package {known.id} "
               f"({known.file} row {known.row}) without this row's item: add the item to that shipment in "
               "Seller Central, or ship it with a tracking number of its own")
    return {line.row: (DUPLICATE, _already(known))
            if all(item.order_item_id in sent for item in order.lines_for(line)) else (REJECTED, missing)
            for line in group}


def _state(known: KnownPackage) -> str:
    return "already confirmed on Amazon" if known.status == "confirmed" else "already taken"


def _already(known: KnownPackage) -> str:
    """A row the known package already holds, answered as a duplicate."""
    return f"{_state(known)} as package {known.id} from {known.file} row {known.row} on {known.at[:10]}"


def _reject_package(group: list[ShipmentLine], bad: dict[int, str]) -> dict[int, tuple[str, str]]:
    """The rows at fault say why; their package's other rows say which row stopped them."""
    plural = "s" if len(bad) > 1 else ""
    first = group[0]
    why = (f"row{plural} {_some_rows(sorted(bad))} of the same package (order {_plain(first.order_id)}, "
           f"tracking {_plain(first.tracking)}) rejected")  # one text for every row: linear, not rows × rows
    return {line.row: (REJECTED, bad.get(line.row) or why) for line in group}


SHOWN_ROWS = 5  # rows a message names before "and N more"


def _some_rows(rows: Sequence[int]) -> str:
    """'2, 3, 4', or for a package of thousands of rows '2, 3, 4, 5, 6 and 7,995 more'."""
    shown = ", ".join(str(row) for row in rows[:SHOWN_ROWS])
    return shown + (f" and {len(rows) - SHOWN_ROWS:,} more" if len(rows) > SHOWN_ROWS else "")


def _plain(text: str) -> str:
    """A value named in a message unquoted when its shape allows (see `shown`)."""
    quoted = cell_shown(text)
    return text if quoted.startswith("'") else f"({quoted})"


def _order_problem(order_id: str, facts: OrderFacts | None, warehouse: str) -> str:
    if facts is None:
        return f"order {order_id} was not sent to {warehouse} by the bridge"
    if facts.warehouse is not None and facts.warehouse != warehouse:
        return f"order {order_id} was sent to warehouse {facts.warehouse}, not {warehouse}"
    if facts.cancelled:
        return (f"order {order_id} was cancelled on Amazon after it was sent to {warehouse}, "
                "it should not have shipped: tell the seller")
    if facts.status != "delivered":
        return f"order {order_id} has not been sent to {warehouse} yet (it is {facts.status})"
    return ""


def _disagreement(group: list[ShipmentLine]) -> str:
    for name, value in (("carrier", lambda l: l.carrier), ("shipping method", lambda l: l.method),
                        ("ship date", lambda l: l.ship_date)):
        values = {value(line) for line in group}
        if len(values) > 1:
            rows = _some_rows([line.row for line in group])
            return (f"rows {rows} are one package (order {group[0].order_id}, tracking "
                    f"{group[0].tracking}) but give different {name}s")
    return ""


def _items(group: list[ShipmentLine], order: _Order, back: dict[str, int]) -> tuple[dict[str, int], dict[int, str]]:
    """Each row's units on the order's items (by order item id, or by SKU: spread over the
    order's lines with that SKU), never above what is unshipped. `back`: units counted as
    unshipped again (the known package of this tracking number, checked as if not there).
    Touches only the lines the rows name: `order.left` is not copied per package."""
    items: dict[str, int] = {}
    bad: dict[int, str] = {}

    def left(item_id: str) -> int:
        return max(0, order.left[item_id] + back.get(item_id, 0) - items.get(item_id, 0))

    for row in group:
        matching = order.lines_for(row)
        what = f"{'SKU' if row.by == 'sku' else 'order item'} {_plain(row.item)}"
        if not matching:
            bad[row.row] = f"{what} is not in order {row.order_id}"
            continue
        available = sum(left(line.order_item_id) for line in matching)
        if row.quantity > available:
            bad[row.row] = (f"quantity {row.quantity} of {what} is more than the {available} "
                            f"still unshipped in order {row.order_id}")
            continue
        wanted = row.quantity
        for line in matching:
            take = min(wanted, left(line.order_item_id))
            if take:
                items[line.order_item_id] = items.get(line.order_item_id, 0) + take
                wanted -= take
    return items, bad


def _date_problem(line: ShipmentLine, facts: OrderFacts, now: datetime, zone: ZoneInfo,
                  tolerance: timedelta) -> str:
    assert line.ship_date is not None
    if line.ship_day is not None:
        if line.ship_day > (now + tolerance).astimezone(zone).date():
            return (f"ship date {line.ship_day.isoformat()} is in the future (the bridge's clock says "
                    f"{now.astimezone(zone).date().isoformat()} in {zone.key})")
        if line.ship_day < facts.purchase_date.astimezone(zone).date():
            return (f"ship date {line.ship_day.isoformat()} is before the order was placed "
                    f"({facts.purchase_date.astimezone(zone).date().isoformat()})")
        return ""
    if line.ship_date > now + tolerance:
        return (f"ship date {iso_z(line.ship_date)} is in the future: {how_long(line.ship_date - now)} ahead of "
                f"the bridge's clock ({iso_z(now)}), more than the {how_long(tolerance)} a clock may be ahead")
    if line.ship_date < facts.purchase_date:
        return (f"ship date {iso_z(line.ship_date)} is before the order was placed "
                f"({iso_z(facts.purchase_date)})")
    return ""



def _ship_instant(line: ShipmentLine, facts: OrderFacts) -> datetime:
    """A date-only ship date becomes the start of that local day, or the order time when the
    order was placed that same day: Amazon refuses a ship date before the order."""
    assert line.ship_date is not None
    return max(line.ship_date, facts.purchase_date) if line.ship_day else line.ship_date


# --- 3. Amazon's request --------------------------------------------------------------------------

def confirm_request(package: PlannedPackage, package_reference_id: int) -> dict:
    """The ConfirmShipmentRequest (ordersV0.json) for one package. The reference id is the
    ledger's: re-sending it after a crash edits this package instead of adding another."""
    detail: dict = {"packageReferenceId": str(package_reference_id), "carrierCode": package.carrier.code}
    if package.carrier.code == "Other":
        detail["carrierName"] = package.carrier.name
    if package.method:
        detail["shippingMethod"] = package.method
    detail.update(trackingNumber=package.tracking, shipDate=iso_z(package.ship_date),
                  orderItems=[{"orderItemId": item_id, "quantity": units} for item_id, units in package.items])
    return {"marketplaceId": package.marketplace_id, "packageDetail": detail}


def result_line(line: ShipmentLine, result: str, message: str) -> tuple[str, ...]:
    """One line of the result file, in RESULT_HEADER's order."""
    return (str(line.row), result, line.order_id, line.item, line.quantity_text, line.tracking,
            message)


def summary(results: Sequence[str]) -> str:
    counts = {name: sum(r == name for r in results) for name in (ACCEPTED, REJECTED, DUPLICATE)}
    return " ".join(f"{name}={count}" for name, count in counts.items())
