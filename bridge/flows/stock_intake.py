"""Stock files in: the warehouse's stock files taken from its folders, the newest published once
a day, and each file answered with a result file once its outcome is final.

One warehouse publishes stock (`stock.warehouse`: Amazon keeps one quantity per SKU). Its files
go through the inbound pipeline shared with shipments (bridge/flows/inbound.py: claimed into
processing/, copied to the spool, recorded, answered into archive/ or error/ with
results/<stem>.result.csv). Between taking a file and answering it, this module decides, each
step safe to interrupt at any line:

1. collect  (every poll, and a watch on the local folder) complete new files are taken and
            read through once: an unreadable file (encoding, a missing column, broken XML) is
            answered at once; a readable one waits, since stock is published once a day.
2. publish  (at `stock.publish_at`, or `fbm-bridge inventory push`) the newest waiting file is
            computed, gated and submitted by InventoryFlow; the older waiting ones are passed
            over in the same transaction ("a newer file came before the publish"). Nothing new
            since the last publish: nothing happens, and the log says so.
3. resume   (every cycle) documents still with Amazon are polled, an interrupted createFeed
            recovered: InventoryFlow.resume.
4. answer   a file whose outcome is final gets its result file: published or failed (written
            after Amazon's processing report, so it carries Amazon's errors and warnings by SKU
            and row), superseded, passed over, unreadable, a duplicate, or held with nothing to
            send. A held file `--force` could still publish stays in processing/, unanswered,
            until it is forced or a newer file supersedes it; `fbm-bridge status` shows it.

A new file with the name of one still waiting or held in processing/ (a WMS that writes
STOCK.csv every day) supersedes it: the old one is answered first, then the new one taken.
"""

from __future__ import annotations

import hashlib
import logging
import time
from itertools import chain
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Sequence

from bridge.config import Settings, WarehouseSettings
from bridge.edges.amazon_feeds import AmazonFeeds
from bridge.edges.folders import Drop
from bridge.edges.scratch import DiskStore
from bridge.errors import BadFile
from bridge.flows.inbound import Checkpoint, InboundPipeline, InboundReport, Source, sources
from bridge.flows.inventory import MAX_WAIT_SECONDS, InventoryFlow, StockFile, StockOutcome, StockPreview
from bridge.flows.steps import run_steps
from bridge.formats.listings_feed import MAX_MESSAGES
from bridge.formats.readers import Row, TableSpec, read_rows
from bridge.ledger import (
    InboundOutcome, Ledger, StockFileStatus, StoredInbound, StoredStockFile)
from bridge.records import iso_z, parse_iso
from bridge.windows import last_daily, next_daily

log = logging.getLogger("bridge.stock")
summary_log = logging.getLogger("bridge.stock.summary")  # a run's one line; the service logs its own job= line
FLOW = "stock"
PUBLISH_BOOKMARK = "stock_publish"  # when the daily publish last ran to its end
RESULT_HEADER = ("row", "result", "sku", "column", "message")
FINAL = (StockFileStatus.PUBLISHED, StockFileStatus.FAILED, StockFileStatus.SUPERSEDED)


@dataclass
class StockReport:
    """One pass of stock up: files taken and answered, what the publish did, what went wrong."""

    inbound: InboundReport = field(default_factory=InboundReport)
    outcomes: list[StockOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for a person: nothing to do, not forced, ...
    errors: list[str] = field(default_factory=list)
    needs_a_person: bool = False
    published: bool = False  # the publish step ran to its end (nothing new counts)

    def summary(self) -> str:
        files = self.inbound
        statuses = [o.status for o in self.outcomes]
        return (f"stock files={files.taken} duplicates={files.duplicates} unreadable={files.unreadable}"
                f" incomplete={files.incomplete} settling={files.settling} answered={files.answered}"
                f" published={statuses.count('published')} held={statuses.count('held')}"
                f" failed={statuses.count('failed')} with_amazon={statuses.count('submitting')}"
                f" errors={len(self.all_errors)}")

    @property
    def all_errors(self) -> list[str]:
        return self.inbound.errors + self.errors


class SpooledRows:
    """A spooled stock file's rows, read when iterated (the file is open only meanwhile). A
    file that cannot be read raises BadFile and is remembered in `failure`."""

    def __init__(self, path: Path, spec: TableSpec):
        self.path = path
        self.spec = spec
        self.failure: BadFile | None = None

    def __iter__(self) -> Iterator[Row]:
        try:
            with open(self.path, "rb") as stream:
                yield from read_rows(stream, self.spec)
        except FileNotFoundError:
            self.failure = BadFile("its copy in the bridge's spool is missing; drop the file again")
            raise self.failure from None
        except BadFile as problem:
            self.failure = problem
            raise


class StockFiles:
    """The inbound pipeline's handler for stock files."""

    flow = FLOW
    header = RESULT_HEADER

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def spec(self, warehouse: WarehouseSettings) -> TableSpec:
        return warehouse.mapping.stock.table

    def marker(self, warehouse: WarehouseSettings) -> str:
        return warehouse.mapping.stock.marker

    def result_delimiter(self, warehouse: WarehouseSettings) -> str:
        return warehouse.mapping.stock.result_delimiter

    def read(self, warehouse: WarehouseSettings, file: StoredInbound, stream: IO[bytes],
             now: datetime) -> None:
        """Read the file through once (an unreadable file is answered now, not at the publish);
        then it waits for the publish."""
        rows = sum(1 for _ in read_rows(stream, self.spec(warehouse)))
        self.ledger.file_parsed(file.id, now)
        log.info("stock file received warehouse=%s file=%r rows=%d: waits for a publish (the daily one, "
                 "or inventory push)", warehouse.name, file.safe_name, rows)

    def ready(self, file: StoredInbound) -> bool:
        if file.reason or file.duplicate_of is not None:
            return True
        intake = self.ledger.stock_intake(file.id)
        if intake is None:
            return False  # waits for the publish
        stored = intake[0]
        return stored is None or stored.status in FINAL or (
            stored.status == StockFileStatus.HELD and not self.ledger.stock_feeds(stored.id))

    def provisional(self, file: StoredInbound) -> list[Sequence[str]] | None:
        """A held file --force could publish waits for a person: its answer says so now (issue
        8: the reason in the result file too), and is replaced by the final one."""
        intake = self.ledger.stock_intake(file.id)
        stored = intake[0] if intake else None
        if stored is None or stored.status != StockFileStatus.HELD or not self.ledger.stock_feeds(stored.id):
            return None
        _, lines = stock_answer(stored, self.ledger.stock_issues(stored.id), [])
        verdict = next(lines)
        verdict = verdict[:4] + (f"{verdict[4]}. Waiting for the seller: `fbm-bridge inventory push --force` "
                                 "publishes it, a newer stock file replaces it. This answer is then replaced",)
        return chain([verdict], lines)

    def step_aside(self, file: StoredInbound, newer: str, now: datetime) -> bool:
        """A newer file of the same name arrived while `file` is still in processing/: it is
        superseded if it waits for the publish or is held (then answered to make room)."""
        why = f"a newer file of the same name ({newer}) arrived"
        return self._never_published(file, why, f"{why} before the publish", now)

    def still_written(self, file: StoredInbound, again: str, now: datetime) -> bool:
        """`file` was still being written when it was taken (the whole file is taken again as
        `again`): never published from the part read. Passed over if it waits for the publish,
        superseded if held; one with Amazon is answered once Amazon has processed it."""
        why = f"it was still being written when it was taken (the whole file is taken again as {again})"
        return self._never_published(file, why, why, now)

    def _never_published(self, file: StoredInbound, why: str, waiting_why: str, now: datetime) -> bool:
        """`file` gives way: passed over if it waits for the publish (`waiting_why`), superseded if
        held. True when it can be answered now; one with Amazon is answered once Amazon has
        processed it."""
        if self.ready(file):
            return True
        intake = self.ledger.stock_intake(file.id)
        if intake is None:
            self.ledger.pass_over_stock_inbound(file.id, f"not published: {waiting_why}", now, failed=False)
            return True
        stored = intake[0]
        if stored is not None and stored.status == StockFileStatus.HELD:
            return self.ledger.supersede_held_stock(stored.id, f"superseded: {why}", now)
        return False  # with Amazon: answered once Amazon has processed it

    def answer(self, file: StoredInbound) -> tuple[InboundOutcome, list[Sequence[str]]]:
        if file.reason:
            return InboundOutcome.ERROR, [("", "rejected", "", "", file.reason)]
        if file.duplicate_of is not None:
            first = self.ledger.inbound(file.duplicate_of)
            return InboundOutcome.ARCHIVE, [("", "duplicate", "", "", f"already processed on "
                                             f"{first.received_at[:10]} as {first.safe_name}: not published again")]
        stored, note, failed = self.ledger.stock_intake(file.id)
        if stored is None:
            return (InboundOutcome.ERROR if failed else InboundOutcome.ARCHIVE), [("", "not published", "", "", note)]
        return stock_answer(stored, self.ledger.stock_issues_by_row(stored.id), self.ledger.stock_feeds(stored.id),
                            errors=sum(n for (_, severity), n in self.ledger.stock_issue_counts(stored.id).items()
                                       if severity == "ERROR"))


def stock_answer(stored: StoredStockFile, issues: Iterable[dict], documents, *,
                 errors: int | None = None) -> tuple[InboundOutcome, Iterable[tuple]]:
    """A computed stock file's result lines: its verdict first, then every problem by row (the
    file's and Amazon's, which Amazon names by message id: the SKU's first row). `issues`
    already by row and `errors` (how many are errors) given: the lines are streamed, never
    held (a file may have a million bad rows); else they are sorted here."""
    verdict = stored.reason
    if stored.status == StockFileStatus.PUBLISHED:
        accepted = sum(d.counts[0] for d in documents if d.counts)
        refused = stored.skus - accepted
        verdict += f". {stored.skus:,} SKUs sent, Amazon took {accepted:,}" + (
            f" and refused {refused:,} (below)" if refused > 0 else "")
    if errors is None:
        issues = sorted(issues, key=lambda i: (i["row"] is not None, i["row"] or 0))
        errors = sum(i["severity"].upper() == "ERROR" for i in issues)
    bad = errors > 0 or stored.status in (StockFileStatus.FAILED, StockFileStatus.HELD)
    return (InboundOutcome.ERROR if bad else InboundOutcome.ARCHIVE), chain(
        [("", stored.status.value, "", "", verdict)], map(_issue_line, issues))


def _issue_line(issue: dict) -> tuple:
    error = issue["severity"].upper() == "ERROR"
    if issue["source"] == "file":
        return (_row(issue["row"]), "rejected" if error else "warning", issue["sku"], issue["column_name"],
                issue["message"])
    code = f" [{issue['code']}]" if issue["code"] else ""
    return (_row(issue["row"]), "rejected" if error else "warning", issue["sku"], "",
            f"Amazon {issue['severity'].lower()}{code}: {issue['message']}")


def _row(row: int | None) -> str:
    return "" if row is None else str(row)


class StockFlow:
    def __init__(self, settings: Settings, ledger: Ledger, feeds: AmazonFeeds | None, *,
                 open_drop: Callable[[WarehouseSettings], Drop] | None = None,
                 checkpoint: Checkpoint | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 max_wait_seconds: float = MAX_WAIT_SECONDS,
                 store: Callable = DiskStore,
                 per_document: int = MAX_MESSAGES):
        """`max_wait_seconds`: how long `push` waits for Amazon to process a feed; the
        service's `poll` never waits (it asks Amazon once a pass)."""
        self.settings = settings
        self.ledger = ledger
        self.open_drop = open_drop
        self.checkpoint = checkpoint or (lambda step: None)
        self.should_stop = should_stop or (lambda: False)
        self.sleep = sleep
        self.feeds = feeds
        self.max_wait_seconds = max_wait_seconds
        self.warehouse = next((w for w in settings.warehouses if w.name == settings.stock.warehouse), None)
        self.files = StockFiles(ledger)
        self.pipeline = InboundPipeline(settings, ledger, self.files, checkpoint=self.checkpoint,
                                        should_stop=self.should_stop)
        self.inventory = None if self.warehouse is None else InventoryFlow.for_warehouse(
            settings, self.warehouse, ledger, feeds, checkpoint=self.checkpoint, store=store,
            max_wait_seconds=max_wait_seconds, per_document=per_document,
            in_flight=lambda at: ledger.units_in_flight(self.warehouse.name, at))

    @property
    def enabled(self) -> bool:
        return self.warehouse is not None

    def close(self) -> None:
        if self.feeds is not None:
            self.feeds.close()

    def sources(self, *, remote: bool = True, local: bool = True) -> list[Source]:
        if self.warehouse is None:
            return []
        return sources(self.settings, remote=remote, local=local, warehouses={self.warehouse.name},
                       open_drop=self.open_drop, folder=lambda w: (w.stock_folder, w.local_stock_folder))

    # --- passes ------------------------------------------------------------------------------

    def poll(self, now: datetime, *, remote: bool = True, local: bool = True,
             finished: set[str] | None = None) -> StockReport:
        """The service's pass: take new files in, continue what is with Amazon, publish if the
        daily moment has come, answer what is final. `finished`: local names a watch saw closed."""
        report = StockReport()
        chosen = self.sources(remote=remote, local=local)
        self._steps(report, [
            ("collect", lambda: self._collect(chosen, now, report, finished or set())),
            ("resume", lambda: self._resume(now, report)),
            ("publish", lambda: self.publish_if_due(now, report)),
            ("answer", lambda: self._answer(self.sources(), now, report)),
        ], wait=0.0)
        return report

    def push(self, now: datetime, *, force: bool = False, settle: bool = True) -> StockReport:
        """`fbm-bridge inventory push`: take new files in (files seen for the first time are
        listed again `stable_seconds` later), then publish the newest now."""
        report = StockReport()
        chosen = self.sources()
        clock = [now]  # the settling wait moves it on
        steps = [("collect", lambda: self._collect(chosen, now, report, set()))]
        if settle:
            steps.append(("settle", lambda: self._settle(chosen, clock, report)))
        steps += [("resume", lambda: self._resume(clock[0], report)),
                  ("publish", lambda: self.publish(clock[0], report, force=force)),
                  ("answer", lambda: self._answer(chosen, clock[0], report))]
        self._steps(report, steps, wait=self.max_wait_seconds)
        return report

    def _steps(self, report: StockReport, steps: list[tuple[str, Callable[[], None]]], *, wait: float) -> None:
        if self.inventory is None:
            report.notes.append("no stock.warehouse is configured: stock up is off")
            return
        self.inventory.max_wait_seconds = wait
        run_steps(steps, report, should_stop=self.should_stop, log=log, what="stock pass")
        report.needs_a_person |= report.inbound.needs_a_person
        files = report.inbound
        busy = report.outcomes or report.all_errors or files.taken or files.answered or files.duplicates \
            or files.unreadable or files.incomplete
        summary_log.log(logging.INFO if busy else logging.DEBUG, report.summary())  # the service passes every minute

    def _collect(self, chosen: list[Source], now: datetime, report: StockReport, finished: set[str]) -> None:
        for source in chosen:
            if self.should_stop():
                return
            self.pipeline.collect(source, now, report.inbound, finished if source.kind == "local" else set())

    def _settle(self, chosen: list[Source], clock: list[datetime], report: StockReport) -> None:
        if not report.inbound.settling:
            return
        wait = self.settings.shipments.stable
        log.info("waiting %ds for %d stock file(s) to settle", wait.total_seconds(), report.inbound.settling)
        self.sleep(wait.total_seconds())
        report.inbound.settling = 0
        clock[0] += wait
        self._collect(chosen, clock[0], report, set())

    def _resume(self, now: datetime, report: StockReport) -> None:
        for outcome in self.inventory.resume(now):
            self._note(outcome, report)

    def _answer(self, chosen: list[Source], now: datetime, report: StockReport) -> None:
        for source in chosen:
            if self.should_stop():
                return
            self.pipeline.answer(source, now, report.inbound)

    # --- the publish ---------------------------------------------------------------------------

    def publish_if_due(self, now: datetime, report: StockReport) -> None:
        """The daily publish, when its moment has passed since it last ran to its end (a moment
        missed while the service was down is made up: the newest stock beats yesterday's)."""
        stock = self.settings.stock
        last = self.ledger.bookmark(PUBLISH_BOOKMARK)
        if last is None:  # the first start: publishes from the next moment on
            self.ledger.set_bookmark(PUBLISH_BOOKMARK, now, now)
            log.info("stock publish scheduled daily at %s %s, next=%s", stock.publish_at.strftime("%H:%M"),
                     stock.timezone, iso_z(next_daily(now, stock.publish_at, stock.zone)))
            return
        due = last_daily(now, stock.publish_at, stock.zone)
        if due <= last:
            return
        log.info("stock publish due=%s", iso_z(due))
        self.publish(now, report)
        if report.published:
            self.ledger.set_bookmark(PUBLISH_BOOKMARK, now, now)

    def publish(self, now: datetime, report: StockReport, *, force: bool = False) -> None:
        """Publish the newest waiting file (older ones are passed over); with `force`, the held
        file instead, unless a newer file arrived since: that one is checked first."""
        for source in self.sources():  # a file still being written when taken is never published from the part read
            self.pipeline.look_again(source, now, report.inbound)
        waiting = self.ledger.stock_inbound_waiting(self.warehouse.name)
        held = self._held()
        newest_waiting = max((file.id for file in waiting), default=0)
        coming = [name for source in self.sources()  # newer than every file waiting: it would supersede them
                  for first, name in self.pipeline.coming_again(source, now - self.settings.shipments.incomplete_limit)
                  if first > newest_waiting]
        if coming and not force:
            report.notes.append(f"not published yet: {', '.join(coming)} is a stock file that was still being "
                                "written when it was taken, put back whole; the publish waits until it is taken again")
            log.info("stock publish: %s", report.notes[-1])
            return  # not run to its end: the daily publish is tried again
        if force and held is not None:
            if not waiting:  # files older than the held one were passed over when it was recorded
                self._note(self.inventory.force_held(now), report)
                report.published = True
                return
            report.notes.append(f"not forced: the stock file {waiting[-1].name} arrived after the held "
                                f"{held.name}; it is checked on its own first (it supersedes the held one). "
                                "If it is held too, check it and push --force again")
        elif force:
            latest = self.ledger.latest_stock_file()
            if latest is not None and latest.status == StockFileStatus.HELD and not waiting:
                report.notes.append(f"{latest.name} is held and --force cannot publish it: there is nothing to "
                                    f"send ({latest.reason})")
                report.needs_a_person = True
                report.published = True
                return
            report.notes.append("no stock file is held: --force has nothing to override")
        if not waiting:
            if held is not None and not force:
                report.notes.append(self._still_held(held))
                report.needs_a_person = True
            else:
                report.notes.append(self._nothing_new())
            log.info("stock publish: %s", report.notes[-1])
            report.published = True
            return
        self.ledger.refresh_shipment_due()  # units per delivered order: fewer records to unseal for on_hand
        passed: list[str] = []

        def attempt(newest: StoredInbound) -> str | None:
            why = self._publish_one(newest, now, report)
            if why is not None:
                passed.append(newest.name)
                log.warning("stock file=%r cannot be published (%s): the file before it is tried",
                            newest.safe_name, why)
            return why

        taken = newest_publishable(waiting, attempt)
        if taken is None:
            report.published = True
        elif passed:
            report.notes.append(f"{taken.name} took the publish in place of the newer {', '.join(passed)}, "
                                "which cannot be published")

    def _publish_one(self, newest: StoredInbound, now: datetime, report: StockReport) -> str | None:
        """Compute, gate and submit one waiting file. Returns why it can never be published (it
        is answered on its own, and the publish falls back to the file before it), or None
        when it took the publish (published, held, with Amazon, or an error to retry)."""
        rows = SpooledRows(self.settings.inbound_dir / newest.spool_path, self.warehouse.mapping.stock.table)
        outcome = self.inventory.push(
            StockFile(newest.name, newest.sha256, parse_iso(newest.received_at), rows, inbound_id=newest.id), now)
        if rows.failure is not None:
            self.ledger.pass_over_stock_inbound(newest.id, f"not published: {rows.failure}", now, failed=True)
            log.warning("stock file=%r not published: %s", newest.safe_name, rows.failure)
            report.notes.append(f"{newest.name} cannot be read: {rows.failure}")
            report.needs_a_person = True
            return str(rows.failure)
        if outcome.already_recorded and self.ledger.stock_intake(newest.id) is None:
            self.ledger.pass_over_stock_inbound(newest.id, f"not published again: its content is the stock "
                                                f"file {outcome.name}, {outcome.status}", now, failed=False)
        self._note(outcome, report)
        report.published = not outcome.errors or outcome.file_id is not None
        if outcome.file_id is not None and not outcome.already_recorded and outcome.status == "held" \
                and not outcome.documents:
            return outcome.reason
        return None

    def _note(self, outcome: StockOutcome, report: StockReport) -> None:
        report.outcomes.append(outcome)
        report.errors += outcome.errors
        report.needs_a_person |= outcome.needs_a_person
        log.info(outcome.summary())

    def _held(self) -> StoredStockFile | None:
        """The newest held file that --force could publish (it has documents)."""
        held = [f for f in self.ledger.stock_files_in(StockFileStatus.HELD)
                if f.warehouse == self.warehouse.name and self.ledger.stock_feeds(f.id)]
        return held[-1] if held else None

    def _still_held(self, held: StoredStockFile) -> str:
        return (f"{held.name!r} is held since {iso_z(held.created_at)}: {held.reason.removeprefix('held: ')}; "
                "check it with the warehouse: `fbm-bridge inventory push --force` publishes it, a newer file "
                "replaces it")

    def _nothing_new(self) -> str:
        last = self.ledger.last_published_stock()
        if last is None:
            return "no new stock file: none has been received since the bridge started, so nothing is published"
        return (f"no new stock file since the last published one ({last.name}, published "
                f"{iso_z(last.published_at)}): nothing to publish")

    # --- the dry run ---------------------------------------------------------------------------

    def preview(self, scratch: Path, *, out_dir: Path | None = None, force: bool = False,
                now: datetime | None = None) -> tuple[StockPreview | StoredStockFile | None, list[str]]:
        """What `push` would do now, reading only (beside the running service), by push's own
        rules: every file in the stock folders that push would take (in the order it takes
        them, after the files already waiting), the newest first computed and gated; one that
        could never be published is answered into error/ and the one before it tried (as
        `publish` does); the older ones are passed over. Nothing new: the held file, which
        `--force` would publish. Returns the file push would publish or hold (None: none)
        and a note per file for a person. `scratch`: a private folder for copies."""
        if self.inventory is None:
            return None, ["no stock.warehouse is configured: stock up is off"]
        notes: list[str] = []
        candidates: list[StockFile] = []
        for newest in self.ledger.stock_inbound_waiting(self.warehouse.name):
            rows = SpooledRows(self.settings.inbound_dir / newest.spool_path, self.warehouse.mapping.stock.table)
            candidates.append(StockFile(newest.name, newest.sha256, parse_iso(newest.received_at), rows))
        candidates += self._new_in_folders(scratch, notes, now)
        if not candidates:
            held = self._held()
            if held is None:
                return None, notes + [self._nothing_new()]
            if not force:
                return None, notes + [self._still_held(held) + " (with --dry-run --force: its documents)"]
            return held, notes
        chosen: list[StockPreview | None] = [None]

        def attempt(stock: StockFile) -> str | None:
            known = self.ledger.stock_file(self.warehouse.name, stock.sha256)
            if known is not None:
                notes.append(f"{stock.name} has the content of the stock file {known.name} ({known.status}): "
                             "push would not publish it again")
                return None
            try:
                preview = self.inventory.preview(stock, out_dir=out_dir, force=force, now=now)
            except BadFile as problem:
                notes.append(f"{stock.name} cannot be read ({problem}): push would answer it into error/ "
                             "and try the file before it")
                return str(problem)
            if not preview.verdict.publish and preview.verdict.final:
                notes.append(f"{stock.name}: push would answer it into error/ ({preview.verdict.summary()}) "
                             "and try the file before it")
                return preview.verdict.summary()
            chosen[0] = preview
            return None

        taken = newest_publishable(candidates, attempt)
        if taken is not None:
            for older in candidates[:candidates.index(taken)]:
                notes.append(f"{older.name}: push would answer it 'not published': the newer stock file "
                             f"{taken.name} came before the publish")
        return chosen[0], notes

    def _new_in_folders(self, scratch: Path, notes: list[str], now: datetime | None) -> list[StockFile]:
        """Every complete file in the stock folders, in the order push would take them
        (each folder by name), copied and read through as push reads it on taking it; its
        time is `now`, when push would take it."""
        from bridge.formats.inbound import ignored, incomplete_reason

        spec = self.warehouse.mapping.stock.table
        marker = self.warehouse.mapping.stock.marker
        found: list[StockFile] = []
        for source in self.sources():
            with source.open() as drop:
                for entry in drop.listdir(source.folder):
                    if ignored(entry.name, self.settings.shipments.ignore, marker):
                        continue
                    copy = scratch / f"new-{len(list(scratch.iterdir()))}"
                    with open(copy, "w+b") as stream:
                        drop.read_into(source.path(entry.name), stream)
                        stream.seek(0)
                        where = f"{entry.name} in the {source.kind.value} stock folder"
                        try:
                            why = incomplete_reason(stream, spec)
                            if why is None:
                                stream.seek(0)
                                sum(1 for _ in read_rows(stream, spec))
                        except BadFile as problem:
                            notes.append(f"{where} cannot be read ({problem}): push would answer it into error/")
                            continue
                        if why is not None:
                            notes.append(f"{where} is not complete yet ({why}): push would leave it there")
                            continue
                        stream.seek(0)
                        digest = hashlib.file_digest(stream, "sha256").hexdigest()
                    notes.append(f"{entry.name}: in the {source.kind.value} stock folder, not yet taken in; "
                                 "push would take it")
                    taken = now or datetime.fromtimestamp(entry.mtime, timezone.utc)
                    found.append(StockFile(entry.name, digest, taken, SpooledRows(copy, spec)))
        return found


def newest_publishable(candidates: Sequence, attempt: Callable[[object], str | None]):
    """The publish's choice, shared by `push` and its dry run: the newest file first; one that
    can never be published (`attempt` says why) falls back to the one before it. Returns the
    file that took the publish, or None."""
    for candidate in reversed(candidates):
        if attempt(candidate) is None:
            return candidate
    return None
