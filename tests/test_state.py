"""The state folder (bridge/state.py): it knows its key, refuses a ledger that would make it send
orders again, keeps daily backups, rotates keys crash-safely, and keeps buyer data private."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge import state
from bridge.edges.folders import write_atomic
from bridge.errors import StateKeyMismatch, StateNotConfirmed
from bridge.flows.orders import BOOKMARK
from bridge.ledger import Ledger, Observation, OrderStatus
from bridge.records import Address, Line, Order
from bridge.sealing import Sealer, new_key
from harness import MAPPINGS, REPO, SECRETS, load, sftp_warehouse, write_config

NOW = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
KEY = Sealer(SECRETS["BRIDGE_STATE_KEY"])
OTHER = Sealer(new_key())


@pytest.fixture
def settings(tmp_path):
    """Settings whose state folder is tmp_path/state; nothing here talks to a server."""
    (tmp_path / "known_hosts").write_text("127.0.0.1 ssh-ed25519 AAAA\n")
    (tmp_path / "id_ed25519").write_text("not read here\n")
    warehouses = [{"name": "wh", "mapping": str(MAPPINGS / "acme-csv.toml"), "host": "127.0.0.1",
                   "username": "u", "known_hosts": str(tmp_path / "known_hosts"),
                   "private_key": str(tmp_path / "id_ed25519"), "orders_folder": "/in"}]
    config = write_config(tmp_path, sandbox_url="http://127.0.0.1:9", token_url="http://127.0.0.1:9/auth/o2/token",
                          warehouses=warehouses)
    return load(config)


def order(order_id: str) -> Order:
    return Order(order_id=order_id, marketplace_id="A1PA6795UKMFR9", purchase_date=NOW - timedelta(hours=2),
                 last_updated=NOW - timedelta(hours=1), status="UNSHIPPED", buyer_name="Jane Buyer",
                 ship_to=Address(name="Jane Buyer", line1="1 Main St", city="Berlin", country_code="DE"),
                 lines=(Line("1", "SKU", "B0", "Widget", 1),))


def used_state(settings, sealer: Sealer = KEY, orders: tuple[str, ...] = ("A", "B")) -> None:
    """A state as a run leaves it: orders recorded, one delivered with its spool file, a backup."""
    ledger = state.open_ledger(settings, sealer, NOW)
    try:
        ledger.record([Observation(order(o), OrderStatus.PENDING, "", "wh") for o in orders], NOW,
                      bookmark=(BOOKMARK, NOW - timedelta(minutes=30)))
        deliver(settings, ledger, "A", b"A;Jane Buyer\r\n")
        state.after_run(settings, ledger, NOW)
    finally:
        ledger.close()


def deliver(settings, ledger: Ledger, order_id: str, data: bytes, now: datetime = NOW) -> Path:
    """`order_id`'s file as the orders flow leaves it: spooled (sealed), staged, delivered."""
    spooled = settings.spool_dir / "wh" / f"{order_id}.csv"
    write_atomic(spooled, ledger.seal_file(data))
    digest = hashlib.sha256(data).hexdigest()
    ledger.mark_delivered(ledger.stage_file("wh", spooled.name, f"wh/{spooled.name}", len(data), digest,
                                            [order_id], now), now)
    return spooled


def opens_with(settings, sealer: Sealer) -> Ledger:
    return state.open_ledger(settings, sealer, NOW)


def dump(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


# --- item 8: the state knows its key ----------------------------------------------------------

def test_a_new_state_records_its_key_and_refuses_any_other_before_writing(settings):
    used_state(settings)
    before = dump(settings.ledger_path)

    with pytest.raises(StateKeyMismatch) as refused:
        opens_with(settings, OTHER)

    assert str(refused.value) == (
        f"BRIDGE_STATE_KEY is not the key the state in {settings.state_dir} was made with: restore that"
        " key, or change keys with `fbm-bridge rekey` (README: Operations, Changing the state key)")
    assert dump(settings.ledger_path) == before
    opens_with(settings, KEY).close()


def test_an_empty_new_ledger_refuses_another_key_too(settings):
    opens_with(settings, KEY).close()  # nothing recorded yet, but the key is
    with pytest.raises(StateKeyMismatch):
        opens_with(settings, OTHER)


def legacy_ledger(path: Path, sealer: Sealer | None, orders: tuple[str, ...] = ("A",)) -> None:
    """A ledger as versions before the check value wrote it: sealed payloads, no meta rows."""
    ledger = Ledger(path, sealer or KEY)
    if orders:
        ledger.record([Observation(order(o), OrderStatus.PENDING, "", "wh") for o in orders], NOW)
    ledger._db.execute("delete from meta")
    ledger.close()


def test_a_ledger_made_before_the_check_value_adopts_only_a_key_that_opens_its_records(settings):
    legacy_ledger(settings.ledger_path, KEY)

    with pytest.raises(StateKeyMismatch):
        Ledger(settings.ledger_path, OTHER)
    assert Ledger(settings.ledger_path, None).sealed_with(OTHER) is None  # nothing was written

    Ledger(settings.ledger_path, KEY).close()  # adopts it
    with pytest.raises(StateKeyMismatch):
        Ledger(settings.ledger_path, OTHER)


def test_a_legacy_ledger_without_records_adopts_the_key_it_is_opened_with(settings):
    legacy_ledger(settings.ledger_path, KEY, orders=())
    Ledger(settings.ledger_path, OTHER).close()
    assert Ledger(settings.ledger_path, None).sealed_with(OTHER) is True


def test_a_legacy_ledger_without_records_but_with_spool_files_adopts_only_a_key_that_opens_one(settings):
    state.prepare(settings)
    legacy_ledger(settings.ledger_path, KEY, orders=())
    ledger = Ledger(settings.ledger_path, None)
    ledger.record([], NOW, bookmark=(BOOKMARK, NOW))  # used: not an empty ledger
    ledger.close()
    write_atomic(settings.spool_dir / "wh" / "A.csv", KEY.seal(b"A"))

    with pytest.raises(StateKeyMismatch):
        opens_with(settings, OTHER)
    opens_with(settings, KEY).close()


# --- item 8: rekey ----------------------------------------------------------------------------

NEW = Sealer(new_key())


def everything_sealed(settings) -> dict[str, list[bytes]]:
    """Every sealed thing in the state: the ledger's payloads, spool files, backups' payloads."""
    def payloads(path: Path) -> list[bytes]:
        db = sqlite3.connect(path)
        try:
            return [row[0].encode() for row in db.execute("select payload from orders")]
        finally:
            db.close()

    found = {"ledger": payloads(settings.ledger_path),
             "spool": [p.read_bytes() for p in state.spool_files(settings)]}
    for backup in state.list_backups(settings):
        found[backup.name] = payloads(backup)
    return found


def opened_by_exactly(settings, sealer: Sealer, other: Sealer) -> bool:
    tokens = [t for group in everything_sealed(settings).values() for t in group]
    return bool(tokens) and all(sealer.opens(t) and not other.opens(t) for t in tokens)


def test_rekey_reseals_ledger_spool_and_backups_and_swaps_the_key(settings):
    used_state(settings)
    state.after_run(settings, opens_with(settings, KEY), NOW + timedelta(days=1))  # a second backup

    report = state.rekey(settings, KEY, NEW, NOW)

    assert (report.records, report.spool_files, report.backups, report.unreadable) == (2, 1, 2, [])
    assert opened_by_exactly(settings, NEW, KEY)
    with pytest.raises(StateKeyMismatch):
        opens_with(settings, KEY)
    ledger = opens_with(settings, NEW)
    assert {o.order_id for o in ledger.orders_in(OrderStatus.PENDING)} == {"B"}
    assert [e["kind"] for e in ledger.state_events()][-2:] == ["rekey_started", "rekey_finished"]
    ledger.close()
    for backup in state.list_backups(settings):  # a restored backup opens with the new key
        Ledger(backup, NEW).close()
    assert state.rekey(settings, KEY, NEW, NOW).lines() == [
        "the state is already sealed with BRIDGE_STATE_KEY_NEW: make it the BRIDGE_STATE_KEY"]


def test_rekey_keeps_the_times_of_spool_files_and_backups_so_they_still_say_when_they_were_written(settings):
    used_state(settings)
    spooled, [backup] = settings.spool_dir / "wh" / "A.csv", state.list_backups(settings)
    delivered, taken = NOW.timestamp() - 3600, NOW.timestamp() - 60
    os.utime(spooled, (delivered, delivered))
    os.utime(backup, (taken, taken))

    state.rekey(settings, KEY, NEW, NOW + timedelta(days=3))

    assert (spooled.stat().st_mtime, backup.stat().st_mtime) == (delivered, taken)
    settings.ledger_path.unlink()  # and fresh-start names the newest delivery by its time
    lines = state.fresh_start(settings, NEW, BOOKMARK, NOW, NOW + timedelta(days=3))
    assert lines[1].startswith(f"the newest spool file from before is {spooled} (written 2026-11-20T11:30:00Z)")


def test_rekey_refuses_an_old_key_that_is_not_the_states(settings):
    used_state(settings)
    with pytest.raises(StateKeyMismatch, match="is not the key the state"):
        state.rekey(settings, OTHER, NEW, NOW)
    assert opened_by_exactly(settings, KEY, NEW)


class Crash(Exception):
    pass


def crash_at(step: str, occurrence: int = 1):
    seen = []

    def checkpoint(name: str) -> None:
        seen.append(name)
        if name == step and seen.count(name) == occurrence:
            raise Crash(step)
    return checkpoint


CRASH_POINTS = [("rotation_recorded", 1), ("ledger_resealed", 1), ("spool_file_resealed", 1),
                ("spool_file_resealed", 2), ("backup_resealed", 1), ("finished", 1)]


@pytest.mark.parametrize(("step", "occurrence"), CRASH_POINTS)
def test_a_rekey_interrupted_at_any_step_finishes_when_run_again(settings, step, occurrence):
    used_state(settings, orders=("A", "B", "C"))
    extra = settings.spool_dir / "wh" / "C.csv"  # a second spool file
    ledger = opens_with(settings, KEY)
    write_atomic(extra, ledger.seal_file(b"C"))
    ledger.mark_delivered(ledger.stage_file("wh", "C.csv", "wh/C.csv", 1, "0" * 64, ["C"], NOW), NOW)
    ledger.close()

    with pytest.raises(Crash):
        state.rekey(settings, KEY, NEW, NOW, checkpoint=crash_at(step, occurrence))

    if step == "finished":  # the swap was committed: the new key alone opens the state
        opens_with(settings, NEW).close()
    else:  # unfinished: neither key runs until rekey has finished
        for key in (KEY, NEW):
            with pytest.raises(StateKeyMismatch, match="did not finish: run `fbm-bridge rekey` again"):
                opens_with(settings, key)
    state.rekey(settings, KEY, NEW, NOW)

    assert opened_by_exactly(settings, NEW, KEY)
    ledger = opens_with(settings, NEW)
    assert {o.order_id for o in ledger.orders_in(OrderStatus.PENDING)} == {"B"}
    ledger.close()


def test_a_rekey_interrupted_is_not_finished_with_a_different_new_key(settings):
    used_state(settings)
    with pytest.raises(Crash):
        state.rekey(settings, KEY, NEW, NOW, checkpoint=crash_at("ledger_resealed"))
    with pytest.raises(StateKeyMismatch, match="unfinished rotation .* to another key"):
        state.rekey(settings, KEY, OTHER, NOW)


# --- item 9: a used folder without its ledger ---------------------------------------------------

def test_a_brand_new_folder_starts_and_is_marked_as_used(settings):
    ledger = opens_with(settings, KEY)
    ledger.close()

    marker = state.read_marker(settings.state_dir)
    assert marker is not None and marker.state_id == Ledger(settings.ledger_path, None).state_id()
    opens_with(settings, KEY).close()  # an empty ledger of its own folder is fine


@pytest.mark.parametrize("evidence", ["marker", "spool", "backups"])
def test_a_used_folder_whose_ledger_is_missing_refuses_to_run(settings, evidence):
    used_state(settings)
    settings.ledger_path.unlink()
    if evidence != "marker":
        (settings.state_dir / "state.json").unlink()
    if evidence != "spool":
        shutil.rmtree(settings.spool_dir)
    if evidence != "backups":
        shutil.rmtree(settings.state_dir / "backups")

    with pytest.raises(StateNotConfirmed) as refused:
        opens_with(settings, KEY)

    found = {"marker": "state.json", "spool": "1 spool file(s)", "backups": "1 backup(s)"}[evidence]
    assert str(refused.value) == (
        f"the ledger {settings.ledger_path} is missing, but {settings.state_dir} was used before ({found}):"
        " running would pull and send orders again. Restore the newest backup (README: Operations,"
        " Backups), or start afresh with `fbm-bridge fresh-start --from TIME`")
    assert not settings.ledger_path.exists()  # not created by looking


def test_an_emptied_ledger_is_refused_like_a_missing_one(settings):
    used_state(settings)
    settings.ledger_path.write_bytes(b"")
    for companion in settings.state_dir.glob("ledger.sqlite-*"):
        companion.unlink()
    with pytest.raises(StateNotConfirmed, match="is empty, but .* was used before"):
        opens_with(settings, KEY)


def test_fresh_start_records_the_start_and_an_audit_event_then_runs(settings):
    used_state(settings)
    settings.ledger_path.unlink()
    start = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)

    lines = state.fresh_start(settings, KEY, BOOKMARK, start, NOW)

    assert lines[0] == "fresh start recorded: orders updated from 2026-11-20T00:00:00Z on are pulled by the next run"
    assert lines[1].startswith(f"the newest spool file from before is {settings.spool_dir / 'wh' / 'A.csv'}")
    ledger = opens_with(settings, KEY)
    assert ledger.bookmark(BOOKMARK) == start
    [event] = [e for e in ledger.state_events() if e["kind"] == "fresh_start"]
    assert event["detail"] == ("a person confirmed a fresh start from 2026-11-20T00:00:00Z; found before:"
                               " state.json, 1 spool file(s), 1 backup(s)")
    ledger.close()


def test_fresh_start_never_replaces_a_ledger_that_holds_something(settings):
    used_state(settings)
    with pytest.raises(Exception, match="fresh-start only replaces a missing or empty ledger"):
        state.fresh_start(settings, KEY, BOOKMARK, NOW, NOW)


# --- item 9: backups and restoring one ------------------------------------------------------------

def test_the_run_takes_one_backup_a_utc_day_and_keeps_the_newest(settings):
    used_state(settings)  # took 2026-11-20's
    ledger = opens_with(settings, KEY)
    try:
        assert state.after_run(settings, ledger, NOW + timedelta(hours=1)) is None  # same day
        for day in range(1, 9):
            state.after_run(settings, ledger, NOW + timedelta(days=day))
    finally:
        ledger.close()

    names = [p.name for p in state.list_backups(settings)]
    assert names == [f"ledger-202611{day}.sqlite" for day in range(22, 29)]  # retention.backups = 7
    backup = state.list_backups(settings)[-1]
    assert backup.stat().st_mode & 0o777 == 0o600
    db = sqlite3.connect(backup)
    assert db.execute("pragma journal_mode").fetchone()[0] == "delete"  # one self-contained file
    assert db.execute("select count(*) from orders").fetchone()[0] == 2
    db.close()


def test_a_restored_older_backup_is_refused_until_a_person_accepts_it(settings):
    used_state(settings)
    backup = state.list_backups(settings)[0]
    ledger = opens_with(settings, KEY)  # work after the backup: C recorded and delivered
    ledger.record([Observation(order("C"), OrderStatus.PENDING, "", "wh")], NOW)
    delivered = deliver(settings, ledger, "C", b"C")
    os.utime(delivered, (NOW.timestamp() + 900, NOW.timestamp() + 900))  # delivered 12:45
    state.after_run(settings, ledger, NOW + timedelta(hours=1))
    ledger.close()

    for name in ("ledger.sqlite-wal", "ledger.sqlite-shm"):  # the README's restore
        (settings.state_dir / name).unlink(missing_ok=True)
    shutil.copy(backup, settings.ledger_path)

    with pytest.raises(StateNotConfirmed) as refused:
        opens_with(settings, KEY)
    assert str(refused.value) == (
        f"the ledger {settings.ledger_path} is older than this state folder's last run (it has 3 events,"
        " the folder saw 5): was a backup restored? Orders delivered after that backup would be sent"
        " again. Check with the warehouse, then confirm with `fbm-bridge accept-restore`")

    lines = state.accept_restore(settings, KEY, NOW + timedelta(hours=2), BOOKMARK)

    aside = settings.state_dir / "after-restore-20261120T143000Z"
    assert lines == [
        "the ledger in place is accepted: an older copy of this folder's ledger (a restored backup: it records 3"
        " events (orders seen, files taken in, packages), this folder had recorded 5 by its last run); it had pulled orders up to 2026-11-20T12:00:00Z; the next run continues from"
        " its bookmark",
        "1 spool file(s) this ledger does not know (delivered after the backup was taken, probably): their orders"
        " are delivered again unless a drop still holds a file of the same name, so tell the warehouse which may"
        f" come twice. They are kept in {aside} for retention.spool_days (30 days), never deleted before;"
        " `fbm-bridge spool open FILE` shows one:",
        f"  {aside / 'spool' / 'wh' / 'C.csv'}  written 2026-11-20T12:45:00Z",
    ]
    ledger = opens_with(settings, KEY)
    assert ledger.state_events()[-1]["kind"] == "restore_accepted"
    assert ledger.open_file((aside / "spool" / "wh" / "C.csv").read_bytes(), "C") == b"C"  # kept whole
    ledger.close()
    assert state.accept_restore(settings, KEY, NOW) == ["the ledger matches this state folder: nothing to confirm"]


def test_a_ledger_of_another_state_is_refused(settings, tmp_path):
    used_state(settings)
    elsewhere = tmp_path / "other" / "ledger.sqlite"
    elsewhere.parent.mkdir()
    ledger = Ledger(elsewhere, KEY)
    ledger.set_state_id("another-state", NOW, "created", "elsewhere")
    ledger.record([Observation(order(o), OrderStatus.PENDING, "", "wh") for o in "ABCDEFGH"], NOW)
    ledger.close()
    settings.ledger_path.unlink()
    shutil.copy(elsewhere, settings.ledger_path)

    with pytest.raises(StateNotConfirmed, match="belongs to another state .id another-state"):
        opens_with(settings, KEY)


def test_accepting_another_folders_ledger_says_so_and_sets_aside_every_file_it_does_not_know(settings, tmp_path):
    used_state(settings)  # this folder delivered A (A.csv), pulled up to 12:00, took a backup
    own_id = state.read_marker(settings.state_dir).state_id
    own_file = settings.spool_dir / "wh" / "A.csv"
    os.utime(own_file, (NOW.timestamp(), NOW.timestamp()))
    elsewhere = tmp_path / "other" / "ledger.sqlite"
    elsewhere.parent.mkdir()
    other = Ledger(elsewhere, KEY)  # another folder: it delivered its own A.csv, other content
    other.set_state_id("another-state", NOW, "created", "elsewhere")
    other.record([Observation(order("A"), OrderStatus.PENDING, "", "wh")], NOW,
                 bookmark=(BOOKMARK, NOW - timedelta(hours=2)))
    other.mark_delivered(other.stage_file("wh", "A.csv", "wh/A.csv", 7, hashlib.sha256(b"A;Other").hexdigest(),
                                          ["A"], NOW), NOW)
    other.close()
    settings.ledger_path.unlink()
    shutil.copy(elsewhere, settings.ledger_path)

    lines = state.accept_restore(settings, KEY, NOW + timedelta(hours=2), BOOKMARK)

    aside = settings.state_dir / "after-restore-20261120T143000Z"
    assert lines == [
        "the ledger in place is accepted: it is not a backup of this folder but a ledger from another state folder"
        f" (its state id another-state, this folder's was {own_id}); it had pulled orders up to"
        " 2026-11-20T10:30:00Z; the next run continues from its bookmark, and this folder now carries that state on",
        "this folder's own ledger had pulled orders up to 2026-11-20T12:00:00Z (its newest backup,"
        f" {state.list_backups(settings)[0]}); orders between the two were pulled by this folder, not by that ledger",
        "1 spool file(s) this ledger does not know (this folder delivered them and the accepted ledger does not know"
        " them): their orders are delivered again unless a drop still holds a file of the same name, so tell the"
        f" warehouse which may come twice. They are kept in {aside} for retention.spool_days (30 days), never"
        " deleted before; `fbm-bridge spool open FILE` shows one:",
        f"  {aside / 'spool' / 'wh' / 'A.csv'}  written 2026-11-20T12:30:00Z  (the accepted ledger has a file of"
        " this name with other content)",
    ]
    assert not own_file.exists()  # never taken for the accepted ledger's A.csv, which is another file
    assert KEY.open((aside / "spool" / "wh" / "A.csv").read_bytes(), "A") == b"A;Jane Buyer\r\n"
    ledger = opens_with(settings, KEY)
    assert ledger.state_events()[-1]["detail"] == (
        "a person accepted another state folder's ledger: it records 2 events (orders seen, files taken in,"
        " packages), this folder had recorded 3 by its last run; 1 spool and 0 inbound"
        f" file(s) it does not know set aside in {aside}")
    ledger.close()


def test_set_aside_files_are_kept_for_spool_days_resealed_by_rekey_and_then_purged(settings):
    used_state(settings)
    backup = state.list_backups(settings)[0]
    ledger = opens_with(settings, KEY)
    ledger.record([Observation(order("C"), OrderStatus.PENDING, "", "wh")], NOW)
    delivered = deliver(settings, ledger, "C", b"C;Jane Buyer")
    os.utime(delivered, (NOW.timestamp(), NOW.timestamp()))
    state.after_run(settings, ledger, NOW)
    ledger.close()
    settings.ledger_path.unlink()
    shutil.copy(backup, settings.ledger_path)
    state.accept_restore(settings, KEY, NOW)
    aside = settings.state_dir / "after-restore-20261120T123000Z" / "spool" / "wh" / "C.csv"

    assert state.rekey(settings, KEY, NEW, NOW).spool_files == 2  # A.csv, and the one set aside
    assert NEW.open(aside.read_bytes(), "C") == b"C;Jane Buyer"
    assert aside.stat().st_mtime == NOW.timestamp()  # still says when it was delivered
    ledger = opens_with(settings, NEW)
    state.after_run(settings, ledger, NOW + timedelta(days=30))
    assert aside.exists()
    state.after_run(settings, ledger, NOW + timedelta(days=30, seconds=1))
    ledger.close()
    assert not aside.parent.parent.parent.exists()


# --- item 14: permissions whatever the umask ------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_state_files_are_the_owners_only_whatever_the_umask(settings, umask):
    previous = os.umask(umask)
    try:
        used_state(settings)
        with state.state_lock(settings.state_dir):
            pass
        ledger = opens_with(settings, KEY)  # the -wal and -shm exist while it is open
        modes = {p.relative_to(settings.state_dir).as_posix(): p.stat().st_mode & 0o777
                 for p in [settings.state_dir, *settings.state_dir.rglob("*")]}
        ledger.close()
    finally:
        os.umask(previous)

    assert modes == {
        ".": 0o700, "ledger.sqlite": 0o600, "ledger.sqlite-wal": 0o600, "ledger.sqlite-shm": 0o600,
        "bridge.lock": 0o600, "state.json": 0o600, "spool": 0o700, "spool/wh": 0o700,
        "spool/wh/A.csv": 0o600, "backups": 0o700, "backups/ledger-20261120.sqlite": 0o600,
    }


def test_an_existing_state_folder_made_with_a_loose_mode_is_tightened(settings):
    settings.state_dir.mkdir(mode=0o755)
    os.chmod(settings.state_dir, 0o755)
    legacy_ledger(settings.ledger_path, KEY)
    os.chmod(settings.ledger_path, 0o644)

    opens_with(settings, KEY).close()

    assert settings.state_dir.stat().st_mode & 0o777 == 0o700
    assert settings.ledger_path.stat().st_mode & 0o777 == 0o600


def as_user(uid: int, work) -> str:
    """`work()` in a child process that runs as `uid`: its result, or its error, as text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            result = repr(work())
        except Exception as problem:
            result = f"{type(problem).__name__}: {problem}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        text = answer.read().decode()
    os.waitpid(pid, 0)
    return text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play two users")
def test_a_state_json_left_by_another_user_names_its_owner_and_how_to_give_it_back():
    folder = Path(tempfile.mkdtemp(prefix="bridge-owners-"))
    try:
        os.chmod(folder, 0o755)
        state_dir = folder / "state"
        state_dir.mkdir(mode=0o700)
        state.write_marker(state_dir, state.Marker("s", 1), NOW)  # root's, 0600: a manual run as root
        os.chown(state_dir, 65534, 65534)  # the service's folder

        said = as_user(65534, lambda: state.read_marker(state_dir))

        assert said == (f"StateUnusable: cannot read {state_dir}/state.json: Permission denied (it belongs to user"
                        " root, not to user nobody who runs this: a command run as root? Give the folder back:"
                        f" chown -R nobody: {state_dir})")
    finally:
        shutil.rmtree(folder)


# --- the commands, as an operator runs them ---------------------------------------------------------

RUN_TIME = "2026-11-20T12:30:00Z"


@pytest.fixture
def operator(tmp_path, sshd, sftp_root, sandbox):
    """Runs `python -m bridge --config CONFIG ...` against the sandbox and the private sshd."""
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])

    def run(*args: str, umask: int | None = None, **env: str) -> subprocess.CompletedProcess:
        environ = {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost", **env}
        return subprocess.run([sys.executable, "-m", "bridge", "--config", str(config), *args], cwd=REPO,
                              env=environ, capture_output=True, text=True, timeout=120,
                              preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    run.state = tmp_path / "state"
    return run


def test_rekey_from_the_command_line_then_the_new_key_runs_and_opens_the_spool(operator, sftp_root):
    assert operator("orders", "pull", "--now", RUN_TIME).returncode == 0
    new = new_key()

    done = operator("rekey", BRIDGE_STATE_KEY_NEW=new)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "rekey done: 5 order record(s), 5 spool file(s) and 1 backup(s) resealed with BRIDGE_STATE_KEY_NEW; make it"
        " the BRIDGE_STATE_KEY now (replace the credential), then start the service"]
    assert operator("orders", "pull", "--now", RUN_TIME).returncode == 2  # the old key is refused now
    again = operator("orders", "pull", "--now", "2026-11-20T13:00:00Z", BRIDGE_STATE_KEY=new)
    assert again.returncode == 0, again.stderr
    spooled = sorted((operator.state / "spool" / "wh").iterdir())[0]
    opened = subprocess.run([sys.executable, "-m", "bridge", "--config", str(operator.state.parent / "bridge.toml"),
                             "spool", "open", str(spooled)], cwd=REPO, capture_output=True, timeout=60,
                            env={**os.environ, **SECRETS, "BRIDGE_STATE_KEY": new})
    assert opened.returncode == 0 and opened.stdout == (sftp_root / spooled.name).read_bytes()
    assert "state: rekey_finished at " in operator("status").stdout


def test_a_dry_run_before_the_first_run_makes_nothing_in_the_state_folder(operator):
    operator.state.mkdir(mode=0o700)  # as Install makes it, for the service's user (a dry run may be root's)

    dry = operator("orders", "pull", "--now", RUN_TIME, "--dry-run")

    assert dry.returncode == 0, dry.stderr
    assert "files=5" in dry.stdout
    assert list(operator.state.iterdir()) == []  # no ledger another user would then own
    assert operator("orders", "pull", "--now", RUN_TIME).returncode == 0


def test_a_lost_ledger_refuses_until_fresh_start_which_status_then_shows(operator, sandbox):
    assert operator("orders", "pull", "--now", RUN_TIME).returncode == 0
    for path in operator.state.glob("ledger.sqlite*"):
        path.unlink()

    refused = operator("orders", "pull", "--now", RUN_TIME)
    status = operator("status")
    fresh = operator("fresh-start", "--from", "2026-11-20T12:00:00Z")
    after = operator("orders", "pull", "--now", "2026-11-20T13:00:00Z")

    assert refused.returncode == 2 and "fresh-start --from TIME" in refused.stderr
    lines = status.stdout.splitlines()
    assert status.returncode == 0 and lines[1].startswith("  1. a run would refuse the state folder: the ledger")
    assert [line for line in lines if line.startswith("STATE: a run would refuse: the ledger")]
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.splitlines()[0] == ("fresh start recorded: orders updated from 2026-11-20T12:00:00Z on"
                                            " are pulled by the next run")
    assert after.returncode == 0, after.stderr
    assert "window=2026-11-20T12:00:00Z/2026-11-20T12:30:00Z" in after.stdout
    assert "state: fresh_start at " in operator("status").stdout


def test_backup_now_lists_the_backups_and_a_restored_one_needs_accept_restore(operator):
    assert operator("orders", "pull", "--now", RUN_TIME).returncode == 0
    taken = operator("backup")
    assert taken.returncode == 0, taken.stderr
    backups = sorted((operator.state / "backups").iterdir())
    assert taken.stdout.splitlines()[0] == f"backup taken: {backups[-1]}"
    assert [line.split()[0] for line in taken.stdout.splitlines()[1:]] == [str(p) for p in backups]

    first = backups[0]  # the run's own backup, of 2026-11-20
    db = sqlite3.connect(operator.state / "ledger.sqlite")  # the ledger moves on
    db.execute("insert into order_events (order_id, at, kind, detail) values ('x', 't', 'note', '')")
    db.commit()
    db.close()
    assert operator("orders", "pull", "--now", "2026-11-20T13:00:00Z").returncode == 0
    for path in operator.state.glob("ledger.sqlite*"):
        path.unlink()
    shutil.copy(first, operator.state / "ledger.sqlite")

    assert operator("orders", "pull", "--now", "2026-11-20T13:30:00Z").returncode == 2
    accepted = operator("accept-restore")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.splitlines()[0] == (
        "the ledger in place is accepted: an older copy of this folder's ledger (a restored backup: it records 10"
        " events (orders seen, files taken in, packages), this folder had recorded 11 by its last run); it had pulled orders up to 2026-11-20T12:00:00Z; the next run continues from its"
        " bookmark")
    assert operator("orders", "pull", "--now", "2026-11-20T13:30:00Z").returncode == 0


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_every_file_with_buyer_data_is_the_owners_only_whatever_the_umask(operator, tmp_path, umask):
    out = tmp_path / "dry"
    dry = operator("orders", "pull", "--now", RUN_TIME, "--dry-run", "--out", str(out), umask=umask)
    assert dry.returncode == 0, dry.stderr
    assert operator("orders", "pull", "--now", RUN_TIME, umask=umask).returncode == 0

    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777
             for p in [operator.state, *operator.state.rglob("*"), *out.rglob("*")]}

    folders = {path: mode for path, mode in modes.items() if (tmp_path / path).is_dir()}
    files = {path: mode for path, mode in modes.items() if path not in folders}
    assert set(folders.values()) == {0o700} and set(files.values()) == {0o600}, modes
    assert "state/ledger.sqlite" in files and "state/bridge.lock" in files and "state/state.json" in files
    assert any(p.startswith("state/spool/wh/") for p in files) and any(p.startswith("dry/wh/") for p in files)
    assert any(p.startswith("state/backups/") for p in files)


def test_the_unit_stops_restarting_a_service_that_cannot_start():
    unit = (REPO / "systemd" / "fbm-bridge.service").read_text()
    sections: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in unit.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            sections.setdefault(section, {}).setdefault(key, []).append(value)

    # StartLimit* belong in [Unit]: systemd ignores them (with a warning) in [Service].
    assert sections["Unit"]["StartLimitIntervalSec"] == ["600"] and sections["Unit"]["StartLimitBurst"] == ["5"]
    assert sections["Service"]["RestartPreventExitStatus"] == ["2"]  # a person must act: no restart
