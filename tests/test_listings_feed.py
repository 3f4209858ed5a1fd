"""JSON_LISTINGS_FEED documents (checked against Amazon's schema) and the processing report read
back to SKU and stock-file row."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from amazon_models import amazon_dir, validate_feed_schema
from bridge.errors import BadRecord
from bridge.formats.listings_feed import (
    MAX_MESSAGES,
    batches,
    document_chunks,
    messages_of,
    read_report,
)
from bridge.formats.stock import StockLevel
from bridge.mapping import StockColumns, StockLayout

LAYOUT = StockLayout(format="csv", quantity_means="available", columns=StockColumns(sku="SKU", quantity="Qty"))


def document(levels, layout=LAYOUT, **options) -> bytes:
    return b"".join(document_chunks("A3TESTSELLER", levels, layout, **options))


def test_a_document_is_one_merge_patch_per_sku_and_follows_the_schema():
    data = document([StockLevel("MUG-1", 12, 2), StockLevel("PLATE-4", 0, 5)])
    doc = json.loads(data)
    validate_feed_schema("listings-feed-schema-v2.json", doc)
    assert doc["header"] == {"sellerId": "A3TESTSELLER", "version": "2.0"}
    assert doc["messages"][0] == {
        "messageId": 2, "sku": "MUG-1", "operationType": "PATCH", "productType": "PRODUCT",
        "patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                     "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 12}]}]}
    assert data.endswith(b"\n]}\n")


def test_product_type_and_handling_time_per_sku_with_defaults():
    layout = replace(LAYOUT, product_type="HOME", product_types={"MUG-1": "DRINKING_CUP"},
                     handling_time_days=2, handling_times={"PLATE-4": 5})
    doc = json.loads(document([StockLevel("MUG-1", 1, 2), StockLevel("PLATE-4", 1, 3), StockLevel("X", 1, 4)], layout))
    validate_feed_schema("listings-feed-schema-v2.json", doc)
    got = [(m["productType"], m["patches"][0]["value"][0]["lead_time_to_ship_max_days"]) for m in doc["messages"]]
    assert got == [("DRINKING_CUP", 2), ("HOME", 5), ("HOME", 2)]


def test_skus_with_quotes_backslashes_and_accents_are_escaped():
    skus = ['MUG "BLUE"', "A\\B", "TASSE-BLAU-ÄÖÜ", "€-1"]
    doc = json.loads(document([StockLevel(sku, 1, n) for n, sku in enumerate(skus, 2)]))
    validate_feed_schema("listings-feed-schema-v2.json", doc)
    assert [m["sku"] for m in doc["messages"]] == skus


def test_chunks_join_to_the_same_document_however_they_are_cut():
    levels = [StockLevel(f"S{n:05d}", n % 9, n) for n in range(2, 2500)]
    assert document(levels, chunk_messages=1) == document(levels, chunk_messages=10_000)
    assert len(list(document_chunks("A3", levels, LAYOUT, chunk_messages=1000))) == 3


def test_feeds_split_at_25000_messages_and_skip_skus_not_sent():
    levels = [StockLevel(f"SKU-{n:06d}", n % 5, n) for n in range(2, MAX_MESSAGES + 4)]
    levels.insert(7, StockLevel("HELD-BACK", None, 999_999))
    parts = list(batches(levels))
    assert [len(p) for p in parts] == [MAX_MESSAGES, 2]
    assert all(level.quantity is not None for part in parts for level in part)
    for part in parts:
        validate_feed_schema("listings-feed-schema-v2.json", json.loads(document(part)))


def test_a_document_never_has_more_than_25000_messages_or_none():
    with pytest.raises(ValueError):
        document([StockLevel("A", 1, n) for n in range(MAX_MESSAGES + 1)])
    with pytest.raises(ValueError):
        document([])


def test_messages_of_gives_sku_and_quantity_by_message_id():
    assert messages_of(document([StockLevel("MUG-1", 12, 2), StockLevel("B", 0, 7)])) == {2: ("MUG-1", 12), 7: ("B", 0)}


def test_the_processing_report_maps_every_issue_to_sku_and_row():
    messages = {4: ("My-SKU-B", 3), 5: ("My-SKU-C", 0), 6: ("My-SKU-D", 1)}
    report_doc = json.loads((amazon_dir() / "schemas" / "feeds"
                             / "listings-feed-processing-report-schema-v2.example.json").read_text())
    report_doc["issues"].append({"messageId": 6, "severity": "WARNING", "code": "18448", "message": "incomplete"})
    report_doc["issues"].append({"severity": "ERROR", "code": "4002001", "message": "Item 'Feed' cannot be parsed."})
    validate_feed_schema("listings-feed-processing-report-schema-v2.json", report_doc)
    report = read_report(json.dumps(report_doc).encode(), messages)
    assert (report.processed, report.accepted, report.invalid, report.errors) == (4, 2, 2, 3)
    assert [(i.row, i.sku, i.severity, i.code) for i in report.issues] == [
        (4, "My-SKU-B", "ERROR", "90220"), (4, "My-SKU-B", "ERROR", "90220"),
        (5, "My-SKU-C", "ERROR", "99022"), (6, "My-SKU-D", "WARNING", "18448"),
        (None, "", "ERROR", "4002001")]
    assert report.issues[2].attribute == "purchasable_offer.our_price"
    assert report.rejected() == {"My-SKU-B", "My-SKU-C"}
    assert str(report.issues[3]) == "row 6, SKU 'My-SKU-D': Amazon warning [18448]: incomplete"
    assert str(report.issues[4]) == "the whole feed: Amazon error [4002001]: Item 'Feed' cannot be parsed."


def test_an_issue_for_a_message_not_in_the_document_says_so():
    report = read_report(json.dumps({"issues": [{"messageId": 9, "sku": "X", "severity": "ERROR", "message": "m"}],
                                     "summary": {}}).encode(), {2: ("A", 1)})
    assert (report.issues[0].row, report.issues[0].sku) == (None, "X")
    assert report.issues[0].message == "m (message 9 is not in the submitted document)"


@pytest.mark.parametrize("data, why", [
    (b"<html>", "the feed's processing report is not JSON"),
    (b'{"issues": "none"}', "the feed's processing report has no list of issues"),
])
def test_a_report_that_is_not_one_is_a_bad_record(data, why):
    with pytest.raises(BadRecord, match=why):
        read_report(data, {})
