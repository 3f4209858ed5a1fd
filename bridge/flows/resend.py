"""Resend: a delivered order delivered again, because a person asked, under a new file name.

The bridge never sends an order twice on its own; `fbm-bridge resend ORDER_ID --reason TEXT` is the
one deliberate way. The order is laid out again from the ledger's sealed record with its
warehouse's current mapping, in a file of its own named `<the mapping's name>-resend-N.<ext>`, and
delivered the way a run delivers (spool, temporary name, rename), each step safe to interrupt:
1. check    the order was delivered, its warehouse is configured, its buyer data not purged;
2. spool    the file, sealed; a crash here leaves an unrecorded spool file (a rerun writes it
            again under the same name; a run removes it);
3. stage    the file and the request (who, when, why, the name) in one transaction: from here
            the name is decided;
4. deliver  upload under the temporary name, record, rename, record delivered. A crash or a
            drop that is down leaves the resend in flight: the same command run again, or the
            service's next run, finishes that file; it never makes a second one.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from bridge.config import WarehouseSettings
from bridge.edges.folders import write_files
from bridge.errors import BridgeError, FixTheSetup, RetryLater
from bridge.flows.orders import OrdersFlow, _name_limit
from bridge.formats.orders import render_orders, too_long
from bridge.ledger import FileStatus, OrderStatus, PackageStatus, StoredFile, UnreadableRecord
from bridge.records import shown

log = logging.getLogger("bridge.resend")

NO_REASON = "resend needs --reason: say why the order is sent again (it is recorded with your name)"
MAX_REASON = 500  # characters: a ticket number and a sentence, not a pasted e-mail
LONG_REASON = ("resend --reason is {length} characters, more than {limit}: give a short reason (a ticket"
               " number and a sentence); it is recorded and shown with the order")
SHIPPED = ("order {order} is shipped: {confirmed}/{units} units confirmed on Amazon ({tracking}); a resend"
           " could make the warehouse ship it twice. If they must have the file again all the same, add"
           " --even-if-shipped")
UNKNOWN = ("order {order} is not in the ledger: this bridge never delivered it (never pulled, filtered out,"
           " or another seller's order); nothing to resend")
NOT_DELIVERED = ("order {order} is not delivered yet ({status}{why}): resend is only for an order already"
                 " delivered; the service delivers it when it can")
NEVER_DELIVERED = "order {order} was never delivered ({status}{why}): there is nothing to resend"
NO_WAREHOUSE = ("order {order} was delivered to {warehouse}, which is not in {config} now: add the warehouse"
                " back to resend it")
PURGED = ("order {order}: buyer data purged on {date} under retention (retention.pii_days = {days}); the"
          " order cannot be laid out again: send the warehouse its details from Seller Central")
UNREADABLE = "order {order}: the ledger's record cannot be read: {why}; nothing was sent"
UNRENDERABLE = ("order {order} cannot be laid out with the mapping {mapping} of {warehouse} now: {why};"
                " nothing was sent")

IN_FLIGHT = ("resend {number} is recorded as {name} but not delivered to {warehouse} yet: {problem}; the"
             " service's next run delivers it, or run the same resend again (it finishes this file, never"
             " a second one)")

TAKEN_BACK = ("resend {number} ({name}) did not go: its spool copy was missing or changed, so it was taken"
              " back; run the same resend again to lay the order out anew")


@dataclass(frozen=True)
class Resent:
    order_id: str
    warehouse: str
    name: str
    number: int
    requested_by: str
    finished: bool  # an earlier, interrupted resend was finished instead of a new one made

    def line(self) -> str:
        """The one line the person who asked sees."""
        done = (f"finished resend {self.number} started earlier by {self.requested_by}" if self.finished
                else f"resend {self.number}, by {self.requested_by}")
        return (f"order {shown(self.order_id)} delivered again to {self.warehouse} as {self.name} ({done}): tell"
                f" {self.warehouse} it is a resend of an order they already have, or they may ship it twice")


def resend(flow: OrdersFlow, order_id: str, reason: str, requested_by: str, now: datetime, *,
           even_if_shipped: bool = False) -> Resent:
    """Deliver a delivered order again under a new name, recorded with who, when and why; or
    finish this order's resend that an interruption left in flight. Refusals are FixTheSetup
    (a person must act); a drop that is down raises RetryLater with the resend recorded."""
    reason = " ".join(reason.split())
    if not reason:
        raise FixTheSetup(NO_REASON)
    if len(reason) > MAX_REASON:
        raise FixTheSetup(LONG_REASON.format(length=len(reason), limit=MAX_REASON))
    ledger, settings = flow.ledger, flow.settings
    row = ledger.order_row(order_id)
    if row is None:
        raise FixTheSetup(UNKNOWN.format(order=shown(order_id)))
    in_flight = ledger.resend_in_flight(order_id)
    if in_flight is not None:
        request, stored = in_flight
        _deliver(flow, _warehouse(flow, order_id, stored.warehouse), order_id, stored, request["number"], now)
        log.info("resend finished order_id=%s warehouse=%s file=%s number=%d", shown(order_id), stored.warehouse,
                 stored.name, request["number"])
        return Resent(order_id, stored.warehouse, stored.name, request["number"], request["requested_by"], True)
    _check_delivered(row)
    if not even_if_shipped:
        _check_not_shipped(ledger, order_id)
    warehouse = _warehouse(flow, order_id, row["warehouse"])
    if row["pii_purged_at"]:
        raise FixTheSetup(PURGED.format(order=shown(order_id), date=row["pii_purged_at"][:10],
                                        days=settings.retention.pii_days))
    data, name, number = _lay_out(flow, warehouse, order_id, now)
    spool_path = f"{warehouse.name}/{name}"
    folder = settings.spool_dir / warehouse.name
    folder.mkdir(parents=True, exist_ok=True)
    problem = write_files([(settings.spool_dir / spool_path, ledger.seal_file(data))])[0]
    if problem is not None:
        raise FixTheSetup(f"cannot write the spool file {settings.spool_dir / spool_path}: {problem.strerror}")
    flow.checkpoint("spooled")
    stored = ledger.stage_resend(order_id, number, warehouse.name, name, spool_path, len(data),
                                 hashlib.sha256(data).hexdigest(), requested_by, reason, now)
    flow.checkpoint("staged")
    log.info("resend staged order_id=%s warehouse=%s file=%s number=%d by=%s", shown(order_id), warehouse.name,
             name, number, requested_by)
    _deliver(flow, warehouse, order_id, stored, number, now)
    log.info("resent order_id=%s warehouse=%s file=%s number=%d", shown(order_id), warehouse.name, name, number)
    return Resent(order_id, warehouse.name, name, number, requested_by, False)


def resend_name(name: str, number: int) -> str:
    """`ACME_AUF_123.csv` -> `ACME_AUF_123-resend-1.csv`: the mapping's name, marked, never the
    original's (the ledger keeps every name a warehouse was sent)."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        return f"{name}-resend-{number}"
    return f"{stem}-resend-{number}.{extension}"


def _check_delivered(row: dict) -> None:
    status = OrderStatus(row["status"])
    if status == OrderStatus.DELIVERED:
        return
    why = f": {row['reason']}" if row["reason"] else ""
    template = NEVER_DELIVERED if status in (OrderStatus.CANCELLED, OrderStatus.SKIPPED) else NOT_DELIVERED
    raise FixTheSetup(template.format(order=shown(row["order_id"]), status=status.value, why=why))


def _check_not_shipped(ledger, order_id: str) -> None:
    """An order whose every unit is confirmed on Amazon was shipped: a resend would most likely
    be shipped again by a warehouse that cannot tell it from a new order."""
    due = ledger.shipment_due_of(order_id)
    confirmed = [p for p in ledger.packages_of(order_id) if p["status"] == PackageStatus.CONFIRMED]
    units = sum(p["units"] or 0 for p in confirmed)
    if due and due["units"] and units >= due["units"]:
        tracking = ", ".join(shown(p["tracking_number"]) for p in confirmed[:3])
        raise FixTheSetup(SHIPPED.format(order=shown(order_id), confirmed=units, units=due["units"],
                                         tracking=f"tracking {tracking}"))


def _warehouse(flow: OrdersFlow, order_id: str, name: str | None) -> WarehouseSettings:
    for warehouse in flow.settings.warehouses:
        if warehouse.name == name:
            return warehouse
    raise FixTheSetup(NO_WAREHOUSE.format(order=shown(order_id), warehouse=name, config=flow.settings.path))


def _lay_out(flow: OrdersFlow, warehouse: WarehouseSettings, order_id: str,
             now: datetime) -> tuple[bytes, str, int]:
    """The order's file by the warehouse's current mapping, its resend name (free in the ledger:
    never a name the warehouse was sent before) and number."""
    try:
        stored = flow.ledger.stored_order(order_id)
    except UnreadableRecord as problem:
        raise FixTheSetup(UNREADABLE.format(order=shown(order_id), why=problem)) from None
    layout = warehouse.mapping.orders
    limit = _name_limit(warehouse)
    result = render_orders(layout, [stored.order], now, max_name_length=limit)
    failure = result.failures.get(order_id)
    if failure is not None or not result.files:
        raise FixTheSetup(UNRENDERABLE.format(order=shown(order_id), mapping=warehouse.mapping.name,
                                              warehouse=warehouse.name, why=failure or "no file was made"))
    rendered = result.files[0]
    number = flow.ledger.next_resend_number(order_id)
    name = resend_name(rendered.name, number)
    while flow.ledger.file_name_taken(warehouse.name, name):  # a per-run name another order's resend took
        number += 1
        name = resend_name(rendered.name, number)
    if len(name.encode("utf-8")) > limit:
        raise FixTheSetup(UNRENDERABLE.format(order=shown(order_id), mapping=warehouse.mapping.name,
                                              warehouse=warehouse.name, why=too_long(name, limit)))
    return rendered.data, name, number


def _deliver(flow: OrdersFlow, warehouse: WarehouseSettings, order_id: str, stored: StoredFile, number: int,
             now: datetime) -> None:
    """The recorded resend file to the drop; if it cannot go now, the same kind of error says
    it is recorded and how it will still go (never as a new file). A spool copy lost before it
    left is taken back by the delivery (its orders' rule): said, and a rerun lays it out again."""
    try:
        flow.deliver_files(warehouse, [stored], now)
    except BridgeError as problem:
        kind = FixTheSetup if isinstance(problem, FixTheSetup) else RetryLater
        raise kind(IN_FLIGHT.format(number=number, name=stored.name, warehouse=warehouse.name,
                                    problem=problem)) from None
    went = {r["number"]: r["status"] for r in flow.ledger.resends(order_id)}.get(number)
    if went != FileStatus.DELIVERED:
        raise FixTheSetup(TAKEN_BACK.format(number=number, name=stored.name))
