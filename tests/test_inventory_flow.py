"""Stock up, end to end against the SP-API sandbox: a parsed stock file is computed, gated,
submitted as JSON_LISTINGS_FEED documents, polled and reported back to its rows; a crash at any
step, restarted, never submits a document twice."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

import sp_api.auth.access_token_client as token_cache
from amazon_models import validate_feed_schema
from bridge.config import AmazonSettings
from bridge.edges.amazon_feeds import AmazonFeeds
from bridge.flows.inventory import InventoryFlow, StockFile
from bridge.ledger import Ledger, StockFeedStatus, StockFileStatus
from bridge.mapping import StockColumns, StockLayout, load_mapping
from bridge.sandbox.spapi import SpApiSandbox, load_seed
from bridge.formats.readers import Row
from harness import MARKETPLACES, REPO, SECRETS, SEED

sys.path.insert(0, str(REPO / "samples"))
from regenerate_stock import in_flight_of, rows_of  # noqa: E402

NOW = datetime(2026, 11, 26, 22, 0, tzinfo=timezone.utc)
LATER = NOW + timedelta(hours=1)
LAYOUT = StockLayout(format="csv", quantity_means="available", columns=StockColumns(sku="SKU", quantity="Qty"))
KNOWN = ["CST-CORK-4PK", "KAN-GLAS-1L", "MUG-CER-350-BLU", "PLT-STN-27CM-4", "TEA-INF-SS-01"]


class Crash(BaseException):
    """A crash at a checkpoint: nothing in the flow catches it, like a kill -9."""


@pytest.fixture
def sandbox():
    token_cache.cache.clear()
    clock = {"now": NOW}
    with SpApiSandbox(load_seed(SEED), clock=lambda: clock["now"]) as running:
        running.test_clock = clock
        yield running


class Bridge:
    """One process's worth of stock-up objects over a state folder; `restart()` is a new process."""

    def __init__(self, sandbox, state: Path, layout: StockLayout = LAYOUT, checkpoint=None, **options):
        self.sandbox, self.state, self.layout, self.options = sandbox, state, layout, options
        self.ledger = Ledger(state / "ledger.sqlite", None)
        self.feeds = AmazonFeeds(AmazonSettings(
            seller_id="A3TESTSELLER", endpoint=sandbox.url, token_url=sandbox.token_url,
            marketplaces=tuple(MARKETPLACES), orders_api="2026-01-01", timeout_seconds=5.0,
            max_throttle_wait_seconds=300.0, client_id=SECRETS["BRIDGE_LWA_CLIENT_ID"],
            client_secret=SECRETS["BRIDGE_LWA_CLIENT_SECRET"], refresh_token=SECRETS["BRIDGE_LWA_REFRESH_TOKEN"],
        ), sleep=lambda seconds: None, backoff=0.01)
        self.flow = InventoryFlow(self.ledger, self.feeds, warehouse="acme", layout=layout,
                                  seller_id="A3TESTSELLER", marketplace_id=MARKETPLACES[0],
                                  folder=state / "stock", checkpoint=checkpoint, **options)

    def restart(self, checkpoint=None) -> "Bridge":
        self.ledger.close()
        self.feeds.close()
        return Bridge(self.sandbox, self.state, self.layout, checkpoint, **self.options)


@pytest.fixture
def bridge(sandbox, tmp_path):
    made = Bridge(sandbox, tmp_path)
    yield made
    made.ledger.close()


def stock(name: str, *records: tuple[str, str], at: datetime = NOW) -> StockFile:
    rows = [Row(n, {"SKU": sku, "Qty": qty}) for n, (sku, qty) in enumerate(records, 2)]
    return StockFile(name, hashlib.sha256(repr((name, rows)).encode()).hexdigest(), at, rows)


def full_stock(name="BESTAND_1.csv", at=NOW, **quantities) -> StockFile:
    values = {sku: "10" for sku in KNOWN} | quantities
    return stock(name, *((sku, qty) for sku, qty in values.items() if qty is not None), at=at)


def submitted(sandbox) -> list[dict]:
    return [json.loads(feed["document"]) for feed in sandbox.feeds.values()]


def published(ledger: Ledger) -> dict[str, int]:
    return {sku: quantity for sku, quantity, _ in ledger.published_levels()}


def test_a_stock_file_is_published_and_every_sku_recorded(bridge, sandbox):
    outcome = bridge.flow.push(full_stock(), NOW)
    assert outcome.status == "published" and outcome.errors == []
    assert (outcome.rows, outcome.skus, outcome.documents, outcome.issues) == (5, 5, 1, [])
    (document,) = submitted(sandbox)
    validate_feed_schema("listings-feed-schema-v2.json", document)
    assert [(m["messageId"], m["sku"]) for m in document["messages"]] == list(zip(range(2, 7), KNOWN))
    assert published(bridge.ledger) == {sku: 10 for sku in KNOWN}
    assert outcome.summary().startswith("stock file=BESTAND_1.csv status=published rows=5 bad_rows=0 skus=5")


@pytest.mark.parametrize("mapping", ["acme-csv", "globex-xml", "initech-xlsx"])
def test_golden_stock_files_go_to_amazon_byte_for_byte(sandbox, tmp_path, mapping):
    layout = load_mapping(REPO / "mappings" / f"{mapping}.toml").stock
    folder = REPO / "samples" / mapping / "stock"
    source = next(p for p in folder.iterdir() if not p.name.endswith(".json"))
    seen = []
    in_flight = in_flight_of(folder)
    made = Bridge(sandbox, tmp_path, layout, in_flight=lambda at: seen.append(at) or in_flight)
    outcome = made.flow.push(StockFile(source.name, hashlib.sha256(source.read_bytes()).hexdigest(), NOW,
                                       rows_of(source, layout)), NOW)
    assert outcome.status == "published", outcome
    (feed,) = sandbox.feeds.values()
    assert feed["document"] == (folder / f"{source.name}.feed-0001.json").read_bytes()
    assert feed["contentType"] == "application/json; charset=UTF-8"
    if layout.quantity_means == "on_hand":
        assert seen == [datetime(2026, 11, 27, 4, 0, tzinfo=timezone.utc)]  # the file's <CountedAt>
    made.ledger.close()


def test_amazons_errors_and_warnings_are_mapped_back_to_sku_and_row(bridge, sandbox):
    sandbox.listing_warnings["KAN-GLAS-1L"] = "Attributes tagged as relevant_attributes are incomplete."
    outcome = bridge.flow.push(stock("B.csv", ("MUG-CER-350-BLU", "4"), ("KAN-GLAS-1L", "2"), ("NOT-LISTED", "9"),
                                     ("TEA-INF-SS-01", "abc")), NOW)
    assert outcome.status == "published"
    assert [(i["source"], i["row"], i["sku"], i["severity"], i["message"]) for i in outcome.issues] == [
        ("file", 5, "TEA-INF-SS-01", "error", "'abc' is not a number"),
        ("amazon", 3, "KAN-GLAS-1L", "WARNING", "Attributes tagged as relevant_attributes are incomplete."),
        ("amazon", 4, "NOT-LISTED", "ERROR", "SKU 'NOT-LISTED' does not exist for this selling partner"),
    ]
    assert published(bridge.ledger) == {"KAN-GLAS-1L": 2, "MUG-CER-350-BLU": 4}  # NOT-LISTED was rejected
    assert outcome.bad_rows == 1


def test_a_gzipped_report_reads_the_same(bridge, sandbox):
    sandbox.gzip_results = True
    outcome = bridge.flow.push(stock("B.csv", ("MUG-CER-350-BLU", "4"), ("NOT-LISTED", "9")), NOW)
    assert [(i["row"], i["sku"]) for i in outcome.issues] == [(3, "NOT-LISTED")]


def test_more_than_25000_skus_go_as_several_documents(bridge, sandbox):
    skus = [f"SKU-{n:06d}" for n in range(25_001)]
    sandbox.known_skus.update(skus)
    outcome = bridge.flow.push(stock("BIG.csv", *((sku, "3") for sku in skus)), NOW)
    assert (outcome.status, outcome.documents, outcome.skus) == ("published", 2, 25_001)
    documents = submitted(sandbox)
    assert [len(d["messages"]) for d in documents] == [25_000, 1]
    assert documents[1]["messages"][0]["sku"] == "SKU-025000"
    validate_feed_schema("listings-feed-schema-v2.json", documents[1])
    assert len(published(bridge.ledger)) == 25_001


def test_on_hand_subtracts_the_orders_in_flight_at_the_files_time(sandbox, tmp_path):
    asked = []
    made = Bridge(sandbox, tmp_path, replace(LAYOUT, quantity_means="on_hand"),
                  in_flight=lambda at: asked.append(at) or {"MUG-CER-350-BLU": 3})
    made.flow.push(stock("B.csv", ("MUG-CER-350-BLU", "10"), ("KAN-GLAS-1L", "1"), at=NOW), NOW + timedelta(hours=2))
    assert asked == [NOW]
    assert published(made.ledger) == {"MUG-CER-350-BLU": 7, "KAN-GLAS-1L": 1}
    made.ledger.close()


def test_on_hand_without_orders_in_flight_is_a_setup_error(bridge):
    from bridge.errors import FixTheSetup

    with pytest.raises(FixTheSetup, match="quantity_means = 'on_hand' needs the orders in flight"):
        InventoryFlow(bridge.ledger, bridge.feeds, warehouse="acme", layout=replace(LAYOUT, quantity_means="on_hand"),
                      seller_id="A3", marketplace_id=MARKETPLACES[0], folder=bridge.state / "stock")


# --- the gates, through the flow ------------------------------------------------------------

def test_a_file_missing_many_skus_is_held_then_published_with_force(bridge, sandbox):
    bridge.flow.push(full_stock("DAY1.csv", at=NOW), NOW)
    held = bridge.flow.push(full_stock("DAY2.csv", at=LATER, **{"KAN-GLAS-1L": None, "MUG-CER-350-BLU": "50"}), LATER)
    assert held.status == "held" and held.needs_a_person
    assert held.reason == ("held: 1 of the 5 SKUs published lately (20.0%) are missing from this file, "
                           "more than the limit of 10% (e.g. KAN-GLAS-1L)")
    assert len(sandbox.feeds) == 1 and published(bridge.ledger)["MUG-CER-350-BLU"] == 10
    forced = bridge.flow.force_held(LATER)
    assert forced.status == "published"
    assert forced.reason.startswith("published with --force, overriding: 1 of the 5 SKUs published lately")
    assert len(sandbox.feeds) == 2 and published(bridge.ledger)["MUG-CER-350-BLU"] == 50
    assert bridge.ledger.stock_file_by_id(forced.file_id).forced


def test_force_on_a_new_file_publishes_it_at_once_and_says_so(bridge, sandbox):
    bridge.flow.push(full_stock("DAY1.csv", at=NOW), NOW)
    outcome = bridge.flow.push(full_stock("DAY2.csv", at=LATER, **{s: "0" for s in KNOWN}), LATER, force=True)
    assert outcome.status == "published"
    assert outcome.reason == ("published with --force, overriding: 5 of the 5 SKUs in stock on Amazon (100.0%) "
                              "would drop to zero, more than the limit of 20% (e.g. CST-CORK-4PK, KAN-GLAS-1L, "
                              "MUG-CER-350-BLU)")


def test_a_file_older_than_the_last_published_is_held(bridge, sandbox):
    bridge.flow.push(full_stock("DAY2.csv", at=LATER), LATER)
    outcome = bridge.flow.push(full_stock("DAY1.csv", at=NOW), LATER)
    assert outcome.status == "held"
    assert outcome.reason == ("held: the file's stock time 2026-11-26T22:00:00Z is older than the last published "
                              "file's (DAY2.csv, 2026-11-26T23:00:00Z)")


def test_an_empty_file_is_held_and_cannot_be_forced(bridge, sandbox):
    outcome = bridge.flow.push(stock("EMPTY.csv"), NOW)
    assert (outcome.status, outcome.reason) == (
        "held", "held: the file has no stock rows (it is empty or has only a header)")
    forced = bridge.flow.force_held(NOW)
    assert forced.status == "held" and forced.needs_a_person
    assert forced.errors == ["stock file EMPTY.csv cannot be forced: there is nothing to send (held: the file has "
                             "no stock rows (it is empty or has only a header))"]
    assert sandbox.feeds == {}


def test_a_newer_file_supersedes_a_held_one(bridge, sandbox):
    bridge.flow.push(full_stock("DAY1.csv", at=NOW), NOW)
    bridge.flow.push(full_stock("DAY2.csv", at=LATER, **{s: "0" for s in KNOWN}), LATER)
    day3 = bridge.flow.push(full_stock("DAY3.csv", at=LATER + timedelta(days=1)), LATER + timedelta(days=1))
    assert day3.status == "published"
    (superseded,) = bridge.ledger.stock_files_in(StockFileStatus.SUPERSEDED)
    assert superseded.name == "DAY2.csv"
    assert superseded.reason == ("superseded by the newer stock file DAY3.csv (held: 5 of the 5 SKUs in stock on "
                                 "Amazon (100.0%) would drop to zero, more than the limit of 20% (e.g. "
                                 "CST-CORK-4PK, KAN-GLAS-1L, MUG-CER-350-BLU))")
    assert bridge.flow.force_held(LATER) is None


def test_the_same_file_twice_is_submitted_once(bridge, sandbox):
    first = bridge.flow.push(full_stock(), NOW)
    again = bridge.flow.push(full_stock(), LATER)
    assert again.already_recorded and again.file_id == first.file_id and again.status == "published"
    assert len(sandbox.feeds) == 1


def test_the_dry_run_shows_the_verdict_and_documents_and_records_nothing(bridge, sandbox, tmp_path):
    bridge.flow.push(full_stock("DAY1.csv", at=NOW), NOW)
    preview = bridge.flow.preview(full_stock("DAY2.csv", at=LATER, **{"KAN-GLAS-1L": None}), out_dir=tmp_path / "out")
    assert not preview.verdict.publish and preview.comparison.missing == 1
    (path,) = preview.documents
    validate_feed_schema("listings-feed-schema-v2.json", json.loads(path.read_bytes()))
    assert "gates: held: 1 of the 5 SKUs" in preview.summary()
    assert len(bridge.ledger.stock_files_in(*StockFileStatus)) == 1 and len(sandbox.feeds) == 1


def test_a_fatal_feed_fails_the_file_for_a_person_and_publishes_nothing(bridge, sandbox, monkeypatch):
    from bridge.sandbox import spapi_feeds

    monkeypatch.setattr(spapi_feeds, "_listings", lambda feed_id, *rest: spapi_feeds._fatal(
        feed_id, "A3TESTSELLER", "Item 'Feed' cannot be parsed: internal error"))
    outcome = bridge.flow.push(full_stock(), NOW)
    assert outcome.status == "failed" and outcome.needs_a_person
    assert outcome.reason == "document 1 fatal: Amazon: FATAL"
    assert [(i["row"], i["message"]) for i in outcome.issues] == [(None, "Item 'Feed' cannot be parsed: internal error")]
    assert published(bridge.ledger) == {}


def test_a_feed_still_processing_is_polled_again_by_the_next_run(sandbox, tmp_path):
    made = Bridge(sandbox, tmp_path, max_wait_seconds=60)
    sandbox.feed_polls_until_done = 50  # Amazon takes its time
    outcome = made.flow.push(full_stock(), NOW)
    assert outcome.status == "submitting"
    waiting = made.flow.push(full_stock("DAY2.csv", at=LATER), LATER)
    assert waiting.status == "not recorded"
    assert waiting.errors == ["stock file BESTAND_1.csv is still with Amazon; DAY2.csv waits for it"]
    sandbox.feed_polls_until_done = 1
    (resumed,) = made.restart().flow.resume(LATER)
    assert resumed.status == "published" and len(sandbox.feeds) == 1


# --- crash and restart ----------------------------------------------------------------------

STEPS = ["recorded", "document_created", "uploaded", "submitting", "feed_created", "submitted",
         "report_fetched", "reported"]


def crash_at(step: str):
    def checkpoint(reached: str) -> None:
        if reached == step:
            raise Crash(step)
    return checkpoint


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_restarted_submits_each_document_once(sandbox, tmp_path, step):
    skus = KNOWN + [f"SKU-{n:03d}" for n in range(7)]
    sandbox.known_skus.update(skus)
    file = stock("BESTAND.csv", *((sku, "5") for sku in skus))
    crashing = Bridge(sandbox, tmp_path, checkpoint=crash_at(step), per_document=5)
    with pytest.raises(Crash):
        crashing.flow.push(file, NOW)
    sandbox.test_clock["now"] = NOW + timedelta(minutes=5)
    restarted = crashing.restart()
    outcome = restarted.flow.push(file, NOW + timedelta(minutes=5))
    assert outcome.status == "published", outcome
    documents = submitted(sandbox)
    assert [len(d["messages"]) for d in documents] == [5, 5, 2]  # each document exactly once
    assert sorted(m["sku"] for d in documents for m in d["messages"]) == sorted(skus)
    assert published(restarted.ledger) == {sku: 5 for sku in skus}
    feeds = restarted.ledger.stock_feeds(outcome.file_id)
    assert [f.adopted for f in feeds] == [step == "feed_created", False, False]
    restarted.ledger.close()


def test_an_interrupted_create_feed_is_not_resent_on_the_same_run(sandbox, tmp_path):
    made = Bridge(sandbox, tmp_path)
    sandbox.fail_next("createFeed", 500)  # Amazon's answer is lost; nobody knows if the feed exists
    outcome = made.flow.push(full_stock(), NOW)
    assert outcome.status == "submitting" and sandbox.feeds == {}
    assert outcome.errors[0].startswith("createFeed for document ")
    assert outcome.errors[0].endswith("Amazon may have created the feed")
    sandbox.test_clock["now"] = NOW + timedelta(minutes=5)
    again = made.flow.resume(NOW + timedelta(minutes=5))
    assert again[0].status == "published" and len(sandbox.feeds) == 1  # none was found: sent once


def test_an_interrupted_create_feed_with_foreign_feeds_around_is_left_to_a_person(sandbox, tmp_path):
    crashing = Bridge(sandbox, tmp_path, checkpoint=crash_at("feed_created"))
    with pytest.raises(Crash):
        crashing.flow.push(full_stock(), NOW)
    foreign(sandbox)  # another tool of the seller's submitted a listings feed meanwhile
    restarted = crashing.restart()
    outcome = restarted.flow.push(full_stock(), NOW + timedelta(minutes=5))
    assert outcome.status == "failed" and outcome.needs_a_person
    assert "createFeed was interrupted and Amazon has 2 listings feeds from then that the bridge did not record" \
        in outcome.reason
    assert len(sandbox.feeds) == 2  # never resent
    assert restarted.ledger.stock_feeds(outcome.file_id)[0].status == StockFeedStatus.IN_DOUBT


def test_a_foreign_feed_is_not_taken_for_ours(sandbox, tmp_path):
    crashing = Bridge(sandbox, tmp_path, checkpoint=crash_at("submitting"))
    with pytest.raises(Crash):
        crashing.flow.push(full_stock(), NOW)  # crashed before createFeed: Amazon has nothing of ours
    foreign(sandbox)
    restarted = crashing.restart()
    outcome = restarted.flow.push(full_stock(), NOW + timedelta(minutes=5))
    assert outcome.status == "failed" and outcome.needs_a_person
    assert "processed 1 messages, this document has 5: it is not this document" in outcome.reason
    assert published(restarted.ledger) == {}


def foreign(sandbox) -> None:
    with httpx.Client(base_url=sandbox.url) as api:
        api.headers["x-amz-access-token"] = api.post("/auth/o2/token", data={
            "grant_type": "refresh_token", "client_id": "other-tool", "client_secret": "s",
            "refresh_token": "Atzr|other"}).json()["access_token"]
        created = api.post("/feeds/2021-06-30/documents", json={"contentType": "application/json"}).json()
        httpx.put(created["url"], content=json.dumps({"header": {"sellerId": "A3TESTSELLER", "version": "2.0"},
                                                      "messages": [{"messageId": 1, "sku": "MUG-CER-350-BLU",
                                                                    "operationType": "DELETE"}]}).encode(),
                  headers={"Content-Type": "application/json"})
        api.post("/feeds/2021-06-30/feeds", json={"feedType": "JSON_LISTINGS_FEED", "marketplaceIds": [MARKETPLACES[0]],
                                                  "inputFeedDocumentId": created["feedDocumentId"]})
