"""The ledger's order fulfillment feed documents: which document carries which package, and
each package's final word from the document's report, recorded once."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

from bridge.ledger import FeedStatus, InboundSource, Ledger, PackageStatus

NOW = datetime(2026, 11, 20, 18, 0, tzinfo=timezone.utc)


def package(order_id: str, tracking: str) -> dict:
    return {"warehouse": "wh", "order_id": order_id, "marketplace_id": "ATVPDKIKX0DER", "tracking_number": tracking,
            "carrier_code": "UPS", "carrier_name": "", "shipping_method": "", "ship_date": "2026-11-20T16:00:00Z",
            "items": [("50000001000001", 1)]}


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger(tmp_path / "ledger.sqlite", None)
    file = opened.record_inbound("shipments", "wh", InboundSource.SFTP, "V.csv", 10, "ab" * 32, "x", "V.csv", NOW)
    rows = [(n + 2, "accepted", f"111-000000{n}-000000{n}", "SKU", "1", f"TRACK{n}", "", n) for n in range(3)]
    opened.record_shipments(file.id, rows, [package(r[2], r[5]) for r in rows], NOW)
    yield opened
    opened.close()


def test_a_document_carries_accepted_packages_which_then_go_no_other_way(ledger):
    row = ledger.record_fulfillment_feed([1, 2], "cafe", ["ATVPDKIKX0DER"], NOW)
    assert [p.id for p in ledger.fulfillment_feed_packages(row)] == [1, 2]
    assert [ledger.package(n).status for n in (1, 2, 3)] == [PackageStatus.SENT, PackageStatus.SENT,
                                                             PackageStatus.ACCEPTED]
    assert [p.id for p in ledger.packages_to_send()] == [3]  # neither confirmShipment nor another document
    with pytest.raises(RuntimeError, match="only accepted packages no document carries"):
        ledger.record_fulfillment_feed([2, 3], "beef", ["ATVPDKIKX0DER"], NOW)
    assert ledger.fulfillment_feed(row).status == FeedStatus.PREPARED


def test_the_report_gives_each_package_its_final_word_once(ledger):
    row = ledger.record_fulfillment_feed([1, 2], "cafe", ["ATVPDKIKX0DER"], NOW)
    ledger.mark_fulfillment_feed_submitting(row, "doc-1", NOW, sha256="cafe")
    ledger.mark_fulfillment_feed_submitted(row, "50000000001", NOW)
    ledger.record_fulfillment_feed_result(row, FeedStatus.DONE, NOW, outcomes={1: "", 2: "18103: too many"},
                                          counts=(2, 1, 1, 0))
    ledger.record_fulfillment_feed_result(row, FeedStatus.DONE, NOW, outcomes={1: "again", 2: ""})  # ignored
    assert [(ledger.package(n).status, ledger.package(n).message) for n in (1, 2)] == [
        (PackageStatus.CONFIRMED, ""), (PackageStatus.REJECTED, "18103: too many")]
    assert ledger.fulfillment_feed(row).status == FeedStatus.DONE and ledger.fulfillment_feed_ids() == {"50000000001"}
    assert [r["feed_id"] for r in ledger.shipment_rows(1)] == ["50000000001", "50000000001", None]


def test_a_document_in_doubt_is_final_and_answers_its_packages_with_why(ledger):
    row = ledger.record_fulfillment_feed([1], "cafe", ["ATVPDKIKX0DER"], NOW)
    ledger.mark_fulfillment_feed_submitting(row, "doc-1", NOW, sha256="cafe")
    ledger.mark_fulfillment_feed_in_doubt(row, "two unknown feeds", NOW)
    assert (ledger.package(1).status, ledger.package(1).message) == (PackageStatus.REJECTED, "two unknown feeds")
    assert [d["status"] for d in ledger.fulfillment_feed_report()] == ["in_doubt"]
    with pytest.raises(RuntimeError):
        ledger.mark_fulfillment_feed_submitted(row, "50000000009", NOW)  # never taken up again


def test_a_document_status_outside_the_enum_is_refused_by_the_database(ledger):
    row = ledger.record_fulfillment_feed([1], "cafe", ["ATVPDKIKX0DER"], NOW)
    with pytest.raises(sqlite3.IntegrityError):
        ledger._db.execute("update fulfillment_feeds set status = 'lost' where id = ?", (row,))
