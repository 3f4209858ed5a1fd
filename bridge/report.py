"""What `fbm-bridge status` reports, as data and as text, read from the ledger without a key.

Light on purpose: status runs beside the service, often, by hand; it reads counts, windows and
events, never sealed buyer data, and imports no edge (no SFTP, no Amazon client, no file
format library), so it starts in a few hundredths of a second.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from bridge import state
from bridge.config import Settings, WarehouseSettings
from bridge.ledger import ORDERS_BOOKMARK, FileStatus, Ledger, OrderStatus, PackageStatus
from bridge.records import iso_z, one_line, parse_iso, shown
from bridge.windows import catch_up_eta, duration, next_daily, windows_left

SHIPMENTS_FLOW = "shipments"  # flows.shipments.FLOW, named here so status need not import the flow
STOCK_FLOW = "stock"  # flows.stock_intake.FLOW, likewise
STOCK_PUBLISH_BOOKMARK = "stock_publish"  # flows.stock_intake.PUBLISH_BOOKMARK
SERVICE_FILE = "service.json"  # the running service's jobs: their last results (bridge.daemon)
FAILING_AFTER = 2  # a job failing this many times in a row needs a person
RECENT = timedelta(days=7)  # files in error and rejected rows count this long after their answer
SHIP_BY_NEAR = timedelta(hours=24)  # an unconfirmed order this close to its ship-by needs a look
NO_WAREHOUSE = "(none)"  # orders held before a warehouse took them
UNTRACKED = ("confirmations not tracked: no shipments_folder or local_shipments_folder, so the bridge never"
             " learns which orders were confirmed (in Seller Central, by hand); see Seller Central's late orders")
SHIP_BY_LISTED = 1000  # unconfirmed orders past or near their ship-by counted per warehouse, at most
# ... whose ship-by passed less than this long ago: Amazon cancels an order left unconfirmed for
# about a week, and the walk stays bounded however many orders were confirmed before.
SHIP_BY_LOOKBACK = timedelta(days=30)


def confirmations_tracked(warehouse: WarehouseSettings) -> bool:
    """Whether the bridge learns which of the warehouse's orders are confirmed on Amazon: only
    through its confirmation files. Without a shipments folder the seller confirms by hand in
    Seller Central, which the bridge never hears of: its orders would stay "not confirmed"."""
    return bool(warehouse.shipments_folder or warehouse.local_shipments_folder)


def shipments_status(ledger: Ledger | None, now: datetime | None = None,
                     tracked: list[str] | None = None) -> dict[str, Any]:
    """Packages confirmed, rejected and waiting; orders delivered and not yet confirmed, soonest
    ship-by first (each marked `overdue` once its ship-by has passed `now`), of the `tracked`
    warehouses only (None: all); confirmation files in progress and the latest answered with
    errors."""
    if ledger is None:
        return {"packages": {status.value: 0 for status in PackageStatus}, "unconfirmed": [],
                "files_in_progress": [], "files_in_error": [], "files_incomplete": [], "feeds": []}
    files = ledger.inbound_report(SHIPMENTS_FLOW)
    return {
        "packages": ledger.shipment_counts(),
        "unconfirmed": [dict(item, overdue=_overdue(item["ship_by"], now))
                        for item in ledger.unconfirmed_orders(warehouses=tracked)],
        "files_in_progress": files["in_progress"],
        "files_in_error": files["errors"],
        "files_incomplete": files["incomplete"],  # left in their folder, waiting for their writer
        "feeds": ledger.fulfillment_feed_report(),  # shipments.send = "feed": documents with Amazon
    }


def stock_status(settings: Settings, ledger: Ledger | None, now: datetime) -> dict[str, Any] | None:
    """Stock up for `status`: when it publishes next, the last published file and its outcome,
    the newest file and what became of it, held files and why, files with Amazon or waiting
    for the publish, files answered into error/. None when no warehouse publishes stock."""
    stock = settings.stock
    if stock.warehouse is None:
        return None
    report: dict[str, Any] = {
        "warehouse": stock.warehouse, "publish_at": stock.publish_at.strftime("%H:%M"),
        "timezone": stock.timezone, "next_publish": iso_z(next_daily(now, stock.publish_at, stock.zone)),
        "last_publish_run": None, "last_published": None, "latest": None, "held": [], "with_amazon": [],
        "waiting": [], "files_in_progress": [], "files_in_error": [], "files_incomplete": [],
    }
    if ledger is None:
        return report
    last_run = ledger.bookmark(STOCK_PUBLISH_BOOKMARK)
    files = ledger.inbound_report(STOCK_FLOW)
    report.update(ledger.stock_report(stock.warehouse))
    report.update(last_publish_run=iso_z(last_run) if last_run else None,
                  files_in_progress=files["in_progress"], files_in_error=files["errors"],
                  files_incomplete=files["incomplete"])
    for item in report["with_amazon"]:  # how long, and overdue past stock.feed_timeout_hours
        since = parse_iso(item["since"]) if item.get("since") else None
        item["for"] = duration(now - since) if since else None
        item["overdue"] = since is not None and now - since > stock.feed_timeout
        item["feed_timeout_hours"] = f"{stock.feed_timeout.total_seconds() / 3600:g}"
    return report


def status_report(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """What `fbm-bridge status` shows: counts, the window bookmark, files in flight, attention items."""
    now = now or datetime.now(timezone.utc)
    if not settings.ledger_path.exists():
        # Nothing has run yet; never create the service's state (as root, say) just to look.
        report = {
            "config": str(settings.path), "orders": {status.value: 0 for status in OrderStatus},
            "window_end": None, "behind_seconds": None, "late": False,
            "windows": {"windows": 0, "since": None, "until": None, "gaps": []},
            "files_in_flight": [], "attention": [], "state": state.identity_problem(settings),
            "state_event": None, "shipments": shipments_status(None), "catch_up": None,
            "stock": stock_status(settings, None, now),
            "now": iso_z(now), "last_windows": [], "warehouses": warehouses_status(settings, None, now),
            "service": service_status(settings),
        }
        report["needs_a_person"] = needs_a_person(report)
        return report
    problem = state.identity_problem(settings)
    ledger = Ledger(settings.ledger_path, None)  # reads no buyer data
    try:
        bookmark = ledger.bookmark(ORDERS_BOOKMARK)
        in_flight = ledger.files_in(FileStatus.STAGED, FileStatus.UPLOADED)
        problems = ledger.delivery_problems()
        behind = now - bookmark if bookmark else None
        expected = settings.orders.lag + settings.orders.interval + timedelta(minutes=5)
        report = {
            "config": str(settings.path),
            "orders": ledger.status_counts(),
            "window_end": iso_z(bookmark) if bookmark else None,
            "behind_seconds": int(behind.total_seconds()) if behind is not None else None,
            "late": bool(behind and behind > expected),
            "windows": ledger.window_log(ORDERS_BOOKMARK),
            "files_in_flight": [
                {"warehouse": f.warehouse, "name": f.name, "status": f.status.value,
                 "problem": problems.get(f.id, {}).get("problem"), "problem_at": problems.get(f.id, {}).get("at")}
                for f in in_flight
            ],
            "attention": ledger.attention(),
            "state": problem,  # why a run would refuse this state folder, if it would
            "state_event": _last_confirmation(ledger),
            "shipments": shipments_status(ledger, now, [w.name for w in settings.warehouses
                                                         if confirmations_tracked(w)]),
            "catch_up": catch_up_status(settings, ledger, bookmark, now),
            "stock": stock_status(settings, ledger, now),
            "now": iso_z(now),
            "last_windows": ledger.last_windows(ORDERS_BOOKMARK),
            "warehouses": warehouses_status(settings, ledger, now),
            "service": service_status(settings),
        }
        report["needs_a_person"] = needs_a_person(report)
        return report
    finally:
        ledger.close()


def service_status(settings: Settings) -> dict[str, Any] | None:
    """What the service (`fbm-bridge run`) last said of its jobs (`state_dir/service.json`):
    None when it has never run here, or the file cannot be read."""
    try:
        document = json.loads((settings.state_dir / SERVICE_FILE).read_text(encoding="utf-8"))
        return {"updated_at": str(document["updated_at"]), "jobs": dict(document["jobs"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def catch_up_status(settings: Settings, ledger: Ledger, bookmark: datetime | None,
                    now: datetime) -> dict[str, Any] | None:
    """A long pull's progress (after downtime, or a first run from far back): windows done since
    it began and left until now, orders so far, and when it will be caught up at its pace."""
    progress = ledger.catch_up(ORDERS_BOOKMARK)
    if progress is None:
        return None
    orders = settings.orders
    left = windows_left(bookmark, now, size=orders.window, lag=orders.lag, first_start=orders.start)
    eta = catch_up_eta(progress["windows"], left, progress["since"], now)
    return {"since": iso_z(progress["since"]), "windows_done": progress["windows"], "windows_left": left,
            "orders": progress["orders"], "caught_up_in_seconds": int(eta.total_seconds()) if eta is not None else None}


def _last_confirmation(ledger: Ledger) -> dict[str, str] | None:
    """The latest thing a person did to the state (fresh start, accepted restore, new key)."""
    events = [e for e in ledger.state_events() if e["kind"] not in ("created", "identified")]
    return events[-1] if events else None


def order_report(settings: Settings, order_id: str, now: datetime | None = None) -> dict[str, Any] | None:
    """One order for staff: status, reason, the file that carried it, its history, its
    packages (shipments up) and whether its ship-by has passed with units not yet confirmed."""
    now = now or datetime.now(timezone.utc)
    if not settings.ledger_path.exists():
        return None
    ledger = Ledger(settings.ledger_path, None)  # reads no buyer data
    try:
        row = ledger.order_row(order_id)
        events = ledger.events(order_id)
        if row is None and not events:
            return None
        report = dict(row or {"order_id": order_id, "status": "rejected"})
        report["file"] = ledger.file_name(row["file_id"]) if row and row.get("file_id") else None
        report["events"] = events
        report["resends"] = ledger.resends(order_id)
        report["packages"] = ledger.packages_of(order_id)
        due = ledger.shipment_due_of(order_id)
        confirmed = sum(p["units"] or 0 for p in report["packages"] if p["status"] == PackageStatus.CONFIRMED)
        report["ship_by"] = due["ship_by"] if due else None
        report["units"], report["units_confirmed"] = (due["units"] if due else None), confirmed
        report["settled"] = ledger.settled_of(order_id)  # {at, note} once a person said it is done
        warehouse = next((w for w in settings.warehouses if w.name == report.get("warehouse")), None)
        report["confirmations_tracked"] = warehouse is not None and confirmations_tracked(warehouse)
        report["overdue"] = bool(due and report.get("amazon_status") != "CANCELLED" and confirmed < due["units"]
                                 and report.get("status") == OrderStatus.DELIVERED
                                 and not report["settled"] and report["confirmations_tracked"]
                                 and _overdue(due["ship_by"], now))
        return report
    finally:
        ledger.close()


def format_status(report: dict) -> str:
    counts = " ".join(f"{name}={count}" for name, count in report["orders"].items())
    lines = format_needs_a_person(report["needs_a_person"]) if "needs_a_person" in report else []
    lines += [f"config: {report['config']}", f"orders: {counts}"]
    service = report.get("service")
    if service:
        jobs = service["jobs"]
        failing = [f"{name} (failed {job['failures']}x since {job.get('failing_since')})"
                   for name, job in sorted(jobs.items()) if job.get("failures")]
        lines.append(f"service: {len(jobs)} jobs, as of {service['updated_at']}: "
                     + (f"failing: {', '.join(failing)}" if failing else "all went well on their last turn"))
    if report.get("state"):
        lines.append(f"STATE: a run would refuse: {report['state']}")
    if report.get("state_event"):
        event = report["state_event"]
        lines.append(f"state: {event['kind']} at {event['at']}: {event['detail']}")
    if report["window_end"]:
        hours, rest = divmod(max(0, report["behind_seconds"]), 3600)
        late = "  LATE: is the service running? (systemctl status fbm-bridge)" if report["late"] else ""
        lines.append(f"pulled up to: {report['window_end']} ({hours}h{rest // 60:02d}m ago){late}")
    else:
        lines.append("pulled up to: nothing pulled yet")
    if report.get("catch_up"):
        lines.append(format_catch_up(report["catch_up"]))
    log = report["windows"]
    if log["windows"]:
        tiling = "no gap, no overlap" if not log["gaps"] else "GAPS: " + ", ".join(log["gaps"])
        lines.append(f"windows: {log['windows']} pulled, {log['since']} to {log['until']}, {tiling}")
    for window in report.get("last_windows", []):
        lines.append(f"  window {window['start']} to {window['end']}: {window['orders']} order(s),"
                     f" pulled {window['recorded_at']}")
    lines.extend(format_in_flight(report["files_in_flight"]))
    if report["attention"]:
        lines.append("needs attention:")
        for item in report["attention"]:
            lines.append(f"  {shown(item['order_id'])}  {item['status']}  {one_line(item['reason'])}")
    lines.extend(format_warehouses(report.get("warehouses", {})))
    if "shipments" in report:
        lines.extend(format_shipments_status(report["shipments"]))
    if report.get("stock"):
        lines.extend(format_stock_status(report["stock"]))
    return "\n".join(lines)


def format_catch_up(progress: dict) -> str:
    seconds = progress["caught_up_in_seconds"]
    pace = ("the pace is measured once a window is done" if seconds is None
            else f"caught up in about {duration(timedelta(seconds=seconds))} at the pace so far")
    return (f"catching up: {progress['windows_done']} windows done, {progress['windows_left']} left,"
            f" {progress['orders']} orders so far; {pace}")


def format_stock_status(stock: dict) -> list[str]:
    lines = [f"stock: {stock['warehouse']} publishes daily at {stock['publish_at']} {stock['timezone']} "
             f"(next {stock['next_publish']})"]
    last = stock["last_published"]
    if last:
        lines.append(f"  last published: {last['name']!r} (stock of {last['stock_time']}) at {last['published_at']}: "
                     f"{last['status']}, {last['skus']} SKUs, {last['bad_rows']} bad rows, "
                     f"{last['amazon_errors']} refused by Amazon; {one_line(last['reason'])}")
    else:
        lines.append("  last published: none yet")
    latest = stock["latest"]
    if latest and latest["status"] not in ("held", "submitting") and (
            not last or latest["name"] != last["name"] or latest["status"] != last["status"]):
        lines.append(f"  newest: {latest['name']!r} (stock of {latest['stock_time']}): {latest['status']}: "
                     f"{one_line(latest['reason'])}")
    for item in stock["held"]:
        lines.append(f"  HELD: {item['name']!r}: {one_line(item['reason'])}; {_held_advice(stock)}")
    for item in stock["with_amazon"]:
        if item.get("overdue"):
            lines.append(f"  OVERDUE: {item['name']!r} with Amazon since {item['since']} ({item['for']}), longer than "
                         f"stock.feed_timeout_hours ({item['feed_timeout_hours']}): check its feed in Seller Central "
                         "(feed upload status); newer stock files no longer wait for it")
        elif item.get("since"):
            lines.append(f"  with Amazon: {item['name']!r} since {item['since']} ({item['for']}; the service polls it)")
        else:
            lines.append(f"  with Amazon: {item['name']!r} (the service polls it)")
    for item in stock["waiting"]:
        lines.append(f"  waiting for the publish: {item['name']!r} from {item['source']} received {item['received_at']}")
    for item in stock["files_in_error"]:
        why = f": {one_line(item['reason'])}" if item["reason"] else ": see its result file"
        lines.append(f"  file answered in error/: {item['source']} {item['name']!r}{_answered_as(item)}"
                     f" {(item['finished_at'] or '')[:16]}{why}")
    lines.extend(_incomplete_lines(stock.get("files_incomplete", [])))
    return lines


def _held_advice(stock: dict, *, short: bool = False) -> str:
    """What to do about a held file: force it, unless a newer file waits, which the next publish
    takes instead (forcing then checks that one and forces nothing)."""
    if stock["waiting"]:
        return (f"the newer file {stock['waiting'][-1]['name']!r} waits for the next publish, which takes it instead:"
                " nothing to force")
    if short:
        return "`fbm-bridge inventory push --force` publishes it"
    return ("`inventory push --force` publishes it (stop the service first: `systemctl stop fbm-bridge`, or"
            " `fbm-bridge@NAME` for an instance, and start it again after)")


def _answered_as(item: dict) -> str:
    """The name a file was answered under in error/ and results/, when not its own (taken
    there by an earlier file of that name: NAME~ID.csv; or an odd name made safe)."""
    answered = item.get("safe_name")
    if not answered or answered == item["name"]:
        return ""
    from bridge.formats.inbound import result_name  # only then: status imports no format module

    return f" (answered as {answered!r}, result results/{result_name(answered)})"


def _incomplete_lines(items: list[dict]) -> list[str]:
    """Files left in their folder as not yet complete: the writer may still be busy, or the
    file needs a person (it goes to error/ after shipments.incomplete_limit_minutes)."""
    return [f"  file waiting, incomplete since {item['incomplete_since'][:16]}: {item['warehouse']} {item['source']} "
            f"{item['name']!r}: {one_line(item['incomplete_reason'])}" for item in items]


def format_shipments_status(shipments: dict) -> list[str]:
    packages = shipments["packages"]
    waiting = packages.get("accepted", 0) + packages.get("sent", 0)
    lines = [f"shipments: packages confirmed={packages.get('confirmed', 0)} "
             f"rejected={packages.get('rejected', 0)} waiting={waiting}"]
    for item in shipments["files_in_progress"]:
        lines.append(f"  file in progress: {item['warehouse']} {item['source']} {item['name']!r} ({item['status']})")
    for item in shipments["files_in_error"]:
        why = f": {item['reason']}" if item["reason"] else ": some rows rejected (see its result file)"
        lines.append(f"  file answered in error/: {item['warehouse']} {item['source']} {item['name']!r}"
                     f"{_answered_as(item)} {(item['finished_at'] or '')[:16]}{why}")
    lines.extend(_incomplete_lines(shipments.get("files_incomplete", [])))
    for item in shipments.get("feeds", []):
        lines.append("  " + _fulfillment_feed_line(item))
    if shipments["unconfirmed"]:
        lines.append("delivered, not yet confirmed on Amazon (ship by, soonest first):")
        for item in shipments["unconfirmed"]:
            waiting = f", {item['waiting']} waiting for Amazon" if item["waiting"] else ""
            overdue = "  OVERDUE: ship-by passed" if item.get("overdue") else ""
            lines.append(f"  {item['ship_by'] or 'no ship-by':20}  {shown(item['order_id'])}  {item['warehouse']}  "
                         f"{item['confirmed']}/{item['units']} units confirmed{waiting}{overdue}")
    return lines


def _fulfillment_feed_line(item: dict) -> str:
    """One order fulfillment feed document not yet answered, or left in doubt."""
    name = f"fulfillment feed {item['feed_id']}" if item["feed_id"] else f"fulfillment feed document {item['id']}"
    packages = f"{item['messages']} package{'s' if item['messages'] != 1 else ''}"
    status = item["status"]
    if status == "submitted":
        return f"{name}: {packages}, submitted {item['submitted_at']}, waiting for Amazon"
    if status == "submitting":
        return (f"{name}: {packages}, createFeed interrupted at {item['submit_started_at']}; the next run asks "
                "Amazon whether it arrived")
    if status == "prepared":
        return f"{name}: {packages}, recorded {item['created_at']}, the next run sends it"
    return f"{name}: {packages}, IN DOUBT since {item['finished_at']}: {one_line(item['note'])}"


IN_FLIGHT_LISTED = 10  # an outage of a warehouse with a file per order holds hundreds


def format_in_flight(in_flight: list[dict]) -> list[str]:
    """The files not yet delivered, the first IN_FLIGHT_LISTED of them, and how many more."""
    lines = [f"in flight: {item['warehouse']} {item['name']} ({_in_flight(item)})" for item in in_flight[:IN_FLIGHT_LISTED]]
    if len(in_flight) > IN_FLIGHT_LISTED:
        lines.append(f"in flight: {len(in_flight) - IN_FLIGHT_LISTED} more file(s) (`status --json` lists them all)")
    return lines


def _stuck_files(in_flight: list[dict]) -> list[tuple[tuple[str, str], list[dict]]]:
    """Files whose last try failed, grouped by warehouse and by what failed (an outage fails
    every file the same way), oldest failure first in each group. A file's own name in the
    error (its temporary name) is put as "the file", so that one outage is one group."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for item in in_flight:
        if item.get("problem"):
            problem = one_line(item["problem"]).replace(item["name"], "<file>")
            groups.setdefault((item["warehouse"], problem), []).append(item)
    for stuck in groups.values():
        stuck.sort(key=lambda item: item["problem_at"] or "")
    return sorted(groups.items(), key=lambda group: group[1][0]["problem_at"] or "")


def _in_flight(item: dict) -> str:
    """What is true of a file not yet delivered: why it waits, if its last try failed."""
    if item.get("problem"):
        return f"{item['status']}, waiting since {item['problem_at']}: {one_line(item['problem'])}"
    if item["status"] == "uploaded":
        return "uploaded under its temporary name; the next run renames it into place"
    return "staged; the next run uploads it"


# --- per warehouse, and what needs a person first ----------------------------------------------

def warehouses_status(settings: Settings, ledger: Ledger | None, now: datetime) -> dict[str, dict[str, Any]]:
    """Per configured warehouse (and NO_WAREHOUSE for orders held before routing): orders by
    status, held orders by reason, packages shipped and confirmed, what was answered into error/
    or rejected in the last RECENT, ship-by dates passed or near and not confirmed, and when
    each job last finished (the ledger's records: bookmarks, answered files)."""
    counts = ledger.counts_by_warehouse() if ledger is not None else {}
    held = _held_by_warehouse(ledger.attention() if ledger is not None else [])
    marks = ledger.bookmark_times(ORDERS_BOOKMARK, STOCK_PUBLISH_BOOKMARK) if ledger is not None else {}
    empty = {"orders": {s.value: 0 for s in OrderStatus}, "packages": {s.value: 0 for s in PackageStatus}}
    found: dict[str, dict[str, Any]] = {}
    for warehouse in settings.warehouses:
        name = warehouse.name
        mine = counts.get(name, empty)
        item: dict[str, Any] = {
            "orders": mine["orders"], "packages": mine["packages"], "held": held.get(name, []),
            "files_in_error": {"shipments": 0, "stock": 0}, "rejected_rows": 0, "rejected_packages": 0,
            "confirmations_tracked": confirmations_tracked(warehouse),
            "past_ship_by": [], "past_ship_by_count": 0, "near_ship_by": [], "near_ship_by_count": 0,
            "oldest_unconfirmed": None,
            "last_run": {"orders": marks.get(ORDERS_BOOKMARK),
                         "shipments": ledger.last_answered(SHIPMENTS_FLOW, name) if ledger is not None else None,
                         "stock_publish": None},
        }
        if ledger is not None:
            since = now - RECENT
            shipments = ledger.answered_since(SHIPMENTS_FLOW, name, since)
            stock = ledger.answered_since(STOCK_FLOW, name, since)
            item["files_in_error"] = {"shipments": shipments["files_in_error"], "stock": stock["files_in_error"]}
            item["rejected_rows"] = shipments["rejected_rows"]
            item["rejected_packages"] = shipments["rejected_packages"]
        if not item["confirmations_tracked"]:  # not known: neither listed nor counted (None)
            item.update(past_ship_by_count=None, near_ship_by_count=None)
        elif ledger is not None:
            recent = now - SHIP_BY_LOOKBACK
            past = ledger.ship_by_due(name, now, SHIP_BY_LISTED, after=recent)
            near = ledger.ship_by_due(name, now + SHIP_BY_NEAR, SHIP_BY_LISTED, after=recent)[len(past):]
            item.update(past_ship_by=past[:10], past_ship_by_count=len(past),
                        near_ship_by=near[:10], near_ship_by_count=len(near))
            item["oldest_unconfirmed"] = ledger.oldest_unconfirmed(name, recent)
        if settings.stock.warehouse == name and ledger is not None:
            # the last stock file Amazon took, not the publish bookmark: that moves on a day with
            # nothing new to publish too, and an alert on a stale stock feed must see the staleness
            published = ledger.last_published_stock()
            item["last_run"]["stock_publish"] = (iso_z(published.published_at)
                                                 if published and published.published_at else None)
        found[name] = item
    if NO_WAREHOUSE in held or None in counts:
        found[NO_WAREHOUSE] = {"orders": counts.get(None, empty)["orders"], "held": held.get(NO_WAREHOUSE, [])}
    return found


def _held_by_warehouse(attention: list[dict]) -> dict[str, list[dict]]:
    """Held and unrenderable orders grouped by warehouse, then by reason: [{status, reason, count}]."""
    grouped: dict[str, dict[tuple[str, str], int]] = {}
    for item in attention:
        if item["status"] in (OrderStatus.HELD, OrderStatus.UNRENDERABLE):
            reasons = grouped.setdefault(item["warehouse"] or NO_WAREHOUSE, {})
            key = (item["status"], one_line(item["reason"]))
            reasons[key] = reasons.get(key, 0) + 1
    return {warehouse: [{"status": status, "reason": reason, "count": count}
                        for (status, reason), count in sorted(reasons.items(), key=lambda kv: -kv[1])]
            for warehouse, reasons in grouped.items()}


def needs_a_person(report: dict[str, Any]) -> list[dict[str, str | None]]:
    """What a person should look at first, most urgent first: a state the service refuses, a
    job failing, pulls that stopped (late, gaps, a file that does not go: orders stop reaching
    the warehouse; held orders do not either), orders past or near their ship-by and not
    confirmed, files answered into error/, rejected rows, a held or failed stock file, records
    the state key cannot open, orders changed on Amazon, documents in doubt. One line each."""
    items: list[dict[str, str | None]] = []

    def need(kind: str, warehouse: str | None, what: str) -> None:
        items.append({"kind": kind, "warehouse": warehouse, "what": what})

    if report.get("state"):
        need("state", None, f"a run would refuse the state folder: {one_line(report['state'])}")
    for name, job in sorted(((report.get("service") or {}).get("jobs") or {}).items()):
        if job.get("failures", 0) >= FAILING_AFTER:
            need("job_failing", None, f"the service's {name} job has failed {job['failures']} times in a row"
                 f" since {job.get('failing_since')}: {one_line(job.get('error') or job.get('result'))}")
    warehouses = report.get("warehouses", {})
    if report.get("late"):
        need("stuck_windows", None, f"orders pulled only up to {report['window_end']}"
             f" ({_hours(timedelta(seconds=report['behind_seconds']))} ago): is the service running?")
    gaps = report.get("windows", {}).get("gaps", [])
    if gaps:
        need("stuck_windows", None, f"gaps between the windows pulled: {', '.join(gaps)}")
    for (warehouse, problem), stuck in _stuck_files(report.get("files_in_flight", [])):
        first = stuck[0]
        if len(stuck) == 1:
            need("stuck_file", warehouse, f"{first['name']} not delivered since {first['problem_at']}:"
                 f" {one_line(first['problem'])}")
        else:
            need("stuck_file", warehouse, f"{len(stuck)} files not delivered since {first['problem_at']} (the"
                 f" oldest {first['name']}), each with: {problem}")
    for name, item in warehouses.items():
        for group in item.get("held", []):
            need(f"orders_{group['status']}", name if name != NO_WAREHOUSE else None,
                 f"{group['count']} order(s) {group['status']}: {group['reason']}")
    # Across warehouses by urgency: every warehouse's passed ship-bys, the oldest first (the
    # closest to Amazon's cancelling), then those due soon, the soonest first.
    for name, item in _by_first_ship_by(warehouses, "past_ship_by"):
        first = item["past_ship_by"][0]
        more = "+" if item["past_ship_by_count"] == SHIP_BY_LISTED else ""
        need("past_ship_by", name, f"{item['past_ship_by_count']}{more} delivered order(s) past their ship-by and not confirmed on"
             f" Amazon: oldest {shown(first['order_id'])} (ship by {first['ship_by']},"
             f" {first['confirmed']}/{first['units']} units confirmed)")
    for name, item in _by_first_ship_by(warehouses, "near_ship_by"):
        first = item["near_ship_by"][0]
        need("near_ship_by", name, f"{item['near_ship_by_count']} delivered order(s) to ship within {_hours(SHIP_BY_NEAR)} and not"
             f" confirmed: first {shown(first['order_id'])} (ship by {first['ship_by']})")
    for name, item in warehouses.items():
        for flow, count in item.get("files_in_error", {}).items():
            if count:
                need("files_in_error", name, f"{count} {flow} file(s) answered into error/ in the last"
                     f" {RECENT.days} days: see their result files in results/")
    for name, item in warehouses.items():
        if item.get("rejected_rows"):
            need("rejected_rows", name, f"{item['rejected_rows']} row(s) rejected in confirmation files answered in"
                 f" the last {RECENT.days} days: see their result files")
        if item.get("rejected_packages"):
            need("rejected_packages", name, f"{item['rejected_packages']} package(s) refused by Amazon in the last"
                 f" {RECENT.days} days: see their result files")
    stock = report.get("stock") or {}
    for held in stock.get("held", []):
        why = one_line(held['reason']).removeprefix("held: ")
        need("stock_held", stock["warehouse"], f"stock file {held['name']!r} held: {why}; {_held_advice(stock, short=True)}")
    latest = stock.get("latest")
    if latest and latest["status"] == "failed":
        need("stock_failed", stock["warehouse"], f"stock file {latest['name']!r} failed: {one_line(latest['reason'])}")
    attention = report.get("attention", [])
    unreadable = [a for a in attention if a["status"] == "unreadable"]
    if unreadable:
        need("key", None, f"{len(unreadable)} order record(s) the state key cannot open: set aside (see below)")
    changed = [a for a in attention if a["status"] not in ("held", "unrenderable", "unreadable")]
    if changed:
        need("orders_changed", None, f"{len(changed)} order(s) changed on Amazon after delivery, or unreadable"
             " from Amazon: see below")
    for feed in (report.get("shipments") or {}).get("feeds", []):
        if feed["status"] == "in_doubt":
            need("feed_in_doubt", None, _fulfillment_feed_line(feed))
    return items


def _by_first_ship_by(warehouses: dict[str, dict], key: str) -> list[tuple[str, dict]]:
    """The warehouses with orders listed under `key`, by their first order's ship-by, then name."""
    listed = [(name, item) for name, item in warehouses.items() if item.get(key)]
    return sorted(listed, key=lambda pair: (pair[1][key][0]["ship_by"], pair[0]))


def format_needs_a_person(items: list[dict]) -> list[str]:
    if not items:
        return ["needs a person first: nothing"]
    lines = ["needs a person first:"]
    for number, item in enumerate(items, 1):
        where = f"{item['warehouse']}: " if item["warehouse"] else ""
        lines.append(f"  {number}. {where}{item['what']}")
    return lines


def format_warehouses(warehouses: dict[str, dict]) -> list[str]:
    lines = []
    for name, item in warehouses.items():
        orders = " ".join(f"{status}={count}" for status, count in item["orders"].items() if count) or "none"
        lines.append(f"warehouse {name}: orders {orders}" if name != NO_WAREHOUSE
                     else f"no warehouse yet: orders {orders}")
        for group in item["held"]:
            lines.append(f"  {group['status']} {group['count']}: {group['reason']}")
        if "packages" not in item:
            continue
        packages = item["packages"]
        lines.append(f"  packages {sum(packages.values())}: confirmed={packages.get('confirmed', 0)}"
                     f" waiting={packages.get('accepted', 0) + packages.get('sent', 0)}"
                     f" rejected by Amazon={packages.get('rejected', 0)}")
        errors = item["files_in_error"]
        lines.append(f"  last {RECENT.days} days: files in error shipments={errors['shipments']} stock={errors['stock']},"
                     f" rows rejected={item['rejected_rows']}, packages refused={item['rejected_packages']}")
        oldest = item["oldest_unconfirmed"]
        tracked = item.get("confirmations_tracked", True)
        if not tracked:
            lines.append(f"  {UNTRACKED}")
        elif oldest:
            lines.append(f"  not confirmed: {item['past_ship_by_count']} past ship-by, {item['near_ship_by_count']} due"
                         f" within {_hours(SHIP_BY_NEAR)}; oldest ship-by {oldest['ship_by']}"
                         f" ({shown(oldest['order_id'])})")
        runs = item["last_run"]
        lines.append("  last finished: " + ", ".join(
            f"{job} {at or 'never'}" for job, at in runs.items()
            if (job != "stock_publish" or at is not None) and (job != "shipments" or tracked or at is not None)))
    return lines


def _overdue(ship_by: str | None, now: datetime | None) -> bool:
    return bool(ship_by and now is not None and ship_by < iso_z(now))


def _hours(span: timedelta) -> str:
    hours, rest = divmod(max(0, int(span.total_seconds())), 3600)
    return f"{hours}h{rest // 60:02d}m" if rest else f"{hours} h"
