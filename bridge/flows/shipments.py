"""Shipments up: the warehouses' confirmation files become Amazon fulfillments, exactly once.

One run, in order, each step safe to interrupt at any line (the file steps are the inbound
pipeline's, shared with the stock flow: see bridge/flows/inbound.py):
1. collect  every SFTP and local folder: claim settled, complete files, spool, record, read.
            Reading a file checks every row against the ledger's orders and records its rows
            and packages in one transaction (a package per order and tracking number);
2. send     each waiting package: marked sent, then confirmShipment with its ledger id as the
            packageReferenceId, then marked confirmed or rejected (Amazon's words). A crash
            between the call and the mark re-sends the same id, which edits that package on
            Amazon rather than adding one; a 429/5xx leaves it waiting for the next run. Before
            any of it, the highest id is kept outside the ledger (the state marker), so that a
            restored older ledger never issues an id Amazon has seen;
3. answer   files whose packages all have Amazon's answer get their result file and move to
            archive/ (every row accepted) or error/;
4. note     delivered orders' ship-by dates for `status` (which reads no sealed data);
5. purge    spool copies past retention.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Sequence

from bridge.config import Settings, WarehouseSettings
from bridge.edges.amazon_shipments import AmazonShipments
from bridge.edges.folders import Drop
from bridge.errors import AmazonRejected, BadFile, CreateFeedUnknown
from bridge.flows.inbound import Checkpoint, InboundPipeline, InboundReport, Source, sources
from bridge.flows.shipments_feed import FulfillmentFeed, planned
from bridge.flows.steps import run_steps
from bridge.formats.readers import TableSpec, read_rows
from bridge.formats.shipments import (
    ACCEPTED, DUPLICATE, REJECTED, RESULT_HEADER, KnownPackage, OrderFacts, Plan, PlannedPackage, check_groups,
    confirm_request, parse_rows, plan)
from bridge.ledger import (
    FeedStatus, InboundOutcome, InboundSource, InboundStatus, Ledger, OrderStatus, PackageStatus, RowResult,
    StoredInbound, StoredPackage)
from bridge.records import iso_z

log = logging.getLogger("bridge.shipments")
summary_log = logging.getLogger("bridge.shipments.summary")  # a run's one line; the service logs its own job= line
FLOW = "shipments"
FEED_WAIT_SECONDS = 300.0  # a run a person started waits this long for Amazon's feed report


@dataclass
class ShipmentsReport:
    inbound: InboundReport = field(default_factory=InboundReport)
    confirmed: int = 0
    rejected: int = 0  # packages Amazon refused (the summary's amazon_refused=)
    rows_rejected: int = 0  # rows the bridge's own checks rejected in the files read
    waiting: int = 0
    feeds_recorded: int = 0  # fulfillment feed documents made in this run
    feeds_waiting: int = 0  # documents still with Amazon after it
    errors: list[str] = field(default_factory=list)
    needs_a_person: bool = False

    def summary(self) -> str:
        files = self.inbound
        feeds = (f" feeds={self.feeds_recorded} feeds_waiting={self.feeds_waiting}"
                 if self.feeds_recorded or self.feeds_waiting else "")
        return (f"shipments files={files.taken} duplicates={files.duplicates} unreadable={files.unreadable}"
                f" incomplete={files.incomplete} settling={files.settling} answered={files.answered}"
                f" files_in_error={len(files.in_error)} confirmed={self.confirmed}"
                f" rows_rejected={self.rows_rejected} amazon_refused={self.rejected} waiting={self.waiting}{feeds}"
                f" errors={len(self.errors) + len(files.errors)}")

    @property
    def all_errors(self) -> list[str]:
        return self.inbound.errors + self.errors


class ShipmentFiles:
    """The inbound pipeline's handler for confirmation files."""

    flow = FLOW
    header = RESULT_HEADER

    def __init__(self, ledger: Ledger, facts: Callable[[str], OrderFacts | None],
                 tolerance: timedelta = timedelta(minutes=15), scratch: Path | None = None):
        """`scratch`: a private folder for the lines of the file being read (default: the
        system's temporary folder)."""
        self.ledger = ledger
        self.facts = facts
        self.tolerance = tolerance  # shipments.future_tolerance_minutes
        self.scratch = scratch
        self.rows_rejected = 0  # rows the checks rejected, in the files read since the run began

    def spec(self, warehouse: WarehouseSettings) -> TableSpec:
        return warehouse.mapping.shipments.table

    def marker(self, warehouse: WarehouseSettings) -> str:
        return warehouse.mapping.shipments.marker

    def result_delimiter(self, warehouse: WarehouseSettings) -> str:
        return warehouse.mapping.shipments.result_delimiter

    def read(self, warehouse: WarehouseSettings, file: StoredInbound, stream: IO[bytes],
             now: datetime) -> None:
        """Streamed, so memory stays flat however long the file: its lines go to a scratch
        file, come back grouped by order for the checks (one order's facts held at a time), and
        the packages and rows go to the ledger in one transaction, in the order the file first
        names the packages (their ids)."""
        from bridge.edges.scratch import ShipmentScratch

        layout = warehouse.mapping.shipments
        if self.scratch is not None:
            self.scratch.mkdir(parents=True, exist_ok=True)
        with ShipmentScratch(self.scratch) as scratch:
            rows = scratch.add(parse_rows(read_rows(stream, layout.table), layout))
            if not rows:
                raise BadFile("the file has no rows (only a header, or nothing)")
            scratch.keep(check_groups(scratch.by_order(), self.facts, warehouse.name, now, zone=layout.timezone,
                                      tolerance=self.tolerance))
            tally = _Tally()
            made = self.ledger.record_shipment_groups(
                file.id, (tally.group(lines, verdict, warehouse) for lines, verdict in scratch.in_file_order()), now)
        self.rows_rejected += tally.counts[REJECTED]
        for order_id in sorted(tally.cancelled):
            log.warning("shipped after Amazon cancelled it warehouse=%s order_id=%s file=%r: tell the "
                        "seller, the parcel may need recalling",
                        warehouse.name, order_id, file.safe_name)
        log.info("read warehouse=%s file=%r rows=%d packages=%d rejected=%d duplicate=%d",
                 warehouse.name, file.safe_name, rows, made, tally.counts[REJECTED], tally.counts[DUPLICATE])

    def ready(self, file: StoredInbound) -> bool:
        """Answered once its packages are final; a repeated file once the first one's are (it
        says what became of them)."""
        waiting = self.ledger.files_waiting_for_packages(FLOW)
        if file.duplicate_of is None:
            return file.id not in waiting
        first = self.ledger.inbound(file.duplicate_of)
        return first.status != InboundStatus.RECEIVED and first.id not in waiting  # the first file read

    def answer(self, file: StoredInbound) -> tuple[InboundOutcome, Iterable[Sequence[str]]]:
        """The outcome, and the result lines streamed from the ledger."""
        if file.reason:
            return InboundOutcome.ERROR, [("", REJECTED, "", "", "", "", file.reason)]
        if file.duplicate_of is not None:  # each row answered as the first file's, which it repeats
            first = self.ledger.inbound(file.duplicate_of)
            if first.reason:  # recorded as its repeat before it failed: this copy cannot be read either
                return InboundOutcome.ERROR, [("", REJECTED, "", "", "", "", f"the same content as {first.safe_name} "
                                               f"({_FOLDERS[first.source]}), which was not read: {first.reason}")]
            why = f"already processed on {first.received_at[:10]} as {first.safe_name} ({_FOLDERS[first.source]})"
            ok = not self.ledger.shipment_file_rejected(first.id)
            return (InboundOutcome.ARCHIVE if ok else InboundOutcome.ERROR), _duplicate_lines(
                self.ledger.iter_shipment_rows(first.id), why)
        ok = not self.ledger.shipment_file_rejected(file.id)
        return (InboundOutcome.ARCHIVE if ok else InboundOutcome.ERROR), (
            _row_line(row) for row in self.ledger.iter_shipment_rows(file.id))


class _Tally:
    """What a streamed file's groups add up to, for its log lines."""

    def __init__(self) -> None:
        self.counts = {REJECTED: 0, DUPLICATE: 0}
        self.cancelled: set[str] = set()

    def group(self, rows: list[tuple], verdict, warehouse: WarehouseSettings) -> tuple[dict | None, list[tuple]]:
        """A group's package (or None) and its ledger rows; `rows`: (row, order id, item,
        quantity as written, tracking number)."""
        if isinstance(verdict, PlannedPackage):
            return package_record(verdict, warehouse), [
                (row, ACCEPTED, order_id, item, quantity, tracking, "") for row, order_id, item, quantity, tracking in rows]
        recorded = []
        for row, order_id, item, quantity, tracking in rows:
            kind, message = verdict[row]
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if "was cancelled on Amazon" in message:
                self.cancelled.add(order_id)
            recorded.append((row, kind, order_id, item, quantity, tracking, message))
        return None, recorded


_FOLDERS = {InboundSource.SFTP: "the SFTP folder", InboundSource.LOCAL: "the local staff folder"}


def _duplicate_lines(rows: Iterable[dict], why: str) -> Iterator[tuple[str, ...]]:
    """A repeated file's rows: nothing is done again; each says what became of it the first time
    (a row rejected then is still to be corrected, not a duplicate to forget)."""
    empty = True
    for r in rows:
        empty = False
        first = _row_line(r)
        result = REJECTED if first[1] == REJECTED else DUPLICATE  # still to be corrected: found by its word
        yield (str(r["row"]), result, r["order_id"], r["item"], r["quantity"], r["tracking"],
               f"{why}: {first[1]} there: {first[-1]}" if first[-1] else f"{why}: {first[1]} there")
    if empty:
        yield ("", DUPLICATE, "", "", "", "", why)


def read_plan(stream: IO[bytes], warehouse: WarehouseSettings,
              facts: Callable[[str], OrderFacts | None], now: datetime,
              tolerance: timedelta = timedelta(minutes=15)) -> Plan:
    layout = warehouse.mapping.shipments
    lines = parse_rows(read_rows(stream, layout.table), layout)
    return plan(lines, facts, warehouse.name, now, zone=layout.timezone, tolerance=tolerance)


def package_record(p: PlannedPackage, warehouse: WarehouseSettings) -> dict:
    return {"warehouse": warehouse.name, "order_id": p.order_id, "marketplace_id": p.marketplace_id,
            "tracking_number": p.tracking, "carrier_code": p.carrier.code, "carrier_name": p.carrier.name,
            "shipping_method": p.method, "ship_date": iso_z(p.ship_date), "items": list(p.items)}


def _row_line(row: dict) -> tuple[str, ...]:
    result, message = row["result"], row["message"]
    if result == RowResult.ACCEPTED:
        package = f"package {row['package_id']}"
        by_feed = f" (feed {row['feed_id']})" if row.get("feed_id") else ""
        if row["package_status"] == PackageStatus.CONFIRMED:
            message = f"confirmed on Amazon as {package}{by_feed}"
        elif row.get("feed_status") == FeedStatus.IN_DOUBT:
            result, message = REJECTED, f"Amazon may or may not have {package}{by_feed}: {row['package_message']}"
        else:
            result, message = REJECTED, f"Amazon refused {package}{by_feed}: {row['package_message']}"
    return (str(row["row"]), result, row["order_id"], row["item"], row["quantity"], row["tracking"], message)


def request_for(package: StoredPackage) -> dict:
    """The ConfirmShipmentRequest of a package as recorded: the same bytes on every re-send."""
    return confirm_request(planned(package), package.id)


class ShipmentsFlow:
    def __init__(self, settings: Settings, ledger: Ledger, amazon: AmazonShipments, *,
                 open_drop: Callable[[WarehouseSettings], Drop] | None = None,
                 checkpoint: Checkpoint | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 feeds=None,
                 keep_package_ids: Callable[[int, datetime], None] | None = None):
        """`feeds`: the Feeds edge (bridge.edges.amazon_feeds.AmazonFeeds) for the order
        fulfillment feed; made from the settings the first time it is needed if not given.
        `keep_package_ids(highest, now)`: called before any package goes to Amazon, to keep the
        highest package id outside the ledger (bridge.state: a restored ledger continues above it)."""
        self.keep_package_ids = keep_package_ids
        self.settings = settings
        self.ledger = ledger
        self.amazon = amazon
        self.open_drop = open_drop
        self.checkpoint = checkpoint or (lambda step: None)
        self.should_stop = should_stop or (lambda: False)
        self.sleep = sleep
        self.files = ShipmentFiles(ledger, self.order_facts, settings.shipments.future_tolerance,
                                   scratch=settings.inbound_dir / FLOW)
        self.pipeline = InboundPipeline(settings, ledger, self.files, checkpoint=self.checkpoint,
                                        should_stop=self.should_stop)
        self.fulfillment = FulfillmentFeed(ledger, lambda: feeds or self._feeds_edge(),
                                           seller_id=settings.amazon.seller_id, checkpoint=self.checkpoint)
        self.feed_wait = 0.0  # seconds a run waits for a feed report; the next run polls again

    def _feeds_edge(self):
        from bridge.edges.amazon_feeds import AmazonFeeds

        return AmazonFeeds(self.settings.amazon, sleep=self.sleep)

    @property
    def enabled(self) -> bool:
        return bool(self.sources())

    def sources(self, *, remote: bool = True, local: bool = True,
                warehouses: set[str] | None = None) -> list[Source]:
        return sources(self.settings, remote=remote, local=local, warehouses=warehouses,
                       open_drop=self.open_drop)

    # --- a run ---------------------------------------------------------------------------------

    def run(self, now: datetime, *, remote: bool = True, local: bool = True,
            finished: dict[str, set[str]] | None = None, settle: bool = False) -> ShipmentsReport:
        """One pass. `finished`: per warehouse, local names a watch saw completed. `settle`:
        files seen for the first time are listed again `stable_seconds` later in the same run
        (for `fbm-bridge shipments process`, which a person runs once)."""
        report = ShipmentsReport()
        self.files.rows_rejected = 0
        self.feed_wait = FEED_WAIT_SECONDS if settle else 0.0
        chosen = self.sources(remote=remote, local=local)
        clock = [now]  # the settling wait moves it on: what follows is recorded at its own time
        steps: list[tuple[str, Callable[[], None]]] = [
            ("collect", lambda: self._collect(chosen, now, report, finished or {})),
        ]
        if settle:
            steps.append(("settle", lambda: self._settle(chosen, clock, report)))
        steps += [("send", lambda: self.send(clock[0], report)),
                  ("answer", lambda: self._answer(chosen, clock[0], report)),
                  ("note", lambda: self.ledger.refresh_shipment_due()),
                  ("purge", lambda: self.pipeline.purge(clock[0]))]
        run_steps(steps, report, should_stop=self.should_stop, log=log)
        report.needs_a_person |= report.inbound.needs_a_person
        report.rows_rejected = self.files.rows_rejected
        report.waiting = len(self.ledger.packages_waiting())
        report.feeds_waiting = len(self.fulfillment.in_flight())
        summary_log.info(report.summary())
        return report

    def _collect(self, chosen: list[Source], now: datetime, report: ShipmentsReport,
                 finished: dict[str, set[str]]) -> None:
        for source in chosen:
            if self.should_stop():
                return
            names = finished.get(source.warehouse.name, set()) if source.kind == "local" else set()
            self.pipeline.collect(source, now, report.inbound, names)

    def _settle(self, chosen: list[Source], clock: list[datetime], report: ShipmentsReport) -> None:
        if not report.inbound.settling:
            return
        wait = self.settings.shipments.stable
        log.info("waiting %ds for %d file(s) to settle", wait.total_seconds(), report.inbound.settling)
        self.sleep(wait.total_seconds())
        report.inbound.settling = 0
        clock[0] += wait
        self._collect(chosen, clock[0], report, {})

    def _answer(self, chosen: list[Source], now: datetime, report: ShipmentsReport) -> None:
        for source in chosen:
            if self.should_stop():
                return
            self.pipeline.answer(source, now, report.inbound)

    # --- 2. send -------------------------------------------------------------------------------

    def send(self, now: datetime, report: ShipmentsReport) -> None:
        """Every waiting package to Amazon, oldest first: by confirmShipment one by one, or
        (shipments.send = "feed") in one order fulfillment feed document. Documents already with
        Amazon are carried on first, whatever the setting says now. Amazon unavailable or
        throttled for long: the rest wait for the next run, in the same order."""
        try:
            if self.keep_package_ids is not None:
                self.keep_package_ids(self.ledger.highest_package_id(), now)
            self._send(now, report)
        finally:
            for doubt in self.fulfillment.doubts:  # a person checks those orders in Seller Central
                report.errors.append(f"send: {doubt}")
                report.needs_a_person = True
            self.fulfillment.doubts.clear()

    def _send(self, now: datetime, report: ShipmentsReport) -> None:
        by_feed = self.settings.shipments.send == "feed"
        unknown: CreateFeedUnknown | None = None
        try:
            if self.fulfillment.in_flight():
                self.fulfillment.recover(now)  # a crash's leftover first: never two to look for
        except CreateFeedUnknown as problem:
            unknown = problem  # asked again next run; meanwhile no new document, the rest goes on
        for package in self.ledger.packages_to_send():
            if self.should_stop():
                return
            if by_feed and package.status == PackageStatus.ACCEPTED:
                continue  # goes in this run's document; a `sent` one was confirmShipment's: same id again
            self._confirm(package, now, report)
        if by_feed and not self.should_stop():
            waiting = [p for p in self.ledger.packages_to_send() if p.status == PackageStatus.ACCEPTED]
            if self.fulfillment.send_new(waiting, now) is not None:
                report.feeds_recorded += 1
        if self.fulfillment.in_flight() and not self.should_stop():
            confirmed, rejected = self.fulfillment.advance(now, self.feed_wait, recover=unknown is None)
            report.confirmed += confirmed
            report.rejected += rejected
        if unknown is not None:
            raise unknown

    def _confirm(self, package: StoredPackage, now: datetime, report: ShipmentsReport) -> None:
        self.ledger.mark_package_sent(package.id, now)
        self.checkpoint("marked_sent")
        try:
            self.amazon.confirm(package.order_id, request_for(package))
        except AmazonRejected as problem:
            self.checkpoint("answered")
            self.ledger.mark_package_rejected(package.id, str(problem), now)
            report.rejected += 1
            log.warning("package rejected by Amazon id=%d order_id=%s: %s", package.id,
                        package.order_id, problem)
            return
        self.checkpoint("answered")
        self.ledger.mark_package_confirmed(package.id, now)
        self.checkpoint("confirmed")
        report.confirmed += 1
        log.info("package confirmed id=%d order_id=%s units=%d", package.id, package.order_id,
                 sum(units for _, units in package.items))

    # --- what a row is checked against ---------------------------------------------------------

    def order_facts(self, order_id: str) -> OrderFacts | None:
        stored = self.ledger.order_for_shipment(order_id)
        packages = self.ledger.order_packages(order_id)
        shipped: dict[str, int] = {}
        for package in packages:
            for item_id, units in package["items"]:
                shipped[item_id] = shipped.get(item_id, 0) + units
        known = tuple(KnownPackage(p["id"], p["tracking_number"], p["items"], p["file"], p["row"] or 0,
                                   p["at"], p["status"]) for p in packages)
        if stored is not None:
            amazon_status = self.ledger.order_amazon_status(order_id)
            order = stored.order
            return OrderFacts(order_id, order.marketplace_id, order.purchase_date, order.lines,
                              stored.warehouse, stored.status.value,
                              cancelled=amazon_status == "CANCELLED",
                              shipped=tuple(shipped.items()), packages=known)
        if not self.settings.shipments.lookup_unknown_orders:
            return None
        order = self.amazon.order(order_id)
        if order is None:
            return None
        return OrderFacts(order_id, order.marketplace_id, order.purchase_date, order.lines, None,
                          OrderStatus.DELIVERED.value, cancelled=order.status == "CANCELLED",
                          shipped=tuple(shipped.items()), packages=known)

    # --- dry run -------------------------------------------------------------------------------

    def replay(self, path: Path, warehouse: WarehouseSettings, now: datetime) -> Plan:
        """What a file would do, computed from the ledger; nothing sent or recorded."""
        with open(path, "rb") as stream:
            return read_plan(stream, warehouse, self.order_facts, now, self.settings.shipments.future_tolerance)
