"""Frozen records that flow between the edges, the core and the ledger.

Records carry no behaviour beyond conversion to and from plain JSON-able dicts (the ledger
stores them that way). Times are timezone-aware UTC datetimes; money is Decimal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

# Amazon's v2026 fulfillment statuses; v0's OrderStatus values are translated to these.
FULFILLMENT_STATUSES = (
    "PENDING_AVAILABILITY",
    "PENDING",
    "UNSHIPPED",
    "PARTIALLY_SHIPPED",
    "SHIPPED",
    "CANCELLED",
    "UNFULFILLABLE",
)
V0_STATUS_TO_FULFILLMENT = {
    "PendingAvailability": "PENDING_AVAILABILITY",
    "Pending": "PENDING",
    "Unshipped": "UNSHIPPED",
    "PartiallyShipped": "PARTIALLY_SHIPPED",
    "Shipped": "SHIPPED",
    "Canceled": "CANCELLED",
    "Unfulfillable": "UNFULFILLABLE",
    "InvoiceUnconfirmed": "PENDING",
}


@dataclass(frozen=True)
class Address:
    name: str = ""
    company: str = ""
    line1: str = ""
    line2: str = ""
    line3: str = ""
    city: str = ""
    district: str = ""
    state: str = ""
    postal_code: str = ""
    country_code: str = ""
    phone: str = ""
    address_type: str = ""


@dataclass(frozen=True)
class Line:
    order_item_id: str
    sku: str
    asin: str
    title: str
    quantity: int
    unit_price: Decimal | None = None
    currency: str = ""


@dataclass(frozen=True)
class Order:
    order_id: str
    marketplace_id: str
    purchase_date: datetime
    last_updated: datetime
    status: str  # one of FULFILLMENT_STATUSES
    service_level: str = ""
    ship_by: datetime | None = None
    deliver_by: datetime | None = None
    buyer_name: str = ""
    buyer_email: str = ""
    ship_to: Address | None = None  # None: Amazon withheld the address (PII role missing)
    lines: tuple[Line, ...] = field(default_factory=tuple)
    order_total: Decimal | None = None
    currency: str = ""
    is_prime: bool = False
    is_business: bool = False

    @property
    def country_code(self) -> str:
        return self.ship_to.country_code if self.ship_to else ""


@dataclass(frozen=True)
class OrderHeader:
    """What a v0 getOrders page says about an order before its items are fetched: enough to
    judge whether the order can still be sent. `country_code` comes from the part of the
    shipping address Amazon sends without a Restricted Data Token; "" when it sent none."""

    order_id: str
    marketplace_id: str
    status: str  # one of FULFILLMENT_STATUSES
    country_code: str
    last_updated: datetime


def utc(value: datetime) -> datetime:
    """The same instant as an aware UTC datetime (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def parse_iso(text: str) -> datetime:
    """Amazon's ISO 8601 timestamps ('2026-11-26T10:00:00Z', with or without fraction)."""
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def iso_z(value: datetime) -> str:
    """ISO 8601 with 'T' and 'Z', as Amazon's models ask (never a space, never +00:00)."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def order_to_dict(order: Order) -> dict[str, Any]:
    return _to_plain(dataclasses.asdict(order))


def order_from_dict(data: dict[str, Any]) -> Order:
    ship_to = Address(**data["ship_to"]) if data.get("ship_to") else None
    lines = tuple(
        Line(**{**line, "unit_price": _decimal(line.get("unit_price"))}) for line in data["lines"]
    )
    return Order(
        **{
            **data,
            "purchase_date": parse_iso(data["purchase_date"]),
            "last_updated": parse_iso(data["last_updated"]),
            "ship_by": parse_iso(data["ship_by"]) if data.get("ship_by") else None,
            "deliver_by": parse_iso(data["deliver_by"]) if data.get("deliver_by") else None,
            "ship_to": ship_to,
            "lines": lines,
            "order_total": _decimal(data.get("order_total")),
        }
    )


def _decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, Decimal):
        return str(value)
    return value
