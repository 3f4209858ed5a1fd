"""The `bridge` command: parses arguments, loads config, calls a flow, the daemon or the demo.

Exit status: 0 done, 1 a run finished with errors (retried next run), 2 setup is wrong (config,
credentials, host key) and needs a person.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from bridge import __version__
from bridge.config import DEFAULT_CONFIG_PATH, Settings, load_settings
from bridge.errors import BridgeError, ConfigError, FixTheSetup
from bridge.records import parse_iso

EXIT_OK, EXIT_ERRORS, EXIT_SETUP = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as problem:
        print("configuration is not valid:", file=sys.stderr)
        for line in problem.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_SETUP
    except FixTheSetup as problem:
        print(f"fbm-bridge: {problem}", file=sys.stderr)
        return EXIT_SETUP
    except BridgeError as problem:
        print(f"fbm-bridge: {problem}", file=sys.stderr)
        return EXIT_ERRORS
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fbm-bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fbm-bridge {__version__}")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate config and mappings, log in to SFTP and Amazon")
    check.set_defaults(handler=cmd_check)

    orders = commands.add_parser("orders", help="orders down")
    orders_commands = orders.add_subparsers(dest="orders_command", required=True, metavar="ACTION")
    pull = orders_commands.add_parser("pull", help="one run now: pull, render, deliver")
    pull.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    pull.add_argument("--dry-run", action="store_true", help="show what would be sent; record, spool and upload nothing")
    pull.add_argument("--out", type=Path, help="with --dry-run: also write the files that would be sent here, per warehouse")
    pull.set_defaults(handler=cmd_orders_pull)

    status = commands.add_parser("status", help="what the bridge holds, delivered and needs help with")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--order", metavar="ORDER_ID", help="one order's status, file and history")
    status.set_defaults(handler=cmd_status)

    run = commands.add_parser("run", help="the long-running service (systemd): orders on a schedule")
    run.set_defaults(handler=cmd_run)

    sandbox = commands.add_parser("sandbox", help="a local SP-API on 127.0.0.1 for trials and tests")
    sandbox.add_argument("--port", type=int, default=8700)
    sandbox.add_argument("--seed", type=Path, help="orders JSON (default: the demo orders)")
    sandbox.add_argument("--fresh", action="store_true", help="move the orders' update times to just inside the default window")
    sandbox.set_defaults(handler=cmd_sandbox)

    shipments = commands.add_parser("shipments", help="shipments up: confirmation files to Amazon")
    shipments_commands = shipments.add_subparsers(dest="shipments_command", required=True, metavar="ACTION")
    process = shipments_commands.add_parser(
        "process", help="one pass now over the SFTP and local folders: take, confirm, answer")
    process.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    process.set_defaults(handler=cmd_shipments_process)

    replay = commands.add_parser("replay", help="show what a confirmation file would send to Amazon")
    replay.add_argument("file", type=Path, help="a shipment confirmation file")
    replay.add_argument("--warehouse", required=True, metavar="NAME", help="whose mapping reads the file")
    replay.add_argument("--dry-run", action="store_true", required=True,
                        help="required: parse and print, row by row; nothing is sent or recorded")
    replay.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    replay.set_defaults(handler=cmd_replay)

    spool = commands.add_parser("spool", help="the local copies of delivered files")
    spool_commands = spool.add_subparsers(dest="spool_command", required=True, metavar="ACTION")
    spool_open = spool_commands.add_parser("open", help="write a spool file to stdout as it was delivered")
    spool_open.add_argument("file", type=Path)
    spool_open.set_defaults(handler=cmd_spool_open)

    keygen = commands.add_parser("keygen", help="print a new BRIDGE_STATE_KEY (seals buyer data at rest)")
    keygen.set_defaults(handler=cmd_keygen)

    demo = commands.add_parser("demo", help="the whole flow against a local sandbox and SFTP server, no accounts needed")
    demo.add_argument("--workdir", type=Path, default=Path("demo-run"), help="where the demo keeps its state and drop (default ./demo-run)")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    from bridge.service import configure_logging

    settings = load_settings(args.config)
    configure_logging(settings.log_level)
    return settings


def cmd_check(args: argparse.Namespace) -> int:
    from bridge.edges.amazon import AmazonOrders
    from bridge.edges.sftp import SftpDrop

    settings = _settings(args)
    print(f"config    ok  {settings.path} ({len(settings.warehouses)} warehouse(s))")
    failures = 0
    for warehouse in settings.warehouses:
        print(f"mapping   ok  {warehouse.name}: {warehouse.mapping.name} ({warehouse.mapping.orders.format})")
        try:
            with SftpDrop(warehouse.sftp) as drop:
                fingerprint = drop.check()
                drop.listdir(warehouse.orders_folder)
            print(f"sftp      ok  {warehouse.name}: {warehouse.sftp.username}@{warehouse.sftp.host}:{warehouse.sftp.port} host key {fingerprint}, {warehouse.orders_folder} readable")
        except BridgeError as problem:
            failures += 1
            print(f"sftp      FAIL {warehouse.name}: {problem}")
    try:
        AmazonOrders(settings.amazon).check()
        print(f"amazon    ok  token from {settings.amazon.token_url}, endpoint {settings.amazon.endpoint}")
    except BridgeError as problem:
        failures += 1
        print(f"amazon    FAIL {problem}")
    return EXIT_OK if not failures else EXIT_SETUP


def cmd_orders_pull(args: argparse.Namespace) -> int:
    from bridge.service import open_service

    settings = _settings(args)
    now = args.now or datetime.now(timezone.utc)
    if args.dry_run:
        return _dry_run(settings, now, args.out)
    with open_service(settings) as service:
        report = service.orders.run(now)
    print(report.summary())
    for error in report.errors:
        print(f"  error: {error}", file=sys.stderr)
    if report.needs_a_person:
        return EXIT_SETUP
    return EXIT_OK if not report.errors else EXIT_ERRORS


def _dry_run(settings: Settings, now: datetime, out: Path | None) -> int:
    from bridge.service import open_service

    with open_service(settings, exclusive=False) as service:  # reads only: fine beside the service
        preview = service.orders.preview(now)
    print(preview.summary())
    if out is not None:
        for warehouse, rendered in preview.files:
            (out / warehouse).mkdir(parents=True, exist_ok=True)
            (out / warehouse / rendered.name).write_bytes(rendered.data)
        print(f"files written under {out} (they hold buyer data: delete them when done)")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from bridge.service import status_report

    # Status reads counts, windows and events, never sealed buyer data: it needs no secret.
    settings = load_settings(args.config, require_secrets=False)
    if args.order:
        return _order_status(settings, args.order, as_json=args.json)
    report = status_report(settings)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_status(report))
    return EXIT_OK


def _order_status(settings: Settings, order_id: str, *, as_json: bool) -> int:
    from bridge.service import order_report

    report = order_report(settings, order_id)
    if report is None:
        print(f"order {order_id} is not in the ledger: never pulled, or filtered out before it was recorded")
        return EXIT_ERRORS
    if as_json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    for key in ("order_id", "status", "reason", "warehouse", "file", "amazon_status", "first_seen_at", "delivered_at", "pii_purged_at"):
        if report.get(key):
            print(f"{key + ':':15} {report[key]}")
    print("history:")
    for event in report["events"]:
        print(f"  {event['at']}  {event['kind']:24} {event['detail']}")
    return EXIT_OK


def format_status(report: dict) -> str:
    counts = " ".join(f"{name}={count}" for name, count in report["orders"].items())
    lines = [f"config: {report['config']}", f"orders: {counts}"]
    if report["window_end"]:
        hours, rest = divmod(max(0, report["behind_seconds"]), 3600)
        late = "  LATE: is the service running? (systemctl status fbm-bridge)" if report["late"] else ""
        lines.append(f"pulled up to: {report['window_end']} ({hours}h{rest // 60:02d}m ago){late}")
    else:
        lines.append("pulled up to: nothing pulled yet")
    log = report["windows"]
    if log["windows"]:
        tiling = "no gap, no overlap" if not log["gaps"] else "GAPS: " + ", ".join(log["gaps"])
        lines.append(f"windows: {log['windows']} pulled, {log['since']} to {log['until']}, {tiling}")
    for item in report["files_in_flight"]:
        lines.append(f"in flight: {item['warehouse']} {item['name']} ({item['status']}; delivered on the next run)")
    if report["attention"]:
        lines.append("needs attention:")
        for item in report["attention"]:
            lines.append(f"  {item['order_id']}  {item['status']}  {item['reason']}")
    if "shipments" in report:
        lines.extend(format_shipments_status(report["shipments"]))
    return "\n".join(lines)


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
    if shipments["unconfirmed"]:
        lines.append("delivered, not yet confirmed on Amazon (ship by, soonest first):")
        for item in shipments["unconfirmed"]:
            waiting = f", {item['waiting']} waiting for Amazon" if item["waiting"] else ""
            lines.append(f"  {item['ship_by'] or 'no ship-by':20}  {item['order_id']}  {item['warehouse']}  "
                         f"{item['confirmed']}/{item['units']} units confirmed{waiting}")
    return lines


def cmd_shipments_process(args: argparse.Namespace) -> int:
    from bridge.service import open_service

    settings = _settings(args)
    now = args.now or datetime.now(timezone.utc)
    with open_service(settings) as service:
        if not service.shipments.enabled:
            print("no warehouse has a shipments_folder or local_shipments_folder: nothing to do")
            return EXIT_OK
        report = service.shipments.run(now, settle=args.now is None)
    print(report.summary())
    for error in report.all_errors:
        print(f"  error: {error}", file=sys.stderr)
    if report.needs_a_person:
        return EXIT_SETUP
    return EXIT_OK if not report.all_errors else EXIT_ERRORS


def cmd_replay(args: argparse.Namespace) -> int:
    from bridge.service import open_service

    settings = _settings(args)
    warehouse = next((w for w in settings.warehouses if w.name == args.warehouse), None)
    if warehouse is None:
        raise FixTheSetup(f"no warehouse named {args.warehouse!r} (known: "
                          f"{', '.join(w.name for w in settings.warehouses)})")
    if warehouse.mapping.shipments is None:
        raise FixTheSetup(f"the mapping {warehouse.mapping.name} of {warehouse.name} has no [shipments] section")
    now = args.now or datetime.now(timezone.utc)
    with open_service(settings, exclusive=False) as service:  # reads only: fine beside the service
        try:
            result = service.shipments.replay(args.file, warehouse, now)
            next_id = service.ledger.next_package_id()
        except OSError as problem:
            raise FixTheSetup(f"cannot read {args.file}: {problem.strerror}") from None
    print(format_replay(args.file, warehouse.name, result, next_id))
    return EXIT_OK


def format_replay(path: Path, warehouse: str, result, next_id: int) -> str:
    """A dry run of a confirmation file: each row's fate, then each request as Amazon gets it."""
    from bridge.formats.shipments import ACCEPTED, confirm_request

    lines = [f"dry run of {path} for {warehouse}: {len(result.lines)} row(s), "
             f"{len(result.packages)} package(s) to confirm; nothing is sent or recorded"]
    for line in result.lines:
        if line.row in result.package_rows:
            index = result.package_rows[line.row]
            what = f"{ACCEPTED:9} package {index + 1} of this file"
        else:
            kind, message = result.outcomes[line.row]
            what = f"{kind:9} {message}"
        lines.append(f"  row {line.row:<5} {line.order_id:20} {line.item:20} x{line.quantity_text:<4} {what}")
    for index, package in enumerate(result.packages):
        body = confirm_request(package, next_id + index)
        lines.append(f"package {index + 1} (rows {', '.join(map(str, package.rows))}): POST "
                     f"/orders/v0/orders/{package.order_id}/shipmentConfirmation")
        lines.append("  " + json.dumps(body, indent=2).replace("\n", "\n  "))
    if result.packages:
        lines.append("(packageReferenceId: the ids the ledger would give these packages if the "
                     "file were taken now)")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.daemon import run_daemon

    settings = _settings(args)
    return run_daemon(settings, args.config)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from bridge.demo import serve_sandbox

    serve_sandbox(args.port, args.seed, fresh=args.fresh)
    return EXIT_OK


def cmd_spool_open(args: argparse.Namespace) -> int:
    from bridge.sealing import Sealer

    settings = load_settings(args.config)
    try:
        sealed = args.file.read_bytes()
    except OSError as problem:
        raise FixTheSetup(f"cannot read {args.file}: {problem.strerror}") from None
    sys.stdout.buffer.write(Sealer(settings.state_key).open(sealed, f"spool file {args.file}"))
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from bridge.sealing import new_key

    print(new_key())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return run_demo(args.workdir)


if __name__ == "__main__":
    raise SystemExit(main())
