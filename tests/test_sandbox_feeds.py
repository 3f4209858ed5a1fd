"""The sandbox's Feeds API for JSON_LISTINGS_FEED: reports follow Amazon's processing report
schema, per-SKU errors for SKUs it does not know, FATAL for a broken document, GZIP results,
getFeeds, and S3's rule that an upload carries the document's Content-Type."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from amazon_models import validate_definition, validate_feed_schema
from bridge.sandbox import spapi_feeds
from bridge.sandbox.spapi import SpApiSandbox, load_seed
from harness import SEED

FEEDS = "feeds_2021-06-30.json"
REPORT_SCHEMA = "listings-feed-processing-report-schema-v2.json"
NOW = datetime(2026, 11, 27, 4, 30, tzinfo=timezone.utc)
CREDENTIALS = {"client_id": "amzn1.application-oa2-client.test", "client_secret": "secret",
               "refresh_token": "Atzr|refresh"}
JSON_TYPE = "application/json; charset=UTF-8"
US = "ATVPDKIKX0DER"


def message(n: int, sku: str, quantity=5, **changes) -> dict:
    doc = {"messageId": n, "sku": sku, "operationType": "PATCH", "productType": "PRODUCT",
           "patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                        "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}]}]}
    doc.update(changes)
    return doc


def feed(*messages: dict, header=None) -> bytes:
    return json.dumps({"header": header or {"sellerId": "A3TESTSELLER", "version": "2.0"},
                       "messages": list(messages)}).encode()


@pytest.fixture
def sandbox():
    clock = {"now": NOW}
    with SpApiSandbox(load_seed(SEED), credentials=CREDENTIALS, clock=lambda: clock["now"]) as running:
        running.test_clock = clock
        yield running


@pytest.fixture
def api(sandbox):
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        client.headers["x-amz-access-token"] = client.post(
            "/auth/o2/token", data={"grant_type": "refresh_token", **CREDENTIALS}).json()["access_token"]
        yield client


def submit(api, document: bytes, feed_type="JSON_LISTINGS_FEED", markets=(US,)) -> str:
    created = api.post("/feeds/2021-06-30/documents", json={"contentType": JSON_TYPE}).json()
    assert httpx.put(created["url"], content=document, headers={"Content-Type": JSON_TYPE}).status_code == 200
    answer = api.post("/feeds/2021-06-30/feeds", json={"feedType": feed_type, "marketplaceIds": list(markets),
                                                       "inputFeedDocumentId": created["feedDocumentId"]})
    assert answer.status_code == 202, answer.text
    return answer.json()["feedId"]


def finished(api, feed_id: str) -> tuple[dict, bytes]:
    state = api.get(f"/feeds/2021-06-30/feeds/{feed_id}").json()
    validate_definition(FEEDS, "Feed", state)
    document = api.get(f"/feeds/2021-06-30/documents/{state['resultFeedDocumentId']}").json()
    validate_definition(FEEDS, "FeedDocument", document)
    data = httpx.get(document["url"]).content
    if document.get("compressionAlgorithm") == "GZIP":
        data = gzip.decompress(data)
    return state, data


def test_report_lists_per_sku_errors_and_warnings_and_follows_the_schema(sandbox, api):
    sandbox.listing_warnings["TEA-INF-SS-01"] = "Attributes tagged as relevant_attributes are incomplete."
    feed_id = submit(api, feed(message(2, "MUG-CER-350-BLU"), message(5, "NO-SUCH-SKU"),
                               message(7, "TEA-INF-SS-01"), message(9, "KAN-GLAS-1L", -1)))
    state, data = finished(api, feed_id)
    report = json.loads(data)
    validate_feed_schema(REPORT_SCHEMA, report)
    assert state["processingStatus"] == "DONE"
    assert report["header"] == {"sellerId": "A3TESTSELLER", "version": "2.0", "feedId": feed_id}
    assert [(i["messageId"], i["sku"], i["severity"], i["code"]) for i in report["issues"]] == [
        (5, "NO-SUCH-SKU", "ERROR", spapi_feeds.UNKNOWN_SKU), (7, "TEA-INF-SS-01", "WARNING", "18448"),
        (9, "KAN-GLAS-1L", "ERROR", spapi_feeds.BAD_QUANTITY)]
    assert report["summary"] == {"errors": 2, "warnings": 1, "messagesProcessed": 4,
                                 "messagesAccepted": 2, "messagesInvalid": 2}


@pytest.mark.parametrize("case, document, why", [
    ("not JSON", b"{'header':", "not JSON"),
    ("no header", json.dumps({"messages": [message(1, "MUG-CER-350-BLU")]}).encode(), "header.sellerId is required"),
    ("version 1.0", feed(message(1, "MUG-CER-350-BLU"), header={"sellerId": "A3", "version": "1.0"}),
     "header.version must be \"2.0\", not '1.0'"),
    ("no messages", feed(), "messages must be an array of 1 to 25000 messages"),
    ("too many", feed(*(message(n, "MUG-CER-350-BLU") for n in range(1, 25_002))),
     "messages has 25001 items; at most 25000 are allowed"),
    ("repeated id", feed(message(3, "MUG-CER-350-BLU"), message(3, "TEA-INF-SS-01")),
     "messageId values must be unique within the feed"),
])
def test_a_broken_document_makes_the_feed_fatal_with_a_report_per_schema(api, case, document, why):
    state, data = finished(api, submit(api, document))
    report = json.loads(data)
    validate_feed_schema(REPORT_SCHEMA, report)
    assert state["processingStatus"] == "FATAL"
    assert len(report["issues"]) == 1 and "messageId" not in report["issues"][0]
    assert report["issues"][0]["message"].startswith("Item 'Feed' cannot be parsed: ")
    assert why in report["issues"][0]["message"]


@pytest.mark.parametrize("case, changes", [
    ("no productType", {"productType": None}),
    ("no patches", {"patches": []}),
    ("bad op", {"patches": [{"op": "upsert", "path": "/attributes/fulfillment_availability"}]}),
    ("attributes with PATCH", {"attributes": {"x": [1]}}),
    ("bad channel", {"patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                                  "value": [{"fulfillment_channel_code": "MFN", "quantity": 1}]}]}),
    ("fractional quantity", {"patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                                          "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 1.5}]}]}),
])
def test_a_message_that_breaks_the_schema_is_an_error_for_its_sku(api, case, changes):
    bad = {k: v for k, v in message(4, "TEA-INF-SS-01", **changes).items() if v is not None}
    state, data = finished(api, submit(api, feed(message(2, "MUG-CER-350-BLU"), bad)))
    report = json.loads(data)
    validate_feed_schema(REPORT_SCHEMA, report)
    assert state["processingStatus"] == "DONE"
    assert {(i["messageId"], i["sku"], i["severity"]) for i in report["issues"]} == {(4, "TEA-INF-SS-01", "ERROR")}
    assert report["summary"]["messagesAccepted"] == 1


def test_results_are_served_gzipped_when_asked_to(sandbox, api):
    sandbox.gzip_results = True
    feed_id = submit(api, feed(message(1, "MUG-CER-350-BLU")))
    state = api.get(f"/feeds/2021-06-30/feeds/{feed_id}").json()
    document = api.get(f"/feeds/2021-06-30/documents/{state['resultFeedDocumentId']}").json()
    assert document["compressionAlgorithm"] == "GZIP"
    raw = httpx.get(document["url"]).content
    assert raw[:2] == b"\x1f\x8b"
    validate_feed_schema(REPORT_SCHEMA, json.loads(gzip.decompress(raw)))


def test_an_upload_must_carry_the_documents_content_type(api):
    created = api.post("/feeds/2021-06-30/documents", json={"contentType": JSON_TYPE}).json()
    answer = httpx.put(created["url"], content=b"{}", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 403 and b"SignatureDoesNotMatch" in answer.content


def test_a_listings_feed_takes_one_marketplace(api):
    created = api.post("/feeds/2021-06-30/documents", json={"contentType": JSON_TYPE}).json()
    httpx.put(created["url"], content=feed(message(1, "MUG-CER-350-BLU")), headers={"Content-Type": JSON_TYPE})
    answer = api.post("/feeds/2021-06-30/feeds", json={"feedType": "JSON_LISTINGS_FEED",
                                                       "marketplaceIds": [US, "A2EUQ1WTGCTBG2"],
                                                       "inputFeedDocumentId": created["feedDocumentId"]})
    assert answer.status_code == 400
    validate_definition(FEEDS, "ErrorList", answer.json())
    assert "Expected a maximum of 1" in answer.json()["errors"][0]["message"]


def test_get_feeds_filters_by_type_time_and_marketplace_and_pages(sandbox, api):
    first = submit(api, feed(message(1, "MUG-CER-350-BLU")))
    sandbox.test_clock["now"] = NOW + timedelta(minutes=10)
    later = [submit(api, feed(message(1, "MUG-CER-350-BLU"))) for _ in range(3)]
    submit(api, b"<AmazonEnvelope/>", feed_type="POST_ORDER_FULFILLMENT_DATA")
    since = (NOW + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    page = api.get("/feeds/2021-06-30/feeds", params={"feedTypes": "JSON_LISTINGS_FEED", "createdSince": since,
                                                      "marketplaceIds": US, "pageSize": 2}).json()
    validate_definition(FEEDS, "GetFeedsResponse", page)
    rest = api.get("/feeds/2021-06-30/feeds", params={"nextToken": page["nextToken"]}).json()
    validate_definition(FEEDS, "GetFeedsResponse", rest)
    assert [f["feedId"] for f in page["feeds"] + rest["feeds"]] == later
    assert "nextToken" not in rest
    everything = api.get("/feeds/2021-06-30/feeds", params={"feedTypes": "JSON_LISTINGS_FEED"}).json()
    assert [f["feedId"] for f in everything["feeds"]] == [first, *later]
    assert api.get("/feeds/2021-06-30/feeds").status_code == 400  # feedTypes or nextToken


# --- POST_ORDER_FULFILLMENT_DATA: applied to the sandbox's orders like confirmShipment ------------

XML_TYPE = "text/xml; charset=UTF-8"


def fulfillment(n: int, order: str, items=(("50000001000001", 1),), carrier="<CarrierCode>UPS</CarrierCode>",
                date="2026-11-20T16:40:00Z", tracking="1Z999AA10123456784") -> str:
    lines = "".join(f"<Item><AmazonOrderItemCode>{item}</AmazonOrderItemCode><Quantity>{quantity}</Quantity></Item>"
                    for item, quantity in items)
    return (f"<Message><MessageID>{n}</MessageID><OrderFulfillment><AmazonOrderID>{order}</AmazonOrderID>"
            f"<MerchantFulfillmentID>{n}</MerchantFulfillmentID><FulfillmentDate>{date}</FulfillmentDate>"
            f"<FulfillmentData>{carrier}<ShipperTrackingNumber>{tracking}</ShipperTrackingNumber></FulfillmentData>"
            f"{lines}</OrderFulfillment></Message>")


def envelope(*messages: str, message_type="OrderFulfillment") -> bytes:
    return ("<?xml version='1.0' encoding='UTF-8'?><AmazonEnvelope><Header><DocumentVersion>1.01</DocumentVersion>"
            f"<MerchantIdentifier>A3TESTSELLER</MerchantIdentifier></Header><MessageType>{message_type}</MessageType>"
            + "".join(messages) + "</AmazonEnvelope>").encode()


def submit_xml(api, document: bytes, markets=(US,)) -> str:
    created = api.post("/feeds/2021-06-30/documents", json={"contentType": XML_TYPE}).json()
    assert httpx.put(created["url"], content=document, headers={"Content-Type": XML_TYPE}).status_code == 200
    answer = api.post("/feeds/2021-06-30/feeds", json={"feedType": "POST_ORDER_FULFILLMENT_DATA",
                                                       "marketplaceIds": list(markets),
                                                       "inputFeedDocumentId": created["feedDocumentId"]})
    assert answer.status_code == 202, answer.text
    return answer.json()["feedId"]


def test_a_fulfillment_feed_ships_what_is_valid_and_reports_each_bad_message_in_xml(sandbox, api):
    from bridge.formats.fulfillment_feed import parse_processing_report

    feed_id = submit_xml(api, envelope(
        fulfillment(1, "111-0000001-0000001", items=[("50000001000001", 2)]),
        fulfillment(2, "111-9999999-9999999"),
        fulfillment(3, "111-0000002-0000002", items=[("50000009000001", 1)]),
        fulfillment(4, "111-0000005-0000005", items=[("50000005000001", 1)]),
        fulfillment(5, "111-0000002-0000002", carrier="<CarrierCode>POSTKUTSCHE</CarrierCode>"),
        fulfillment(6, "111-0000002-0000002", carrier="<CarrierCode>Other</CarrierCode>"),
        fulfillment(7, "111-0000002-0000002", carrier="<CarrierName>Hermes Germany</CarrierName>",
                    items=[("50000002000003", 2)]),
        fulfillment(8, "111-0000002-0000002", date="20.11.2026 16:40"),
        fulfillment(9, "111-0000002-0000002", items=[("50000002000001", 7)]),
        fulfillment(10, "111-0000008-0000008", items=[("50000008000001", 1)]),
        fulfillment(11, "302-0000003-0000003", items=[("50000003000001", 1)])))

    state, data = finished(api, feed_id)
    report = parse_processing_report(data)
    assert state["processingStatus"] == "DONE"
    assert (report.status, report.processed, report.successful, report.with_error) == ("Complete", 11, 2, 9)
    assert {n: report.outcome(n) for n in range(1, 12)} == {
        1: "",
        2: "18100: AmazonOrderID 111-9999999-9999999 was not found for this seller",
        3: "18103: orderItemId 50000009000001 is not part of order 111-0000002-0000002",
        4: "18103: quantity for orderItemId 50000005000001 exceeds the unshipped quantity",
        5: "18102: CarrierCode 'POSTKUTSCHE' is not a valid carrier code; use CarrierName for other carriers",
        6: "18102: CarrierName is required when CarrierCode is Other",
        7: "",
        8: "18101: FulfillmentDate '20.11.2026 16:40' is not a valid date and time (ISO 8601, with its time zone)",
        9: "18103: quantity for orderItemId 50000002000001 exceeds the unshipped quantity",
        10: "18100: Order 111-0000008-0000008 is cancelled",
        11: "18100: order 302-0000003-0000003 belongs to marketplace A1PA6795UKMFR9, which this feed was not "
            "submitted for"}
    assert [(f["orderId"], f["via"], f["carrierCode"], f["carrierName"]) for f in sandbox.fulfillments] == [
        ("111-0000001-0000001", f"feed {feed_id}", "UPS", ""),
        ("111-0000002-0000002", f"feed {feed_id}", "Other", "Hermes Germany")]
    assert sandbox.order("111-0000001-0000001")["fulfillment"]["fulfillmentStatus"] == "SHIPPED"
    assert {i["orderItemId"]: i["fulfillment"]["quantityFulfilled"]
            for i in sandbox.order("111-0000002-0000002")["orderItems"]} == {
        "50000002000001": 0, "50000002000002": 0, "50000002000003": 2}  # only message 7 shipped anything


def test_a_document_that_is_not_an_order_fulfillment_envelope_fails_the_feed_as_a_whole(sandbox, api):
    from bridge.formats.fulfillment_feed import parse_processing_report

    for document, why in (
            (b"<AmazonEnvelope><Message>", "The XML you submitted is ill-formed at the Amazon Envelope XML level"),
            (envelope(fulfillment(1, "111-0000001-0000001"), message_type="Inventory"),
             "MessageType must be OrderFulfillment for POST_ORDER_FULFILLMENT_DATA"),
            (envelope(), "the envelope has no Message"),
            (envelope(fulfillment(1, "111-0000001-0000001"), fulfillment(1, "111-0000002-0000002")),
             "MessageID values must be unique within the document")):
        state, data = finished(api, submit_xml(api, document))
        report = parse_processing_report(data)
        assert state["processingStatus"] == "FATAL"
        assert report.document_errors()[0].description.startswith(why)
        assert report.outcome(1) == report.outcome(0)  # every message carries the document's error
    assert sandbox.fulfillments == []


def test_a_feed_still_in_queue_can_be_cancelled_and_is_then_never_processed(sandbox, api):
    sandbox.feed_polls_until_done = 5
    feed_id = submit_xml(api, envelope(fulfillment(1, "111-0000001-0000001")))
    assert api.delete(f"/feeds/2021-06-30/feeds/{feed_id}").status_code == 200
    state = api.get(f"/feeds/2021-06-30/feeds/{feed_id}").json()
    validate_definition(FEEDS, "Feed", state)
    assert state["processingStatus"] == "CANCELLED" and "resultFeedDocumentId" not in state
    assert api.delete(f"/feeds/2021-06-30/feeds/{feed_id}").status_code == 400  # only IN_QUEUE
    assert sandbox.fulfillments == []
