"""`fbm-bridge inventory push [--force] [--dry-run]` and the stock lines of `status`, as an
operator runs them: a subprocess, a config on disk, OpenSSH and the SP-API sandbox. Exit 0 done,
1 errors the next run retries, 2 a person must act (a held, failed or in-doubt file)."""

from __future__ import annotations

import json
import os

import pytest

from harness import SECRETS
from stocking import GOLDEN, Stocker, files, golden_feed, load, make_config, result_lines
from test_cli import bridge
from test_stock_intake import FULL, acme

FAST = "\n[shipments]\nstable_seconds = 1\n"  # push lists a new file, waits this long, lists it again


@pytest.fixture
def config(tmp_path, sshd, sftp_root, sandbox):
    path = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv")
    path.write_text(path.read_text() + FAST)
    return path


@pytest.fixture
def stock_folder(sftp_root):
    return sftp_root / "stock"


def push(config, *options: str):
    return bridge("inventory", "push", *options, config=config)


def test_push_publishes_the_newest_file_answers_it_and_status_tells(config, stock_folder, sandbox):
    (stock_folder / GOLDEN["acme-csv"].name).write_bytes(GOLDEN["acme-csv"].read_bytes())

    done = push(config)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "BESTAND_20261126.csv: published: passed the safety gates" in done.stdout
    (feed,) = sandbox.feeds.values()
    assert feed["document"] == golden_feed("acme-csv")
    assert result_lines(stock_folder, "BESTAND_20261126.csv") == [
        ";published;;;passed the safety gates. 5 SKUs sent, Amazon took 5"]
    status = bridge("status", config=config)
    assert "stock: wh publishes daily at 22:00 UTC" in status.stdout
    assert "  last published: 'BESTAND_20261126.csv' (stock of 2026-11-26T20:00:00Z)" in status.stdout
    report = json.loads(bridge("status", "--json", config=config).stdout)["stock"]
    assert (report["last_published"]["name"], report["last_published"]["skus"]) == ("BESTAND_20261126.csv", 5)

    again = push(config)
    assert again.returncode == 0
    assert again.stdout.startswith("no new stock file since the last published one (BESTAND_20261126.csv, "
                                   "published ")


def test_the_dry_run_prints_the_feed_and_the_verdict_and_sends_moves_and_records_nothing(config, stock_folder,
                                                                                          sandbox):
    (stock_folder / GOLDEN["acme-csv"].name).write_bytes(GOLDEN["acme-csv"].read_bytes())

    done = push(config, "--dry-run")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ("dry run: BESTAND_20261126.csv: in the sftp stock folder, not yet taken in; push would "
                        "take it")
    # the FBA SKU is left alone; the carton is not sold on Amazon (the SKU map says so)
    assert lines[1] == ("dry run: BESTAND_20261126.csv: rows=10 bad_rows=0 skus=5 to_send=5 zero=1 left_alone_rows=1"
                        " not_on_amazon_rows=1 documents=1")
    assert "  gates: passed the safety gates" in lines
    assert done.stdout.split("--- part-0001.json\n", 1)[1].rstrip("\n").encode() == golden_feed("acme-csv").rstrip(b"\n")
    assert sandbox.feeds == {} and files(stock_folder) == {"BESTAND_20261126.csv": GOLDEN["acme-csv"].read_bytes()}
    assert json.loads(bridge("status", "--json", config=config).stdout)["stock"]["last_published"] is None


GATES = [
    ("SKUs missing", acme(*FULL[:3], stand="27.11.2026 21:00"),
     "held: 2 of the 5 SKUs published lately (40.0%) are missing from this file, more than the limit "
     "of 10% (e.g. CST-CORK-4PK, TEA-INF-SS-01)"),
    ("SKUs dropping to zero", acme(*(row.split(";")[0] + ";0" for row in FULL), stand="27.11.2026 21:00"),
     "held: 5 of the 5 SKUs in stock on Amazon (100.0%) would drop to zero, more than the limit of 20% (e.g. "
     "CST-CORK-4PK, KAN-GLAS-1L, MUG-CER-350-BLU)"),
    ("older than the last published", acme(*FULL[:4], "300501;3", stand="25.11.2026 21:00"),
     "held: the file's stock time 2026-11-25T20:00:00Z is older than the last published file's (DAY1.csv, "
     "2026-11-26T20:00:00Z)"),
]


@pytest.mark.parametrize("case, data, reason", GATES, ids=[g[0] for g in GATES])
def test_each_gate_holds_the_file_exit_2_and_force_publishes_it_saying_what_it_overrides(
        config, stock_folder, sandbox, case, data, reason):
    (stock_folder / "DAY1.csv").write_bytes(acme(*FULL))
    assert push(config).returncode == 0
    (stock_folder / "DAY2.csv").write_bytes(data)

    held = push(config)

    assert held.returncode == 2, held.stdout + held.stderr
    assert f"DAY2.csv: held: {reason.removeprefix('held: ')}" in held.stdout
    assert ("if it is right, `fbm-bridge inventory push --force` (with the service stopped: `systemctl stop "
            "fbm-bridge`, or `fbm-bridge@NAME` for an instance, and start it again after) publishes it") in held.stdout
    assert len(sandbox.feeds) == 1 and list(files(stock_folder / "processing")) == ["DAY2.csv"]
    status = bridge("status", config=config).stdout
    assert (f"  HELD: 'DAY2.csv': {reason}; `inventory push --force` publishes it (stop the service first: "
            "`systemctl stop fbm-bridge`, or `fbm-bridge@NAME` for an instance, and start it again after)") in status

    dry = push(config, "--dry-run", "--force")
    assert dry.returncode == 0 and f"dry run: DAY2.csv is held; --force would publish it, overriding: " \
        f"{reason.removeprefix('held: ')}" in dry.stdout

    forced = push(config, "--force")

    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert f"DAY2.csv: published with --force, overriding: {reason.removeprefix('held: ')}" in forced.stdout
    assert len(sandbox.feeds) == 2
    assert result_lines(stock_folder, "DAY2.csv")[0].startswith(";published;;;published with --force, overriding: ")
    assert "HELD" not in bridge("status", config=config).stdout


def test_a_header_only_file_is_held_answered_at_once_and_cannot_be_forced(config, stock_folder, sandbox):
    (stock_folder / "DAY1.csv").write_bytes(acme(*FULL))
    push(config)
    (stock_folder / "DAY2.csv").write_bytes(acme())

    held = push(config)

    assert held.returncode == 2
    assert "DAY2.csv: held: the file has no stock rows (it is empty or has only a header)" in held.stdout
    assert result_lines(stock_folder, "DAY2.csv") == [
        ';held;;;"held: the file has no stock rows (it is empty or has only a header); 5 of the 5 SKUs published '
        'lately (100.0%) are missing from this file, more than the limit of 10% (e.g. CST-CORK-4PK, '
        'KAN-GLAS-1L, MUG-CER-350-BLU)"']
    assert list(files(stock_folder / "error")) == ["DAY2.csv"]
    forced = push(config, "--force")
    assert forced.returncode == 2
    assert forced.stdout.startswith("DAY2.csv is held and --force cannot publish it: there is nothing to send")
    assert len(sandbox.feeds) == 1


def test_push_without_a_stock_warehouse_is_a_setup_error(tmp_path, sshd, sftp_root, sandbox):
    path = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv")
    path.write_text("\n".join(line for line in path.read_text().splitlines()
                               if "stock_folder" not in line and line != 'warehouse = "wh"'))
    done = push(path)
    assert done.returncode == 2 and "no stock.warehouse is configured" in done.stderr


def test_the_service_takes_stock_files_from_the_watched_folder_and_answers_a_broken_one(tmp_path, sshd, sftp_root,
                                                                                     sandbox):
    """`fbm-bridge run` on the real clock: files staff drop are taken when their writer closes them; a
    readable one waits for the daily publish, a broken one is answered at once."""
    import os
    import signal

    from harness import SECRETS
    from test_daemon import DEADLINE, Service, wait_for

    from datetime import datetime, timedelta, timezone

    start = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv",
                         orders=f'start = "{start}"\nwindow_minutes = 600')  # one orders window at start
    config.write_text(config.read_text() + FAST)
    service = Service(config, tmp_path / "service.log", {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost"})
    drop = tmp_path / "stockdrop"
    try:
        wait_for(lambda: (drop / "processing").is_dir(), "the local stock folder's subfolders")
        (drop / "BROKEN.csv").write_bytes(b"Artikel;Menge\r\n1;2\r\n")
        (drop / "BESTAND.csv").write_bytes(acme(*FULL))
        wait_for((drop / "results" / "BROKEN.result.csv").is_file, "the broken file's result file")
        assert result_lines(drop, "BROKEN.csv") == [
            ";rejected;;;row 1 has 2 fields and none is one of the columns 'Artikelnummer', 'Verfügbar', 'Stand', "
            "'Charge', 'Lagerplatz': is the header row missing, or is this another layout's file?"]
        wait_for(lambda: (drop / "processing" / "BESTAND.csv").is_file(), "the good file to be taken in")
        wait_for(lambda: service.logged("stock file received warehouse=wh file='BESTAND.csv' rows=5"),
                 "the good file to wait for the publish")
        assert "stock publish scheduled daily at 22:00 UTC" in service.text()
        assert sandbox.feeds == {}
        service.signal(signal.SIGTERM)
        assert service.process.wait(timeout=DEADLINE) == 0
    finally:
        service.stop()


@pytest.mark.parametrize("command", [("inventory", "push"), ("orders", "pull")])
def test_out_without_dry_run_is_refused_before_anything_runs(tmp_path, command):
    done = bridge(*command, "--out", str(tmp_path / "out"), config=tmp_path / "no-such.toml")

    assert done.returncode == 2
    assert done.stderr == ("fbm-bridge: --out needs --dry-run: nothing was done (add --dry-run to write the files "
                           "there, or leave out --out for a real run)\n")
    assert not (tmp_path / "out").exists()


def only_the_state_key() -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items() if not name.startswith("BRIDGE_")}
    return {**environ, "BRIDGE_STATE_KEY": SECRETS["BRIDGE_STATE_KEY"], "NO_PROXY": "127.0.0.1,localhost"}


def test_settle_marks_a_delivered_order_done_with_the_state_key_alone(config):
    stocker = Stocker(load(config))
    stocker.deliver_orders()
    stocker.close()

    done = bridge("shipments", "settle", "111-0000001-0000001", "--note", "sent by hand", config=config,
                  env=only_the_state_key())  # it writes the ledger only: no Amazon secret
    again = bridge("shipments", "settle", "111-0000001-0000001", config=config, env=only_the_state_key())

    assert done.returncode == 0, done.stderr
    assert done.stdout == (  # acme's quantities are available ones: nothing about stock
        "111-0000001-0000001: settled: no longer listed as not yet confirmed\n"
        "note: no confirmation file of the warehouse has named 111-0000001-0000001: if it was not shipped outside "
        "the bridge, check the id; `fbm-bridge shipments settle 111-0000001-0000001 --undo` takes this back\n")
    assert again.stdout == "111-0000001-0000001: already settled: no longer listed as not yet confirmed\n"


def test_a_settling_is_taken_back_with_undo_and_the_order_is_listed_again(config):
    stocker = Stocker(load(config))
    stocker.deliver_orders()
    stocker.close()
    bridge("shipments", "settle", "111-0000002-0000002", config=config, env=only_the_state_key())

    undone = bridge("shipments", "settle", "111-0000002-0000002", "--undo", "--note", "wrong id",
                    config=config, env=only_the_state_key())
    again = bridge("shipments", "settle", "111-0000002-0000002", "--undo", config=config, env=only_the_state_key())
    order = bridge("status", "--order", "111-0000002-0000002", config=config).stdout

    assert undone.returncode == 0, undone.stderr
    assert undone.stdout == "111-0000002-0000002: settling taken back: listed again until it is confirmed\n"
    assert again.stdout == "111-0000002-0000002: was not settled: nothing to take back\n"
    assert "(settled by a person" not in order  # its ship_by line no longer says it is settled
    assert "unsettled                wrong id" in order  # the history keeps both


def test_settle_refuses_an_order_the_bridge_never_delivered(config):
    done = bridge("shipments", "settle", "999-0000000-0000000", config=config, env=only_the_state_key())

    assert done.returncode == 2
    assert done.stderr == ("fbm-bridge: 999-0000000-0000000 is not an order the bridge delivered to a warehouse: "
                           "nothing to settle\n")
