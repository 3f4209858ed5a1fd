"""mappings/*.toml → compiled layouts; every problem reported as `file: key: why`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.mapping import SOURCES, load_mapping

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "mappings").glob("*.toml"))

GOOD_CSV = """
[orders]
format = "csv"
file_per = "order"
file_name = "ORD_{order_id}.csv"

[[orders.columns]]
header = "OrderNumber"
source = "order.id"

[[orders.columns]]
header = "SKU"
source = "line.sku"
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    assert all(p.startswith(f"{path}: ") for p in caught.value.problems), caught.value.problems
    return [p.removeprefix(f"{path}: ") for p in caught.value.problems]


def one_problem(tmp_path: Path, text: str) -> str:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_mappings_load(path: Path):
    mapping = load_mapping(path)
    assert mapping.name == path.stem
    columns = mapping.orders.columns + mapping.orders.fields + mapping.orders.line_fields
    assert columns and all(callable(c.get) for c in columns)


def test_three_formats_are_shipped():
    assert {load_mapping(p).orders.format for p in SHIPPED} == {"csv", "xml", "xlsx"}


def test_good_minimal_mapping_gets_defaults(tmp_path: Path):
    path = tmp_path / "ok.toml"
    path.write_text(GOOD_CSV, encoding="utf-8")
    layout = load_mapping(path).orders
    assert (layout.delimiter, layout.encoding, layout.line_terminator, layout.header) == (
        ",", "utf-8", "\r\n", True)


def test_unknown_key_is_an_error(tmp_path: Path):
    text = GOOD_CSV.replace('file_per = "order"', 'file_per = "order"\ndelimter = ";"')
    assert one_problem(tmp_path, text).startswith("orders.delimter: unknown key (known: ")


def test_unknown_column_key_is_an_error(tmp_path: Path):
    text = GOOD_CSV.replace('source = "line.sku"', 'source = "line.sku"\nmax_lenght = 3')
    assert one_problem(tmp_path, text).startswith("orders.columns[1] (header 'SKU').max_lenght: unknown key")


def test_unknown_top_level_section_is_an_error(tmp_path: Path):
    assert one_problem(tmp_path, GOOD_CSV + "[oders]\n") == (
        "oders: unknown section (known: orders, shipments, stock)")


def test_key_of_another_format_is_an_error(tmp_path: Path):
    text = GOOD_CSV.replace('file_per = "order"', 'file_per = "order"\nsheet = "X"')
    assert one_problem(tmp_path, text) == "orders.sheet: not used by format 'csv'"


def test_unknown_source_field(tmp_path: Path):
    text = GOOD_CSV.replace('"line.sku"', '"ship_to.zip"')
    message = one_problem(tmp_path, text)
    assert message.startswith("orders.columns[1] (header 'SKU').source: unknown field 'ship_to.zip' (known: ")
    assert "ship_to.postal_code" in message


def test_bad_format(tmp_path: Path):
    assert one_problem(tmp_path, GOOD_CSV.replace('"csv"', '"json"', 1)) == (
        "orders.format: unknown value 'json' (one of: csv, xml, xlsx)")


def test_bad_encoding(tmp_path: Path):
    text = GOOD_CSV.replace('file_per = "order"', 'file_per = "order"\nencoding = "latin-9"')
    assert one_problem(tmp_path, text) == (
        "orders.encoding: unknown value 'latin-9' (one of: utf-8, utf-8-sig, cp1252)")


def test_bad_timezone(tmp_path: Path):
    text = GOOD_CSV.replace('file_per = "order"', 'file_per = "order"\ntimezone = "Europe/Berlinn"')
    assert one_problem(tmp_path, text).startswith("orders.timezone: unknown time zone 'Europe/Berlinn'")


def test_two_character_delimiter(tmp_path: Path):
    text = GOOD_CSV.replace('file_per = "order"', 'file_per = "order"\ndelimiter = ";;"')
    assert one_problem(tmp_path, text).startswith("orders.delimiter: must be one character")


def test_tab_delimiter_is_fine(tmp_path: Path):
    path = tmp_path / "tab.toml"
    path.write_text(GOOD_CSV.replace('file_per = "order"', 'file_per = "order"\ndelimiter = "\\t"'))
    assert load_mapping(path).orders.delimiter == "\t"


def test_order_id_in_a_per_run_file_name(tmp_path: Path):
    text = GOOD_CSV.replace('"order"', '"run"').replace(
        '"ORD_{order_id}.csv"', '"ORD_{order_id}_{run_time:%Y%m%d%H%M%S}.csv"')
    assert one_problem(tmp_path, text) == (
        "orders.file_name: {order_id} cannot be used when file_per = 'run' "
        "(one file holds many orders)")


def test_per_run_name_needs_run_time_and_per_order_name_needs_order_id(tmp_path: Path):
    run = GOOD_CSV.replace('"order"', '"run"').replace('"ORD_{order_id}.csv"', '"ORD.csv"')
    assert "needs {run_time:...}" in one_problem(tmp_path, run)
    order = GOOD_CSV.replace('"ORD_{order_id}.csv"', '"ORD_{seq}.csv"')
    assert "needs {order_id}" in one_problem(tmp_path, order)


@pytest.mark.parametrize("spec, lacks", [
    ("%Y%m%d", "the hours, minutes, seconds"),
    ("%Y%m%d_%H%M", "the seconds"),
    ("%Y%m%d%H%M%%S", "the seconds"),  # %% is a percent sign, then a letter S
    ("%H%M%S", "the year, month, day"),
    ("%X", "the year, month, day"),
    ("%m%d%H%M%S", "the year"),
    ("%Y%m%d%I%M%S", "the hours"),  # a 12-hour clock without AM/PM
])
def test_a_per_run_name_without_the_full_date_and_time_is_rejected(tmp_path: Path, spec: str, lacks: str):
    name = f"ORD_{{run_time:{spec}}}.csv"
    text = GOOD_CSV.replace('"order"', '"run"').replace('"ORD_{order_id}.csv"', f'"{name}"')
    assert one_problem(tmp_path, text) == (
        f"orders.file_name: {{run_time:{spec}}} must write the full date and time when "
        f"file_per = 'run' (e.g. %Y%m%d%H%M%S); it lacks {lacks}")


@pytest.mark.parametrize("spec", ["%Y%m%d%H%M%S", "%Y%m%dT%H%M%S%fZ", "%s", "%Y%m%d_%T", "%F_%T",
                                  "%y%j%H%M%S", "%Y%m%d%I%M%S%p", "%c"])
def test_a_per_run_name_with_seconds_loads(tmp_path: Path, spec: str):
    path = tmp_path / "ok.toml"
    path.write_text(GOOD_CSV.replace('"order"', '"run"').replace(
        '"ORD_{order_id}.csv"', f'"ORD_{{run_time:{spec}}}.csv"'), encoding="utf-8")
    assert load_mapping(path).orders.file_per == "run"


@pytest.mark.parametrize("name", ["../ORD_{order_id}.csv", "out/ORD_{order_id}.csv",
                                  ".ORD_{order_id}.csv", "ORD_{order_id}\t.csv"])
def test_unsafe_file_name_template(tmp_path: Path, name: str):
    text = GOOD_CSV.replace('"ORD_{order_id}.csv"', repr(name).replace("'", '"'))
    assert one_problem(tmp_path, text).startswith("orders.file_name: must be a plain file name")


def test_unknown_placeholder(tmp_path: Path):
    text = GOOD_CSV.replace('"ORD_{order_id}.csv"', '"ORD_{order_id}_{sku}.csv"')
    assert one_problem(tmp_path, text).startswith("orders.file_name: unknown placeholder {sku}")


def test_missing_columns(tmp_path: Path):
    text = GOOD_CSV.split("[[orders.columns]]")[0]
    assert one_problem(tmp_path, text) == (
        "orders.columns: missing: add at least one [[orders.columns]]")


def test_duplicate_headers(tmp_path: Path):
    text = GOOD_CSV.replace('header = "SKU"', 'header = "OrderNumber"')
    assert one_problem(tmp_path, text) == (
        "orders.columns[1].header: duplicate 'OrderNumber' (also orders.columns[0])")


def test_source_and_value_are_exclusive(tmp_path: Path):
    text = GOOD_CSV.replace('source = "line.sku"', 'source = "line.sku"\nvalue = "X"')
    assert one_problem(tmp_path, text).startswith("orders.columns[1] (header 'SKU'): needs exactly one of")


def test_format_only_for_dates(tmp_path: Path):
    text = GOOD_CSV.replace('source = "line.sku"', 'source = "line.sku"\nformat = "%d"')
    assert one_problem(tmp_path, text) == "orders.columns[1] (header 'SKU').format: only for date and datetime sources"


def test_wrong_type(tmp_path: Path):
    text = GOOD_CSV.replace('source = "line.sku"', 'source = "line.sku"\nmax_length = "35"')
    assert one_problem(tmp_path, text) == "orders.columns[1] (header 'SKU').max_length: must be an integer, not str"


def test_header_the_encoding_cannot_write(tmp_path: Path):
    text = GOOD_CSV.replace('file_per = "order"', 'file_per = "order"\nencoding = "cp1252"')
    text = text.replace('header = "SKU"', 'header = "货号"')
    assert one_problem(tmp_path, text) == "orders.columns[1].header: '货' cannot be written in cp1252"


def test_toml_syntax_error_names_the_line(tmp_path: Path):
    message = one_problem(tmp_path, GOOD_CSV.replace('format = "csv"', 'format = csv'))
    assert message.startswith("syntax: ") and "line 3" in message


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        load_mapping(tmp_path / "nope.toml")
    assert caught.value.problems[0].startswith(f"{tmp_path / 'nope.toml'}: file: cannot read")


def test_xml_line_field_at_order_level_and_bad_element(tmp_path: Path):
    text = """
[orders]
format = "xml"
file_per = "run"
file_name = "O_{run_time:%Y%m%d%H%M%S}.xml"
root = "1Orders"
[[orders.fields]]
element = "ShipTo/Na me"
source = "ship_to.name"
[[orders.fields]]
element = "Sku"
source = "line.sku"
"""
    assert problems(tmp_path, text) == [
        "orders.root: '1Orders' is not a usable XML element name",
        "orders.fields[0].element: 'ShipTo/Na me' is not an element path like 'ShipTo/Name', "
        "'Total@currency' or '@id'",
        "orders.fields[1] (element 'Sku').source: 'line.sku' is a line field: put it in [[orders.line_fields]]",
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path):
    text = """
[orders]
format = "csv"
file_per = "run"
file_name = "ORD_{order_id}.csv"
delimiter = "||"
timezone = "Mars/Olympus"
colour = "blue"

[[orders.columns]]
header = "A"
source = "order.idd"

[[orders.columns]]
header = "A"
source = "line.sku"
max_length = 0

[extra]
"""
    found = problems(tmp_path, text)
    keys = [p.split(":")[0] for p in found]
    assert keys == [
        "extra", "orders.colour", "orders.timezone", "orders.file_name", "orders.file_name",
        "orders.delimiter", "orders.columns[0] (header 'A').source", "orders.columns[1] (header 'A').max_length",
    ], found


def test_source_fields_are_the_documented_set():
    import bridge.mapping

    for name in SOURCES:
        assert f"\n{name} " in bridge.mapping.__doc__, name
