"""The local SP-API sandbox speaks Amazon's wire format, checked against Amazon's own models.

Every answer is validated against the response definition of the operation's model, so the
bridge tested against the sandbox is tested against Amazon's contract, not our reading of it.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from amazon_models import (response_examples, validate_definition, validate_feed_schema)
from bridge.sandbox.spapi import SpApiSandbox, load_seed, rebase_last_updated

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

SEED = Path(__file__).resolve().parents[1] / "bridge" / "demo_data" / "sandbox-orders.json"
NOW = datetime(2026, 11, 20, 13, 0, tzinfo=timezone.utc)
CREDENTIALS = {"client_id": "amzn1.application-oa2-client.test", "client_secret": "secret",
               "refresh_token": "Atzr|refresh"}
V2026 = "orders_2026-01-01.json"
V0 = "ordersV0.json"
TOKENS = "tokens_2021-03-01.json"
FEEDS = "feeds_2021-06-30.json"
SEARCH = "/orders/2026-01-01/orders"
US = "ATVPDKIKX0DER"
WINDOW = {"lastUpdatedAfter": "2026-11-20T09:00:00Z", "lastUpdatedBefore": "2026-11-20T12:00:00Z"}


@pytest.fixture(scope="module")
def seed() -> list[dict]:
    return load_seed(SEED)


@pytest.fixture
def sandbox(seed):
    with SpApiSandbox(seed, credentials=CREDENTIALS, clock=lambda: NOW) as running:
        yield running


@pytest.fixture
def api(sandbox):
    """An httpx client logged in through LWA, like the bridge."""
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        token = client.post("/auth/o2/token", data={"grant_type": "refresh_token",
                                                    **CREDENTIALS}).json()["access_token"]
        client.headers["x-amz-access-token"] = token
        yield client


def ok(response: httpx.Response, model: str, definition: str, status: int = 200):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    validate_definition(model, definition, doc)
    return doc


def rejected(response: httpx.Response, status: int, model: str = V2026, code: str | None = None):
    assert response.status_code == status, response.text
    doc = response.json()
    validate_definition(model, "ErrorList" if model != V0 else "GetOrdersResponse", doc)
    assert doc["errors"], doc
    if code:
        assert doc["errors"][0]["code"] == code
    return doc


def search_ids(api, **params) -> list[str]:
    doc = ok(api.get(SEARCH, params={**WINDOW, **params}), V2026, "SearchOrdersResponse")
    return [order["orderId"] for order in doc["orders"]]


# -- the validator itself -------------------------------------------------------------------

@pytest.mark.parametrize("model,operation", [
    (V2026, "searchOrders"), (V2026, "getOrder"), (V0, "getOrders"), (V0, "getOrder"),
    (V0, "getOrderItems"), (V0, "confirmShipment"), (TOKENS, "createRestrictedDataToken"),
    (FEEDS, "createFeedDocument"), (FEEDS, "createFeed"), (FEEDS, "getFeed"),
    (FEEDS, "getFeedDocument")])
def test_amazons_own_examples_validate(model, operation):
    examples = response_examples(model, operation)
    assert examples
    for _status, definition, example in examples:
        validate_definition(model, definition, example)


def test_validator_rejects_a_space_separated_date_time():
    from jsonschema import ValidationError
    with pytest.raises(ValidationError):
        validate_definition(V2026, "DateTimeRange", {"earliestDateTime": "2026-11-20 09:00:00"})


def test_seed_orders_follow_the_v2026_order_model_and_fit_cp1252(seed):
    for order in seed:
        validate_definition(V2026, "Order", order)
    SEED.read_text(encoding="utf-8").encode("cp1252")
    by = {o["fulfillment"]["fulfilledBy"] for o in seed}
    statuses = {o["fulfillment"]["fulfillmentStatus"] for o in seed}
    assert by == {"MERCHANT", "AMAZON"}
    assert {"UNSHIPPED", "PARTIALLY_SHIPPED", "SHIPPED", "CANCELLED"} <= statuses
    assert {o["recipient"]["deliveryAddress"]["countryCode"] for o in seed} >= {"US", "DE", "GB"}


# -- LWA and authorisation ----------------------------------------------------------------------

def test_lwa_issues_a_bearer_token_for_the_right_credentials(sandbox):
    answer = httpx.post(sandbox.token_url, data={"grant_type": "refresh_token", **CREDENTIALS})
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["token_type"] == "bearer" and doc["expires_in"] == 3600
    assert doc["access_token"] and doc["refresh_token"] == CREDENTIALS["refresh_token"]


def test_lwa_rejects_a_wrong_client_secret(sandbox):
    answer = httpx.post(sandbox.token_url, data={"grant_type": "refresh_token",
                                                 **CREDENTIALS, "client_secret": "wrong"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_client"


@pytest.mark.parametrize("token", [None, "Atza|made-up"])
def test_calls_without_an_issued_token_are_forbidden(sandbox, token):
    headers = {"x-amz-access-token": token} if token else {}
    answer = httpx.get(sandbox.url + SEARCH, params=WINDOW, headers=headers)
    rejected(answer, 403, code="Unauthorized")
    assert answer.headers["x-amzn-RequestId"]


# -- searchOrders -------------------------------------------------------------------------------

def test_search_answers_per_model_with_rate_header_and_echoed_before(api):
    answer = api.get(SEARCH, params={**WINDOW, "includedData": "RECIPIENT,BUYER,FULFILLMENT"})
    doc = ok(answer, V2026, "SearchOrdersResponse")
    assert answer.headers["x-amzn-RateLimit-Limit"] == "0.0056"
    assert answer.headers["x-amzn-RequestId"]
    assert doc["lastUpdatedBefore"] == "2026-11-20T12:00:00Z"
    assert len(doc["orders"]) == 8 and "pagination" not in doc
    assert all("recipient" in o and "buyer" in o and "fulfillment" in o for o in doc["orders"])


def test_search_filters_by_fulfilled_by_status_and_marketplace(api):
    merchant = search_ids(api, fulfilledBy="MERCHANT")
    assert "111-0000006-0000006" not in merchant and len(merchant) == 7
    open_ids = search_ids(api, fulfillmentStatuses="UNSHIPPED,PARTIALLY_SHIPPED",
                          fulfilledBy="MERCHANT")
    assert open_ids == ["111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003",
                        "203-0000004-0000004", "111-0000005-0000005"]
    repeated = api.get(SEARCH, params=[*WINDOW.items(), ("fulfillmentStatuses", "UNSHIPPED"),
                                       ("fulfillmentStatuses", "PARTIALLY_SHIPPED"),
                                       ("fulfilledBy", "MERCHANT")])
    assert [o["orderId"] for o in repeated.json()["orders"]] == open_ids
    assert search_ids(api, marketplaceIds="A1PA6795UKMFR9") == ["302-0000003-0000003"]


def test_search_window_bounds_are_inclusive_per_model(api):
    ids = search_ids(api, lastUpdatedAfter="2026-11-20T09:05:12Z",
                     lastUpdatedBefore="2026-11-20T09:55:03Z")
    assert ids == ["111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003"]


def test_search_leaves_out_datasets_not_asked_for(api):
    doc = ok(api.get(SEARCH, params=WINDOW), V2026, "SearchOrdersResponse")
    for order in doc["orders"]:
        assert "recipient" not in order and "buyer" not in order and "fulfillment" not in order
        assert order["orderItems"]


def test_pagination_returns_every_order_exactly_once(api):
    seen, token, pages = [], None, 0
    while True:
        params = {**WINDOW, "maxResultsPerPage": "3", "includedData": "FULFILLMENT"}
        if token:
            params["paginationToken"] = token
        doc = ok(api.get(SEARCH, params=params), V2026, "SearchOrdersResponse")
        seen += [o["orderId"] for o in doc["orders"]]
        pages += 1
        token = doc.get("pagination", {}).get("nextToken")
        if not token:
            break
    assert pages == 3
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 8


def test_pagination_token_from_another_query_is_rejected(api):
    first = api.get(SEARCH, params={**WINDOW, "maxResultsPerPage": "1"}).json()
    token = first["pagination"]["nextToken"]
    rejected(api.get(SEARCH, params={**WINDOW, "fulfilledBy": "AMAZON",
                                     "paginationToken": token}), 400, code="InvalidInput")


@pytest.mark.parametrize("params", [
    {"lastUpdatedAfter": "2026-11-20 09:00:00+00:00"},                  # str(datetime)
    {"lastUpdatedAfter": "2026-11-20T09:00:00Z", "lastUpdatedBefore": "2026-11-20T12:59:00Z"},
    {"lastUpdatedAfter": "2026-11-20T09:00:00Z", "createdAfter": "2026-11-01T00:00:00Z"},
    {},
    {**WINDOW, "fulfilledBy": "MFN"},
    {**WINDOW, "fulfillmentStatuses": "Unshipped"},
    {**WINDOW, "includedData": "ADDRESS"},
    {**WINDOW, "maxResultsPerPage": "0"},
    {**WINDOW, "maxResultsPerPage": "101"},
    {**WINDOW, "marketplaceIds": ",".join(f"M{i}" for i in range(51))},
], ids=["space-date", "before-under-2-min", "both-afters", "no-after", "bad-fulfilledBy",
        "bad-status", "bad-includedData", "page-0", "page-101", "51-marketplaces"])
def test_search_rejects_what_the_model_forbids(api, params):
    rejected(api.get(SEARCH, params=params), 400, code="InvalidInput")


def test_search_by_created_time_echoes_created_before(api):
    doc = ok(api.get(SEARCH, params={"createdAfter": "2026-11-19T00:00:00Z"}),
             V2026, "SearchOrdersResponse")
    assert doc["createdBefore"] == "2026-11-20T12:58:00Z" and "lastUpdatedBefore" not in doc
    assert len(doc["orders"]) == 6


# -- getOrder ------------------------------------------------------------------------------------

def test_get_order_and_unknown_order(api):
    doc = ok(api.get(f"{SEARCH}/302-0000003-0000003", params={"includedData": "RECIPIENT"}),
             V2026, "GetOrderResponse")
    assert doc["order"]["recipient"]["deliveryAddress"]["addressLine1"] == "Große Bleichenstraße 12"
    rejected(api.get(f"{SEARCH}/999-0000000-0000000"), 404, code="NotFound")


# -- PII -------------------------------------------------------------------------------------------

def test_without_the_pii_role_address_and_buyer_are_left_out_and_rdt_is_refused(api, sandbox):
    sandbox.set_pii_access(False)
    doc = ok(api.get(SEARCH, params={**WINDOW, "includedData": "RECIPIENT,BUYER"}),
             V2026, "SearchOrdersResponse")
    assert all("recipient" not in o and "buyer" not in o for o in doc["orders"])
    answer = api.post("/tokens/2021-03-01/restrictedDataToken", json={"restrictedResources": [
        {"method": "GET", "path": "/orders/v0/orders",
         "dataElements": ["buyerInfo", "shippingAddress"]}]})
    rejected(answer, 403, TOKENS, code="Unauthorized")


# -- Orders v0 and the Restricted Data Token --------------------------------------------------------

def rdt(api, path: str) -> str:
    answer = api.post("/tokens/2021-03-01/restrictedDataToken", json={"restrictedResources": [
        {"method": "GET", "path": path, "dataElements": ["buyerInfo", "shippingAddress"]}],
        "marketplaceIds": [US]})                       # the sp_api client adds extra keys
    doc = ok(answer, TOKENS, "CreateRestrictedDataTokenResponse")
    assert doc["restrictedDataToken"].startswith("Atz.sprdt|") and doc["expiresIn"] == 3600
    return doc["restrictedDataToken"]


def test_v0_get_orders_hides_pii_without_an_rdt_and_shows_it_with_one(api):
    params = {"LastUpdatedAfter": "2026-11-20T09:00:00Z", "MarketplaceIds": US,
              "FulfillmentChannels": "MFN", "OrderStatuses": "Unshipped,PartiallyShipped"}
    plain = ok(api.get("/orders/v0/orders", params=params), V0, "GetOrdersResponse")
    orders = plain["payload"]["Orders"]
    assert [o["AmazonOrderId"] for o in orders] == ["111-0000001-0000001", "111-0000002-0000002",
                                                    "111-0000005-0000005"]
    assert all("BuyerInfo" not in o for o in orders)
    # Without a token only the address's unrestricted parts: enough to filter by country.
    assert [sorted(o["ShippingAddress"]) for o in orders] == [
        ["City", "CountryCode", "PostalCode", "StateOrRegion"]] * 3
    token = rdt(api, "/orders/v0/orders")
    answer = api.get("/orders/v0/orders", params=params, headers={"x-amz-access-token": token})
    restricted = ok(answer, V0, "GetOrdersResponse")["payload"]["Orders"]
    assert restricted[1]["ShippingAddress"]["CompanyName"] == "Brightline Dental Group"
    assert restricted[1]["ShippingAddress"]["AddressType"] == "Commercial"
    assert restricted[0]["BuyerInfo"]["BuyerEmail"].endswith("@marketplace.amazon.com")
    assert answer.headers["x-amzn-RateLimit-Limit"] == "0.0167"


def test_v0_get_orders_by_amazon_order_ids(api):
    params = {"CreatedAfter": "2026-11-01T00:00:00Z", "MarketplaceIds": US,
              "AmazonOrderIds": "111-0000007-0000007,111-0000002-0000002,999-0000000-0000000"}
    doc = ok(api.get("/orders/v0/orders", params=params), V0, "GetOrdersResponse")
    assert [o["AmazonOrderId"] for o in doc["payload"]["Orders"]] == ["111-0000007-0000007",
                                                                      "111-0000002-0000002"]
    too_many = ",".join(f"111-{n:07d}-0000001" for n in range(51))
    rejected(api.get("/orders/v0/orders", params={**params, "AmazonOrderIds": too_many}), 400, V0)


def test_faults_apply_to_the_lwa_token_endpoint_too(sandbox):
    sandbox.fail_next("lwaToken", 503, body=b"<html>Service Unavailable</html>")
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        down = client.post("/auth/o2/token", data={"grant_type": "refresh_token", **CREDENTIALS})
        up = client.post("/auth/o2/token", data={"grant_type": "refresh_token", **CREDENTIALS})
    assert down.status_code == 503 and down.headers["content-type"] == "text/html"
    assert up.status_code == 200 and up.json()["access_token"]


def test_a_removed_order_is_not_found(sandbox, api):
    sandbox.remove_order("111-0000002-0000002")
    rejected(api.get("/orders/2026-01-01/orders/111-0000002-0000002"), 404, code="NotFound")


def test_v0_get_orders_pages_with_next_token(api):
    params = {"LastUpdatedAfter": "2026-11-20T09:00:00Z", "MarketplaceIds": US,
              "MaxResultsPerPage": "2"}
    seen, token = [], None
    while True:
        query = {"MarketplaceIds": US, "NextToken": token} if token else params
        payload = ok(api.get("/orders/v0/orders", params=query), V0, "GetOrdersResponse")["payload"]
        seen += [o["AmazonOrderId"] for o in payload["Orders"]]
        token = payload.get("NextToken")
        if not token:
            break
    assert len(seen) == len(set(seen)) == 6


def test_v0_get_order_with_an_order_rdt_and_its_items(api):
    order_id = "111-0000002-0000002"
    token = rdt(api, f"/orders/v0/orders/{order_id}")
    doc = ok(api.get(f"/orders/v0/orders/{order_id}", headers={"x-amz-access-token": token}),
             V0, "GetOrderResponse")
    assert doc["payload"]["OrderStatus"] == "Unshipped" and doc["payload"]["IsPrime"]
    assert doc["payload"]["ShippingAddress"]["AddressLine2"] == "Suite 310"
    items = ok(api.get(f"/orders/v0/orders/{order_id}/orderItems"), V0, "GetOrderItemsResponse")
    lines = items["payload"]["OrderItems"]
    assert [(i["SellerSKU"], i["QuantityOrdered"], i["ItemPrice"]["Amount"]) for i in lines] == [
        ("MUG-CER-350-BLU", 6, "89.94"), ("TEA-INF-SS-01", 3, "25.47"), ("CST-CORK-4PK", 2, "22.50")]
    rejected(api.get("/orders/v0/orders/999-0000000-0000000"), 404, V0)


def test_v0_get_orders_requires_marketplace_ids(api):
    rejected(api.get("/orders/v0/orders", params={"CreatedAfter": "2026-11-01T00:00:00Z"}),
             400, V0, code="InvalidInput")


# -- rate limits and faults ----------------------------------------------------------------------

def test_burst_exhaustion_gives_429_quota_exceeded_with_the_rate_header(seed):
    with SpApiSandbox(seed, rate_limits={"searchOrders": (0.0056, 2)},
                      clock=lambda: NOW) as sandbox, httpx.Client(base_url=sandbox.url) as api:
        token = api.post("/auth/o2/token", data={"grant_type": "refresh_token",
                                                 **CREDENTIALS}).json()["access_token"]
        headers = {"x-amz-access-token": token}
        statuses = [api.get(SEARCH, params=WINDOW, headers=headers).status_code
                    for _ in range(2)]
        answer = api.get(SEARCH, params=WINDOW, headers=headers)
        assert statuses == [200, 200]
        doc = rejected(answer, 429, code="QuotaExceeded")
        assert doc["errors"][0]["message"] == "You exceeded your quota for the requested resource."
        assert answer.headers["x-amzn-RateLimit-Limit"] == "0.0056"
        assert api.get(f"{SEARCH}/111-0000001-0000001", headers=headers).status_code == 200


def test_fail_next_overrides_the_next_answers_then_recovers(api, sandbox):
    sandbox.fail_next("searchOrders", 503, body=b"<html>oops</html>")
    sandbox.fail_next("searchOrders", 500, body=b"")
    sandbox.fail_next("searchOrders", 429, count=2)
    first = api.get(SEARCH, params=WINDOW)
    assert first.status_code == 503 and first.text == "<html>oops</html>"
    assert first.headers["content-type"].startswith("text/html")
    second = api.get(SEARCH, params=WINDOW)
    assert second.status_code == 500 and second.content == b""
    rejected(api.get(SEARCH, params=WINDOW), 429, code="QuotaExceeded")
    rejected(api.get(SEARCH, params=WINDOW), 429, code="QuotaExceeded")
    ok(api.get(SEARCH, params=WINDOW), V2026, "SearchOrdersResponse")
    assert [r.operation_id for r in sandbox.requests].count("searchOrders") == 5


# -- shipment confirmation -------------------------------------------------------------------------

def confirmation(item_id: str, quantity: int, ref: str = "1", marketplace: str = US) -> dict:
    body = {"marketplaceId": marketplace, "packageDetail": {
        "packageReferenceId": ref, "carrierCode": "UPS", "trackingNumber": "1Z999AA10123456784",
        "shipDate": "2026-11-20T12:30:00Z", "orderItems": [{"orderItemId": item_id,
                                                            "quantity": quantity}]}}
    validate_definition(V0, "ConfirmShipmentRequest", body)
    return body


def test_confirm_shipment_records_the_package_and_moves_the_order(api, sandbox):
    url = "/orders/v0/orders/111-0000005-0000005/shipmentConfirmation"
    answer = api.post(url, json=confirmation("50000005000002", 1))
    assert answer.status_code == 204 and answer.content == b""
    assert answer.headers["x-amzn-RateLimit-Limit"] == "2"
    assert sandbox.order("111-0000005-0000005")["fulfillment"]["fulfillmentStatus"] == \
        "PARTIALLY_SHIPPED"
    assert api.post(url, json=confirmation("50000005000002", 1, ref="2")).status_code == 204
    order = sandbox.order("111-0000005-0000005")
    assert order["fulfillment"]["fulfillmentStatus"] == "SHIPPED"
    assert order["lastUpdatedTime"] == "2026-11-20T13:00:00Z"
    assert [c["orderId"] for c in sandbox.confirmations] == ["111-0000005-0000005"] * 2
    assert sandbox.confirmations[0]["packageDetail"]["trackingNumber"] == "1Z999AA10123456784"


def test_resending_a_package_reference_edits_that_package(api, sandbox):
    url = "/orders/v0/orders/111-0000001-0000001/shipmentConfirmation"
    assert api.post(url, json=confirmation("50000001000001", 2)).status_code == 204
    assert api.post(url, json=confirmation("50000001000001", 1)).status_code == 204
    item = sandbox.order("111-0000001-0000001")["orderItems"][0]["fulfillment"]
    assert item == {"quantityFulfilled": 1, "quantityUnfulfilled": 1}


@pytest.mark.parametrize("order_id,body,status", [
    ("111-0000001-0000001", confirmation("50000001000001", 3), 400),        # only 2 ordered
    ("111-0000007-0000007", confirmation("50000007000001", 1), 400),        # already shipped
    ("111-0000008-0000008", confirmation("50000008000001", 1), 400),        # cancelled
    ("111-0000001-0000001", confirmation("50000001000001", 1, ref="0"), 400),
    ("111-0000001-0000001", confirmation("50000001000001", 1, ref="PKG-1"), 400),
    ("111-0000001-0000001", confirmation("99999999999999", 1), 400),
    ("111-0000001-0000001", confirmation("50000001000001", 1, marketplace="A1PA6795UKMFR9"), 400),
    ("999-0000000-0000000", confirmation("50000001000001", 1), 404),
], ids=["over-quantity", "nothing-unshipped", "cancelled", "ref-zero", "ref-not-number",
        "unknown-item", "wrong-marketplace", "unknown-order"])
def test_confirm_shipment_refusals(api, sandbox, order_id, body, status):
    answer = api.post(f"/orders/v0/orders/{order_id}/shipmentConfirmation", json=body)
    assert answer.status_code == status, answer.text
    validate_definition(V0, "ConfirmShipmentErrorResponse", answer.json())
    assert sandbox.confirmations == []


def test_confirm_shipment_rejects_a_space_separated_ship_date(api):
    body = confirmation("50000001000001", 1)
    body["packageDetail"]["shipDate"] = "2026-11-20 12:30:00"
    answer = api.post("/orders/v0/orders/111-0000001-0000001/shipmentConfirmation", json=body)
    assert answer.status_code == 400


# -- feeds ---------------------------------------------------------------------------------------------

def listings_feed(*messages: tuple[str, int]) -> bytes:
    doc = {"header": {"sellerId": "A2SANDBOXSELLER", "version": "2.0"}, "messages": [
        {"messageId": n, "sku": sku, "operationType": "PATCH", "productType": "PRODUCT",
         "patches": [{"op": "merge", "path": "/attributes/fulfillment_availability",
                      "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": qty}]}]}
        for n, (sku, qty) in enumerate(messages, 1)]}
    return json.dumps(doc).encode()


def test_listings_feed_flow_ends_in_a_processing_report_per_schema(seed):
    with SpApiSandbox(seed, clock=lambda: NOW, feed_polls_until_done=2) as sandbox, \
            httpx.Client(base_url=sandbox.url) as api:
        api.headers["x-amz-access-token"] = api.post("/auth/o2/token", data={
            "grant_type": "refresh_token", **CREDENTIALS}).json()["access_token"]
        created = ok(api.post("/feeds/2021-06-30/documents",
                              json={"contentType": "application/json; charset=UTF-8"}),
                     FEEDS, "CreateFeedDocumentResponse", 201)
        document = listings_feed(("MUG-CER-350-BLU", 12), ("NO-SUCH-SKU", 1),
                                 ("TEA-INF-SS-01", -3))
        validate_feed_schema("listings-feed-schema-v2.json", json.loads(document))
        upload = httpx.put(created["url"], content=document,
                           headers={"content-type": "application/json; charset=UTF-8"})
        assert upload.status_code == 200
        feed = ok(api.post("/feeds/2021-06-30/feeds", json={
            "feedType": "JSON_LISTINGS_FEED", "marketplaceIds": [US],
            "inputFeedDocumentId": created["feedDocumentId"]}), FEEDS, "CreateFeedResponse", 202)
        polls = [ok(api.get(f"/feeds/2021-06-30/feeds/{feed['feedId']}"), FEEDS, "Feed")
                 for _ in range(2)]
        assert [p["processingStatus"] for p in polls] == ["IN_QUEUE", "DONE"]
        result = ok(api.get(f"/feeds/2021-06-30/documents/{polls[1]['resultFeedDocumentId']}"),
                    FEEDS, "FeedDocument")
        report = httpx.get(result["url"]).json()
        validate_feed_schema("listings-feed-processing-report-schema-v2.json", report)
        assert report["summary"]["messagesProcessed"] == 3
        assert report["summary"]["messagesAccepted"] == 1
        assert sorted((i["messageId"], i["severity"]) for i in report["issues"]) == [
            (2, "ERROR"), (3, "ERROR")]
        stored = sandbox.feeds[feed["feedId"]]
        assert stored["feedType"] == "JSON_LISTINGS_FEED" and stored["document"] == document
        assert stored["marketplaceIds"] == [US] and stored["status"] == "DONE"


def test_create_feed_needs_an_uploaded_document(api):
    created = api.post("/feeds/2021-06-30/documents", json={"contentType": "text/xml"}).json()
    answer = api.post("/feeds/2021-06-30/feeds", json={
        "feedType": "POST_ORDER_FULFILLMENT_DATA", "marketplaceIds": [US],
        "inputFeedDocumentId": created["feedDocumentId"]})
    rejected(answer, 400, FEEDS, code="InvalidInput")
    rejected(api.get("/feeds/2021-06-30/feeds/404404"), 404, FEEDS)


# -- the python-amazon-sp-api client ----------------------------------------------------------------

def test_python_amazon_sp_api_client_searches_orders_end_to_end(sandbox):
    from sp_api.api import OrdersV20260101
    from sp_api.auth import AccessTokenClient
    from sp_api.auth import access_token_client

    host = sandbox.url.removeprefix("http://")

    class SandboxTokens(AccessTokenClient):
        scheme = "http://"

    SandboxTokens.host = host
    marketplace = SimpleNamespace(endpoint=sandbox.url, marketplace_id=US, region="us-east-1")
    access_token_client.cache.clear()
    client = OrdersV20260101(marketplace, auth_token_client_class=SandboxTokens, credentials={
        "refresh_token": CREDENTIALS["refresh_token"], "lwa_app_id": CREDENTIALS["client_id"],
        "lwa_client_secret": CREDENTIALS["client_secret"]})
    params = {"lastUpdatedAfter": "2026-11-20T09:00:00Z",
              "lastUpdatedBefore": "2026-11-20T12:00:00Z", "fulfilledBy": ["MERCHANT"],
              "marketplaceIds": [US], "includedData": ["RECIPIENT", "FULFILLMENT"],
              "maxResultsPerPage": 2}
    ids, token = [], None
    try:
        while True:
            response = client.search_orders(**params, **({"paginationToken": token}
                                                         if token else {}))
            validate_definition(V2026, "SearchOrdersResponse", response.payload)
            ids += [o["orderId"] for o in response.payload["orders"]]
            token = response.next_token
            if not token:
                break
    finally:
        access_token_client.cache.clear()
    assert ids == ["111-0000001-0000001", "111-0000002-0000002", "111-0000005-0000005",
                   "111-0000007-0000007", "111-0000008-0000008"]
    assert response.rate_limit == "0.0056"
    sent = [r for r in sandbox.requests if r.operation_id == "searchOrders"][-1]
    assert sent.query["fulfilledBy"] == ["MERCHANT"]


# -- controls -----------------------------------------------------------------------------------------

def test_http_controls_for_the_demo(api, sandbox, seed):
    new = json.loads(json.dumps(seed[0]))
    new["orderId"] = "111-0000009-0000009"
    new["lastUpdatedTime"] = "2026-11-20T11:59:00Z"
    assert api.post("/_sandbox/orders", json=new).status_code == 201
    assert "111-0000009-0000009" in search_ids(api)
    assert api.post("/_sandbox/faults", json={"operation": "getOrder", "status": 503,
                                              "count": 1}).status_code == 201
    assert api.get(f"{SEARCH}/111-0000009-0000009").status_code == 503
    assert api.post("/_sandbox/pii", json={"allowed": False}).json() == {"allowed": False}
    assert sandbox.pii_access is False
    assert api.get("/_sandbox/confirmations").json() == []
    assert api.get("/_sandbox/feeds").json() == []


def test_update_order_stamps_last_updated_with_the_clock(sandbox):
    sandbox.update_order("111-0000001-0000001",
                         fulfillment={"fulfillmentStatus": "CANCELLED", "fulfilledBy": "MERCHANT"})
    order = sandbox.order("111-0000001-0000001")
    assert order["lastUpdatedTime"] == "2026-11-20T13:00:00Z"
    assert order["fulfillment"]["fulfillmentStatus"] == "CANCELLED"


def test_rebase_last_updated_moves_all_by_one_offset(seed):
    newest = datetime(2027, 1, 5, 8, 0, tzinfo=timezone.utc)
    rebased = rebase_last_updated(seed, newest)
    assert max(o["lastUpdatedTime"] for o in rebased) == "2027-01-05T08:00:00Z"
    shift = newest - datetime(2026, 11, 20, 11, 49, 30, tzinfo=timezone.utc)
    first = datetime(2026, 11, 20, 9, 5, 12, tzinfo=timezone.utc) + shift
    assert rebased[0]["lastUpdatedTime"] == first.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [o["createdTime"] for o in rebased] == [o["createdTime"] for o in seed]
    assert seed[0]["lastUpdatedTime"] == "2026-11-20T09:05:12Z"      # input untouched
    assert timedelta(0) < shift


def test_a_page_reads_only_its_own_orders_however_many_the_sandbox_holds():
    """A searchOrders page costs the same with 100 orders or 100,000: it starts where the window
    or the token says and reads until the page is full, whatever the store holds around it."""
    from bridge.sandbox import spapi_orders as so

    def orders(count: int) -> dict[str, dict]:
        start = datetime(2026, 11, 20, tzinfo=timezone.utc)
        return {f"111-{n:07d}": {"orderId": f"111-{n:07d}",
                                 "lastUpdatedTime": so.iso(start + timedelta(seconds=n))} for n in range(count)}

    def reads_for_a_page(count: int, middle_of_the_store: bool) -> int:
        store = orders(count)
        keys = so.time_keys(store.values(), "lastUpdatedTime")
        after = datetime(2026, 11, 20, tzinfo=timezone.utc) + timedelta(seconds=count // 2 if middle_of_the_store else 0)
        read = []
        chunk, token = so.page_of(keys, store, "lastUpdatedTime", after, after + timedelta(days=30), 20, None, "q",
                                  lambda order: read.append(order) or True)
        assert len(chunk) == 20 and token
        position = so.decode_token("paginationToken", token, "q")
        so.page_of(keys, store, "lastUpdatedTime", after, after + timedelta(days=30), 20, position, "q",
                   lambda order: read.append(order) or True)
        return len(read)

    assert reads_for_a_page(100, True) == reads_for_a_page(100_000, True) == 42  # two pages, each one look ahead
    assert reads_for_a_page(100_000, False) == 42


def test_a_rate_scale_multiplies_every_rate_and_keeps_the_bursts(seed):
    from bridge.sandbox.spapi import DEFAULT_RATE_LIMITS

    fast = SpApiSandbox(seed, rate_scale=1000)
    assert fast._limits["searchOrders"] == (DEFAULT_RATE_LIMITS["searchOrders"][0] * 1000, 20)
    assert fast._limits["confirmShipment"] == (2000.0, 10)


@pytest.mark.parametrize("pulled_after", [timedelta(0), timedelta(minutes=2), timedelta(minutes=5)])
def test_sandbox_fresh_puts_every_order_in_the_first_window_of_a_bridge_without_a_start_none_past_its_ship_by(
        pulled_after):
    from bridge.demo import fresh_orders
    from bridge.records import parse_iso
    from bridge.windows import next_window

    orders = fresh_orders(load_seed(SEED), NOW)
    window = next_window(None, NOW + pulled_after, size=timedelta(minutes=30), lag=timedelta(minutes=30))

    updated = [parse_iso(order["lastUpdatedTime"]) for order in orders]
    assert all(window.start <= stamp < window.end for stamp in updated)
    seed = load_seed(SEED)
    assert sorted(range(len(seed)), key=lambda i: seed[i]["lastUpdatedTime"]) == sorted(
        range(len(orders)), key=lambda i: updated[i])  # the seed's order of updates is kept
    for old, new in zip(seed, orders):  # created, ship by and deliver by move with the update
        moved = parse_iso(new["lastUpdatedTime"]) - parse_iso(old["lastUpdatedTime"])
        assert parse_iso(new["createdTime"]) - parse_iso(old["createdTime"]) == moved
        ship_by = new["fulfillment"]["shipByWindow"]["latestDateTime"]
        assert parse_iso(ship_by) - parse_iso(old["fulfillment"]["shipByWindow"]["latestDateTime"]) == moved
        if old["fulfillment"]["shipByWindow"]["latestDateTime"] > old["lastUpdatedTime"]:
            assert parse_iso(ship_by) > NOW + pulled_after  # not overdue on arrival, as the seed's was not
