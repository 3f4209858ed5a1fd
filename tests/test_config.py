"""bridge.toml → frozen settings (bridge/config.py): defaults, every problem as `file: key: why`,
secrets from the environment or systemd's credentials folder, never shown."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.config import REGION_ENDPOINTS, load_settings, sftp_password_secret
from bridge.errors import ConfigError
from harness import MAPPINGS, SECRETS

WAREHOUSE = """
[[warehouses]]
name = "acme"
mapping = "mappings/acme-csv.toml"
host = "sftp.acme.example"
username = "amz"
known_hosts = "known_hosts"
private_key = "id_ed25519"
orders_folder = "/in/"
"""

MINIMAL = """
[amazon]
seller_id = "A3TESTSELLER"
region = "eu"
marketplaces = ["A1PA6795UKMFR9", "A1F83G8C2ARO7P"]
""" + WAREHOUSE


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A config folder with the files a config refers to: mapping, known_hosts, a key."""
    (tmp_path / "mappings").mkdir()
    shutil.copy(MAPPINGS / "acme-csv.toml", tmp_path / "mappings" / "acme-csv.toml")
    shutil.copy(MAPPINGS / "acme-skus.csv", tmp_path / "mappings" / "acme-skus.csv")  # its stock SKU map
    (tmp_path / "known_hosts").write_text("sftp.acme.example ssh-ed25519 AAAA\n")
    (tmp_path / "id_ed25519").write_text("not read at load time\n")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    """Every problem, each checked to start with the config file's name."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path, SECRETS if environ is None else environ)
    found = caught.value.problems
    assert found and all(p.startswith(f"{path}: ") for p in found), found
    return [p.removeprefix(f"{path}: ") for p in found]


def has(found: list[str], key: str, *words: str) -> bool:
    return any(p.startswith(f"{key}: ") and all(w in p for w in words) for p in found)


# --- a valid config -------------------------------------------------------------------------

def test_a_minimal_config_loads_with_the_documented_defaults(folder):
    settings = load_settings(write(folder, MINIMAL), SECRETS)

    assert settings.state_dir == Path("/var/lib/fbm-bridge")
    assert settings.log_level == "INFO"
    assert settings.amazon.endpoint == REGION_ENDPOINTS["eu"]
    assert settings.amazon.token_url == "https://api.amazon.com/auth/o2/token"
    assert settings.amazon.orders_api == "2026-01-01"
    orders = settings.orders
    assert orders.interval == timedelta(minutes=30)
    assert orders.window == timedelta(minutes=30)
    assert orders.lag == timedelta(minutes=30)
    assert orders.overlap == timedelta(0)
    assert orders.start is None
    assert orders.statuses == ("UNSHIPPED", "PARTIALLY_SHIPPED")
    assert orders.marketplaces == ("A1PA6795UKMFR9", "A1F83G8C2ARO7P")
    assert orders.ship_to_countries == frozenset()
    assert (settings.retention.pii_days, settings.retention.spool_days) == (30, 30)
    [acme] = settings.warehouses
    assert acme.mapping.name == "acme-csv"
    assert acme.orders_folder == "/in"
    assert acme.temp_suffix == ".part"
    assert acme.sftp.port == 22


@pytest.mark.parametrize("region", sorted(REGION_ENDPOINTS))
def test_the_region_picks_the_sp_api_endpoint(folder, region):
    settings = load_settings(write(folder, MINIMAL.replace('"eu"', f'"{region}"')), SECRETS)
    assert settings.amazon.endpoint == f"https://sellingpartnerapi-{region}.amazon.com"


def test_an_explicit_endpoint_replaces_the_region(folder):
    text = MINIMAL.replace('region = "eu"', 'endpoint = "http://127.0.0.1:8700/"')
    assert load_settings(write(folder, text), SECRETS).amazon.endpoint == "http://127.0.0.1:8700"


@pytest.mark.parametrize("key", ["endpoint", "token_url"])
@pytest.mark.parametrize("url", ["http://sellingpartnerapi-eu.amazon.com", "http://10.0.0.5:8700",
                                 "http://127.0.0.1.example.com", "http://localhost.example.com/x",
                                 "http://[::1"])
def test_plain_http_to_a_host_off_this_machine_is_refused(folder, key, url):
    text = MINIMAL.replace('region = "eu"', f'region = "eu"\n{key} = "{url}"')
    assert problems(write(folder, text)) == [
        f"amazon.{key}: must use https:// (http is allowed only for a local sandbox on 127.0.0.1)"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8700", "http://127.8.0.1", "http://localhost:8700",
                                 "http://[::1]:8700", "https://sandbox.sellingpartnerapi-eu.amazon.com"])
def test_plain_http_to_a_local_sandbox_and_any_https_are_accepted(folder, url):
    text = MINIMAL.replace('region = "eu"', f'endpoint = "{url}"\ntoken_url = "{url}/auth/o2/token"')
    settings = load_settings(write(folder, text), SECRETS)
    assert (settings.amazon.endpoint, settings.amazon.token_url) == (url, f"{url}/auth/o2/token")


def test_v0_status_names_are_accepted_and_normalised(folder):
    text = MINIMAL.replace(WAREHOUSE, '\n[orders]\nstatuses = ["Unshipped", "PartiallyShipped", "PENDING"]\n' + WAREHOUSE)
    settings = load_settings(write(folder, text), SECRETS)
    assert settings.orders.statuses == ("UNSHIPPED", "PARTIALLY_SHIPPED", "PENDING")


def test_relative_paths_resolve_against_the_config_files_folder_not_the_working_directory(folder, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    text = '[bridge]\nstate_dir = "state"\n' + MINIMAL
    settings = load_settings(write(folder, text), SECRETS)
    assert settings.state_dir == folder / "state"
    assert settings.ledger_path == folder / "state" / "ledger.sqlite"
    [acme] = settings.warehouses
    assert acme.sftp.known_hosts == folder / "known_hosts"
    assert acme.sftp.private_key == folder / "id_ed25519"


def test_settings_are_frozen(folder):
    settings = load_settings(write(folder, MINIMAL), SECRETS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.orders.lag = timedelta(0)  # type: ignore[misc]


# --- secrets ----------------------------------------------------------------------------------

def test_secrets_come_from_the_environment(folder):
    amazon = load_settings(write(folder, MINIMAL), SECRETS).amazon
    assert (amazon.client_id, amazon.client_secret, amazon.refresh_token) == (
        SECRETS["BRIDGE_LWA_CLIENT_ID"], SECRETS["BRIDGE_LWA_CLIENT_SECRET"], SECRETS["BRIDGE_LWA_REFRESH_TOKEN"])


def test_secrets_come_from_files_in_the_systemd_credentials_directory(folder, tmp_path_factory):
    credentials = tmp_path_factory.mktemp("credentials")
    for name, value in SECRETS.items():
        (credentials / name).write_text(value + "\n")
    (credentials / "BRIDGE_SFTP_PASSWORD_ACME").write_text("sftp-pass\n")
    text = MINIMAL.replace('private_key = "id_ed25519"\n', "")

    settings = load_settings(write(folder, text), {"CREDENTIALS_DIRECTORY": str(credentials)})

    assert settings.amazon.refresh_token == SECRETS["BRIDGE_LWA_REFRESH_TOKEN"]
    assert settings.warehouses[0].sftp.password == "sftp-pass"


def test_a_warehouse_may_log_in_with_a_password_secret_instead_of_a_key(folder):
    text = MINIMAL.replace('private_key = "id_ed25519"\n', "")
    settings = load_settings(write(folder, text), {**SECRETS, "BRIDGE_SFTP_PASSWORD_ACME": "sftp-pass"})
    sftp = settings.warehouses[0].sftp
    assert (sftp.private_key, sftp.password) == (None, "sftp-pass")


def test_no_secret_appears_in_the_settings_repr(folder):
    text = MINIMAL.replace('private_key = "id_ed25519"\n', "")
    environ = {**SECRETS, "BRIDGE_SFTP_PASSWORD_ACME": "sftp-pass-never-shown"}
    shown = repr(load_settings(write(folder, text), environ))
    for secret in [*SECRETS.values(), "sftp-pass-never-shown"]:
        assert secret not in shown


def test_missing_secrets_name_each_variable_to_set(folder):
    found = problems(write(folder, MINIMAL), environ={})
    for name in SECRETS:
        section = "bridge" if name == "BRIDGE_STATE_KEY" else "amazon"
        assert has(found, section, name, "CREDENTIALS_DIRECTORY")


def test_without_required_secrets_missing_secrets_are_no_problem_and_read_as_empty(folder):
    text = MINIMAL.replace('private_key = "id_ed25519"\n', "")  # a password warehouse
    settings = load_settings(write(folder, text), {}, require_secrets=False)
    assert settings.state_key == "" and settings.warehouses[0].sftp.password is None
    assert (settings.amazon.client_id, settings.amazon.client_secret,
            settings.amazon.refresh_token) == ("", "", "")
    assert has(problems(write(folder, text), {}), "warehouses[0]", "BRIDGE_SFTP_PASSWORD_ACME")


def test_without_required_secrets_a_state_key_that_is_set_is_still_checked(folder):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(folder, MINIMAL), {"BRIDGE_STATE_KEY": "short"}, require_secrets=False)
    assert any("BRIDGE_STATE_KEY is not a key" in p for p in caught.value.problems)


def test_a_state_key_that_is_not_a_key_says_how_to_make_one(folder):
    found = problems(write(folder, MINIMAL), environ={**SECRETS, "BRIDGE_STATE_KEY": "hunter2"})
    assert has(found, "bridge", "BRIDGE_STATE_KEY", "bridge keygen")
    assert not any("hunter2" in problem for problem in found)


def test_a_warehouse_without_key_or_password_names_its_password_secret(folder):
    text = MINIMAL.replace('private_key = "id_ed25519"\n', "").replace('"acme"', '"acme-eu.2"')
    found = problems(write(folder, text))
    assert sftp_password_secret("acme-eu.2") == "BRIDGE_SFTP_PASSWORD_ACME_EU_2"
    assert has(found, "warehouses[0]", "no SFTP credential", "BRIDGE_SFTP_PASSWORD_ACME_EU_2")


# --- every problem, reported at once -----------------------------------------------------------

BROKEN = """
colour = "blue"

[bridge]
state_dir = "state"
verbose = true

[amazon]
seller_id = "A3TESTSELLER"
region = "mars"
marketplace = ["ATVPDKIKX0DER"]

[orders]
lag_minutes = 1
statuses = ["Unshipped", "Lost"]
marketplaces = ["A1PA6795UKMFR9"]
ship_to_countries = ["DE", "deu"]
every = 5

[retention]
pii_days = 0

[[warehouses]]
name = "acme"
mapping = "mappings/acme-csv.toml"
host = "sftp.acme.example"
username = "amz"
known_hosts = "missing_known_hosts"
orders_folder = "/in"
folder = "/in"

[[warehouses]]
name = "acme"
mapping = "mappings/acme-csv.toml"
host = "sftp.acme.example"
username = "amz"
known_hosts = "known_hosts"
private_key = "id_ed25519"
orders_folder = "/in"
ship_to_countries = ["Germany"]
"""


def test_every_problem_is_reported_at_once_with_its_key_path(folder):
    found = problems(write(folder, BROKEN), environ={})

    expected = [
        ("colour", "unknown key"),
        ("bridge.verbose", "unknown key"),
        ("amazon.marketplace", "unknown key"),
        ("orders.every", "unknown key"),
        ("warehouses[0].folder", "unknown key"),
        ("amazon.region", "unknown region 'mars'"),
        ("amazon.marketplaces", "at least one"),
        ("orders.lag_minutes", "at least 2"),
        ("orders.statuses[1]", "unknown order status 'Lost'"),
        ("orders.marketplaces[0]", "'A1PA6795UKMFR9' is not one of amazon.marketplaces"),
        ("orders.ship_to_countries[1]", "'deu'", "two-letter"),
        ("warehouses[1].ship_to_countries[0]", "'Germany'", "two-letter"),
        ("retention.pii_days", "at least 1"),
        ("warehouses[0].known_hosts", "missing_known_hosts", "does not exist"),
        ("warehouses[0]", "BRIDGE_SFTP_PASSWORD_ACME"),
        ("warehouses[1].name", "duplicate warehouse name 'acme'"),
        ("amazon", "BRIDGE_LWA_CLIENT_ID"),
        ("amazon", "BRIDGE_LWA_CLIENT_SECRET"),
        ("amazon", "BRIDGE_LWA_REFRESH_TOKEN"),
    ]
    missing = [e for e in expected if not has(found, *e)]
    assert not missing, f"not reported: {missing}\nreported: {found}"


def test_unknown_keys_name_the_keys_that_are_known(folder):
    found = problems(write(folder, MINIMAL + 'tempsuffix = ".tmp"\n'))
    assert has(found, "warehouses[0].tempsuffix", "unknown key", "temp_suffix")


def test_a_config_without_region_or_endpoint_says_to_set_one(folder):
    found = problems(write(folder, MINIMAL.replace('region = "eu"\n', "")))
    assert has(found, "amazon.region", "na, eu, fe")


def test_a_region_of_the_wrong_type_is_a_problem_not_a_crash(folder):
    found = problems(write(folder, MINIMAL.replace('region = "eu"', 'region = ["eu"]')))
    assert has(found, "amazon.region")


def test_a_config_without_warehouses_says_to_declare_one(folder):
    found = problems(write(folder, MINIMAL.replace(WAREHOUSE, "")))
    assert has(found, "warehouses", "[[warehouses]]")


def test_missing_required_warehouse_keys_are_all_named(folder):
    text = MINIMAL.replace(WAREHOUSE, '\n[[warehouses]]\nname = "acme"\nprivate_key = "id_ed25519"\n')
    found = problems(write(folder, text))
    for key in ("mapping", "host", "username", "known_hosts", "orders_folder"):
        assert has(found, f"warehouses[0].{key}", "missing"), found


def test_a_mapping_problem_is_reported_with_the_mappings_own_file_name(folder):
    mapping = folder / "mappings" / "acme-csv.toml"
    mapping.write_text(mapping.read_text().replace('format = "csv"', 'format = "csv"\nfile_pre = "x"'))
    with pytest.raises(ConfigError) as caught:
        load_settings(write(folder, MINIMAL), SECRETS)
    assert any(p.startswith(f"{mapping}: ") and "file_pre" in p for p in caught.value.problems), caught.value.problems


def test_a_missing_mapping_file_is_reported_with_its_path(folder):
    text = MINIMAL.replace("mappings/acme-csv.toml", "mappings/nope.toml")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(folder, text), SECRETS)
    assert any(str(folder / "mappings" / "nope.toml") in p for p in caught.value.problems)


def test_a_toml_syntax_error_names_the_file_and_the_line(folder):
    path = write(folder, MINIMAL + "\n[orders\nlag_minutes = 5\n")
    [problem] = problems(path)
    assert "TOML" in problem and "line" in problem


def test_a_missing_config_file_is_one_clear_problem(tmp_path):
    [problem] = problems(tmp_path / "nowhere.toml")
    assert "not found" in problem


def test_a_bad_start_time_asks_for_iso_8601(folder):
    text = MINIMAL.replace(WAREHOUSE, '\n[orders]\nstart = "yesterday"\n' + WAREHOUSE)
    found = problems(write(folder, text))
    assert has(found, "orders.start", "'yesterday'", "ISO 8601")


def test_a_start_time_may_be_a_toml_datetime(folder):
    text = MINIMAL.replace(WAREHOUSE, "\n[orders]\nstart = 2026-11-20T08:00:00Z\n" + WAREHOUSE)
    settings = load_settings(write(folder, text), SECRETS)
    assert settings.orders.start.isoformat() == "2026-11-20T08:00:00+00:00"


def test_a_number_given_as_text_is_a_problem(folder):
    text = MINIMAL.replace(WAREHOUSE, '\n[orders]\ninterval_minutes = "5"\n' + WAREHOUSE)
    assert has(problems(write(folder, text)), "orders.interval_minutes", "must be a number")


@pytest.mark.parametrize("section, key, maximum", [
    ("amazon", "timeout_seconds", 600),
    ("amazon", "max_throttle_wait_seconds", 3600),
    ("orders", "interval_minutes", 1440),
    ("orders", "window_minutes", 1440),
    ("orders", "lag_minutes", 10080),
    ("orders", "overlap_minutes", 1440),
    ("orders", "max_windows_per_run", 10000),
    ("retention", "pii_days", 3650),
    ("retention", "spool_days", 3650),
    ("warehouses[0]", "port", 65535),
])
def test_a_number_past_its_maximum_is_a_problem_not_a_later_crash(folder, section, key, maximum):
    if section == "warehouses[0]":
        text = MINIMAL + f"{key} = {maximum + 1}\n"
    elif section == "amazon":
        text = MINIMAL.replace('region = "eu"', f'region = "eu"\n{key} = {maximum + 1}')
    else:
        text = MINIMAL + f"\n[{section}]\n{key} = {maximum + 1}\n"
    found = problems(write(folder, text))
    assert found == [f"{section}.{key}: must be at most {maximum}, not {maximum + 1}"]
    at_most = text.replace(f"{key} = {maximum + 1}", f"{key} = {maximum}")
    load_settings(write(folder, at_most), SECRETS)  # the maximum itself is fine


@pytest.mark.parametrize("value", ["1e12", "inf", "nan"])
def test_huge_or_not_finite_minutes_are_a_problem(folder, value):
    text = MINIMAL + f"\n[orders]\noverlap_minutes = {value}\n"
    assert has(problems(write(folder, text)), "orders.overlap_minutes", "must be")


def test_a_warehouse_with_both_a_key_and_a_password_secret_is_refused_at_load(folder):
    found = problems(write(folder, MINIMAL), {**SECRETS, "BRIDGE_SFTP_PASSWORD_ACME": "sftp-pass"})
    assert has(found, "warehouses[0]", "two SFTP credentials", "BRIDGE_SFTP_PASSWORD_ACME")


# --- fsync and the shipped example --------------------------------------------------------------

def test_fsync_is_on_by_default_and_must_be_true_or_false(folder):
    assert load_settings(write(folder, MINIMAL), SECRETS).warehouses[0].sftp.fsync is True
    assert load_settings(write(folder, MINIMAL + "fsync = false\n"), SECRETS).warehouses[0].sftp.fsync is False
    assert has(problems(write(folder, MINIMAL + 'fsync = "no"\n')), "warehouses[0].fsync", "true or false")


EXAMPLE = MAPPINGS.parent / "bridge.example.toml"


def known_keys(folder: Path) -> dict[str, set[str]]:
    """The keys the loader knows at each level, read from its own unknown-key messages."""
    text = MINIMAL.replace("[amazon]", "zz = 1\n[bridge]\nzz = 1\n[orders]\nzz = 1\n[retention]\nzz = 1\n[shipments]\nzz = 1\n"
                                       "[stock]\nzz = 1\n[amazon]\nzz = 1")
    found = problems(write(folder, text + "zz = 1\n"))
    known = {}
    for problem in found:
        key, _, why = problem.partition(": ")
        if why.startswith("unknown key (known: "):
            known[key.removesuffix("zz").rstrip(".") or "top"] = set(why[len("unknown key (known: "):-1].split(", "))
    assert set(known) == {"top", "bridge", "amazon", "orders", "retention", "shipments", "stock",
                          "warehouses[0]"}, found
    return known


def test_the_example_config_documents_every_key_the_loader_knows(folder):
    example = EXAMPLE.read_text()
    documented = {line.lstrip("# ").split(" = ")[0] for line in example.splitlines() if " = " in line}
    sections = {line.strip("#[] ") for line in example.splitlines() if line.lstrip("# ").startswith("[")}
    known = known_keys(folder)
    assert known.pop("top") <= sections
    for section, keys in known.items():
        assert keys <= documented, f"{section}: not in bridge.example.toml: {keys - documented}"
    for secret in [*SECRETS, "BRIDGE_SFTP_PASSWORD_<NAME>"]:
        assert secret in example


def test_the_example_config_loads_once_its_files_exist(folder):
    shutil.copy(EXAMPLE, folder / "bridge.toml")
    (folder / "known_hosts.acme").write_text("sftp.acme.example ssh-ed25519 AAAA\n")
    (folder / "id_ed25519").write_text("key\n")
    settings = load_settings(folder / "bridge.toml", SECRETS)
    assert settings.warehouses[0].mapping.name == "acme-csv"
    assert settings.amazon.endpoint == REGION_ENDPOINTS["eu"]


def test_the_example_configs_commented_defaults_are_the_loaders_defaults(folder):
    shutil.copy(EXAMPLE, folder / "example.toml")
    (folder / "known_hosts.acme").write_text("sftp.acme.example ssh-ed25519 AAAA\n")
    (folder / "id_ed25519").write_text("x\n")
    lines = (folder / "example.toml").read_text().splitlines()
    plain = load_settings(folder / "example.toml", SECRETS)
    defaults = {"state_dir", "log_level", "token_url", "orders_api", "timeout_seconds",
                "max_throttle_wait_seconds", "interval_minutes", "window_minutes", "lag_minutes",
                "overlap_minutes", "max_windows_per_run", "statuses", "port", "temp_suffix", "fsync",
                "pii_days", "spool_days", "poll_seconds", "rescan_minutes", "stable_seconds",
                "incomplete_limit_minutes", "ignore", "send", "lookup_unknown_orders", "publish_at",
                "timezone", "poll_minutes"}
    uncommented = [line[2:] if line.startswith("# ") and line[2:].split(" = ")[0] in defaults else line
                   for line in lines]
    assert len(set(uncommented) - set(lines)) == len(defaults)  # each default shown exactly once
    (folder / "example.toml").write_text("\n".join(uncommented))
    explicit = load_settings(folder / "example.toml", SECRETS)
    assert explicit == plain


def test_warehouse_names_that_would_share_a_password_secret_are_refused(folder):
    second = WAREHOUSE.replace('"acme"', '"ACME"')
    found = problems(write(folder, MINIMAL + second))
    assert has(found, "warehouses[1].name", "'ACME' and 'acme'", "BRIDGE_SFTP_PASSWORD_ACME")


def test_a_warehouse_routing_marketplace_must_be_one_of_amazon_marketplaces(folder):
    found = problems(write(folder, MINIMAL + 'marketplaces = ["ATVPDKIKX0DER"]\n'))
    assert has(found, "warehouses[0].marketplaces", "'ATVPDKIKX0DER' is not one of amazon.marketplaces")
