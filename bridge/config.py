"""bridge.toml → frozen, validated settings.

Every problem is collected and reported as `file: key: why`; the CLI prints them all and exits
with status 2. Secrets are never read from the file: they come from environment variables or
from files in systemd's `$CREDENTIALS_DIRECTORY`, under the same names (see SECRET_NAMES).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge import DEFAULT_CONFIG_PATH  # noqa: F401 - the config module's name for it
from bridge.errors import ConfigError
from bridge.records import FULFILLMENT_STATUSES, V0_STATUS_TO_FULFILLMENT, iso_z, parse_iso

if TYPE_CHECKING:
    from bridge.mapping import Mapping


REGION_ENDPOINTS = {
    "na": "https://sellingpartnerapi-na.amazon.com",
    "eu": "https://sellingpartnerapi-eu.amazon.com",
    "fe": "https://sellingpartnerapi-fe.amazon.com",
}
DEFAULT_TOKEN_URL = "https://api.amazon.com/auth/o2/token"
ORDERS_APIS = ("2026-01-01", "v0")
SHIPMENT_SENDING = ("confirmShipment", "feed")

LWA_CLIENT_ID = "BRIDGE_LWA_CLIENT_ID"
LWA_CLIENT_SECRET = "BRIDGE_LWA_CLIENT_SECRET"
LWA_REFRESH_TOKEN = "BRIDGE_LWA_REFRESH_TOKEN"
STATE_KEY = "BRIDGE_STATE_KEY"
STATE_KEY_NEW = "BRIDGE_STATE_KEY_NEW"  # only `fbm-bridge rekey` reads it
SECRET_NAMES = (LWA_CLIENT_ID, LWA_CLIENT_SECRET, LWA_REFRESH_TOKEN, STATE_KEY)
# `orders.start` may be this far ahead of the clock (the machine's clock a little behind).
START_CLOCK_TOLERANCE = timedelta(minutes=5)


def _is_time_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # a named zone: the time zone database

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _is_key(text: str) -> bool:
    from bridge.sealing import is_key  # cryptography: only where there is a key to check

    return is_key(text)


def sftp_password_secret(warehouse: str) -> str:
    """The secret holding a warehouse's SFTP password: BRIDGE_SFTP_PASSWORD_<NAME>."""
    return "BRIDGE_SFTP_PASSWORD_" + re.sub(r"[^A-Za-z0-9]", "_", warehouse).upper()


def sftp_key_passphrase_secret(warehouse: str) -> str:
    """The secret holding the passphrase of a warehouse's private key:
    BRIDGE_SFTP_KEY_PASSPHRASE_<NAME>."""
    return "BRIDGE_SFTP_KEY_PASSPHRASE_" + re.sub(r"[^A-Za-z0-9]", "_", warehouse).upper()


class SecretUnreadable(ValueError):
    """A secret's file in $CREDENTIALS_DIRECTORY exists but cannot be read as text."""


@dataclass(frozen=True)
class AmazonSettings:
    seller_id: str
    endpoint: str
    token_url: str
    marketplaces: tuple[str, ...]
    orders_api: str
    timeout_seconds: float
    max_throttle_wait_seconds: float
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)


@dataclass(frozen=True)
class OrderSettings:
    interval: timedelta
    window: timedelta
    lag: timedelta
    overlap: timedelta
    start: datetime | None
    max_windows_per_run: int
    ship_to_countries: frozenset[str]  # empty: every country
    statuses: tuple[str, ...]  # v2026 FULFILLMENT_STATUSES values
    marketplaces: tuple[str, ...]  # subset of amazon.marketplaces
    # The service's orders job pulls windows this long at most, then lets the other due jobs
    # run; a catch-up goes on right after them (a manual `orders pull` is not sliced).
    pull_slice: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class SftpEndpoint:
    """How to reach and log in to one SFTP server. Exactly one of `private_key`, `password`."""

    host: str
    port: int
    username: str
    known_hosts: Path
    private_key: Path | None = None
    password: str | None = None
    fsync: bool = True  # ask the server to flush each file to disk before it is renamed into place
    timeout: float = 20.0
    passphrase: str | None = None  # of an encrypted private key (never shown)

    @property
    def address(self) -> str:
        """The host as OpenSSH writes it in known_hosts: `[host]:port` unless port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __repr__(self) -> str:  # never show the password
        auth = f"private_key={str(self.private_key)!r}" if self.private_key else "password=***"
        return f"SftpEndpoint({self.username}@{self.address}, {auth})"


@dataclass(frozen=True)
class WarehouseSettings:
    name: str
    mapping: Mapping  # None only in settings loaded with mappings=False (`status`)
    sftp: SftpEndpoint
    orders_folder: str
    temp_suffix: str
    ship_to_countries: frozenset[str]  # routing: empty takes every country
    marketplaces: frozenset[str]  # routing: empty takes every marketplace
    shipments_folder: str | None = None  # remote folder of confirmation files; None: not polled
    local_shipments_folder: Path | None = None  # staff's local drop folder for them; None: none
    stock_folder: str | None = None  # remote folder of stock files (only stock.warehouse has one)
    local_stock_folder: Path | None = None  # staff's local drop folder for stock files

    def takes(self, country_code: str, marketplace_id: str) -> bool:
        return (not self.ship_to_countries or country_code in self.ship_to_countries) and (
            not self.marketplaces or marketplace_id in self.marketplaces
        )


@dataclass(frozen=True)
class RetentionSettings:
    pii_days: int
    spool_days: int
    backups: int = 7  # daily ledger backups kept


@dataclass(frozen=True)
class ShipmentSettings:
    """How confirmation files are taken (see README, "Shipments up")."""

    poll: timedelta = timedelta(seconds=60)  # SFTP folders are listed this often
    rescan: timedelta = timedelta(minutes=5)  # local folders are listed too, for missed events
    stable: timedelta = timedelta(seconds=30)  # size and mtime unchanged this long: settled
    incomplete_limit: timedelta = timedelta(minutes=60)  # then an unfinished file goes to error/
    # Temporary and junk names (see README, "Names never taken"); formats.inbound.DEFAULT_IGNORE.
    ignore: tuple[str, ...] = ("*.tmp", "*.part", ".*", "*.filepart", "*.crdownload", "*.swp", "~$*", "Thumbs.db", "desktop.ini")
    send: str = "confirmShipment"  # or "feed": POST_ORDER_FULFILLMENT_DATA
    lookup_unknown_orders: bool = False  # rows naming orders the bridge did not deliver
    future_tolerance: timedelta = timedelta(minutes=15)  # a ship date this far ahead is the WMS's clock
    # What the bridge makes in a local staff folder (its subfolders, result files), set whatever
    # the umask (the unit's UMask=0077 would make them the service's alone): group-shared.
    local_folder_mode: int = 0o2770
    local_file_mode: int = 0o660


@dataclass(frozen=True)
class StockSettings:
    """Stock up (see README, "Stock up"): whose stock file Amazon gets, and when. Stock files
    are taken in by the same rules as confirmation files ([shipments] stable_seconds, ...)."""

    warehouse: str | None = None  # the one warehouse that publishes stock; None: stock up is off
    publish_at: time = time(22, 0)  # local time of the daily publish ...
    timezone: str = "UTC"  # ... in this zone
    poll: timedelta = timedelta(minutes=5)  # the SFTP stock folder is listed this often
    future_tolerance: timedelta = timedelta(days=1)  # a stock time further ahead is refused (a typo)
    feed_timeout: timedelta = timedelta(hours=4)  # a feed with Amazon longer is overdue: a person looks,
    # and newer stock files stop waiting for it

    @property
    def zone(self) -> tzinfo:
        if self.timezone == "UTC":  # the default: no need to load the time zone database
            return UTC
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Settings:
    path: Path
    state_dir: Path
    log_level: str
    amazon: AmazonSettings
    orders: OrderSettings
    warehouses: tuple[WarehouseSettings, ...]
    retention: RetentionSettings
    state_key: str = field(repr=False)  # seals buyer data in the ledger and the spool
    shipments: ShipmentSettings = ShipmentSettings()
    stock: StockSettings = StockSettings()

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "ledger.sqlite"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def inbound_dir(self) -> Path:
        """Copies of inbound files as received, by flow and warehouse (kept spool_days)."""
        return self.state_dir / "inbound"


def load_settings(path: Path, environ: dict[str, str] | None = None, *,
                  require_secrets: bool = True, mappings: bool = True, now: datetime | None = None) -> Settings:
    """Read, validate and freeze a config file; raise ConfigError with every problem found.

    `require_secrets=False` is for commands that use no secret (`fbm-bridge status`): a missing
    secret is then not a problem and its field is "". A secret that is set is still checked.
    `mappings=False` is for commands that lay out no file and read none (`fbm-bridge status`):
    the mappings are neither read nor checked (`check` does that), and each warehouse's
    `mapping` is None. `now` (default: the clock) is what `orders.start` must not be after.
    """
    environ = dict(os.environ if environ is None else environ)
    label = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{label}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as problem:
        raise ConfigError([f"{label}: cannot read: {problem}"]) from None
    except tomllib.TOMLDecodeError as problem:
        raise ConfigError([f"{label}: not valid TOML: {problem}"]) from None
    reader = _Reader(label, Path(path).resolve().parent, environ, require_secrets, mappings,
                     now or datetime.now(UTC))
    settings = reader.settings(data)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


class _Reader:
    """Walks the parsed TOML, collecting problems instead of stopping at the first."""

    def __init__(self, label: str, base: Path, environ: dict[str, str], require_secrets: bool,
                 mappings: bool = True, now: datetime | None = None):
        self.label = label
        self.now = now or datetime.now(UTC)
        self.base = base
        self.environ = environ
        self.require_secrets = require_secrets
        self.mappings = mappings
        self.problems: list[str] = []

    def problem(self, key: str, why: str) -> None:
        self.problems.append(f"{self.label}: {key}: {why}")

    def settings(self, data: dict[str, Any]) -> Settings:
        self.unknown_keys(data, "", {"bridge", "amazon", "orders", "warehouses", "retention", "shipments",
                                     "stock"})
        general = self.table(data, "bridge")
        self.unknown_keys(general, "bridge", {"state_dir", "log_level"})
        state_dir = self.path(general, "bridge.state_dir", "/var/lib/fbm-bridge")
        log_level = self.choice(general, "bridge.log_level", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
        amazon = self.amazon(self.table(data, "amazon"))
        orders = self.orders(self.table(data, "orders"), amazon.marketplaces)
        warehouses = self.warehouses(data.get("warehouses"), amazon.marketplaces)
        retention = self.retention(self.table(data, "retention"))
        shipments = self.shipments(self.table(data, "shipments"))
        stock = self.stock(self.table(data, "stock"), warehouses, _declared_names(data.get("warehouses")))
        return Settings(
            path=Path(self.label).absolute(),  # said in status and reports, which travel
            state_dir=state_dir,
            log_level=log_level,
            amazon=amazon,
            orders=orders,
            warehouses=warehouses,
            retention=retention,
            state_key=self.state_key(),
            shipments=shipments,
            stock=stock,
        )

    def state_key(self) -> str:
        key = self.secret(STATE_KEY, "bridge")
        if key and not _is_key(key):
            self.problem(
                "bridge",
                f"secret {STATE_KEY} is not a key: it must be 32 random bytes in URL-safe base64;"
                " `fbm-bridge keygen` prints one",
            )
        return key

    def amazon(self, section: dict[str, Any]) -> AmazonSettings:
        self.unknown_keys(
            section,
            "amazon",
            {"seller_id", "region", "endpoint", "token_url", "marketplaces", "orders_api",
             "timeout_seconds", "max_throttle_wait_seconds"},
        )
        endpoint = section.get("endpoint")
        region = section.get("region")
        if endpoint is None and region is None:
            self.problem("amazon.region", "set a region (na, eu, fe) or an explicit amazon.endpoint")
        elif endpoint is None and (not isinstance(region, str) or region not in REGION_ENDPOINTS):
            self.problem("amazon.region", f"unknown region {region!r} (known: na, eu, fe)")
        elif endpoint is not None:
            self.url(endpoint, "amazon.endpoint")
        token_url = self.string(section, "amazon.token_url", DEFAULT_TOKEN_URL)
        if token_url is not None:
            self.url(token_url, "amazon.token_url")
        marketplaces = self.string_list(section, "amazon.marketplaces", None)
        if not marketplaces:
            self.problem("amazon.marketplaces", "list at least one marketplace id, e.g. [\"ATVPDKIKX0DER\"]")
        return AmazonSettings(
            seller_id=self.string(section, "amazon.seller_id", None),
            endpoint=str(endpoint or REGION_ENDPOINTS.get(str(region), "")).rstrip("/"),
            token_url=token_url,
            marketplaces=tuple(marketplaces or ()),
            orders_api=self.choice(section, "amazon.orders_api", "2026-01-01", ORDERS_APIS),
            timeout_seconds=self.number(section, "amazon.timeout_seconds", 30, minimum=1,
                                        maximum=600),
            max_throttle_wait_seconds=self.number(
                section, "amazon.max_throttle_wait_seconds", 300, minimum=0, maximum=3600
            ),
            client_id=self.secret(LWA_CLIENT_ID, "amazon"),
            client_secret=self.secret(LWA_CLIENT_SECRET, "amazon"),
            refresh_token=self.secret(LWA_REFRESH_TOKEN, "amazon"),
        )

    def orders(self, section: dict[str, Any], configured: tuple[str, ...]) -> OrderSettings:
        self.unknown_keys(
            section,
            "orders",
            {"interval_minutes", "window_minutes", "lag_minutes", "overlap_minutes", "start",
             "max_windows_per_run", "pull_slice_seconds", "ship_to_countries", "statuses", "marketplaces"},
        )
        interval = self.number(section, "orders.interval_minutes", 30, minimum=0.1, maximum=1440)
        window = self.number(section, "orders.window_minutes", 30, minimum=1, maximum=1440)
        lag = self.number(section, "orders.lag_minutes", 30, minimum=2, maximum=10080)
        overlap = self.number(section, "orders.overlap_minutes", 0, minimum=0, maximum=1440)
        max_windows = self.number(section, "orders.max_windows_per_run", 96, minimum=1,
                                  maximum=10000)
        pull_slice = self.number(section, "orders.pull_slice_seconds", 60, minimum=0, maximum=3600)
        statuses = []
        for index, status in enumerate(
            self.string_list(section, "orders.statuses", ["Unshipped", "PartiallyShipped"]) or []
        ):
            normal = V0_STATUS_TO_FULFILLMENT.get(status, status.upper())
            if normal not in FULFILLMENT_STATUSES:
                self.problem(f"orders.statuses[{index}]", f"unknown order status {status!r}")
            statuses.append(normal)
        marketplaces = self.string_list(section, "orders.marketplaces", []) or []
        for index, marketplace in enumerate(marketplaces):
            if marketplace not in configured:
                self.problem(
                    f"orders.marketplaces[{index}]",
                    f"{marketplace!r} is not one of amazon.marketplaces",
                )
        start = section.get("start")
        start_at = None
        if start is not None:
            try:
                start_at = parse_iso(str(start))
            except ValueError:
                self.problem("orders.start", f"{start!r} is not an ISO 8601 time like 2026-11-20T00:00:00Z")
            else:
                self.start_not_ahead(start_at)
        return OrderSettings(
            interval=timedelta(minutes=interval),
            window=timedelta(minutes=window),
            lag=timedelta(minutes=lag),
            overlap=timedelta(minutes=overlap),
            start=start_at,
            max_windows_per_run=int(max_windows),
            pull_slice=timedelta(seconds=pull_slice),
            ship_to_countries=self.countries(section, "orders.ship_to_countries"),
            statuses=tuple(statuses),
            marketplaces=tuple(marketplaces or configured),
        )

    def start_not_ahead(self, start: datetime) -> None:
        """A start in the future (a typo in the year) would pull nothing until then, while every
        run reported success: refused, beyond a clock running a little behind."""
        if start > self.now + START_CLOCK_TOLERANCE:
            self.problem(
                "orders.start",
                f"{iso_z(start)} is in the future (this machine's clock says {iso_z(self.now)}): nothing"
                " would be pulled until then; give a past time, e.g. the last update of the oldest"
                " order still to ship",
            )

    def warehouses(self, entries: Any, configured: tuple[str, ...]) -> tuple[WarehouseSettings, ...]:
        if not isinstance(entries, list) or not entries:
            self.problem("warehouses", "declare at least one [[warehouses]] table")
            return ()
        result, names, secrets = [], set(), {}
        for index, entry in enumerate(entries):
            key = f"warehouses[{index}]"
            if not isinstance(entry, dict):
                self.problem(key, "must be a table")
                continue
            warehouse = self.warehouse(entry, key)
            if warehouse is None:
                continue
            secret = sftp_password_secret(warehouse.name)
            if warehouse.name in names:
                self.problem(f"{key}.name", f"duplicate warehouse name {warehouse.name!r}")
            elif secret in secrets:
                self.problem(f"{key}.name", f"{warehouse.name!r} and {secrets[secret]!r} would share the secret {secret}")
            names.add(warehouse.name)
            secrets.setdefault(secret, warehouse.name)
            for marketplace in sorted(warehouse.marketplaces - set(configured)):
                self.problem(f"{key}.marketplaces", f"{marketplace!r} is not one of amazon.marketplaces")
            result.append(warehouse)
        return tuple(result)

    def warehouse(self, entry: dict[str, Any], key: str) -> WarehouseSettings | None:
        self.unknown_keys(
            entry,
            key,
            {"name", "mapping", "host", "port", "username", "known_hosts", "private_key",
             "orders_folder", "temp_suffix", "fsync", "ship_to_countries", "marketplaces",
             "shipments_folder", "local_shipments_folder", "stock_folder", "local_stock_folder"},
        )
        name = self.string(entry, f"{key}.name", None)
        if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            self.problem(f"{key}.name", f"{name!r}: use letters, digits, '.', '_' and '-' only")
        mapping = self.mapping(entry, f"{key}.mapping") if self.mappings else None
        known_hosts = self.path(entry, f"{key}.known_hosts", None)
        why = known_hosts_problem(known_hosts) if known_hosts is not None else None
        if why:
            self.problem(f"{key}.known_hosts", why)
        # Absent (or "") means password login; Path("") would be ".", which is not a key file.
        private_key = self.path(entry, f"{key}.private_key", None) if entry.get("private_key", "") != "" else None
        if private_key is not None and not private_key.is_file():
            self.problem(f"{key}.private_key", f"{private_key} does not exist")
        passphrase = self.environ_secret(sftp_key_passphrase_secret(name or ""), key)
        if private_key is not None and not passphrase and _is_encrypted_key(private_key):
            self.problem(
                f"{key}.private_key",
                f"{private_key} is protected by a passphrase: give it in the secret"
                f" {sftp_key_passphrase_secret(name or '')}",
            )
        password = self.environ_secret(sftp_password_secret(name or ""), key)
        if private_key is None and not password and self.require_secrets:
            self.problem(
                f"{key}",
                f"no SFTP credential: set private_key or the secret {sftp_password_secret(name or '')}",
            )
        elif private_key is not None and password:
            self.problem(
                f"{key}",
                f"two SFTP credentials: private_key and the secret {sftp_password_secret(name or '')}; keep one",
            )
        temp_suffix = self.string(entry, f"{key}.temp_suffix", ".part")
        if temp_suffix is not None and not temp_suffix:
            self.problem(f"{key}.temp_suffix", "must not be empty: files are uploaded under a temporary name")
        elif temp_suffix and not re.fullmatch(r"[A-Za-z0-9._~-]{1,32}", temp_suffix):
            self.problem(f"{key}.temp_suffix", f"{temp_suffix!r}: use up to 32 letters, digits, '.', '_', '-'"
                                               " or '~' (it is added to a file name: no '/' or other path characters)")
        folder = self.string(entry, f"{key}.orders_folder", None)
        if folder == "":
            self.problem(f"{key}.orders_folder", 'must not be empty: give the folder, e.g. "/in" ("/" for the top)')
            folder = None
        host = self.string(entry, f"{key}.host", None)
        port = int(self.number(entry, f"{key}.port", 22, minimum=1, maximum=65535))
        username = self.string(entry, f"{key}.username", None)
        ship_to_countries = self.countries(entry, f"{key}.ship_to_countries")
        marketplaces = frozenset(self.string_list(entry, f"{key}.marketplaces", []) or [])
        fsync = entry.get("fsync", True)
        if not isinstance(fsync, bool):
            self.problem(f"{key}.fsync", f"must be true or false, not {fsync!r}")
        shipments_folder, local_shipments_folder = self.warehouse_shipments(entry, key, mapping)
        stock_folder, local_stock_folder = self.warehouse_stock(
            entry, key, mapping, (shipments_folder, local_shipments_folder))
        if None in (name, known_hosts, folder, host, username) or (mapping is None and self.mappings):
            return None
        return WarehouseSettings(
            name=name,
            mapping=mapping,
            sftp=SftpEndpoint(
                host=host,
                port=port,
                username=username,
                known_hosts=known_hosts,
                private_key=private_key,
                password=password or None,
                fsync=fsync is not False,
                passphrase=passphrase or None,
            ),
            orders_folder=folder.rstrip("/") or "/",
            temp_suffix=temp_suffix,
            ship_to_countries=ship_to_countries,
            marketplaces=marketplaces,
            shipments_folder=shipments_folder,
            local_shipments_folder=local_shipments_folder,
            stock_folder=stock_folder,
            local_stock_folder=local_stock_folder,
        )

    def retention(self, section: dict[str, Any]) -> RetentionSettings:
        self.unknown_keys(section, "retention", {"pii_days", "spool_days", "backups"})
        return RetentionSettings(
            pii_days=int(self.number(section, "retention.pii_days", 30, minimum=1, maximum=3650)),
            spool_days=int(self.number(section, "retention.spool_days", 30, minimum=1, maximum=3650)),
            backups=int(self.number(section, "retention.backups", 7, minimum=1, maximum=3650)),
        )

    # --- shipments -----------------------------------------------------------------------

    def shipments(self, section: dict[str, Any]) -> ShipmentSettings:
        self.unknown_keys(
            section,
            "shipments",
            {"poll_seconds", "rescan_minutes", "stable_seconds", "incomplete_limit_minutes",
             "ignore", "send", "lookup_unknown_orders", "future_tolerance_minutes", "local_folder_mode",
             "local_file_mode"},
        )
        ignore = self.string_list(section, "shipments.ignore", list(ShipmentSettings.ignore)) or []
        for index, pattern in enumerate(ignore):
            if not pattern or "/" in pattern:
                self.problem(f"shipments.ignore[{index}]", f"{pattern!r} must be a file name pattern like \"*.tmp\"")
        lookup = section.get("lookup_unknown_orders", False)
        if not isinstance(lookup, bool):
            self.problem("shipments.lookup_unknown_orders", f"must be true or false, not {lookup!r}")
        return ShipmentSettings(
            poll=timedelta(seconds=self.number(section, "shipments.poll_seconds", 60, minimum=5, maximum=86400)),
            rescan=timedelta(minutes=self.number(section, "shipments.rescan_minutes", 5, minimum=1, maximum=1440)),
            stable=timedelta(seconds=self.number(section, "shipments.stable_seconds", 30, minimum=1, maximum=3600)),
            incomplete_limit=timedelta(minutes=self.number(
                section, "shipments.incomplete_limit_minutes", 60, minimum=1, maximum=10080)),
            ignore=tuple(ignore),
            send=self.choice(section, "shipments.send", "confirmShipment", SHIPMENT_SENDING),
            lookup_unknown_orders=lookup is True,
            future_tolerance=timedelta(minutes=self.number(
                section, "shipments.future_tolerance_minutes", 15, minimum=0, maximum=1440)),
            local_folder_mode=self.mode(section, "shipments.local_folder_mode", "2770", folder=True),
            local_file_mode=self.mode(section, "shipments.local_file_mode", "0660", folder=False),
        )

    def mode(self, section: dict[str, Any], key: str, default: str, *, folder: bool) -> int:
        """A permission mode written as in chmod ("2770"): never one that lets everyone write."""
        value = section.get(key.rsplit(".", 1)[-1], default)
        example = "\"2770\" (setgid, owner and group)" if folder else "\"0660\" (owner and group)"
        if not isinstance(value, str) or not re.fullmatch(r"[0-7]{3,4}", value):
            self.problem(key, f"must be an octal mode in quotes like {example}, not {value!r}")
            return int(default, 8)
        mode = int(value, 8)
        if mode & 0o002:
            self.problem(key, f"{value!r} lets everyone write; use a group, e.g. {example}")
            return int(default, 8)
        if folder and mode & 0o700 != 0o700 or not folder and mode & 0o600 != 0o600:
            self.problem(key, f"{value!r} must let the service's user {'use' if folder else 'read and write'} "
                              f"it, e.g. {example}")
            return int(default, 8)
        if not folder and mode & 0o7111:
            self.problem(key, f"{value!r} makes result files executable or special; e.g. {example}")
            return int(default, 8)
        return mode

    def warehouse_shipments(self, entry: dict[str, Any], key: str,
                            mapping: Mapping | None) -> tuple[str | None, Path | None]:
        """The remote and local folders a warehouse's confirmation files arrive in."""
        remote = self.string(entry, f"{key}.shipments_folder", "") or None
        local = self.path(entry, f"{key}.local_shipments_folder", None) \
            if entry.get("local_shipments_folder", "") != "" else None
        if remote is not None and not remote.startswith("/"):
            self.problem(f"{key}.shipments_folder", f"{remote!r} must be an absolute path on the server, like \"/out\"")
        if (remote or local) and mapping is not None and mapping.shipments is None:
            self.problem(f"{key}.shipments_folder" if remote else f"{key}.local_shipments_folder",
                         f"the mapping {mapping.name} has no [shipments] section to read the files with")
        return (remote.rstrip("/") or "/") if remote else None, local

    # --- stock -----------------------------------------------------------------------------

    def stock(self, section: dict[str, Any], warehouses: tuple[WarehouseSettings, ...],
              declared: tuple[str, ...] = ()) -> StockSettings:
        """`declared`: every [[warehouses]] name, also of those whose own settings failed (their
        problems are reported already; the stock keys are not blamed for them)."""
        self.unknown_keys(section, "stock", {"warehouse", "publish_at", "timezone", "poll_minutes",
                                             "future_tolerance_minutes", "feed_timeout_hours"})
        name = self.string(section, "stock.warehouse", "") or None
        publish_at = self.clock_time(section, "stock.publish_at", "22:00")
        zone = self.string(section, "stock.timezone", "UTC")
        if zone != "UTC" and not _is_time_zone(zone or ""):
            self.problem("stock.timezone", f"unknown time zone {zone!r} (e.g. 'Europe/Berlin')")
            zone = "UTC"
        poll = self.number(section, "stock.poll_minutes", 5, minimum=1, maximum=1440)
        future = self.number(section, "stock.future_tolerance_minutes", 1440, minimum=0, maximum=10080)
        feed_timeout = self.number(section, "stock.feed_timeout_hours", 4, minimum=0.5, maximum=168)
        by_name = {w.name: (index, w) for index, w in enumerate(warehouses)}
        if name is not None and name not in by_name and name in declared:
            pass  # the warehouse's own settings (its mapping) failed: reported above, not twice
        elif name is not None and name not in by_name:
            self.problem("stock.warehouse", f"{name!r} is not one of the [[warehouses]] "
                                            f"({', '.join(repr(w) for w in by_name) or 'none'})")
        elif name is not None:
            warehouse = by_name[name][1]
            if warehouse.mapping is not None and warehouse.mapping.stock is None:
                self.problem("stock.warehouse", f"the mapping {warehouse.mapping.name} of {name!r} has no "
                                                "[stock] section to read its stock files with")
            if warehouse.stock_folder is None and warehouse.local_stock_folder is None:
                self.problem("stock.warehouse", f"{name!r} has neither stock_folder nor local_stock_folder: "
                                                "the bridge would have no stock file to publish")
            layout = warehouse.mapping.stock if warehouse.mapping is not None else None
            if (layout is not None and layout.quantity_means == "on_hand"
                    and not (warehouse.shipments_folder or warehouse.local_shipments_folder)):
                self.problem("stock.warehouse", f"the mapping {warehouse.mapping.name} of {name!r} reads quantities "
                                                "on hand, less the units of orders not yet confirmed shipped, but "
                                                f"{name!r} has no shipments_folder or local_shipments_folder: no "
                                                "confirmation would ever come and every order would count as on the "
                                                "shelf for good: give it a shipments folder, or use a mapping with "
                                                'quantity_means = "available"')
        for index, warehouse in by_name.values():
            for key in ("stock_folder", "local_stock_folder"):
                if getattr(warehouse, key) is not None and warehouse.name != name:
                    self.problem(f"warehouses[{index}].{key}",
                                 f"only the warehouse named by stock.warehouse publishes stock (Amazon has one "
                                 f"quantity per SKU), and that is {f'{name!r}' if name else 'none'}: set "
                                 f"stock.warehouse = {warehouse.name!r}, or remove this key")
        return StockSettings(warehouse=name, publish_at=publish_at or time(22, 0), timezone=zone or "UTC",
                             poll=timedelta(minutes=poll), future_tolerance=timedelta(minutes=future),
                             feed_timeout=timedelta(hours=feed_timeout))

    def warehouse_stock(self, entry: dict[str, Any], key: str, mapping: Mapping | None,
                        shipments: tuple[str | None, Path | None]) -> tuple[str | None, Path | None]:
        """The remote and local folders a warehouse's stock files arrive in."""
        remote = self.string(entry, f"{key}.stock_folder", "") or None
        local = self.path(entry, f"{key}.local_stock_folder", None) \
            if entry.get("local_stock_folder", "") != "" else None
        if remote is not None and not remote.startswith("/"):
            self.problem(f"{key}.stock_folder", f"{remote!r} must be an absolute path on the server, like \"/stock\"")
        remote = (remote.rstrip("/") or "/") if remote else None
        if (remote or local) and mapping is not None and mapping.stock is None:
            self.problem(f"{key}.stock_folder" if remote else f"{key}.local_stock_folder",
                         f"the mapping {mapping.name} has no [stock] section to read the files with")
        # Each flow takes every file of its folder: one folder cannot serve both.
        if remote is not None and remote == shipments[0]:
            self.problem(f"{key}.stock_folder", "is also the shipments_folder: stock files and "
                                                "confirmation files need a folder each")
        if local is not None and shipments[1] is not None and local.resolve() == shipments[1].resolve():
            self.problem(f"{key}.local_stock_folder", "is also the local_shipments_folder: stock files "
                                                      "and confirmation files need a folder each")
        return remote, local

    def clock_time(self, section: dict[str, Any], key: str, default: str) -> time | None:
        text = self.string(section, key, default)
        match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text or "")
        if match is None:
            self.problem(key, f"{text!r} is not a time of day like \"22:00\" (24-hour clock)")
            return None
        return time(int(match.group(1)), int(match.group(2)))

    # --- typed readers -------------------------------------------------------------------

    def mapping(self, entry: dict[str, Any], key: str) -> Mapping | None:
        path = self.path(entry, key, None)
        if path is None:
            return None
        from bridge.mapping import load_mapping  # only for commands that lay out or read files

        if not path.is_file():  # the key that names it, not only the path it names
            why = "is a folder" if path.is_dir() else "does not exist"
            self.problem(key, f"{path} {why} (relative paths are from the config's folder, {self.base})")
            return None
        try:
            return load_mapping(path)
        except ConfigError as problem:
            self.problems.extend(problem.problems)
            return None

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(key, "must be a table")
            return {}
        return value

    def unknown_keys(self, section: dict[str, Any], prefix: str, known: set[str]) -> None:
        for key in sorted(set(section) - known):
            self.problem(f"{prefix}.{key}" if prefix else key, f"unknown key (known: {', '.join(sorted(known))})")

    def string(self, section: dict[str, Any], key: str, default: str | None) -> str | None:
        value = section.get(key.rsplit(".", 1)[-1], default)
        if value is None:
            self.problem(key, "missing")
        elif not isinstance(value, str):
            self.problem(key, f"must be a string, not {type(value).__name__}")
            return None
        return value

    def number(self, section: dict[str, Any], key: str, default: float, *, minimum: float,
               maximum: float) -> float:
        """A number within [minimum, maximum]: past the maximum, time and date arithmetic
        overflows later (a purge a million days back, a window 1e12 minutes wide)."""
        value = section.get(key.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            self.problem(key, f"must be a number, not {value!r}")
            return default
        if value < minimum:
            self.problem(key, f"must be at least {minimum:g}, not {value!r}")
            return default
        if value > maximum:
            self.problem(key, f"must be at most {maximum:g}, not {value!r}")
            return default
        return value

    def url(self, value: Any, key: str) -> None:
        """An https URL, or http to a loopback host: LWA secrets and tokens travel over it."""
        if not _is_http_url(value):
            self.problem(key, f"{value!r} is not an http(s) URL")
        elif value.startswith("http://") and not _is_loopback(_host(value)):
            self.problem(key, "must use https:// (http is allowed only for a local sandbox "
                              "on 127.0.0.1)")

    def choice(self, section: dict[str, Any], key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = section.get(key.rsplit(".", 1)[-1], default)
        if value not in allowed:
            self.problem(key, f"{value!r} is not one of {', '.join(allowed)}")
            return default
        return value

    def string_list(self, section: dict[str, Any], key: str, default: list[str] | None) -> list[str] | None:
        value = section.get(key.rsplit(".", 1)[-1], default)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.problem(key, "must be a list of strings")
            return default
        return value

    def countries(self, section: dict[str, Any], key: str) -> frozenset[str]:
        codes = self.string_list(section, key, []) or []
        for index, code in enumerate(codes):
            if not re.fullmatch(r"[A-Z]{2}", code):
                self.problem(f"{key}[{index}]", f"{code!r} is not a two-letter ISO country code like \"DE\"")
        return frozenset(codes)

    def path(self, section: dict[str, Any], key: str, default: str | None) -> Path | None:
        value = self.string(section, key, default)
        if value is None:
            return None
        if not value.strip():
            # Path("") is ".": the working directory, which is never what was meant.
            self.problem(key, "must not be empty: give a path")
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path

    def secret(self, name: str, section: str) -> str:
        reported = len(self.problems)
        value = self.environ_secret(name, section)
        if not value and self.require_secrets and len(self.problems) == reported:  # unreadable: said once
            self.problem(
                section,
                f"secret {name} is not set: put it in the environment or in $CREDENTIALS_DIRECTORY/{name}",
            )
        return value

    def environ_secret(self, name: str, section: str = "bridge") -> str:
        try:
            return read_secret(name, self.environ)
        except SecretUnreadable as problem:
            self.problem(section, str(problem))
            return ""


def read_secret(name: str, environ: dict[str, str]) -> str:
    """A secret from the environment, else from systemd's credentials folder; '' if neither.
    SecretUnreadable if its file is there but cannot be read as UTF-8 text."""
    if environ.get(name):
        return environ[name]
    folder = environ.get("CREDENTIALS_DIRECTORY")
    if folder:
        candidate = Path(folder) / name
        if candidate.is_file():
            try:
                return candidate.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError:
                raise SecretUnreadable(
                    f"secret {name} in {candidate} is not UTF-8 text: write the secret again as plain text"
                ) from None
            except OSError as problem:
                raise SecretUnreadable(
                    f"secret {name} cannot be read from {candidate}: {problem.strerror or problem}"
                ) from None
    return ""


KNOWN_HOSTS_MAX = 1024 * 1024  # read at every load: a file this large is some other file
# Key types as they begin a known_hosts key (and a host's .pub file): a line that starts with one
# has lost its host names.
_KEY_TYPE = re.compile(r"(ssh-|ecdsa-sha2-|sk-ssh-|sk-ecdsa-|rsa-sha2-)[A-Za-z0-9@.-]+")


def known_hosts_problem(path: Path) -> str | None:
    """Why `path` cannot be read as an OpenSSH known_hosts file, naming the line; None when it can.
    paramiko would stop at such a line with an exception naming neither file nor line, or skip it."""
    try:
        if path.is_dir():
            return f"{path} is a folder; give the known_hosts file in it"
        if path.exists() and not path.is_file():
            return f"{path} is not a regular file; give the known_hosts file"
        with open(path, "rb") as f:
            data = f.read(KNOWN_HOSTS_MAX + 1)
    except FileNotFoundError:
        return f"{path} does not exist (the server's host key must be pinned)"
    except OSError as problem:
        return f"cannot read {path} ({problem.strerror or problem})"
    if len(data) > KNOWN_HOSTS_MAX:
        return f"{path} is larger than {KNOWN_HOSTS_MAX // 1024 // 1024} MB: not a known_hosts file"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return (f"{path} is not UTF-8 text (saved as UTF-16 or \"Unicode\" by an editor?): write it again"
                " as plain text, one `HOST KEYTYPE KEY` line per key, as ssh-keyscan prints them")
    if text.startswith("\ufeff"):
        return f"{path} starts with a byte order mark (saved as \"UTF-8 with BOM\"?): save it as plain UTF-8"
    for number, line in enumerate(text.splitlines(), 1):
        why = _known_hosts_line_problem(line)
        if why:
            return f"{path} line {number}: {why}"
    return None


def _known_hosts_line_problem(line: str) -> str | None:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    if fields[0].startswith("@"):
        return f"markers like {fields[0]} are not supported: pin the server's own key, as ssh-keyscan prints it"
    if _KEY_TYPE.fullmatch(fields[0]):
        return ("the line starts with the key type: the host name is missing (a host's .pub file?);"
                " write the host first, `[host]:port` for a port other than 22, as ssh-keyscan prints it")
    if len(fields) < 3:
        return "not a known_hosts line: expected `HOST KEYTYPE KEY`, as ssh-keyscan prints it"
    if not _KEY_TYPE.fullmatch(fields[1]):
        return "not a known_hosts line: expected `HOST KEYTYPE KEY`, as ssh-keyscan prints it"
    try:
        base64.b64decode(fields[2], validate=True)
    except ValueError:
        return f"the {fields[1]} key is not valid base64 (cut short, or wrapped onto two lines?)"
    return None


def _is_encrypted_key(path: Path) -> bool:
    """Whether an SSH private key file is protected by a passphrase (OpenSSH or PEM format).
    A file that cannot be read or parsed here is left to the SFTP edge to report."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    headers = [line for line in text.splitlines() if line.startswith(("-----BEGIN", "Proc-Type:"))]
    if any("ENCRYPTED" in line for line in headers):  # PEM: BEGIN ENCRYPTED ..., Proc-Type: 4,ENCRYPTED
        return True
    match = re.search(r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END", text, re.S)
    if not match:
        return False
    try:
        blob = base64.b64decode("".join(match.group(1).split()))
    except ValueError:
        return False
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic) or len(blob) < len(magic) + 4:
        return False
    length = int.from_bytes(blob[len(magic):len(magic) + 4], "big")
    return blob[len(magic) + 4:len(magic) + 4 + length] != b"none"


def _is_http_url(value: Any) -> bool:
    return isinstance(value, str) and re.match(r"https?://[^/\s]+", value) is not None


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def _is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves the machine."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _declared_names(entries: Any) -> tuple[str, ...]:
    """The names of the [[warehouses]] tables as written, valid or not."""
    if not isinstance(entries, list):
        return ()
    return tuple(entry["name"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("name"), str))
