"""The ledger's stock-up state: stock files, their feed documents, issues and the quantities last
published. Only the ledger changes a status, and the database refuses one it does not know."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from bridge.ledger import Ledger, StockFeedStatus, StockFileStatus

NOW = datetime(2026, 11, 26, 22, 0, tzinfo=timezone.utc)


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger(tmp_path / "ledger.sqlite", None)
    yield opened
    opened.close()


def record(ledger: Ledger, name: str, at: datetime, status=StockFileStatus.SUBMITTING, parts=1) -> int:
    return ledger.record_stock_file(
        warehouse="acme", name=name, sha256=name * 4, stock_time=at, received_at=at, rows=3, bad_rows=1,
        skus=2, status=status, reason="", forced=False,
        documents=[(n, 2, f"acme/{name}/part-{n:04d}.json", "ab" * 32) for n in range(1, parts + 1)],
        problems=[(4, "Qty", "'x' is not a number", "error")], now=at)


def done(ledger: Ledger, feed_row: int, feed_id: str, published, at=NOW, issues=()):
    ledger.mark_stock_feed_submitting(feed_row, "doc-" + feed_id, at)
    ledger.mark_stock_feed_submitted(feed_row, feed_id, at)
    ledger.record_stock_feed_result(feed_row, StockFeedStatus.DONE, at, result_document_id="r-" + feed_id,
                                    counts=(len(published), 0, 0, 0), issues=issues, published=published)


def test_a_stock_file_is_published_when_all_its_documents_are_done(ledger):
    file_id = record(ledger, "A.csv", NOW, parts=2)
    first, second = ledger.stock_feeds(file_id)
    done(ledger, first.id, "1", [("MUG", 4)])
    assert ledger.stock_file_by_id(file_id).status == StockFileStatus.SUBMITTING
    assert ledger.stock_file_by_id(file_id).published_at == NOW  # its first document counts
    done(ledger, second.id, "2", [("CUP", 0)], issues=[(3, "X", "ERROR", "4000003", "no such SKU")])
    assert ledger.stock_file_by_id(file_id).status == StockFileStatus.PUBLISHED
    assert list(ledger.published_levels()) == [("CUP", 0, 1), ("MUG", 4, 1)]
    assert [(i["source"], i["row"], i["message"]) for i in ledger.stock_issues(file_id)] == [
        ("file", 4, "'x' is not a number"), ("amazon", 3, "no such SKU")]


def test_recording_an_outcome_twice_changes_nothing(ledger):
    file_id = record(ledger, "A.csv", NOW)
    (feed,) = ledger.stock_feeds(file_id)
    done(ledger, feed.id, "1", [("MUG", 4)])
    ledger.record_stock_feed_result(feed.id, StockFeedStatus.DONE, NOW, published=[("MUG", 99)],
                                    issues=[(2, "MUG", "ERROR", "", "again")])
    assert list(ledger.published_levels()) == [("MUG", 4, 1)]
    assert len(ledger.stock_issues(file_id)) == 1


def test_published_levels_say_which_skus_were_published_lately(ledger):
    """Lately: by the last published file, or in the week before it. A file that left SKUs out
    (forced) does not shrink the list; a SKU nobody sent for over a week drops out."""
    first = record(ledger, "A.csv", NOW)
    done(ledger, ledger.stock_feeds(first)[0].id, "1", [("MUG", 4), ("OLD", 2)], at=NOW)
    second = record(ledger, "B.csv", NOW + timedelta(days=1))
    done(ledger, ledger.stock_feeds(second)[0].id, "2", [("MUG", 5)], at=NOW + timedelta(days=1))
    assert ledger.last_published_stock().name == "B.csv"
    assert list(ledger.published_levels()) == [("MUG", 5, 1), ("OLD", 2, 1)]
    third = record(ledger, "C.csv", NOW + timedelta(days=8))
    done(ledger, ledger.stock_feeds(third)[0].id, "3", [("MUG", 6)], at=NOW + timedelta(days=8))
    assert list(ledger.published_levels()) == [("MUG", 6, 1), ("OLD", 2, 0)]


def test_the_last_published_file_is_the_one_amazon_processed_last_not_the_latest_stock_time(ledger):
    ahead = record(ledger, "TYPO.csv", NOW + timedelta(days=365))
    done(ledger, ledger.stock_feeds(ahead)[0].id, "1", [("MUG", 4)], at=NOW)
    forced = record(ledger, "TODAY.csv", NOW)
    done(ledger, ledger.stock_feeds(forced)[0].id, "2", [("MUG", 5)], at=NOW + timedelta(minutes=5))
    assert ledger.last_published_stock().name == "TODAY.csv"


def test_a_failed_document_fails_the_file_with_the_reason(ledger):
    file_id = record(ledger, "A.csv", NOW, parts=2)
    first, second = ledger.stock_feeds(file_id)
    done(ledger, first.id, "1", [("MUG", 4)])
    ledger.mark_stock_feed_in_doubt(second.id, "two unknown feeds", NOW)
    stored = ledger.stock_file_by_id(file_id)
    assert (stored.status, stored.reason) == (StockFileStatus.FAILED, "document 2 in_doubt: two unknown feeds. "
                                              f"Document 1 went through: {first.messages:,} SKUs were updated on "
                                              "Amazon; the other documents' SKUs keep their previous quantity until "
                                              "the next stock file (this one is not sent again, even if dropped again)")


def test_a_newer_file_supersedes_older_held_ones_and_force_releases_a_held_one(ledger):
    old = record(ledger, "A.csv", NOW, status=StockFileStatus.HELD)
    new = record(ledger, "B.csv", NOW + timedelta(days=1), status=StockFileStatus.HELD)
    assert ledger.stock_file_by_id(old).status == StockFileStatus.SUPERSEDED
    assert not ledger.release_held_stock(old, "forced", NOW)
    assert ledger.release_held_stock(new, "published with --force, overriding: x", NOW)
    stored = ledger.stock_file_by_id(new)
    assert (stored.status, stored.forced) == (StockFileStatus.SUBMITTING, True)


def test_a_document_moves_only_along_its_life(ledger):
    (feed,) = ledger.stock_feeds(record(ledger, "A.csv", NOW))
    with pytest.raises(RuntimeError, match="is not submitting"):
        ledger.mark_stock_feed_submitted(feed.id, "1", NOW)
    ledger.mark_stock_feed_submitting(feed.id, "doc", NOW)
    ledger.mark_stock_feed_prepared(feed.id, "never reached Amazon")
    assert ledger.stock_feeds(feed.stock_file_id)[0].status == StockFeedStatus.PREPARED


def test_the_database_refuses_a_status_it_does_not_know(ledger, tmp_path):
    file_id = record(ledger, "A.csv", NOW)
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("update stock_files set status = 'sent' where id = ?", (file_id,))
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("update stock_feeds set status = 'lost' where stock_file_id = ?", (file_id,))


def test_the_same_content_is_recorded_once(ledger):
    record(ledger, "A.csv", NOW)
    with pytest.raises(sqlite3.IntegrityError):
        record(ledger, "A.csv", NOW)
