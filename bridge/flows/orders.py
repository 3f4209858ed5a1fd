"""Orders down: Amazon orders become files in each warehouse's drop, exactly once.

One run, in order, each step safe to interrupt at any line:
1. pull   windows from the committed bookmark up to now - lag; each window's orders are recorded
          in the ledger in the same transaction that moves the bookmark;
2. recheck held orders (address withheld, no warehouse) and record what changed: Amazon is asked
          again only for addresses, least recently asked first, each answer recorded as it comes;
3. render pending orders by their warehouse's mapping into the local spool, then stage them,
          a batch of files in one transaction, which also notes each order's ship-by and units
          for `status` (keyless: it lists them once delivered, with or without a shipments pass);
4. deliver staged files a batch at a time, each step for the whole batch: upload under a
          temporary name (all in flight at once), mark uploaded, rename into place, mark
          delivered. After a crash, an uploaded file whose temporary name is gone was renamed.
5. purge  buyer data past the retention period.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Protocol

from bridge.config import Settings, WarehouseSettings
from bridge.edges.amazon import PII_ROLE_HINT, AmazonOrders, Refetched
from bridge.edges.folders import Drop, write_files
from bridge.edges.sftp import SftpDrop
from bridge.errors import BridgeError, FileExistsInDrop, FixTheSetup
from bridge.flows import retention
from bridge.flows.steps import run_steps
from bridge.formats.orders import NAME_MAX, RenderedFile, render_orders, too_long
from bridge.ledger import (ORDERS_BOOKMARK, SENT, UNDELIVERED, FileStatus, Ledger, Observation, OrderStatus,
                           StoredFile, StoredOrder)
from bridge.records import Line, Order, OrderHeader, iso_z, shown
from bridge.windows import Window, catch_up_eta, duration, next_window, windows_left

log = logging.getLogger("bridge.orders")
RETENTION_BOOKMARK = "retention_daily"  # the last purge that took the backups too (once a UTC day)
summary_log = logging.getLogger("bridge.orders.summary")  # a run's one line; the service logs its own job= line
# How far the clock may run ahead of the last window Amazon answered before retention stops
# trusting it: a day (a run's windows end `lag` behind it; a day covers any interval).
RETENTION_CLOCK_SLACK = timedelta(days=1)

BOOKMARK = ORDERS_BOOKMARK
PII_MISSING = "no delivery address from Amazon (PII role missing)"
NOT_FOUND = ("no delivery address from Amazon; asked again, Amazon did not find the order (404 NotFound):"
             " look it up in Seller Central")
UNUSABLE_ANSWER = "no delivery address from Amazon; asked again, Amazon's answer was unusable: {}"


# Files staged, uploaded, renamed and recorded together: each step for the whole batch, then
# the next, one ledger transaction per step; a stop request is honoured between batches.
BATCH_SIZE = 100

# Spool writes refused for the name itself (too long, not allowed by the file system): that
# file's orders wait, the other files go.
_NAME_REFUSED = (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ)


def _name_limit(warehouse: WarehouseSettings) -> int:
    """The longest file name the drop takes once the temporary suffix is added."""
    return NAME_MAX - len(warehouse.temp_suffix.encode("utf-8"))


class Checkpoint(Protocol):
    def __call__(self, step: str) -> None: ...


@dataclass
class RunReport:
    windows: list[str] = field(default_factory=list)
    pulled: int = 0
    new: int = 0
    held: int = 0
    unrenderable: int = 0
    staged_files: int = 0
    delivered_files: int = 0
    delivered_orders: int = 0
    changed_after_delivery: int = 0
    purged: int = 0
    caught_up: bool = False  # set by the pull once no window is left: a stop or a failure leaves it False
    errors: list[str] = field(default_factory=list)
    needs_a_person: bool = False  # an error was FixTheSetup: retrying alone will not help

    def summary(self) -> str:
        window = f"{self.windows[0].split('/')[0]}/{self.windows[-1].split('/')[1]}" if self.windows else "-"
        return (
            f"orders windows={len(self.windows)} window={window} pulled={self.pulled} new={self.new}"
            f" held={self.held} unrenderable={self.unrenderable} files={self.staged_files}"
            f" delivered={self.delivered_orders} changed_after_delivery={self.changed_after_delivery}"
            f" caught_up={'yes' if self.caught_up else 'no'} errors={len(self.errors)}"
        )


@dataclass
class Preview:
    """What a run would send now, computed without writing anything anywhere."""

    windows: list[str] = field(default_factory=list)
    files: list[tuple[str, RenderedFile]] = field(default_factory=list)  # (warehouse, file)
    not_sent: dict[str, str] = field(default_factory=dict)  # order id -> status and why

    def summary(self) -> str:
        window = f"{self.windows[0].split('/')[0]}/{self.windows[-1].split('/')[1]}" if self.windows else "-"
        lines = [f"dry run: windows={len(self.windows)} window={window} files={len(self.files)}"
                 f" not_sent={len(self.not_sent)}"]
        for warehouse, rendered in self.files:
            lines.append(f"  would send {warehouse}: {rendered.name} ({len(rendered.data)} bytes) orders={','.join(map(shown, rendered.order_ids))}")
        for order_id, why in self.not_sent.items():
            lines.append(f"  would not send {shown(order_id)}: {why}")
        return "\n".join(lines)


def decide(order: Order, settings: Settings) -> Observation:
    """What to do with an order Amazon reported: pending for a warehouse, held, or never sent."""
    if order.status == "CANCELLED":
        return Observation(order, OrderStatus.CANCELLED, "cancelled on Amazon before delivery")
    if order.status not in settings.orders.statuses:
        return Observation(order, OrderStatus.SKIPPED, f"Amazon status is {shown(order.status)}")
    if order.marketplace_id not in settings.orders.marketplaces:
        return Observation(order, OrderStatus.SKIPPED, f"marketplace {shown(order.marketplace_id)} is not in orders.marketplaces", final=False)
    if order.ship_to is None:
        return Observation(order, OrderStatus.HELD, PII_MISSING)
    countries = settings.orders.ship_to_countries
    if countries and order.country_code not in countries:
        return Observation(order, OrderStatus.SKIPPED, f"ship-to country {shown(order.country_code)} is not in orders.ship_to_countries", final=False)
    for warehouse in settings.warehouses:
        if warehouse.takes(order.country_code, order.marketplace_id):
            return Observation(order, OrderStatus.PENDING, "", warehouse.name)
    return Observation(
        order,
        OrderStatus.HELD,
        f"no warehouse takes ship-to country {shown(order.country_code)} in marketplace {shown(order.marketplace_id)}",
    )


def can_still_be_sent(header: OrderHeader, settings: Settings) -> bool:
    """Whether an order can still be sent, judged from what a v0 getOrders page says before
    its items are fetched: decide()'s rules that need no items and no full address."""
    orders = settings.orders
    if header.status == "CANCELLED" or header.status not in orders.statuses:
        return False
    if header.marketplace_id not in orders.marketplaces:
        return False
    countries = orders.ship_to_countries
    return not (countries and header.country_code and header.country_code not in countries)


class OrdersFlow:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        amazon: AmazonOrders,
        *,
        open_drop: Callable[[WarehouseSettings], Drop] | None = None,
        checkpoint: Checkpoint | None = None,
        should_stop: Callable[[], bool] | None = None,
        batch_size: int = BATCH_SIZE,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        pull_slice: timedelta | None = None,
    ):
        self.settings = settings
        self.ledger = ledger
        self.amazon = amazon
        self.open_drop = open_drop or (lambda warehouse: SftpDrop(warehouse.sftp))
        self.checkpoint = checkpoint or (lambda step: None)
        # Asked between windows, batches of files and steps: a stop request (SIGTERM) ends the
        # run at the next safe point, never in the middle of a batch.
        self.should_stop = should_stop or (lambda: False)
        self._swept = False  # spool files left unrecorded by a crash: looked for on the first run
        self.batch_size = batch_size
        # The wall clock, only for a catch-up's pace: a run's windows are reckoned from its `now`.
        self.clock = clock
        # The service's turn: windows are pulled this long at most, so that its other jobs are
        # not held back by a catch-up at Amazon's rate (None: every window the run may take).
        self.pull_slice = pull_slice
        self._rendered: dict[int, bytes] = {}  # file id -> bytes, for files staged in this run
        self._purged_on: datetime | None = None  # the last purge with the backups, once known

    def run(self, now: datetime) -> RunReport:
        """One complete run. Steps after a failed one still run: Amazon being down must not stop
        already-staged files from reaching the warehouse."""
        report = RunReport()
        self.amazon.begin_run()
        steps = (self.pull, self.recheck_held, self.render, self.deliver, self.purge)
        run_steps(((step.__name__, lambda step=step: step(now, report)) for step in steps), report,
                  should_stop=self.should_stop, log=log)
        summary_log.info(report.summary())
        return report

    # --- dry run -------------------------------------------------------------------------

    def preview(self, now: datetime) -> Preview:
        """The files the next run would deliver, from Amazon's current answers and the ledger,
        rendered in memory. Nothing is recorded, spooled or uploaded; the bookmark stays."""
        preview = Preview()
        self.amazon.begin_run()
        bookmark = self.ledger.bookmark(BOOKMARK)
        seen: dict[str, Observation] = {}
        for _ in range(self.settings.orders.max_windows_per_run):
            window = self._next_window(bookmark, now)
            if window is None:
                break
            seen.update((o.order.order_id, o) for o in self._fetch(window))
            preview.windows.append(str(window))
            bookmark = window.end
        waiting = {o.order_id: Observation(o.order, OrderStatus.PENDING, "", o.warehouse)
                   for o in self.ledger.orders_in(OrderStatus.PENDING, OrderStatus.UNRENDERABLE)}
        for order_id, observation in seen.items():
            known = self.ledger.order_row(order_id)
            if known and OrderStatus(known["status"]) in (*SENT, OrderStatus.CANCELLED, OrderStatus.SKIPPED):
                continue  # already sent or settled: a run would not send it again
            if observation.status == OrderStatus.PENDING:
                waiting[order_id] = observation
            else:  # held, cancelled or skipped: the reason, as the README promises for each
                preview.not_sent[order_id] = f"{observation.status}: {observation.reason}"
        for warehouse in self.settings.warehouses:
            orders = [o.order for o in waiting.values() if o.warehouse == warehouse.name]
            if orders:
                result = render_orders(warehouse.mapping.orders, orders, now, max_name_length=_name_limit(warehouse))
                preview.files += [(warehouse.name, rendered) for rendered in result.files]
                preview.not_sent.update({i: f"unrenderable: {why}" for i, why in result.failures.items()})
        self.amazon.rejected.clear()
        return preview

    # --- 1. pull -------------------------------------------------------------------------

    def pull(self, now: datetime, report: RunReport) -> None:
        if self.ledger.bookmark(BOOKMARK) is None:
            self._log_first_pull(now)
        catching_up = self._catching_up(now)
        if catching_up:
            self._log_catch_up_start(now)
        started = time.monotonic()
        for pulled in range(1, self.settings.orders.max_windows_per_run + 1):
            if self.should_stop():
                return
            window = self._next_window(self.ledger.bookmark(BOOKMARK), now)
            if window is None:
                break
            self._pull_window(window, now, report)
            if catching_up:
                self._log_catch_up(window, now)
            if self.pull_slice is not None and time.monotonic() - started >= self.pull_slice.total_seconds():
                if self._next_window(self.ledger.bookmark(BOOKMARK), now) is not None:
                    log.info("orders pull yields windows=%d: the service's other due jobs run, then the"
                             " pull goes on", pulled)
                break
        report.caught_up = self._next_window(self.ledger.bookmark(BOOKMARK), now) is None
        if report.caught_up and catching_up:
            self.ledger.end_catch_up(BOOKMARK)
            log.info("orders caught up window_end=%s", iso_z(self.ledger.bookmark(BOOKMARK)))

    def _catching_up(self, now: datetime) -> bool:
        """Whether this pull continues, or begins, a catch-up: more than one window behind."""
        if self._windows_left(self.ledger.bookmark(BOOKMARK), now) > 1:
            self.ledger.begin_catch_up(BOOKMARK, self.clock())
            return True
        return self.ledger.catch_up(BOOKMARK) is not None

    def _windows_left(self, bookmark: datetime | None, now: datetime) -> int:
        orders = self.settings.orders
        return windows_left(bookmark, now, size=orders.window, lag=orders.lag, first_start=orders.start)

    def _log_first_pull(self, now: datetime) -> None:
        window = self._next_window(None, now)
        if window is None:
            return
        if self.settings.orders.start is None:
            log.info("orders first pull from=%s: orders.start is not set, so orders last updated before then"
                     " (open at install, not changed since) are never pulled; set orders.start to reach them",
                     iso_z(window.start))
        else:
            log.info("orders first pull from=%s (orders.start)", iso_z(window.start))

    def _log_catch_up_start(self, now: datetime) -> None:
        """Before the first window, so a catch-up paced by Amazon's rate limit is not silent."""
        bookmark = self.ledger.bookmark(BOOKMARK)
        left = self._windows_left(bookmark, now)
        window = self._next_window(bookmark, now)
        if window is None:
            return
        log.info("orders catch-up run from=%s windows_left=%d this_run=%d: each window costs at least one call"
                 " at Amazon's rate limit (searchOrders: one every 3 minutes once its burst of 20 is spent)",
                 iso_z(window.start), left, min(left, self.settings.orders.max_windows_per_run))

    def _log_catch_up(self, window: Window, now: datetime) -> None:
        """The catch-up's progress after each window, for the operator waiting on it."""
        progress = self.ledger.catch_up(BOOKMARK)
        if progress is None:
            return
        left = self._windows_left(window.end, now)
        eta = catch_up_eta(progress["windows"], left, progress["since"], self.clock())
        log.info("orders catching up window=%s windows_done=%d windows_left=%d orders=%d caught_up_in=%s",
                 window, progress["windows"], left, progress["orders"], duration(eta))

    def _next_window(self, bookmark: datetime | None, now: datetime) -> Window | None:
        orders = self.settings.orders
        return next_window(bookmark, now, size=orders.window, lag=orders.lag,
                           overlap=orders.overlap, first_start=orders.start)

    def _fetch(self, window: Window) -> list[Observation]:
        """Amazon's orders for a window, each with what to do about it. CANCELLED is asked for
        too, so a cancellation of an order already sent is seen and reported."""
        found = self.amazon.updated_between(window.query_start, window.end, self._statuses(),
                                            self.settings.orders.marketplaces, known_lines=self._known_lines)
        return [decide(order, self.settings) for order in found]

    def _statuses(self) -> list[str]:
        return sorted(set(self.settings.orders.statuses) | {"CANCELLED"})

    def _known_lines(self, header: OrderHeader) -> tuple[Line, ...] | None:
        """A v0 order's lines without getOrderItems where they cannot matter or are known; None
        where they must be fetched: an order that can still be sent, new or changed since."""
        row = self.ledger.order_row(header.order_id)
        if row is None:
            return None if can_still_be_sent(header, self.settings) else ()  # () : never stored
        if OrderStatus(row["status"]) not in UNDELIVERED:
            return ()  # sent or settled: the ledger keeps the record it has
        unchanged = row["last_updated"] == iso_z(header.last_updated)
        if not unchanged and can_still_be_sent(header, self.settings):
            return None
        stored = self.ledger.stored_order(header.order_id)
        return stored.order.lines if stored else None

    def _pull_window(self, window: Window, now: datetime, report: RunReport) -> None:
        observations = self._fetch(window)
        self.checkpoint("window_fetched")
        summary = self.ledger.record(observations, now, bookmark=(BOOKMARK, window.end), window_start=window.start)
        self._note_rejected(now)
        report.windows.append(str(window))
        report.pulled += len(observations)
        report.new += summary.new
        self._note_changes(summary.changed_after_delivery)
        report.changed_after_delivery += len(summary.changed_after_delivery)
        held = [o for o in observations if o.status == OrderStatus.HELD]
        report.held += len(held)
        if any(o.reason == PII_MISSING for o in held):
            log.warning("orders held without address count=%d: %s", sum(o.reason == PII_MISSING for o in held), PII_ROLE_HINT)

    def _note_rejected(self, now: datetime) -> None:
        """Orders Amazon sent in a shape the bridge cannot use: not silently dropped, but
        logged and listed by `fbm-bridge status` for a person to look at in Seller Central."""
        for order_id, why in self.amazon.rejected:
            log.error("order_id=%s not usable, not recorded: %s", shown(order_id), why)
            self.ledger.note_rejected(order_id, why, now)
        self.amazon.rejected.clear()

    def _note_changes(self, order_ids: tuple[str, ...]) -> None:
        for order_id in order_ids:
            row = self.ledger.order_row(order_id) or {}
            log.warning(
                "order changed on Amazon after delivery order_id=%s amazon_status=%s warehouse=%s:"
                " the bridge never resends or deletes a delivered order; tell the warehouse",
                shown(order_id), shown(row.get("amazon_status")), row.get("warehouse"),
            )

    # --- 2. held orders ------------------------------------------------------------------

    def recheck_held(self, now: datetime, report: RunReport) -> None:
        """Decide held orders again (settings may have changed); ask Amazon for missing addresses.

        Only orders held for want of an address are asked for, least recently asked first, in
        bulk once a probe shows addresses are back (AmazonOrders.refetch). While the PII role
        is missing that costs one call a run. An order Amazon does not find, or answers for
        unusably, is noted on the order and the others are asked.
        """
        observations, waiting = [], []
        for stored in self.ledger.orders_in(OrderStatus.HELD):
            observation = decide(stored.order, self.settings)
            if observation.status == OrderStatus.HELD and observation.reason == PII_MISSING:
                waiting.append(stored)  # only Amazon can change this: asked below
            else:
                observations.append(observation)
        # Orders for a warehouse that is no longer configured are routed again (only theirs are
        # opened here: the others' buyer data is opened once, by the render step).
        configured = [warehouse.name for warehouse in self.settings.warehouses]
        for stored in self.ledger.orders_elsewhere(configured, OrderStatus.PENDING, OrderStatus.UNRENDERABLE):
            observations.append(decide(stored.order, self.settings))
        self._record_rechecked(observations, now)
        if waiting:
            self._ask_for_addresses(waiting, now)

    def _ask_for_addresses(self, waiting: list[StoredOrder], now: datetime) -> None:
        asked = self.ledger.asked_at()
        waiting = sorted(waiting, key=lambda stored: asked.get(stored.order_id, ""))  # never asked first
        held = {stored.order_id: stored for stored in waiting}
        pages = self.amazon.refetch([(s.order_id, s.order.purchase_date) for s in waiting], self._statuses(),
                                    self.settings.orders.marketplaces, known_lines=self._known_lines)
        try:
            for page in pages:
                self._record_refetched(page, held, now)
                if page.withheld:
                    log.info("held orders: Amazon still withholds addresses; asked again next run: %s", PII_ROLE_HINT)
                if self.should_stop():
                    log.info("stop requested: held orders left for the next run")
                    return
        finally:
            pages.close()

    def _record_refetched(self, page: Refetched, held: dict[str, StoredOrder], now: datetime) -> None:
        """One answer about held orders, recorded at once: a stop or a failure keeps it."""
        observations = [decide(order, self.settings) for order in page.orders if order.order_id in held]
        for order_id in page.missing:
            log.warning("held order not found on Amazon order_id=%s: left held, asked again later", order_id)
            observations.append(Observation(held[order_id].order, OrderStatus.HELD, NOT_FOUND))
            self.ledger.note_event(order_id, "not_found", "asked again for its address: Amazon answered 404 NotFound", now)
        for order_id, why in self.amazon.rejected:
            if order_id in held:
                observations.append(Observation(held[order_id].order, OrderStatus.HELD, UNUSABLE_ANSWER.format(why)))
        answered = [o.order.order_id for o in observations]
        self._note_rejected(now)
        self._record_rechecked(observations, now)
        self.ledger.mark_asked(answered, now)

    def _record_rechecked(self, observations: list[Observation], now: datetime) -> None:
        if not observations:
            return
        summary = self.ledger.record(observations, now)
        released = sum(o.status == OrderStatus.PENDING for o in observations)
        if released:
            log.info("held orders released count=%d", released)
        self._note_changes(summary.changed_after_delivery)

    # --- 3. render -----------------------------------------------------------------------

    def render(self, now: datetime, report: RunReport) -> None:
        waiting = self.ledger.orders_in(OrderStatus.PENDING, OrderStatus.UNRENDERABLE)
        if not self._swept:  # only a crash leaves spool files unrecorded: once per process
            self._remove_orphan_spool_files()
            self._swept = True
        for warehouse in self.settings.warehouses:
            orders = [stored.order for stored in waiting if stored.warehouse == warehouse.name]
            if orders:
                self._render_for(warehouse, orders, now, report)

    def _render_for(self, warehouse: WarehouseSettings, orders: list[Order], now: datetime, report: RunReport) -> None:
        result = render_orders(warehouse.mapping.orders, orders, now, max_name_length=_name_limit(warehouse))
        self._unrenderable(warehouse, list(result.failures.items()), now, report)
        folder = self.settings.spool_dir / warehouse.name
        folder.mkdir(parents=True, exist_ok=True)
        batch: list[tuple[RenderedFile, str]] = []
        records = {order.order_id: order for order in orders}  # their ship-by is noted as they are staged
        for rendered in result.files:
            name, why = self._file_name(warehouse, rendered)
            if name is None:  # this file only: the warehouse's other files still go
                self._unrenderable(warehouse, [(order_id, why) for order_id in rendered.order_ids], now, report)
                continue
            batch.append((rendered, name))
            if len(batch) == self.batch_size:
                self._spool_and_stage(warehouse, folder, batch, now, report, records)
                batch = []
        if batch:
            self._spool_and_stage(warehouse, folder, batch, now, report, records)

    def _spool_and_stage(self, warehouse: WarehouseSettings, folder: Path, batch: list[tuple[RenderedFile, str]],
                         now: datetime, report: RunReport, records: dict[str, Order]) -> None:
        """Write a batch of files into the spool (sealed, synced) and record them as staged, in
        one transaction. Their bytes stay at hand for this run's delivery, so buyer data is
        opened once a run, not read back from the spool."""
        outcomes = write_files([(folder / name, self.ledger.seal_file(rendered.data)) for rendered, name in batch])
        spooled = []
        for (rendered, name), problem in zip(batch, outcomes):
            if problem is None:
                spooled.append((rendered, name))
            elif problem.errno in _NAME_REFUSED:  # this name only
                why = f"its file name {name} cannot be written in the spool ({problem.strerror})"
                self._unrenderable(warehouse, [(order_id, why) for order_id in rendered.order_ids], now, report)
            else:
                self._unspool(folder, spooled)
                raise FixTheSetup(f"cannot write the spool file {folder / name}: {problem.strerror}")
        self.checkpoint("spooled")
        files = [(name, f"{warehouse.name}/{name}", len(rendered.data), hashlib.sha256(rendered.data).hexdigest(),
                  rendered.order_ids) for rendered, name in spooled]
        try:
            ids = self.ledger.stage_files(warehouse.name, files, now, due=records)
        except Exception:
            self._unspool(folder, spooled)
            raise
        self._rendered.update(zip(ids, (rendered.data for rendered, _ in spooled)))
        self.checkpoint("staged")
        report.staged_files += len(spooled)

    @staticmethod
    def _unspool(folder: Path, files: list[tuple[RenderedFile, str]]) -> None:
        """Spool files that will not be recorded: not left in the spool either."""
        for _, name in files:
            (folder / name).unlink(missing_ok=True)

    def _file_name(self, warehouse: WarehouseSettings, rendered: RenderedFile) -> tuple[str | None, str]:
        """The name a rendered file is staged under, or (None, why it cannot be staged).

        A per-run file whose name an earlier file took (two runs in one second) gets the next
        free `NAME-2`; a per-order file's name taken by another order's file (ids that clean to
        the same name) holds that order, since its name would say it is the other order."""
        name = rendered.name
        if self.ledger.file_name_taken(warehouse.name, name):
            if warehouse.mapping.orders.file_per != "run":
                return None, (f"its file name {name} was already used in {warehouse.name} for another"
                              f" order's file (their ids differ only in characters a file name cannot hold)")
            name = self.ledger.free_file_name(warehouse.name, name)
        limit = _name_limit(warehouse)
        if len(name.encode("utf-8")) > limit:  # the sequence made it longer
            return None, too_long(name, limit)
        return name, ""

    def _unrenderable(self, warehouse: WarehouseSettings, orders: list[tuple[str, str]],
                      now: datetime, report: RunReport) -> None:
        """Orders (id, why) that wait until the mapping or the data changes, recorded in one
        transaction: an ERROR line when an order becomes unrenderable or its reason changes,
        not on every run that finds it so again."""
        if not orders:
            return
        news = self.ledger.mark_unrenderable_many(orders, now)
        for order_id, why in orders:
            log.log(logging.ERROR if order_id in news else logging.DEBUG,
                    "order cannot be laid out warehouse=%s order_id=%s why=%s", warehouse.name, shown(order_id), why)
        report.unrenderable += len(orders)

    def _remove_orphan_spool_files(self) -> None:
        """Spool files written before a crash that the ledger never staged: rendered again."""
        in_use = self.ledger.spool_paths_in_use()
        spool = self.settings.spool_dir
        if not spool.is_dir():
            return
        for path in spool.glob("*/*"):
            if path.is_file() and path.relative_to(spool).as_posix() not in in_use:
                path.unlink()

    # --- 4. deliver ----------------------------------------------------------------------

    def deliver(self, now: datetime, report: RunReport) -> None:
        problems: list[BridgeError] = []
        for warehouse in self.settings.warehouses:
            files = self.ledger.files_in(FileStatus.STAGED, FileStatus.UPLOADED, warehouse=warehouse.name)
            if not files:
                continue
            try:
                with self.open_drop(warehouse) as drop:
                    for start in range(0, len(files), self.batch_size):
                        if self.should_stop():
                            break
                        self._deliver_batch(warehouse, drop, files[start:start + self.batch_size], now, report, problems)
            except BridgeError as problem:
                problems.append(problem)
                # `status` shows why they wait, never "delivered on the next run" on a guess.
                for waiting in self.ledger.files_in(FileStatus.STAGED, FileStatus.UPLOADED, warehouse=warehouse.name):
                    self.ledger.note_delivery_problem(waiting.id, str(problem), now)
                log.error("delivery stopped warehouse=%s: %s", warehouse.name, problem)
        self._rendered.clear()
        if problems:
            # One warehouse failing never stops the others; the run reports every failure, as
            # needing a person if any of them does.
            kind = next((type(p) for p in problems if isinstance(p, FixTheSetup)), type(problems[0]))
            raise kind("; ".join(str(problem) for problem in problems))

    def deliver_files(self, warehouse: WarehouseSettings, files: list[StoredFile], now: datetime) -> RunReport:
        """Deliver these staged or uploaded files of `warehouse` now, by the same steps as a run
        (`resend`). A problem is noted for `status` on each file still in flight, then raised."""
        report, problems = RunReport(), []
        try:
            with self.open_drop(warehouse) as drop:
                self._deliver_batch(warehouse, drop, files, now, report, problems)
        except BridgeError as problem:
            problems.append(problem)
        if problems:
            in_flight = {f.id for f in self.ledger.files_in(FileStatus.STAGED, FileStatus.UPLOADED,
                                                            warehouse=warehouse.name)}
            for stored in files:
                if stored.id in in_flight:
                    self.ledger.note_delivery_problem(stored.id, str(problems[0]), now)
            raise problems[0]
        return report

    def _deliver_batch(self, warehouse: WarehouseSettings, drop: Drop, batch: list[StoredFile],
                       now: datetime, report: RunReport, problems: list[BridgeError]) -> None:
        """Deliver a batch of files, each step for the whole batch before the next, in the
        order that makes a crash anywhere converge: upload every staged file under its
        temporary name (all in flight at once), record them uploaded (one transaction), rename
        them into place, record them delivered (one transaction). After a crash, a file
        recorded uploaded whose temporary name is gone was renamed.

        A problem of one file (its name taken in the drop) holds that file and is added to
        `problems`; a problem of the drop (a folder missing, a refusal) is raised once the
        batch's files that did go are recorded."""
        final = {stored.id: f"{warehouse.orders_folder}/{stored.name}" for stored in batch}
        temporary = {file_id: name + warehouse.temp_suffix for file_id, name in final.items()}
        held: list[tuple[StoredFile, FileExistsInDrop]] = []
        stopped: list[BridgeError] = []

        def sort(files: list[StoredFile], outcomes: list[BridgeError | None]) -> list[StoredFile]:
            """The files that went; the others held (their own problem) or stopped (the drop's)."""
            went = []
            for stored, outcome in zip(files, outcomes):
                if outcome is None:
                    went.append(stored)
                elif isinstance(outcome, FileExistsInDrop):
                    held.append((stored, outcome))
                else:
                    stopped.append(outcome)
            return went

        staged = [(stored, data) for stored in batch if stored.status == FileStatus.STAGED
                  if (data := self._spooled(stored, now)) is not None]
        outcomes = drop.put_files([(data, temporary[stored.id]) for stored, data in staged]) if staged else []
        uploaded = sort([stored for stored, _ in staged], outcomes)
        self.checkpoint("uploaded")
        if uploaded:
            self.ledger.mark_uploaded_many([stored.id for stored in uploaded])
        self.checkpoint("marked_uploaded")

        done: list[tuple[StoredFile, str]] = []  # (file, why its delivery is unconfirmed, or "")
        renaming = list(uploaded)
        for stored in batch:
            if stored.status != FileStatus.UPLOADED:
                continue
            if drop.exists(temporary[stored.id]):
                renaming.append(stored)
            elif drop.exists(final[stored.id]):
                log.info("file was renamed before a restart warehouse=%s name=%s", warehouse.name, stored.name)
                done.append((stored, ""))
            else:
                # Uploaded, then neither name is in the drop: renamed before a crash and already
                # collected by the warehouse, or the .part was removed by someone. Never resent
                # blindly: recorded as delivered, and shown to staff to confirm with the warehouse.
                log.warning("delivery unconfirmed warehouse=%s file=%s", warehouse.name, stored.name)
                done.append((stored, f"{stored.name} was uploaded but neither it nor {stored.name}{warehouse.temp_suffix}"
                                     f" is in {warehouse.orders_folder} now; ask {warehouse.name} whether they received it"))
        outcomes = drop.rename_files([(temporary[s.id], final[s.id]) for s in renaming]) if renaming else []
        done += [(stored, "") for stored in sort(renaming, outcomes)]
        self.checkpoint("renamed")
        if done:
            delivered = self.ledger.mark_delivered_many([(stored.id, unconfirmed) for stored, unconfirmed in done], now)
            for stored, _ in done:
                carried = len(delivered[stored.id]) or self.ledger.resent_orders(stored.id)
                log.info("delivered warehouse=%s file=%s orders=%d", warehouse.name, stored.name, carried)
                report.delivered_orders += len(delivered[stored.id])
                report.delivered_files += bool(delivered[stored.id])
        for stored, problem in held:  # this file only: the rest of the warehouse's files still go
            problems.append(problem)
            self.ledger.note_delivery_problem(stored.id, str(problem), now)
            log.error("not delivered warehouse=%s file=%s: %s", warehouse.name, stored.name, problem)
        if stopped:
            raise stopped[0]

    def _spooled(self, stored: StoredFile, now: datetime) -> bytes | None:
        """The staged file's bytes from the spool; if the spool copy is gone or damaged, the
        file is taken back (it never left this machine) and its orders rendered again.

        A copy that does not open with the key is damaged only if the ledger's records of its
        orders do open: if they do not either, the key is wrong, and that is said instead."""
        data = self._rendered.pop(stored.id, None)
        if data is not None:  # rendered in this run: its digest is the one staged
            return data
        path = self.settings.spool_dir / stored.spool_path
        try:
            data = self.ledger.open_file(path.read_bytes(), f"spool file {path}")
        except FileNotFoundError:
            why = "its spool copy is missing"
        except FixTheSetup:
            self.ledger.file_orders_open(stored.id)  # raises, naming the key, if the key is wrong
            why = "its spool copy is damaged (it does not open with BRIDGE_STATE_KEY, its orders' records do)"
        else:
            if hashlib.sha256(data).hexdigest() == stored.sha256:
                return data
            why = "its spool copy changed since it was staged"
        self.ledger.unstage_file(stored.id, now, why)
        log.warning("file taken back warehouse=%s file=%s: %s; its orders are rendered again", stored.warehouse, stored.name, why)
        return None

    # --- 5. retention --------------------------------------------------------------------

    def _retention_time(self, now: datetime) -> datetime:
        """The time retention counts to: `now`, unless the clock is more than a day ahead of the
        windows Amazon has answered (it refuses a window that ends in the future, so they prove
        how late it is at least). A clock that jumped weeks ahead must not purge buyer data (and
        spool copies) weeks early; the purge catches up with the pull."""
        bookmark = self.ledger.bookmark(BOOKMARK)
        if bookmark is None:
            return now
        proven = bookmark + self.settings.orders.lag + RETENTION_CLOCK_SLACK
        if now <= proven:
            return now
        log.warning("retention counts to %s, not to the clock's %s: the clock is ahead of the orders Amazon has"
                    " answered (window_end=%s); the purge follows the pull", iso_z(proven), iso_z(now), iso_z(bookmark))
        return proven

    def purge(self, now: datetime, report: RunReport) -> None:
        """flows/retention.py: every run; the backups and the summary line once a UTC day (and
        the line whenever something was purged)."""
        last = self._purged_on or self.ledger.bookmark(RETENTION_BOOKMARK)  # kept across reloads and restarts
        daily = last is None or last.date() != now.date()
        purged = retention.purge(self.settings, self.ledger, self._retention_time(now), backups=daily)
        if daily:
            self.ledger.set_bookmark(RETENTION_BOOKMARK, now, now)
        self._purged_on = now
        report.purged = purged.records
        if daily or purged.anything:
            log.info(purged.summary())
