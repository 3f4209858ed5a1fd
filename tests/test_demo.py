"""`fbm-bridge demo`: the whole flow with no accounts, told as a story, in a folder that stays
usable afterwards; it never deletes what it did not make."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.demo import MARKER, prepare_workdir
from bridge.errors import FixTheSetup
from harness import REPO


def demo(workdir: Path) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") and k != "CREDENTIALS_DIRECTORY"}
    return subprocess.run([sys.executable, "-m", "bridge", "demo", "--workdir", str(workdir)], cwd=REPO,
                          env={**environ, "NO_PROXY": "127.0.0.1,localhost"}, capture_output=True, text=True, timeout=120)


def section(output: str, title: str) -> list[str]:
    """The lines under `== title...` up to the next section."""
    lines = output.split("\n== " + title, 1)[1].split("\n== ", 1)[0].splitlines()
    return [line.strip() for line in lines[1:] if line.strip()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    workdir = tmp_path_factory.mktemp("demo") / "run"
    done = demo(workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir, done


# --- the story ------------------------------------------------------------------------------

def test_the_demo_says_which_orders_each_delivered_file_carries(finished):
    _, done = finished
    files = section(done.stdout, "files delivered")
    assert files[0] == "acme/in/ACME_AUF_302-0000003-0000003.csv (381 bytes): 302-0000003-0000003"
    assert re.fullmatch(r"initech/in/initech_orders_\d{8}_\d{6}\.xlsx \(\d+ bytes\): 203-0000004-0000004", files[1])
    assert re.fullmatch(r"globex/in/GLOBEX_ORDERS_\d{8}T\d{6}Z\.xml \(\d+ bytes\):"
                        r" 111-0000001-0000001, 111-0000002-0000002, 111-0000005-0000005", files[2])
    assert len(files) == 3


def test_the_demo_says_why_each_order_went_to_its_warehouse(finished):
    _, done = finished
    why = section(done.stdout, "why each order went")
    assert "302-0000003-0000003  ship-to DE -> acme     acme takes DE" in why
    assert "203-0000004-0000004  ship-to GB -> initech  acme does not take GB; initech takes GB" in why
    assert ("111-0000001-0000001  ship-to US -> globex   acme and initech do not take US;"
            " globex takes every country: the catch-all") in why
    routing = section(done.stdout, "routing")
    assert [line.split()[0] for line in routing] == ["acme", "initech", "globex"]
    assert "(the catch-all)" in routing[2]


def test_the_demo_says_which_orders_were_not_sent_and_why(finished):
    _, done = finished
    not_sent = dict(line.split("  ", 1) for line in section(done.stdout, "orders not sent"))
    assert set(not_sent) == {"111-0000006-0000006", "111-0000007-0000007", "111-0000008-0000008"}
    assert not_sent["111-0000006-0000006"].startswith("fulfilled by Amazon (FBA)")
    assert not_sent["111-0000007-0000007"].startswith("SHIPPED on Amazon: never asked for")
    assert not_sent["111-0000008-0000008"].startswith("CANCELLED on Amazon before it was sent")


def cycles(output: str) -> list[str]:
    """The daemon's steps as the demo tells them: `[HH:MM:SS] what happened` (continuation
    lines folded into their step)."""
    steps: list[str] = []
    for line in section(output, "the daemon, cycle by cycle"):
        if re.match(r"\[\d\d:\d\d:\d\d\] ", line):
            steps.append(line[11:])
        elif steps and not line.startswith(("its log", "WARNING", "ERROR")):
            steps[-1] += " | " + line
    return steps


def test_the_daemon_runs_the_story_and_each_step_is_one_short_line(finished):
    _, done = finished
    steps = cycles(done.stdout)
    assert steps[0].startswith("the daemon starts: orders pulled every 5 min, SFTP shipments folders polled every 60 s,"
                               " the staff folder watched, acme's stock folder polled every 1 min, the stock published"
                               " daily at ")
    pulls = [step for step in steps if step.startswith("orders pull:")]
    assert re.fullmatch(r"orders pull: 8 windows \(\d\d:\d\d to \d\d:\d\d\), 6 orders from Amazon: 5 delivered in 3 files"
                        r" to the warehouses' SFTP drops \| sftp/acme/in/ACME_AUF_302-0000003-0000003\.csv"
                        r" \| sftp/initech/in/initech_orders_\d{8}_\d{6}\.xlsx \| sftp/globex/in/GLOBEX_ORDERS_\S+\.xml",
                        pulls[0])
    assert len(pulls) >= 2 and all(pull.endswith("nothing new, nothing sent (an order already delivered is never sent"
                                                 " again)") for pull in pulls[1:])
    assert steps[-2:] == ["the demo stops the daemon, as SIGTERM would: it finishes what it is doing and exits",
                          "the daemon stopped"]
    assert all(len(step.split(" | ")[0]) < 240 for step in steps)


def test_the_warehouses_answer_with_confirmation_files_and_a_stock_count(finished):
    _, done = finished
    steps = cycles(done.stdout)
    dropped = [step for step in steps if "dropped" in step]
    assert re.fullmatch(r"acme's WMS counted its stock \(10 lines: lots and bins, its own article numbers\) and dropped"
                        r" it in its SFTP stock folder: \| sftp/acme/stock/BESTAND_\d{8}\.csv", dropped[0])
    assert re.fullmatch(r"acme's WMS shipped 1 order and dropped a confirmation file in its SFTP shipments folder:"
                        r" \| sftp/acme/out/SHIPPED_acme_\d{14}\.csv", dropped[1])
    assert re.fullmatch(r"initech's staff shipped 1 order and dropped a confirmation file in a staff folder on this"
                        r" machine: \| drop/initech/SHIPPED_initech_\d{14}\.xlsx", dropped[2])
    assert re.fullmatch(r"globex's WMS shipped 3 orders and dropped a confirmation file in its SFTP shipments folder:"
                        r" \| sftp/globex/out/SHIPPED_globex_\d{14}\.xml", dropped[3])


def test_the_daemon_takes_the_files_confirms_the_parcels_and_publishes_the_stock_at_its_time(finished):
    _, done = finished
    steps = cycles(done.stdout)
    taken = [step for step in steps if step.startswith("shipments: ") and " taken: " in step]
    assert sum(int(step.split()[1]) for step in taken) == 3
    assert sum(int(re.search(r"taken: (\d+) packages? confirmed", step)[1]) for step in taken) == 4
    answered = " | ".join(taken)
    assert re.search(r"sftp/acme/out/SHIPPED_acme_\d{14}\.csv -> archive/, answered in"
                     r" sftp/acme/out/results/SHIPPED_acme_\d{14}\.result\.csv", answered)
    assert re.search(r"sftp/globex/out/SHIPPED_globex_\d{14}\.xml -> error/", answered)
    assert re.search(r"drop/initech/SHIPPED_initech_\d{14}\.xlsx -> archive/", answered)
    stock = [step for step in steps if step.startswith("stock: ")]
    assert re.fullmatch(r"stock: the daemon took BESTAND_\d{8}\.csv in \(10 rows\); it waits in processing/ for the daily"
                        r" publish", stock[0])
    assert stock[1].startswith("stock: the daily publish is due (") and "Europe/Berlin" in stock[1]
    assert re.fullmatch(r"stock: Amazon processed the feed: BESTAND_\d{8}\.csv published, 5 SKUs, 0 refused by Amazon,"
                        r" 0 bad rows \| answered in sftp/acme/stock/results/BESTAND_\d{8}\.result\.csv", stock[-1])


def test_the_daemons_log_goes_to_a_file_and_no_log_line_reaches_the_terminal(finished):
    workdir, done = finished
    assert " INFO " not in done.stdout + done.stderr
    assert done.stderr == ""
    told = section(done.stdout, "the daemon, cycle by cycle")
    assert re.fullmatch(r"its log, daemon\.log: \d+ lines \(one per event, a key=value summary per run\), \d+ warnings?,"
                        r" 0 errors", next(line for line in told if line.startswith("its log")))
    assert any(line.startswith("WARNING package rejected by Amazon id=") for line in told)  # the refused parcel
    log = (workdir / "daemon.log").read_text("utf-8").splitlines()
    summaries = [line for line in log if " INFO bridge.daemon job=orders result=ok " in line]
    assert len(summaries) >= 2 and "delivered=5" in summaries[0] and "delivered=0" in summaries[1]
    assert any(" INFO bridge.stock stock file=BESTAND_" in line and "status=published" in line for line in log)
    assert not any("Jürgen" in line or "Müller" in line for line in log)  # no buyer data


def test_the_demo_shows_a_glimpse_of_the_csv_xml_and_xlsx_files(finished):
    _, done = finished
    csv = section(done.stdout, "acme/in/ACME_AUF_302")
    assert csv[0].startswith("Mandant;Auftragsnummer;") and "Jürgen Müller" in csv[1]
    xml = section(done.stdout, "globex/in/GLOBEX_ORDERS_")
    assert xml[0] == '<?xml version="1.0" encoding="UTF-8"?>' and xml[-1].startswith("... (")
    xlsx = section(done.stdout, "initech/in/initech_orders_")
    assert xlsx[0].startswith("Order ID | Order Date |") and re.match(r"203-0000004-0000004 \| \d\d/\d\d/20\d\d \|", xlsx[1])


# --- shipments up -----------------------------------------------------------------------------

def test_the_demo_shows_each_fulfillment_the_sandbox_received(finished):
    _, done = finished
    received = section(done.stdout, "fulfillments the SP-API sandbox received")
    # package ids follow the order the daemon took the files in: the staff folder's may come first
    assert sorted(re.sub(r"package \d+", "package N", re.sub(r"tracking 1Z\d+", "tracking ...", line))
                  for line in received) == [
        "111-0000001-0000001  package N  FedEx  tracking ...  MUG-CER-350-BLU x2  by confirmShipment",
        "111-0000002-0000002  package N  FedEx  tracking ...  MUG-CER-350-BLU x6, TEA-INF-SS-01 x3, CST-CORK-4PK x2"
        "  by confirmShipment",
        "203-0000004-0000004  package N  USPS  tracking ...  CST-CORK-4PK x1, TEA-INF-SS-01 x2  by confirmShipment",
        "302-0000003-0000003  package N  DHL (DHL Paket)  tracking ...  KAN-GLAS-1L x1  by confirmShipment"]


def test_the_demo_shows_each_result_file_and_explains_the_parcel_amazon_refused(finished):
    workdir, done = finished
    results = section(done.stdout, "result files")
    acme = next(line for line in results if line.startswith("sftp/acme/out/results/"))
    assert acme.endswith("(the file went to archive/)")
    assert re.search(r"confirmed on Amazon as package \d+$",
                     (workdir / acme.split()[0]).read_text("utf-8-sig").splitlines()[1])
    assert any(line.startswith("drop/initech/results/") and line.endswith("(the file went to archive/)")
               for line in results)
    assert any(line.startswith("sftp/globex/out/results/") and line.endswith("(the file went to error/)")
               for line in results)
    refused = [line for line in results if ",rejected," in line]
    assert len(refused) == 2 and all(line.startswith(("38,rejected,111-0000005-0000005,", "42,rejected,"))
                                     for line in refused)
    assert re.search(r"Amazon refused package \d+: InvalidInput: quantity for orderItemId 50000005000001 exceeds the"
                     r" unshipped quantity$", refused[0])
    assert results[-1].startswith("why 111-0000005-0000005 was refused: the seller had shipped MUG-CER-350-BLU by "
                                  "hand before the bridge delivered the order")


# --- stock up -----------------------------------------------------------------------------------

def test_the_demo_shows_the_inventory_feed_the_sandbox_received_and_the_stock_files_answer(finished):
    workdir, done = finished
    feed = section(done.stdout, "the inventory feed the SP-API sandbox received")
    assert re.fullmatch(r"feed \d+  DONE  marketplace ATVPDKIKX0DER  5 messages", feed[0])
    assert feed[1:6] == ["CST-CORK-4PK       quantity 0  ships within 2 days",
                         "KAN-GLAS-1L        quantity 6  ships within 2 days",
                         "MUG-CER-350-BLU    quantity 1301  ships within 2 days",
                         "PLT-STN-27CM-4     quantity 7  ships within 2 days",
                         "TEA-INF-SS-01      quantity 16  ships within 2 days"]
    assert feed[6].startswith("from ACME's count: the three lots of article 100234 summed into MUG-CER-350-BLU")
    answer = section(done.stdout, "the stock file's result file")
    assert re.fullmatch(r"sftp/acme/stock/results/BESTAND_\d{8}\.result\.csv  \(the file went to archive/\)", answer[0])
    assert answer[1:] == ["row;result;sku;column;message", ";published;;;passed the safety gates. 5 SKUs sent, Amazon took 5"]


# --- the status at the end ----------------------------------------------------------------------

def test_the_status_at_the_end_names_each_flow(finished):
    _, done = finished
    status = section(done.stdout, "fbm-bridge status")
    assert any(line.startswith("orders: ") and "delivered=5" in line for line in status)
    assert "shipments: packages confirmed=4 rejected=1 waiting=0" in status
    assert any("111-0000005-0000005  globex  0/3 units confirmed" in line for line in status)
    assert any(line.startswith("stock: acme publishes daily at ") and "Europe/Berlin" in line for line in status)
    assert any(line.startswith("last published: 'BESTAND_") and ": published, 5 SKUs, 0 bad rows, 0 refused by Amazon"
               in line for line in status)


# --- the folder afterwards ------------------------------------------------------------------

def printed_commands(output: str) -> list[str]:
    lines = output.split("\nTry:\n", 1)[1].splitlines()
    return [line.strip() for line in lines if line.startswith("  ") and not line.startswith("    ")]


def test_the_demo_says_where_things_are_and_they_are_there(finished):
    workdir, done = finished
    listed = section(done.stdout, "where things are")
    where = dict(line.split(None, 1) for line in listed[:listed.index("Try:")])
    assert list(where) == ["bridge.toml", "daemon.log", "sftp/<warehouse>/in/", "sftp/acme/out/", "sftp/acme/stock/",
                           "drop/initech/", "sftp/globex/out/", "state/", "credentials/"]
    for path in where:
        assert (workdir / path.replace("<warehouse>", "acme")).exists(), path
    assert where["state/"].startswith("the state folder: the ledger (ledger.sqlite)")
    for folder in ("sftp/acme/out", "sftp/acme/stock", "drop/initech"):
        assert any((workdir / folder / "archive").iterdir()) and any((workdir / folder / "results").iterdir())


def test_the_printed_commands_work_in_the_folder_afterwards(finished):
    workdir, done = finished
    status, one_order, spool_open, report = printed_commands(done.stdout)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") and k != "CREDENTIALS_DIRECTORY"}
    run = lambda line: subprocess.run(["bash", "-c", line], cwd=workdir, env=environ, capture_output=True, timeout=60)

    shown = run(status)
    assert shown.returncode == 0, shown.stderr
    assert b"delivered=5" in shown.stdout and re.search(rb"windows: \d+ pulled, .* no gap, no overlap", shown.stdout)

    order = run(one_order)
    assert order.returncode == 0, order.stderr
    assert b"status:         delivered" in order.stdout and b"file:           acme: ACME_AUF_302" in order.stdout

    assert "CREDENTIALS_DIRECTORY=" in spool_open and spool_open.endswith("> ACME_AUF_302-0000003-0000003.csv")
    opened = run(spool_open)
    assert opened.returncode == 0, opened.stderr
    delivered = workdir / "sftp" / "acme" / "in" / "ACME_AUF_302-0000003-0000003.csv"
    assert (workdir / "ACME_AUF_302-0000003-0000003.csv").read_bytes() == delivered.read_bytes()

    assert report.startswith(f"CREDENTIALS_DIRECTORY={workdir / 'credentials'} ")
    assert report.endswith(f"--config {workdir / 'bridge.toml'} report --out {workdir / 'report.xlsx'}")


def test_the_state_left_behind_shows_the_confirmations_and_the_inventory_feed_reached_amazon(finished):
    workdir, _ = finished
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") and k != "CREDENTIALS_DIRECTORY"}
    shown = subprocess.run([sys.executable, "-m", "bridge", "--config", str(workdir / "bridge.toml"), "status", "--json"],
                           cwd=workdir, env=environ, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["shipments"]["packages"]["confirmed"] == 4 and status["shipments"]["packages"]["rejected"] == 1
    published = status["stock"]["last_published"]
    assert published["status"] == "published" and published["skus"] == 5 and published["amazon_errors"] == 0
    assert status["orders"]["delivered"] == 5


def test_the_printed_report_command_writes_the_workbook_once_the_bridge_has_one(finished):
    workdir, done = finished
    report = printed_commands(done.stdout)[3]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") and k != "CREDENTIALS_DIRECTORY"}
    has_report = subprocess.run([sys.executable, "-m", "bridge", "report", "--help"], capture_output=True, env=environ,
                                timeout=60).returncode == 0
    if not has_report:
        pytest.skip("this bridge has no `report` command yet")
    made = subprocess.run(["bash", "-c", report], cwd=workdir, env=environ, capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    from openpyxl import load_workbook

    load_workbook(workdir / "report.xlsx", read_only=True).close()


def test_the_demos_secrets_are_kept_private_in_its_folder(finished):
    workdir, _ = finished
    credentials = workdir / "credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
    for secret in credentials.iterdir():
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret.name
    assert (credentials / "BRIDGE_STATE_KEY").read_text().strip()


# --- the folder before: never delete what the demo did not make -----------------------------

def test_a_rerun_removes_what_the_previous_demo_made_and_keeps_everything_else(tmp_path):
    workdir = tmp_path / "run"
    assert demo(workdir).returncode == 0
    first_xml = next((workdir / "sftp" / "globex" / "in").glob("*.xml"))
    (workdir / "notes.txt").write_text("mine")
    (workdir / "sftp" / "acme" / "in" / "mine.csv").write_text("mine")  # inside a folder the demo made
    (workdir / "mine").mkdir()
    (workdir / "mine" / "deep.txt").write_text("mine")
    first_xml.rename(first_xml.with_name("renamed-by-me.xml"))  # no longer a name the demo made: it stays

    again = demo(workdir)

    assert again.returncode == 0, again.stdout + again.stderr
    assert (workdir / "notes.txt").read_text() == "mine"
    assert (workdir / "sftp" / "acme" / "in" / "mine.csv").read_text() == "mine"
    assert (workdir / "mine" / "deep.txt").read_text() == "mine"
    assert (workdir / "sftp" / "globex" / "in" / "renamed-by-me.xml").exists()
    assert "delivered=5" in again.stdout  # a fresh demo: the old ledger was the demo's
    made = json.loads((workdir / MARKER).read_text())["made"]
    assert "notes.txt" not in made and "sftp/acme/in/mine.csv" not in made and "mine" not in made
    assert "bridge.toml" in made and "state/ledger.sqlite" in made and "sftp/acme/in" in made


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_a_missing_or_empty_folder_is_used(tmp_path, case):
    workdir = tmp_path / "run"
    if case == "empty":
        workdir.mkdir()
    assert prepare_workdir(workdir) == set()
    assert json.loads((workdir / MARKER).read_text())["finished"] is False


def test_a_previous_demos_list_is_followed_exactly_and_links_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    workdir = tmp_path / "run"
    (workdir / "made" / "sub").mkdir(parents=True)
    (workdir / "made" / "sub" / "a.txt").write_text("demo")
    (workdir / "made" / "kept.txt").write_text("someone's")
    (workdir / "link").symlink_to(outside)
    (workdir / "was-a-folder").symlink_to(outside)  # a folder the demo made, replaced by a link
    listed = ["made", "made/sub", "made/sub/a.txt", "link", "../outside/precious.txt", "/etc/hostname",
              "was-a-folder/precious.txt"]
    (workdir / MARKER).write_text(json.dumps({"finished": True, "made": listed}))

    foreign = prepare_workdir(workdir)

    assert not (workdir / "made" / "sub").exists()
    assert (workdir / "made" / "kept.txt").read_text() == "someone's"  # so "made" stays too
    assert not (workdir / "link").exists() and (outside / "precious.txt").read_text() == "keep"
    assert foreign == {"made/kept.txt", "was-a-folder"}


def test_a_non_empty_folder_that_is_not_a_previous_demos_is_refused_untouched(tmp_path):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "thesis.tex").write_text("years of work")

    done = demo(workdir)

    assert done.returncode == 2
    assert done.stderr == (f"fbm-bridge: {workdir} is not empty and is not a previous demo's folder: the demo"
                           " deletes only what it made itself; give --workdir a new or empty folder"
                           " (or empty this one yourself)\n")
    assert [p.name for p in workdir.iterdir()] == ["thesis.tex"]


def test_a_file_instead_of_a_folder_is_refused(tmp_path):
    workdir = tmp_path / "a-file"
    workdir.write_text("not a folder")
    done = demo(workdir)
    assert done.returncode == 2
    assert done.stderr == f"fbm-bridge: {workdir} is not a folder: give --workdir a new or empty folder\n"
    assert workdir.read_text() == "not a folder"


@pytest.mark.parametrize("marker", ['{"finished": false, "kept": []}', "not json", '{"finished": true}'])
def test_a_previous_demo_that_did_not_finish_is_refused_untouched(tmp_path, marker):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / MARKER).write_text(marker)
    (workdir / "bridge.toml").write_text("half")
    with pytest.raises(FixTheSetup, match="did not finish, so what it made is not known"):
        prepare_workdir(workdir)
    assert (workdir / "bridge.toml").read_text() == "half"
