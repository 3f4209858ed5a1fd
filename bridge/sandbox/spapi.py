"""A local SP-API on 127.0.0.1 that speaks Amazon's wire format, for tests and the demo.

It follows Amazon's Swagger models in `vendor/amazon/models/` (Amazon's, vendored) (paths, parameters, bodies,
responses, default usage plans) and implements:

    POST /auth/o2/token                                   LWA refresh-token grant
    GET  /orders/2026-01-01/orders                        searchOrders
    GET  /orders/2026-01-01/orders/{orderId}              getOrder
    GET  /orders/v0/orders                                getOrders        (v0, deprecated)
    GET  /orders/v0/orders/{orderId}                      v0.getOrder
    GET  /orders/v0/orders/{orderId}/orderItems           getOrderItems
    POST /orders/v0/orders/{orderId}/shipmentConfirmation confirmShipment
    POST /tokens/2021-03-01/restrictedDataToken           createRestrictedDataToken
    POST /feeds/2021-06-30/documents                      createFeedDocument
    GET  /feeds/2021-06-30/documents/{id}                 getFeedDocument
    POST /feeds/2021-06-30/feeds                          createFeed
    GET  /feeds/2021-06-30/feeds                          getFeeds
    GET  /feeds/2021-06-30/feeds/{feedId}                 getFeed
    DELETE /feeds/2021-06-30/feeds/{feedId}               cancelFeed (a feed still IN_QUEUE)

plus test controls under `/_sandbox/` (orders, pii, faults, confirmations, fulfillments, feeds, and the
upload/download URLs that stand in for S3). The v0 getOrder is called "v0.getOrder" wherever an
operation id is a key (rate_limits, fail_next, RecordedRequest.operation_id), since both
Orders versions name their single-order read "getOrder".

The server logs nothing (buyer data passes through it).
"""
from __future__ import annotations

import base64
import copy
import gzip
import json
import secrets
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from bridge.sandbox import spapi_feeds
from bridge.sandbox import spapi_orders as so
from bridge.sandbox.spapi_orders import InvalidInput

# Amazon's default usage plans, from the models' operation descriptions: (rate per s, burst).
DEFAULT_RATE_LIMITS: dict[str, tuple[float, int]] = {
    "searchOrders": (0.0056, 20),
    "getOrder": (0.5, 30),
    "getOrders": (0.0167, 20),
    "v0.getOrder": (0.5, 30),
    "getOrderItems": (0.5, 30),
    "confirmShipment": (2.0, 10),
    "createRestrictedDataToken": (1.0, 10),
    "createFeedDocument": (0.5, 15),
    "createFeed": (0.0083, 15),
    "getFeed": (2.0, 15),
    "cancelFeed": (2.0, 15),
    "getFeeds": (0.0222, 10),
    "getFeedDocument": (0.0222, 10),
}
TOKEN_LIFETIME = 3600
RDT_PATHS = ("/orders/v0/orders", "/orders/v0/orders/{orderId}",
             "/orders/v0/orders/{orderId}/address", "/orders/v0/orders/{orderId}/buyerInfo",
             "/orders/v0/orders/{orderId}/orderItems",
             "/orders/v0/orders/{orderId}/orderItems/buyerInfo")
RDT_ELEMENTS = ("buyerInfo", "shippingAddress", "buyerTaxInformation")
QUOTA_EXCEEDED = {"code": "QuotaExceeded",
                  "message": "You exceeded your quota for the requested resource."}
DEFAULT_FAULT_ERRORS = {
    400: ("InvalidInput", "Invalid Input"),
    403: ("Unauthorized", "Access to requested resource is denied."),
    404: ("NotFound", "The resource specified does not exist."),
    429: (QUOTA_EXCEEDED["code"], QUOTA_EXCEEDED["message"]),
    500: ("InternalFailure", "We encountered an internal error. Please try again."),
    503: ("ServiceUnavailable", "Service temporarily unavailable. Please try again."),
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    operation_id: str | None
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Fault:
    status: int
    count: int
    body: bytes | None
    headers: dict[str, str]


class _Bucket:
    """Token bucket: `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _json(status: int, doc) -> _Answer:
    return _Answer(status, json.dumps(doc, ensure_ascii=False).encode("utf-8"))


def _errors(status: int, code: str, message: str, details: str | None = None) -> _Answer:
    error = {"code": code, "message": message}
    if details:
        error["details"] = details
    return _json(status, {"errors": [error]})


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class SpApiSandbox:
    """A running (after `start()`) local SP-API holding `orders` (v2026 `Order` dicts).

    Each operation is rate limited as Amazon's default usage plan says (`DEFAULT_RATE_LIMITS`),
    or as `rate_limits` says; `rate_scale` multiplies every rate (requests per second), the
    bursts stay: `rate_scale=1000` makes a catch-up of hours take seconds."""

    def __init__(self, orders: list[dict], *, host: str = "127.0.0.1", port: int = 0,
                 rate_limits: dict[str, tuple[float, int]] | None = None, rate_scale: float = 1.0,
                 credentials: dict | None = None, pii_access: bool = True,
                 clock: Callable[[], datetime] | None = None, feed_polls_until_done: int = 1):
        self._lock = threading.RLock()
        self._orders: dict[str, dict] = {o["orderId"]: copy.deepcopy(o) for o in orders}
        # Orders sorted by each time field, for pages that cost the page, not the store.
        self._sorted: dict[str, tuple[int, list]] = {}
        self._version = 0  # bumped by every change to the orders: the sorted keys are made again
        self._host, self._port = host, port
        self._limits = {operation: (rate * rate_scale, burst)
                        for operation, (rate, burst) in {**DEFAULT_RATE_LIMITS, **(rate_limits or {})}.items()}
        self._buckets: dict[str, _Bucket] = {}
        self._credentials = credentials
        self.pii_access = pii_access
        self._clock = clock or _utc_now
        self.feed_polls_until_done = feed_polls_until_done
        self._tokens: dict[str, dict] = {}          # token -> {"expires", "rdt": resources}
        self._faults: dict[str, list[Fault]] = {}
        self._packages: dict[str, dict[str, dict[str, int]]] = {}  # orderId -> ref -> item -> qty
        self._baseline: dict[str, dict[str, int]] = {}   # orderId -> item -> shipped before us
        self._documents: dict[str, dict] = {}       # feedDocumentId -> {contentType, data}
        self.known_skus: set[str] = {i["product"]["sellerSku"] for o in orders
                                     for i in o.get("orderItems", [])
                                     if "sellerSku" in i.get("product", {})}
        self.requests: list[RecordedRequest] = []
        self.confirmations: list[dict] = []
        # Every fulfillment the sandbox took, by confirmShipment or a fulfillment feed:
        # {"orderId", "via", "packageReferenceId", "carrierCode", "carrierName", "shippingMethod",
        #  "trackingNumber", "shipDate", "orderItems"}
        self.fulfillments: list[dict] = []
        self.feeds: dict[str, dict] = {}
        self.listing_warnings: dict[str, str] = {}  # SKU -> a WARNING for its listings messages
        self.gzip_results = False  # serve feed result documents GZIP-compressed, as Amazon may
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.token_url = ""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "SpApiSandbox":
        sandbox = self

        class Handler(_Handler):
            owner = sandbox

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.token_url = self.url + "/auth/o2/token"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="spapi-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> "SpApiSandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- controls --------------------------------------------------------------------------------

    def _by_time(self, field: str) -> list:
        """Every order's (time, time as sent, id) for `field`, sorted; made again after a change."""
        version, keys = self._sorted.get(field, (-1, []))
        if version != self._version:
            keys = so.time_keys(self._orders.values(), field)
            self._sorted[field] = (self._version, keys)
        return keys

    def add_order(self, order: dict) -> None:
        with self._lock:
            self._version += 1
            self._orders[order["orderId"]] = copy.deepcopy(order)
            self.known_skus.update(i["product"]["sellerSku"] for i in order.get("orderItems", [])
                                   if "sellerSku" in i.get("product", {}))

    def remove_order(self, order_id: str) -> None:
        """Amazon no longer knows the order: reads of it answer 404 NotFound."""
        with self._lock:
            self._version += 1
            del self._orders[order_id]

    def update_order(self, order_id: str, **changes) -> None:
        with self._lock:
            self._version += 1
            order = self._orders[order_id]
            order.update(copy.deepcopy(changes))
            order["lastUpdatedTime"] = so.iso(self._clock())

    def order(self, order_id: str) -> dict:
        """A copy of the sandbox's current state of one order (for assertions)."""
        with self._lock:
            return copy.deepcopy(self._orders[order_id])

    def set_pii_access(self, allowed: bool) -> None:
        self.pii_access = bool(allowed)

    def fail_next(self, operation_id: str, status: int, count: int = 1,
                  body: bytes | None = None, headers: dict | None = None) -> None:
        """Answer the next `count` calls of `operation_id` with `status` (and `body`, else
        Amazon's ErrorList for that status; pass b"" for an empty body)."""
        with self._lock:
            self._faults.setdefault(operation_id, []).append(
                Fault(status, count, body, dict(headers or {})))

    # -- request handling -------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo else now.replace(tzinfo=timezone.utc)

    def _take_fault(self, operation_id: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(operation_id)
            if not queue:
                return None
            fault = queue[0]
            fault.count -= 1
            if fault.count <= 0:
                queue.pop(0)
            return fault

    def _rate_ok(self, operation_id: str) -> bool:
        with self._lock:
            bucket = self._buckets.get(operation_id)
            if bucket is None:
                bucket = self._buckets[operation_id] = _Bucket(*self._limits[operation_id])
            return bucket.take()

    def _authorize(self, headers: dict[str, str]) -> dict:
        token = headers.get("x-amz-access-token", "")
        with self._lock:
            grant = self._tokens.get(token)
        if grant is None:
            raise _ApiError(403, "Unauthorized", "Access to requested resource is denied.",
                            "The access token you provided is revoked, malformed or invalid.")
        if grant["expires"] <= self._now():
            raise _ApiError(403, "Unauthorized", "Access to requested resource is denied.",
                            "The access token you provided has expired.")
        return grant

    def _issue(self, prefix: str, resources: list | None = None) -> str:
        token = f"{prefix}|{secrets.token_urlsafe(24)}"
        with self._lock:
            self._tokens[token] = {"expires": self._now() + timedelta(seconds=TOKEN_LIFETIME),
                                   "rdt": resources}
        return token

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Answer:
        parsed = urllib.parse.urlsplit(raw_path)
        path = urllib.parse.unquote(parsed.path)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        route = _route(method, path)
        operation_id = route[0] if route else None
        with self._lock:
            self.requests.append(RecordedRequest(method, path, operation_id, query,
                                                 headers, body))
        request_id = str(uuid.uuid4())
        answer = self._dispatch(route, method, path, query, headers, body)
        answer.headers.setdefault("x-amzn-RequestId", request_id)
        if operation_id in self._limits:
            answer.headers.setdefault("x-amzn-RateLimit-Limit",
                                      _rate_text(self._limits[operation_id][0]))
        return answer

    def _dispatch(self, route, method, path, query, headers, body) -> _Answer:
        if route is None:
            if path.startswith("/_sandbox/"):
                return self._control(method, path, body, headers)
            return _errors(404, "NotFound", "The resource specified does not exist.",
                           f"No operation for {method} {path}")
        operation_id, args = route
        fault = self._take_fault(operation_id)
        if fault is not None:
            return self._fault_answer(fault)
        if operation_id == "lwaToken":
            return self._lwa(body)
        try:
            grant = self._authorize(headers)
            if not self._rate_ok(operation_id):
                return _json(429, {"errors": [QUOTA_EXCEEDED]})
            handler = getattr(self, "_op_" + operation_id.replace(".", "_"))
            return handler(*args, query=query, body=body, grant=grant)
        except _ApiError as exc:
            return _errors(exc.status, exc.code, exc.message, exc.details)
        except InvalidInput as exc:
            return _errors(400, "InvalidInput", str(exc))

    def _fault_answer(self, fault: Fault) -> _Answer:
        if fault.body is None:
            code, message = DEFAULT_FAULT_ERRORS.get(
                fault.status, ("InternalFailure", f"Sandbox fault {fault.status}"))
            answer = _errors(fault.status, code, message)
        else:
            kind = "text/html" if fault.body.lstrip().startswith(b"<") else "application/json"
            answer = _Answer(fault.status, fault.body, kind if fault.body else "")
        answer.headers.update(fault.headers)
        return answer

    # -- LWA ---------------------------------------------------------------------------------------

    def _lwa(self, body: bytes) -> _Answer:
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "refresh_token":
            return _json(400, {"error": "unsupported_grant_type",
                               "error_description": "The authorization grant type is not "
                                                    "supported by the authorization server"})
        expected = self._credentials
        if expected is not None and (form.get("client_id") != expected.get("client_id") or
                                     form.get("client_secret") != expected.get("client_secret")):
            return _json(400, {"error": "invalid_client",
                               "error_description": "Client authentication failed"})
        if not form.get("refresh_token") or (
                expected is not None and form["refresh_token"] != expected.get("refresh_token")):
            return _json(400, {"error": "invalid_grant",
                               "error_description": "The request has an invalid grant parameter "
                                                    ": refresh_token"})
        return _json(200, {"access_token": self._issue("Atza"), "token_type": "bearer",
                           "expires_in": TOKEN_LIFETIME, "refresh_token": form["refresh_token"]})

    # -- Orders v2026-01-01 ----------------------------------------------------------------------------

    def _op_searchOrders(self, *, query, body, grant) -> _Answer:
        now = self._now()
        field, after, before = so.time_window(
            so.single(query, "createdAfter"), so.single(query, "createdBefore"),
            so.single(query, "lastUpdatedAfter"), so.single(query, "lastUpdatedBefore"),
            now, ("createdAfter", "createdBefore", "lastUpdatedAfter", "lastUpdatedBefore"))
        statuses = so.many(query, "fulfillmentStatuses", so.FULFILLMENT_STATUSES)
        fulfilled_by = so.many(query, "fulfilledBy", so.FULFILLED_BY)
        marketplaces = so.many(query, "marketplaceIds", max_items=so.MAX_MARKETPLACES)
        included = so.many(query, "includedData", so.INCLUDED_DATA)
        size = so.page_size(query, "maxResultsPerPage")
        token = so.single(query, "paginationToken")
        # The token belongs to these filters (maxResultsPerPage and includedData may change).
        fingerprint = so.fingerprint({
            "field": field, "after": so.iso(after),
            "before": so.single(query, "lastUpdatedBefore") or so.single(query, "createdBefore"),
            "statuses": sorted(statuses or ()), "fulfilledBy": sorted(fulfilled_by or ()),
            "marketplaceIds": sorted(marketplaces or ())})
        position = None
        if token:
            position = so.decode_token("paginationToken", token, fingerprint)
            before = so.parse_iso("paginationToken", position["before"])
        with self._lock:
            chunk, next_token = so.page_of(
                self._by_time(field), self._orders, field, after, before, size, position, fingerprint,
                lambda o: so.matches(o, statuses, fulfilled_by, marketplaces))
            orders = [so.project(o, included, self.pii_access) for o in chunk]
        doc: dict = {"orders": orders}
        if next_token:
            doc["pagination"] = {"nextToken": next_token}
        doc["lastUpdatedBefore" if field == "lastUpdatedTime" else "createdBefore"] = so.iso(before)
        return _json(200, doc)

    def _op_getOrder(self, order_id: str, *, query, body, grant) -> _Answer:
        included = so.many(query, "includedData", so.INCLUDED_DATA)
        with self._lock:
            order = self._orders.get(order_id)
            if order is None:
                raise _ApiError(404, "NotFound", f"Order {order_id} was not found.")
            return _json(200, {"order": so.project(order, included, self.pii_access)})

    # -- Orders v0 -------------------------------------------------------------------------------------

    def _pii_v0(self, grant: dict, resource_path: str) -> tuple[bool, bool]:
        """(shippingAddress, buyerInfo) allowed by the request's RDT for this resource path."""
        if not self.pii_access or not grant.get("rdt"):
            return False, False
        template = resource_path
        parts = resource_path.split("/")
        if len(parts) > 4:
            template = "/".join(parts[:4] + ["{orderId}"] + parts[5:])
        elements: set[str] = set()
        for resource in grant["rdt"]:
            if resource["method"] == "GET" and resource["path"] in (resource_path, template):
                elements.update(resource.get("dataElements") or ())
        return "shippingAddress" in elements, "buyerInfo" in elements

    def _op_getOrders(self, *, query, body, grant) -> _Answer:
        now = self._now()
        marketplaces = so.many(query, "MarketplaceIds", max_items=so.MAX_MARKETPLACES)
        if not marketplaces:
            raise InvalidInput("MarketplaceIds is required")
        token = so.single(query, "NextToken")
        size = so.page_size(query, "MaxResultsPerPage")
        position = None
        if token:
            # v0: NextToken alone (with MarketplaceIds) continues the original query.
            try:
                position = json.loads(so.base64.urlsafe_b64decode(token.encode()))
                filters = position["filters"]
            except (ValueError, KeyError, TypeError):
                raise InvalidInput("Invalid NextToken") from None
        else:
            filters = {name: query.get(name) for name in (
                "CreatedAfter", "CreatedBefore", "LastUpdatedAfter", "LastUpdatedBefore",
                "OrderStatuses", "FulfillmentChannels", "AmazonOrderIds")}
        field, after, before = so.time_window(
            *(filters[n][0] if filters.get(n) else None
              for n in ("CreatedAfter", "CreatedBefore", "LastUpdatedAfter",
                        "LastUpdatedBefore")),
            now if position is None else so.parse_iso("NextToken", position["before"]) + so.MIN_AGE,
            ("CreatedAfter", "CreatedBefore", "LastUpdatedAfter", "LastUpdatedBefore"))
        statuses = so.many(filters, "OrderStatuses", so.V0_STATUSES)
        channels = so.many(filters, "FulfillmentChannels", ("MFN", "AFN"))
        order_ids = so.many(filters, "AmazonOrderIds", max_items=so.MAX_ORDER_IDS)
        shipping, buyer = self._pii_v0(grant, "/orders/v0/orders")
        by_id: dict[str, dict] = {}

        def keep(order: dict) -> bool:
            if order["salesChannel"].get("marketplaceId") not in marketplaces:
                return False
            if order_ids and order["orderId"] not in order_ids:
                return False
            view = by_id[order["orderId"]] = so.to_v0(order, shipping, buyer)
            return ((not statuses or view["OrderStatus"] in statuses)
                    and (not channels or view["FulfillmentChannel"] in channels))

        fingerprint = so.fingerprint(filters)
        with self._lock:
            chunk, next_token = so.page_of(self._by_time(field), self._orders, field, after, before, size,
                                           position and position.get("at"), fingerprint, keep)
        payload: dict = {"Orders": [by_id[o["orderId"]] for o in chunk]}
        if next_token:
            at = json.loads(so.base64.urlsafe_b64decode(next_token.encode()))
            payload["NextToken"] = so.encode_token({"filters": filters, "at": at,
                                                    "before": so.iso(before)})
        payload["LastUpdatedBefore" if field == "lastUpdatedTime" else "CreatedBefore"] = \
            so.iso(before)
        return _json(200, {"payload": payload})

    def _find(self, order_id: str) -> dict:
        order = self._orders.get(order_id)
        if order is None:
            raise _ApiError(404, "NotFound", f"Order {order_id} was not found.")
        return order

    def _op_v0_getOrder(self, order_id: str, *, query, body, grant) -> _Answer:
        shipping, buyer = self._pii_v0(grant, f"/orders/v0/orders/{order_id}")
        with self._lock:
            return _json(200, {"payload": so.to_v0(self._find(order_id), shipping, buyer)})

    def _op_getOrderItems(self, order_id: str, *, query, body, grant) -> _Answer:
        with self._lock:
            items = so.items_v0(self._find(order_id))
        return _json(200, {"payload": {"AmazonOrderId": order_id, "OrderItems": items}})

    def _op_confirmShipment(self, order_id: str, *, query, body, grant) -> _Answer:
        request = _json_body(body)
        detail = _confirm_detail(request)
        with self._lock:
            order = self._find(order_id)
            if request["marketplaceId"] != order["salesChannel"].get("marketplaceId"):
                raise InvalidInput(f"marketplaceId {request['marketplaceId']} does not match "
                                   f"the order's marketplace")
            if order.get("fulfillment", {}).get("fulfillmentStatus") == "CANCELLED":
                raise InvalidInput(f"Order {order_id} is cancelled")
            self._apply_package(order, detail)
            self.confirmations.append({"orderId": order_id, **copy.deepcopy(request)})
            self._note_fulfillment(order_id, "confirmShipment", detail)
        return _Answer(204, b"", "")

    def _apply_fulfillment(self, feed_id: str, order_id: str, detail: dict,
                           marketplaces: tuple[str, ...]) -> tuple[str, str] | None:
        """One checked message of an order fulfillment feed, taken like confirmShipment takes
        a package (the same unshipped-quantity rules); returns (code, why) if the order refuses it."""
        order = self._orders.get(order_id)
        if order is None:
            return spapi_feeds.BAD_ORDER, f"AmazonOrderID {order_id} was not found for this seller"
        marketplace = order["salesChannel"].get("marketplaceId")
        if marketplace not in marketplaces:
            return (spapi_feeds.BAD_ORDER, f"order {order_id} belongs to marketplace {marketplace}, which this feed "
                                           f"was not submitted for")
        if order.get("fulfillment", {}).get("fulfillmentStatus") == "CANCELLED":
            return spapi_feeds.BAD_ORDER, f"Order {order_id} is cancelled"
        try:
            self._apply_package(order, detail)
        except InvalidInput as exc:
            return spapi_feeds.BAD_ITEM, str(exc)
        self._note_fulfillment(order_id, f"feed {feed_id}", detail)
        return None

    def _note_fulfillment(self, order_id: str, via: str, detail: dict) -> None:
        self.fulfillments.append({
            "orderId": order_id, "via": via, "packageReferenceId": detail["packageReferenceId"],
            "carrierCode": detail["carrierCode"], "carrierName": detail.get("carrierName") or "",
            "shippingMethod": detail.get("shippingMethod") or "", "trackingNumber": detail["trackingNumber"],
            "shipDate": detail["shipDate"],
            "orderItems": [dict(line) for line in detail["orderItems"]]})

    def _apply_package(self, order: dict, detail: dict) -> None:
        items = {i["orderItemId"]: i for i in order.get("orderItems", [])}
        baseline = self._baseline.setdefault(order["orderId"], {
            item_id: i.get("fulfillment", {}).get("quantityFulfilled", 0)
            for item_id, i in items.items()})
        packages = self._packages.setdefault(order["orderId"], {})
        ref = detail["packageReferenceId"]
        new_package: dict[str, int] = {}
        for line in detail["orderItems"]:
            if line["orderItemId"] not in items:
                raise InvalidInput(f"orderItemId {line['orderItemId']} is not part of order "
                                   f"{order['orderId']}")
            new_package[line["orderItemId"]] = (new_package.get(line["orderItemId"], 0)
                                                + line["quantity"])
        others = {r: p for r, p in packages.items() if r != ref}  # same ref = edit that package
        shipped = {}
        for item_id, item in items.items():
            total = baseline[item_id] + sum(p.get(item_id, 0) for p in others.values()) \
                + new_package.get(item_id, 0)
            if total > item["quantityOrdered"]:
                raise InvalidInput(f"quantity for orderItemId {item_id} exceeds the unshipped "
                                   f"quantity")
            shipped[item_id] = total
        packages[ref] = new_package
        for item_id, item in items.items():
            item["fulfillment"] = {**item.get("fulfillment", {}),
                                   "quantityFulfilled": shipped[item_id],
                                   "quantityUnfulfilled": item["quantityOrdered"] - shipped[item_id]}
        done = all(i["fulfillment"]["quantityUnfulfilled"] == 0 for i in items.values())
        order.setdefault("fulfillment", {})["fulfillmentStatus"] = (
            "SHIPPED" if done else "PARTIALLY_SHIPPED")
        order["lastUpdatedTime"] = so.iso(self._now())
        self._version += 1

    # -- Tokens ------------------------------------------------------------------------------------------

    def _op_createRestrictedDataToken(self, *, query, body, grant) -> _Answer:
        request = _json_body(body)
        resources = request.get("restrictedResources")
        if not isinstance(resources, list) or not resources:
            raise InvalidInput("restrictedResources is required")
        for resource in resources:
            if not isinstance(resource, dict) or resource.get("method") not in (
                    "GET", "PUT", "POST", "DELETE") or not isinstance(resource.get("path"), str):
                raise InvalidInput("Each restricted resource needs a method and a path")
            template = resource["path"]
            parts = template.split("/")
            if len(parts) > 4 and parts[4] != "{orderId}":
                template = "/".join(parts[:4] + ["{orderId}"] + parts[5:])
            if template not in RDT_PATHS:
                raise InvalidInput(f"Restricted resource path {resource['path']} is not "
                                   f"supported")
            bad = [e for e in resource.get("dataElements") or () if e not in RDT_ELEMENTS]
            if bad:
                raise InvalidInput(f"Invalid dataElements: {', '.join(bad)}")
        if not self.pii_access:
            raise _ApiError(403, "Unauthorized", "Access to requested resource is denied.",
                            "The application is not authorized for the requested restricted "
                            "data (Direct-to-Consumer Shipping role missing).")
        token = self._issue("Atz.sprdt", copy.deepcopy(resources))
        return _json(200, {"restrictedDataToken": token, "expiresIn": TOKEN_LIFETIME})

    # -- Feeds ---------------------------------------------------------------------------------------------

    def _op_createFeedDocument(self, *, query, body, grant) -> _Answer:
        request = _json_body(body)
        if not isinstance(request.get("contentType"), str) or not request["contentType"]:
            raise InvalidInput("contentType is required")
        doc_id = "amzn1.tortuga.4.na." + uuid.uuid4().hex
        with self._lock:
            self._documents[doc_id] = {"contentType": request["contentType"], "data": None}
        return _json(201, {"feedDocumentId": doc_id,
                           "url": f"{self.url}/_sandbox/uploads/{doc_id}"})

    def _op_createFeed(self, *, query, body, grant) -> _Answer:
        request = _json_body(body)
        feed_type, markets = request.get("feedType"), request.get("marketplaceIds")
        doc_id = request.get("inputFeedDocumentId")
        if not isinstance(feed_type, str) or not feed_type:
            raise InvalidInput("feedType is required")
        if not isinstance(markets, list) or not 1 <= len(markets) <= 25:
            raise InvalidInput("marketplaceIds must list 1 to 25 marketplace ids")
        if feed_type == "JSON_LISTINGS_FEED" and len(markets) > 1:
            raise InvalidInput("Too many 'marketplaceIds' values provided. Expected a maximum of 1.")
        with self._lock:
            document = self._documents.get(doc_id) if isinstance(doc_id, str) else None
            if document is None:
                raise InvalidInput(f"inputFeedDocumentId {doc_id} does not exist")
            if document["data"] is None:
                raise InvalidInput(f"Feed document {doc_id} has not been uploaded")
            feed_id = str(50000000000 + len(self.feeds) + 1)
            self.feeds[feed_id] = {
                "feedId": feed_id, "feedType": feed_type, "marketplaceIds": list(markets),
                "inputFeedDocumentId": doc_id, "document": document["data"],
                "contentType": document["contentType"], "feedOptions": request.get("feedOptions"),
                "createdTime": so.iso(self._now()), "status": "IN_QUEUE", "polls": 0,
                "resultFeedDocumentId": None}
        return _json(202, {"feedId": feed_id})

    def _op_getFeed(self, feed_id: str, *, query, body, grant) -> _Answer:
        with self._lock:
            feed = self.feeds.get(feed_id)
            if feed is None:
                raise _ApiError(404, "NotFound", f"Feed {feed_id} was not found.")
            feed["polls"] += 1
            if feed["status"] == "IN_QUEUE" and feed["polls"] >= self.feed_polls_until_done:
                self._finish_feed(feed)
            doc = self._feed_doc(feed)
        return _json(200, doc)

    def _op_cancelFeed(self, feed_id: str, *, query, body, grant) -> _Answer:
        with self._lock:
            if not self.cancel_feed(feed_id):
                if feed_id not in self.feeds:
                    raise _ApiError(404, "NotFound", f"Feed {feed_id} was not found.")
                raise InvalidInput(f"Feed {feed_id} is {self.feeds[feed_id]['status']}; only a feed IN_QUEUE "
                                   f"can be cancelled")
        return _Answer(200, b"", "")

    def cancel_feed(self, feed_id: str) -> bool:
        """What cancelFeed does (a person in Seller Central, another tool): a feed still
        IN_QUEUE is CANCELLED, unprocessed. False if there is no such feed waiting."""
        with self._lock:
            feed = self.feeds.get(feed_id)
            if feed is None or feed["status"] != "IN_QUEUE":
                return False
            feed.update(status="CANCELLED", processingEndTime=so.iso(self._now()))
            return True

    def _finish_feed(self, feed: dict) -> None:
        status, result, content_type = spapi_feeds.process(
            feed["feedType"], feed["feedId"], feed["document"], self.known_skus,
            self.listing_warnings, marketplaces=tuple(feed["marketplaceIds"]),
            apply=lambda order_id, detail, markets: self._apply_fulfillment(
                feed["feedId"], order_id, detail, markets))
        result_id = "amzn1.tortuga.4.na." + uuid.uuid4().hex
        self._documents[result_id] = {"contentType": content_type, "data": result}
        if self.gzip_results:
            self._documents[result_id].update(data=gzip.compress(result, mtime=0), gzip=True)
        feed.update(status=status, resultFeedDocumentId=result_id, result=result,
                    processingEndTime=so.iso(self._now()))

    def _op_getFeedDocument(self, doc_id: str, *, query, body, grant) -> _Answer:
        with self._lock:
            if doc_id not in self._documents:
                raise _ApiError(404, "NotFound", f"Feed document {doc_id} was not found.")
            compressed = self._documents[doc_id].get("gzip", False)
        doc = {"feedDocumentId": doc_id, "url": f"{self.url}/_sandbox/downloads/{doc_id}"}
        if compressed:
            doc["compressionAlgorithm"] = "GZIP"
        return _json(200, doc)

    def _op_getFeeds(self, *, query, body, grant) -> _Answer:
        token = so.single(query, "nextToken")
        if token is not None:
            if set(query) != {"nextToken"}:
                raise InvalidInput("nextToken must be the only parameter")
            try:
                spec = json.loads(base64.urlsafe_b64decode(token.encode()))
                filters, offset = spec["filters"], int(spec["offset"])
            except (ValueError, KeyError, TypeError):
                raise InvalidInput("nextToken is not valid") from None
        else:
            types = so.many(query, "feedTypes")
            if not types:
                raise InvalidInput("feedTypes or nextToken is required")
            size = int(so.single(query, "pageSize") or 10)
            if not 1 <= size <= 100:
                raise InvalidInput("pageSize must be from 1 to 100")
            now = self._now()
            filters = {"types": types, "size": size,
                       "markets": so.many(query, "marketplaceIds") or [],
                       "statuses": so.many(query, "processingStatuses") or [],
                       "since": so.iso(so.parse_iso("createdSince", so.single(query, "createdSince"))
                                       if so.single(query, "createdSince") else now - timedelta(days=90)),
                       "until": so.iso(so.parse_iso("createdUntil", so.single(query, "createdUntil"))
                                       if so.single(query, "createdUntil") else now)}
            offset = 0
        with self._lock:
            matching = [f for f in self.feeds.values() if f["feedType"] in filters["types"]
                        and (not filters["markets"] or set(f["marketplaceIds"]) & set(filters["markets"]))
                        and (not filters["statuses"] or f["status"] in filters["statuses"])
                        and filters["since"] <= f["createdTime"] <= filters["until"]]
        page = matching[offset:offset + filters["size"]]
        doc: dict = {"feeds": [self._feed_doc(f) for f in page]}
        if offset + filters["size"] < len(matching):
            doc["nextToken"] = base64.urlsafe_b64encode(json.dumps(
                {"filters": filters, "offset": offset + filters["size"]}).encode()).decode()
        return _json(200, doc)

    def _feed_doc(self, feed: dict) -> dict:
        doc = {"feedId": feed["feedId"], "feedType": feed["feedType"],
               "marketplaceIds": feed["marketplaceIds"], "createdTime": feed["createdTime"],
               "processingStatus": feed["status"]}
        if feed["status"] in ("DONE", "FATAL"):
            doc["processingStartTime"] = feed["createdTime"]
            doc["processingEndTime"] = feed["processingEndTime"]
            doc["resultFeedDocumentId"] = feed["resultFeedDocumentId"]
        return doc

    # -- /_sandbox controls ---------------------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes, headers: dict | None = None) -> _Answer:
        parts = path.strip("/").split("/")
        try:
            if method == "PUT" and len(parts) == 3 and parts[1] == "uploads":
                with self._lock:
                    if parts[2] not in self._documents:
                        return _Answer(404, b"NoSuchKey", "text/plain")
                    # The presigned URL is signed for the document's content type, as on S3.
                    if (headers or {}).get("content-type") != self._documents[parts[2]]["contentType"]:
                        return _Answer(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>",
                                       "application/xml")
                    self._documents[parts[2]]["data"] = body
                return _Answer(200, b"", "")
            if method == "GET" and len(parts) == 3 and parts[1] == "downloads":
                with self._lock:
                    document = self._documents.get(parts[2])
                if document is None or document["data"] is None:
                    return _Answer(404, b"NoSuchKey", "text/plain")
                return _Answer(200, document["data"], document["contentType"])
            if method == "POST" and path == "/_sandbox/orders":
                self.add_order(json.loads(body))
                return _json(201, {"added": True})
            if method == "POST" and path == "/_sandbox/pii":
                self.set_pii_access(bool(json.loads(body)["allowed"]))
                return _json(200, {"allowed": self.pii_access})
            if method == "POST" and path == "/_sandbox/faults":
                spec = json.loads(body)
                raw = spec.get("body")
                self.fail_next(spec["operation"], int(spec["status"]), int(spec.get("count", 1)),
                               raw.encode("utf-8") if isinstance(raw, str) else None)
                return _json(201, {"queued": True})
            if method == "GET" and path == "/_sandbox/confirmations":
                with self._lock:
                    return _json(200, copy.deepcopy(self.confirmations))
            if method == "GET" and path == "/_sandbox/fulfillments":
                with self._lock:
                    return _json(200, copy.deepcopy(self.fulfillments))
            if method == "GET" and path == "/_sandbox/feeds":
                with self._lock:
                    return _json(200, [_feed_summary(f) for f in self.feeds.values()])
        except (ValueError, KeyError, TypeError) as exc:
            return _errors(400, "InvalidInput", f"Bad control request: {exc}")
        return _errors(404, "NotFound", "The resource specified does not exist.")


def _feed_summary(feed: dict) -> dict:
    summary = {k: v for k, v in feed.items() if k not in ("document", "result")}
    summary["document"] = feed["document"].decode("utf-8", "replace")
    if feed.get("result") is not None:
        summary["result"] = feed["result"].decode("utf-8", "replace")
    return summary


def _rate_text(rate: float) -> str:
    return format(Decimal(repr(rate)).normalize(), "f")


def _json_body(body: bytes) -> dict:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        raise InvalidInput("The request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidInput("The request body must be a JSON object")
    return doc


def _carrier_codes() -> frozenset[str]:
    from bridge.mapping import amazon_carrier_codes

    return amazon_carrier_codes()


def _confirm_detail(request: dict) -> dict:
    """Check a ConfirmShipmentRequest (ordersV0.json) and return its packageDetail."""
    if not isinstance(request.get("marketplaceId"), str) or not request["marketplaceId"]:
        raise InvalidInput("marketplaceId is required")
    detail = request.get("packageDetail")
    if not isinstance(detail, dict):
        raise InvalidInput("packageDetail is required")
    for name in ("packageReferenceId", "carrierCode", "trackingNumber", "shipDate"):
        if not isinstance(detail.get(name), str) or not detail[name].strip():
            raise InvalidInput(f"packageDetail.{name} is required and must be a string")
    ref = detail["packageReferenceId"]
    if not ref.isdigit() or int(ref) <= 0:
        raise InvalidInput("packageDetail.packageReferenceId must be a positive number")
    if detail["carrierCode"] not in _carrier_codes():
        raise InvalidInput(f"packageDetail.carrierCode {detail['carrierCode']!r} is not a valid "
                           f"carrier code; use Other with a carrierName")
    if detail["carrierCode"] == "Other" and not (
            isinstance(detail.get("carrierName"), str) and detail["carrierName"].strip()):
        raise InvalidInput("packageDetail.carrierName is required when carrierCode is Other")
    so.parse_iso("packageDetail.shipDate", detail["shipDate"])
    lines = detail.get("orderItems")
    if not isinstance(lines, list) or not lines:
        raise InvalidInput("packageDetail.orderItems must list at least one item")
    for n, line in enumerate(lines):
        if not isinstance(line, dict) or not isinstance(line.get("orderItemId"), str):
            raise InvalidInput(f"packageDetail.orderItems[{n}].orderItemId is required")
        quantity = line.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise InvalidInput(f"packageDetail.orderItems[{n}].quantity must be a positive "
                               f"integer")
    return detail


_ROUTES: list[tuple[str, tuple[str, ...], str]] = [
    ("POST", ("auth", "o2", "token"), "lwaToken"),
    ("GET", ("orders", "2026-01-01", "orders"), "searchOrders"),
    ("GET", ("orders", "2026-01-01", "orders", "*"), "getOrder"),
    ("GET", ("orders", "v0", "orders"), "getOrders"),
    ("GET", ("orders", "v0", "orders", "*"), "v0.getOrder"),
    ("GET", ("orders", "v0", "orders", "*", "orderItems"), "getOrderItems"),
    ("POST", ("orders", "v0", "orders", "*", "shipmentConfirmation"), "confirmShipment"),
    ("POST", ("tokens", "2021-03-01", "restrictedDataToken"), "createRestrictedDataToken"),
    ("POST", ("feeds", "2021-06-30", "documents"), "createFeedDocument"),
    ("GET", ("feeds", "2021-06-30", "documents", "*"), "getFeedDocument"),
    ("POST", ("feeds", "2021-06-30", "feeds"), "createFeed"),
    ("GET", ("feeds", "2021-06-30", "feeds"), "getFeeds"),
    ("GET", ("feeds", "2021-06-30", "feeds", "*"), "getFeed"),
    ("DELETE", ("feeds", "2021-06-30", "feeds", "*"), "cancelFeed"),
]


def _route(method: str, path: str) -> tuple[str, list[str]] | None:
    parts = tuple(p for p in path.split("/") if p)
    for verb, pattern, operation_id in _ROUTES:
        if verb == method and len(pattern) == len(parts) and all(
                want in ("*", got) for want, got in zip(pattern, parts)):
            return operation_id, [got for want, got in zip(pattern, parts) if want == "*"]
    return None


class _Handler(BaseHTTPRequestHandler):
    owner: SpApiSandbox
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for the
    # client's delayed ACK (40 ms a request on Linux), which made the sandbox the bottleneck.
    disable_nagle_algorithm = True
    server_version = "Server"
    sys_version = ""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            answer = self.owner.handle(self.command, self.path, headers, body)
        except Exception as exc:  # never let a sandbox bug hang the client
            answer = _errors(500, "InternalFailure", f"Sandbox error: {type(exc).__name__}")
        self.send_response(answer.status)
        if answer.content_type:
            self.send_header("Content-Type", answer.content_type)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if answer.body and self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format, *args) -> None:  # noqa: A002 - stdlib signature
        pass


def load_seed(path) -> list[dict]:
    """The seed file: a JSON list of v2026-01-01 `Order` objects."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def rebase_last_updated(orders: list[dict], newest: datetime) -> list[dict]:
    """Copies of `orders` with every lastUpdatedTime shifted by one offset so the newest equals
    `newest`; createdTime is left alone."""
    stamps = [so.parse_iso("lastUpdatedTime", o["lastUpdatedTime"]) for o in orders]
    if not stamps:
        return []
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=timezone.utc)
    offset = newest - max(stamps)
    rebased = copy.deepcopy(orders)
    for order, stamp in zip(rebased, stamps):
        order["lastUpdatedTime"] = so.iso(stamp + offset)
    return rebased


def spread_last_updated(orders: list[dict], first: datetime, last: datetime) -> list[dict]:
    """Copies of `orders` with their lastUpdatedTimes spread evenly over [first, last], in the
    seed's order of updates; createdTime is left alone."""
    stamps = [so.parse_iso("lastUpdatedTime", o["lastUpdatedTime"]) for o in orders]
    ranked = sorted(range(len(orders)), key=lambda index: stamps[index])
    step = (last - first) / max(len(orders) - 1, 1)
    rebased = copy.deepcopy(orders)
    for rank, index in enumerate(ranked):
        rebased[index]["lastUpdatedTime"] = so.iso(first + step * rank)
    return rebased


def serve_forever(sandbox: SpApiSandbox) -> None:
    """Run `sandbox` until Ctrl-C, then stop it cleanly (for `fbm-bridge sandbox`)."""
    if sandbox._server is None:
        sandbox.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
