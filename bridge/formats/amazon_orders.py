"""Amazon's order JSON (v2026-01-01 searchOrders, or v0 getOrders + getOrderItems) → Order records.

Pure: takes decoded JSON, returns records or raises BadRecord naming the order and the field.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.errors import BadRecord
from bridge.records import V0_STATUS_TO_FULFILLMENT, Address, Line, Order, parse_iso


def order_from_v2026(data: dict[str, Any]) -> Order:
    """One `Order` object of searchOrders/getOrder (v2026-01-01) as a record.

    `ship_to` is None when Amazon left out `recipient.deliveryAddress`: the seller's app lacks
    the role that releases addresses, or `includedData` did not ask for RECIPIENT.
    """
    order_id = str(data.get("orderId") or "")
    try:
        fulfillment = data.get("fulfillment") or {}
        buyer = data.get("buyer") or {}
        total = (data.get("proceeds") or {}).get("grandTotal") or {}
        programs = set(data.get("programs") or ())
        return Order(
            order_id=_required(order_id, "orderId"),
            marketplace_id=(data.get("salesChannel") or {}).get("marketplaceId", ""),
            purchase_date=parse_iso(data["createdTime"]),
            last_updated=parse_iso(data["lastUpdatedTime"]),
            status=fulfillment.get("fulfillmentStatus", ""),
            service_level=fulfillment.get("fulfillmentServiceLevel", ""),
            ship_by=_window_end(fulfillment.get("shipByWindow")),
            deliver_by=_window_end(fulfillment.get("deliverByWindow")),
            buyer_name=buyer.get("buyerName", ""),
            buyer_email=buyer.get("buyerEmail", ""),
            ship_to=_v2026_address((data.get("recipient") or {}).get("deliveryAddress")),
            lines=tuple(_v2026_line(item) for item in data["orderItems"]),
            order_total=_money(total.get("amount")),
            currency=total.get("currencyCode", ""),
            is_prime="PRIME" in programs,
            is_business="AMAZON_BUSINESS" in programs,
        )
    except (KeyError, TypeError, ValueError, InvalidOperation) as problem:
        raise BadRecord(f"order {order_id or '?'}: unusable field {_describe(problem)}") from None


def order_from_v0(order: dict[str, Any], items: list[dict[str, Any]]) -> Order:
    """A v0 getOrders `Order` plus its getOrderItems `OrderItems` as a record.

    v0 has no unit price: `ItemPrice` is the line total, so the unit price is derived.
    """
    order_id = str(order.get("AmazonOrderId") or "")
    try:
        total = order.get("OrderTotal") or {}
        buyer = order.get("BuyerInfo") or {}
        return Order(
            order_id=_required(order_id, "AmazonOrderId"),
            marketplace_id=order.get("MarketplaceId", ""),
            purchase_date=parse_iso(order["PurchaseDate"]),
            last_updated=parse_iso(order["LastUpdateDate"]),
            status=V0_STATUS_TO_FULFILLMENT.get(order["OrderStatus"], order["OrderStatus"]),
            service_level=_v2026_spelling(order.get("ShipmentServiceLevelCategory", "")),
            ship_by=parse_iso(order["LatestShipDate"]) if order.get("LatestShipDate") else None,
            deliver_by=(
                parse_iso(order["LatestDeliveryDate"]) if order.get("LatestDeliveryDate") else None
            ),
            buyer_name=buyer.get("BuyerName", ""),
            buyer_email=buyer.get("BuyerEmail", ""),
            ship_to=_v0_address(order.get("ShippingAddress")),
            lines=tuple(_v0_line(item) for item in items),
            order_total=_money(total.get("Amount")),
            currency=total.get("CurrencyCode", ""),
            is_prime=bool(order.get("IsPrime")),
            is_business=bool(order.get("IsBusinessOrder")),
        )
    except (KeyError, TypeError, ValueError, InvalidOperation) as problem:
        raise BadRecord(f"order {order_id or '?'}: unusable field {_describe(problem)}") from None


def _v2026_line(item: dict[str, Any]) -> Line:
    product = item.get("product") or {}
    price = (product.get("price") or {}).get("unitPrice") or {}
    return Line(
        order_item_id=str(item["orderItemId"]),
        sku=product.get("sellerSku", ""),
        asin=product.get("asin", ""),
        title=product.get("title", ""),
        quantity=int(item["quantityOrdered"]),
        unit_price=_money(price.get("amount")),
        currency=price.get("currencyCode", ""),
    )


def _v0_line(item: dict[str, Any]) -> Line:
    quantity = int(item["QuantityOrdered"])
    price = item.get("ItemPrice") or {}
    line_total = _money(price.get("Amount"))
    unit_price = None
    if line_total is not None and quantity:
        unit_price = (line_total / quantity).quantize(Decimal("0.01"))
    return Line(
        order_item_id=str(item["OrderItemId"]),
        sku=item.get("SellerSKU", ""),
        asin=item.get("ASIN", ""),
        title=item.get("Title", ""),
        quantity=quantity,
        unit_price=unit_price,
        currency=price.get("CurrencyCode", ""),
    )


def _v2026_address(data: dict[str, Any] | None) -> Address | None:
    if not data or not (data.get("addressLine1") or data.get("city")):
        return None
    return Address(
        name=data.get("name", ""),
        company=data.get("companyName", ""),
        line1=data.get("addressLine1", ""),
        line2=data.get("addressLine2", ""),
        line3=data.get("addressLine3", ""),
        city=data.get("city", ""),
        district=data.get("districtOrCounty", ""),
        state=data.get("stateOrRegion", ""),
        postal_code=data.get("postalCode", ""),
        country_code=data.get("countryCode", ""),
        phone=data.get("phone", ""),
        address_type=data.get("addressType", ""),
    )


def _v0_address(data: dict[str, Any] | None) -> Address | None:
    # Without a Restricted Data Token v0 still sends City/State/PostalCode/CountryCode: an
    # address without its first line cannot be shipped to, so it counts as withheld.
    if not data or not data.get("AddressLine1"):
        return None
    return Address(
        name=data.get("Name", ""),
        company=data.get("CompanyName", ""),
        line1=data.get("AddressLine1", ""),
        line2=data.get("AddressLine2", ""),
        line3=data.get("AddressLine3", ""),
        city=data.get("City", ""),
        district=data.get("District") or data.get("County", ""),
        state=data.get("StateOrRegion", ""),
        postal_code=data.get("PostalCode", ""),
        country_code=data.get("CountryCode", ""),
        phone=data.get("Phone", ""),
        address_type=_v2026_spelling(data.get("AddressType", "")),
    )


def _v2026_spelling(value: str) -> str:
    """v0's CamelCase values in v2026's spelling, so both APIs give the same files:
    'FreeEconomy' -> 'FREE_ECONOMY', 'Residential' -> 'RESIDENTIAL'."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", value).upper()


def _window_end(window: dict[str, Any] | None):
    if not window or not window.get("latestDateTime"):
        return None
    return parse_iso(window["latestDateTime"])


def _money(amount: Any) -> Decimal | None:
    if amount is None or amount == "":
        return None
    return Decimal(str(amount))


def _required(value: str, name: str) -> str:
    if not value:
        raise KeyError(name)
    return value


def _describe(problem: Exception) -> str:
    if isinstance(problem, KeyError):
        return f"{problem.args[0]!r} is missing"
    return str(problem)
