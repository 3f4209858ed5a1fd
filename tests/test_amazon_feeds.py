"""The Feeds edge against the SP-API sandbox, through python-amazon-sp-api: any feed document in,
processing status and result bytes out; the library's traps and createFeed's non-idempotence."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone

import pytest

from amazon_models import validate_feed_schema
from bridge.config import AmazonSettings
from bridge.edges.amazon_feeds import AmazonFeeds
from bridge.errors import AmazonAuthError, AmazonThrottled, AmazonUnavailable, BridgeError, CreateFeedUnknown
from harness import MARKETPLACES, SECRETS

JSON_TYPE = "application/json; charset=UTF-8"
DOCUMENT = json.dumps({"header": {"sellerId": "A3TESTSELLER", "version": "2.0"}, "messages": [
    {"messageId": 2, "sku": "MUG-CER-350-BLU", "operationType": "PATCH", "productType": "PRODUCT",
     "patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                  "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 7}]}]},
    {"messageId": 3, "sku": "NOT-LISTED", "operationType": "PATCH", "productType": "PRODUCT",
     "patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                  "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 1}]}]},
]}).encode()


def settings(sandbox, **changes) -> AmazonSettings:
    values = dict(seller_id="A3TESTSELLER", endpoint=sandbox.url, token_url=sandbox.token_url,
                  marketplaces=tuple(MARKETPLACES), orders_api="2026-01-01", timeout_seconds=5.0,
                  max_throttle_wait_seconds=300.0, client_id=SECRETS["BRIDGE_LWA_CLIENT_ID"],
                  client_secret=SECRETS["BRIDGE_LWA_CLIENT_SECRET"],
                  refresh_token=SECRETS["BRIDGE_LWA_REFRESH_TOKEN"])
    values.update(changes)
    return AmazonSettings(**values)


class Clock:
    """Monotonic time that only moves when the edge sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def feeds(sandbox, clock):
    edge = AmazonFeeds(settings(sandbox), sleep=clock.sleep, clock=clock, backoff=0.5)
    yield edge
    edge.close()


def submit(feeds, data=DOCUMENT) -> str:
    document_id, url = feeds.create_document(JSON_TYPE)
    feeds.upload(url, data, JSON_TYPE)
    return feeds.create_feed("JSON_LISTINGS_FEED", document_id, [MARKETPLACES[0]])


def test_a_feed_goes_in_as_bytes_and_its_report_comes_back(sandbox, feeds):
    feed_id = submit(feeds)
    stored = sandbox.feeds[feed_id]
    assert stored["document"] == DOCUMENT and stored["contentType"] == JSON_TYPE
    assert stored["marketplaceIds"] == [MARKETPLACES[0]]
    state = feeds.wait([feed_id], max_wait=600)[feed_id]
    assert (state.status, state.finished) == ("DONE", True)
    report = json.loads(feeds.result(state.result_document_id))
    validate_feed_schema("listings-feed-processing-report-schema-v2.json", report)
    assert [(i["messageId"], i["sku"]) for i in report["issues"]] == [(3, "NOT-LISTED")]


def test_the_upload_is_bytes_with_the_documents_content_type_and_no_five_second_limit(sandbox, feeds):
    document_id, url = feeds.create_document(JSON_TYPE)
    with pytest.raises(TypeError):
        feeds.upload(url, DOCUMENT.decode(), JSON_TYPE)  # a str would go out as ISO-8859-1
    feeds.upload(url, "{\"sku\": \"TASSE-ÄÖÜ\"}".encode(), JSON_TYPE)
    upload = [r for r in sandbox.requests if r.path.startswith("/_sandbox/uploads/")][-1]
    assert upload.headers["content-type"] == JSON_TYPE and upload.body == "{\"sku\": \"TASSE-ÄÖÜ\"}".encode()
    assert feeds._http.timeout.read == 5.0  # the configured amazon.timeout_seconds, not the library's 5 s


def test_an_upload_with_another_content_type_is_refused_by_the_storage(feeds):
    document_id, url = feeds.create_document(JSON_TYPE)
    with pytest.raises(BridgeError, match="feed document upload refused: HTTP 403"):
        feeds.upload(url, DOCUMENT, "text/plain")


def test_a_gzipped_result_is_decompressed(sandbox, feeds):
    sandbox.gzip_results = True
    state = feeds.wait([submit(feeds)], max_wait=600)
    (only,) = state.values()
    data = feeds.result(only.result_document_id)
    assert json.loads(data)["summary"]["messagesProcessed"] == 2
    stored = sandbox._documents[only.result_document_id]["data"]
    assert gzip.decompress(stored) == data


def test_polling_backs_off_until_done(sandbox, feeds, clock):
    sandbox.feed_polls_until_done = 5
    feed_id = submit(feeds)
    state = feeds.wait([feed_id], max_wait=3600)[feed_id]
    assert state.status == "DONE"
    assert clock.sleeps == [15.0, 30.0, 60.0, 120.0]


def test_polling_stops_when_the_wait_runs_out_and_says_where_the_feed_is(sandbox, feeds, clock):
    sandbox.feed_polls_until_done = 100
    feed_id = submit(feeds)
    state = feeds.wait([feed_id], max_wait=100)[feed_id]
    assert (state.status, state.finished) == ("IN_QUEUE", False)
    assert sum(clock.sleeps) == 100


def test_create_feed_is_retried_after_a_429_which_is_a_refusal(sandbox, feeds, clock):
    document_id, url = feeds.create_document(JSON_TYPE)
    feeds.upload(url, DOCUMENT, JSON_TYPE)
    sandbox.fail_next("createFeed", 429, count=2)
    feed_id = feeds.create_feed("JSON_LISTINGS_FEED", document_id, [MARKETPLACES[0]])
    assert list(sandbox.feeds) == [feed_id]
    assert [round(s) for s in clock.sleeps if s > 1] == [120, 120]  # as the rate header (0.0083/s) says


@pytest.mark.parametrize("status, body", [(500, None), (503, b""), (502, b"<html>Bad Gateway</html>")])
def test_create_feed_is_never_retried_after_an_answer_that_may_hide_a_created_feed(sandbox, feeds, status, body):
    document_id, url = feeds.create_document(JSON_TYPE)
    feeds.upload(url, DOCUMENT, JSON_TYPE)
    sandbox.fail_next("createFeed", status, count=1, body=body)
    with pytest.raises(CreateFeedUnknown, match="Amazon may have created the feed"):
        feeds.create_feed("JSON_LISTINGS_FEED", document_id, [MARKETPLACES[0]])
    assert sum(r.operation_id == "createFeed" for r in sandbox.requests) == 1


def test_listings_feeds_keep_to_five_per_five_minutes(sandbox, clock):
    edge = AmazonFeeds(settings(sandbox), sleep=clock.sleep, clock=clock)
    for _ in range(6):
        submit(edge)
    edge.close()
    assert clock.sleeps == [pytest.approx(60.0)]  # the 6th waits for the bucket


def test_get_feed_is_retried_on_5xx(sandbox, feeds):
    feed_id = submit(feeds)
    sandbox.fail_next("getFeed", 503, count=2)
    assert feeds.feed(feed_id).status == "DONE"


def test_a_download_that_keeps_failing_is_retried_then_unavailable(sandbox, feeds, clock):
    state = feeds.wait([submit(feeds)], max_wait=600)
    (only,) = state.values()
    sandbox._documents[only.result_document_id]["data"] = None  # the storage answers 404
    with pytest.raises(BridgeError, match="feed document download refused: HTTP 404"):
        feeds.result(only.result_document_id)


def test_feeds_since_lists_what_amazon_has(sandbox, feeds):
    ids = [submit(feeds) for _ in range(3)]
    found = feeds.feeds_since("JSON_LISTINGS_FEED", datetime.now(timezone.utc) - timedelta(hours=1), MARKETPLACES[0])
    assert [state.feed_id for state in found] == ids
    assert feeds.feeds_since("JSON_LISTINGS_FEED", datetime.now(timezone.utc) + timedelta(hours=1), MARKETPLACES[0]) == []


def test_refused_credentials_are_a_setup_problem(sandbox, clock):
    sandbox._credentials = {"client_id": "someone-else", "client_secret": "x", "refresh_token": "y"}
    edge = AmazonFeeds(settings(sandbox), sleep=clock.sleep, clock=clock)
    with pytest.raises(AmazonAuthError):
        edge.create_document(JSON_TYPE)
    edge.close()


def test_an_unreachable_amazon_is_retry_later(clock):
    class Nowhere:
        url = "http://127.0.0.1:9"
        token_url = "http://127.0.0.1:9/auth/o2/token"

    edge = AmazonFeeds(settings(Nowhere), sleep=clock.sleep, clock=clock, attempts=2)
    with pytest.raises(AmazonUnavailable):
        edge.feed("1")
    edge.close()


def test_throttling_beyond_the_longest_wait_is_retry_later(sandbox, clock):
    edge = AmazonFeeds(settings(sandbox, max_throttle_wait_seconds=10.0), sleep=clock.sleep, clock=clock)
    document_id, url = edge.create_document(JSON_TYPE)
    edge.upload(url, DOCUMENT, JSON_TYPE)
    sandbox.fail_next("createFeed", 429, count=1, headers={"x-amzn-RateLimit-Limit": "0.0083"})
    with pytest.raises(AmazonThrottled):
        edge.create_feed("JSON_LISTINGS_FEED", document_id, [MARKETPLACES[0]])
    edge.close()
