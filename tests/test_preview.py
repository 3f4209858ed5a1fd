"""`fbm-bridge preview`: a mapping and an orders file give the files the warehouse would get,
with no config, no credentials and no Amazon. Bad orders files and mappings: see
test_bad_inputs_orders.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from bridge.cli import main
from harness import MAPPINGS, REPO, SAMPLES, SEED

RUN_TIME = "2026-11-20T12:30:00Z"  # the golden files' run time


def preview(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["preview", *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("mapping", ["acme-csv", "globex-xml", "initech-xlsx"])
def test_preview_writes_the_golden_files_byte_for_byte_each_mode_0600(capsys, tmp_path, mapping):
    old = os.umask(0)  # whatever the umask: the files hold buyer data
    try:
        status, out, _ = preview(capsys, "--mapping", str(MAPPINGS / f"{mapping}.toml"),
                                 "--orders", str(SAMPLES / "orders.json"), "--now", RUN_TIME, "--out", str(tmp_path / "out"))
    finally:
        os.umask(old)

    assert status == 0
    written = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert written == {p.name: p.read_bytes() for p in (SAMPLES / mapping).iterdir() if p.is_file()}
    for path in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert f"orders: 5 read from {SAMPLES / 'orders.json'} (records), laid out as of {RUN_TIME}" in out
    assert f"files written under {tmp_path / 'out'} (mode 0600" in out


def test_preview_prints_each_file_with_its_orders_and_size_and_writes_nothing_without_out(capsys, tmp_path):
    status, out, err = preview(capsys, "--mapping", str(MAPPINGS / "globex-xml.toml"),
                               "--orders", str(SAMPLES / "orders.json"), "--now", RUN_TIME)

    golden = next(p for p in (SAMPLES / "globex-xml").iterdir() if p.is_file())
    assert status == 0 and err == ""
    assert (f"  would write {golden.name} ({golden.stat().st_size} bytes) orders=111-0000001-0000001,"
            "111-0000002-0000002,111-0000005-0000005,203-0000004-0000004,302-0000003-0000003") in out
    assert out.splitlines()[-1] == "files=1 orders_laid_out=5 not_laid_out=0 unreadable=0"


@pytest.mark.parametrize("shape", ["list", "searchOrders answer"])
def test_amazons_own_search_orders_objects_are_recognised(capsys, tmp_path, shape):
    orders = json.loads(SEED.read_text())
    path = tmp_path / "amazon.json"
    path.write_text(json.dumps(orders if shape == "list" else {"orders": orders}))

    status, out, _ = preview(capsys, "--mapping", str(MAPPINGS / "acme-csv.toml"), "--orders", str(path), "--now", RUN_TIME)

    assert status == 0
    assert f"orders: 8 read from {path} (Amazon searchOrders Order objects, v2026-01-01)" in out
    # laid out as records from the same data: the same bytes as the goldens
    assert "  would write ACME_AUF_302-0000003-0000003.csv (381 bytes) orders=302-0000003-0000003" in out


def test_an_order_the_mapping_cannot_lay_out_is_listed_with_why_and_the_others_still_go(capsys, tmp_path):
    orders = json.loads((SAMPLES / "orders.json").read_text())
    orders[0]["lines"] = []
    orders[1]["ship_to"]["city"] = "Llanfairpwllgwyngyll-gogerychwyrndrobwll"  # over ACME's 35 characters
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(orders))

    status, out, _ = preview(capsys, "--mapping", str(MAPPINGS / "acme-csv.toml"), "--orders", str(path), "--now", RUN_TIME)

    assert status == 0
    not_laid_out = [line for line in out.splitlines() if line.startswith("  would not lay out")]
    assert len(not_laid_out) == 2
    assert not_laid_out[0] == "  would not lay out 111-0000001-0000001: the order has no lines"
    assert not_laid_out[1] == ("  would not lay out 111-0000002-0000002: ship_to.city is 40 characters long,"
                               " the warehouse takes at most 35")
    assert "Llanfair" not in out  # reasons name the field, never the buyer's data
    assert out.splitlines()[-1] == "files=3 orders_laid_out=3 not_laid_out=2 unreadable=0"


def test_preview_runs_as_a_command_with_no_config_and_no_secrets(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") and k != "CREDENTIALS_DIRECTORY"}
    command = [sys.executable, "-m", "bridge", "--config", str(tmp_path / "none.toml"), "preview",
               "--mapping", str(MAPPINGS / "initech-xlsx.toml"), "--orders", str(SAMPLES / "orders.json")]
    done = subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "would write initech_orders_" in done.stdout
