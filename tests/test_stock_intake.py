"""Stock up through the intake, end to end: a warehouse's stock file dropped in its SFTP stock
folder (OpenSSH) or its local folder is taken, read with the real readers, gated, published to
the SP-API sandbox's Feeds API and answered with a result file once Amazon's report is in.

Each test is a behaviour a seller relies on: the goldens go to Amazon byte for byte; orders in
flight are not sold twice; the daily publish sends the newest file once; a file is never taken
twice, never published twice, always answered; a crash anywhere converges without a second
submission.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from amazon_models import validate_feed_schema
from bridge.flows.stock_intake import PUBLISH_BOOKMARK
from bridge.ledger import StockFileStatus
from harness import write_mapping, MAPPINGS
from stocking import (
    GOLDEN, NOW, STABLE, Stocker, clocked_sandbox, drop, files, golden_feed, in_flight_of, load,
    make_config, result_lines, result_rows)

DAY2 = NOW + timedelta(days=1)
ACME_HEADER = "Artikelnummer;Bezeichnung;Charge;Lagerplatz;Verfügbar;Stand"


class Crash(BaseException):
    """A crash at a checkpoint: nothing in the flow catches it, like a kill -9."""


@pytest.fixture
def sandbox():
    with clocked_sandbox() as running:
        yield running


@pytest.fixture
def make(tmp_path, sshd, sftp_root, sandbox):
    made = []

    def make(mapping: str = "acme-csv", **options) -> Stocker:
        stocker = Stocker(load(make_config(tmp_path, sshd, sftp_root, sandbox, mapping, **options)))
        made.append(stocker)
        return stocker
    yield make
    for stocker in made:
        stocker.close()


def acme(*rows: str, stand: str = "26.11.2026 21:00") -> bytes:
    """An ACME stock file: rows of 'article;quantity' or 'article;lot;bin;quantity'."""
    lines = [ACME_HEADER]
    for row in rows:
        cells = row.split(";")
        article, lot, location, quantity = (cells[0], "", "", cells[1]) if len(cells) == 2 else cells
        lines.append(f"{article};Artikel {article};{lot};{location};{quantity};{stand}")
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


FULL = ("100234;40", "100871;8", "200110;5", "300500;3", "300501;17")  # the five listed SKUs, by ACME's numbers


def feeds(sandbox) -> list[dict]:
    return [json.loads(feed["document"]) for feed in sandbox.feeds.values()]


# --- goldens ----------------------------------------------------------------------------------

GLOBEX_SHIPPED = """<?xml version="1.0" encoding="UTF-8"?>
<ShipConfirmations>
  <Shipment orderId="111-0000001-0000001"><Package trackingNumber="1Z999AA10123456784">
    <Carrier>UPS</Carrier><ShippedAt>2026-11-26T16:40:00Z</ShippedAt>
    <Item><OrderItemId>50000001000001</OrderItemId><Quantity>2</Quantity></Item></Package></Shipment>
  <Shipment orderId="111-0000002-0000002"><Package trackingNumber="1Z999AA10123456795">
    <Carrier>UPS</Carrier><ShippedAt>2026-11-26T16:40:00Z</ShippedAt>
    <Item><OrderItemId>50000002000001</OrderItemId><Quantity>4</Quantity></Item>
    <Item><OrderItemId>50000002000002</OrderItemId><Quantity>3</Quantity></Item>
    <Item><OrderItemId>50000002000003</OrderItemId><Quantity>1</Quantity></Item></Package></Shipment>
  <Shipment orderId="302-0000003-0000003"><Package trackingNumber="1Z999AA10123456806">
    <Carrier>UPS</Carrier><ShippedAt>2026-11-26T16:40:00Z</ShippedAt>
    <Item><OrderItemId>50000003000001</OrderItemId><Quantity>1</Quantity></Item></Package></Shipment>
  <Shipment orderId="203-0000004-0000004"><Package trackingNumber="1Z999AA10123456817">
    <Carrier>UPS</Carrier><ShippedAt>2026-11-26T16:40:00Z</ShippedAt>
    <Item><OrderItemId>50000004000002</OrderItemId><Quantity>2</Quantity></Item></Package></Shipment>
  <Shipment orderId="111-0000005-0000005"><Package trackingNumber="1Z999AA10123456828">
    <Carrier>UPS</Carrier><ShippedAt>2026-11-26T16:40:00Z</ShippedAt>
    <Item><OrderItemId>50000005000002</OrderItemId><Quantity>1</Quantity></Item></Package></Shipment>
</ShipConfirmations>
"""


@pytest.mark.parametrize("source", ["sftp", "local"])
@pytest.mark.parametrize("mapping", ["acme-csv", "globex-xml", "initech-xlsx"])
def test_a_golden_stock_file_goes_to_amazon_byte_for_byte_and_is_answered(make, sandbox, mapping, source):
    stocker = make(mapping, shipments=mapping == "globex-xml")
    if mapping == "globex-xml":  # on_hand: Globex's count includes parcels not yet shipped
        stocker.deliver_orders()
        stocker.ship("GLOBEX_SHIPCONFIRM_1.xml", GLOBEX_SHIPPED.encode(), NOW - timedelta(hours=4))
        assert stocker.ledger.units_in_flight("wh", datetime(2026, 11, 27, 4, tzinfo=timezone.utc)) \
            == in_flight_of(GOLDEN[mapping].parent)
    folder = stocker.remote if source == "sftp" else stocker.local
    name = GOLDEN[mapping].name
    drop(folder, name, GOLDEN[mapping].read_bytes())

    report = stocker.push()

    assert report.all_errors == [] and not report.needs_a_person
    (feed,) = sandbox.feeds.values()
    assert feed["document"] == golden_feed(mapping)
    validate_feed_schema("listings-feed-schema-v2.json", json.loads(feed["document"]))
    sent = [m["sku"] for m in json.loads(golden_feed(mapping))["messages"]]
    assert result_rows(folder, name) == [["row", "result", "sku", "column", "message"], [
        "", "published", "", "", f"passed the safety gates. {len(sent)} SKUs sent, Amazon took {len(sent)}"]]
    assert files(folder / "archive") == {name: GOLDEN[mapping].read_bytes()}
    assert files(folder) == files(folder / "processing") == files(folder / "error") == {}
    assert sorted(sku for sku, _, _ in stocker.ledger.published_levels()) == sorted(sent)


def test_documents_a_stopped_run_left_unrecorded_are_removed_by_the_next_publish(make, sandbox):
    stocker = make("acme-csv")
    left = stocker.settings.state_dir / "stock" / "wh" / "0123456789abcdef"  # killed while reading a file
    left.mkdir(parents=True)
    (left / "part-0001.json").write_text('{"header": {}, "messages": [')
    drop(stocker.remote, GOLDEN["acme-csv"].name, GOLDEN["acme-csv"].read_bytes())

    report = stocker.push()

    assert report.all_errors == [] and len(sandbox.feeds) == 1
    assert not left.exists()
    kept = [path.parent.name for path in (stocker.settings.state_dir / "stock" / "wh").glob("*/part-*.json")]
    assert kept and all(stocker.ledger.stock_file_known("wh", name) for name in kept)  # the published file's stay


def test_after_a_file_out_of_sku_order_the_next_files_go_straight_to_the_sort_for_a_week(make, sandbox, monkeypatch):
    from bridge.flows import inventory

    stocker = make("acme-csv")
    header = GOLDEN["acme-csv"].read_bytes().split(b"\r\n")[0]
    lines = [b"100871;Teller;;C-02-04;8;26.11.2026 21:00", b"200110;Kanne;;D-01-01;5;26.11.2026 21:00"]
    drop(stocker.remote, "BESTAND_1.csv", b"\r\n".join([header, *lines, b""]))  # PLT-... before KAN-...: out of order
    assert stocker.push().all_errors == []
    found_out = stocker.ledger.bookmark("stock_unsorted_wh")
    tried: list = []
    in_order = inventory.tally_in_order
    monkeypatch.setattr(inventory, "tally_in_order", lambda *a, **k: tried.append(a) or in_order(*a, **k))
    drop(stocker.remote, "BESTAND_2.csv", b"\r\n".join([header, *reversed(lines), b""]).replace(b"26.11", b"27.11"))

    assert stocker.push(NOW + timedelta(days=1)).all_errors == []
    assert found_out is not None and tried == []  # read once, by the sort


def test_orders_in_flight_are_those_no_parcel_had_left_with_at_the_stock_time(make):
    stocker = make("globex-xml", shipments=True)
    stocker.deliver_orders()
    everything = {"MUG-CER-350-BLU": 9, "TEA-INF-SS-01": 5, "CST-CORK-4PK": 3, "KAN-GLAS-1L": 1, "PLT-STN-27CM-4": 2}
    assert stocker.ledger.units_in_flight("wh", NOW) == everything
    stocker.ship("GLOBEX_SHIPCONFIRM_1.xml", GLOBEX_SHIPPED.encode(), NOW - timedelta(hours=4))

    shipped_at = datetime(2026, 11, 26, 16, 40, tzinfo=timezone.utc)
    assert stocker.ledger.units_in_flight("wh", shipped_at - timedelta(minutes=1)) == everything  # still on the shelf
    assert stocker.ledger.units_in_flight("wh", shipped_at) == {"MUG-CER-350-BLU": 3, "PLT-STN-27CM-4": 1,
                                                                 "CST-CORK-4PK": 2}
    assert stocker.ledger.units_in_flight("other", shipped_at) == {}


def test_the_same_file_twice_is_published_once_and_answered_as_a_duplicate(make, sandbox):
    stocker = make()
    drop(stocker.remote, "BESTAND_1.csv", acme(*FULL))
    stocker.push()
    drop(stocker.remote, "BESTAND_2.csv", acme(*FULL))
    report = stocker.push(NOW + timedelta(hours=1))

    assert len(sandbox.feeds) == 1 and report.inbound.duplicates == 1
    assert result_lines(stocker.remote, "BESTAND_2.csv") == [
        ";duplicate;;;already processed on 2026-11-26 as BESTAND_1.csv: not published again"]
    assert list(files(stocker.remote / "archive")) == ["BESTAND_1.csv", "BESTAND_2.csv"]
    assert report.notes == ["no new stock file since the last published one (BESTAND_1.csv, published "
                            "2026-11-26T22:00:30Z): nothing to publish"]


# --- the result file ----------------------------------------------------------------------------

def test_bad_rows_are_answered_with_row_column_and_why_and_the_rest_is_published(make, sandbox):
    stocker = make()
    drop(stocker.remote, "BESTAND.csv", acme("100234;L1;A-01;40", "100871;8", "100234;L2;A-02;12,5", "200110;5",
                                             "300500;x", "300501;17", ";3"))
    stocker.push()

    (document,) = feeds(sandbox)
    assert [m["sku"] for m in document["messages"]] == ["KAN-GLAS-1L", "PLT-STN-27CM-4", "TEA-INF-SS-01"]
    assert result_lines(stocker.remote, "BESTAND.csv") == [
        ";published;;;passed the safety gates. 3 SKUs sent, Amazon took 3",
        "2;warning;100234;;SKU 'MUG-CER-350-BLU' is not sent because row 4 is bad",
        "4;rejected;100234;Verfügbar;'12,5' is not a whole number",
        "6;rejected;300500;Verfügbar;'x' is not a number",
        "8;rejected;;Artikelnummer;no SKU",
    ]
    assert list(files(stocker.remote / "error")) == ["BESTAND.csv"]  # some rows were rejected


def test_amazons_errors_and_warnings_arrive_in_the_result_file_by_sku_and_row(make, sandbox):
    sandbox.listing_warnings["KAN-GLAS-1L"] = "Attributes tagged as relevant_attributes are incomplete."
    stocker = make()
    drop(stocker.remote, "BESTAND.csv", acme(*FULL, "NOT-LISTED;9"))
    stocker.push()

    assert result_lines(stocker.remote, "BESTAND.csv") == [
        ";published;;;passed the safety gates. 6 SKUs sent, Amazon took 5 and refused 1 (below)",
        "4;warning;KAN-GLAS-1L;;Amazon warning [18448]: Attributes tagged as relevant_attributes are incomplete.",
        "7;rejected;NOT-LISTED;;Amazon error [4000003]: SKU 'NOT-LISTED' does not exist for this selling partner",
    ]
    assert list(files(stocker.remote / "error")) == ["BESTAND.csv"]
    assert "NOT-LISTED" not in {sku for sku, _, _ in stocker.ledger.published_levels()}


def test_the_result_file_waits_for_amazons_report(make, sandbox):
    stocker = make()
    sandbox.feed_polls_until_done = 50  # Amazon takes its time
    stocker.flow.max_wait_seconds = 0
    drop(stocker.remote, "BESTAND.csv", acme(*FULL))
    report = stocker.push()

    assert [o.status for o in report.outcomes] == ["submitting"]
    assert list(files(stocker.remote / "processing")) == ["BESTAND.csv"] and files(stocker.remote / "results") == {}
    sandbox.feed_polls_until_done = 1
    stocker.flow.poll(NOW + timedelta(minutes=5))  # the service's next pass reads the report
    assert result_lines(stocker.remote, "BESTAND.csv") == [
        ";published;;;passed the safety gates. 5 SKUs sent, Amazon took 5"]
    assert list(files(stocker.remote / "archive")) == ["BESTAND.csv"] and len(sandbox.feeds) == 1


# --- held files -----------------------------------------------------------------------------------

def test_a_held_file_waits_in_processing_and_force_publishes_it_and_answers_it(make, sandbox):
    stocker = make()
    drop(stocker.remote, "DAY1.csv", acme(*FULL))
    stocker.push()
    drop(stocker.remote, "DAY2.csv", acme(*FULL[:3], stand="27.11.2026 21:00"))  # 2 of 5 SKUs missing
    held = stocker.push(DAY2)

    assert [o.status for o in held.outcomes] == ["held"] and held.needs_a_person
    assert list(files(stocker.remote / "processing")) == ["DAY2.csv"] and len(sandbox.feeds) == 1
    # the warehouse sees only its folders: a provisional answer says why the file waits
    assert result_lines(stocker.remote, "DAY2.csv") == [
        ";held;;;held: 2 of the 5 SKUs published lately (40.0%) are missing from this file, more than the limit of "
        "10% (e.g. CST-CORK-4PK, TEA-INF-SS-01). Waiting for the seller: `fbm-bridge inventory push --force` "
        "publishes it, a newer stock file replaces it. This answer is then replaced"]

    forced = stocker.push(DAY2 + timedelta(minutes=10), force=True)
    assert [o.status for o in forced.outcomes] == ["published"] and not forced.needs_a_person
    assert result_lines(stocker.remote, "DAY2.csv") == [
        ";published;;;published with --force, overriding: 2 of the 5 SKUs published lately (40.0%) are "
        "missing from this file, more than the limit of 10% (e.g. CST-CORK-4PK, TEA-INF-SS-01). 3 SKUs sent, "
        "Amazon took 3"]
    assert len(sandbox.feeds) == 2


def test_a_newer_file_supersedes_a_held_one_and_both_are_answered(make, sandbox):
    stocker = make()
    drop(stocker.remote, "DAY1.csv", acme(*FULL))
    stocker.push()
    drop(stocker.remote, "DAY2.csv", acme(*(row.split(";")[0] + ";0" for row in FULL), stand="27.11.2026 21:00"))
    stocker.push(DAY2)
    drop(stocker.remote, "DAY3.csv", acme(*FULL, stand="28.11.2026 21:00"))
    report = stocker.push(DAY2 + timedelta(days=1))

    assert [o.status for o in report.outcomes] == ["published"]
    assert result_lines(stocker.remote, "DAY2.csv") == [
        ";superseded;;;superseded by the newer stock file DAY3.csv (held: 5 of the 5 SKUs in stock on Amazon "
        "(100.0%) would drop to zero, more than the limit of 20% (e.g. CST-CORK-4PK, KAN-GLAS-1L, MUG-CER-350-BLU))"]
    assert list(files(stocker.remote / "archive")) == ["DAY1.csv", "DAY2.csv", "DAY3.csv"]
    assert len(sandbox.feeds) == 2


def test_force_with_a_newer_file_waiting_checks_the_newer_one_and_forces_nothing(make, sandbox):
    stocker = make()
    drop(stocker.remote, "DAY1.csv", acme(*FULL))
    stocker.push()
    drop(stocker.remote, "DAY2.csv", acme(*FULL[:2], stand="27.11.2026 21:00"))
    stocker.push(DAY2)
    drop(stocker.remote, "DAY3.csv", acme(*FULL[:2], stand="28.11.2026 21:00"))
    report = stocker.push(DAY2 + timedelta(days=1), force=True)

    assert report.notes[0].startswith("not forced: the stock file DAY3.csv arrived after the held DAY2.csv")
    assert [o.status for o in report.outcomes] == ["held"] and len(sandbox.feeds) == 1
    assert result_lines(stocker.remote, "DAY2.csv")[0].startswith(";superseded;;;superseded by the newer stock file DAY3.csv")


def test_a_file_with_the_name_of_a_waiting_one_supersedes_it(make, sandbox):
    """A WMS that writes STOCK.csv twice before the publish: the later one is published."""
    stocker = make()
    drop(stocker.remote, "STOCK.csv", acme(*FULL, stand="26.11.2026 14:00"))
    stocker.flow.poll(NOW - timedelta(hours=8))
    stocker.flow.poll(NOW - timedelta(hours=8) + STABLE)
    assert list(files(stocker.remote / "processing")) == ["STOCK.csv"]  # waiting for the publish
    later = acme(*FULL[:4], "300501;3", stand="26.11.2026 21:00")
    drop(stocker.remote, "STOCK.csv", later)
    stocker.push()

    (document,) = feeds(sandbox)
    assert {m["sku"]: m["patches"][0]["value"][0]["quantity"] for m in document["messages"]}["TEA-INF-SS-01"] == 2
    assert result_lines(stocker.remote, "STOCK.csv") == [
        ";not published;;;not published: a newer file of the same name (STOCK.csv) arrived before the publish"]
    assert sorted(files(stocker.remote / "archive")) == ["STOCK.csv", "STOCK~2.csv"]
    assert files(stocker.remote / "archive")["STOCK~2.csv"] == later


# --- the daily publish ----------------------------------------------------------------------------

def test_the_daily_publish_sends_the_newest_file_at_the_configured_local_time(make, sandbox):
    stocker = make(stock='publish_at = "23:00"\ntimezone = "Europe/Berlin"')  # 22:00 UTC in winter
    start = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    stocker.flow.poll(start)  # the service starts: the first publish is tonight's
    drop(stocker.remote, "BESTAND_A.csv", acme(*FULL, stand="26.11.2026 14:00"))
    stocker.flow.poll(start + timedelta(hours=2))
    drop(stocker.remote, "BESTAND_B.csv", acme(*FULL[:4], "300501;9", stand="26.11.2026 21:00"))
    stocker.flow.poll(start + timedelta(hours=9))
    stocker.flow.poll(start + timedelta(hours=9) + STABLE)

    stocker.flow.poll(NOW - timedelta(seconds=1))
    assert sandbox.feeds == {}  # 22:59:59 in Berlin
    report = stocker.flow.poll(NOW + timedelta(seconds=20))

    assert [o.name for o in report.outcomes] == ["BESTAND_B.csv"] and len(sandbox.feeds) == 1
    assert result_lines(stocker.remote, "BESTAND_A.csv") == [
        ";not published;;;not published: the newer stock file BESTAND_B.csv came before the publish"]
    assert stocker.flow.poll(NOW + timedelta(hours=1)).outcomes == []  # not due again until tomorrow
    assert stocker.ledger.bookmark(PUBLISH_BOOKMARK) == NOW + timedelta(seconds=20)


def test_a_publish_with_nothing_new_does_nothing_and_says_so(make, sandbox, caplog):
    stocker = make()
    stocker.flow.poll(NOW - timedelta(hours=1))
    drop(stocker.remote, "BESTAND.csv", acme(*FULL))
    stocker.push(NOW - timedelta(minutes=30))
    caplog.set_level("INFO", logger="bridge.stock")

    report = stocker.flow.poll(NOW + timedelta(minutes=1))

    assert report.outcomes == [] and len(sandbox.feeds) == 1
    assert report.notes == ["no new stock file since the last published one (BESTAND.csv, published "
                            "2026-11-26T21:30:30Z): nothing to publish"]
    assert "stock publish: no new stock file since the last published one" in caplog.text


def test_a_publish_missed_while_the_service_was_down_is_made_when_it_starts(make, sandbox):
    stocker = make()
    stocker.flow.poll(NOW - timedelta(hours=2))
    drop(stocker.remote, "BESTAND.csv", acme(*FULL))
    stocker.flow.poll(NOW - timedelta(hours=1))
    stocker.flow.poll(NOW - timedelta(hours=1) + STABLE)
    stocker = stocker.restart()  # down over 22:00, back at 06:00
    report = stocker.flow.poll(NOW + timedelta(hours=8))
    assert [o.status for o in report.outcomes] == ["published"]


# --- crash and restart ----------------------------------------------------------------------------

STEPS = ["claimed", "spooled", "recorded", "read",  # the inbound pipeline
         "document_created", "uploaded", "submitting", "feed_created", "submitted", "report_fetched",
         "reported",  # the inventory flow (its own "recorded" comes after the pipeline's)
         "result_uploaded", "result_renamed", "moved"]  # answering


def crash_at(step: str, nth: int = 1):
    seen = []

    def checkpoint(reached: str) -> None:
        if reached == step:
            seen.append(step)
            if len(seen) == nth:
                raise Crash(step)
    return checkpoint


@pytest.mark.parametrize("step", STEPS + ["recorded#2"])
def test_a_crash_at_any_step_restarted_publishes_the_file_once_and_answers_it(make, sandbox, step):
    stocker = make()
    name, at = step.partition("#")[0], int(step.partition("#")[2] or 1)
    drop(stocker.remote, "BESTAND.csv", acme(*FULL))
    crashing = stocker.restart(crash_at(name, at))
    with pytest.raises(Crash):
        crashing.push()
    sandbox.test_clock["now"] = NOW + timedelta(minutes=5)
    restarted = crashing.restart()
    restarted.push(NOW + timedelta(minutes=5))
    restarted.flow.poll(NOW + timedelta(minutes=6))  # answers a file whose report came in the last pass

    assert len(sandbox.feeds) == 1, step  # submitted exactly once
    assert result_lines(restarted.remote, "BESTAND.csv") == [
        ";published;;;passed the safety gates. 5 SKUs sent, Amazon took 5"]
    assert list(files(restarted.remote / "archive")) == ["BESTAND.csv"]
    assert files(restarted.remote / "processing") == files(restarted.remote) == {}
    stocker.ledger = restarted.ledger  # closed by the fixture


def test_status_of_a_stock_file_is_told_from_the_ledger(make, sandbox):
    from bridge.service import stock_status

    stocker = make()
    drop(stocker.remote, "DAY1.csv", acme(*FULL))
    stocker.push()
    drop(stocker.remote, "DAY2.csv", acme(*FULL[:3], stand="27.11.2026 21:00"))
    stocker.push(DAY2)
    drop(stocker.remote, "BROKEN.csv", b"Artikel;Menge\r\n1;2\r\n")
    stocker.push(DAY2 + timedelta(minutes=1))

    report = stock_status(stocker.settings, stocker.ledger, DAY2 + timedelta(hours=1))
    assert report["last_published"]["name"] == "DAY1.csv" and report["last_published"]["status"] == "published"
    assert [(h["name"], h["reason"][:60]) for h in report["held"]] == [
        ("DAY2.csv", "held: 2 of the 5 SKUs published lately (40.0%) are missing f")]
    assert [(f["name"], f["reason"][:45]) for f in report["files_in_error"]] == [
        ("BROKEN.csv", "row 1 has 2 fields and none is one of the col")]
    assert report["next_publish"] == "2026-11-28T22:00:00Z"  # tonight's (22:00 UTC) has passed
    assert StockFileStatus.HELD.value == report["latest"]["status"]


def test_a_mapping_with_header_positions_reads_stock_by_column_number(make, sandbox, tmp_path):
    mapping = tmp_path / "acme-positions.toml"
    text = (MAPPINGS / "acme-csv.toml").read_text("utf-8")
    stock, _, rest = text.partition("[stock.columns]")
    columns, _, tail = rest.partition("\n\n")
    write_mapping(mapping, stock.replace('[stock]\nformat = "csv"\n', '[stock]\nformat = "csv"\nheader = false\n')
                  + "[stock.columns]\nsku = 1\nquantity = 5\ntimestamp = 6\nlot = 3\nlocation = 4\n\n" + tail)
    stocker = make(str(mapping).removesuffix(".toml"))
    drop(stocker.remote, "BESTAND.csv", GOLDEN["acme-csv"].read_bytes().split(b"\r\n", 1)[1])  # no header row
    stocker.push()

    (feed,) = sandbox.feeds.values()
    ids = [m["messageId"] for m in json.loads(feed["document"])["messages"]]
    golden_ids = [m["messageId"] for m in json.loads(golden_feed("acme-csv"))["messages"]]
    assert ids == [n - 1 for n in golden_ids]  # the same rows, one line higher without the header


def test_a_feed_amazon_never_finishes_is_overdue_for_a_person_and_a_newer_file_goes(make, sandbox):
    from bridge.report import format_stock_status
    from bridge.service import stock_status

    stocker = make()
    sandbox.feed_polls_until_done = 10**9  # IN_PROGRESS for good
    stocker.flow.max_wait_seconds = 0
    drop(stocker.remote, "B1.csv", acme(*FULL))
    first = stocker.push()
    assert [o.status for o in first.outcomes] == ["submitting"] and not first.needs_a_person

    drop(stocker.remote, "B2.csv", acme(*FULL, stand="27.11.2026 21:00"))
    soon = stocker.push(NOW + timedelta(hours=3))  # within stock.feed_timeout_hours (4): waits
    assert any("B1.csv is still with Amazon; B2.csv waits for it" in e for e in soon.all_errors)
    assert len(sandbox.feeds) == 1

    late = NOW + timedelta(hours=5)
    report = stocker.push(late)
    overdue = ("stock file B1.csv has been with Amazon since 2026-11-26T22:00:30Z, longer than "
               "stock.feed_timeout_hours (4): check its feed in Seller Central (feed upload status); newer stock "
               "files no longer wait for it, and if it still finishes its outcome is recorded")
    assert report.needs_a_person and overdue in report.all_errors
    assert len(sandbox.feeds) == 2  # B2 went; B1 was never sent again
    lines = format_stock_status(stock_status(stocker.settings, stocker.ledger, late))
    assert [line for line in lines if "OVERDUE" in line] == [
        "  OVERDUE: 'B1.csv' with Amazon since 2026-11-26T22:00:30Z (5h00m), longer than stock.feed_timeout_hours (4): "
        "check its feed in Seller Central (feed upload status); newer stock files no longer wait for it"]

    sandbox.feed_polls_until_done = 0  # Amazon finishes both after all: each outcome is recorded once
    stocker.push(late + timedelta(hours=1))
    assert {f.name: f.status for f in stocker.ledger.stock_files_in(StockFileStatus.PUBLISHED)} == {
        "B1.csv": StockFileStatus.PUBLISHED, "B2.csv": StockFileStatus.PUBLISHED}
    assert len(sandbox.feeds) == 2


# --- a stock file still being written when it was taken -----------------------------------------

def taken_then_written_on(stocker, sshd) -> tuple[bytes, bytes]:
    """The WMS uploads three SKUs of BESTAND.csv and pauses past stable_seconds: the bridge
    takes the file in (it waits for the publish); then it writes the rest through the same
    handle. Returns (the part taken, the whole file)."""
    from test_shipments_flow import SlowUpload

    part, whole = acme(*FULL[:3]), acme(*FULL)
    upload = SlowUpload(sshd, stocker.remote / "BESTAND.csv")
    try:
        upload.write(part)
        stocker.flow.poll(NOW - timedelta(hours=1))
        stocker.flow.poll(NOW - timedelta(hours=1) + STABLE)
        upload.write(whole[len(part):])
    finally:
        upload.close()
    return part, whole


def test_a_stock_file_still_being_written_when_taken_is_never_published_from_the_part_read(make, sandbox, sshd):
    """The WMS paused longer than stable_seconds after a line break, then wrote the rest: its
    open handle followed the file into processing/. The daily publish (a pass that lists no
    folder) finds it grown: the part read is passed over, the whole file put back, taken again
    and published."""
    stocker = make(stock='publish_at = "23:00"\ntimezone = "Europe/Berlin"')  # 22:00 UTC in winter
    stocker.flow.poll(NOW - timedelta(hours=2))  # the service starts: the first publish is tonight's
    part, whole = taken_then_written_on(stocker, sshd)
    assert files(stocker.remote / "processing") == {"BESTAND.csv": whole}  # taken in, it waits for the publish

    report = stocker.flow.poll(NOW + timedelta(seconds=20), remote=False, local=False)  # the daily publish

    assert sandbox.feeds == {}
    assert report.notes == ["not published yet: BESTAND-again-1.csv is a stock file that was still being written "
                            "when it was taken, put back whole; the publish waits until it is taken again"]
    assert result_lines(stocker.remote, "BESTAND.csv") == [
        f";read again;;;the file was still being written when the bridge took it: its first {len(part)} bytes were "
        f"read and answered here, it had {len(whole)} bytes later. Nothing is lost: the whole file is taken again "
        "as BESTAND-again-1.csv and answered in results/BESTAND-again-1.result.csv. To avoid this, the WMS should "
        "write the file under a temporary name and rename it when it is complete",
        ";not published;;;not published: it was still being written when it was taken (the whole file is taken "
        "again as BESTAND-again-1.csv)"]
    assert files(stocker.remote) == {"BESTAND-again-1.csv": whole}
    assert files(stocker.remote / "archive") == {"BESTAND.csv": part}

    stocker.flow.poll(NOW + timedelta(minutes=5), local=False)  # listed
    report = stocker.flow.poll(NOW + timedelta(minutes=5) + STABLE, local=False)  # taken, and published

    (document,) = feeds(sandbox)
    assert len(document["messages"]) == 5  # every SKU of the whole file
    assert [o.name for o in report.outcomes] == ["BESTAND-again-1.csv"]
    assert stocker.ledger.bookmark(PUBLISH_BOOKMARK) == NOW + timedelta(minutes=5) + STABLE


def test_an_older_waiting_file_is_not_published_while_a_newer_one_is_taken_again(make, sandbox, sshd):
    """attack-7 F3: the 15:00 file waits, the 21:00 file was still being written when taken:
    the publish waits for the whole 21:00 file, which supersedes the 15:00 one."""
    stocker = make(stock='publish_at = "23:00"\ntimezone = "Europe/Berlin"')
    stocker.flow.poll(NOW - timedelta(hours=3))
    drop(stocker.remote, "OLD.csv", acme(*FULL[:2], stand="26.11.2026 15:00"))
    stocker.flow.poll(NOW - timedelta(hours=2))
    stocker.flow.poll(NOW - timedelta(hours=2) + STABLE)  # taken in: waits for the publish
    taken_then_written_on(stocker, sshd)

    report = stocker.flow.poll(NOW + timedelta(seconds=20), remote=False, local=False)  # the daily publish

    assert sandbox.feeds == {}
    assert report.notes[-1] == ("not published yet: BESTAND-again-2.csv is a stock file that was still being "
                                "written when it was taken, put back whole; the publish waits until it is taken again")
    stocker.flow.poll(NOW + timedelta(minutes=5), local=False)
    report = stocker.flow.poll(NOW + timedelta(minutes=5) + STABLE, local=False)

    (document,) = feeds(sandbox)
    assert len(document["messages"]) == 5 and [o.name for o in report.outcomes] == ["BESTAND-again-2.csv"]
