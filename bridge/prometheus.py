"""`fbm-bridge status --prometheus`: the status report in node_exporter's textfile format.

Each metric has a HELP and a TYPE line, then its samples `name{labels} value`; every name is
prefixed `fbm_bridge_`, every sample carries `instance="NAME"` (the config file's name without
`.toml`: one per seller-and-warehouse instance, so several instances' files never collide in
one collector) and per-warehouse samples `warehouse="NAME"`. Everything is read
from the report `status` builds (the ledger, without a key), so it is as cheap as `status`.
Times are unix seconds. A sample that has no value yet (a job never finished, no order waiting
to be confirmed) is left out rather than given a made-up one.
"""

from __future__ import annotations

from typing import Any

from bridge.ledger import UNDELIVERED, OrderStatus, StockFileStatus
from bridge.records import parse_iso

PREFIX = "fbm_bridge_"
WAITING = [status.value for status in (*UNDELIVERED, OrderStatus.STAGED)]  # taken from Amazon, not yet in the drop
STOCK_STATUSES = [status.value for status in StockFileStatus]

Sample = tuple[dict[str, str], float]


def exposition(report: dict[str, Any], instance: str) -> str:
    """The text a node_exporter textfile collector reads, ending with a line break."""
    everyone = report.get("warehouses", {})
    warehouses = {name: item for name, item in everyone.items() if "packages" in item}  # configured ones
    stock = report.get("stock") or {}
    latest, published = stock.get("latest"), stock.get("last_published")
    needs = report.get("needs_a_person", [])
    jobs = (report.get("service") or {}).get("jobs") or {}
    metrics: list[tuple[str, str, list[Sample]]] = [
        ("last_success_timestamp_seconds",
         "When each job last finished its work (unix time): orders = the last pull that moved the window"
         " bookmark, shipments = the last confirmation file answered, stock_publish = the last stock file Amazon took.",
         [({"warehouse": name, "job": job}, _unix(at))
          for name, item in warehouses.items() for job, at in item["last_run"].items() if at]),
        ("orders", "Orders in the ledger by status.",
         [({"warehouse": name, "status": status}, count)
          for name, item in everyone.items() for status, count in item["orders"].items()]),
        ("orders_waiting", "Orders taken from Amazon and not yet delivered: held, unrenderable, pending or staged.",
         [({"warehouse": name}, sum(item["orders"].get(status, 0) for status in WAITING))
          for name, item in everyone.items()]),
        ("confirmations_tracked", "1 when the bridge reads the warehouse's confirmation files (it has a shipments"
         " folder), so it knows which orders are confirmed; 0: the seller confirms by hand in Seller Central, and"
         " the warehouse has no orders_past_ship_by sample.",
         [({"warehouse": name}, int(item.get("confirmations_tracked", True))) for name, item in warehouses.items()]),
        ("orders_past_ship_by", "Delivered orders past their ship-by date and not yet confirmed in full on Amazon"
         " (nor settled by a person), of the last 30 days; only for warehouses whose confirmations are tracked.",
         [({"warehouse": name}, item["past_ship_by_count"]) for name, item in warehouses.items()
          if item["past_ship_by_count"] is not None]),
        ("oldest_unconfirmed_ship_by_timestamp_seconds",
         "Ship-by date (unix time) of the delivered order not yet confirmed in full that is due first.",
         [({"warehouse": name}, _unix(item["oldest_unconfirmed"]["ship_by"]))
          for name, item in warehouses.items() if item["oldest_unconfirmed"]]),
        ("packages", "Packages (one confirmShipment each) by status.",
         [({"warehouse": name, "status": status}, count)
          for name, item in warehouses.items() for status, count in item["packages"].items()]),
        ("files_in_error", "Inbound files answered into error/ in the last 7 days, by flow.",
         [({"warehouse": name, "flow": flow}, count)
          for name, item in warehouses.items() for flow, count in item["files_in_error"].items()]),
        ("rejected_rows", "Rows rejected in confirmation files answered in the last 7 days.",
         [({"warehouse": name}, item["rejected_rows"]) for name, item in warehouses.items()]),
        ("rejected_packages", "Packages Amazon refused in the last 7 days.",
         [({"warehouse": name}, item["rejected_packages"]) for name, item in warehouses.items()]),
        ("stock_latest_file", "The newest stock file's outcome: 1 for its status, 0 for the others.",
         [({"warehouse": stock["warehouse"], "status": status}, int(latest["status"] == status))
          for status in (STOCK_STATUSES if latest else ())]),
        ("stock_last_published_timestamp_seconds", "When Amazon last processed a stock feed (unix time).",
         [({"warehouse": stock["warehouse"]}, _unix(published["published_at"]))] if published else []),
        ("stock_held_files", "Stock files held by a safety gate, waiting for a person.",
         [({"warehouse": stock["warehouse"]}, len(stock.get("held", [])))] if stock else []),
        ("needs_a_person", "Items at the top of `fbm-bridge status` (needs a person first); without a warehouse"
         " label: items of no one warehouse (the state folder, the orders pull).",
         [({"warehouse": name}, sum(1 for n in needs if n["warehouse"] == name)) for name in warehouses]
         + [({}, sum(1 for n in needs if not n["warehouse"]))]),
        ("orders_pull_behind_seconds", "How far the orders pull is behind now (the window bookmark's age).",
         [({}, report["behind_seconds"])] if report.get("behind_seconds") is not None else []),
        ("job_failures", "How many times in a row each of the service's jobs has failed (0: its last turn went"
         " well), from state_dir/service.json.",
         [({"job": name}, job.get("failures", 0)) for name, job in jobs.items()]),
        ("job_last_ok_timestamp_seconds", "When each of the service's jobs last went well (unix time).",
         [({"job": name}, _unix(job["last_ok_at"])) for name, job in jobs.items() if job.get("last_ok_at")]),
        ("state_refused", "1 when a run would refuse the state folder (see `fbm-bridge status`).",
         [({}, int(bool(report.get("state"))))]),
    ]
    lines = []
    for name, help_text, samples in metrics:
        lines.append(f"# HELP {PREFIX}{name} {_escape_help(help_text)}")
        lines.append(f"# TYPE {PREFIX}{name} gauge")
        lines.extend(f"{PREFIX}{name}{_labels({'instance': instance, **labels})} {_number(value)}"
                     for labels, value in samples)
    return "\n".join(lines) + "\n"


def _unix(text: str) -> int:
    return int(parse_iso(text).timestamp())


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape_label(str(value))}"' for key, value in labels.items()) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
