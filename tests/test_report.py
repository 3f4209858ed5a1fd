"""`fbm-bridge report`: the reconciliation workbook, after real flows (orders pulled from the SP-API
sandbox and delivered over OpenSSH, a confirmation file processed, a stock file published), opened
with openpyxl and read cell by cell."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from openpyxl import load_workbook

from shipping import GOLDEN_INPUTS, SHIP_TIME, STABLE, golden
from stocking import NOW, Stocker, clocked_sandbox, drop, load, make_config
from test_cli import bridge
from test_stock_intake import FULL, acme

from bridge.edges.amazon_shipments import AmazonShipments
from bridge.flows.shipments import ShipmentsFlow

REPORT_TIME = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
BAD_ROW = "111-0000001-0000001;KAN-GLAS-1L;x;DHL_PAKET;00340434161094042588;20.11.2026 16:55"


@pytest.fixture
def sandbox():
    with clocked_sandbox() as running:
        yield running


@pytest.fixture
def story(tmp_path, sshd, sftp_root, sandbox):
    """Five orders delivered on 2026-11-20; ACME's confirmation file (its golden rows and one bad
    row) processed that evening; a stock file with a bad row and an SKU Amazon does not know
    published on 2026-11-26."""
    config = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv", shipments=True)
    stocker = Stocker(load(config))
    try:
        stocker.deliver_orders()
        name = GOLDEN_INPUTS["acme-csv"]
        data = (golden("acme-csv") / name).read_bytes().rstrip(b"\r\n") + b"\r\n" + BAD_ROW.encode("cp1252") + b"\r\n"
        drop(Path(stocker.settings.warehouses[0].shipments_folder), name, data)
        flow = ShipmentsFlow(stocker.settings, stocker.ledger, AmazonShipments(stocker.settings.amazon, backoff=0.01),
                             sleep=lambda seconds: None)
        flow.run(SHIP_TIME - STABLE)
        flow.run(SHIP_TIME)
        drop(stocker.remote, "BESTAND_20261126.csv", acme(*FULL, "300500;x", "NOT-LISTED;9"))
        stocker.push(NOW)
    finally:
        stocker.close()
    return config


def report(config, out, *options):
    return bridge("report", "--out", str(out), "--now", "2026-11-27T08:00:00Z", *options, config=config)


def test_dump(story, tmp_path):
    out = tmp_path / "r.xlsx"
    done = report(story, out, "--from", "2026-11-01", "--to", "2026-11-30")
    print(done.stdout, done.stderr)
    book = load_workbook(out)
    for sheet in book.worksheets:
        print("==", sheet.title, sheet.freeze_panes, sheet.auto_filter.ref,
              {k: v.width for k, v in sheet.column_dimensions.items()})
        for row in sheet.iter_rows():
            print([(c.value, c.number_format) if c.is_date else c.value for c in row])
    assert 0
