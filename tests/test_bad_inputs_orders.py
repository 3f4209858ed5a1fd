"""Bad input to the orders flow, and the exact message a person sees for each.

One table per kind of input, each row (case, input, expected message):
- Amazon data → the order is `rejected` with the reason (formats/amazon_orders.py)
- order data → the order is `unrenderable` with the reason (formats/orders.py, a mapping)
- mapping config → the `file: key: why` line `check` and the service print (mapping.py)
- bridge config → the same, for bridge.toml (config.py)
- drop → the error that holds one file (edges/folders.py, edges/sftp.py)
Local state (ledger, spool, key, credentials) and `preview` have their own tables too. The shipments and stock flows keep theirs
beside this file (test_bad_inputs_shipments.py, test_bad_inputs_stock.py), shaped the same.

Amazon misbehaving on the wire (sandbox faults: AMAZON_DATA_V2026/V0, AMAZON_ANSWERS,
HELD_ORDER_ANSWERS, CHECK_ANSWERS) has its tables at the end.

A reason never holds the buyer's data: it names the field and the position, not the value.
"""

from __future__ import annotations

import copy
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config import load_settings
from bridge.edges.folders import FolderDrop
from bridge.edges.sftp import SftpDrop
from bridge.errors import BadRecord, ConfigError, FixTheSetup, HostKeyMismatch, SftpAuthError, SftpUnavailable, TempNameBlocked
from bridge.formats.amazon_orders import order_from_v0, order_from_v2026
from bridge.flows.orders import NOT_FOUND, UNUSABLE_ANSWER
from bridge.formats.orders import render_orders
from bridge.ledger import OrderStatus
from bridge.mapping import load_mapping
from bridge.records import Address, Line, Order
from bridge.sandbox.spapi import load_seed
from bridge.sandbox.spapi_orders import items_v0, to_v0
from harness import MAPPINGS, REPO, SAMPLES, SECRETS, Bridge, load, sftp_warehouse, write_config, write_mapping

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "bridge" / "demo_data" / "sandbox-orders.json"
RUN_TIME = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)

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
    ("quantity 1e308 (a whole float of 309 digits)", item("quantityOrdered", 1e308),
     "order 111-0000001-0000001: orderItems[1].quantityOrdered is more than 1000000 units"),
    ("quantity over a million", item("quantityOrdered", 1_000_001),
     "order 111-0000001-0000001: orderItems[1].quantityOrdered is more than 1000000 units"),
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
        write_mapping(path, text.replace('delimiter = ";"', f'delimiter = ";"\nformula_guard = "{guard}"', 1))
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
    ("decimal_separator ';'", GOOD_CSV.replace('encoding = "cp1252"', 'encoding = "cp1252"\ndecimal_separator = ";"'),
     "orders.decimal_separator: unknown value ';' (one of: '.', ',')"),
    ("a typo in a column's key names the column's header", GOOD_CSV + "max_lenght = 35\n",
     "orders.columns[0] (header 'Name').max_lenght: unknown key (known: decimals, default, format, header, map,"
     " max_length, source, truncate, unencodable, value)"),
    ("a typo in a service level of a map", GOOD_CSV + '[[orders.columns]]\nheader = "Versand"\n'
     'source = "order.service_level"\nmap = { STANDART = "DHL_PAKET", EXPEDITED = "DHL_EXPRESS" }\n',
     "orders.columns[1] (header 'Versand').map.STANDART: 'STANDART' is not one of Amazon's values for"
     " order.service_level: 'STANDARD'? (Amazon sends EXPEDITED, FREE_ECONOMY, NEXT_DAY, PRIORITY, SAME_DAY,"
     " SECOND_DAY, SCHEDULED, STANDARD)"),
    ("unknown formula_guard", GOOD_CSV.replace('encoding = "cp1252"', 'encoding = "cp1252"\nformula_guard = "escape"'),
     "orders.formula_guard: unknown value 'escape' (one of: reject, quote, off)"),
    ("formula_guard in xlsx", GOOD_XLSX.replace('file_name', 'formula_guard = "quote"\nfile_name'),
     "orders.formula_guard: not used by format 'xlsx'"),
    ("unknown unencodable", GOOD_CSV.replace('encoding = "cp1252"', 'encoding = "cp1252"\nunencodable = "ascii"'),
     "orders.unencodable: unknown value 'ascii' (one of: fail, replace, transliterate)"),
    ("unknown column unencodable", GOOD_CSV + 'unencodable = "drop"\n',
     "orders.columns[0] (header 'Name').unencodable: unknown value 'drop' (one of: fail, replace, transliterate)"),
    ("column unencodable in xlsx", GOOD_XLSX + 'unencodable = "transliterate"\n',
     "orders.columns[0] (header 'Name').unencodable: only for csv columns (XML writes every character, XLSX is Unicode)"),
    ("xlsx max_length over a cell", GOOD_XLSX + "max_length = 40000\n",
     "orders.columns[0] (header 'Name').max_length: at most 32767 in an XLSX file (Excel's limit for a cell)"),
    ("per-run name without the date", GOOD_CSV.replace('"order"', '"run"').replace("{order_id}", "{run_time:%H%M%S}"),
     "orders.file_name: {run_time:%H%M%S} must write the full date and time when file_per = 'run' "
     "(e.g. %Y%m%d%H%M%S); it lacks the year, month, day"),
    ("per-run name without the seconds", GOOD_CSV.replace('"order"', '"run"').replace("{order_id}", "{run_time:%Y%m%d%H%M}"),
     "orders.file_name: {run_time:%Y%m%d%H%M} must write the full date and time when file_per = 'run' "
     "(e.g. %Y%m%d%H%M%S); it lacks the seconds"),
]


def test_a_map_value_amazon_may_add_later_is_let_be(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(GOOD_CSV + '[[orders.columns]]\nheader = "Versand"\nsource = "order.service_level"\n'
                    'map = { STANDARD = "DHL_PAKET", DRONE_DELIVERY = "DRONE" }\n', encoding="utf-8")
    assert load_mapping(path).orders.columns[1].map == (("STANDARD", "DHL_PAKET"), ("DRONE_DELIVERY", "DRONE"))


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
    ("orders.start a year ahead (a typo in the year)", '[orders]\nstart = "2027-11-29T12:00:00Z"',
     "orders.start: 2027-11-29T12:00:00Z is in the future (this machine's clock says 2026-11-29T12:00:00Z):"
     " nothing would be pulled until then; give a past time, e.g. the last update of the oldest order"
     " still to ship"),
    ("orders.start without a zone, read as UTC, ahead", '[orders]\nstart = "2026-11-29 12:06"',
     "orders.start: 2026-11-29T12:06:00Z is in the future (this machine's clock says 2026-11-29T12:00:00Z):"
     " nothing would be pulled until then; give a past time, e.g. the last update of the oldest order"
     " still to ship"),
]
CONFIG_NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)  # the clock, as load_settings is given it


@pytest.mark.parametrize("mapping, why", [("mappings/acme.toml", "does not exist"), (".", "is a folder")])
def test_a_mapping_path_that_names_no_file_is_reported_at_its_key(tmp_path, mapping, why):
    path = bridge_toml(tmp_path, "")
    path.write_text(path.read_text().replace(f'mapping = "{ROOT / "mappings" / "acme-csv.toml"}"', f'mapping = "{mapping}"'))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=SECRETS, now=CONFIG_NOW)
    assert caught.value.problems == [
        f"{path}: warehouses[0].mapping: {(tmp_path / mapping).resolve() if mapping == '.' else tmp_path / mapping}"
        f" {why} (relative paths are from the config's folder, {tmp_path})"]


@pytest.mark.parametrize("case, line, message", BRIDGE_CONFIG, ids=[c[0] for c in BRIDGE_CONFIG])
def test_a_bridge_config_problem_is_reported_as_file_key_why(tmp_path, case, line, message):
    path = bridge_toml(tmp_path, line)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=SECRETS, now=CONFIG_NOW)
    assert caught.value.problems == [f"{path}: {message}"]


def test_a_secret_file_that_cannot_be_read_is_reported_once_not_also_as_not_set(tmp_path):
    path = bridge_toml(tmp_path, "")
    (tmp_path / "known_hosts").write_text("")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "BRIDGE_LWA_CLIENT_SECRET").write_bytes("secret".encode("utf-16"))
    environ = {**SECRETS, "CREDENTIALS_DIRECTORY": str(credentials)}
    del environ["BRIDGE_LWA_CLIENT_SECRET"]

    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ, now=CONFIG_NOW)

    assert caught.value.problems == [
        f"{path}: amazon: secret BRIDGE_LWA_CLIENT_SECRET in {credentials}/BRIDGE_LWA_CLIENT_SECRET is not UTF-8"
        " text: write the secret again as plain text"]


@pytest.mark.parametrize("start", ["2026-11-29T12:05:00Z", "2026-11-29T11:00:00+01:00", "2026-11-01T00:00:00Z"])
def test_an_orders_start_up_to_five_minutes_ahead_of_the_clock_is_accepted(tmp_path, start):
    path = bridge_toml(tmp_path, f'[orders]\nstart = "{start}"')
    settings = load_settings(path, environ=SECRETS, now=CONFIG_NOW)
    assert settings.orders.start <= CONFIG_NOW + timedelta(minutes=5)


# --- known_hosts → message: at load (check, pull, status, the service) and in the SFTP edge ------

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@vm"
KNOWN_HOSTS = [
    ("the host's .pub file (no host name)", PUB.encode() + b"\n",
     "{kh} line 1: the line starts with the key type: the host name is missing (a host's .pub file?);"
     " write the host first, `[host]:port` for a port other than 22, as ssh-keyscan prints it"),
    ("a line of text after a good one", b"# pinned\n[127.0.0.1]:2222 " + PUB.encode() + b"\nsee the wiki\n",
     "{kh} line 3: not a known_hosts line: expected `HOST KEYTYPE KEY`, as ssh-keyscan prints it"),
    ("a key cut short", b"[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnk\n",
     "{kh} line 1: the ssh-ed25519 key is not valid base64 (cut short, or wrapped onto two lines?)"),
    ("a marker line", b"@cert-authority *.example.com " + PUB.encode() + b"\n",
     "{kh} line 1: markers like @cert-authority are not supported: pin the server's own key, as ssh-keyscan"
     " prints it"),
    ("UTF-16", ("[127.0.0.1]:2222 " + PUB + "\n").encode("utf-16"),
     "{kh} is not UTF-8 text (saved as UTF-16 or \"Unicode\" by an editor?): write it again as plain text,"
     " one `HOST KEYTYPE KEY` line per key, as ssh-keyscan prints them"),
    ("a byte order mark", ("\ufeff[127.0.0.1]:2222 " + PUB + "\n").encode(),
     "{kh} starts with a byte order mark (saved as \"UTF-8 with BOM\"?): save it as plain UTF-8"),
    ("a folder", None, "{kh} is a folder; give the known_hosts file in it"),
]


def plant_known_hosts(tmp_path: Path, content: bytes | None) -> Path:
    known_hosts = tmp_path / "known_hosts"
    if content is None:
        known_hosts.unlink(missing_ok=True)
        known_hosts.mkdir()
    else:
        known_hosts.write_bytes(content)
    return known_hosts


@pytest.mark.parametrize("case, content, message", KNOWN_HOSTS, ids=[c[0] for c in KNOWN_HOSTS])
def test_a_malformed_known_hosts_is_named_with_its_line_at_load(tmp_path, case, content, message):
    path = bridge_toml(tmp_path, "")
    known_hosts = plant_known_hosts(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=SECRETS)
    assert caught.value.problems == [f"{path}: warehouses[0].known_hosts: {message.format(kh=known_hosts)}"]


@pytest.mark.parametrize("command", [["check"], ["orders", "pull"], ["status"]])
def test_check_pull_and_status_say_it_in_one_line_and_exit_2(tmp_path, capsys, monkeypatch, command):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    path = bridge_toml(tmp_path, "")
    known_hosts = plant_known_hosts(tmp_path, PUB.encode() + b"\n")

    status = main(["--config", str(path), *command])

    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.splitlines() == ["configuration is not valid:",
                                f"  {path}: warehouses[0].known_hosts: {known_hosts} line 1: the line starts with"
                                " the key type: the host name is missing (a host's .pub file?); write the host"
                                " first, `[host]:port` for a port other than 22, as ssh-keyscan prints it"]


def test_a_known_hosts_broken_after_load_is_named_by_the_sftp_edge(sshd, tmp_path):
    known_hosts = plant_known_hosts(tmp_path, PUB.encode() + b"\n")
    endpoint = replace(sshd.endpoint, known_hosts=known_hosts)
    with pytest.raises(FixTheSetup) as caught, SftpDrop(endpoint, attempts=1) as drop:
        drop.check()
    assert str(caught.value) == (
        f"cannot read known_hosts: {known_hosts} line 1: the line starts with the key type: the host name is"
        " missing (a host's .pub file?); write the host first, `[host]:port` for a port other than 22, as"
        " ssh-keyscan prints it")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_port_nothing_listens_on_is_said_in_words(sshd):
    port = free_port()
    with pytest.raises(SftpUnavailable) as caught, SftpDrop(replace(sshd.endpoint, port=port), attempts=1) as drop:
        drop.check()
    assert str(caught.value) == (
        f"sftp {sshd.endpoint.username}@[127.0.0.1]:{port}: check failed after 1 attempts: nothing accepts"
        f" connections at 127.0.0.1 port {port} (connection refused): check host and port, and that the server runs")


def test_a_known_hosts_entry_without_the_port_is_pointed_out(sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.server.host_key_line.replace(f"[127.0.0.1]:{sshd.port}", "127.0.0.1") + "\n")
    with pytest.raises(HostKeyMismatch) as caught, \
            SftpDrop(replace(sshd.endpoint, known_hosts=known_hosts), attempts=1) as drop:
        drop.check()
    assert str(caught.value).startswith(
        f"host [127.0.0.1]:{sshd.port} is not in known_hosts {known_hosts}; it has an entry for 127.0.0.1 without"
        f" the port, which is port 22's: for port {sshd.port} the line begins [127.0.0.1]:{sshd.port}; verify its"
        f" key out of band and add it: ssh-keyscan -p {sshd.port} 127.0.0.1 (check the fingerprint ")


def test_a_public_key_given_as_the_private_key_is_named_as_such(sshd, tmp_path):
    public = tmp_path / "id_ed25519.pub"
    shutil.copy(f"{sshd.client_key}.pub", public)
    with pytest.raises(SftpAuthError) as caught, SftpDrop(replace(sshd.endpoint, private_key=public), attempts=1) as drop:
        drop.check()
    assert str(caught.value) == (
        f"private key {public} is a public key (the .pub half): give the private half, the file without .pub")


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

ACME = MAPPINGS / "acme-csv.toml"


def sample_orders() -> list[dict]:
    return json.loads((SAMPLES / "orders.json").read_text(encoding="utf-8"))


def broken(change) -> list[dict]:
    orders = sample_orders()
    change(orders)
    return orders


# --- preview: the orders file and the mapping given to `fbm-bridge preview` --------------------
# A file that is not a list of orders, or a mapping that is not valid: exit 2, one clear message.

PREVIEW_FILES = [
    ("not JSON", b"[{\"order_id\": ", "{orders}: not JSON: Expecting value (line 1, column 15)"),
    ("not UTF-8", b"\xff\xfe[]", "{orders}: not UTF-8 text; an orders file is JSON"),
    ("an object", b'{"order_id": "1"}',
     "{orders}: expected a JSON list of orders (records like samples/orders.json, or Amazon's searchOrders"
     ' Order objects) or a searchOrders answer {{"orders": [...]}}, not a JSON object'),
    ("a number", b"42",
     "{orders}: expected a JSON list of orders (records like samples/orders.json, or Amazon's searchOrders"
     ' Order objects) or a searchOrders answer {{"orders": [...]}}, not a number'),
    ("empty list", b"[]", "{orders}: holds no orders"),
    ("unknown kind", b'[{"id": "1"}]',
     "{orders}: orders[0] is neither a records order (with 'order_id', like samples/orders.json)"
     " nor an Amazon searchOrders Order (with 'orderId')"),
    ("missing file", None, "{orders}: cannot read the orders file (No such file or directory)"),
    ("nested 100,000 deep", b"[" * 100_000, "{orders}: not an orders file: its lists or objects are nested too deeply to read"),
    ("a number of 5,000 digits", b"[" + b"1" * 5000 + b"]",
     "{orders}: not an orders file: it holds a number too long to read"),
]


@pytest.mark.parametrize("case, content, message", PREVIEW_FILES, ids=[c[0] for c in PREVIEW_FILES])
def test_preview_refuses_a_file_that_is_not_a_list_of_orders(capsys, tmp_path, case, content, message):
    orders = tmp_path / "orders.json"
    if content is not None:
        orders.write_bytes(content)

    status = main(["preview", "--mapping", str(ACME), "--orders", str(orders)])

    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err == "fbm-bridge: " + message.format(orders=orders) + "\n"


PREVIEW_ORDERS = [
    ("records order without lines", broken(lambda o: o[0].pop("lines")),
     "cannot read orders[0]: order 111-0000001-0000001: missing field 'lines'"),
    ("records order with an unknown field", broken(lambda o: o[0].update(zip_code="43215")),
     "cannot read orders[0]: order 111-0000001-0000001: unknown field 'zip_code'"),
    ("records order with a bad date", broken(lambda o: o[0].update(purchase_date="yesterday")),
     "cannot read orders[0]: order 111-0000001-0000001: a field holds a value that cannot be read"
     " (ValueError; dates are ISO 8601, amounts decimal text)"),
    ("records line with an unknown field", broken(lambda o: o[0]["lines"][0].update(colour="blue")),
     "cannot read orders[0]: order 111-0000001-0000001: unknown field 'colour'"),
    ("not an object", broken(lambda o: o.append("111-0000009-0000009")), "cannot read orders[5]: not a JSON object"),
    ("a different kind after the first", broken(lambda o: o.append({"orderId": "111-0000009-0000009"})),
     "cannot read orders[5]: no 'order_id': not an order of the same kind as the first (records)"),
    ("records quantity NaN", broken(lambda o: o[0]["lines"][0].update(quantity="NaN")),
     "cannot read orders[0]: order 111-0000001-0000001: lines[1].quantity is not a whole number"),
    ("records quantity 0", broken(lambda o: o[0]["lines"][0].update(quantity=0)),
     "cannot read orders[0]: order 111-0000001-0000001: lines[1].quantity is 0 in an order that is not cancelled"),
    ("records quantity of 1e308", broken(lambda o: o[0]["lines"][0].update(quantity=10 ** 308)),
     "cannot read orders[0]: order 111-0000001-0000001: lines[1].quantity is more than 1000000 units"),
    ("records unit price NaN", broken(lambda o: o[0]["lines"][0].update(unit_price="NaN")),
     "cannot read orders[0]: order 111-0000001-0000001: lines[1].unit_price is not a number"),
    ("records total Infinity", broken(lambda o: o[0].update(order_total="Infinity")),
     "cannot read orders[0]: order 111-0000001-0000001: order_total is not a number"),
    ("records id with a newline", broken(lambda o: o[0].update(order_id="111-1\nINFO forged", lines=[{}])),
     "cannot read orders[0]: order '111-1\\nINFO forged': missing field 'order_item_id', 'sku', 'asin', 'title',"
     " and 'quantity'"),
    ("Amazon quantity 1e308", [{**json.loads((SAMPLES.parent / "bridge" / "demo_data" / "sandbox-orders.json")
                                             .read_text())[0], "orderItems": [{**json.loads(
        (SAMPLES.parent / "bridge" / "demo_data" / "sandbox-orders.json").read_text())[0]["orderItems"][0],
        "quantityOrdered": 1e308}]}],
     "cannot read orders[0]: order 111-0000001-0000001: orderItems[1].quantityOrdered is more than 1000000 units"),
    ("Amazon order without createdTime", [{**json.loads((SAMPLES.parent / "bridge" / "demo_data" / "sandbox-orders.json")
                                                       .read_text())[0], "createdTime": None}],
     "cannot read orders[0]: order 111-0000001-0000001: createdTime is missing"),
]


@pytest.mark.parametrize("case, orders, line", PREVIEW_ORDERS, ids=[c[0] for c in PREVIEW_ORDERS])
def test_preview_names_each_order_it_cannot_read_lays_out_the_rest_and_exits_2(capsys, tmp_path, case, orders, line):
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(orders), encoding="utf-8")

    status = main(["preview", "--mapping", str(ACME), "--orders", str(path), "--now", "2026-11-20T12:30:00Z"])

    out, err = capsys.readouterr()
    assert status == 2
    assert [text.strip() for text in out.splitlines() if "cannot read" in text] == [line]
    assert err == f"fbm-bridge: 1 order(s) in {path} cannot be read (listed above)\n"
    readable = len(orders) - 1
    assert f"orders_laid_out={readable}" in out.splitlines()[-1]


def test_preview_shows_an_order_id_with_a_newline_escaped(capsys, tmp_path):
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(broken(lambda o: o[0].update(order_id="111-1\nINFO forged line"))[:1]))

    status = main(["preview", "--mapping", str(ACME), "--orders", str(path), "--now", "2026-11-20T12:30:00Z"])

    out, _ = capsys.readouterr()
    assert status == 0
    assert "  would not lay out '111-1\\nINFO forged line': order.id has a control character at position 6" in out
    assert not any(line.startswith("INFO") for line in out.splitlines())


def test_preview_of_a_copied_mapping_warns_of_its_stock_sku_map_left_behind_and_lays_out_the_orders(capsys, tmp_path):
    copy_ = tmp_path / "m.toml"
    copy_.write_text(ACME.read_text(encoding="utf-8"), encoding="utf-8")  # acme-skus.csv not copied along

    status = main(["preview", "--mapping", str(copy_), "--orders", str(SAMPLES / "orders.json"),
                   "--now", "2026-11-20T12:30:00Z", "--out", str(tmp_path / "out")])

    out, err = capsys.readouterr()
    assert status == 0 and err == ""
    assert out.splitlines()[2] == (
        f"  warning: {copy_}: stock.sku_map: file '{tmp_path / 'acme-skus.csv'}' not found (preview lays out"
        " orders only; `check` and the service refuse the mapping until this is fixed)")
    written = {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()}
    assert written == {path.name: path.read_bytes() for path in (SAMPLES / "acme-csv").iterdir() if path.is_file()}
    with pytest.raises(ConfigError):
        load_mapping(copy_)  # everything else still refuses it


PREVIEW_MAPPINGS = [
    ("missing", None, ["{mapping}: file: cannot read (No such file or directory)"]),
    ("not TOML", "format = ", ["{mapping}: syntax: Invalid value (at end of document)"]),
    ("unknown source", '[orders]\nformat = "csv"\nfile_per = "order"\nfile_name = "o_{order_id}.csv"\n'
                       '[[orders.columns]]\nheader = "Zip"\nsource = "ship_to.zip"\n',
     None),  # mapping.py's own message, its list of known fields grows: only its start is checked
]


@pytest.mark.parametrize("case, text, messages", PREVIEW_MAPPINGS, ids=[c[0] for c in PREVIEW_MAPPINGS])
def test_preview_with_a_bad_mapping_lists_its_problems_and_exits_2(capsys, tmp_path, case, text, messages):
    mapping = tmp_path / "mapping.toml"
    if text is not None:
        mapping.write_text(text)

    status = main(["preview", "--mapping", str(mapping), "--orders", str(SAMPLES / "orders.json")])

    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == "configuration is not valid:"
    if messages is None:
        assert lines[1].startswith(f"  {mapping}: orders.columns[0] (header 'Zip').source: unknown field 'ship_to.zip' (known: order.id, ")
    else:
        assert lines[1:] == ["  " + m.format(mapping=mapping) for m in messages]


# --- local state: the state folder, its ledger, lock and key; credential and key files ---------
# Each fault is real (root ignores permissions, so: a file where a folder should be, an immutable
# file (chattr +i), a full tmpfs in a private mount namespace, /proc/self/mem for a file that
# cannot be read). Each gives one line on stderr and exit 2 (a person must act), no traceback.

RUN_AT = "2026-11-20T12:30:00Z"
USER = pwd.getpwuid(os.geteuid()).pw_name


@dataclass
class Stage:
    """A bridge as an operator has it: config on disk, the sandbox, the private sshd."""

    tmp: Path
    config: Path
    env: dict[str, str] = field(default_factory=dict)
    wrap: list[str] = field(default_factory=list)  # a command the bridge runs inside (unshare)

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    @property
    def names(self) -> dict[str, str]:
        return {"state": str(self.state), "ledger": str(self.state / "ledger.sqlite"), "config": str(self.config),
                "tmp": str(self.tmp), "user": USER}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        command = [*self.wrap, sys.executable, "-m", "bridge", "--config", str(self.config), *args]
        env = {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost", **self.env}
        env = {key: value for key, value in env.items() if value is not None}
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    def pull(self) -> subprocess.CompletedProcess:
        done = self.run("orders", "pull", "--now", RUN_AT)
        assert done.returncode == 0, done.stderr
        return done


@pytest.fixture
def stage(tmp_path, sshd, sftp_root, sandbox) -> Stage:
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])
    yield Stage(tmp_path, config)
    subprocess.run(["chattr", "-R", "-i", str(tmp_path)], capture_output=True)  # let pytest clean up


def immutable(path: Path) -> None:
    """`chattr +i`: not even root may change it. Skips where the filesystem has no such flag."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr.strip()}")


def used(stage: Stage) -> None:
    stage.pull()


def state_folder_is_a_file(stage: Stage) -> None:
    stage.state.write_text("")


def state_folder_is_immutable(stage: Stage) -> None:
    stage.state.mkdir(mode=0o700)
    immutable(stage.state)


def lock_is_a_folder(stage: Stage) -> None:
    (stage.state / "bridge.lock").mkdir(parents=True)


def lock_is_immutable(stage: Stage) -> None:
    used(stage)
    immutable(stage.state / "bridge.lock")


def ledger_is_not_a_database(stage: Stage) -> None:
    stage.state.mkdir(mode=0o700)
    (stage.state / "ledger.sqlite").write_bytes(b"these are not the bytes of a SQLite database\n" * 100)


def ledger_is_damaged(stage: Stage) -> None:
    used(stage)
    ledger = stage.state / "ledger.sqlite"
    data = bytearray(ledger.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = b"\xa5" * (len(data) - page)  # every page after the first (the schema) is garbage
    ledger.write_bytes(bytes(data))


def ledger_is_a_folder(stage: Stage) -> None:
    (stage.state / "ledger.sqlite").mkdir(parents=True)


def disk_is_full(stage: Stage) -> None:
    """The state folder on a 4 KB tmpfs, mounted in a mount namespace of the bridge's own."""
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here (needs CAP_SYS_ADMIN): {probe.stderr.strip()}")
    stage.state.mkdir()
    stage.wrap = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=4k tmpfs "$0" && exec "$@"', str(stage.state)]


def another_key(stage: Stage) -> None:
    used(stage)
    stage.env["BRIDGE_STATE_KEY"] = "bmV3LWtleS1mb3ItdGhlLXN0YXRlLTMyLWJ5dGVzISE="


def ledger_deleted(stage: Stage) -> None:
    used(stage)
    for path in stage.state.glob("ledger.sqlite*"):
        path.unlink()


def ledger_emptied(stage: Stage) -> None:
    used(stage)
    for path in stage.state.glob("ledger.sqlite-*"):
        path.unlink()
    (stage.state / "ledger.sqlite").write_bytes(b"")


def older_backup_restored(stage: Stage) -> None:
    used(stage)
    [backup] = (stage.state / "backups").iterdir()
    db = sqlite3.connect(stage.state / "ledger.sqlite")  # work after the backup was taken
    db.execute("insert into order_events (order_id, at, kind, detail) values ('x', 't', 'seen', '')")
    db.commit()
    db.close()
    stage.run("orders", "pull", "--now", "2026-11-20T13:30:00Z")  # the marker moves on
    for path in stage.state.glob("ledger.sqlite*"):
        path.unlink()
    shutil.copy(backup, stage.state / "ledger.sqlite")


def rekey_interrupted(stage: Stage) -> None:
    used(stage)
    db = sqlite3.connect(stage.state / "ledger.sqlite")  # as a crash right after it was recorded
    db.execute("insert into meta (name, value) values ('rekey_to', 'gAAAA-sealed-new-key-check')")
    db.commit()
    db.close()


REKEYED_AT = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)
NEW_KEY = "bmV3LWtleS1mb3ItdGhlLXN0YXRlLTMyLWJ5dGVzISE="


def rekeyed(stage: Stage) -> None:
    """A finished rekey to NEW_KEY; the credential not swapped (the old key still given)."""
    from bridge import state
    from bridge.sealing import Sealer

    used(stage)
    settings = load(stage.config)
    state.rekey(settings, Sealer(settings.state_key), Sealer(NEW_KEY), REKEYED_AT)


def without_amazon_secrets(stage: Stage) -> None:
    stage.env.update({name: None for name in SECRETS if name.startswith("BRIDGE_LWA_")})


def rekeyed_spool_file(stage: Stage) -> None:
    """After the rekey, a spool file copied out to be opened, with the old key still given."""
    rekeyed(stage)
    shutil.copy(sorted((stage.state / "spool" / "wh").iterdir())[0], stage.tmp / "spooled")
    without_amazon_secrets(stage)  # spool open needs none


def drop_copy(stage: Stage) -> None:
    """The file as it sits in the warehouse's drop (plain), taken for a spool file."""
    from bridge.sealing import Sealer

    used(stage)
    spooled = sorted((stage.state / "spool" / "wh").iterdir())[0]
    plain = Sealer(SECRETS["BRIDGE_STATE_KEY"]).open(spooled.read_bytes(), "spool file")
    (stage.tmp / "ACME_AUF.csv").write_bytes(plain)
    without_amazon_secrets(stage)


def rekeyed_then_another_key(stage: Stage) -> None:
    rekeyed(stage)
    stage.env["BRIDGE_STATE_KEY"] = "YW5vdGhlci1rZXktZm9yLXRoZS1zdGF0ZS0zMi1ieSE="


def state_of_another_user(stage: Stage) -> None:
    """A state folder that belongs to the service's user, run by another (root, here)."""
    used(stage)
    os.chown(stage.state, 65534, 65534)


def state_folder_cannot_be_made(stage: Stage) -> None:
    """A new install: the state folder is not there, and its parent may not be written."""
    immutable(stage.tmp)


def state_of_another_user_and_a_new_key(stage: Stage) -> None:
    state_of_another_user(stage)
    stage.env["BRIDGE_STATE_KEY_NEW"] = NEW_KEY


def credentials(stage: Stage, content: bytes | None = None, link: str | None = None) -> Path:
    folder = stage.tmp / "credentials"
    folder.mkdir()
    for name, value in SECRETS.items():
        (folder / name).write_text(value + "\n")
    stage.env.update({name: None for name in SECRETS})
    stage.env["CREDENTIALS_DIRECTORY"] = str(folder)
    key = folder / "BRIDGE_STATE_KEY"
    key.unlink()
    if link:
        key.symlink_to(link)
    else:
        key.write_bytes(content)
    return key


def credential_not_utf8(stage: Stage) -> None:
    credentials(stage, content=b"\xff\xfe\x00k\x00e\x00y")


def credential_unreadable(stage: Stage) -> None:
    credentials(stage, link="/proc/self/mem")  # a regular file that no one can read from offset 0


def rekey_without_new_key(stage: Stage) -> None:
    used(stage)


def fresh_start_over_a_ledger(stage: Stage) -> None:
    used(stage)


LOCAL_STATE = [
    (state_folder_is_a_file, ["orders", "pull"],
     "fbm-bridge: cannot use the state folder {state}: {state} is a file, not a folder; bridge.state_dir must be"
     " a folder that user {user} can write"),
    (state_folder_is_immutable, ["orders", "pull"],
     "fbm-bridge: cannot use the state folder {state}: {state}: Permission denied; bridge.state_dir must be a"
     " folder that user {user} can write"),
    (state_of_another_user, ["orders", "pull"],
     "fbm-bridge: the state folder {state} belongs to user nobody, not to user {user} who runs this: run the"
     " command as nobody (`runuser -u nobody -- fbm-bridge ...` or `sudo -u nobody fbm-bridge ...`), so that what"
     " it writes stays usable by the service"),
    (state_of_another_user, ["fresh-start", "--from", "2026-11-20T00:00:00Z"],
     "fbm-bridge: the state folder {state} belongs to user nobody, not to user {user} who runs this: run the"
     " command as nobody (`runuser -u nobody -- fbm-bridge ...` or `sudo -u nobody fbm-bridge ...`), so that what"
     " it writes stays usable by the service"),
    (state_of_another_user, ["accept-restore"],
     "fbm-bridge: the state folder {state} belongs to user nobody, not to user {user} who runs this: run the"
     " command as nobody (`runuser -u nobody -- fbm-bridge ...` or `sudo -u nobody fbm-bridge ...`), so that what"
     " it writes stays usable by the service"),
    (state_of_another_user_and_a_new_key, ["rekey"],
     "fbm-bridge: the state folder {state} belongs to user nobody, not to user {user} who runs this: run the"
     " command as nobody (`runuser -u nobody -- fbm-bridge ...` or `sudo -u nobody fbm-bridge ...`), so that what"
     " it writes stays usable by the service"),
    (state_of_another_user, ["backup"],
     "fbm-bridge: the state folder {state} belongs to user nobody, not to user {user} who runs this: run the"
     " command as nobody (`runuser -u nobody -- fbm-bridge ...` or `sudo -u nobody fbm-bridge ...`), so that what"
     " it writes stays usable by the service"),
    (state_of_another_user, ["shipments", "process"],
     "fbm-bridge: the state folder {state} belongs to user nobody, not to user {user} who runs this: run the"
     " command as nobody (`runuser -u nobody -- fbm-bridge ...` or `sudo -u nobody fbm-bridge ...`), so that what"
     " it writes stays usable by the service"),
    (state_folder_cannot_be_made, ["orders", "pull", "--dry-run"],
     "fbm-bridge: the state folder {state} does not exist and user {user} cannot create it ({state}: Operation"
     " not permitted): create it for the service's user, e.g. `install -d -m 0700 -o {user} -g {user} {state}`"
     " (the unit's StateDirectory= makes it when the service starts)"),
    (state_folder_cannot_be_made, ["orders", "pull"],
     "fbm-bridge: the state folder {state} does not exist and user {user} cannot create it ({state}: Operation"
     " not permitted): create it for the service's user, e.g. `install -d -m 0700 -o {user} -g {user} {state}`"
     " (the unit's StateDirectory= makes it when the service starts)"),
    (lock_is_a_folder, ["orders", "pull"],
     "fbm-bridge: cannot open the lock file {state}/bridge.lock: Is a directory; remove it (the bridge"
     " creates it)"),
    (lock_is_immutable, ["orders", "pull"],
     "fbm-bridge: cannot open the lock file {state}/bridge.lock: Operation not permitted (it belongs to user"
     " {user}); run the bridge as the service's user (runuser -u fbm-bridge -- fbm-bridge ..., or sudo -u"
     " fbm-bridge ...), whose state folder it must be"),
    (ledger_is_not_a_database, ["orders", "pull"],
     "fbm-bridge: the ledger {ledger} is damaged or not a SQLite database (file is not a database): stop the"
     " service and restore the newest backup from {state}/backups (README: Operations, Backups)"),
    (ledger_is_not_a_database, ["status"],
     "fbm-bridge: the ledger {ledger} is damaged or not a SQLite database (file is not a database): stop the"
     " service and restore the newest backup from {state}/backups (README: Operations, Backups)"),
    (ledger_is_damaged, ["orders", "pull"],
     "fbm-bridge: the ledger {ledger} is damaged or not a SQLite database (database disk image is malformed):"
     " stop the service and restore the newest backup from {state}/backups (README: Operations, Backups)"),
    (ledger_is_a_folder, ["orders", "pull"], "fbm-bridge: cannot open the ledger {ledger}: Is a directory"),
    (disk_is_full, ["orders", "pull"],
     "fbm-bridge: the disk holding the ledger {ledger} is full: free space, then run again"),
    (another_key, ["orders", "pull"],
     "fbm-bridge: BRIDGE_STATE_KEY is not the key the state in {state} was made with: restore that key, or"
     " change keys with `fbm-bridge rekey` (README: Operations, Changing the state key)"),
    (ledger_deleted, ["orders", "pull"],
     "fbm-bridge: the ledger {ledger} is missing, but {state} was used before (state.json, 5 spool file(s),"
     " 1 backup(s)): running would pull and send orders again. Restore the newest backup (README:"
     " Operations, Backups), or start afresh with `fbm-bridge fresh-start --from TIME`"),
    (ledger_emptied, ["orders", "pull"],
     "fbm-bridge: the ledger {ledger} is empty, but {state} was used before (state.json, 5 spool file(s),"
     " 1 backup(s)): running would pull and send orders again. Restore the newest backup (README:"
     " Operations, Backups), or start afresh with `fbm-bridge fresh-start --from TIME`"),
    (older_backup_restored, ["orders", "pull"],
     "fbm-bridge: the ledger {ledger} is older than this state folder's last run (it has 10 events, the folder"
     " saw 11): was a backup restored? Orders delivered after that backup would be sent again. Check with the"
     " warehouse, then confirm with `fbm-bridge accept-restore`"),
    (rekey_interrupted, ["orders", "pull"],
     "fbm-bridge: a key rotation of {ledger} was started and did not finish: run `fbm-bridge rekey` again"
     " with the same BRIDGE_STATE_KEY and BRIDGE_STATE_KEY_NEW"),
    (rekeyed, ["orders", "pull"],
     "fbm-bridge: BRIDGE_STATE_KEY is the key the state in {state} had before it was rekeyed on"
     " 2026-11-21T09:00:00Z: use the key that was BRIDGE_STATE_KEY_NEW (make it the BRIDGE_STATE_KEY: README,"
     " Operations, Changing the state key)"),
    (rekeyed_then_another_key, ["orders", "pull"],
     "fbm-bridge: BRIDGE_STATE_KEY is not the key of the state in {state}, which was rekeyed on"
     " 2026-11-21T09:00:00Z: use the key that was BRIDGE_STATE_KEY_NEW (make it the BRIDGE_STATE_KEY: README,"
     " Operations, Changing the state key)"),
    (rekeyed_spool_file, ["spool", "open", "{tmp}/spooled"],
     "fbm-bridge: BRIDGE_STATE_KEY is the key the state in {state} had before it was rekeyed on"
     " 2026-11-21T09:00:00Z: use the key that was BRIDGE_STATE_KEY_NEW (make it the BRIDGE_STATE_KEY: README,"
     " Operations, Changing the state key)"),
    (drop_copy, ["spool", "open", "{tmp}/ACME_AUF.csv"],
     "fbm-bridge: {tmp}/ACME_AUF.csv is not a sealed spool file (it is plain text: is it the copy in the drop?"
     " That one is the file as delivered already); spool files are in {state}/spool/<warehouse>/"),
    (rekey_without_new_key, ["rekey"],
     "fbm-bridge: secret BRIDGE_STATE_KEY_NEW is not set: give the new key in the environment or in"
     " $CREDENTIALS_DIRECTORY/BRIDGE_STATE_KEY_NEW (`fbm-bridge keygen` prints one)"),
    (fresh_start_over_a_ledger, ["fresh-start", "--from", "2026-11-20T00:00:00Z"],
     "fbm-bridge: the ledger {ledger} is not empty: fresh-start only replaces a missing or empty ledger (a"
     " restored one is confirmed with `fbm-bridge accept-restore`)"),
    (credential_not_utf8, ["orders", "pull"],
     "  {config}: bridge: secret BRIDGE_STATE_KEY in {tmp}/credentials/BRIDGE_STATE_KEY is not UTF-8 text:"
     " write the secret again as plain text"),
    (credential_unreadable, ["orders", "pull"],
     "  {config}: bridge: secret BRIDGE_STATE_KEY cannot be read from {tmp}/credentials/BRIDGE_STATE_KEY:"
     " Input/output error"),
]


@pytest.mark.parametrize("fault, command, message", LOCAL_STATE,
                         ids=[f"{fault.__name__}-{command[0]}" for fault, command, _ in LOCAL_STATE])
def test_a_local_fault_gives_one_clear_line_and_exit_2(stage, fault, command, message):
    fault(stage)

    done = stage.run(*(argument.format(**stage.names) for argument in command))

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert message.format(**stage.names) in done.stderr.splitlines(), done.stderr


# --- SSH keys protected by a passphrase (secret BRIDGE_SFTP_KEY_PASSPHRASE_<NAME>) ---------------

def protected_copy(stage: Stage, sshd, passphrase: str) -> Path:
    """The suite's client key, protected by a passphrase: the server still knows it."""
    key = stage.tmp / "id_protected"
    shutil.copy(sshd.client_key, key)
    os.chmod(key, 0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", passphrase, "-f", str(key)], check=True, capture_output=True)
    text = stage.config.read_text().replace(str(sshd.client_key), str(key))
    stage.config.write_text(text)
    return key


def test_a_key_with_a_passphrase_and_no_secret_is_refused_at_load_naming_the_secret(stage, sshd):
    key = protected_copy(stage, sshd, "correct horse")

    done = stage.run("check")

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "configuration is not valid:",
        f"  {stage.config}: warehouses[0].private_key: {key} is protected by a passphrase: give it in the secret"
        " BRIDGE_SFTP_KEY_PASSPHRASE_WH"]


def test_a_key_with_a_passphrase_logs_in_with_its_secret_and_a_wrong_one_is_named(stage, sshd):
    key = protected_copy(stage, sshd, "correct horse")

    stage.env["BRIDGE_SFTP_KEY_PASSPHRASE_WH"] = "correct horse"
    assert "sftp      ok  wh:" in stage.run("check").stdout

    stage.env["BRIDGE_SFTP_KEY_PASSPHRASE_WH"] = "battery staple"
    done = stage.run("check")
    assert done.returncode == 2
    [failure] = [line for line in done.stdout.splitlines() if "FAIL" in line]
    assert failure.startswith(f"sftp      FAIL wh: private key {key} does not open with the passphrase given"
                              " (BRIDGE_SFTP_KEY_PASSPHRASE_<NAME>), or is damaged")
    assert "battery staple" not in done.stdout + done.stderr


# --- a token endpoint that answers an HTML page ----------------------------------------------------

@pytest.fixture
def html_token_url():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
            self.send_response(503)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/auth/o2/token"
    server.shutdown()
    server.server_close()


def test_a_token_endpoint_answering_html_is_one_line_in_check_and_in_a_run(stage, sandbox, html_token_url):
    from bridge.edges.amazon import AmazonOrders
    from bridge.errors import AmazonUnavailable
    from bridge.records import parse_iso
    from harness import load

    stage.config.write_text(stage.config.read_text().replace(sandbox.token_url, html_token_url))

    check = stage.run("check")

    assert check.returncode == 2 and "Traceback" not in check.stderr
    assert (f"amazon    FAIL Login with Amazon is unavailable (HTTP 503, not JSON, from {html_token_url}): not a"
            " credentials problem; try again later; if it lasts, check amazon.token_url") in check.stdout.splitlines()
    # A run retries later (exit 1); what its error line says, without the run's backoff waits:
    amazon = AmazonOrders(load(stage.config).amazon, backoff=0.01)
    with pytest.raises(AmazonUnavailable) as caught:
        amazon.updated_between(parse_iso("2026-11-20T08:00:00Z"), parse_iso(RUN_AT), ["UNSHIPPED"], ["A1PA6795UKMFR9"])
    assert str(caught.value) == (
        f"Login with Amazon is unavailable (HTTP 503, not JSON, from {html_token_url}): not a credentials"
        " problem; retried on the next run; if it lasts, check amazon.token_url")


# --- config: empty paths and the state's settings ------------------------------------------------
# Path("") is the working directory: an empty path is refused at load, never taken as ".".

CONFIG_PATHS = [
    ("state_dir empty", ('state_dir = "', 'state_dir = "" #'), "bridge.state_dir: must not be empty: give a path"),
    ("state_dir blank", ('state_dir = "', 'state_dir = "  " #'), "bridge.state_dir: must not be empty: give a path"),
    ("mapping empty", ('mapping = "', 'mapping = "" #'), "warehouses[0].mapping: must not be empty: give a path"),
    ("known_hosts empty", ('known_hosts = "', 'known_hosts = "" #'),
     "warehouses[0].known_hosts: must not be empty: give a path"),
    ("orders_folder empty", ('orders_folder = "', 'orders_folder = "" #'),
     'warehouses[0].orders_folder: must not be empty: give the folder, e.g. "/in" ("/" for the top)'),
    ("backups zero", ("[orders]", "[retention]\nbackups = 0\n[orders]"), "retention.backups: must be at least 1, not 0"),
    ("orders interval under its minimum", ("[orders]", "[orders]\ninterval_minutes = 0.05"),
     "orders.interval_minutes: must be at least 0.1, not 0.05"),
]


@pytest.mark.parametrize("case, change, message", CONFIG_PATHS, ids=[c[0] for c in CONFIG_PATHS])
def test_an_empty_path_in_the_config_is_refused_at_load(tmp_path, case, change, message):
    from bridge.config import load_settings
    from bridge.errors import ConfigError

    (tmp_path / "known_hosts").write_text("127.0.0.1 ssh-ed25519 AAAA\n")
    (tmp_path / "id").write_text("not read\n")
    config = write_config(tmp_path, sandbox_url="http://127.0.0.1:9", token_url="http://127.0.0.1:9/t", warehouses=[{
        "name": "wh", "mapping": str(ACME), "host": "127.0.0.1", "username": "u", "private_key": str(tmp_path / "id"),
        "known_hosts": str(tmp_path / "known_hosts"), "orders_folder": "/in"}])
    config.write_text(config.read_text().replace(*change, 1))

    with pytest.raises(ConfigError) as caught:
        load_settings(config, SECRETS)

    assert caught.value.problems == [f"{config}: {message}"]


# --- a stored record that cannot be read blocks nothing ------------------------------------------

def test_one_unreadable_record_is_set_aside_named_in_status_and_the_rest_are_delivered(stage, sandbox, sftp_root):
    sandbox.set_pii_access(False)
    stage.pull()  # five orders held, waiting for their address
    db = sqlite3.connect(stage.state / "ledger.sqlite")
    db.execute("update orders set payload = 'damaged' where order_id = '111-0000002-0000002'")
    db.commit()
    db.close()
    sandbox.set_pii_access(True)

    done = stage.run("orders", "pull", "--now", "2026-11-20T13:00:00Z")
    status = stage.run("status")

    assert done.returncode == 0, done.stderr
    assert len(list(sftp_root.iterdir())) == 4  # every other order went, for every warehouse
    assert ("  111-0000002-0000002  unreadable  the ledger's record cannot be read: its sealed data does not open"
            " with the state key (damaged or altered); it is set aside (kept, not sent)") in status.stdout.splitlines()


# --- Amazon on the wire: data it cannot use, answers that fail ----------------------------------

MERCHANT_ORDERS = {
    "111-0000001-0000001", "111-0000002-0000002", "302-0000003-0000003",
    "203-0000004-0000004", "111-0000005-0000005",
}
BAD_ID = "111-0000020-0000020"


@pytest.fixture
def make_amazon_bridge(tmp_path, sshd, sftp_root, sandbox):
    def make(amazon: str = "") -> Bridge:
        config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                              warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)], amazon=amazon)
        return Bridge(load(config))
    return make


def delivered(bridge: Bridge) -> set[str]:
    return {o.order_id for o in bridge.ledger.orders_in(OrderStatus.DELIVERED)}


def attention(bridge: Bridge) -> list[tuple[str, str, str]]:
    from bridge.service import status_report

    return [(a["order_id"], a["status"], a["reason"]) for a in status_report(bridge.settings, now=RUN_TIME)["attention"]]


def amazon_seed_order() -> dict:
    order = copy.deepcopy(load_seed(SEED)[0])
    order["orderId"] = BAD_ID
    return order


def without(*path):
    def change(order: dict) -> None:
        for key in path[:-1]:
            order = order[key]
        del order[path[-1]]
    return change


def setting(*path, value):
    def change(order: dict) -> None:
        for key in path[:-1]:
            order = order[key]
        order[path[-1]] = value
    return change


# --- Amazon data: orders the bridge cannot use ------------------------------------------------

AMAZON_DATA_V2026 = [
    ("no fulfillment data", without("fulfillment"),
     f"order {BAD_ID}: fulfillment.fulfillmentStatus is missing"),
    ("a status Amazon added since", setting("fulfillment", "fulfillmentStatus", value="ON_HOLD"),
     f"order {BAD_ID}: fulfillment.fulfillmentStatus 'ON_HOLD' is not a status the bridge knows"),
    ("a status that is not a plain word", setting("fulfillment", "fulfillmentStatus", value="UNSHIPPED\nINFO forged"),
     f"order {BAD_ID}: fulfillment.fulfillmentStatus is not a status the bridge knows"),
    ("no created time", without("createdTime"), f"order {BAD_ID}: createdTime is missing"),
    ("no order items", without("orderItems"), f"order {BAD_ID}: orderItems is missing"),
    ("an item that is not an object", lambda order: order["orderItems"].append("oops"),
     f"order {BAD_ID}: orderItems[2] is not an object"),
    ("a quantity that is not a number", lambda order: order["orderItems"][0].update(quantityOrdered="two"),
     f"order {BAD_ID}: orderItems[1].quantityOrdered is not a whole number"),
]


@pytest.mark.parametrize("case, change, message", AMAZON_DATA_V2026, ids=[c[0] for c in AMAZON_DATA_V2026])
def test_an_order_the_bridge_cannot_use_is_shown_as_rejected_v2026(make_amazon_bridge, sandbox, case, change, message):
    order = amazon_seed_order()
    change(order)
    page = {"orders": [order], "lastUpdatedBefore": "2026-11-20T08:30:00Z"}
    sandbox.fail_next("searchOrders", 200, body=json.dumps(page).encode())
    bridge = make_amazon_bridge()
    report = bridge.run(RUN_TIME)

    assert report.errors == [] and report.caught_up
    assert attention(bridge) == [(BAD_ID, "rejected", message)]
    assert delivered(bridge) == MERCHANT_ORDERS


AMAZON_DATA_V0 = [
    ("a status Amazon added since", setting("OrderStatus", value="OnHold"),
     f"order {BAD_ID}: OrderStatus 'OnHold' is not a status the bridge knows"),
    ("no status", without("OrderStatus"), f"order {BAD_ID}: OrderStatus is missing"),
    ("no last update", without("LastUpdateDate"), f"order {BAD_ID}: LastUpdateDate is missing"),
    ("items Amazon does not know", lambda order: None,
     f"order {BAD_ID}: getOrderItems: Amazon does not know its items (404)"),
]


@pytest.mark.parametrize("case, change, message", AMAZON_DATA_V0, ids=[c[0] for c in AMAZON_DATA_V0])
def test_an_order_the_bridge_cannot_use_is_shown_as_rejected_v0(make_amazon_bridge, sandbox, case, change, message):
    order = to_v0(amazon_seed_order(), shipping_address=True, buyer_info=True)
    change(order)
    sandbox.fail_next("getOrders", 200, body=json.dumps({"payload": {"Orders": [order]}}).encode())
    bridge = make_amazon_bridge(amazon='orders_api = "v0"')
    report = bridge.run(RUN_TIME)

    assert report.errors == [] and report.caught_up
    assert attention(bridge) == [(BAD_ID, "rejected", message)]
    assert delivered(bridge) == MERCHANT_ORDERS


# --- Amazon answers: the service or its login failing -----------------------------------------

LWA_SECRETS = "check BRIDGE_LWA_CLIENT_ID, BRIDGE_LWA_CLIENT_SECRET and BRIDGE_LWA_REFRESH_TOKEN"
AMAZON_ANSWERS = [
    # case, fault, amazon settings, the run's error ({token_url} filled in), a person must act
    ("Login with Amazon down, answering an HTML page",
     ("lwaToken", 503, 5, b"<html><body>Service Unavailable</body></html>", None), "",
     "pull: Login with Amazon is unavailable (HTTP 503, not JSON, from {token_url}): not a credentials"
     " problem; retried on the next run; if it lasts, check amazon.token_url", False),
    ("Login with Amazon failing with a JSON 500", ("lwaToken", 500, 5, None, None), "",
     "pull: Login with Amazon is unavailable (HTTP 500 from {token_url}): not a credentials problem;"
     " retried on the next run", False),
    ("Login with Amazon refusing the client",
     ("lwaToken", 401, 1, b'{"error": "invalid_client", "error_description": "Client authentication failed"}', None),
     "", f"pull: Login with Amazon refused the credentials (Client authentication failed); {LWA_SECRETS}", True),
    ("a page token Amazon sends twice",
     ("searchOrders", 200, 2, b'{"orders": [], "pagination": {"nextToken": "again"}}', None), "",
     "pull: searchOrders: Amazon sent a page token it had sent before; the pages stop here rather than"
     " loop, and are read again from the start on the next run", False),
    ("throttled for longer than the longest wait", ("searchOrders", 429, 1, None, None),
     "max_throttle_wait_seconds = 1",
     "pull: searchOrders: throttled by Amazon (429) for 179s, longer than amazon.max_throttle_wait_seconds;"
     " continued on the next run", False),
    ("throttled at every attempt", ("searchOrders", 429, 5, None, {"x-amzn-RateLimit-Limit": "50"}), "",
     "pull: searchOrders: throttled by Amazon (429) 5 times in a row; continued on the next run", False),
    ("unavailable at every attempt", ("searchOrders", 503, 5, None, None), "",
     "pull: searchOrders: Amazon error ServiceUnavailable: Service temporarily unavailable. Please try again.",
     False),
]


@pytest.mark.parametrize("case, fault, amazon, message, needs_a_person", AMAZON_ANSWERS,
                         ids=[c[0] for c in AMAZON_ANSWERS])
def test_amazon_failing_is_reported_not_caught_up_and_the_next_run_catches_up(
        make_amazon_bridge, sandbox, case, fault, amazon, message, needs_a_person):
    operation, status, count, body, headers = fault
    sandbox.fail_next(operation, status, count=count, body=body, headers=headers)
    bridge = make_amazon_bridge(amazon=amazon)
    report = bridge.run(RUN_TIME)

    assert report.errors == [message.format(token_url=sandbox.token_url)]
    assert report.needs_a_person is needs_a_person
    assert not report.caught_up and "caught_up=no" in report.summary()
    bridge = bridge.restart()  # the next run: a new process, so the rate limits have refilled
    again = bridge.run(RUN_TIME + timedelta(minutes=30))
    assert again.errors == [] and again.caught_up and "caught_up=yes" in again.summary()
    assert delivered(bridge) == MERCHANT_ORDERS


# --- held orders: Amazon's answer about one of them -------------------------------------------

def forget(sandbox, order_id: str) -> None:
    sandbox.remove_order(order_id)


def break_created_time(sandbox, order_id: str) -> None:
    order = sandbox.order(order_id)
    del order["createdTime"]
    sandbox.add_order(order)


HELD_ORDER_ANSWERS = [
    ("Amazon no longer knows it (404)", forget, ["2026-01-01", "v0"], NOT_FOUND),
    ("Amazon's answer is unusable", break_created_time, ["2026-01-01"],
     UNUSABLE_ANSWER.format("order 111-0000001-0000001: createdTime is missing")),
]


@pytest.mark.parametrize("case, fault, api, reason", [
    (case, fault, api, reason) for case, fault, apis, reason in HELD_ORDER_ANSWERS for api in apis
], ids=[f"{case} {api}" for case, _, apis, _ in HELD_ORDER_ANSWERS for api in apis])
def test_one_held_orders_bad_answer_is_noted_and_the_others_come_back(make_amazon_bridge, sandbox, case, fault, api, reason):
    sandbox.set_pii_access(False)
    bridge = make_amazon_bridge(amazon=f'orders_api = "{api}"')
    bridge.run(RUN_TIME)
    fault(sandbox, "111-0000001-0000001")
    sandbox.set_pii_access(True)
    report = bridge.run(RUN_TIME + timedelta(minutes=30))

    assert report.errors == []
    assert delivered(bridge) == MERCHANT_ORDERS - {"111-0000001-0000001"}
    held = [row for row in attention(bridge) if row[1] == "held"]
    assert held == [("111-0000001-0000001", "held", reason)]


CHECK_ANSWERS = [
    ("Login with Amazon down", (503, b"<html>Service Unavailable</html>"), "AmazonUnavailable",
     "Login with Amazon is unavailable (HTTP 503, not JSON, from {token_url}): not a credentials problem;"
     " try again later; if it lasts, check amazon.token_url"),
    ("Login with Amazon refusing the refresh token",
     (400, b'{"error": "invalid_grant", "error_description": "The request has an invalid grant parameter"}'),
     "AmazonAuthError", f"Login with Amazon refused the credentials (The request has an invalid grant parameter);"
     f" {LWA_SECRETS}"),
]


@pytest.mark.parametrize("case, fault, kind, message", CHECK_ANSWERS, ids=[c[0] for c in CHECK_ANSWERS])
def test_check_tells_a_login_outage_from_refused_credentials(make_amazon_bridge, sandbox, case, fault, kind, message):
    from bridge.errors import BridgeError

    status, body = fault
    sandbox.fail_next("lwaToken", status, body=body)
    with pytest.raises(BridgeError) as caught:
        make_amazon_bridge().amazon.check()
    assert type(caught.value).__name__ == kind
    assert str(caught.value) == message.format(token_url=sandbox.token_url)


# --- resend: a person asks for a delivered order again ------------------------------------------
# Each refusal is one line on stderr: exit 2 when a person must act (nothing was sent), exit 1 when
# the resend is recorded and only waits for the drop (a rerun or the service's next run sends it).

RESENT = "302-0000003-0000003"


def delivered_to_wh(stage: Stage) -> None:
    stage.pull()


def only_de(stage: Stage) -> None:
    """The warehouse takes only DE: the US orders are held, never delivered."""
    text = stage.config.read_text("utf-8")
    stage.config.write_text(text.replace("[[warehouses]]", '[[warehouses]]\nship_to_countries = ["DE"]'), "utf-8")
    stage.pull()


def purged(stage: Stage) -> None:
    from bridge.ledger import Ledger
    from bridge.sealing import Sealer

    stage.pull()
    ledger = Ledger(stage.state / "ledger.sqlite", Sealer(SECRETS["BRIDGE_STATE_KEY"]))
    try:
        assert ledger.purge_pii(datetime(2026, 12, 21, tzinfo=timezone.utc), datetime(2026, 12, 21, 3, tzinfo=timezone.utc))
    finally:
        ledger.close()


def warehouse_renamed(stage: Stage) -> None:
    stage.pull()
    text = stage.config.read_text("utf-8")
    stage.config.write_text(text.replace('name = "wh"', 'name = "wh2"'), "utf-8")


def sftp_down(stage: Stage) -> None:
    import re
    import socket

    stage.pull()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = stage.config.read_text("utf-8")
    stage.config.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", text), "utf-8")
    folder = re.search(r'(?m)^orders_folder = "(.*)"$', text).group(1)
    stage.names_extra = {"port": str(port), "drop": folder}


RESEND = [
    # case, setup, order, reason, exit status, the line on stderr
    ("an order the ledger does not know", delivered_to_wh, "999-0000000-0000000", "lost", 2,
     "fbm-bridge: order 999-0000000-0000000 is not in the ledger: this bridge never delivered it (never pulled,"
     " filtered out, or another seller's order); nothing to resend"),
    ("an empty reason", delivered_to_wh, RESENT, " \t ", 2,
     "fbm-bridge: resend needs --reason: say why the order is sent again (it is recorded with your name)"),
    ("a reason longer than a sentence", delivered_to_wh, RESENT, "x" * 501, 2,
     "fbm-bridge: resend --reason is 501 characters, more than 500: give a short reason (a ticket number and a"
     " sentence); it is recorded and shown with the order"),
    ("an order still held", only_de, "111-0000001-0000001", "lost", 2,
     "fbm-bridge: order 111-0000001-0000001 is not delivered yet (held: no warehouse takes ship-to country US in"
     " marketplace ATVPDKIKX0DER): resend is only for an order already delivered; the service delivers it when"
     " it can"),
    ("buyer data purged under retention", purged, RESENT, "lost", 2,
     "fbm-bridge: order 302-0000003-0000003: buyer data purged on 2026-12-21 under retention"
     " (retention.pii_days = 30); the order cannot be laid out again: send the warehouse its details from"
     " Seller Central"),
    ("its warehouse is no longer configured", warehouse_renamed, RESENT, "lost", 2,
     "fbm-bridge: order 302-0000003-0000003 was delivered to wh, which is not in {config} now: add the"
     " warehouse back to resend it"),
    ("the warehouse's SFTP server is down", sftp_down, RESENT, "lost", 1,
     "fbm-bridge: resend 1 is recorded as ACME_AUF_302-0000003-0000003-resend-1.csv but not delivered to wh"
     " yet: sftp {user}@[127.0.0.1]:{port}: put {drop}/ACME_AUF_302-0000003-0000003-resend-1.csv.part failed"
     " after 3 attempts: nothing accepts connections at 127.0.0.1 port {port} (connection refused): check host and port, and that the server runs;"
     " the service's next run delivers it, or run the same resend again (it finishes this file, never a second"
     " one)"),
]


@pytest.mark.parametrize("case, setup, order_id, reason, status, message", RESEND, ids=[c[0] for c in RESEND])
def test_a_resend_that_cannot_be_made_says_why_in_one_line(stage, case, setup, order_id, reason, status, message):
    setup(stage)

    done = stage.run("resend", order_id, "--reason", reason, "--now", "2026-11-22T12:30:00Z")

    assert done.returncode == status, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    names = {**stage.names, **getattr(stage, "names_extra", {})}
    assert done.stderr.splitlines()[-1] == message.format(**names), done.stderr
