"""The reconciliation workbook of `fbm-bridge report`: the ledger's facts in, an .xlsx stream out.

Pure: rows of plain values in (as `Ledger.report_orders`, `report_rejected_rows` and
`report_stock_files` give them), workbook bytes into a binary stream out; no clock, path or
ledger. Five sheets, each one table readable in Excel as it opens: a bold header row, frozen,
an auto-filter over the table, columns as wide as their contents, times as real Excel dates (UTC:
an Excel date has no time zone, so the headers say it). Every text cell is text: a value starting
with "=" from a warehouse's file is never a formula, control characters are shown as escapes.

Nothing here holds buyer data: orders come with their ids, marketplace, dates, warehouse, file
and units, never a name or an address.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, BinaryIO, Iterable, Mapping, Sequence

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.writer.excel import ExcelWriter

from bridge.formats.tables import _FixedTimeZip  # zip entries dated by the input, not the clock
from bridge.records import one_line

DUE_WITHIN = timedelta(hours=24)  # "Due soon": ship-by within this of the report's time, or past
DATETIME_FORMAT = "yyyy-mm-dd hh:mm"
DATE_FORMAT = "yyyy-mm-dd"
MAX_ROWS = 1_000_000  # a sheet holds 1,048,576 rows; more are counted in a last row
MAX_TEXT = 32_767  # characters an Excel cell holds
MIN_WIDTH, MAX_WIDTH = 8, 60
AMAZON_ERRORS_SHOWN = 5
NO_WAREHOUSE = "(none)"
BOLD = Font(bold=True)

SUMMARY, ORDERS, DUE_SOON, REJECTED, FEEDS = "Summary", "Orders", "Due soon", "Rejected rows", "Inventory feeds"
SUMMARY_HEADER = ("Warehouse", "Downloaded", "Delivered", "Shipped", "Confirmed", "Not sent yet",
                  "Cancelled or not sent", "Due soon or late", "Rejected rows", "Last stock feed (UTC)",
                  "Last stock feed outcome")
ORDERS_HEADER = ("Order id", "Marketplace", "Purchased (UTC)", "Ship by (UTC)", "Downloaded (UTC)", "Warehouse",
                 "File", "Delivered (UTC)", "Ordered", "Shipped", "Confirmed", "Last confirmed (UTC)", "Status")
DUE_HEADER = ("Order id", "Warehouse", "Ship by (UTC)", "Hours left", "Ordered", "Shipped", "Confirmed", "Status")
REJECTED_HEADER = ("Flow", "Warehouse", "File", "Row", "Column", "Reason", "Received (UTC)")
FEEDS_HEADER = ("Warehouse", "File", "Stock time (UTC)", "Received (UTC)", "Rows", "Bad rows", "SKUs", "Outcome",
                "Why", "Published (UTC)", "Feed ids", "Amazon errors", "Amazon warnings", "Amazon's errors")

Cell = str | int | float | datetime | date | None


@dataclass(frozen=True)
class Period:
    """Whole UTC days, `first` to `last` included."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(0), timezone.utc)

    @property
    def end(self) -> datetime:
        """The first moment after the period."""
        return datetime.combine(self.last + timedelta(days=1), time(0), timezone.utc)


@dataclass(frozen=True)
class Table:
    """One sheet: `notes` (label, value) lines above the table, then its header and rows."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    notes: tuple[tuple[str, Cell], ...] = ()

    @property
    def header_row(self) -> int:
        """The header's row number in the sheet (1-based): below the notes and a blank line."""
        return len(self.notes) + 2 if self.notes else 1


# --- what the sheets say ------------------------------------------------------------------------

def reconciliation(period: Period, now: datetime, warehouses: Sequence[str], orders: Sequence[Mapping[str, Any]],
                   rejected: Sequence[Mapping[str, Any]], stock_files: Sequence[Mapping[str, Any]], *,
                   column_labels: Mapping[str, Sequence[str]] | None = None,
                   about: Sequence[tuple[str, Cell]] = ()) -> list[Table]:
    """The five sheets. `warehouses`: the configured names, in order (others found in the data
    follow); `column_labels`: per warehouse, its confirmation files' column names, to tell which
    column a rejected row's reason is about; `about`: whose report it is (seller, config), the
    Summary's first lines, so that a workbook renamed or mailed still says."""
    due = [order for order in orders if is_due(order, now)]
    due.sort(key=lambda order: (order["ship_by"], order["order_id"]))
    rows_rejected = [_rejected_row(row, (column_labels or {}).get(row["warehouse"], ())) for row in rejected]
    return [
        _summary(period, now, warehouses, orders, due, rejected, stock_files, about),
        Table(ORDERS, ORDERS_HEADER, [_order_row(order) for order in orders]),
        Table(DUE_SOON, DUE_HEADER, [_due_row(order, now) for order in due]),
        Table(REJECTED, REJECTED_HEADER, rows_rejected),
        Table(FEEDS, FEEDS_HEADER, [_feed_row(stock) for stock in stock_files]),
    ]


def order_stage(order: Mapping[str, Any]) -> str:
    """Where an order is, in words, for staff."""
    status, reason = order["status"], one_line(order["reason"])
    if order["unreadable"]:
        return f"record unreadable: {order['unreadable']}"
    if status != "delivered":
        words = {"pending": "waiting to be sent", "held": "held", "unrenderable": "cannot be laid out",
                 "staged": "being delivered", "cancelled": "cancelled", "skipped": "not sent"}.get(status, status)
        return f"{words}: {reason}" if reason and status != "pending" else words
    if order["amazon_status"] == "CANCELLED":
        return "cancelled on Amazon after delivery"
    ordered, shipped, confirmed = order["ordered"], order["shipped"], order["confirmed"]
    if confirmed >= ordered:
        return "confirmed"
    if order.get("settled"):
        return "settled by a person (shipments settle)"
    if not order.get("tracked", True):
        return "delivered; confirmations not tracked (the warehouse has no shipments folder)"
    if shipped >= ordered:
        return "shipped, waiting for Amazon"
    if confirmed:
        return "partly confirmed"
    if shipped:
        return "partly shipped"
    if order["refused"]:
        return "shipment refused by Amazon"
    return "delivered, not shipped yet"


def is_open(order: Mapping[str, Any]) -> bool:
    """Still to be confirmed: not cancelled, not left out, not confirmed in full."""
    if order["unreadable"] or order["status"] in ("cancelled", "skipped") or order["amazon_status"] == "CANCELLED":
        return False
    if order.get("settled") or not order.get("tracked", True):  # done by hand, or never known to the bridge
        return False
    return order["confirmed"] < order["ordered"]


def is_due(order: Mapping[str, Any], now: datetime) -> bool:
    """Open, with a ship-by within DUE_WITHIN of `now` or past."""
    return is_open(order) and order["ship_by"] is not None and order["ship_by"] <= now + DUE_WITHIN


def _summary(period: Period, now: datetime, warehouses: Sequence[str], orders: Sequence[Mapping[str, Any]],
             due: Sequence[Mapping[str, Any]], rejected: Sequence[Mapping[str, Any]],
             stock_files: Sequence[Mapping[str, Any]], about: Sequence[tuple[str, Cell]] = ()) -> Table:
    names = list(dict.fromkeys([*warehouses, *(o["warehouse"] or NO_WAREHOUSE for o in orders),
                                *(r["warehouse"] for r in rejected)]))
    rows = []
    for name in names:
        mine = [o for o in orders if (o["warehouse"] or NO_WAREHOUSE) == name]
        delivered = [o for o in mine if o["status"] == "delivered"]
        # Units ordered are in the order's record: one that cannot be opened is never counted shipped.
        going = [o for o in delivered if not o["unreadable"] and o["amazon_status"] != "CANCELLED"]
        last_stock = next((s for s in stock_files if s["warehouse"] == name and s["status"] in SENT_TO_AMAZON), None)
        rows.append((
            name, len(mine), len(delivered),
            sum(o["shipped"] >= o["ordered"] for o in going),
            sum(o["confirmed"] >= o["ordered"] for o in going),
            sum(o["status"] in ("pending", "held", "unrenderable", "staged") for o in mine),
            sum(o["status"] in ("cancelled", "skipped") or o["amazon_status"] == "CANCELLED" for o in mine),
            sum((o["warehouse"] or NO_WAREHOUSE) == name for o in due),
            sum(r["warehouse"] == name for r in rejected),
            last_stock["stock_time"] if last_stock else None,
            _outcome(last_stock) if last_stock else "",
        ))
    notes = (
        *about,
        ("From (UTC day)", period.first),
        ("To (UTC day, included)", period.last),
        ("Report made (UTC)", now),
        ("Orders", "those the bridge first downloaded in the period (sheet Orders, column Downloaded)"),
        ("Due soon or late", f"orders of the period not yet confirmed whose ship-by is before "
                             f"{_when(now + DUE_WITHIN)} UTC (sheet Due soon)"),
        ("Rejected rows", "in the confirmation and stock files received in the period"),
    )
    return Table(SUMMARY, SUMMARY_HEADER, rows, notes)


def _order_row(order: Mapping[str, Any]) -> tuple[Cell, ...]:
    return (order["order_id"], order["marketplace_id"], order["purchase_date"], order["ship_by"],
            order["first_seen_at"], order["warehouse"] or "", order["file"] or "", order["delivered_at"],
            order["ordered"], order["shipped"], order["confirmed"],
            order["confirmed_at"],
            order_stage(order))


def _due_row(order: Mapping[str, Any], now: datetime) -> tuple[Cell, ...]:
    hours = round((order["ship_by"] - now).total_seconds() / 3600, 1)
    return (order["order_id"], order["warehouse"] or "", order["ship_by"], hours, order["ordered"],
            order["shipped"], order["confirmed"], order_stage(order))


def _rejected_row(row: Mapping[str, Any], labels: Sequence[str]) -> tuple[Cell, ...]:
    column = row["column"] or _columns_named(row["reason"], labels)
    return (row["flow"], row["warehouse"], row["file"], row["row"], column, row["reason"], row["received_at"])


def _columns_named(reason: str, labels: Sequence[str]) -> str:
    """The columns a row's reason is about: its problems read `COLUMN: why`, joined by " / "."""
    named = [part.split(": ", 1)[0] for part in reason.split(" / ")]
    return ", ".join(dict.fromkeys(name for name in named if name in labels))


def _feed_row(stock: Mapping[str, Any]) -> tuple[Cell, ...]:
    errors = stock["amazon_errors"]
    shown = "; ".join(_amazon_error(issue) for issue in errors[:AMAZON_ERRORS_SHOWN])
    if len(errors) > AMAZON_ERRORS_SHOWN:
        shown += f"; and {len(errors) - AMAZON_ERRORS_SHOWN} more (the file's result file lists them all)"
    return (stock["warehouse"], stock["file"], stock["stock_time"], stock["received_at"], stock["rows"],
            stock["bad_rows"], stock["skus"], _outcome(stock), stock["reason"], stock["published_at"],
            ", ".join(stock["feed_ids"]), len(errors), stock["amazon_warnings"], shown)


SENT_TO_AMAZON = ("published", "failed", "submitting")  # a feed; held and superseded files never were


def _outcome(stock: Mapping[str, Any]) -> str:
    return stock["status"] + (" (forced)" if stock["forced"] else "")


def _amazon_error(issue: Mapping[str, Any]) -> str:
    sku = f"SKU {issue['sku']}" if issue["sku"] else "the document"
    code = f" [{issue['code']}]" if issue["code"] else ""
    return f"{sku}{code}: {issue['message']}"


def _when(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


# --- the workbook -------------------------------------------------------------------------------

def write_workbook(tables: Iterable[Table], out: BinaryIO, *, created: datetime, max_rows: int = MAX_ROWS) -> None:
    """Write `tables` as one workbook into `out`, dated `created` (its properties and zip entries:
    the bytes depend only on the input). Rows past `max_rows` are counted in a last row."""
    book = Workbook(write_only=True)
    for table in tables:
        _write_sheet(book.create_sheet(table.title), table, max_rows)
    stamp = created.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)
    book.properties.created = book.properties.modified = stamp
    book.properties.creator = "fbm-bridge"
    archive = _FixedTimeZip(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
    archive.date_time = stamp.timetuple()[:6]
    ExcelWriter(book, archive).save()  # openpyxl's save_workbook would stamp the wall clock's time


def _write_sheet(sheet, table: Table, max_rows: int) -> None:
    rows = table.rows[:max_rows]
    if len(table.rows) > max_rows:
        rows = [*rows, (f"... and {len(table.rows) - max_rows:,} more rows, not shown: a sheet holds"
                        f" {max_rows:,} here",)]
    for index, width in enumerate(_widths(table, rows), start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    top = table.header_row
    if not table.notes:  # the Summary's table is a row per warehouse: pinning its notes would take the screen
        sheet.freeze_panes = f"A{top + 1}"
    last = get_column_letter(len(table.header))
    sheet.auto_filter.ref = f"A{top}:{last}{top + len(rows)}"
    for label, value in table.notes:
        sheet.append([_cell(sheet, label, bold=True), _cell(sheet, value)])
    if table.notes:
        sheet.append([])
    sheet.append([_cell(sheet, name, bold=True) for name in table.header])
    for row in rows:
        sheet.append([_cell(sheet, value) for value in row])


def _cell(sheet, value: Cell, *, bold: bool = False) -> WriteOnlyCell:
    if isinstance(value, datetime):
        cell = WriteOnlyCell(sheet, value=value.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0))
        cell.number_format = DATETIME_FORMAT
    elif isinstance(value, date):
        cell = WriteOnlyCell(sheet, value=value)
        cell.number_format = DATE_FORMAT
    elif value == "":
        cell = WriteOnlyCell(sheet, value=None)  # an empty cell, not an empty text
    elif isinstance(value, str):
        cell = WriteOnlyCell(sheet, value=_text(value))
        cell.data_type = "s"  # never a formula, whatever it starts with
    else:
        cell = WriteOnlyCell(sheet, value=value)
    if bold:
        cell.font = BOLD
    return cell


def _text(value: str) -> str:
    text = one_line(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _widths(table: Table, rows: Sequence[tuple[Cell, ...]]) -> list[float]:
    """Each column as wide as its longest value (header included), within MIN_WIDTH..MAX_WIDTH.
    The notes' labels widen the first column; their texts run on over the empty cells beside."""
    widths = [len(name) for name in table.header]
    notes = [(label, value if not isinstance(value, str) else None) for label, value in table.notes]
    for row in [*rows, *notes]:
        for index, value in enumerate(row[:len(widths)]):
            widths[index] = max(widths[index], _shown_length(value))
    return [min(max(width + 2, MIN_WIDTH), MAX_WIDTH) for width in widths]


def _shown_length(value: Cell) -> int:
    if value is None:
        return 0
    if isinstance(value, datetime):
        return len("2026-11-20 12:30")
    if isinstance(value, date):
        return len("2026-11-20")
    if isinstance(value, str):
        return len(one_line(value))
    return len(str(value))
