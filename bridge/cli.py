"""The `fbm-bridge` command: parses arguments, loads config, calls a flow, the daemon or the demo.

Exit status: 0 done, 1 a run finished with errors (retried next run), 2 setup is wrong (config,
credentials, host key) and needs a person.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge import DEFAULT_CONFIG_PATH, __version__
from bridge.errors import BridgeError, ConfigError, FixTheSetup

if TYPE_CHECKING:
    from bridge.config import Settings

# Each command imports what it uses when it runs: `--help` and `status` start in a few
# hundredths of a second (bench/command_startup.py; tests/test_imports.py keeps it so).

EXIT_OK, EXIT_ERRORS, EXIT_SETUP = 0, 1, 2


def __getattr__(name: str) -> Any:
    """`status`'s text, kept importable from here (`from bridge.cli import format_status`)."""
    if name in ("format_status", "format_shipments_status", "format_stock_status"):
        from bridge import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_settings(path: Path, **options: Any) -> Settings:
    from bridge import config

    return config.load_settings(path, **options)


def parse_iso(text: str) -> datetime:
    from bridge.records import parse_iso

    return parse_iso(text)


def main(argv: list[str] | None = None) -> int:
    args = _with_descriptions(_parser()).parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # inside the try: a reader that has gone is said below, not at exit
        return code
    except BrokenPipeError:  # `fbm-bridge status | head`: the reader took what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERRORS
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
    except OSError as problem:  # a local fault no edge expected: still one line, for a person
        where = f"{problem.filename}: " if problem.filename else ""
        print(f"fbm-bridge: {where}{problem.strerror or problem}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        return 130


DESCRIPTION = ("Amazon orders (merchant-fulfilled) to a warehouse's SFTP drop as CSV, XML or XLSX files,"
               " exactly once.")
EPILOG = "Exit status: 0 done; 1 errors that the next run retries; 2 the setup needs a person."
CONFIG_HELP = f"config file (default {DEFAULT_CONFIG_PATH}); also accepted after the command"
CONFIG_AFTER_HELP = (f"config file (default {DEFAULT_CONFIG_PATH}); also accepted before the command;"
                     " given in both places, this one wins")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fbm-bridge", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"fbm-bridge {__version__}")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, metavar="PATH", help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="what to do; `fbm-bridge COMMAND --help` shows its options")

    check = commands.add_parser("check", help="validate config and mappings, log in to SFTP and Amazon")
    _config_after_command(check)
    check.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)  # the PII check's "recent orders"
    check.set_defaults(handler=cmd_check)

    orders = commands.add_parser("orders", help="orders down")
    orders_commands = orders.add_subparsers(dest="orders_command", required=True, metavar="ACTION",
                                            help="what to do with orders")
    pull = orders_commands.add_parser("pull", help="one run now: pull, render, deliver")
    _config_after_command(pull)
    # Hidden: a made-up "now" in the future would move the bookmark past orders not yet pulled.
    pull.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    pull.add_argument("--dry-run", action="store_true",
                      help="show what would be sent; record, spool and upload nothing (default: a real run)")
    pull.add_argument("--out", type=Path, metavar="DIR",
                      help="with --dry-run: also write the files that would be sent here, per warehouse (default: none written)")
    pull.set_defaults(handler=cmd_orders_pull)

    status = commands.add_parser("status", help="what the bridge holds, delivered and needs help with")
    _config_after_command(status)
    status.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    status.add_argument("--order", metavar="ORDER_ID",
                        help="one order's status, file, history and packages (default: the whole report)")
    status.add_argument("--prometheus", action="store_true",
                        help="node_exporter textfile format, for monitoring (default: text)")
    status.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    status.set_defaults(handler=cmd_status)

    resend = commands.add_parser(
        "resend", help="deliver a delivered order again, under a new file name (tell the warehouse)")
    _config_after_command(resend)
    resend.add_argument("order_id", metavar="ORDER_ID", help="the Amazon order id, e.g. 302-1234567-1234567")
    resend.add_argument("--reason", required=True, metavar="TEXT",
                        help="why it is sent again (required; recorded with your user name and the time)")
    resend.add_argument("--even-if-shipped", action="store_true",
                        help="resend an order whose every unit is confirmed shipped on Amazon (default: refused,"
                             " the warehouse could ship it twice)")
    resend.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    resend.set_defaults(handler=cmd_resend)

    report = commands.add_parser("report", help="the reconciliation workbook for staff (.xlsx): orders, due soon,"
                                                 " rejected rows, stock feeds")
    _config_after_command(report)
    report.add_argument("--from", dest="first", type=_day, metavar="YYYY-MM-DD",
                        help="first UTC day of the period: orders the bridge first downloaded on or after it"
                             " (default: 29 days before --to)")
    report.add_argument("--to", dest="last", type=_day, metavar="YYYY-MM-DD",
                        help="last UTC day of the period, included (default: today)")
    report.add_argument("--out", type=Path, required=True, metavar="FILE.xlsx",
                        help="the workbook to write, mode 0600 (required; an existing file only with --force)")
    report.add_argument("--force", action="store_true", help="replace --out if it exists (default: refuse)")
    report.add_argument("--feeds", type=_count, default=10, metavar="N",
                        help="the N newest stock files in the Inventory feeds sheet (default 10)")
    report.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    report.set_defaults(handler=cmd_report)

    run = commands.add_parser("run", help="the long-running service (systemd): every job (orders, shipments, stock) on its schedule")
    _config_after_command(run)
    run.set_defaults(handler=cmd_run)

    sandbox = commands.add_parser("sandbox", help="a local SP-API on 127.0.0.1 for trials and tests")
    sandbox.add_argument("--port", type=int, default=8700, help="port on 127.0.0.1 (default 8700)")
    sandbox.add_argument("--seed", type=Path, metavar="FILE",
                         help="orders JSON: a list of Amazon searchOrders Order objects (default: the demo orders)")
    sandbox.add_argument("--fresh", action="store_true",
                         help="move the orders' update times to 55 to 35 minutes ago, inside the first window of a"
                              " bridge without orders.start that pulls within 5 minutes (default: as in the seed)")
    sandbox.add_argument("--rate-scale", type=_positive, default=1, metavar="N",
                         help="multiply every operation's rate limit by N, bursts unchanged, e.g. 1000 for a"
                              " catch-up in seconds (default 1: Amazon's published usage plans)")
    sandbox.set_defaults(handler=cmd_sandbox)

    shipments = commands.add_parser("shipments", help="shipments up: confirmation files to Amazon")
    shipments_commands = shipments.add_subparsers(dest="shipments_command", required=True, metavar="ACTION",
                                                  help="what to do with shipment confirmation files")
    process = shipments_commands.add_parser(
        "process", help="one pass now over the SFTP and local folders: take, confirm, answer")
    _config_after_command(process)
    process.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    process.set_defaults(handler=cmd_shipments_process)
    settle = shipments_commands.add_parser(
        "settle", help="a delivered order shipped partly outside the bridge is done: stop waiting for its confirmation")
    _config_after_command(settle)
    settle.add_argument("order_id", metavar="ORDER_ID", help="the Amazon order id, e.g. 111-0000005-0000005")
    settle.add_argument("--note", default="", help="why, for the order's history (default empty)")
    settle.add_argument("--undo", action="store_true",
                        help="take a settling back (a mistyped id): the order is listed again until confirmed "
                             "(default: settle it)")
    settle.set_defaults(handler=cmd_shipments_settle)

    inventory = commands.add_parser("inventory", help="stock up: the warehouse's stock file to Amazon")
    inventory_commands = inventory.add_subparsers(dest="inventory_command", required=True, metavar="ACTION",
                                                  help="what to do with stock files")
    push = inventory_commands.add_parser(
        "push", help="publish now: the newest stock file received since the last publish")
    _config_after_command(push)
    push.add_argument("--force", action="store_true",
                      help="publish the held stock file, overriding the safety gates that held it (default: gates apply)")
    push.add_argument("--dry-run", action="store_true",
                      help="print the feed it would send and the gates' verdict; send, record and move nothing"
                           " (default: a real push)")
    push.add_argument("--out", type=Path, metavar="DIR",
                      help="with --dry-run: write the feed documents here instead of printing them (default: printed)")
    push.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    push.set_defaults(handler=cmd_inventory_push)

    replay = commands.add_parser("replay", help="show what a confirmation file would send to Amazon")
    _config_after_command(replay)
    replay.add_argument("file", type=Path, help="a shipment confirmation file")
    replay.add_argument("--warehouse", required=True, metavar="NAME", help="whose mapping reads the file")
    replay.add_argument("--dry-run", action="store_true", required=True,
                        help="required: parse and print, row by row; nothing is sent or recorded")
    replay.add_argument("--now", type=parse_iso, help=argparse.SUPPRESS)
    replay.set_defaults(handler=cmd_replay)

    spool = commands.add_parser("spool", help="the local copies of delivered files")
    spool_commands = spool.add_subparsers(dest="spool_command", required=True, metavar="ACTION",
                                          help="what to do with a spool file")
    spool_open = spool_commands.add_parser("open", help="write a spool file to stdout as it was delivered")
    _config_after_command(spool_open)
    spool_open.add_argument("file", type=Path, help="a file under STATE_DIR/spool/WAREHOUSE/")
    spool_open.set_defaults(handler=cmd_spool_open)

    keygen = commands.add_parser("keygen", help="print a new BRIDGE_STATE_KEY (seals buyer data at rest)")
    keygen.set_defaults(handler=cmd_keygen)

    preview = commands.add_parser(
        "preview", help="lay orders out with a mapping, to try it: no config, credentials or Amazon needed")
    preview.add_argument("--mapping", type=Path, required=True, metavar="FILE", help="the mapping to try, e.g. mappings/acme-csv.toml")
    preview.add_argument("--orders", type=Path, required=True, metavar="FILE",
                         help="orders JSON: records (like samples/orders.json) or Amazon searchOrders Order objects")
    preview.add_argument("--out", type=Path, metavar="DIR",
                         help="also write the files here, mode 0600: they hold buyer data (default: none written)")
    preview.add_argument("--now", type=_iso_time, metavar="ISO",
                         help="the run time the files are dated and named by, e.g. 2026-11-20T12:30:00Z (default: now)")
    preview.set_defaults(handler=cmd_preview)

    rekey = commands.add_parser(
        "rekey", help="reseal the ledger, spool and backups from BRIDGE_STATE_KEY to BRIDGE_STATE_KEY_NEW"
                      " (service stopped)")
    _config_after_command(rekey)
    rekey.set_defaults(handler=cmd_rekey)

    fresh = commands.add_parser(
        "fresh-start", help="a used state folder lost its ledger: start a new one, pulling orders from --from")
    _config_after_command(fresh)
    fresh.add_argument("--from", dest="start", type=_iso_time, required=True, metavar="ISO",
                       help="pull orders updated from this time on, e.g. 2026-11-20T00:00:00Z (required: no default)")
    fresh.set_defaults(handler=cmd_fresh_start)

    accept = commands.add_parser(
        "accept-restore", help="confirm that the ledger in place (a restored backup) is the one to use")
    _config_after_command(accept)
    accept.set_defaults(handler=cmd_accept_restore)

    backup = commands.add_parser("backup", help="take today's ledger backup now and list the backups")
    _config_after_command(backup)
    backup.add_argument("--list", action="store_true", help="only list the backups (default: take one, then list)")
    backup.set_defaults(handler=cmd_backup)

    demo = commands.add_parser("demo", help="the whole flow against a local sandbox and SFTP server, no accounts needed")
    demo.add_argument("--workdir", type=Path, default=Path("demo-run"), metavar="DIR",
                      help="where the demo keeps its config, state, secrets and drops; a re-run removes only what"
                           " a previous demo made there, and a folder holding anything else is refused (default ./demo-run)")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _with_descriptions(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every `fbm-bridge COMMAND --help` opens with the command's one line (its help in the list
    of commands) and ends with the exit statuses, like `fbm-bridge --help`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # argparse keeps each command's help only here
                child = action.choices[choice.dest]
                child.description = child.description or (choice.help[:1].upper() + choice.help[1:] + ".")
                child.epilog = child.epilog or EPILOG
                _with_descriptions(child)
    return parser


def _config_after_command(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: not given here, the value from before the command (or its default) stays;
    # given in both places, the later one (this one) wins, as with any repeated option.
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH", help=CONFIG_AFTER_HELP)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


CHECK_PATIENCE_SECONDS = 10  # check waits out a short rate-limit pause, not a long one


class RateSpent(Exception):
    """`check` does not sit out Amazon's rate limit: a running service may have spent it."""


def _impatient(seconds: float) -> None:
    """`check`'s waits: a short one is waited out, a long one (Amazon's searchOrders limit, shared
    with the service that runs on the same seller's account) ends the check of that step."""
    if seconds > CHECK_PATIENCE_SECONDS:
        raise RateSpent(f"Amazon asks to wait {seconds:.0f} s: its rate limit is spent (a running service"
                        " shares it); run check again later")
    time.sleep(seconds)


def _day(text: str):
    import re
    from datetime import date

    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day: {text!r} (give YYYY-MM-DD, e.g. 2026-11-01)") from None
    if not 2000 <= day.year <= 2999:
        raise argparse.ArgumentTypeError(f"{text}: give a day from 2000 to 2999")
    return day


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return int(text)


def _iso_time(text: str) -> datetime:
    try:
        return parse_iso(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-20T12:30:00Z)") from None


def _settings(args: argparse.Namespace) -> Settings:
    from bridge.service import configure_logging

    settings = load_settings(args.config)
    configure_logging(settings.log_level)
    return settings


def cmd_check(args: argparse.Namespace) -> int:
    from bridge import state
    from bridge.edges.amazon import AmazonOrders
    from bridge.edges.sftp import SftpDrop
    from bridge.errors import PiiAccessMissing
    from bridge.flows.inbound import check_sources

    settings = _settings(args)
    print(f"config    ok  {settings.path} ({len(settings.warehouses)} warehouse(s))")
    if not settings.ledger_path.exists():  # before the first pull, where it starts matters
        print(_first_pull_line(settings, args.now or datetime.now(timezone.utc)))
    failures = 0
    for warehouse in settings.warehouses:
        print(f"mapping   ok  {warehouse.name}: {warehouse.mapping.name} ({warehouse.mapping.orders.format})")
        try:
            with SftpDrop(warehouse.sftp) as drop:
                fingerprint = drop.check()
                drop.listdir(warehouse.orders_folder)
                prove_writable(drop, warehouse.orders_folder)
            print(f"sftp      ok  {warehouse.name}: {warehouse.sftp.username}@{warehouse.sftp.host}:{warehouse.sftp.port} host key {fingerprint}, {warehouse.orders_folder} readable and writable")
        except BridgeError as problem:
            failures += 1
            print(f"sftp      FAIL {warehouse.name}: {problem}")
    for ok, line in check_sources(settings):  # shipments and stock folders, SFTP and local
        failures += not ok
        print(f"folder    {'ok ' if ok else 'FAIL'} {line}")
    amazon = AmazonOrders(settings.amazon, sleep=_impatient)
    try:
        amazon.check()
        print(f"amazon    ok  token from {settings.amazon.token_url}, endpoint {settings.amazon.endpoint}")
        try:
            pii = amazon.check_pii(args.now or datetime.now(timezone.utc))
        except RateSpent as problem:
            pii = f"not proven: {problem}"
        print(f"pii       {'??' if pii.startswith('not proven') else 'ok'}  {pii}")
    except PiiAccessMissing as problem:
        failures += 1
        print(f"pii       FAIL {problem}")
    except BridgeError as problem:
        failures += 1
        print(f"amazon    FAIL {problem}")
    try:  # run as the service's user, this says whether the service can keep its state
        print(f"state     ok  {state.check_folder(settings)}")
    except BridgeError as problem:
        failures += 1
        print(f"state     FAIL {problem}")
    return EXIT_OK if not failures else EXIT_SETUP


def prove_writable(drop, folder: str) -> None:
    """Create and remove a probe file in `folder`, named as a temporary file (a leading dot,
    the .part suffix) so the warehouse's system ignores it if it lists the folder meanwhile."""
    import secrets

    probe = f"{folder.rstrip('/')}/.fbm-bridge-probe-{secrets.token_hex(4)}.part"
    try:
        drop.put_bytes(b"", probe)
    except FixTheSetup as problem:
        raise FixTheSetup(f"{folder} is not writable: {problem}") from None
    drop.remove(probe)


def _out_needs_dry_run(args: argparse.Namespace) -> None:
    """`--out` asks to look: without --dry-run it would be ignored while a real run happens."""
    if getattr(args, "out", None) is not None and not args.dry_run:
        raise FixTheSetup("--out needs --dry-run: nothing was done (add --dry-run to write the files there, "
                          "or leave out --out for a real run)")


def cmd_orders_pull(args: argparse.Namespace) -> int:
    from bridge.service import open_service

    _out_needs_dry_run(args)
    settings = _settings(args)
    now = args.now or datetime.now(timezone.utc)
    if args.dry_run:
        return _dry_run(settings, now, args.out)
    with open_service(settings) as service:
        report = service.run_orders(now)
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
        from bridge.edges.folders import make_private_dir, write_private

        try:
            out.mkdir(mode=0o700, parents=True, exist_ok=True)  # made here: 0700 too; an existing one is left as it is
            for warehouse, rendered in preview.files:  # buyer data: 0700 folders, 0600 files
                make_private_dir(out / warehouse)
                write_private(out / warehouse / rendered.name, rendered.data)
        except OSError as problem:
            raise FixTheSetup(f"cannot write the dry run's files into {out}: {problem.strerror}"
                              f"{f' ({problem.filename})' if problem.filename else ''}") from None
        print(f"files written under {out} (they hold buyer data: delete them when done)")
    return EXIT_OK


def _first_pull_line(settings: Settings, now: datetime) -> str:
    from bridge.records import iso_z
    from bridge.windows import next_window

    orders = settings.orders
    if orders.start is not None:
        return f"orders    ok  the first pull takes orders last updated from orders.start {iso_z(orders.start)} on"
    window = next_window(None, now, size=orders.window, lag=orders.lag)
    since = iso_z(window.start) if window is not None else iso_z(now)
    return (f"orders    ??  orders.start is not set: the first pull takes only orders last updated from about {since}"
            " on, and older open orders are never pulled (README: The first pull)")


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from bridge.report import format_status, status_report

    # Status reads counts, windows and events, never sealed buyer data: it needs no secret.
    settings = load_settings(args.config, require_secrets=False, mappings=False)
    now = args.now or datetime.now(timezone.utc)
    if args.order:
        return _order_status(settings, args.order, now, as_json=args.json)
    report = status_report(settings, now)
    if args.prometheus:
        from bridge.prometheus import exposition

        sys.stdout.write(exposition(report, instance=args.config.stem))
    elif args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_status(report))
    return EXIT_OK


def _order_status(settings: Settings, order_id: str, now: datetime, *, as_json: bool) -> int:
    import json

    from bridge.records import one_line, shown
    from bridge.report import order_report

    report = order_report(settings, order_id, now)
    if report is None:
        print(f"order {shown(order_id)} is not in the ledger: never pulled, or filtered out before it was recorded")
        return EXIT_ERRORS
    if as_json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    for key in ("order_id", "status", "reason", "warehouse", "file", "amazon_status", "first_seen_at", "delivered_at", "pii_purged_at"):
        if report.get(key):
            print(f"{key + ':':15} {one_line(report[key])}")
    for resend in report.get("resends", ()):
        state = "delivered " + resend["delivered_at"] if resend["delivered_at"] else (resend["status"] or "taken back")
        print(f"{'resend ' + str(resend['number']) + ':':15} {resend['warehouse']}: {resend['name']} ({state});"
              f" requested {resend['requested_at']} by {resend['requested_by']}: {one_line(resend['reason'])}")
    if report.get("ship_by"):
        overdue = "  OVERDUE: the ship-by date has passed and not every unit is confirmed" if report["overdue"] else ""
        if report.get("settled"):
            confirmed = f"settled by a person {report['settled']['at']}: {one_line(report['settled']['note'] or '-')}"
        elif report.get("confirmations_tracked", True):
            confirmed = f"{report['units_confirmed']}/{report['units']} units confirmed"
        else:  # confirmed by hand in Seller Central, if at all: the bridge never hears of it
            confirmed = "confirmations not tracked: the warehouse has no shipments folder"
        print(f"{'ship_by:':15} {report['ship_by']} ({confirmed}){overdue}")
    print("history:")
    for event in report["events"]:
        print(f"  {event['at']}  {event['kind']:24} {one_line(event['detail'])}")
    if report.get("packages"):
        print("packages:")
    for package in report.get("packages", []):
        answer = f": {one_line(package['message'])}" if package["message"] else ""
        print(f"  package {package['id']}  {package['status']:9} {package['units']} unit(s)  tracking"
              f" {shown(package['tracking_number'])} ({shown(package['carrier_code'])}) shipped {package['ship_date']}"
              f"  from {package['file']!r} row {package['row']}{answer}")
    return EXIT_OK


def cmd_resend(args: argparse.Namespace) -> int:
    from bridge.flows.resend import resend
    from bridge.service import configure_logging, open_service

    settings = _state_settings(args)  # the state key and the drop's login; Amazon is not asked
    configure_logging(settings.log_level)
    now = args.now or datetime.now(timezone.utc)
    with open_service(settings) as service:
        print(resend(service.orders, args.order_id, args.reason, requested_by(), now,
                     even_if_shipped=args.even_if_shipped).line())
    return EXIT_OK


def requested_by() -> str:
    """Who asked, for the record: the person behind sudo, else the login name."""
    import getpass

    return os.environ.get("SUDO_USER") or getpass.getuser()


def cmd_shipments_process(args: argparse.Namespace) -> int:
    from bridge.service import open_service

    settings = _settings(args)
    now = args.now or datetime.now(timezone.utc)
    with open_service(settings) as service:
        if not service.shipments.enabled:
            print("no warehouse has a shipments_folder or local_shipments_folder: nothing to do")
            return EXIT_OK
        report = service.shipments.run(now, settle=args.now is None)
    for line in report.inbound.in_error:
        print(line)
    print(report.summary())
    for error in report.all_errors:
        print(f"  error: {error}", file=sys.stderr)
    if report.needs_a_person:
        return EXIT_SETUP
    return EXIT_OK if not report.all_errors else EXIT_ERRORS


def cmd_shipments_settle(args: argparse.Namespace) -> int:
    from bridge import state
    from bridge.sealing import Sealer

    settings = _state_settings(args)  # it writes the ledger only: no Amazon secret
    now = datetime.now(timezone.utc)
    with state.state_lock(settings.state_dir):
        ledger = state.open_ledger(settings, Sealer(settings.state_key), now)
        try:
            if args.undo:
                done = ledger.unsettle_order(args.order_id, args.note, now)
                print(f"{args.order_id}: " + ("settling taken back: listed again until it is confirmed" if done
                                               else "was not settled: nothing to take back"))
                return EXIT_OK
            done = ledger.settle_order(args.order_id, args.note, now)
            sent = ledger.packages_sent_for(args.order_id)
        except KeyError:
            raise FixTheSetup(f"{args.order_id} is not an order the bridge delivered to a warehouse: "
                              "nothing to settle") from None
        finally:
            ledger.close()
    stock = next((w for w in settings.warehouses if w.name == settings.stock.warehouse), None)
    on_hand = stock is not None and stock.mapping is not None and stock.mapping.stock is not None \
        and stock.mapping.stock.quantity_means == "on_hand"
    print(f"{args.order_id}: " + ("settled" if done else "already settled") + ": no longer listed as not yet "
          "confirmed" + (", and its units no longer count as in flight for the stock (quantity_means = on_hand)"
                         if on_hand else ""))
    if done and not sent:  # settle is for orders shipped partly outside the bridge: a typo hides a late order
        print(f"note: no confirmation file of the warehouse has named {args.order_id}: if it was not shipped "
              f"outside the bridge, check the id; `fbm-bridge shipments settle {args.order_id} --undo` takes this back")
    return EXIT_OK


def cmd_inventory_push(args: argparse.Namespace) -> int:
    from bridge.service import open_service

    _out_needs_dry_run(args)
    settings = _settings(args)
    if settings.stock.warehouse is None:
        raise FixTheSetup(f"{settings.path}: no stock.warehouse is configured: no warehouse publishes stock")
    if args.dry_run:
        return _inventory_dry_run(settings, args.force, args.out, args.now or datetime.now(timezone.utc))
    now = args.now or datetime.now(timezone.utc)
    with open_service(settings) as service:
        report = service.stock.push(now, force=args.force, settle=args.now is None)
    print(format_stock_push(report))
    for error in report.all_errors:
        print(f"  error: {error}", file=sys.stderr)
    if report.needs_a_person:
        return EXIT_SETUP
    return EXIT_OK if not report.all_errors else EXIT_ERRORS


def format_stock_push(report) -> str:
    """What `inventory push` did: why nothing happened, or each file's verdict and problems."""
    from bridge.records import one_line

    lines = list(report.notes) + list(report.inbound.in_error)
    for outcome in report.outcomes:
        told = outcome.reason.startswith(outcome.status)  # "held: ...", "published with --force, ..."
        lines.append(f"{outcome.name}: " + (one_line(outcome.reason) if told else outcome.status + (
            f": {one_line(outcome.reason)}" if outcome.reason else "")))
        for issue in outcome.issues[:20]:
            lines.append(f"  {_stock_issue(issue)}")
        total = sum(outcome.issue_counts.values()) or len(outcome.issues)
        if total > 20:
            lines.append(f"  ... and {total - 20:,} more (see the file's result file)")
        if outcome.status == "held" and outcome.documents:
            lines.append("  check the file with the warehouse; if it is right, `fbm-bridge inventory push --force` "
                         "(with the service stopped: `systemctl stop fbm-bridge`, or `fbm-bridge@NAME` for an instance, and start it again after) "
                         "publishes it")
        elif outcome.status == "submitting" and not outcome.errors:
            lines.append("  Amazon is still processing it: the service (or the next push) reads its report")
    lines.append(report.summary())
    return "\n".join(lines)


def _stock_issue(issue: dict) -> str:
    from bridge.records import one_line

    where = f"row {issue['row']}" if issue["row"] is not None else "the whole file"
    if issue["source"] == "amazon":
        code = f" [{issue['code']}]" if issue["code"] else ""
        return f"{where}, SKU {issue['sku']!r}: Amazon {issue['severity'].lower()}{code}: {one_line(issue['message'])}"
    column = f", column {issue['column_name']!r}" if issue["column_name"] else ""
    return f"{where}{column}: {one_line(issue['message'])}"


def _inventory_dry_run(settings: Settings, force: bool, out: Path | None, now: datetime) -> int:
    import tempfile

    from bridge.flows.inventory import StockPreview
    from bridge.records import one_line
    from bridge.service import open_service

    with open_service(settings, exclusive=False) as service, tempfile.TemporaryDirectory() as scratch:
        target = out or Path(scratch) / "documents"
        (Path(scratch) / "files").mkdir()
        try:
            preview, notes = service.stock.preview(Path(scratch) / "files", out_dir=target, force=force, now=now)
        except OSError as problem:
            raise FixTheSetup(f"cannot write the dry run's documents into {target}: {problem.strerror}") from None
        for note in notes:
            print(f"dry run: {note}")
        if preview is None:
            return EXIT_OK
        if isinstance(preview, StockPreview):
            shown = preview.documents
            if out is None:
                preview.documents = []  # written to a scratch folder that is gone once this ends
            print(preview.summary())
            documents = shown
        else:  # the held file, as --force would publish it
            print(f"dry run: {preview.name} is held; --force would publish it, overriding: "
                  f"{one_line(preview.reason.removeprefix('held: '))}")
            documents = [settings.state_dir / "stock" / d.spool_path for d in service.ledger.stock_feeds(preview.id)]
        if out is not None and isinstance(preview, StockPreview):
            print(f"documents written under {out}")
        else:
            for path in documents:
                print(f"--- {path.name}")
                sys.stdout.write(path.read_text("utf-8"))
                print()
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from bridge import state
    from bridge.errors import BadFile
    from bridge.records import one_line
    from bridge.sealing import Sealer
    from bridge.service import configure_logging, shipments_flow

    # Sends nothing: no Amazon secret unless an unknown order is looked up; the state key only
    # if the file names orders the ledger holds (their records are sealed).
    settings = load_settings(args.config, require_secrets=False)
    configure_logging(settings.log_level)
    warehouse = next((w for w in settings.warehouses if w.name == args.warehouse), None)
    if warehouse is None:
        raise FixTheSetup(f"no warehouse named {args.warehouse!r} (known: "
                          f"{', '.join(w.name for w in settings.warehouses)})")
    if warehouse.mapping.shipments is None:
        raise FixTheSetup(f"the mapping {warehouse.mapping.name} of {warehouse.name} has no [shipments] section")
    now = args.now or datetime.now(timezone.utc)
    sealer = Sealer(settings.state_key) if settings.state_key else None
    ledger = state.open_ledger(settings, sealer, now, writable=False)  # reads only: fine beside the service
    try:
        flow = shipments_flow(settings, ledger)
        if not all((settings.amazon.client_id, settings.amazon.client_secret, settings.amazon.refresh_token)):
            flow.amazon = _NoAmazonSecrets()
        try:
            result = flow.replay(args.file, warehouse, now)
            next_id = state.next_package_id(settings, ledger)
        except OSError as problem:
            raise FixTheSetup(f"cannot read {args.file}: {problem.strerror}") from None
        except BadFile as problem:  # a person must fix or change the file: one line, exit 2
            raise FixTheSetup(f"{args.file} cannot be read with the mapping {warehouse.mapping.name} of "
                              f"{warehouse.name}: {one_line(problem)}") from None
    finally:
        ledger.close()
    feed_of = settings.amazon.seller_id if settings.shipments.send == "feed" else None
    print(format_replay(args.file, warehouse.name, result, next_id, feed_of=feed_of))
    return EXIT_OK


class _NoAmazonSecrets:
    """Amazon for a replay without the BRIDGE_LWA_* secrets: only a look-up needs them."""

    def order(self, order_id: str):
        from bridge.records import shown

        raise FixTheSetup(f"order {shown(order_id)} is not in the ledger, and looking it up on Amazon"
                          " (shipments.lookup_unknown_orders) needs the BRIDGE_LWA_* secrets")


def format_replay(path: Path, warehouse: str, result, next_id: int, *, feed_of: str | None = None) -> str:
    """A dry run of a confirmation file: each row's fate, then each request as Amazon gets it
    (`feed_of`: the seller id, when shipments.send = "feed": the fulfillment feed document)."""
    import json

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
    if feed_of is not None and result.packages:
        from bridge.formats.fulfillment_feed import fulfillment_feed

        for index, package in enumerate(result.packages):
            lines.append(f"package {index + 1} (rows {', '.join(map(str, package.rows))}): message "
                         f"{next_id + index} of the order fulfillment feed")
        document = fulfillment_feed(feed_of, [(next_id + i, p) for i, p in enumerate(result.packages)])
        lines.append("the POST_ORDER_FULFILLMENT_DATA document (shipments.send = \"feed\"; packages other files "
                     "have waiting then go in the same one):")
        lines.append("  " + document.decode("utf-8").rstrip("\n").replace("\n", "\n  "))
    for index, package in enumerate(result.packages if feed_of is None else ()):
        body = confirm_request(package, next_id + index)
        lines.append(f"package {index + 1} (rows {', '.join(map(str, package.rows))}): POST "
                     f"/orders/v0/orders/{package.order_id}/shipmentConfirmation")
        lines.append("  " + json.dumps(body, indent=2).replace("\n", "\n  "))
    if result.packages:
        lines.append(f"({'MessageID' if feed_of is not None else 'packageReferenceId'}: the ids the ledger would "
                     "give these packages if the file were taken now)")
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    from bridge import state
    from bridge.flows.reconciliation import check_out, period_of, write_report
    from bridge.sealing import Sealer
    from bridge.service import configure_logging

    now = args.now or datetime.now(timezone.utc)
    period = period_of(args.first, args.last, now)
    check_out(args.out, force=args.force)
    # The state key opens the orders' records for their dates and marketplace; no other secret.
    settings = _state_settings(args)
    configure_logging(settings.log_level)
    if not settings.ledger_path.exists():
        raise FixTheSetup(f"there is no ledger at {settings.ledger_path}: nothing to report (the bridge has not run yet)")
    ledger = state.open_ledger(settings, Sealer(settings.state_key), now, writable=False)  # reads only
    try:
        written = write_report(settings, ledger, period, args.out, now, force=args.force, feeds=args.feeds)
    finally:
        ledger.close()
    print(written.summary())
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.daemon import run_daemon

    settings = _settings(args)
    return run_daemon(settings, args.config)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from bridge.demo import serve_sandbox

    serve_sandbox(args.port, args.seed, fresh=args.fresh, rate_scale=args.rate_scale)
    return EXIT_OK


def cmd_spool_open(args: argparse.Namespace) -> int:
    from bridge import state
    from bridge.sealing import Sealer

    settings = _state_settings(args)  # the state key, and no other secret
    try:
        sealed = args.file.read_bytes()
    except OSError as problem:
        raise FixTheSetup(f"cannot read {args.file}: {problem.strerror}") from None
    sys.stdout.buffer.write(state.open_spool_file(settings, Sealer(settings.state_key), args.file, sealed))
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from bridge.sealing import new_key

    print(new_key())
    return EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    from bridge.flows.preview import preview_mapping, write_files

    preview = preview_mapping(args.mapping, args.orders, args.now or datetime.now(timezone.utc))
    print(preview.summary())
    if args.out is not None:
        write_files(preview, args.out)
        print(f"files written under {args.out} (mode 0600: they hold buyer data; delete them when done)")
    if preview.source.unreadable:
        print(f"fbm-bridge: {len(preview.source.unreadable)} order(s) in {args.orders} cannot be read (listed above)",
              file=sys.stderr)
        return EXIT_SETUP
    return EXIT_OK


def _state_settings(args: argparse.Namespace) -> Settings:
    """Settings for commands that use the state key and no other secret."""
    from bridge.config import STATE_KEY

    settings = load_settings(args.config, require_secrets=False)
    if not settings.state_key:  # not a fault of the config: a secret this command needs
        command = " ".join(filter(None, (args.command, getattr(args, f"{args.command}_command", None))))
        raise FixTheSetup(f"order data is sealed: `{command}` needs the secret {STATE_KEY} (environment"
                          f" variable, or the file $CREDENTIALS_DIRECTORY/{STATE_KEY})")
    return settings


def cmd_rekey(args: argparse.Namespace) -> int:
    from bridge import state
    from bridge.config import STATE_KEY_NEW, SecretUnreadable, read_secret
    from bridge.sealing import Sealer, is_key

    settings = _state_settings(args)
    try:
        new_key = read_secret(STATE_KEY_NEW, dict(os.environ))
    except SecretUnreadable as problem:
        raise FixTheSetup(str(problem)) from None
    if not new_key or not is_key(new_key):
        what = "is not set" if not new_key else "is not a key"
        raise FixTheSetup(f"secret {STATE_KEY_NEW} {what}: give the new key in the environment or in"
                          f" $CREDENTIALS_DIRECTORY/{STATE_KEY_NEW} (`fbm-bridge keygen` prints one)")
    if new_key == settings.state_key:
        raise FixTheSetup(f"{STATE_KEY_NEW} is the same key as BRIDGE_STATE_KEY: nothing to change")
    with state.state_lock(settings.state_dir):
        report = state.rekey(settings, Sealer(settings.state_key), Sealer(new_key), datetime.now(timezone.utc))
    print("\n".join(report.lines()))
    return EXIT_OK


def cmd_fresh_start(args: argparse.Namespace) -> int:
    from bridge import state
    from bridge.flows.orders import BOOKMARK
    from bridge.sealing import Sealer

    settings = _state_settings(args)
    now = datetime.now(timezone.utc)  # the audit record's time
    with state.state_lock(settings.state_dir):
        lines = state.fresh_start(settings, Sealer(settings.state_key), BOOKMARK, args.start, now)
    print("\n".join(lines))
    return EXIT_OK


def cmd_accept_restore(args: argparse.Namespace) -> int:
    from bridge import state
    from bridge.flows.orders import BOOKMARK
    from bridge.sealing import Sealer

    settings = _state_settings(args)
    now = datetime.now(timezone.utc)  # the audit record's time
    with state.state_lock(settings.state_dir):
        lines = state.accept_restore(settings, Sealer(settings.state_key), now, BOOKMARK)
    print("\n".join(lines))
    return EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    from bridge import state
    from bridge.ledger import Ledger

    # The backup copies sealed data as it is: no secret, and no lock (SQLite's online backup is
    # consistent beside a running service).
    settings = load_settings(args.config, require_secrets=False)
    if not args.list:
        if not settings.ledger_path.exists():
            raise FixTheSetup(f"there is no ledger at {settings.ledger_path}: nothing to back up")
        state.usable_folder(settings.state_dir)  # another user's folder: its backups stay its own
        ledger = Ledger(settings.ledger_path, None)
        try:
            print(f"backup taken: {state.take_backup(settings, ledger, datetime.now(timezone.utc))}")
        finally:
            ledger.close()
    backups = state.list_backups(settings)
    for path in backups:
        info = path.stat()
        taken = datetime.fromtimestamp(info.st_mtime, timezone.utc)
        print(f"{path}  {info.st_size} bytes  taken {taken:%Y-%m-%dT%H:%M:%SZ}")
    if not backups:
        print(f"no backups yet in {settings.state_dir / 'backups'} (the orders run takes one a day; `backup` takes one now)")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return run_demo(args.workdir)


if __name__ == "__main__":
    raise SystemExit(main())
