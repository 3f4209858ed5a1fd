"""`fbm-bridge check` on each broken setup: the exact line a person reads, and exit 2.

Beyond the config, the logins and the state folder, check proves what a first run would find
out too late: that Amazon sends addresses (the Direct-to-Consumer Shipping (Restricted) role),
that every inbound folder (shipments, stock; SFTP and local) can be listed, and that the
bridge can write in processing/, archive/, error/ and results/ (a probe file, named as a
temporary file, created and removed). Real OpenSSH, the SP-API sandbox over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO, SECRETS, sftp_warehouse, write_config

NOW = "2026-11-20T12:30:00Z"  # the sandbox seed's orders were updated 09:00-12:00Z that day
SUBFOLDERS = "processing, archive, error, results"
PII_HINT = ("grant the seller's SP-API app the Direct-to-Consumer Shipping (Restricted) role in Seller Central"
            " (Apps and Services > Develop Apps), then re-authorise it; held orders are delivered automatically"
            " once addresses come through")


def check(config: Path, now: str = NOW) -> subprocess.CompletedProcess:
    env = {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost"}
    return subprocess.run([sys.executable, "-m", "bridge", "--config", str(config), "check", "--now", now],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def immutable(path: Path) -> None:
    """`chattr +i`: not even root may create a file in it. Skips where there is no such flag."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr.strip()}")


@pytest.fixture
def setup(tmp_path, sshd, sftp_root, sandbox):
    """Build a config: `setup(**warehouse keys, amazon=..., stock=True)`; the folders it names
    under sftp_root are made unless told otherwise."""
    (sftp_root / "out").mkdir()
    (sftp_root / "stock").mkdir()

    def make(amazon: str = "", stock: bool = False, **extra) -> Path:
        config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url, amazon=amazon,
                              warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root, **extra)])
        if stock:
            config.write_text(config.read_text() + '\n[stock]\nwarehouse = "wh"\n')
        return config

    yield make
    subprocess.run(["chattr", "-R", "-i", str(tmp_path), str(sftp_root)], capture_output=True)


def test_check_lists_every_inbound_folder_and_proves_it_usable_leaving_nothing_behind(setup, sftp_root, tmp_path):
    (sftp_root / "out" / "archive").mkdir()
    local = tmp_path / "drop"
    config = setup(shipments_folder=str(sftp_root / "out"), stock_folder=str(sftp_root / "stock"),
                   local_shipments_folder=str(local), local_stock_folder=str(tmp_path / "stockdrop"), stock=True)
    local.mkdir()

    done = check(config)

    assert done.returncode == 0, done.stdout + done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("folder")] == [
        f"folder    ok  wh shipments sftp:{sftp_root}/out: readable; {SUBFOLDERS} writable"
        " (processing, error, results made by the first pass)",
        f"folder    ok  wh shipments local:{local}: readable; {SUBFOLDERS} writable"
        " (processing, archive, error, results made by the first pass)",
        f"folder    ok  wh stock sftp:{sftp_root}/stock: readable; {SUBFOLDERS} writable"
        " (processing, archive, error, results made by the first pass)",
        f"folder    ok  wh stock local:{tmp_path}/stockdrop: not there yet: the first pass makes it",
    ]
    assert sorted(p.name for p in (sftp_root / "out").rglob("*")) == ["archive"]  # probes removed
    assert list(local.iterdir()) == [] and not (tmp_path / "stockdrop").exists()


def pii_withheld(sandbox, config_keys: dict) -> None:
    sandbox.set_pii_access(False)


def shipments_folder_typo(sandbox, config_keys: dict) -> None:  # newuser review, finding 13
    config_keys["shipments_folder"] = config_keys["shipments_folder"].replace("/out", "/outt")


def stock_folder_missing(sandbox, config_keys: dict) -> None:
    config_keys["stock_folder"] = config_keys["stock_folder"] + "/gone"


def archive_not_writable(sandbox, config_keys: dict) -> None:
    archive = Path(config_keys["shipments_folder"]) / "archive"
    archive.mkdir()
    immutable(archive)


def shipments_folder_not_writable(sandbox, config_keys: dict) -> None:
    immutable(Path(config_keys["shipments_folder"]))


def results_not_writable_locally(sandbox, config_keys: dict) -> None:
    results = Path(config_keys["local_shipments_folder"]) / "results"
    results.mkdir(parents=True)
    immutable(results)


def local_folder_is_a_file(sandbox, config_keys: dict) -> None:
    Path(config_keys["local_stock_folder"]).write_text("")


def local_folder_cannot_be_made(sandbox, config_keys: dict) -> None:
    parent = Path(config_keys["local_shipments_folder"]).parent
    config_keys["local_shipments_folder"] = str(parent / "locked" / "drop")
    (parent / "locked").mkdir()
    immutable(parent / "locked")


PROBE = ".fbm-bridge-probe-{probe}.part"
CHECK_SETUPS = [
    ("PII role missing (v2026)", pii_withheld, "",
     "pii       FAIL the app lacks the Direct-to-Consumer Shipping (Restricted) role: searchOrders answered order"
     " 111-0000001-0000001 (UNSHIPPED) without its shipping address and buyer info; " + PII_HINT),
    ("PII role missing (v0)", pii_withheld, 'orders_api = "v0"',
     "pii       FAIL the app lacks the Direct-to-Consumer Shipping (Restricted) role: Amazon refused a Restricted"
     " Data Token for /orders/v0/orders; " + PII_HINT),
    ("shipments folder misspelt", shipments_folder_typo, "",
     "folder    FAIL wh shipments sftp:{root}/outt: folder {root}/outt does not exist on sftp {user}@[127.0.0.1]:{port}"),
    ("stock folder missing", stock_folder_missing, "",
     "folder    FAIL wh stock sftp:{root}/stock/gone: folder {root}/stock/gone does not exist on sftp"
     " {user}@[127.0.0.1]:{port}"),
    ("archive/ not writable", archive_not_writable, "",
     "folder    FAIL wh shipments sftp:{root}/out: {root}/out/archive is not writable: sftp {user}@[127.0.0.1]:{port}"
     " refused put {root}/out/archive/" + PROBE + ": permission denied for {user}"),
    ("shipments folder not writable", shipments_folder_not_writable, "",
     "folder    FAIL wh shipments sftp:{root}/out: {root}/out is not writable: sftp {user}@[127.0.0.1]:{port}"
     " refused put {root}/out/" + PROBE + ": permission denied for {user}"),
    ("local results/ not writable", results_not_writable_locally, "",
     "folder    FAIL wh shipments local:{tmp}/drop: {tmp}/drop/results is not writable: Operation not permitted"),
    ("local stock folder is a file", local_folder_is_a_file, "",
     "folder    FAIL wh stock local:{tmp}/stockdrop: {tmp}/stockdrop is not a folder"),
    ("local folder cannot be made", local_folder_cannot_be_made, "",
     "folder    FAIL wh shipments local:{tmp}/locked/drop: {tmp}/locked/drop does not exist and this user cannot"
     " create it ({tmp}/locked is not writable)"),
]


@pytest.mark.parametrize("case, fault, amazon, message", CHECK_SETUPS, ids=[c[0] for c in CHECK_SETUPS])
def test_check_names_each_broken_setup_in_one_line_and_exits_2(setup, sandbox, sshd, sftp_root, tmp_path,
                                                                case, fault, amazon, message):
    keys = {"shipments_folder": str(sftp_root / "out"), "stock_folder": str(sftp_root / "stock"),
            "local_shipments_folder": str(tmp_path / "drop"), "local_stock_folder": str(tmp_path / "stockdrop")}
    fault(sandbox, keys)
    config = setup(amazon=amazon, stock=True, **keys)

    done = check(config)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [failure] = [line for line in done.stdout.splitlines() if "FAIL" in line]
    probe = failure.split("-probe-")[1][:8] if "-probe-" in failure else ""
    assert failure == message.format(root=sftp_root, tmp=tmp_path, user=sshd.endpoint.username, port=sshd.port,
                                     probe=probe)


def test_without_a_recent_order_to_ask_about_check_says_the_role_is_not_proven_and_passes(setup, sandbox):
    sandbox.set_pii_access(False)  # cannot be told: no order in an address state was updated lately

    done = check(setup(), now="2026-06-01T00:00:00Z")

    assert done.returncode == 0, done.stdout + done.stderr
    assert ("pii       ??  not proven: no merchant order updated in the last 30 days to ask about; a held order's"
            " reason will say if addresses are withheld") in done.stdout.splitlines()


def test_check_does_not_sit_out_a_rate_limit_the_running_service_has_spent(setup, sandbox):
    # the service on the same seller spent searchOrders: Amazon asks for a minute's wait
    sandbox.fail_next("searchOrders", 429, count=5, headers={"x-amzn-RateLimit-Limit": "0.0166"})

    done = check(setup())

    assert done.returncode == 0, done.stdout + done.stderr
    assert ("pii       ??  not proven: Amazon asks to wait 60 s: its rate limit is spent (a running service"
            " shares it); run check again later") in done.stdout.splitlines()
