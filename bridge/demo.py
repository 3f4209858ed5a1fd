"""The embedded default: the whole product with no accounts and no system services.

`fbm-bridge demo` starts the SP-API sandbox and an SFTP server on 127.0.0.1, writes a config for
three demo warehouses (CSV, XML, XLSX; routed by ship-to country) and runs the daemon
(`bridge.daemon.run_daemon`) in a thread for a few of its cycles, on a clock that runs SPEED
times as fast as real time (the sandbox keeps the same clock, so Amazon's "two minutes before
now" holds). It tells what happens, one short line per step: the orders pull delivers files to
the warehouses' SFTP drops; the simulated warehouse systems (bridge/sandbox/wms.py) ship what
they got and drop confirmation files (two in their SFTP shipments folders, one in a staff
folder on this machine) and ACME its stock count; the daemon takes them, confirms the parcels
on the sandbox, publishes the stock at its daily time as an inventory feed and answers each
file; a later pull sends nothing twice. Then the story in full: which orders each file carries
and why, which were not sent and why, the fulfillments and the feed the sandbox received, the
result files, and `fbm-bridge status`. The daemon's log goes to daemon.log in the folder.

Its folder stays usable afterwards: config, ledger, spool and the state key (in
`credentials/`) are kept, so `status`, `status --order`, `spool open` and `report` work there.

The demo never deletes what it did not make. It writes a list of what it made
(`.fbm-bridge-demo.json`); a re-run removes only those, and a non-empty folder without that
list is refused.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import secrets
import shlex
import shutil
import sys
import threading
import time
import types
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

import paramiko

from bridge.config import SECRET_NAMES, STATE_KEY, Settings, WarehouseSettings, load_settings
from bridge.daemon import Flags, run_daemon
from bridge.edges.folders import FolderDrop
from bridge.edges.sftp import SftpDrop
from bridge.errors import BadRecord, FixTheSetup
from bridge.flows.orders import decide
from bridge.formats.amazon_orders import order_from_v2026
from bridge.ledger import FileStatus, Ledger, OrderStatus, StoredFile
from bridge.mapping import shipped_mappings
from bridge.records import Order, iso_z, parse_iso
from bridge.report import format_status
from bridge.sandbox.sftpd import LocalSftpServer
from bridge.sandbox.spapi import SpApiSandbox, load_seed, rebase_last_updated, serve_forever, spread_last_updated
from bridge.sandbox.wms import Counted, confirm_delivered, drop_stock
from bridge.sealing import Sealer, new_key
from bridge.service import QUIET_LIBRARIES, OneLineFormatter, configure_logging, status_report
from bridge.windows import next_daily

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
SEED = DEMO_DATA / "sandbox-orders.json"
MARKETPLACES = ["ATVPDKIKX0DER", "A1PA6795UKMFR9", "A1F83G8C2ARO7P"]
WAREHOUSES = [
    # name, mapping, ship-to countries it takes
    ("acme", "acme-csv", ["DE"]),
    ("initech", "initech-xlsx", ["GB"]),
    ("globex", "globex-xml", []),  # everything else
]
# Where each warehouse's confirmation files arrive: its SFTP shipments folder, or (initech: staff
# drop the workbook by hand) a local folder on the bridge's machine.
STAFF_FOLDER = {"initech"}
# `sandbox --fresh`: update times spread over now - 55 min .. now - 35 min, inside the default
# first window [now - 60 min, now - 30 min] of a pull made up to 5 minutes after the start.
FRESH_SPREAD = (timedelta(minutes=55), timedelta(minutes=35))
MARKER = ".fbm-bridge-demo.json"  # what the demo made in its folder: all a re-run may remove
GLIMPSE_LINES = 12

# The daemon's cycles, accelerated: minutes between pulls and polls, the publish checked once a
# minute and Amazon's two-minute lag do not fit in a minute of real time, so the demo's clock
# (the daemon's `now`, its scheduler's and the sandbox's) runs SPEED times as fast: a minute
# passes every second.
SPEED = 60
TICK = 0.05  # real seconds between the daemon's looks at its scheduler
ORDERS_EVERY = 5  # minutes (demo time) between orders pulls
PUBLISH_AFTER = timedelta(minutes=7)  # the daily stock publish falls this long after the start
PATIENCE = 45.0  # real seconds the demo waits for the daemon to finish the story before it gives up
DAEMON_LOG = "daemon.log"
# ACME publishes stock: its WMS's nightly count (the article numbers are ACME's own, mapped to
# seller SKUs by mappings/acme-skus.csv; lots and bins of one article are summed).
STOCK_WAREHOUSE = "acme"
STOCK_ZONE = "Europe/Berlin"
ACME_COUNT = [
    Counted("100234", 1250, "L2611", "A-01-01"), Counted("100234", 40, "L2611", "A-01-02"),
    Counted("100234", 12, "L2702", "B-03-01"), Counted("100871", 8, "L2590", "C-02-04"),
    Counted("200110", 5, "", "D-01-01"), Counted("200111", 4, "", "D-01-02"),
    Counted("300500", 0, "", "E-05-01"), Counted("300501", 17, "", "E-05-02"),
    Counted("TEA-INF-SS-01-FBA", 120, "", "F-01-01"), Counted("900001", 5000, "", "Z-99-01"),
]


def demo_orders(now: datetime) -> list[dict]:
    """The seed, its update times moved to the last few hours so the bridge finds them, and each
    order's other times with them (none arrives overdue)."""
    seed = load_seed(SEED)
    return _times_moved_along(seed, rebase_last_updated(seed, now - timedelta(minutes=35)))


def fresh_orders(orders: list[dict], now: datetime) -> list[dict]:
    """`sandbox --fresh`: the orders' update times inside the first window of a bridge without
    orders.start (now - 60 min to now - 30 min by default), for a pull up to 5 minutes later.
    Each order's other times (created, ship by, deliver by) move with its update time, so that
    a fresh order is not already past its ship-by date."""
    return _times_moved_along(orders, spread_last_updated(orders, now - FRESH_SPREAD[0], now - FRESH_SPREAD[1]))


def _times_moved_along(before: list[dict], after: list[dict]) -> list[dict]:
    """`after` (copies of `before` with new update times), each order's other times moved by
    as much as its update time was."""
    for old, new in zip(before, after):
        _shift_times(new, parse_iso(new["lastUpdatedTime"]) - parse_iso(old["lastUpdatedTime"]))
    return after


def _shift_times(order: dict, by: timedelta) -> None:
    """Every ISO time in the order (but its lastUpdatedTime) moved by `by`, in place."""
    order["createdTime"] = iso_z(parse_iso(order["createdTime"]) + by)
    for window in ("shipByWindow", "deliverByWindow"):
        times = order.get("fulfillment", {}).get(window) or {}
        for key, value in times.items():
            if isinstance(value, str):
                times[key] = iso_z(parse_iso(value) + by)


def serve_sandbox(port: int, seed: Path | None, *, fresh: bool = False, rate_scale: float = 1.0) -> None:
    orders = load_seed(seed or SEED)
    if fresh:
        orders = fresh_orders(orders, datetime.now(timezone.utc))
    sandbox = SpApiSandbox(orders, port=port, rate_scale=rate_scale).start()
    print(f"SP-API sandbox on {sandbox.url} (LWA token URL {sandbox.token_url}); Ctrl-C stops it")
    if fresh:
        print("  --fresh: the orders were last updated 55 to 35 minutes ago: a bridge without orders.start"
              " (default window and lag) finds them if it pulls within 5 minutes")
    if rate_scale != 1:
        print(f"  rate limits: Amazon's usage plans x {rate_scale:g} (bursts unchanged)")
    print(f"  {len(orders)} orders; controls: POST {sandbox.url}/_sandbox/pii, /_sandbox/faults, /_sandbox/orders")
    serve_forever(sandbox)


def run_demo(workdir: Path) -> int:
    # The story below is the demo's output; the operator's log lines would tell it twice.
    configure_logging("WARNING")
    workdir = workdir.absolute()
    foreign = prepare_workdir(workdir)
    try:
        return _run(workdir)
    finally:
        _write_marker(workdir, foreign)


# --- the folder: only what the demo made is ever removed --------------------------------------

def prepare_workdir(workdir: Path) -> set[str]:
    """Make `workdir` ready for a demo and return what is in it that the demo did not make.

    A missing or empty folder is used as it is. A previous demo's folder loses what that demo
    made (its marker lists it) and keeps anything else. Anything else is refused (exit 2).
    """
    if workdir.exists() and not workdir.is_dir():
        raise FixTheSetup(f"{workdir} is not a folder: give --workdir a new or empty folder")
    if not workdir.exists():
        workdir.mkdir(parents=True)
    marker = workdir / MARKER
    if marker.is_file() and not marker.is_symlink():
        made = _made_by_previous_demo(workdir, marker)
        _remove_made(workdir, made)
        marker.unlink()
        foreign = _contents(workdir) - made
    elif any(workdir.iterdir()):
        raise FixTheSetup(
            f"{workdir} is not empty and is not a previous demo's folder: the demo deletes only what it"
            " made itself; give --workdir a new or empty folder (or empty this one yourself)"
        )
    else:
        foreign = set()
    _write_json(marker, {"fbm-bridge demo": 1, "finished": False, "kept": sorted(foreign)})
    return foreign


def _made_by_previous_demo(workdir: Path, marker: Path) -> set[str]:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        made = {str(p) for p in data["made"]} if data.get("finished") else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        made = None
    if made is None:
        raise FixTheSetup(
            f"{workdir}: the previous demo there did not finish, so what it made is not known"
            f" ({MARKER} incomplete); remove what you do not need yourself, or give --workdir another folder"
        )
    return {p for p in made if _inside(p)}


def _inside(relative: str) -> bool:
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts


def _remove_made(workdir: Path, made: set[str]) -> None:
    """Deepest first, folders only once empty: anything put inside a demo's folder by someone
    else stays, with the folders that hold it. Links are removed, never followed, also when a
    folder on the way was replaced by one."""
    for relative in sorted(made, key=lambda p: len(Path(p).parts), reverse=True):
        path = workdir / relative
        if any((workdir / above).is_symlink() for above in Path(relative).parents if above != Path(".")):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass  # a folder that still holds something the demo did not make


def _contents(workdir: Path) -> set[str]:
    """Every file, link and folder under `workdir`, relative, without following links."""
    found = set()
    for folder, dirs, files in os.walk(workdir):
        for name in [*dirs, *files]:
            found.add((Path(folder) / name).relative_to(workdir).as_posix())
    return found - {MARKER}


def _write_marker(workdir: Path, foreign: set[str]) -> None:
    made = _contents(workdir) - foreign
    _write_json(workdir / MARKER, {"fbm-bridge demo": 1, "finished": True, "made": sorted(made)})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


# --- the run --------------------------------------------------------------------------------

def _run(workdir: Path) -> int:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    clock = DemoClock(SPEED)
    start = clock()
    seed = demo_orders(start)
    (workdir / "sftp").mkdir(exist_ok=True)
    client_key = _client_key(workdir / "demo_ed25519")
    credentials = _write_credentials(credentials_of(workdir))
    with SpApiSandbox(seed, clock=clock) as sandbox, LocalSftpServer(
        workdir / "sftp", authorized_key=client_key, host_key=workdir / "sftp_host_ed25519"
    ) as sftpd:
        sftpd.write_known_hosts(workdir / "known_hosts")
        for name, _, _ in WAREHOUSES:
            for folder in ("in",) + (("out",) if name not in STAFF_FOLDER else ()) + (
                    ("stock",) if name == STOCK_WAREHOUSE else ()):
                (workdir / "sftp" / name / folder).mkdir(parents=True, exist_ok=True)
        config = _write_config(workdir, sandbox, sftpd.port, client_key, start)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        settings = load_settings(config, environ={**environ, "CREDENTIALS_DIRECTORY": str(credentials)})
        print(f"== fbm-bridge demo in {workdir}")
        print(f"SP-API sandbox {sandbox.url} holding {len(seed)} orders, SFTP server 127.0.0.1:{sftpd.port},"
              f" config {config}")
        _show_routing(settings)
        story = Story(settings, workdir, clock)
        try:
            with _daemon_log(workdir / DAEMON_LOG, clock, story.events), _scheduler_reads(clock):
                finished = _daemon_cycles(settings, config, clock, story)
        finally:
            story.close()
        fulfillments = list(sandbox.fulfillments)
        feeds = [feed for feed in sandbox.feeds.values() if feed["feedType"] == "JSON_LISTINGS_FEED"]
    orders = _readable(seed)
    delivered = _show_story(settings, seed, orders)
    _show_glimpses(settings, workdir / "sftp", delivered)
    _show_shipments(workdir, seed, story.dropped, fulfillments)
    _show_stock(workdir, story.stock_dropped, feeds)
    print("\n== fbm-bridge status\n" + format_status(status_report(settings, clock())))
    _show_afterwards(workdir, config, credentials, settings, delivered)
    return 0 if finished and not (story.errors or story.failures) else 1


class DemoClock:
    """The demo's time: it starts at the real time and runs `speed` times as fast."""

    def __init__(self, speed: float):
        self.speed = speed
        self.start = datetime.now(timezone.utc).replace(microsecond=0)
        self._began = time.monotonic()
        self._began_epoch = time.time()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._began) * self.speed)

    def at(self, epoch: float) -> datetime:
        """The demo's time at the real moment `epoch` (time.time())."""
        return self.start + timedelta(seconds=(epoch - self._began_epoch) * self.speed)


def _daemon_cycles(settings: Settings, config: Path, clock: DemoClock, story: "Story") -> bool:
    """The daemon runs until the story is told: the first pull delivered, the warehouses
    answered, every file they dropped answered, the stock published, and one more pull.
    Returns whether it got there."""
    daemon = _DaemonThread(settings, config, clock)
    story.started()
    daemon.start()
    try:
        if not story.follow(lambda: story.pulls >= 1, daemon):
            return False
        story.warehouses_answer()
        return story.follow(story.told, daemon)
    finally:
        story.say("the demo stops the daemon, as SIGTERM would: it finishes what it is doing and exits")
        daemon.stop()
        story.tell()
        story.stopped(daemon)


class _DaemonThread:
    """`run_daemon` in a thread (signal handlers stay the demo's: the flags stop it)."""

    def __init__(self, settings: Settings, config: Path, clock: DemoClock):
        self.flags = Flags()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(settings, config, clock),
                                        name="fbm-bridge daemon", daemon=True)

    def _run(self, settings: Settings, config: Path, clock: DemoClock) -> None:
        try:
            run_daemon(settings, config, flags=self.flags, now=clock, tick=TICK)
        except BaseException as problem:  # told by the demo, which then ends
            self.error = problem

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.flags.stop = True
        self._thread.join(PATIENCE)


@contextmanager
def _scheduler_reads(clock: DemoClock) -> Iterator[None]:
    """The daemon's scheduler (the `schedule` library) reads the time from
    datetime.datetime.now(); for the demo it reads the demo's clock, so each job comes round
    SPEED times as often as its interval says. Only this process, only while the demo runs."""
    import schedule

    real = schedule.datetime

    class DemoDatetime(real.datetime):
        @classmethod
        def now(cls, tz=None):
            moment = clock()
            return moment.astimezone(tz) if tz is not None else moment.astimezone().replace(tzinfo=None)

    schedule.datetime = types.SimpleNamespace(**{**vars(real), "datetime": DemoDatetime})
    try:
        yield
    finally:
        schedule.datetime = real


@contextmanager
def _daemon_log(path: Path, clock: DemoClock, events: "queue.Queue[logging.LogRecord]") -> Iterator[None]:
    """The daemon's log goes to `path` (times on the demo's clock), not to the terminal; every
    record is also handed to the story, which tells the steps in its own words."""
    to_file = logging.FileHandler(path, encoding="utf-8")
    formatter = OneLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = lambda epoch: clock.at(epoch).timetuple()
    to_file.setFormatter(formatter)
    to_story = _QueueHandler(events)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = [to_file, to_story]
    root.setLevel(logging.INFO)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers, level = saved
        root.setLevel(level)
        to_file.close()


class _QueueHandler(logging.Handler):
    def __init__(self, events: "queue.Queue[logging.LogRecord]"):
        super().__init__(logging.INFO)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        self.events.put(record)


def _write_credentials(folder: Path) -> Path:
    """The demo's secrets, kept so its folder stays usable (`spool open` needs the state key)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    for name in SECRET_NAMES:
        value = new_key() if name == STATE_KEY else f"demo-{secrets.token_hex(8)}"
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(value + "\n")
    return folder


def _client_key(path: Path) -> Path:
    key = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
    if key is None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        path.write_bytes(pem)
    else:
        key.write_private_key_file(str(path))
    path.chmod(0o600)
    return path


def _write_config(workdir: Path, sandbox: SpApiSandbox, port: int, key: Path, now: datetime) -> Path:
    blocks = []
    for name, mapping, countries in WAREHOUSES:
        blocks.append(
            f"""[[warehouses]]
name = "{name}"
mapping = {_toml(shipped_mappings() / (mapping + '.toml'))}
host = "127.0.0.1"
port = {port}
username = "demo"
known_hosts = {_toml(workdir / 'known_hosts')}
private_key = {_toml(key)}
orders_folder = "/{name}/in"
ship_to_countries = {json.dumps(countries)}
{_confirmations_from(workdir, name)}
{_stock_from(name)}"""
        )
    text = f"""# Written by `fbm-bridge demo`: the sandbox and SFTP server it started are gone once it ends.
# Its secrets are in credentials/ (CREDENTIALS_DIRECTORY=credentials for `spool open`).
# The intervals are the shortest the config allows: the demo ran the daemon on a clock {SPEED:g} times as fast.
[bridge]
state_dir = {_toml(workdir / 'state')}

[amazon]
seller_id = "A3DEMOSELLER"
endpoint = "{sandbox.url}"
token_url = "{sandbox.token_url}"
marketplaces = {json.dumps(MARKETPLACES)}

[orders]
start = "{iso_z(now - timedelta(hours=4))}"   # catch up over the demo orders' last hours
interval_minutes = {ORDERS_EVERY}

[shipments]
poll_seconds = 60
rescan_minutes = 1

[stock]
warehouse = "{STOCK_WAREHOUSE}"
publish_at = "{publish_time(now):%H:%M}"   # {STOCK_ZONE} time, a few minutes (of the demo's clock) after it started
timezone = "{STOCK_ZONE}"
poll_minutes = 1

{chr(10).join(blocks)}"""
    path = workdir / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def publish_time(start: datetime) -> datetime:
    """The demo's daily stock publish: the first whole minute PUBLISH_AFTER after the start,
    in the stock's time zone."""
    moment = (start + PUBLISH_AFTER).astimezone(ZoneInfo(STOCK_ZONE))
    return moment.replace(second=0, microsecond=0) + (timedelta(minutes=1) if moment.second or moment.microsecond
                                                      else timedelta())


def _toml(path: Path) -> str:
    """A path as a TOML string: JSON's escapes are TOML's (a folder may hold '"' or '\\')."""
    return json.dumps(str(path))


def _confirmations_from(workdir: Path, name: str) -> str:
    if name in STAFF_FOLDER:
        return f'local_shipments_folder = {_toml(workdir / "drop" / name)}   # staff drop confirmation files here'
    return f'shipments_folder = "/{name}/out"   # the WMS drops confirmation files here'


def _stock_from(name: str) -> str:
    return f'stock_folder = "/{name}/stock"   # the WMS drops its nightly stock count here\n' \
        if name == STOCK_WAREHOUSE else ""


# --- the daemon's cycles, told as they happen -------------------------------------------------

class Story:
    """Tells what the daemon does, one short line per step, from what its flows log (each run's
    `key=value` summary) and what the ledger and the folders show; plays the warehouses."""

    def __init__(self, settings: Settings, workdir: Path, clock: DemoClock):
        self.settings = settings
        self.workdir = workdir
        self.clock = clock
        self.events: queue.Queue[logging.LogRecord] = queue.Queue()
        self.pulls = 0
        self.errors: list[str] = []  # what the daemon logged as errors
        self.warnings: list[str] = []
        self.failures: list[str] = []  # why the story could not be told to its end
        self.dropped: list[tuple[str, str, int]] = []  # (warehouse, path in the folder, orders)
        self.stock_dropped: str | None = None  # path in the folder
        self._answered: set[str] = set()
        self._files_seen: set[int] = set()
        self._settling_told = False
        self._ledger: Ledger | None = None
        self._began = time.monotonic()

    # -- telling ----------------------------------------------------------------------------

    def say(self, line: str, *more: str) -> None:
        print(f"[{self.clock():%H:%M:%S}] {line}")
        for each in more:
            print(f"             {each}")
        sys.stdout.flush()

    def started(self) -> None:
        stock = self.settings.stock
        next_publish = next_daily(self.clock(), stock.publish_at, stock.zone)
        print(f"\n== the daemon, cycle by cycle (the demo's clock runs {SPEED:g} times as fast: a minute passes"
              f" every second; times are UTC; the daemon's own log: {DAEMON_LOG})")
        self.say(f"the daemon starts: orders pulled every {ORDERS_EVERY} min, SFTP shipments folders polled every"
                 f" {int(self.settings.shipments.poll.total_seconds())} s, the staff folder watched, {stock.warehouse}'s"
                 f" stock folder polled every {int(self.settings.stock.poll.total_seconds() // 60)} min, the stock"
                 f" published daily at {stock.publish_at:%H:%M} {stock.timezone}"
                 f" ({next_publish.astimezone(timezone.utc):%H:%M} UTC)")

    def stopped(self, daemon: _DaemonThread) -> None:
        if daemon.error is not None:
            self.failures.append(f"the daemon failed: {daemon.error}")
            self.say(f"the daemon failed: {daemon.error}")
        elif daemon.alive:
            self.failures.append("the daemon did not stop")
            self.say("the daemon did not stop in time")
        else:
            self.say("the daemon stopped")
        log = self.workdir / DAEMON_LOG
        lines = len(log.read_text("utf-8").splitlines()) if log.is_file() else 0
        problems = [f"WARNING {line}" for line in self.warnings] + [f"ERROR {line}" for line in self.errors]
        print(f"its log, {DAEMON_LOG}: {_count(lines, 'line')} (one per event, a key=value summary per run),"
              f" {_count(len(self.warnings), 'warning')}, {_count(len(self.errors), 'error')}")
        for line in problems:
            print(f"  {line}")

    def follow(self, until: Callable[[], bool], daemon: _DaemonThread) -> bool:
        """Tells the daemon's steps as they come until `until()` holds; False if the daemon
        stopped or the demo ran out of patience first."""
        while True:
            self.tell()
            if until():
                return True
            if self.failures:
                return False
            if not daemon.alive:
                self.failures.append("the daemon stopped before the story was told")
                self.say(f"the daemon stopped early: see {DAEMON_LOG}")
                return False
            if time.monotonic() - self._began > PATIENCE:
                self.failures.append("the daemon did not finish the story in time")
                self.say(f"the demo gives up waiting: the daemon has not finished the story; see {DAEMON_LOG}")
                return False
            time.sleep(TICK)

    def tell(self) -> None:
        while True:
            try:
                record = self.events.get_nowait()
            except queue.Empty:
                return
            self._told(record)

    def _told(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.errors.append(message)
        elif record.levelno >= logging.WARNING:
            self.warnings.append(message)
        values = {key: value.rstrip(":") for key, value in re.findall(r"(\w+)=('[^']*'|\S+)", message)}
        if message.startswith("job=orders ") and "windows=" in message:  # the service's line per run
            self._pulled(values)
        elif message.startswith("job=shipments-") and " files=" in message:
            self._shipments_pass(values)
        elif message.startswith("stock file received"):
            self.say(f"stock: the daemon took {_unquoted(values.get('file', '?'))} in ({values.get('rows', '?')} rows);"
                     f" it waits in processing/ for the daily publish")
        elif message.startswith("stock publish: "):
            self.failures.append("the stock publish came before the stock file was taken in")
            self.say(f"stock: the daily publish found no stock file: {message.split(': ', 1)[1]}")
        elif message.startswith("stock publish scheduled"):
            pass  # told when the daemon started
        elif message.startswith("stock publish due="):
            self.say(f"stock: the daily publish is due ({self.settings.stock.publish_at:%H:%M} {self.settings.stock.timezone}):"
                     " the newest stock file goes to Amazon as a JSON_LISTINGS_FEED")
        elif message.startswith("stock file="):
            self._stock_outcome(values)

    def _pulled(self, values: dict[str, str]) -> None:
        self.pulls += 1
        window = values.get("window", "-")
        span = "-" if window == "-" else " to ".join(f"{datetime.fromisoformat(edge.replace('Z', '+00:00')):%H:%M}"
                                                     for edge in window.split("/"))
        windows = int(values.get("windows", 0))
        pulled = f"{windows} window{'s' if windows != 1 else ''} ({span})" if windows else "no new window yet"
        delivered = int(values.get("delivered", 0))
        if delivered:
            files = self._new_files()
            self.say(f"orders pull: {pulled}, {values.get('pulled')} orders from Amazon: {delivered} delivered in"
                     f" {len(files)} file{'s' if len(files) != 1 else ''} to the warehouses' SFTP drops",
                     *[f"sftp/{stored.warehouse}/in/{stored.name}" for stored in files])
        else:
            self.say(f"orders pull: {pulled}: nothing new, nothing sent (an order already delivered is never sent again)")
        if values.get("errors", "0") != "0":
            self.say(f"  orders pull errors={values['errors']}: see {DAEMON_LOG}")

    def _new_files(self) -> list[StoredFile]:
        ledger = self._reader()
        if ledger is None:
            return []
        files = [stored for stored in ledger.files_in(FileStatus.DELIVERED) if stored.id not in self._files_seen]
        self._files_seen.update(stored.id for stored in files)
        return files

    def _shipments_pass(self, values: dict[str, str]) -> None:
        if int(values.get("settling", 0)) and not self._settling_told:
            self._settling_told = True
            seconds = int(self.settings.shipments.stable.total_seconds())
            self.say(f"shipments: the daemon sees new confirmation files; it takes a file once two looks {seconds} s"
                     " apart find it unchanged")
        if not int(values.get("answered", 0)):
            return
        lines = []
        local = values.get("job") == "shipments-local"  # each job answers its own source's files
        for _, path, _ in self.dropped:
            ended = self._ended(path)
            if ended and path not in self._answered and (not path.startswith("sftp/")) == local:
                self._answered.add(path)
                lines.append(f"{path} -> {ended}/, answered in {_result_path(path)}")
        answered, confirmed = int(values["answered"]), int(values.get("confirmed", 0))
        self.say(f"shipments: {_count(answered, 'confirmation file')} taken: {_count(confirmed, 'package')}"
                 f" confirmed on Amazon, {values.get('amazon_refused', 0)} refused by Amazon,"
                 f" {values.get('rows_rejected', 0)} rows rejected by the bridge", *lines)

    def _stock_outcome(self, values: dict[str, str]) -> None:
        name, status = _unquoted(values.get("file", "?")), values.get("status", "?")
        if status == "submitting":
            self.say(f"stock: {name} {_unquoted(values.get('reason', ''))}: {values.get('skus')} SKUs sent to Amazon in"
                     f" {values.get('documents')} feed document; the daemon asks Amazon about it every minute")
        elif status == "published":
            lines = [f"answered in {_result_path(self.stock_dropped)}"] if self.stock_dropped else []
            self.say(f"stock: Amazon processed the feed: {name} published, {values.get('skus')} SKUs,"
                     f" {values.get('amazon_errors')} refused by Amazon, {values.get('bad_rows')} bad rows", *lines)
        else:
            self.say(f"stock: {name} {status}: {_unquoted(values.get('reason', ''))}")

    # -- the warehouses ----------------------------------------------------------------------

    def warehouses_answer(self) -> None:
        """ACME's system drops its stock count (first: it must be taken in before the publish),
        then each warehouse's system ships every order it got (one parcel per order, all its
        lines) and drops a confirmation file in its format."""
        for warehouse in self.settings.warehouses:
            if warehouse.name == STOCK_WAREHOUSE:
                self._count_stock(warehouse)
        ledger = Ledger(self.settings.ledger_path, Sealer(self.settings.state_key))  # beside the daemon's
        try:
            for warehouse in self.settings.warehouses:
                self._ship(ledger, warehouse)
        finally:
            ledger.close()

    def _ship(self, ledger: Ledger, warehouse: WarehouseSettings) -> None:
        if warehouse.local_shipments_folder is not None:
            warehouse.local_shipments_folder.mkdir(parents=True, exist_ok=True)
            drop, folder = FolderDrop(warehouse.local_shipments_folder), "/"
            shown = warehouse.local_shipments_folder.relative_to(self.workdir).as_posix()
            who, where = f"{warehouse.name}'s staff", "a staff folder on this machine"
        else:
            drop, folder = SftpDrop(warehouse.sftp), warehouse.shipments_folder
            shown, who, where = f"sftp{warehouse.shipments_folder}", f"{warehouse.name}'s WMS", "its SFTP shipments folder"
        with drop:
            name = confirm_delivered(ledger, warehouse, drop, folder, self.clock())
        if name:
            orders = sum(1 for o in ledger.orders_in(OrderStatus.DELIVERED) if o.warehouse == warehouse.name)
            self.dropped.append((warehouse.name, f"{shown}/{name}", orders))
            self.say(f"{who} shipped {orders} order{'s' if orders != 1 else ''} and dropped a confirmation file in {where}:",
                     f"{shown}/{name}")

    def _count_stock(self, warehouse: WarehouseSettings) -> None:
        now = self.clock()
        name = f"BESTAND_{now.astimezone(ZoneInfo(STOCK_ZONE)):%Y%m%d}.csv"
        with SftpDrop(warehouse.sftp) as drop:
            drop_stock(warehouse, ACME_COUNT, drop, warehouse.stock_folder, now, name=name)
        self.stock_dropped = f"sftp{warehouse.stock_folder}/{name}"
        self.say(f"{warehouse.name}'s WMS counted its stock ({len(ACME_COUNT)} lines: lots and bins, its own article"
                 " numbers) and dropped it in its SFTP stock folder:", self.stock_dropped)

    # -- where things are ----------------------------------------------------------------------

    def told(self) -> bool:
        """Every file the warehouses dropped is answered, and a pull came after the first."""
        dropped = [path for _, path, _ in self.dropped] + ([self.stock_dropped] if self.stock_dropped else [])
        return self.pulls >= 2 and all(self._ended(path) for path in dropped) and self.stock_published()

    def stock_published(self) -> bool:
        ledger = self._reader()
        report = ledger.stock_report(self.settings.stock.warehouse) if ledger is not None else {}
        return bool(report.get("last_published"))

    def _ended(self, path: str) -> str | None:
        """Where a dropped file went once answered: archive or error (None: not yet)."""
        folder, name = (self.workdir / path).parent, Path(path).name
        return next((sub for sub in ("archive", "error") if (folder / sub / name).is_file()), None)

    def _reader(self) -> Ledger | None:
        """The ledger beside the daemon, without a key (statuses, files; no buyer data)."""
        if self._ledger is None and self.settings.ledger_path.exists():
            self._ledger = Ledger(self.settings.ledger_path, None)
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'s' if number != 1 else ''}"


def _unquoted(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == "'" else value


def _result_path(path: str) -> str:
    from bridge.formats.inbound import result_name

    return (Path(path).parent / "results" / result_name(Path(path).name)).as_posix()


# --- shipments up and stock up: what the sandbox received, and the answers -------------------

def _show_shipments(workdir: Path, seed: list[dict], dropped: list[tuple[str, str, int]],
                    fulfillments: list[dict]) -> None:
    skus = {item["orderItemId"]: item["product"].get("sellerSku", "") for raw in seed
            for item in raw.get("orderItems", [])}
    print("\n== fulfillments the SP-API sandbox received (by confirmShipment, the default; with"
          " shipments.send = \"feed\" they go as one order fulfillment feed per run; packageReferenceId is the"
          " bridge's package id)")
    for taken in fulfillments:
        carrier = taken["carrierCode"] + (f" {taken['carrierName']!r}" if taken["carrierName"] else "")
        method = f" ({taken['shippingMethod']})" if taken["shippingMethod"] else ""
        items = ", ".join(f"{skus.get(line['orderItemId']) or line['orderItemId']} x{line['quantity']}"
                          for line in taken["orderItems"])
        print(f"  {taken['orderId']}  package {taken['packageReferenceId']}  {carrier}{method}"
              f"  tracking {taken['trackingNumber']}  {items}  by {taken['via']}")
    _show_results(workdir, dropped, seed)


def _show_results(workdir: Path, dropped: list[tuple[str, str, int]], seed: list[dict]) -> None:
    print("\n== result files: every row answered, in the folder the file came from")
    refused: set[str] = set()
    for _, path, _ in dropped:
        for line in _show_result(workdir, path):
            if ";rejected;" in line or ",rejected," in line:
                refused.update(raw["orderId"] for raw in seed if raw["orderId"] in line)
    for raw in seed:
        if raw["orderId"] in refused and raw.get("fulfillment", {}).get("fulfillmentStatus") == "PARTIALLY_SHIPPED":
            by_hand = ", ".join(item["product"].get("sellerSku", item["orderItemId"]) for item in raw["orderItems"]
                                if item.get("fulfillment", {}).get("quantityFulfilled"))
            print(f"  why {raw['orderId']} was refused: the seller had shipped {by_hand} by hand before the bridge"
                  " delivered the order (Amazon had it PARTIALLY_SHIPPED), and the warehouse shipped the whole"
                  " order; the result file gives Amazon's words, and `status` keeps the order listed until"
                  " someone settles it")


def _show_result(workdir: Path, path: str) -> list[str]:
    """Prints a dropped file's result file (and where the file went); returns its lines."""
    folder, name = (workdir / path).parent, Path(path).name
    result = workdir / _result_path(path)
    ended = next((sub for sub in ("archive", "error") if (folder / sub / name).is_file()), "processing")
    print(f"  {result.relative_to(workdir).as_posix()}  (the file went to {ended}/)")
    if not result.is_file():
        return []
    lines = result.read_text("utf-8-sig").splitlines()
    for line in lines:
        print(f"    {line}")
    return lines


def _show_stock(workdir: Path, dropped: str | None, feeds: list[dict]) -> None:
    print("\n== the inventory feed the SP-API sandbox received (JSON_LISTINGS_FEED: per SKU one PATCH of"
          " fulfillment_availability, merged so a restock date set in Seller Central stays)")
    for feed in feeds:
        document = json.loads(feed["document"])
        print(f"  feed {feed['feedId']}  {feed['status']}  marketplace {', '.join(feed['marketplaceIds'])}"
              f"  {len(document.get('messages', []))} messages")
        for message in document.get("messages", []):
            availability = message["patches"][0]["value"][0]
            handling = availability.get("lead_time_to_ship_max_days")
            print(f"    {message['sku']:18} quantity {availability['quantity']}"
                  + (f"  ships within {handling} days" if handling else ""))
    print("  from ACME's count: the three lots of article 100234 summed into MUG-CER-350-BLU, articles 200110 and"
          " 200111 both KAN-GLAS-1L (mappings/acme-skus.csv), the mapping's buffer held back (1 unit, 3 of"
          " KAN-GLAS-1L); TEA-INF-SS-01-FBA left alone (Amazon ships it), article 900001 is packaging (no seller"
          " SKU): neither is sent")
    if dropped:
        print("\n== the stock file's result file: the verdict, then every problem by row (the file's and Amazon's)")
        _show_result(workdir, dropped)


# --- the story ------------------------------------------------------------------------------

def _show_routing(settings: Settings) -> None:
    print("\n== routing: each order goes to the first warehouse that takes its ship-to country")
    for warehouse in settings.warehouses:
        countries = ", ".join(warehouse.ship_to_countries) or "every other country (the catch-all)"
        layout = warehouse.mapping.orders
        print(f"  {warehouse.name:8} ship-to {countries:36} mapping {warehouse.mapping.name} ({layout.format})")


def _readable(seed: list[dict]) -> dict[str, Order | str]:
    """The seed's orders as records, or why one cannot be read."""
    orders: dict[str, Order | str] = {}
    for raw in seed:
        try:
            orders[raw["orderId"]] = order_from_v2026(raw)
        except BadRecord as problem:
            orders[raw["orderId"]] = str(problem)
    return orders


def _show_story(settings: Settings, seed: list[dict], orders: dict[str, Order | str]) -> dict[StoredFile, list[str]]:
    """Which file carries which order, why it went there, and why the others were not sent.
    Returns each delivered file with its order ids."""
    ledger = Ledger(settings.ledger_path, None)  # reads statuses and files, no buyer data
    try:
        rows = {raw["orderId"]: ledger.order_row(raw["orderId"]) for raw in seed}
        files = {stored.id: stored for stored in ledger.files_in(FileStatus.DELIVERED)}
    finally:
        ledger.close()
    delivered: dict[StoredFile, list[str]] = {}
    position = {warehouse.name: index for index, warehouse in enumerate(settings.warehouses)}
    for order_id, row in sorted(rows.items(), key=lambda item: _file_order(item[1], files, position)):
        if row and row["status"] == OrderStatus.DELIVERED and row["file_id"] in files:
            delivered.setdefault(files[row["file_id"]], []).append(order_id)

    print("\n== files delivered to the warehouses' SFTP drops, and the orders each carries")
    for stored, order_ids in delivered.items():
        print(f"  {stored.warehouse}/in/{stored.name} ({stored.size} bytes): {', '.join(sorted(order_ids))}")

    print("\n== why each order went where it went")
    for order_ids in delivered.values():
        for order_id in sorted(order_ids):
            order = orders[order_id]
            if isinstance(order, Order):
                print(f"  {order_id}  {_why_there(order, settings)}")

    print("\n== orders not sent, and why")
    sent = {order_id for order_ids in delivered.values() for order_id in order_ids}
    for raw in seed:
        order_id = raw["orderId"]
        if order_id not in sent:
            print(f"  {order_id}  {_why_not_sent(raw, orders[order_id], rows[order_id], settings)}")
    return delivered


def _file_order(row: dict | None, files: dict[int, StoredFile], position: dict[str, int]) -> tuple:
    stored = files.get(row["file_id"]) if row else None
    return (position.get(stored.warehouse, len(position)), stored.name) if stored else (len(position) + 1, "")


def _why_there(order: Order, settings: Settings) -> str:
    passed: list[WarehouseSettings] = []
    for warehouse in settings.warehouses:
        if warehouse.takes(order.country_code, order.marketplace_id):
            if warehouse.ship_to_countries:
                rule = f"{warehouse.name} takes {', '.join(warehouse.ship_to_countries)}"
            else:
                rule = f"{warehouse.name} takes every country: the catch-all"
            before = (f"{' and '.join(w.name for w in passed)} {'do' if len(passed) > 1 else 'does'} not take"
                      f" {order.country_code}; " if passed else "")
            return f"ship-to {order.country_code} -> {warehouse.name:8} {before}{rule}"
        passed.append(warehouse)
    return f"ship-to {order.country_code}: no warehouse takes it"


def _why_not_sent(raw: dict, order: Order | str, row: dict | None, settings: Settings) -> str:
    """From the ledger when the bridge kept the order; else from what Amazon holds (the seed)."""
    if row is not None:
        return f"{row['status']}: {row['reason'] or row['amazon_status']}"
    if raw.get("fulfillment", {}).get("fulfilledBy") != "MERCHANT":
        return "fulfilled by Amazon (FBA): Amazon ships it, so the bridge never asks for it"
    if isinstance(order, str):
        return f"Amazon's data cannot be read: {order}"
    asked = (*settings.orders.statuses, "CANCELLED")
    if order.status not in asked:
        return (f"{order.status} on Amazon: never asked for (the bridge asks for"
                f" {', '.join(settings.orders.statuses)}, and CANCELLED to notice cancellations)")
    observation = decide(order, settings)
    if observation.status == OrderStatus.CANCELLED:
        return "CANCELLED on Amazon before it was sent: pulled, never sent, nothing kept"
    return f"{observation.status}: {observation.reason or 'not in the windows pulled'}"


def _show_glimpses(settings: Settings, drops: Path, delivered: dict[StoredFile, list[str]]) -> None:
    """The first lines of one file of each format, read as the warehouse reads it."""
    formats = {w.name: w.mapping.orders for w in settings.warehouses}
    shown: set[str] = set()
    for stored in delivered:
        warehouse, name = stored.warehouse, stored.name
        layout = formats[warehouse]
        path = drops / warehouse / "in" / name
        if layout.format in shown or not path.is_file():
            continue
        shown.add(layout.format)
        if layout.format == "xlsx":
            print(f"\n== {warehouse}/in/{name}: first rows of sheet {layout.sheet!r}, read back with openpyxl")
            print("\n".join(_xlsx_rows(path.read_bytes())))
        else:
            print(f"\n== {warehouse}/in/{name}: first lines ({layout.encoding}, as {warehouse}'s system reads it)")
            lines = path.read_bytes().decode(layout.encoding).splitlines()
            print("\n".join(lines[:GLIMPSE_LINES]) + (f"\n... ({len(lines)} lines)" if len(lines) > GLIMPSE_LINES else ""))


def _xlsx_rows(data: bytes, limit: int = 3) -> list[str]:
    from openpyxl import load_workbook

    workbook = load_workbook(io.BytesIO(data), read_only=True)
    try:
        rows = workbook.active.iter_rows(max_row=limit, values_only=True)
        return [" | ".join("" if cell is None else str(cell) for cell in row) for row in rows]
    finally:
        workbook.close()


def _show_afterwards(workdir: Path, config: Path, credentials: Path, settings: Settings,
                     delivered: dict[StoredFile, list[str]]) -> None:
    command = f"{_command()} --config {shlex.quote(str(config))}"
    print(f"\n== where things are: the sandbox and SFTP server are gone, everything else stays in {workdir}")
    for where, what in _where_things_are(workdir, settings):
        print(f"  {where:32} {what}")
    print("Try:")
    print(f"  {command} status")
    if delivered:
        stored, order_ids = next(iter(delivered.items()))
        spooled = settings.spool_dir / stored.spool_path
        print(f"  {command} status --order {sorted(order_ids)[0]}")
        print(f"  CREDENTIALS_DIRECTORY={shlex.quote(str(credentials))} {command} spool open {shlex.quote(str(spooled))}"
              f" > {shlex.quote(stored.name)}")
        print(f"    (status needs no secret; spool open needs the state key in {credentials.name}/ and writes the"
              " file byte for byte as it was delivered)")
    print(f"  CREDENTIALS_DIRECTORY={shlex.quote(str(credentials))} {command} report"
          f" --out {shlex.quote(str(workdir / 'report.xlsx'))}")
    print("    (the reconciliation workbook for staff: orders downloaded, delivered, shipped, confirmed; rejected rows;"
          " the inventory feeds)")
    print(f"A re-run removes only what the demo made (listed in {MARKER}); anything else in the folder stays.")


def _where_things_are(workdir: Path, settings: Settings) -> list[tuple[str, str]]:
    answered = "answered files in archive/ or error/, the answers in results/"
    shown = lambda folder: f"{Path(folder).relative_to(workdir).as_posix()}/"  # noqa: E731
    found = [("bridge.toml", "the config (the shortest intervals it allows: the demo's clock ran"
                             f" {SPEED:g} times as fast)"),
             (DAEMON_LOG, "the daemon's log: one line per event, a key=value summary per run, no buyer data"),
             ("sftp/<warehouse>/in/", "the order files delivered: the warehouses' SFTP drops")]
    for warehouse in settings.warehouses:
        if warehouse.shipments_folder:
            found.append((f"sftp{warehouse.shipments_folder}/", f"{warehouse.name}'s confirmation files: {answered}"))
        if warehouse.local_shipments_folder is not None:
            found.append((shown(warehouse.local_shipments_folder),
                          f"{warehouse.name}'s staff folder for confirmation files: {answered}"))
        if warehouse.stock_folder:
            found.append((f"sftp{warehouse.stock_folder}/", f"{warehouse.name}'s stock files: {answered}"))
    found += [(shown(settings.state_dir), "the state folder: the ledger (ledger.sqlite), the sealed copy of every"
                                          " file delivered (spool/) and taken in (inbound/), backups/"),
              (shown(credentials_of(workdir)), "the demo's secrets, the state key among them: it seals the buyer"
                                               " data, keep it with the folder")]
    return found


def credentials_of(workdir: Path) -> Path:
    return workdir / "credentials"


def _command() -> str:
    """How to call the bridge from a shell: the console script if there is one, else python -m."""
    script = Path(sys.executable).parent / "fbm-bridge"
    if script.is_file():
        found = shutil.which("fbm-bridge")
        return "fbm-bridge" if found and Path(found).resolve() == script.resolve() else shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m bridge"
