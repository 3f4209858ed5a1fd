"""Bad confirmation files: every case answered with the exact line a warehouse clerk reads in
its result file, the file moved to archive/ or error/, and the service still running.

Each case runs the real path: the file is dropped in the warehouse's SFTP folder on OpenSSH,
taken by the bridge, checked against the orders it delivered, confirmed on the SP-API sandbox
where it can be. The orders are delivered once per module and the state copied per case.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sp_api.auth.access_token_client as token_cache
from openpyxl import Workbook

from bridge.sandbox.spapi import SpApiSandbox, load_seed
from harness import MAPPINGS, SEED, load, write_mapping
from shipping import SHIP_TIME, STABLE, Shipper, files, make_config

HEADER = "Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum"
GOOD = "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45"
CONFIRMED = "2;accepted;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;confirmed on Amazon as package 1"
LIMIT = 10  # shipments.incomplete_limit_minutes in these tests


def csv(*rows: str, header: str = HEADER, end: str = "\r\n", encoding: str = "cp1252") -> bytes:
    return "".join(line + end for line in (header, *rows)).encode(encoding)


def row(order="302-0000003-0000003", sku="KAN-GLAS-1L", qty="1", carrier="DHL_PAKET",
        tracking="00340434161094042557", date="20.11.2026 16:45") -> str:
    return ";".join((order, sku, qty, carrier, tracking, date))


def rejected(message: str, order="302-0000003-0000003", sku="KAN-GLAS-1L", qty="1",
             tracking="00340434161094042557", number=2) -> str:
    return ";".join((str(number), "rejected", order, sku, qty, tracking, message))


def globex_rejected(message: str) -> str:
    return f"6,rejected,111-0000001-0000001,50000001000001,2,1Z999AA10123456784,{message}"


def whole_file(message: str, delimiter: str = ";") -> str:
    return delimiter.join(("", "rejected", "", "", "", "", message))


def workbook(*rows, truncate: bool = False) -> bytes:
    book = Workbook()
    book.active.title = "Shipped"
    book.active.append(["Order ID", "Order Item ID", "Qty Shipped", "Carrier", "Service", "Tracking #", "Ship Date"])
    for line in rows:
        book.active.append(list(line))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()[:-300] if truncate else out.getvalue()


XLSX_ROW = ["111-0000001-0000001", "50000001000001", 2, "UPS", "", "1Z999AA10123456784", datetime(2026, 11, 20)]
XLSX_CONFIRMED = ("2,accepted,111-0000001-0000001,50000001000001,2,1Z999AA10123456784,confirmed on Amazon as "
                  "package 1")


def repacked(data: bytes, **parts: bytes) -> bytes:
    """The workbook with parts replaced or added (keyword: the part's path, '/' as '__', '.' as
    '_' before the extension)."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        content = {info.filename: archive.read(info) for info in archive.infolist()}
    content.update({name.replace("__", "/").replace("_xml", ".xml"): value for name, value in parts.items()})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in content.items():
            archive.writestr(name, value)
    return out.getvalue()


def sheet_with_doctype() -> bytes:
    import zipfile

    data = workbook(XLSX_ROW)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheet = archive.read("xl/worksheets/sheet1.xml").decode()
    sheet = sheet.replace("<worksheet", '<!DOCTYPE worksheet [<!ENTITY x SYSTEM "file:///etc/passwd">]><worksheet', 1)
    return repacked(data, xl__worksheets__sheet1_xml=sheet.encode())


def shared_strings_bomb() -> bytes:
    """2 MiB of shared strings that pack into a few KiB (the attack's file was 1.2 MB for 486 MB)."""
    strings = b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">' + \
        b"<si><t>a</t></si>" * (2 * 1024 * 1024 // 17) + b"</sst>"
    return repacked(workbook(XLSX_ROW), xl__sharedStrings_xml=strings)


def far_right_cells() -> bytes:
    """Every row has a cell in the sheet's last column (XFD): read only as far as the mapping's."""
    book = Workbook()
    book.active.title = "Shipped"
    book.active.append(["Order ID", "Order Item ID", "Qty Shipped", "Carrier", "Service", "Tracking #", "Ship Date"])
    book.active.append(XLSX_ROW)
    for number in (1, 2, 3, 500):
        book.active.cell(row=number, column=16384, value="x")
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


GLOBEX = """<?xml version="1.0" encoding="UTF-8"?>
{doctype}<ShipConfirmations>
  <Shipment orderId="111-0000001-0000001">
    <Package trackingNumber="1Z999AA10123456784">
      <Carrier>{carrier}</Carrier><Service>UPS Ground</Service><ShippedAt>2026-11-20T16:40:00Z</ShippedAt>
      <Item><OrderItemId>50000001000001</OrderItemId><Quantity>2</Quantity></Item>
    </Package>
  </Shipment>
</ShipConfirmations>
"""
BOMB = """<!DOCTYPE ShipConfirmations [<!ENTITY a "aaaaaaaaaaaaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
"""
EXTERNAL = """<!DOCTYPE ShipConfirmations [<!ENTITY x SYSTEM "file:///etc/passwd">]>
"""
DOCTYPE_REFUSED = ("the XML document has a DOCTYPE; files with DTDs or entities are refused (no "
                   "entity is ever expanded or fetched)")


@dataclass(frozen=True)
class Case:
    id: str
    data: bytes
    lines: list[str]  # the result file's lines after its header
    folder: str = "error"  # where the file ends: archive or error
    name: str = "VERSAND.csv"
    mapping: str = "acme-csv"
    late: bool = False  # answered only once incomplete_limit_minutes have passed

    @property
    def result(self) -> str:
        from bridge.formats.inbound import result_name, safe_name
        return result_name(safe_name(self.name))


CASES = [
    # --- encodings and line ends
    Case("utf-8 with a byte order mark", codecs.BOM_UTF8 + csv(GOOD, encoding="utf-8"), [CONFIRMED],
         "archive", mapping="acme-utf8"),
    Case("Excel's CSV UTF-8 (a byte order mark) in a cp1252 folder: read as UTF-8",
         codecs.BOM_UTF8 + csv(GOOD + ";Müller", header=HEADER + ";Empfänger", encoding="utf-8"), [CONFIRMED],
         "archive"),
    Case("cp1252 with umlauts", csv(GOOD + ";Müller", header=HEADER + ";Empfänger"), [CONFIRMED], "archive"),
    Case("a byte cp1252 does not have", csv(row(tracking="0034Q")).replace(b"0034Q", b"0034\x81"),
         [rejected("byte 0x81 is not Windows-1252 text: check the file's encoding", tracking="0034\ufffd")]),
    Case("utf-16 as Excel saves Unicode text", csv(GOOD.replace(";", "\t"), header=HEADER.replace(";", "\t"),
                                                   encoding="utf-16"), [CONFIRMED], "archive", mapping="acme-utf16"),
    Case("utf-16, mapping says cp1252", csv(GOOD, encoding="utf-16"),
         [whole_file("the file is UTF-16 text (it starts with a byte order mark), the mapping says Windows-1252")]),
    Case("LF line ends", csv(GOOD, end="\n"), [CONFIRMED], "archive"),
    # --- shape
    Case("a semicolon inside a quoted value", csv(GOOD + ';"Tür; Nachbar"', header=HEADER + ";Hinweis"),
         [CONFIRMED], "archive"),
    Case("a semicolon inside a value, unquoted", csv(row(carrier="DHL;PAKET")),
         [rejected('"7 fields, the header has 6 (a \';\' inside a value must be quoted)"', tracking="PAKET")]),
    Case("a row with too many fields", csv(GOOD + ";x"),
         [rejected('"7 fields, the header has 6 (a \';\' inside a value must be quoted)"')]),
    Case("a row with too few fields", csv(";".join(GOOD.split(";")[:5])),
         [rejected("5 fields, the header has 6")]),
    Case("a header without a needed column", csv(GOOD, header=HEADER.replace("Menge", "Anzahl")),
         [whole_file("row 1: the header has no column 'Menge' (found: 'Auftragsnummer', 'Artikelnummer', "
                     "'Anzahl', 'Versandart', 'Sendungsnummer', 'Versanddatum')")]),
    Case("an empty file", b"", [whole_file(f"the file stayed incomplete for {LIMIT} minutes: the file is empty")],
         late=True),
    Case("a header only", csv(), [whole_file("the file has no rows (only a header, or nothing)")]),
    Case("a last line without line break (saved so by an editor)", csv(GOOD)[:-2], [CONFIRMED], "archive"),
    Case("a last row cut short, without line break", csv(GOOD)[:-24],
         [whole_file(f"the file stayed incomplete for {LIMIT} minutes: the last row has 5 of 6 fields and no line "
                     "break: the file may still be written (if not, complete the row, end the file with a line break "
                     "and drop it again)")], late=True),
    Case("an XLSX workbook in a CSV folder", workbook(XLSX_ROW),
         [whole_file("the file is a zip file (an XLSX workbook?) but the mapping reads CSV (Windows-1252): is it in the "
                     "wrong folder or saved in the wrong format?")], name="shipped.xlsx"),
    Case("a CSV file in an XLSX folder", csv(GOOD),
         [whole_file("the file is text (a workbook is a zip file) but the mapping reads an XLSX "
                     "workbook: is it in the wrong folder or saved in the wrong format?", ",")],
         mapping="initech-xlsx"),
    Case("an XML file in a CSV folder", GLOBEX.format(doctype="", carrier="UPS").encode(),
         [whole_file("the file is XML but the mapping reads CSV (Windows-1252): is it in the wrong folder or saved in "
                     "the wrong format?")], name="c.xml"),
    Case("a truncated XLSX", workbook(["111-0000001-0000001", "50000001000001", 2, "UPS", "", "1Z999AA10123456784",
                                       datetime(2026, 11, 20)], truncate=True),
         [whole_file(f"the file stayed incomplete for {LIMIT} minutes: not a complete XLSX workbook (its zip "
                     "directory is missing)", ",")], name="shipped.xlsx", mapping="initech-xlsx", late=True),
    Case("an XLSX tracking number Excel shortened", workbook(
        ["111-0000001-0000001", "50000001000001", 2, "UPS", "", 9.40551189922319e21, datetime(2026, 11, 20)]),
         ["2,rejected,111-0000001-0000001,50000001000001,2,9.40551189922319E+21,Tracking #: '9.40551189922319E+21' "
          "is a number Excel shortened and its digits are lost: format the column as text and export the file again"],
         name="shipped.xlsx", mapping="initech-xlsx"),
    Case("an XLSX sheet with a DOCTYPE", sheet_with_doctype(),
         [whole_file("the workbook's part 'xl/worksheets/sheet1.xml' has a DOCTYPE; files with DTDs or entities "
                     "are refused (no entity is ever expanded or fetched)", ",")],
         name="shipped.xlsx", mapping="initech-xlsx"),
    Case("an XLSX whose shared strings unpack like a zip bomb", shared_strings_bomb(),
         [whole_file("\"the workbook's part 'xl/sharedStrings.xml' unpacks to 2.0 MB, more than 250 times its "
                     "packed size: refused as a zip bomb\"", ",")],
         name="shipped.xlsx", mapping="initech-xlsx"),
    Case("an XLSX quantity that is a formula without a saved value", workbook(XLSX_ROW[:2] + ["=1+1"] + XLSX_ROW[3:]),
         ["2,rejected,111-0000001-0000001,50000001000001,,1Z999AA10123456784,\"'Qty Shipped': a formula whose value"
          " was never saved (the program that wrote the file does not calculate): open the file in Excel and save it"
          " again, or have the values written instead\""], name="shipped.xlsx", mapping="initech-xlsx"),
    Case("an XLSX with cells in its last column (XFD)", far_right_cells(), [XLSX_CONFIRMED], "archive",
         name="shipped.xlsx", mapping="initech-xlsx"),
    Case("XML with an external entity", GLOBEX.format(doctype=EXTERNAL, carrier="&x;").encode(),
         [whole_file(DOCTYPE_REFUSED, ",")], name="c.xml", mapping="globex-xml"),
    Case("XML with an entity-expansion bomb", GLOBEX.format(doctype=BOMB, carrier="&d;").encode(),
         [whole_file(DOCTYPE_REFUSED, ",")], name="c.xml", mapping="globex-xml"),
    Case("a carrier name with a line separator", GLOBEX.format(doctype="", carrier="Post<![CDATA[\u2028]]>kutsche")
         .encode(), [globex_rejected("../Carrier: has a control character or line break (U+2028) at position 5; "
                                     "Amazon gets one line of text")], name="c.xml", mapping="globex-xml"),
    Case("a carrier name of 60 characters", GLOBEX.format(doctype="", carrier="P" * 60).encode(),
         [globex_rejected('"../Carrier: 60 characters, more than the 50 Amazon takes"')], name="c.xml",
         mapping="globex-xml"),
    Case("a carrier name that is a formula", GLOBEX.format(doctype="", carrier="=HYPERLINK(&quot;x&quot;)").encode(),
         [globex_rejected("\"../Carrier: starts with '=' like a spreadsheet formula, not a name\"")], name="c.xml",
         mapping="globex-xml"),
    Case("a shipping method with a control character", GLOBEX.format(doctype="", carrier="UPS").replace(
        "UPS Ground", "UPS\x85Ground").encode(), [globex_rejected(
            "../Service: has a control character or line break (U+0085) at position 4; Amazon gets one line of text")],
         name="c.xml", mapping="globex-xml"),
    Case("XML that is not well-formed", GLOBEX.format(doctype="", carrier="UPS</Service>").encode(),
         [whole_file('"not well-formed XML: Opening and ending tag mismatch: Carrier line 5 and Service, '
                     'line 5, column 29"', ",")], name="c.xml", mapping="globex-xml"),
    # --- rows checked against the orders
    Case("an unknown order", csv(row(order="111-9999999-9999999")),
         [rejected("order 111-9999999-9999999 was not sent to wh by the bridge", order="111-9999999-9999999")]),
    Case("not an order id", csv(row(order="302-3")),
         [rejected("Auftragsnummer: '302-3' is not an Amazon order id (like 123-1234567-1234567)", order="302-3")]),
    Case("an order id in full-width digits", workbook(["\uff11\uff11\uff11-0000001-0000001"] + XLSX_ROW[1:]),
         ["2,rejected,\uff11\uff11\uff11-0000001-0000001,50000001000001,2,1Z999AA10123456784,Order ID: a value of 19"
          " characters is not an Amazon order id (like 123-1234567-1234567)"], name="shipped.xlsx", mapping="initech-xlsx"),
    Case("an item not in the order", csv(row(sku="SOCKE-1")),
         [rejected("SKU SOCKE-1 is not in order 302-0000003-0000003", sku="SOCKE-1")]),
    Case("a quantity over what is unshipped", csv(row(qty="2")),
         [rejected("quantity 2 of SKU KAN-GLAS-1L is more than the 1 still unshipped in order "
                   "302-0000003-0000003", qty="2")]),
    Case("a quantity that is not a number", csv(row(qty="eins")),
         [rejected("Menge: 'eins' is not a whole number of units", qty="eins")]),
    Case("a quantity in superscript digits, then a good row",
         csv(row(order="111-0000002-0000002", sku="MUG-CER-350-BLU", qty="²", tracking="00340434161094042564"), GOOD),
         [rejected("Menge: a value of 1 character is not a whole number of units", order="111-0000002-0000002",
                   sku="MUG-CER-350-BLU", qty="²", tracking="00340434161094042564"),
          "3;accepted;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;confirmed on Amazon as package 1"]),
    Case("a quantity of 5,000 digits", csv(row(qty="9" * 5000)),
         [rejected("Menge: a value of 5,000 characters is more units than any parcel holds", qty="9" * 5000)]),
    Case("a ship date in the year 1 (before UTC's year 1 in Berlin)", csv(row(date="01.01.0001 00:30")),
         [rejected("Versanddatum: '01.01.0001 00:30' is not a ship date the bridge can use (year 1)")]),
    Case("an unknown carrier", csv(row(carrier="POSTKUTSCHE")),
         [rejected("Versandart: 'POSTKUTSCHE' is neither in the mapping's carrier table nor one of Amazon's "
                   "carrier codes")]),
    Case("a missing carrier", csv(row(carrier="")), [rejected("Versandart: empty (Amazon needs the carrier)")]),
    Case("a missing tracking number", csv(row(tracking="")), [rejected("Sendungsnummer: empty", tracking="")]),
    Case("a tracking number Excel rounded without an exponent", csv(row(tracking="9405511899223190000000")),
         [rejected("Sendungsnummer: '9405511899223190000000' ends in zeros where Excel rounds a number of more than "
                   "15 digits: its last digits are probably lost: format the column as text and export the file "
                   "again", tracking="9405511899223190000000")]),
    Case("a 17-digit tracking number Excel rounded (its last two digits made 00)", csv(row(tracking="12345678901234500")),
         [rejected("Sendungsnummer: '12345678901234500' ends in zeros where Excel rounds a number of more than "
                   "15 digits: its last digits are probably lost: format the column as text and export the file "
                   "again", tracking="12345678901234500")]),
    Case("a DHL tracking number ending in 000: its leading zeros say it was never a number in Excel",
         csv(row(tracking="00340434161094051000")),
         [CONFIRMED.replace("00340434161094042557", "00340434161094051000")], folder="archive"),
    Case("a formula in a cell is echoed back as text", csv(row(order="=1+2")),
         [rejected("Auftragsnummer: a value of 4 characters is not an Amazon order id (like 123-1234567-1234567)",
                   order="'=1+2")]),
    Case("a day the month does not have", csv(row(date="31.11.2026 10:00")),
         [rejected("Versanddatum: '31.11.2026 10:00' has the shape DD.MM.YYYY hh:mm but is not a real date: the month"
                   " has no such day")]),
    Case("a date of another shape", csv(row(date="2026-11-20 10:00")),
         [rejected("Versanddatum: '2026-11-20 10:00' is not a date like DD.MM.YYYY hh:mm")]),
    Case("a date in the future", csv(row(date="21.11.2026 10:00")),
         [rejected("ship date 2026-11-21T09:00:00Z is in the future: 15 hours ahead of the bridge's clock "
                   "(2026-11-20T18:00:00Z), more than the 15 minutes a clock may be ahead")]),
    Case("a date a few minutes ahead (the WMS's clock)", csv(row(date="20.11.2026 19:10")), [CONFIRMED], "archive"),
    Case("a date-only ship date tomorrow", workbook(XLSX_ROW[:6] + [datetime(2026, 11, 21)]),
         ["2,rejected,111-0000001-0000001,50000001000001,2,1Z999AA10123456784,ship date 2026-11-21 is in the future "
          "(the bridge's clock says 2026-11-20 in America/Chicago)"], name="shipped.xlsx", mapping="initech-xlsx"),
    Case("a date before the order", csv(row(date="19.11.2026 12:00")),
         [rejected("ship date 2026-11-19T11:00:00Z is before the order was placed (2026-11-19T18:03:21Z)")]),
    Case("a bad row rejects its package, not the file", csv(
        row(order="111-0000002-0000002", sku="MUG-CER-350-BLU", tracking="00340434161094042564"),
        row(order="111-0000002-0000002", sku="TEA-INF-SS-01", qty="0", tracking="00340434161094042564"), GOOD),
         ["2;rejected;111-0000002-0000002;MUG-CER-350-BLU;1;00340434161094042564;row 3 of the same package "
          "(order 111-0000002-0000002, tracking 00340434161094042564) rejected",
          "3;rejected;111-0000002-0000002;TEA-INF-SS-01;0;00340434161094042564;Menge: '0' must be at least 1",
          "4;accepted;302-0000003-0000003;KAN-GLAS-1L;1;00340434161094042557;confirmed on Amazon as package 1"]),
    # --- names
    Case("a name with '..'", csv(GOOD), [CONFIRMED], "archive", name="a..b.csv"),
    Case("a name with odd characters", csv(GOOD), [CONFIRMED], "archive", name="Versand (Kopie) \x07ü.csv"),
    Case("a name with a space before its extension", csv(GOOD), [CONFIRMED], "archive", name="Versand .csv"),
]


@pytest.fixture(scope="module")
def delivered(tmp_path_factory, sshd):
    """The seed's orders delivered to warehouse "wh" once; each case copies this state."""
    folder = tmp_path_factory.mktemp("delivered")
    token_cache.cache.clear()
    with SpApiSandbox(load_seed(SEED)) as sandbox:
        root = Path(sshd.root) / folder.name
        root.mkdir(parents=True, exist_ok=True)
        shipper = Shipper(load(make_config(folder, sshd, root, sandbox, "acme-csv")))
        shipper.deliver_orders()
        shipper.ledger.close()
    token_cache.cache.clear()
    for name, replacement in (("acme-utf8", 'encoding = "utf-8"\ndelimiter = ";"'),
                              ("acme-utf16", 'encoding = "utf-16"\ndelimiter = "\\t"')):
        text = (MAPPINGS / "acme-csv.toml").read_text("utf-8").split("[shipments]")
        shipments = text[1].replace('encoding = "cp1252"\ndelimiter = ";"', replacement)
        write_mapping(folder / f"{name}.toml", text[0] + "[shipments]" + shipments)
    return folder


def mapping_path(delivered: Path, name: str) -> str:
    return str(delivered / name) if name.startswith("acme-utf") else name


@pytest.fixture
def shipper(delivered, tmp_path, sshd, sftp_root, sandbox):
    def make(mapping: str, shipments: str = "") -> Shipper:
        shutil.copytree(delivered / "state", tmp_path / "state")
        config = make_config(tmp_path, sshd, sftp_root, sandbox, mapping_path(delivered, mapping),
                             shipments=f"incomplete_limit_minutes = {LIMIT}\n{shipments}")
        return Shipper(load(config))
    return make


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_bad_input_gets_a_precise_result_line(shipper, case):
    bridge = shipper(case.mapping)
    (bridge.remote / case.name).write_bytes(case.data)

    report = bridge.ship()
    if case.late:
        assert files(bridge.remote / "results") == {}  # incomplete: left alone until the limit
        report = bridge.ship(SHIP_TIME + timedelta(minutes=LIMIT + 1))

    assert not [e for e in report.all_errors if "unexpected" in e]
    result = (bridge.remote / "results" / case.result).read_text("utf-8-sig").splitlines()
    assert result[1:] == case.lines
    assert [p.parent.name for p in bridge.remote.rglob("*") if p.is_file() and p.parent.name != "results"] == [case.folder]


def test_all_bad_files_at_once_are_each_answered_and_the_good_one_still_goes_through(shipper, sandbox):
    bridge = shipper("acme-csv")
    acme = [case for case in CASES if case.mapping == "acme-csv" and not case.late]
    for number, case in enumerate(acme):
        (bridge.remote / f"{number:02d}_{case.name}").write_bytes(case.data)
    (bridge.remote / "zz_good.csv").write_bytes(csv(
        "111-0000001-0000001;MUG-CER-350-BLU;2;DHL_EXPRESS;00340434161094042999;20.11.2026 17:00"))

    report = bridge.ship()

    assert report.inbound.answered == len(acme) + 1
    assert not [e for e in report.all_errors if "unexpected" in e]
    assert any(c["orderId"] == "111-0000001-0000001" for c in sandbox.confirmations)
    assert files(bridge.remote) == files(bridge.remote / "processing") == {}


# --- Amazon's answers through the order fulfillment feed (shipments.send = "feed") --------------

def fatal_document(feed_id, document, apply, marketplaces):
    from bridge.sandbox import spapi_feeds
    return spapi_feeds._report(feed_id, "A3TESTSELLER", 0, [(0, "5000", "The XML you submitted is ill-formed at "
                                                                "the Amazon Envelope XML level", "")], fatal=True)


def no_report(sandbox):
    plain = sandbox._feed_doc
    sandbox._feed_doc = lambda feed: {k: v for k, v in plain(feed).items() if k != "resultFeedDocumentId"}


def cancel_order(sandbox, order_id="302-0000003-0000003"):
    order = sandbox.order(order_id)
    sandbox.update_order(order_id, fulfillment={**order["fulfillment"], "fulfillmentStatus": "CANCELLED"})


def refused(why: str, **row) -> str:
    return rejected(f"Amazon refused package 1 (feed 50000000001): {why}", **row)


@dataclass(frozen=True)
class FeedCase:
    id: str
    rows: tuple[str, ...]
    lines: list[str]
    before: object = None  # (sandbox, monkeypatch) before the file is taken
    between: object = None  # (sandbox) after the feed is submitted, before Amazon processes it


FEED_CASES = [
    FeedCase("a quantity Amazon no longer has unshipped (shipped by hand before)",
             (row(order="111-0000005-0000005", sku="MUG-CER-350-BLU", tracking="00340434161094042601"),),
             [refused("18103: quantity for orderItemId 50000005000001 exceeds the unshipped quantity",
                      order="111-0000005-0000005", sku="MUG-CER-350-BLU", tracking="00340434161094042601")]),
    FeedCase("an order Amazon cancelled after the bridge read the file", (GOOD,),
             [refused("18100: Order 302-0000003-0000003 is cancelled")], before=lambda sandbox, mp: cancel_order(sandbox)),
    FeedCase("a document Amazon cannot read at all (FATAL)", (GOOD,),
             [refused("5000: The XML you submitted is ill-formed at the Amazon Envelope XML level")],
             before=lambda sandbox, mp: mp.setattr("bridge.sandbox.spapi_feeds._order_fulfillment", fatal_document)),
    FeedCase("a feed cancelled on Amazon before it was processed", (GOOD,),
             [refused("the feed was cancelled on Amazon before it was processed, so nothing was confirmed: send the "
                      "rows again")], between=lambda sandbox: sandbox.cancel_feed("50000000001")),
    FeedCase("a feed Amazon finished without a processing report", (GOOD,),
             [refused("Amazon finished the feed without a processing report, so which parcels it took cannot be "
                      "told: check the order in Seller Central")], before=lambda sandbox, mp: no_report(sandbox)),
]


@pytest.mark.parametrize("case", FEED_CASES, ids=[case.id for case in FEED_CASES])
def test_each_refusal_in_a_feed_report_gets_a_precise_result_line(shipper, sandbox, monkeypatch, case):
    bridge = shipper("acme-csv", 'send = "feed"')
    if case.before:
        case.before(sandbox, monkeypatch)
    if case.between:
        sandbox.feed_polls_until_done = 2
    (bridge.remote / "VERSAND.csv").write_bytes(csv(*case.rows))

    report = bridge.ship()
    if case.between:
        case.between(sandbox)
        report = bridge.flow.run(SHIP_TIME + timedelta(minutes=1))

    assert not [e for e in report.all_errors if "unexpected" in e]
    result = (bridge.remote / "results" / "VERSAND.result.csv").read_text("utf-8-sig").splitlines()
    assert result[1:] == case.lines
    assert list(files(bridge.remote / "error")) == ["VERSAND.csv"]
    assert bridge.ledger.package(1).status == "rejected"


# --- what reading a file may meet: a bug, a read that kills the process, a folder that fails -----

class Killed(BaseException):
    """The process dies while reading (the kernel's OOM killer, say): nothing may catch it."""


def boom(stream) -> None:
    if b"BUG" in stream.read():
        raise ZeroDivisionError("a bug")
    stream.seek(0)


BOOM_LINE = boom.__code__.co_firstlineno + 2
OTHER_GOOD = "111-0000001-0000001;MUG-CER-350-BLU;2;DHL_EXPRESS;00340434161094042999;20.11.2026 17:00"
OTHER_CONFIRMED = ("2;accepted;111-0000001-0000001;MUG-CER-350-BLU;2;00340434161094042999;confirmed on Amazon "
                   "as package 1")


def test_a_bug_met_reading_one_file_answers_that_file_and_the_others_still_go(shipper, monkeypatch):
    from bridge.flows import shipments

    plain = shipments.read_rows
    monkeypatch.setattr(shipments, "read_rows", lambda stream, *args: boom(stream) or plain(stream, *args))
    bridge = shipper("acme-csv")
    (bridge.remote / "A_BUG.csv").write_bytes(csv(GOOD + ";BUG", header=HEADER + ";Hinweis"))
    bridge.local.mkdir(parents=True, exist_ok=True)
    (bridge.local / "B.csv").write_bytes(csv(OTHER_GOOD))

    report = bridge.ship()

    assert (bridge.remote / "results" / "A_BUG.result.csv").read_text("utf-8-sig").splitlines()[1:] == [
        whole_file(f"could not be read: unexpected ZeroDivisionError at test_bad_inputs_shipments.py:{BOOM_LINE} "
                   "(please report this as a bug)")]
    assert list(files(bridge.remote / "error")) == ["A_BUG.csv"]
    assert (bridge.local / "results" / "B.result.csv").read_text("utf-8-sig").splitlines()[1:] == [OTHER_CONFIRMED]
    assert report.inbound.unreadable == 1 and report.confirmed == 1


def test_a_folder_that_fails_unexpectedly_stops_only_itself(shipper, monkeypatch):
    from bridge.edges.sftp import SftpDrop

    def listdir(self, folder):
        raise RuntimeError("a bug in the SFTP edge")

    monkeypatch.setattr(SftpDrop, "listdir", listdir)
    bridge = shipper("acme-csv")
    bridge.local.mkdir(parents=True, exist_ok=True)
    (bridge.local / "B.csv").write_bytes(csv(OTHER_GOOD))

    report = bridge.ship()

    assert [e.split(": ", 1)[1] for e in report.all_errors] == [
        f"unexpected RuntimeError at test_bad_inputs_shipments.py:{listdir.__code__.co_firstlineno + 1}"]
    assert report.needs_a_person
    assert (bridge.local / "results" / "B.result.csv").read_text("utf-8-sig").splitlines()[1:] == [OTHER_CONFIRMED]


def test_a_file_whose_reading_killed_the_bridge_twice_is_answered_and_never_read_again(shipper, monkeypatch):
    from bridge.flows import shipments

    def killed(*args):
        raise Killed()

    monkeypatch.setattr(shipments, "read_rows", killed)
    bridge = shipper("acme-csv")
    (bridge.remote / "HUGE.csv").write_bytes(csv(GOOD))
    with pytest.raises(Killed):
        bridge.ship()
    bridge = bridge.restart()
    with pytest.raises(Killed):  # killed once: read once more (it may have been a coincidence)
        bridge.flow.run(SHIP_TIME + timedelta(minutes=1))

    bridge = bridge.restart()
    report = bridge.flow.run(SHIP_TIME + timedelta(minutes=2))  # killed twice: not read a third time

    assert (bridge.remote / "results" / "HUGE.result.csv").read_text("utf-8-sig").splitlines()[1:] == [
        whole_file("reading it stopped the bridge 2 times (killed while reading: the file may be too large or too "
                   "complex to read), so it is not read again: if the bridge was stopped for another reason (a "
                   "restart, a reboot), drop the same file again, otherwise split it and drop the parts")]
    assert list(files(bridge.remote / "error")) == ["HUGE.csv"]
    assert report.inbound.unreadable == 1 and not report.all_errors


def test_a_copy_taken_while_its_first_was_still_being_read_shares_its_fate(shipper, monkeypatch):
    """attack-7 F4: the copy is recorded as a repeat of a file whose reading then kills the
    bridge twice: it was never read either, so it is not 'already processed'."""
    from bridge.flows import shipments

    def killed(*args):
        raise Killed()

    monkeypatch.setattr(shipments, "read_rows", killed)
    bridge = shipper("acme-csv")
    bridge.local.mkdir(parents=True, exist_ok=True)
    (bridge.local / "A.csv").write_bytes(csv(GOOD))
    bridge.flow.run(SHIP_TIME - STABLE)
    (bridge.remote / "B.csv").write_bytes(csv(GOOD))  # the same file, dropped on SFTP too
    with pytest.raises(Killed):
        bridge.flow.run(SHIP_TIME)
    bridge = bridge.restart()
    with pytest.raises(Killed):
        bridge.flow.run(SHIP_TIME + timedelta(minutes=1))
    bridge = bridge.restart()
    for minutes in (2, 3):
        bridge.flow.run(SHIP_TIME + timedelta(minutes=minutes))

    assert (bridge.remote / "results" / "B.result.csv").read_text("utf-8-sig").splitlines()[1:] == [
        whole_file("the same content as A.csv (the local staff folder), which was not read: reading it stopped the "
                   "bridge 2 times (killed while reading: the file may be too large or too complex to read), so it "
                   "is not read again: if the bridge was stopped for another reason (a restart, a reboot), drop "
                   "the same file again, otherwise split it and drop the parts")]
    assert list(files(bridge.remote / "error")) == ["B.csv"] and list(files(bridge.local / "error")) == ["A.csv"]



# --- the local staff folder: what anyone with write access to it may plant ------------------------

def plant_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "credentials" / "BRIDGE_LWA_CLIENT_SECRET"
    secret.parent.mkdir()
    secret.write_text("Auftragsnummer;x\r\nSECRET-LWA-TOKEN-abc123;x\r\n")
    secret.chmod(0o600)
    return secret


def everything_under(*folders: Path) -> bytes:
    return b"".join(p.read_bytes() for folder in folders for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_link_in_the_local_folder_is_never_read_and_its_target_never_echoed(shipper, tmp_path, caplog):
    bridge = shipper("acme-csv")
    secret = plant_secret(tmp_path)
    bridge.local.mkdir(parents=True, exist_ok=True)
    (bridge.local / "steal.csv").symlink_to(secret)
    (bridge.local / "B.csv").write_bytes(csv(OTHER_GOOD))

    bridge.ship()
    bridge.ship(SHIP_TIME + timedelta(minutes=5))

    assert (bridge.local / "steal.csv").is_symlink()  # left alone: never taken, moved or read
    assert files(bridge.local / "results") == {"B.result.csv": (bridge.local / "results" / "B.result.csv").read_bytes()}
    assert b"SECRET-LWA-TOKEN" not in everything_under(bridge.local, bridge.settings.state_dir)
    said = [r.getMessage() for r in caplog.records if "steal.csv" in r.getMessage()]
    assert said == [f"not taken source=wh local:{bridge.local} name='steal.csv': not a regular file (a link, a FIFO "
                    "or a device); the bridge reads only regular files"]  # once, not every poll


def test_a_link_swapped_in_after_the_listing_is_answered_never_read(shipper, tmp_path, monkeypatch):
    from bridge.edges.folders import FolderDrop, RemoteFile

    bridge = shipper("acme-csv")
    secret = plant_secret(tmp_path)
    bridge.local.mkdir(parents=True, exist_ok=True)
    (bridge.local / "steal.csv").symlink_to(secret)
    listed = FolderDrop.listdir

    def racing_listdir(self, folder):  # the listing saw a regular file; a link is there by the claim
        found = listed(self, folder)
        return found + [RemoteFile("steal.csv", 40, 1.0)] if folder == "/" else found

    monkeypatch.setattr(FolderDrop, "listdir", racing_listdir)
    bridge.ship(local=True, remote=False)

    assert (bridge.local / "results" / "steal.result.csv").read_text("utf-8-sig").splitlines()[1:] == [whole_file(
        '"steal.csv is a symbolic link: the bridge reads only regular files (a link could make it read any file it '
        'can); copy the file itself into the folder"')]
    assert (bridge.local / "error" / "steal.csv").is_symlink()  # the link moved, as itself
    assert b"SECRET-LWA-TOKEN" not in everything_under(bridge.local, bridge.settings.state_dir)


def test_a_subfolder_replaced_by_a_link_stops_that_folder_only(shipper, tmp_path):
    bridge = shipper("acme-csv")
    (tmp_path / "elsewhere").mkdir()
    bridge.local.mkdir(parents=True, exist_ok=True)
    (bridge.local / "results").symlink_to(tmp_path / "elsewhere")
    (bridge.local / "B.csv").write_bytes(csv(OTHER_GOOD))
    (bridge.remote / "A.csv").write_bytes(csv(GOOD))

    report = bridge.ship()

    assert report.all_errors == [
        f"wh local:{bridge.local}: {bridge.local}/results is a link, not a folder: the bridge uses only real folders "
        f"in {bridge.local} (a link could send files anywhere); replace it with a folder"]
    assert list(os.listdir(tmp_path / "elsewhere")) == []
    assert (bridge.remote / "results" / "A.result.csv").read_text("utf-8-sig").splitlines()[1:] == [CONFIRMED]


# --- buyer data in a file read with the wrong layout ------------------------------------------------

BUYER = ("Jennifer Alvarez", "1457 Maple Grove Rd", "Columbus")
NO_HEADER = f"302-0000003-0000003;{';'.join(BUYER)};DHL_PAKET;00340434161094042557;20.11.2026 16:45\r\n"


def test_a_headerless_files_first_row_never_reaches_logs_status_or_the_ledger(shipper, caplog):
    import json
    import sqlite3

    from bridge.cli import format_status
    from bridge.service import status_report

    bridge = shipper("acme-csv")
    (bridge.remote / "NOHEADER.csv").write_bytes(NO_HEADER.encode("cp1252"))
    with caplog.at_level("DEBUG"):
        bridge.ship()

    why = ("row 1 has 7 fields and none is one of the columns 'Auftragsnummer', 'Artikelnummer', 'Menge', "
           "'Versandart', 'Sendungsnummer', 'Versanddatum': is the header row missing, or is this another layout's "
           "file?")
    assert (bridge.remote / "results" / "NOHEADER.result.csv").read_text("utf-8-sig").splitlines()[1:] == [
        whole_file(why)]
    report = status_report(bridge.settings, SHIP_TIME)
    with sqlite3.connect(bridge.settings.ledger_path) as db:
        ledger = "\n".join(db.iterdump())
    for where in (caplog.text, format_status(report), json.dumps(report), ledger):
        assert not [value for value in BUYER if value in where]
    assert why in format_status(report)


def test_past_retention_an_inbound_files_words_are_no_longer_kept(shipper):
    bridge = shipper("acme-csv")
    (bridge.remote / "NOHEADER.csv").write_bytes(NO_HEADER.encode("cp1252"))
    (bridge.remote / "ROWS.csv").write_bytes(csv(row(sku="Jennifer Alvarez")))
    bridge.ship()
    assert [r["item"] for r in bridge.ledger.shipment_rows(2)] == ["Jennifer Alvarez"]

    bridge.ledger.purge_pii(older_than=SHIP_TIME + timedelta(days=1), now=SHIP_TIME + timedelta(days=31))

    assert bridge.ledger.inbound(1).reason == "(why is no longer kept: past retention.pii_days)"
    assert [(r["item"], r["message"]) for r in bridge.ledger.shipment_rows(2)] == [("", "")]


# --- names already taken in the folder (an old install's files, a restored or fresh ledger) ---------

def test_a_name_taken_in_archive_or_results_is_never_overwritten_nor_its_answer_adopted(shipper):
    bridge = shipper("acme-csv")
    for sub in ("archive", "results"):
        (bridge.remote / sub).mkdir()
    (bridge.remote / "archive" / "V1.csv").write_bytes(b"someone else's file")
    (bridge.remote / "results" / "V2.result.csv").write_bytes(b"OLD RESULT from someone else\r\n")
    (bridge.remote / "V1.csv").write_bytes(csv(GOOD))
    (bridge.remote / "V2.csv").write_bytes(csv(OTHER_GOOD))

    report = bridge.ship()

    assert report.inbound.answered == 2 and not report.all_errors
    assert files(bridge.remote / "archive") == {"V1.csv": b"someone else's file", "V1~1.csv": csv(GOOD),
                                                "V2~2.csv": csv(OTHER_GOOD)}
    assert (bridge.remote / "results" / "V2.result.csv").read_bytes() == b"OLD RESULT from someone else\r\n"
    assert (bridge.remote / "results" / "V1~1.result.csv").read_text("utf-8-sig").splitlines()[1:] == [
        CONFIRMED]
    assert (bridge.remote / "results" / "V2~2.result.csv").read_text("utf-8-sig").splitlines()[1:] == [
        OTHER_CONFIRMED.replace("package 1", "package 2")]
    assert [bridge.ledger.inbound(n).safe_name for n in (1, 2)] == ["V1~1.csv", "V2~2.csv"]


def test_a_file_that_cannot_be_answered_waits_and_the_others_are_answered(shipper):
    bridge = shipper("acme-csv")
    (bridge.remote / "results").mkdir()
    (bridge.remote / "results" / "V1.result.csv.part").mkdir()  # a folder under the temporary name
    (bridge.remote / "V1.csv").write_bytes(csv(GOOD))
    (bridge.remote / "V2.csv").write_bytes(csv(OTHER_GOOD))

    report = bridge.ship()

    assert report.inbound.answered == 1 and report.needs_a_person
    assert [e.split(": ", 2)[1] for e in report.all_errors] == ["'V1.csv' not answered yet"]
    assert list(files(bridge.remote / "processing")) == ["V1.csv"]
    assert (bridge.remote / "results" / "V2.result.csv").read_text("utf-8-sig").splitlines()[1:] == [
        OTHER_CONFIRMED.replace("package 1", "package 2")]


# --- Amazon's answer to confirmShipment: only its own 204 confirms ---------------------------------

NOT_AMAZONS = [
    ("a 200 with a proxy's HTML page", dict(status=200, body=b"<html>hello</html>", headers={"content-type": "text/html"})),
    ("a 200 with an empty JSON object", dict(status=200, body=b"{}")),
    ("a 202 without content", dict(status=202, body=b"")),
    ("a 204 with a body", dict(status=204, body=b"garbage")),
]


@pytest.mark.parametrize("case, fault", NOT_AMAZONS, ids=[c for c, _ in NOT_AMAZONS])
def test_a_2xx_that_is_not_amazons_answer_is_never_counted_as_confirmed(shipper, sandbox, case, fault):
    bridge = shipper("acme-csv")
    sandbox.fail_next("confirmShipment", count=5, **fault)  # every attempt of the run
    (bridge.remote / "V.csv").write_bytes(csv(GOOD))

    report = bridge.ship()

    assert report.confirmed == 0 and bridge.ledger.package(1).status == "sent"  # outcome unknown
    assert [e.split(": ")[0] for e in report.all_errors] == ["send"]
    assert "order 302-0000003-0000003's package is sent again next run" in report.all_errors[0]
    assert files(bridge.remote / "results") == {} and list(files(bridge.remote / "processing")) == ["V.csv"]

    report = bridge.flow.run(SHIP_TIME + timedelta(minutes=5))

    assert report.confirmed == 1 and not report.all_errors
    assert {c["packageDetail"]["packageReferenceId"] for c in sandbox.confirmations} == {"1"}  # the same id: an edit
    assert (bridge.remote / "results" / "V.result.csv").read_text("utf-8-sig").splitlines()[1:] == [CONFIRMED]


def test_a_file_left_waiting_as_incomplete_is_listed_in_status_with_why(shipper):
    from bridge.cli import format_status
    from bridge.service import status_report

    bridge = shipper("acme-csv")
    (bridge.remote / "CUT.csv").write_bytes(csv(GOOD)[:-24])
    bridge.ship()

    text = format_status(status_report(bridge.settings, SHIP_TIME))
    assert ("  file waiting, incomplete since 2026-11-20T18:00: wh sftp 'CUT.csv': the last row has 5 of 6 fields and "
            "no line break: the file may still be written (if not, complete the row, end the file with a line break "
            "and drop it again)") in text.splitlines()


def test_a_full_local_disk_is_the_state_folders_problem_not_the_sftp_servers(shipper, monkeypatch):
    import errno
    import tempfile as real_tempfile

    from bridge.flows import inbound

    original = real_tempfile.NamedTemporaryFile

    def spool_file(**options):
        made = original(**options)

        def write(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        made.write = write
        return made

    bridge = shipper("acme-csv")
    (bridge.remote / "V.csv").write_bytes(csv(GOOD))
    monkeypatch.setattr(inbound.tempfile, "NamedTemporaryFile", spool_file)
    report = bridge.ship()

    spool = bridge.settings.inbound_dir / "shipments" / "wh"
    assert report.all_errors == [
        f"wh sftp:{bridge.remote}: the state folder's disk is full: cannot write in {spool} (No space "
        "left on device); free some space: the file is taken again on the next run"]
    assert report.needs_a_person and list(files(bridge.remote / "processing")) == ["V.csv"]
    assert [p.name for p in spool.iterdir()] == []  # no partial copy left

    monkeypatch.undo()
    bridge.flow.run(SHIP_TIME + timedelta(minutes=5))
    assert (bridge.remote / "results" / "V.result.csv").read_text("utf-8-sig").splitlines()[1:] == [CONFIRMED]


@pytest.mark.parametrize("name", ["VERSAND.csv.filepart", "~$shipped.xlsx", "VERSAND.csv.crdownload", "Thumbs.db",
                                  "desktop.ini", ".DS_Store", "VERSAND.csv.swp"])
def test_temporary_and_junk_names_are_left_alone_and_never_answered(shipper, name):
    bridge = shipper("acme-csv")
    bridge.local.mkdir(parents=True, exist_ok=True)
    (bridge.local / name).write_bytes(csv(GOOD))

    report = bridge.ship(local=True, remote=False)
    report = bridge.ship(SHIP_TIME + timedelta(hours=2), local=True, remote=False)

    assert list(files(bridge.local)) == [name] and files(bridge.local / "results") == {}
    assert report.inbound.taken == report.inbound.settling == report.inbound.incomplete == 0


def test_under_the_units_umask_staff_can_still_read_the_local_folders_answers(shipper, tmp_path):
    import stat

    bridge = shipper("acme-csv")
    previous = os.umask(0o077)  # systemd's UMask=0077
    try:
        assert not bridge.local.exists()
        bridge.ship(local=True, remote=False)  # creates the folder
        (bridge.local / "V.csv").write_bytes(csv(GOOD))
        bridge.ship(SHIP_TIME + timedelta(minutes=5), local=True, remote=False)
    finally:
        os.umask(previous)

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)
    assert {name: oct(mode(bridge.local / name)) for name in ("", "processing", "archive", "error", "results")} == \
        {name: "0o2770" for name in ("", "processing", "archive", "error", "results")}
    assert oct(mode(bridge.local / "results" / "V.result.csv")) == "0o660"


@pytest.mark.parametrize("key, value, problem", [
    ("local_folder_mode", '"777"', "shipments.local_folder_mode: '777' lets everyone write; use a group, e.g. \"2770\" "
                                   "(setgid, owner and group)"),
    ("local_folder_mode", "2770", "shipments.local_folder_mode: must be an octal mode in quotes like \"2770\" (setgid, "
                                  "owner and group), not 2770"),
    ("local_folder_mode", '"0070"', "shipments.local_folder_mode: '0070' must let the service's user use it, e.g. "
                                    "\"2770\" (setgid, owner and group)"),
    ("local_file_mode", '"0770"', "shipments.local_file_mode: '0770' makes result files executable or special; e.g. "
                                  "\"0660\" (owner and group)"),
    ("future_tolerance_minutes", "-1", "shipments.future_tolerance_minutes: must be at least 0, not -1"),
])
def test_config_keys_for_inbound_files(tmp_path, sshd, sftp_root, sandbox, key, value, problem):
    from bridge.config import load_settings
    from bridge.errors import ConfigError
    from harness import SECRETS

    config = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv", shipments=f"{key} = {value}")
    with pytest.raises(ConfigError) as refused:
        load_settings(config, SECRETS)
    assert [p.removeprefix(f"{config}: ") for p in refused.value.problems] == [problem]


def test_an_xml_file_without_line_breaks_gets_a_row_number_per_record(shipper):
    from shipping import GOLDEN_INPUTS, golden

    name = GOLDEN_INPUTS["globex-xml"]
    text = (golden("globex-xml") / name).read_bytes()
    bridge = shipper("globex-xml")
    (bridge.remote / name).write_bytes(b"".join(line.strip() for line in text.splitlines()))

    report = bridge.ship()

    expected = (golden("globex-xml") / "results" / name.replace(".xml", ".result.csv")).read_text("utf-8-sig")
    lines = (bridge.remote / "results" / name.replace(".xml", ".result.csv")).read_text("utf-8-sig").splitlines()[1:]
    assert not report.all_errors and list(files(bridge.remote / "archive")) == [name]
    assert [line.split(",")[0] for line in lines] == [str(n) for n in range(1, len(lines) + 1)]
    assert [line.split(",", 1)[1] for line in lines] == [line.split(",", 1)[1] for line in expected.splitlines()[1:]]


# --- one order or one package over very many rows: work and messages grow with the rows, not rows²

BIG_ORDER = "111-0000001-0000001"
BIG_CASES = [
    # (case, carriers, tracking per row, units per order line, lines in the order, a row's message)
    ("one package of 20,000 rows giving two carriers", ("DHL_PAKET", "DPD_CLASSIC"), lambda i: "TRK0000000001",
     20_000, 1, "rows 2, 3, 4, 5, 6 and 19,995 more are one package (order 111-0000001-0000001, tracking "
     "TRK0000000001) but give different carriers"),
    ("one order of 20,000 lines in 20,000 parcels", ("DHL_PAKET",), lambda i: f"TRK{i:010d}", 1, 20_000,
     "confirmed"),
]


@pytest.mark.parametrize("case, carriers, tracking, units, count, message", BIG_CASES, ids=[c[0] for c in BIG_CASES])
def test_one_order_over_many_rows_is_checked_row_by_row_with_short_messages(tmp_path, case, carriers, tracking,
                                                                           units, count, message):
    import hashlib
    from types import SimpleNamespace

    from bridge.flows.shipments import ShipmentFiles
    from bridge.formats import inbound
    from bridge.formats.shipments import RESULT_HEADER, OrderFacts
    from bridge.ledger import InboundSource, Ledger
    from bridge.mapping import load_mapping
    from bridge.records import Line
    from bridge.sandbox.wms import Shipped, render_confirmations
    from bridge.sealing import Sealer, new_key

    start = datetime(2026, 11, 20, 6, 0, tzinfo=timezone.utc)
    layout = load_mapping(MAPPINGS / "acme-csv.toml").shipments
    rows = [Shipped(BIG_ORDER, f"1{i % count:013d}", 1, carriers[i % len(carriers)], tracking(i), start, "Ground")
            for i in range(20_000)]
    path = tmp_path / "VERSAND.csv"
    path.write_bytes(render_confirmations(layout, rows))
    lines = tuple(Line(f"1{i:013d}", f"1{i:013d}", "B0", "x", units) for i in range(count))  # item id = SKU
    facts = {BIG_ORDER: OrderFacts(BIG_ORDER, "ATVPDKIKX0DER", start - timedelta(days=1), lines, "wh")}
    ledger = Ledger(tmp_path / "ledger.sqlite", Sealer(new_key()))
    try:
        stored = ledger.record_inbound("shipments", "wh", InboundSource.LOCAL, path.name, path.stat().st_size,
                                       hashlib.sha256(path.read_bytes()).hexdigest(), path.name, path.name,
                                       start + timedelta(days=1))
        files = ShipmentFiles(ledger, facts.get)
        with open(path, "rb") as stream:
            files.read(SimpleNamespace(name="wh", mapping=SimpleNamespace(shipments=layout)), stored, stream,
                       start + timedelta(days=1))
        _, answered = files.answer(ledger.inbound(stored.id))
        answered = list(answered)
        out = io.BytesIO()
        inbound.write_result(out, RESULT_HEADER, answered, ";")
    finally:
        ledger.close()
    assert len(answered) == 20_000
    if message == "confirmed":  # every parcel its own package, each line's unit taken once (not yet sent)
        assert ledger_counts(tmp_path / "ledger.sqlite") == (20_000, 20_000)
    else:
        assert {line[-1] for line in answered} == {message}
    assert len(out.getvalue()) < 20_000 * 250  # each line short: the file grows with rows, not rows²


def ledger_counts(path: Path) -> tuple[int, int]:
    """(packages, rows in a package) the ledger recorded."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        return (db.execute("select count(*) from packages").fetchone()[0],
                db.execute("select count(*) from shipment_rows where package_id is not null").fetchone()[0])
