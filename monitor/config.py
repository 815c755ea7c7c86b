"""TOML -> validated, frozen settings.

Every model forbids unknown keys (a typo must not be silently ignored) and
carries units in its names (`confirm_s`, `stale_after_s`). `load_settings`
turns any validation problem into a one-line ConfigError naming the key path.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from monitor.errors import ConfigError
from monitor.limits import (Amount, Count, Days, Fraction, NonNegativeAmount, PositiveAmount, PositiveCount,
                            PositiveFraction, PositiveMillis, PositiveSeconds, PositiveWholeSeconds, Price, Ratio,
                            Seconds, bad_number, too_deep, usable_price)

Model = Literal["health_factor", "ltv", "margin_level", "unified"]
KNOWN_STABLES = frozenset({"USDT", "USDC", "USD", "DAI", "BUSD", "FDUSD", "TUSD", "USDP", "PYUSD", "USDS"})
# Native level units per model and how they map onto health (h = 1 is liquidation).
NATIVE_UNIT: dict[str, str] = {
    "health_factor": "health",
    "ltv": "ltv",
    "margin_level": "margin_level",
    "unified": "mm_rate",
}


class Frozen(BaseModel):
    # allow_inf_nan=False: inf or NaN anywhere is a typo or an attack, never a setting
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Band(Frozen):
    """One band of a progressive schedule: the amount up to `up_to` (USD value) or `up_to_qty`
    (coin quantity) counts at the band's rate; the last band has neither."""

    up_to: PositiveAmount | None = None
    up_to_qty: PositiveAmount | None = None

    @property
    def bound(self) -> float | None:
        return self.up_to if self.up_to is not None else self.up_to_qty


class Tier(_Band):
    """A collateral weight band (Bybit and OKX band by coin quantity: write up_to_qty)."""

    weight: Fraction


class MarginTier(_Band):
    """A maintenance band: a borrow's (by quantity, Bybit position-tiers) or a perpetual's (by notional
    value, the venue's risk limits)."""

    mmr: Fraction


WeightSpec = float | list[Tier]
MarginSpec = float | list[MarginTier]


def _check_bands(spec: list[_Band]) -> list[_Band]:
    if not spec:
        raise ValueError("a tier list needs at least one tier")
    if spec[-1].bound is not None:
        raise ValueError("the last tier must have no up_to (it covers everything above)")
    if any(t.up_to is not None and t.up_to_qty is not None for t in spec):
        raise ValueError("a tier has either up_to (USD value) or up_to_qty (coin quantity), not both")
    inner = [t.bound for t in spec[:-1]]
    if any(b is None for b in inner) or inner != sorted(inner) or len(set(inner)) != len(inner):
        raise ValueError("tier bounds must be strictly increasing")
    if len({t.up_to is None for t in spec[:-1]}) > 1:
        raise ValueError("tiers of one schedule are all up_to (USD value) or all up_to_qty (coin quantity)")
    return spec


def _check_weight(spec: WeightSpec) -> WeightSpec:
    if isinstance(spec, float | int):
        if not 0 <= spec <= 1:
            raise ValueError("weight must be between 0 and 1")
        return float(spec)
    return _check_bands(spec)


def _check_margin(spec: MarginSpec) -> MarginSpec:
    if isinstance(spec, float | int):
        if not 0 <= spec < 1:
            raise ValueError("mmr must be >= 0 and < 1")
        return float(spec)
    return _check_bands(spec)


class AssetSettings(Frozen):
    price: str | float  # a market symbol ("BTC/USDT") or a fixed price
    weight: WeightSpec = 1.0
    stable: bool | None = None  # a stable target for sell_to_stable/repay; default: fixed price or a known stablecoin
    lot_size: NonNegativeAmount = 0.0  # order amount step in base units (0 = any)
    min_notional: NonNegativeAmount = 0.0  # smallest order the venue accepts, in quote units
    tradable: bool = True  # false: strategies never trade it (e.g. collateral locked elsewhere)

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: WeightSpec) -> WeightSpec:
        return _check_weight(v)

    @field_validator("price")
    @classmethod
    def _price(cls, v: str | float) -> str | float:
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("price symbol must not be empty")
            return v
        if not usable_price(v):
            raise ValueError("a fixed price must be a positive number between 1e-15 and 1e15")
        return float(v)

    @property
    def symbol(self) -> str | None:
        return self.price if isinstance(self.price, str) else None


class PositionSettings(Frozen):
    """A perpetual position on a unified account (size < 0 is short)."""

    symbol: str
    size: Amount
    entry: Price
    # Maintenance rate of the position's notional, or the venue's risk-limit tiers (by notional
    # value: up_to; by size in base units: up_to_qty), progressive.
    mmr: MarginSpec

    @field_validator("mmr")
    @classmethod
    def _mmr(cls, v: MarginSpec) -> MarginSpec:
        return _check_margin(v)


class LevelSettings(Frozen):
    name: str = Field(min_length=1)
    action: Literal["alert", "rebalance"] = "alert"
    # The threshold: exactly one of health or the model's native unit.
    health: Ratio | None = None
    ltv: Ratio | None = None
    margin_level: Ratio | None = None
    mm_rate: Ratio | None = None
    # Rebalance target: at most one of health or the native unit.
    target: Ratio | None = None
    target_ltv: Ratio | None = None
    target_margin_level: Ratio | None = None
    target_mm_rate: Ratio | None = None
    strategy: str | None = Field(default=None, min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)  # strategy-specific options
    confirm_s: Seconds = 0.0  # the breach must last this long in event time
    cooldown_s: Seconds = 300.0  # min time between two actions of this account
    hysteresis: Fraction = 0.02  # clears only above threshold * (1 + hysteresis)
    max_notional: PositiveAmount | None = None  # cap per action, quote units

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = bad_number(v)  # free-form, so the typed fields' bounds do not reach in here
        if bad is not None:
            raise ValueError(f"{'.'.join(map(str, bad))}: not a finite number of at most 1e15")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> LevelSettings:
        given = [k for k in ("health", "ltv", "margin_level", "mm_rate") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one threshold: health, ltv, margin_level or mm_rate")
        targets = [k for k in ("target", "target_ltv", "target_margin_level", "target_mm_rate") if getattr(self, k) is not None]
        if len(targets) > 1:
            raise ValueError("give at most one target: " + ", ".join(targets))
        if self.action == "rebalance" and (self.strategy is None or not targets):
            raise ValueError("a rebalance level needs a strategy and a target")
        return self

    @property
    def threshold_key(self) -> str:
        return next(k for k in ("health", "ltv", "margin_level", "mm_rate") if getattr(self, k) is not None)

    @property
    def target_key(self) -> str | None:
        keys = ("target", "target_ltv", "target_margin_level", "target_mm_rate")
        return next((k for k in keys if getattr(self, k) is not None), None)


class AccountSettings(Frozen):
    name: str = Field(min_length=1)
    model: Model = "health_factor"
    source: str = "config"  # config (holdings written here) | an exchange id (monitor/exchange/venues.py)
    # -- exchange-backed accounts (source = an exchange): credentials by name, never inline --
    api_key_env: str | None = None  # the environment variable (or secrets file key) holding the API key
    api_secret_env: str | None = None
    api_passphrase_env: str | None = None  # OKX: the key's passphrase (ccxt's `password`)
    secrets_file: str | None = None  # a TOML file of NAME = "value" lines, mode 0600
    testnet: bool = False  # the exchange's sandbox
    rest_url: str | None = None  # endpoint overrides; the venue's standard paths are appended
    ws_url: str | None = None
    sync_every_s: PositiveSeconds = 10.0
    stream: bool = True  # also apply every update of the venue's private balance stream (websocket)
    drift_tolerance: PositiveFraction = 0.05  # |ours - venue's| / venue's native figure before alerting
    holdings: dict[str, Amount] = Field(default_factory=dict)  # negative = borrowed
    borrowed: dict[str, Amount] = Field(default_factory=dict)  # gross liabilities beside positive holdings
    weights: dict[str, WeightSpec] = Field(default_factory=dict)  # per-account weight overrides
    positions: list[PositionSettings] = Field(default_factory=list)
    # unified: maintenance rate of each borrowed asset, or its tiers by borrowed quantity (up_to_qty)
    borrow_mmr: dict[str, MarginSpec] = Field(default_factory=dict)
    # Top-ups (strategy top_up): what the owner keeps outside the account to move in when it runs low.
    reserve: dict[str, Amount] = Field(default_factory=dict)  # config accounts: amounts set aside (paper)
    reserve_wallet: str | None = None  # exchange accounts: the venue wallet to draw from (e.g. "funding")
    liquidation_ltv: float | None = Field(default=None, gt=0, le=1.5)
    # Where the venue liquidates, in its figure: margin_level (Binance cross margin 1.1); unified, the
    # equity / maintenance ratio (1 = MM rate 100%; Binance Portfolio Margin uniMMR 1.05); health_factor
    # (Aave 1). Default: the venue's (monitor/exchange/venues.py LIQUIDATION_LEVEL), else 1.
    liquidation_level: Ratio | None = None
    stable: str | None = None  # the stable asset strategies sell into; default: the account's first stable
    stale_after_s: PositiveSeconds = 60.0
    max_actions_per_day: Count = 10
    max_notional_per_day: PositiveAmount | None = None
    levels: list[LevelSettings] = Field(default_factory=list)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, WeightSpec]) -> dict[str, WeightSpec]:
        return {k: _check_weight(w) for k, w in v.items()}

    @field_validator("borrow_mmr")
    @classmethod
    def _borrow_mmr(cls, v: dict[str, MarginSpec]) -> dict[str, MarginSpec]:
        return {k: _check_margin(m) for k, m in v.items()}

    @field_validator("rest_url", "ws_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is not None:
            from urllib.parse import urlsplit
            parts = urlsplit(v)
            if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc or "@" in parts.netloc:
                raise ValueError(f"{v!r} is not a base URL like https://host:port (and holds no credentials)")
        return v

    @field_validator("borrowed")
    @classmethod
    def _borrowed(cls, v: dict[str, float]) -> dict[str, float]:
        if any(x < 0 for x in v.values()):
            raise ValueError("borrowed amounts are positive (holdings use negative numbers instead)")
        return v

    @field_validator("reserve")
    @classmethod
    def _reserve(cls, v: dict[str, float]) -> dict[str, float]:
        if any(x < 0 for x in v.values()):
            raise ValueError("reserve amounts are >= 0 (what is set aside, not owed)")
        return v

    @model_validator(mode="after")
    def _model_params(self) -> AccountSettings:
        if self.model == "ltv" and self.liquidation_ltv is None:
            raise ValueError("an ltv account needs liquidation_ltv")
        if self.model == "margin_level" and self.liquidation_level is None and self.source == "config":
            raise ValueError("a margin_level account needs liquidation_level (Binance cross margin: 1.1)")
        if self.positions and self.model != "unified":
            raise ValueError("positions are only supported on unified accounts")
        tiered = [p.symbol for p in self.positions if not isinstance(p.mmr, float)]
        if len(set(tiered)) != len(tiered):
            raise ValueError(f"positions: one tiered mmr per symbol ({tiered[0]} has two): the venue's risk "
                             "limit applies to the symbol's net position")
        both = sorted(a for a in self.borrowed if self.holdings.get(a, 0) > 0)
        if self.model == "unified" and both:
            # Bybit's unified account nets each coin's equity: a coin is either held or borrowed.
            raise ValueError(f"a unified account nets each coin: write {both[0]} as one net amount in holdings")
        if self.borrow_mmr and self.model != "unified":
            raise ValueError("borrow_mmr is only meaningful on unified accounts")
        _check_source(self)
        names = [lv.name for lv in self.levels]
        if len(set(names)) != len(names):
            raise ValueError("level names must be unique within an account")
        for lv in self.levels:
            if lv.threshold_key not in ("health", NATIVE_UNIT[self.model]):
                raise ValueError(f"level {lv.name!r}: {lv.threshold_key} is not a unit of the {self.model} model")
            tk = lv.target_key
            if tk and tk not in ("target", "target_" + NATIVE_UNIT[self.model]):
                raise ValueError(f"level {lv.name!r}: {tk} is not a unit of the {self.model} model")
        return self


class ExecutionSettings(Frozen):
    mode: Literal["dry_run", "testnet", "live"] = "dry_run"
    fee_rate: float = Field(default=0.001, ge=0, lt=0.1)
    slippage: float = Field(default=0.0005, ge=0, lt=0.1)
    verify_offset: Fraction = 0.05  # allowed overshoot of the target health after execution
    kill_switch: bool = False  # true: no order is placed (monitoring and alerting go on)
    order_timeout_s: PositiveSeconds = 10.0  # one exchange call; a timeout is resolved by client order id
    max_notional_per_action: PositiveAmount | None = None  # all accounts together, quote units
    max_notional_per_day: PositiveAmount | None = None  # all accounts together, per UTC day


class SimulatedFeedParams(Frozen):
    start: dict[str, Price] = Field(default_factory=dict)  # symbol -> start price
    fixed: dict[str, Price] = Field(default_factory=dict)  # symbols that tick at a constant price (stables)
    seed: int = Field(default=7, ge=0, le=2**64 - 1)  # numpy's seed range
    interval_s: Seconds = 0.2  # wall time between steps
    step_ms: PositiveMillis = 1000
    vol_per_step: Fraction = 0.002
    jump_prob: Fraction = 0.01
    jump_scale: Fraction = 0.03
    crash_at_step: Count | None = 300
    crash_depth: float = Field(default=0.35, ge=0, lt=1)
    crash_steps: PositiveCount = 60
    recover_steps: PositiveCount = 300
    correlation: Fraction = 0.7
    max_steps: PositiveCount | None = None
    # wall: ticks carry the wall-clock time; market: each step advances event time by
    # step_ms, so a demo can play minutes of market in seconds.
    clock: Literal["wall", "market"] = "wall"


class FeedSettings(Frozen):
    name: str = Field(min_length=1)
    driver: Literal["ccxt", "native", "simulated"] = "simulated"
    symbols: list[str] = Field(min_length=1)
    simulated: SimulatedFeedParams = Field(default_factory=SimulatedFeedParams)
    stale_after_s: PositiveSeconds = 30.0
    # live drivers (ccxt, native)
    exchange: str = "binance"  # a ccxt exchange id; native supports binance and bybit
    # default: mark for perpetuals (":" in the symbol), else mid; index: the venue's index (a spot
    # symbol's from its linear perpetual), what venues value collateral at
    price: Literal["mid", "last", "mark", "index"] | None = None
    testnet: bool = False  # the venue's sandbox (ccxt sandbox mode)
    ws_url: str | None = None  # base (scheme://host:port) replacing the venue's; its paths are appended
    rest_url: str | None = None
    watchdog_s: PositiveSeconds = 15.0  # no message on a connection this long -> reconnect
    backoff_s: PositiveSeconds = 0.5  # first reconnect delay; doubles (with jitter) per failure
    backoff_max_s: PositiveSeconds = 30.0
    rest_poll_s: Seconds = 2.0  # REST polling while the socket is down (0 = off)
    # A tick stamped further ahead of our clock at receipt is a bad tick. Bounded: past a
    # minute a venue clock glitch would hold a symbol's prices back for that long.
    max_clock_skew_s: float = Field(default=2.0, gt=0, le=60)
    client: Literal["aiohttp", "websockets"] = "aiohttp"  # native driver's websocket client

    @field_validator("ws_url", "rest_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
                raise ValueError(f"{v!r} is not a base URL like wss://host:port or https://host")
        return v

    @model_validator(mode="after")
    def _driver_keys(self) -> FeedSettings:
        if self.driver == "native" and self.exchange not in ("binance", "bybit"):
            raise ValueError(f"the native driver speaks binance and bybit; use driver = \"ccxt\" for {self.exchange!r}")
        if self.price == "mark" and any(":" not in s for s in self.symbols):
            raise ValueError("price = \"mark\" needs perpetual symbols (BASE/QUOTE:SETTLE)")
        return self


class CombineSettings(Frozen):
    """How one symbol watched by several feeds becomes one price."""

    rule: Literal["primary", "median"] = "primary"  # primary: the first live feed in config order
    max_deviation: PositiveFraction = 0.05  # a price this far from the other live feeds is suspect


NOTIFIER_SECRET = {"telegram": "token_env", "slack": "webhook_url_env", "webhook": "url_env"}


class NotifierSettings(Frozen):
    name: str = Field(default="console", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["console", "telegram", "slack", "webhook"] = "console"
    levels: list[str] | None = None  # routing: which levels go here (default: all)
    # Secrets are named, never written inline: an environment variable, else a key of alerts.secrets_file.
    token_env: str | None = None  # telegram: the bot token
    webhook_url_env: str | None = None  # slack: the incoming-webhook URL
    url_env: str | None = None  # webhook: the URL to POST to
    secret_env: str | None = None  # webhook: optional HMAC-SHA256 key that signs each body
    chat_id: str | None = Field(default=None, pattern=r"^(-?[0-9]+|@[A-Za-z0-9_]{5,})$")  # telegram
    api_base: str = Field(default="https://api.telegram.org", pattern=r"^https?://")  # telegram: self-hosted Bot API
    control: bool = False  # telegram: accept /status /pause /resume /silence from allowed_chat_ids
    allowed_chat_ids: list[str] = Field(default_factory=list)
    timeout_s: PositiveSeconds = 10.0  # one HTTP request, then it counts as failed
    min_interval_s: Seconds | None = None  # rate limit (default: the service's own)
    max_per_minute: PositiveCount | None = None

    @model_validator(mode="after")
    def _kind_keys(self) -> NotifierSettings:
        need = NOTIFIER_SECRET.get(self.kind)
        if need and getattr(self, need) is None:
            raise ValueError(f"a {self.kind} notifier needs {need} (the environment variable holding its secret)")
        stray = [k for k in NOTIFIER_SECRET.values() if k != need and getattr(self, k) is not None]
        if self.secret_env is not None and self.kind != "webhook":
            stray.append("secret_env")
        if stray:
            raise ValueError(f"{stray[0]} does not apply to a {self.kind} notifier")
        if self.kind == "telegram" and self.chat_id is None:
            raise ValueError("a telegram notifier needs chat_id")
        if self.control and (self.kind != "telegram" or not self.allowed_chat_ids):
            raise ValueError("control needs a telegram notifier and a non-empty allowed_chat_ids")
        return self


class AlertSettings(Frozen):
    """Alertmanager-style policy: repeats, grouping, retries; the heartbeat (dead-man's switch)."""
    repeat_s: dict[str, PositiveSeconds] = Field(default_factory=dict)  # level -> repeat interval while firing
    default_repeat_s: PositiveSeconds = 14400.0  # levels not in repeat_s (Alertmanager's 4 h)
    group_wait_s: Seconds = 2.0  # alerts arriving within this go out as one digest per channel
    retry_base_s: PositiveSeconds = 1.0  # first retry delay; doubles per failure
    retry_max_s: PositiveSeconds = 60.0
    # A service's Retry-After / retry_after is honoured between retry_base_s and this (an hour at most):
    # "wait a day" must not park a channel, "0" must not hammer it.
    retry_after_max_s: float = Field(default=300.0, gt=0, le=3600)
    channel_failing_after_s: Seconds = 120.0  # then the other channels are told
    secrets_file: str | None = None  # KEY=VALUE lines (an EnvironmentFile) read when a variable is unset
    heartbeat_url_env: str | None = None  # dead-man's switch: a URL fetched every heartbeat_every_s
    heartbeat_every_s: PositiveSeconds = 60.0
    silence_poll_s: PositiveSeconds = 5.0  # how soon a silence set from the CLI takes effect

    @model_validator(mode="after")
    def _retry_bounds(self) -> AlertSettings:
        for key in ("retry_max_s", "retry_after_max_s"):
            if getattr(self, key) < self.retry_base_s:
                raise ValueError(f"{key} must not be below retry_base_s ({self.retry_base_s:g})")
        return self


class StoreSettings(Frozen):
    backend: Literal["sqlite", "redis"] = "sqlite"
    url: str | None = None  # redis: redis://host:port/db (no password here: use url_env for one)
    url_env: str | None = None  # redis: the environment variable holding the URL (wins over url)
    prefix: str = Field(default="cm", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")  # one per deployment
    buffer_max: PositiveCount = 100_000  # writes held in memory during a Redis outage, then spilled
    trade_during_outage: bool = False  # redis down: keep trading on local idempotency keys (single instance only)
    journal_keep_days: Days = 365.0  # older journal entries are dropped hourly; 0 keeps all

    @model_validator(mode="after")
    def _redis_url(self) -> StoreSettings:
        if self.backend == "redis" and not (self.url or self.url_env):
            raise ValueError("backend 'redis' needs url or url_env")
        if self.url and "@" in self.url:
            raise ValueError("url must not hold credentials: put the whole URL in the environment (url_env)")
        return self


class HASettings(Frozen):
    """Several instances on one store: a lease decides which one may trade."""
    enabled: bool = False
    lease_ttl_s: PositiveSeconds = 10.0  # a dead leader is replaced within this
    instance_id: str | None = None  # default: host name and process id


class HttpSettings(Frozen):
    """The HTTP endpoint: /healthz, /metrics and the live status page."""

    listen: str = "127.0.0.1:9108"  # host:port ([v6]:port); port 0 picks a free one
    token_env: str | None = None  # env variable holding the bearer token; required off loopback
    push_every_s: PositiveSeconds = 1.0  # the status page is pushed at most this often
    page_accounts: PositiveCount = 200  # the status page lists this many accounts, least healthy first

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        listen_address(v)
        return v

    @model_validator(mode="after")
    def _token_off_loopback(self) -> HttpSettings:
        host, _ = listen_address(self.listen)
        if self.token_env is None and not is_loopback(host):
            raise ValueError(f"listen {self.listen!r} is not a loopback address: set token_env "
                             "(the environment variable holding the bearer token)")
        return self


def listen_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:9108' or '[::1]:9108' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port, got {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


class DaemonSettings(Frozen):
    state_dir: str = "state"
    # Whose state it is (README: One daemon per state); default: the config file's absolute path.
    state_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\r\n]+$")
    queue_size: PositiveCount = 10_000  # bound of the alert and execution queues
    resync_every_s: PositiveWholeSeconds = 60  # exact recompute of all accounts (bounds float drift)
    max_restarts: Count = 5  # per component, within restart_window_s, before the daemon gives up
    restart_window_s: PositiveSeconds = 60.0
    restart_backoff_s: PositiveSeconds = 0.5  # first restart delay; doubles per crash, at most 30 s
    status_every_s: PositiveSeconds = 10.0  # how often each account's status is logged
    snapshot_every_s: PositiveSeconds = 30.0  # all accounts' snapshots (a changed book: at once)


class Settings(Frozen):
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    assets: dict[str, AssetSettings]
    accounts: list[AccountSettings] = Field(min_length=1)
    feeds: list[FeedSettings] = Field(default_factory=list)
    combine: CombineSettings = Field(default_factory=CombineSettings)
    notifiers: list[NotifierSettings] = Field(default_factory=lambda: [NotifierSettings()])
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    ha: HASettings = Field(default_factory=HASettings)
    http: HttpSettings | None = None  # off when absent

    @model_validator(mode="after")
    def _references(self) -> Settings:
        names = [a.name for a in self.accounts]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate account name {sorted(dup)[0]!r}")
        for i, acc in enumerate(self.accounts):
            _check_account_assets(self, i, acc)
        levels = {lv.name for acc in self.accounts for lv in acc.levels}
        for i, n in enumerate(self.notifiers):
            unknown = sorted(set(n.levels or ()) - levels)
            if unknown:
                raise ValueError(f"notifiers[{i}] ({n.name}).levels: no account has a level named {unknown[0]!r}")
        feed_names = [f.name for f in self.feeds]
        dup_feeds = sorted({n for n in feed_names if feed_names.count(n) > 1})
        if dup_feeds:
            raise ValueError(f"duplicate feed name {dup_feeds[0]!r}")
        _check_alert_refs(self, levels)
        if self.ha.enabled and self.store.trade_during_outage:
            raise ValueError("store.trade_during_outage cannot be combined with ha.enabled: without the store "
                             "no instance can prove it is the only one trading")
        priced = {a.symbol for a in self.assets.values() if a.symbol}
        for i, f in enumerate(self.feeds):
            unknown = [s for s in f.symbols if s not in priced]
            if unknown:
                raise ValueError(f"feeds[{i}] ({f.name}).symbols: no asset is priced by {unknown[0]!r}")
        return self

    def is_stable(self, asset: str) -> bool:
        spec = self.assets[asset]
        if spec.stable is not None:
            return spec.stable
        return spec.symbol is None or asset.upper() in KNOWN_STABLES

    def symbol_of_asset(self) -> dict[str, str]:
        return {name: a.symbol for name, a in self.assets.items() if a.symbol is not None}


def _check_account_assets(settings: Settings, i: int, acc: AccountSettings) -> None:
    where = f"accounts[{i}] ({acc.name})"
    for key in ("holdings", "borrowed", "weights", "borrow_mmr", "reserve"):
        for asset in getattr(acc, key):
            if asset not in settings.assets:
                raise ValueError(f"{where}.{key}: unknown asset {asset!r} (add an [assets.{asset}] section)")
    symbols = {a.symbol: n for n, a in settings.assets.items() if a.symbol}
    for p in acc.positions:
        if position_asset(p.symbol, symbols, settings.assets) is None:
            raise ValueError(f"{where}.positions: no asset is priced by {p.symbol!r}")
    if acc.stable is not None and acc.stable not in settings.assets:
        raise ValueError(f"{where}.stable: unknown asset {acc.stable!r}")


def _check_source(acc: AccountSettings) -> None:
    from monitor.exchange.venues import (  # what the exchange gateway speaks
        NEEDS_PASSPHRASE,
        NO_TESTNET,
        TOP_UP_INTO,
        VENUE_MODELS,
    )

    if acc.source == "config":
        if (acc.api_key_env or acc.api_secret_env or acc.api_passphrase_env or acc.secrets_file or acc.testnet
                or acc.rest_url or acc.ws_url or acc.reserve_wallet):
            raise ValueError("exchange keys (api_key_env, testnet, rest_url, reserve_wallet, ...) need "
                             "source = an exchange id")
        return
    if acc.reserve:
        raise ValueError(f"source {acc.source!r}: the reserve is read from the venue: "
                         "name its wallet with reserve_wallet instead")
    if acc.reserve_wallet and acc.source not in TOP_UP_INTO:
        raise ValueError(f"reserve_wallet: top-ups from a wallet are supported on {', '.join(sorted(TOP_UP_INTO))} "
                         f"only, not {acc.source!r}")
    if acc.source not in VENUE_MODELS:
        raise ValueError(f"source: {acc.source!r} is not 'config' or a supported exchange "
                         f"({', '.join(sorted(VENUE_MODELS))})")
    if acc.model not in VENUE_MODELS[acc.source]:
        raise ValueError(f"source {acc.source!r}: model must be {' or '.join(VENUE_MODELS[acc.source])}")
    if acc.testnet and acc.source in NO_TESTNET:
        raise ValueError(f"testnet: {NO_TESTNET[acc.source]}")
    if not (acc.api_key_env and acc.api_secret_env):
        raise ValueError(f"source {acc.source!r} needs api_key_env and api_secret_env (names, not the secrets)")
    if (acc.source in NEEDS_PASSPHRASE) != bool(acc.api_passphrase_env):
        raise ValueError(f"source {acc.source!r}: api_passphrase_env is "
                         + ("needed (the API key's passphrase)" if acc.source in NEEDS_PASSPHRASE else "not used"))
    if acc.holdings or acc.borrowed or acc.positions:
        raise ValueError(f"source {acc.source!r}: holdings come from the exchange; remove holdings/borrowed/positions")


def _check_alert_refs(settings: Settings, levels: set[str]) -> None:
    names = [n.name for n in settings.notifiers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"notifiers: duplicate name {dup[0]!r}")
    unknown = sorted(set(settings.alerts.repeat_s) - levels - {"stale"})
    if unknown:
        raise ValueError(f"alerts.repeat_s: no account has a level named {unknown[0]!r}")


def linear_perpetual(symbol: str) -> str:
    """The linear perpetual on a spot market, in ccxt swap notation (BTC/USDT -> BTC/USDT:USDT)."""
    return symbol if ":" in symbol else f"{symbol}:{symbol.split('/')[1]}"


def position_asset(symbol: str, symbols: dict[str, str], assets: dict[str, Any]) -> str | None:
    """The asset whose price drives a perpetual: an exact price symbol, else the base ("BTC/USDT:USDT" -> BTC)."""
    if symbol in symbols:
        return symbols[symbol]
    base = symbol.split("/")[0].split(":")[0]
    return base if base in assets else None


# Labels pydantic puts in an error's location for the branches of a union (weight: number
# or tier list; price: symbol or number); they are not keys the user wrote.
_BRANCHES = frozenset({"float", "int", "str", "bool", "list[Tier]", "list[MarginTier]", "list[str]"})


def _format_error(err: ValidationError) -> str:
    errors = err.errors()
    first = errors[0]
    cut = next((n for n, p in enumerate(first["loc"]) if p in _BRANCHES), None)
    if cut is not None:
        # A union failed in every branch: report the branch that got furthest, which is the one
        # the user meant (a typo inside a tier list, not "Input should be a valid number"); at equal
        # depth, a branch of the input's type (inf for a price: not "a valid string").
        first = max((e for e in errors if e["loc"][:cut] == first["loc"][:cut]),
                    key=lambda e: (len(e["loc"]), not e["type"].endswith("_type")))
    path = ".".join(str(p) for p in first["loc"]
                    if p not in _BRANCHES and not (isinstance(p, str) and p.startswith(("function-", "tagged-"))))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    elif first["type"] == "float_type" and isinstance(first.get("input"), int):
        msg = "number too large"  # an integer beyond float range, e.g. 1 followed by 400 zeros
    return f"{path}: {msg}" if path else msg


def _one_line(text: str) -> str:
    """Names and keys may hold newlines (TOML escapes); an error stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def parse_settings(data: dict[str, Any], origin: str = "config") -> Settings:
    deep = too_deep(data)
    if deep is not None:  # before pydantic: nothing below may recurse that far
        raise ConfigError(_one_line(f"{origin}: {'.'.join(map(str, deep[:8]))}...: nested too deeply"))
    try:
        # strict: `true` or "0.9" where a number belongs is a mistake, not 1.0 or 0.9
        return Settings.model_validate(data, strict=True)
    except ValidationError as err:
        raise ConfigError(_one_line(f"{origin}: {_format_error(err)}")) from None


def load_settings(path: str | Path) -> Settings:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(_one_line(f"{p}: cannot read ({err.strerror or err})")) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(_one_line(f"{p}: not valid TOML ({err})")) from None
    except RecursionError:  # tomllib parses arrays and inline tables recursively
        raise ConfigError(f"{p}: not valid TOML (arrays or tables nested too deeply)") from None
    return parse_settings(data, str(p))
