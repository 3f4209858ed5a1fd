"""Inbound files as rows (bridge/formats/readers.py) and the rules for taking them
(bridge/formats/inbound.py): pure, streamed, every unreadable file named with why."""

from __future__ import annotations

import codecs
import csv
import io
import random
import zipfile
from datetime import datetime, timedelta, timezone

import pytest
from openpyxl import Workbook

from bridge.errors import BadFile, IncompleteFile
from bridge.formats.inbound import (
    ignored, incomplete_reason, marker_name, result_file, safe_name, settled)
from bridge.formats import readers
from bridge.formats.readers import TableSpec, read_rows

CSV = TableSpec("csv", ("Order", "Qty"), delimiter=";")


def rows(data: bytes, spec: TableSpec = CSV) -> list[tuple]:
    return [tuple(row) for row in read_rows(io.BytesIO(data), spec)]


# --- CSV --------------------------------------------------------------------------------------

def test_csv_rows_are_numbered_as_lines_and_read_by_header_name():
    data = b"Note;Order;Qty\r\nx;111-1;2\r\ny;111-2;3\r\n"
    assert rows(data) == [(2, {"Order": "111-1", "Qty": "2"}, ""),
                          (3, {"Order": "111-2", "Qty": "3"}, "")]


def test_a_utf8_byte_order_mark_is_dropped_from_the_first_header():
    assert rows(codecs.BOM_UTF8 + b"Order;Qty\n111-1;2\n") == [(2, {"Order": "111-1", "Qty": "2"}, "")]


def test_cp1252_text_is_decoded_as_declared():
    spec = TableSpec("csv", ("Straße", "Menge"), encoding="cp1252", delimiter=";")
    assert rows("Straße;Menge\r\nSüdweg;2\r\n".encode("cp1252"), spec) == [
        (2, {"Straße": "Südweg", "Menge": "2"}, "")]


def test_utf16_as_excel_saves_unicode_text_is_read_with_its_byte_order_mark():
    spec = TableSpec("csv", ("Order", "Qty"), encoding="utf-16", delimiter="\t")
    data = "Order\tQty\r\n111-1\t2\r\n".encode("utf-16")
    assert rows(data, spec) == [(2, {"Order": "111-1", "Qty": "2"}, "")]


@pytest.mark.parametrize("data, declared, why", [
    ("Order;Qty\n".encode("utf-16"), "utf-8",
     "the file is UTF-16 text (it starts with a byte order mark), the mapping says UTF-8"),
    (codecs.BOM_UTF8 + b"Order;Qty\n", "utf-16", "the file is UTF-8 text (it starts with a byte order mark), "
     "the mapping says UTF-16"),
    (b"Order;Qty\n", "utf-16", "the file has no UTF-16 byte order mark, the mapping says UTF-16"),
])
def test_a_byte_order_mark_that_contradicts_the_mapping_is_refused_not_guessed(data, declared, why):
    with pytest.raises(BadFile) as refused:
        rows(data, TableSpec("csv", ("Order", "Qty"), encoding=declared, delimiter=";"))
    assert str(refused.value) == why


def test_excels_csv_utf8_in_a_cp1252_folder_is_read_as_utf8_its_byte_order_mark_says_so():
    data = codecs.BOM_UTF8 + "Order;Straße\r\n111-1;Südweg\r\n".encode("utf-8")
    assert rows(data, TableSpec("csv", ("Order", "Straße"), encoding="cp1252", delimiter=";")) == [
        (2, {"Order": "111-1", "Straße": "Südweg"}, "")]


def test_lf_cr_and_crlf_line_ends_all_work_and_blank_rows_are_skipped():
    data = b"Order;Qty\n111-1;2\r\n\r\n;;\n111-2;1\r111-3;4\n"
    assert [r[0] for r in rows(data)] == [2, 5, 6]


def test_rows_with_too_many_or_too_few_fields_are_named_not_guessed():
    data = b"Order;Qty;Note\n111-1;2;a;b\n111-2;3\n111-3;1;ok\n"
    assert [(r[0], r[2]) for r in rows(data)] == [
        (2, "4 fields, the header has 3 (a ';' inside a value must be quoted)"),
        (3, "2 fields, the header has 3"),
        (4, "")]


def test_a_byte_the_encoding_lacks_names_its_row():
    data = b"Order;Qty\n111-1;2\n111-\x81;3\n"
    found = rows(data, TableSpec("csv", ("Order", "Qty"), encoding="cp1252", delimiter=";"))
    assert found[1][0] == 3
    assert found[1][2] == "byte 0x81 is not Windows-1252 text: check the file's encoding"
    assert "\ufffd" in found[1][1]["Order"]  # the result file can still print the row


def test_a_missing_header_column_is_refused_naming_what_was_found():
    with pytest.raises(BadFile, match=r"^row 1: the header has no column 'Qty' \(found: 'Order', 'Menge'\)$"):
        rows(b"Order;Menge\n111-1;2\n")


def test_positions_read_a_file_without_header():
    spec = TableSpec("csv", ("1", "3"), delimiter=",", header=False)
    assert rows(b"111-1,x,2\n111-2\n", spec) == [
        (1, {"1": "111-1", "3": "2"}, ""),
        (2, {"1": "111-2", "3": ""}, "1 fields, the mapping reads field 3")]


def test_a_blank_line_in_a_file_without_header_is_skipped():
    spec = TableSpec("csv", ("1", "3"), delimiter=",", header=False)
    assert rows(b"a,b,c\n\n \n , , \nd,e,f\n", spec) == [
        (1, {"1": "a", "3": "c"}, ""), (5, {"1": "d", "3": "f"}, "")]



@pytest.mark.parametrize("batch", [1, 2048])
def test_a_row_of_blanks_as_wide_as_the_header_is_skipped(monkeypatch, batch):
    monkeypatch.setattr(readers, "_BATCH", batch)
    spec = TableSpec("csv", ("a", "b"), delimiter=",")
    assert rows(b"a,b\n , \n1,2\n,\t\n \xc2\xa0,x\n", spec) == [
        (3, {"a": "1", "b": "2"}, ""), (5, {"a": "", "b": "x"}, "")]

def test_a_header_the_csv_module_refuses_is_named_with_why():
    with pytest.raises(BadFile, match=r"^row 1: cannot be read as CSV \(field larger than field limit \(131072\)\)"):
        rows(b"Order;" + b"x" * 140_000 + b"\n111-1;2\n")


def test_a_batch_of_rows_holds_a_bounded_number_of_cells_however_wide_the_rows():
    assert readers._batch_size(7) == readers._BATCH
    assert readers._batch_size(16_384) * 16_384 <= readers._BATCH_CELLS  # a sheet's every column, exported
    assert readers._batch_size(10_000_000) == 1


@pytest.mark.parametrize("order, end, pad", [
    ("le", "\r\n", 0), ("be", "\r\n", 0), ("le", "\n", 0), ("le", "\r", 0),
    ("le", "\r\n", 1), ("le", "\r\n", 3),  # the bad unit, or a line break, across a 64 KiB chunk's end
])
def test_a_utf16_byte_that_does_not_decode_is_named_by_its_exact_row_far_into_the_file(order, end, pad):
    spec = TableSpec("csv", ("Order", "Qty"), encoding="utf-16", delimiter=";")
    codec, bom = (("utf-16-le", codecs.BOM_UTF16_LE) if order == "le" else ("utf-16-be", codecs.BOM_UTF16_BE))
    text = f"Order;Qty{end}" + "".join(f"111-{n};1{end}" for n in range(5_000))
    text += "x" * ((readers._CHUNK // 2 - len(text) % (readers._CHUNK // 2)) - pad)  # row 5002 ends a chunk
    lone = b"\xd8\x00" if order == "be" else b"\x00\xd8"  # a high surrogate without its pair
    data = bom + text.encode(codec) + lone + f"y;1{end}".encode(codec)
    with pytest.raises(BadFile, match=r"^row 5002: bytes that are not UTF-16 text: check the file's encoding$"):
        rows(data, spec)


def reference_rows(data: bytes, fields: tuple[str, ...], delimiter: str) -> list[tuple]:
    """What the reader must give, worked out one record at a time from csv's own line count."""
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=""), delimiter=delimiter)
    header = [cell.strip() for cell in next(reader)]
    at = [header.index(field) for field in fields]
    found, line = [], reader.line_num + 1
    for record in reader:
        number, line = line, reader.line_num + 1
        whole = len(record) == len(header)
        if "".join(record).strip():  # a row with no text at all is skipped, whatever its width
            values = {field: record[i].strip() if i < len(record) else "" for field, i in zip(fields, at)}
            found.append((number, values, not whole))
    return found


_CELLS = ["", " ", "a", "b c", "111-2", '"q\nx"', '"q\r\ny"', '"r\rz"', '"s;t"', '"u""v"', '"\n"']
_ENDS = ["\n", "\r\n", "\r"]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("batch", [1, 3, 2048])
def test_row_numbers_and_values_match_a_record_by_record_reading_whatever_the_file(monkeypatch, seed, batch):
    monkeypatch.setattr(readers, "_BATCH", batch)
    randomly = random.Random(seed)
    end = randomly.choice(_ENDS)
    lines = ["Note;Order;Qty"]
    for _ in range(randomly.randrange(1, 400)):
        shape = randomly.random()
        if shape < 0.05:
            lines.append("")
        elif shape < 0.1:
            lines.append(";".join(randomly.choice(_CELLS) for _ in range(randomly.choice([1, 2, 4]))))
        elif shape < 0.4:
            lines.append(";".join(randomly.choice(_CELLS) for _ in range(3)))
        else:
            lines.append(f"n;111-{randomly.randrange(1000)};{randomly.randrange(9)}")
    data = (end.join(lines) + end).encode()
    got = [(number, values, bool(problem)) for number, values, problem in read_rows(io.BytesIO(data), CSV)]
    assert got == reference_rows(data, ("Order", "Qty"), ";")


@pytest.mark.parametrize("width, fields", [
    (3, ("Qty",)),  # one field: a picked tuple of one
    (3, ("Qty", "Order", "Note")),  # fields in another order than the columns
    (readers._WHOLE_RECORD_CELLS, ("Qty", f"C{readers._WHOLE_RECORD_CELLS - 1}")),  # the widest taken whole
    (readers._WHOLE_RECORD_CELLS + 1, ("Qty", f"C{readers._WHOLE_RECORD_CELLS}")),  # the narrowest picked first
    (readers._WHOLE_RECORD_CELLS + 284, ("C299", "Order")),  # records picked first, then a function of the picked
])
def test_rows_of_any_width_and_field_order_match_a_record_by_record_reading(width, fields):
    header = ["Note", "Order", "Qty"] + [f"C{at}" for at in range(3, width)]
    lines = [";".join(header)] + [";".join([f" n{row}", f"111-{row} ", "2"] + [f"c{row}.{at}" for at in range(3, width)])
                                  for row in range(3000)]
    data = ("\n".join(lines) + "\n").encode()
    spec = TableSpec("csv", fields, delimiter=";")
    got = [(number, values, bool(problem)) for number, values, problem in read_rows(io.BytesIO(data), spec)]
    assert got == reference_rows(data, fields, ";")
    assert list(got[0][1]) == list(fields)


def test_rows_without_a_header_match_whatever_the_positions():
    spec = TableSpec("csv", ("3", "1"), delimiter=",", header=False)
    data = "".join(f" a{row} ,b,c{row}\n" for row in range(3000)).encode()
    assert rows(data, spec) == [(row + 1, {"3": f"c{row}", "1": f"a{row}"}, "") for row in range(3000)]


def test_a_record_the_csv_module_refuses_is_named_by_its_first_line_after_the_rows_before_it():
    data = b"Order;Qty\n111-1;2\n111-2;\"3\n4\"\n111-3;" + b"x" * 140_000 + b"\n111-4;5\n"
    numbers = []
    with pytest.raises(BadFile, match=r"^row 5: cannot be read as CSV \(field larger than field limit"):
        for row in read_rows(io.BytesIO(data), CSV):
            numbers.append(row.number)
    assert numbers == [2, 3]


def test_an_empty_csv_is_incomplete():
    with pytest.raises(IncompleteFile, match="empty"):
        rows(b"")


# --- XLSX -------------------------------------------------------------------------------------

def workbook(*lines, sheet="Sheet") -> bytes:
    book = Workbook()
    book.active.title = sheet
    for line in lines:
        book.active.append(list(line))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_xlsx_cells_become_text_as_a_person_reads_them():
    data = workbook(["Order", "Qty", "Shipped", "Tracking"],
                    ["111-1", 2, datetime(2026, 11, 20, 16, 45), "00340434161094042557"],
                    [None, None, None, None],
                    ["111-2", 1.0, datetime(2026, 11, 21), 9.4e21])
    spec = TableSpec("xlsx", ("Order", "Qty", "Shipped", "Tracking"))
    assert rows(data, spec) == [
        (2, {"Order": "111-1", "Qty": "2", "Shipped": "2026-11-20T16:45:00",
             "Tracking": "00340434161094042557"}, ""),
        (4, {"Order": "111-2", "Qty": "1", "Shipped": "2026-11-21T00:00:00",
             "Tracking": "9.4E+21"}, "")]


def sheet_xml_replaced(data: bytes, old: str, new: str) -> bytes:
    """The workbook with its first sheet's XML edited, as another program would have written it."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for part in source.infolist():
            body = source.read(part)
            if part.filename == "xl/worksheets/sheet1.xml":
                assert old.encode() in body
                body = body.replace(old.encode(), new.encode())
            target.writestr(part, body)
    return out.getvalue()


def test_a_formula_without_a_saved_value_makes_its_row_bad_and_blank_formula_rows_are_skipped():
    data = workbook(["SKU", "Qty"], ["A", "=1+1"], ["B", 5], [None, "=2+2"])  # openpyxl saves no value
    assert rows(data, TableSpec("xlsx", ("SKU", "Qty"))) == [
        (2, {"SKU": "A", "Qty": ""}, "'Qty': a formula whose value was never saved (the program that wrote the file "
                                     "does not calculate): open the file in Excel and save it again, or have the "
                                     "values written instead"),
        (3, {"SKU": "B", "Qty": "5"}, "")]


def test_a_formula_whose_saved_result_is_empty_text_is_an_empty_cell_as_excel_saves_it():
    data = sheet_xml_replaced(workbook(["SKU", "Method"], ["A", "=1+1"]),
                              '<c r="B2"><f>1+1</f><v></v></c>', '<c r="B2" t="str"><f>IF(1,"","x")</f><v></v></c>')
    assert rows(data, TableSpec("xlsx", ("SKU", "Method"))) == [(2, {"SKU": "A", "Method": ""}, "")]


def test_an_unknown_sheet_is_named():
    with pytest.raises(BadFile, match="no sheet 'Shipments' \\(found: Sheet\\)"):
        rows(workbook(["Order"]), TableSpec("xlsx", ("Order",), sheet="Shipments"))


def test_a_file_that_is_not_a_workbook_is_refused():
    with pytest.raises(BadFile, match="^not an XLSX workbook"):
        rows(b"PK\x03\x04 not really", TableSpec("xlsx", ("Order",)))


# --- XML --------------------------------------------------------------------------------------

NESTED = b"""<?xml version="1.0" encoding="UTF-8"?>
<Confirmations xmlns="urn:globex:shipments">
  <Shipment orderId="111-1">
    <Carrier>UPS</Carrier>
    <Package tracking="1Z1">
      <Item sku="A"><Qty>2</Qty></Item>
      <Item sku="B"><Qty>1</Qty></Item>
    </Package>
    <Package tracking="1Z2"><Item sku="C"><Qty>3</Qty></Item></Package>
  </Shipment>
  <Shipment orderId="111-2"><Carrier>USPS</Carrier>
    <Package tracking="9400"><Item sku="D"><Qty>1</Qty></Item></Package>
  </Shipment>
</Confirmations>
"""
XML = TableSpec("xml", ("../../@orderId", "../../Carrier", "../@tracking", "@sku", "Qty"),
                record="Confirmations/Shipment/Package/Item")


def test_xml_records_read_their_own_fields_and_their_ancestors_whatever_the_namespace():
    found = rows(NESTED, XML)
    assert [(n, tuple(v.values())) for n, v, _ in found] == [
        (6, ("111-1", "UPS", "1Z1", "A", "2")),
        (7, ("111-1", "UPS", "1Z1", "B", "1")),
        (9, ("111-1", "UPS", "1Z2", "C", "3")),
        (12, ("111-2", "USPS", "9400", "D", "1"))]


def test_a_missing_xml_field_is_empty_text():
    doc = b"<Confirmations><Shipment><Package><Item/></Package></Shipment></Confirmations>"
    assert rows(doc, XML)[0][1] == {f: "" for f in XML.fields}


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE c [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<Confirmations><Shipment orderId="&d;"/></Confirmations>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Confirmations><Shipment orderId="1"><Carrier>&x;</Carrier></Shipment></Confirmations>"""


@pytest.mark.parametrize("doc", [BOMB, EXTERNAL], ids=["entity bomb", "external entity"])
def test_an_xml_doctype_is_refused_so_no_entity_is_ever_expanded_or_fetched(doc):
    with pytest.raises(BadFile, match="has a DOCTYPE"):
        rows(doc, XML)


def test_xml_that_stops_early_is_incomplete_and_broken_xml_is_bad():
    with pytest.raises(IncompleteFile, match="ends before its last element is closed"):
        rows(NESTED[:200], XML)
    with pytest.raises(BadFile, match="^not well-formed XML: Opening and ending tag mismatch"):
        rows(b"<Confirmations><Shipment></Package></Confirmations>", XML)


def values(data: bytes, spec: TableSpec) -> list[tuple]:
    return [(number, tuple(found.values()), problem) for number, found, problem in rows(data, spec)]


SHIPMENT_FIELDS = ("../../@orderId", "../../Carrier", "../@tracking", "@sku", "Qty")


@pytest.mark.parametrize("doc", [
    b"""<Confirmations><Shipment orderId="111-1">
  <Package tracking="1Z1"><Item sku="A"><Qty>2</Qty></Item></Package>
  <Package tracking="1Z2"><Item sku="B"><Qty>1</Qty></Item></Package>
  <Carrier>UPS</Carrier>
</Shipment></Confirmations>""",
    b"""<Confirmations><Shipment orderId="111-1">
  <Package tracking="1Z1"><Item sku="A"><Qty>2</Qty></Item></Package>
  <Package tracking="1Z2"><Item sku="B"><Qty>1</Qty></Item><?wms x?><!-- packed --></Package>
  <!-- the carrier is known once the truck has come --><Carrier>UPS</Carrier>
</Shipment></Confirmations>""",
], ids=["carrier after the packages", "with a comment and a processing instruction"])
def test_an_ancestors_field_after_the_records_is_read_for_every_record(doc):
    spec = TableSpec("xml", SHIPMENT_FIELDS, record="Confirmations/Shipment/Package/Item")
    assert values(doc, spec) == [(2, ("111-1", "UPS", "1Z1", "A", "2"), ""), (3, ("111-1", "UPS", "1Z2", "B", "1"), "")]



def test_a_value_written_around_a_comment_or_processing_instruction_is_read_whole():
    doc = b"""<Confirmations><Shipment orderId="111-1">
  <Package tracking="1Z1"><Item sku="A"><Qty>1<!-- ten? -->0</Qty></Item></Package>
  <Carrier>U<?wms y?>PS</Carrier>
</Shipment></Confirmations>"""
    spec = TableSpec("xml", SHIPMENT_FIELDS, record="Confirmations/Shipment/Package/Item")
    assert values(doc, spec) == [(2, ("111-1", "UPS", "1Z1", "A", "10"), "")]

@pytest.mark.parametrize("doc", [
    b'<c:Confirmations xmlns:c="urn:c"><c:Shipment orderId="111-1"><c:Carrier>UPS</c:Carrier>'
    b'<c:Package tracking="1Z1"><c:Item sku="A"><c:Qty>2</c:Qty></c:Item></c:Package></c:Shipment></c:Confirmations>',
    b'<Confirmations><Shipment orderId="111-1"><Carrier xmlns="urn:x">UPS</Carrier>'
    b'<Package tracking="1Z1"><Item sku="A"><q:Qty xmlns:q="urn:q">2</q:Qty></Item></Package></Shipment></Confirmations>',
], ids=["prefixed everywhere", "a namespace declared on a field only"])
def test_namespaces_are_ignored_however_they_are_declared(doc):
    spec = TableSpec("xml", SHIPMENT_FIELDS, record="Confirmations/Shipment/Package/Item")
    assert values(doc, spec) == [(1, ("111-1", "UPS", "1Z1", "A", "2"), "")]


def test_a_namespace_declared_halfway_through_the_document_changes_nothing():
    doc = b"""<Confirmations>
<Shipment orderId="111-1"><Carrier>UPS</Carrier><Package tracking="1Z1"><Item sku="A"><Qty>2</Qty></Item></Package></Shipment>
<Shipment orderId="111-2"><Carrier>UPS</Carrier><Package tracking="1Z2"><Item xmlns="urn:late" sku="B"><Qty>1</Qty></Item>
</Package></Shipment>
<Shipment orderId="111-3"><Carrier>DHL</Carrier><Package tracking="1Z3"><Item sku="C"><Qty>3</Qty><Qty>4</Qty></Item>
</Package></Shipment>
</Confirmations>"""
    spec = TableSpec("xml", SHIPMENT_FIELDS, record="Confirmations/Shipment/Package/Item")
    assert values(doc, spec) == [(2, ("111-1", "UPS", "1Z1", "A", "2"), ""), (3, ("111-2", "UPS", "1Z2", "B", "1"), ""),
                                 (5, ("111-3", "DHL", "1Z3", "C", "3"), "Qty appears 2 times in this record")]


STOCK = TableSpec("xml", ("@sku", "OnHand", "Location"), record="Inventory/Item")


def test_a_record_with_no_ancestor_field_is_read_from_itself_alone():
    doc = b"""<Inventory>
  <Item sku="MUG"><OnHand>7</OnHand><Location>A-1</Location></Item>
  <Item sku=" CUP "><Location> B-2 </Location></Item>
  <Other sku="NOT-A-RECORD"><OnHand>1</OnHand></Other>
  <Group><Item sku="NOT-ON-THE-PATH"><OnHand>1</OnHand></Item></Group>
</Inventory>"""
    assert values(doc, STOCK) == [(2, ("MUG", "7", "A-1"), ""), (3, ("CUP", "", "B-2"), "")]


def test_a_field_given_twice_in_a_record_makes_the_row_bad_and_an_ancestors_first_one_wins():
    doc = b"""<Inventory>
  <Item sku="MUG"><OnHand>7</OnHand><!-- recount --><OnHand>9</OnHand></Item>
  <Item sku="CUP"><OnHand>1</OnHand><Note>a</Note><Note>b</Note></Item>
</Inventory>"""
    assert values(doc, STOCK) == [(2, ("MUG", "7", ""), "OnHand appears 2 times in this record"),
                                  (3, ("CUP", "1", ""), "")]
    shipment = b"""<Confirmations><Shipment orderId="111-1"><Carrier>UPS</Carrier><Carrier>DHL</Carrier>
  <Package tracking="1Z1"><Item sku="A"><Qty>2</Qty></Item></Package></Shipment></Confirmations>"""
    spec = TableSpec("xml", SHIPMENT_FIELDS, record="Confirmations/Shipment/Package/Item")
    assert values(shipment, spec) == [(2, ("111-1", "UPS", "1Z1", "A", "2"), "")]


def test_deeper_field_paths_and_a_childs_attribute_are_read_and_counted():
    spec = TableSpec("xml", ("Qty/Value", "Qty@unit", "../Dims/Weight", "../Dims/Weight@unit"),
                     record="Shipments/Package/Item")
    doc = b"""<Shipments>
  <Package><Item><Qty unit="pcs"><Value> 2 </Value></Qty></Item>
    <Item><Qty><Value>1</Value><Value>3</Value></Qty></Item>
    <Item><Qty unit="kg"><Value>4</Value></Qty><Qty><Value>5</Value></Qty></Item>
    <Dims><Weight unit="kg">1.5</Weight></Dims><Dims><Weight>9</Weight></Dims>
  </Package>
</Shipments>"""
    assert values(doc, spec) == [(2, ("2", "pcs", "1.5", "kg"), ""),
                                 (3, ("1", "", "1.5", "kg"), "Value appears 2 times in this record"),
                                 (4, ("4", "kg", "1.5", "kg"), "Qty appears 2 times in this record")]


def test_records_sharing_a_line_take_the_next_numbers():
    doc = b'<Inventory>\n<Item sku="A"/><Item sku="B"/>\n<Item sku="C"/><Item sku="D"/><Item sku="E"/></Inventory>'
    assert [number for number, _, _ in rows(doc, STOCK)] == [2, 3, 4, 5, 6]


# --- the inbound rules ------------------------------------------------------------------------

@pytest.mark.parametrize("name, taken", [
    ("SHIP.csv", True), ("SHIP.csv.tmp", False), ("SHIP.csv.part", False), (".SHIP.csv", False),
    ("SHIP.csv.ok", False), ("SHIP.okay", True)])
def test_temporary_names_and_markers_are_ignored(name, taken):
    assert ignored(name, ("*.tmp", "*.part", ".*"), marker="{name}.ok") is not taken


@pytest.mark.parametrize("name", [
    "x.csv.filepart", "~$shipped.xlsx", "x.csv.crdownload", ".x.csv.swp", "x.csv.swp", "Thumbs.db", "THUMBS.DB",
    "desktop.ini", "Desktop.ini", ".DS_Store", "x.CSV.TMP", "x.csv.PART"])
def test_common_temporary_and_junk_names_are_never_taken_by_default(name):
    from bridge.formats.inbound import DEFAULT_IGNORE

    assert ignored(name, DEFAULT_IGNORE)


def test_the_config_default_ignore_list_is_the_pipelines():
    from bridge.config import ShipmentSettings
    from bridge.formats.inbound import DEFAULT_IGNORE

    assert ShipmentSettings().ignore == DEFAULT_IGNORE
    assert not ignored("VERSAND_20261120.csv", DEFAULT_IGNORE) and not ignored("shipped.xlsx", DEFAULT_IGNORE)


def test_a_marker_names_the_file_it_completes():
    assert marker_name("SHIP_1.csv", "{name}.ok") == "SHIP_1.csv.ok"
    assert marker_name("SHIP_1.csv", "{stem}.done") == "SHIP_1.done"


@pytest.mark.parametrize("name, safe", [
    ("SHIP_20261120.csv", "SHIP_20261120.csv"),
    ("../../etc/passwd", "____etc_passwd"),
    ("a..b.csv", "a_b.csv"),
    ("Versand 20.11.csv", "Versand 20.11.csv"),
    ("ship\x01\nnew.csv", "ship_new.csv"),
    (".hidden", "hidden"),
    ("x" * 300 + ".csv", "x" * 116 + ".csv"),
])
def test_names_the_bridge_makes_from_an_inbound_name_are_always_plain(name, safe):
    assert safe_name(name) == safe


def test_a_file_is_settled_only_when_unchanged_across_two_polls_far_enough_apart():
    t0 = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    wait = timedelta(seconds=30)
    ok, seen = settled(None, 100, 1.0, t0, wait)
    assert not ok
    assert settled(seen, 100, 1.0, t0 + timedelta(seconds=10), wait)[0] is False
    assert settled(seen, 100, 1.0, t0 + wait, wait)[0] is True
    grown, again = settled(seen, 200, 2.0, t0 + wait, wait)
    assert not grown and again.since == t0 + wait


LAST_ROW_SHORT = ("the last row has {found} of {of} fields and no line break: the file may still be written (if "
                  "not, complete the row, end the file with a line break and drop it again)")


@pytest.mark.parametrize("spec, data, why", [
    (CSV, b"", "the file is empty"),
    (CSV, b"Order;Qty\n111-1;2", None),  # saved without a final line break: its last row is whole
    (CSV, b"Order;Qty\n111-1", LAST_ROW_SHORT.format(found=1, of=2)),
    (CSV, b'Order;Qty\n111-1;"2', "the last row has an open quote and no line break (the file may still be written)"),
    (CSV, b"Order;Qty\r\n111-1;2\r\n", None),
    (TableSpec("csv", (), encoding="utf-16", delimiter=";"), "Order;Qty\r\n1;2\r\n".encode("utf-16"), None),
    (TableSpec("csv", (), encoding="utf-16", delimiter=";"), "Order;Qty\r\n1;2".encode("utf-16"), None),
    (TableSpec("csv", (), encoding="utf-16", delimiter=";"), codecs.BOM_UTF16_BE + "Order;Qty\r\n1".encode("utf-16-be"),
     LAST_ROW_SHORT.format(found=1, of=2)),
    (TableSpec("xlsx", ()), workbook(["Order"]), None),
    (TableSpec("xlsx", ()), workbook(["Order"])[:-200],
     "not a complete XLSX workbook (its zip directory is missing)"),
    (XML, NESTED, None),
    (XML, NESTED[:-20], "the XML document ends before its last element is closed "
                        "(expected '>', line 13, column 12)"),
])
def test_a_file_is_complete_only_when_its_format_says_it_ended(spec, data, why):
    assert incomplete_reason(io.BytesIO(data), spec) == why


def test_result_files_open_in_excel_with_their_accents():
    data = result_file(("row", "result"), [("2", "abgelehnt: Menge größer")], delimiter=";")
    assert data == codecs.BOM_UTF8 + "row;result\r\n2;abgelehnt: Menge größer\r\n".encode()


# --- hostile workbooks: measured before openpyxl opens them -------------------------------------

def repack(data: bytes, **parts: bytes) -> bytes:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        content = {info.filename: archive.read(info) for info in archive.infolist()}
    content.update(parts)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in content.items():
            archive.writestr(name, value)
    return out.getvalue()


def shared_strings(count: int) -> bytes:
    return (b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            + b"".join(b"<si><t>%d</t></si>" % n for n in range(count)) + b"</sst>")


@pytest.mark.parametrize("limit, value, parts, why", [
    ("MAX_PARTS", 3, {}, "the workbook has 9 parts, more than the 3 a file may have"),
    ("MAX_UNPACKED", 4096, {}, "the workbook unpacks to 16.2 KB, more than the 4.0 KB a file may have: export it as CSV"),
    ("MAX_XML_PART", 1024, {}, "the workbook's part 'xl/theme/theme1.xml' unpacks to 9.9 KB, more than the 1.0 KB such a "
                               "part may have"),
    ("MAX_SHARED_STRINGS", 999, {"xl/sharedStrings.xml": shared_strings(1000)},
     "the workbook has more than 999 different texts (shared strings), more than a file may have: export it as CSV"),
    ("MAX_RATIO", 250, {"xl/sharedStrings.xml": b"<sst>" + b"<si><t>a</t></si>" * 70_000 + b"</sst>"},
     "the workbook's part 'xl/sharedStrings.xml' unpacks to 1.1 MB, more than 250 times its packed size: refused as "
     "a zip bomb"),
    ("MAX_RATIO", 250, {"xl/workbook.xml": b'<?xml version="1.0"?>\n<!DOCTYPE workbook [<!ENTITY x "y">]><workbook/>'},
     "the workbook's part 'xl/workbook.xml' has a DOCTYPE; files with DTDs or entities are refused (no entity is "
     "ever expanded or fetched)"),
])
def test_a_workbook_past_a_limit_is_refused_before_openpyxl_opens_it(monkeypatch, limit, value, parts, why):
    import bridge.formats.readers as readers

    monkeypatch.setattr(readers, limit, value)
    data = repack(workbook(["Order"], ["111-1"]), **parts)
    with pytest.raises(BadFile) as refused:
        rows(data, TableSpec("xlsx", ("Order",)))
    assert str(refused.value) == why
    with pytest.raises(BadFile) as at_once:  # answered at once, not left "incomplete"
        incomplete_reason(io.BytesIO(data), TableSpec("xlsx", ("Order",)))
    assert str(at_once.value) == why


def test_cells_far_to_the_right_and_rows_far_below_are_not_built():
    book = Workbook()
    book.active.append(["Order", "Qty"])
    book.active.append(["111-1", 2])
    book.active.cell(row=2, column=16384, value="x")  # column XFD
    book.active.cell(row=1_048_576, column=1, value="111-9")  # Excel's last row
    out = io.BytesIO()
    book.save(out)
    assert rows(out.getvalue(), TableSpec("xlsx", ("Order", "Qty"))) == [
        (2, {"Order": "111-1", "Qty": "2"}, ""), (1_048_576, {"Order": "111-9", "Qty": ""}, "")]


def test_a_headerless_file_never_echoes_its_first_row():
    data = b"302-0000003-0000003;Jennifer Alvarez;1457 Maple Grove Rd;Columbus\r\n"
    with pytest.raises(BadFile) as refused:
        rows(data)
    assert str(refused.value) == ("row 1 has 4 fields and none is one of the columns 'Order', 'Qty': is the header "
                                  "row missing, or is this another layout's file?")


@pytest.mark.parametrize("text, shown_as", [
    ("302-3", "'302-3'"), ("KAN-GLAS-1L", "'KAN-GLAS-1L'"), ("20.11.2026 16:45", "'20.11.2026 16:45'"),
    ("1,5", "'1,5'"), ("Jennifer Alvarez", "a value of 16 characters"), ("a@b.example", "a value of 11 characters"),
    ("²", "a value of 1 character"), ("9" * 41, "a value of 41 characters"),
])
def test_a_cell_is_quoted_in_a_message_only_when_it_looks_like_a_code_or_a_number(text, shown_as):
    from bridge.formats.readers import cell_shown as shown

    assert shown(text) == shown_as


@pytest.mark.parametrize("spec, data, kind", [
    (CSV, workbook(["Order"]), "the file is a zip file (an XLSX workbook?) but the mapping reads CSV (UTF-8)"),
    (CSV, b'<?xml version="1.0"?>\n<Shipments/>\n', "the file is XML but the mapping reads CSV (UTF-8)"),
    (CSV, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500),
     "the file is an old Excel workbook (.xls: save it as CSV) but the mapping reads CSV (UTF-8)"),
    (TableSpec("xlsx", ("Order",)), b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500),
     "the file is an old Excel workbook (.xls: save it as .xlsx) but the mapping reads an XLSX workbook"),
    (CSV, b"%PDF-1.7\n", "the file is a PDF but the mapping reads CSV (UTF-8)"),
    (CSV, "Order;Qty\r\n".encode("utf-16-le"),
     "the file is text with NUL bytes (UTF-16 without a byte order mark?) but the mapping reads CSV (UTF-8)"),
    (TableSpec("xlsx", ("Order",)), b"Order;Qty\r\n111-1;2\r\n",
     "the file is text (a workbook is a zip file) but the mapping reads an XLSX workbook"),
    (XML, b"Order;Qty\r\n111-1;2\r\n",
     "the file is not XML (it starts with text and not with '<': CSV?) but the mapping reads XML"),
    (XML, workbook(["Order"]), "the file is a zip file (an XLSX workbook?) but the mapping reads XML"),
])
def test_a_file_of_another_kind_than_the_mapping_reads_is_refused_at_once(spec, data, kind):
    with pytest.raises(BadFile) as refused:
        incomplete_reason(io.BytesIO(data), spec)
    assert str(refused.value) == kind + ": is it in the wrong folder or saved in the wrong format?"


def test_a_layout_twenty_levels_deep_is_read_all_the_same():
    names = [f"L{n}" for n in range(23)]
    spec = TableSpec("xml", ("../" * 20 + "@a", "V"), record="/".join(names))
    opening = "".join(f"<{name} a='x'>" if name == "L2" else f"<{name}>" for name in names)
    closing = "".join(f"</{name}>" for name in reversed(names))
    data = f"<?xml version='1.0'?>\n{opening}<V> 7 </V>{closing}\n".encode()
    assert rows(data, spec) == [(2, {"../" * 20 + "@a": "x", "V": "7"}, "")]


def test_an_xml_namespace_prefix_never_declared_is_bad_not_still_being_written():
    spec = TableSpec("xml", ("SKU",), record="Inventory/Item")
    with pytest.raises(BadFile, match=r"^not well-formed XML: Namespace prefix a on SKU is not defined"):
        rows(b"<Inventory><Item><a:SKU>5</a:SKU></Item></Inventory>", spec)
