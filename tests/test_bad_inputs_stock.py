"""Stock up's bad inputs, one table per kind, each case with the exact message a person sees:
the mapping's [stock] section (and its SKU map), the stock file's rows, Amazon's processing
report, and local state."""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import zipfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.errors import BadRecord, ConfigError
from bridge.formats.listings_feed import read_report
from bridge.formats.stock import MemoryStore, stock_levels, tally
from bridge.formats.readers import Row
from bridge.mapping import StockColumns, StockLayout, load_mapping

ORDERS = '''
[orders]
format = "csv"
file_per = "order"
file_name = "ORD_{order_id}.csv"
[[orders.columns]]
header = "Order"
source = "order.id"
'''
STOCK = '''
[stock]
format = "csv"
quantity_means = "available"
[stock.columns]
sku = "SKU"
quantity = "Qty"
'''
CSV_KEYS = ("buffer, buffers, cap, columns, decimal_separator, delimiter, encoding, format, handling_time_days, "
            "handling_times, header, leave_alone, marker, max_bad_row_share, max_missing_share, max_zero_share, "
            "product_type, "
            "product_types, quantity_means, result_delimiter, sku_map, thousands_separator, timestamp_format, "
            "timezone")


def stock_problems(tmp_path: Path, stock: str, sku_map: str | None = None) -> list[str]:
    if sku_map is not None:
        (tmp_path / "skus.csv").write_text(sku_map, encoding="utf-8")
    path = tmp_path / "warehouse.toml"
    path.write_text(stock + ORDERS, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_mapping(path)
    return [problem.replace(f"{path}: ", "").replace(str(tmp_path), "<dir>") for problem in raised.value.problems]


def with_stock(*lines: str, columns: str = 'sku = "SKU"\nquantity = "Qty"', fmt: str = "csv") -> str:
    return "\n[stock]\n" + (f'format = "{fmt}"\n' if fmt else "") + 'quantity_means = "available"\n' \
        + "\n".join(lines) + "\n[stock.columns]\n" + columns + "\n"


MAPPING_CASES = [
    ("not a table", "\nstock = 1\n", "stock: must be a table"),
    ("no format", with_stock(fmt=""), "stock.format: missing (one of: csv, xlsx, xml)"),
    ("unknown format", with_stock(fmt="json"), "stock.format: unknown value 'json' (one of: csv, xlsx, xml)"),
    ("no quantity meaning", STOCK.replace('quantity_means = "available"\n', ""),
     "stock.quantity_means: missing (one of: available, on_hand)"),
    ("unknown quantity meaning", STOCK.replace('"available"', '"free"'),
     "stock.quantity_means: unknown value 'free' (one of: available, on_hand)"),
    ("no columns", '\n[stock]\nformat = "csv"\nquantity_means = "available"\n',
     "stock.columns: missing: add a [stock.columns] table naming where sku and quantity are"),
    ("no quantity column", with_stock(columns='sku = "SKU"'), "stock.columns.quantity: missing"),
    ("unknown field", with_stock(columns='sku = "SKU"\nquantity = "Qty"\nqty = "Menge"'),
     "stock.columns.qty: unknown field (known: sku, quantity, timestamp, lot, location)"),
    ("empty header", with_stock(columns='sku = ""\nquantity = "Qty"'),
     "stock.columns.sku: must be the header of the column, not ''"),
    ("a position with a header", with_stock(columns='sku = 1\nquantity = "Qty"'),
     "stock.columns.sku: must be the header of the column, not 1"),
    ("a header without a header row", with_stock("header = false", columns='sku = 1\nquantity = "Qty"'),
     "stock.columns.quantity: must be a column position (1, 2, ...) when header = false, not 'Qty'"),
    ("one header twice", with_stock(columns='sku = "SKU"\nquantity = "Qty"\nlot = "Qty"'),
     "stock.columns: 'Qty' is used for more than one field"),
    ("the old [stock.fields]", with_stock(columns='sku = "SKU"\nquantity = "Qty"').replace("stock.columns", "stock.fields"),
     "stock.fields: is now called [stock.columns], as in [shipments]: rename the table"),
    ("unknown key", with_stock("bufer = 2"), f"stock.bufer: unknown key (known: {CSV_KEYS})"),
    ("key of another format", with_stock('sheet = "Stock"'), "stock.sheet: not used by format 'csv'"),
    ("header not a boolean", with_stock('header = "yes"'), "stock.header: must be true or false, not str"),
    ("xml without record", with_stock(fmt="xml"),
     "stock.record: missing: the path of the element that makes one row, from the document element, "
     "e.g. 'Inventory/Item'"),
    ("xml record below the root", with_stock('record = "Item"', fmt="xml"),
     "stock.record: 'Item' must be the path of the element that makes one row, from the document element: "
     "e.g. 'Inventory/Item'"),
    ("xml bad record", with_stock('record = "Items//Item"', fmt="xml"),
     "stock.record: 'Items//Item' must be the path of the element that makes one row, from the document "
     "element: e.g. 'Inventory/Item'"),
    ("xml bad column path", with_stock('record = "Inventory/Item"', columns='sku = "Item SKU"\nquantity = "Qty"',
                                       fmt="xml"),
     "stock.columns.sku: 'Item SKU' is not a path like 'Quantity', '@sku', 'Qty/Value' or '../@id'"),
    ("xml column above the root", with_stock('record = "Inventory/Item"',
                                             columns='sku = "../@sku"\nquantity = "Qty"', fmt="xml"),
     "stock.columns.sku: '../@sku' climbs to the document element or above; fields may refer to ancestors below it"),
    ("unknown encoding", with_stock('encoding = "latin-1"'),
     "stock.encoding: unknown value 'latin-1' (one of: utf-8, cp1252, utf-16)"),
    ("utf-8-sig", with_stock('encoding = "utf-8-sig"'),
     "stock.encoding: unknown value 'utf-8-sig' (one of: utf-8, cp1252, utf-16)"),
    ("bad delimiter", with_stock('delimiter = ";;"'),
     "stock.delimiter: must be one character other than a quote or newline, not ';;'"),
    ("bad result delimiter", with_stock('result_delimiter = ""'),
     "stock.result_delimiter: must be one character other than a quote or newline, not ''"),
    ("bad marker", with_stock('marker = "done.ok"'),
     "stock.marker: 'done.ok' must be {name} or {stem} followed by a suffix, e.g. \"{name}.ok\" or \"{stem}.done\""),
    ("unknown decimal separator", with_stock('decimal_separator = ";"'),
     "stock.decimal_separator: unknown value ';' (one of: '.', ',')"),
    ("same separators", with_stock('decimal_separator = ","', 'thousands_separator = ","'),
     "stock.thousands_separator: must differ from decimal_separator (',')"),
    ("unknown thousands separator", with_stock('thousands_separator = "_"'),
     "stock.thousands_separator: unknown value '_' (one of: '', '.', ',', ' ', \"'\")"),
    ("timestamp format without directive", with_stock('timestamp_format = "dd.mm.yyyy"',
                                                      columns='sku = "SKU"\nquantity = "Qty"\ntimestamp = "At"'),
     "stock.timestamp_format: 'dd.mm.yyyy' is neither 'iso' nor a strptime format (e.g. '%d.%m.%Y %H:%M')"),
    ("timestamp format without timestamp", with_stock('timestamp_format = "%d.%m.%Y"'),
     "stock.timestamp_format: needs columns.timestamp"),
    ("unknown time zone", with_stock('timezone = "Berlin"'),
     "stock.timezone: unknown time zone 'Berlin' (e.g. 'Europe/Berlin')"),
    ("negative buffer", with_stock("buffer = -1"), "stock.buffer: must be a whole number from 0 to 10,000,000, not -1"),
    ("buffer as text", with_stock('buffer = "2"'), "stock.buffer: must be a whole number from 0 to 10,000,000, not '2'"),
    ("bad SKU buffer", with_stock('buffers = { "MUG-1" = "five" }'),
     "stock.buffers.MUG-1: must be a whole number from 0 to 10,000,000, not 'five'"),
    ("buffers not a table", with_stock('buffers = 5'),
     'stock.buffers: must be a table of seller SKU = value, e.g. { "MUG-1" = 5 }'),
    ("fractional cap", with_stock("cap = 2.5"), "stock.cap: must be a whole number from 0 to 10,000,000, not 2.5"),
    ("leave alone not a list", with_stock('leave_alone = "*-FBA"'),
     'stock.leave_alone: must be a list of seller SKUs or patterns, e.g. ["*-FBA"]'),
    ("product type in lower case", with_stock('product_type = "mug"'),
     "stock.product_type: must be an Amazon product type in capitals (e.g. 'PRODUCT'), not 'mug'"),
    ("SKU product type", with_stock('product_types = { "MUG-1" = 3 }'),
     "stock.product_types.MUG-1: must be an Amazon product type in capitals (e.g. 'PRODUCT'), not 3"),
    ("handling time too long", with_stock("handling_time_days = 45"),
     "stock.handling_time_days: must be a whole number of days from 1 to 30, not 45"),
    ("share as percent", with_stock("max_missing_share = 10"),
     "stock.max_missing_share: must be a share from 0 to 1 (0.1 = 10%), not 10"),
    ("share as text", with_stock('max_zero_share = "20%"'),
     "stock.max_zero_share: must be a share from 0 to 1 (0.1 = 10%), not '20%'"),
    ("SKU map not found", with_stock('sku_map = "nope.csv"'), "stock.sku_map: file '<dir>/nope.csv' not found"),
]


@pytest.mark.parametrize("case, stock, problem", MAPPING_CASES, ids=[c[0] for c in MAPPING_CASES])
def test_mapping_stock_section(tmp_path, case, stock, problem):
    assert stock_problems(tmp_path, stock) == [problem]


SKU_MAP_CASES = [
    ("wrong header", "article,sku\n1,A\n", "<dir>/skus.csv: line 1: the header must be warehouse_sku,seller_sku"),
    ("three fields", "warehouse_sku,seller_sku\n1,A,B\n",
     "<dir>/skus.csv: line 2: needs 2 fields (warehouse_sku, seller_sku), not 3"),
    ("no warehouse SKU", "warehouse_sku;seller_sku\n;A\n", "<dir>/skus.csv: line 2: warehouse_sku is empty"),
    ("mapped twice", "warehouse_sku,seller_sku\n100,A\n100,B\n",
     "<dir>/skus.csv: line 3: warehouse_sku '100' is mapped twice (to 'A' and 'B')"),
    ("seller SKU too long", "warehouse_sku,seller_sku\n100," + "X" * 41 + "\n",
     f"<dir>/skus.csv: line 2: seller_sku '{'X' * 41}' is longer than Amazon's 40 characters"),
]


@pytest.mark.parametrize("case, text, problem", SKU_MAP_CASES, ids=[c[0] for c in SKU_MAP_CASES])
def test_sku_map_file(tmp_path, case, text, problem):
    assert stock_problems(tmp_path, with_stock('sku_map = "skus.csv"'), text) == [problem]


def test_every_problem_of_a_stock_section_is_reported_at_once(tmp_path):
    problems = stock_problems(tmp_path, with_stock("buffer = -1", "cap = -2", 'timezone = "Mars"'))
    assert sorted(p.split(":")[0] for p in problems) == ["stock.buffer", "stock.cap", "stock.timezone"]


# --- the stock file's rows ------------------------------------------------------------------

LAYOUT = StockLayout(format="csv", quantity_means="available", columns=StockColumns(sku="SKU", quantity="Qty"))
ROW_CASES = [
    ("no SKU", {"SKU": " ", "Qty": "1"}, {}, "row 2, column 'SKU': no SKU"),
    ("no quantity", {"SKU": "A", "Qty": ""}, {}, "row 2, column 'Qty': no quantity"),
    ("not a number", {"SKU": "A", "Qty": "abc"}, {}, "row 2, column 'Qty': 'abc' is not a number"),
    ("Excel exponent", {"SKU": "A", "Qty": "9.4E+21"}, {}, "row 2, column 'Qty': '9.4E+21' is not a number"),
    ("fractional", {"SKU": "A", "Qty": "12.5"}, {}, "row 2, column 'Qty': '12.5' is not a whole number"),
    ("fractional, decimal comma", {"SKU": "A", "Qty": "12,5"}, {"decimal_separator": ","},
     "row 2, column 'Qty': '12,5' is not a whole number"),
    ("point in a decimal-comma file", {"SKU": "A", "Qty": "12.5"}, {"decimal_separator": ","},
     "row 2, column 'Qty': '12.5' is not a number (the decimal separator is ',')"),
    ("thousands separator not declared", {"SKU": "A", "Qty": "1,250"}, {},
     "row 2, column 'Qty': '1,250' is not a number"),
    ("English notation in a file with '.' for thousands", {"SKU": "A", "Qty": "2.5"},
     {"decimal_separator": ",", "thousands_separator": "."},
     "row 2, column 'Qty': '2.5' is not a number in this file's format: '.' only groups thousands, in threes "
     "(1.250), and the decimal separator is ','"),
    ("two decimals in a file with '.' for thousands", {"SKU": "A", "Qty": "12.50"},
     {"decimal_separator": ",", "thousands_separator": "."},
     "row 2, column 'Qty': '12.50' is not a number in this file's format: '.' only groups thousands, in threes "
     "(1.250), and the decimal separator is ','"),
    ("separators in no valid place", {"SKU": "A", "Qty": "1.0.0"}, {"decimal_separator": ",", "thousands_separator": "."},
     "row 2, column 'Qty': '1.0.0' is not a number in this file's format: '.' only groups thousands, in threes "
     "(1.250), and the decimal separator is ','"),
    ("a decimal part that is not zero", {"SKU": "A", "Qty": "1.250,5"},
     {"decimal_separator": ",", "thousands_separator": "."}, "row 2, column 'Qty': '1.250,5' is not a whole number"),
    ("superscript digits", {"SKU": "A", "Qty": "²"}, {}, "row 2, column 'Qty': '²' is not a number"),
    ("5,000 digits", {"SKU": "A", "Qty": "9" * 5000}, {},
     "row 2, column 'Qty': '999999999999999999999999999999'... (5,000 characters) is not a number"),
    ("a timestamp in the year 1, east of UTC", {"SKU": "A", "Qty": "1", "At": "0001-01-01T00:00:00"},
     {"columns": StockColumns(sku="SKU", quantity="Qty", timestamp="At"), "timezone": "Europe/Berlin"},
     "row 2, column 'At': timestamp '0001-01-01T00:00:00' is not a time the bridge can use"),
    ("negative", {"SKU": "A", "Qty": "-3"}, {}, "row 2, column 'Qty': '-3' is negative"),
    ("an EAN in the quantity", {"SKU": "A", "Qty": "4006381333931"}, {},
     "row 2, column 'Qty': '4006381333931' is more than 10,000,000 units (is this the right column?)"),
    ("SKU too long", {"SKU": "X" * 41, "Qty": "1"}, {},
     f"row 2, column 'SKU': SKU '{'X' * 41}' is longer than Amazon's 40 characters"),
    ("SKU with a tab", {"SKU": "MUG\t1", "Qty": "1"}, {},
     "row 2, column 'SKU': SKU 'MUG\\t1' has a control or invisible character"),
    ("mapped SKU too long", {"SKU": "100", "Qty": "1"}, {"sku_map": {"100": "Y" * 41}},
     f"row 2, column 'SKU': SKU '{'Y' * 41}' is longer than Amazon's 40 characters"),
    ("bad timestamp", {"SKU": "A", "Qty": "1", "At": "2026-13-01"},
     {"columns": StockColumns(sku="SKU", quantity="Qty", timestamp="At")},
     "row 2, column 'At': timestamp '2026-13-01' is not a date like ISO 8601 (e.g. 2026-11-26T21:00:00+01:00)"),
]


@pytest.mark.parametrize("case, row, changes, problem", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_a_bad_row_is_reported_and_the_rest_still_goes(case, row, changes, problem):
    layout = replace(LAYOUT, **changes)
    store = MemoryStore()
    counted = tally([Row(2, row), Row(3, {**{k: "" for k in row}, "SKU": "GOOD", "Qty": "4"})], layout, store)
    levels = {l.sku: l.quantity for l in stock_levels(store.sorted_parts(), layout, {}, counted.problems)}
    assert [str(p) for p in counted.problems] == [problem]
    assert levels["GOOD"] == 4 and counted.bad_rows == 1


FILE_CASES = [
    ("a column missing", [Row(2, {"Artikel": "A", "Qty": "1"})],
     "the file has no column 'SKU' (its columns: 'Artikel', 'Qty')"),
    ("a semicolon file read with commas", [Row(2, {"SKU;Qty": "A;1"})],
     "the file has no column 'SKU', 'Qty' (its columns: 'SKU;Qty')"),
]


@pytest.mark.parametrize("case, rows, problem", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_file_that_is_not_this_layout_is_one_problem_not_one_per_row(case, rows, problem):
    counted = tally(rows, LAYOUT, MemoryStore())
    assert counted.file_problem == problem and counted.problems == []


DUPLICATE_CASES = [
    ("different quantities", [("A", "4", ""), ("A", "5", "")], {"A": None}, [
        "row 2, column 'Qty': SKU 'A' is listed on rows 2 and 3 with different quantities (4, 5): not sent",
        "row 3, column 'Qty': SKU 'A' is listed on rows 2 and 3 with different quantities (4, 5): not sent"]),
    ("same quantity", [("A", "4", ""), ("A", "4", "")], {"A": 4}, [
        "row 3, column 'Qty': SKU 'A' is listed again (first on row 2) with the same quantity: counted once"]),
    ("same lot twice", [("A", "4", "L1"), ("A", "5", "L1"), ("A", "1", "L2")], {"A": None}, [
        "row 2, column 'Qty': SKU 'A' (L1) is listed on rows 2 and 3 with different quantities (4, 5): not sent",
        "row 3, column 'Qty': SKU 'A' (L1) is listed on rows 2 and 3 with different quantities (4, 5): not sent",
        "row 4: SKU 'A' is not sent because rows 2 and 3 are bad"]),
    ("a bad lot holds back the others", [("A", "4", "L1"), ("A", "x", "L2")], {"A": None}, [
        "row 3, column 'Qty': 'x' is not a number", "row 2: SKU 'A' is not sent because row 3 is bad"]),
    ("one lot twice, one of the rows bad: not called the same quantity", [("A", "abc", ""), ("A", "9", "")],
     {"A": None}, ["row 2, column 'Qty': 'abc' is not a number", "row 3: SKU 'A' is not sent because row 2 is bad"]),
    ("one lot twice, one quantity empty", [("A", "", ""), ("A", "9", "")], {"A": None},
     ["row 2, column 'Qty': no quantity", "row 3: SKU 'A' is not sent because row 2 is bad"]),
]


@pytest.mark.parametrize("case, records, levels, problems", DUPLICATE_CASES, ids=[c[0] for c in DUPLICATE_CASES])
def test_skus_listed_more_than_once(case, records, levels, problems):
    layout = replace(LAYOUT, columns=StockColumns(sku="SKU", quantity="Qty", lot="Lot"))
    store = MemoryStore()
    counted = tally([Row(n, {"SKU": s, "Qty": q, "Lot": lot}) for n, (s, q, lot) in enumerate(records, 2)], layout,
                    store)
    got = {l.sku: l.quantity for l in stock_levels(store.sorted_parts(), layout, {}, counted.problems)}
    assert got == levels
    assert [str(p) for p in counted.problems] == problems


MANY_ROWS_CASES = [
    ("one SKU filled down a column with different quantities", lambda i: ("A", str(i % 7)), 2_000,
     "row 2, column 'Qty': SKU 'A' is listed on 2,000 rows (2, 3, 4, 5, 6 and 1,995 more) with different "
     "quantities (0, 1, 2, 3, 4 and 1,995 more): not sent"),
    ("one SKU with every other row bad", lambda i: ("A", "x" if i % 2 else "5"), 2_000,
     "row 2: SKU 'A' is not sent because 1,000 rows (3, 5, 7, 9, 11 and 995 more) are bad"),
]


@pytest.mark.parametrize("case, record, count, first", MANY_ROWS_CASES, ids=[c[0] for c in MANY_ROWS_CASES])
def test_a_sku_on_many_rows_gets_messages_of_bounded_length(case, record, count, first):
    store = MemoryStore()
    counted = tally([Row(n, dict(zip(("SKU", "Qty"), record(n - 2)))) for n in range(2, count + 2)], LAYOUT, store)
    levels = list(stock_levels(store.sorted_parts(), LAYOUT, {}, counted.problems))
    combined = [p for p in counted.problems if "not sent" in p.why]
    assert levels == [("A", None, 2)]
    assert str(combined[0]) == first
    assert len({p.why for p in combined}) == 1  # one text shared by every row: linear, not rows × rows
    assert len(combined) == count // (2 if "bad" in case else 1)


# --- Amazon's processing report -------------------------------------------------------------

REPORT_CASES = [
    ("not JSON", b"<html><body>Internal error</body></html>", "the feed's processing report is not JSON"),
    ("issues not a list", b'{"header": {}, "issues": {"code": 1}, "summary": {}}',
     "the feed's processing report has no list of issues"),
    ("a JSON list", b"[1, 2]", "the feed's processing report has no list of issues"),
]


@pytest.mark.parametrize("case, data, why", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_a_report_the_bridge_cannot_read(case, data, why):
    with pytest.raises(BadRecord) as raised:
        read_report(data, {2: ("A", 1)})
    assert str(raised.value).startswith(why)


ISSUE_CASES = [
    ("an issue for a message", {"messageId": 2, "sku": "A", "severity": "ERROR", "code": "4000003",
                                "message": "SKU 'A' does not exist"},
     "row 2, SKU 'A': Amazon error [4000003]: SKU 'A' does not exist"),
    ("no SKU in the issue", {"messageId": 2, "severity": "WARNING", "message": "incomplete"},
     "row 2, SKU 'A': Amazon warning: incomplete"),
    ("an unknown severity", {"messageId": 2, "severity": "FATAL", "message": "m"},
     "row 2, SKU 'A': Amazon error: m"),
    ("a message not in the document", {"messageId": 9, "severity": "ERROR", "message": "m"},
     "the whole feed: Amazon error: m (message 9 is not in the submitted document)"),
    ("the whole feed", {"severity": "ERROR", "code": "4002001", "message": "Item 'Feed' cannot be parsed."},
     "the whole feed: Amazon error [4002001]: Item 'Feed' cannot be parsed."),
    ("no message", {"messageId": 2, "severity": "ERROR"}, "row 2, SKU 'A': Amazon error: no message"),
]


@pytest.mark.parametrize("case, issue, line", ISSUE_CASES, ids=[c[0] for c in ISSUE_CASES])
def test_each_issue_of_a_report_becomes_a_line_with_row_and_sku(case, issue, line):
    report = read_report(json.dumps({"issues": [issue], "summary": {}}).encode(), {2: ("A", 1)})
    assert [str(i) for i in report.issues] == [line]


# --- local state ----------------------------------------------------------------------------

@pytest.mark.parametrize("case, damage, why", [
    ("document deleted", lambda path: path.unlink(), "cannot be read (No such file or directory); push the stock file again"),
    ("document changed", lambda path: path.write_bytes(b"{}"), "changed since it was computed; push the stock file again"),
])
def test_a_held_feed_whose_document_is_gone_or_changed_is_not_sent(sandbox, tmp_path, case, damage, why):
    from test_inventory_flow import Bridge, full_stock, NOW

    made = Bridge(sandbox, tmp_path)
    made.flow.push(full_stock("DAY1.csv"), NOW)
    held = made.flow.push(full_stock("DAY2.csv", at=datetime(2026, 11, 27, tzinfo=timezone.utc),
                                     **{"KAN-GLAS-1L": None}), NOW)
    assert held.status == "held"
    (document,) = made.ledger.stock_feeds(held.file_id)
    damage(made.state / "stock" / document.spool_path)
    outcome = made.flow.force_held(NOW)
    assert outcome.errors == [f"feed document {made.state / 'stock' / document.spool_path} {why}"]
    assert outcome.needs_a_person and len(sandbox.feeds) == 1
    made.ledger.close()


# --- the bridge's config: bridge.toml's [stock] and the warehouses' stock folders ---------------

CONFIG = """
[amazon]
seller_id = "A3TESTSELLER"
region = "eu"
marketplaces = ["A1PA6795UKMFR9"]

[[warehouses]]
name = "acme"
mapping = "mappings/acme-csv.toml"
host = "sftp.acme.example"
username = "amz"
known_hosts = "known_hosts"
private_key = "id_ed25519"
orders_folder = "/in"
"""
FOLDERS = 'stock_folder = "/stock"\n'
ACME = '\n[stock]\nwarehouse = "acme"\n'

CONFIG_CASES = [
    ("an unknown warehouse", FOLDERS + '\n[stock]\nwarehouse = "acme-eu"\n', [
        "stock.warehouse: 'acme-eu' is not one of the [[warehouses]] ('acme')",
        "warehouses[0].stock_folder: only the warehouse named by stock.warehouse publishes stock (Amazon has one "
        "quantity per SKU), and that is 'acme-eu': set stock.warehouse = 'acme', or remove this key"]),
    ("a feed timeout of minutes", FOLDERS + ACME + "feed_timeout_hours = 0.1\n", [
        "stock.feed_timeout_hours: must be at least 0.5, not 0.1"]),
    ("a warehouse without stock folders", ACME, [
        "stock.warehouse: 'acme' has neither stock_folder nor local_stock_folder: the bridge would have no stock "
        "file to publish"]),
    ("stock folders without stock.warehouse", FOLDERS, [
        "warehouses[0].stock_folder: only the warehouse named by stock.warehouse publishes stock (Amazon has one "
        "quantity per SKU), and that is none: set stock.warehouse = 'acme', or remove this key"]),
    ("a relative stock folder", 'stock_folder = "stock"\n' + ACME, [
        "warehouses[0].stock_folder: 'stock' must be an absolute path on the server, like \"/stock\""]),
    ("the shipments folder", 'stock_folder = "/out/"\nshipments_folder = "/out"\n' + ACME, [
        "warehouses[0].stock_folder: is also the shipments_folder: stock files and confirmation files need a "
        "folder each"]),
    ("the local shipments folder", 'local_stock_folder = "drop"\nlocal_shipments_folder = "drop/"\n' + ACME, [
        "warehouses[0].local_stock_folder: is also the local_shipments_folder: stock files and confirmation files "
        "need a folder each"]),
    ("a mapping without [stock]", FOLDERS.replace("stock_folder", "mapping = \"mappings/plain.toml\"\nstock_folder")
     + ACME, None),
    ("a time of day in words", FOLDERS + ACME + 'publish_at = "10pm"\n', [
        "stock.publish_at: '10pm' is not a time of day like \"22:00\" (24-hour clock)"]),
    ("an hour past 23", FOLDERS + ACME + 'publish_at = "24:00"\n', [
        "stock.publish_at: '24:00' is not a time of day like \"22:00\" (24-hour clock)"]),
    ("an unknown time zone", FOLDERS + ACME + 'timezone = "CET+1"\n', [
        "stock.timezone: unknown time zone 'CET+1' (e.g. 'Europe/Berlin')"]),
    ("polling too often", FOLDERS + ACME + "poll_minutes = 0\n", ["stock.poll_minutes: must be at least 1, not 0"]),
    ("an unknown key", FOLDERS + ACME + 'publish_time = "22:00"\n', [
        "stock.publish_time: unknown key (known: feed_timeout_hours, future_tolerance_minutes, poll_minutes, publish_at, timezone, "
        "warehouse)"]),
    ("a future tolerance above a week", FOLDERS + ACME + "future_tolerance_minutes = 10081\n", [
        "stock.future_tolerance_minutes: must be at most 10080, not 10081"]),
    ("quantities on hand without a shipments folder: no order would ever leave the shelf",
     FOLDERS.replace("stock_folder", "mapping = \"mappings/onhand.toml\"\nstock_folder") + ACME, [
         "stock.warehouse: the mapping onhand of 'acme' reads quantities on hand, less the units of orders not yet "
         "confirmed shipped, but 'acme' has no shipments_folder or local_shipments_folder: no confirmation would "
         "ever come and every order would count as on the shelf for good: give it a shipments folder, or use a "
         "mapping with quantity_means = \"available\""]),
    ("quantities on hand with a shipments folder",
     FOLDERS.replace("stock_folder", "mapping = \"mappings/onhand.toml\"\nshipments_folder = \"/out\"\nstock_folder")
     + ACME + "poll_minutes = 0\n", ["stock.poll_minutes: must be at least 1, not 0"]),
    ("the stock warehouse's mapping is invalid: its own problem only, stock.warehouse not blamed",
     FOLDERS.replace("stock_folder", "mapping = \"mappings/broken.toml\"\nstock_folder") + ACME, None),
]


@pytest.mark.parametrize("case, extra, expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_stock_keys(tmp_path, case, extra, expected):
    from bridge.config import load_settings
    from harness import MAPPINGS, SECRETS

    (tmp_path / "mappings").mkdir()
    for name in ("acme-csv.toml", "acme-skus.csv"):
        (tmp_path / "mappings" / name).write_bytes((MAPPINGS / name).read_bytes())
    (tmp_path / "mappings" / "plain.toml").write_text(ORDERS, encoding="utf-8")
    on_hand = (MAPPINGS / "acme-csv.toml").read_text("utf-8").replace('quantity_means = "available"',
                                                                       'quantity_means = "on_hand"')
    (tmp_path / "mappings" / "onhand.toml").write_text(on_hand, encoding="utf-8")
    (tmp_path / "known_hosts").write_text("sftp.acme.example ssh-ed25519 AAAA\n")
    (tmp_path / "id_ed25519").write_text("x\n")
    path = tmp_path / "bridge.toml"
    text = CONFIG + extra
    if case == "a mapping without [stock]":
        text = text.replace('mapping = "mappings/acme-csv.toml"\n', "")
        expected = ["warehouses[0].stock_folder: the mapping plain has no [stock] section to read the files with",
                    "stock.warehouse: the mapping plain of 'acme' has no [stock] section to read its stock files with"]
    if case.startswith("quantities on hand"):
        text = text.replace('mapping = "mappings/acme-csv.toml"\n', "")
    if case.startswith("the stock warehouse's mapping is invalid"):
        text = text.replace('mapping = "mappings/acme-csv.toml"\n', "")
        broken = (MAPPINGS / "acme-csv.toml").read_text("utf-8").replace('encoding = "cp1252"', 'encoding = "latin9"')
        (tmp_path / "mappings" / "broken.toml").write_text(broken, encoding="utf-8")
        where = tmp_path / "mappings" / "broken.toml"
        expected = [f"{where}: {section}.encoding: unknown value 'latin9' (one of: {choices})"
                    for section, choices in (("orders", "utf-8, utf-8-sig, cp1252"), ("stock", "utf-8, cp1252, utf-16"),
                                             ("shipments", "utf-8, cp1252, utf-16"))]
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, SECRETS)
    assert [p.removeprefix(f"{path}: ") for p in raised.value.problems] == expected


# --- the drop: stock files through the intake, each answered with the exact lines a clerk reads ----

DROP_HEADER = "Artikelnummer;Bezeichnung;Charge;Lagerplatz;Verfügbar;Stand"
STAND = "26.11.2026 21:00"
LIMIT = 10  # shipments.incomplete_limit_minutes in these tests (stock files share the rule)


def acme_file(*rows: str, header: str = DROP_HEADER, encoding: str = "cp1252", end: str = "\r\n") -> bytes:
    return "".join(line + end for line in (header, *rows)).encode(encoding)


def good(article: str = "100871", quantity: str = "8", stand: str = STAND) -> str:
    return f"{article};Artikel;;;{quantity};{stand}"


GLOBEX_STOCK = """<?xml version="1.0" encoding="UTF-8"?>
{doctype}<Inventory>
  <Item sku="MUG-CER-350-BLU"><OnHand>7</OnHand><CountedAt>2026-11-27T04:00:00Z</CountedAt></Item>
{more}"""
DOCTYPE = '<!DOCTYPE Inventory [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'


def _zip_without_workbook() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("inventory.csv", "SKU,Qty\n")
    return out.getvalue()


def _workbook_with_a_formula() -> bytes:
    """Initech's stock workbook where a quantity is a formula written by a program that does not
    calculate (openpyxl saves no value for it), as a WMS export script might."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Inventory"
    sheet.append(["SKU", "Description", "Qty Available", "As Of"])
    sheet.append(["PLT-STN-27CM-4", "Plates", 14, "11/26/2026 06:30 PM"])
    sheet.append(["CST-CORK-4PK", "Coasters", "=B2*0+7", "11/26/2026 06:30 PM"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@dataclass(frozen=True)
class Drop:
    id: str
    data: bytes
    lines: list[str]  # the result file's lines after its header
    folder: str = "error"  # where the file ends
    name: str = "BESTAND.csv"
    mapping: str = "acme-csv"
    late: bool = False  # answered only once incomplete_limit_minutes have passed


PUBLISHED_1 = ";published;;;passed the safety gates. 1 SKUs sent, Amazon took 1"
DROP_CASES = [
    Drop("a good file", acme_file(good()), [PUBLISHED_1], "archive"),
    Drop("a header without the quantity column", acme_file(good(), header=DROP_HEADER.replace("Verfügbar", "Bestand")),
         [";rejected;;;row 1: the header has no column 'Verfügbar' (found: 'Artikelnummer', 'Bezeichnung', "
          "'Charge', 'Lagerplatz', 'Bestand', 'Stand')"]),
    Drop("a comma file for a semicolon mapping", acme_file(good().replace(";", ","), header=DROP_HEADER.replace(";", ",")),
         [";rejected;;;\"row 1 has one field and none of the columns 'Artikelnummer', 'Verfügbar', 'Stand', "
          "'Charge', 'Lagerplatz': are its values separated by ',' rather than ';'?\""]),
    Drop("Excel's CSV UTF-8 (a byte order mark) in a cp1252 folder: read as UTF-8",
         codecs.BOM_UTF8 + acme_file(good(), encoding="utf-8"), [PUBLISHED_1], "archive"),
    Drop("UTF-16 in a cp1252 folder", acme_file(good(), encoding="utf-16"),
         [";rejected;;;the file is UTF-16 text (it starts with a byte order mark), the mapping says Windows-1252"]),
    Drop("a byte cp1252 does not have", acme_file(good(), good("300501", "1Q")).replace(b"1Q", b"1\x81"),
         [PUBLISHED_1, "3;rejected;;;byte 0x81 is not Windows-1252 text: check the file's encoding"]),
    Drop("a row with too many fields", acme_file(good(), good("300501") + ";x"),
         [PUBLISHED_1, "3;rejected;;;\"7 fields, the header has 6 (a ';' inside a value must be quoted)\""]),
    Drop("a row with too few fields", acme_file(good(), "300501;Artikel;;;3"),
         [PUBLISHED_1, "3;rejected;;;5 fields, the header has 6"]),
    Drop("a negative quantity", acme_file(good(), good("300501", "-3")),
         [PUBLISHED_1, "3;rejected;300501;Verfügbar;'-3' is negative"]),
    Drop("an Excel exponent", acme_file(good(), good("300501", "1,2E+05")),
         [PUBLISHED_1, "3;rejected;300501;Verfügbar;'1,2E+05' is not a number"]),
    Drop("a timestamp in another format", acme_file(good(), good("300501", stand="2026-11-26 21:00")),
         [PUBLISHED_1, "3;rejected;300501;Stand;timestamp '2026-11-26 21:00' is not a date like DD.MM.YYYY hh:mm"]),
    Drop("one lot listed twice with different quantities",
         acme_file(good(), good("200110"), good("300501", "3"), good("300501", "4")),
         [";published;;;passed the safety gates. 2 SKUs sent, Amazon took 2",
          "4;rejected;300501;Verfügbar;SKU '300501' is listed on rows 4 and 5 with different quantities (3, 4): not sent",
          "5;rejected;300501;Verfügbar;SKU '300501' is listed on rows 4 and 5 with different quantities (3, 4): not sent"]),
    Drop("most rows bad (a wrong export): held, answered provisionally",
         acme_file(good(), good("200110", "x"), good("300501", "-1")), [
             ";held;;;held: 2 of the file's 3 rows (66.7%) are bad, more than the limit of 50%: is it the right "
             "file, in the mapping's layout?. Waiting for the seller: `fbm-bridge inventory push --force` publishes "
             "it, a newer stock file replaces it. This answer is then replaced",
             "3;rejected;200110;Verfügbar;'x' is not a number", "4;rejected;300501;Verfügbar;'-1' is negative"],
         folder="processing"),
    Drop("a header only", acme_file(), [";held;;;held: the file has no stock rows (it is empty or has only a header)"]),
    Drop("a timestamp of a day the month does not have", acme_file(good(), good("300501", stand="31.11.2026 21:00")),
         [PUBLISHED_1, "3;rejected;300501;Stand;timestamp '31.11.2026 21:00' has the shape DD.MM.YYYY hh:mm but is not a"
                       " real date: the month has no such day"]),
    Drop("a stock time a year ahead (a typo in the year)", acme_file(good(stand="26.11.2027 21:00")), [
        ";held;;;held: the file's stock time 2027-11-26T20:00:00Z is in the future: 365 days ahead of the bridge's "
        "clock (2026-11-26T22:00:30Z), more than the 24 hours allowed (stock.future_tolerance_minutes). Correct the "
        "timestamps (a typo in the date?) and drop the file again"]),
    Drop("no row usable", acme_file(good(quantity="x")), [
        ";held;;;held: none of the file's 1 rows gives a quantity to send (see the rows' problems)",
        "2;rejected;100871;Verfügbar;'x' is not a number"]),
    Drop("the last line without line break (saved so by an editor)", acme_file(good())[:-2], [PUBLISHED_1], "archive"),
    Drop("the last row cut short", acme_file(good())[:-20], [
        ";rejected;;;the file stayed incomplete for 10 minutes: the last row has 5 of 6 fields and no line break: "
        "the file may still be written (if not, complete the row, end the file with a line break and drop it "
        "again)"], late=True),
    Drop("a workbook in a CSV folder", _zip_without_workbook(), [
        ";rejected;;;the file is a zip file (an XLSX workbook?) but the mapping reads CSV (Windows-1252): is it in the "
        "wrong folder or saved in the wrong format?"]),
    Drop("an empty file", b"", [";rejected;;;the file stayed incomplete for 10 minutes: the file is empty"], late=True),
    Drop("XML with a DOCTYPE", GLOBEX_STOCK.format(doctype=DOCTYPE, more="</Inventory>\n").encode(),
         [",rejected,,,the XML document has a DOCTYPE; files with DTDs or entities are refused (no entity is ever "
          "expanded or fetched)"], name="GLOBEX_INVENTORY.xml", mapping="globex-xml"),
    Drop("XML with a DOCTYPE whose entity is used in an attribute", GLOBEX_STOCK.format(doctype=DOCTYPE, more=(
        '  <Item sku="&x;"><OnHand>1</OnHand><CountedAt>2026-11-27T04:00:00Z</CountedAt></Item>\n</Inventory>\n'
    )).encode(), [",rejected,,,the XML document has a DOCTYPE; files with DTDs or entities are refused (no entity is "
                  "ever expanded or fetched)"], name="GLOBEX_INVENTORY.xml", mapping="globex-xml"),
    Drop("XML not closed", GLOBEX_STOCK.format(doctype="", more="").encode(),
         [",rejected,,,\"the file stayed incomplete for 10 minutes: the XML document ends before its last element "
          "is closed (Premature end of data in tag Inventory line 2, line 4, column 1)\""],
         name="GLOBEX_INVENTORY.xml", mapping="globex-xml", late=True),
    Drop("XML without a quantity", GLOBEX_STOCK.format(doctype="", more=(
        '  <Item sku="CST-CORK-4PK"><CountedAt>2026-11-27T04:00:00Z</CountedAt></Item>\n</Inventory>\n')).encode(),
         [",published,,,\"passed the safety gates. 1 SKUs sent, Amazon took 1\"", "4,rejected,CST-CORK-4PK,OnHand,no quantity"],
         name="GLOBEX_INVENTORY.xml", mapping="globex-xml"),
    Drop("XML with a quantity twice in one record", GLOBEX_STOCK.format(doctype="", more=(
        '  <Item sku="CST-CORK-4PK"><OnHand>5</OnHand><OnHand>900</OnHand><CountedAt>2026-11-27T04:00:00Z</CountedAt>'
        '</Item>\n</Inventory>\n')).encode(),
         [",published,,,\"passed the safety gates. 1 SKUs sent, Amazon took 1\"",
          "4,rejected,,,OnHand appears 2 times in this record"],
         name="GLOBEX_INVENTORY.xml", mapping="globex-xml"),
    Drop("XML with another document element", GLOBEX_STOCK.format(doctype="", more="</Inventory>\n").replace(
        "Inventory>", "Stock>").encode(),
         [",rejected,,,\"the document element is <Stock>, not <Inventory>: no Inventory/Item record is in it (the "
          "wrong file, or a wrong record path in the mapping?)\""], name="GLOBEX_INVENTORY.xml", mapping="globex-xml"),
    Drop("a workbook whose quantity is a formula without a saved value", _workbook_with_a_formula(),
         [',published,,,"passed the safety gates. 1 SKUs sent, Amazon took 1"',
          "3,rejected,,,\"'Qty Available': a formula whose value was never saved (the program that wrote the file"
          " does not calculate): open the file in Excel and save it again, or have the values written instead\""],
         name="Inventory.xlsx", mapping="initech-xlsx"),
    Drop("a zip that is not a workbook", _zip_without_workbook(),
         [',rejected,,,"not an XLSX workbook (KeyError: ""There is no item named \'[Content_Types].xml\' in the '
          'archive"")"'],
         name="Inventory.xlsx", mapping="initech-xlsx"),
]



@pytest.fixture
def sandbox():
    from stocking import clocked_sandbox

    with clocked_sandbox() as running:
        yield running


@pytest.mark.parametrize("case", DROP_CASES, ids=[c.id for c in DROP_CASES])
def test_a_bad_stock_file_is_answered_with_the_exact_lines(tmp_path, sshd, sftp_root, sandbox, case):
    from stocking import NOW, STABLE, Stocker, drop, files, load, make_config, result_lines

    # globex's quantities are on hand: its confirmations must come in (a shipments folder)
    config = make_config(tmp_path, sshd, sftp_root, sandbox, case.mapping, shipments=case.mapping == "globex-xml")
    config.write_text(config.read_text() + f"\n[shipments]\nincomplete_limit_minutes = {LIMIT}\n")
    stocker = Stocker(load(config))
    try:
        drop(stocker.remote, case.name, case.data)
        stocker.push()
        if case.late:
            assert files(stocker.remote / case.folder) == {}  # put back, waiting for its writer
            stocker.flow.poll(NOW + STABLE + timedelta(minutes=LIMIT))
        assert result_lines(stocker.remote, case.name) == case.lines
        assert list(files(stocker.remote / case.folder)) == [case.name]
        if case.folder != "processing":  # held: waits there for a person
            assert files(stocker.remote) == files(stocker.remote / "processing") == {}
    finally:
        stocker.close()


def test_a_file_of_many_bad_rows_keeps_few_in_memory_and_its_result_file_names_every_one(
        tmp_path, sshd, sftp_root, sandbox):
    from bridge.edges.scratch import ProblemSpool
    from bridge.formats.stock import ProblemLog
    from stocking import Stocker, drop, load, make_config, result_lines

    with contextlib.closing(ProblemSpool(tmp_path)) as spool:  # the pure part: 50 held, all spooled
        log = ProblemLog(spool)
        counted = tally([Row(n, {"SKU": f"S{n}", "Qty": "x"}) for n in range(2, 1_002)], LAYOUT, MemoryStore(),
                        problems=log)
        assert (len(log), len(log.kept), counted.bad_rows, len(list(log))) == (1_000, 50, 1_000, 1_000)

    stocker = Stocker(load(make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv")))
    try:
        drop(stocker.remote, "BESTAND.csv", acme_file(good(), *(good(f"7{n:05d}", "x") for n in range(300))))
        stocker.push()  # held: most rows are bad
        report = stocker.push(force=True)
        outcome = report.outcomes[0]
        assert (outcome.bad_rows, len(outcome.issues), outcome.issue_counts) == (300, 100, {("file", "ERROR"): 300})
        lines = result_lines(stocker.remote, "BESTAND.csv")
        assert lines[0].startswith(";published;")
        assert lines[1:] == [f"{n};rejected;7{n - 3:05d};Verfügbar;'x' is not a number" for n in range(3, 303)]
    finally:
        stocker.close()


def test_a_first_file_of_zeros_only_is_held_like_a_later_one_would_be(tmp_path, sshd, sftp_root, sandbox):
    from stocking import Stocker, drop, load, make_config

    stocker = Stocker(load(make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv")))
    try:
        drop(stocker.remote, "BESTAND.csv", acme_file(good(quantity="0"), good("300501", "0")))
        outcome = stocker.push().outcomes[0]
        assert (outcome.status, outcome.needs_a_person) == ("held", True)
        assert outcome.reason == ("held: this is the first stock file to publish and 2 of its 2 SKUs (100.0%) are 0, "
                                  "more than the limit of 50% for a first file (e.g. PLT-STN-27CM-4, TEA-INF-SS-01)")
        assert len(sandbox.feeds) == 0
    finally:
        stocker.close()
