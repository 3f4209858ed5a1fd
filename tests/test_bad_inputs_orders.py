"""Bad inputs to the orders flow, one table of cases per kind of input, each case with the exact
message a person sees. Shipments and stock keep their own tables beside this one."""

from __future__ import annotations

import json

import pytest

from bridge.cli import main
from harness import MAPPINGS, SAMPLES

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
        assert lines[1].startswith(f"  {mapping}: orders.columns[0].source: unknown field 'ship_to.zip' (known: order.id, ")
    else:
        assert lines[1:] == ["  " + m.format(mapping=mapping) for m in messages]
