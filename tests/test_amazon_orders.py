"""Amazon order JSON → records: JSON nulls and wrong shapes give a clean record or a BadRecord
that names the order and the field, never a crash and never a buyer's value."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bridge.errors import BadRecord
from bridge.formats.amazon_orders import order_from_v0, order_from_v2026
from bridge.sandbox.spapi_orders import items_v0, to_v0

SEED = Path(__file__).resolve().parent.parent / "bridge" / "demo_data" / "sandbox-orders.json"
BUYER_NAME = "Jennifer Alvarez"


@pytest.fixture
def order() -> dict:
    """A complete v2026 order from the sandbox seed (111-0000001-0000001, one line)."""
    return copy.deepcopy(json.loads(SEED.read_text(encoding="utf-8"))[0])


def v0_pair(order: dict) -> tuple[dict, list[dict]]:
    return to_v0(order, shipping_address=True, buyer_info=True), items_v0(order)


def assert_bad_record_names(call, *fields: str) -> str:
    with pytest.raises(BadRecord) as caught:
        call()
    message = str(caught.value)
    assert message.startswith("order "), message
    for field in fields:
        assert field in message, message
    assert BUYER_NAME not in message
    return message


def test_a_complete_order_converts_from_both_apis_to_the_same_record(order):
    assert order_from_v0(*v0_pair(order)) == order_from_v2026(order)


def test_a_null_title_becomes_an_empty_title(order):
    order["orderItems"][0]["product"]["title"] = None
    assert order_from_v2026(order).lines[0].title == ""


def test_null_optional_text_everywhere_becomes_empty_text(order):
    order["buyer"] = {"buyerName": None, "buyerEmail": None}
    order["recipient"]["deliveryAddress"].update(phone=None, companyName=None, addressType=None)
    order["proceeds"]["grandTotal"]["currencyCode"] = None
    order["salesChannel"] = None
    order["fulfillment"]["shipByWindow"] = None
    product = order["orderItems"][0]["product"]
    product.update(sellerSku=None, asin=None)
    product["price"]["unitPrice"]["currencyCode"] = None

    record = order_from_v2026(order)

    assert (record.buyer_name, record.buyer_email, record.currency, record.marketplace_id) == ("",) * 4
    assert (record.ship_to.phone, record.ship_to.company, record.ship_to.address_type) == ("",) * 3
    assert record.ship_by is None
    line = record.lines[0]
    assert (line.sku, line.asin, line.currency) == ("",) * 3


def test_a_null_created_time_is_a_bad_record_naming_created_time(order):
    order["createdTime"] = None
    message = assert_bad_record_names(lambda: order_from_v2026(order), "111-0000001-0000001",
                                      "createdTime")
    assert message == "order 111-0000001-0000001: createdTime is missing"


def test_a_created_time_that_is_not_a_time_is_a_bad_record_without_the_value(order):
    order["createdTime"] = BUYER_NAME
    assert_bad_record_names(lambda: order_from_v2026(order), "createdTime")


def test_an_order_item_that_is_not_an_object_is_a_bad_record(order):
    order["orderItems"].append("oops")
    message = assert_bad_record_names(lambda: order_from_v2026(order), "orderItems[2]")
    assert message == "order 111-0000001-0000001: orderItems[2] is not an object"


def test_a_buyer_name_of_the_wrong_type_is_a_bad_record_naming_the_field(order):
    order["buyer"]["buyerName"] = {"first": "Jennifer"}
    assert_bad_record_names(lambda: order_from_v2026(order), "buyer.buyerName")


def test_an_order_that_is_not_an_object_is_a_bad_record():
    assert_bad_record_names(lambda: order_from_v2026(["not", "an", "order"]), "order ?")


def test_v0_a_null_title_becomes_an_empty_title(order):
    v0, items = v0_pair(order)
    items[0]["Title"] = None
    assert order_from_v0(v0, items).lines[0].title == ""


def test_v0_null_optional_text_becomes_empty_text(order):
    v0, items = v0_pair(order)
    v0["BuyerInfo"] = {"BuyerName": None, "BuyerEmail": None}
    v0["ShippingAddress"].update(Phone=None, AddressType=None, County=None)
    v0["OrderTotal"]["CurrencyCode"] = None
    v0["MarketplaceId"] = None
    items[0]["ItemPrice"]["CurrencyCode"] = None

    record = order_from_v0(v0, items)

    assert (record.buyer_name, record.currency, record.marketplace_id) == ("",) * 3
    assert (record.ship_to.phone, record.ship_to.address_type, record.ship_to.district) == ("",) * 3
    assert record.lines[0].currency == ""


def test_v0_a_null_purchase_date_is_a_bad_record_naming_purchase_date(order):
    v0, items = v0_pair(order)
    v0["PurchaseDate"] = None
    message = assert_bad_record_names(lambda: order_from_v0(v0, items), "PurchaseDate")
    assert message == "order 111-0000001-0000001: PurchaseDate is missing"


def test_v0_an_order_item_that_is_not_an_object_is_a_bad_record(order):
    v0, items = v0_pair(order)
    message = assert_bad_record_names(lambda: order_from_v0(v0, [None, *items]), "OrderItems[1]")
    assert message == "order 111-0000001-0000001: OrderItems[1] is not an object"


def test_v0_a_price_too_large_to_divide_is_a_bad_record_naming_the_price(order):
    v0, items = v0_pair(order)
    items[0]["ItemPrice"]["Amount"] = "1E+999999"
    assert_bad_record_names(lambda: order_from_v0(v0, items), "OrderItems[1].ItemPrice.Amount")
