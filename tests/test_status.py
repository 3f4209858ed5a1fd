"""`fbm-bridge status` for staff and for monitoring: per warehouse what was pulled, delivered,
shipped, confirmed and rejected, the last stock feed, files in error, and at the top what needs
a person first; `status --order` with the order's packages; `status --prometheus` in
node_exporter's textfile format. A real bridge got there: orders from the SP-API sandbox
delivered over OpenSSH, a confirmation file and stock files taken from the SFTP folders."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from bridge.flows.shipments import ShipmentsFlow
from bridge.edges.amazon_shipments import AmazonShipments
from stocking import NOW, Stocker, clocked_sandbox, drop, load, make_config

DAY2 = NOW + timedelta(days=1)  # 2026-11-27T22:00Z; the orders were due to ship by 20 and 21 November
LATER = DAY2 + timedelta(hours=1)
HEADER = "Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum"
ACME_STOCK = "Artikelnummer;Bezeichnung;Charge;Lagerplatz;Verfügbar;Stand"
FULL = ("100234;40", "100871;8", "200110;5", "300500;3", "300501;17")


def stock_file(*rows: str, stand: str) -> bytes:
    lines = [ACME_STOCK] + [f"{a};Artikel {a};;;{q};{stand}" for a, q in (r.split(";") for r in rows)]
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


@pytest.fixture
def sandbox():
    with clocked_sandbox() as running:
        yield running


@pytest.fixture
def bridge(tmp_path, sshd, sftp_root, sandbox):
    """Five orders delivered; a confirmation file with one good row and one for an order the
    bridge never sent; stock published on day 1, a file held on day 2, a broken one in error/."""
    stocker = Stocker(load(make_config(tmp_path, sshd, sftp_root, sandbox, shipments=True)))
    stocker.deliver_orders()
    drop(stocker.remote, "DAY1.csv", stock_file(*FULL, stand="26.11.2026 21:00"))
    stocker.push()
    drop(sftp_root / "out", "VERSAND_1.csv", "\r\n".join((
        HEADER, "302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45",
        "999-9999999-9999999;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042558;20.11.2026 16:45", "")).encode("cp1252"))
    shipments = ShipmentsFlow(stocker.settings, stocker.ledger, AmazonShipments(stocker.settings.amazon, backoff=0.01),
                              sleep=lambda seconds: None)
    shipments.run(DAY2, settle=True)
    drop(stocker.remote, "DAY2.csv", stock_file(*FULL[:3], stand="27.11.2026 21:00"))  # 2 of 5 SKUs missing
    stocker.push(DAY2)
    drop(stocker.remote, "BROKEN.csv", b"Artikel;Menge\r\n1;2\r\n")
    stocker.push(DAY2 + timedelta(minutes=1))
    yield stocker
    stocker.close()


def status(bridge, *args: str, capsys) -> str:
    from bridge.cli import main

    assert main(["--config", str(bridge.settings.path), "status", *args, "--now", "2026-11-27T23:00:00Z"]) == 0
    return capsys.readouterr().out


def test_status_puts_what_needs_a_person_first_at_the_top(bridge, capsys):
    text = status(bridge, capsys=capsys).splitlines()

    assert text[:text.index(f"config: {bridge.settings.path}")] == [
        "needs a person first:",
        "  1. orders pulled only up to 2026-11-20T12:00:00Z (179 h ago): is the service running?",
        "  2. wh: 4 delivered order(s) past their ship-by and not confirmed on Amazon: oldest 111-0000002-0000002"
        " (ship by 2026-11-20T23:59:59Z, 0/11 units confirmed)",
        "  3. wh: 1 shipments file(s) answered into error/ in the last 7 days: see their result files in results/",
        "  4. wh: 1 stock file(s) answered into error/ in the last 7 days: see their result files in results/",
        "  5. wh: 1 row(s) rejected in confirmation files answered in the last 7 days: see their result files",
        "  6. wh: stock file 'DAY2.csv' held: 2 of the 5 SKUs published lately (40.0%) are missing from"
        " this file, more than the limit of 10% (e.g. CST-CORK-4PK, TEA-INF-SS-01); `fbm-bridge inventory push"
        " --force` publishes it",
    ]  # a pull that stopped first (no order reaches the warehouse), then the orders already late


def test_status_per_warehouse_says_what_was_delivered_shipped_confirmed_and_rejected(bridge, capsys):
    text = status(bridge, capsys=capsys).splitlines()
    report = json.loads(status(bridge, "--json", capsys=capsys))

    block = text.index("warehouse wh: orders delivered=5")
    assert text[block:block + 5] == [
        "warehouse wh: orders delivered=5",
        "  packages 1: confirmed=1 waiting=0 rejected by Amazon=0",
        "  last 7 days: files in error shipments=1 stock=1, rows rejected=1, packages refused=0",
        "  not confirmed: 4 past ship-by, 0 due within 24 h; oldest ship-by 2026-11-20T23:59:59Z (111-0000002-0000002)",
        "  last finished: orders 2026-11-20T12:30:00Z, shipments 2026-11-27T22:00:30Z,"
        " stock_publish 2026-11-26T22:00:30Z",
    ]
    assert "  window 2026-11-20T11:30:00Z to 2026-11-20T12:00:00Z: 1 order(s), pulled 2026-11-20T12:30:00Z" in text
    assert ("  2026-11-20T23:59:59Z  111-0000002-0000002  wh  0/11 units confirmed  OVERDUE: ship-by passed"
            in text)
    wh = report["warehouses"]["wh"]
    assert wh["orders"]["delivered"] == 5 and wh["packages"] == {"accepted": 0, "sent": 0, "confirmed": 1,
                                                                  "rejected": 0}
    assert (wh["files_in_error"], wh["rejected_rows"], wh["past_ship_by_count"]) == (
        {"shipments": 1, "stock": 1}, 1, 4)
    assert [n["kind"] for n in report["needs_a_person"]] == [
        "stuck_windows", "past_ship_by", "files_in_error", "files_in_error", "rejected_rows", "stock_held"]


def test_status_of_one_order_shows_its_packages_and_a_passed_ship_by(bridge, capsys):
    shipped = status(bridge, "--order", "302-0000003-0000003", capsys=capsys).splitlines()
    waiting = status(bridge, "--order", "111-0000002-0000002", capsys=capsys).splitlines()

    assert "ship_by:        2026-11-21T22:59:59Z (1/1 units confirmed)" in shipped
    assert shipped[-2:] == [
        "packages:",
        "  package 1  confirmed 1 unit(s)  tracking 00340434161094042557 (DHL) shipped 2026-11-20T15:45:00Z"
        "  from 'VERSAND_1.csv' row 2"]
    assert ("ship_by:        2026-11-20T23:59:59Z (0/11 units confirmed)  OVERDUE: the ship-by date has passed and"
            " not every unit is confirmed") in waiting
    assert "packages:" not in waiting


# --- --prometheus ----------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*")*)?\})? (\S+)$')


def parse_exposition(text: str) -> dict[str, dict]:
    """The Prometheus text exposition format, strictly: every metric has HELP then TYPE before
    its samples, every sample is `name{labels} value` with a float value; returns
    {name: {"help", "type", "samples": {frozenset(labels): value}}}."""
    metrics: dict[str, dict] = {}
    assert text.endswith("\n")
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in metrics, f"{name} described twice"
            metrics[name] = {"help": help_text, "type": None, "samples": {}}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and kind in ("gauge", "counter", "untyped"), line
            metrics[name]["type"] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels = match.group(1), match.group(3) or ""
            assert name == current and metrics[name]["type"], f"{name}: sample before its HELP and TYPE"
            pairs = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
            assert pairs not in metrics[name]["samples"], f"{name}{{{labels}}} twice"
            metrics[name]["samples"][pairs] = float(match.group(4))
    return metrics


def test_prometheus_output_parses_and_says_what_an_operator_alerts_on(bridge, capsys):
    metrics = parse_exposition(status(bridge, "--prometheus", capsys=capsys))

    assert all(name.startswith("fbm_bridge_") and m["help"] and m["type"] == "gauge" for name, m in metrics.items())

    instance = bridge.settings.path.stem  # /etc/fbm-bridge/acme.toml: instance="acme"
    assert all(dict(labels)["instance"] == instance for m in metrics.values() for labels in m["samples"])

    def value(name: str, **labels: str) -> float:
        return metrics["fbm_bridge_" + name]["samples"][frozenset({"instance": instance, **labels}.items())]

    assert value("last_success_timestamp_seconds", warehouse="wh", job="orders") == 1795177800  # 2026-11-20T12:30Z
    assert value("last_success_timestamp_seconds", warehouse="wh", job="shipments") == 1795816830  # 11-27T22:00:30Z: answered after the 30 s settling wait
    assert value("last_success_timestamp_seconds", warehouse="wh", job="stock_publish") == 1795730430
    assert value("orders_waiting", warehouse="wh") == 0
    assert value("files_in_error", warehouse="wh", flow="shipments") == 1
    assert value("files_in_error", warehouse="wh", flow="stock") == 1
    assert value("rejected_rows", warehouse="wh") == 1
    assert value("orders_past_ship_by", warehouse="wh") == 4
    assert value("oldest_unconfirmed_ship_by_timestamp_seconds", warehouse="wh") == 1795219199  # 11-20T23:59:59Z
    assert value("stock_latest_file", warehouse="wh", status="held") == 1
    assert value("stock_latest_file", warehouse="wh", status="published") == 0
    assert value("stock_held_files", warehouse="wh") == 1
    assert value("needs_a_person", warehouse="wh") == 5 and value("needs_a_person") == 1


def test_prometheus_escapes_label_values_and_the_parser_catches_a_bad_line():
    from bridge.prometheus import _labels

    assert _labels({"warehouse": 'a"b\\c\nd'}) == '{warehouse="a\\"b\\\\c\\nd"}'
    parse_exposition('# HELP fbm_bridge_x x\n# TYPE fbm_bridge_x gauge\nfbm_bridge_x{warehouse="a\\"b"} 1\n')
    for bad in ("fbm_bridge_x 1\n", "# HELP fbm_bridge_x x\n# TYPE fbm_bridge_x gauge\nfbm_bridge_x{w=a} 1\n",
                "# HELP fbm_bridge_x x\n# TYPE fbm_bridge_x gauge\nfbm_bridge_x one\n"):
        with pytest.raises((AssertionError, ValueError)):
            parse_exposition(bad)


def outage(files: int) -> dict:
    """A status report of a warehouse whose server refused every delivery of `files` files."""
    error = "sftp wh: put failed after 3 attempts: nothing accepts connections at 127.0.0.1:2222"
    return {"files_in_flight": [
        {"warehouse": "wh", "name": f"ACME_AUF_111-000000{n}-000000{n}.csv", "status": "staged",
         "problem": error, "problem_at": f"2026-11-27T2{n}:00:00Z"} for n in range(files)],
        "windows": {"windows": 0, "gaps": []}, "attention": []}


def test_an_outage_is_one_item_that_needs_a_person_not_one_per_file():
    from bridge.report import needs_a_person

    [item] = needs_a_person(outage(4))
    assert item["what"] == ("4 files not delivered since 2026-11-27T20:00:00Z (the oldest"
                            " ACME_AUF_111-0000000-0000000.csv), each with: sftp wh: put failed after 3 attempts:"
                            " nothing accepts connections at 127.0.0.1:2222")
    [one] = needs_a_person(outage(1))
    assert one["what"].startswith("ACME_AUF_111-0000000-0000000.csv not delivered since 2026-11-27T20:00:00Z: sftp wh")


def test_status_lists_ten_files_in_flight_and_counts_the_rest():
    from bridge.report import IN_FLIGHT_LISTED, format_in_flight

    report = outage(9)
    report["files_in_flight"] += report["files_in_flight"] * 2  # 27 files
    lines = format_in_flight(report["files_in_flight"])
    assert len(lines) == IN_FLIGHT_LISTED + 1
    assert lines[-1] == "in flight: 17 more file(s) (`status --json` lists them all)"


def test_a_held_stock_file_is_not_to_be_forced_once_a_newer_one_waits_for_the_publish():
    from bridge.report import needs_a_person

    held = {"name": "b.csv", "reason": "held: 2 of the 5 SKUs published lately are missing"}
    report = {"windows": {"windows": 0, "gaps": []}, "attention": [],
              "stock": {"warehouse": "wh", "held": [held], "waiting": [], "latest": None}}
    [alone] = needs_a_person(report)
    report["stock"]["waiting"] = [{"name": "d.csv", "source": "sftp", "received_at": "2026-11-27T22:40:00Z"}]
    [newer] = needs_a_person(report)

    assert alone["what"].endswith("`fbm-bridge inventory push --force` publishes it")
    assert newer["what"] == ("stock file 'b.csv' held: 2 of the 5 SKUs published lately are missing; the newer file"
                             " 'd.csv' waits for the next publish, which takes it instead: nothing to force")



def gauges(text: str, instance: str):
    """A reader of one --prometheus output: value(name, **labels), None for a sample left out."""
    metrics = parse_exposition(text)

    def value(name: str, **labels: str) -> float | None:
        return metrics["fbm_bridge_" + name]["samples"].get(frozenset({"instance": instance, **labels}.items()))
    return value


# --- settled orders, ship-by known from delivery on, warehouses not tracked to confirmation --------

PAST = ("111-0000002-0000002", "203-0000004-0000004", "111-0000001-0000001", "111-0000005-0000005")


def test_an_order_a_person_settled_leaves_every_list_of_orders_not_confirmed(bridge, capsys):
    """`shipments settle` says the order is no longer listed as not yet confirmed: not in the list
    at the bottom, not in what needs a person, not in the warehouse's line, not in the gauges."""
    instance = bridge.settings.path.stem
    for order_id in PAST[:2]:  # the two oldest, ship-by 20 November
        assert bridge.ledger.settle_order(order_id, "shipped by hand", LATER)

    text = status(bridge, capsys=capsys).splitlines()
    report = json.loads(status(bridge, "--json", capsys=capsys))
    value = gauges(status(bridge, "--prometheus", capsys=capsys), instance)

    assert ("  2. wh: 2 delivered order(s) past their ship-by and not confirmed on Amazon: oldest 111-0000001-0000001"
            " (ship by 2026-11-21T07:59:59Z, 0/2 units confirmed)") in text
    assert ("  not confirmed: 2 past ship-by, 0 due within 24 h; oldest ship-by 2026-11-21T07:59:59Z"
            " (111-0000001-0000001)") in text
    assert not [line for line in text if PAST[0] in line or PAST[1] in line]
    assert [o["order_id"] for o in report["shipments"]["unconfirmed"]] == list(PAST[2:])
    assert [o["order_id"] for o in report["warehouses"]["wh"]["past_ship_by"]] == list(PAST[2:])
    assert value("orders_past_ship_by", warehouse="wh") == 2
    assert value("oldest_unconfirmed_ship_by_timestamp_seconds", warehouse="wh") == 1795247999  # 11-21T07:59:59Z

    for order_id in PAST[2:]:
        assert bridge.ledger.settle_order(order_id, "shipped by hand", LATER)
    text = status(bridge, capsys=capsys).splitlines()
    report = json.loads(status(bridge, "--json", capsys=capsys))
    value = gauges(status(bridge, "--prometheus", capsys=capsys), instance)
    order = status(bridge, "--order", PAST[0], capsys=capsys).splitlines()

    assert "past_ship_by" not in [n["kind"] for n in report["needs_a_person"]]
    assert not [line for line in text if "not confirmed" in line]
    assert report["shipments"]["unconfirmed"] == [] and report["warehouses"]["wh"]["oldest_unconfirmed"] is None
    assert value("orders_past_ship_by", warehouse="wh") == 0
    assert value("oldest_unconfirmed_ship_by_timestamp_seconds", warehouse="wh") is None
    assert value("needs_a_person", warehouse="wh") == 4  # 5 before: files in error (2), rows rejected, stock held
    assert any(re.fullmatch(r"ship_by:        2026-11-20T23:59:59Z \(settled by a person \S+Z: shipped by hand\)", line)
               for line in order)  # no OVERDUE: settled
    assert any(line.endswith("settled                  shipped by hand") for line in order)


def test_orders_past_their_ship_by_are_listed_from_their_delivery_on_before_any_shipments_pass(
        tmp_path, sshd, sftp_root, sandbox, capsys):
    """The orders flow notes each order's ship-by as it records it delivered (status reads no
    sealed data): the first pull's orders are listed before the first confirmation file."""
    stocker = Stocker(load(make_config(tmp_path, sshd, sftp_root, sandbox, shipments=True)))
    try:
        stocker.deliver_orders()
        text = status(stocker, capsys=capsys).splitlines()
        value = gauges(status(stocker, "--prometheus", capsys=capsys), stocker.settings.path.stem)
    finally:
        stocker.close()

    assert text[2] == ("  2. wh: 5 delivered order(s) past their ship-by and not confirmed on Amazon: oldest"
                       " 111-0000002-0000002 (ship by 2026-11-20T23:59:59Z, 0/11 units confirmed)")
    assert "  2026-11-20T23:59:59Z  111-0000002-0000002  wh  0/11 units confirmed  OVERDUE: ship-by passed" in text
    assert value("orders_past_ship_by", warehouse="wh") == 5 and value("confirmations_tracked", warehouse="wh") == 1


def test_orders_staged_and_not_yet_delivered_are_not_listed_as_not_confirmed(
        tmp_path, sshd, sftp_root, sandbox, capsys):
    """Their ship-by is noted as they are staged, but the warehouse has not got them: not its
    delay. Listed once the next run delivers them."""
    from bridge.edges.amazon import AmazonOrders
    from bridge.flows.orders import OrdersFlow
    from harness import RUN_TIME

    stocker = Stocker(load(make_config(tmp_path, sshd, sftp_root, sandbox, shipments=True)))
    (sftp_root / "in").rename(sftp_root / "in.away")  # the drop folder is missing: nothing goes
    try:
        orders = OrdersFlow(stocker.settings, stocker.ledger, AmazonOrders(stocker.settings.amazon, backoff=0.01))
        assert orders.run(RUN_TIME).errors and stocker.ledger.status_counts()["staged"] == 5
        staged = json.loads(status(stocker, "--json", capsys=capsys))
        (sftp_root / "in.away").rename(sftp_root / "in")
        assert orders.run(RUN_TIME + timedelta(minutes=30)).delivered_orders == 5
        delivered = json.loads(status(stocker, "--json", capsys=capsys))
    finally:
        stocker.close()

    assert staged["warehouses"]["wh"]["past_ship_by_count"] == 0 and staged["shipments"]["unconfirmed"] == []
    assert delivered["warehouses"]["wh"]["past_ship_by_count"] == 5 and len(delivered["shipments"]["unconfirmed"]) == 5


def test_a_warehouse_without_a_shipments_folder_is_not_tracked_to_confirmation_and_says_so(
        tmp_path, sshd, sftp_root, sandbox, capsys):
    """Without a shipments folder the seller confirms by hand in Seller Central and the bridge
    never learns it: its orders are not listed as not confirmed (they would be, forever), not
    counted (the gauge is left out, not 0), and status says why."""
    stocker = Stocker(load(make_config(tmp_path, sshd, sftp_root, sandbox, shipments=False)))
    try:
        stocker.deliver_orders()
        text = status(stocker, capsys=capsys).splitlines()
        report = json.loads(status(stocker, "--json", capsys=capsys))
        value = gauges(status(stocker, "--prometheus", capsys=capsys), stocker.settings.path.stem)
        order = status(stocker, "--order", "111-0000002-0000002", capsys=capsys).splitlines()
    finally:
        stocker.close()

    block = text.index("warehouse wh: orders delivered=5")
    assert text[block + 3:block + 5] == [
        "  confirmations not tracked: no shipments_folder or local_shipments_folder, so the bridge never learns"
        " which orders were confirmed (in Seller Central, by hand); see Seller Central's late orders",
        "  last finished: orders 2026-11-20T12:30:00Z",
    ]
    assert not [line for line in text if "ship-by" in line or "not yet confirmed" in line]
    wh = report["warehouses"]["wh"]
    assert (wh["confirmations_tracked"], wh["past_ship_by_count"], wh["near_ship_by_count"]) == (False, None, None)
    assert report["shipments"]["unconfirmed"] == [] and report["needs_a_person"][0]["kind"] == "stuck_windows"
    assert value("confirmations_tracked", warehouse="wh") == 0
    assert value("orders_past_ship_by", warehouse="wh") is None
    assert value("oldest_unconfirmed_ship_by_timestamp_seconds", warehouse="wh") is None
    assert ("ship_by:        2026-11-20T23:59:59Z (confirmations not tracked: the warehouse has no shipments "
            "folder)") in order  # known, never OVERDUE


def test_ship_by_items_come_most_urgent_first_across_warehouses():
    """Past ship-bys before near ones; among them the oldest first, whatever the config's order."""
    from bridge.report import needs_a_person

    def warehouse(past: str | None, near: str | None) -> dict:
        due = {"order_id": "111-0000001-0000001", "units": 1, "confirmed": 0}
        return {"past_ship_by": [dict(due, ship_by=past)] if past else [], "past_ship_by_count": int(bool(past)),
                "near_ship_by": [dict(due, ship_by=near)] if near else [], "near_ship_by_count": int(bool(near))}

    report = {"windows": {"windows": 0, "gaps": []}, "attention": [], "warehouses": {
        "acme2": warehouse("2026-11-21T22:59:59Z", "2026-11-28T12:00:00Z"),
        "initech": warehouse("2026-11-20T23:59:59Z", None),
        "globex": warehouse("2026-11-20T23:59:59Z", "2026-11-28T08:00:00Z")}}

    assert [(item["kind"], item["warehouse"]) for item in needs_a_person(report)] == [
        ("past_ship_by", "globex"), ("past_ship_by", "initech"), ("past_ship_by", "acme2"),
        ("near_ship_by", "globex"), ("near_ship_by", "acme2")]


def test_a_file_answered_under_another_name_is_named_by_both_and_its_folder(bridge, sftp_root, capsys):
    """A second VERSAND_1.csv is answered as VERSAND_1~ID.csv (the first holds the name in error/
    and results/): status says that name, its result file's, and the folder, as the file-waiting
    line does."""
    drop(sftp_root / "out", "VERSAND_1.csv", "\r\n".join((
        HEADER, "999-9999999-9999999;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042559;20.11.2026 16:45", "")).encode("cp1252"))
    ShipmentsFlow(bridge.settings, bridge.ledger, AmazonShipments(bridge.settings.amazon, backoff=0.01),
                  sleep=lambda seconds: None).run(LATER, settle=True)
    text = status(bridge, capsys=capsys).splitlines()
    report = json.loads(status(bridge, "--json", capsys=capsys))

    second, first = report["shipments"]["files_in_error"]
    answered = f"VERSAND_1~{second['id']}.csv"
    assert second["safe_name"] == answered and first["safe_name"] == "VERSAND_1.csv"
    assert [line for line in text if line.startswith("  file answered in error/: wh")] == [
        f"  file answered in error/: wh sftp 'VERSAND_1.csv' (answered as '{answered}', result"
        f" results/VERSAND_1~{second['id']}.result.csv) 2026-11-27T23:00: some rows rejected (see its result file)",
        "  file answered in error/: wh sftp 'VERSAND_1.csv' 2026-11-27T22:00: some rows rejected (see its result file)",
    ]
    assert list(sftp_root.rglob(f"VERSAND_1~{second['id']}.result.csv"))
    assert "  file answered in error/: sftp 'BROKEN.csv' 2026-11-27T22:01: " in "\n".join(text)
