"""The long-running service: every job of the bridge from one scheduler, until told to stop.

The jobs (each named in the log, `job=NAME`):

    orders          the orders pull, render and delivery    every orders.interval_minutes
    shipments-sftp  the SFTP confirmation folders           every shipments.poll_seconds
    shipments-local the local confirmation folders, listed  every shipments.rescan_minutes
    shipments-watch the local confirmation folders, watched when a file there is finished
    stock-sftp      the SFTP stock folder                   every stock.poll_minutes
    stock-local     the local stock folder, listed          every shipments.rescan_minutes
    stock-watch     the local stock folder, watched         when a file there is finished
    stock-publish   feeds with Amazon; the daily publish    every minute (publishes at stock.publish_at)

Each runs once at start (files already there give no watch event), then on its schedule.
A job run logs one `key=value` line (`job=orders result=ok duration_s=1.2 pulled=3 ...`).
A failing run (an exception, or errors in its report) never stops the daemon or the other
jobs: it is retried on its next turn, and after repeated failures only every 2nd, 4th, ...
turn, at most BACKOFF_CAP apart; a success resets it. A run longer than its job's interval is
reported (one WARNING line).

Signals only set flags; the loop does the work. SIGTERM/SIGINT: the job in flight ends at its
next safe point (between files, windows, calls; a wait for Amazon's rate limit ends at once)
and the daemon exits 0. SIGHUP reloads the config and mappings: a new config that does not
validate is refused in one line and the old one kept; a valid one replaces the flows, and the
schedule goes on (no extra run).

The state lock is held for the daemon's whole life, reloads included: a second daemon on the
same state folder refuses to start.

systemd (sd_notify, without a dependency): READY=1 once the state is open, STATUS= with what it
is doing, WATCHDOG=1 at half of $WATCHDOG_USEC from the scheduler loop and from the jobs' safe
points (a stuck call, or a stuck loop, stops it and systemd restarts the service), STOPPING=1.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import schedule

from bridge.config import Settings, load_settings
from bridge.edges.folders import write_atomic
from bridge.edges.watch import FolderWatcher
from bridge.errors import BridgeError, ConfigError, StopRequested
from bridge.flows.inbound import make_local_folder
from bridge.flows.steps import unexpected
from bridge.records import iso_z, one_line
from bridge.report import SERVICE_FILE
from bridge.service import configure_logging, open_service
from bridge.state import state_lock

log = logging.getLogger("bridge.daemon")

BACKOFF_CAP = timedelta(minutes=15)  # a failing job is still tried at least this often
PUBLISH_CHECK = timedelta(minutes=1)  # stock-publish: is the daily moment here, are feeds done?
STATUS_TEXT = {  # STATUS= while a job runs
    "orders": "orders pull running",
    "shipments-sftp": "shipments SFTP poll running",
    "shipments-local": "shipments local folder scan running",
    "shipments-watch": "shipments watched file running",
    "stock-sftp": "stock SFTP poll running",
    "stock-local": "stock local folder scan running",
    "stock-watch": "stock watched file running",
    "stock-publish": "stock publish check running",
}


class Flags:
    """What the signal handlers set, and the waits that end when a stop is requested."""

    def __init__(self) -> None:
        self.reload = False
        self._stopping = threading.Event()
        self.beat: Callable[[], None] = lambda: None  # the watchdog, fed during long waits

    @property
    def stop(self) -> bool:
        return self._stopping.is_set()

    @stop.setter
    def stop(self, value: bool) -> None:
        self._stopping.set() if value else self._stopping.clear()

    def sleep(self, seconds: float) -> None:
        """A wait inside a job (Amazon's rate limit, say). A stop ends it by raising
        StopRequested: the job unwinds from there, between two calls, instead of making the
        next call as if the wait had passed."""
        end = time.monotonic() + seconds
        while not self.stop:
            left = end - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(min(left, 5.0))
            self.beat()
        raise StopRequested("stop requested during a wait")

    def pause(self, seconds: float) -> None:
        """The scheduler loop's tick: ends early on a stop, raises nothing."""
        self._stopping.wait(seconds)

    def should_stop(self) -> bool:
        """Asked by the flows at their safe points: also proof that the job is moving."""
        self.beat()
        return self.stop

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)

    def _stop(self, signum, frame) -> None:
        self._stopping.set()

    def _reload(self, signum, frame) -> None:
        self.reload = True


@dataclass
class Job:
    """One named job: what it runs, how often, and how it has been failing."""

    name: str
    every: timedelta
    work: Callable[[], Any]  # returns the flow's report (with summary()) or None
    failures: int = 0  # consecutive failed runs
    skips_left: int = 0  # turns still skipped before the next try
    scheduled: Any = field(default=None, repr=False)  # the schedule.Job

    def backoff(self) -> int:
        """Turns to skip after `failures` failed runs in a row: 0, 1, 3, 7, ... so that the
        tries come 1, 2, 4, 8 ... turns apart, never more than BACKOFF_CAP apart."""
        cap = max(1, int(BACKOFF_CAP / self.every))
        return min(2 ** (self.failures - 1), cap) - 1


class Daemon:
    def __init__(self, settings: Settings, config_path: Path, flags: Flags,
                 now: Callable[[], datetime], tick: float, notifier: Notifier):
        self.settings = settings
        self.config_path = config_path
        self.flags = flags
        self.now = now
        self.tick = tick
        self.notifier = notifier
        self.scheduler = schedule.Scheduler()
        self.jobs: dict[str, Job] = {}
        self.watchers: dict[str, FolderWatcher] = {}
        self.service: Any = None
        self._service_stack: ExitStack | None = None
        self._again: set[str] = set()  # jobs due again at once: a catch-up that yielded its turn
        self.outcomes: dict[str, dict[str, Any]] = {}  # per job: its last result, for `status`

    # --- life -----------------------------------------------------------------------------------

    def run(self) -> int:
        for name in SUMMARY_LOGGERS:  # the job= line says it all once; journals grow with every turn
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            self._open(self.settings)
            self._schedule(first=True)
            self.notifier.send("READY=1", f"STATUS={self._idle_status()}")
            log.info("started config=%s orders_every=%s warehouses=%d jobs=%s", self.config_path,
                     self.settings.orders.interval, len(self.settings.warehouses), ",".join(self.jobs))
            while not self.flags.stop:
                if self.flags.reload:
                    self.flags.reload = False
                    self._reload()
                self.scheduler.run_pending()
                self._due_again()
                self._watched()
                self.notifier.beat()
                self.notifier.status(self._idle_status())
                self.flags.pause(self.tick)
        finally:
            self._close()
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        log.info("stopped")
        return 0

    def _open(self, settings: Settings) -> None:
        """The service and the watched folders for `settings`, all or nothing: a reload that
        cannot open them leaves `self.settings` as it was, for the caller to open again."""
        stack = ExitStack()
        try:
            self.service = stack.enter_context(open_service(
                settings, sleep=self.flags.sleep, should_stop=self.flags.should_stop, lock=False,
                pull_slice=settings.orders.pull_slice))
            self._watch(settings)
        except BaseException:
            for watcher in self.watchers.values():
                watcher.stop()
            self.watchers = {}
            self.service = None
            stack.close()
            raise
        self._service_stack = stack
        self.settings = settings

    def _close(self) -> None:
        for watcher in self.watchers.values():
            watcher.stop()
        self.watchers = {}
        if self._service_stack is not None:
            self._service_stack.close()
            self._service_stack = None
        self.service = None

    def _reload(self) -> None:
        """SIGHUP: the new config and mappings, or the old ones kept. The schedule goes on:
        a job keeps its next turn (or comes sooner, if its new interval is shorter)."""
        self.notifier.send("RELOADING=1", "STATUS=reloading the config")
        try:
            settings = load_settings(self.config_path)
            if settings.state_dir != self.settings.state_dir:
                raise ConfigError([f"{self.config_path}: bridge.state_dir: cannot change while the service runs"
                                   f" ({self.settings.state_dir} to {settings.state_dir}); restart it instead"])
        except ConfigError as problem:
            log.error("config reload refused, keeping the running config: %s", "; ".join(problem.problems))
            self.notifier.send("READY=1")
            return
        before = self.settings
        self._close()
        try:
            self._open(settings)
        except BridgeError as problem:  # the new secrets do not open the state, a folder cannot be watched
            log.error("config reload refused, keeping the running config: %s", problem)
            self._open(self.settings)
            self.notifier.send("READY=1")
            return
        self._schedule(first=False)
        log.info("config reloaded config=%s changed=%s log_level=%s jobs=%s", self.config_path,
                 ",".join(changed_parts(before, settings)) or "nothing", settings.log_level, ",".join(self.jobs))
        configure_logging(settings.log_level)  # after the line above: said at the old level
        self.notifier.send("READY=1")

    # --- the jobs -------------------------------------------------------------------------------

    def _schedule(self, *, first: bool) -> None:
        """(Re)make the jobs the settings ask for. At start every job is due at once; on a reload
        each keeps its turn and its failure count."""
        old = self.jobs
        self.scheduler.clear()
        self.jobs = {}
        for name, every, work in self._wanted():
            job = Job(name, every, work)
            job.scheduled = self.scheduler.every(max(1, round(every.total_seconds()))).seconds.do(self._run, job)
            before = old.get(name)
            if first:
                job.scheduled.next_run = datetime.now()
            elif before is not None:
                job.failures, job.skips_left = before.failures, before.skips_left
                job.scheduled.next_run = min(before.scheduled.next_run, job.scheduled.next_run)
            self.jobs[name] = job

    def _wanted(self) -> list[tuple[str, timedelta, Callable[[], Any]]]:
        settings, now = self.settings, self.now
        wanted: list[tuple[str, timedelta, Callable[[], Any]]] = [
            ("orders", settings.orders.interval, lambda: self.service.run_orders(now())),
        ]
        shipments, stock = self._shipments(), self._stock()
        if shipments is not None:  # a source's job only where a warehouse has that folder
            if shipments.sources(local=False):
                wanted.append(("shipments-sftp", settings.shipments.poll,
                               lambda: self._shipments().run(now(), local=False)))
            if shipments.sources(remote=False):
                wanted.append(("shipments-local", settings.shipments.rescan,
                               lambda: self._shipments().run(now(), remote=False)))
        if stock is not None:
            if stock.sources(local=False):
                wanted.append(("stock-sftp", settings.stock.poll, lambda: self._stock().poll(now(), local=False)))
            if stock.sources(remote=False):
                wanted.append(("stock-local", settings.shipments.rescan, lambda: self._stock().poll(now(), remote=False)))
            wanted.append(("stock-publish", PUBLISH_CHECK, lambda: self._stock().poll(now(), remote=False, local=False)))
        return wanted

    def _shipments(self):
        flow = self.service.shipments
        return flow if flow is not None and flow.enabled else None

    def _stock(self):
        flow = self.service.stock
        return flow if flow is not None and flow.enabled else None

    def _watch(self, settings: Settings) -> None:
        """Local folders are watched (inotify); the loop runs a job for each finished file."""
        quiet = quiet_after_writes(settings)
        made = lambda folder: make_local_folder(folder, settings.shipments)  # noqa: E731
        shipments = {w.name: w.local_shipments_folder for w in settings.warehouses
                     if w.local_shipments_folder is not None}
        if self._shipments() is not None and shipments:
            self.watchers["shipments-watch"] = FolderWatcher(shipments, quiet=quiet, make_folder=made)
        stock = self._stock()
        if stock is not None and stock.warehouse.local_stock_folder is not None:
            self.watchers["stock-watch"] = FolderWatcher({stock.warehouse.name: stock.warehouse.local_stock_folder},
                                                         quiet=quiet, make_folder=made)
        for watcher in self.watchers.values():
            watcher.start()  # one that cannot start raises: _open stops the others

    def _watched(self) -> None:
        for name, watcher in self.watchers.items():
            if self.flags.stop or not watcher.changed.is_set():
                continue
            finished = watcher.take()
            if not finished:
                continue
            if name == "shipments-watch":
                work = lambda: self._shipments().run(self.now(), remote=False, finished=finished)  # noqa: E731
            else:
                work = lambda: self._stock().poll(self.now(), remote=False,  # noqa: E731
                                                  finished=set().union(*finished.values()))
            self._run(Job(name, timedelta(0), work), backoff=False)

    def _run(self, job: Job, *, backoff: bool = True) -> None:
        """One run of a job: never raises (but for a stop), logs one line, keeps the backoff."""
        if self.flags.stop:
            return
        if job.skips_left:
            job.skips_left -= 1
            log.debug("job=%s result=skipped backoff_left=%d", job.name, job.skips_left)
            return
        self.notifier.status(STATUS_TEXT.get(job.name, f"{job.name} running"))
        started = time.monotonic()
        error = ""
        try:
            report = job.work()
        except StopRequested:
            log.info("job=%s result=stopped duration_s=%.2f", job.name, time.monotonic() - started)
            return
        except BridgeError as problem:
            report, error = None, str(problem)
        except Exception as problem:  # a bug: the job fails this turn, the daemon goes on
            report, error = None, f"{unexpected(problem)} (please report this as a bug)"
        duration = time.monotonic() - started
        errors = list(getattr(report, "all_errors", None) or getattr(report, "errors", None) or [])
        result = "failed" if error else "errors" if errors else "ok"
        if result == "ok":
            job.failures = 0
        elif backoff:
            job.failures += 1
            job.skips_left = job.backoff()
        fields = [f"job={job.name}", f"result={result}", f"duration_s={duration:.2f}"]
        fields += counts(report)
        if error:
            fields.append(f"error={error!r}")
        if job.skips_left:
            fields.append(f"next_try_in_turns={job.skips_left + 1}")
        log.log(logging.INFO if result == "ok" else logging.WARNING, " ".join(fields))
        self._note_outcome(job.name, result, error or (errors[0] if errors else ""))
        if result == "ok" and getattr(report, "caught_up", True) is False and job.name in self.jobs:
            self._again.add(job.name)  # a catch-up yielded its turn: on again after the others due
        if job.every and duration > job.every.total_seconds():
            log.warning("job=%s overran duration_s=%.1f every_s=%.0f", job.name, duration, job.every.total_seconds())
        self.notifier.status(self._idle_status())

    def _note_outcome(self, name: str, result: str, error: str) -> None:
        """`state_dir/service.json`: each job's last result, when it last went well and how many
        times in a row it has failed, for `status` and `--prometheus` (the log says it too, but
        a person asks `status`)."""
        at = iso_z(datetime.now(timezone.utc))
        before = self.outcomes.get(name, {})
        ok = result == "ok"
        self.outcomes[name] = {
            "result": result, "at": at, "last_ok_at": at if ok else before.get("last_ok_at"),
            "failures": 0 if ok else before.get("failures", 0) + 1,
            "failing_since": None if ok else before.get("failing_since") or at,
            "error": "" if ok else one_line(error)[:500],
        }
        if self.settings is None:  # a Daemon made for its jobs alone (tests) keeps them in memory
            return
        document = {"pid": os.getpid(), "updated_at": at, "jobs": self.outcomes}
        try:
            write_atomic(self.settings.state_dir / SERVICE_FILE, json.dumps(document, indent=1).encode(),
                         sync_folder=False)
        except OSError as problem:
            log.warning("service state not written path=%s: %s", self.settings.state_dir / SERVICE_FILE,
                        problem.strerror or problem)

    def _due_again(self) -> None:
        """After the jobs due now have run (`schedule` sets a job's next turn only once it has
        run), a catch-up that yielded is due again at once: it runs after the jobs due before it."""
        for name in self._again:
            if name in self.jobs:
                self.jobs[name].scheduled.next_run = datetime.now()
        self._again.clear()

    def _idle_status(self) -> str:
        due = [(job.scheduled.next_run, name) for name, job in self.jobs.items() if job.scheduled.next_run]
        if not due:
            return "idle"
        at, name = min(due)
        minutes = round((at - datetime.now()).total_seconds() / 60)
        failing = sorted(job for job, outcome in self.outcomes.items() if outcome["failures"])
        also = f"; failing: {', '.join(failing)}" if failing else ""
        return (f"idle; next: {name} in {minutes} min" if minutes >= 1 else
                f"idle; next: {name} in under a minute") + also


def run_daemon(
    settings: Settings,
    config_path: Path,
    *,
    flags: Flags | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    tick: float = 1.0,
    environ: dict[str, str] | None = None,
) -> int:
    """Run every job until a stop is requested (SIGTERM/SIGINT, or `flags.stop = True` from
    another thread); 0 then. `now` is what the flows are told the time is; `environ` (default
    os.environ) is where NOTIFY_SOCKET and WATCHDOG_USEC are read."""
    flags = flags or Flags()
    if threading.current_thread() is threading.main_thread():
        flags.install()
    notifier = Notifier.from_environ(os.environ if environ is None else environ)
    flags.beat = notifier.beat
    with state_lock(settings.state_dir):
        return Daemon(settings, config_path, flags, now, tick, notifier).run()


def changed_parts(before: Settings, after: Settings) -> list[str]:
    """What a reload changed, by name (never by value: a secret may be among them): sections of
    the config, and warehouses (their mapping included) added, removed or changed."""
    names = [name for name in ("log_level", "amazon", "orders", "retention", "shipments", "stock")
             if getattr(before, name) != getattr(after, name)]
    if before.state_key != after.state_key:
        names.append("state_key")
    old = {warehouse.name: warehouse for warehouse in before.warehouses}
    new = {warehouse.name: warehouse for warehouse in after.warehouses}
    for name in sorted(old.keys() | new.keys()):
        if old.get(name) != new.get(name):
            state = "added" if name not in old else "removed" if name not in new else "changed"
            names.append(f"warehouses.{name}({state})")
    return names


SUMMARY_LOGGERS = ("bridge.orders.summary", "bridge.shipments.summary", "bridge.stock.summary")


def counts(report: Any) -> list[str]:
    """The `key=value` counts of a flow's report, from its summary line."""
    summary = getattr(report, "summary", None)
    if summary is None:
        return []
    return [word for word in summary().split() if "=" in word]


def quiet_after_writes(settings: Settings) -> float:
    """Seconds a watched file written in place must stay untouched before it is taken: a
    writer that appends line by line closes it after every line."""
    return min(settings.shipments.stable.total_seconds(), 5.0)


class Notifier:
    """sd_notify without a dependency: datagrams to $NOTIFY_SOCKET when systemd set one.

    WATCHDOG=1 goes out at most every half $WATCHDOG_USEC, whenever `beat()` is called: by the
    scheduler loop on every tick and by a job at its safe points. Nothing calls it from a
    thread of its own, so a stuck loop or a call that never returns stops the beats.
    """

    def __init__(self, address: str | None, watchdog_seconds: float | None):
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        self.every = watchdog_seconds / 2 if watchdog_seconds else None
        self._last_beat = float("-inf")
        self._last_status = ""

    @classmethod
    def from_environ(cls, environ) -> Notifier:
        watchdog = None
        usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec) / 1e6
        return cls(environ.get("NOTIFY_SOCKET"), watchdog)

    def beat(self) -> None:
        if self.every is None or self.address is None:
            return
        now = time.monotonic()
        if now - self._last_beat >= self.every:
            self._last_beat = now
            self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def send(self, *states: str) -> None:
        if self.address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # a manager that reads nothing must never stop the jobs
            try:
                sock.sendto("\n".join(states).encode(), self.address)
            except BlockingIOError:
                log.debug("systemd notify dropped (its queue is full): %s", states)
            except OSError as problem:
                log.warning("systemd notify failed: %s", problem)


def notify(*states: str) -> None:
    """One sd_notify message now (for callers outside the daemon)."""
    Notifier.from_environ(os.environ).send(*states)
