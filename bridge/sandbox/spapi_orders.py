"""The sandbox's order logic, pure: query validation, filtering, paging and the v0 view.

Everything here takes plain data (query dicts, order dicts, `now`) and returns plain data or
raises `InvalidInput`; the HTTP layer in `spapi.py` turns that into Amazon's wire format.
Rules come from `orders_2026-01-01.json` and `ordersV0.json` (parameter descriptions).
"""
from __future__ import annotations

import base64
import bisect
import copy
import hashlib
import itertools
import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable, Iterable

FULFILLMENT_STATUSES = ("PENDING_AVAILABILITY", "PENDING", "UNSHIPPED", "PARTIALLY_SHIPPED",
                        "SHIPPED", "CANCELLED", "UNFULFILLABLE")
FULFILLED_BY = ("MERCHANT", "AMAZON")
INCLUDED_DATA = ("BUYER", "RECIPIENT", "PROCEEDS", "EXPENSE", "PROMOTION", "CANCELLATION",
                 "FULFILLMENT", "PACKAGES", "TAX", "PAYMENT", "FULFILLMENT_ORDERS")
# includedData value -> top-level Order key it controls (orderItems is always returned).
INCLUDED_KEYS = {"BUYER": "buyer", "RECIPIENT": "recipient", "PROCEEDS": "proceeds",
                 "FULFILLMENT": "fulfillment", "PACKAGES": "packages", "TAX": "tax",
                 "PAYMENT": "payment", "FULFILLMENT_ORDERS": "fulfillmentOrders"}
PII_KEYS = {"buyer", "recipient"}

V0_STATUS = {"PENDING_AVAILABILITY": "PendingAvailability", "PENDING": "Pending",
             "UNSHIPPED": "Unshipped", "PARTIALLY_SHIPPED": "PartiallyShipped",
             "SHIPPED": "Shipped", "CANCELLED": "Canceled", "UNFULFILLABLE": "Unfulfillable"}
V0_STATUSES = tuple(V0_STATUS.values()) + ("InvoiceUnconfirmed",)
V0_CHANNEL = {"MERCHANT": "MFN", "AMAZON": "AFN"}
V0_ADDRESS_TYPE = {"RESIDENTIAL": "Residential", "COMMERCIAL": "Commercial"}
# ordersV0.json, Order.ShippingAddress: "only available for orders with the following status
# values: Unshipped, PartiallyShipped, Shipped and InvoiceUnconfirmed"; without a Restricted Data
# Token only its unrestricted parts (city, region, postal code, country) are sent.
V0_ADDRESS_STATUSES = ("Unshipped", "PartiallyShipped", "Shipped", "InvoiceUnconfirmed")
V0_RESTRICTED_ADDRESS = ("Name", "CompanyName", "AddressLine1", "AddressLine2", "AddressLine3",
                         "Phone", "AddressType", "ExtendedFields")

MIN_AGE = timedelta(minutes=2)          # "...Before must be at least two minutes before now"
MAX_MARKETPLACES = 50
MAX_ORDER_IDS = 50                      # getOrders' AmazonOrderIds maxItems
MAX_PAGE = 100

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$")


class InvalidInput(Exception):
    """A request parameter breaks the model's rules; answered with 400 InvalidInput."""


# -- dates ---------------------------------------------------------------------------------------

def parse_iso(name: str, value: str) -> datetime:
    """ISO 8601 only: `2026-11-20T09:00:00Z`; Python's `str(datetime)` (space) is rejected."""
    if not _ISO.match(value):
        raise InvalidInput(f"{name} must be in ISO 8601 format, got {value!r}")
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a valid ISO 8601 date-time, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- query helpers -------------------------------------------------------------------------------

def single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidInput(f"{name} must be given once")
    return values[0]


def many(query: dict[str, list[str]], name: str, allowed: tuple[str, ...] | None = None,
         max_items: int | None = None) -> list[str] | None:
    """An array parameter, sent either repeated (`a=X&a=Y`) or comma-separated (`a=X,Y`)."""
    if query.get(name) is None:
        return None
    values = [part.strip() for raw in query[name] for part in raw.split(",") if part.strip()]
    if allowed is not None:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise InvalidInput(f"{name} has invalid value(s) {', '.join(bad)}; "
                               f"allowed: {', '.join(allowed)}")
    if max_items is not None and len(values) > max_items:
        raise InvalidInput(f"{name} accepts at most {max_items} values")
    return values


def page_size(query: dict[str, list[str]], name: str) -> int:
    raw = single(query, name)
    if raw is None:
        return MAX_PAGE
    try:
        size = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer between 1 and {MAX_PAGE}") from None
    if not 1 <= size <= MAX_PAGE:
        raise InvalidInput(f"{name} must be between 1 and {MAX_PAGE}")
    return size


# -- the search window ---------------------------------------------------------------------------

def time_window(after_created: str | None, before_created: str | None,
                after_updated: str | None, before_updated: str | None,
                now: datetime, names: tuple[str, str, str, str]) -> tuple[str, datetime, datetime]:
    """Validate the date filters; return (field, after, before) with before made explicit.

    `field` is "createdTime" or "lastUpdatedTime". An omitted before is now - 2 minutes,
    which is what Amazon echoes back in the response.
    """
    n_ca, n_cb, n_ua, n_ub = names
    if (after_created is None) == (after_updated is None):
        raise InvalidInput(f"Exactly one of {n_ca} and {n_ua} must be provided")
    if after_created is not None and before_updated is not None:
        raise InvalidInput(f"{n_ub} cannot be combined with {n_ca}")
    if after_updated is not None and before_created is not None:
        raise InvalidInput(f"{n_cb} cannot be combined with {n_ua}")
    if after_created is not None:
        field, after_raw, before_raw, a_name, b_name = ("createdTime", after_created,
                                                        before_created, n_ca, n_cb)
    else:
        field, after_raw, before_raw, a_name, b_name = ("lastUpdatedTime", after_updated,
                                                        before_updated, n_ua, n_ub)
    after = parse_iso(a_name, after_raw)
    latest = now - MIN_AGE
    if before_raw is None:
        before = latest
    else:
        before = parse_iso(b_name, before_raw)
        if before > latest:
            raise InvalidInput(f"{b_name} must be at least two minutes before the time of the "
                               f"request")
    if before < after:
        raise InvalidInput(f"{b_name} must be equal to or after {a_name}")
    if after > latest:
        raise InvalidInput(f"{a_name} must be at least two minutes before the time of the "
                           f"request")
    return field, after, before


# -- paging ---------------------------------------------------------------------------------------

def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def encode_token(position: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, sort_keys=True).encode()).decode()


def decode_token(name: str, token: str, query_fingerprint: str) -> dict:
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
        ok = isinstance(position, dict) and position.get("q") == query_fingerprint
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise InvalidInput(f"Invalid {name}: it does not belong to this query (all other "
                           f"parameters must repeat the request that returned it)")
    return position


def page_of(keys: list[tuple[datetime, str, str]], orders: dict[str, dict], field: str, after: datetime,
            before: datetime, size: int, position: dict | None, query_fingerprint: str,
            keep: Callable[[dict], bool]) -> tuple[list[dict], str | None]:
    """`page` read from `keys`, every order's (time, time as sent, id) sorted: it starts at the
    window's start or the token's place by bisection and reads on until the page is full, so a
    page costs the same in a store of a hundred orders or of a million."""
    if position is None:
        start = bisect.bisect_left(keys, (after,))
    else:
        start = bisect.bisect_right(keys, (parse_iso("paginationToken", position["t"]), position["t"], position["id"]))
    chunk: list[dict] = []
    for moment, _, order_id in itertools.islice(keys, start, None):
        if moment > before:
            break
        order = orders[order_id]
        if not keep(order):
            continue
        if len(chunk) == size:
            tail = chunk[-1]
            return chunk, encode_token({"q": query_fingerprint, "t": tail[field], "id": tail["orderId"],
                                        "before": iso(before)})
        chunk.append(order)
    return chunk, None


def time_keys(orders: Iterable[dict], field: str) -> list[tuple[datetime, str, str]]:
    """The keys `page_of` reads: (time, time as sent, id) of every order, sorted."""
    return sorted((parse_iso(field, order[field]), order[field], order["orderId"]) for order in orders)


# -- v2026 view --------------------------------------------------------------------------------

def matches(order: dict, statuses: list[str] | None, fulfilled_by: list[str] | None,
            marketplaces: list[str] | None) -> bool:
    fulfillment = order.get("fulfillment", {})
    if statuses and fulfillment.get("fulfillmentStatus") not in statuses:
        return False
    if fulfilled_by and fulfillment.get("fulfilledBy") not in fulfilled_by:
        return False
    if marketplaces and order["salesChannel"].get("marketplaceId") not in marketplaces:
        return False
    return True


def project(order: dict, included: list[str] | None, pii_access: bool) -> dict:
    """The order as searchOrders/getOrder return it for this includedData and PII role."""
    wanted = {INCLUDED_KEYS[v] for v in included or () if v in INCLUDED_KEYS}
    if not pii_access:
        wanted -= PII_KEYS
    optional = set(INCLUDED_KEYS.values())
    return copy.deepcopy({k: v for k, v in order.items() if k not in optional or k in wanted})


# -- v0 view ------------------------------------------------------------------------------------

def _money_v0(money: dict | None) -> dict | None:
    if not money:
        return None
    return {"CurrencyCode": money["currencyCode"], "Amount": money["amount"]}


def to_v0(order: dict, shipping_address: bool, buyer_info: bool) -> dict:
    """A v2026 seed order in the v0 `Order` shape (ordersV0.json)."""
    fulfillment = order.get("fulfillment", {})
    items = order.get("orderItems", [])
    shipped = sum(i.get("fulfillment", {}).get("quantityFulfilled", 0) for i in items)
    unshipped = sum(i.get("fulfillment", {}).get("quantityUnfulfilled", 0) for i in items)
    programs = order.get("programs", [])
    v0: dict = {
        "AmazonOrderId": order["orderId"],
        "PurchaseDate": order["createdTime"],
        "LastUpdateDate": order["lastUpdatedTime"],
        "OrderStatus": V0_STATUS[fulfillment.get("fulfillmentStatus", "PENDING")],
        "FulfillmentChannel": V0_CHANNEL.get(fulfillment.get("fulfilledBy", "MERCHANT"), "MFN"),
        "SalesChannel": order["salesChannel"].get("marketplaceName", "Amazon.com"),
        "ShipServiceLevel": fulfillment.get("fulfillmentServiceLevel", "Standard"),
        "NumberOfItemsShipped": shipped,
        "NumberOfItemsUnshipped": unshipped,
        "MarketplaceId": order["salesChannel"].get("marketplaceId", ""),
        "ShipmentServiceLevelCategory": fulfillment.get("fulfillmentServiceLevel", "Standard")
        .title().replace("_", ""),
        "OrderType": "Preorder" if "PREORDER" in programs else "StandardOrder",
        "IsBusinessOrder": "AMAZON_BUSINESS" in programs,
        "IsPrime": "PRIME" in programs,
        "IsPremiumOrder": "PREMIUM" in programs,
        "IsGlobalExpressEnabled": False,
        "IsReplacementOrder": False,
        "IsSoldByAB": False,
        "IsISPU": False,
    }
    total = _money_v0(order.get("proceeds", {}).get("grandTotal"))
    if total:
        v0["OrderTotal"] = total
    for window, first, last in (("shipByWindow", "EarliestShipDate", "LatestShipDate"),
                                ("deliverByWindow", "EarliestDeliveryDate", "LatestDeliveryDate")):
        span = fulfillment.get(window) or {}
        if "earliestDateTime" in span:
            v0[first] = span["earliestDateTime"]
        if "latestDateTime" in span:
            v0[last] = span["latestDateTime"]
    address = order.get("recipient", {}).get("deliveryAddress")
    if address and v0["OrderStatus"] in V0_ADDRESS_STATUSES:
        v0["ShippingAddress"] = _address_v0(address) if shipping_address else _unrestricted_v0(address)
    buyer = order.get("buyer")
    if buyer_info and buyer:
        info = {"BuyerEmail": buyer.get("buyerEmail"), "BuyerName": buyer.get("buyerName"),
                "PurchaseOrderNumber": buyer.get("buyerPurchaseOrderNumber")}
        v0["BuyerInfo"] = {k: v for k, v in info.items() if v is not None}
    return v0


def _address_v0(address: dict) -> dict:
    names = {"name": "Name", "companyName": "CompanyName", "addressLine1": "AddressLine1",
             "addressLine2": "AddressLine2", "addressLine3": "AddressLine3", "city": "City",
             "districtOrCounty": "County", "stateOrRegion": "StateOrRegion",
             "municipality": "Municipality", "postalCode": "PostalCode",
             "countryCode": "CountryCode", "phone": "Phone"}
    v0 = {v0_key: address[key] for key, v0_key in names.items() if key in address}
    kind = V0_ADDRESS_TYPE.get(address.get("addressType", ""))
    if kind:
        v0["AddressType"] = kind
    return v0


def _unrestricted_v0(address: dict) -> dict:
    return {k: v for k, v in _address_v0(address).items() if k not in V0_RESTRICTED_ADDRESS}


def items_v0(order: dict) -> list[dict]:
    """getOrderItems' OrderItems; ItemPrice is the line total (unit price x quantity)."""
    lines = []
    for item in order.get("orderItems", []):
        product = item.get("product", {})
        line = {"ASIN": product.get("asin", ""), "OrderItemId": item["orderItemId"],
                "QuantityOrdered": item["quantityOrdered"],
                "QuantityShipped": item.get("fulfillment", {}).get("quantityFulfilled", 0)}
        if "sellerSku" in product:
            line["SellerSKU"] = product["sellerSku"]
        if "title" in product:
            line["Title"] = product["title"]
        unit = product.get("price", {}).get("unitPrice")
        if unit:
            total = _decimal_times(unit["amount"], item["quantityOrdered"])
            line["ItemPrice"] = {"CurrencyCode": unit["currencyCode"], "Amount": total}
        lines.append(line)
    return lines


def _decimal_times(amount: str, quantity: int) -> str:
    value = Decimal(amount) * quantity
    places = max(0, -Decimal(amount).as_tuple().exponent)
    return f"{value:.{places}f}"
