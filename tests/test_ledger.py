"""The ledger (bridge/ledger.py): SQLite state on disk; only it changes a status, and a window's
bookmark moves in the same transaction as the orders that window produced."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.ledger import FileStatus, Ledger, Observation, OrderStatus
from bridge.records import Address, Line, Order
from bridge.sealing import Sealer, new_key

SEALER = Sealer(new_key())

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc)
BOOKMARK = "orders.window_end"


def order(order_id: str = "111-0000001-0000001", *, updated: datetime = T0, status: str = "UNSHIPPED",
          address: bool = True) -> Order:
    return Order(
        order_id=order_id,
        marketplace_id="ATVPDKIKX0DER",
        purchase_date=T0 - timedelta(hours=1),
        last_updated=updated,
        status=status,
        buyer_name="Jane Buyer",
        buyer_email="jane@marketplace.amazon.com",
        ship_to=Address(name="Jane Buyer", line1="1 Main St", city="Springfield", postal_code="12345",
                        country_code="US") if address else None,
        lines=(Line("10001", "SKU-1", "B000000001", "Widget", 2, Decimal("9.99"), "USD"),),
    )


def seen(o: Order, status: OrderStatus = OrderStatus.PENDING, warehouse: str | None = "wh", reason: str = "") -> Observation:
    return Observation(o, status, reason, warehouse if status == OrderStatus.PENDING else None)


@pytest.fixture
def ledger(tmp_path: Path):
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite", SEALER)
    yield ledger
    ledger.close()


def status_of(ledger: Ledger, order_id: str = "111-0000001-0000001") -> str | None:
    row = ledger.order_row(order_id)
    return row and row["status"]


def staged(ledger: Ledger, *order_ids: str, name: str = "f.csv") -> int:
    return ledger.stage_file("wh", name, Path("/spool") / name, 10, "ab" * 32, order_ids, NOW)


# --- bookmark and observations move together ------------------------------------------------

def test_the_bookmark_moves_with_the_orders_of_its_window(ledger):
    summary = ledger.record([seen(order())], NOW, bookmark=(BOOKMARK, T0))
    assert summary.new == 1
    assert ledger.bookmark(BOOKMARK) == T0
    assert status_of(ledger) == "pending"


def test_if_recording_breaks_midway_neither_the_orders_nor_the_bookmark_change(ledger):
    ledger.record([seen(order("111-0000001-0000001"))], NOW, bookmark=(BOOKMARK, T0))
    newer = order("111-0000001-0000001", updated=T0 + timedelta(minutes=5), address=False)
    broken = dataclasses.replace(order("111-0000002-0000002"), last_updated=None)  # type: ignore[arg-type]

    with pytest.raises(Exception):
        ledger.record([seen(newer, OrderStatus.HELD), seen(order("111-0000003-0000003")), seen(broken)],
                      NOW, bookmark=(BOOKMARK, T0 + timedelta(minutes=30)))

    assert ledger.bookmark(BOOKMARK) == T0
    assert status_of(ledger, "111-0000001-0000001") == "pending"
    assert ledger.order_row("111-0000003-0000003") is None
    assert ledger.events("111-0000003-0000003") == []
    # and the ledger is usable afterwards: the failed transaction was rolled back, not left open
    ledger.record([seen(order("111-0000003-0000003"))], NOW, bookmark=(BOOKMARK, T0 + timedelta(minutes=30)))
    assert ledger.bookmark(BOOKMARK) == T0 + timedelta(minutes=30)


def test_the_bookmark_and_orders_survive_reopening_the_file(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first = Ledger(path, SEALER)
    first.record([seen(order())], NOW, bookmark=(BOOKMARK, T0))
    first.close()
    again = Ledger(path, SEALER)
    try:
        assert again.bookmark(BOOKMARK) == T0
        assert again.orders_in(OrderStatus.PENDING)[0].order == order()
    finally:
        again.close()


def test_an_unknown_status_is_refused_by_the_database_itself(ledger):
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        ledger._db.execute(
            "insert into orders (order_id, status, amazon_status, last_updated, payload, first_seen_at,"
            " updated_at) values ('x', 'lost', 'UNSHIPPED', 't', '{}', 't', 't')"
        )
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        ledger._db.execute(
            "insert into files (warehouse, name, status, spool_path, size, sha256, created_at)"
            " values ('wh', 'f', 'sent', '/s', 1, 'x', 't')"
        )


def test_an_observation_with_a_status_outside_the_enum_is_refused_and_nothing_is_kept(ledger):
    bogus = Observation(order(), "lost")  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        ledger.record([bogus], NOW, bookmark=(BOOKMARK, T0))
    assert ledger.order_row(order().order_id) is None and ledger.bookmark(BOOKMARK) is None


# --- how observations change an order -------------------------------------------------------

def test_a_held_order_becomes_pending_when_its_address_arrives(ledger):
    ledger.record([seen(order(address=False), OrderStatus.HELD, reason="no address")], NOW)
    summary = ledger.record([seen(order())], NOW + timedelta(minutes=30))

    assert summary.updated == 1
    [pending] = ledger.orders_in(OrderStatus.PENDING)
    assert pending.warehouse == "wh" and pending.order.ship_to is not None
    assert [e["kind"] for e in ledger.events(pending.order_id)] == ["seen", "status"]


@pytest.mark.parametrize("status", [OrderStatus.CANCELLED, OrderStatus.SKIPPED])
def test_cancelled_or_skipped_orders_never_seen_before_are_not_stored(ledger, status):
    summary = ledger.record([seen(order(status="CANCELLED"), status)], NOW)
    assert summary.new == 0
    assert ledger.order_row(order().order_id) is None
    assert ledger.events(order().order_id) == []


def test_a_pending_order_cancelled_on_amazon_is_cancelled_and_final(ledger):
    ledger.record([seen(order())], NOW)
    ledger.record([seen(order(status="CANCELLED", updated=T0 + timedelta(minutes=1)), OrderStatus.CANCELLED)], NOW)
    ledger.record([seen(order(updated=T0 + timedelta(minutes=2)))], NOW)
    assert status_of(ledger) == "cancelled"


def test_an_older_re_read_does_not_overwrite_a_newer_record(ledger):
    ledger.record([seen(order(updated=T0 + timedelta(minutes=10)))], NOW)
    summary = ledger.record([seen(order(updated=T0, address=False), OrderStatus.HELD)], NOW)

    assert summary.unchanged == 1
    [stored] = ledger.orders_in(OrderStatus.PENDING)
    assert stored.order.last_updated == T0 + timedelta(minutes=10)
    assert stored.order.ship_to is not None


def test_the_same_answer_read_twice_is_unchanged(ledger):
    ledger.record([seen(order())], NOW)
    assert ledger.record([seen(order())], NOW + timedelta(minutes=1)).unchanged == 1
    assert len(ledger.events(order().order_id)) == 1


def test_a_change_after_delivery_is_recorded_as_an_event_and_not_applied(ledger):
    ledger.record([seen(order())], NOW)
    ledger.mark_delivered(staged(ledger, order().order_id), NOW)
    cancelled = order(status="CANCELLED", updated=T0 + timedelta(hours=1))

    summary = ledger.record([seen(cancelled, OrderStatus.CANCELLED)], NOW + timedelta(hours=1))
    again = ledger.record([seen(cancelled, OrderStatus.CANCELLED)], NOW + timedelta(hours=2))

    assert summary.changed_after_delivery == (order().order_id,)
    assert again.changed_after_delivery == ()  # reported once, not every run
    row = ledger.order_row(order().order_id)
    assert (row["status"], row["amazon_status"]) == ("delivered", "CANCELLED")
    assert [e["kind"] for e in ledger.events(order().order_id)][-1] == "changed_after_delivery"
    assert [item["order_id"] for item in ledger.attention()] == [order().order_id]


# --- staging and delivery ---------------------------------------------------------------------

def test_staging_a_file_moves_its_orders_to_staged(ledger):
    ledger.record([seen(order("A")), seen(order("B"))], NOW)
    file_id = staged(ledger, "A", "B")
    assert {status_of(ledger, "A"), status_of(ledger, "B")} == {"staged"}
    assert ledger.order_row("A")["file_id"] == file_id
    assert [f.status for f in ledger.files_in(FileStatus.STAGED)] == [FileStatus.STAGED]
    assert ledger.file_name_taken("wh", "f.csv") and not ledger.file_name_taken("other", "f.csv")


def test_staging_is_all_or_nothing(ledger):
    ledger.record([seen(order("A")), seen(order("H", address=False), OrderStatus.HELD)], NOW)

    with pytest.raises(RuntimeError, match="H"):
        staged(ledger, "A", "H")

    assert status_of(ledger, "A") == "pending" and ledger.order_row("A")["file_id"] is None
    assert ledger.files_in(*FileStatus) == []
    assert not ledger.file_name_taken("wh", "f.csv")


def test_a_file_name_is_used_once_per_warehouse(ledger):
    ledger.record([seen(order("A")), seen(order("B"))], NOW)
    staged(ledger, "A")
    with pytest.raises(sqlite3.IntegrityError):
        staged(ledger, "B")
    assert status_of(ledger, "B") == "pending"


def test_an_unrenderable_order_can_be_staged_on_a_later_run(ledger):
    ledger.record([seen(order("A"))], NOW)
    ledger.mark_unrenderable("A", "name too long", NOW)
    assert ledger.attention()[0]["reason"] == "name too long"
    staged(ledger, "A")
    assert status_of(ledger, "A") == "staged"


def test_a_taken_file_name_gives_the_next_free_sequence_the_same_each_time(ledger):
    orders = ["A", "B", "C", "D"]
    ledger.record([seen(order(o)) for o in orders], NOW)
    assert ledger.free_file_name("wh", "R_1%_x.csv") == "R_1%_x.csv"
    staged(ledger, "A", name="R_1%_x.csv")
    staged(ledger, "B", name="R_1%_xy-2.csv")  # another stem: no wildcard matches it
    assert ledger.free_file_name("wh", "R_1%_x.csv") == "R_1%_x-2.csv"
    assert ledger.free_file_name("wh", "R_1%_x.csv") == "R_1%_x-2.csv"  # asked again: the same
    staged(ledger, "C", name="R_1%_x-2.csv")
    assert ledger.free_file_name("wh", "R_1%_x.csv") == "R_1%_x-3.csv"
    assert ledger.free_file_name("other", "R_1%_x.csv") == "R_1%_x.csv"
    staged(ledger, "D", name="NOEXT")
    assert ledger.free_file_name("wh", "NOEXT") == "NOEXT-2"


def test_unrenderable_is_news_once_and_again_when_the_reason_changes(ledger):
    ledger.record([seen(order("A"))], NOW)
    news = [ledger.mark_unrenderable("A", why, NOW) for why in ("too long", "too long", "no map entry")]
    assert news == [True, False, True]
    assert [e["detail"] for e in ledger.events("A") if e["kind"] == "unrenderable"] == ["too long", "no map entry"]


def test_a_delivery_problem_is_shown_until_the_file_is_delivered(ledger):
    ledger.record([seen(order("A")), seen(order("B"))], NOW)
    file_a, file_b = staged(ledger, "A", name="a.csv"), staged(ledger, "B", name="b.csv")
    ledger.note_delivery_problem(file_a, "a.csv.part is a symbolic link", NOW)
    ledger.note_delivery_problem(file_a, "a.csv.part is a folder", NOW + timedelta(minutes=30))
    ledger.note_delivery_problem(file_b, "sftp down", NOW)
    assert ledger.delivery_problems() == {
        file_a: {"at": "2026-11-20T13:00:00Z", "problem": "a.csv.part is a folder"},
        file_b: {"at": "2026-11-20T12:30:00Z", "problem": "sftp down"}}
    ledger.mark_delivered(file_a, NOW)
    ledger.unstage_file(file_b, NOW, "spool copy missing")
    assert ledger.delivery_problems() == {}


def test_delivery_marks_the_file_and_its_orders_and_is_idempotent(ledger):
    ledger.record([seen(order("A")), seen(order("B"))], NOW)
    file_id = staged(ledger, "A", "B")
    ledger.mark_uploaded(file_id)
    assert ledger.files_in(FileStatus.UPLOADED)[0].id == file_id

    assert sorted(ledger.mark_delivered(file_id, NOW)) == ["A", "B"]
    assert ledger.mark_delivered(file_id, NOW + timedelta(minutes=5)) == []

    assert {status_of(ledger, "A"), status_of(ledger, "B")} == {"delivered"}
    assert ledger.order_row("A")["delivered_at"] == "2026-11-20T12:30:00Z"
    assert [e["kind"] for e in ledger.events("A")].count("delivered") == 1
    assert ledger.files_in(FileStatus.DELIVERED)[0].id == file_id


def test_mark_uploaded_never_moves_a_delivered_file_back(ledger):
    ledger.record([seen(order("A"))], NOW)
    file_id = staged(ledger, "A")
    ledger.mark_delivered(file_id, NOW)
    ledger.mark_uploaded(file_id)
    assert ledger.files_in(FileStatus.DELIVERED)[0].id == file_id


# --- retention --------------------------------------------------------------------------------

def test_buyer_data_is_purged_after_the_cutoff_but_lines_are_kept(ledger):
    ledger.record([seen(order("A")), seen(order("B"))], NOW)
    ledger.mark_delivered(staged(ledger, "A", name="a.csv"), NOW)
    ledger.mark_delivered(staged(ledger, "B", name="b.csv"), NOW + timedelta(days=10))

    purged = ledger.purge_pii(older_than=NOW + timedelta(days=1), now=NOW + timedelta(days=31))

    assert purged == 1
    rows = ledger._db.execute("select order_id, payload from orders").fetchall()
    payloads = {row[0]: json.loads(SEALER.open(row[1].encode(), row[0])) for row in rows}
    payload = payloads["A"]
    assert payload["ship_to"] is None and payload["buyer_name"] == "" and payload["buyer_email"] == ""
    assert payload["lines"][0]["order_item_id"] == "10001" and payload["lines"][0]["quantity"] == 2
    text = json.dumps(payloads)
    assert text.count("Jane Buyer") == 2  # only B's (name and ship-to name) remain
    assert ledger.order_row("A")["pii_purged_at"] is not None
    assert ledger.purge_pii(older_than=NOW + timedelta(days=1), now=NOW + timedelta(days=32)) == 0


def test_orders_not_yet_delivered_keep_their_buyer_data(ledger):
    ledger.record([seen(order("A")), seen(order("H", address=False), OrderStatus.HELD)], NOW)
    assert ledger.purge_pii(older_than=NOW + timedelta(days=365), now=NOW + timedelta(days=365)) == 0


def test_cancelled_orders_are_purged_counted_from_their_last_change(ledger):
    ledger.record([seen(order("C"))], NOW)
    ledger.record([seen(order("C", status="CANCELLED", updated=T0 + timedelta(minutes=1)), OrderStatus.CANCELLED)],
                  NOW + timedelta(days=2))
    assert ledger.purge_pii(older_than=NOW + timedelta(days=1), now=NOW + timedelta(days=40)) == 0
    assert ledger.purge_pii(older_than=NOW + timedelta(days=3), now=NOW + timedelta(days=40)) == 1


def test_spool_files_of_delivered_files_are_offered_for_deletion_once(ledger):
    ledger.record([seen(order("A"))], NOW)
    file_id = staged(ledger, "A")
    assert ledger.spool_paths_in_use() == {"/spool/f.csv"}
    ledger.mark_delivered(file_id, NOW)
    assert ledger.spool_files_to_delete(NOW) == []
    assert [f.id for f in ledger.spool_files_to_delete(NOW + timedelta(seconds=1))] == [file_id]
    ledger.mark_spool_deleted(file_id, NOW)
    assert ledger.spool_files_to_delete(NOW + timedelta(days=1)) == [] and ledger.spool_paths_in_use() == set()


# --- reporting --------------------------------------------------------------------------------

def test_status_counts_list_every_status_even_when_zero(ledger):
    ledger.record([seen(order("A")), seen(order("B")), seen(order("H", address=False), OrderStatus.HELD)], NOW)
    staged(ledger, "B")
    assert ledger.status_counts() == {
        "pending": 1, "held": 1, "unrenderable": 0, "staged": 1, "delivered": 0, "cancelled": 0, "skipped": 0,
    }


def test_attention_lists_held_and_unrenderable_orders_with_their_reasons(ledger):
    ledger.record([seen(order("H", address=False), OrderStatus.HELD, reason="no address"), seen(order("U"))], NOW)
    ledger.mark_unrenderable("U", "cannot encode", NOW)
    items = {item["order_id"]: item for item in ledger.attention()}
    assert (items["H"]["status"], items["H"]["reason"]) == ("held", "no address")
    assert (items["U"]["status"], items["U"]["reason"]) == ("unrenderable", "cannot encode")
    assert "Jane" not in json.dumps(ledger.attention())


def test_buyer_data_is_sealed_at_rest_and_a_wrong_key_is_refused_clearly(tmp_path):
    import sqlite3

    from bridge.errors import FixTheSetup

    path = tmp_path / "ledger.sqlite"
    sealed = Ledger(path, SEALER)
    sealed.record([seen(order())], NOW)
    sealed.close()
    raw = sqlite3.connect(path).execute("select payload from orders").fetchone()[0]
    assert order().ship_to.name not in raw and order().ship_to.line1 not in raw

    with pytest.raises(FixTheSetup, match="BRIDGE_STATE_KEY is not the key the state"):
        Ledger(path, Sealer(new_key()))


def test_an_unreadable_update_of_a_known_order_is_shown_until_a_readable_one_arrives(ledger):
    ledger.record([seen(order())], NOW)
    ledger.note_rejected("111-0000001-0000001", "order 111-0000001-0000001: unusable field 'orderItems' is missing", NOW + timedelta(minutes=30))
    assert [(a["order_id"], a["status"]) for a in ledger.attention()] == [("111-0000001-0000001", "rejected")]

    newer = dataclasses.replace(order(), last_updated=order().last_updated + timedelta(hours=1))
    ledger.record([seen(newer)], NOW + timedelta(hours=1))
    assert ledger.attention() == []


# --- a record that cannot be read is set aside; the others go on ------------------------------

def corrupt(ledger: Ledger, order_id: str, payload: str) -> None:
    ledger._db.execute("update orders set payload = ? where order_id = ?", (payload, order_id))


def sealed_json(data) -> str:
    return SEALER.seal(json.dumps(data).encode()).decode()


def record_data(**changes) -> dict:
    from bridge.records import order_to_dict

    return {**order_to_dict(order("BAD")), **changes}


UNREADABLE_RECORDS = [
    pytest.param(lambda: "gAAAAAB-not-a-fernet-token",
                 "its sealed data does not open with the state key (damaged or altered)", id="bad seal"),
    pytest.param(lambda: SEALER.seal(b"{not json").decode(), "its data is not valid JSON (damaged)", id="bad JSON"),
    pytest.param(lambda: sealed_json(["a", "list"]), "its data is not an order record (damaged)", id="not a record"),
    pytest.param(lambda: sealed_json(record_data(purchase_date="yesterday")),
                 "a field cannot be read: field purchase_date is not a time that can be read", id="bad date"),
    pytest.param(lambda: sealed_json({k: v for k, v in record_data().items() if k != "lines"}),
                 "its field lines is missing", id="missing field"),
    pytest.param(lambda: sealed_json(record_data(order_total="twelve")),
                 "a field cannot be read: InvalidOperation while reading it", id="bad number"),
]


@pytest.mark.parametrize(("payload", "why"), UNREADABLE_RECORDS)
def test_an_unreadable_record_is_set_aside_named_and_kept_and_the_others_go_on(ledger, payload, why):
    ledger.record([seen(order("A")), seen(order("BAD")), seen(order("C"))], NOW)
    corrupt(ledger, "BAD", payload())

    assert [o.order_id for o in ledger.orders_in(OrderStatus.PENDING)] == ["A", "C"]
    assert ledger.order_row("BAD")["status"] == "pending"  # kept as it was
    [item] = ledger.attention()
    assert item == {"order_id": "BAD", "status": "unreadable", "warehouse": "wh",
                    "reason": f"the ledger's record cannot be read: {why}; it is set aside (kept, not sent)",
                    "updated_at": "2026-11-20T12:30:00Z"}
    assert "Jane" not in json.dumps(ledger.attention())

    ledger.orders_in(OrderStatus.PENDING)  # noted once, not again
    assert len(ledger.attention()) == 1


def test_retention_skips_an_unreadable_record_and_purges_the_rest(ledger):
    ledger.record([seen(order("A")), seen(order("BAD"))], NOW)
    ledger.mark_delivered(staged(ledger, "A", "BAD"), NOW)
    corrupt(ledger, "BAD", "damaged")

    assert ledger.purge_pii(older_than=NOW + timedelta(days=1), now=NOW + timedelta(days=31)) == 1
    assert [item["order_id"] for item in ledger.attention()] == ["BAD"]


def test_a_newer_answer_from_amazon_replaces_an_unreadable_record(ledger):
    ledger.record([seen(order("BAD"))], NOW)
    corrupt(ledger, "BAD", "damaged")
    assert ledger.orders_in(OrderStatus.PENDING) == []

    ledger.record([seen(order("BAD", updated=T0 + timedelta(minutes=5)))], NOW + timedelta(minutes=30))

    assert [o.order_id for o in ledger.orders_in(OrderStatus.PENDING)] == ["BAD"]
    assert ledger.attention() == []


def test_an_order_dated_before_year_1000_round_trips_and_old_unpadded_years_read(ledger):
    ancient = dataclasses.replace(order("OLD"), purchase_date=datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
                                  last_updated=datetime(1, 1, 1, tzinfo=timezone.utc))
    ledger.record([seen(ancient), seen(order("A"))], NOW)
    assert {o.order_id: o.order for o in ledger.orders_in(OrderStatus.PENDING)}["OLD"] == ancient

    # as versions before this one stored it: "999-01-02T03:04:05Z", which they could not read back
    written_before = sealed_json(record_data(order_id="OLD", purchase_date="999-01-02T03:04:05Z"))
    corrupt(ledger, "OLD", written_before)
    ledger._db.execute("update orders set last_updated = '1-01-01T00:00:00Z' where order_id = 'OLD'")
    stored = {o.order_id: o.order for o in ledger.orders_in(OrderStatus.PENDING)}
    assert stored["OLD"].purchase_date == datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert ledger.record([seen(ancient)], NOW).updated == 1  # rewritten with four-digit years
    assert ledger.order_row("OLD")["last_updated"] == "0001-01-01T00:00:00Z"
    assert ledger.record([seen(ancient)], NOW).unchanged == 1
