"""The ledger: SQLite state for every order and file the bridge has handled.

Only this module changes a status. Statuses are enums mirrored by CHECK constraints, every change
goes through one locked transaction helper, and a window's bookmark moves in the same
transaction that records the orders the window produced.

An order's life:
    pending ──render──▶ staged ──upload+rename──▶ delivered       (never touched again)
    held (no address / no warehouse)  ──address arrives──▶ pending
    unrenderable (mapping cannot lay it out) ──retried each run──▶ staged
    pending/held ──Amazon cancels──▶ cancelled;  ──filtered out──▶ skipped
A file's life (one row per file put in a warehouse's drop):
    staged (in the local spool) ──▶ uploaded (complete under its temporary name) ──▶ delivered
An inbound file's life (confirmations, stock files; see "inbound files" below):
    received (claimed and spooled) ──▶ parsed (rows and packages recorded) ──▶ done (answered)
A package's life (one confirmShipment; its row id is the packageReferenceId Amazon sees):
    accepted ──▶ sent (may have reached Amazon: re-sent with the same id) ──▶ confirmed | rejected
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Iterator, Sequence

from bridge.records import Order, iso_z, order_from_dict, order_to_dict, parse_iso
from bridge.errors import FixTheSetup
from bridge.sealing import Sealer


class OrderStatus(StrEnum):
    PENDING = "pending"
    HELD = "held"
    UNRENDERABLE = "unrenderable"
    STAGED = "staged"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class FileStatus(StrEnum):
    STAGED = "staged"
    UPLOADED = "uploaded"
    DELIVERED = "delivered"


class InboundSource(StrEnum):
    SFTP = "sftp"
    LOCAL = "local"


class InboundStatus(StrEnum):
    RECEIVED = "received"  # in the spool and recorded; its remote copy is in processing/
    PARSED = "parsed"  # its rows (and packages) recorded, or why it cannot be read
    DONE = "done"  # answered: result file written, moved to archive/ or error/


class InboundOutcome(StrEnum):
    ARCHIVE = "archive"
    ERROR = "error"


class PackageStatus(StrEnum):
    ACCEPTED = "accepted"  # checked, waiting to be sent
    SENT = "sent"  # the request may have reached Amazon: re-sent with the same id after a crash
    CONFIRMED = "confirmed"
    REJECTED = "rejected"  # by Amazon (its words in `message`): final


class RowResult(StrEnum):
    ACCEPTED = "accepted"  # in a package; its final word is the package's
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


UNDELIVERED = (OrderStatus.PENDING, OrderStatus.HELD, OrderStatus.UNRENDERABLE)
SENT = (OrderStatus.STAGED, OrderStatus.DELIVERED)


def _check(enum: type[StrEnum]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum)


SCHEMA = f"""
create table if not exists bookmarks (
    name text primary key,
    value text not null,
    updated_at text not null
);
create table if not exists windows (
    id integer primary key,
    name text not null,
    start text not null,
    end text not null,
    orders integer not null,
    recorded_at text not null
);
create table if not exists files (
    id integer primary key,
    warehouse text not null,
    name text not null,
    status text not null check (status in ({_check(FileStatus)})),
    spool_path text not null,  -- relative to the spool folder: <warehouse>/<name>
    size integer not null,
    sha256 text not null,
    created_at text not null,
    delivered_at text,
    spool_deleted_at text,
    unique (warehouse, name)
);
create table if not exists orders (
    order_id text primary key,
    status text not null check (status in ({_check(OrderStatus)})),
    reason text not null default '',
    warehouse text,
    amazon_status text not null,
    last_updated text not null,
    payload text not null,  -- the Order record as JSON, sealed (encrypted) with BRIDGE_STATE_KEY
    file_id integer references files(id),
    first_seen_at text not null,
    updated_at text not null,
    delivered_at text,
    pii_purged_at text
);
create index if not exists orders_by_status on orders (status);
create table if not exists order_events (
    id integer primary key,
    order_id text not null,
    at text not null,
    kind text not null,
    detail text not null
);
""" + f"""
create table if not exists inbound_files (
    id integer primary key,
    flow text not null,                   -- 'shipments', 'stock'
    warehouse text not null,
    source text not null check (source in ({_check(InboundSource)})),
    name text not null,                   -- as found in the folder; never used as a local path
    safe_name text not null,              -- its archive/error name; results: <stem>.result.csv
    size integer not null,
    sha256 text not null,
    status text not null check (status in ({_check(InboundStatus)})),
    outcome text check (outcome in ({_check(InboundOutcome)})),
    reason text not null default '',      -- why the whole file failed, or ''
    duplicate_of integer references inbound_files(id),
    spool_path text not null,             -- relative to the inbound spool folder
    received_at text not null,
    parsed_at text,
    finished_at text,
    spool_deleted_at text
);
create index if not exists inbound_by_sha on inbound_files (flow, warehouse, sha256);
create index if not exists inbound_by_status on inbound_files (status);
create table if not exists inbound_sightings (
    flow text not null,
    warehouse text not null,
    source text not null,
    name text not null,
    size integer not null,
    mtime real not null,
    since text not null,                  -- first seen with this size and mtime
    incomplete_since text,                -- first found unfinished by the content check
    incomplete_reason text not null default '',
    primary key (flow, warehouse, source, name)
);
create table if not exists packages (
    id integer primary key,               -- the packageReferenceId Amazon receives: stable
    file_id integer not null references inbound_files(id),
    warehouse text not null,
    order_id text not null,
    marketplace_id text not null,
    tracking_number text not null,
    carrier_code text not null,
    carrier_name text not null default '',
    shipping_method text not null default '',
    ship_date text not null,
    status text not null check (status in ({_check(PackageStatus)})),
    message text not null default '',     -- Amazon's words when it rejected the package
    created_at text not null,
    sent_at text,
    finished_at text
);
create index if not exists packages_by_order on packages (order_id);
create index if not exists packages_by_status on packages (status);
create table if not exists package_lines (
    package_id integer not null references packages(id),
    order_item_id text not null,
    quantity integer not null check (quantity > 0),
    position integer not null,
    primary key (package_id, order_item_id)
);
create table if not exists shipment_rows (
    file_id integer not null references inbound_files(id),
    row integer not null,
    result text not null check (result in ({_check(RowResult)})),
    order_id text not null,
    item text not null,
    quantity text not null,
    tracking text not null,
    message text not null default '',
    package_id integer references packages(id),
    primary key (file_id, row)
);
create table if not exists shipment_due (  -- delivered orders' ship-by: status reads it keyless
    order_id text primary key,
    warehouse text not null,
    ship_by text,
    units integer not null
);
"""


@dataclass(frozen=True)
class Observation:
    """What one Amazon answer says about an order, and what the flow decided to do with it."""

    order: Order
    status: OrderStatus  # PENDING, HELD, CANCELLED or SKIPPED
    reason: str = ""
    warehouse: str | None = None
    # A SKIPPED that only this bridge's settings decided (country, marketplace) is not final:
    # an order the ledger already holds stays held with the reason, and settings can change.
    final: bool = True


@dataclass(frozen=True)
class StoredOrder:
    order_id: str
    status: OrderStatus
    reason: str
    warehouse: str | None
    order: Order


@dataclass(frozen=True)
class StoredFile:
    id: int
    warehouse: str
    name: str
    status: FileStatus
    spool_path: Path  # relative to the spool folder
    size: int
    sha256: str


@dataclass(frozen=True)
class RecordSummary:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    changed_after_delivery: tuple[str, ...] = ()


class Ledger:
    def __init__(self, path: Path, sealer: Sealer | None):
        """`sealer` encrypts order payloads (buyer data) at rest. Without one (`fbm-bridge status`)
        the ledger can report statuses, windows and events but not read or write orders."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sealer = sealer
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.execute("pragma foreign_keys=on")
        with self._lock:
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("begin immediate")
            try:
                yield self._db
            except BaseException:
                self._db.execute("rollback")
                raise
            self._db.execute("commit")

    # --- bookmarks -----------------------------------------------------------------------

    def bookmark(self, name: str) -> datetime | None:
        row = self._db.execute("select value from bookmarks where name = ?", (name,)).fetchone()
        return parse_iso(row["value"]) if row else None

    # --- recording what Amazon said ------------------------------------------------------

    def record(
        self,
        observations: Sequence[Observation],
        now: datetime,
        *,
        bookmark: tuple[str, datetime] | None = None,
        window_start: datetime | None = None,
    ) -> RecordSummary:
        """Record a batch of observations, and move `bookmark` in the same transaction.

        Moving a bookmark also logs the window it closes (from the previous bookmark, or
        `window_start` for the first) so `window_log` can show that windows tile time.
        """
        new = updated = unchanged = 0
        changed: list[str] = []
        with self._transaction() as db:
            for observation in observations:
                outcome = self._record_one(db, observation, iso_z(now))
                new += outcome == "new"
                updated += outcome == "updated"
                unchanged += outcome == "unchanged"
                if outcome == "changed_after_delivery":
                    changed.append(observation.order.order_id)
            if bookmark is not None:
                name, value = bookmark
                previous = db.execute("select value from bookmarks where name = ?", (name,)).fetchone()
                start = previous["value"] if previous else iso_z(window_start or value)
                db.execute(
                    "insert into windows (name, start, end, orders, recorded_at) values (?, ?, ?, ?, ?)",
                    (name, start, iso_z(value), len(observations), iso_z(now)),
                )
                db.execute(
                    "insert into bookmarks (name, value, updated_at) values (?, ?, ?) "
                    "on conflict (name) do update set value = excluded.value, updated_at = excluded.updated_at",
                    (name, iso_z(value), iso_z(now)),
                )
        return RecordSummary(new, updated, unchanged, tuple(changed))

    def _record_one(self, db: sqlite3.Connection, observation: Observation, now: str) -> str:
        order = observation.order
        row = db.execute(
            "select status, reason, warehouse, amazon_status, last_updated from orders where order_id = ?",
            (order.order_id,),
        ).fetchone()
        if row is None:
            if observation.status in (OrderStatus.CANCELLED, OrderStatus.SKIPPED):
                return "ignored"  # never wanted, never stored: no buyer data kept for it
            db.execute(
                "insert into orders (order_id, status, reason, warehouse, amazon_status, last_updated,"
                " payload, first_seen_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (order.order_id, observation.status, observation.reason, observation.warehouse,
                 order.status, iso_z(order.last_updated), self._payload(order), now, now),
            )
            self._event(db, order.order_id, now, "seen", f"{observation.status} {observation.reason}".strip())
            return "new"
        status = OrderStatus(row["status"])
        if parse_iso(row["last_updated"]) > order.last_updated:
            return "unchanged"  # an overlap re-read of older data
        if status in SENT:
            return self._record_sent(db, order, status, row["amazon_status"], now)
        if status in UNDELIVERED:
            target, reason = observation.status, observation.reason
            if target == OrderStatus.SKIPPED and not observation.final:
                target = OrderStatus.HELD
            if (status, row["reason"], row["warehouse"], row["amazon_status"], row["last_updated"]) == (
                target, reason, observation.warehouse, order.status, iso_z(order.last_updated)
            ) and target != OrderStatus.HELD:
                return "unchanged"  # a held order is rewritten: its address may have arrived
            db.execute(
                "update orders set status = ?, reason = ?, warehouse = ?, amazon_status = ?,"
                " last_updated = ?, payload = ?, updated_at = ? where order_id = ?",
                (target, reason, observation.warehouse, order.status,
                 iso_z(order.last_updated), self._payload(order), now, order.order_id),
            )
            if status != target:
                self._event(db, order.order_id, now, "status", f"{status} -> {target} {reason}".strip())
            return "updated"
        return "unchanged"  # cancelled or skipped: final

    def _record_sent(self, db: sqlite3.Connection, order: Order, status: OrderStatus, was: str, now: str) -> str:
        """Amazon changed an order that is already in a file. Shipping progress is history;
        a cancellation needs a person, unless the file has not left the spool yet: then the
        file is taken back, the order cancelled and the file's other orders rendered again."""
        if order.status == was:
            return "unchanged"
        db.execute(
            "update orders set amazon_status = ?, last_updated = ?, updated_at = ? where order_id = ?",
            (order.status, iso_z(order.last_updated), now, order.order_id),
        )
        if order.status != "CANCELLED":
            self._event(db, order.order_id, now, "amazon_status", f"{was} -> {order.status}")
            return "updated"
        file = db.execute(
            "select f.id, f.status from files f join orders o on o.file_id = f.id where o.order_id = ?",
            (order.order_id,),
        ).fetchone()
        if status == OrderStatus.STAGED and file is not None and file["status"] == FileStatus.STAGED:
            self._unstage(db, file["id"], now, "a cancellation arrived before upload")
            db.execute(
                "update orders set status = ?, reason = ? where order_id = ?",
                (OrderStatus.CANCELLED, "cancelled on Amazon before it was sent", order.order_id),
            )
            self._event(db, order.order_id, now, "status", "staged -> cancelled before upload")
            return "updated"
        detail = f"Amazon status {was} -> {order.status} after it was {status}"
        self._event(db, order.order_id, now, "changed_after_delivery", detail)
        return "changed_after_delivery"

    # --- rendering and delivery ----------------------------------------------------------

    def orders_in(self, *statuses: OrderStatus) -> list[StoredOrder]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._db.execute(
            f"select * from orders where status in ({marks}) order by first_seen_at, order_id",
            tuple(statuses),
        ).fetchall()
        return [self._stored_order(row) for row in rows]

    def mark_unrenderable(self, order_id: str, reason: str, now: datetime) -> None:
        with self._transaction() as db:
            row = db.execute("select status, reason from orders where order_id = ?", (order_id,)).fetchone()
            if row is None or OrderStatus(row["status"]) not in (OrderStatus.PENDING, OrderStatus.UNRENDERABLE):
                return
            db.execute(
                "update orders set status = ?, reason = ?, updated_at = ? where order_id = ?",
                (OrderStatus.UNRENDERABLE, reason, iso_z(now), order_id),
            )
            if row["reason"] != reason:
                self._event(db, order_id, iso_z(now), "unrenderable", reason)

    def file_name(self, file_id: int) -> str | None:
        row = self._db.execute("select warehouse, name from files where id = ?", (file_id,)).fetchone()
        return f"{row['warehouse']}: {row['name']}" if row else None

    def file_name_taken(self, warehouse: str, name: str) -> bool:
        row = self._db.execute(
            "select 1 from files where warehouse = ? and name = ?", (warehouse, name)
        ).fetchone()
        return row is not None

    def stage_file(
        self,
        warehouse: str,
        name: str,
        spool_path: str,
        size: int,
        sha256: str,
        order_ids: Sequence[str],
        now: datetime,
    ) -> int:
        """Record a spooled file and move its orders to staged, all or nothing."""
        with self._transaction() as db:
            cursor = db.execute(
                "insert into files (warehouse, name, status, spool_path, size, sha256, created_at)"
                " values (?, ?, ?, ?, ?, ?, ?)",
                (warehouse, name, FileStatus.STAGED, str(spool_path), size, sha256, iso_z(now)),
            )
            file_id = cursor.lastrowid
            for order_id in order_ids:
                changed = db.execute(
                    "update orders set status = ?, reason = '', file_id = ?, updated_at = ?"
                    " where order_id = ? and status in (?, ?)",
                    (OrderStatus.STAGED, file_id, iso_z(now), order_id,
                     OrderStatus.PENDING, OrderStatus.UNRENDERABLE),
                ).rowcount
                if changed != 1:
                    raise RuntimeError(f"order {order_id} is not waiting to be rendered")
        return file_id

    def files_in(self, *statuses: FileStatus, warehouse: str | None = None) -> list[StoredFile]:
        marks = ", ".join("?" for _ in statuses)
        query = f"select * from files where status in ({marks})"
        params: tuple = tuple(statuses)
        if warehouse is not None:
            query += " and warehouse = ?"
            params += (warehouse,)
        rows = self._db.execute(query + " order by id", params).fetchall()
        return [_stored_file(row) for row in rows]

    def mark_uploaded(self, file_id: int) -> None:
        with self._transaction() as db:
            db.execute(
                "update files set status = ? where id = ? and status = ?",
                (FileStatus.UPLOADED, file_id, FileStatus.STAGED),
            )

    def unstage_file(self, file_id: int, now: datetime, why: str) -> None:
        """A staged file that cannot be sent as it is (its spool copy is gone): its orders go
        back to pending and are rendered again. Only for files that never left the spool."""
        with self._transaction() as db:
            self._unstage(db, file_id, iso_z(now), why)

    def _unstage(self, db: sqlite3.Connection, file_id: int, now: str, why: str) -> None:
        row = db.execute("select status from files where id = ?", (file_id,)).fetchone()
        if row is None or FileStatus(row["status"]) != FileStatus.STAGED:
            raise RuntimeError(f"file {file_id} has left the spool; it cannot be taken back")
        for order in db.execute("select order_id from orders where file_id = ?", (file_id,)).fetchall():
            self._event(db, order["order_id"], now, "status", f"staged -> pending: {why}")
        db.execute(
            "update orders set status = ?, file_id = null, updated_at = ? where file_id = ?",
            (OrderStatus.PENDING, now, file_id),
        )
        db.execute("delete from files where id = ?", (file_id,))

    def mark_delivered(self, file_id: int, now: datetime, unconfirmed: str = "") -> list[str]:
        """The file is in place under its final name: it and its orders are delivered.
        `unconfirmed` says why that could not be seen in the drop; staff are shown it."""
        with self._transaction() as db:
            db.execute(
                "update files set status = ?, delivered_at = ? where id = ? and status != ?",
                (FileStatus.DELIVERED, iso_z(now), file_id, FileStatus.DELIVERED),
            )
            order_ids = [
                row["order_id"]
                for row in db.execute(
                    "select order_id from orders where file_id = ? and status = ?",
                    (file_id, OrderStatus.STAGED),
                )
            ]
            db.execute(
                "update orders set status = ?, delivered_at = ?, updated_at = ? where file_id = ? and status = ?",
                (OrderStatus.DELIVERED, iso_z(now), iso_z(now), file_id, OrderStatus.STAGED),
            )
            for order_id in order_ids:
                self._event(db, order_id, iso_z(now), "delivered", f"file_id={file_id}")
                if unconfirmed:
                    self._event(db, order_id, iso_z(now), "delivery_unconfirmed", unconfirmed)
        return order_ids

    # --- retention -----------------------------------------------------------------------

    def purge_pii(self, older_than: datetime, now: datetime) -> int:
        """Strip buyer name, e-mail and address from orders finished before `older_than`.

        Finished: delivered (counted from delivery), cancelled or skipped (from the last
        change). Line items stay: later flows need order item ids and quantities.
        """
        cutoff = iso_z(older_than)
        with self._transaction() as db:
            rows = db.execute(
                "select order_id, payload from orders where pii_purged_at is null and ("
                " (status = ? and delivered_at < ?) or (status in (?, ?) and updated_at < ?))",
                (OrderStatus.DELIVERED, cutoff, OrderStatus.CANCELLED, OrderStatus.SKIPPED, cutoff),
            ).fetchall()
            for row in rows:
                data = self._payload_data(row["payload"], row["order_id"])
                data.update(ship_to=None, buyer_name="", buyer_email="")
                db.execute(
                    "update orders set payload = ?, pii_purged_at = ? where order_id = ?",
                    (self._seal(data), iso_z(now), row["order_id"]),
                )
        return len(rows)

    def spool_files_to_delete(self, older_than: datetime) -> list[StoredFile]:
        rows = self._db.execute(
            "select * from files where status = ? and delivered_at < ? and spool_deleted_at is null",
            (FileStatus.DELIVERED, iso_z(older_than)),
        ).fetchall()
        return [_stored_file(row) for row in rows]

    def mark_spool_deleted(self, file_id: int, now: datetime) -> None:
        with self._transaction() as db:
            db.execute("update files set spool_deleted_at = ? where id = ?", (iso_z(now), file_id))

    def spool_paths_in_use(self) -> set[str]:
        rows = self._db.execute("select spool_path from files where spool_deleted_at is null")
        return {row["spool_path"] for row in rows}

    # --- reporting -----------------------------------------------------------------------

    def window_log(self, name: str) -> dict[str, object]:
        """How many windows were pulled, from when to when, and any gap between two of them."""
        rows = self._db.execute(
            "select start, end from windows where name = ? order by id", (name,)
        ).fetchall()
        gaps = [
            f"{before['end']}/{after['start']}"
            for before, after in zip(rows, rows[1:])
            if before["end"] != after["start"]
        ]
        return {
            "windows": len(rows),
            "since": rows[0]["start"] if rows else None,
            "until": rows[-1]["end"] if rows else None,
            "gaps": gaps,
        }

    def status_counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in OrderStatus}
        for row in self._db.execute("select status, count(*) as n from orders group by status"):
            counts[row["status"]] = row["n"]
        return counts

    def attention(self) -> list[dict[str, str]]:
        """Orders a person should look at: held, unrenderable, or changed after delivery."""
        rows = self._db.execute(
            "select order_id, status, reason, warehouse, updated_at from orders"
            " where status in (?, ?) order by first_seen_at",
            (OrderStatus.HELD, OrderStatus.UNRENDERABLE),
        ).fetchall()
        items = [dict(row) for row in rows]
        for row in self._db.execute(
            "select e.order_id, o.status, e.detail as reason, o.warehouse, e.at as updated_at"
            " from order_events e join orders o using (order_id)"
            " where e.kind in ('changed_after_delivery', 'delivery_unconfirmed') order by e.id"
        ):
            items.append(dict(row))
        # An unreadable answer from Amazon, until a later readable one updated the order.
        for row in self._db.execute(
            "select order_id, 'rejected' as status, detail as reason, null as warehouse, at as updated_at"
            " from order_events e where kind = 'rejected' and not exists"
            " (select 1 from orders o where o.order_id = e.order_id and o.updated_at > e.at) order by id"
        ):
            items.append(dict(row))
        return items

    def note_rejected(self, order_id: str, why: str, now: datetime) -> None:
        """An order Amazon sent that could not be read: kept as an event for `attention`."""
        with self._transaction() as db:
            self._event(db, order_id, iso_z(now), "rejected", why)

    def events(self, order_id: str) -> list[dict[str, str]]:
        rows = self._db.execute(
            "select at, kind, detail from order_events where order_id = ? order by id", (order_id,)
        )
        return [dict(row) for row in rows]

    def order_row(self, order_id: str) -> dict | None:
        row = self._db.execute(
            "select order_id, status, reason, warehouse, amazon_status, last_updated, file_id,"
            " first_seen_at, delivered_at, pii_purged_at from orders where order_id = ?",
            (order_id,),
        ).fetchone()
        return dict(row) if row else None

    def seal_file(self, data: bytes) -> bytes:
        """A spool file's bytes as stored: sealed like the payloads (it holds buyer data)."""
        return self._keyed().seal(data)

    def open_file(self, sealed: bytes, what: str) -> bytes:
        return self._keyed().open(sealed, what)

    def _payload(self, order: Order) -> str:
        return self._seal(order_to_dict(order))

    def _seal(self, data: dict) -> str:
        return self._keyed().seal(json.dumps(data, sort_keys=True).encode("utf-8")).decode("ascii")

    def _payload_data(self, payload: str, order_id: str) -> dict:
        return json.loads(self._keyed().open(payload.encode("ascii"), f"the ledger's record of order {order_id}"))

    def _keyed(self) -> Sealer:
        if self._sealer is None:
            raise FixTheSetup("order data is sealed: this needs the secret BRIDGE_STATE_KEY")
        return self._sealer

    def _stored_order(self, row: sqlite3.Row) -> StoredOrder:
        return StoredOrder(
            order_id=row["order_id"],
            status=OrderStatus(row["status"]),
            reason=row["reason"],
            warehouse=row["warehouse"],
            order=order_from_dict(self._payload_data(row["payload"], row["order_id"])),
        )

    @staticmethod
    def _event(db: sqlite3.Connection, order_id: str, at: str, kind: str, detail: str) -> None:
        db.execute(
            "insert into order_events (order_id, at, kind, detail) values (?, ?, ?, ?)",
            (order_id, at, kind, detail),
        )

    # --- inbound files (shipments, stock) --------------------------------------------------
    #
    # An inbound file's life:
    #     (seen: inbound_sightings) ──claimed, spooled──▶ received ──read──▶ parsed ──answered──▶ done
    # A package's life (one confirmShipment each; its id is the packageReferenceId):
    #     accepted ──▶ sent (the request may have reached Amazon) ──▶ confirmed | rejected

    def sightings(self, flow: str, warehouse: str, source: str) -> dict[str, dict]:
        """What earlier polls saw in a folder, by file name."""
        rows = self._db.execute(
            "select * from inbound_sightings where flow = ? and warehouse = ? and source = ?",
            (flow, warehouse, source),
        ).fetchall()
        return {row["name"]: dict(row) for row in rows}

    def save_sightings(self, flow: str, warehouse: str, source: str, seen: dict[str, dict]) -> None:
        """Replace a folder's sightings with this poll's (names no longer there are forgotten)."""
        with self._transaction() as db:
            db.execute("delete from inbound_sightings where flow = ? and warehouse = ? and source = ?",
                       (flow, warehouse, source))
            for name, sighting in seen.items():
                db.execute(
                    "insert into inbound_sightings (flow, warehouse, source, name, size, mtime, since,"
                    " incomplete_since, incomplete_reason) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (flow, warehouse, source, name, sighting["size"], sighting["mtime"],
                     sighting["since"], sighting.get("incomplete_since"),
                     sighting.get("incomplete_reason", "")),
                )

    def record_inbound(self, flow: str, warehouse: str, source: InboundSource, name: str,
                       size: int, sha256: str, spool_path: str, safe: str, now: datetime) -> StoredInbound:
        """A claimed file is in the spool: record it (and whether its content was seen before)."""
        with self._transaction() as db:
            first = db.execute(
                "select id from inbound_files where flow = ? and warehouse = ? and sha256 = ?"
                " and duplicate_of is null and reason = '' order by id limit 1",
                (flow, warehouse, sha256),
            ).fetchone()
            cursor = db.execute(
                "insert into inbound_files (flow, warehouse, source, name, safe_name, size, sha256,"
                " status, duplicate_of, spool_path, received_at) values (?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?)",
                (flow, warehouse, source, name, size, sha256, InboundStatus.RECEIVED,
                 first["id"] if first else None, spool_path, iso_z(now)),
            )
            file_id = cursor.lastrowid
            taken = {row["safe_name"] for row in db.execute(
                "select safe_name from inbound_files where flow = ? and warehouse = ? and source = ?"
                " and id != ?", (flow, warehouse, source, file_id))}
            db.execute("update inbound_files set safe_name = ? where id = ?",
                       (_unique(safe, taken, file_id), file_id))
            db.execute("delete from inbound_sightings where flow = ? and warehouse = ? and source = ?"
                       " and name = ?", (flow, warehouse, source, name))
        return self.inbound(file_id)

    def inbound(self, file_id: int) -> StoredInbound:
        return _stored_inbound(self._db.execute("select * from inbound_files where id = ?", (file_id,)).fetchone())

    def inbound_unfinished(self, flow: str, warehouse: str, source: str) -> list[StoredInbound]:
        """Files claimed and recorded but not yet answered (their remote copy is in processing/)."""
        rows = self._db.execute(
            "select * from inbound_files where flow = ? and warehouse = ? and source = ? and status != ?"
            " order by id", (flow, warehouse, source, InboundStatus.DONE),
        ).fetchall()
        return [_stored_inbound(row) for row in rows]

    def file_failed(self, file_id: int, reason: str, now: datetime) -> None:
        """The whole file cannot be used (unreadable, incomplete past the limit, no rows)."""
        with self._transaction() as db:
            db.execute(
                "update inbound_files set status = ?, outcome = ?, reason = ?, parsed_at = ?"
                " where id = ? and status = ?",
                (InboundStatus.PARSED, InboundOutcome.ERROR, reason, iso_z(now), file_id,
                 InboundStatus.RECEIVED),
            )

    def file_parsed(self, file_id: int, now: datetime) -> None:
        """A file that needs no rows of its own recorded (a duplicate of an earlier one)."""
        with self._transaction() as db:
            db.execute("update inbound_files set status = ?, parsed_at = ? where id = ? and status = ?",
                       (InboundStatus.PARSED, iso_z(now), file_id, InboundStatus.RECEIVED))

    def finish_inbound(self, file_id: int, outcome: InboundOutcome, now: datetime) -> None:
        with self._transaction() as db:
            db.execute(
                "update inbound_files set status = ?, outcome = ?, finished_at = ? where id = ? and status = ?",
                (InboundStatus.DONE, outcome, iso_z(now), file_id, InboundStatus.PARSED),
            )

    def inbound_spool_to_delete(self, older_than: datetime) -> list[StoredInbound]:
        rows = self._db.execute(
            "select * from inbound_files where status = ? and finished_at < ? and spool_deleted_at is null",
            (InboundStatus.DONE, iso_z(older_than)),
        ).fetchall()
        return [_stored_inbound(row) for row in rows]

    def mark_inbound_spool_deleted(self, file_id: int, now: datetime) -> None:
        with self._transaction() as db:
            db.execute("update inbound_files set spool_deleted_at = ? where id = ?", (iso_z(now), file_id))

    def inbound_spool_in_use(self) -> set[str]:
        rows = self._db.execute("select spool_path from inbound_files where spool_deleted_at is null")
        return {row["spool_path"] for row in rows}

    # --- shipments -------------------------------------------------------------------------

    def record_shipments(self, file_id: int, rows: Sequence[tuple], packages: Sequence[dict],
                         now: datetime) -> list[int]:
        """A confirmation file's rows and the packages made of them, all or nothing.

        `rows`: (row, result, order_id, item, quantity, tracking, message, package index or None);
        `packages`: dicts with warehouse, order_id, marketplace_id, tracking_number, carrier_code,
        carrier_name, shipping_method, ship_date and items [(order item id, quantity)].
        Returns the new packages' ids, in order: each is its packageReferenceId.
        """
        with self._transaction() as db:
            status = db.execute("select status from inbound_files where id = ?", (file_id,)).fetchone()
            if status is None or status["status"] != InboundStatus.RECEIVED:
                raise RuntimeError(f"inbound file {file_id} is not waiting to be read")
            ids = []
            for package in packages:
                cursor = db.execute(
                    "insert into packages (file_id, warehouse, order_id, marketplace_id, tracking_number,"
                    " carrier_code, carrier_name, shipping_method, ship_date, status, created_at)"
                    " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (file_id, package["warehouse"], package["order_id"], package["marketplace_id"],
                     package["tracking_number"], package["carrier_code"], package["carrier_name"],
                     package["shipping_method"], package["ship_date"], PackageStatus.ACCEPTED, iso_z(now)),
                )
                ids.append(cursor.lastrowid)
                for position, (item_id, quantity) in enumerate(package["items"]):
                    db.execute("insert into package_lines (package_id, order_item_id, quantity, position)"
                               " values (?, ?, ?, ?)", (cursor.lastrowid, item_id, quantity, position))
            db.executemany(
                "insert into shipment_rows (file_id, row, result, order_id, item, quantity, tracking,"
                " message, package_id) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(file_id, *row[:7], ids[row[7]] if row[7] is not None else None) for row in rows],
            )
            db.execute("update inbound_files set status = ?, parsed_at = ? where id = ?",
                       (InboundStatus.PARSED, iso_z(now), file_id))
        return ids

    def packages_waiting(self, warehouse: str | None = None) -> list[StoredPackage]:
        """Packages not yet answered by Amazon (accepted, or sent before a crash), oldest first."""
        query = "select * from packages where status in (?, ?)"
        params: tuple = (PackageStatus.ACCEPTED, PackageStatus.SENT)
        if warehouse is not None:
            query += " and warehouse = ?"
            params += (warehouse,)
        return [self._stored_package(row) for row in self._db.execute(query + " order by id", params)]

    def next_package_id(self) -> int:
        """The id (packageReferenceId) the next recorded package gets."""
        row = self._db.execute("select coalesce(max(id), 0) + 1 as next from packages").fetchone()
        return row["next"]

    def package(self, package_id: int) -> StoredPackage:
        return self._stored_package(self._db.execute("select * from packages where id = ?", (package_id,)).fetchone())

    def mark_package_sent(self, package_id: int, now: datetime) -> None:
        with self._transaction() as db:
            db.execute("update packages set status = ?, sent_at = ? where id = ? and status = ?",
                       (PackageStatus.SENT, iso_z(now), package_id, PackageStatus.ACCEPTED))

    def mark_package_confirmed(self, package_id: int, now: datetime) -> None:
        self._finish_package(package_id, PackageStatus.CONFIRMED, "", now)

    def mark_package_rejected(self, package_id: int, message: str, now: datetime) -> None:
        self._finish_package(package_id, PackageStatus.REJECTED, message, now)

    def _finish_package(self, package_id: int, status: PackageStatus, message: str, now: datetime) -> None:
        with self._transaction() as db:
            db.execute(
                "update packages set status = ?, message = ?, finished_at = ? where id = ? and status in (?, ?)",
                (status, message, iso_z(now), package_id, PackageStatus.ACCEPTED, PackageStatus.SENT),
            )

    def files_waiting_for_packages(self, flow: str) -> set[int]:
        rows = self._db.execute(
            "select distinct p.file_id from packages p join inbound_files f on f.id = p.file_id"
            " where f.flow = ? and p.status in (?, ?)", (flow, PackageStatus.ACCEPTED, PackageStatus.SENT),
        )
        return {row["file_id"] for row in rows}

    def shipment_rows(self, file_id: int) -> list[dict]:
        """A file's rows with their package's state, in file order."""
        rows = self._db.execute(
            "select r.row, r.result, r.order_id, r.item, r.quantity, r.tracking, r.message, r.package_id,"
            " p.status as package_status, p.message as package_message"
            " from shipment_rows r left join packages p on p.id = r.package_id"
            " where r.file_id = ? order by r.row", (file_id,),
        )
        return [dict(row) for row in rows]

    def order_for_shipment(self, order_id: str) -> StoredOrder | None:
        row = self._db.execute("select * from orders where order_id = ?", (order_id,)).fetchone()
        return self._stored_order(row) if row else None

    def order_amazon_status(self, order_id: str) -> str | None:
        row = self._db.execute("select amazon_status from orders where order_id = ?", (order_id,)).fetchone()
        return row["amazon_status"] if row else None

    def order_packages(self, order_id: str) -> list[dict]:
        """An order's packages that count (accepted, sent or confirmed), with their lines and
        the file row they came from."""
        rows = self._db.execute(
            "select p.id, p.tracking_number, p.status, f.safe_name as file, f.received_at as at,"
            " (select min(r.row) from shipment_rows r where r.package_id = p.id) as row"
            " from packages p join inbound_files f on f.id = p.file_id"
            " where p.order_id = ? and p.status != ? order by p.id",
            (order_id, PackageStatus.REJECTED),
        ).fetchall()
        packages = []
        for row in rows:
            lines = self._db.execute(
                "select order_item_id, quantity from package_lines where package_id = ? order by order_item_id",
                (row["id"],),
            ).fetchall()
            packages.append({**dict(row), "items": tuple((l["order_item_id"], l["quantity"]) for l in lines)})
        return packages

    def refresh_shipment_due(self) -> int:
        """Note each delivered order's ship-by and units where `status` can read them without
        the state key (the order record itself is sealed). Returns how many were added."""
        rows = self._db.execute(
            "select o.order_id, o.warehouse, o.payload from orders o where o.status = ?"
            " and not exists (select 1 from shipment_due d where d.order_id = o.order_id)",
            (OrderStatus.DELIVERED,),
        ).fetchall()
        if not rows:
            return 0
        with self._transaction() as db:
            for row in rows:
                order = order_from_dict(self._payload_data(row["payload"], row["order_id"]))
                db.execute(
                    "insert or ignore into shipment_due (order_id, warehouse, ship_by, units) values (?, ?, ?, ?)",
                    (row["order_id"], row["warehouse"], iso_z(order.ship_by) if order.ship_by else None,
                     sum(line.quantity for line in order.lines)),
                )
        return len(rows)

    def shipment_counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in PackageStatus}
        for row in self._db.execute("select status, count(*) as n from packages group by status"):
            counts[row["status"]] = row["n"]
        return counts

    def unconfirmed_orders(self, limit: int = 50) -> list[dict]:
        """Delivered orders not yet confirmed in full, soonest ship-by first: the seller's
        late-shipment risk. Units in packages sent but not yet answered count as waiting."""
        rows = self._db.execute(
            "select d.order_id, d.warehouse, d.ship_by, d.units,"
            " coalesce((select sum(l.quantity) from package_lines l join packages p on p.id = l.package_id"
            "   where p.order_id = d.order_id and p.status = ?), 0) as confirmed,"
            " coalesce((select sum(l.quantity) from package_lines l join packages p on p.id = l.package_id"
            "   where p.order_id = d.order_id and p.status in (?, ?)), 0) as waiting"
            " from shipment_due d join orders o on o.order_id = d.order_id"
            " where o.amazon_status != 'CANCELLED'"
            " and d.units > coalesce((select sum(l.quantity) from package_lines l join packages p"
            "   on p.id = l.package_id where p.order_id = d.order_id and p.status = ?), 0)"
            " order by d.ship_by is null, d.ship_by, d.order_id limit ?",
            (PackageStatus.CONFIRMED, PackageStatus.ACCEPTED, PackageStatus.SENT,
             PackageStatus.CONFIRMED, limit),
        )
        return [dict(row) for row in rows]

    def inbound_report(self, flow: str, limit: int = 10) -> dict[str, list[dict]]:
        """Files in processing, and the latest files answered with errors."""
        columns = "id, warehouse, source, name, status, outcome, reason, received_at, finished_at"
        in_progress = self._db.execute(
            f"select {columns} from inbound_files where flow = ? and status != ? order by id",
            (flow, InboundStatus.DONE),
        ).fetchall()
        errors = self._db.execute(
            f"select {columns} from inbound_files where flow = ? and status = ? and outcome = ?"
            " order by id desc limit ?", (flow, InboundStatus.DONE, InboundOutcome.ERROR, limit),
        ).fetchall()
        return {"in_progress": [dict(r) for r in in_progress], "errors": [dict(r) for r in errors]}

    def _stored_package(self, row: sqlite3.Row) -> StoredPackage:
        lines = self._db.execute(
            "select order_item_id, quantity from package_lines where package_id = ? order by position",
            (row["id"],),
        ).fetchall()
        return StoredPackage(
            id=row["id"], file_id=row["file_id"], warehouse=row["warehouse"], order_id=row["order_id"],
            marketplace_id=row["marketplace_id"], tracking_number=row["tracking_number"],
            carrier_code=row["carrier_code"], carrier_name=row["carrier_name"],
            shipping_method=row["shipping_method"], ship_date=parse_iso(row["ship_date"]),
            status=PackageStatus(row["status"]), message=row["message"],
            items=tuple((line["order_item_id"], line["quantity"]) for line in lines),
        )


def _stored_file(row: sqlite3.Row) -> StoredFile:
    return StoredFile(
        id=row["id"],
        warehouse=row["warehouse"],
        name=row["name"],
        status=FileStatus(row["status"]),
        spool_path=Path(row["spool_path"]),
        size=row["size"],
        sha256=row["sha256"],
    )


@dataclass(frozen=True)
class StoredInbound:
    id: int
    flow: str
    warehouse: str
    source: InboundSource
    name: str
    safe_name: str
    size: int
    sha256: str
    status: InboundStatus
    outcome: InboundOutcome | None
    reason: str
    duplicate_of: int | None
    spool_path: str
    received_at: str


@dataclass(frozen=True)
class StoredPackage:
    id: int
    file_id: int
    warehouse: str
    order_id: str
    marketplace_id: str
    tracking_number: str
    carrier_code: str
    carrier_name: str
    shipping_method: str
    ship_date: datetime
    status: PackageStatus
    message: str
    items: tuple[tuple[str, int], ...]


def _stored_inbound(row: sqlite3.Row) -> StoredInbound:
    return StoredInbound(
        id=row["id"], flow=row["flow"], warehouse=row["warehouse"], source=InboundSource(row["source"]),
        name=row["name"], safe_name=row["safe_name"], size=row["size"], sha256=row["sha256"],
        status=InboundStatus(row["status"]),
        outcome=InboundOutcome(row["outcome"]) if row["outcome"] else None, reason=row["reason"],
        duplicate_of=row["duplicate_of"], spool_path=row["spool_path"], received_at=row["received_at"],
    )


def _unique(name: str, taken: set[str], file_id: int) -> str:
    """`name`, or `stem~id.ext` when an earlier file of the same folder had its stem (WMSs
    reuse names like SHIPMENTS.csv every day; archive names and result names, which are made
    from the stem, must not collide)."""
    stems = {_stem(other) for other in taken}
    if _stem(name) not in stems:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}~{file_id}.{suffix}" if dot and stem else f"{name}~{file_id}"


def _stem(name: str) -> str:
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name
