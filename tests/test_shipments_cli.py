"""`fbm-bridge shipments process`, `replay --dry-run` and `status` as an operator runs them: a
subprocess, a config on disk, OpenSSH and the SP-API sandbox. Exit 0 done, 1 errors, 2 setup."""

from __future__ import annotations

import json
import os
import shutil
import signal
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sp_api.auth.access_token_client as token_cache

from bridge.sandbox.spapi import SpApiSandbox, load_seed
from harness import SECRETS, SEED, load, sftp_warehouse, write_config
from shipping import GOLDEN_INPUTS, SHIP_TIME, STABLE, Shipper, files, golden, make_config
from test_cli import bridge
from test_daemon import DEADLINE, Service, wait_for

ACME = GOLDEN_INPUTS["acme-csv"]


@pytest.fixture
def config(tmp_path, sshd, sftp_root, sandbox):
    path = make_config(tmp_path, sshd, sftp_root, sandbox, "acme-csv")
    shipper = Shipper(load(path))
    shipper.deliver_orders()
    shipper.ledger.close()
    return path


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_shipments_process_takes_confirms_and_answers_and_exits_0(config, sftp_root, sandbox):
    shutil.copy(golden("acme-csv") / ACME, sftp_root / "out" / ACME)

    first = bridge("shipments", "process", "--now", iso(SHIP_TIME - STABLE), config=config)
    done = bridge("shipments", "process", "--now", iso(SHIP_TIME), config=config)

    assert first.returncode == 0 and "settling=1" in first.stdout
    assert done.returncode == 0, done.stderr
    assert "files=1" in done.stdout and "confirmed=5" in done.stdout and "errors=0" in done.stdout
    assert files(sftp_root / "out" / "results") == files(golden("acme-csv") / "results")
    status = bridge("status", config=config)
    assert "shipments: packages confirmed=5 rejected=0 waiting=0" in status.stdout
    assert "111-0000002-0000002  wh  9/11 units confirmed" in status.stdout
    report = json.loads(bridge("status", "--json", config=config).stdout)
    assert report["shipments"]["packages"]["confirmed"] == 5


def test_shipments_process_by_feed_sends_one_document_and_answers_from_its_report(config, sftp_root, sandbox):
    config.write_text(config.read_text() + '\n[shipments]\nsend = "feed"\n')
    shutil.copy(golden("acme-csv") / ACME, sftp_root / "out" / ACME)

    bridge("shipments", "process", "--now", iso(SHIP_TIME - STABLE), config=config)
    done = bridge("shipments", "process", "--now", iso(SHIP_TIME), config=config)

    assert done.returncode == 0, done.stderr
    assert "confirmed=5" in done.stdout and "feeds=1 feeds_waiting=0" in done.stdout
    assert sandbox.confirmations == [] and len(sandbox.feeds) == 1
    assert files(sftp_root / "out" / "results") == {
        ACME.replace(".csv", ".result.csv"): (golden("acme-csv") / "feed" / ACME.replace(".csv", ".result.csv")).read_bytes()}


def test_replay_dry_run_prints_each_row_and_the_exact_requests_and_changes_nothing(config, sftp_root, sandbox):
    done = bridge("replay", str(golden("acme-csv") / ACME), "--warehouse", "wh", "--dry-run",
                  "--now", iso(SHIP_TIME), config=config)

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "6 row(s), 5 package(s) to confirm; nothing is sent or recorded" in out
    assert "row 3     111-0000002-0000002  MUG-CER-350-BLU      x4    accepted  package 2 of this file" in out
    assert "POST /orders/v0/orders/203-0000004-0000004/shipmentConfirmation" in out
    assert '"carrierName": "Hermes Germany"' in out and '"packageReferenceId": "4"' in out
    assert sandbox.confirmations == []
    assert json.loads(bridge("status", "--json", config=config).stdout)["shipments"]["packages"]["accepted"] == 0
    assert files(sftp_root / "out") == {}


def test_replay_with_the_feed_prints_the_exact_fulfillment_feed_document(config, sandbox):
    config.write_text(config.read_text() + '\n[shipments]\nsend = "feed"\n')
    done = bridge("replay", str(golden("acme-csv") / ACME), "--warehouse", "wh", "--dry-run",
                  "--now", iso(SHIP_TIME), config=config)

    assert done.returncode == 0, done.stderr
    assert "package 2 (rows 3, 4): message 2 of the order fulfillment feed" in done.stdout
    document = (golden("acme-csv") / "feed" / ACME.replace(".csv", ".xml")).read_text("utf-8")
    assert "  " + document.rstrip("\n").replace("\n", "\n  ") in done.stdout  # the golden, byte for byte
    assert "(MessageID: the ids the ledger would give these packages if the file were taken now)" in done.stdout
    assert sandbox.feeds == {} and sandbox.confirmations == []


def test_replay_shows_why_rows_would_be_rejected(config, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes("Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n"
                    "302-0000003-0000003;KAN-GLAS-1L;5;DHL_PAKET;00340434161094042557;20.11.2026 16:45\r\n"
                    .encode("cp1252"))
    done = bridge("replay", str(bad), "--warehouse", "wh", "--dry-run", "--now", iso(SHIP_TIME), config=config)
    assert done.returncode == 0
    assert ("rejected  quantity 5 of SKU KAN-GLAS-1L is more than the 1 still unshipped in order "
            "302-0000003-0000003") in done.stdout


def environment(*without: str) -> dict[str, str]:
    return {k: v for k, v in {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost"}.items()
            if not k.startswith(without)}


def test_replay_needs_no_amazon_secret_and_the_state_key_only_to_read_sealed_order_records(config, tmp_path):
    with_key = bridge("replay", str(golden("acme-csv") / ACME), "--warehouse", "wh", "--dry-run",
                      "--now", iso(SHIP_TIME), config=config, env=environment("BRIDGE_LWA_"))
    without_key = bridge("replay", str(golden("acme-csv") / ACME), "--warehouse", "wh", "--dry-run",
                         "--now", iso(SHIP_TIME), config=config, env=environment("BRIDGE_"))
    unknown = tmp_path / "unknown.csv"  # no order the ledger holds: nothing sealed is read
    unknown.write_bytes(b"Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n"
                        b"999-0000000-0000000;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45\r\n")
    nothing = bridge("replay", str(unknown), "--warehouse", "wh", "--dry-run", "--now", iso(SHIP_TIME),
                     config=config, env=environment("BRIDGE_"))

    assert with_key.returncode == 0 and "6 row(s), 5 package(s) to confirm" in with_key.stdout, with_key.stderr
    assert without_key.returncode == 2
    assert without_key.stderr == ("fbm-bridge: order data is sealed: this needs the secret BRIDGE_STATE_KEY "
                                  "(environment variable, or the file $CREDENTIALS_DIRECTORY/BRIDGE_STATE_KEY)\n")
    assert nothing.returncode == 0, nothing.stderr
    assert "rejected  order 999-0000000-0000000 was not sent to wh by the bridge" in nothing.stdout


def test_replay_without_amazon_secrets_says_a_look_up_needs_them(config, tmp_path):
    config.write_text(config.read_text() + "\n[shipments]\nlookup_unknown_orders = true\n")
    unknown = tmp_path / "unknown.csv"
    unknown.write_bytes(b"Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n"
                        b"999-0000000-0000000;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;20.11.2026 16:45\r\n")

    done = bridge("replay", str(unknown), "--warehouse", "wh", "--dry-run", "--now", iso(SHIP_TIME),
                  config=config, env=environment("BRIDGE_LWA_"))

    assert done.returncode == 2
    assert done.stderr == ("fbm-bridge: order 999-0000000-0000000 is not in the ledger, and looking it up on Amazon"
                           " (shipments.lookup_unknown_orders) needs the BRIDGE_LWA_* secrets\n")


@pytest.mark.parametrize("mapping, name, why", [
    ("initech-xlsx", "initech_shipped_20261120.xlsx",
     "the file is a zip file (an XLSX workbook?) but the mapping reads CSV (Windows-1252): is it in the wrong folder "
     "or saved in the wrong format?"),
    ("globex-xml", "GLOBEX_SHIPCONFIRM_20261120T170500Z.xml",
     "the file is XML but the mapping reads CSV (Windows-1252): is it in the wrong folder or saved in the wrong "
     "format?"),
])
def test_replay_of_a_file_the_mapping_cannot_read_is_one_line_and_exits_2(config, mapping, name, why):
    path = golden(mapping) / name
    done = bridge("replay", str(path), "--warehouse", "wh", "--dry-run", config=config)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"fbm-bridge: {path} cannot be read with the mapping acme-csv of wh: {why}\n"



def test_replay_for_an_unknown_warehouse_exits_2(config):
    done = bridge("replay", "x.csv", "--warehouse", "nope", "--dry-run", config=config)
    assert done.returncode == 2 and "no warehouse named 'nope' (known: wh)" in done.stderr


# --- the service ------------------------------------------------------------------------------

def test_the_service_watches_the_local_folder_and_answers_a_dropped_file(tmp_path, sshd, sftp_root):
    """`fbm-bridge run` on the real clock: a file staff drop is taken when its writer closes it."""
    now = datetime.now(timezone.utc)
    orders = load_seed(SEED)
    for order in orders:  # placed three hours ago, last changed 45 minutes ago
        order["createdTime"] = iso(now - timedelta(hours=3))
        order["lastUpdatedTime"] = iso(now - timedelta(minutes=45))
    token_cache.cache.clear()
    with SpApiSandbox(orders) as sandbox:
        (sftp_root / "in").mkdir()
        config = write_config(
            tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
            warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root / "in",
                                       local_shipments_folder=str(tmp_path / "drop"))],
            orders=f'start = "{iso(now - timedelta(hours=5))}"\ninterval_minutes = 1\nwindow_minutes = 600')
        config.write_text(config.read_text() + "\n[shipments]\nstable_seconds = 1\n")
        env = {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost"}
        service = Service(config, tmp_path / "service.log", env)
        try:
            wait_for(lambda: len(list((sftp_root / "in").iterdir())) == 5, "the orders to arrive")
            wait_for(lambda: (tmp_path / "drop" / "processing").is_dir(), "the local folder's subfolders")
            shipped = (now - timedelta(minutes=1)).astimezone(ZoneInfo("Europe/Berlin"))
            with open(tmp_path / "drop" / "VERSAND_1.csv", "wb") as f:  # a person saving a file
                f.write(("Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n"
                         f"302-0000003-0000003;KAN-GLAS-1L;1;DHL_PAKET;00340434161094042557;"
                         f"{shipped:%d.%m.%Y %H:%M}\r\n").encode("cp1252"))
            result = tmp_path / "drop" / "results" / "VERSAND_1.result.csv"
            wait_for(result.is_file, "the result file")
            assert "confirmed on Amazon as package 1" in result.read_text("utf-8-sig")
            assert [c["orderId"] for c in sandbox.confirmations] == ["302-0000003-0000003"]
            service.signal(signal.SIGTERM)
            assert service.process.wait(timeout=DEADLINE) == 0
        finally:
            service.stop()
        for secret in SECRETS.values():
            assert secret not in service.text()


def test_the_summary_counts_rows_the_bridge_rejected_apart_from_parcels_amazon_refused(config, sftp_root, sandbox):
    shutil.copy(golden("acme-csv") / ACME, sftp_root / "out" / ACME)
    (sftp_root / "out" / "VERSAND_BAD.csv").write_bytes(
        "Auftragsnummer;Artikelnummer;Menge;Versandart;Sendungsnummer;Versanddatum\r\n"
        "302-0000003-0000003;KAN-GLAS-1L;0;DHL_PAKET;00340434161094049999;20.11.2026 16:45\r\n".encode("cp1252"))

    bridge("shipments", "process", "--now", iso(SHIP_TIME - STABLE), config=config)
    done = bridge("shipments", "process", "--now", iso(SHIP_TIME), config=config)

    assert done.returncode == 0, done.stderr
    assert " answered=2 files_in_error=1 confirmed=5 rows_rejected=1 amazon_refused=0 waiting=0 " in done.stdout
    assert done.stdout.startswith(f"wh sftp:{sftp_root / 'out'}: 'VERSAND_BAD.csv' answered into error/ (its answer: "
                                  "results/VERSAND_BAD.result.csv)\n")
