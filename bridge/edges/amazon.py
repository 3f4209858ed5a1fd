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
  a client-side token bucket keeps each operation within Amazon's published rate.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import httpx
from sp_api.api import OrdersV0, OrdersV20260101, Tokens
from sp_api.auth import AccessTokenClient
from sp_api.auth import access_token_client as _token_module
from sp_api.auth.exceptions import AuthorizationError
from sp_api.base import ApiResponse, SellingApiException, fill_query_params, sp_endpoint
from sp_api.base.exceptions import (
    SellingApiForbiddenException,
    SellingApiRequestThrottledException,
)

from bridge.config import AmazonSettings
from bridge.errors import (
    AmazonAuthError,
    AmazonThrottled,
    AmazonUnavailable,
    BadRecord,
    BridgeError,
    PiiAccessMissing,
)
from bridge.formats.amazon_orders import order_from_v0, order_from_v2026
from bridge.records import Order, iso_z, shown

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
PII_ROLE_HINT = (
    "grant the seller's SP-API app the Direct-to-Consumer Shipping (Restricted) role in Seller "
    "Central (Apps and Services > Develop Apps), then re-authorise it; held orders are delivered "
    "automatically once addresses come through"
)


@dataclass
class _Market:
    """The duck-typed marketplace object the library takes (endpoint, marketplace_id, region)."""

    endpoint: str
    marketplace_id: str
    region: str = ""


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
                    f"{operation}: the usage plan allows the next call in {wait:.0f}s", retry_after=wait
                )
            self._buckets[operation] = (tokens - 1 + wait * rate, now + wait)
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
            raise AmazonAuthError(
                f"Login with Amazon refused the credentials ({problem.message or problem}); "
                "check BRIDGE_LWA_CLIENT_ID, BRIDGE_LWA_CLIENT_SECRET and BRIDGE_LWA_REFRESH_TOKEN"
            ) from None
        except httpx.HTTPError as problem:
            raise AmazonUnavailable(f"cannot reach the token URL {self.settings.token_url}: {problem}") from None
        except (ValueError, TypeError):
            # ValueError: a body that is not JSON (an HTML error page, a proxy's login page);
            # TypeError: JSON without the token's fields.
            raise AmazonUnavailable(
                f"the token URL {self.settings.token_url} answered with something that is not a Login with"
                " Amazon token (an HTML page?): check amazon.token_url, or try again later"
            ) from None

    def updated_between(
        self,
        after: datetime,
        before: datetime,
        statuses: Iterable[str],
        marketplace_ids: Iterable[str],
    ) -> list[Order]:
        """Every merchant-fulfilled order last updated between `after` and `before`, all pages.

        Amazon's bounds are inclusive at both ends, so an order updated exactly on a window
        edge can come back in two windows; the ledger records it once.
        """
        if self.settings.orders_api == "v0":
            return self._v0_updated_between(after, before, list(statuses), list(marketplace_ids))
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

    def order(self, order_id: str) -> Order | None:
        """One order, fresh from Amazon (used to re-check held orders)."""
        if self.settings.orders_api == "v0":
            return self._v0_order(order_id)
        response = self._call(
            "getOrder", self._client(OrdersV20260101).get_order, order_id, includedData=INCLUDED_DATA
        )
        data = response.payload.get("order")
        if not isinstance(data, dict):
            raise AmazonUnavailable(f"getOrder {order_id} answered without an order")
        return self._convert(order_from_v2026, data)

    # --- v0 ------------------------------------------------------------------------------

    def _v0_updated_between(self, after, before, statuses, marketplace_ids) -> list[Order]:
        params = {
            "LastUpdatedAfter": iso_z(after),
            "LastUpdatedBefore": iso_z(before),
            "OrderStatuses": [V0_STATUS.get(status, status) for status in statuses],
            "MarketplaceIds": marketplace_ids,
            "FulfillmentChannels": ["MFN"],
            "MaxResultsPerPage": 100,
        }
        client = self._client(_OrdersV0, restricted_data_token=self._restricted_token("/orders/v0/orders"))
        client.keep_restricted_data_token = True
        orders: list[Order] = []
        for page in self._pages("getOrders", client.get_orders, params, "NextToken"):
            if not isinstance(page.payload.get("Orders"), list):
                raise AmazonUnavailable("getOrders answered without an Orders list (HTTP 5xx or empty body)")
            for data in page.payload["Orders"]:
                orders.append(self._convert(lambda d: order_from_v0(d, self._v0_items(d.get("AmazonOrderId", ""))), data))
        return _unique(order for order in orders if order is not None)

    def _v0_order(self, order_id: str) -> Order | None:
        path = f"/orders/v0/orders/{order_id}"
        client = self._client(_OrdersV0, restricted_data_token=self._restricted_token(path))
        client.keep_restricted_data_token = True
        response = self._call("v0.getOrder", client.get_order, order_id)
        if not response.payload.get("AmazonOrderId"):
            raise AmazonUnavailable(f"getOrder {order_id} answered without an order")
        return self._convert(lambda d: order_from_v0(d, self._v0_items(order_id)), response.payload)

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
            self.pii_missing = True
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

    def _client(self, api: type, **kwargs: Any):
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
            **kwargs,
        )
        client.endpoint = market.endpoint
        client.marketplace_id = market.marketplace_id
        return client

    def _pages(self, operation: str, call: Callable[..., ApiResponse], params: dict, token_name: str):
        """Yield every page; a throttled page is retried with the same token, never skipped.

        The filters are repeated with each token: the models require them on every request.
        """
        token = None
        while True:
            page = self._call(operation, call, **(dict(params, **{token_name: token}) if token else params))
            yield page
            token = page.next_token
            if not token:
                return

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
                if attempt == self._attempts or wait > self.settings.max_throttle_wait_seconds:
                    raise AmazonThrottled(f"{operation}: throttled by Amazon (429)", retry_after=wait) from None
                log.info("throttled op=%s attempt=%d wait=%.1fs", operation, attempt, wait)
                self._sleep(wait)
            except SellingApiForbiddenException as problem:
                _token_module.cache.clear()
                message = _amazon_message(problem)
                if operation == "createRestrictedDataToken":
                    raise PiiAccessMissing(f"{operation}: {message}; {PII_ROLE_HINT}") from None
                raise AmazonAuthError(f"{operation}: access denied by Amazon: {message}") from None
            except AuthorizationError as problem:
                _token_module.cache.clear()
                raise AmazonAuthError(
                    f"Login with Amazon refused the credentials ({problem.message or problem}); "
                    "check BRIDGE_LWA_CLIENT_ID, BRIDGE_LWA_CLIENT_SECRET and BRIDGE_LWA_REFRESH_TOKEN"
                ) from None
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
    return type(
        "BridgeAccessTokenClient",
        (AccessTokenClient,),
        {"scheme": f"{parts.scheme}://", "host": parts.netloc, "path": parts.path or "/auth/o2/token"},
    )


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
