"""The reconciliation workbook's pure core (bridge/formats/reconciliation.py): rows in, an .xlsx out.
What each order's status says, what is due, and that every cell stays what it is: text never
becomes a formula, times are Excel dates, a sheet never overflows."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta, timezone

import pytest
from openpyxl import load_workbook

from bridge.formats.reconciliation import (
    Period, Table, is_due, order_stage, reconciliation, write_workbook,
)

NOW = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)
PERIOD = Period(date(2026, 11, 1), date(2026, 11, 30))


def order(**changes) -> dict:
    base = {"order_id": "111-0000001-0000001", "status": "delivered", "reason": "", "warehouse": "wh",
            "amazon_status": "UNSHIPPED", "first_seen_at": datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc),
            "file": "A.csv", "delivered_at": datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc), "shipped": 0,
            "confirmed": 0, "confirmed_at": None, "refused": 0, "marketplace_id": "ATVPDKIKX0DER",
            "purchase_date": datetime(2026, 11, 19, tzinfo=timezone.utc),
            "ship_by": datetime(2026, 11, 21, 8, tzinfo=timezone.utc), "ordered": 3, "unreadable": ""}
    return {**base, **changes}


def rejected(**changes) -> dict:
    return {"flow": "shipments", "warehouse": "wh", "file": "VERSAND.csv", "row": 2, "column": "",
            "reason": "Menge: 'x' is not a whole number of units",
            "received_at": datetime(2026, 11, 20, 18, tzinfo=timezone.utc), **changes}


def workbook(tables, **options):
    out = io.BytesIO()
    write_workbook(tables, out, created=NOW, **options)
    return load_workbook(io.BytesIO(out.getvalue()))


@pytest.mark.parametrize("changes, stage", [
    ({"status": "pending"}, "waiting to be sent"),
    ({"status": "held", "reason": "no shipping address yet"}, "held: no shipping address yet"),
    ({"status": "unrenderable", "reason": "item title too long"}, "cannot be laid out: item title too long"),
    ({"status": "staged"}, "being delivered"),
    ({"status": "cancelled", "reason": "cancelled on Amazon before it was sent"},
     "cancelled: cancelled on Amazon before it was sent"),
    ({"status": "skipped", "reason": "ships to CH"}, "not sent: ships to CH"),
    ({"amazon_status": "CANCELLED", "shipped": 3}, "cancelled on Amazon after delivery"),
    ({}, "delivered, not shipped yet"),
    ({"refused": 1}, "shipment refused by Amazon"),
    ({"shipped": 1}, "partly shipped"),
    ({"shipped": 3}, "shipped, waiting for Amazon"),
    ({"shipped": 2, "confirmed": 1}, "partly confirmed"),
    ({"shipped": 3, "confirmed": 3}, "confirmed"),
    ({"unreadable": "its data is not valid JSON (damaged)", "ordered": None},
     "record unreadable: its data is not valid JSON (damaged)"),
    ({"status": "held", "reason": "line\nbreak"}, "held: line\\nbreak"),
])
def test_an_orders_status_in_words(changes, stage):
    assert order_stage(order(**changes)) == stage


@pytest.mark.parametrize("changes, due", [
    ({"ship_by": NOW + timedelta(hours=24)}, True),  # within 24 hours, the limit included
    ({"ship_by": NOW + timedelta(hours=24, seconds=1)}, False),
    ({"ship_by": NOW - timedelta(days=3)}, True),  # late
    ({"ship_by": None}, False),
    ({"status": "held"}, True),  # not even delivered yet
    ({"shipped": 3}, True),  # shipped, Amazon has not confirmed it
    ({"shipped": 3, "confirmed": 3}, False),
    ({"status": "cancelled"}, False),
    ({"status": "skipped"}, False),
    ({"amazon_status": "CANCELLED"}, False),
    ({"unreadable": "damaged", "ordered": None}, False),
])
def test_an_order_is_due_soon_until_confirmed_when_its_ship_by_is_within_24_hours_or_past(changes, due):
    assert is_due(order(**changes), NOW) is due


def test_the_summary_counts_orders_of_warehouses_not_configured_and_of_none():
    orders = [order(), order(order_id="2", warehouse=None, status="held", reason="no warehouse for FR"),
              order(order_id="3", warehouse="old", shipped=3, confirmed=3)]

    summary = reconciliation(PERIOD, NOW, ["wh", "quiet"], orders, [rejected(warehouse="old")], [])[0]

    assert summary.rows == [("wh", 1, 1, 0, 0, 0, 0, 1, 0, None, ""),
                            ("quiet", 0, 0, 0, 0, 0, 0, 0, 0, None, ""),
                            ("(none)", 1, 0, 0, 0, 1, 0, 1, 0, None, ""),
                            ("old", 1, 1, 1, 1, 0, 0, 0, 1, None, "")]


def test_the_summarys_last_stock_feed_is_the_last_file_sent_to_amazon_not_a_held_one():
    def stock(name: str, status: str, day: int) -> dict:
        return {"warehouse": "wh", "file": name, "stock_time": datetime(2026, 11, day, 20, tzinfo=timezone.utc),
                "received_at": datetime(2026, 11, day, 21, tzinfo=timezone.utc), "rows": 5, "bad_rows": 0, "skus": 5,
                "status": status, "reason": "", "forced": False, "published_at": None, "feed_ids": [],
                "amazon_errors": [], "amazon_warnings": 0}

    files = [stock("DAY3.csv", "held", 3), stock("DAY2.csv", "superseded", 2), stock("DAY1.csv", "published", 1)]
    summary = reconciliation(PERIOD, NOW, ["wh"], [], [], files)[0]

    assert summary.rows[0][-2:] == (datetime(2026, 11, 1, 20, tzinfo=timezone.utc), "published")


def test_a_rejected_rows_column_is_read_from_its_reason_with_the_warehouses_column_names():
    rows = [rejected(), rejected(reason="Menge: empty / Sendungsnummer: empty"),
            rejected(reason="order 111-0000009-0000009 is not in the ledger"),
            rejected(flow="stock", column="Verfügbar", reason="'x' is not a number")]

    table = reconciliation(PERIOD, NOW, ["wh"], [], rows, [],
                           column_labels={"wh": ("Auftragsnummer", "Menge", "Sendungsnummer")})[3]

    assert [row[4] for row in table.rows] == ["Menge", "Menge, Sendungsnummer", "", "Verfügbar"]


def test_text_from_a_file_is_never_a_formula_and_control_characters_are_shown_as_escapes():
    table = Table("Rejected rows", ("File", "Reason"),
                  [("=HYPERLINK(\"http://x\",\"click\")", "@SUM(1+1)"), ("a\x07b.csv", "line\nbreak")])

    sheet = workbook([table])["Rejected rows"]

    assert [[cell.value for cell in row] for row in sheet.iter_rows(min_row=2)] == [
        ["=HYPERLINK(\"http://x\",\"click\")", "@SUM(1+1)"], ["a\\x07b.csv", "line\\nbreak"]]
    assert [cell.data_type for row in sheet.iter_rows(min_row=2) for cell in row] == ["s"] * 4


def test_times_are_excel_dates_in_utc_and_days_are_dates():
    later = datetime(2026, 11, 20, 19, 30, 59, tzinfo=timezone(timedelta(hours=1)))
    table = Table("T", ("When", "Day", "Count"), [(later, date(2026, 11, 20), 3)], notes=(("Made", NOW),))

    sheet = workbook([table])["T"]

    assert (sheet["B1"].value, sheet["B1"].number_format) == (datetime(2026, 11, 21, 2, 0), "yyyy-mm-dd hh:mm")
    assert (sheet["A4"].value, sheet["A4"].number_format) == (datetime(2026, 11, 20, 18, 30, 59), "yyyy-mm-dd hh:mm")
    assert (sheet["B4"].value, sheet["B4"].number_format) == (datetime(2026, 11, 20), "yyyy-mm-dd")
    assert sheet["A4"].is_date and sheet["B4"].is_date and sheet["C4"].value == 3
    assert (sheet.freeze_panes, sheet.auto_filter.ref) == (None, "A3:C4")  # a sheet with notes pins nothing


def test_an_empty_table_keeps_its_header_filter_and_widths():
    sheet = workbook([Table("Due soon", ("Order id", "Ship by (UTC)"), [])])["Due soon"]

    assert [cell.value for cell in sheet[1]] == ["Order id", "Ship by (UTC)"]
    assert (sheet.freeze_panes, sheet.auto_filter.ref) == ("A2", "A1:B1")
    assert (sheet.column_dimensions["A"].width, sheet.column_dimensions["B"].width) == (10, 15)


def test_rows_past_the_limit_are_counted_in_a_last_row():
    sheet = workbook([Table("Orders", ("Order id",), [(str(n),) for n in range(5)])], max_rows=3)["Orders"]

    assert [row[0].value for row in sheet.iter_rows()] == [
        "Order id", "0", "1", "2", "... and 2 more rows, not shown: a sheet holds 3 here"]
    assert sheet.auto_filter.ref == "A1:A5"


def test_a_very_long_text_is_cut_to_what_a_cell_holds_and_widths_stop_at_60():
    sheet = workbook([Table("T", ("Reason",), [("x" * 40_000,)])])["T"]

    assert len(sheet["A2"].value) == 32_767 and sheet["A2"].value.endswith("…")
    assert sheet.column_dimensions["A"].width == 60


def test_the_same_rows_give_the_same_bytes_whenever_they_are_written(monkeypatch):
    import time

    def bytes_at(clock: float) -> bytes:
        monkeypatch.setattr(time, "time", lambda: clock)
        monkeypatch.setattr(time, "localtime", lambda seconds=None: time.gmtime(clock))
        out = io.BytesIO()
        write_workbook(reconciliation(PERIOD, NOW, ["wh"], [order()], [rejected()], []), out, created=NOW)
        return out.getvalue()

    assert bytes_at(1_800_000_000) == bytes_at(1_900_000_000)
