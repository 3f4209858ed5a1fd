"""Golden stock files: each shipped mapping's stock file becomes exactly the feed document pinned
beside it in samples/<mapping>/stock/, and that document follows Amazon's listings feed schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from amazon_models import validate_feed_schema
from bridge.mapping import load_mapping
from harness import REPO

sys.path.insert(0, str(REPO / "samples"))
from regenerate_stock import feed_documents, golden_documents, in_flight_of, rows_of  # noqa: E402

MAPPINGS = sorted((REPO / "mappings").glob("*.toml"))
GOLDEN = golden_documents()


def test_every_shipped_mapping_has_a_stock_section_and_golden_files():
    for path in MAPPINGS:
        assert load_mapping(path).stock is not None, path
        assert any(p.parent == REPO / "samples" / path.stem / "stock" for p in GOLDEN), path
    assert {load_mapping(p).stock.format for p in MAPPINGS} == {"csv", "xml", "xlsx"}


@pytest.mark.parametrize("path", sorted(GOLDEN), ids=lambda p: p.name)
def test_stock_file_makes_the_golden_feed_document_byte_for_byte(path: Path):
    assert path.exists(), f"{path} is missing: run python samples/regenerate_stock.py"
    assert GOLDEN[path] == path.read_bytes()


@pytest.mark.parametrize("path", sorted(GOLDEN), ids=lambda p: p.name)
def test_golden_feed_documents_follow_amazons_listings_feed_schema(path: Path):
    document = json.loads(path.read_bytes())
    validate_feed_schema("listings-feed-schema-v2.json", document)
    for message in document["messages"]:
        assert message["operationType"] == "PATCH"
        assert message["patches"] == [{"op": "merge", "path": "/attributes/fulfillment_availability",
                                       "value": message["patches"][0]["value"]}]
        assert message["patches"][0]["value"][0]["fulfillment_channel_code"] == "DEFAULT"


def quantities(mapping: str) -> dict[str, tuple[int, int]]:
    """SKU -> (quantity, messageId) of a mapping's golden document."""
    path = next(p for p in GOLDEN if p.parent.parent.name == mapping)
    return {m["sku"]: (m["patches"][0]["value"][0]["quantity"], m["messageId"])
            for m in json.loads(GOLDEN[path])["messages"]}


def test_acme_sums_lots_and_bins_maps_article_numbers_and_holds_back_buffers():
    assert quantities("acme-csv") == {
        "MUG-CER-350-BLU": (1250 + 40 + 12 - 1, 2),  # "1.250": German thousands; three lots/bins
        "KAN-GLAS-1L": (5 + 4 - 3, 6),  # two ACME articles, one listing; its own buffer of 3
        "PLT-STN-27CM-4": (8 - 1, 5),
        "CST-CORK-4PK": (0, 8),  # 0 - 1 stays 0
        "TEA-INF-SS-01": (17 - 1, 9),
    }  # TEA-INF-SS-01-FBA left alone; carton 900001 is not sold on Amazon


def test_globex_subtracts_orders_in_flight_and_caps():
    folder = REPO / "samples" / "globex-xml" / "stock"
    assert in_flight_of(folder) == {"MUG-CER-350-BLU": 3, "PLT-STN-27CM-4": 1, "CST-CORK-4PK": 2}
    assert quantities("globex-xml") == {  # message ids: the line of each SKU's first <Item>
        "MUG-CER-350-BLU": (999, 3),  # 700 + 480 - 3 in flight = 1177, capped at 999
        "PLT-STN-27CM-4": (2, 13),
        "CST-CORK-4PK": (24, 18),
        "TEA-INF-SS-01": (0, 23),
    }


def test_initech_reads_numbers_and_text_cells_and_caps():
    assert quantities("initech-xlsx") == {
        "MUG-CER-350-BLU": (500, 2),  # text cell "1,250" - 2, capped at 500
        "PLT-STN-27CM-4": (12, 3),
        "CST-CORK-4PK": (0, 4),
        "TEA-INF-SS-01": (73, 5),
    }


@pytest.mark.parametrize("mapping", [p.stem for p in MAPPINGS])
def test_golden_stock_files_have_no_bad_rows_and_a_stock_time(mapping: str):
    layout = load_mapping(REPO / "mappings" / f"{mapping}.toml").stock
    folder = REPO / "samples" / mapping / "stock"
    stock_file = next(p for p in folder.iterdir() if not p.name.endswith(".json"))
    _, counted = feed_documents(stock_file, layout, in_flight_of(folder))
    assert counted.problems == []
    assert counted.stock_time is not None
    assert counted.rows == sum(1 for _ in rows_of(stock_file, layout))
