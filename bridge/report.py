"""What `fbm-bridge status` reports, as data and as text, read from the ledger without a key.

Light on purpose: status runs beside the service, often, by hand; it reads counts, windows and
events, never sealed buyer data, and imports no edge (no SFTP, no Amazon client, no file
format library), so it starts in a few hundredths of a second.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from bridge import state
from bridge.config import Settings
from bridge.ledger import ORDERS_BOOKMARK, FileStatus, Ledger, OrderStatus, PackageStatus
from bridge.records import iso_z, one_line, parse_iso, shown
from bridge.windows import catch_up_eta, duration, next_daily, windows_left

SHIPMENTS_FLOW = "shipments"  # flows.shipments.FLOW, named here so status need not import the flow
STOCK_FLOW = "stock"  # flows.stock_intake.FLOW, likewise
STOCK_PUBLISH_BOOKMARK = "stock_publish"  # flows.stock_intake.PUBLISH_BOOKMARK


def shipments_status(ledger: Ledger | None) -> dict[str, Any]:
    """Packages confirmed, rejected and waiting; orders delivered and not yet confirmed, soonest
    ship-by first; confirmation files in progress and the latest answered with errors."""
    if ledger is None:
        return {"packages": {status.value: 0 for status in PackageStatus}, "unconfirmed": [],
                "files_in_progress": [], "files_in_error": [], "files_incomplete": [], "feeds": []}
    files = ledger.inbound_report(SHIPMENTS_FLOW)
    return {
        "packages": ledger.shipment_counts(),
        "unconfirmed": ledger.unconfirmed_orders(),
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
        return {
            "config": str(settings.path), "orders": {status.value: 0 for status in OrderStatus},
            "window_end": None, "behind_seconds": None, "late": False,
            "windows": {"windows": 0, "since": None, "until": None, "gaps": []},
            "files_in_flight": [], "attention": [], "state": state.identity_problem(settings),
            "state_event": None, "shipments": shipments_status(None), "catch_up": None,
            "stock": stock_status(settings, None, now),
        }
    problem = state.identity_problem(settings)
    ledger = Ledger(settings.ledger_path, None)  # reads no buyer data
    try:
        bookmark = ledger.bookmark(ORDERS_BOOKMARK)
        in_flight = ledger.files_in(FileStatus.STAGED, FileStatus.UPLOADED)
        problems = ledger.delivery_problems()
        behind = now - bookmark if bookmark else None
        expected = settings.orders.lag + settings.orders.interval + timedelta(minutes=5)
        return {
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
            "shipments": shipments_status(ledger),
            "catch_up": catch_up_status(settings, ledger, bookmark, now),
            "stock": stock_status(settings, ledger, now),
        }
    finally:
        ledger.close()


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


def order_report(settings: Settings, order_id: str) -> dict[str, Any] | None:
    """One order for staff: status, reason, the file that carried it, and its history."""
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
        return report
    finally:
        ledger.close()


def format_status(report: dict) -> str:
    counts = " ".join(f"{name}={count}" for name, count in report["orders"].items())
    lines = [f"config: {report['config']}", f"orders: {counts}"]
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
    for item in report["files_in_flight"]:
        lines.append(f"in flight: {item['warehouse']} {item['name']} ({_in_flight(item)})")
    if report["attention"]:
        lines.append("needs attention:")
        for item in report["attention"]:
            lines.append(f"  {shown(item['order_id'])}  {item['status']}  {one_line(item['reason'])}")
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
        lines.append(f"  HELD: {item['name']!r}: {one_line(item['reason'])}; `inventory push --force` publishes it "
                     "(stop the service first: `systemctl stop fbm-bridge`, and start it again after)")
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
        lines.append(f"  file answered in error/: {item['name']!r} {(item['finished_at'] or '')[:16]}{why}")
    lines.extend(_incomplete_lines(stock.get("files_incomplete", [])))
    return lines


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
        lines.append(f"  file answered in error/: {item['warehouse']} {item['name']!r} "
                     f"{(item['finished_at'] or '')[:16]}{why}")
    lines.extend(_incomplete_lines(shipments.get("files_incomplete", [])))
    for item in shipments.get("feeds", []):
        lines.append("  " + _fulfillment_feed_line(item))
    if shipments["unconfirmed"]:
        lines.append("delivered, not yet confirmed on Amazon (ship by, soonest first):")
        for item in shipments["unconfirmed"]:
            waiting = f", {item['waiting']} waiting for Amazon" if item["waiting"] else ""
            lines.append(f"  {item['ship_by'] or 'no ship-by':20}  {shown(item['order_id'])}  {item['warehouse']}  "
                         f"{item['confirmed']}/{item['units']} units confirmed{waiting}")
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


def _in_flight(item: dict) -> str:
    """What is true of a file not yet delivered: why it waits, if its last try failed."""
    if item.get("problem"):
        return f"{item['status']}, waiting since {item['problem_at']}: {one_line(item['problem'])}"
    if item["status"] == "uploaded":
        return "uploaded under its temporary name; the next run renames it into place"
    return "staged; the next run uploads it"
