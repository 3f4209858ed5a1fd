"""Records (bridge/records.py): times read and written as Amazon writes them, and every time the
parser accepts is stored and read back as the same time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from bridge.records import Address, Line, Order, iso_exact, iso_z, order_from_dict, order_to_dict, parse_iso


@pytest.mark.parametrize("text", [
    "2026-11-26T10:00:00Z", "2026-11-26T10:00:00.5Z", "2026-11-26T10:00:00.1234567Z", "0999-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2026-11-26T10:00:00+05:30", "2026-11-26T10:00:00",
    "2026-11-26", "20261126T100000Z", "2026-W48-4T10:00:00Z", "0001-01-01T05:00:00+04:00",
])
def test_every_time_the_parser_accepts_is_written_and_read_back_as_the_same_time(text):
    value = parse_iso(text)
    assert parse_iso(iso_exact(value)) == value
    assert parse_iso(iso_z(value)) == value.replace(microsecond=0)
    assert iso_z(value)[4] == "-" and iso_z(value).endswith("Z")  # four-digit year, UTC


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_outside_the_years_1_to_9999_in_utc_is_refused_when_read(text):
    with pytest.raises(ValueError, match="outside the years 1 to 9999 in UTC"):
        parse_iso(text)


def test_an_order_round_trips_through_its_stored_form_for_any_year_and_fraction():
    order = Order(
        order_id="111-0000001-0000001", marketplace_id="A1PA6795UKMFR9",
        purchase_date=datetime(5, 6, 7, 8, 9, 10, 11, tzinfo=timezone.utc),
        last_updated=datetime(2026, 11, 26, 10, 0, 0, 500000, tzinfo=timezone.utc), status="UNSHIPPED",
        ship_by=datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
        deliver_by=datetime(2026, 11, 30, tzinfo=timezone.utc) - timedelta(microseconds=1),
        ship_to=Address(name="Jürgen", country_code="DE"), lines=(Line("1", "S", "B", "T", 2, Decimal("9.99")),),
        order_total=Decimal("19.98"),
    )
    assert order_from_dict(order_to_dict(order)) == order
