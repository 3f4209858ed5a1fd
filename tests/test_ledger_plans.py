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


def aliases(statement: str) -> set[str]:
    """The names a growing table goes by in `statement` (itself and any alias)."""
    names = set()
    for table, alias in re.findall(r"\b(" + "|".join(GROWING) + r")\b(?:\s+(?:as\s+)?(\w+))?", statement, re.I):
        names.add(table)
        if alias and alias.lower() not in ("where", "set", "join", "on", "using", "order", "group", "limit", "left"):
            names.add(alias)
    return names


def full_scans(db: sqlite3.Connection, statement: str) -> list[str]:
    plan = [row[3] for row in db.execute("explain query plan " + statement)]
    growing = aliases(statement)
    return [step for step in plan if step.startswith("SCAN ") and step.split()[1] in growing]


def queries(recorded: list[str]) -> list[str]:
    return sorted({s for s in recorded if not NOT_QUERIES.match(s)})


@pytest.fixture
def traced(monkeypatch):
    """Every statement run on any ledger connection opened from now on, as SQLite expanded it."""
    recorded: list[str] = []
    connect = sqlite3.connect

    def traced_connect(*args, **kwargs):
        db = connect(*args, **kwargs)
        db.set_trace_callback(recorded.append)
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
