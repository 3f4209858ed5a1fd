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

The ledger knows its key: `meta.key_check` is a known text sealed with the BRIDGE_STATE_KEY the
ledger was made with, and every open that can write (`Ledger(path, sealer)`) checks the given key
against it before writing anything. A key rotation (`fbm-bridge rekey`) records the new key's
check value in `meta.rekey_to` first and swaps it in, in one transaction, once everything is
resealed. An order record that cannot be read (damaged seal, JSON or date) is set aside in
`unreadable_orders`, named by `attention()`, and skipped; the other orders go on.

A stock file's life (stock up; one row per file content, by SHA-256):
    held (a safety gate) ──--force──▶ submitting ──▶ published | failed;  held ──newer file──▶ superseded
and each of its feed documents (at most 25,000 SKUs each):
    prepared ──▶ submitting (createFeed under way) ──▶ submitted (feed id) ──▶ done | fatal | cancelled
    submitting ──after a crash, Amazon has one unknown feed──▶ submitted | none──▶ prepared | several──▶ in_doubt

An inbound file's life (confirmations, stock files; see "inbound files" below):
    received (claimed and spooled) ──▶ parsed (rows and packages recorded) ──▶ done (answered)
and, for one still being written when it was taken (it grew after: inbound_grown):
    found ──put back whole in its folder as <name>-again-<id>, the first file answered──▶ done;  edited (left alone)
A package's life (one confirmShipment; its row id is the packageReferenceId Amazon sees):
    accepted ──▶ sent (may have reached Amazon: re-sent with the same id) ──▶ confirmed | rejected
With shipments.send = "feed" a package is `sent` once a fulfillment feed document carries it
(fulfillment_feed_packages); that document's life is a stock feed document's (FeedStatus), and its
processing report confirms or rejects each package. A package in a document is never sent again
by another document or by confirmShipment.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sqlite3
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from bridge.records import Order, iso_z, order_from_dict, order_to_dict, parse_iso
from bridge.errors import FixTheSetup, LedgerBusy, LedgerUnusable, StateKeyMismatch

if TYPE_CHECKING:  # the ledger only calls what it is given: `status` reads it without cryptography
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


class StockFileStatus(StrEnum):
    HELD = "held"
    SUPERSEDED = "superseded"
    SUBMITTING = "submitting"
    PUBLISHED = "published"
    FAILED = "failed"


class StockFeedStatus(StrEnum):
    PREPARED = "prepared"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    DONE = "done"
    FATAL = "fatal"
    CANCELLED = "cancelled"
    IN_DOUBT = "in_doubt"


class InboundSource(StrEnum):
    SFTP = "sftp"
    LOCAL = "local"


# A file still being written when it was taken, and taken again whole: its first part's answer
# (often a header-only part in error/) is not one for a person; the whole file's is.
_NOT_TAKEN_AGAIN = ("not exists (select 1 from inbound_grown g where g.inbound_id = f.id"
                    " and g.again_id is not null)")


class InboundStatus(StrEnum):
    RECEIVED = "received"  # in the spool and recorded; its remote copy is in processing/
    PARSED = "parsed"  # its rows (and packages) recorded, or why it cannot be read
    DONE = "done"  # answered: result file written, moved to archive/ or error/


class InboundOutcome(StrEnum):
    ARCHIVE = "archive"
    ERROR = "error"


class GrownStatus(StrEnum):
    FOUND = "found"  # the file changed after it was taken: to be put back in its folder
    DONE = "done"  # put back under its `again_name` (and the first file answered)
    EDITED = "edited"  # changed, but not by writing on at its end: left as it is, answered as read


class PackageStatus(StrEnum):
    ACCEPTED = "accepted"  # checked, waiting to be sent
    SENT = "sent"  # the request may have reached Amazon: re-sent with the same id after a crash
    CONFIRMED = "confirmed"
    REJECTED = "rejected"  # by Amazon (its words in `message`): final


class RowResult(StrEnum):
    ACCEPTED = "accepted"  # in a package; its final word is the package's
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


PURGED_REASON = "(why is no longer kept: past retention.pii_days)"

# A feed document's life is the same for every feed type (stock, order fulfillment).
FeedStatus = StockFeedStatus
FEED_IN_FLIGHT = (StockFeedStatus.PREPARED, StockFeedStatus.SUBMITTING, StockFeedStatus.SUBMITTED)

UNDELIVERED = (OrderStatus.PENDING, OrderStatus.HELD, OrderStatus.UNRENDERABLE)
SENT = (OrderStatus.STAGED, OrderStatus.DELIVERED)


def _check(enum: type[StrEnum]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum)


RECENT_SKUS = timedelta(days=7)  # SKUs published this long before the last publish are still expected

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
create table if not exists file_problems (
    file_id integer primary key references files(id) on delete cascade,
    at text not null,
    problem text not null  -- why the file did not go on its last try; shown by status
);
create table if not exists order_events (
    id integer primary key,
    order_id text not null,
    at text not null,
    kind text not null,
    detail text not null
);
create table if not exists meta (  -- key_check, rekey_to, state_id
    name text primary key,
    value text not null
);
create table if not exists unreadable_orders (  -- set aside: kept, skipped, shown in status
    order_id text primary key,
    reason text not null,
    noted_at text not null
);
create table if not exists state_events (  -- fresh start, restore accepted, key rotation
    id integer primary key,
    at text not null,
    kind text not null,
    detail text not null
);
-- When Amazon was last asked again about a held order: rechecks ask the least recently asked
-- first, so one order that never gets an answer cannot starve the others.
create table if not exists held_asks (
    order_id text primary key,
    asked_at text not null
);
create table if not exists stock_files (
    id integer primary key,
    warehouse text not null,
    name text not null,
    sha256 text not null,
    stock_time text not null,  -- the stock's time: the file's timestamps, else the file's own time
    received_at text not null,
    rows integer not null,
    bad_rows integer not null,
    skus integer not null,  -- seller SKUs with a quantity to send
    status text not null check (status in ({_check(StockFileStatus)})),
    reason text not null default '',  -- the gates' verdict, or why it failed, in words
    forced integer not null default 0,
    created_at text not null,
    updated_at text not null,
    published_at text,  -- when the first of its documents was processed (DONE)
    unique (warehouse, sha256)
);
create table if not exists stock_feeds (
    id integer primary key,
    stock_file_id integer not null references stock_files(id),
    part integer not null,
    messages integer not null,
    spool_path text not null,  -- relative to the stock folder
    sha256 text not null,
    status text not null check (status in ({_check(StockFeedStatus)})),
    document_id text,
    feed_id text unique,
    adopted integer not null default 0,  -- feed id found with getFeeds after an interrupted createFeed
    result_document_id text,
    submit_started_at text,
    submitted_at text,
    finished_at text,
    accepted integer,
    invalid integer,
    errors integer,
    warnings integer,
    note text not null default '',
    unique (stock_file_id, part)
);
create table if not exists stock_issues (
    id integer primary key,
    stock_file_id integer not null references stock_files(id),
    source text not null check (source in ('file', 'amazon')),
    part integer,
    row integer,
    column_name text not null default '',
    sku text not null default '',
    severity text not null,
    code text not null default '',
    message text not null
);
create index if not exists stock_issues_by_file on stock_issues (stock_file_id);
create table if not exists stock_levels (
    sku text primary key,  -- seller SKU: Amazon's quantity is one per SKU
    quantity integer not null,
    stock_file_id integer not null references stock_files(id),
    published_at text not null
) without rowid;
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
create table if not exists inbound_reads (  -- reads of a received file started: one that never
    file_id integer primary key references inbound_files(id),  -- ended killed the process
    attempts integer not null,
    started_at text not null
);
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
create table if not exists shipment_due (  -- orders' ship-by, noted at staging: status reads it keyless
    order_id text primary key,
    warehouse text not null,
    ship_by text,
    units integer not null
);
-- shipments.send = "feed": one POST_ORDER_FULFILLMENT_DATA document per run. The document is not
-- stored: it is rebuilt from its packages (same bytes, checked by sha256) whenever it is uploaded.
create table if not exists fulfillment_feeds (
    id integer primary key,
    messages integer not null,            -- packages it carries, one message each
    sha256 text not null,
    marketplaces text not null,           -- createFeed's marketplaceIds, comma-separated
    status text not null check (status in ({_check(StockFeedStatus)})),
    document_id text,
    feed_id text unique,
    adopted integer not null default 0,   -- feed id found with getFeeds after an interrupted createFeed
    result_document_id text,
    created_at text not null,
    submit_started_at text,
    submitted_at text,
    finished_at text,
    processed integer,
    successful integer,
    with_error integer,
    with_warning integer,
    note text not null default ''
);
create table if not exists fulfillment_feed_packages (  -- which document carried a package
    package_id integer primary key references packages(id),
    feed_row integer not null references fulfillment_feeds(id)
);
create index if not exists fulfillment_feed_packages_by_feed on fulfillment_feed_packages (feed_row);
-- Stock files taken in by the inbound pipeline wait (parsed) for the daily publish; this says
-- what the publish made of each: the stock file computed from it, or why it never was.
-- Delivered orders a person settled (`fbm-bridge shipments settle`): shipped partly outside the
-- bridge, so never confirmed in full here. No longer listed as unconfirmed, nor in flight.
create table if not exists settled_orders (
    order_id text primary key references orders(order_id),
    at text not null,
    note text not null default ''
);
-- The provisional result file written for an inbound file that waits for a person (a held
-- stock file): its SHA-256, so the final answer knows the file in results/ is its own to replace.
create table if not exists inbound_provisional (
    inbound_id integer primary key references inbound_files(id),
    sha256 text not null
);
create table if not exists stock_intake (
    inbound_id integer primary key references inbound_files(id),
    stock_file_id integer references stock_files(id),
    note text not null default '',        -- why it was never computed (a newer file came first)
    failed integer not null default 0,    -- never computed because it could not be read
    at text not null
);
"""
# Every query a run makes per order or per file is served by one of these (tests/test_ledger_plans.py
# asserts the query plans): a run's cost grows with its own work, never with the ledger's age.
# The partial indexes hold only what is still to do (orders not yet purged, spool files not yet
# deleted), so they stay small however many orders were delivered; the queries that use them
# name the statuses as literals, since SQLite matches a partial index's WHERE by its terms.
SCHEMA += f"""
create index if not exists orders_by_file on orders (file_id) where file_id is not null;
create index if not exists orders_to_purge_delivered on orders (delivered_at)
    where pii_purged_at is null and status = '{OrderStatus.DELIVERED}';
create index if not exists orders_to_purge_closed on orders (updated_at)
    where pii_purged_at is null and status in ('{OrderStatus.CANCELLED}', '{OrderStatus.SKIPPED}');
create index if not exists order_events_by_order on order_events (order_id);
create index if not exists order_events_by_kind on order_events (kind);
create index if not exists files_by_status on files (status, warehouse);
create index if not exists files_in_spool on files (spool_path) where spool_deleted_at is null;
create index if not exists files_to_clean on files (delivered_at)
    where spool_deleted_at is null and status = '{FileStatus.DELIVERED}';
create index if not exists windows_by_name on windows (name, id);
"""
# Shipments up and stock up by the same rule: a shipments pass, a stock publish and `status` read
# their documents and stock files by status or newest first, never the whole table.
SCHEMA += """
create index if not exists fulfillment_feeds_by_status on fulfillment_feeds (status);
create index if not exists stock_files_by_status on stock_files (status, stock_time);
create index if not exists stock_files_by_time on stock_files (stock_time);
create index if not exists stock_files_by_warehouse on stock_files (warehouse);
create index if not exists stock_files_published on stock_files (stock_time) where published_at is not null;
create index if not exists stock_files_by_publish on stock_files (published_at) where published_at is not null;
create index if not exists stock_intake_by_stock_file on stock_intake (stock_file_id);
create index if not exists inbound_in_spool on inbound_files (spool_path) where spool_deleted_at is null;
"""
# `fbm-bridge resend`: a delivered order delivered again, on a person's request, in a file of its
# own (a `files` row no order points to). No foreign key to files: a resend whose spool copy is lost
# before it left is taken back (`_unstage`), and its request stays in the order's events.
SCHEMA += """
create table if not exists resends (
    id integer primary key,
    order_id text not null,
    number integer not null,              -- 1, 2, ... per order; in the file name (-resend-N)
    file_id integer not null,             -- the files row that carries it
    warehouse text not null,
    name text not null,
    requested_by text not null,           -- the OS user ($SUDO_USER, else the login name)
    reason text not null,
    requested_at text not null,
    unique (order_id, number)
);
create index if not exists resends_by_file on resends (file_id);
"""
# `report` (the reconciliation workbook) takes a period's orders by when the bridge first saw them
# and its confirmation and stock files by when they were received: read through these, never whole.
SCHEMA += """
create index if not exists orders_by_first_seen on orders (first_seen_at);
create index if not exists inbound_by_received on inbound_files (received_at);
"""
# `status` per warehouse (and its --prometheus output): counts through the (warehouse, status)
# indexes, recent inbound files and rejected packages by when they were answered, the ship-by
# dates still due by warehouse and date.
SCHEMA += f"""
create index if not exists orders_by_warehouse on orders (warehouse, status);
create index if not exists packages_by_warehouse on packages (warehouse, status);
create index if not exists packages_rejected on packages (warehouse, finished_at) where status = '{PackageStatus.REJECTED}';
create index if not exists inbound_finished on inbound_files (flow, warehouse, finished_at);
create index if not exists shipment_due_by_warehouse on shipment_due (warehouse, ship_by);
"""
# A file still being written when it was taken (its writer paused longer than stable_seconds at a
# line break, then wrote on: the writer's open handle follows the file into processing/ or
# archive/): what was read is answered, and the whole file goes back into its folder under
# `again_name`, to be taken again as a new file. Its life:
#     found (the change seen in `found_in`) ──put back, the first file answered──▶ done
#     edited (changed otherwise: not the writer going on; nothing is done)
# `again_id`: the inbound file it became when taken again.
SCHEMA += f"""
create table if not exists inbound_taken (  -- a file's modification time when it was taken (its
    inbound_id integer primary key references inbound_files(id),  -- size: inbound_files.size)
    mtime real not null
);
create table if not exists inbound_grown (
    inbound_id integer primary key references inbound_files(id),
    again_name text not null,
    found_in text not null check (found_in in ('processing', {_check(InboundOutcome)})),
    size integer not null,                -- its size when the change was seen
    status text not null check (status in ({_check(GrownStatus)})),
    found_at text not null,
    done_at text,
    again_id integer references inbound_files(id)
);
create index if not exists inbound_grown_open on inbound_grown (status) where again_id is null;
"""
KEY_CHECK, REKEY_TO, STATE_ID = "key_check", "rekey_to", "state_id"
ORDERS_BOOKMARK = "orders.window_end"  # how far orders have been pulled (flows.orders.BOOKMARK)
CATCH_UP = ".catch_up"  # bookmarks row (its name + this) of a catch-up under way: see `begin_catch_up`
PACKAGE_FLOOR = "package_floor"  # package ids continue above it (set after a restore or fresh start)
KEY_CHECK_BEFORE = "key_check_before"  # the key a finished rekey replaced: named if given again
# The tables that say a ledger has been used; `meta` alone (a key, an id) does not.
USE_TABLES = ("bookmarks", "windows", "files", "orders", "order_events")
LEDGER_MODE = 0o600  # buyer data; SQLite gives the -wal and -shm files the ledger's mode

log = logging.getLogger("bridge.ledger")


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
        the ledger can report statuses, windows and events but not read or write orders.

        With a sealer the key is checked first (StateKeyMismatch if it is not the ledger's).
        A file that is not a usable SQLite database raises LedgerUnusable, naming the fix."""
        self._path = Path(path)
        self._sealer = sealer
        self._lock = threading.RLock()
        with _translated_errors(self._path):
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # buyer data
            _make_private(self._path)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            try:
                self._db.row_factory = sqlite3.Row
                self._db.execute("pragma journal_mode=wal")
                self._db.execute("pragma synchronous=full")
                self._db.execute("pragma foreign_keys=on")
                with self._lock:
                    self._db.executescript(SCHEMA)
                if sealer is not None:
                    self._verify_key(sealer)
            except BaseException:
                self._db.close()
                raise

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("begin immediate")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
                    self._db.execute("rollback")
                raise
            self._db.execute("commit")

    # --- the key -------------------------------------------------------------------------

    def _verify_key(self, sealer: Sealer) -> None:
        """Refuse a key that is not this ledger's, before anything is written with it.

        A ledger made before ledgers knew their key (no check value) adopts the given key if it
        opens one of its order records, or if it has none; any other key is refused."""
        check, rotating = self._meta(KEY_CHECK), self._meta(REKEY_TO)
        if rotating is not None:
            raise StateKeyMismatch(
                f"a key rotation of {self._path} was started and did not finish: run `fbm-bridge rekey`"
                " again with the same BRIDGE_STATE_KEY and BRIDGE_STATE_KEY_NEW"
            )
        if check is not None:
            if not sealer.opens_check(check):
                raise StateKeyMismatch(self.key_mismatch(sealer))
            return
        if not self._opens_a_payload(sealer):
            raise StateKeyMismatch(key_mismatch_message(self._path))
        with self._transaction() as db:
            self._set_meta(db, KEY_CHECK, sealer.check_value())

    def key_mismatch(self, sealer: Sealer) -> str:
        """Why `sealer` is not this state's key, in words: after a finished rekey, the date, and
        whether it is the key from before."""
        rekeyed = [event["at"] for event in self.state_events() if event["kind"] == "rekey_finished"]
        if not rekeyed:
            return key_mismatch_message(self._path)
        folder, before = self._path.parent, self._meta(KEY_CHECK_BEFORE)
        advice = ("use the key that was BRIDGE_STATE_KEY_NEW (make it the BRIDGE_STATE_KEY: README, Operations,"
                  " Changing the state key)")
        if before is not None and sealer.opens_check(before):
            return (f"BRIDGE_STATE_KEY is the key the state in {folder} had before it was rekeyed on"
                    f" {rekeyed[-1]}: {advice}")
        return f"BRIDGE_STATE_KEY is not the key of the state in {folder}, which was rekeyed on {rekeyed[-1]}: {advice}"

    def opens_records(self, sealer: Sealer) -> bool:
        """For a ledger without a check value: True if `sealer` opens one of its order records,
        or it has none."""
        return self._opens_a_payload(sealer)

    def _opens_a_payload(self, sealer: Sealer) -> bool:
        """True if there is no order record, or the key opens one of them."""
        rows = self._db.execute("select payload from orders")
        found = False
        for row in rows:
            found = True
            if sealer.opens(row["payload"].encode("ascii")):
                return True
        return not found

    def sealed_with(self, sealer: Sealer) -> bool | None:
        """Whether the ledger's check value opens with `sealer` (None: a ledger that has no
        check value yet, made before ledgers knew their key)."""
        check = self._meta(KEY_CHECK)
        return None if check is None else sealer.opens_check(check)

    def rotation_target(self) -> str | None:
        """The sealed check value of the key an unfinished rotation reseals to, if any."""
        return self._meta(REKEY_TO)

    def begin_rotation(self, old: Sealer, new: Sealer, now: datetime) -> None:
        """Record that everything is being resealed from `old` to `new` (idempotent). From here
        until `finish_rotation`, only `fbm-bridge rekey` opens the state."""
        with self._transaction() as db:
            if self._meta(KEY_CHECK) is None:
                self._set_meta(db, KEY_CHECK, old.check_value())
            if self._meta(REKEY_TO) is None:
                self._set_meta(db, REKEY_TO, new.check_value())
                self._state_event(db, iso_z(now), "rekey_started", "resealing with BRIDGE_STATE_KEY_NEW")

    def reseal_payloads(self, reseal: Callable[[bytes], bytes | None], now: datetime) -> tuple[int, list[str]]:
        """Reseal every order record in one transaction; `reseal` gives the new token, or None
        for a record neither key opens, which is left as it is and set aside.
        Returns (records resealed, order ids set aside)."""
        count, unreadable = 0, []
        with self._transaction() as db:
            rows = db.execute("select order_id, payload from orders").fetchall()
            for row in rows:
                token = reseal(row["payload"].encode("ascii"))
                if token is None:
                    unreadable.append(row["order_id"])
                    self._set_aside(db, row["order_id"], UNREADABLE_SEAL, iso_z(now))
                    continue
                db.execute("update orders set payload = ? where order_id = ?",
                           (token.decode("ascii"), row["order_id"]))
                count += 1
        return count, unreadable

    def finish_rotation(self, now: datetime) -> None:
        """Swap the new key's check value in: from now on only the new key opens the state."""
        with self._transaction() as db:
            target = self._meta(REKEY_TO)
            if target is None:
                return
            before = self._meta(KEY_CHECK)
            if before is not None:
                self._set_meta(db, KEY_CHECK_BEFORE, before)
            self._set_meta(db, KEY_CHECK, target)
            db.execute("delete from meta where name = ?", (REKEY_TO,))
            self._state_event(db, iso_z(now), "rekey_finished", "the state is sealed with the new key")

    # --- identity, backups and audit -------------------------------------------------------

    def state_id(self) -> str | None:
        return self._meta(STATE_ID)

    def set_state_id(self, state_id: str, now: datetime, kind: str, detail: str) -> None:
        with self._transaction() as db:
            self._set_meta(db, STATE_ID, state_id)
            self._state_event(db, iso_z(now), kind, detail)

    def is_empty(self) -> bool:
        """No bookmark, window, file, order or event: nothing was ever recorded."""
        return not any(
            self._db.execute(f"select 1 from {table} limit 1").fetchone() for table in USE_TABLES
        )

    def progress(self) -> int:
        """How far the ledger has come: it only grows (events, inbound files and packages are
        never deleted), so a ledger whose progress is below what the state folder saw earlier is
        an older copy: orders delivered, files taken in or packages sent after it are not in it."""
        row = self._db.execute(
            "select coalesce((select max(id) from order_events), 0) + coalesce((select max(id) from inbound_files), 0)"
            " + coalesce((select max(id) from packages), 0) as n").fetchone()
        return row["n"]

    def start_fresh(self, bookmark: str, start: datetime, state_id: str, now: datetime, detail: str) -> None:
        """A person confirmed a fresh start: a new state whose first window starts at `start`."""
        with self._transaction() as db:
            self._set_meta(db, STATE_ID, state_id)
            db.execute(
                "insert into bookmarks (name, value, updated_at) values (?, ?, ?) "
                "on conflict (name) do update set value = excluded.value, updated_at = excluded.updated_at",
                (bookmark, iso_z(start), iso_z(now)),
            )
            self._state_event(db, iso_z(now), "fresh_start", detail)

    def note_state_event(self, kind: str, detail: str, now: datetime) -> None:
        with self._transaction() as db:
            self._state_event(db, iso_z(now), kind, detail)

    def state_events(self) -> list[dict[str, str]]:
        rows = self._db.execute("select at, kind, detail from state_events order by id")
        return [dict(row) for row in rows]

    def backup_to(self, target: Path) -> None:
        """A consistent copy of the ledger at `target` (mode 0600), taken with SQLite's online
        backup while others may write; a self-contained file (no -wal) that can be copied back."""
        _make_private(target)
        copy = sqlite3.connect(str(target))
        try:
            with self._lock:
                self._db.backup(copy)
            copy.execute("pragma journal_mode=delete")
        finally:
            copy.close()

    def detach_wal(self) -> None:
        """Leave the file self-contained (no -wal beside it) when closed: for backups."""
        self._db.execute("pragma journal_mode=delete")

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("select value from meta where name = ?", (name,)).fetchone()
        return row["value"] if row else None

    @staticmethod
    def _set_meta(db: sqlite3.Connection, name: str, value: str) -> None:
        db.execute(
            "insert into meta (name, value) values (?, ?) on conflict (name) do update set value = excluded.value",
            (name, value),
        )

    @staticmethod
    def _state_event(db: sqlite3.Connection, at: str, kind: str, detail: str) -> None:
        db.execute("insert into state_events (at, kind, detail) values (?, ?, ?)", (at, kind, detail))

    # --- bookmarks -----------------------------------------------------------------------

    def bookmark(self, name: str) -> datetime | None:
        row = self._db.execute("select value from bookmarks where name = ?", (name,)).fetchone()
        return parse_iso(row["value"]) if row else None

    # --- catching up ---------------------------------------------------------------------
    #
    # A pull that starts more than one window behind (downtime, a first run from far back)
    # notes where the catch-up began; `status` and the log show its progress from the windows
    # recorded since, until a run finds the bridge caught up.

    def begin_catch_up(self, name: str, now: datetime) -> None:
        """Note that the windows of bookmark `name` are being caught up, unless already noted."""
        with self._transaction() as db:
            last = db.execute("select max(id) as id from windows where name = ?", (name,)).fetchone()["id"]
            db.execute(
                "insert into bookmarks (name, value, updated_at) values (?, ?, ?) on conflict (name) do nothing",
                (name + CATCH_UP, json.dumps({"since": iso_z(now), "after_window": last or 0}), iso_z(now)),
            )

    def end_catch_up(self, name: str) -> None:
        with self._transaction() as db:
            db.execute("delete from bookmarks where name = ?", (name + CATCH_UP,))

    def catch_up(self, name: str) -> dict | None:
        """The catch-up under way for bookmark `name`: since when, and the windows and orders
        recorded since; None when the bridge is not catching up."""
        row = self._db.execute("select value from bookmarks where name = ?", (name + CATCH_UP,)).fetchone()
        if row is None:
            return None
        began = json.loads(row["value"])
        done = self._db.execute(
            "select count(*) as windows, coalesce(sum(orders), 0) as orders from windows where name = ? and id > ?",
            (name, began["after_window"]),
        ).fetchone()
        return {"since": parse_iso(began["since"]), "windows": done["windows"], "orders": done["orders"]}

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
        stored_time = _stored_time(row["last_updated"])
        if stored_time is not None and stored_time > order.last_updated:
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
            db.execute("delete from unreadable_orders where order_id = ?", (order.order_id,))
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
        return self._readable(rows)

    def orders_elsewhere(self, warehouses: Sequence[str], *statuses: OrderStatus) -> list[StoredOrder]:
        """Orders in `statuses` for a warehouse not among `warehouses` (renamed or removed from
        the settings); only their records are opened."""
        marks = ", ".join("?" for _ in statuses)
        names = ", ".join("?" for _ in warehouses)
        rows = self._db.execute(
            f"select * from orders where status in ({marks}) and (warehouse is null or warehouse not in ({names}))"
            " order by first_seen_at, order_id",
            (*statuses, *warehouses),
        ).fetchall()
        return self._readable(rows)

    def _readable(self, rows: list[sqlite3.Row]) -> list[StoredOrder]:
        """The rows' orders, each decoded on its own; the unreadable set aside."""
        noted = {row["order_id"] for row in self._db.execute("select order_id from unreadable_orders")}
        readable, unreadable, recovered = [], {}, []
        for row in rows:
            try:
                readable.append(self._stored_order(row))
            except UnreadableRecord as problem:
                unreadable[row["order_id"]] = (str(problem), row["updated_at"])
                continue
            if row["order_id"] in noted:
                recovered.append(row["order_id"])
        if unreadable or recovered:
            self._note_unreadable(unreadable, recovered)
        return readable

    def stored_order(self, order_id: str) -> StoredOrder | None:
        row = self._db.execute("select * from orders where order_id = ?", (order_id,)).fetchone()
        return self._stored_order(row) if row else None

    def asked_at(self) -> dict[str, str]:
        """Held orders Amazon was asked about again: order id -> when last (ISO 8601)."""
        rows = self._db.execute(
            "select a.order_id, a.asked_at from held_asks a join orders o using (order_id) where o.status = ?",
            (OrderStatus.HELD,),
        )
        return {row["order_id"]: row["asked_at"] for row in rows}

    def mark_asked(self, order_ids: Sequence[str], now: datetime) -> None:
        with self._transaction() as db:
            db.execute("delete from held_asks where order_id not in (select order_id from orders where status = ?)",
                       (OrderStatus.HELD,))
            db.executemany(
                "insert into held_asks (order_id, asked_at) values (?, ?)"
                " on conflict (order_id) do update set asked_at = excluded.asked_at",
                [(order_id, iso_z(now)) for order_id in order_ids],
            )

    def note_event(self, order_id: str, kind: str, detail: str, now: datetime) -> None:
        """Something about an order worth its history (`status --order`), without a status change."""
        with self._transaction() as db:
            self._event(db, order_id, iso_z(now), kind, detail)


    def _note_unreadable(self, unreadable: dict[str, tuple[str, str]], recovered: list[str]) -> None:
        """Set aside records that cannot be read (kept, skipped, shown by `attention` with the
        time the record was last written); forget the note of a record that reads again."""
        with self._transaction() as db:
            for order_id, (why, written_at) in unreadable.items():
                self._set_aside(db, order_id, why, written_at)
            for order_id in recovered:
                db.execute("delete from unreadable_orders where order_id = ?", (order_id,))

    @staticmethod
    def _set_aside(db: sqlite3.Connection, order_id: str, why: str, now: str) -> None:
        known = db.execute("select reason from unreadable_orders where order_id = ?", (order_id,)).fetchone()
        if known is not None and known["reason"] == why:
            return
        db.execute(
            "insert into unreadable_orders (order_id, reason, noted_at) values (?, ?, ?)"
            " on conflict (order_id) do update set reason = excluded.reason, noted_at = excluded.noted_at",
            (order_id, why, now),
        )
        log.error("order record set aside order_id=%s: %s; the other orders go on", order_id, why)

    def mark_unrenderable(self, order_id: str, reason: str, now: datetime) -> bool:
        """True when the order became unrenderable or its reason changed: news worth an ERROR
        line once, not on every run that finds it the same."""
        return order_id in self.mark_unrenderable_many([(order_id, reason)], now)

    def mark_unrenderable_many(self, orders: Sequence[tuple[str, str]], now: datetime) -> set[str]:
        """`mark_unrenderable` for several (order id, reason) in one transaction; returns the
        ids for which it is news."""
        news = set()
        with self._transaction() as db:
            for order_id, reason in orders:
                row = db.execute("select status, reason from orders where order_id = ?", (order_id,)).fetchone()
                if row is None or OrderStatus(row["status"]) not in (OrderStatus.PENDING, OrderStatus.UNRENDERABLE):
                    continue
                db.execute(
                    "update orders set status = ?, reason = ?, updated_at = ? where order_id = ?",
                    (OrderStatus.UNRENDERABLE, reason, iso_z(now), order_id),
                )
                if row["status"] != OrderStatus.UNRENDERABLE or row["reason"] != reason:
                    self._event(db, order_id, iso_z(now), "unrenderable", reason)
                    news.add(order_id)
        return news

    def file_name(self, file_id: int) -> str | None:
        row = self._db.execute("select warehouse, name from files where id = ?", (file_id,)).fetchone()
        return f"{row['warehouse']}: {row['name']}" if row else None

    def file_name_taken(self, warehouse: str, name: str) -> bool:
        row = self._db.execute(
            "select 1 from files where warehouse = ? and name = ?", (warehouse, name)
        ).fetchone()
        return row is not None

    def free_file_name(self, warehouse: str, name: str) -> str:
        """`name` if no file of the warehouse has it, else the first free of `STEM-2.EXT`,
        `STEM-3.EXT`, ...: per-run files of two runs in one second get distinct names. The same
        ledger gives the same answer, so a file rendered again after a crash gets the same name."""
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem:
            stem, extension = name, ""
        # From `STEM-` up to (not including) `STEM.`: '.' follows '-', so in SQLite's binary
        # order this range is exactly the names starting `STEM-`, read from the unique index.
        taken = {row["name"] for row in self._db.execute(
            "select name from files where warehouse = ? and (name = ? or (name >= ? and name < ?))",
            (warehouse, name, stem + "-", stem + "."),
        )}
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = f"{stem}-{number}" + (f".{extension}" if extension else "")
        return candidate

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
        [file_id] = self.stage_files(warehouse, [(name, spool_path, size, sha256, order_ids)], now)
        return file_id

    def stage_files(
        self,
        warehouse: str,
        files: Sequence[tuple[str, str | Path, int, str, Sequence[str]]],
        now: datetime,
        due: Mapping[str, Order] | None = None,
    ) -> list[int]:
        """Record spooled files (name, spool path, size, SHA-256, order ids) and move their
        orders to staged, all in one transaction; returns the files' ids, in order. `due`: the
        orders' records at hand, whose ship-by and units are noted in the same transaction for
        `status` (keyless), which lists them once delivered, with or without a shipments pass."""
        ids = []
        with self._transaction() as db:
            for name, spool_path, size, sha256, order_ids in files:
                cursor = db.execute(
                    "insert into files (warehouse, name, status, spool_path, size, sha256, created_at)"
                    " values (?, ?, ?, ?, ?, ?, ?)",
                    (warehouse, name, FileStatus.STAGED, str(spool_path), size, sha256, iso_z(now)),
                )
                file_id = cursor.lastrowid
                ids.append(file_id)
                for order_id in order_ids:
                    changed = db.execute(
                        "update orders set status = ?, reason = '', file_id = ?, updated_at = ?"
                        " where order_id = ? and status in (?, ?)",
                        (OrderStatus.STAGED, file_id, iso_z(now), order_id,
                         OrderStatus.PENDING, OrderStatus.UNRENDERABLE),
                    ).rowcount
                    if changed != 1:
                        raise RuntimeError(f"order {order_id} is not waiting to be rendered")
                    if due is not None and order_id in due:
                        self._note_ship_by(db, due[order_id], warehouse)
        return ids

    @staticmethod
    def _note_ship_by(db: sqlite3.Connection, order: Order, warehouse: str) -> None:
        """An order's ship-by and units, noted as it is staged (never delivered before: a
        restaged order was taken back, so its note is replaced)."""
        db.execute(
            "insert into shipment_due (order_id, warehouse, ship_by, units) values (?, ?, ?, ?)"
            " on conflict (order_id) do update set warehouse = excluded.warehouse, ship_by = excluded.ship_by,"
            " units = excluded.units",
            (order.order_id, warehouse, iso_z(order.ship_by) if order.ship_by else None,
             sum(line.quantity for line in order.lines)))

    def files_in(self, *statuses: FileStatus, warehouse: str | None = None) -> list[StoredFile]:
        marks = ", ".join("?" for _ in statuses)
        query = f"select * from files where status in ({marks})"
        params: tuple = tuple(statuses)
        if warehouse is not None:
            query += " and warehouse = ?"
            params += (warehouse,)
        rows = self._db.execute(query + " order by id", params).fetchall()
        return [_stored_file(row) for row in rows]

    def file_orders_open(self, file_id: int) -> None:
        """Open the sealed records of a file's orders; raises FixTheSetup when the key cannot.
        Tells a damaged spool copy (the records open) from a wrong key (they do not)."""
        for row in self._db.execute("select order_id, payload from orders where file_id = ?", (file_id,)):
            self._payload_data(row["payload"], row["order_id"])

    def note_delivery_problem(self, file_id: int, problem: str, now: datetime) -> None:
        """Why a staged or uploaded file did not go on this try; `delivery_problems` shows it
        until the file is delivered or taken back."""
        with self._transaction() as db:
            db.execute(
                "insert into file_problems (file_id, at, problem) values (?, ?, ?) on conflict"
                " (file_id) do update set at = excluded.at, problem = excluded.problem",
                (file_id, iso_z(now), problem),
            )

    def delivery_problems(self) -> dict[int, dict[str, str]]:
        """file id -> {"at", "problem"} for each file in flight whose last try failed."""
        rows = self._db.execute(
            # file_problems first (a few rows: a delivered file's is deleted), files by its key
            "select p.file_id, p.at, p.problem from file_problems p cross join files f on f.id = p.file_id"
            " where f.status != ?", (FileStatus.DELIVERED,),
        )
        return {row["file_id"]: {"at": row["at"], "problem": row["problem"]} for row in rows}

    def mark_uploaded(self, file_id: int) -> None:
        self.mark_uploaded_many([file_id])

    def mark_uploaded_many(self, file_ids: Sequence[int]) -> None:
        """Files complete under their temporary names, recorded in one transaction."""
        with self._transaction() as db:
            db.executemany(
                "update files set status = ? where id = ? and status = ?",
                [(FileStatus.UPLOADED, file_id, FileStatus.STAGED) for file_id in file_ids],
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
        for resend in db.execute("select order_id, number from resends where file_id = ?", (file_id,)).fetchall():
            self._event(db, resend["order_id"], now, "resend_taken_back",
                        f"resend {resend['number']} never left: {why}; run the resend again")
        db.execute("delete from resends where file_id = ?", (file_id,))
        db.execute("delete from file_problems where file_id = ?", (file_id,))
        db.execute("delete from files where id = ?", (file_id,))

    def mark_delivered(self, file_id: int, now: datetime, unconfirmed: str = "") -> list[str]:
        """The file is in place under its final name: it and its orders are delivered.
        `unconfirmed` says why that could not be seen in the drop; staff are shown it."""
        return self.mark_delivered_many([(file_id, unconfirmed)], now)[file_id]

    def mark_delivered_many(self, files: Sequence[tuple[int, str]], now: datetime) -> dict[int, list[str]]:
        """`mark_delivered` for several files (file id, unconfirmed) in one transaction;
        returns each file's orders that became delivered."""
        at = iso_z(now)
        delivered: dict[int, list[str]] = {}
        with self._transaction() as db:
            for file_id, unconfirmed in files:
                newly = db.execute(
                    "update files set status = ?, delivered_at = ? where id = ? and status != ?",
                    (FileStatus.DELIVERED, at, file_id, FileStatus.DELIVERED),
                ).rowcount
                if newly:
                    self._note_resent(db, file_id, at, unconfirmed)
                db.execute("delete from file_problems where file_id = ?", (file_id,))
                order_ids = [
                    row["order_id"]
                    for row in db.execute(
                        "select order_id from orders where file_id = ? and status = ?",
                        (file_id, OrderStatus.STAGED),
                    )
                ]
                db.execute(
                    "update orders set status = ?, delivered_at = ?, updated_at = ? where file_id = ? and status = ?",
                    (OrderStatus.DELIVERED, at, at, file_id, OrderStatus.STAGED),
                )
                for order_id in order_ids:
                    self._event(db, order_id, at, "delivered", f"file_id={file_id}")
                    if unconfirmed:
                        self._event(db, order_id, at, "delivery_unconfirmed", unconfirmed)
                delivered[file_id] = order_ids
        return delivered

    # --- resends --------------------------------------------------------------------------

    def stage_resend(self, order_id: str, number: int, warehouse: str, name: str, spool_path: str, size: int,
                     sha256: str, requested_by: str, reason: str, now: datetime) -> StoredFile:
        """Record a spooled resend file (staged) and the request (who, why), in one transaction:
        from here on the name is decided, and delivering it is the ordinary delivery's job."""
        at = iso_z(now)
        with self._transaction() as db:
            file_id = db.execute(
                "insert into files (warehouse, name, status, spool_path, size, sha256, created_at)"
                " values (?, ?, ?, ?, ?, ?, ?)",
                (warehouse, name, FileStatus.STAGED, spool_path, size, sha256, at),
            ).lastrowid
            db.execute(
                "insert into resends (order_id, number, file_id, warehouse, name, requested_by, reason, requested_at)"
                " values (?, ?, ?, ?, ?, ?, ?, ?)",
                (order_id, number, file_id, warehouse, name, requested_by, reason, at),
            )
            self._event(db, order_id, at, "resend_requested",
                        f"resend {number} as {name} to {warehouse} by {requested_by}: {reason}")
        return StoredFile(file_id, warehouse, name, FileStatus.STAGED, Path(spool_path), size, sha256)

    def next_resend_number(self, order_id: str) -> int:
        row = self._db.execute("select max(number) as n from resends where order_id = ?", (order_id,)).fetchone()
        return (row["n"] or 0) + 1

    def resends(self, order_id: str) -> list[dict[str, Any]]:
        """An order's resends, oldest first: number, name, warehouse, who, why, when requested,
        and the file's status and delivery time."""
        rows = self._db.execute(
            "select r.number, r.name, r.warehouse, r.requested_by, r.reason, r.requested_at, r.file_id,"
            " f.status, f.delivered_at from resends r left join files f on f.id = r.file_id"
            " where r.order_id = ? order by r.number", (order_id,),
        )
        return [dict(row) for row in rows]

    def resend_in_flight(self, order_id: str) -> tuple[dict[str, Any], StoredFile] | None:
        """The order's resend recorded but not yet delivered (a crash or the drop down), if any."""
        for resend in reversed(self.resends(order_id)):
            if resend["status"] in (FileStatus.STAGED, FileStatus.UPLOADED):
                row = self._db.execute("select * from files where id = ?", (resend["file_id"],)).fetchone()
                return resend, _stored_file(row)
        return None

    def resent_orders(self, file_id: int) -> int:
        """How many orders the file carries as resends (a resend's file delivers no new order)."""
        return self._db.execute("select count(*) from resends where file_id = ?", (file_id,)).fetchone()[0]

    def _note_resent(self, db: sqlite3.Connection, file_id: int, at: str, unconfirmed: str) -> None:
        for row in db.execute("select order_id, number, name from resends where file_id = ?", (file_id,)).fetchall():
            self._event(db, row["order_id"], at, "resent", f"resend {row['number']} delivered as {row['name']}")
            if unconfirmed:
                self._event(db, row["order_id"], at, "delivery_unconfirmed", unconfirmed)

    # --- retention -----------------------------------------------------------------------

    def purge_pii(self, older_than: datetime, now: datetime) -> int:
        """Strip buyer name, e-mail and address from orders finished before `older_than`.

        Finished: delivered (counted from delivery), cancelled or skipped (from the last
        change). Line items stay: later flows need order item ids and quantities.
        """
        cutoff = iso_z(older_than)
        with self._transaction() as db:
            rows = db.execute(  # the statuses as literals: see the partial indexes
                f"select order_id, payload from orders where pii_purged_at is null"
                f" and status = '{OrderStatus.DELIVERED}' and delivered_at < ?", (cutoff,),
            ).fetchall() + db.execute(
                f"select order_id, payload from orders where pii_purged_at is null"
                f" and status in ('{OrderStatus.CANCELLED}', '{OrderStatus.SKIPPED}') and updated_at < ?", (cutoff,),
            ).fetchall()
            purged = 0
            for row in rows:
                try:
                    data = self._payload_data(row["payload"], row["order_id"])
                except UnreadableRecord as problem:
                    self._set_aside(db, row["order_id"], str(problem), iso_z(now))
                    continue
                data.update(ship_to=None, buyer_name="", buyer_email="")
                db.execute(
                    "update orders set payload = ?, pii_purged_at = ? where order_id = ?",
                    (self._seal(data), iso_z(now), row["order_id"]),
                )
                purged += 1
            self._purge_inbound_words(db, cutoff)
        return purged

    def purge_pii_in_copy(self, path: Path, older_than: datetime, now: datetime) -> int:
        """`purge_pii` in a copy of this ledger (a daily backup), opened with this ledger's key
        and left self-contained; the file keeps its time (`backup --list` shows it as taken)."""
        times = path.stat()
        copy = Ledger(path, self._keyed())
        try:
            purged = copy.purge_pii(older_than, now)
            copy.detach_wal()
        finally:
            copy.close()
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
        return purged

    @staticmethod
    def _purge_inbound_words(db: sqlite3.Connection, cutoff: str) -> None:
        """Inbound files answered before `cutoff` keep their counts and ids, not their words: a
        file read with the wrong layout may have put a buyer's name where an item or a reason
        quotes it. Their result files went to the files' owners long ago."""
        old_files = "select id from inbound_files where status = ? and finished_at < ?"
        db.execute(f"update inbound_files set reason = ? where reason != '' and reason != ? and id in ({old_files})",
                   (PURGED_REASON, PURGED_REASON, InboundStatus.DONE, cutoff))
        db.execute(f"update shipment_rows set item = '', message = '' where result = ? and (item != '' or message != '')"
                   f" and file_id in ({old_files})", (RowResult.REJECTED, InboundStatus.DONE, cutoff))

    def oldest_buyer_data(self) -> str | None:
        """When the oldest finished order (delivered, cancelled or skipped) whose buyer data is
        still kept finished (ISO 8601), or None: what the next purges will reach first."""
        times = [row["at"] for row in (
            self._db.execute(f"select min(delivered_at) as at from orders where pii_purged_at is null"
                             f" and status = '{OrderStatus.DELIVERED}'").fetchone(),
            self._db.execute(f"select min(updated_at) as at from orders where pii_purged_at is null"
                             f" and status in ('{OrderStatus.CANCELLED}', '{OrderStatus.SKIPPED}')").fetchone(),
        ) if row["at"]]
        return min(times) if times else None

    def spool_files_to_delete(self, older_than: datetime) -> list[StoredFile]:
        rows = self._db.execute(  # the status as a literal: see the partial index files_to_clean
            f"select * from files where status = '{FileStatus.DELIVERED}' and delivered_at < ?"
            " and spool_deleted_at is null", (iso_z(older_than),),
        ).fetchall()
        return [_stored_file(row) for row in rows]

    def mark_spool_deleted(self, file_id: int, now: datetime) -> None:
        with self._transaction() as db:
            db.execute("update files set spool_deleted_at = ? where id = ?", (iso_z(now), file_id))

    def spool_digests(self) -> dict[str, str]:
        """The spool files the ledger knows (not purged): spool path -> SHA-256 of the file as
        delivered."""
        rows = self._db.execute("select spool_path, sha256 from files where spool_deleted_at is null")
        return {row["spool_path"]: row["sha256"] for row in rows}

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
        for row in self._db.execute(
            "select u.order_id, 'unreadable' as status, u.reason, o.warehouse, u.noted_at as updated_at"
            " from unreadable_orders u left join orders o using (order_id) order by u.noted_at, u.order_id"
        ):
            item = dict(row)
            item["reason"] = f"the ledger's record cannot be read: {item['reason']}; it is set aside (kept, not sent)"
            items.append(item)
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
        """The order record as a dict; UnreadableRecord if its seal or JSON is damaged."""
        data = self._keyed().try_open(payload.encode("utf-8"))
        if data is None:
            raise UnreadableRecord(UNREADABLE_SEAL)
        try:
            plain = json.loads(data)
        except ValueError:
            raise UnreadableRecord("its data is not valid JSON (damaged)") from None
        if not isinstance(plain, dict):
            raise UnreadableRecord("its data is not an order record (damaged)")
        return plain

    def _keyed(self) -> Sealer:
        if self._sealer is None:
            raise FixTheSetup("order data is sealed: this needs the secret BRIDGE_STATE_KEY (environment variable, "
                              "or the file $CREDENTIALS_DIRECTORY/BRIDGE_STATE_KEY)")
        return self._sealer

    def _stored_order(self, row: sqlite3.Row) -> StoredOrder:
        """One order decoded on its own: UnreadableRecord names what is wrong with it."""
        data = self._payload_data(row["payload"], row["order_id"])
        try:
            order = order_from_dict(data)
        except KeyError as missing:
            raise UnreadableRecord(f"its field {missing.args[0]} is missing") from None
        except (ValueError, TypeError, ArithmeticError, AttributeError) as problem:
            raise UnreadableRecord(f"a field cannot be read: {_field_problem(problem)}") from None
        return StoredOrder(
            order_id=row["order_id"],
            status=OrderStatus(row["status"]),
            reason=row["reason"],
            warehouse=row["warehouse"],
            order=order,
        )

    @staticmethod
    def _event(db: sqlite3.Connection, order_id: str, at: str, kind: str, detail: str) -> None:
        db.execute(
            "insert into order_events (order_id, at, kind, detail) values (?, ?, ?, ?)",
            (order_id, at, kind, detail),
        )

    # --- stock up ------------------------------------------------------------------------
    #
    # Stock files, their feed documents and issues, and the quantity last published per seller
    # SKU (what the safety gates compare a new file with). Issues arrive as plain tuples:
    # file problems (row, column, why, severity) and Amazon's (part, row, sku, severity, code,
    # message); the ledger does not depend on the formats that produced them.

    def stock_file(self, warehouse: str, sha256: str) -> StoredStockFile | None:
        row = self._db.execute(
            "select * from stock_files where warehouse = ? and sha256 = ?", (warehouse, sha256)
        ).fetchone()
        return _stored_stock_file(row) if row else None

    def stock_file_known(self, warehouse: str, sha256_prefix: str) -> bool:
        """Whether a stock file of the warehouse has content whose SHA-256 starts so (its
        documents' folder is named by the first 16 hex digits)."""
        if not sha256_prefix or not all(c in "0123456789abcdef" for c in sha256_prefix):
            return False
        return self._db.execute(
            "select 1 from stock_files where warehouse = ? and sha256 >= ? and sha256 < ? limit 1",
            (warehouse, sha256_prefix, sha256_prefix + "g"),
        ).fetchone() is not None

    def stock_file_by_id(self, file_id: int) -> StoredStockFile:
        return _stored_stock_file(self._db.execute("select * from stock_files where id = ?", (file_id,)).fetchone())

    def stock_files_in(self, *statuses: StockFileStatus) -> list[StoredStockFile]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._db.execute(
            f"select * from stock_files where status in ({marks}) order by stock_time, id", tuple(statuses)
        ).fetchall()
        return [_stored_stock_file(row) for row in rows]

    def latest_stock_file(self) -> StoredStockFile | None:
        """The newest stock file recorded (by its stock time), whatever became of it."""
        row = self._db.execute("select * from stock_files order by stock_time desc, id desc limit 1").fetchone()
        return _stored_stock_file(row) if row else None

    def last_published_stock(self) -> StoredStockFile | None:
        """The stock file Amazon processed last (by when a document of it was processed, not by
        its stock time: a file dated a year ahead by a typo, once published, must not stay "the
        last published" until that date; the next file published, forced or not, takes over)."""
        row = self._db.execute(
            "select * from stock_files where published_at is not null order by published_at desc, id desc limit 1"
        ).fetchone()
        return _stored_stock_file(row) if row else None

    def published_levels(self) -> Iterator[tuple[str, int, int]]:
        """(seller SKU, last published quantity, 1 if published lately) in ascending SKU order,
        streamed: a million SKUs are never in memory at once. "Lately": by the last published
        file, or in the RECENT_SKUS before it, so that one broken file published (forced) does
        not shrink what the next file is compared with, while a SKU the warehouse stopped
        listing drops out of the comparison after a week."""
        last = self.last_published_stock()
        since = iso_z(last.published_at - RECENT_SKUS) if last and last.published_at else ""
        cursor = self._db.cursor()
        cursor.row_factory = None  # plain tuples: cheaper than sqlite3.Row for a million rows
        yield from cursor.execute(
            "select sku, quantity, stock_file_id = ? or (? != '' and published_at >= ?) from stock_levels order by sku",
            (last.id if last else -1, since, since),
        )

    def record_stock_file(
        self,
        *,
        warehouse: str,
        name: str,
        sha256: str,
        stock_time: datetime,
        received_at: datetime,
        rows: int,
        bad_rows: int,
        skus: int,
        status: StockFileStatus,
        reason: str,
        forced: bool,
        documents: Sequence[tuple[int, int, str, str]],
        problems: Iterable[tuple],
        now: datetime,
        inbound_id: int | None = None,
        takes_over: bool = True,
    ) -> int:
        """Record a computed stock file with its documents (part, messages, spool path, SHA-256)
        as prepared and its rows' problems, all or nothing. Older held files are superseded:
        only the newest stock may still be published. `inbound_id`: the inbound file it was
        computed from; inbound stock files received before it and never computed are passed
        over in the same transaction (a newer file came before the publish). `takes_over` False:
        a file that can never be published (nothing to send) supersedes and passes over nothing."""
        at = iso_z(now)
        with self._transaction() as db:
            cursor = db.execute(
                "insert into stock_files (warehouse, name, sha256, stock_time, received_at, rows, bad_rows,"
                " skus, status, reason, forced, created_at, updated_at)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (warehouse, name, sha256, iso_z(stock_time), iso_z(received_at), rows, bad_rows, skus,
                 status, reason, int(forced), at, at),
            )
            file_id = cursor.lastrowid
            db.executemany(
                "insert into stock_feeds (stock_file_id, part, messages, spool_path, sha256, status)"
                " values (?, ?, ?, ?, ?, ?)",
                [(file_id, part, messages, path, digest, StockFeedStatus.PREPARED)
                 for part, messages, path, digest in documents],
            )
            db.executemany(  # (row, column, why, severity[, the row's warehouse SKU]), streamed
                "insert into stock_issues (stock_file_id, source, row, column_name, severity, message, sku)"
                " values (?, 'file', ?, ?, ?, ?, ?)",
                ((file_id, p[0], p[1], p[3], p[2], p[4] if len(p) > 4 else "") for p in problems),
            )
            db.execute(
                "update stock_files set status = ?, reason = ? || ' (' || reason || ')', updated_at = ?"
                " where ? and status = ? and id != ? and stock_time <= ? and warehouse = ?",
                (StockFileStatus.SUPERSEDED, f"superseded by the newer stock file {name}", at, int(takes_over),
                 StockFileStatus.HELD, file_id, iso_z(stock_time), warehouse),
            )
            if inbound_id is not None:
                db.execute("insert into stock_intake (inbound_id, stock_file_id, at) values (?, ?, ?)",
                           (inbound_id, file_id, at))
            if inbound_id is not None and takes_over:
                db.execute(
                    "insert into stock_intake (inbound_id, note, at) select f.id, ?, ? from inbound_files f"
                    " where f.flow = 'stock' and f.warehouse = ? and f.id < ? and f.status = ?"
                    " and f.reason = '' and f.duplicate_of is null"
                    " and not exists (select 1 from stock_intake i where i.inbound_id = f.id)",
                    (f"not published: the newer stock file {name} came before the publish", at, warehouse,
                     inbound_id, InboundStatus.PARSED),
                )
        return file_id

    def release_held_stock(self, file_id: int, reason: str, now: datetime) -> bool:
        """--force: a held file goes to submitting, with what the force overrode."""
        with self._transaction() as db:
            return db.execute(
                "update stock_files set status = ?, reason = ?, forced = 1, updated_at = ? where id = ? and status = ?",
                (StockFileStatus.SUBMITTING, reason, iso_z(now), file_id, StockFileStatus.HELD),
            ).rowcount == 1

    def supersede_held_stock(self, file_id: int, why: str, now: datetime) -> bool:
        """A held file that will never be published (a newer file took its place), with why."""
        with self._transaction() as db:
            return db.execute(
                "update stock_files set status = ?, reason = ? || ' (' || reason || ')', updated_at = ?"
                " where id = ? and status = ?",
                (StockFileStatus.SUPERSEDED, why, iso_z(now), file_id, StockFileStatus.HELD),
            ).rowcount == 1

    def stock_feeds(self, file_id: int) -> list[StoredStockFeed]:
        rows = self._db.execute("select * from stock_feeds where stock_file_id = ? order by part", (file_id,))
        return [_stored_stock_feed(row) for row in rows.fetchall()]

    def stock_feed_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("select feed_id from stock_feeds where feed_id is not null")}

    def mark_stock_feed_submitting(self, feed_row: int, document_id: str, now: datetime) -> None:
        """Written before createFeed: after a crash, a `submitting` document without a feed id
        is looked up on Amazon (getFeeds), never sent again on a guess."""
        self._set_stock_feed(feed_row, StockFeedStatus.SUBMITTING, (StockFeedStatus.PREPARED,),
                             document_id=document_id, submit_started_at=iso_z(now))

    def mark_stock_feed_submitted(self, feed_row: int, feed_id: str, now: datetime, *,
                                  adopted: bool = False, note: str = "") -> None:
        self._set_stock_feed(feed_row, StockFeedStatus.SUBMITTED, (StockFeedStatus.SUBMITTING,),
                             feed_id=feed_id, submitted_at=iso_z(now), adopted=int(adopted), note=note)

    def mark_stock_feed_prepared(self, feed_row: int, note: str) -> None:
        """An interrupted createFeed that Amazon never received: the document goes again."""
        self._set_stock_feed(feed_row, StockFeedStatus.PREPARED, (StockFeedStatus.SUBMITTING,),
                             document_id=None, submit_started_at=None, note=note)

    def mark_stock_feed_in_doubt(self, feed_row: int, note: str, now: datetime) -> None:
        """Whether Amazon has this document cannot be told: a person decides; never resent."""
        with self._transaction() as db:
            db.execute("update stock_feeds set status = ?, note = ?, finished_at = ? where id = ?",
                       (StockFeedStatus.IN_DOUBT, note, iso_z(now), feed_row))
            self._settle_stock_file(db, feed_row, iso_z(now))

    def record_stock_feed_result(
        self,
        feed_row: int,
        status: StockFeedStatus,
        now: datetime,
        *,
        result_document_id: str | None = None,
        counts: tuple[int, int, int, int] | None = None,
        issues: Sequence[tuple[int | None, str, str, str, str]] = (),
        published: Sequence[tuple[str, int]] = (),
        note: str = "",
    ) -> None:
        """Amazon's outcome of one document, in one transaction: its status, counts (accepted,
        invalid, errors, warnings), issues (row, sku, severity, code, message), the quantities
        it published, and the stock file's status once every document has an outcome.
        Recording the same outcome twice changes nothing."""
        at = iso_z(now)
        with self._transaction() as db:
            feed = db.execute("select stock_file_id, part, status from stock_feeds where id = ?", (feed_row,)).fetchone()
            if feed["status"] != StockFeedStatus.SUBMITTED:
                return
            file_id = feed["stock_file_id"]
            accepted, invalid, errors, warnings = counts or (None, None, None, None)
            db.execute(
                "update stock_feeds set status = ?, result_document_id = ?, finished_at = ?, accepted = ?,"
                " invalid = ?, errors = ?, warnings = ?, note = case when ? = '' then note else ? end where id = ?",
                (status, result_document_id, at, accepted, invalid, errors, warnings, note, note, feed_row),
            )
            db.executemany(
                "insert into stock_issues (stock_file_id, source, part, row, sku, severity, code, message)"
                " values (?, 'amazon', ?, ?, ?, ?, ?, ?)",
                [(file_id, feed["part"], *issue) for issue in issues],
            )
            db.executemany(
                "insert into stock_levels (sku, quantity, stock_file_id, published_at) values (?, ?, ?, ?)"
                " on conflict (sku) do update set quantity = excluded.quantity,"
                " stock_file_id = excluded.stock_file_id, published_at = excluded.published_at",
                [(sku, quantity, file_id, at) for sku, quantity in published],
            )
            if status == StockFeedStatus.DONE:
                db.execute("update stock_files set published_at = coalesce(published_at, ?) where id = ?", (at, file_id))
            self._settle_stock_file(db, feed_row, at)

    def _set_stock_feed(self, feed_row: int, status: StockFeedStatus, allowed: tuple[StockFeedStatus, ...],
                        **values: object) -> None:
        self._set_feed("stock_feeds", feed_row, status, allowed, **values)

    @staticmethod
    def _settle_stock_file(db: sqlite3.Connection, feed_row: int, now: str) -> None:
        """A stock file whose documents all have an outcome is published (all done) or failed."""
        file_id = db.execute("select stock_file_id from stock_feeds where id = ?", (feed_row,)).fetchone()[0]
        parts = db.execute("select part, status, note, messages from stock_feeds where stock_file_id = ?",
                           (file_id,)).fetchall()
        if any(StockFeedStatus(p["status"]) in (StockFeedStatus.PREPARED, StockFeedStatus.SUBMITTING,
                                                StockFeedStatus.SUBMITTED) for p in parts):
            return
        failed = [p for p in parts if p["status"] != StockFeedStatus.DONE]
        if not failed:
            db.execute("update stock_files set status = ?, updated_at = ? where id = ?",
                       (StockFileStatus.PUBLISHED, now, file_id))
            return
        why = "; ".join(f"document {p['part']} {p['status']}" + (f": {p['note']}" if p["note"] else "")
                        for p in failed)
        done = [p for p in parts if p["status"] == StockFeedStatus.DONE]
        if done:  # say what did change on Amazon: "failed" alone reads as "nothing changed"
            names = ", ".join(str(p["part"]) for p in done)
            why += (f". Document{'s' if len(done) > 1 else ''} {names} went through: "
                    f"{sum(p['messages'] for p in done):,} SKUs were updated on Amazon; the other documents' SKUs "
                    "keep their previous quantity until the next stock file (this one is not sent again, even if "
                    "dropped again)")
        db.execute("update stock_files set status = ?, reason = ?, updated_at = ? where id = ?",
                   (StockFileStatus.FAILED, why, now, file_id))

    def stock_issues(self, file_id: int, limit: int = -1) -> list[dict]:
        """The file's problems (source 'file') and Amazon's issues (source 'amazon'), by row;
        the first `limit` only, if given (a file may have a million)."""
        rows = self._db.execute(
            "select source, part, row, column_name, sku, severity, code, message from stock_issues"
            " where stock_file_id = ? order by source desc, row is null, row, id limit ?",
            (file_id, limit),
        )
        return [dict(row) for row in rows]

    def stock_issues_by_row(self, file_id: int) -> Iterator[dict]:
        """Every issue of the file, streamed: those without a row first, then by row (the
        file's before Amazon's on one row), for its result file."""
        rows = self._db.execute(
            "select source, part, row, column_name, sku, severity, code, message from stock_issues"
            " where stock_file_id = ? order by row is not null, row, source desc, id",
            (file_id,),
        )
        return (dict(row) for row in rows)

    def stock_issue_counts(self, file_id: int) -> dict[tuple[str, str], int]:
        """(source, severity in upper case) → how many issues the file has."""
        return {(source, severity): count for source, severity, count in self._db.execute(
            "select source, upper(severity), count(*) from stock_issues where stock_file_id = ?"
            " group by source, upper(severity)", (file_id,))}

    # --- stock intake: inbound stock files and the daily publish --------------------------

    def stock_inbound_waiting(self, warehouse: str) -> list[StoredInbound]:
        """Stock files taken in and readable, not yet computed by a publish, oldest first."""
        rows = self._db.execute(
            "select * from inbound_files f where f.flow = 'stock' and f.warehouse = ? and f.status = ?"
            " and f.reason = '' and f.duplicate_of is null"
            " and not exists (select 1 from stock_intake i where i.inbound_id = f.id) order by f.id",
            (warehouse, InboundStatus.PARSED),
        ).fetchall()
        return [_stored_inbound(row) for row in rows]

    def pass_over_stock_inbound(self, inbound_id: int, note: str, now: datetime, *, failed: bool) -> None:
        """A waiting stock file the publish will never compute: why (e.g. its copy is unreadable)."""
        with self._transaction() as db:
            db.execute("insert or ignore into stock_intake (inbound_id, note, failed, at) values (?, ?, ?, ?)",
                       (inbound_id, note, int(failed), iso_z(now)))

    def stock_intake(self, inbound_id: int) -> tuple[StoredStockFile | None, str, bool] | None:
        """What the publish made of an inbound stock file: (stock file, note, failed), or None
        while it waits for a publish."""
        row = self._db.execute("select * from stock_intake where inbound_id = ?", (inbound_id,)).fetchone()
        if row is None:
            return None
        stored = self.stock_file_by_id(row["stock_file_id"]) if row["stock_file_id"] is not None else None
        return stored, row["note"], bool(row["failed"])

    def stock_inbound_of(self, stock_file_id: int) -> StoredInbound | None:
        row = self._db.execute(
            "select f.* from inbound_files f join stock_intake i on i.inbound_id = f.id"
            " where i.stock_file_id = ?", (stock_file_id,)).fetchone()
        return _stored_inbound(row) if row else None

    def set_bookmark(self, name: str, value: datetime, now: datetime) -> None:
        """A bookmark that tiles no windows (e.g. the last daily stock publish)."""
        with self._transaction() as db:
            db.execute(
                "insert into bookmarks (name, value, updated_at) values (?, ?, ?) "
                "on conflict (name) do update set value = excluded.value, updated_at = excluded.updated_at",
                (name, iso_z(value), iso_z(now)),
            )

    def settle_order(self, order_id: str, note: str, now: datetime) -> bool:
        """A person says a delivered order is done (shipped partly by hand, outside the bridge):
        it leaves `status`'s unconfirmed list and its units stop counting as in flight. False if
        it was settled already; KeyError if no delivered order has that id."""
        with self._transaction() as db:
            row = db.execute("select status from orders where order_id = ?", (order_id,)).fetchone()
            if row is None or row["status"] != OrderStatus.DELIVERED:
                raise KeyError(order_id)
            done = db.execute("insert into settled_orders (order_id, at, note) values (?, ?, ?)"
                              " on conflict (order_id) do nothing", (order_id, iso_z(now), note)).rowcount == 1
            if done:
                self._event(db, order_id, iso_z(now), "settled", note or "settled by a person")
            return done

    def unsettle_order(self, order_id: str, note: str, now: datetime) -> bool:
        """Take a person's settling back (a mistyped order id, say): the order is listed and
        counted again until confirmed. False if it was not settled."""
        with self._transaction() as db:
            done = db.execute("delete from settled_orders where order_id = ?", (order_id,)).rowcount == 1
            if done:
                self._event(db, order_id, iso_z(now), "unsettled", note or "settling taken back by a person")
            return done

    def packages_sent_for(self, order_id: str) -> int:
        """How many packages of the order the bridge took from confirmation files (any state)."""
        return self._db.execute("select count(*) from packages where order_id = ?", (order_id,)).fetchone()[0]

    def units_in_flight(self, warehouse: str, at: datetime) -> dict[str, int]:
        """Per seller SKU, the units of orders delivered to `warehouse` that no package had
        shipped by `at`: every delivered order counts (one delivered after `at` was still on the
        shelf then), minus what the warehouse's packages (not refused by Amazon) with a ship
        date up to `at` carried. Orders Amazon cancelled are not in flight."""
        # An order noted in shipment_due (refresh_shipment_due) and shipped in full by `at` is
        # skipped without unsealing its record.
        shipped_by = iso_z(at)
        rows = self._db.execute(
            "select o.order_id, o.payload from orders o left join shipment_due d on d.order_id = o.order_id"
            " where o.status = ? and o.warehouse = ? and o.amazon_status != 'CANCELLED'"
            " and not exists (select 1 from settled_orders s where s.order_id = o.order_id)"
            " and (d.units is null or d.units > coalesce((select sum(l.quantity) from package_lines l"
            "   join packages p on p.id = l.package_id where p.order_id = o.order_id"
            "   and p.status != ? and p.ship_date <= ?), 0)) order by o.order_id",
            (OrderStatus.DELIVERED, warehouse, PackageStatus.REJECTED, shipped_by),
        ).fetchall()
        units: dict[str, int] = {}
        for row in rows:
            order = order_from_dict(self._payload_data(row["payload"], row["order_id"]))
            shipped = dict(self._db.execute(
                "select l.order_item_id, sum(l.quantity) from package_lines l join packages p on p.id = l.package_id"
                " where p.order_id = ? and p.status != ? and p.ship_date <= ? group by l.order_item_id",
                (row["order_id"], PackageStatus.REJECTED, shipped_by)).fetchall())
            for line in order.lines:
                left = line.quantity - shipped.pop(line.order_item_id, 0)
                if left > 0:
                    units[line.sku] = units.get(line.sku, 0) + left
        return units

    def stock_report(self, warehouse: str, limit: int = 10) -> dict[str, Any]:
        """What `status` shows of stock up: the last published file, the newest file and what
        became of it, held files, files with Amazon, files waiting for the daily publish."""
        def stock_row(stored: StoredStockFile | None) -> dict | None:
            if stored is None:
                return None
            inbound = self.stock_inbound_of(stored.id)
            errors = self._db.execute(
                "select count(*) from stock_issues where stock_file_id = ? and source = 'amazon'"
                " and severity = 'ERROR'", (stored.id,)).fetchone()[0]
            return {"name": stored.name, "status": stored.status.value, "reason": stored.reason,
                    "stock_time": iso_z(stored.stock_time), "rows": stored.rows, "bad_rows": stored.bad_rows,
                    "skus": stored.skus, "forced": stored.forced, "amazon_errors": errors,
                    "published_at": iso_z(stored.published_at) if stored.published_at else None,
                    "source": inbound.source.value if inbound else None}
        def newest(where: str) -> StoredStockFile | None:
            row = self._db.execute(f"select * from stock_files where warehouse = ?{where} limit 1",
                                   (warehouse,)).fetchone()
            return _stored_stock_file(row) if row else None

        def mine(status: StockFileStatus) -> list[StoredStockFile]:
            return [f for f in self.stock_files_in(status) if f.warehouse == warehouse]

        return {
            "last_published": stock_row(newest(" and published_at is not null order by published_at desc, id desc")),
            "latest": stock_row(newest(" order by id desc")),
            "held": [stock_row(f) for f in mine(StockFileStatus.HELD)],
            "with_amazon": [{**stock_row(f), "since": self._db.execute(  # its first document still with Amazon
                "select min(submit_started_at) from stock_feeds where stock_file_id = ? and status in (?, ?)",
                (f.id, StockFeedStatus.SUBMITTING, StockFeedStatus.SUBMITTED)).fetchone()[0]}
                for f in mine(StockFileStatus.SUBMITTING)],
            "waiting": [{"name": f.name, "source": f.source.value, "received_at": f.received_at}
                        for f in self.stock_inbound_waiting(warehouse)],
        }

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
                       size: int, sha256: str, spool_path: str, safe: str, now: datetime,
                       mtime: float | None = None, again_of: int | None = None) -> StoredInbound:
        """A claimed file is in the spool: record it (and whether its content was seen before);
        `mtime`: its modification time when it was read (inbound_taken); `again_of`: the file
        taken first, still being written then, that this one is taken again as (one transaction:
        a crash between the two would leave that file open for good)."""
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
            if mtime is not None:
                db.execute("insert into inbound_taken (inbound_id, mtime) values (?, ?)", (file_id, mtime))
            if again_of is not None:
                db.execute("update inbound_grown set again_id = ? where inbound_id = ? and again_id is null",
                           (file_id, again_of))
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

    def start_reading(self, file_id: int, now: datetime) -> int:
        """Count a read of a received file before it starts; returns how many reads have started,
        this one included. A read that ended (the file parsed or failed) is never counted again;
        one that did not (the process was killed: out of memory, say) leaves its count."""
        with self._transaction() as db:
            db.execute("insert into inbound_reads (file_id, attempts, started_at) values (?, 1, ?)"
                       " on conflict (file_id) do update set attempts = attempts + 1, started_at = ?",
                       (file_id, iso_z(now), iso_z(now)))
            return db.execute("select attempts from inbound_reads where file_id = ?", (file_id,)).fetchone()[0]

    def provisional_result(self, file_id: int) -> str | None:
        """The SHA-256 of the provisional result file written for this inbound file, if any."""
        row = self._db.execute("select sha256 from inbound_provisional where inbound_id = ?", (file_id,)).fetchone()
        return row[0] if row else None

    def set_provisional_result(self, file_id: int, sha256: str) -> None:
        with self._transaction() as db:
            db.execute("insert into inbound_provisional (inbound_id, sha256) values (?, ?)"
                       " on conflict (inbound_id) do update set sha256 = excluded.sha256", (file_id, sha256))

    def rename_inbound(self, file_id: int, safe: str) -> None:
        """An unanswered file's archive/error name, when its own was taken in the folder."""
        with self._transaction() as db:
            db.execute("update inbound_files set safe_name = ? where id = ? and status != ?",
                       (safe, file_id, InboundStatus.DONE))

    def end_reading(self, file_id: int) -> None:
        """A read ended (whatever its outcome): it is not one that killed the process."""
        with self._transaction() as db:
            db.execute("delete from inbound_reads where file_id = ?", (file_id,))

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
        """A file that needs no rows of its own recorded: a duplicate of an earlier one, or a
        stock file found readable (it waits for the daily publish: `stock_intake`)."""
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

    # --- inbound files that changed after they were taken ---------------------------------------

    def inbound_taken_mtime(self, file_id: int) -> float | None:
        row = self._db.execute("select mtime from inbound_taken where inbound_id = ?", (file_id,)).fetchone()
        return row[0] if row else None

    def inbound_answered_since(self, flow: str, warehouse: str, source: str,
                               since: datetime) -> list[tuple[StoredInbound, float]]:
        """Files of a folder answered since `since` and not found changed yet, with the
        modification time each had when taken: looked at again for a writer that went on."""
        rows = self._db.execute(
            "select f.*, t.mtime as taken_mtime from inbound_files f join inbound_taken t on t.inbound_id = f.id"
            " where f.flow = ? and f.warehouse = ? and f.finished_at >= ? and f.source = ? and f.status = ?"
            " and not exists (select 1 from inbound_grown g where g.inbound_id = f.id) order by f.id",
            (flow, warehouse, iso_z(since), source, InboundStatus.DONE),
        ).fetchall()
        return [(_stored_inbound(row), row["taken_mtime"]) for row in rows]

    def record_inbound_grown(self, file_id: int, again_name: str, found_in: str, size: int,
                             now: datetime, *, edited: bool = False) -> StoredGrown:
        """The file changed after it was taken (seen in `found_in`): it goes back into its folder
        as `again_name`; `edited`: changed otherwise, left as it is. The first record holds."""
        with self._transaction() as db:
            db.execute("insert or ignore into inbound_grown (inbound_id, again_name, found_in, size, status, found_at)"
                       " values (?, ?, ?, ?, ?, ?)", (file_id, again_name, found_in, size,
                                                      GrownStatus.EDITED if edited else GrownStatus.FOUND, iso_z(now)))
        return self.inbound_grown(file_id)

    def inbound_grown(self, file_id: int) -> StoredGrown | None:
        row = self._db.execute("select * from inbound_grown where inbound_id = ?", (file_id,)).fetchone()
        return _stored_grown(row) if row else None

    def finish_inbound_grown(self, file_id: int, now: datetime) -> None:
        """Put back in its folder (and the file taken first answered)."""
        with self._transaction() as db:
            db.execute("update inbound_grown set status = ?, done_at = ? where inbound_id = ? and status = ?",
                       (GrownStatus.DONE, iso_z(now), file_id, GrownStatus.FOUND))

    def inbound_grown_open(self, flow: str, warehouse: str, source: str) -> list[tuple[StoredInbound, StoredGrown]]:
        """Changed files of a folder not yet taken again: those still to put back, and the names
        they are (or will be) put back under."""
        rows = self._db.execute(
            "select f.*, g.again_name as g_again_name, g.found_in as g_found_in, g.size as g_size,"
            " g.status as g_status, g.again_id as g_again_id, g.found_at as g_found_at from inbound_grown g"
            " join inbound_files f on f.id = g.inbound_id"
            " where g.again_id is null and g.status in (?, ?) and f.flow = ? and f.warehouse = ? and f.source = ?"
            " order by f.id", (GrownStatus.FOUND, GrownStatus.DONE, flow, warehouse, source),
        ).fetchall()
        return [(_stored_inbound(row), StoredGrown(row["id"], row["g_again_name"], row["g_found_in"], row["g_size"],
                                                   GrownStatus(row["g_status"]), row["g_again_id"], row["g_found_at"]))
                for row in rows]

    def inbound_same_name_before(self, flow: str, warehouse: str, source: str, name: str, file_id: int,
                                 since: datetime) -> StoredInbound | None:
        """The latest file of that name taken from the folder since `since`, before `file_id`."""
        row = self._db.execute(
            "select * from inbound_files where received_at >= ? and flow = ? and warehouse = ? and source = ?"
            " and name = ? and id < ? order by id desc limit 1",
            (iso_z(since), flow, warehouse, source, name, file_id),
        ).fetchone()
        return _stored_inbound(row) if row else None

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
            first = self.highest_package_id() + 1  # above the floor, after a restore
            ids = [self._insert_package(db, first + n, file_id, package, now) for n, package in enumerate(packages)]
            self._insert_shipment_rows(db, [(file_id, *row[:7], ids[row[7]] if row[7] is not None else None)
                                            for row in rows])
            db.execute("update inbound_files set status = ?, parsed_at = ? where id = ?",
                       (InboundStatus.PARSED, iso_z(now), file_id))
        return ids

    def record_shipment_groups(self, file_id: int, groups: Iterable[tuple[dict | None, Sequence[tuple]]],
                               now: datetime) -> int:
        """`record_shipments` for a file of any size, all or nothing: `groups` is streamed, each
        (package or None, its rows), packages in the order their ids are given. Rows:
        (row, result, order_id, item, quantity, tracking, message). Returns the packages made."""
        made = 0
        with self._transaction() as db:
            status = db.execute("select status from inbound_files where id = ?", (file_id,)).fetchone()
            if status is None or status["status"] != InboundStatus.RECEIVED:
                raise RuntimeError(f"inbound file {file_id} is not waiting to be read")
            pending: list[tuple] = []
            next_id = self.highest_package_id() + 1  # above the floor, after a restore
            for package, rows in groups:
                package_id = None
                if package is not None:
                    package_id = self._insert_package(db, next_id + made, file_id, package, now)
                    made += 1
                pending.extend((file_id, *row[:7], package_id) for row in rows)
                if len(pending) >= 5_000:
                    self._insert_shipment_rows(db, pending)
                    pending = []
            self._insert_shipment_rows(db, pending)
            db.execute("update inbound_files set status = ?, parsed_at = ? where id = ?",
                       (InboundStatus.PARSED, iso_z(now), file_id))
        return made

    @staticmethod
    def _insert_package(db: sqlite3.Connection, package_id: int, file_id: int, package: dict, now: datetime) -> int:
        db.execute(
            "insert into packages (id, file_id, warehouse, order_id, marketplace_id, tracking_number,"
            " carrier_code, carrier_name, shipping_method, ship_date, status, created_at)"
            " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (package_id, file_id, package["warehouse"], package["order_id"], package["marketplace_id"],
             package["tracking_number"], package["carrier_code"], package["carrier_name"],
             package["shipping_method"], package["ship_date"], PackageStatus.ACCEPTED, iso_z(now)),
        )
        for position, (item_id, quantity) in enumerate(package["items"]):
            db.execute("insert into package_lines (package_id, order_item_id, quantity, position)"
                       " values (?, ?, ?, ?)", (package_id, item_id, quantity, position))
        return package_id

    @staticmethod
    def _insert_shipment_rows(db: sqlite3.Connection, rows: list[tuple]) -> None:
        db.executemany("insert into shipment_rows (file_id, row, result, order_id, item, quantity, tracking,"
                       " message, package_id) values (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def shipment_file_rejected(self, file_id: int) -> bool:
        """Whether any row of a file is rejected: by the bridge, or by Amazon (its package)."""
        row = self._db.execute(
            "select exists (select 1 from shipment_rows r left join packages p on p.id = r.package_id"
            " where r.file_id = ? and (r.result = ? or (r.result = ? and p.status is not ?)))",
            (file_id, RowResult.REJECTED, RowResult.ACCEPTED, PackageStatus.CONFIRMED)).fetchone()
        return bool(row[0])

    def iter_shipment_rows(self, file_id: int) -> Iterator[dict]:
        """`shipment_rows`, a few thousand at a time: a file of a million rows is answered
        without holding them."""
        after = -1
        while True:
            with _translated_errors(self._path):
                rows = self._db.execute(
                    "select r.row, r.result, r.order_id, r.item, r.quantity, r.tracking, r.message, r.package_id,"
                    " p.status as package_status, p.message as package_message,"
                    " ff.feed_id as feed_id, ff.status as feed_status"
                    " from shipment_rows r left join packages p on p.id = r.package_id"
                    " left join fulfillment_feed_packages fp on fp.package_id = r.package_id"
                    " left join fulfillment_feeds ff on ff.id = fp.feed_row"
                    " where r.file_id = ? and r.row > ? order by r.row limit 5000", (file_id, after),
                ).fetchall()
            if not rows:
                return
            yield from (dict(row) for row in rows)
            after = rows[-1]["row"]

    def packages_waiting(self, warehouse: str | None = None) -> list[StoredPackage]:
        """Packages not yet answered by Amazon (accepted, or sent before a crash), oldest first."""
        query = "select * from packages where status in (?, ?)"
        params: tuple = (PackageStatus.ACCEPTED, PackageStatus.SENT)
        if warehouse is not None:
            query += " and warehouse = ?"
            params += (warehouse,)
        return [self._stored_package(row) for row in self._db.execute(query + " order by id", params)]

    def packages_to_send(self) -> list[StoredPackage]:
        """Packages waiting that no fulfillment feed document carries (accepted, or sent by
        confirmShipment before a crash), oldest first."""
        rows = self._db.execute(
            "select * from packages p where status in (?, ?) and not exists"
            " (select 1 from fulfillment_feed_packages fp where fp.package_id = p.id) order by id",
            (PackageStatus.ACCEPTED, PackageStatus.SENT),
        )
        return [self._stored_package(row) for row in rows.fetchall()]

    def next_package_id(self) -> int:
        """The id (packageReferenceId) the next recorded package gets."""
        return self.highest_package_id() + 1

    def highest_package_id(self) -> int:
        """The highest package id issued, or the floor the ids continue above if that is higher.

        Amazon takes a packageReferenceId it has seen on an order as an edit of that package, so
        ids are never issued twice for the seller: a restored (older) ledger or a fresh one is
        given the floor the state folder kept outside the ledger (bridge.state)."""
        row = self._db.execute("select coalesce(max(id), 0) as n from packages").fetchone()
        return max(row["n"], int(self._meta(PACKAGE_FLOOR) or 0))

    def raise_package_floor(self, floor: int, now: datetime, detail: str) -> bool:
        """Make the next package id at least `floor` + 1 (recorded as a state event). False if
        the ids are already above it."""
        with self._transaction() as db:
            if self.highest_package_id() >= floor:
                return False
            self._set_meta(db, PACKAGE_FLOOR, str(floor))
            self._state_event(db, iso_z(now), "package_ids_continued", detail)
        return True

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
            " p.status as package_status, p.message as package_message,"
            " ff.feed_id as feed_id, ff.status as feed_status"
            " from shipment_rows r left join packages p on p.id = r.package_id"
            " left join fulfillment_feed_packages fp on fp.package_id = r.package_id"
            " left join fulfillment_feeds ff on ff.id = fp.feed_row"
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
        the state key (the order record itself is sealed). Returns how many were added.
        Staging notes them already (`stage_files`, from the records at hand): this catches up
        orders staged before that, or whose note a crash lost."""
        rows = self._db.execute(
            "select o.order_id, o.warehouse, o.payload from orders o where o.status = ?"
            " and not exists (select 1 from shipment_due d where d.order_id = o.order_id)",
            (OrderStatus.DELIVERED,),
        ).fetchall()
        if not rows:
            return 0
        with self._transaction() as db:
            for row in rows:
                self._note_ship_by(db, order_from_dict(self._payload_data(row["payload"], row["order_id"])),
                                   row["warehouse"])  # none noted yet (the query's `not exists`)
        return len(rows)

    def shipment_counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in PackageStatus}
        for row in self._db.execute("select status, count(*) as n from packages group by status"):
            counts[row["status"]] = row["n"]
        return counts

    def unconfirmed_orders(self, limit: int = 50, warehouses: Sequence[str] | None = None) -> list[dict]:
        """Delivered orders not yet confirmed in full, soonest ship-by first: the seller's
        late-shipment risk. Units in packages sent but not yet answered count as waiting.
        `warehouses`: only theirs (status: those whose confirmations the bridge reads)."""
        among = "" if warehouses is None else f" and d.warehouse in ({', '.join('?' * len(warehouses))})"
        # `+p.status`: through packages_by_order (an order's few packages), never by status
        rows = self._db.execute(
            "select d.order_id, d.warehouse, d.ship_by, d.units,"
            " coalesce((select sum(l.quantity) from package_lines l join packages p on p.id = l.package_id"
            "   where p.order_id = d.order_id and +p.status = ?), 0) as confirmed,"
            " coalesce((select sum(l.quantity) from package_lines l join packages p on p.id = l.package_id"
            "   where p.order_id = d.order_id and +p.status in (?, ?)), 0) as waiting"
            " from shipment_due d join orders o on o.order_id = d.order_id"
            f" where o.status = '{OrderStatus.DELIVERED}' and o.amazon_status != 'CANCELLED'"
            " and not exists (select 1 from settled_orders s where s.order_id = d.order_id)"
            " and d.units > coalesce((select sum(l.quantity) from package_lines l join packages p"
            f"   on p.id = l.package_id where p.order_id = d.order_id and +p.status = ?), 0){among}"
            " order by d.ship_by is null, d.ship_by, d.order_id limit ?",
            (PackageStatus.CONFIRMED, PackageStatus.ACCEPTED, PackageStatus.SENT,
             PackageStatus.CONFIRMED, *(warehouses or ()), limit),
        )
        return [dict(row) for row in rows]

    def inbound_report(self, flow: str, limit: int = 10) -> dict[str, list[dict]]:
        """Files in processing, and the latest files answered with errors."""
        columns = "id, warehouse, source, name, safe_name, status, outcome, reason, received_at, finished_at"
        in_progress = self._db.execute(
            f"select {columns} from inbound_files where flow = ? and status != ? order by id",
            (flow, InboundStatus.DONE),
        ).fetchall()
        errors = self._db.execute(
            f"select {columns} from inbound_files f where flow = ? and status = ? and outcome = ?"
            f" and {_NOT_TAKEN_AGAIN} order by id desc limit ?", (flow, InboundStatus.DONE, InboundOutcome.ERROR, limit),
        ).fetchall()
        incomplete = self._db.execute(
            "select warehouse, source, name, incomplete_since, incomplete_reason from inbound_sightings"
            " where flow = ? and incomplete_since is not null order by incomplete_since, name", (flow,),
        ).fetchall()
        return {"in_progress": [dict(r) for r in in_progress], "errors": [dict(r) for r in errors],
                "incomplete": [dict(r) for r in incomplete]}

    # --- status per warehouse (reads only; no buyer data) ---------------------------------------

    def counts_by_warehouse(self) -> dict[str | None, dict[str, dict[str, int]]]:
        """Orders and packages per warehouse and status: {warehouse: {"orders": {...},
        "packages": {...}}}; orders held before routing have the warehouse None."""
        counts: dict[str | None, dict[str, dict[str, int]]] = {}

        def slot(warehouse: str | None) -> dict[str, dict[str, int]]:
            return counts.setdefault(warehouse, {"orders": {s.value: 0 for s in OrderStatus},
                                                 "packages": {s.value: 0 for s in PackageStatus}})
        for row in self._db.execute("select warehouse, status, count(*) as n from orders group by warehouse, status"):
            slot(row["warehouse"])["orders"][row["status"]] = row["n"]
        for row in self._db.execute("select warehouse, status, count(*) as n from packages group by warehouse, status"):
            slot(row["warehouse"])["packages"][row["status"]] = row["n"]
        return counts

    def last_windows(self, name: str, count: int = 3) -> list[dict]:
        """The latest windows pulled, newest first: start, end, orders, when recorded."""
        rows = self._db.execute("select start, end, orders, recorded_at from windows where name = ?"
                                " order by id desc limit ?", (name, count))
        return [dict(row) for row in rows]

    def bookmark_times(self, *names: str) -> dict[str, str]:
        """When each bookmark last moved (a run that finished its step), by name."""
        marks = ", ".join("?" * len(names))
        rows = self._db.execute(f"select name, updated_at from bookmarks where name in ({marks})", names)
        return {row["name"]: row["updated_at"] for row in rows}

    def last_answered(self, flow: str, warehouse: str) -> str | None:
        """When the warehouse's latest inbound file of `flow` was answered (archive/ or error/)."""
        row = self._db.execute(
            "select finished_at from inbound_files where flow = ? and warehouse = ? and finished_at is not null"
            " order by finished_at desc limit 1", (flow, warehouse)).fetchone()
        return row["finished_at"] if row else None

    def answered_since(self, flow: str, warehouse: str, since: datetime) -> dict[str, int]:
        """Of the warehouse's files of `flow` answered since `since`: how many went to error/,
        and (shipments) how many rows in them were rejected; Amazon's rejected packages too."""
        errors = self._db.execute(
            "select count(*) from inbound_files f where flow = ? and warehouse = ? and finished_at >= ?"
            f" and outcome = ? and {_NOT_TAKEN_AGAIN}",
            (flow, warehouse, iso_z(since), InboundOutcome.ERROR)).fetchone()[0]
        rows = self._db.execute(
            "select count(*) from inbound_files f join shipment_rows r on r.file_id = f.id"
            f" where f.flow = ? and f.warehouse = ? and f.finished_at >= ? and r.result = ? and {_NOT_TAKEN_AGAIN}",
            (flow, warehouse, iso_z(since), RowResult.REJECTED)).fetchone()[0]
        packages = self._db.execute(
            f"select count(*) from packages where warehouse = ? and finished_at >= ?"
            f" and status = '{PackageStatus.REJECTED}'", (warehouse, iso_z(since))).fetchone()[0]
        return {"files_in_error": errors, "rejected_rows": rows, "rejected_packages": packages}

    def ship_by_due(self, warehouse: str, before: datetime | None, limit: int = 20, *,
                    after: datetime | None = None) -> list[dict]:
        """The warehouse's delivered orders not yet confirmed in full (nor settled by a person)
        with a ship-by from `after` and before `before` (None: no bound), soonest first, at most
        `limit`: order id, ship-by, units, units confirmed. `after` keeps the walk to recent
        orders: a fully confirmed order stays in shipment_due."""
        bound = " and ".join(["d.ship_by is not null"] + (["d.ship_by >= ?"] if after is not None else [])
                             + (["d.ship_by < ?"] if before is not None else []))
        times = [iso_z(t) for t in (after, before) if t is not None]
        rows = self._db.execute(
            "select d.order_id, d.ship_by, d.units,"
            # `+p.status`: through packages_by_order (an order's few packages), never by status
            " coalesce((select sum(l.quantity) from package_lines l join packages p on p.id = l.package_id"
            "   where p.order_id = d.order_id and +p.status = ?), 0) as confirmed"
            f" from shipment_due d join orders o on o.order_id = d.order_id where d.warehouse = ? and {bound}"
            f" and o.status = '{OrderStatus.DELIVERED}'"
            " and o.amazon_status != 'CANCELLED' and confirmed < d.units"
            " and not exists (select 1 from settled_orders s where s.order_id = d.order_id)"
            " order by d.ship_by, d.order_id limit ?",
            (PackageStatus.CONFIRMED, warehouse, *times, limit))
        return [dict(row) for row in rows]

    def packages_of(self, order_id: str) -> list[dict]:
        """Every package recorded for an order (rejected ones too), oldest first: for `status
        --order`. Units, tracking, carrier, Amazon's answer, the file and row it came from."""
        rows = self._db.execute(
            "select p.id, p.status, p.tracking_number, p.carrier_code, p.ship_date, p.message, p.sent_at,"
            " p.finished_at, f.safe_name as file, f.warehouse,"
            " (select min(r.row) from shipment_rows r where r.file_id = p.file_id and r.package_id = p.id) as row,"
            " (select sum(l.quantity) from package_lines l where l.package_id = p.id) as units"
            " from packages p join inbound_files f on f.id = p.file_id where p.order_id = ? order by p.id",
            (order_id,))
        return [dict(row) for row in rows]

    def shipment_due_of(self, order_id: str) -> dict | None:
        """A delivered order's ship-by and units, as noted for status (no key needed)."""
        row = self._db.execute("select ship_by, units from shipment_due where order_id = ?", (order_id,)).fetchone()
        return dict(row) if row else None

    def settled_of(self, order_id: str) -> dict | None:
        """When and why a person settled a delivered order (`shipments settle`), or None."""
        row = self._db.execute("select at, note from settled_orders where order_id = ?", (order_id,)).fetchone()
        return dict(row) if row else None

    def oldest_unconfirmed(self, warehouse: str, after: datetime | None = None) -> dict | None:
        """The warehouse's delivered order not yet confirmed in full with the earliest ship-by
        (from `after` on)."""
        found = self.ship_by_due(warehouse, None, limit=1, after=after)
        return found[0] if found else None

    # --- the order fulfillment feed (shipments.send = "feed") ---------------------------------

    def record_fulfillment_feed(self, package_ids: Sequence[int], sha256: str, marketplaces: Sequence[str],
                                now: datetime) -> int:
        """A new document carrying these accepted packages, all or nothing: the document
        `prepared`, each package `sent` and linked to it. Returns the document's row id."""
        with self._transaction() as db:
            marks = ", ".join("?" for _ in package_ids)
            ready = db.execute(
                f"select count(*) from packages p where id in ({marks}) and status = ? and not exists"
                " (select 1 from fulfillment_feed_packages fp where fp.package_id = p.id)",
                (*package_ids, PackageStatus.ACCEPTED),
            ).fetchone()[0]
            if ready != len(package_ids) or not package_ids:
                raise RuntimeError("a fulfillment feed document takes only accepted packages no document carries")
            row = db.execute(
                "insert into fulfillment_feeds (messages, sha256, marketplaces, status, created_at)"
                " values (?, ?, ?, ?, ?)",
                (len(package_ids), sha256, ",".join(marketplaces), FeedStatus.PREPARED, iso_z(now)),
            ).lastrowid
            db.executemany("insert into fulfillment_feed_packages (package_id, feed_row) values (?, ?)",
                           [(package_id, row) for package_id in package_ids])
            db.execute(f"update packages set status = ?, sent_at = ? where id in ({marks})",
                       (PackageStatus.SENT, iso_z(now), *package_ids))
        return row

    def fulfillment_feed(self, row: int) -> StoredFulfillmentFeed:
        return _stored_fulfillment_feed(self._db.execute("select * from fulfillment_feeds where id = ?", (row,)).fetchone())

    def fulfillment_feeds_in(self, *statuses: FeedStatus) -> list[StoredFulfillmentFeed]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._db.execute(f"select * from fulfillment_feeds where status in ({marks}) order by id", statuses)
        return [_stored_fulfillment_feed(row) for row in rows.fetchall()]

    def fulfillment_feed_packages(self, row: int) -> list[StoredPackage]:
        """The packages a document carries, in message order (by id)."""
        rows = self._db.execute(
            "select p.* from packages p join fulfillment_feed_packages fp on fp.package_id = p.id"
            " where fp.feed_row = ? order by p.id", (row,),
        )
        return [self._stored_package(package) for package in rows.fetchall()]

    def fulfillment_feed_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("select feed_id from fulfillment_feeds where feed_id is not null")}

    def mark_fulfillment_feed_submitting(self, row: int, document_id: str, now: datetime, *,
                                         sha256: str) -> None:
        """Written before createFeed, with the SHA-256 of the bytes uploaded: after a crash, a
        `submitting` document without a feed id is looked up on Amazon (getFeeds), never sent
        again on a guess."""
        self._set_feed("fulfillment_feeds", row, FeedStatus.SUBMITTING, (FeedStatus.PREPARED,),
                       document_id=document_id, submit_started_at=iso_z(now), sha256=sha256)

    def mark_fulfillment_feed_submitted(self, row: int, feed_id: str, now: datetime, *,
                                        adopted: bool = False, note: str = "") -> None:
        self._set_feed("fulfillment_feeds", row, FeedStatus.SUBMITTED, (FeedStatus.SUBMITTING,),
                       feed_id=feed_id, submitted_at=iso_z(now), adopted=int(adopted), note=note)

    def mark_fulfillment_feed_prepared(self, row: int, note: str) -> None:
        """An interrupted createFeed that Amazon never received: the document goes again."""
        self._set_feed("fulfillment_feeds", row, FeedStatus.PREPARED, (FeedStatus.SUBMITTING,),
                       document_id=None, submit_started_at=None, note=note)

    def mark_fulfillment_feed_in_doubt(self, row: int, note: str, now: datetime) -> None:
        """Whether Amazon has this document cannot be told: it is never sent again, and its
        packages are final (rejected, with the note) for a person to check in Seller Central."""
        self.record_fulfillment_feed_result(row, FeedStatus.IN_DOUBT, now, note=note,
                                            outcomes={}, default=note,
                                            allowed=(FeedStatus.SUBMITTING, FeedStatus.SUBMITTED))

    def record_fulfillment_feed_result(
        self,
        row: int,
        status: FeedStatus,
        now: datetime,
        *,
        outcomes: dict[int, str],
        default: str = "",
        result_document_id: str | None = None,
        counts: tuple[int, int, int, int] | None = None,
        note: str = "",
        allowed: tuple[FeedStatus, ...] = (FeedStatus.SUBMITTED,),
    ) -> None:
        """Amazon's outcome of one document, in one transaction: its status, counts (processed,
        successful, with error, with warning) and each package's answer: `outcomes` maps a
        package id to Amazon's words ("" = confirmed); packages not in it get `default`
        ("" = confirmed, else rejected with it). Recording an outcome twice changes nothing."""
        at = iso_z(now)
        with self._transaction() as db:
            current = db.execute("select status from fulfillment_feeds where id = ?", (row,)).fetchone()
            if current is None or FeedStatus(current["status"]) not in allowed:
                return
            processed, successful, with_error, with_warning = counts or (None, None, None, None)
            db.execute(
                "update fulfillment_feeds set status = ?, result_document_id = coalesce(?, result_document_id),"
                " finished_at = ?, processed = ?, successful = ?, with_error = ?, with_warning = ?,"
                " note = case when ? = '' then note else ? end where id = ?",
                (status, result_document_id, at, processed, successful, with_error, with_warning, note, note, row),
            )
            carried = [r[0] for r in db.execute(
                "select package_id from fulfillment_feed_packages where feed_row = ? order by package_id", (row,))]
            for package_id in carried:
                message = outcomes.get(package_id, default)
                db.execute(
                    "update packages set status = ?, message = ?, finished_at = ? where id = ? and status = ?",
                    (PackageStatus.REJECTED if message else PackageStatus.CONFIRMED, message, at, package_id,
                     PackageStatus.SENT),
                )

    def fulfillment_feed_report(self, limit: int = 10) -> list[dict]:
        """For `status`: documents still with Amazon (or on their way), and the latest in doubt."""
        columns = ("id, feed_id, status, messages, created_at, submit_started_at, submitted_at, finished_at, note")
        waiting = self._db.execute(
            f"select {columns} from fulfillment_feeds where status in (?, ?, ?) order by id", FEED_IN_FLIGHT,
        ).fetchall()
        doubtful = self._db.execute(
            f"select {columns} from fulfillment_feeds where status = ? order by id desc limit ?",
            (FeedStatus.IN_DOUBT, limit),
        ).fetchall()
        return [dict(row) for row in [*waiting, *reversed(doubtful)]]

    # --- the reconciliation report (`fbm-bridge report`) ----------------------------------------
    #
    # Read-only, and served by indexes (tests/test_ledger_plans.py): a period's orders, the rows of
    # the files received in it that were rejected, the newest stock files. Dicts of plain values;
    # an order's record is opened for its dates, marketplace and units only: no buyer data leaves.

    def report_orders(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Orders the bridge first saw in [start, end), oldest first, with their file and the units
        of their packages: `shipped` (not refused by Amazon), `confirmed`, when the last package
        was confirmed, and how many packages Amazon refused. A record that cannot be opened gives
        None for what only it knows, and says why in `unreadable`."""
        rows = self._db.execute(
            "select o.order_id, o.status, o.reason, o.warehouse, o.amazon_status, o.first_seen_at, o.payload,"
            " f.name as file, f.delivered_at as delivered_at,"
            " coalesce((select sum(l.quantity) from packages p join package_lines l on l.package_id = p.id"
            "   where p.order_id = o.order_id and p.status != ?), 0) as shipped,"
            " coalesce((select sum(l.quantity) from packages p join package_lines l on l.package_id = p.id"
            "   where p.order_id = o.order_id and p.status = ?), 0) as confirmed,"
            " (select max(p.finished_at) from packages p where p.order_id = o.order_id and p.status = ?) as confirmed_at,"
            " (select count(*) from packages p where p.order_id = o.order_id and p.status = ?) as refused,"
            " (select s.at from settled_orders s where s.order_id = o.order_id) as settled_at"
            " from orders o left join files f on f.id = o.file_id"
            " where o.first_seen_at >= ? and o.first_seen_at < ? order by o.first_seen_at, o.order_id",
            (PackageStatus.REJECTED, PackageStatus.CONFIRMED, PackageStatus.CONFIRMED, PackageStatus.REJECTED,
             iso_z(start), iso_z(end)),
        ).fetchall()
        return [self._report_order(row) for row in rows]

    def _report_order(self, row: sqlite3.Row) -> dict[str, Any]:
        found: dict[str, Any] = {"marketplace_id": None, "purchase_date": None, "ship_by": None, "ordered": None,
                                 "unreadable": ""}
        try:
            order = order_from_dict(self._payload_data(row["payload"], row["order_id"]))
            found.update(marketplace_id=order.marketplace_id, purchase_date=order.purchase_date,
                         ship_by=order.ship_by, ordered=sum(line.quantity for line in order.lines))
        except UnreadableRecord as problem:
            found["unreadable"] = str(problem)
        except KeyError as missing:
            found["unreadable"] = f"its field {missing.args[0]} is missing"
        except (ValueError, TypeError, ArithmeticError, AttributeError) as problem:
            found["unreadable"] = f"a field cannot be read: {_field_problem(problem)}"
        return {
            "order_id": row["order_id"], "status": row["status"], "reason": row["reason"],
            "warehouse": row["warehouse"], "amazon_status": row["amazon_status"],
            "first_seen_at": parse_iso(row["first_seen_at"]), "file": row["file"],
            "delivered_at": parse_iso(row["delivered_at"]) if row["delivered_at"] else None,
            "shipped": row["shipped"], "confirmed": row["confirmed"],
            "confirmed_at": parse_iso(row["confirmed_at"]) if row["confirmed_at"] else None,
            "refused": row["refused"], "settled": row["settled_at"] is not None, **found,
        }

    def report_rejected_rows(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """What was refused in the confirmation and stock files received in [start, end), file by
        file in the order received: a whole file (row None) or its rows: confirmation rows the
        bridge rejected or whose package Amazon refused, stock rows with an error."""
        files = self._db.execute(
            "select id, flow, warehouse, name, reason, received_at from inbound_files"
            " where received_at >= ? and received_at < ? order by received_at, id",
            (iso_z(start), iso_z(end)),
        ).fetchall()
        found: list[dict[str, Any]] = []
        for file in files:
            base = {"flow": file["flow"], "warehouse": file["warehouse"], "file": file["name"],
                    "received_at": parse_iso(file["received_at"])}
            if file["reason"]:
                found.append({**base, "row": None, "column": "", "reason": file["reason"]})
            elif file["flow"] == "stock":
                found += [{**base, **row} for row in self._stock_rows_rejected(file["id"])]
            else:
                found += [{**base, **row} for row in self._shipment_rows_rejected(file["id"])]
        return found

    def _shipment_rows_rejected(self, file_id: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "select r.row, r.result, r.message, r.package_id, p.message as package_message"
            " from shipment_rows r left join packages p on p.id = r.package_id"
            " where r.file_id = ? and (r.result = ? or (r.result = ? and p.status = ?)) order by r.row",
            (file_id, RowResult.REJECTED, RowResult.ACCEPTED, PackageStatus.REJECTED),
        ).fetchall()
        return [{"row": row["row"], "column": "",
                 "reason": (row["message"] or PURGED_REASON) if row["result"] == RowResult.REJECTED  # see purge_pii
                 else f"Amazon refused package {row['package_id']}: {row['package_message']}"} for row in rows]

    def _stock_rows_rejected(self, inbound_id: int) -> list[dict[str, Any]]:
        intake = self._db.execute("select stock_file_id, note, failed from stock_intake where inbound_id = ?",
                                  (inbound_id,)).fetchone()
        if intake is None:
            return []
        if intake["failed"]:
            return [{"row": None, "column": "", "reason": intake["note"]}]
        rows = self._db.execute(
            "select row, column_name, message from stock_issues where stock_file_id = ? and source = 'file'"
            " and severity = 'error' order by row is null, row, id", (intake["stock_file_id"],),
        ).fetchall()
        return [{"row": row["row"], "column": row["column_name"], "reason": row["message"]} for row in rows]

    def report_stock_files(self, end: datetime, limit: int) -> list[dict[str, Any]]:
        """The `limit` newest stock files (by their stock time) before `end`, newest first, with
        their feed ids and Amazon's issues counted, its errors in its words."""
        rows = self._db.execute(
            "select * from stock_files where stock_time < ? order by stock_time desc, id desc limit ?",
            (iso_z(end), limit),
        ).fetchall()
        found = []
        for row in rows:
            feeds = self._db.execute("select feed_id from stock_feeds where stock_file_id = ? order by part",
                                     (row["id"],)).fetchall()
            issues = self._db.execute(
                "select sku, severity, code, message from stock_issues where stock_file_id = ? and source = 'amazon'"
                " order by id", (row["id"],),
            ).fetchall()
            found.append({
                "warehouse": row["warehouse"], "file": row["name"], "stock_time": parse_iso(row["stock_time"]),
                "received_at": parse_iso(row["received_at"]), "rows": row["rows"], "bad_rows": row["bad_rows"],
                "skus": row["skus"], "status": row["status"], "reason": row["reason"], "forced": bool(row["forced"]),
                "published_at": parse_iso(row["published_at"]) if row["published_at"] else None,
                "feed_ids": [feed["feed_id"] for feed in feeds if feed["feed_id"]],
                "amazon_errors": [dict(issue) for issue in issues if issue["severity"] == "ERROR"],
                "amazon_warnings": sum(issue["severity"] == "WARNING" for issue in issues),
            })
        return found

    def _set_feed(self, table: str, row: int, status: FeedStatus, allowed: tuple[FeedStatus, ...],
                  **values: object) -> None:
        names = ", ".join(f"{name} = ?" for name in values)
        marks = ", ".join("?" for _ in allowed)
        with self._transaction() as db:
            changed = db.execute(
                f"update {table} set status = ?, {names} where id = ? and status in ({marks})",
                (status, *values.values(), row, *allowed),
            ).rowcount
            if changed != 1:
                raise RuntimeError(f"{table} row {row} is not {' or '.join(allowed)}")

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


UNREADABLE_SEAL = "its sealed data does not open with the state key (damaged or altered)"


class UnreadableRecord(Exception):
    """One stored order record cannot be read; the reason names what, never buyer data."""


def package_ids_in(path: Path) -> int:
    """The highest package id a ledger file (a backup) records, read without changing it; 0 if
    it has none or cannot be read."""
    highest = _peek(path, "select coalesce(max(id), 0) from packages")
    floor = _peek(path, "select value from meta where name = ?", (PACKAGE_FLOOR,))
    try:
        return max(int(highest or 0), int(floor or 0))
    except (ValueError, TypeError):
        return 0


def bookmark_in(path: Path, name: str) -> str | None:
    """A bookmark of a ledger file (a backup), read without changing it; None if unknown."""
    value = _peek(path, "select value from bookmarks where name = ?", (name,))
    return None if value is None else str(value)


def state_id_in(path: Path) -> str | None:
    """The state id of a ledger file (a backup), read without changing it; None if unknown."""
    value = _peek(path, "select value from meta where name = ?", (STATE_ID,))
    return None if value is None else str(value)


def _peek(path: Path, query: str, params: tuple = ()) -> Any:
    """The first column of the first row, from a ledger file opened read-only; None if there is
    none or the file cannot be read (a damaged backup is not this question's business)."""
    try:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = db.execute(query, params).fetchone()
        return row[0] if row else None
    except sqlite3.Error:
        return None
    finally:
        db.close()


def key_mismatch_message(path: Path) -> str:
    return (
        f"BRIDGE_STATE_KEY is not the key the state in {path.parent} was made with: restore that key,"
        " or change keys with `fbm-bridge rekey` (README: Operations, Changing the state key)"
    )


def _stored_time(text: str) -> datetime | None:
    try:
        return parse_iso(text)
    except ValueError:
        return None  # written by an older version that could not write it back: rewrite it


def _field_problem(problem: BaseException) -> str:
    # records.order_from_dict names the field in its ValueErrors; others say only their kind,
    # since a damaged record's message could quote buyer data.
    if isinstance(problem, ValueError) and str(problem).startswith("field "):
        return str(problem)
    return f"{type(problem).__name__} while reading it"


def _make_private(path: Path) -> None:
    """Create `path` if missing and make it (and SQLite's -wal, -shm beside it) 0600, whatever
    the umask: SQLite gives the files it creates the mode of the database file. An existing file
    of another owner (`status` run by root, say) is left as it is."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, LEDGER_MODE))
    except FileExistsError:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)) from None
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            info = candidate.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o777 != LEDGER_MODE and info.st_uid == os.geteuid():
            os.chmod(candidate, LEDGER_MODE)


# SQLite's primary result codes (sqlite3.h) that mean the state on disk needs a person.
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 10, 11, 13, 14, 26


def ledger_error(problem: BaseException, path: Path) -> BaseException:
    """The bridge's error for what SQLite or the OS said about the ledger file; the problem
    itself when it is not about the file (a constraint, a bug)."""
    if isinstance(problem, OSError):
        return LedgerUnusable(f"cannot open the ledger {path}: {problem.strerror or problem}")
    if not isinstance(problem, sqlite3.DatabaseError) or isinstance(
        problem, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
    ):
        return problem
    code = (getattr(problem, "sqlite_errorcode", None) or 0) & 0xFF
    if code == _SQLITE_FULL:
        return LedgerUnusable(f"the disk holding the ledger {path} is full: free space, then run again")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return LedgerUnusable(
            f"the ledger {path} is damaged or not a SQLite database ({problem}): stop the service and"
            f" restore the newest backup from {path.parent / 'backups'} (README: Operations, Backups)"
        )
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return LedgerBusy(f"the ledger {path} is busy ({problem}); the next run tries again")
    if code in (_SQLITE_CANTOPEN, _SQLITE_READONLY, _SQLITE_PERM, _SQLITE_IOERR):
        return LedgerUnusable(
            f"cannot use the ledger {path} ({problem}): it must be a file the service's user can"
            " read and write, on a disk that works"
        )
    return problem


@contextmanager
def _translated_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (sqlite3.DatabaseError, OSError) as problem:
        translated = ledger_error(problem, path)
        if translated is problem:
            raise
        raise translated from None


def _translating(method: Callable) -> Callable:
    @functools.wraps(method)
    def guarded(self: "Ledger", *args, **kwargs):
        with _translated_errors(self._path):
            return method(self, *args, **kwargs)

    return guarded


# Every public method turns a damaged, full or unreadable ledger file into one clear error.
for _name, _method in list(vars(Ledger).items()):
    if not _name.startswith("_") and callable(_method) and _name != "close":
        setattr(Ledger, _name, _translating(_method))
@dataclass(frozen=True)
class StoredStockFile:
    id: int
    warehouse: str
    name: str
    sha256: str
    stock_time: datetime
    status: StockFileStatus
    reason: str
    forced: bool
    rows: int
    bad_rows: int
    skus: int
    published_at: datetime | None
    created_at: datetime | None = None  # when it was recorded (computed by a publish)


@dataclass(frozen=True)
class StoredStockFeed:
    id: int
    stock_file_id: int
    part: int
    messages: int
    spool_path: Path  # relative to the stock folder
    sha256: str
    status: StockFeedStatus
    document_id: str | None
    feed_id: str | None
    adopted: bool
    submit_started_at: datetime | None
    note: str
    counts: tuple[int, int, int, int] | None  # accepted, invalid, errors, warnings


def _stored_stock_file(row: sqlite3.Row) -> StoredStockFile:
    return StoredStockFile(
        id=row["id"], warehouse=row["warehouse"], name=row["name"], sha256=row["sha256"],
        stock_time=parse_iso(row["stock_time"]), status=StockFileStatus(row["status"]),
        reason=row["reason"], forced=bool(row["forced"]), rows=row["rows"], bad_rows=row["bad_rows"],
        skus=row["skus"], published_at=parse_iso(row["published_at"]) if row["published_at"] else None,
        created_at=parse_iso(row["created_at"]),
    )


def _stored_stock_feed(row: sqlite3.Row) -> StoredStockFeed:
    counts = (row["accepted"], row["invalid"], row["errors"], row["warnings"])
    return StoredStockFeed(
        id=row["id"], stock_file_id=row["stock_file_id"], part=row["part"], messages=row["messages"],
        spool_path=Path(row["spool_path"]), sha256=row["sha256"], status=StockFeedStatus(row["status"]),
        document_id=row["document_id"], feed_id=row["feed_id"], adopted=bool(row["adopted"]),
        submit_started_at=parse_iso(row["submit_started_at"]) if row["submit_started_at"] else None,
        note=row["note"], counts=None if counts[0] is None else counts,
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
class StoredGrown:
    """An inbound file that changed after it was taken (table inbound_grown)."""

    inbound_id: int
    again_name: str  # the name it is put back under in its folder
    found_in: str  # "processing", "archive" or "error": where the change was seen
    size: int  # its size then
    status: GrownStatus
    again_id: int | None  # the inbound file it became when taken again
    found_at: str


def _stored_grown(row: sqlite3.Row) -> StoredGrown:
    return StoredGrown(row["inbound_id"], row["again_name"], row["found_in"], row["size"],
                       GrownStatus(row["status"]), row["again_id"], row["found_at"])


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


@dataclass(frozen=True)
class StoredFulfillmentFeed:
    id: int
    messages: int
    sha256: str
    marketplaces: tuple[str, ...]
    status: StockFeedStatus
    document_id: str | None
    feed_id: str | None
    adopted: bool
    submit_started_at: datetime | None
    note: str


def _stored_fulfillment_feed(row: sqlite3.Row) -> StoredFulfillmentFeed:
    return StoredFulfillmentFeed(
        id=row["id"], messages=row["messages"], sha256=row["sha256"],
        marketplaces=tuple(m for m in row["marketplaces"].split(",") if m), status=FeedStatus(row["status"]),
        document_id=row["document_id"], feed_id=row["feed_id"], adopted=bool(row["adopted"]),
        submit_started_at=parse_iso(row["submit_started_at"]) if row["submit_started_at"] else None,
        note=row["note"],
    )


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
