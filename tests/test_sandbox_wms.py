"""The simulated warehouse system writes stock files that the bridge reads as the warehouse's own:
every shipped mapping's layout, and ACME's golden count written again gives the golden feed."""

from __future__ import annotations

import io
import sys
from datetime import datetime, timezone

import pytest

from bridge.formats.readers import read_rows
from bridge.mapping import load_mapping, shipped_mappings
from bridge.sandbox.wms import Counted, render_stock
from harness import REPO

sys.path.insert(0, str(REPO / "samples"))
from regenerate_stock import feed_documents, rows_of, stock_files  # noqa: E402

COUNTED_AT = datetime(2026, 11, 26, 20, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("mapping", ["acme-csv", "globex-xml", "initech-xlsx"])
def test_a_stock_file_written_by_the_simulated_wms_reads_back_line_for_line(mapping):
    layout = load_mapping(shipped_mappings() / f"{mapping}.toml").stock
    counted = [Counted("MUG-CER-350-BLU", 1250, "L2611", "A-01-01"), Counted("KAN-GLAS-1L", 0, "", "D-01-01")]

    rows = list(read_rows(io.BytesIO(render_stock(layout, counted, COUNTED_AT)), layout.table))

    columns = layout.columns
    assert [(row.values[columns.sku], row.values[columns.quantity]) for row in rows] == [
        ("MUG-CER-350-BLU", "1250"), ("KAN-GLAS-1L", "0")]
    assert all(not row.problem for row in rows)
    if columns.lot:
        assert [row.values[columns.lot] for row in rows] == ["L2611", ""]


def test_acmes_golden_count_written_by_the_simulated_wms_makes_the_golden_feed(tmp_path):
    layout = load_mapping(shipped_mappings() / "acme-csv.toml").stock
    golden = stock_files("acme-csv")[0]
    columns = layout.columns
    counted = [Counted(row.values[columns.sku], int(row.values[columns.quantity].replace(".", "")),
                       row.values[columns.lot], row.values[columns.location]) for row in rows_of(golden, layout)]
    written = tmp_path / golden.name
    written.write_bytes(render_stock(layout, counted, COUNTED_AT))

    assert feed_documents(written, layout)[0] == feed_documents(golden, layout)[0]
