"""Stock up: a warehouse's stock file becomes Amazon's inventory feed (JSON_LISTINGS_FEED), safely.

One stock file, in order, each step safe to interrupt at any line:
1. compute  check the rows, sum them per seller SKU (sorted on disk, so a million SKUs do not
            have to fit in memory), compare with the quantities last published and write the feed
            documents, at most 25,000 messages each, into the stock folder
            (<state>/stock/<warehouse>/<sha256>/part-0001.json). Nothing is recorded yet: a
            crash here computes the same bytes again next time.
2. record   the file (by its SHA-256: a content already recorded is never computed again), the
            gates' verdict, its documents as `prepared` and its rows' problems, in one
            transaction. A held file stops here; older held files are superseded.
3. submit   per document: createFeedDocument and upload (harmless to repeat: an unused document
            expires), record `submitting` with the time, createFeed, record the feed id.
4. poll     getFeed with backoff until DONE, FATAL or CANCELLED. If the wait runs out, the next
            run polls again (`resume`): the feed ids are in the ledger.
5. report   fetch the processing report, map each issue to its SKU and file row (the message id
            is the row), and record the outcome, the issues and the quantities Amazon took, in
            one transaction. A SKU Amazon rejected keeps its previously published quantity.

Where createFeed's non-idempotence bites, and the design around it (shared with the shipments
flow's fulfillment feed: bridge/flows/feed_submission.py):
- createFeed has no idempotency key. Sending one document twice is not harmless: Amazon takes
  every feed as the quantity *now*, so a copy processed after orders came in puts back units
  those orders took, and the catalog oversells. It also spends the 5-per-5-minutes allowance.
- `submitting` is recorded *before* createFeed, with the run's time, and the edge never retries
  createFeed except after a 429 (a refusal).
- A document found `submitting` without a feed id is never sent again on a guess: getFeeds
  tells whether Amazon got it (none: sent again; exactly one unknown JSON_LISTINGS_FEED feed:
  adopted, and its report must count as many messages as the document has, else it is not ours
  after all; several: `in_doubt`, for a person). Only one document of a file is ever
  `submitting` at a time, so a found feed cannot be another of ours.
- Everything after createFeed is keyed by the feed id: polling or fetching a report twice
  records one outcome. A stock file presented again (intake after a crash) continues where it
  stopped instead of being computed into a second submission.

The flow is given rows (the file readers parse the file) and the file's identity; claiming,
archiving, result files and the daily schedule are bridge/flows/stock_intake.py's, through the
inbound-file pipeline. `push` does one file, `resume` continues files still with Amazon,
`force_held` publishes the newest held file, `preview` is the dry run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from itertools import islice
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Protocol

from bridge.edges.amazon_feeds import AmazonFeeds
from bridge.edges.scratch import DiskStore, ProblemSpool
from bridge.errors import BridgeError, FixTheSetup, RetryLater
from bridge.flows import feed_submission
from bridge.flows.feed_submission import RECOVERY_DELAY, RECOVERY_MARGIN  # noqa: F401 (their home moved)
from bridge.formats.listings_feed import (
    CONTENT_TYPE,
    FEED_TYPE,
    MAX_MESSAGES,
    batches,
    document_chunks,
    messages_of,
    read_report,
)
from bridge.formats.stock import (
    Comparison,
    GateFacts,
    NotSorted,
    ProblemLog,
    Store,
    Tally,
    Verdict,
    check_gates,
    explain_levels,
    leave_alone_test,
    level_tuples,
    tally,
    tally_in_order,
)
from bridge.ledger import Ledger, StockFeedStatus, StockFileStatus, StoredStockFeed, StoredStockFile
from bridge.mapping import StockLayout
from bridge.records import iso_z

log = logging.getLogger("bridge.inventory")

MAX_WAIT_SECONDS = 1800.0  # polling per run; the next run continues
EXPLAINED = 50  # SKUs whose arithmetic the dry run writes out
ISSUES_KEPT = 100  # issues an outcome carries for a person to read; the result file has every one
UNSORTED_MEMORY = timedelta(days=7)  # after a file out of SKU order, files go straight to the sort this long


class Checkpoint(Protocol):
    def __call__(self, step: str) -> None: ...


@dataclass(frozen=True)
class StockFile:
    """A parsed stock file: its identity and its rows (read once, streamed)."""

    name: str
    sha256: str
    file_time: datetime  # the file's own time; the stock's time unless the rows carry timestamps
    rows: Iterable[tuple[int, Mapping[str, str], str]]  # formats.readers.Row: number, values, problem
    inbound_id: int | None = None  # the inbound file it came in as (recorded with it)


@dataclass
class StockOutcome:
    """What became of one stock file, from the ledger: for the log, the result file and status."""

    file_id: int | None
    name: str
    status: str
    reason: str = ""
    rows: int = 0
    bad_rows: int = 0
    skus: int = 0
    documents: int = 0
    issues: list[dict] = field(default_factory=list)  # file problems and Amazon's issues, by row: the first
    # ISSUES_KEPT only (the result file has them all)
    issue_counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, SEVERITY) → how many
    already_recorded: bool = False
    errors: list[str] = field(default_factory=list)
    needs_a_person: bool = False

    def summary(self) -> str:
        counts = self.issue_counts
        return (
            f"stock file={self.name} status={self.status} rows={self.rows} bad_rows={self.bad_rows}"
            f" skus={self.skus} documents={self.documents}"
            f" amazon_errors={counts.get(('amazon', 'ERROR'), 0)}"
            f" amazon_warnings={counts.get(('amazon', 'WARNING'), 0)} errors={len(self.errors)}"
            + (f" reason={self.reason!r}" if self.reason else "")
        )


@dataclass
class StockPreview:
    """The dry run: what `push` would send and the gates' verdict; nothing recorded or sent."""

    name: str
    verdict: Verdict
    tally: Tally
    comparison: Comparison
    stock_time: datetime
    documents: list[Path] = field(default_factory=list)  # written only when asked for (out_dir)
    messages: int = 0
    explained: list[str] = field(default_factory=list)  # how each quantity is worked out (the first SKUs)
    skus_explained_of: int = 0

    def summary(self) -> str:
        lines = [
            f"dry run: {self.name}: rows={self.tally.rows} bad_rows={self.tally.bad_rows} "
            f"skus={self.comparison.skus} to_send={self.comparison.sent} zero={self.comparison.zero} "
            f"left_alone_rows={self.tally.left_alone} not_on_amazon_rows={self.tally.not_on_amazon}"
            f" documents={-(-self.messages // MAX_MESSAGES)}",
            f"  gates: {self.verdict.summary()}",
        ]
        lines += [f"  document {path}" for path in self.documents]
        if self.explained:
            lines.append(f"  how each quantity is worked out (seller SKU: file rows (warehouse SKU): units"
                         f"{' − in flight' if 'in flight' in ''.join(self.explained) else ''} − buffer → sent)"
                         + (f", the first {len(self.explained)} of {self.skus_explained_of:,} SKUs"
                            if self.skus_explained_of > len(self.explained) else "") + ":")
            lines += [f"    {line}" for line in self.explained]
        lines += [f"  {problem}" for problem in self.tally.problems[:50]]
        if len(self.tally.problems) > 50:
            lines.append(f"  ... and {len(self.tally.problems) - 50} more problems")
        return "\n".join(lines)


@dataclass
class _Computed:
    tally: Tally
    comparison: Comparison
    stock_time: datetime
    verdict: Verdict
    documents: list[tuple[int, int, str, str]]  # part, messages, path relative to the folder, SHA-256
    spool: ProblemSpool  # every problem of the rows, on disk until recorded; closed by whoever computed


class InventoryFlow:
    def __init__(
        self,
        ledger: Ledger,
        feeds: AmazonFeeds,
        *,
        warehouse: str,
        layout: StockLayout,
        seller_id: str,
        marketplace_id: str,
        folder: Path,
        in_flight: Callable[[datetime], Mapping[str, int]] | None = None,
        checkpoint: Checkpoint | None = None,
        max_wait_seconds: float = MAX_WAIT_SECONDS,
        store: Callable[[], Store] = DiskStore,
        per_document: int = MAX_MESSAGES,
        future_tolerance: timedelta = timedelta(days=1),
        feed_timeout: timedelta = timedelta(hours=4),
    ):
        """`marketplace_id`: JSON_LISTINGS_FEED takes one marketplace per feed; the quantity
        applies to every marketplace of the seller's unified account in that region.
        `in_flight(at)`: units per seller SKU in orders delivered to this warehouse and not
        confirmed shipped at `at`; needed when the mapping's quantity means `on_hand`."""
        if layout.quantity_means == "on_hand" and in_flight is None:
            raise FixTheSetup(f"warehouse {warehouse}: stock quantity_means = 'on_hand' needs the "
                              "orders in flight, and none were given")
        self.ledger = ledger
        self.feeds = feeds
        self.warehouse = warehouse
        self.layout = layout
        self.seller_id = seller_id
        self.marketplace_id = marketplace_id
        self.folder = folder
        self.in_flight = in_flight or (lambda at: {})
        self.checkpoint = checkpoint or (lambda step: None)
        self.max_wait_seconds = max_wait_seconds
        self.store = store
        self.per_document = per_document
        self.future_tolerance = future_tolerance  # stock.future_tolerance_minutes
        self.feed_timeout = feed_timeout

    @classmethod
    def for_warehouse(cls, settings, warehouse, ledger: Ledger, feeds: AmazonFeeds, **options) -> "InventoryFlow":
        """The flow for a configured warehouse (`settings.Settings`, `WarehouseSettings`)."""
        if warehouse.mapping.stock is None:
            raise FixTheSetup(f"warehouse {warehouse.name}: its mapping has no [stock] section")
        stock = getattr(settings, "stock", None)
        if stock is not None and "feed_timeout" not in options:
            options["feed_timeout"] = stock.feed_timeout
        return cls(ledger, feeds, warehouse=warehouse.name, layout=warehouse.mapping.stock,
                   seller_id=settings.amazon.seller_id, marketplace_id=settings.amazon.marketplaces[0],
                   folder=settings.state_dir / "stock", future_tolerance=settings.stock.future_tolerance,
                   **options)

    # --- public --------------------------------------------------------------------------

    def push(self, stock: StockFile, now: datetime, *, force: bool = False) -> StockOutcome:
        """Compute, gate, submit, poll and record one stock file. A file already recorded is
        continued (or, with `force`, released if held), never computed again."""
        known = self.ledger.stock_file(self.warehouse, stock.sha256)
        try:
            if known is not None:
                if force and known.status == StockFileStatus.HELD:
                    self._release(known, now)
                if self.ledger.stock_file_by_id(known.id).status == StockFileStatus.SUBMITTING:
                    self._continue(known, now)
                return self.outcome(known.id, already_recorded=True, now=now)
            self.resume(now)
            with_amazon = [f for f in self.ledger.stock_files_in(StockFileStatus.SUBMITTING)
                           if f.warehouse == self.warehouse]
            waiting = [f for f in with_amazon if self.overdue_since(f.id, now) is None]
            if waiting:
                raise RetryLater(f"stock file {waiting[0].name} is still with Amazon; {stock.name} waits for it")
            for stuck in with_amazon:  # given up: still polled, and recorded if it ever finishes
                log.error("stock file=%s has been with Amazon since %s, longer than stock.feed_timeout_hours: "
                          "given up waiting, the newer %s goes", stuck.name, iso_z(self.overdue_since(stuck.id, now)),
                          stock.name)
            self._sweep_unrecorded()
            computed = self._compute(stock, force=force, target=self.folder, now=now)
            try:
                file_id = self._record(stock, computed, force, now)
            finally:
                computed.spool.close()
            self.checkpoint("recorded")
            stored = self.ledger.stock_file_by_id(file_id)
            if stored.status == StockFileStatus.SUBMITTING:
                self._continue(stored, now)
            return self.outcome(file_id, now=now)
        except BridgeError as problem:
            log.error("stock file=%s error=%s", stock.name, problem)
            stored = self.ledger.stock_file(self.warehouse, stock.sha256)
            outcome = self.outcome(stored.id) if stored else StockOutcome(None, stock.name, "not recorded")
            outcome.errors = [str(problem)]
            outcome.needs_a_person = outcome.needs_a_person or isinstance(problem, FixTheSetup)
            return outcome

    def resume(self, now: datetime) -> list[StockOutcome]:
        """Continue every stock file still with Amazon: submit what is left, poll, report."""
        outcomes = []
        for stored in self.ledger.stock_files_in(StockFileStatus.SUBMITTING):
            if stored.warehouse == self.warehouse:
                self._continue(stored, now)
                outcomes.append(self.outcome(stored.id, now=now))
        return outcomes

    def overdue_since(self, file_id: int, now: datetime) -> datetime | None:
        """When the file's first document still with Amazon went to it, if longer ago than
        `feed_timeout` (a listings feed normally takes minutes; hours IN_QUEUE happen, days not)."""
        started = [d.submit_started_at for d in self.ledger.stock_feeds(file_id)
                   if d.status in (StockFeedStatus.SUBMITTING, StockFeedStatus.SUBMITTED) and d.submit_started_at]
        since = min(started, default=None)
        return since if since is not None and now - since > self.feed_timeout else None

    def force_held(self, now: datetime) -> StockOutcome | None:
        """`inventory push --force` without a new file: publish the newest held stock file."""
        held = [f for f in self.ledger.stock_files_in(StockFileStatus.HELD) if f.warehouse == self.warehouse]
        if not held:
            return None
        stored = held[-1]
        try:
            self._release(stored, now)
            self._continue(self.ledger.stock_file_by_id(stored.id), now)
        except BridgeError as problem:
            outcome = self.outcome(stored.id)
            outcome.errors.append(str(problem))
            outcome.needs_a_person = isinstance(problem, FixTheSetup)
            return outcome
        return self.outcome(stored.id)

    def preview(self, stock: StockFile, *, out_dir: Path | None = None, force: bool = False,
                now: datetime | None = None) -> StockPreview:
        """The dry run: rows, gates and documents as `push` would make them. Reads the ledger,
        records nothing, sends nothing; writes the documents only into `out_dir`, if given."""
        computed = self._compute(stock, force=force, target=out_dir, now=now)
        computed.tally.problems.counted()
        computed.spool.close()  # the preview keeps the first problems and the counts only
        explained = self._explain(stock, computed.stock_time) if computed.tally.rows else []
        return StockPreview(
            name=stock.name, verdict=computed.verdict, tally=computed.tally, comparison=computed.comparison,
            stock_time=computed.stock_time, messages=sum(d[1] for d in computed.documents),
            documents=[out_dir / d[2] for d in computed.documents] if out_dir is not None else [],
            explained=explained[:EXPLAINED], skus_explained_of=computed.comparison.skus,
        )

    def _explain(self, stock: StockFile, stock_time: datetime) -> list[str]:
        """The dry run's arithmetic per seller SKU, from a second pass over the rows."""
        store = self.store()
        try:
            tally(stock.rows, self.layout, store)
            in_flight = self.in_flight(stock_time) if self.layout.quantity_means == "on_hand" else {}
            return list(islice(explain_levels(store.sorted_parts(), self.layout, in_flight), EXPLAINED))
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()

    def outcome(self, file_id: int, *, already_recorded: bool = False, now: datetime | None = None) -> StockOutcome:
        """`now`: to tell a file with Amazon for longer than `feed_timeout` (it needs a person)."""
        stored = self.ledger.stock_file_by_id(file_id)
        documents = self.ledger.stock_feeds(file_id)
        since = self.overdue_since(file_id, now) if now is not None and \
            stored.status == StockFileStatus.SUBMITTING else None
        outcome = StockOutcome(
            file_id=file_id, name=stored.name, status=stored.status.value, reason=stored.reason,
            rows=stored.rows, bad_rows=stored.bad_rows, skus=stored.skus, documents=len(documents),
            issues=self.ledger.stock_issues(file_id, ISSUES_KEPT), issue_counts=self.ledger.stock_issue_counts(file_id),
            already_recorded=already_recorded,
            # held: the file waits for a person (--force, or a new file); failed: Amazon refused a
            # document as a whole, or one is in doubt
            needs_a_person=stored.status in (StockFileStatus.HELD, StockFileStatus.FAILED)
            or any(d.status == StockFeedStatus.IN_DOUBT for d in documents),
        )
        if since is not None:
            outcome.needs_a_person = True
            outcome.errors.append(overdue_message(stored.name, since, self.feed_timeout))
        return outcome

    # --- 1. compute ----------------------------------------------------------------------

    def _sweep_unrecorded(self) -> None:
        """Documents the ledger never recorded (a computation killed while it read a file in SKU
        order writes them as it goes) are removed before the next one: nothing sends them, and
        nothing else would."""
        folder = self.folder / self.warehouse
        if not folder.is_dir():
            return
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not self.ledger.stock_file_known(self.warehouse, entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                log.info("stock documents removed folder=%s: no stock file of the ledger wrote them (a run stopped"
                         " while it computed)", entry)

    def _compute(self, stock: StockFile, *, force: bool, target: Path | None, now: datetime | None) -> _Computed:
        """Everything up to the gates' verdict; documents are written under `target` (None:
        only counted and hashed, for a dry run). A file in order of seller SKU (as WMS exports
        are) goes straight from its rows to the documents; one that is not is found out at its
        first SKU out of order, and then read again, sorted on disk. Only rows that can be read
        again (the spooled copy, not an iterator) go that way, and not for `on_hand` with a
        timestamp column: the orders in flight are those at the file's latest timestamp, known
        only once every row is read."""
        layout = self.layout
        in_flight = None
        again = not isinstance(stock.rows, Iterator)
        when = now or stock.file_time
        unsorted = self.ledger.bookmark(self._unsorted_bookmark)
        lately_unsorted = unsorted is not None and when - unsorted < UNSORTED_MEMORY
        if again and not lately_unsorted and (layout.quantity_means != "on_hand" or not layout.columns.timestamp):
            # no timestamp column (or no orders in flight needed): the stock's time is the file's
            in_flight = self.in_flight(stock.file_time) if layout.quantity_means == "on_hand" else {}
            try:
                return self._compute_once(stock, force=force, target=target, now=now, in_flight=in_flight,
                                          in_order=True)
            except NotSorted:
                if target is self.folder:  # a real run: the next files go straight to the sort for a while
                    self.ledger.set_bookmark(self._unsorted_bookmark, when, when)
        return self._compute_once(stock, force=force, target=target, now=now, in_flight=in_flight)

    @property
    def _unsorted_bookmark(self) -> str:
        """When a stock file of this warehouse was last found out of SKU order (read twice)."""
        return f"stock_unsorted_{self.warehouse}"

    def _compute_once(self, stock: StockFile, *, force: bool, target: Path | None, now: datetime | None,
                      in_flight: Mapping[str, int] | None = None, in_order: bool = False) -> _Computed:
        """`in_flight`: None to ask once the rows are read, at their latest timestamp."""
        layout = self.layout
        store = None if in_order else self.store()
        spool = ProblemSpool()
        documents = []
        base = Path(self.warehouse) / stock.sha256[:16]
        try:
            if in_order:
                counted, parts = tally_in_order(stock.rows, layout, problems=ProblemLog(spool))
            else:
                counted = tally(stock.rows, layout, store, problems=ProblemLog(spool))
                parts = store.sorted_parts()
            if in_flight is None:
                stock_time = counted.stock_time or stock.file_time
                in_flight = self.in_flight(stock_time) if layout.quantity_means == "on_hand" else {}
            last = self.ledger.last_published_stock()
            comparison = Comparison()
            levels = comparison.follow(
                level_tuples(parts, layout, in_flight, counted.problems),
                self.ledger.published_levels(),
                leave_alone_test(layout.leave_alone),
            )
            for part, batch in enumerate(batches(levels, self.per_document), 1):
                relative = base / f"part-{part:04d}.json"
                chunks = document_chunks(self.seller_id, batch, layout)
                digest = _write(target / relative, chunks) if target is not None else _digest(chunks)
                documents.append((part, len(batch), relative.as_posix(), digest))
            stock_time = counted.stock_time or stock.file_time  # every row read now
        except BaseException:
            spool.close()
            if in_order and target is not None:  # written while the rows were still being read:
                for _, _, relative, _ in documents:  # read again, or a file that breaks off
                    (target / relative).unlink(missing_ok=True)
            raise
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()
        facts = GateFacts(rows=counted.rows, file_problem=counted.file_problem, comparison=comparison,
                          bad_rows=counted.bad_rows,
                          stock_time=stock_time, last_stock_time=last.stock_time if last else None,
                          last_name=last.name if last else None, now=now, future_tolerance=self.future_tolerance)
        verdict = check_gates(facts, layout.max_missing_share, layout.max_zero_share, force=force,
                              max_bad_row_share=layout.max_bad_row_share)
        return _Computed(counted, comparison, stock_time, verdict, documents, spool)

    # --- 2. record -----------------------------------------------------------------------

    def _record(self, stock: StockFile, computed: _Computed, force: bool, now: datetime) -> int:
        verdict = computed.verdict
        status = StockFileStatus.SUBMITTING if verdict.publish else StockFileStatus.HELD
        newest = self.ledger.latest_stock_file()
        reason = verdict.summary()
        if newest is not None and newest.stock_time > computed.stock_time and not verdict.final \
                and newest.status == StockFileStatus.HELD and newest.warehouse == self.warehouse \
                and self.ledger.stock_feeds(newest.id):
            # A newer file waits for a person already; this one must not overtake it. (Newer
            # than one published is the gates' business: held, and --force may override it.)
            status, reason = StockFileStatus.SUPERSEDED, f"the newer stock file {newest.name} is already recorded"
        counted = computed.tally
        file_id = self.ledger.record_stock_file(
            warehouse=self.warehouse, name=stock.name, sha256=stock.sha256, stock_time=computed.stock_time,
            received_at=stock.file_time, rows=counted.rows, bad_rows=counted.bad_rows,
            skus=computed.comparison.sent, status=status, reason=reason,
            forced=force and bool(verdict.overridden), documents=[] if verdict.final else computed.documents,
            problems=((p.row, p.column, p.why, p.severity, p.sku) for p in counted.problems), now=now,
            inbound_id=stock.inbound_id,
            # a file that can never be published (nothing to send, dated in the future) takes no
            # other file's place: the one before it stays publishable
            takes_over=not verdict.final,
        )
        log.info("stock computed file=%s rows=%d bad_rows=%d skus=%d documents=%d verdict=%r",
                 stock.name, counted.rows, counted.bad_rows, computed.comparison.sent,
                 len(computed.documents), reason)
        return file_id

    def _release(self, stored: StoredStockFile, now: datetime) -> None:
        if not self.ledger.stock_feeds(stored.id):
            raise FixTheSetup(f"stock file {stored.name} cannot be forced: there is nothing to send ({stored.reason})")
        overridden = stored.reason.removeprefix("held: ")
        self.ledger.release_held_stock(stored.id, f"published with --force, overriding: {overridden}", now)
        log.warning("stock file=%s forced: overriding %s", stored.name, overridden)

    # --- 3-5. submit, poll, report -------------------------------------------------------

    def _continue(self, stored: StoredStockFile, now: datetime) -> None:
        for document in self.ledger.stock_feeds(stored.id):
            if document.status == StockFeedStatus.SUBMITTING:
                self._recover(document, now)
        for document in self.ledger.stock_feeds(stored.id):
            if document.status == StockFeedStatus.PREPARED:
                self._submit(document, now)
        self._poll(stored, now)

    def _submit(self, document: StoredStockFeed, now: datetime) -> None:
        feed_id = feed_submission.submit(
            self.feeds, _StockJournal(self.ledger, document.id), feed_type=FEED_TYPE,
            content_type=CONTENT_TYPE, data=self._document_bytes(document),
            marketplace_ids=[self.marketplace_id], now=now, checkpoint=self.checkpoint)
        log.info("stock feed submitted document=%s part=%d messages=%d feed_id=%s",
                 document.spool_path, document.part, document.messages, feed_id)

    def _recover(self, document: StoredStockFeed, now: datetime) -> None:
        """A createFeed that may or may not have reached Amazon: look before sending again."""
        feed_submission.recover(
            self.feeds, _StockJournal(self.ledger, document.id), feed_type=FEED_TYPE,
            started=document.submit_started_at, now=now, marketplace_id=self.marketplace_id,
            known=self.ledger.stock_feed_ids(),
            what=f"document {document.part} of stock file {document.stock_file_id}", kind="listings feeds",
            advice="check them in Seller Central (feed upload status) before pushing this stock again")

    def _poll(self, stored: StoredStockFile, now: datetime) -> None:
        submitted = [d for d in self.ledger.stock_feeds(stored.id) if d.status == StockFeedStatus.SUBMITTED]
        if not submitted:
            return
        states = self.feeds.wait([d.feed_id for d in submitted], self.max_wait_seconds)
        for document in submitted:
            state = states[document.feed_id]
            if not state.finished:
                log.info("stock feed still processing feed_id=%s status=%s", state.feed_id, state.status)
                continue
            self._report(document, state.status, state.result_document_id, now)

    def _report(self, document: StoredStockFeed, status: str, result_id: str | None, now: datetime) -> None:
        outcome = {"DONE": StockFeedStatus.DONE, "FATAL": StockFeedStatus.FATAL}.get(status, StockFeedStatus.CANCELLED)
        if result_id is None:
            self.ledger.record_stock_feed_result(document.id, outcome, now, note=f"Amazon: {status}, no report")
            return
        data = self.feeds.result(result_id)
        self.checkpoint("report_fetched")
        messages = messages_of(self._document_bytes(document))
        report = read_report(data, messages)
        if document.adopted and outcome == StockFeedStatus.DONE and report.processed != len(messages):
            self.ledger.record_stock_feed_result(
                document.id, StockFeedStatus.IN_DOUBT, now, result_document_id=result_id,
                note=f"the feed found after an interrupted createFeed processed {report.processed} messages, "
                     f"this document has {len(messages)}: it is not this document")
            return
        rejected = report.rejected()
        published = [(sku, quantity) for sku, quantity in messages.values() if sku not in rejected] \
            if outcome == StockFeedStatus.DONE else []
        self.ledger.record_stock_feed_result(
            document.id, outcome, now, result_document_id=result_id,
            counts=(report.accepted, report.invalid, report.errors, report.warnings),
            issues=[(i.row, i.sku, i.severity, i.code, i.message) for i in report.issues],
            published=published,
            note="" if outcome == StockFeedStatus.DONE else f"Amazon: {status}",
        )
        self.checkpoint("reported")
        log.info("stock feed %s feed_id=%s accepted=%d invalid=%d errors=%d warnings=%d", status,
                 document.feed_id, report.accepted, report.invalid, report.errors, report.warnings)

    def _document_bytes(self, document: StoredStockFeed) -> bytes:
        path = self.folder / document.spool_path
        try:
            data = path.read_bytes()
        except OSError as problem:
            raise FixTheSetup(f"feed document {path} cannot be read ({problem.strerror}); "
                              "push the stock file again") from None
        if hashlib.sha256(data).hexdigest() != document.sha256:
            raise FixTheSetup(f"feed document {path} changed since it was computed; push the stock file again")
        return data


def overdue_message(name: str, since: datetime, limit: timedelta) -> str:
    hours = f"{limit.total_seconds() / 3600:g}"
    return (f"stock file {name} has been with Amazon since {iso_z(since)}, longer than stock.feed_timeout_hours "
            f"({hours}): check its feed in Seller Central (feed upload status); newer stock files no longer wait for "
            "it, and if it still finishes its outcome is recorded")


class _StockJournal:
    """One stock feed document's steps, for bridge.flows.feed_submission."""

    def __init__(self, ledger: Ledger, row: int):
        self.ledger, self.row = ledger, row

    def submitting(self, document_id: str, now: datetime) -> None:
        self.ledger.mark_stock_feed_submitting(self.row, document_id, now)

    def submitted(self, feed_id: str, now: datetime, *, adopted: bool = False, note: str = "") -> None:
        self.ledger.mark_stock_feed_submitted(self.row, feed_id, now, adopted=adopted, note=note)

    def prepared(self, note: str) -> None:
        self.ledger.mark_stock_feed_prepared(self.row, note)

    def in_doubt(self, note: str, now: datetime) -> None:
        self.ledger.mark_stock_feed_in_doubt(self.row, note, now)


def _digest(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _write(path: Path, chunks: Iterable[bytes]) -> str:
    """Write chunks to `path` through a temporary name and fsync; return the SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    with open(temporary, "wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    return digest.hexdigest()
