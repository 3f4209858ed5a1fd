"""Orders → warehouse files: goldens byte for byte, encodings, quoting, failures, safe names."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from lxml import etree

from bridge.formats.orders import render_orders
from bridge.mapping import load_mapping
from bridge.records import Address, Line, Order, order_from_dict

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
RUN_TIME = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)

sys.path.insert(0, str(SAMPLES))
import regenerate  # noqa: E402


def sample_orders() -> list[Order]:
    return [order_from_dict(d) for d in json.loads((SAMPLES / "orders.json").read_text("utf-8"))]


def layout_from(tmp_path: Path, text: str):
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    return load_mapping(path).orders


def make_order(order_id: str = "302-1111111-1111111", *, name: str = "Jürgen Müller",
               title: str = "Glaskanne 1 Liter", sku: str = "KAN-1", lines: int = 1,
               ship_to: Address | None | bool = True) -> Order:
    address = Address(name=name, line1="Hauptstraße 1", city="Köln", postal_code="01067",
                      country_code="DE", phone="0049221555") if ship_to is True else ship_to
    return Order(
        order_id=order_id, marketplace_id="A1PA6795UKMFR9",
        purchase_date=datetime(2026, 11, 19, 23, 30, tzinfo=timezone.utc),
        last_updated=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc),
        status="UNSHIPPED", ship_by=datetime(2026, 11, 21, 22, 59, tzinfo=timezone.utc),
        ship_to=address, currency="EUR", order_total=Decimal("24.90"),
        lines=tuple(Line(order_item_id=f"5000000{n}", sku=sku, asin="B0TEST", title=title,
                         quantity=n, unit_price=Decimal("24.9"), currency="EUR")
                    for n in range(1, lines + 1)),
    )


CSV = """
[orders]
format = "csv"
file_per = "run"
file_name = "ORD_{run_time:%Y%m%d%H%M%S}.csv"
encoding = "ENCODING"
unencodable = "UNENCODABLE"
delimiter = ";"
date_format = "%d.%m.%Y"
timezone = "Europe/Berlin"
[[orders.columns]]
header = "Id"
source = "order.id"
[[orders.columns]]
header = "Datum"
source = "order.purchase_date"
[[orders.columns]]
header = "Name"
source = "ship_to.name"
[[orders.columns]]
header = "Titel"
source = "line.title"
[[orders.columns]]
header = "Preis"
source = "line.line_total"
"""


def csv_layout(tmp_path: Path, encoding: str = "utf-8", unencodable: str = "fail"):
    return layout_from(tmp_path, CSV.replace("ENCODING", encoding).replace("UNENCODABLE",
                                                                            unencodable))


# --- goldens --------------------------------------------------------------------------------


def test_samples_hold_the_seed_orders_sent_to_warehouses():
    assert json.loads((SAMPLES / "orders.json").read_text("utf-8")) == regenerate.orders_from_seed()


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "mappings").glob("*.toml")))
def test_shipped_mapping_renders_its_goldens_byte_for_byte(name: str):
    expected = {p.name: p.read_bytes() for p in (SAMPLES / name).iterdir() if p.is_file()}
    assert expected, "run samples/regenerate.py"
    result = render_orders(load_mapping(ROOT / "mappings" / f"{name}.toml").orders,
                           sample_orders(), regenerate.RUN_TIME)
    assert result.failures == {}
    assert {f.name: f.data for f in result.files} == expected


def test_acme_golden_is_cp1252_semicolon_crlf_with_german_dates():
    data = (SAMPLES / "acme-csv" / "ACME_AUF_302-0000003-0000003.csv").read_bytes()
    text = data.decode("cp1252")
    assert text.count("\r\n") == 2 and "\n" not in text.replace("\r\n", "")
    header, row = list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))
    assert header[7] == "Straße" and row[2] == "19.11.2026"
    assert row[17] == "24,90"


def test_per_order_files_name_their_order_and_per_run_files_hold_all():
    orders = sorted(sample_orders(), key=lambda order: order.order_id)
    acme = render_orders(load_mapping(ROOT / "mappings/acme-csv.toml").orders, orders, RUN_TIME)
    assert [f.order_ids for f in acme.files] == [(o.order_id,) for o in orders]
    assert all(o.order_id in f.name for o, f in zip(orders, acme.files))
    globex = render_orders(load_mapping(ROOT / "mappings/globex-xml.toml").orders, orders, RUN_TIME)
    assert [f.order_ids for f in globex.files] == [tuple(o.order_id for o in orders)]
    assert globex.files[0].name == "GLOBEX_ORDERS_20261120T123000Z.xml"


def test_files_do_not_depend_on_the_order_orders_come_in():
    for path in sorted((ROOT / "mappings").glob("*.toml")):
        layout = load_mapping(path).orders
        forward = render_orders(layout, sample_orders(), RUN_TIME)
        assert forward == render_orders(layout, sample_orders()[::-1], RUN_TIME), path


def test_no_orders_no_files():
    for path in (ROOT / "mappings").glob("*.toml"):
        result = render_orders(load_mapping(path).orders, [], RUN_TIME)
        assert result.files == () and result.failures == {}


# --- csv ------------------------------------------------------------------------------------


def test_csv_quotes_delimiters_and_quotes(tmp_path: Path):
    title = 'Mug; 12 "oz" blue'
    result = render_orders(csv_layout(tmp_path), [make_order(title=title)], RUN_TIME)
    data = result.files[0].data
    assert b'"Mug; 12 ""oz"" blue"' in data
    rows = list(csv.reader(io.StringIO(data.decode(), newline=""), delimiter=";"))
    assert rows[1][3] == title and len(rows) == 2


def test_a_line_break_in_a_field_holds_the_order_in_every_format(tmp_path: Path):
    # Every field is one line: a WMS reading records line by line would cut the order in two.
    layouts = [csv_layout(tmp_path)] + [load_mapping(ROOT / "mappings" / f"{m}.toml").orders
                                        for m in ("globex-xml", "initech-xlsx")]
    for layout in layouts:
        result = render_orders(layout, [make_order("A-1", title="Mug\nblue"), make_order("B-2")], RUN_TIME)
        assert result.failures == {"A-1": "line.title (line 1) has a control character at position 4"}
        assert [f.order_ids for f in result.files] == [("B-2",)]


def test_cp1252_unencodable_fails_that_order_and_renders_the_others(tmp_path: Path):
    good, bad = make_order("A-1"), make_order("B-2", name="Li 中文 Wei", lines=2)
    other = make_order("C-3", title="Teekanne € 1 L")  # € is in cp1252
    result = render_orders(csv_layout(tmp_path, "cp1252"), [good, bad, other], RUN_TIME)
    assert result.failures == {
        "B-2": "ship_to.name has a character cp1252 cannot encode at position 4"}
    assert "Li" not in result.failures["B-2"]  # never the buyer's data
    assert [f.order_ids for f in result.files] == [("A-1", "C-3")]
    text = result.files[0].data.decode("cp1252")
    assert "Jürgen Müller" in text and "€" in text and "B-2" not in text


def test_line_field_failure_names_the_line(tmp_path: Path):
    order = make_order("A-1", lines=2)
    order = replace(order, lines=(order.lines[0], replace(order.lines[1], title="Tasse ☕")))
    result = render_orders(csv_layout(tmp_path, "cp1252"), [order], RUN_TIME)
    assert result.files == ()
    assert result.failures == {
        "A-1": "line.title (line 2) has a character cp1252 cannot encode at position 7"}


def test_a_price_too_large_to_round_fails_that_order_and_renders_the_others():
    layout = load_mapping(ROOT / "mappings/acme-csv.toml").orders  # unit price: decimals = 2
    huge = make_order("A-1")
    huge = replace(huge, lines=(replace(huge.lines[0], unit_price=Decimal("1E+30")),))
    result = render_orders(layout, [huge, make_order("B-2")], RUN_TIME)
    assert result.failures == {"A-1": "line.unit_price (line 1) cannot be laid out (InvalidOperation)"}
    assert [f.order_ids for f in result.files] == [("B-2",)]


@pytest.mark.parametrize("mapping", ["globex-xml", "initech-xlsx"])
def test_a_missing_text_value_fails_that_order_and_renders_the_others(mapping: str):
    layout = load_mapping(ROOT / "mappings" / f"{mapping}.toml").orders
    result = render_orders(layout, [make_order("A-1", title=None), make_order("B-2")], RUN_TIME)
    assert result.failures == {
        "A-1": "line.title (line 1) cannot be laid out (NoneType where text is expected)"}
    assert [f.order_ids for f in result.files] == [("B-2",)]


@pytest.mark.parametrize("mapping, name", [("cp1252-csv", "Li中文 Wei"),
                                           ("initech-xlsx", "Li\ufffeWei"),
                                           ("globex-xml", "Li\ud800Wei")])
def test_unrenderable_reasons_give_the_field_and_position_but_never_the_character(
        tmp_path: Path, mapping: str, name: str):
    layout = (csv_layout(tmp_path, "cp1252") if mapping == "cp1252-csv"
              else load_mapping(ROOT / "mappings" / f"{mapping}.toml").orders)
    reason = render_orders(layout, [make_order("A-1", name=name)], RUN_TIME).failures["A-1"]
    assert reason.startswith("ship_to.name has a character ")
    assert reason.endswith(" at position 3")
    assert "U+" not in reason and name[2] not in reason


def test_write_csv_failure_gives_the_position_but_never_the_character():
    from bridge.errors import RenderError
    from bridge.formats.tables import write_csv

    with pytest.raises(RenderError) as caught:
        write_csv([["Li 中文"]], encoding="cp1252")
    assert str(caught.value) == "text has a character cp1252 cannot encode at position 4"


def test_unencodable_replace_writes_question_marks(tmp_path: Path):
    result = render_orders(csv_layout(tmp_path, "cp1252", "replace"),
                           [make_order(name="Li 中文")], RUN_TIME)
    assert result.failures == {}
    assert "Li ??" in result.files[0].data.decode("cp1252")


def test_utf8_sig_starts_with_a_bom_and_plain_utf8_does_not(tmp_path: Path):
    with_bom = render_orders(csv_layout(tmp_path, "utf-8-sig"), [make_order()], RUN_TIME)
    without = render_orders(csv_layout(tmp_path, "utf-8"), [make_order()], RUN_TIME)
    assert with_bom.files[0].data.startswith(b"\xef\xbb\xbfId;")
    assert without.files[0].data.startswith(b"Id;")


def test_lone_surrogate_fails_even_in_utf8(tmp_path: Path):
    result = render_orders(csv_layout(tmp_path), [make_order("A-1", title="x\ud800")], RUN_TIME)
    assert result.failures["A-1"].startswith("line.title (line 1) has a character utf-8 cannot")


def test_dates_are_shown_in_the_layout_timezone(tmp_path: Path):
    data = render_orders(csv_layout(tmp_path), [make_order()], RUN_TIME).files[0].data
    assert b";20.11.2026;" in data  # 23:30 UTC on the 19th is the 20th in Berlin


def test_max_length_fails_the_order_or_truncates(tmp_path: Path):
    text = CSV.replace("ENCODING", "utf-8").replace("UNENCODABLE", "fail").replace(
        'source = "ship_to.name"', 'source = "ship_to.name"\nmax_length = 10').replace(
        'source = "line.title"', 'source = "line.title"\nmax_length = 5\ntruncate = true')
    layout = layout_from(tmp_path, text)
    result = render_orders(layout, [make_order("A-1", name="Bartholomew Longname"),
                                    make_order("B-2", name="Al", title="Glass jug")], RUN_TIME)
    assert result.failures == {
        "A-1": "ship_to.name is 20 characters long, the warehouse takes at most 10"}
    assert b";Al;Glass;" in result.files[0].data


# --- failures and names ---------------------------------------------------------------------


def test_order_without_ship_to_is_a_failure_not_a_crash():
    for path in sorted((ROOT / "mappings").glob("*.toml")):
        orders = [make_order("A-1", ship_to=None), make_order("B-2")]
        result = render_orders(load_mapping(path).orders, orders, RUN_TIME)
        assert "ship_to" in result.failures["A-1"], path
        assert [f.order_ids for f in result.files] in ([("B-2",)],), path


def test_order_without_lines_and_duplicate_orders_fail(tmp_path: Path):
    result = render_orders(csv_layout(tmp_path), [make_order("A-1", lines=0), make_order("B-2"),
                                                  make_order("B-2")], RUN_TIME)
    assert result.failures == {"A-1": "the order has no lines",
                               "B-2": "the order appears twice in this run"}
    assert result.files[0].order_ids == ("B-2",)


@pytest.mark.parametrize("order_id", ["../../etc/passwd", "..", "a/b\\c", "x\x00\n\ty", ".hidden"])
def test_hostile_order_ids_and_skus_give_safe_file_names(order_id: str):
    # The id only in the file name: in a cell, control characters hold the order (below).
    layout = load_mapping(ROOT / "mappings/acme-csv.toml").orders
    layout = replace(layout, columns=tuple(c for c in layout.columns if c.source != "order.id"))
    order = make_order(order_id, sku="../../../x/$(rm -rf)", name="A")
    result = render_orders(layout, [order], RUN_TIME)
    (file,) = result.files
    assert file.order_ids == (order_id,)
    assert "/" not in file.name and "\\" not in file.name and ".." not in file.name
    assert file.name.isprintable() and not file.name.startswith(".")
    assert Path(file.name).name == file.name


def test_colliding_safe_names_fail_the_second_order():
    layout = load_mapping(ROOT / "mappings/acme-csv.toml").orders
    result = render_orders(layout, [make_order("a/b", name="A"), make_order("a_b", name="A")],
                           RUN_TIME)
    assert [f.name for f in result.files] == ["ACME_AUF_a_b.csv"]
    assert result.failures == {"a_b": "its file name ACME_AUF_a_b.csv is also the name of order a/b's "
                                      "file (their ids differ only in characters a file name cannot hold)"}


# --- xlsx -----------------------------------------------------------------------------------


def test_xlsx_keeps_ids_postal_codes_and_phones_as_text_and_numbers_as_numbers():
    layout = load_mapping(ROOT / "mappings/initech-xlsx.toml").orders
    order = make_order("111-0000001-0000001", sku="=HYPERLINK(\"x\")", lines=2)
    order = replace(order, lines=tuple(replace(l, order_item_id="12345678901234567890")
                                       for l in order.lines))
    data = render_orders(layout, [order], RUN_TIME).files[0].data
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    assert sheet.title == "Orders"
    header = [c.value for c in sheet[1]]
    row = {h: c for h, c in zip(header, sheet[3])}
    for name, value in [("Order ID", "111-0000001-0000001"), ("ZIP", "01067"),
                        ("Phone", "0049221555"), ("Order Item ID", "12345678901234567890"),
                        ("SKU", '=HYPERLINK("x")')]:
        assert (row[name].value, row[name].data_type) == (value, "s"), name
    assert (row["Qty"].value, row["Qty"].data_type) == (2, "n")
    assert row["Line Total"].value == pytest.approx(49.8)


def test_xlsx_is_deterministic_and_dated_by_the_run():
    layout = load_mapping(ROOT / "mappings/initech-xlsx.toml").orders
    first = render_orders(layout, sample_orders(), RUN_TIME).files[0].data
    second = render_orders(layout, sample_orders(), RUN_TIME).files[0].data
    assert first == second
    book = openpyxl.load_workbook(io.BytesIO(first))
    assert book.properties.created == book.properties.modified == datetime(2026, 11, 20, 12, 30)


def test_xlsx_control_character_fails_the_order():
    layout = load_mapping(ROOT / "mappings/initech-xlsx.toml").orders
    result = render_orders(layout, [make_order("A-1", title="bad\x0bchar"), make_order("B-2")],
                           RUN_TIME)
    assert result.failures == {
        "A-1": "line.title (line 1) has a control character at position 4"}
    assert result.files[0].order_ids == ("B-2",)


# --- xml ------------------------------------------------------------------------------------


def test_xml_parses_back_with_a_safe_parser():
    layout = load_mapping(ROOT / "mappings/globex-xml.toml").orders
    hostile = make_order("A-1", name='<Name>&amp; "O\'Neil"</Name>', title="Tasse ☕ & <b>")
    data = render_orders(layout, [hostile, make_order("B-2", lines=2)], RUN_TIME).files[0].data
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Orders>')
    root = etree.fromstring(data, SAFE_PARSER)
    first, second = root.findall("Order")
    assert first.get("id") == "A-1"
    assert first.findtext("ShipTo/Name") == '<Name>&amp; "O\'Neil"</Name>'
    assert first.findtext("Lines/Line/Description") == "Tasse ☕ & <b>"
    assert first.find("Total").get("currency") == "EUR" and first.findtext("Total") == "24.90"
    assert [l.get("number") for l in second.findall("Lines/Line")] == ["1", "2"]


def test_xml_in_cp1252_writes_other_characters_as_references(tmp_path: Path):
    text = (ROOT / "mappings/globex-xml.toml").read_text("utf-8").replace(
        'encoding = "utf-8"', 'encoding = "cp1252"')
    layout = layout_from(tmp_path, text)
    data = render_orders(layout, [make_order(name="Jürgen 中")], RUN_TIME).files[0].data
    assert data.startswith(b'<?xml version="1.0" encoding="windows-1252"?>')
    assert "Jürgen &#20013;".encode("cp1252") in data
    assert etree.fromstring(data, SAFE_PARSER).findtext("Order/ShipTo/Name") == "Jürgen 中"


def test_xml_control_character_fails_the_order():
    layout = load_mapping(ROOT / "mappings/globex-xml.toml").orders
    result = render_orders(layout, [make_order("A-1", name="A\x01B"), make_order("B-2")], RUN_TIME)
    assert result.failures == {
        "A-1": "ship_to.name has a control character at position 2"}
    assert result.files[0].order_ids == ("B-2",)


def test_xml_without_a_lines_wrapper_and_seq_in_names(tmp_path: Path):
    layout = layout_from(tmp_path, """
[orders]
format = "xml"
file_per = "order"
file_name = "{seq:03d}_{marketplace_id}_{order_id}.xml"
lines_element = ""
[[orders.fields]]
element = "Id"
source = "order.id"
[[orders.line_fields]]
element = "Sku"
source = "line.sku"
""")
    result = render_orders(layout, [make_order("A-1", lines=2), make_order("B-2")], RUN_TIME)
    assert [f.name for f in result.files] == ["001_A1PA6795UKMFR9_A-1.xml",
                                              "002_A1PA6795UKMFR9_B-2.xml"]
    order = etree.fromstring(result.files[0].data, SAFE_PARSER).find("Order")
    assert [child.tag for child in order] == ["Id", "Line", "Line"]


def test_decimal_separator_is_not_an_xlsx_key(tmp_path: Path):
    text = (ROOT / "mappings/initech-xlsx.toml").read_text("utf-8").replace(
        'sheet = "Orders"', 'sheet = "Orders"\ndecimal_separator = ","')
    with pytest.raises(Exception, match="orders.decimal_separator: not used by format 'xlsx'"):
        layout_from(tmp_path, text)


# --- value maps: ship-method tables that hold an order until mapped ---------------------------

MAPPED = """
[orders]
format = "csv"
file_per = "order"
file_name = "ORD_{order_id}.csv"
[[orders.columns]]
header = "Id"
source = "order.id"
[[orders.columns]]
header = "Service"
source = "order.service_level"
map = { STANDARD = "DHL_PAKET", EXPEDITED = "DHL_EXPRESS" }
"""


def test_a_value_map_turns_amazons_service_level_into_the_warehouses_code_and_holds_unmapped_ones(tmp_path):
    import dataclasses

    from bridge.formats.orders import render_orders
    from bridge.mapping import load_mapping
    from bridge.records import order_from_dict

    path = tmp_path / "mapped.toml"
    path.write_text(MAPPED)
    layout = load_mapping(path).orders
    orders = [order_from_dict(d) for d in json.loads((SAMPLES / "orders.json").read_text())]
    standard = dataclasses.replace(orders[0], service_level="STANDARD")
    same_day = dataclasses.replace(orders[1], service_level="SAME_DAY")

    result = render_orders(layout, [standard, same_day], RUN_TIME)

    [rendered] = result.files
    assert b"DHL_PAKET" in rendered.data
    assert result.failures == {
        same_day.order_id: "order.service_level: value 'SAME_DAY' has no entry in the column's map; add it to the mapping"}


def test_a_value_map_is_only_for_text_sources(tmp_path):
    import pytest

    from bridge.errors import ConfigError
    from bridge.mapping import load_mapping

    path = tmp_path / "bad.toml"
    path.write_text(MAPPED.replace('source = "order.service_level"', 'source = "order.total"'))
    with pytest.raises(ConfigError, match=r"orders.columns\[1\] \(header 'Service'\).map: only for text sources"):
        load_mapping(path)


def test_an_unmapped_buyer_field_is_reported_without_its_value(tmp_path):
    from bridge.formats.orders import render_orders
    from bridge.mapping import load_mapping
    from bridge.records import order_from_dict

    path = tmp_path / "city.toml"
    path.write_text(MAPPED.replace('source = "order.service_level"', 'source = "ship_to.city"'))
    order = order_from_dict(json.loads((SAMPLES / "orders.json").read_text())[0])
    result = render_orders(load_mapping(path).orders, [order], RUN_TIME)
    assert result.failures == {order.order_id: "ship_to.city: its value has no entry in the column's map; add it to the mapping"}
    assert order.ship_to.city not in result.failures[order.order_id]


# --- files written an order at a time: the same bytes as written whole ------------------------

@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
def test_an_xml_file_written_element_by_element_is_the_whole_tree_written_at_once(encoding: str):
    from lxml import etree

    from bridge.formats.tables import XmlStream, write_xml

    def order(number: int):
        element = etree.Element("Order", id=f"A-{number}", note='say "hi" & <go>')
        etree.SubElement(element, "Name").text = "Łukasz Yılmaz 中文 Müller"
        etree.SubElement(element, "Empty")
        lines = etree.SubElement(element, "Lines")
        etree.SubElement(etree.SubElement(lines, "Line"), "SKU").text = f"SKU-{number}"
        return element

    root = etree.Element("Orders")
    for number in range(3):
        root.append(order(number))
    out = io.BytesIO()
    stream = XmlStream(out, "Orders", encoding=encoding)
    for number in range(3):
        stream.add(order(number))
    stream.close()
    assert out.getvalue() == write_xml(root, encoding=encoding)


def test_a_csv_file_written_order_by_order_leaves_out_only_the_order_its_encoding_cannot_hold(tmp_path: Path):
    orders = [make_order("A-1"), make_order("A-2", name="Li 中文"), make_order("A-3")]
    streamed = render_orders(csv_layout(tmp_path, "cp1252"), orders, RUN_TIME)
    whole = render_orders(csv_layout(tmp_path, "cp1252"), [orders[0], orders[2]], RUN_TIME)
    assert streamed.failures == {"A-2": "ship_to.name has a character cp1252 cannot encode at position 4"}
    assert [f.data for f in streamed.files] == [f.data for f in whole.files]


def test_a_line_partly_shipped_by_hand_tells_the_warehouse_what_is_left_to_ship(tmp_path):
    layout = layout_from(tmp_path, """
[orders]
format = "csv"
file_per = "run"
file_name = "ORD_{run_time:%Y%m%d%H%M%S}.csv"
[[orders.columns]]
header = "Item"
source = "line.order_item_id"
[[orders.columns]]
header = "Ordered"
source = "line.quantity"
[[orders.columns]]
header = "Shipped"
source = "line.quantity_shipped"
[[orders.columns]]
header = "ToShip"
source = "line.quantity_unshipped"
""")
    partly = next(o for o in sample_orders() if o.order_id == "111-0000005-0000005")  # PartiallyShipped in the seed

    [rendered] = render_orders(layout, [partly], regenerate.RUN_TIME).files

    assert rendered.data.decode().splitlines() == [
        "Item,Ordered,Shipped,ToShip", "50000005000001,1,1,0", "50000005000002,2,0,2"]
