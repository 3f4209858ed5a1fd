"""The readers and the row rules are total: whatever bytes arrive, reading a file (completeness
check, rows, shipment lines and packages, stock levels) either answers each row or refuses the
file as a whole with BadFile. Nothing else may come out: any other exception would stop the
pipeline on one hostile cell.

A fuzz test, deterministic (fixed seeds): each shipped mapping's golden file, for each format,
mutated many times with values known to break naive parsers (superscript digits, 5,000 digits,
the year 1 and 9999 across a time zone, control characters, entity references, odd XLSX cell
types), bytes deleted, repeated and cut off.
"""

from __future__ import annotations

import io
import random
import re
import zipfile
from datetime import datetime, timezone

import pytest

from bridge.errors import BadFile
from bridge.formats.inbound import incomplete_reason
from bridge.formats.readers import read_rows
from bridge.formats.shipments import OrderFacts, parse_rows, plan
from bridge.formats.stock import MemoryStore, stock_levels, tally
from bridge.mapping import load_mapping
from bridge.records import Line
from harness import MAPPINGS, SAMPLES

NOW = datetime(2026, 11, 20, 18, 0, tzinfo=timezone.utc)
ROUNDS = 120  # mutated files per golden file
EVIL = ["²", "٣", "⁹", "9" * 5000, "-1", "0", "1e308", "NaN", "inf", "1_000", "0x10", " 2 ", "1.5", "2,5",
        "1.000.0", "01.01.0001 00:30", "31.12.9999 23:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59",
        "0001-01-01", "29.02.2025 10:00", "\x00", "\u2028", "\x85", "\ufeff", "😀", "Ä", "=HYPERLINK(\"x\")",
        "", " ", "x" * 70_000, "302-0000003-0000003", "111-0000002-0000002", "Other", "DHL_PAKET", "\t",
        "\"", "'", ";", ",", "\r", "\n", "Jennifer Alvarez", "1Z" + "0" * 38, "9405511899223190000000"]
XML_EVIL = ["&amp;", "&#0;", "&#x1F600;", "&undefined;", "<", "]]>", "<![CDATA[\u2028]]>", "<x/>", "&#1114111;"]


def golden(mapping: str, flow: str) -> bytes:
    folder = SAMPLES / mapping / flow
    [path] = [p for p in folder.iterdir() if p.is_file() and p.suffix in (".csv", ".xml", ".xlsx")]
    return path.read_bytes()


def replace_value(data: bytes, rng: random.Random, xml: bool) -> bytes:
    """One value (a CSV field, an XML text or attribute) replaced by an evil one, whole."""
    evil = rng.choice(EVIL).encode(rng.choice(["utf-8", "cp1252"]), "replace")
    if xml:
        evil = evil.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b'"', b"&quot;")
        spans = [m.span(1) for m in re.finditer(rb">([^<>]+)<", data)] + \
            [m.span(1) for m in re.finditer(rb'="([^"]*)"', data)]
    else:
        spans = [m.span() for m in re.finditer(rb"[^;,\t\r\n]+", data)]
    if not spans:
        return data
    start, end = rng.choice(spans)
    return data[:start] + evil + data[end:]


def mutate(data: bytes, rng: random.Random, xml: bool) -> bytes:
    """One to three edits: a value replaced or an evil one put anywhere, bytes removed,
    repeated or cut."""
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.35:
            data = replace_value(data, rng, xml)
        elif kind < 0.6:
            evil = rng.choice(EVIL + (XML_EVIL if xml else []))
            if xml and rng.random() < 0.7 and evil not in XML_EVIL:
                evil = evil.replace("&", "&amp;").replace("<", "&lt;")
            at = rng.randrange(len(data) + 1)
            length = rng.randint(0, 25)
            data = data[:at] + evil.encode(rng.choice(["utf-8", "utf-8", "cp1252", "latin-1"]), "replace") \
                + data[at + length:]
        elif kind < 0.75:
            at = rng.randrange(len(data) + 1)
            data = data[:at] + data[at + rng.randint(1, 200):]
        elif kind < 0.9:
            at = rng.randrange(len(data) + 1)
            end = at + rng.randint(1, 300)
            data = data[:end] + data[at:end] * rng.randint(1, 3) + data[end:]
        else:
            data = data[:rng.randrange(len(data) + 1)]
    return data


def mutate_workbook(data: bytes, rng: random.Random) -> bytes:
    """The workbook's XML parts mutated (as text), and sometimes its cells' types and
    references made odd; the zip itself stays whole, so openpyxl gets as far as the cells."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        parts = {info.filename: archive.read(info) for info in archive.infolist()}
    targets = [name for name in parts if name.startswith("xl/") and name.endswith(".xml")]
    name = rng.choice(targets + [n for n in targets if "sheet" in n or "sharedStrings" in n] * 3)
    text = parts[name]
    if rng.random() < 0.5:
        odd = rng.choice([rb' t="n"', rb' t="d"', rb' t="b"', rb' t="e"', rb' t="inlineStr"', rb' s="999"',
                          rb' r="XFD1"', rb' r="A99999999"', rb' r="A0"', rb' r="1A"'])
        text = re.sub(rb"<c ", b"<c" + odd + b" ", text, count=rng.randint(1, 5))
    parts[name] = mutate(text, rng, xml=True)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for part, content in parts.items():
            archive.writestr(part, content)
    return out.getvalue()


def variants(data: bytes, fmt: str, seed: int):
    rng = random.Random(seed)
    for _ in range(ROUNDS):
        yield mutate_workbook(data, rng) if fmt == "xlsx" and rng.random() < 0.85 else mutate(data, rng, fmt == "xml")


def facts_from(layout, data: bytes):
    """Orders as the ledger would know them: every order and item of the unmutated file, with
    room for more units than it ships."""
    orders: dict[str, dict[str, int]] = {}
    for line in parse_rows(read_rows(io.BytesIO(data), layout.table), layout):
        orders.setdefault(line.order_id, {})[line.item] = 50
    by_sku = layout.item_field == "sku"

    def facts(order_id: str) -> OrderFacts | None:
        items = orders.get(order_id)
        if items is None:
            return None
        return OrderFacts(order_id, "ATVPDKIKX0DER", datetime(2026, 11, 19, tzinfo=timezone.utc), tuple(
            Line(f"{n:014d}" if by_sku else item, item if by_sku else f"SKU-{n}", "B0", "x", units)
            for n, (item, units) in enumerate(items.items())), "wh")
    return facts


def read_through_shipments(data: bytes, layout, facts) -> None:
    stream = io.BytesIO(data)
    incomplete_reason(stream, layout.table)
    result = plan(parse_rows(read_rows(stream, layout.table), layout), facts, "wh", NOW, zone=layout.timezone)
    for line in result.lines:  # every row has its answer: in a package, or a result and a message
        assert line.row in result.package_rows or result.outcomes[line.row][1]


def read_through_stock(data: bytes, layout) -> None:
    stream = io.BytesIO(data)
    incomplete_reason(stream, layout.table)
    store = MemoryStore()
    counted = tally(read_rows(stream, layout.table), layout, store)
    list(stock_levels(store.sorted_parts(), layout, {}, counted.problems))
    for problem in counted.problems:
        assert len(str(problem)) < 500  # a 5,000-digit cell is not echoed whole


SHIPMENT_MAPPINGS = [("acme-csv", "csv"), ("globex-xml", "xml"), ("initech-xlsx", "xlsx")]


@pytest.mark.parametrize("mapping, fmt", SHIPMENT_MAPPINGS, ids=[m for m, _ in SHIPMENT_MAPPINGS])
def test_a_confirmation_file_gives_row_problems_or_bad_file_never_anything_else(mapping, fmt):
    layout = load_mapping(MAPPINGS / f"{mapping}.toml").shipments
    data = golden(mapping, "shipments")
    facts = facts_from(layout, data)
    outcomes = {"read": 0, "refused": 0}
    for number, variant in enumerate(variants(data, fmt, seed=7)):
        try:
            read_through_shipments(variant, layout, facts)
            outcomes["read"] += 1
        except BadFile:
            outcomes["refused"] += 1
        except Exception as problem:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"variant {number} of {mapping}: {type(problem).__name__}: {str(problem)[:200]}")
    assert outcomes["read"] and outcomes["refused"]  # both paths were exercised


@pytest.mark.parametrize("mapping, fmt", SHIPMENT_MAPPINGS, ids=[m for m, _ in SHIPMENT_MAPPINGS])
def test_a_stock_file_gives_row_problems_or_bad_file_never_anything_else(mapping, fmt):
    layout = load_mapping(MAPPINGS / f"{mapping}.toml").stock
    data = golden(mapping, "stock")
    outcomes = {"read": 0, "refused": 0}
    for number, variant in enumerate(variants(data, fmt, seed=11)):
        try:
            read_through_stock(variant, layout)
            outcomes["read"] += 1
        except BadFile:
            outcomes["refused"] += 1
        except Exception as problem:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"variant {number} of {mapping}: {type(problem).__name__}: {str(problem)[:200]}")
    assert outcomes["read"] and outcomes["refused"]


@pytest.mark.parametrize("value, why", [
    ("²", "Menge: a value of 1 character is not a whole number of units"),
    ("9" * 5000, "Menge: a value of 5,000 characters is more units than any parcel holds"),
])
def test_a_quantity_python_would_refuse_is_a_row_problem(value, why):
    layout = load_mapping(MAPPINGS / "acme-csv.toml").shipments
    data = ("Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n"
            f"302-0000003-0000003;KAN-GLAS-1L;{value};DHL_PAKET;00340434161094042557;20.11.2026 16:45\r\n").encode("cp1252")
    [line] = parse_rows(read_rows(io.BytesIO(data), layout.table), layout)
    assert line.problems == (why,)
