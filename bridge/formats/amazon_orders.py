"""Amazon's order JSON (v2026-01-01 searchOrders, or v0 getOrders + getOrderItems) → Order records.

Pure: takes decoded JSON, returns records or raises BadRecord naming the order and the field.
Amazon may send any field as JSON null: optional text becomes "", optional objects count as
empty, and anything else in the wrong shape (a null time, an item that is not an object) makes
the order a BadRecord. Its message names the field, never the value: values are buyer data.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.errors import BadRecord
from bridge.records import (
    FULFILLMENT_STATUSES,
    V0_STATUS_TO_FULFILLMENT,
    Address,
    Line,
    Order,
    OrderHeader,
    parse_iso,
    shown,
)

# More units than any order line could hold (Amazon's model sets no maximum): a value above it
# is damage, and would be written as a number of hundreds of digits.
MAX_QUANTITY = 1_000_000


def order_from_v2026(data: dict[str, Any]) -> Order:
    """One `Order` object of searchOrders/getOrder (v2026-01-01) as a record.

    `ship_to` is None when Amazon left out `recipient.deliveryAddress`: the seller's app lacks
    the role that releases addresses, or `includedData` did not ask for RECIPIENT.
    """
    order_id = _order_id(data, "orderId")
    try:
        data = _as_object(data, "order")
        fulfillment = _object(data, "fulfillment")
        buyer = _object(data, "buyer")
        total = _object(_object(data, "proceeds"), "grandTotal", "proceeds.")
        programs = data.get("programs") or []
        if not isinstance(programs, list):
            raise _Unusable("programs", "is not a list")
        return _with_quantities(Order(
            order_id=_required(order_id, "orderId"),
            marketplace_id=_text(_object(data, "salesChannel"), "marketplaceId", "salesChannel."),
            purchase_date=_time(data, "createdTime"),
            last_updated=_time(data, "lastUpdatedTime"),
            status=_known_status(_text(fulfillment, "fulfillmentStatus", "fulfillment."),
                                 "fulfillment.fulfillmentStatus"),
            service_level=_text(fulfillment, "fulfillmentServiceLevel", "fulfillment."),
            ship_by=_window_end(fulfillment, "shipByWindow"),
            deliver_by=_window_end(fulfillment, "deliverByWindow"),
            buyer_name=_text(buyer, "buyerName", "buyer."),
            buyer_email=_text(buyer, "buyerEmail", "buyer."),
            ship_to=_v2026_address(_object(_object(data, "recipient"), "deliveryAddress",
                                           "recipient.")),
            lines=tuple(_v2026_line(item, where) for item, where in _items(data, "orderItems")),
            order_total=_money(total, "amount", "proceeds.grandTotal."),
            currency=_text(total, "currencyCode", "proceeds.grandTotal."),
            is_prime="PRIME" in programs,
            is_business="AMAZON_BUSINESS" in programs,
        ), "orderItems", "quantityOrdered")
    except _Unusable as problem:
        raise BadRecord(f"order {_named(order_id)}: {problem}") from None
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as problem:
        raise BadRecord(f"order {_named(order_id)}: unusable data "
                        f"({type(problem).__name__})") from None


def order_from_v0(order: dict[str, Any], items: list[dict[str, Any]]) -> Order:
    """A v0 getOrders `Order` plus its getOrderItems `OrderItems` as a record.

    v0 has no unit price: `ItemPrice` is the line total, so the unit price is derived.
    """
    order_id = _order_id(order, "AmazonOrderId")
    try:
        order = _as_object(order, "Order")
        total = _object(order, "OrderTotal")
        buyer = _object(order, "BuyerInfo")
        return _with_quantities(Order(
            order_id=_required(order_id, "AmazonOrderId"),
            marketplace_id=_text(order, "MarketplaceId"),
            purchase_date=_time(order, "PurchaseDate"),
            last_updated=_time(order, "LastUpdateDate"),
            status=_v0_status(order),
            service_level=_v2026_spelling(_text(order, "ShipmentServiceLevelCategory")),
            ship_by=_time(order, "LatestShipDate", optional=True),
            deliver_by=_time(order, "LatestDeliveryDate", optional=True),
            buyer_name=_text(buyer, "BuyerName", "BuyerInfo."),
            buyer_email=_text(buyer, "BuyerEmail", "BuyerInfo."),
            ship_to=_v0_address(_object(order, "ShippingAddress")),
            lines=tuple(_v0_line(item, where)
                        for item, where in _items({"OrderItems": items}, "OrderItems")),
            order_total=_money(total, "Amount", "OrderTotal."),
            currency=_text(total, "CurrencyCode", "OrderTotal."),
            is_prime=bool(order.get("IsPrime")),
            is_business=bool(order.get("IsBusinessOrder")),
        ), "OrderItems", "QuantityOrdered")
    except _Unusable as problem:
        raise BadRecord(f"order {_named(order_id)}: {problem}") from None
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as problem:
        raise BadRecord(f"order {_named(order_id)}: unusable data "
                        f"({type(problem).__name__})") from None


def header_from_v0(order: dict[str, Any]) -> OrderHeader:
    """What a v0 getOrders `Order` says before its items are fetched (see OrderHeader)."""
    order_id = _order_id(order, "AmazonOrderId")
    try:
        order = _as_object(order, "Order")
        return OrderHeader(
            order_id=_required(order_id, "AmazonOrderId"),
            marketplace_id=_text(order, "MarketplaceId"),
            status=_v0_status(order),
            country_code=_text(_object(order, "ShippingAddress"), "CountryCode", "ShippingAddress."),
            last_updated=_time(order, "LastUpdateDate"),
        )
    except _Unusable as problem:
        raise BadRecord(f"order {_named(order_id)}: {problem}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as problem:
        raise BadRecord(f"order {_named(order_id)}: unusable data "
                        f"({type(problem).__name__})") from None


def _v0_status(order: dict[str, Any]) -> str:
    status = _required(_text(order, "OrderStatus"), "OrderStatus")
    if status not in V0_STATUS_TO_FULFILLMENT:
        raise _Unusable("OrderStatus", f"{_shown(status)}is not a status the bridge knows")
    return V0_STATUS_TO_FULFILLMENT[status]


def _known_status(status: str, name: str) -> str:
    """An order without a status, or with one the bridge does not know, is rejected (and shown
    to a person), never quietly skipped."""
    if status not in FULFILLMENT_STATUSES:
        raise _Unusable(name, f"{_shown(status)}is not a status the bridge knows" if status else "is missing")
    return status


def _shown(value: str) -> str:
    """An Amazon enum value quoted for a message, when it looks like one (never free text)."""
    return f"'{value}' " if re.fullmatch(r"[A-Za-z_]{1,40}", value) else ""


def _v2026_line(item: dict[str, Any], where: str) -> Line:
    product = _object(item, "product", where)
    price = _object(_object(product, "price", f"{where}product."), "unitPrice",
                    f"{where}product.price.")
    price_where = f"{where}product.price.unitPrice."
    return Line(
        order_item_id=_required(_text(item, "orderItemId", where, any_scalar=True),
                                f"{where}orderItemId"),
        sku=_text(product, "sellerSku", f"{where}product."),
        asin=_text(product, "asin", f"{where}product."),
        title=_text(product, "title", f"{where}product."),
        quantity=_quantity(item, "quantityOrdered", where),
        unit_price=_money(price, "amount", price_where),
        currency=_text(price, "currencyCode", price_where),
        shipped=_shipped(_object(item, "fulfillment", where), "quantityFulfilled", f"{where}fulfillment."),
    )


def _v0_line(item: dict[str, Any], where: str) -> Line:
    quantity = _quantity(item, "QuantityOrdered", where)
    price = _object(item, "ItemPrice", where)
    line_total = _money(price, "Amount", f"{where}ItemPrice.")
    unit_price = None
    if line_total is not None and quantity:
        try:
            unit_price = (line_total / quantity).quantize(Decimal("0.01"))
        except ArithmeticError:
            raise _Unusable(f"{where}ItemPrice.Amount", "is out of range") from None
    return Line(
        order_item_id=_required(_text(item, "OrderItemId", where, any_scalar=True),
                                f"{where}OrderItemId"),
        sku=_text(item, "SellerSKU", where),
        asin=_text(item, "ASIN", where),
        title=_text(item, "Title", where),
        quantity=quantity,
        unit_price=unit_price,
        currency=_text(price, "CurrencyCode", f"{where}ItemPrice."),
        shipped=_shipped(item, "QuantityShipped", where),
    )


def _v2026_address(data: dict[str, Any]) -> Address | None:
    if not (data.get("addressLine1") or data.get("city")):
        return None
    where = "recipient.deliveryAddress."
    return Address(
        name=_text(data, "name", where),
        company=_text(data, "companyName", where),
        line1=_text(data, "addressLine1", where),
        line2=_text(data, "addressLine2", where),
        line3=_text(data, "addressLine3", where),
        city=_text(data, "city", where),
        district=_text(data, "districtOrCounty", where),
        state=_text(data, "stateOrRegion", where),
        postal_code=_text(data, "postalCode", where),
        country_code=_text(data, "countryCode", where),
        phone=_text(data, "phone", where),
        address_type=_text(data, "addressType", where),
    )


def _v0_address(data: dict[str, Any]) -> Address | None:
    # Without a Restricted Data Token v0 still sends City/State/PostalCode/CountryCode: an
    # address without its first line cannot be shipped to, so it counts as withheld.
    if not data.get("AddressLine1"):
        return None
    where = "ShippingAddress."
    return Address(
        name=_text(data, "Name", where),
        company=_text(data, "CompanyName", where),
        line1=_text(data, "AddressLine1", where),
        line2=_text(data, "AddressLine2", where),
        line3=_text(data, "AddressLine3", where),
        city=_text(data, "City", where),
        district=_text(data, "District", where) or _text(data, "County", where),
        state=_text(data, "StateOrRegion", where),
        postal_code=_text(data, "PostalCode", where),
        country_code=_text(data, "CountryCode", where),
        phone=_text(data, "Phone", where),
        address_type=_v2026_spelling(_text(data, "AddressType", where)),
    )


def _v2026_spelling(value: str) -> str:
    """v0's CamelCase values in v2026's spelling, so both APIs give the same files:
    'FreeEconomy' -> 'FREE_ECONOMY', 'Residential' -> 'RESIDENTIAL'."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", value).upper()


def _window_end(fulfillment: dict[str, Any], key: str) -> datetime | None:
    window = _object(fulfillment, key, "fulfillment.")
    return _time(window, "latestDateTime", f"fulfillment.{key}.", optional=True)


# --- reading fields: each names the field it reads when the value is unusable ----------------


class _Unusable(Exception):
    """A field that is missing or of the wrong shape: `field why`, never the value."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field} {why}")


def _order_id(data: Any, key: str) -> str:
    """The order's id for messages, or "" when there is none to use."""
    value = data.get(key) if isinstance(data, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""


def _as_object(data: Any, name: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _Unusable(name, "is not an object")
    return data


def _object(data: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    """A nested object; missing or null counts as empty."""
    value = data.get(key)
    if value is None:
        return {}
    return _as_object(value, where + key)


def _items(data: dict[str, Any], key: str) -> list[tuple[dict[str, Any], str]]:
    """(item, "key[n].") for each object of a required list."""
    value = data.get(key)
    if value is None:
        raise _Unusable(key, "is missing")
    if not isinstance(value, list):
        raise _Unusable(key, "is not a list")
    return [(_as_object(item, f"{key}[{number}]"), f"{key}[{number}].")
            for number, item in enumerate(value, 1)]


def _text(data: dict[str, Any], key: str, where: str = "", *, any_scalar: bool = False) -> str:
    """Optional text: missing or null is "". `any_scalar` also takes numbers (for ids)."""
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if any_scalar and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _Unusable(where + key, "is not text")


def _time(data: dict[str, Any], key: str, where: str = "", *, optional: bool = False
          ) -> datetime | None:
    value = data.get(key)
    if value is None or value == "":
        if optional:
            return None
        raise _Unusable(where + key, "is missing")
    try:
        return parse_iso(value)
    except (TypeError, ValueError, AttributeError, OverflowError):
        raise _Unusable(where + key, "is not an ISO 8601 time") from None


def _money(data: dict[str, Any], key: str, where: str = "") -> Decimal | None:
    amount = data.get(key)
    if amount is None or amount == "":
        return None
    if isinstance(amount, bool) or not isinstance(amount, (str, int, float)):
        raise _Unusable(where + key, "is not a number")
    try:
        number = Decimal(str(amount))
    except InvalidOperation:
        raise _Unusable(where + key, "is not a number") from None
    if not number.is_finite():
        raise _Unusable(where + key, "is not a number")
    return number


def _shipped(data: dict[str, Any], key: str, where: str) -> int:
    """Units already shipped (by the seller, outside the bridge): 0 when Amazon does not say."""
    return 0 if data.get(key) is None else _quantity(data, key, where)


def _quantity(data: dict[str, Any], key: str, where: str) -> int:
    """A whole number of units, never negative: 2.7 or "2" is refused, never cut to 2.
    (2.0, a JSON number with a zero fraction, is 2.) Zero is checked with the order's status."""
    value = data.get(key)
    if value is None:
        raise _Unusable(where + key, "is missing")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Unusable(where + key, "is not a whole number")
    if value < 0:
        raise _Unusable(where + key, "is negative")
    if value > MAX_QUANTITY:
        raise _Unusable(where + key, f"is more than {MAX_QUANTITY} units")
    return value


def _with_quantities(order: Order, items: str, key: str) -> Order:
    """An order to lay out needs at least one unit on every line. Amazon reports 0 units for
    the lines of a cancelled order, which is never laid out: that is no reason to refuse it."""
    if order.status != "CANCELLED":
        for number, line in enumerate(order.lines, 1):
            if line.quantity == 0:
                raise _Unusable(f"{items}[{number}].{key}", "is 0 in an order that is not cancelled")
    return order


def _named(order_id: str) -> str:
    return shown(order_id) if order_id else "?"


def _required(value: str, name: str) -> str:
    if not value:
        raise _Unusable(name, "is missing")
    return value
