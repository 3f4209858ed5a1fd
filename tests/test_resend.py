"""`fbm-bridge resend ORDER_ID --reason TEXT`: the one deliberate way to deliver an order again.

A delivered order is laid out again with its warehouse's current mapping, in a file of its own
named `<name>-resend-N.<ext>`, delivered the way a run delivers (against the real sshd), and
recorded with who, when and why. An interruption anywhere converges: the same command run again,
or the service's next run, finishes the recorded file; a third file is never made.
Refusals (unknown, not delivered, purged, no reason, the drop down) are in
tests/test_bad_inputs_orders.py with their exact messages.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.errors import FixTheSetup, RetryLater
from bridge.flows.orders import RunReport
from bridge.flows.resend import resend, resend_name
from bridge.ledger import FileStatus
from harness import REPO, RUN_TIME, SAMPLES, SECRETS, Bridge, load, sftp_warehouse, write_config

ORDER = "302-0000003-0000003"
ORIGINAL = f"ACME_AUF_{ORDER}.csv"
LATER = RUN_TIME + timedelta(days=2)


class Crash(BaseException):
    """Stands for the process dying at a checkpoint (not an Exception: nothing catches it)."""


def crash_at(step: str):
    def checkpoint(name: str) -> None:
        if name == step:
            raise Crash(name)
    return checkpoint


@pytest.fixture
def config(tmp_path, sshd, sftp_root, sandbox) -> Path:
    return write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                        warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])


@pytest.fixture
def delivered(config) -> Bridge:
    """The sandbox's orders delivered to wh at RUN_TIME."""
    bridge = Bridge(load(config))
    assert bridge.run(RUN_TIME).delivered_orders
    return bridge


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command as an operator runs it, with the state key and no Amazon secret: a resend
    never asks Amazon."""
    command = [sys.executable, "-m", "bridge", "--config", str(config), *args]
    environ = {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_LWA_")}
    environ.update(BRIDGE_STATE_KEY=SECRETS["BRIDGE_STATE_KEY"], NO_PROXY="127.0.0.1,localhost", **(env or {}))
    return subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=60)


def drop(sftp_root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(sftp_root.iterdir()) if path.is_file()}


def test_the_name_is_the_mappings_with_a_resend_number_before_the_extension():
    assert resend_name("ACME_AUF_1.csv", 1) == "ACME_AUF_1-resend-1.csv"
    assert resend_name("orders.2026.xml", 2) == "orders.2026-resend-2.xml"
    assert resend_name("ORDERS", 3) == "ORDERS-resend-3"


def test_a_delivered_order_is_delivered_again_under_a_new_name_and_the_warehouse_must_be_told(
        delivered, config, sftp_root):
    before = drop(sftp_root)
    delivered.ledger.close()

    done = cli(config, "resend", ORDER, "--reason", "warehouse lost the file (ticket 4711)",
               "--now", LATER.isoformat(), env={"SUDO_USER": "alice"})

    assert done.returncode == 0, done.stderr
    name = f"ACME_AUF_{ORDER}-resend-1.csv"
    assert done.stdout.splitlines() == [
        f"order {ORDER} delivered again to wh as {name} (resend 1, by alice): tell wh it is a resend of an"
        " order they already have, or they may ship it twice"]
    after = drop(sftp_root)
    assert set(after) - set(before) == {name}
    assert {k: after[k] for k in before} == before  # the original is untouched
    assert after[name] == (SAMPLES / "acme-csv" / ORIGINAL).read_bytes()  # same mapping, same layout
    assert "Jürgen" not in done.stdout + done.stderr  # no buyer data in what is printed or logged
    assert f"delivered warehouse=wh file={name} orders=1" in done.stderr  # the resent order, counted


def test_status_order_shows_the_resend_with_who_when_and_why(delivered, config):
    delivered.ledger.close()
    assert cli(config, "resend", ORDER, "--reason", "lost  in\ntransit", "--now", LATER.isoformat(),
               env={"SUDO_USER": "alice"}).returncode == 0

    done = cli(config, "status", "--order", ORDER)

    name = f"ACME_AUF_{ORDER}-resend-1.csv"
    at = "2026-11-22T12:30:00Z"
    assert f"resend 1:       wh: {name} (delivered {at}); requested {at} by alice: lost in transit" in done.stdout
    history = done.stdout.split("history:")[1]
    assert f"resend_requested         resend 1 as {name} to wh by alice: lost in transit" in history
    assert f"resent                   resend 1 delivered as {name}" in history


def test_a_second_resend_gets_the_next_number(delivered, sftp_root):
    first = resend(delivered.flow, ORDER, "lost", "alice", LATER)
    second = resend(delivered.flow, ORDER, "lost again", "bob", LATER + timedelta(hours=1))

    assert (first.number, second.number) == (1, 2)
    assert {f"ACME_AUF_{ORDER}-resend-1.csv", f"ACME_AUF_{ORDER}-resend-2.csv"} <= set(drop(sftp_root))
    assert [(r["number"], r["requested_by"], r["reason"]) for r in delivered.ledger.resends(ORDER)] == [
        (1, "alice", "lost"), (2, "bob", "lost again")]


def test_the_current_mapping_lays_the_order_out(tmp_path, sshd, sftp_root, sandbox, delivered):
    delivered.ledger.close()
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "globex-xml", sshd, sftp_root)])
    bridge = Bridge(load(config))

    outcome = resend(bridge.flow, ORDER, "new WMS reads XML", "alice", LATER)

    assert outcome.name.endswith("-resend-1.xml")
    assert drop(sftp_root)[outcome.name].startswith(b"<?xml")


@pytest.mark.parametrize("step", ["spooled", "staged", "uploaded", "marked_uploaded", "renamed"])
def test_a_crash_at_any_step_then_the_same_resend_again_delivers_exactly_one_new_file(
        delivered, sftp_root, step):
    before = set(drop(sftp_root))
    crashing = delivered.restart(checkpoint=crash_at(step))
    with pytest.raises(Crash):
        resend(crashing.flow, ORDER, "lost", "alice", LATER)

    again = crashing.restart()
    outcome = resend(again.flow, ORDER, "lost", "alice", LATER + timedelta(minutes=5))

    new = set(drop(sftp_root)) - before
    assert new == {f"ACME_AUF_{ORDER}-resend-1.csv"}
    assert outcome.number == 1
    assert outcome.finished == (step != "spooled")  # recorded from "staged" on: finished, not made again
    assert [r["status"] for r in again.ledger.resends(ORDER)] == [FileStatus.DELIVERED]
    assert not [p for p in sftp_root.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize("step", ["staged", "uploaded", "marked_uploaded", "renamed"])
def test_a_crash_after_the_resend_is_recorded_is_finished_by_the_services_next_run(delivered, sftp_root, step):
    before = set(drop(sftp_root))
    crashing = delivered.restart(checkpoint=crash_at(step))
    with pytest.raises(Crash):
        resend(crashing.flow, ORDER, "lost", "alice", LATER)

    again = crashing.restart()
    again.flow.deliver(LATER, RunReport())

    assert set(drop(sftp_root)) - before == {f"ACME_AUF_{ORDER}-resend-1.csv"}
    assert [r["status"] for r in again.ledger.resends(ORDER)] == [FileStatus.DELIVERED]
    assert "resent" in [e["kind"] for e in again.ledger.events(ORDER)]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens on it once closed


def test_a_drop_that_is_down_leaves_the_resend_recorded_and_a_rerun_finishes_it(
        delivered, tmp_path, sshd, sftp_root, sandbox):
    before = set(drop(sftp_root))
    delivered.ledger.close()
    down = Bridge(load(write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url, warehouses=[
        sftp_warehouse("wh", "acme-csv", sshd, sftp_root, port=closed_port())])))
    with pytest.raises(RetryLater) as refused:
        resend(down.flow, ORDER, "lost", "alice", LATER)
    assert str(refused.value).startswith(f"resend 1 is recorded as ACME_AUF_{ORDER}-resend-1.csv but not"
                                         " delivered to wh yet: ")
    down.ledger.close()

    up = Bridge(load(write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url, warehouses=[
        sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])))
    outcome = resend(up.flow, ORDER, "lost", "alice", LATER + timedelta(minutes=5))

    assert outcome.finished and outcome.number == 1
    assert set(drop(sftp_root)) - before == {f"ACME_AUF_{ORDER}-resend-1.csv"}


def test_run_again_after_an_interruption_the_command_says_it_finished_the_earlier_resend(delivered, config, sftp_root):
    crashing = delivered.restart(checkpoint=crash_at("staged"))
    with pytest.raises(Crash):
        resend(crashing.flow, ORDER, "lost", "alice", LATER)
    crashing.ledger.close()

    done = cli(config, "resend", ORDER, "--reason", "lost, trying again", "--now", LATER.isoformat(),
               env={"SUDO_USER": "bob"})

    assert done.returncode == 0, done.stderr
    name = f"ACME_AUF_{ORDER}-resend-1.csv"
    assert done.stdout.splitlines() == [
        f"order {ORDER} delivered again to wh as {name} (finished resend 1 started earlier by alice): tell wh it is"
        " a resend of an order they already have, or they may ship it twice"]
    assert [p.name for p in sftp_root.iterdir() if "resend" in p.name] == [name]


def test_a_spool_copy_lost_before_it_left_is_taken_back_said_and_laid_out_again(delivered, sftp_root):
    crashing = delivered.restart(checkpoint=crash_at("staged"))
    with pytest.raises(Crash):
        resend(crashing.flow, ORDER, "lost", "alice", LATER)
    name = f"ACME_AUF_{ORDER}-resend-1.csv"
    (crashing.settings.spool_dir / "wh" / name).unlink()
    again = crashing.restart()

    with pytest.raises(FixTheSetup) as refused:
        resend(again.flow, ORDER, "lost", "alice", LATER)
    outcome = resend(again.flow, ORDER, "lost", "alice", LATER + timedelta(minutes=1))

    assert str(refused.value) == (f"resend 1 ({name}) did not go: its spool copy was missing or changed, so it was"
                                  " taken back; run the same resend again to lay the order out anew")
    assert (outcome.name, outcome.finished) == (name, False)
    assert [p.name for p in sftp_root.iterdir() if "resend" in p.name] == [name]
    assert "resend_taken_back" in [e["kind"] for e in again.ledger.events(ORDER)]


def test_an_order_shipped_in_full_is_not_resent_unless_asked_even_if_shipped(tmp_path, sshd, sftp_root, sandbox):
    import shutil

    from bridge.ledger import PackageStatus
    from shipping import GOLDEN_INPUTS, SHIP_TIME, Shipper, golden, make_config

    shipper = Shipper(load(make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv")))
    shipper.deliver_orders()
    shutil.copy(golden("acme-csv") / GOLDEN_INPUTS["acme-csv"], shipper.remote)
    shipper.ship()
    ledger = shipper.ledger

    def confirmed(order_id: str) -> int:
        return sum(p["units"] for p in ledger.packages_of(order_id) if p["status"] == PackageStatus.CONFIRMED)

    shipped = [o for o in ("111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003",
                           "203-0000004-0000004", "111-0000005-0000005")
               if (due := ledger.shipment_due_of(o)) and confirmed(o) >= due["units"]]
    assert shipped
    with pytest.raises(FixTheSetup, match=rf"^order {shipped[0]} is shipped: (\d+)/\1 units confirmed on Amazon"
                                          r" \(tracking .+\); a resend could make the warehouse ship it twice"):
        resend(shipper.orders, shipped[0], "lost", "alice", SHIP_TIME)

    resent = resend(shipper.orders, shipped[0], "lost, they know it shipped", "alice", SHIP_TIME, even_if_shipped=True)
    assert resent.name.endswith("-resend-1.csv") and (sftp_root / "in" / resent.name).exists()
