"""`fbm-bridge report`: the reconciliation workbook, after real flows (orders pulled from the SP-API
sandbox and delivered over OpenSSH, a confirmation file processed, a stock file published), written
by the command as an operator runs it, opened with openpyxl and read cell by cell."""

from __future__ import annotations

import json
import stat
from datetime import datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from harness import SEED
from shipping import GOLDEN_INPUTS, SHIP_TIME, STABLE, golden
from stocking import NOW, Stocker, clocked_sandbox, drop, load, make_config
from test_cli import bridge
from test_stock_intake import FULL, acme

from bridge.edges.amazon_shipments import AmazonShipments
from bridge.flows.shipments import ShipmentsFlow

# After the golden file's rows 2-7: the mug of 111-0000005 was shipped before the bridge, so Amazon
# refuses it again (row 8); row 9 has no quantity the bridge can read.
REFUSED_ROW = "111-0000005-0000005;MUG-CER-350-BLU;1;DHL_PAKET;00340434161094042601;20.11.2026 16:45"
BAD_ROW = "111-0000001-0000001;KAN-GLAS-1L;x;DHL_PAKET;00340434161094042588;20.11.2026 16:55"
DAY, MINUTE = "yyyy-mm-dd", "yyyy-mm-dd hh:mm"
SHEETS = ["Summary", "Orders", "Due soon", "Rejected rows", "Inventory feeds"]


@pytest.fixture
def sandbox():
    with clocked_sandbox() as running:
        yield running


@pytest.fixture
def story(tmp_path, sshd, sftp_root, sandbox):
    """Five orders delivered on 2026-11-20 12:30; ACME's confirmation file (its golden rows, a row
    Amazon refuses and a bad row) processed at 18:00; on 2026-11-26 a stock file with a bad row and an SKU Amazon does
    not know, published at 22:00."""
    config = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv", shipments=True)
    stocker = Stocker(load(config))
    try:
        stocker.deliver_orders()
        name = GOLDEN_INPUTS["acme-csv"]
        data = (golden("acme-csv") / name).read_bytes().rstrip(b"\r\n") + f"\r\n{REFUSED_ROW}\r\n{BAD_ROW}\r\n".encode()
        drop(Path(stocker.settings.warehouses[0].shipments_folder), name, data)
        flow = ShipmentsFlow(stocker.settings, stocker.ledger, AmazonShipments(stocker.settings.amazon, backoff=0.01),
                             sleep=lambda seconds: None)
        flow.run(SHIP_TIME - STABLE)
        flow.run(SHIP_TIME)
        drop(stocker.remote, "BESTAND_20261126.csv", acme(*FULL, "300500;x", "NOT-LISTED;9"))
        stocker.push(NOW)
    finally:
        stocker.close()
    return config


def report(config, out, *options, now="2026-11-27T08:00:00Z"):
    return bridge("report", "--out", str(out), "--now", now, *options, config=config)


def values(sheet) -> list[list]:
    return [[cell.value for cell in row] for row in sheet.iter_rows()]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- the workbook, sheet by sheet -----------------------------------------------------------------

def test_the_summary_counts_each_warehouses_orders_from_downloaded_to_confirmed(story, tmp_path):
    out = tmp_path / "reports" / "november.xlsx"
    out.parent.mkdir()

    done = report(story, out, "--from", "2026-11-01", "--to", "2026-11-30")

    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"report written: {out} (UTC days 2026-11-01 to 2026-11-30: 5 order(s), 4 due soon or"
                           " late, 3 rejected row(s), 1 stock feed(s))\n")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["november.xlsx"]  # no temporary file left
    book = load_workbook(out)
    assert book.sheetnames == SHEETS
    summary = book["Summary"]
    settings = load(story)
    assert values(summary) == [
        ["Seller (merchant token)", settings.amazon.seller_id, *[None] * 9],
        ["Marketplaces", ", ".join(settings.amazon.marketplaces), *[None] * 9],
        ["Instance (config)", f"{story.stem} ({story})", *[None] * 9],
        ["From (UTC day)", at("2026-11-01"), *[None] * 9],
        ["To (UTC day, included)", at("2026-11-30"), *[None] * 9],
        ["Report made (UTC)", at("2026-11-27T08:00"), *[None] * 9],
        ["Orders", "those the bridge first downloaded in the period (sheet Orders, column Downloaded)", *[None] * 9],
        ["Due soon or late", "orders of the period not yet confirmed whose ship-by is before 2026-11-28 08:00 UTC"
                             " (sheet Due soon)", *[None] * 9],
        ["Rejected rows", "in the confirmation and stock files received in the period", *[None] * 9],
        [None] * 11,
        ["Warehouse", "Downloaded", "Delivered", "Shipped", "Confirmed", "Not sent yet", "Cancelled or not sent",
         "Due soon or late", "Rejected rows", "Last stock feed (UTC)", "Last stock feed outcome"],
        ["wh", 5, 5, 1, 1, 0, 0, 4, 3, at("2026-11-26T20:00"), "published"],
    ]
    assert [summary.cell(row, 2).number_format for row in (4, 5, 6)] == [DAY, DAY, MINUTE]
    assert summary["J12"].is_date and summary["J12"].number_format == MINUTE
    assert [summary.cell(row, 1).font.b for row in range(1, 10)] == [True] * 9
    assert all(cell.font.b for cell in summary[11]) and not any(cell.font.b for cell in summary[12])
    assert (summary.freeze_panes, summary.auto_filter.ref) == (None, "A11:K12")  # nothing pinned: a short table


def test_the_orders_sheet_has_one_row_per_order_with_its_file_units_and_status(story, tmp_path):
    out = tmp_path / "r.xlsx"
    assert report(story, out, "--from", "2026-11-01", "--to", "2026-11-30").returncode == 0

    orders = load_workbook(out)["Orders"]

    delivered = at("2026-11-20T12:30")
    assert values(orders) == [
        ["Order id", "Marketplace", "Purchased (UTC)", "Ship by (UTC)", "Downloaded (UTC)", "Warehouse", "File",
         "Delivered (UTC)", "Ordered", "Shipped", "Confirmed", "Last confirmed (UTC)", "Status"],
        ["111-0000001-0000001", "ATVPDKIKX0DER", at("2026-11-19T22:14:07"), at("2026-11-21T07:59:59"), delivered,
         "wh", "ACME_AUF_111-0000001-0000001.csv", delivered, 2, 0, 0, None, "delivered, not shipped yet"],
        ["111-0000002-0000002", "ATVPDKIKX0DER", at("2026-11-20T01:42:55"), at("2026-11-20T23:59:59"), delivered,
         "wh", "ACME_AUF_111-0000002-0000002.csv", delivered, 11, 9, 9, at("2026-11-20T18:00"), "partly confirmed"],
        ["111-0000005-0000005", "ATVPDKIKX0DER", at("2026-11-18T15:27:09"), at("2026-11-21T07:59:59"), delivered,
         "wh", "ACME_AUF_111-0000005-0000005.csv", delivered, 3, 2, 2, at("2026-11-20T18:00"), "partly confirmed"],
        ["203-0000004-0000004", "A1F83G8C2ARO7P", at("2026-11-20T07:48:36"), at("2026-11-20T23:59:59"), delivered,
         "wh", "ACME_AUF_203-0000004-0000004.csv", delivered, 3, 1, 1, at("2026-11-20T18:00"), "partly confirmed"],
        ["302-0000003-0000003", "A1PA6795UKMFR9", at("2026-11-19T18:03:21"), at("2026-11-21T22:59:59"), delivered,
         "wh", "ACME_AUF_302-0000003-0000003.csv", delivered, 1, 1, 1, at("2026-11-20T18:00"), "confirmed"],
    ]
    for column in "CDEHL":
        dated = [cell for cell in orders[column][1:] if cell.value is not None]
        assert dated and all(cell.is_date and cell.number_format == MINUTE for cell in dated), column
    assert all(isinstance(cell.value, int) for column in "IJK" for cell in orders[column][1:])
    assert (orders.freeze_panes, orders.auto_filter.ref) == ("A2", "A1:M6")


def test_due_soon_lists_the_periods_unconfirmed_orders_by_ship_by_with_the_hours_left(story, tmp_path):
    out = tmp_path / "r.xlsx"
    assert report(story, out, "--from", "2026-11-01", now="2026-11-21T02:00:00Z").returncode == 0

    due = load_workbook(out)["Due soon"]

    # 302-0000003-0000003 is confirmed; the others were due within 24 hours of 02:00, or are late.
    assert values(due) == [
        ["Order id", "Warehouse", "Ship by (UTC)", "Hours left", "Ordered", "Shipped", "Confirmed", "Status"],
        ["111-0000002-0000002", "wh", at("2026-11-20T23:59:59"), -2, 11, 9, 9, "partly confirmed"],
        ["203-0000004-0000004", "wh", at("2026-11-20T23:59:59"), -2, 3, 1, 1, "partly confirmed"],
        ["111-0000001-0000001", "wh", at("2026-11-21T07:59:59"), 6, 2, 0, 0, "delivered, not shipped yet"],
        ["111-0000005-0000005", "wh", at("2026-11-21T07:59:59"), 6, 3, 2, 2, "partly confirmed"],
    ]
    assert all(cell.is_date and cell.number_format == MINUTE for cell in due["C"][1:])
    assert (due.freeze_panes, due.auto_filter.ref) == ("A2", "A1:H5")



def test_an_order_settled_by_a_person_is_not_due_and_says_so(story, tmp_path):
    settled = bridge("shipments", "settle", "111-0000005-0000005", "--note", "mug sent by hand", config=story)
    assert settled.returncode == 0, settled.stderr
    out = tmp_path / "r.xlsx"
    assert report(story, out, "--from", "2026-11-01", now="2026-11-21T02:00:00Z").returncode == 0

    book = load_workbook(out)

    assert "111-0000005-0000005" not in [row[0] for row in values(book["Due soon"])]
    (row,) = [row for row in values(book["Orders"]) if row[0] == "111-0000005-0000005"]
    assert "settled by a person (shipments settle)" in row


def test_orders_of_a_warehouse_without_a_shipments_folder_are_never_due(story, tmp_path):
    """The seller confirms them by hand in Seller Central, which the bridge never hears of."""
    untracked = story.with_name("untracked.toml")
    untracked.write_text("\n".join(line for line in story.read_text().splitlines()
                                   if not line.startswith(("shipments_folder", "local_shipments_folder"))))
    out = tmp_path / "r.xlsx"
    assert report(untracked, out, "--from", "2026-11-01", now="2026-11-21T02:00:00Z").returncode == 0

    book = load_workbook(out)

    assert values(book["Due soon"])[1:] == []
    (row,) = [row for row in values(book["Orders"]) if row[0] == "111-0000001-0000001"]
    assert "delivered; confirmations not tracked (the warehouse has no shipments folder)" in row

def test_rejected_rows_name_the_file_row_column_and_why(story, tmp_path):
    out = tmp_path / "r.xlsx"
    assert report(story, out, "--from", "2026-11-01", "--to", "2026-11-30").returncode == 0

    rejected = load_workbook(out)["Rejected rows"]

    assert values(rejected) == [
        ["Flow", "Warehouse", "File", "Row", "Column", "Reason", "Received (UTC)"],
        ["shipments", "wh", "VERSAND_20261120173000.csv", 8, None, "Amazon refused package 6: InvalidInput: quantity"
         " for orderItemId 50000005000001 exceeds the unshipped quantity", at("2026-11-20T18:00")],
        ["shipments", "wh", "VERSAND_20261120173000.csv", 9, "Menge", "Menge: 'x' is not a whole number of units",
         at("2026-11-20T18:00")],
        ["stock", "wh", "BESTAND_20261126.csv", 7, "Verfügbar", "'x' is not a number", at("2026-11-26T22:00:30")],
    ]
    assert all(cell.is_date and cell.number_format == MINUTE for cell in rejected["G"][1:])
    assert (rejected.freeze_panes, rejected.auto_filter.ref) == ("A2", "A1:G4")


def test_the_inventory_feeds_sheet_shows_each_stock_file_its_outcome_and_amazons_errors(story, tmp_path):
    out = tmp_path / "r.xlsx"
    assert report(story, out).returncode == 0

    feeds = load_workbook(out)["Inventory feeds"]

    assert values(feeds) == [
        ["Warehouse", "File", "Stock time (UTC)", "Received (UTC)", "Rows", "Bad rows", "SKUs", "Outcome", "Why",
         "Published (UTC)", "Feed ids", "Amazon errors", "Amazon warnings", "Amazon's errors"],
        ["wh", "BESTAND_20261126.csv", at("2026-11-26T20:00"), at("2026-11-26T22:00:30"), 7, 1, 5, "published",
         "passed the safety gates", at("2026-11-26T22:00:30"), feeds["K2"].value, 1, 0,
         "SKU NOT-LISTED [4000003]: SKU 'NOT-LISTED' does not exist for this selling partner"],
    ]
    assert feeds["K2"].value.isdigit()  # the sandbox's feed id
    assert all(feeds[f"{column}2"].is_date and feeds[f"{column}2"].number_format == MINUTE for column in "CDJ")
    assert (feeds.freeze_panes, feeds.auto_filter.ref) == ("A2", "A1:N2")



def test_a_stock_file_taken_in_and_waiting_for_the_publish_is_listed_first(story, tmp_path):
    stocker = Stocker(load(story))
    try:
        drop(stocker.remote, "BESTAND_20261127.csv", acme(*FULL, stand="27.11.2026 06:00"))
        stocker.flow.poll(at("2026-11-27T07:00+00:00"))
        stocker.flow.poll(at("2026-11-27T07:01+00:00"))  # seen unchanged: taken in, waits for 22:00
    finally:
        stocker.close()
    out = tmp_path / "r.xlsx"
    assert report(story, out).returncode == 0

    rows = values(load_workbook(out)["Inventory feeds"])

    assert rows[1] == ["wh", "BESTAND_20261127.csv", None, at("2026-11-27T07:01"), None, None, None,
                       "waiting for the publish", "taken in; the daily publish at 22:00 UTC reads and gates it",
                       None, None, 0, 0, None]
    assert rows[2][:2] == ["wh", "BESTAND_20261126.csv"]

def test_every_sheet_has_a_bold_frozen_filtered_header_and_columns_as_wide_as_their_contents(story, tmp_path):
    out = tmp_path / "r.xlsx"
    assert report(story, out).returncode == 0

    for sheet in load_workbook(out).worksheets:
        top = int(sheet.freeze_panes[1:]) - 1 if sheet.freeze_panes else int(sheet.auto_filter.ref.split(":")[0][1:])
        header = [cell for cell in sheet[top] if cell.value is not None]
        assert header and all(cell.font.b for cell in header), sheet.title
        assert sheet.auto_filter.ref.startswith(f"A{top}:"), sheet.title
        for column in range(1, len(header) + 1):
            letter = header[column - 1].column_letter
            shown = [len("2026-11-20 12:30") if isinstance(cell.value, datetime) else len(str(cell.value))
                     for cell in sheet[letter][top - 1:] if cell.value is not None]
            width = sheet.column_dimensions[letter].width
            assert min(max(shown) + 2, 60) <= width <= 60, (sheet.title, letter)


def test_the_workbook_holds_no_buyer_name_address_or_email(story, tmp_path):
    out = tmp_path / "r.xlsx"
    assert report(story, out).returncode == 0

    buyer = set()
    for order in json.loads(SEED.read_text("utf-8")):
        buyer.update(value for value in order.get("buyer", {}).values() if value)
        address = order.get("recipient", {}).get("deliveryAddress", {})
        buyer.update(address.get(key) for key in ("name", "addressLine1", "city", "postalCode", "phone")
                     if address.get(key))
    assert "Jennifer Alvarez" in buyer
    text = [str(cell.value) for sheet in load_workbook(out).worksheets for row in sheet.iter_rows() for cell in row
            if cell.value is not None]
    assert [value for value in text if any(secret in value for secret in buyer)] == []


def test_past_retention_a_rejected_rows_words_are_no_longer_kept_and_amazons_are(story, tmp_path):
    from datetime import timedelta

    from bridge.ledger import Ledger
    from bridge.sealing import Sealer

    settings = load(story)
    ledger = Ledger(settings.ledger_path, Sealer(settings.state_key))
    later = NOW + timedelta(days=60)
    ledger.purge_pii(later - timedelta(days=settings.retention.pii_days), later)
    ledger.close()

    assert report(story, tmp_path / "r.xlsx", "--from", "2026-11-01", "--to", "2026-11-30").returncode == 0

    rejected = load_workbook(tmp_path / "r.xlsx")["Rejected rows"]
    assert [row[5].value for row in rejected.iter_rows(min_row=2)] == [
        "Amazon refused package 6: InvalidInput: quantity for orderItemId 50000005000001 exceeds the unshipped quantity",
        "(why is no longer kept: past retention.pii_days)",
        "'x' is not a number"]


def test_held_orders_are_not_sent_yet_and_due_and_a_whole_file_refused_is_one_row(tmp_path, sshd, sftp_root,
                                                                                   sandbox):
    """Amazon withholds the addresses (the PII role is missing): every order is held. The
    warehouse drops a confirmation file with only its header: the whole file is refused."""
    from bridge.edges.amazon import AmazonOrders
    from bridge.flows.orders import OrdersFlow
    from harness import RUN_TIME

    config = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv", shipments=True)
    stocker = Stocker(load(config))
    try:
        sandbox.set_pii_access(False)
        report_of_run = OrdersFlow(stocker.settings, stocker.ledger, AmazonOrders(stocker.settings.amazon,
                                                                                  backoff=0.01)).run(RUN_TIME)
        assert (report_of_run.held, report_of_run.delivered_orders) == (5, 0)
        drop(Path(stocker.settings.warehouses[0].shipments_folder), "VERSAND_LEER.csv",
             b"Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n")
        flow = ShipmentsFlow(stocker.settings, stocker.ledger, AmazonShipments(stocker.settings.amazon, backoff=0.01),
                             sleep=lambda seconds: None)
        flow.run(SHIP_TIME - STABLE)
        flow.run(SHIP_TIME)
    finally:
        stocker.close()
    out = tmp_path / "r.xlsx"

    assert report(config, out, now="2026-11-21T02:00:00Z").returncode == 0

    book = load_workbook(out)
    # Without an address no warehouse can be chosen: the orders are nobody's yet.
    assert values(book["Summary"])[11:] == [["wh", 0, 0, 0, 0, 0, 0, 0, 1, None, None],
                                           ["(none)", 5, 0, 0, 0, 5, 0, 5, 0, None, None]]
    held = "held: no delivery address from Amazon (PII role missing)"
    assert [(row[0], row[5], row[6], row[7], row[12]) for row in values(book["Orders"])[1:]] == [
        (order_id, None, None, None, held) for order_id in ("111-0000001-0000001", "111-0000002-0000002",
                                                      "111-0000005-0000005", "203-0000004-0000004",
                                                      "302-0000003-0000003")]
    assert [(row[0], row[1], row[3]) for row in values(book["Due soon"])[1:]] == [
        ("111-0000002-0000002", None, -2), ("203-0000004-0000004", None, -2), ("111-0000001-0000001", None, 6),
        ("111-0000005-0000005", None, 6), ("302-0000003-0000003", None, 21)]
    assert values(book["Rejected rows"])[1:] == [
        ["shipments", "wh", "VERSAND_LEER.csv", None, None, "the file has no rows (only a header, or nothing)",
         at("2026-11-20T18:00")]]


# --- the period -------------------------------------------------------------------------------------

@pytest.mark.parametrize("now, options, first, last, orders, rejected, feeds", [
    ("2026-12-19T23:59:00Z", (), "2026-11-20", "2026-12-19", 5, 3, 1),  # the last 30 days, today included
    ("2026-12-20T00:00:00Z", (), "2026-11-21", "2026-12-20", 0, 1, 1),  # downloaded on 2026-11-20: not in them
    ("2026-12-31T00:00:00Z", ("--to", "2026-11-20"), "2026-10-22", "2026-11-20", 5, 2, 0),
    ("2026-12-31T00:00:00Z", ("--from", "2026-11-21"), "2026-11-21", "2026-12-31", 0, 1, 1),
    ("2026-12-31T00:00:00Z", ("--from", "2026-11-20", "--to", "2026-11-20"), "2026-11-20", "2026-11-20", 5, 2, 0),
])
def test_the_period_takes_orders_by_the_utc_day_the_bridge_downloaded_them_and_files_by_the_day_received(
        story, tmp_path, now, options, first, last, orders, rejected, feeds):
    out = tmp_path / "r.xlsx"
    done = report(story, out, *options, now=now)

    assert done.returncode == 0, done.stderr
    assert f"(UTC days {first} to {last}: {orders} order(s)" in done.stdout
    book = load_workbook(out)
    assert (book["Summary"]["B4"].value, book["Summary"]["B5"].value) == (at(first), at(last))
    assert book["Orders"].max_row - 1 == orders
    assert book["Rejected rows"].max_row - 1 == rejected
    assert book["Inventory feeds"].max_row - 1 == feeds  # the newest stock files before the period's end


# --- the file ------------------------------------------------------------------------------------------

def test_an_existing_file_is_refused_unless_force_replaces_it(story, tmp_path):
    out = tmp_path / "r.xlsx"
    out.write_bytes(b"last month's report")

    refused = report(story, out)

    assert refused.returncode == 2
    assert refused.stderr == f"fbm-bridge: --out {out}: the file exists: give another name, or add --force to replace it\n"
    assert out.read_bytes() == b"last month's report"

    replaced = report(story, out, "--force")

    assert replaced.returncode == 0, replaced.stderr
    assert load_workbook(out).sheetnames == SHEETS
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []


def test_the_report_runs_beside_the_service_and_changes_nothing_in_the_state(story, tmp_path):
    import sqlite3

    from bridge.ledger import Ledger
    from bridge.sealing import Sealer

    settings = load(story)

    def dump() -> list[str]:
        db = sqlite3.connect(settings.ledger_path)
        try:
            return list(db.iterdump())
        finally:
            db.close()

    service = Ledger(settings.ledger_path, Sealer(settings.state_key))  # the running service holds it open
    try:
        before = dump()
        done = report(story, tmp_path / "r.xlsx")
        assert done.returncode == 0, done.stderr
        assert dump() == before
    finally:
        service.close()


def test_an_order_whose_record_cannot_be_opened_is_listed_with_why_and_counted(story, tmp_path):
    import sqlite3

    settings = load(story)
    db = sqlite3.connect(settings.ledger_path)
    db.execute("update orders set payload = 'gAAAAdamaged' where order_id = '111-0000001-0000001'")
    db.commit()
    db.close()

    assert report(story, tmp_path / "r.xlsx", "--from", "2026-11-01").returncode == 0

    book = load_workbook(tmp_path / "r.xlsx")
    first = values(book["Orders"])[1]
    assert first[:4] == ["111-0000001-0000001", None, None, None] and first[8] is None
    assert first[12] == ("record unreadable: its sealed data does not open with the state key (damaged or"
                         " altered)")
    assert values(book["Summary"])[11][:8] == ["wh", 5, 5, 1, 1, 0, 0, 3]  # delivered: its status says so
    assert "111-0000001-0000001" not in [row[0] for row in values(book["Due soon"])]
