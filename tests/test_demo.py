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


def test_each_run_summary_is_printed_once_and_no_log_lines_interleave(finished):
    _, done = finished
    summaries = [line for line in done.stdout.splitlines() if line.startswith("orders windows=")]
    assert len(summaries) == 2  # first run, second run
    assert "delivered=5" in summaries[0] and "delivered=0" in summaries[1]
    assert " INFO " not in done.stdout + done.stderr
    assert done.stderr == ""


def test_the_demo_shows_a_glimpse_of_the_csv_xml_and_xlsx_files(finished):
    _, done = finished
    csv = section(done.stdout, "acme/in/ACME_AUF_302")
    assert csv[0].startswith("Mandant;Auftragsnummer;") and "Jürgen Müller" in csv[1]
    xml = section(done.stdout, "globex/in/GLOBEX_ORDERS_")
    assert xml[0] == '<?xml version="1.0" encoding="UTF-8"?>' and xml[-1].startswith("... (")
    xlsx = section(done.stdout, "initech/in/initech_orders_")
    assert xlsx[0].startswith("Order ID | Order Date |") and xlsx[1].startswith("203-0000004-0000004 | 11/20/2026 |")


# --- shipments up -----------------------------------------------------------------------------

def test_the_simulated_warehouses_drop_confirmation_files_over_sftp_and_in_a_staff_folder(finished):
    workdir, done = finished
    dropped = section(done.stdout, "shipments up")
    assert [line.split()[0] for line in dropped] == ["acme", "initech", "globex"]
    assert re.fullmatch(r"acme +sftp/acme/out/SHIPPED_acme_\d{14}\.csv  \(1 order, in its SFTP shipments folder\)",
                        dropped[0])
    assert re.fullmatch(r"initech +drop/initech/SHIPPED_initech_\d{14}\.xlsx  \(1 order, in a staff folder on this "
                        r"machine\)", dropped[1])
    assert "sftp/globex/out/SHIPPED_globex_" in dropped[2] and "(3 orders," in dropped[2]
    runs = section(done.stdout, "shipments runs")
    assert runs[0].startswith("first (sees the files): shipments files=0") and "settling=3" in runs[0]
    assert runs[1].startswith("second (takes, confirms, answers): shipments files=3")
    assert "answered=3 files_in_error=1 confirmed=4 rows_rejected=0 amazon_refused=1 waiting=0 errors=0" in runs[1]


def test_the_demo_shows_each_fulfillment_the_sandbox_received(finished):
    _, done = finished
    received = section(done.stdout, "fulfillments the SP-API sandbox received")
    assert [re.sub(r"tracking 1Z\d+", "tracking ...", line) for line in received] == [
        "302-0000003-0000003  package 1  DHL (DHL Paket)  tracking ...  KAN-GLAS-1L x1  by confirmShipment",
        "203-0000004-0000004  package 2  USPS  tracking ...  CST-CORK-4PK x1, TEA-INF-SS-01 x2  by confirmShipment",
        "111-0000001-0000001  package 3  FedEx  tracking ...  MUG-CER-350-BLU x2  by confirmShipment",
        "111-0000002-0000002  package 4  FedEx  tracking ...  MUG-CER-350-BLU x6, TEA-INF-SS-01 x3, CST-CORK-4PK x2"
        "  by confirmShipment"]


def test_the_demo_shows_each_result_file_and_explains_the_parcel_amazon_refused(finished):
    workdir, done = finished
    results = section(done.stdout, "result files")
    acme = next(line for line in results if line.startswith("sftp/acme/out/results/"))
    assert acme.endswith("(the file went to archive/)")
    assert (workdir / acme.split()[0]).read_text("utf-8-sig").splitlines()[1].endswith(
        "confirmed on Amazon as package 1")
    assert any(line.startswith("drop/initech/results/") and line.endswith("(the file went to archive/)")
               for line in results)
    assert any(line.startswith("sftp/globex/out/results/") and line.endswith("(the file went to error/)")
               for line in results)
    refused = [line for line in results if ",rejected," in line]
    assert len(refused) == 2 and all(line.startswith(("38,rejected,111-0000005-0000005,", "42,rejected,"))
                                     for line in refused)
    assert refused[0].endswith("Amazon refused package 5: InvalidInput: quantity for orderItemId 50000005000001 "
                               "exceeds the unshipped quantity")
    assert results[-1].startswith("why 111-0000005-0000005 was refused: the seller had shipped MUG-CER-350-BLU by "
                                  "hand before the bridge delivered the order")
    status = section(done.stdout, "fbm-bridge status")
    assert "shipments: packages confirmed=4 rejected=1 waiting=0" in status
    assert any(line.endswith("111-0000005-0000005  globex  0/3 units confirmed") for line in status)


# --- the folder afterwards ------------------------------------------------------------------

def printed_commands(output: str) -> list[str]:
    lines = output.split("\nTry:\n", 1)[1].splitlines()
    return [line.strip() for line in lines if line.startswith("  ") and not line.startswith("    ")]


def test_the_printed_status_and_spool_open_commands_work_in_the_folder_afterwards(finished):
    workdir, done = finished
    status, one_order, spool_open = printed_commands(done.stdout)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") and k != "CREDENTIALS_DIRECTORY"}
    run = lambda line: subprocess.run(["bash", "-c", line], cwd=workdir, env=environ, capture_output=True, timeout=60)

    shown = run(status)
    assert shown.returncode == 0, shown.stderr
    assert b"delivered=5" in shown.stdout and b"windows: 7 pulled" in shown.stdout

    order = run(one_order)
    assert order.returncode == 0, order.stderr
    assert b"status:         delivered" in order.stdout and b"file:           acme: ACME_AUF_302" in order.stdout

    assert "CREDENTIALS_DIRECTORY=" in spool_open and spool_open.endswith("> ACME_AUF_302-0000003-0000003.csv")
    opened = run(spool_open)
    assert opened.returncode == 0, opened.stderr
    delivered = workdir / "sftp" / "acme" / "in" / "ACME_AUF_302-0000003-0000003.csv"
    assert (workdir / "ACME_AUF_302-0000003-0000003.csv").read_bytes() == delivered.read_bytes()


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
