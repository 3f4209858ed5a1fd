"""Bad input to the orders flow, and the exact message a person sees for each.

One table per kind of input, each row (case, input, expected message):
- Amazon data → the order is `rejected` with the reason (formats/amazon_orders.py)
- order data → the order is `unrenderable` with the reason (formats/orders.py, a mapping)
- mapping config → the `file: key: why` line `check` and the service print (mapping.py)
- bridge config → the same, for bridge.toml (config.py)
- drop → the error that holds one file (edges/folders.py, edges/sftp.py)
Local state (ledger, spool, key) has its own table. The shipments and stock flows keep theirs
beside this file (test_bad_inputs_shipments.py, test_bad_inputs_stock.py), shaped the same.

A reason never holds the buyer's data: it names the field and the position, not the value.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.edges.folders import FolderDrop
from bridge.edges.sftp import SftpDrop
from bridge.errors import BadRecord, ConfigError, TempNameBlocked
from bridge.formats.amazon_orders import order_from_v0, order_from_v2026
from bridge.formats.orders import render_orders
from bridge.mapping import load_mapping
from bridge.records import Address, Line, Order
from bridge.sandbox.spapi_orders import items_v0, to_v0

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "bridge" / "demo_data" / "sandbox-orders.json"
RUN_TIME = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
SECRETS = {
    "BRIDGE_LWA_CLIENT_ID": "id", "BRIDGE_LWA_CLIENT_SECRET": "secret",
    "BRIDGE_LWA_REFRESH_TOKEN": "token", "BRIDGE_STATE_KEY": "dGVzdC1zdGF0ZS1rZXktMzItYnl0ZXMtbG9uZy0hISE=",
}


# --- Amazon data → rejected ---------------------------------------------------------------------

def seed_order() -> dict:
    """111-0000001-0000001 from the sandbox seed: UNSHIPPED, one line."""
    return copy.deepcopy(json.loads(SEED.read_text(encoding="utf-8"))[0])


def item(field: str, value):
    def change(order: dict) -> None:
        order["orderItems"][0][field] = value
    return change


def cancelled_with(quantity):
    def change(order: dict) -> None:
        order["fulfillment"]["fulfillmentStatus"] = "CANCELLED"
        order["orderItems"][0]["quantityOrdered"] = quantity
    return change


AMAZON_DATA = [
    ("fractional quantity", item("quantityOrdered", 2.7),
     "order 111-0000001-0000001: orderItems[1].quantityOrdered is not a whole number"),
    ("quantity as text", item("quantityOrdered", "2"),
     "order 111-0000001-0000001: orderItems[1].quantityOrdered is not a whole number"),
    ("quantity true", item("quantityOrdered", True),
     "order 111-0000001-0000001: orderItems[1].quantityOrdered is not a whole number"),
    ("negative quantity", item("quantityOrdered", -1),
     "order 111-0000001-0000001: orderItems[1].quantityOrdered is negative"),
    ("zero quantity in an order to send", item("quantityOrdered", 0),
     "order 111-0000001-0000001: orderItems[1].quantityOrdered is 0 in an order that is not cancelled"),
    ("negative quantity in a cancelled order", cancelled_with(-2),
     "order 111-0000001-0000001: orderItems[1].quantityOrdered is negative"),
    ("a newline in the order id is shown escaped", lambda o: o.update(orderId="1\nINFO forged", fulfillment=7),
     "order '1\\nINFO forged': fulfillment is not an object"),
]


@pytest.mark.parametrize("case, change, message", AMAZON_DATA, ids=[c[0] for c in AMAZON_DATA])
def test_amazon_data_is_rejected_with_the_field_named(case, change, message):
    order = seed_order()
    change(order)
    with pytest.raises(BadRecord) as caught:
        order_from_v2026(order)
    assert str(caught.value) == message


@pytest.mark.parametrize("quantity, message", [
    (2.7, "order 111-0000001-0000001: OrderItems[1].QuantityOrdered is not a whole number"),
    (0, "order 111-0000001-0000001: OrderItems[1].QuantityOrdered is 0 in an order that is not cancelled"),
])
def test_v0_quantities_are_checked_the_same_way(quantity, message):
    order = seed_order()
    items = items_v0(order)
    items[0]["QuantityOrdered"] = quantity
    with pytest.raises(BadRecord) as caught:
        order_from_v0(to_v0(order, shipping_address=True, buyer_info=True), items)
    assert str(caught.value) == message


def test_whole_quantities_pass_and_a_cancelled_orders_zero_is_no_reason_to_refuse_it():
    whole = seed_order()
    whole["orderItems"][0]["quantityOrdered"] = 2.0  # a JSON number with a zero fraction
    assert order_from_v2026(whole).lines[0].quantity == 2
    cancelled = seed_order()
    cancelled_with(0)(cancelled)  # Amazon reports 0 units for a cancelled order's lines
    assert order_from_v2026(cancelled).status == "CANCELLED"


# --- order data → unrenderable ------------------------------------------------------------------

def order(order_id: str = "302-1111111-1111111", *, title: str = "Glaskanne 1 Liter", **address) -> Order:
    ship_to = Address(**{"name": "Jürgen Müller", "line1": "Hauptstraße 1", "city": "Köln",
                         "postal_code": "01067", "country_code": "DE", "phone": "+49 221 555", **address})
    return Order(
        order_id=order_id, marketplace_id="A1PA6795UKMFR9",
        purchase_date=datetime(2026, 11, 19, 23, 30, tzinfo=timezone.utc),
        last_updated=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc), status="UNSHIPPED",
        service_level="STANDARD", ship_to=ship_to, currency="EUR", order_total=Decimal("24.90"),
        lines=(Line(order_item_id="50000001", sku="KAN-1", asin="B0TEST", title=title, quantity=1,
                    unit_price=Decimal("24.90"), currency="EUR"),),
    )


def shipped(name: str):
    return load_mapping(ROOT / "mappings" / f"{name}.toml").orders


ORDER_DATA = [
    # formula injection (CSV, formula_guard = "reject", the default)
    ("name starts with =", "acme-csv", order(name="=HYPERLINK(\"http://x\")"),
     'ship_to.name starts with a character a spreadsheet reads as a formula; set formula_guard = "quote" in the mapping to send it as text'),
    ("street starts with +", "acme-csv", order(line1="+1+cmd|' /C calc'!A0"),
     'ship_to.line1 starts with a character a spreadsheet reads as a formula; set formula_guard = "quote" in the mapping to send it as text'),
    ("company starts with -", "acme-csv", order(company="-2+3"),
     'ship_to.company starts with a character a spreadsheet reads as a formula; set formula_guard = "quote" in the mapping to send it as text'),
    ("city starts with @", "acme-csv", order(city="@SUM(1)"),
     'ship_to.city starts with a character a spreadsheet reads as a formula; set formula_guard = "quote" in the mapping to send it as text'),
    ("title starts with =", "acme-csv", order(title="=1+1"),
     'line.title (line 1) starts with a character a spreadsheet reads as a formula; set formula_guard = "quote" in the mapping to send it as text'),
    # control characters and line breaks, in every format
    ("NUL in the street", "acme-csv", order(line1="Haupt\x00straße 1"),
     "ship_to.line1 has a control character at position 6"),
    ("newline in the city", "acme-csv", order(city="Köln\nINFO forged"),
     "ship_to.city has a control character at position 5"),
    ("tab at the start of the name (a formula start too)", "acme-csv", order(name="\tJürgen"),
     "ship_to.name has a control character at position 1"),
    ("carriage return at the start, formula_guard or not", "acme-csv", order(city="\r=1+1"),
     "ship_to.city has a control character at position 1"),
    ("DEL in the title", "acme-csv", order(title="Kanne\x7f"),
     "line.title (line 1) has a control character at position 6"),
    ("C1 control in the name (XML)", "globex-xml", order(name="Jürgen\x85Müller"),
     "ship_to.name has a control character at position 7"),
    ("line separator in the street (XLSX)", "initech-xlsx", order(line1="Haupt\u2028straße"),
     "ship_to.line1 has a control character at position 6"),
    ("carriage return in the title (XLSX)", "initech-xlsx", order(title="Kanne\r"),
     "line.title (line 1) has a control character at position 6"),
    # XLSX cell limit
    ("XLSX cell over 32,767 characters", "initech-xlsx", order(title="x" * 32768),
     "line.title (line 1) is 32768 characters long; an XLSX cell holds at most 32767 (set max_length and truncate to cut it)"),
    # transliteration that leaves something unencodable
    ("a letter without an ASCII spelling", "acme-csv", order(name="Łukasz \ue000"),
     "ship_to.name has a character cp1252 cannot encode at position 8"),
    # file names
    ("order id too long for a file name", "acme-csv", order("111-" + "7" * 250),
     "its file name would be 267 bytes long; the drop takes at most 255 (255 less the temporary suffix)"),
]


@pytest.mark.parametrize("case, mapping, bad, reason", ORDER_DATA, ids=[c[0] for c in ORDER_DATA])
def test_order_data_the_warehouse_must_not_get_holds_that_order_with_the_field_named(case, mapping, bad, reason):
    result = render_orders(shipped(mapping), [bad, order("302-2222222-2222222")], RUN_TIME)
    assert result.failures == {bad.order_id: reason}
    assert [f.order_ids for f in result.files][-1] == ("302-2222222-2222222",)  # the other order goes


def test_ids_that_clean_to_one_file_name_hold_the_second_order():
    result = render_orders(shipped("acme-csv"), [order("111-1/1"), order("111-1_1")], RUN_TIME)
    assert result.failures == {"111-1_1": "its file name ACME_AUF_111-1_1.csv is also the name of order "
                                          "111-1/1's file (their ids differ only in characters a file name cannot hold)"}


def layout_with(mapping: str, **changes):
    return replace(shipped(mapping), **changes)


def test_formula_guard_quote_sends_the_text_with_a_leading_quote_and_off_sends_it_as_it_is(tmp_path):
    text = (ROOT / "mappings" / "acme-csv.toml").read_text(encoding="utf-8")
    cells = {}
    for guard in ("quote", "off"):
        path = tmp_path / f"{guard}.toml"
        path.write_text(text.replace('delimiter = ";"', f'delimiter = ";"\nformula_guard = "{guard}"'), encoding="utf-8")
        result = render_orders(load_mapping(path).orders, [order(name="=1+1", title="-Kanne")], RUN_TIME)
        row = result.files[0].data.decode("cp1252").splitlines()[1].split(";")
        cells[guard] = (row[5], row[15])
    assert cells == {"quote": ("'=1+1", "'-Kanne"), "off": ("=1+1", "-Kanne")}


def test_unprintable_characters_that_are_not_controls_pass():
    result = render_orders(shipped("acme-csv"), [order(name="Jürgen\u00a0Müller", line1="Haupt\u00adstraße 1")], RUN_TIME)
    assert result.failures == {}  # a no-break space and a soft hyphen are text, not control


def test_phone_numbers_ids_and_numbers_are_never_taken_for_formulas():
    result = render_orders(shipped("acme-csv"), [order(phone="+49 221 555")], RUN_TIME)
    assert result.failures == {} and b";+49 221 555;" in result.files[0].data


def test_transliteration_spells_only_the_letters_the_encoding_lacks():
    names = {"Łukasz Wójcik": "Lukasz Wójcik", "Jiří Šťastný": "Jirí Štastný",
             "Şahin Yılmaz": "Sahin Yilmaz", "José": "José", "Jürgen Groß": "Jürgen Groß"}
    for name, written in names.items():
        result = render_orders(shipped("acme-csv"), [order(name=name)], RUN_TIME)
        assert result.failures == {}
        assert f";{written};".encode("cp1252") in result.files[0].data
    # "José" with a combining accent is composed first, then written as cp1252's é
    result = render_orders(shipped("acme-csv"), [order(name="Jose\u0301")], RUN_TIME)
    assert ";José;".encode("cp1252") in result.files[0].data


def test_transliteration_is_checked_against_max_length_after_spelling():
    result = render_orders(shipped("acme-csv"), [order(name="Щ" * 10)], RUN_TIME)  # Щ -> Shch
    assert result.failures == {
        "302-1111111-1111111": "ship_to.name is 40 characters long, the warehouse takes at most 35"}


# --- mapping config → message -------------------------------------------------------------------

GOOD_CSV = """
[orders]
format = "csv"
file_per = "order"
file_name = "ORD_{order_id}.csv"
encoding = "cp1252"
[[orders.columns]]
header = "Name"
source = "ship_to.name"
"""
GOOD_XLSX = GOOD_CSV.replace('format = "csv"', 'format = "xlsx"').replace('encoding = "cp1252"\n', "")

MAPPING_CONFIG = [
    ("unknown formula_guard", GOOD_CSV.replace('encoding = "cp1252"', 'encoding = "cp1252"\nformula_guard = "escape"'),
     "orders.formula_guard: unknown value 'escape' (one of: reject, quote, off)"),
    ("formula_guard in xlsx", GOOD_XLSX.replace('file_name', 'formula_guard = "quote"\nfile_name'),
     "orders.formula_guard: not used by format 'xlsx'"),
    ("unknown unencodable", GOOD_CSV.replace('encoding = "cp1252"', 'encoding = "cp1252"\nunencodable = "ascii"'),
     "orders.unencodable: unknown value 'ascii' (one of: fail, replace, transliterate)"),
    ("unknown column unencodable", GOOD_CSV + 'unencodable = "drop"\n',
     "orders.columns[0].unencodable: unknown value 'drop' (one of: fail, replace, transliterate)"),
    ("column unencodable in xlsx", GOOD_XLSX + 'unencodable = "transliterate"\n',
     "orders.columns[0].unencodable: only for csv columns (XML writes every character, XLSX is Unicode)"),
    ("xlsx max_length over a cell", GOOD_XLSX + "max_length = 40000\n",
     "orders.columns[0].max_length: at most 32767 in an XLSX file (Excel's limit for a cell)"),
    ("per-run name without the date", GOOD_CSV.replace('"order"', '"run"').replace("{order_id}", "{run_time:%H%M%S}"),
     "orders.file_name: {run_time:%H%M%S} must write the full date and time when file_per = 'run' "
     "(e.g. %Y%m%d%H%M%S); it lacks the year, month, day"),
    ("per-run name without the seconds", GOOD_CSV.replace('"order"', '"run"').replace("{order_id}", "{run_time:%Y%m%d%H%M}"),
     "orders.file_name: {run_time:%Y%m%d%H%M} must write the full date and time when file_per = 'run' "
     "(e.g. %Y%m%d%H%M%S); it lacks the seconds"),
]


@pytest.mark.parametrize("case, text, message", MAPPING_CONFIG, ids=[c[0] for c in MAPPING_CONFIG])
def test_a_mapping_problem_is_reported_as_file_key_why(tmp_path, case, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    assert caught.value.problems == [f"{path}: {message}"]


# --- bridge config → message --------------------------------------------------------------------

def bridge_toml(tmp_path: Path, warehouse_extra: str) -> Path:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    key = tmp_path / "key"
    key.write_text("")
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[amazon]
seller_id = "A3TEST"
region = "eu"
marketplaces = ["A1PA6795UKMFR9"]
[[warehouses]]
name = "acme"
mapping = "{ROOT / 'mappings' / 'acme-csv.toml'}"
host = "127.0.0.1"
username = "bridge"
known_hosts = "{known_hosts}"
private_key = "{key}"
orders_folder = "/in"
{warehouse_extra}
""", encoding="utf-8")
    return path


BRIDGE_CONFIG = [
    ("temp_suffix with a slash", 'temp_suffix = "/../x"',
     "warehouses[0].temp_suffix: '/../x': use up to 32 letters, digits, '.', '_', '-' or '~' "
     "(it is added to a file name: no '/' or other path characters)"),
    ("temp_suffix with a backslash", 'temp_suffix = ".p\\\\art"',
     "warehouses[0].temp_suffix: '.p\\\\art': use up to 32 letters, digits, '.', '_', '-' or '~' "
     "(it is added to a file name: no '/' or other path characters)"),
    ("empty temp_suffix", 'temp_suffix = ""',
     "warehouses[0].temp_suffix: must not be empty: files are uploaded under a temporary name"),
]


@pytest.mark.parametrize("case, line, message", BRIDGE_CONFIG, ids=[c[0] for c in BRIDGE_CONFIG])
def test_a_bridge_config_problem_is_reported_as_file_key_why(tmp_path, case, line, message):
    path = bridge_toml(tmp_path, line)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=SECRETS)
    assert caught.value.problems == [f"{path}: {message}"]


# --- drop → message -----------------------------------------------------------------------------

def plant_link(folder: Path, name: str, target: Path) -> None:
    os.symlink(target, folder / name)


DROP = [
    ("a link planted as the temporary name", "link",
     "/in/o1.csv.part in {where} is a symbolic link; the bridge never writes through a link or replaces "
     "anything but a regular file it left. Find out who put it there, remove it, and the file goes on the "
     "next run (the drop's other files still go)"),
    ("a dangling link", "dangling",
     "/in/o1.csv.part in {where} is a symbolic link; the bridge never writes through a link or replaces "
     "anything but a regular file it left. Find out who put it there, remove it, and the file goes on the "
     "next run (the drop's other files still go)"),
    ("a folder as the temporary name", "folder",
     "/in/o1.csv.part in {where} is a folder; the bridge never writes through a link or replaces "
     "anything but a regular file it left. Find out who put it there, remove it, and the file goes on the "
     "next run (the drop's other files still go)"),
]


@pytest.mark.parametrize("case, planted, message", DROP, ids=[c[0] for c in DROP])
def test_a_temporary_name_the_bridge_may_not_replace_blocks_that_file(tmp_path, case, planted, message):
    (tmp_path / "drop" / "in").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"not the bridge's")
    part = tmp_path / "drop" / "in" / "o1.csv.part"
    if planted == "folder":
        part.mkdir()
    else:
        part.symlink_to(victim if planted == "link" else tmp_path / "nowhere")
    drop = FolderDrop(tmp_path / "drop")
    with pytest.raises(TempNameBlocked) as caught:
        drop.put_bytes(b"order", "/in/o1.csv.part")
    assert str(caught.value) == message.format(where=tmp_path / "drop")
    assert victim.read_bytes() == b"not the bridge's" and not (tmp_path / "nowhere").exists()
    drop.put_bytes(b"order", "/in/o2.csv.part")  # the drop's other files still go


def test_over_sftp_the_same_message_names_the_server(sshd, sftp_root, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"not the bridge's")
    (sftp_root / "o1.csv.part").symlink_to(victim)
    with SftpDrop(sshd.endpoint, attempts=1) as drop, pytest.raises(TempNameBlocked) as caught:
        drop.put_bytes(b"order", f"{sftp_root}/o1.csv.part")
    where = f"sftp {sshd.endpoint.username}@[127.0.0.1]:{sshd.port}"
    assert str(caught.value).startswith(f"{sftp_root}/o1.csv.part in {where} is a symbolic link; ")
    assert victim.read_bytes() == b"not the bridge's"
