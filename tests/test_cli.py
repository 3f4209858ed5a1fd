"""The `bridge` command as an operator runs it: a subprocess, a config file on disk, the SP-API
sandbox over HTTP and OpenSSH over SFTP. Exit 0 done, 1 errors, 2 the setup needs a person."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
import sp_api.auth.access_token_client as token_cache

from bridge.sandbox.spapi import SpApiSandbox, load_seed
from bridge.service import state_lock
from harness import REPO, SAMPLES, SECRETS, SEED, load, sftp_warehouse, write_config

RUN_TIME = "2026-11-20T12:30:00Z"  # the sandbox seed's orders were updated 09:00–12:00Z that day


@pytest.fixture
def config(tmp_path, sshd, sftp_root, sandbox) -> Path:
    return write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                        warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])


def bridge(*args: str, config: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m bridge`; check that no secret reached either stream."""
    command = [sys.executable, "-m", "bridge", *(["--config", str(config)] if config else []), *args]
    environ = {**os.environ, **SECRETS, "NO_PROXY": "127.0.0.1,localhost"} if env is None else env
    done = subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=60)
    for secret in SECRETS.values():
        assert secret not in done.stdout and secret not in done.stderr
    return done


# --- check ------------------------------------------------------------------------------------

def test_check_logs_in_everywhere_and_prints_an_ok_line_for_each(config, sshd):
    done = bridge("check", "--now", RUN_TIME, config=config)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["config", "ok"], ["orders", "ok"], ["mapping", "ok"], ["sftp", "ok"], ["amazon", "ok"], ["pii", "ok"],
        ["state", "ok"]]
    assert "orders    ok  the first pull takes orders last updated from orders.start 2026-11-20T08:00:00Z on" in lines
    assert sshd.host_key_fingerprint in done.stdout
    assert "pii       ok  shipping addresses and buyer info come through (" in done.stdout


def test_check_warns_before_the_first_pull_that_without_orders_start_older_open_orders_are_never_pulled(
        tmp_path, sshd, sftp_root, sandbox):
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url, orders="",
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])

    done = bridge("check", "--now", "2026-11-29T12:00:00Z", config=config)

    assert done.returncode == 0, done.stdout + done.stderr  # a warning, not a failure
    assert done.stdout.splitlines()[1] == (
        "orders    ??  orders.start is not set: the first pull takes only orders last updated from about"
        " 2026-11-29T11:00:00Z on, and older open orders are never pulled (README: The first pull)")


def test_check_says_whether_this_user_can_keep_the_state_and_changes_nothing(config, tmp_path):
    state = tmp_path / "state"
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name}"

    new = bridge("check", config=config)
    made = state.exists()
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)  # the service's folder, checked as another user (root here)
    other = bridge("check", config=config)

    assert new.returncode == 0 and not made
    assert new.stdout.splitlines()[-1] == f"state     ok  {state} (not there yet: the first run makes it, {user}'s)"
    assert other.returncode == 2
    assert other.stdout.splitlines()[-1] == (
        f"state     FAIL the state folder {state} belongs to user nobody, not to {user} who runs this: run the"
        " command as nobody (`runuser -u nobody -- fbm-bridge ...` or `sudo -u nobody fbm-bridge ...`), so that"
        " what it writes stays usable by the service")


def test_check_names_a_file_in_the_state_folder_another_user_owns(config, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "ledger.sqlite").write_bytes(b"")
    os.chown(state / "ledger.sqlite", 65534, 65534)  # made by a command run as another user
    user = pwd.getpwuid(os.geteuid()).pw_name

    done = bridge("check", config=config)

    assert done.returncode == 2
    assert done.stdout.splitlines()[-1] == (
        f"state     FAIL {state / 'ledger.sqlite'} belongs to user nobody, not to user {user}: the service could not"
        f" use it (a command run as another user made it); give it back with `chown -R {user}: {state}`")


def test_check_proves_the_orders_folder_writable_and_leaves_nothing_behind(config, sftp_root):
    done = bridge("check", config=config)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{sftp_root} readable and writable" in done.stdout
    assert list(sftp_root.iterdir()) == []  # the probe file was removed


def test_check_fails_on_an_orders_folder_nobody_may_write_to(tmp_path, sshd, sandbox):
    folder = "/sys/kernel"  # readable, and not even root may create a file there
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, Path(folder))])

    done = bridge("check", config=config)

    assert done.returncode == 2
    [failure] = [line for line in done.stdout.splitlines() if "FAIL" in line]
    assert failure == (f"sftp      FAIL wh: {folder} is not writable: sftp {sshd.endpoint.username}@[127.0.0.1]:"
                       f"{sshd.port} refused put {folder}/.fbm-bridge-probe-{failure.split('-probe-')[1][:8]}.part:"
                       f" permission denied for {sshd.endpoint.username}")


def test_check_with_a_changed_host_key_exits_2_and_says_so(tmp_path, sshd, sftp_root, sandbox):
    impostor = tmp_path / "known_hosts"
    impostor.write_text(
        f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root, known_hosts=str(impostor))])

    done = bridge("check", config=config)

    assert done.returncode == 2
    [failure] = [line for line in done.stdout.splitlines() if "FAIL" in line]
    assert failure.startswith("sftp      FAIL wh:") and "interception" in failure
    assert "amazon    ok" in done.stdout  # the other checks still ran


@pytest.fixture
def strict_sandbox():
    """A sandbox whose Login with Amazon accepts only the test secrets."""
    token_cache.cache.clear()
    credentials = {"client_id": SECRETS["BRIDGE_LWA_CLIENT_ID"], "client_secret": SECRETS["BRIDGE_LWA_CLIENT_SECRET"],
                   "refresh_token": SECRETS["BRIDGE_LWA_REFRESH_TOKEN"]}
    with SpApiSandbox(load_seed(SEED), credentials=credentials) as server:
        yield server


def wrong_refresh_token() -> dict[str, str]:
    return {**os.environ, **SECRETS, "BRIDGE_LWA_REFRESH_TOKEN": "Atzr|wrong-token", "NO_PROXY": "127.0.0.1"}


def test_check_with_refused_amazon_credentials_exits_2(tmp_path, sshd, sftp_root, strict_sandbox):
    config = write_config(tmp_path, sandbox_url=strict_sandbox.url, token_url=strict_sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])
    done = bridge("check", config=config, env=wrong_refresh_token())
    assert done.returncode == 2
    assert "amazon    FAIL" in done.stdout and "refused" in done.stdout
    assert "Atzr|wrong-token" not in done.stdout + done.stderr


def test_an_invalid_config_exits_2_listing_every_problem_as_file_key_why(config):
    text = config.read_text()
    text = text.replace("[orders]", '[orders]\nlag_minutes = 1\nstatuses = ["Lost"]')
    text = text.replace('seller_id = "A3TESTSELLER"', 'seller_id = "A3TESTSELLER"\nregion_name = "na"')
    config.write_text(text)

    for command in (["check"], ["run"]):
        done = bridge(*command, config=config)
        assert done.returncode == 2, command
        assert done.stdout == ""
        problems = [line.strip() for line in done.stderr.splitlines()[1:]]
        assert problems == [
            f"{config}: amazon.region_name: unknown key (known: endpoint, marketplaces, max_throttle_wait_seconds,"
            " orders_api, region, seller_id, timeout_seconds, token_url)",
            f"{config}: orders.lag_minutes: must be at least 2, not 1",
            f"{config}: orders.statuses[0]: unknown order status 'Lost'",
        ], command


def test_missing_secrets_exit_2_naming_the_variables_without_values(config):
    env = {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}
    done = bridge("check", config=config, env=env)
    assert done.returncode == 2
    for name in SECRETS:
        assert name in done.stderr


def test_a_missing_config_file_exits_2(tmp_path):
    done = bridge("status", config=tmp_path / "nowhere.toml")
    assert done.returncode == 2 and "nowhere.toml: file not found" in done.stderr


# --- orders pull and status -------------------------------------------------------------------

def test_orders_pull_delivers_the_files_and_exits_0(config, sftp_root):
    done = bridge("orders", "pull", "--now", RUN_TIME, config=config)

    assert done.returncode == 0, done.stderr
    assert "delivered=5" in done.stdout and "errors=0" in done.stdout
    assert {p.name: p.read_bytes() for p in sftp_root.iterdir()} == {
        p.name: p.read_bytes() for p in (SAMPLES / "acme-csv").iterdir() if p.is_file()}


def test_orders_pull_with_the_real_clock_catches_up_from_the_configured_start(tmp_path, sshd, sftp_root, sandbox):
    # a day per window: a few windows from the seed's day to today, whatever today is
    config = write_config(tmp_path, sandbox_url=sandbox.url, token_url=sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)],
                          orders='start = "2026-11-20T06:00:00Z"\nwindow_minutes = 1440\nmax_windows_per_run = 1000')
    done = bridge("orders", "pull", config=config)
    assert done.returncode == 0, done.stderr
    assert len(list(sftp_root.iterdir())) == 5


def test_status_shows_the_counts_and_how_far_orders_were_pulled_as_text_and_json(config):
    before = bridge("status", config=config)
    assert before.returncode == 0
    assert "pulled up to: nothing pulled yet" in before.stdout

    bridge("orders", "pull", "--now", RUN_TIME, config=config)
    text = bridge("status", config=config)
    report = json.loads(bridge("status", "--json", config=config).stdout)

    assert text.returncode == 0
    assert f"config: {config}" in text.stdout
    assert "orders: pending=0 held=0 unrenderable=0 staged=0 delivered=5 cancelled=0 skipped=0" in text.stdout
    assert "pulled up to: 2026-11-20T12:00:00Z" in text.stdout
    assert report["orders"]["delivered"] == 5
    assert report["window_end"] == "2026-11-20T12:00:00Z"
    assert report["files_in_flight"] == [] and report["attention"] == []


def without_secrets() -> dict[str, str]:
    """The environment of an operator's shell: no BRIDGE_* secret, no credentials folder."""
    return {k: v for k, v in os.environ.items()
            if k not in SECRETS and not k.startswith("BRIDGE_") and k != "CREDENTIALS_DIRECTORY"}


def test_status_needs_no_secrets_before_or_after_a_run(config):
    before = bridge("status", config=config, env=without_secrets())
    assert before.returncode == 0, before.stderr
    assert "pulled up to: nothing pulled yet" in before.stdout

    assert bridge("orders", "pull", "--now", RUN_TIME, config=config).returncode == 0
    text = bridge("status", config=config, env=without_secrets())
    report = json.loads(bridge("status", "--json", config=config, env=without_secrets()).stdout)
    one = bridge("status", "--order", "302-0000003-0000003", config=config, env=without_secrets())

    assert text.returncode == 0, text.stderr
    assert "delivered=5" in text.stdout and report["orders"]["delivered"] == 5
    assert one.returncode == 0, one.stderr
    assert "file:           wh: ACME_AUF_302-0000003-0000003.csv" in one.stdout


def test_pull_without_secrets_still_names_each_missing_secret(config):
    done = bridge("orders", "pull", "--now", RUN_TIME, config=config, env=without_secrets())
    assert done.returncode == 2
    for name in SECRETS:
        assert name in done.stderr


def test_held_orders_are_listed_as_needing_attention(config, sandbox):
    sandbox.set_pii_access(False)
    bridge("orders", "pull", "--now", RUN_TIME, config=config)
    done = bridge("status", "--now", RUN_TIME, config=config)
    assert "held=5" in done.stdout and "needs attention:" in done.stdout
    lines = done.stdout.splitlines()
    assert len([line for line in lines if "  held  " in line and "PII role missing" in line]) == 5  # one per order
    assert "  1. 5 order(s) held: no delivery address from Amazon (PII role missing)" in lines  # ... grouped
    assert "  held 5: no delivery address from Amazon (PII role missing)" in lines


def test_a_second_pull_while_another_process_holds_the_state_lock_exits_2(config, sftp_root):
    with state_lock(load(config).state_dir):
        done = bridge("orders", "pull", "--now", RUN_TIME, config=config)

    assert done.returncode == 2
    assert "another bridge process" in done.stderr and "bridge.lock" in done.stderr
    assert list(sftp_root.iterdir()) == []


def test_a_pull_amazon_refuses_exits_2_naming_the_secrets_to_check(tmp_path, sshd, sftp_root, strict_sandbox):
    config = write_config(tmp_path, sandbox_url=strict_sandbox.url, token_url=strict_sandbox.token_url,
                          warehouses=[sftp_warehouse("wh", "acme-csv", sshd, sftp_root)])
    done = bridge("orders", "pull", "--now", RUN_TIME, config=config, env=wrong_refresh_token())

    assert done.returncode == 2  # the setup is wrong: a person must fix the credentials
    assert "error: pull:" in done.stderr and "BRIDGE_LWA_REFRESH_TOKEN" in done.stderr
    assert "Atzr|wrong-token" not in done.stdout + done.stderr
    assert list(sftp_root.iterdir()) == []


def test_status_right_at_the_bookmark_shows_zero_behind_not_a_crash(config):
    from bridge.cli import format_status
    from bridge.flows.orders import BOOKMARK
    from bridge.ledger import Ledger
    from bridge.sealing import Sealer
    from bridge.records import parse_iso
    from bridge.service import status_report

    settings = load(config)
    ledger = Ledger(settings.ledger_path, Sealer(settings.state_key))
    ledger.record([], parse_iso(RUN_TIME), bookmark=(BOOKMARK, parse_iso("2026-11-20T12:00:00Z")))
    ledger.close()

    report = status_report(settings, now=parse_iso("2026-11-20T12:00:00Z"))

    assert report["behind_seconds"] == 0 and report["late"] is False
    assert "pulled up to: 2026-11-20T12:00:00Z (0h00m ago)" in format_status(report)


def test_spool_open_gives_back_a_delivered_file_byte_for_byte_and_keygen_makes_keys(config, sftp_root):
    from bridge.sealing import is_key

    assert bridge("orders", "pull", "--now", RUN_TIME, config=config).returncode == 0
    spooled = sorted((config.parent / "state" / "spool" / "wh").iterdir())
    delivered = sftp_root / spooled[0].name
    assert spooled[0].read_bytes() != delivered.read_bytes()  # sealed at rest
    command = [sys.executable, "-m", "bridge", "--config", str(config), "spool", "open", str(spooled[0])]
    opened = subprocess.run(command, cwd=REPO, env={**os.environ, **SECRETS}, capture_output=True, timeout=60)
    assert opened.returncode == 0 and opened.stdout == delivered.read_bytes()

    key = bridge("keygen").stdout.strip()
    assert is_key(key) and key != bridge("keygen").stdout.strip()


def test_pull_dry_run_prints_and_writes_what_would_be_sent_and_delivers_nothing(config, sftp_root, tmp_path):
    done = bridge("orders", "pull", "--now", RUN_TIME, "--dry-run", "--out", str(tmp_path / "preview"), config=config)

    assert done.returncode == 0, done.stderr
    assert "would send wh: ACME_AUF_111-0000001-0000001.csv" in done.stdout
    assert list(sftp_root.iterdir()) == []
    previewed = {p.name: p.read_bytes() for p in (tmp_path / "preview" / "wh").iterdir()}
    assert previewed == {p.name: p.read_bytes() for p in (SAMPLES / "acme-csv").iterdir() if p.is_file()}
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in (tmp_path / "preview").rglob("*")}
    assert (tmp_path / "preview").stat().st_mode & 0o777 == 0o700  # the folder it made, buyer data inside
    assert set(modes.values()) == {0o700, 0o600} and modes["preview/wh"] == 0o700
    status = json.loads(bridge("status", "--json", config=config).stdout)
    assert status["window_end"] is None and sum(status["orders"].values()) == 0


def test_status_for_one_order_shows_its_file_and_history(config):
    assert bridge("orders", "pull", "--now", RUN_TIME, config=config).returncode == 0

    done = bridge("status", "--order", "302-0000003-0000003", config=config)
    assert done.returncode == 0
    assert "status:         delivered" in done.stdout
    assert "file:           wh: ACME_AUF_302-0000003-0000003.csv" in done.stdout
    assert "seen" in done.stdout and "delivered" in done.stdout.split("history:")[1]
    assert "Jürgen" not in done.stdout  # no buyer data

    unknown = bridge("status", "--order", "999-0000000-0000000", config=config)
    assert unknown.returncode == 1 and "not in the ledger" in unknown.stdout


# --- help and --config --------------------------------------------------------------------------

def parsers(parser=None, path=("fbm-bridge",)):
    """Every parser in the command tree, with its command path."""
    import argparse
    from bridge.cli import _parser

    parser = parser or _parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, (*path, name))


def test_every_command_and_option_has_help_that_states_its_default():
    import argparse

    hidden = []
    for path, parser in parsers():
        for action in parser._actions:
            where = f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if action.help == argparse.SUPPRESS:
                hidden.append(where)
                continue
            assert action.help, f"{where}: no help text"
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{' '.join(path)} {choice.dest}: no help text"
                continue
            if action.default not in (None, False, argparse.SUPPRESS):
                assert f"default {action.default}" in action.help or f"default ./{action.default}" in action.help, where
            elif action.option_strings and not action.required:
                assert "default" in action.help, f"{where}: help does not say what happens without it"
    # For tests only: a made-up "now" in the future would move the orders bookmark past orders
    # not yet pulled, or date shipments wrongly; operators never need it. (check's and status's
    # only move what they ask Amazon about and what they call late.)
    assert sorted(hidden) == sorted(["fbm-bridge orders pull --now", "fbm-bridge shipments process --now",
                                     "fbm-bridge inventory push --now", "fbm-bridge replay --now",
                                     "fbm-bridge check --now", "fbm-bridge status --now",
                                     "fbm-bridge resend --now", "fbm-bridge report --now"])


@pytest.mark.parametrize("argv, expected", [
    (["status"], "/etc/fbm-bridge/bridge.toml"),
    (["--config", "a.toml", "status"], "a.toml"),
    (["status", "--config", "b.toml"], "b.toml"),
    (["--config", "a.toml", "status", "--config", "b.toml"], "b.toml"),  # the later one wins
    (["orders", "pull", "--config", "b.toml", "--dry-run"], "b.toml"),
    (["spool", "open", "--config", "b.toml", "x.csv"], "b.toml"),
    (["check", "--config", "b.toml"], "b.toml"),
    (["run", "--config", "b.toml"], "b.toml"),
])
def test_config_is_accepted_before_and_after_the_command(argv, expected):
    from bridge.cli import _parser

    assert str(_parser().parse_args(argv).config) == expected


def test_status_reads_the_config_given_before_or_after_the_command(config, tmp_path):
    before = bridge("status", config=config)
    after = bridge("status", "--config", str(config))
    wins = bridge("--config", str(tmp_path / "nowhere.toml"), "status", "--config", str(config))

    for done in (before, after, wins):
        assert done.returncode == 0, done.stderr
        assert f"config: {config}" in done.stdout
    lost = bridge("status", "--config", str(tmp_path / "nowhere.toml"), config=config)
    assert lost.returncode == 2 and "nowhere.toml: file not found" in lost.stderr


def test_backup_list_says_when_there_is_no_backup_yet(config):
    done = bridge("backup", "--list", config=config)

    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"no backups yet in {config.parent / 'state' / 'backups'} (the orders run takes one a"
                           " day; `backup` takes one now)\n")


def test_every_command_help_opens_with_what_it_does_and_ends_with_the_exit_statuses(capsys):
    from bridge.cli import _parser, _with_descriptions, main

    commands = [path[1:] for path, parser in parsers(_with_descriptions(_parser())) if len(path) > 1]
    assert ("check",) in commands and ("orders", "pull") in commands
    for command in commands:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        usage, description = text.split("\n\n")[:2]
        assert usage.startswith(f"usage: fbm-bridge {' '.join(command)}")
        assert description and not description.startswith("options:"), command
        assert " ".join(text.split()).endswith(
            "Exit status: 0 done; 1 errors that the next run retries; 2 the setup needs a person."), command


def test_a_reader_that_stops_early_gets_no_traceback_and_no_broken_pipe_line(config):
    reader, writer = os.pipe()
    os.close(reader)  # `fbm-bridge status | head -1`, the head long gone
    with os.fdopen(writer, "wb") as gone:
        done = subprocess.run([sys.executable, "-m", "bridge", "--config", str(config), "status"], cwd=REPO,
                              env={**os.environ, **SECRETS}, stdout=gone, stderr=subprocess.PIPE, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "")
