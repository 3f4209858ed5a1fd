"""The SP-API edge, through python-amazon-sp-api.

Everything the library and httpx raise stops here and comes out as the bridge's own errors.
The library's traps are handled here once:
- the LWA token URL is not configurable: a subclass of AccessTokenClient points it elsewhere;
- `SP_API_DEFAULT_MARKETPLACE` would override the endpoint: endpoint and marketplace are set on
  the client after construction;
- dates go out as ISO 8601 strings with 'T' and 'Z' (a datetime would be sent with a space);
- a 5xx with an HTML or empty body raises nothing: an answer without the expected key is
  treated as Amazon being unavailable;
- no retries in the library: throttled calls are retried here, honouring the rate header, and
  a client-side token bucket keeps each operation within Amazon's published rate;
- the library reports any non-200 answer of Login with Amazon as refused credentials: an
  outage (5xx, 429, a body that is not JSON, no connection) is told apart here and retried;
- a client costs two httpx clients (each loading the CA store): clients are made once and reused.

What leaves this module: AmazonAuthError and PiiAccessMissing (a person must act),
AmazonUnavailable and AmazonThrottled (retried next run), AmazonNotFound (one record), and
BridgeError for any other request Amazon refused. Unusable orders are not raised: they are
collected in `rejected` for the flow to record, and the rest go on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import urlsplit

import httpx
from sp_api.api import OrdersV0, OrdersV20260101, Tokens
from sp_api.auth import AccessTokenClient
from sp_api.auth import access_token_client as _token_module
from sp_api.auth.exceptions import AuthorizationError
from sp_api.base import ApiResponse, SellingApiException, fill_query_params, sp_endpoint
from sp_api.base.exceptions import (
    SellingApiForbiddenException,
    SellingApiNotFoundException,
    SellingApiRequestThrottledException,
)

from bridge.config import AmazonSettings
from bridge.errors import (
    AmazonAuthError,
    AmazonNotFound,
    AmazonThrottled,
    AmazonUnavailable,
    BadRecord,
    BridgeError,
    PiiAccessMissing,
)
from bridge.formats.amazon_orders import header_from_v0, order_from_v0, order_from_v2026
from bridge.records import Line, Order, OrderHeader, iso_z, shown

log = logging.getLogger("bridge.amazon")

# Amazon's published default usage plans (rate per second, burst), from the API models.
RATE_LIMITS: dict[str, tuple[float, int]] = {
    "searchOrders": (0.0056, 20),
    "getOrder": (0.5, 30),
    "getOrders": (0.0167, 20),
    "v0.getOrder": (0.5, 30),
    "getOrderItems": (0.5, 30),
    "createRestrictedDataToken": (1.0, 10),
}
# A wait for the rate limit this long or longer is logged (searchOrders: 180 s once its burst is spent).
LOGGED_WAIT_SECONDS = 5.0
INCLUDED_DATA = ["BUYER", "RECIPIENT", "FULFILLMENT", "PROCEEDS"]
V0_STATUS = {
    "PENDING": "Pending",
    "UNSHIPPED": "Unshipped",
    "PARTIALLY_SHIPPED": "PartiallyShipped",
    "SHIPPED": "Shipped",
    "CANCELLED": "Canceled",
    "UNFULFILLABLE": "Unfulfillable",
    "PENDING_AVAILABILITY": "PendingAvailability",
}
# Amazon sends a shipping address only for orders in these states (ordersV0.json, ShippingAddress):
# an order in one of them answered without an address shows that addresses are withheld.
ADDRESS_STATUSES = frozenset({"UNSHIPPED", "PARTIALLY_SHIPPED", "SHIPPED"})
PROBES_PER_RUN = 25  # single orders asked, at most, before one answer tells whether addresses are back
SPAN_GAP = timedelta(hours=1)  # held orders created further apart than this are swept separately
SPAN_LEAST = 10  # fewer wanted orders than this in a span or on a page: getOrder each is cheaper
V0_IDS_PER_CALL = 50  # getOrders' AmazonOrderIds maxItems (ordersV0.json)
V0_BULK_PATH = "/orders/v0/orders"
LWA_REFUSED = (
    "Login with Amazon refused the credentials ({}); "
    "check BRIDGE_LWA_CLIENT_ID, BRIDGE_LWA_CLIENT_SECRET and BRIDGE_LWA_REFRESH_TOKEN"
)
PII_ROLE_HINT = (
    "grant the seller's SP-API app the Direct-to-Consumer Shipping (Restricted) role in Seller "
    "Central (Apps and Services > Develop Apps), then re-authorise it; held orders are delivered "
    "automatically once addresses come through"
)

PII_ROLE_MISSING = "the app lacks the Direct-to-Consumer Shipping (Restricted) role"
PII_CHECK_SPAN = timedelta(days=30)  # `check` asks about merchant orders updated this far back
PII_CHECK_ORDERS = 10  # ... one page of this many


@dataclass
class _Market:
    """The duck-typed marketplace object the library takes (endpoint, marketplace_id, region)."""

    endpoint: str
    marketplace_id: str
    region: str = ""


# What the flow may know about a v0 order's lines already, so getOrderItems is not spent on it:
# given the order's header, its lines, or None when they must be fetched from Amazon.
KnownLines = Callable[[OrderHeader], "tuple[Line, ...] | None"]


@dataclass
class Refetched:
    """One call's worth of orders asked for again (`AmazonOrders.refetch`)."""

    orders: list[Order]
    missing: list[str] = field(default_factory=list)  # ids Amazon does not know (404) or did not return
    withheld: bool = False  # an answer lacked the address it should carry: the PII role is still missing


class _LoginUnavailable(Exception):
    """Login with Amazon could not be reached or answered 5xx, 429 or something not JSON."""


class _OrdersV0(OrdersV0):
    """The library's v0 client, but getOrderItems without the four marketplace parameters the
    library adds to every GET: Amazon's model defines only NextToken there."""

    @sp_endpoint("/orders/v0/orders/{}/orderItems")
    def get_order_items(self, order_id: str, **kwargs: Any) -> ApiResponse:
        return self._request(fill_query_params(kwargs.pop("path"), order_id), params={**kwargs}, add_marketplace=False)


class RateLimiter:
    """A token bucket per operation, so the bridge stays inside Amazon's usage plan."""

    def __init__(self, limits: dict[str, tuple[float, int]], *, clock=time.monotonic, sleep=time.sleep):
        self._limits = dict(limits)
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, operation: str, max_wait: float) -> None:
        rate, burst = self._limits.get(operation, (1.0, 1))
        with self._lock:
            now = self._clock()
            tokens, stamp = self._buckets.get(operation, (float(burst), now))
            tokens = min(float(burst), tokens + (now - stamp) * rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
            if wait > max_wait:
                raise AmazonThrottled(
                    f"{operation}: Amazon's usage plan allows the next call in {wait:.0f}s, longer than"
                    " amazon.max_throttle_wait_seconds; continued on the next run", retry_after=wait
                )
            self._buckets[operation] = (tokens - 1 + wait * rate, now + wait)
        if wait >= LOGGED_WAIT_SECONDS:  # a long silence would look like a hang
            log.info("waiting %.0fs for Amazon's rate limit op=%s rate=%g/s burst=%d: its usage plan allows"
                     " the next call then (not an error)", wait, operation, rate, burst)
        if wait:
            self._sleep(wait)

    def slow_down(self, operation: str, rate: float) -> None:
        """Amazon said (x-amzn-RateLimit-Limit) what this operation's rate really is."""
        with self._lock:
            _, burst = self._limits.get(operation, (rate, 1))
            self._limits[operation] = (rate, burst)
            self._buckets[operation] = (0.0, self._clock())


class AmazonOrders:
    """Orders from SP-API as records: v2026-01-01 searchOrders, or v0 with a Restricted Data Token."""

    def __init__(
        self,
        settings: AmazonSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rate_limits: dict[str, tuple[float, int]] | None = None,
        attempts: int = 5,
        backoff: float = 2.0,
    ):
        self.settings = settings
        self._sleep = sleep
        self._limiter = RateLimiter(rate_limits or RATE_LIMITS, clock=clock, sleep=sleep)
        self._attempts = attempts
        self._backoff = backoff
        self._clock = clock
        self._restricted_tokens: dict[str, tuple[str, float]] = {}  # path -> (token, expires at)
        self._token_refused = False  # this run: Amazon refused a Restricted Data Token
        self._clients: dict[tuple[type, str | None], Any] = {}
        self._token_client = _token_client_class(settings.token_url)
        self.pii_missing = False  # set when a call showed the PII role is missing
        self.rejected: list[tuple[str, str]] = []  # (order id, why) for records Amazon sent that cannot be used

    # --- public --------------------------------------------------------------------------

    def check(self) -> None:
        """Fetch an LWA access token: proves the credentials and the token URL."""
        client = self._client(OrdersV20260101)
        try:
            _token_module.cache.clear()
            client.auth  # noqa: B018 - the property performs the token request
        except AuthorizationError as problem:
            raise AmazonAuthError(LWA_REFUSED.format(problem.message or problem.error_code or problem)) from None
        except _LoginUnavailable as problem:
            raise AmazonUnavailable(_login_unavailable(problem, "try again later")) from None

    def check_pii(self, now: datetime) -> str:
        """For `fbm-bridge check`: prove that addresses and buyer info come through (the
        Direct-to-Consumer Shipping (Restricted) role). v0 asks for a Restricted Data Token;
        v2026 asks one page of recent merchant orders in a state Amazon sends an address for.
        Raises PiiAccessMissing when they are withheld; returns what proved it (no buyer data)."""
        if self.settings.orders_api == "v0":
            self._token_refused = False
            if self._restricted_token(V0_BULK_PATH) is None:
                raise PiiAccessMissing(f"{PII_ROLE_MISSING}: Amazon refused a Restricted Data Token for "
                                       f"{V0_BULK_PATH}; {PII_ROLE_HINT}")
            return f"Restricted Data Token for {V0_BULK_PATH} granted"
        params = {
            "lastUpdatedAfter": iso_z(now - PII_CHECK_SPAN),
            "lastUpdatedBefore": iso_z(now - timedelta(minutes=3)),  # Amazon: at least 2 minutes ago
            "fulfillmentStatuses": sorted(ADDRESS_STATUSES),
            "fulfilledBy": ["MERCHANT"],
            "marketplaceIds": list(self.settings.marketplaces),
            "includedData": INCLUDED_DATA,
            "maxResultsPerPage": PII_CHECK_ORDERS,
        }
        response = self._call("searchOrders", self._client(OrdersV20260101).search_orders, **params)
        items = response.payload.get("orders")
        if not isinstance(items, list):
            raise AmazonUnavailable("searchOrders answered without an orders list (HTTP 5xx or empty body)")
        orders = [o for o in (self._convert(order_from_v2026, item) for item in items) if o is not None]
        orders = [o for o in orders if o.status in ADDRESS_STATUSES]
        if not orders:
            return (f"not proven: no merchant order updated in the last {PII_CHECK_SPAN.days} days to ask about;"
                    " a held order's reason will say if addresses are withheld")
        withheld = next((o for o in orders if o.ship_to is None), None)  # buyer info goes with it
        if withheld is not None:
            raise PiiAccessMissing(f"{PII_ROLE_MISSING}: searchOrders answered order {shown(withheld.order_id)}"
                                   f" ({withheld.status}) without its shipping address and buyer info;"
                                   f" {PII_ROLE_HINT}")
        return f"shipping addresses and buyer info come through ({len(orders)} recent order(s) asked)"

    def begin_run(self) -> None:
        """A new run: a Restricted Data Token Amazon refused last run is asked for again (once)."""
        self._token_refused = False

    def updated_between(
        self,
        after: datetime,
        before: datetime,
        statuses: Iterable[str],
        marketplace_ids: Iterable[str],
        *,
        known_lines: KnownLines | None = None,
    ) -> list[Order]:
        """Every merchant-fulfilled order last updated between `after` and `before`, all pages.

        Amazon's bounds are inclusive at both ends, so an order updated exactly on a window
        edge can come back in two windows; the ledger records it once. v0 asks getOrderItems
        only for orders whose lines `known_lines` does not give.
        """
        if self.settings.orders_api == "v0":
            return self._v0_updated_between(after, before, list(statuses), list(marketplace_ids), known_lines)
        params = {
            "lastUpdatedAfter": iso_z(after),
            "lastUpdatedBefore": iso_z(before),
            "fulfillmentStatuses": list(statuses),
            "fulfilledBy": ["MERCHANT"],
            "marketplaceIds": list(marketplace_ids),
            "includedData": INCLUDED_DATA,
            "maxResultsPerPage": 100,
        }
        orders: list[Order] = []
        for page in self._pages("searchOrders", self._client(OrdersV20260101).search_orders, params, "paginationToken"):
            if not isinstance(page.payload.get("orders"), list):
                raise AmazonUnavailable("searchOrders answered without an orders list (HTTP 5xx or empty body)")
            orders.extend(self._convert(order_from_v2026, item) for item in page.payload["orders"])
        return _unique(order for order in orders if order is not None)

    def refetch(
        self,
        wanted: Sequence[tuple[str, datetime]],
        statuses: Iterable[str],
        marketplace_ids: Iterable[str],
        *,
        known_lines: KnownLines | None = None,
    ) -> Iterator[Refetched]:
        """Ask Amazon again for orders (id, created time; first asked first), one call a page.

        Used for held orders waiting for an address, in as few calls as each API allows:
        1. a probe: v2026 asks getOrder for the first order, and the next while Amazon does not
           know one (404) or sends it unusable; v0 asks for a Restricted Data Token (once a run,
           while Amazon refuses it). An answer without the address it should carry means
           addresses are still withheld: that page is the last (`withheld`).
        2. the rest in bulk: v2026 searchOrders over the created times of the orders (100 a
           page, spans of orders created close together); v0 getOrders by id (50 a call).
        3. v2026: each order the bulk answers did not include, on its own (getOrder).
        Every call waits for the rate limit as any other; stop iterating to stop asking.
        """
        if self.settings.orders_api == "v0":
            yield from self._v0_refetch(list(wanted), list(marketplace_ids), known_lines)
            return
        queue = list(wanted)
        probes = 0
        while queue:
            if probes == PROBES_PER_RUN:
                return  # each answered 404, unusable or without telling: the rest next run
            probes += 1
            page = self._one(queue.pop(0)[0])
            page.withheld = any(o.ship_to is None and o.status in ADDRESS_STATUSES for o in page.orders)
            yield page
            if page.withheld:
                return
            if any(o.ship_to is not None for o in page.orders):
                break
        left = dict(queue)
        try:
            for start, end, ids in created_spans(queue, SPAN_GAP, SPAN_LEAST):
                for page, answered in self._search_created(start, end, ids, list(statuses), list(marketplace_ids)):
                    for order_id in answered:
                        left.pop(order_id, None)
                    yield page
        except AmazonThrottled as problem:
            log.info("searchOrders is at its rate limit (%s): the held orders left are asked for one by one", problem)
        for order_id in list(left):
            yield self._one(order_id)

    def order(self, order_id: str) -> Order | None:
        """One order, fresh from Amazon; None if Amazon sent it unusable (see `rejected`).
        Raises AmazonNotFound if Amazon does not know it."""
        if self.settings.orders_api == "v0":
            return self._v0_order(order_id)
        response = self._call(
            "getOrder", self._client(OrdersV20260101).get_order, order_id, includedData=INCLUDED_DATA
        )
        data = response.payload.get("order")
        if not isinstance(data, dict):
            raise AmazonUnavailable(f"getOrder {order_id} answered without an order")
        return self._convert(order_from_v2026, data)

    def _one(self, order_id: str) -> Refetched:
        try:
            order = self.order(order_id)
        except AmazonNotFound:
            return Refetched([], [order_id])
        return Refetched([order] if order is not None else [])

    def _search_created(self, start: datetime, end: datetime, ids: set[str], statuses: list[str],
                        marketplace_ids: list[str]) -> Iterator[tuple[Refetched, list[str]]]:
        """searchOrders over one span of created times: each page's orders among `ids`, and the
        ids it answered for (usable or not). Stops once every id was answered for, or when a
        page carries fewer than SPAN_LEAST of them (getOrder each is cheaper then)."""
        params = {
            "createdAfter": iso_z(start),
            "createdBefore": iso_z(end),
            "fulfillmentStatuses": statuses,
            "fulfilledBy": ["MERCHANT"],
            "marketplaceIds": marketplace_ids,
            "includedData": INCLUDED_DATA,
            "maxResultsPerPage": 100,
        }
        left = set(ids)
        pages = self._pages("searchOrders", self._client(OrdersV20260101).search_orders, params, "paginationToken")
        try:
            for page in pages:
                if not isinstance(page.payload.get("orders"), list):
                    raise AmazonUnavailable("searchOrders answered without an orders list (HTTP 5xx or empty body)")
                mine = [item for item in page.payload["orders"] if isinstance(item, dict) and item.get("orderId") in left]
                answered = [item["orderId"] for item in mine]
                left.difference_update(answered)
                orders = [self._convert(order_from_v2026, item) for item in mine]
                yield Refetched([o for o in orders if o is not None]), answered
                if not left or len(mine) < SPAN_LEAST:
                    return
        finally:
            pages.close()

    # --- v0 ------------------------------------------------------------------------------

    def _v0_updated_between(self, after, before, statuses, marketplace_ids, known_lines) -> list[Order]:
        params = {
            "LastUpdatedAfter": iso_z(after),
            "LastUpdatedBefore": iso_z(before),
            "OrderStatuses": [V0_STATUS.get(status, status) for status in statuses],
            "MarketplaceIds": marketplace_ids,
            "FulfillmentChannels": ["MFN"],
            "MaxResultsPerPage": 100,
        }
        return _unique(order for page in self._v0_pages(params, known_lines) for order in page)

    def _v0_pages(self, params: dict, known_lines: KnownLines | None) -> Iterator[list[Order]]:
        """getOrders pages as records, with the one Restricted Data Token of the run (or none
        while Amazon refuses it: then orders come without addresses)."""
        client = self._client(_OrdersV0, restricted_data_token=self._restricted_token(V0_BULK_PATH))
        for page in self._pages("getOrders", client.get_orders, params, "NextToken"):
            if not isinstance(page.payload.get("Orders"), list):
                raise AmazonUnavailable("getOrders answered without an Orders list (HTTP 5xx or empty body)")
            orders = [self._convert(lambda d: self._v0_record(d, known_lines), data) for data in page.payload["Orders"]]
            yield [order for order in orders if order is not None]

    def _v0_record(self, data: dict, known_lines: KnownLines | None) -> Order:
        """A getOrders entry as a record; getOrderItems only if `known_lines` has no lines for
        it (its header decides first: an order that cannot be sent needs none)."""
        header = header_from_v0(data)
        lines = known_lines(header) if known_lines is not None else None
        if lines is not None:
            return replace(order_from_v0(data, []), lines=tuple(lines))
        try:
            items = self._v0_items(header.order_id)
        except AmazonNotFound:
            raise BadRecord(f"order {header.order_id}: getOrderItems: Amazon does not know its items (404)") from None
        return order_from_v0(data, items)

    def _v0_refetch(self, wanted: list[tuple[str, datetime]], marketplace_ids: list[str],
                    known_lines: KnownLines | None) -> Iterator[Refetched]:
        if self._restricted_token(V0_BULK_PATH) is None:
            yield Refetched([], withheld=True)
            return
        released = False
        for start in range(0, len(wanted), V0_IDS_PER_CALL):
            batch = wanted[start:start + V0_IDS_PER_CALL]
            params = {
                "CreatedAfter": iso_z(min(created for _, created in batch)),
                "MarketplaceIds": marketplace_ids,
                "AmazonOrderIds": [order_id for order_id, _ in batch],
            }
            orders = [order for page in self._v0_pages(params, known_lines) for order in page]
            rejected = {order_id for order_id, _ in self.rejected}
            answered = {order.order_id for order in orders} | rejected
            page = Refetched(orders, [order_id for order_id, _ in batch if order_id not in answered])
            page.withheld = not released and any(o.ship_to is None and o.status in ADDRESS_STATUSES for o in orders) \
                and not any(o.ship_to is not None for o in orders)
            yield page
            if page.withheld:
                return
            released = released or any(o.ship_to is not None for o in orders)

    def _v0_order(self, order_id: str) -> Order | None:
        path = f"/orders/v0/orders/{order_id}"
        client = self._client(_OrdersV0, restricted_data_token=self._restricted_token(path))
        response = self._call("v0.getOrder", client.get_order, order_id)
        if not response.payload.get("AmazonOrderId"):
            raise AmazonUnavailable(f"getOrder {order_id} answered without an order")
        return self._convert(lambda d: self._v0_record(d, None), response.payload)

    def _v0_items(self, order_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        client = self._client(_OrdersV0)
        for page in self._pages("getOrderItems", lambda **kw: client.get_order_items(order_id, **kw), {}, "NextToken"):
            if not isinstance(page.payload.get("OrderItems"), list):
                raise AmazonUnavailable(f"getOrderItems {order_id} answered without OrderItems")
            items.extend(page.payload["OrderItems"])
        return items

    def _restricted_token(self, path: str) -> str | None:
        """A Restricted Data Token for addresses and buyer info, or None if the role is missing.

        Tokens are reused until a minute before they expire, as Amazon recommends.
        """
        cached = self._restricted_tokens.get(path)
        if cached and cached[1] > self._clock():
            return cached[0]
        if self._token_refused:
            return None  # refused earlier in this run: asked again next run, not every window
        body = {
            "restrictedResources": [
                {"method": "GET", "path": path, "dataElements": ["buyerInfo", "shippingAddress"]}
            ]
        }
        try:
            response = self._call("createRestrictedDataToken", self._client(Tokens).create_restricted_data_token, **body)
        except PiiAccessMissing:
            if not self.pii_missing:
                log.warning("restricted data token refused: orders will arrive without addresses; %s", PII_ROLE_HINT)
            self.pii_missing = self._token_refused = True
            return None
        token = response.payload.get("restrictedDataToken")
        if not token:
            raise AmazonUnavailable("createRestrictedDataToken answered without a token")
        lifetime = float(response.payload.get("expiresIn") or 3600)
        self._restricted_tokens[path] = (token, self._clock() + max(0.0, lifetime - 60))
        self.pii_missing = False
        return token

    # --- plumbing ------------------------------------------------------------------------

    def _convert(self, converter: Callable[[dict], Order], data: dict) -> Order | None:
        """A record, or None after noting why Amazon's data for this order is unusable."""
        try:
            return converter(data)
        except (BadRecord, AttributeError, TypeError) as problem:
            # AttributeError/TypeError: an entry that is not an order object at all (v0 reads
            # its id before the converter runs). Named by type only: no values in messages.
            order_id = str(data.get("orderId") or data.get("AmazonOrderId") or "?") if isinstance(data, dict) else "?"
            if not isinstance(problem, BadRecord):
                problem = BadRecord(f"order {shown(order_id)}: not an order object ({type(problem).__name__})")
            self.rejected.append((order_id, str(problem)))
            log.error("unusable order from Amazon order_id=%s why=%s", shown(order_id), problem)
            return None

    def _client(self, api: type, restricted_data_token: str | None = None):
        """The library's client for `api`, made once (with this token, for v0) and reused."""
        key = (api, restricted_data_token)
        if key not in self._clients:
            if len(self._clients) > 8:  # tokens expire: drop clients holding old ones
                for client in self._clients.values():
                    client.close()
                self._clients.clear()
            self._clients[key] = self._new_client(api, restricted_data_token)
        return self._clients[key]

    def _new_client(self, api: type, restricted_data_token: str | None):
        # Under the marketplace argument the library reads SP_API_DEFAULT_MARKETPLACE; setting
        # the endpoint afterwards makes the configured one win whatever the environment says.
        market = _Market(self.settings.endpoint, self.settings.marketplaces[0])
        client = api(
            marketplace=market,
            credentials={
                "refresh_token": self.settings.refresh_token,
                "lwa_app_id": self.settings.client_id,
                "lwa_client_secret": self.settings.client_secret,
            },
            refresh_token=self.settings.refresh_token,
            timeout=self.settings.timeout_seconds,
            auth_token_client_class=self._token_client,
            restricted_data_token=restricted_data_token,
        )
        client.endpoint = market.endpoint
        client.marketplace_id = market.marketplace_id
        client.keep_restricted_data_token = True
        return client

    def _pages(self, operation: str, call: Callable[..., ApiResponse], params: dict, token_name: str):
        """Yield every page; a throttled page is retried with the same token, never skipped.

        The filters are repeated with each token: the models require them on every request.
        """
        token, seen = None, set()
        while True:
            page = self._call(operation, call, **(dict(params, **{token_name: token}) if token else params))
            yield page
            token = page.next_token
            if not token:
                return
            if token in seen:
                raise AmazonUnavailable(
                    f"{operation}: Amazon sent a page token it had sent before; the pages stop here"
                    " rather than loop, and are read again from the start on the next run"
                )
            seen.add(token)

    def _call(self, operation: str, call: Callable[..., ApiResponse], *args: Any, **kwargs: Any) -> ApiResponse:
        for attempt in range(1, self._attempts + 1):
            self._limiter.acquire(operation, self.settings.max_throttle_wait_seconds)
            try:
                return call(*args, **kwargs)
            except SellingApiRequestThrottledException as problem:
                wait = _rate_wait(problem.headers)
                if wait is not None:
                    self._limiter.slow_down(operation, 1 / wait)
                wait = wait or self._pause(attempt)
                if wait > self.settings.max_throttle_wait_seconds:
                    raise AmazonThrottled(
                        f"{operation}: throttled by Amazon (429) for {wait:.0f}s, longer than"
                        " amazon.max_throttle_wait_seconds; continued on the next run", retry_after=wait
                    ) from None
                if attempt == self._attempts:
                    raise AmazonThrottled(
                        f"{operation}: throttled by Amazon (429) {attempt} times in a row; continued on the next run",
                        retry_after=wait,
                    ) from None
                log.info("throttled op=%s attempt=%d wait=%.1fs: Amazon answered 429 (too many requests);"
                         " waiting as it says, then the same call again", operation, attempt, wait)
                self._sleep(wait)
            except SellingApiForbiddenException as problem:
                _token_module.cache.clear()
                message = _amazon_message(problem)
                if operation == "createRestrictedDataToken":
                    raise PiiAccessMissing(f"{operation}: {message}; {PII_ROLE_HINT}") from None
                raise AmazonAuthError(f"{operation}: access denied by Amazon: {message}") from None
            except AuthorizationError as problem:
                _token_module.cache.clear()
                raise AmazonAuthError(LWA_REFUSED.format(problem.message or problem.error_code or problem)) from None
            except _LoginUnavailable as problem:
                _token_module.cache.clear()
                if attempt == self._attempts:
                    raise AmazonUnavailable(_login_unavailable(problem, "retried on the next run")) from None
                self._sleep(self._pause(attempt))
            except SellingApiNotFoundException as problem:
                raise AmazonNotFound(f"{operation}: Amazon does not know it ({_amazon_message(problem)})") from None
            except SellingApiException as problem:
                if getattr(problem, "code", 500) >= 500 and attempt < self._attempts:
                    self._sleep(self._pause(attempt))
                    continue
                if getattr(problem, "code", 500) >= 500:
                    raise AmazonUnavailable(f"{operation}: Amazon error {_amazon_message(problem)}") from None
                raise BridgeError(f"{operation}: Amazon refused the request: {_amazon_message(problem)}") from None
            except (httpx.HTTPError, ValueError) as problem:
                # ValueError: a body that is neither JSON nor empty (an HTML error page).
                if attempt == self._attempts:
                    raise AmazonUnavailable(f"{operation}: {self._unreachable(problem)}") from None
                self._sleep(self._pause(attempt))
        raise AssertionError("unreachable")

    def _unreachable(self, problem: Exception) -> str:
        if isinstance(problem, httpx.HTTPError):
            return f"cannot reach SP-API at {self.settings.endpoint}: {problem}"
        # The token is fetched inside the call: the page may be the token URL's as well.
        return (f"SP-API at {self.settings.endpoint} or the token URL {self.settings.token_url} answered with"
                " something that is not JSON (an HTML error page?); the next run tries again")

    def _pause(self, attempt: int) -> float:
        return min(60.0, self._backoff * 2 ** (attempt - 1))


def _token_client_class(token_url: str) -> type[AccessTokenClient]:
    parts = urlsplit(token_url)

    def request(self, url: str, data: Any, headers: Any) -> dict:
        """The library's token request, telling an outage from refused credentials: it reports
        any answer but 200 as AuthorizationError, and fails on a body that is not JSON."""
        try:
            response = self._transport.request("POST", url, data=data, headers=headers)
        except httpx.HTTPError as problem:
            raise _LoginUnavailable(f"cannot reach {token_url}: {type(problem).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if not isinstance(body, dict):
            raise _LoginUnavailable(f"HTTP {status}, not JSON, from {token_url}")
        if status >= 500 or status == 429 or (status == 200 and not body.get("access_token")):
            raise _LoginUnavailable(f"HTTP {status} from {token_url}")
        if status != 200:
            raise AuthorizationError(body.get("error"), body.get("error_description"), status)
        return body

    return type(
        "BridgeAccessTokenClient",
        (AccessTokenClient,),
        {"scheme": f"{parts.scheme}://", "host": parts.netloc, "path": parts.path or "/auth/o2/token",
         "_request": request},
    )


def _login_unavailable(problem: _LoginUnavailable, then: str) -> str:
    # An answer that is not JSON may also be a token URL that points at a web page.
    hint = "; if it lasts, check amazon.token_url" if "not JSON" in str(problem) else ""
    return f"Login with Amazon is unavailable ({problem}): not a credentials problem; {then}{hint}"


def created_spans(
    wanted: Sequence[tuple[str, datetime]], gap: timedelta, least: int
) -> list[tuple[datetime, datetime, set[str]]]:
    """Orders (id, created time) grouped into spans of created time worth one searchOrders
    each: consecutive orders at most `gap` apart, at least `least` of them (fewer are left out:
    a getOrder each is cheaper)."""
    groups: list[list[tuple[str, datetime]]] = []
    for order_id, created in sorted(wanted, key=lambda pair: pair[1]):
        if not groups or created - groups[-1][-1][1] > gap:
            groups.append([])
        groups[-1].append((order_id, created))
    return [(group[0][1], group[-1][1], {order_id for order_id, _ in group})
            for group in groups if len(group) >= least]


def _rate_wait(headers: Any) -> float | None:
    try:
        rate = float((headers or {}).get("x-amzn-RateLimit-Limit"))
    except (TypeError, ValueError):
        return None
    return 1 / rate if rate > 0 else None


def _amazon_message(problem: SellingApiException) -> str:
    code = getattr(problem, "amzn_code", "") or ""
    message = getattr(problem, "message", "") or str(problem)
    return f"{code}: {message}" if code else message


def _unique(orders: Iterable[Order]) -> list[Order]:
    """Pages can repeat an order (amzn docs #2090): keep its newest version, once."""
    newest: dict[str, Order] = {}
    for order in orders:
        kept = newest.get(order.order_id)
        if kept is None or order.last_updated >= kept.last_updated:
            newest[order.order_id] = order
    return list(newest.values())
