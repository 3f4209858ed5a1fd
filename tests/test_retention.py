"""Retention: what the bridge keeps with buyer data is purged on time, nothing more, and logged.

A real state folder: orders delivered over the real sshd from the sandbox at RUN_TIME, confirmation
files taken from a local staff folder, the day's ledger backup. The clock is a parameter: purges
are run at times just inside and just past `retention.pii_days` / `retention.spool_days` (30).
Counted from delivery to the warehouse, never later than Amazon's "30 days after shipment".
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from bridge import state
from bridge.flows import retention
from bridge.flows.orders import BOOKMARK, RunReport
from bridge.flows.resend import resend
from bridge.ledger import Ledger, OrderStatus
from bridge.sealing import Sealer
from harness import RUN_TIME, SAMPLES, Bridge, load, sftp_warehouse, write_config
from shipping import GOLDEN_INPUTS, SHIP_TIME, Shipper, golden, make_config

DAYS = timedelta(days=30)
SECOND = timedelta(seconds=1)
ORDERS = {"111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003", "203-0000004-0000004",
          "111-0000005-0000005"}


@pytest.fixture
def delivered(tmp_path, sshd, sftp_root, sandbox) -> Bridge:
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])
    bridge = Bridge(load(config))
    assert bridge.run(RUN_TIME).delivered_orders == len(ORDERS)
    return bridge


def spool(bridge: Bridge) -> set[str]:
    return {p.name for p in (bridge.settings.spool_dir / "wh").iterdir()}


def with_buyer_data(ledger: Ledger) -> set[str]:
    return {s.order_id for s in ledger.orders_in(*OrderStatus) if s.order.ship_to is not None}


def test_just_inside_the_window_everything_stays(delivered):
    kept = spool(delivered)

    purged = retention.purge(delivered.settings, delivered.ledger, RUN_TIME + DAYS - SECOND)

    assert (purged.records, purged.spool_files) == (0, 0)
    assert spool(delivered) == kept and len(kept) == len(ORDERS)
    assert with_buyer_data(delivered.ledger) == ORDERS
    assert purged.oldest_kept == "2026-11-20T12:30:00Z"


def test_past_the_window_buyer_data_and_spool_copies_go_and_the_rest_stays(delivered, sftp_root):
    drop = {p.name: p.read_bytes() for p in sftp_root.iterdir()}
    lines = {s.order_id: s.order.lines for s in delivered.ledger.orders_in(OrderStatus.DELIVERED)}

    purged = retention.purge(delivered.settings, delivered.ledger, RUN_TIME + DAYS + SECOND)

    assert (purged.records, purged.spool_files, purged.oldest_kept) == (len(ORDERS), len(ORDERS), None)
    assert spool(delivered) == set()
    assert with_buyer_data(delivered.ledger) == set()
    stored = delivered.ledger.orders_in(OrderStatus.DELIVERED)
    assert {s.order_id: s.order.lines for s in stored} == lines  # shipments up still needs them
    assert {(s.order.buyer_name, s.order.buyer_email) for s in stored} == {("", "")}
    assert {p.name: p.read_bytes() for p in sftp_root.iterdir()} == drop  # the warehouse's drop is theirs
    assert delivered.ledger.order_row("302-0000003-0000003")["pii_purged_at"] == "2026-12-20T12:30:01Z"


def test_orders_not_delivered_keep_their_data_until_they_are(tmp_path, sshd, sftp_root, sandbox):
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url, warehouses=[
        sftp_warehouse("wh", "acme-csv", sshd, sftp_root, ship_to_countries=["DE"])])
    bridge = Bridge(load(config))
    bridge.run(RUN_TIME)
    held = {s.order_id for s in bridge.ledger.orders_in(OrderStatus.HELD)}
    assert held and "302-0000003-0000003" not in held  # the German order was delivered

    retention.purge(bridge.settings, bridge.ledger, RUN_TIME + 10 * DAYS)

    assert with_buyer_data(bridge.ledger) == held


def test_a_resend_copy_is_kept_for_spool_days_from_its_own_delivery(delivered):
    resent = resend(delivered.flow, "302-0000003-0000003", "lost", "alice", RUN_TIME + 10 * timedelta(days=1))

    retention.purge(delivered.settings, delivered.ledger, RUN_TIME + DAYS + SECOND)
    assert spool(delivered) == {resent.name}
    retention.purge(delivered.settings, delivered.ledger, RUN_TIME + 10 * timedelta(days=1) + DAYS + SECOND)
    assert spool(delivered) == set()


def test_the_daily_backups_are_purged_the_same_way_and_keep_their_time(delivered):
    backup = state.take_backup(delivered.settings, delivered.ledger, RUN_TIME)
    taken = backup.stat().st_mtime_ns

    inside = retention.purge(delivered.settings, delivered.ledger, RUN_TIME + DAYS - SECOND)
    past = retention.purge(delivered.settings, delivered.ledger, RUN_TIME + DAYS + SECOND)

    assert (inside.backup_records, past.backup_records) == (0, len(ORDERS))
    assert backup.stat().st_mtime_ns == taken
    assert not [p for p in backup.parent.iterdir() if p.name.endswith(("-wal", "-shm"))]  # self-contained
    copy = Ledger(backup, Sealer(delivered.settings.state_key))
    try:
        assert with_buyer_data(copy) == set()
    finally:
        copy.close()


def test_a_local_staff_folders_answers_go_with_the_inbound_copies(tmp_path, sshd, sftp_root, sandbox):
    shipper = Shipper(load(make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv")))
    shipper.deliver_orders()
    shipper.local.mkdir(exist_ok=True)
    name = GOLDEN_INPUTS["acme-csv"]
    (shipper.local / name).write_bytes((golden("acme-csv") / name).read_bytes())
    shipper.ship()
    answered = {p.relative_to(shipper.local).as_posix() for p in shipper.local.rglob("*") if p.is_file()}
    assert answered == {f"archive/{name}", f"results/{Path(name).stem}.result.csv"}
    (shipper.local / "results" / "notes.txt").write_text("staff's own file")

    inside = retention.purge(shipper.settings, shipper.ledger, SHIP_TIME + DAYS - timedelta(minutes=1))
    past = retention.purge(shipper.settings, shipper.ledger, SHIP_TIME + DAYS + timedelta(minutes=1))

    assert (inside.inbound_files, inside.local_files) == (0, 0)
    assert (past.inbound_files, past.local_files) == (1, 2)
    left = {p.relative_to(shipper.local).as_posix() for p in shipper.local.rglob("*") if p.is_file()}
    assert left == {"results/notes.txt"}
    assert not [p for p in shipper.settings.inbound_dir.rglob("*") if p.is_file()]


def test_the_run_logs_one_line_a_day_restarts_included_and_whenever_something_was_purged(delivered, caplog):
    caplog.set_level(logging.INFO, logger="bridge.orders")
    bridge = delivered.restart()  # the run at RUN_TIME logged that day's line already

    def lines(now) -> list[str]:
        caplog.clear()
        bridge.ledger.set_bookmark(BOOKMARK, now - timedelta(minutes=30), now)  # as the run's pull leaves it
        bridge.flow.purge(now, RunReport())
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention ")]

    first = lines(RUN_TIME + timedelta(hours=1))
    same_day = lines(RUN_TIME + timedelta(hours=2))
    purging = lines(RUN_TIME + DAYS + SECOND)
    again = lines(RUN_TIME + DAYS + timedelta(hours=1))
    next_day = lines(RUN_TIME + DAYS + timedelta(days=1))

    assert first == [] and same_day == [] and again == []  # that day's line came before the restart (or a reload)
    assert purging == ["retention purged_records=5 purged_spool_files=5 purged_inbound_files=0 purged_local_files=0"
                       " purged_backup_records=0 oldest_kept=-"]
    assert next_day == ["retention purged_records=0 purged_spool_files=0 purged_inbound_files=0"
                        " purged_local_files=0 purged_backup_records=0 oldest_kept=-"]
    assert "Jürgen" not in caplog.text


def test_a_clock_weeks_ahead_purges_nothing_early_the_purge_follows_what_amazon_answered(delivered, caplog):
    kept = spool(delivered)
    caplog.set_level(logging.WARNING, logger="bridge.orders")

    # The machine's clock jumped 45 days: Amazon refuses windows that end in the future, so the
    # run's pull fails and the bookmark stays; its purge step must not trust the clock.
    delivered.flow.purge(RUN_TIME + timedelta(days=45), RunReport())

    assert with_buyer_data(delivered.ledger) == ORDERS and spool(delivered) == kept
    assert any(r.getMessage().startswith("retention counts to 2026-11-21T12:30:00Z, not to the clock's "
                                         "2027-01-04T12:30:00Z: the clock is ahead of the orders Amazon has answered")
               for r in caplog.records)
