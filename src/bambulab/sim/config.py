"""Configuration of the simulated cloud: dataclasses, defaults and a TOML loader.

Everything has a default, so ``SimConfig()`` is the demo world described in
``docs/simulator.md``: four accounts (one per login mode), a mixed fleet for
the demo account, and two unbound printers waiting to be bound. A TOML file
(``load_config``) overrides any part; ``[[accounts]]`` replaces the default
accounts as a whole so a test world never contains surprises.

Fleets are written as short strings: ``"<model>[:flag[:flag...]]"`` where the
model is a key of :data:`bambulab.sim.catalog.MODELS` (``x1c``, ``p1s``,
``a1mini``...) or ``seed`` (the seed documentation's example device
``01234567890ABCD``), and flags are ``offline``, ``printing``, ``idle``,
``outdated`` (older firmware than the cloud offers) and ``newline`` (the
access code comes back with a trailing ``\\n``, as real servers sometimes send).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .catalog import MODELS

LoginMode = Literal["password", "verifyCode", "tfa"]
LOGIN_MODES: tuple[LoginMode, ...] = ("password", "verifyCode", "tfa")
FLEET_FLAGS = frozenset({"offline", "printing", "idle", "outdated", "newline"})
SEED_DEVICE_KEY = "seed"


class ConfigError(ValueError):
    """The configuration is unusable; ``str()`` says where and why in one line."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` requests per ``window`` seconds; ``limit = 0`` means unlimited."""

    limit: int
    window: float


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-account limits by category (PROTOCOL.md §1, from the seed)."""

    enabled: bool = True
    auth: RateLimit = RateLimit(5, 60)
    device: RateLimit = RateLimit(120, 60)
    upload: RateLimit = RateLimit(10, 3600)
    profile: RateLimit = RateLimit(60, 60)
    mqtt: RateLimit = RateLimit(5, 300)

    def get(self, category: str) -> RateLimit | None:
        """The limit to enforce for ``category``, or None when there is none."""
        if not self.enabled:
            return None
        value = getattr(self, category, None)
        if not isinstance(value, RateLimit) or value.limit <= 0:
            return None
        return value


RATE_CATEGORIES: tuple[str, ...] = ("auth", "device", "upload", "profile", "mqtt")


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One printer. Unset fields are generated deterministically from the seed."""

    model: str  # catalog key, or "seed" for the documentation's example device
    dev_id: str | None = None
    name: str | None = None
    access_code: str | None = None  # 8 characters, without the newline quirk
    access_code_newline: bool = False
    online: bool = True
    printing: bool = False
    idle: bool = False  # force IDLE instead of the last task's outcome
    outdated: bool = False
    nozzle_diameter: float = 0.4
    ams_units: int | None = None  # None = the model's default AMS set
    bind_code: str | None = None  # only for unbound (bindable) printers


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One cloud account and the printers it owns."""

    password: str
    email: str | None = None
    phone: str | None = None
    mode: LoginMode = "password"
    uid: int = 0  # 0 = derived from the account's position
    name: str = ""
    handle: str = ""
    devices: tuple[DeviceConfig, ...] = ()
    tfa_secret: str | None = None  # base32; generated when the mode is "tfa"
    demo: bool = False
    tasks: int | None = None  # history size; None = a default by fleet size

    @property
    def login(self) -> str:
        """The account string a user types: the email, else the phone number."""
        return self.email or self.phone or ""


def parse_fleet_entry(entry: str) -> DeviceConfig:
    """Turn ``"p1s:outdated:newline"`` into a :class:`DeviceConfig`."""
    key, *flags = [part.strip().lower() for part in entry.strip().split(":")]
    if key == SEED_DEVICE_KEY:
        base = SEED_DEVICE
    elif key in MODELS:
        base = DeviceConfig(model=key)
    else:
        known = ", ".join([SEED_DEVICE_KEY, *sorted(MODELS)])
        raise ConfigError(f"unknown printer model {key!r} in fleet (known: {known})")
    unknown = [flag for flag in flags if flag not in FLEET_FLAGS]
    if unknown:
        raise ConfigError(
            f"unknown fleet flag {unknown[0]!r} (known: {', '.join(sorted(FLEET_FLAGS))})"
        )
    return replace(
        base,
        online=base.online and "offline" not in flags,
        printing=base.printing or "printing" in flags,
        idle=base.idle or "idle" in flags,
        outdated=base.outdated or "outdated" in flags,
        access_code_newline=base.access_code_newline or "newline" in flags,
    )


def parse_fleet(entries: str | list[str] | tuple[str, ...]) -> tuple[DeviceConfig, ...]:
    """A comma-separated string or a list of fleet entries."""
    items = entries.split(",") if isinstance(entries, str) else list(entries)
    return tuple(parse_fleet_entry(item) for item in items if item.strip())


# The seed's example device, as its documentation shows it (name and product
# disagree there too; kept so that the documented examples run). Its last print
# has finished (the documentation's Task Object is "completed", progress 100):
# the seed's upload-and-print examples start a print on it, which a busy printer
# would refuse. ``seed:printing`` in a fleet makes it print.
SEED_DEVICE = DeviceConfig(
    model="p1p",
    dev_id="01234567890ABCD",
    name="P1S 1",
    access_code="01234567",
)

DEMO_PASSWORD = "bambu-demo"
DEMO_UID = 1873420516


def default_accounts() -> tuple[AccountConfig, ...]:
    """One account per login mode; the first is the demo account."""
    return (
        AccountConfig(
            email="maker@example.com",
            password=DEMO_PASSWORD,
            mode="verifyCode",
            uid=DEMO_UID,
            name="Demo Maker",
            handle="demomaker",
            devices=parse_fleet(["seed", "x1c", "p1s:outdated:newline", "a1mini", "a1:offline"]),
            demo=True,
        ),
        AccountConfig(
            email="password@example.com",
            password=DEMO_PASSWORD,
            mode="password",
            uid=DEMO_UID + 1,
            name="Password User",
            handle="pwuser",
            devices=parse_fleet(["p1s"]),
            tasks=4,
        ),
        AccountConfig(
            phone="+15550100",
            password=DEMO_PASSWORD,
            mode="verifyCode",
            uid=DEMO_UID + 2,
            name="Phone User",
            handle="phoneuser",
        ),
        AccountConfig(
            email="tfa@example.com",
            password=DEMO_PASSWORD,
            mode="tfa",
            uid=DEMO_UID + 3,
            name="TFA User",
            handle="tfauser",
            devices=parse_fleet(["x1e"]),
            tfa_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            tasks=3,
        ),
    )


def default_bindable() -> tuple[DeviceConfig, ...]:
    """Unbound printers that ``POST bind`` can claim with their bind codes."""
    return (
        DeviceConfig(model="p1s", dev_id="01P09C470100201", name="P1S 2", bind_code="4F7K2Q9M"),
        DeviceConfig(model="h2d", dev_id="09409B120100202", name="H2D 1", bind_code="8H3N6R1T"),
    )


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything the simulated cloud needs; the defaults are the demo world."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port (the runner reports the one it got)
    seed: int = 1  # all generated data derives from it
    epoch: float | None = None  # anchor of the generated history; None = start time
    code_ttl: float = 300.0
    code_max_tries: int = 5
    token_ttl: int = 7_776_000
    tfa_key_ttl: float = 300.0
    url_ttl: int = 900  # pre-signed URL lifetime
    tfa_field_endpoint: bool = True  # False: /user/tfa/login answers 404
    refresh_enabled: bool = True  # False: refreshtoken answers 401 like the real cloud
    # True: the cloud broker also takes an owned printer's access code as the password
    # of u_<uid> (the seed's documented form); the real broker wants the token.
    lenient_cloud_mqtt: bool = False
    access_log: bool = False
    rate_limits: RateLimits = field(default_factory=RateLimits)
    accounts: tuple[AccountConfig, ...] = field(default_factory=default_accounts)
    bindable: tuple[DeviceConfig, ...] = field(default_factory=default_bindable)

    @property
    def demo_account(self) -> AccountConfig:
        """The account flagged ``demo``, else the first one."""
        for account in self.accounts:
            if account.demo:
                return account
        return self.accounts[0]

    def with_demo_fleet(self, devices: tuple[DeviceConfig, ...]) -> SimConfig:
        """A copy whose demo account owns ``devices`` instead of its own fleet."""
        demo = self.demo_account
        accounts = tuple(
            replace(account, devices=devices) if account is demo else account
            for account in self.accounts
        )
        return replace(self, accounts=accounts)


# --- TOML -------------------------------------------------------------------


def load_config(path: str | Path, base: SimConfig | None = None) -> SimConfig:
    """Read a TOML file over ``base`` (default: the demo world).

    Sections: ``[server]``, ``[auth]``, ``[data]``, ``[rate_limits]``,
    ``[[accounts]]`` (with ``[[accounts.devices]]``), ``[[bindable]]``.
    Unknown keys are errors: a typo must not silently fall back to a default.
    """
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    return config_from_mapping(data, base or SimConfig())


def config_from_mapping(data: Mapping[str, Any], base: SimConfig) -> SimConfig:
    """Apply a parsed TOML document to ``base``."""
    _check_keys(data, {"server", "auth", "data", "rate_limits", "accounts", "bindable"}, "")
    config = base
    server = _table(data, "server")
    _check_keys(server, {"host", "port", "access_log"}, "server")
    config = replace(
        config,
        host=_str(server, "host", config.host, "server"),
        port=_int(server, "port", config.port, "server"),
        access_log=_bool(server, "access_log", config.access_log, "server"),
    )
    auth = _table(data, "auth")
    _check_keys(
        auth,
        {
            "code_ttl",
            "code_max_tries",
            "token_ttl",
            "tfa_key_ttl",
            "url_ttl",
            "tfa_field_endpoint",
            "refresh_enabled",
            "lenient_cloud_mqtt",
        },
        "auth",
    )
    config = replace(
        config,
        code_ttl=_float(auth, "code_ttl", config.code_ttl, "auth"),
        code_max_tries=_int(auth, "code_max_tries", config.code_max_tries, "auth"),
        token_ttl=_int(auth, "token_ttl", config.token_ttl, "auth"),
        tfa_key_ttl=_float(auth, "tfa_key_ttl", config.tfa_key_ttl, "auth"),
        url_ttl=_int(auth, "url_ttl", config.url_ttl, "auth"),
        tfa_field_endpoint=_bool(auth, "tfa_field_endpoint", config.tfa_field_endpoint, "auth"),
        refresh_enabled=_bool(auth, "refresh_enabled", config.refresh_enabled, "auth"),
        lenient_cloud_mqtt=_bool(auth, "lenient_cloud_mqtt", config.lenient_cloud_mqtt, "auth"),
    )
    generated = _table(data, "data")
    _check_keys(generated, {"seed", "epoch"}, "data")
    epoch = generated.get("epoch", config.epoch)
    config = replace(
        config,
        seed=_int(generated, "seed", config.seed, "data"),
        epoch=_epoch(epoch),
    )
    config = replace(config, rate_limits=_rate_limits(_table(data, "rate_limits"), config))
    if "accounts" in data:
        config = replace(config, accounts=_accounts(data["accounts"]))
    if "bindable" in data:
        config = replace(
            config,
            bindable=tuple(
                _device(item, f"bindable[{i}]") for i, item in enumerate(_list(data, "bindable"))
            ),
        )
    validate(config)
    return config


def validate(config: SimConfig) -> None:
    """Cross-field checks that single keys cannot express."""
    if not config.accounts:
        raise ConfigError("at least one account is required")
    seen_logins: set[str] = set()
    seen_uids: set[int] = set()
    for index, account in enumerate(config.accounts):
        where = f"accounts[{index}]"
        login = account.login.lower()
        if not login:
            raise ConfigError(f"{where}: needs an email or a phone")
        if login in seen_logins:
            raise ConfigError(f"{where}: duplicate account {account.login}")
        seen_logins.add(login)
        if account.uid and account.uid in seen_uids:
            raise ConfigError(f"{where}: duplicate uid {account.uid}")
        seen_uids.add(account.uid)
        if account.mode not in LOGIN_MODES:
            raise ConfigError(f"{where}: mode must be one of {', '.join(LOGIN_MODES)}")
    seen_devices: set[str] = set()
    for device in (*config.bindable, *(d for a in config.accounts for d in a.devices)):
        if device.dev_id:
            if device.dev_id in seen_devices:
                raise ConfigError(f"device {device.dev_id} is configured twice")
            seen_devices.add(device.dev_id)
        if device.model not in MODELS:
            raise ConfigError(f"unknown printer model {device.model!r}")
        if device.access_code is not None and len(device.access_code) != 8:
            raise ConfigError(f"device {device.dev_id or device.model}: access_code needs 8 chars")
    if config.code_max_tries < 1:
        raise ConfigError("auth.code_max_tries must be at least 1")


def _accounts(raw: Any) -> tuple[AccountConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("accounts must be an array of tables ([[accounts]])")
    accounts: list[AccountConfig] = []
    for index, item in enumerate(raw):
        where = f"accounts[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(
            item,
            {
                "email",
                "phone",
                "password",
                "mode",
                "uid",
                "name",
                "handle",
                "fleet",
                "devices",
                "tfa_secret",
                "demo",
                "tasks",
            },
            where,
        )
        mode = _str(item, "mode", "password", where)
        if mode not in LOGIN_MODES:
            raise ConfigError(f"{where}.mode must be one of {', '.join(LOGIN_MODES)}")
        fleet = item.get("fleet", [])
        if isinstance(fleet, str):
            fleet = fleet.split(",")
        if not isinstance(fleet, list) or not all(isinstance(e, str) for e in fleet):
            raise ConfigError(f"{where}.fleet must be a list of model keys")
        devices = parse_fleet(fleet) + tuple(
            _device(d, f"{where}.devices[{i}]") for i, d in enumerate(_list(item, "devices"))
        )
        tasks = item.get("tasks")
        accounts.append(
            AccountConfig(
                email=_opt_str(item, "email", where),
                phone=_opt_str(item, "phone", where),
                password=_str(item, "password", "", where) or _missing(where, "password"),
                mode=mode,
                uid=_int(item, "uid", 0, where),
                name=_str(item, "name", "", where),
                handle=_str(item, "handle", "", where),
                devices=devices,
                tfa_secret=_opt_str(item, "tfa_secret", where),
                demo=_bool(item, "demo", False, where),
                tasks=None if tasks is None else _int(item, "tasks", 0, where),
            )
        )
    return tuple(accounts)


def _device(raw: Any, where: str) -> DeviceConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    _check_keys(
        raw,
        {
            "model",
            "dev_id",
            "name",
            "access_code",
            "access_code_newline",
            "online",
            "printing",
            "idle",
            "outdated",
            "nozzle_diameter",
            "ams_units",
            "bind_code",
        },
        where,
    )
    model = _str(raw, "model", "", where) or _missing(where, "model")
    if model == SEED_DEVICE_KEY:
        base = SEED_DEVICE
    elif model in MODELS:
        base = DeviceConfig(model=model)
    else:
        raise ConfigError(f"{where}.model: unknown printer model {model!r}")
    ams = raw.get("ams_units", base.ams_units)
    return DeviceConfig(
        model=base.model,
        dev_id=_opt_str(raw, "dev_id", where) or base.dev_id,
        name=_opt_str(raw, "name", where) or base.name,
        access_code=_opt_str(raw, "access_code", where) or base.access_code,
        access_code_newline=_bool(raw, "access_code_newline", base.access_code_newline, where),
        online=_bool(raw, "online", base.online, where),
        printing=_bool(raw, "printing", base.printing, where),
        idle=_bool(raw, "idle", base.idle, where),
        outdated=_bool(raw, "outdated", base.outdated, where),
        nozzle_diameter=_float(raw, "nozzle_diameter", base.nozzle_diameter, where),
        ams_units=None if ams is None else _int(raw, "ams_units", 0, where),
        bind_code=_opt_str(raw, "bind_code", where),
    )


def _rate_limits(table: Mapping[str, Any], config: SimConfig) -> RateLimits:
    _check_keys(table, {"enabled", *RATE_CATEGORIES}, "rate_limits")
    values: dict[str, RateLimit] = {c: getattr(config.rate_limits, c) for c in RATE_CATEGORIES}
    for category in RATE_CATEGORIES:
        if category not in table:
            continue
        where = f"rate_limits.{category}"
        entry = table[category]
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table like {{ limit = 5, window = 60 }}")
        _check_keys(entry, {"limit", "window"}, where)
        current: RateLimit = values[category]
        limit = RateLimit(
            limit=_int(entry, "limit", current.limit, where),
            window=_float(entry, "window", current.window, where),
        )
        if limit.limit < 0 or limit.window <= 0:
            raise ConfigError(f"{where}: limit must be >= 0 and window > 0")
        values[category] = limit
    return RateLimits(
        enabled=_bool(table, "enabled", config.rate_limits.enabled, "rate_limits"),
        auth=values["auth"],
        device=values["device"],
        upload=values["upload"],
        profile=values["profile"],
        mqtt=values["mqtt"],
    )


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    # tomllib turns an unquoted TOML datetime into a datetime object.
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    if isinstance(value, str):
        from .clock import parse_iso

        try:
            return parse_iso(value)
        except ValueError:
            raise ConfigError(f"data.epoch: not an ISO-8601 time: {value!r}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError("data.epoch must be an ISO-8601 time or Unix seconds")


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            place = f"{where}.{key}" if where else key
            raise ConfigError(f"unknown config key {place!r}")


def _missing(where: str, key: str) -> str:
    raise ConfigError(f"{where}.{key} is required")


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be an array")
    return value


def _str(table: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value


def _opt_str(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value


def _int(table: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key} must be an integer")
    return value


def _float(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}.{key} must be a number")
    return float(value)


def _bool(table: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false")
    return value
