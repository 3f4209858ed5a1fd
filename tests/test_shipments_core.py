"""Shipments, pure core (bridge/formats/shipments.py, the [shipments] mapping section): rows
become typed lines, lines become checked packages, packages become Amazon's exact request."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from amazon_models import validate_definition
from bridge.errors import ConfigError
from bridge.formats.readers import read_rows
from bridge.formats.shipments import (
    DUPLICATE, REJECTED, KnownPackage, OrderFacts, confirm_request, human_format, parse_rows, plan)
from bridge.mapping import amazon_carrier_codes, load_mapping
from bridge.records import Line
from harness import MAPPINGS, write_mapping

NOW = datetime(2026, 11, 20, 18, 0, tzinfo=timezone.utc)
ACME = load_mapping(MAPPINGS / "acme-csv.toml").shipments
HEADER = "Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n"
ORDER = OrderFacts(
    order_id="302-0000003-0000003", marketplace_id="A1PA6795UKMFR9",
    purchase_date=datetime(2026, 11, 19, 18, 3, 21, tzinfo=timezone.utc), warehouse="acme",
    lines=(Line("50000003000001", "KAN-GLAS-1L", "B0", "Kanne", 3),
           Line("50000003000002", "TASSE-2", "B1", "Tasse", 1)))


def lines(body: str, layout=ACME):
    data = (HEADER + body).encode("cp1252")
    return list(parse_rows(read_rows(io.BytesIO(data), layout.table), layout))


def planned(body: str, facts=ORDER, now=NOW):
    return plan(lines(body), lambda order_id: facts if order_id == facts.order_id else None,
                "acme", now, zone=ACME.timezone)


# --- rows --------------------------------------------------------------------------------------

def test_a_row_becomes_typed_values_in_utc():
    [line] = lines("302-0000003-0000003;KAN-GLAS-1L;2;DHL_PAKET;00340434161094042557;20.11.2026 16:45\r\n")
    assert line.problems == ()
    assert (line.quantity, line.carrier.code, line.method) == (2, "DHL", "DHL Paket")
    assert line.ship_date == datetime(2026, 11, 20, 15, 45, tzinfo=timezone.utc)  # Berlin is +1


@pytest.mark.parametrize("cells, why", [
    ("302-3;KAN;2;DHL_PAKET;00340434161094042557;20.11.2026 16:45",
     "Auftragsnummer: '302-3' is not an Amazon order id (like 123-1234567-1234567)"),
    ("302-0000003-0000003;;2;DHL_PAKET;00340434161094042557;20.11.2026 16:45", "Artikelnummer: empty"),
    ("302-0000003-0000003;KAN;zwei;DHL_PAKET;00340434161094042557;20.11.2026 16:45",
     "Menge: 'zwei' is not a whole number of units"),
    ("302-0000003-0000003;KAN;0;DHL_PAKET;00340434161094042557;20.11.2026 16:45", "Menge: '0' must be at least 1"),
    ("302-0000003-0000003;KAN;1,5;DHL_PAKET;00340434161094042557;20.11.2026 16:45",
     "Menge: '1,5' is not a whole number of units"),
    ("302-0000003-0000003;KAN;1;;00340434161094042557;20.11.2026 16:45",
     "Versandart: empty (Amazon needs the carrier)"),
    ("302-0000003-0000003;KAN;1;POSTKUTSCHE;00340434161094042557;20.11.2026 16:45",
     "Versandart: 'POSTKUTSCHE' is neither in the mapping's carrier table nor one of Amazon's carrier codes"),
    ("302-0000003-0000003;KAN;1;DHL_PAKET;;20.11.2026 16:45", "Sendungsnummer: empty"),
    ("302-0000003-0000003;KAN;1;DHL_PAKET;3,40434E+19;20.11.2026 16:45",
     "Sendungsnummer: '3,40434E+19' is a number Excel shortened and its digits are lost: format "
     "the column as text and export the file again"),
    ("302-0000003-0000003;KAN;1;DHL_PAKET;0034 0434;20.11.2026 16:45",
     "Sendungsnummer: '0034 0434' has characters other than letters, digits and '-'"),
    ("302-0000003-0000003;KAN;1;DHL_PAKET;1234;20.11.2026 16:45",
     "Sendungsnummer: '1234' is not a tracking number (5 to 40 characters)"),
    ("302-0000003-0000003;KAN;1;DHL_PAKET;00340434161094042557;2026-11-20",
     "Versanddatum: '2026-11-20' is not a date like DD.MM.YYYY hh:mm"),
    ("302-0000003-0000003;KAN;1;DHL_PAKET;00340434161094042557;32.11.2026 10:00",
     "Versanddatum: '32.11.2026 10:00' is not a date like DD.MM.YYYY hh:mm"),
])
def test_each_bad_value_is_named_by_its_column(cells, why):
    [line] = lines(cells + "\r\n")
    assert line.problems == (why,)


def test_a_carrier_is_found_in_the_table_or_amazons_list_ignoring_case():
    found = lines("302-0000003-0000003;K;1;dhl_paket;00340434161094042557;20.11.2026 16:45\r\n"
                  "302-0000003-0000003;K;1;Royal mail;00340434161094042557;20.11.2026 16:45\r\n")
    assert [(line.carrier.code, line.method) for line in found] == [("DHL", "DHL Paket"), ("Royal Mail", "")]


# The 51 codes of the 2012 list this file replaced: Amazon has added carriers since, never removed one.
CODES_OF_2012 = {
    "USPS", "UPS", "UPSMI", "FedEx", "DHL", "Fastway", "GLS", "GO!", "Hermes Logistik Gruppe", "Royal Mail",
    "Parcelforce", "City Link", "TNT", "Target", "SagawaExpress", "NipponExpress", "YamatoTransport",
    "DHL Global Mail", "UPS Mail Innovations", "FedEx SmartPost", "OSM", "OnTrac", "Streamlite", "Newgistics",
    "Canada Post", "Blue Package", "Chronopost", "Deutsche Post", "DPD", "La Poste", "Parcelnet", "Poste Italiane",
    "SDA", "Smartmail", "FEDEX_JP", "JP_EXPRESS", "NITTSU", "SAGAWA", "YAMATO", "BlueDart", "AFL/Fedex", "Aramex",
    "India Post", "Professional", "DTDC", "Overnite Express", "First Flight", "Delhivery", "Lasership", "Yodel",
    "Other"}


def test_the_carrier_list_is_amazons_current_one_with_other():
    codes = amazon_carrier_codes()
    assert CODES_OF_2012 <= codes
    assert {"Amazon Shipping", "AMZL", "DHL Home Delivery", "Hermes", "InPost", "PostNord", "Yanwen"} <= codes
    assert all(code == code.strip() and code and "\ufffd" not in code and "Ã" not in code for code in codes)
    lines = [line for line in (MAPPINGS.parent / "bridge" / "data" / "carrier_codes.txt").read_text("utf-8")
             .splitlines() if line and not line.startswith("#")]
    assert len(lines) == len(set(lines)) == len(codes)  # each code once


def test_codes_that_differ_only_in_case_are_matched_exactly_else_always_the_same_way():
    found = lines("302-0000003-0000003;K;1;Nacex;00340434161094042557;20.11.2026 16:45\r\n"
                  "302-0000003-0000003;K;1;NACEX;00340434161094042557;20.11.2026 16:45\r\n"
                  "302-0000003-0000003;K;1;nacex;00340434161094042557;20.11.2026 16:45\r\n")
    assert [line.carrier.code for line in found] == ["Nacex", "NACEX", "NACEX"]


def test_human_date_formats():
    assert human_format("%d.%m.%Y %H:%M") == "DD.MM.YYYY hh:mm"
    assert human_format("%m/%d/%Y") == "MM/DD/YYYY"


# --- packages ----------------------------------------------------------------------------------

def test_rows_group_into_packages_by_order_and_tracking_number():
    result = planned("302-0000003-0000003;KAN-GLAS-1L;2;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n"
                     "302-0000003-0000003;TASSE-2;1;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n"
                     "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;TRACK00002;20.11.2026 17:00\r\n")
    assert result.outcomes == {}
    assert [(p.tracking, p.items, p.rows) for p in result.packages] == [
        ("TRACK00001", (("50000003000001", 2), ("50000003000002", 1)), (2, 3)),
        ("TRACK00002", (("50000003000001", 1),), (4,))]


def test_a_bad_row_rejects_its_package_and_only_its_package():
    result = planned("302-0000003-0000003;KAN-GLAS-1L;2;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n"
                     "302-0000003-0000003;TASSE-2;x;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n"
                     "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;TRACK00002;20.11.2026 17:00\r\n")
    assert result.outcomes == {
        2: (REJECTED, "row 3 of the same package (order 302-0000003-0000003, tracking TRACK00001) rejected"),
        3: (REJECTED, "Menge: 'x' is not a whole number of units")}
    assert [p.tracking for p in result.packages] == ["TRACK00002"]


@pytest.mark.parametrize("row, facts, why", [
    ("302-0000009-0000009;KAN-GLAS-1L;1", ORDER, "order 302-0000009-0000009 was not sent to acme by the bridge"),
    ("302-0000003-0000003;KAN-GLAS-1L;1", OrderFacts(**{**ORDER.__dict__, "warehouse": "globex"}),
     "order 302-0000003-0000003 was sent to warehouse globex, not acme"),
    ("302-0000003-0000003;KAN-GLAS-1L;1", OrderFacts(**{**ORDER.__dict__, "cancelled": True}),
     "order 302-0000003-0000003 was cancelled on Amazon after it was sent to acme, it should not "
     "have shipped: tell the seller"),
    ("302-0000003-0000003;SOCKE;1", ORDER, "SKU SOCKE is not in order 302-0000003-0000003"),
    ("302-0000003-0000003;KAN-GLAS-1L;4", ORDER,
     "quantity 4 of SKU KAN-GLAS-1L is more than the 3 still unshipped in order 302-0000003-0000003"),
    ("302-0000003-0000003;KAN-GLAS-1L;2", OrderFacts(**{**ORDER.__dict__, "shipped": (("50000003000001", 2),)}),
     "quantity 2 of SKU KAN-GLAS-1L is more than the 1 still unshipped in order 302-0000003-0000003"),
])
def test_a_package_is_checked_against_the_order_the_bridge_sent(row, facts, why):
    result = planned(row + ";DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n", facts)
    assert result.outcomes == {2: (REJECTED, why)} and result.packages == []


def test_ship_dates_in_the_future_or_before_the_order_are_rejected():
    result = planned("302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;TRACK00001;20.11.2026 19:30\r\n"
                     "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;TRACK00002;19.11.2026 18:00\r\n")
    assert result.outcomes == {
        2: (REJECTED, "ship date 2026-11-20T18:30:00Z is in the future: 30 minutes ahead of the bridge's clock "
                      "(2026-11-20T18:00:00Z), more than the 15 minutes a clock may be ahead"),
        3: (REJECTED, "ship date 2026-11-19T17:00:00Z is before the order was placed (2026-11-19T18:03:21Z)")}


@pytest.mark.parametrize("stamp, layout, ships_at", [
    ("20.11.2026 19:10", ACME, datetime(2026, 11, 20, 18, 0, tzinfo=timezone.utc)),  # 10 minutes ahead: now
    ("20.11.2026 19:00", ACME, datetime(2026, 11, 20, 18, 0, tzinfo=timezone.utc)),  # exactly now
    ("20.11.2026 18:59", ACME, datetime(2026, 11, 20, 17, 59, tzinfo=timezone.utc)),  # the past: as given
])
def test_a_wms_clock_slightly_ahead_ships_at_the_bridges_time(stamp, layout, ships_at):
    result = planned(f"302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;TRACK00001;{stamp}\r\n")
    assert result.outcomes == {} and [p.ship_date for p in result.packages] == [ships_at]


def test_the_clock_tolerance_is_the_callers_and_says_how_far_ahead_a_date_is():
    result = plan(lines("302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;TRACK00001;20.11.2026 19:10\r\n"),
                  lambda order_id: ORDER, "acme", NOW, zone=ACME.timezone, tolerance=timedelta(minutes=5))
    assert result.outcomes == {2: (REJECTED, "ship date 2026-11-20T18:10:00Z is in the future: 10 minutes ahead of "
                                             "the bridge's clock (2026-11-20T18:00:00Z), more than the 5 minutes a "
                                             "clock may be ahead")}


def test_units_already_planned_in_the_same_file_count_as_shipped():
    result = planned("302-0000003-0000003;KAN-GLAS-1L;2;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n"
                     "302-0000003-0000003;KAN-GLAS-1L;2;DHL_PAKET;TRACK00002;20.11.2026 16:45\r\n")
    assert result.outcomes[3] == (REJECTED, "quantity 2 of SKU KAN-GLAS-1L is more than the 1 still "
                                            "unshipped in order 302-0000003-0000003")


def test_a_package_already_taken_is_a_duplicate_and_one_with_other_items_is_rejected():
    known = KnownPackage(7, "TRACK00001", (("50000003000001", 2),), "VERSAND_1.csv", 2,
                         "2026-11-20T17:00:00Z", "confirmed")
    facts = OrderFacts(**{**ORDER.__dict__, "shipped": (("50000003000001", 2),), "packages": (known,)})
    same = planned("302-0000003-0000003;KAN-GLAS-1L;2;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n", facts)
    other = planned("302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n", facts)
    assert same.outcomes == {2: (DUPLICATE, "already confirmed on Amazon as package 7 from "
                                            "VERSAND_1.csv row 2 on 2026-11-20")}
    assert other.outcomes == {2: (REJECTED, "tracking number TRACK00001 of order 302-0000003-0000003 was "
                                            "already sent to Amazon with other items (VERSAND_1.csv row 2); "
                                            "correct it in Seller Central")}


def test_rows_of_one_package_must_agree_on_carrier_and_date():
    result = planned("302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n"
                     "302-0000003-0000003;TASSE-2;1;DPD_CLASSIC;TRACK00001;20.11.2026 16:45\r\n")
    why = ("rows 2, 3 are one package (order 302-0000003-0000003, tracking TRACK00001) but give "
           "different carriers")
    assert result.outcomes == {2: (REJECTED, why), 3: (REJECTED, why)}


def test_a_date_only_ship_date_is_the_local_day_never_before_the_order():
    layout = load_mapping(MAPPINGS / "initech-xlsx.toml").shipments
    from openpyxl import Workbook
    book = Workbook()
    book.active.title = "Shipped"
    book.active.append(["Order ID", "Order Item ID", "Qty Shipped", "Carrier", "Service", "Tracking #", "Ship Date"])
    book.active.append(["302-0000003-0000003", "50000003000001", 1, "USPS", "", "9400111899223197428490", "11/20/2026"])
    book.active.append(["302-0000003-0000003", "50000003000002", 1, "USPS", "", "9400111899223197428491", datetime(2026, 11, 19)])
    data = io.BytesIO()
    book.save(data)
    data.seek(0)
    facts = OrderFacts(**{**ORDER.__dict__, "warehouse": "initech"})
    result = plan(parse_rows(read_rows(data, layout.table), layout), lambda _: facts, "initech", NOW,
                  zone=layout.timezone)
    assert result.outcomes == {}
    # 11/20 is that day's midnight in Chicago; 11/19 is the day the order was placed there
    # (18:03Z is 12:03 local), so the ship time is the order's time, not the midnight before.
    assert [p.ship_date for p in result.packages] == [
        datetime(2026, 11, 20, 6, 0, tzinfo=timezone.utc), ORDER.purchase_date]


# --- Amazon's request --------------------------------------------------------------------------

def test_the_request_is_amazons_confirm_shipment_request():
    [package] = planned("302-0000003-0000003;KAN-GLAS-1L;2;HERMES_PAKET;H1234567890;20.11.2026 16:45\r\n").packages
    body = confirm_request(package, 12)
    validate_definition("ordersV0.json", "ConfirmShipmentRequest", body)
    assert body == {"marketplaceId": "A1PA6795UKMFR9", "packageDetail": {
        "packageReferenceId": "12", "carrierCode": "Other", "carrierName": "Hermes Germany",
        "shippingMethod": "Hermes Paket", "trackingNumber": "H1234567890",
        "shipDate": "2026-11-20T15:45:00Z",
        "orderItems": [{"orderItemId": "50000003000001", "quantity": 2}]}}


# --- the mapping section -----------------------------------------------------------------------

def problems(tmp_path: Path, shipments: str) -> list[str]:
    text = (MAPPINGS / "acme-csv.toml").read_text("utf-8").split("[shipments]")[0] + shipments
    path = write_mapping(tmp_path / "m.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    return [p.removeprefix(f"{path}: ") for p in caught.value.problems]


def test_a_shipments_section_reports_every_problem(tmp_path):
    found = problems(tmp_path, """
[shipments]
format = "csv"
encoding = "latin9"
sheet = "X"
date_format = "tomorrow"
[shipments.columns]
order_id = "Auftrag"
sku = "SKU"
order_item_id = "Pos"
tracking = "T"
[shipments.carriers]
POST = "Deutsche post"
HERMES = { code = "Other" }
""")
    assert found == [
        "shipments.sheet: not used by format 'csv'",
        "shipments.encoding: unknown value 'latin9' (one of: utf-8, cp1252, utf-16)",
        "shipments.date_format: 'tomorrow' cannot read back a date it writes (use strftime directives, e.g. '%d.%m.%Y %H:%M')",
        "shipments.columns.tracking: unknown field (known: order_id, sku, order_item_id, quantity, carrier, shipping_method, tracking_number, ship_date)",
        "shipments.columns.quantity: missing",
        "shipments.columns.carrier: missing",
        "shipments.columns.tracking_number: missing",
        "shipments.columns.ship_date: missing",
        "shipments.columns: needs exactly one of sku (the seller SKU) or order_item_id (Amazon's order item id) to say which item a row ships",
        "shipments.carriers.POST: 'Deutsche post' is not one of Amazon's carrier codes (did you mean 'Deutsche Post'?)",
        "shipments.carriers.HERMES: code \"Other\" needs the carrier's name: { code = \"Other\", name = \"...\" }",
    ]


def test_each_shipped_mapping_has_a_shipments_section():
    for name in ("acme-csv", "globex-xml", "initech-xlsx"):
        assert load_mapping(MAPPINGS / f"{name}.toml").shipments is not None


# --- the order fulfillment feed document and its report (shipments.send = "feed") ----------------

def test_the_fulfillment_feed_has_one_message_per_package_named_by_its_id():
    from bridge.formats.fulfillment_feed import fulfillment_feed

    result = planned("302-0000003-0000003;KAN-GLAS-1L;2;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n"
                     "302-0000003-0000003;TASSE-2;1;HERMES_PAKET;H1234567890;20.11.2026 16:50\r\n")
    document = fulfillment_feed("A3TESTSELLER", [(12, result.packages[0]), (13, result.packages[1])])
    assert document.decode() == """<?xml version='1.0' encoding='UTF-8'?>
<AmazonEnvelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="amzn-envelope.xsd">
  <Header>
    <DocumentVersion>1.01</DocumentVersion>
    <MerchantIdentifier>A3TESTSELLER</MerchantIdentifier>
  </Header>
  <MessageType>OrderFulfillment</MessageType>
  <Message>
    <MessageID>12</MessageID>
    <OrderFulfillment>
      <AmazonOrderID>302-0000003-0000003</AmazonOrderID>
      <MerchantFulfillmentID>12</MerchantFulfillmentID>
      <FulfillmentDate>2026-11-20T15:45:00Z</FulfillmentDate>
      <FulfillmentData>
        <CarrierCode>DHL</CarrierCode>
        <ShippingMethod>DHL Paket</ShippingMethod>
        <ShipperTrackingNumber>TRACK00001</ShipperTrackingNumber>
      </FulfillmentData>
      <Item>
        <AmazonOrderItemCode>50000003000001</AmazonOrderItemCode>
        <Quantity>2</Quantity>
      </Item>
    </OrderFulfillment>
  </Message>
  <Message>
    <MessageID>13</MessageID>
    <OrderFulfillment>
      <AmazonOrderID>302-0000003-0000003</AmazonOrderID>
      <MerchantFulfillmentID>13</MerchantFulfillmentID>
      <FulfillmentDate>2026-11-20T15:50:00Z</FulfillmentDate>
      <FulfillmentData>
        <CarrierName>Hermes Germany</CarrierName>
        <ShippingMethod>Hermes Paket</ShippingMethod>
        <ShipperTrackingNumber>H1234567890</ShipperTrackingNumber>
      </FulfillmentData>
      <Item>
        <AmazonOrderItemCode>50000003000002</AmazonOrderItemCode>
        <Quantity>1</Quantity>
      </Item>
    </OrderFulfillment>
  </Message>
</AmazonEnvelope>
"""


def test_the_processing_report_maps_each_result_back_to_its_package():
    from bridge.formats.fulfillment_feed import fulfillment_feed, parse_processing_report
    from bridge.sandbox import spapi_feeds

    [package] = planned("302-0000003-0000003;KAN-GLAS-1L;2;DHL_PAKET;TRACK00001;20.11.2026 16:45\r\n").packages
    broken = package.__class__(**{**package.__dict__, "order_id": ""})
    document = fulfillment_feed("A3TESTSELLER", [(12, package), (13, broken)])
    status, result, _ = spapi_feeds.process("POST_ORDER_FULFILLMENT_DATA", "50001", document, set())

    report = parse_processing_report(result)
    assert (status, report.status, report.processed, report.with_error) == ("DONE", "Complete", 2, 1)
    assert report.outcome(12) == ""
    assert report.outcome(13) == "18028: AmazonOrderID is missing"


def test_a_processing_report_with_a_doctype_is_refused():
    from bridge.errors import BadFile
    from bridge.formats.fulfillment_feed import parse_processing_report

    with pytest.raises(BadFile, match="DOCTYPE"):
        parse_processing_report(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><AmazonEnvelope>'
                                b'<Message><ProcessingReport><StatusCode>&e;</StatusCode></ProcessingReport>'
                                b'</Message></AmazonEnvelope>')
