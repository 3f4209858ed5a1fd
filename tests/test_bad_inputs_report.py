"""`fbm-bridge report`'s bad inputs, one table per kind, each case with the exact message a person
sees and exit 2 (a person must act): the command line, then the local state. The command runs as
an operator runs it (a subprocess); nothing is written where it was refused."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from harness import SECRETS, load, sftp_warehouse, write_config
from test_cli import bridge

USAGE_ERROR = "fbm-bridge report: error: "


@pytest.fixture
def config(tmp_path, sshd, sftp_root):
    """A config whose ledger has been used (one empty window recorded)."""
    from bridge.ledger import ORDERS_BOOKMARK, Ledger
    from bridge.sealing import Sealer

    path = write_config(tmp_path, sandbox_url="http://127.0.0.1:9", token_url="http://127.0.0.1:9/t",
                        warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])
    settings = load(path)
    ledger = Ledger(settings.ledger_path, Sealer(settings.state_key))
    now = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    ledger.record([], now, bookmark=(ORDERS_BOOKMARK, now), window_start=now)
    ledger.close()
    return path


def setup(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "folder.xlsx").mkdir()
    (tmp_path / "old.xlsx").write_bytes(b"last month's report")


# (case, arguments after `report`, the last line of stderr; {tmp} is the test's folder)
COMMAND_LINE = [
    ("from after to", ["--from", "2026-11-30", "--to", "2026-11-01", "--out", "{tmp}/r.xlsx"],
     "fbm-bridge: --from 2026-11-30 is after --to 2026-11-01: the period would hold no day"),
    ("from not a date", ["--from", "2026-13-01", "--out", "{tmp}/r.xlsx"],
     USAGE_ERROR + "argument --from: not a day: '2026-13-01' (give YYYY-MM-DD, e.g. 2026-11-01)"),
    ("to in another form", ["--to", "20261101", "--out", "{tmp}/r.xlsx"],
     USAGE_ERROR + "argument --to: not a day: '20261101' (give YYYY-MM-DD, e.g. 2026-11-01)"),
    ("a day at the end of the calendar", ["--to", "9999-12-31", "--out", "{tmp}/r.xlsx"],
     USAGE_ERROR + "argument --to: 9999-12-31: give a day from 2000 to 2999"),
    ("from a time, not a day", ["--from", "2026-11-01T00:00:00Z", "--out", "{tmp}/r.xlsx"],
     USAGE_ERROR + "argument --from: not a day: '2026-11-01T00:00:00Z' (give YYYY-MM-DD, e.g. 2026-11-01)"),
    ("from in words", ["--from", "yesterday", "--out", "{tmp}/r.xlsx"],
     USAGE_ERROR + "argument --from: not a day: 'yesterday' (give YYYY-MM-DD, e.g. 2026-11-01)"),
    ("no out", [], USAGE_ERROR + "the following arguments are required: --out"),
    ("out not xlsx", ["--out", "{tmp}/report.csv"],
     "fbm-bridge: --out {tmp}/report.csv: the report is an Excel workbook: give a file name ending in .xlsx"),
    ("out an old Excel name", ["--out", "{tmp}/report.xls"],
     "fbm-bridge: --out {tmp}/report.xls: the report is an Excel workbook: give a file name ending in .xlsx"),
    ("out in a missing folder", ["--out", "{tmp}/missing/r.xlsx"],
     "fbm-bridge: --out {tmp}/missing/r.xlsx: the folder {tmp}/missing does not exist"),
    ("out in a file", ["--out", "{tmp}/a-file/r.xlsx"],
     "fbm-bridge: --out {tmp}/a-file/r.xlsx: the folder {tmp}/a-file is not a folder"),
    ("out a folder", ["--out", "{tmp}/folder.xlsx"],
     "fbm-bridge: --out {tmp}/folder.xlsx: this is a folder: give a file name ending in .xlsx"),
    ("out a folder, forced", ["--out", "{tmp}/folder.xlsx", "--force"],
     "fbm-bridge: --out {tmp}/folder.xlsx: this is a folder: give a file name ending in .xlsx"),
    ("out exists", ["--out", "{tmp}/old.xlsx"],
     "fbm-bridge: --out {tmp}/old.xlsx: the file exists: give another name, or add --force to replace it"),
    ("feeds zero", ["--feeds", "0", "--out", "{tmp}/r.xlsx"],
     USAGE_ERROR + "argument --feeds: not a whole number of at least 1: '0'"),
]


@pytest.mark.parametrize("case, argv, message", COMMAND_LINE, ids=[case[0] for case in COMMAND_LINE])
def test_a_bad_command_line_is_refused_with_the_reason_and_writes_nothing(config, tmp_path, case, argv, message):
    setup(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())

    done = bridge("report", *[arg.format(tmp=tmp_path) for arg in argv], config=config)

    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == message.format(tmp=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "old.xlsx").read_bytes() == b"last month's report"


OTHER_KEY = "b3RoZXIta2V5LW9mLTMyLWJ5dGVzLWZvci10ZXN0cyE="

# (case, environment changes, what to do to the state, stderr; {config}, {state} filled in)
LOCAL_STATE = [
    ("no ledger yet", {}, "remove ledger",
     "fbm-bridge: there is no ledger at {state}/ledger.sqlite: nothing to report (the bridge has not run yet)\n"),
    ("no state key", {"BRIDGE_STATE_KEY": None}, "",
     "fbm-bridge: order data is sealed: `report` needs the secret BRIDGE_STATE_KEY (environment variable, or the"
     " file $CREDENTIALS_DIRECTORY/BRIDGE_STATE_KEY)\n"),
    ("another state's key", {"BRIDGE_STATE_KEY": OTHER_KEY}, "",
     "fbm-bridge: BRIDGE_STATE_KEY is not the key the state in {state} was made with: restore that key, or change"
     " keys with `fbm-bridge rekey` (README: Operations, Changing the state key)\n"),
]


@pytest.mark.parametrize("case, env, action, message", LOCAL_STATE, ids=[case[0] for case in LOCAL_STATE])
def test_a_state_the_report_cannot_read_is_named_with_the_fix(config, tmp_path, case, env, action, message):
    settings = load(config)
    if action == "remove ledger":
        for path in settings.state_dir.glob("ledger.sqlite*"):
            path.unlink()
    environ = {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost"}
    for name, value in env.items():
        environ.pop(name) if value is None else environ.update({name: value})

    done = bridge("report", "--out", str(tmp_path / "r.xlsx"), config=config, env=environ)

    assert (done.returncode, done.stderr) == (2, message.format(config=config, state=settings.state_dir))
    assert not (tmp_path / "r.xlsx").exists()
    assert not settings.ledger_path.exists() or action != "remove ledger"  # never made just to look
