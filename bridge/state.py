"""The state folder: the ledger, the spool, backups, the lock, and the marker of its use.

    state_dir/                       0700: the service's user only
      ledger.sqlite (-wal, -shm)     0600  every order and file (bridge.ledger)
      bridge.lock                    0600  held by the one process that may change the state
      state.json                     0600  written at first use: the state's id, and how far its
                                           ledger had come at the end of the last run
      spool/<warehouse>/NAME         0700 folders, 0600 files sealed with BRIDGE_STATE_KEY
      backups/ledger-YYYYMMDD.sqlite 0600  a daily copy of the ledger, the last retention.backups

Why the marker: a ledger that is missing, empty, older than the folder's last run, or another
state's would make the bridge pull and send again orders it already sent. A folder that was used
before (marker, spool files or backups) refuses such a ledger until a person confirms:
`fbm-bridge fresh-start --from TIME` or `fbm-bridge accept-restore`.

Key rotation (`rekey`) is crash-safe: the rotation is recorded in the ledger first; while it is
unfinished nothing but `rekey` opens the state, and `rekey` accepts both keys; every record and
file is resealed whole (one transaction, or one atomic file replace); the check value is swapped
last, in one transaction. Run again after a crash, it finishes the job.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pwd
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from bridge.config import Settings
from bridge.edges.folders import make_private_dir, write_atomic
from bridge.errors import FixTheSetup, StateKeyMismatch, StateNotConfirmed, StateUnusable
from bridge.ledger import Ledger, key_mismatch_message
from bridge.records import iso_z, utc

if TYPE_CHECKING:  # `status` reads the state without cryptography
    from bridge.sealing import Resealer, Sealer

log = logging.getLogger("bridge.state")

MARKER = "state.json"
LOCK = "bridge.lock"
BACKUPS = "backups"
FILE_MODE = 0o600


# --- the folder and its lock ---------------------------------------------------------------

def prepare(settings: Settings) -> None:
    """Create the state folder and the spool folders (0700); refuse a folder this user cannot
    write, before anything else happens."""
    folder = settings.state_dir
    usable_folder(folder)
    try:
        make_private_dir(settings.spool_dir)
        for warehouse in settings.warehouses:
            make_private_dir(settings.spool_dir / warehouse.name)
    except OSError as problem:
        raise StateUnusable(_folder_problem(folder, problem)) from None


def usable_folder(folder: Path) -> None:
    """The state folder exists (0700) and this user can write in it, or StateUnusable."""
    try:
        make_private_dir(folder)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
    except OSError as problem:
        raise StateUnusable(_folder_problem(folder, problem)) from None


def _folder_problem(folder: Path, problem: OSError) -> str:
    where = Path(problem.filename) if problem.filename else folder
    if where.exists() and not where.is_dir():
        why = f"{where} is a file, not a folder"
    else:
        why = f"{where}: {problem.strerror or problem}"
    return (f"cannot use the state folder {folder}: {why}; bridge.state_dir must be a folder that"
            f" {_user()} can write")


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """The exclusive lock of the one process that may change the state (`bridge.lock`, 0600)."""
    path = state_dir / LOCK
    usable_folder(state_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as problem:
        raise StateUnusable(_lock_problem(path, problem)) from None
    try:
        _make_mode(fd, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FixTheSetup(
                f"another bridge process is using {state_dir} (lock file {path});"
                " stop it first (systemctl stop fbm-bridge)"
            ) from None
        _write_pid(fd)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_problem(path: Path, problem: OSError) -> str:
    why = f"cannot open the lock file {path}: {problem.strerror or problem}"
    if problem.errno not in (errno.EACCES, errno.EPERM):
        return f"{why}; remove it (the bridge creates it)"
    try:
        why += f" (it belongs to {_user(path.lstat().st_uid)})"
    except OSError:
        pass
    return f"{why}; run the bridge as the service's user (sudo -u fbm-bridge ...), whose state folder it must be"


def _write_pid(fd: int) -> None:
    try:  # for a person looking at the file; a full disk must not stop the lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass


def _make_mode(fd: int, mode: int) -> None:
    info = os.fstat(fd)
    if info.st_mode & 0o777 != mode and info.st_uid == os.geteuid():
        os.fchmod(fd, mode)


def _user(uid: int | None = None) -> str:
    uid = os.geteuid() if uid is None else uid
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


# --- the marker: was this folder used, and how far had its ledger come ----------------------

@dataclass(frozen=True)
class Marker:
    state_id: str
    progress: int  # Ledger.progress() at the end of the last run


def read_marker(state_dir: Path) -> Marker | None:
    path = state_dir / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Marker(str(data["state_id"]), int(data["progress"]))
    except FileNotFoundError:
        return None
    except OSError as problem:
        raise StateUnusable(f"cannot read {path}: {problem.strerror or problem}") from None
    except (ValueError, KeyError, TypeError):
        raise StateUnusable(
            f"{path} is damaged; if the ledger beside it is the right one, delete {path} and run"
            " again (a new one is written)"
        ) from None


def write_marker(state_dir: Path, marker: Marker, now: datetime) -> None:
    text = json.dumps({
        "state_id": marker.state_id,
        "progress": marker.progress,
        "updated_at": iso_z(now),
        "about": "written by fbm-bridge: this state folder was used; see README, Operations",
    }, indent=2)
    path = state_dir / MARKER
    try:
        write_atomic(path, text.encode("utf-8") + b"\n")
    except OSError as problem:
        raise StateUnusable(f"cannot write {path}: {problem.strerror or problem}") from None


def evidence_of_use(settings: Settings) -> list[str]:
    """What shows the folder was used before: the marker, spool files, backups."""
    found = []
    if (settings.state_dir / MARKER).exists():
        found.append(MARKER)
    spooled = len(spool_files(settings))
    if spooled:
        found.append(f"{spooled} spool file(s)")
    backups = len(list_backups(settings))
    if backups:
        found.append(f"{backups} backup(s)")
    return found


def spool_files(settings: Settings) -> list[Path]:
    spool = settings.spool_dir
    return sorted(p for p in spool.glob("*/*") if p.is_file()) if spool.is_dir() else []


@dataclass(frozen=True)
class Identity:
    """What opening the state found: `state_id` to keep, and whether the ledger and the marker
    must be given it (a new state, or one made before states had ids)."""

    state_id: str
    new: bool
    record: bool


def check_identity(settings: Settings) -> Identity:
    """Refuse a ledger that would make the bridge send orders again (StateNotConfirmed)."""
    path = settings.ledger_path
    marker = read_marker(settings.state_dir)
    if not path.exists():
        _refuse_if_used(settings, "is missing")
        return Identity(_new_id(), new=True, record=True)
    ledger = Ledger(path, None)
    try:
        ledger_id, empty, progress = ledger.state_id(), ledger.is_empty(), ledger.progress()
    finally:
        ledger.close()
    if ledger_id is None and empty:
        _refuse_if_used(settings, "is empty")
        return Identity(_new_id(), new=True, record=True)
    if marker is None:
        return Identity(ledger_id or _new_id(), new=False, record=True)
    if ledger_id is not None and ledger_id != marker.state_id:
        raise StateNotConfirmed(
            f"the ledger {path} belongs to another state (id {ledger_id}; this folder's is"
            f" {marker.state_id}). Running would send orders again that this folder already sent."
            " If this ledger is the right one, confirm with `fbm-bridge accept-restore`"
        )
    if progress < marker.progress:
        raise StateNotConfirmed(
            f"the ledger {path} is older than this state folder's last run (it has {progress} events,"
            f" the folder saw {marker.progress}): was a backup restored? Orders delivered after that"
            " backup would be sent again. Check with the warehouse, then confirm with"
            " `fbm-bridge accept-restore`"
        )
    return Identity(marker.state_id, new=False, record=ledger_id is None)


def _refuse_if_used(settings: Settings, what: str) -> None:
    evidence = evidence_of_use(settings)
    if evidence:
        raise StateNotConfirmed(
            f"the ledger {settings.ledger_path} {what}, but {settings.state_dir} was used before"
            f" ({', '.join(evidence)}): running would pull and send orders again. Restore the newest"
            " backup (README: Operations, Backups), or start afresh with"
            " `fbm-bridge fresh-start --from TIME`"
        )


def identity_problem(settings: Settings) -> str | None:
    """For `status`: why a run would refuse this state, or None. Reads only."""
    try:
        check_identity(settings)
    except FixTheSetup as problem:
        return str(problem)
    return None


# --- opening the ledger and what every run leaves behind -------------------------------------

def open_ledger(settings: Settings, sealer: Sealer, now: datetime, *, writable: bool = True) -> Ledger:
    """The ledger, after the folder, its identity and the key were checked. `writable=False`
    (a dry run beside the service) checks the same but records nothing in the folder."""
    if writable:
        prepare(settings)
    identity = check_identity(settings)
    _check_legacy_key(settings, sealer)
    ledger = Ledger(settings.ledger_path, sealer)  # refuses another key before writing
    if writable and identity.record:
        try:
            what = "created" if identity.new else "identified"
            ledger.set_state_id(identity.state_id, now, what, f"state folder {settings.state_dir}")
            write_marker(settings.state_dir, Marker(identity.state_id, ledger.progress()), now)
        except BaseException:
            ledger.close()
            raise
    return ledger


def _check_legacy_key(settings: Settings, sealer: Sealer) -> None:
    """A ledger made before ledgers knew their key, with no order record to try the key on,
    adopts it only if it opens a spool file (when there are any)."""
    if not settings.ledger_path.exists():
        return
    probe = Ledger(settings.ledger_path, None)
    try:
        if probe.sealed_with(sealer) is not None or sum(probe.status_counts().values()):
            return  # the ledger's own check decides
    finally:
        probe.close()
    files = spool_files(settings)
    if files and not any(sealer.opens(path.read_bytes()) for path in files):
        raise StateKeyMismatch(key_mismatch_message(settings.ledger_path))


def after_run(settings: Settings, ledger: Ledger, now: datetime) -> Path | None:
    """Remember how far the ledger has come (an older copy is then recognised), and take the
    day's backup if there is none yet. Returns the new backup, if one was taken."""
    state_id = ledger.state_id()
    progress = ledger.progress()
    marker = read_marker(settings.state_dir)
    if state_id is not None and marker != Marker(state_id, progress):
        write_marker(settings.state_dir, Marker(state_id, progress), now)
    if backup_path(settings, now).exists():
        return None
    return take_backup(settings, ledger, now)


# --- backups --------------------------------------------------------------------------------

def backup_path(settings: Settings, now: datetime) -> Path:
    day = utc(now)  # one backup per UTC day
    return settings.state_dir / BACKUPS / f"ledger-{day.year:04d}{day.month:02d}{day.day:02d}.sqlite"


def list_backups(settings: Settings) -> list[Path]:
    folder = settings.state_dir / BACKUPS
    return sorted(folder.glob("ledger-*.sqlite")) if folder.is_dir() else []


def take_backup(settings: Settings, ledger: Ledger, now: datetime) -> Path:
    """Today's backup (replacing an earlier one of today), then only the newest
    `retention.backups` are kept."""
    target = backup_path(settings, now)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        make_private_dir(target.parent)
        temporary.unlink(missing_ok=True)
        ledger.backup_to(temporary)
        _sync(temporary)
        os.replace(temporary, target)
        _sync(target.parent)
        for old in list_backups(settings)[:-settings.retention.backups]:
            old.unlink()
    except OSError as problem:
        temporary.unlink(missing_ok=True)
        raise StateUnusable(f"cannot write the backup {target}: {problem.strerror or problem}") from None
    log.info("ledger backup taken path=%s", target)
    return target


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- a person's confirmations ----------------------------------------------------------------

def fresh_start(settings: Settings, sealer: Sealer, bookmark: str, start: datetime, now: datetime) -> list[str]:
    """Start a new ledger in a used folder whose ledger is missing or empty; the first window
    starts at `start`. Returns what a person should know."""
    prepare(settings)
    path = settings.ledger_path
    if path.exists():
        probe = Ledger(path, None)
        try:
            empty = probe.is_empty()
        finally:
            probe.close()
        if not empty:
            raise FixTheSetup(
                f"the ledger {path} is not empty: fresh-start only replaces a missing or empty ledger"
                " (a restored one is confirmed with `fbm-bridge accept-restore`)"
            )
    before = evidence_of_use(settings) or ["nothing"]
    newest = _newest_spool_file(settings)
    state_id = _new_id()
    # The marker first: a crash before the ledger is written leaves an empty ledger in a used
    # folder, which is refused until fresh-start runs again.
    write_marker(settings.state_dir, Marker(state_id, 0), now)
    ledger = Ledger(path, sealer)
    try:
        ledger.start_fresh(bookmark, start, state_id, now,
                           f"a person confirmed a fresh start from {iso_z(start)}; found before: {', '.join(before)}")
    finally:
        ledger.close()
    lines = [f"fresh start recorded: orders updated from {iso_z(start)} on are pulled by the next run"]
    if newest is not None:
        lines.append(
            f"the newest spool file from before is {newest[0]} (written {iso_z(newest[1])}): orders"
            " delivered before then and updated after the start time are delivered again; files"
            " of the same name in a drop are never overwritten"
        )
    return lines


def accept_restore(settings: Settings, sealer: Sealer, now: datetime) -> list[str]:
    """A person confirms that the ledger in place (a restored backup, say) is the one to use."""
    prepare(settings)
    if not settings.ledger_path.exists():
        raise FixTheSetup(f"there is no ledger at {settings.ledger_path}: restore one first, or use"
                          " `fbm-bridge fresh-start --from TIME`")
    try:
        check_identity(settings)
    except StateNotConfirmed:
        pass
    else:
        return ["the ledger matches this state folder: nothing to confirm"]
    ledger = Ledger(settings.ledger_path, sealer)
    try:
        if ledger.is_empty():
            raise FixTheSetup(f"the ledger {settings.ledger_path} is empty: use `fbm-bridge fresh-start --from TIME`")
        marker = read_marker(settings.state_dir)
        state_id = ledger.state_id() or (marker.state_id if marker else _new_id())
        in_use = ledger.spool_paths_in_use()
        unknown = [p for p in spool_files(settings) if p.relative_to(settings.spool_dir).as_posix() not in in_use]
        ledger.set_state_id(state_id, now, "restore_accepted",
                            f"a person accepted this ledger ({ledger.progress()} events; the folder had seen"
                            f" {marker.progress if marker else 0}); {len(unknown)} spool file(s) it does not know")
        write_marker(settings.state_dir, Marker(state_id, ledger.progress()), now)
    finally:
        ledger.close()
    lines = ["the ledger in place is accepted; the next run continues from its bookmark"]
    if unknown:
        lines.append(f"{len(unknown)} spool file(s) were written after this ledger was (delivered since the"
                     " backup, probably: their orders are delivered again unless a drop still holds a file"
                     " of the same name); the next run removes them from the spool:")
        lines += [f"  {p}  written {iso_z(_mtime(p))}" for p in unknown]
    return lines


def _newest_spool_file(settings: Settings) -> tuple[Path, datetime] | None:
    files = [(p, _mtime(p)) for p in spool_files(settings)]
    return max(files, key=lambda item: item[1]) if files else None


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


# --- key rotation ----------------------------------------------------------------------------

@dataclass
class RekeyReport:
    already_done: bool = False
    records: int = 0
    spool_files: int = 0
    backups: int = 0
    unreadable: list[str] = field(default_factory=list)  # what neither key opens, left as it is

    def lines(self) -> list[str]:
        if self.already_done:
            return ["the state is already sealed with BRIDGE_STATE_KEY_NEW: make it the BRIDGE_STATE_KEY"]
        lines = [f"rekey done: {self.records} order record(s), {self.spool_files} spool file(s) and"
                 f" {self.backups} backup(s) resealed with BRIDGE_STATE_KEY_NEW; make it the"
                 " BRIDGE_STATE_KEY now (replace the credential), then start the service"]
        lines += [f"  not resealed (neither key opens it): {item}" for item in self.unreadable]
        return lines


def rekey(settings: Settings, old: Sealer, new: Sealer, now: datetime,
          checkpoint: Callable[[str], None] = lambda step: None) -> RekeyReport:
    """Reseal the ledger, the spool and the backups from `old` to `new` (the caller holds the
    state lock). Safe to interrupt anywhere and run again."""
    prepare(settings)
    if not settings.ledger_path.exists():
        raise FixTheSetup(f"there is no ledger at {settings.ledger_path}: nothing to rekey")
    ledger = Ledger(settings.ledger_path, None)
    try:
        report = RekeyReport()
        if not _begin_rotation(ledger, old, new, now):
            report.already_done = True
            return report
        checkpoint("rotation_recorded")
        from bridge.sealing import Resealer

        resealer = Resealer(old, new)
        report.records, unreadable = ledger.reseal_payloads(resealer.reseal, now)
        report.unreadable += [f"the ledger's record of order {order_id}" for order_id in unreadable]
        checkpoint("ledger_resealed")
        for path in spool_files(settings):
            if _reseal_file(path, resealer, report):
                checkpoint("spool_file_resealed")
        for path in list_backups(settings):
            if _reseal_backup(path, old, new, now, report):
                checkpoint("backup_resealed")
        ledger.finish_rotation(now)
        checkpoint("finished")
        return report
    finally:
        ledger.close()


def _begin_rotation(ledger: Ledger, old: Sealer, new: Sealer, now: datetime) -> bool:
    """Record the rotation, or check the one recorded is to `new`. False: already done."""
    target = ledger.rotation_target()
    if target is not None:
        if not new.opens_check(target):
            raise StateKeyMismatch(
                f"an unfinished rotation of {ledger.path} to another key is recorded: run `fbm-bridge"
                " rekey` with that key as BRIDGE_STATE_KEY_NEW to finish it"
            )
        return True
    if ledger.sealed_with(new):
        return False
    if not (ledger.sealed_with(old) or (ledger.sealed_with(old) is None and ledger.opens_records(old))):
        raise StateKeyMismatch(key_mismatch_message(ledger.path))
    ledger.begin_rotation(old, new, now)
    return True


def _reseal_file(path: Path, resealer: Resealer, report: RekeyReport) -> bool:
    try:
        sealed = path.read_bytes()
        token = resealer.reseal(sealed)
        if token is None:
            report.unreadable.append(f"spool file {path}")
            return False
        if token is not sealed:
            write_atomic(path, token)
    except OSError as problem:
        raise StateUnusable(f"cannot reseal the spool file {path}: {problem.strerror or problem}") from None
    report.spool_files += 1
    return True


def _reseal_backup(path: Path, old: Sealer, new: Sealer, now: datetime, report: RekeyReport) -> bool:
    backup = Ledger(path, None)
    try:
        if backup.sealed_with(new) and backup.rotation_target() is None:
            report.backups += 1
            return False
        try:
            _begin_rotation(backup, old, new, now)
        except StateKeyMismatch:
            report.unreadable.append(f"backup {path} (sealed with another key)")
            return False
        from bridge.sealing import Resealer

        count, unreadable = backup.reseal_payloads(Resealer(old, new).reseal, now)
        report.unreadable += [f"order {order_id} in backup {path}" for order_id in unreadable]
        backup.finish_rotation(now)
        backup.detach_wal()
    finally:
        backup.close()
    report.backups += 1
    return True


def _new_id() -> str:
    import uuid  # only when a state is made: `status` reads the state

    return str(uuid.uuid4())
