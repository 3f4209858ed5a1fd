"""`fbm-bridge report`: the reconciliation workbook for staff, from the ledger, into one .xlsx file.

Steps, each safe to interrupt:
1. check where the file goes (a name ending in .xlsx, in a folder that exists; an existing file
   only with --force) before anything is read;
2. read the period from the ledger (read-only: fine beside the running service);
3. write the workbook to a temporary name beside the target (mode 0600), flush it to disk, then
   link it to its name (refused if a file appeared there meanwhile) or, with --force, rename it
   over the old one. An interruption leaves at most a `.NAME.*.part` file, never half a report.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from bridge.config import Settings
from bridge.errors import FixTheSetup
from bridge.formats.reconciliation import DUE_SOON, Period, reconciliation, write_workbook
from bridge.ledger import Ledger
from bridge.records import parse_iso
from bridge.report import confirmations_tracked

DEFAULT_DAYS = 30  # without --from: the last 30 UTC days, today included
DEFAULT_FEEDS = 10
REPORT_MODE = 0o600  # like every file the bridge writes: rejected rows quote the warehouses' files


@dataclass(frozen=True)
class ReportWritten:
    path: Path
    period: Period
    orders: int
    due: int
    rejected: int
    feeds: int

    def summary(self) -> str:
        return (f"report written: {self.path} (UTC days {self.period.first} to {self.period.last}: "
                f"{self.orders} order(s), {self.due} due soon or late, {self.rejected} rejected row(s), "
                f"{self.feeds} stock feed(s))")


def period_of(first: date | None, last: date | None, now: datetime) -> Period:
    """The period asked for: without --to, up to today (UTC); without --from, the DEFAULT_DAYS
    days up to --to."""
    last = last or now.astimezone(timezone.utc).date()
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise FixTheSetup(f"--from {first} is after --to {last}: the period would hold no day")
    return Period(first, last)


def check_out(out: Path, *, force: bool) -> None:
    """Refuse a target the report cannot (or must not) be written to, before any work."""
    if out.suffix.lower() != ".xlsx":
        raise FixTheSetup(f"--out {out}: the report is an Excel workbook: give a file name ending in .xlsx")
    folder = out.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FixTheSetup(f"--out {out}: the folder {folder} {what}")
    if out.is_dir():
        raise FixTheSetup(f"--out {out}: this is a folder: give a file name ending in .xlsx")
    if (out.exists() or out.is_symlink()) and not force:
        raise FixTheSetup(f"--out {out}: the file exists: give another name, or add --force to replace it")


def write_report(settings: Settings, ledger: Ledger, period: Period, out: Path, now: datetime, *,
                 force: bool = False, feeds: int = DEFAULT_FEEDS) -> ReportWritten:
    """Read the period from `ledger` and write the workbook to `out` (see the module's steps)."""
    check_out(out, force=force)
    orders = ledger.report_orders(period.start, period.end)
    untracked = {w.name for w in settings.warehouses if not confirmations_tracked(w)}
    for order in orders:
        order["tracked"] = order["warehouse"] not in untracked
    rejected = ledger.report_rejected_rows(period.start, period.end)
    stock_files = _waiting_stock_files(settings, ledger, period) + ledger.report_stock_files(period.end, feeds)
    tables = reconciliation(period, now, [w.name for w in settings.warehouses], orders, rejected, stock_files,
                            column_labels=_column_labels(settings), about=_about(settings))
    _write_atomically(out, lambda stream: write_workbook(tables, stream, created=now), force=force)
    due = next(table for table in tables if table.title == DUE_SOON)
    return ReportWritten(out, period, len(orders), len(due.rows), len(rejected), len(stock_files))


def _waiting_stock_files(settings: Settings, ledger: Ledger, period: Period) -> list[dict]:
    """Stock files taken in and waiting for the daily publish (newest first, as the sheet lists
    files): computed and gated only then, so their rows and SKUs are not known yet."""
    stock = settings.stock
    if stock.warehouse is None:
        return []
    waiting = [file for file in ledger.stock_inbound_waiting(stock.warehouse)
               if parse_iso(file.received_at) < period.end]
    return [{"warehouse": file.warehouse, "file": file.name, "stock_time": None,
             "received_at": parse_iso(file.received_at), "rows": None, "bad_rows": None, "skus": None,
             "status": "waiting for the publish", "forced": False, "published_at": None, "feed_ids": [], "amazon_errors": [],
             "amazon_warnings": 0,
             "reason": f"taken in; the daily publish at {stock.publish_at.strftime('%H:%M')} {stock.timezone} "
                       "reads and gates it"} for file in reversed(waiting)]


def _about(settings: Settings) -> tuple[tuple[str, str], ...]:
    """Whose workbook this is: a 3PL mails one per seller, and two sellers may share a warehouse name."""
    amazon = settings.amazon
    return (("Seller (merchant token)", amazon.seller_id or "not set (amazon.seller_id)"),
            ("Marketplaces", ", ".join(amazon.marketplaces)),
            ("Instance (config)", f"{settings.path.stem} ({settings.path})"))


def _column_labels(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Per warehouse, the column names its confirmation files' row problems start with."""
    labels = {}
    for warehouse in settings.warehouses:
        layout = warehouse.mapping.shipments if warehouse.mapping is not None else None
        if layout is not None:
            labels[warehouse.name] = tuple(label for _, label in layout.columns)
    return labels


def _write_atomically(out: Path, write, *, force: bool) -> None:
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, REPORT_MODE)
    except OSError as problem:
        raise FixTheSetup(f"--out {out}: cannot write in {out.parent}: {problem.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if force:
            os.replace(temporary, out)
        else:
            try:
                os.link(temporary, out)  # never replaces: a file that appeared meanwhile stays
            except FileExistsError:
                raise FixTheSetup(f"--out {out}: the file exists: give another name, or add --force to"
                                  " replace it") from None
    except OSError as problem:
        raise FixTheSetup(f"--out {out}: cannot write the report: {problem.strerror or problem}") from None
    finally:
        temporary.unlink(missing_ok=True)
    _sync_folder(out.parent)


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
