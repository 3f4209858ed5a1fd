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
import shutil
import tempfile
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from bridge.config import Settings
from bridge.edges.folders import make_private_dir, write_atomic
from bridge.errors import FixTheSetup, StateKeyMismatch, StateNotConfirmed, StateUnusable
from bridge.ledger import Ledger, bookmark_in, key_mismatch_message, package_ids_in, state_id_in
from bridge.records import iso_z, utc

if TYPE_CHECKING:  # `status` reads the state without cryptography
    from bridge.sealing import Resealer, Sealer

log = logging.getLogger("bridge.state")

MARKER = "state.json"
LOCK = "bridge.lock"
BACKUPS = "backups"
AFTER_RESTORE = "after-restore-"  # accept-restore's folders of files the accepted ledger does not know
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
    """The state folder exists (0700), belongs to this user and this user can write in it, or
    StateUnusable. A folder of another user is refused even where this one could write it
    (root): what a command wrote there would be this user's, and lock the owner out."""
    _refuse_another_users(folder)
    try:
        make_private_dir(folder)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
    except OSError as problem:
        raise StateUnusable(_folder_problem(folder, problem)) from None


def _refuse_another_users(folder: Path) -> None:
    try:
        info = folder.stat()
    except OSError:
        return  # missing (made below), or not usable: said below
    if info.st_uid != os.geteuid() and folder.is_dir():
        owner = _name(info.st_uid)
        raise StateUnusable(
            f"the state folder {folder} belongs to {_user(info.st_uid)}, not to {_user()} who runs this:"
            f" run the command as {owner} (`runuser -u {owner} -- fbm-bridge ...` or `sudo -u {owner}"
            f" fbm-bridge ...`), so that what it writes stays usable by the service"
        )


def _refuse_foreign_files(folder: Path) -> None:
    """A file in the state folder another user owns (a command run as root made it) is one the
    service cannot open: said before the service finds out."""
    me = os.geteuid()
    for entry in sorted(folder.iterdir()):
        try:
            owner = entry.lstat().st_uid
        except OSError:
            continue
        if owner != me:
            raise StateUnusable(
                f"{entry} belongs to {_user(owner)}, not to {_user()}: the service could not use it (a command"
                f" run as another user made it); give it back with `chown -R {_name(me)}: {folder}`")


def _folder_problem(folder: Path, problem: OSError) -> str:
    where = Path(problem.filename) if problem.filename else folder
    if where.exists() and not where.is_dir():
        why = f"{where} is a file, not a folder"
    elif not folder.exists() and problem.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        me = _name(os.geteuid())
        return (f"the state folder {folder} does not exist and {_user()} cannot create it ({where}:"
                f" {problem.strerror or problem}): create it for the service's user, e.g. `install -d -m 0700"
                f" -o {me} -g {me} {folder}` (the unit's StateDirectory= makes it when the service starts)")
    else:
        why = f"{where}: {problem.strerror or problem}"
    return (f"cannot use the state folder {folder}: {why}; bridge.state_dir must be a folder that"
            f" {_user()} can write")


def check_folder(settings: Settings) -> str:
    """For `fbm-bridge check`: whether this user can use the state folder (made by the first
    run if it is missing and can be made). Changes nothing; StateUnusable says why not."""
    folder = settings.state_dir
    _refuse_another_users(folder)
    if folder.is_dir():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StateUnusable(_folder_problem(folder, PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                                                                        str(folder))))
        _refuse_foreign_files(folder)
        return f"{folder} ({_user()}'s, writable)"
    if folder.exists():
        raise StateUnusable(_folder_problem(folder, FileExistsError(errno.EEXIST, "exists", str(folder))))
    parent = next(p for p in folder.parents if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StateUnusable(_folder_problem(folder, PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                                                                    str(parent))))
    return f"{folder} (not there yet: the first run makes it, {_user()}'s)"


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
                " stop it first (systemctl stop fbm-bridge, or fbm-bridge@NAME for an instance), and start it again after"
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
    return (f"{why}; run the bridge as the service's user (runuser -u fbm-bridge -- fbm-bridge ..., or sudo -u"
            " fbm-bridge ...), whose state folder it must be")


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


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _owner_hint(path: Path, folder: Path) -> str:
    """For a file this user may not read: whose it is and how to give it back, if not ours."""
    try:
        uid, owner = path.stat().st_uid, folder.stat().st_uid
    except OSError:
        return ""
    if uid == os.geteuid():
        return ""
    return (f" (it belongs to {_user(uid)}, not to {_user()} who runs this: a command run as {_name(uid)}?"
            f" Give the folder back: chown -R {_name(owner)}: {folder})")


# --- the marker: was this folder used, and how far had its ledger come ----------------------

@dataclass(frozen=True)
class Marker:
    state_id: str
    progress: int  # Ledger.progress() at the end of the last run
    # The highest package id (packageReferenceId) ever issued from this folder, kept outside the
    # ledger so that a restored or fresh ledger continues above it; None: not known (a marker
    # written before it was kept).
    package_ids: int | None = None


def read_marker(state_dir: Path) -> Marker | None:
    path = state_dir / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        issued = data.get("package_ids")
        return Marker(str(data["state_id"]), int(data["progress"]), None if issued is None else int(issued))
    except FileNotFoundError:
        return None
    except OSError as problem:
        raise StateUnusable(f"cannot read {path}: {problem.strerror or problem}{_owner_hint(path, state_dir)}") from None
    except (ValueError, KeyError, TypeError):
        raise StateUnusable(
            f"{path} is damaged; if the ledger beside it is the right one, delete {path} and run"
            " again (a new one is written)"
        ) from None


def write_marker(state_dir: Path, marker: Marker, now: datetime) -> None:
    text = json.dumps({
        "state_id": marker.state_id,
        "progress": marker.progress,
        **({"package_ids": marker.package_ids} if marker.package_ids is not None else {}),
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
    aside = sum(1 for folder in set_aside_folders(settings) for p in folder.rglob("*") if p.is_file())
    if aside:
        found.append(f"{aside} file(s) set aside by accept-restore")
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

def open_ledger(settings: Settings, sealer: Sealer | None, now: datetime, *, writable: bool = True) -> Ledger:
    """The ledger, after the folder, its identity and the key were checked. `writable=False`
    (a dry run beside the service) checks the same but records nothing in the folder; it may
    go without a key (`sealer=None`) when it reads no sealed data."""
    if writable:
        prepare(settings)
    elif not settings.state_dir.is_dir():
        usable_folder(settings.state_dir)  # a first dry run: the folder, or why it cannot be made
    identity = check_identity(settings)
    if sealer is not None:
        _check_legacy_key(settings, sealer)
    if not writable and not settings.ledger_path.exists():
        return _empty_ledger(sealer)
    ledger = Ledger(settings.ledger_path, sealer)  # refuses another key before writing
    if writable:
        try:
            if identity.record:
                what = "created" if identity.new else "identified"
                ledger.set_state_id(identity.state_id, now, what, f"state folder {settings.state_dir}")
                marker = read_marker(settings.state_dir)
                issued = marker.package_ids if marker and marker.state_id == identity.state_id else None
                write_marker(settings.state_dir, Marker(identity.state_id, ledger.progress(), issued), now)
            _keep_package_ids(settings, ledger, now)
        except BaseException:
            ledger.close()
            raise
    return ledger


def _empty_ledger(sealer: Sealer | None) -> Ledger:
    """A new ledger in a temporary folder, gone when it is: a dry run before the first run makes
    nothing in the state folder (run as root, it would leave a ledger the service's user cannot
    open)."""
    scratch = tempfile.mkdtemp(prefix="fbm-bridge-dry-run-")
    try:
        ledger = Ledger(Path(scratch) / "ledger.sqlite", sealer)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    weakref.finalize(ledger, shutil.rmtree, scratch, True)
    return ledger


# --- package ids: never issued twice, whatever happens to the ledger ------------------------
#
# Amazon takes a packageReferenceId (the order fulfillment feed's MessageID and
# MerchantFulfillmentID too) it has seen on an order as an edit of that package. The ids are the
# ledger's package row ids, so the highest one issued is also kept in the marker, written before
# any package goes to Amazon; a ledger that knows less (a restored backup, a fresh start, another
# folder's ledger) continues above it. If the marker is lost with the ledger, the floor comes from
# the clock: seconds since TIME_FLOOR_EPOCH, above every id issued before as long as ids grow by
# less than one a second, and below the feed's 2^31 - 1 for decades.

TIME_FLOOR_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _keep_package_ids(settings: Settings, ledger: Ledger, now: datetime) -> None:
    """At every start: a ledger below the folder's highest package id continues above it, and
    the marker learns the ledger's highest if that is higher."""
    marker = read_marker(settings.state_dir)
    if marker is None:
        return
    highest = ledger.highest_package_id()
    issued = marker.package_ids
    if issued is None:  # a marker from before the ids were kept: what this folder's ledgers know
        issued = max(highest, _backups_issued(settings))
    if highest < issued:
        ledger.raise_package_floor(issued, now, f"package ids continue above {issued}, the highest this state"
                                   f" folder issued; the ledger knew only {highest} (an older copy?)")
        log.warning("package ids continue above %d, the highest this state folder issued; the ledger knew"
                    " only %d (an older copy?)", issued, highest)
        highest = issued
    if marker.package_ids is None or highest > marker.package_ids:
        write_marker(settings.state_dir, Marker(marker.state_id, marker.progress, highest), now)


def note_issued_package_ids(settings: Settings, ledger: Ledger, issued: int, now: datetime) -> None:
    """Before a package goes to Amazon: the marker keeps the highest id issued (a restored
    ledger that knows fewer continues above it), and how far the ledger has come (files taken
    in since the last orders run). StateUnusable if it cannot be written."""
    marker = read_marker(settings.state_dir)
    if marker is None:
        return
    latest = Marker(marker.state_id, max(marker.progress, ledger.progress()), max(issued, marker.package_ids or 0))
    if latest != marker:
        write_marker(settings.state_dir, latest, now)


def next_package_id(settings: Settings, ledger: Ledger) -> int:
    """The id the next package would get (for a dry run: the next real run continues above the
    folder's highest, if the ledger knows less)."""
    try:
        marker = read_marker(settings.state_dir)
    except StateUnusable:
        marker = None
    issued = marker.package_ids if marker and marker.package_ids is not None else 0
    return max(ledger.next_package_id(), issued + 1)


def _package_floor(settings: Settings, marker: Marker | None, now: datetime) -> tuple[int, str]:
    """The floor for a ledger a person confirmed (a restore, a fresh start), and why it is safe."""
    if marker is not None and marker.package_ids is not None:
        return marker.package_ids, "the highest this state folder issued"
    floor = max(time_floor(now), _backups_issued(settings))
    return floor, ("derived from the time, because this folder's record of the ids it issued is lost:"
                   " above any id issued before")


def time_floor(now: datetime) -> int:
    return int((utc(now) - TIME_FLOOR_EPOCH).total_seconds())


def _backups_issued(settings: Settings) -> int:
    return max((package_ids_in(path) for path in list_backups(settings)), default=0)


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
    issued = max(ledger.highest_package_id(), (marker.package_ids or 0) if marker else 0)
    if state_id is not None and marker != Marker(state_id, progress, issued):
        write_marker(settings.state_dir, Marker(state_id, progress, issued), now)
    purge_set_aside(settings, now)
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
    floor, how = _package_floor(settings, read_marker(settings.state_dir), now)
    state_id = _new_id()
    # The marker first: a crash before the ledger is written leaves an empty ledger in a used
    # folder, which is refused until fresh-start runs again (and the floor is kept).
    write_marker(settings.state_dir, Marker(state_id, 0, floor), now)
    ledger = Ledger(path, sealer)
    try:
        ledger.start_fresh(bookmark, start, state_id, now,
                           f"a person confirmed a fresh start from {iso_z(start)}; found before: {', '.join(before)}")
        if floor:
            ledger.raise_package_floor(floor, now, f"fresh start: package ids continue above {floor}, {how}")
    finally:
        ledger.close()
    lines = [f"fresh start recorded: orders updated from {iso_z(start)} on are pulled by the next run"]
    if newest is not None:
        lines.append(
            f"the newest spool file from before is {newest[0]} (written {iso_z(newest[1])}): orders"
            " delivered before then and updated after the start time are delivered again; files"
            " of the same name in a drop are never overwritten"
        )
    if floor:
        lines.append(f"package ids (packageReferenceId) continue above {floor}: {how}")
    return lines


@dataclass
class SetAside:
    """What accept-restore moved out of the way: files the accepted ledger does not know."""

    folder: Path
    spool: list[tuple[Path, str]] = field(default_factory=list)  # (where it is now, note)
    inbound: list[Path] = field(default_factory=list)


def accept_restore(settings: Settings, sealer: Sealer, now: datetime, bookmark: str | None = None) -> list[str]:
    """A person confirms that the ledger in place (a restored backup, or another folder's
    ledger) is the one to use. Spool and inbound copies it does not know are moved aside, never
    deleted, and listed; package ids continue above the highest this folder issued. `bookmark`:
    the orders bookmark's name, to say how far each ledger had pulled."""
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
    marker = read_marker(settings.state_dir)
    ledger = Ledger(settings.ledger_path, sealer)
    try:
        if ledger.is_empty():
            raise FixTheSetup(f"the ledger {settings.ledger_path} is empty: use `fbm-bridge fresh-start --from TIME`")
        ledger_id = ledger.state_id()
        foreign = marker is not None and ledger_id is not None and ledger_id != marker.state_id
        state_id = ledger_id or (marker.state_id if marker else _new_id())
        lines = _accepted_lines(settings, ledger, marker, foreign, bookmark)
        aside = _set_aside_unknown(settings, ledger, sealer, now)
        known_before = ledger.highest_package_id()
        floor, how = _package_floor(settings, marker, now)
        ledger.raise_package_floor(floor, now, f"accepted ledger: package ids continue above {floor}, {how}")
        kind = "another state folder's ledger" if foreign else "an older copy of this folder's ledger"
        ledger.set_state_id(state_id, now, "restore_accepted",
                            f"a person accepted {kind}: {_progress_words(ledger, marker)}; {len(aside.spool)} spool"
                            f" and {len(aside.inbound)} inbound file(s) it does not know set aside in {aside.folder}")
        write_marker(settings.state_dir, Marker(state_id, ledger.progress(), ledger.highest_package_id()), now)
    finally:
        ledger.close()
    return lines + _set_aside_lines(settings, aside, foreign) + (
        [f"package ids (packageReferenceId) continue above {floor}: {how}"] if floor > known_before else [])


def _progress_words(ledger: Ledger, marker: Marker | None) -> str:
    """How far the accepted ledger had come against the folder's own record, in words."""
    folder = (f"this folder had recorded {marker.progress} by its last run" if marker
              else "this folder kept no record of its last run")
    return f"it records {ledger.progress()} events (orders seen, files taken in, packages), {folder}"


def _accepted_lines(settings: Settings, ledger: Ledger, marker: Marker | None, foreign: bool,
                    bookmark: str | None) -> list[str]:
    pulled = ledger.bookmark(bookmark) if bookmark else None
    theirs = f"; it had pulled orders up to {iso_z(pulled)}" if pulled else ""
    if not foreign:
        return [f"the ledger in place is accepted: an older copy of this folder's ledger (a restored backup:"
                f" {_progress_words(ledger, marker)}){theirs}; the next run continues from its bookmark"]
    assert marker is not None
    ours = _own_newest_backup(settings, marker.state_id, bookmark)
    lines = [f"the ledger in place is accepted: it is not a backup of this folder but a ledger from another state"
             f" folder (its state id {ledger.state_id()}, this folder's was {marker.state_id}){theirs};"
             " the next run continues from its bookmark, and this folder now carries that state on"]
    if ours is not None:
        lines.append(f"this folder's own ledger had pulled orders up to {ours[1]} (its newest backup, {ours[0]});"
                     " orders between the two were pulled by this folder, not by that ledger")
    return lines


def _own_newest_backup(settings: Settings, state_id: str, bookmark: str | None) -> tuple[Path, str] | None:
    for path in reversed(list_backups(settings)):
        if bookmark and state_id_in(path) == state_id:
            value = bookmark_in(path, bookmark)
            if value is not None:
                return path, value
    return None


def _set_aside_unknown(settings: Settings, ledger: Ledger, sealer: Sealer, now: datetime) -> SetAside:
    """Move the spool files the ledger does not know (or knows with other content) and the
    inbound copies it does not know into state_dir/after-restore-<time>/: kept, not deleted."""
    aside = SetAside(settings.state_dir / f"{AFTER_RESTORE}{now:%Y%m%dT%H%M%SZ}")
    known = ledger.spool_digests()
    for path in spool_files(settings):
        relative = path.relative_to(settings.spool_dir).as_posix()
        note = ""
        if relative in known:
            data = sealer.try_open(path.read_bytes())
            if data is not None and _sha256(data) == known[relative]:
                continue
            note = "the accepted ledger has a file of this name with other content"
        aside.spool.append((_move(path, aside.folder / "spool" / relative), note))
    in_use = ledger.inbound_spool_in_use()
    inbound = settings.inbound_dir
    for path in sorted(inbound.glob("*/*/*")) if inbound.is_dir() else []:
        if path.is_file() and not path.name.startswith(".") and path.relative_to(inbound).as_posix() not in in_use:
            aside.inbound.append(_move(path, aside.folder / "inbound" / path.relative_to(inbound)))
    return aside


def _move(path: Path, target: Path) -> Path:
    try:
        make_private_dir(target.parent)
        os.rename(path, target)  # keeps its time: when it was delivered or received
    except OSError as problem:
        raise StateUnusable(f"cannot move {path} aside to {target}: {problem.strerror or problem}") from None
    return target


def _set_aside_lines(settings: Settings, aside: SetAside, foreign: bool) -> list[str]:
    lines = []
    kept = (f"kept in {aside.folder} for retention.spool_days ({settings.retention.spool_days} days), never"
            " deleted before")
    if aside.spool:
        why = ("this folder delivered them and the accepted ledger does not know them" if foreign
               else "delivered after the backup was taken, probably")
        lines.append(f"{len(aside.spool)} spool file(s) this ledger does not know ({why}): their orders are delivered"
                     " again unless a drop still holds a file of the same name, so tell the warehouse which may come"
                     f" twice. They are {kept}; `fbm-bridge spool open FILE` shows one:")
        lines += [f"  {path}  written {iso_z(_mtime(path))}" + (f"  ({note})" if note else "")
                  for path, note in aside.spool]
    if aside.inbound:
        lines.append(f"{len(aside.inbound)} confirmation or stock file(s) were taken in that this ledger does not know"
                     " (what they confirmed on Amazon is not in it: `status` may list those orders as not"
                     f" confirmed). Their copies (named by their SHA-256; the files themselves are in the folders'"
                     f" archive/ or error/) are {kept}:")
        lines += [f"  {path}  received {iso_z(_mtime(path))}" for path in aside.inbound]
    earlier = [folder for folder in set_aside_folders(settings) if folder != aside.folder]
    if earlier:
        lines.append("set aside by an earlier accept-restore, still kept: " + ", ".join(
            f"{folder} ({sum(1 for p in folder.rglob('*') if p.is_file())} file(s))" for folder in earlier))
    return lines


def set_aside_folders(settings: Settings) -> list[Path]:
    folder = settings.state_dir
    return sorted(p for p in folder.glob(f"{AFTER_RESTORE}*") if p.is_dir()) if folder.is_dir() else []


def set_aside_spool_files(settings: Settings) -> list[Path]:
    """Sealed spool files accept-restore set aside (rekey reseals them too)."""
    return sorted(p for folder in set_aside_folders(settings) for p in folder.glob("spool/*/*") if p.is_file())


def purge_set_aside(settings: Settings, now: datetime) -> None:
    """Set-aside folders go after retention.spool_days, counted from when they were made."""
    for folder in set_aside_folders(settings):
        try:
            made = datetime.strptime(folder.name[len(AFTER_RESTORE):], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            continue  # not one of ours: left alone
        if made < now - timedelta(days=settings.retention.spool_days):
            import shutil  # rarely: `status` imports this module

            shutil.rmtree(folder, ignore_errors=True)
            log.info("set-aside files purged folder=%s", folder)


def _newest_spool_file(settings: Settings) -> tuple[Path, datetime] | None:
    files = [(p, _mtime(p)) for p in spool_files(settings)]
    return max(files, key=lambda item: item[1]) if files else None


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


# --- a spool file for a person ----------------------------------------------------------------

def open_spool_file(settings: Settings, sealer: Sealer, path: Path, sealed: bytes) -> bytes:
    """A spool file's bytes as delivered; FixTheSetup naming what is wrong: a file that is not
    sealed at all (the copy in the drop?), the key (after a rekey: which one), or the file."""
    data = sealer.try_open(sealed)
    if data is not None:
        return data
    from bridge.sealing import looks_sealed

    if not looks_sealed(sealed):
        what = ("a ZIP file, e.g. a workbook" if sealed[:2] == b"PK" else "plain text" if _is_text(sealed)
                else "not sealed data")
        raise FixTheSetup(f"{path} is not a sealed spool file (it is {what}: is it the copy in the drop? That one"
                          f" is the file as delivered already); spool files are in {settings.spool_dir}/<warehouse>/")
    if settings.ledger_path.exists():
        ledger = Ledger(settings.ledger_path, None)
        try:
            if ledger.sealed_with(sealer) is False:
                raise StateKeyMismatch(ledger.key_mismatch(sealer))
            if ledger.sealed_with(sealer):
                raise FixTheSetup(f"spool file {path} does not open with BRIDGE_STATE_KEY, which is the state's key:"
                                  " the file was altered or damaged, or comes from another state folder")
        finally:
            ledger.close()
    return sealer.open(sealed, f"spool file {path}")  # raises, naming the key


def _is_text(data: bytes) -> bool:
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        text = data[:4096].decode("cp1252", errors="replace")
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text) and b"\x00" not in data[:4096]


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
        for path in spool_files(settings) + set_aside_spool_files(settings):
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
        raise StateKeyMismatch(ledger.key_mismatch(old))
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
            _keeping_times(path, lambda: write_atomic(path, token))
    except OSError as problem:
        raise StateUnusable(f"cannot reseal the spool file {path}: {problem.strerror or problem}") from None
    report.spool_files += 1
    return True


def _reseal_backup(path: Path, old: Sealer, new: Sealer, now: datetime, report: RekeyReport) -> bool:
    taken = path.stat()  # `backup --list` shows when it was taken: resealing keeps that time
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
        os.utime(path, ns=(taken.st_atime_ns, taken.st_mtime_ns))
    report.backups += 1
    return True


def _sha256(data: bytes) -> str:
    import hashlib  # only to accept a restore: `status` imports this module

    return hashlib.sha256(data).hexdigest()


def _new_id() -> str:
    import uuid  # only when a state is made: `status` reads the state

    return str(uuid.uuid4())


def _keeping_times(path: Path, replace: Callable[[], None]) -> None:
    """Replace a file's content and keep its times: a spool file's time says when it was
    delivered (fresh-start and accept-restore show it), not when it was last resealed."""
    before = path.stat()
    replace()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
