"""Frozen records that flow between the edges, the core and the ledger.

Records carry no behaviour beyond conversion to and from plain JSON-able dicts (the ledger
stores them that way). Times are timezone-aware UTC datetimes; money is Decimal.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
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
    shipped: int = 0  # units Amazon showed as shipped when the order was pulled (shipped by hand)


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


_PLAIN = re.compile(r"[A-Za-z0-9._:/@+-]+\Z")


def shown(value: object) -> str:
    """A value from outside (an Amazon order id, a status, a code) as a log line or a message
    shows it: as it is when it is plain (`111-0000001-0000001`), else quoted with Python's
    escapes (`'1\\nINFO forged'`), so a newline or control character in it cannot start a
    forged log line or status row. Never for buyer data, which is not shown at all."""
    text = str(value)
    return text if _PLAIN.match(text) else repr(text)


def one_line(text: object) -> str:
    """Text for a log line or a row of `status`: printable characters as they are, control
    characters and line breaks as their escapes (`\\n`), so it cannot end the line it is on."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


def how_long(delta: timedelta) -> str:
    """A duration as a person says it: '1 minute', '90 minutes', '5 hours', '3 days'."""
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = minutes // 60
    return f"{hours} hours" if hours < 48 else f"{(hours + 12) // 24} days"


def parse_iso(text: str) -> datetime:
    """Amazon's ISO 8601 timestamps ('2026-11-26T10:00:00Z', with or without fraction).

    Every value this accepts can be stored and read back (`iso_exact`): a time that cannot be
    written in UTC (before year 1 or after 9999 once converted) is refused here, as ValueError.
    A year of fewer than four digits, as earlier versions of `iso_z` wrote years before 1000,
    is read as that year.
    """
    text = _LEGACY_SHORT_YEAR.sub(lambda m: m.group(1).zfill(4) + "-", text, count=1)
    try:
        return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except OverflowError:
        raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None


_LEGACY_SHORT_YEAR = re.compile(r"^(\d{1,3})-(?=\d\d-\d\dT)")


def iso_z(value: datetime) -> str:
    """ISO 8601 with 'T' and 'Z', as Amazon's models ask (never a space, never +00:00), to the
    second. The year always has four digits, so the text reads back and sorts as the time."""
    value = utc(value)
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
            f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z")


def iso_exact(value: datetime) -> str:
    """`iso_z` with the microseconds when there are any: `parse_iso` gives back the same time."""
    text = iso_z(value)
    microsecond = utc(value).microsecond
    return f"{text[:-1]}.{microsecond:06d}Z" if microsecond else text


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
            "purchase_date": _time_field(data, "purchase_date"),
            "last_updated": _time_field(data, "last_updated"),
            "ship_by": _time_field(data, "ship_by") if data.get("ship_by") else None,
            "deliver_by": _time_field(data, "deliver_by") if data.get("deliver_by") else None,
            "ship_to": ship_to,
            "lines": lines,
            "order_total": _decimal(data.get("order_total")),
        }
    )


def _time_field(data: dict[str, Any], key: str) -> datetime:
    try:
        return parse_iso(data[key])
    except (TypeError, ValueError, AttributeError):
        # The field, not the value: a damaged record's value could be anything.
        raise ValueError(f"field {key} is not a time that can be read") from None


def _decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    if isinstance(value, datetime):
        return iso_exact(value)
    if isinstance(value, Decimal):
        return str(value)
    return value
