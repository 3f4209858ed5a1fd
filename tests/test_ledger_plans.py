"""A run's cost grows with its own work, never with the ledger's age: every query a run (and
`status --order`) makes is answered through an index, never by reading all of `orders` or
`files`. Each statement is recorded as SQLite ran it, then asked for its query plan."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta

import pytest

from bridge.ledger import Ledger
from harness import RUN_TIME, Bridge, load, sftp_warehouse, write_config

# Tables that grow with every order and file; the plan may never read one of them whole.
GROWING = ("orders", "files", "order_events", "windows")
# Read once when a process starts its first run, not on every run: spool files a crash left
# unrecorded can only be there then. The partial index holds only files still in the spool.
ONCE_A_PROCESS = {
    "select spool_path from files where spool_deleted_at is null": ["SCAN files USING INDEX files_in_spool"],
}
NOT_QUERIES = re.compile(r"^\s*(begin|commit|rollback|pragma|create|insert into \w+ \([^)]*\) values)", re.I)


def aliases(statement: str, growing: tuple[str, ...] = GROWING) -> set[str]:
    """The names a growing table goes by in `statement` (itself and any alias)."""
    names = set()
    for table, alias in re.findall(r"\b(" + "|".join(growing) + r")\b(?:\s+(?:as\s+)?(\w+))?", statement, re.I):
        names.add(table)
        if alias and alias.lower() not in ("where", "set", "join", "on", "using", "order", "group", "limit", "left"):
            names.add(alias)
    return names


def full_scans(db: sqlite3.Connection, statement: str, growing: tuple[str, ...] = GROWING) -> list[str]:
    plan = [row[3] for row in db.execute("explain query plan " + statement)]
    names = aliases(statement, growing)
    return [step for step in plan if step.startswith("SCAN ") and step.split()[1] in names]


def queries(recorded: list[str]) -> list[str]:
    return sorted({s for s in recorded if not NOT_QUERIES.match(s)})


@pytest.fixture
def traced(monkeypatch):
    """Every statement run on any ledger connection opened from now on, as SQLite expanded it."""
    recorded: list[str] = []
    connect = sqlite3.connect

    def traced_connect(*args, **kwargs):
        db = connect(*args, **kwargs)
        if not str(args[0] if args else kwargs.get("database", "")).endswith(".scratch"):
            db.set_trace_callback(recorded.append)  # a file's scratch database is its own, deleted after
        return db

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    return recorded


def test_every_query_of_a_run_and_of_status_order_is_served_by_an_index(tmp_path, sshd, sftp_root, sandbox, traced):
    from bridge.service import order_report

    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])
    sandbox.set_pii_access(False)
    bridge = Bridge(load(config))
    traced.clear()  # opening a new ledger looks for a record to check the key with: once
    bridge.run(RUN_TIME)  # held: no address
    sandbox.set_pii_access(True)
    bridge.run(RUN_TIME + timedelta(minutes=30))  # released, rendered, delivered
    cancelled = sandbox.order("111-0000001-0000001")
    cancelled["fulfillment"]["fulfillmentStatus"] = "CANCELLED"
    cancelled["lastUpdatedTime"] = "2026-11-20T12:40:00Z"
    sandbox.add_order(cancelled)
    bridge.run(RUN_TIME + timedelta(hours=1))  # changed after delivery
    bridge.ledger.free_file_name("wh", "ACME_AUF_111-0000002-0000002.csv")
    bridge.ledger.file_orders_open(1)
    bridge.ledger.spool_files_to_delete(RUN_TIME + timedelta(days=400))
    bridge.ledger.purge_pii(RUN_TIME + timedelta(days=400), RUN_TIME + timedelta(days=400))
    order_report(bridge.settings, "111-0000001-0000001")

    ran = queries(traced)
    assert any("from orders" in s for s in ran) and any("from files" in s for s in ran)
    db = sqlite3.connect(bridge.settings.ledger_path)
    scanning = {statement: steps for statement in ran if (steps := full_scans(db, statement))}
    assert scanning == ONCE_A_PROCESS


def test_the_plan_check_finds_a_full_scan(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite", None)
    ledger.close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    assert full_scans(db, "select * from orders where payload = 'x'") == ["SCAN orders"]
    assert full_scans(db, "select f.id from files f where f.size > 3") == ["SCAN f"]
    assert full_scans(db, "select * from orders where file_id = 3") == []


# What shipments up and stock up add, and grow with every confirmation file, package and stock file
# (stock_levels does not: one row per SKU, the quantity last published).
INBOUND_GROWING = ("inbound_files", "packages", "package_lines", "shipment_rows", "shipment_due",
                   "fulfillment_feeds", "fulfillment_feed_packages", "stock_files", "stock_feeds", "stock_issues",
                   "stock_intake")
# Walks of a growing table that an index bounds: what they read does not grow with the ledger's age.
BOUNDED_WALKS = {
    # newest first through an index, one row (limit 1)
    "select * from stock_files order by stock_time desc, id desc limit 1":
        ["SCAN stock_files USING INDEX stock_files_by_time"],
    # the inbound copies still in the spool: retention.spool_days of them at most
    "select spool_path from inbound_files where spool_deleted_at is null":
        ["SCAN inbound_files USING INDEX inbound_in_spool"],
}
# `status` counts every order and package by status: through the status index, never the rows.
STATUS_COUNTS = {
    "select status, count(*) as n from orders group by status": ["SCAN orders USING COVERING INDEX orders_by_status"],
    "select status, count(*) as n from packages group by status":
        ["SCAN packages USING COVERING INDEX packages_by_status"],
    # ... and per warehouse, through the (warehouse, status) indexes
    "select warehouse, status, count(*) as n from orders group by warehouse, status":
        ["SCAN orders USING COVERING INDEX orders_by_warehouse"],
    "select warehouse, status, count(*) as n from packages group by warehouse, status":
        ["SCAN packages USING COVERING INDEX packages_by_warehouse"],
}
# Known, not wanted: `status`'s list of delivered orders not yet confirmed reads every order ever
# noted in shipment_due for the warehouses whose confirmations it tracks (a fully confirmed order is
# never taken out of it): through shipment_due_by_warehouse, so not a SCAN, but as long.
KNOWN_WAREHOUSE_READS = {"status: unconfirmed_orders": ["SEARCH d USING INDEX shipment_due_by_warehouse (warehouse=?)"]}


def test_every_query_of_a_shipments_pass_a_stock_publish_and_status_is_served_by_an_index(
        tmp_path, sshd, sftp_root, sandbox, traced):
    """Confirmation files sent by the order fulfillment feed, a stock file taken in and published,
    and `status` with both sections: no query reads a growing table whole, but for the walks an
    index bounds, status's counts and the one known read above."""
    from bridge.flows.stock_intake import StockFlow
    from bridge.report import status_report
    from shipping import GOLDEN_INPUTS, SHIP_TIME, Shipper, golden, make_config
    from stocking import GOLDEN, drop

    config = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv", shipments='send = "feed"',
                         stock_folder=str(sftp_root / "stock"))
    config.write_text(config.read_text() + '\n[stock]\nwarehouse = "wh"\n')
    shipper = Shipper(load(config))
    shipper.deliver_orders()
    traced.clear()
    name = GOLDEN_INPUTS["acme-csv"]
    drop(shipper.remote, name, (golden("acme-csv") / name).read_bytes())
    assert shipper.ship().feeds_recorded == 1
    stock = StockFlow(shipper.settings, shipper.ledger, shipper.feeds, sleep=lambda seconds: None, max_wait_seconds=60)
    drop(sftp_root / "stock", GOLDEN["acme-csv"].name, GOLDEN["acme-csv"].read_bytes())
    from stocking import NOW as publish  # the evening of the golden stock file (a later stock time is refused)
    assert stock.push(publish).all_errors == []
    report = status_report(shipper.settings, publish + timedelta(minutes=5))
    assert report["stock"]["last_published"] and report["shipments"]["packages"]["confirmed"] == 5

    ran = queries(traced)
    assert any("from packages" in s for s in ran) and any("from stock_files" in s for s in ran)
    db = sqlite3.connect(shipper.settings.ledger_path)
    scanning = {statement: steps for statement in ran
                if (steps := full_scans(db, statement, GROWING + INBOUND_GROWING))}
    unconfirmed = next(s for s in ran if "from shipment_due d join orders o" in s and "as waiting" in s)
    walk = [row[3] for row in db.execute("explain query plan " + unconfirmed) if " d " in f" {row[3]} "]
    assert {"status: unconfirmed_orders": walk} == KNOWN_WAREHOUSE_READS
    assert scanning == {**BOUNDED_WALKS, **STATUS_COUNTS}


def test_every_query_of_the_reconciliation_report_is_served_by_an_index(tmp_path, sshd, sftp_root, sandbox, traced):
    """Orders delivered, a confirmation file sent by the order fulfillment feed, a stock file taken
    in and published, then the report of their month. It reads a period's orders by when they were
    first seen (orders_by_first_seen), its files by when they were received (inbound_by_received),
    the newest stock files before its end (stock_files_by_time, a bounded number), each order's
    packages and each file's rows by key: no growing table is ever read whole."""
    from datetime import date

    from bridge.flows.reconciliation import write_report
    from bridge.flows.stock_intake import StockFlow
    from bridge.formats.reconciliation import Period
    from shipping import GOLDEN_INPUTS, SHIP_TIME, Shipper, golden, make_config
    from stocking import GOLDEN, drop

    config = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv", shipments='send = "feed"',
                         stock_folder=str(sftp_root / "stock"))
    config.write_text(config.read_text() + '\n[stock]\nwarehouse = "wh"\n')
    shipper = Shipper(load(config))
    shipper.deliver_orders()
    name = GOLDEN_INPUTS["acme-csv"]
    drop(shipper.remote, name, (golden("acme-csv") / name).read_bytes())
    assert shipper.ship().feeds_recorded == 1
    stock = StockFlow(shipper.settings, shipper.ledger, shipper.feeds, sleep=lambda seconds: None, max_wait_seconds=60)
    drop(sftp_root / "stock", GOLDEN["acme-csv"].name, GOLDEN["acme-csv"].read_bytes())
    publish = SHIP_TIME.replace(hour=22, minute=0)
    assert stock.push(publish).all_errors == []
    traced.clear()

    written = write_report(shipper.settings, shipper.ledger, Period(date(2026, 11, 1), date(2026, 11, 30)),
                           tmp_path / "november.xlsx", publish + timedelta(hours=1))

    assert (written.orders, written.feeds) == (5, 1)
    ran = queries(traced)
    assert any("from orders o" in s for s in ran) and any("from inbound_files" in s for s in ran)
    assert any("from stock_files" in s for s in ran) and any("from shipment_rows" in s for s in ran)
    db = sqlite3.connect(shipper.settings.ledger_path)
    scanning = {statement: steps for statement in ran
                if (steps := full_scans(db, statement, GROWING + INBOUND_GROWING))}
    assert scanning == {}
