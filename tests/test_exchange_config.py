"""Exchange account settings and credentials: one-line errors, secrets never shown, 0600 enforced."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from monitor.config import parse_settings
from monitor.errors import ConfigError
from monitor.exchange.credentials import Credentials, load_credentials

BASE = {"assets": {"BTC": {"price": "BTC/USDT"}, "USDT": {"price": 1.0}}}


def account(**over):
    acc = {"name": "b", "model": "unified", "source": "bybit", "api_key_env": "CM_TEST_KEY",
           "api_secret_env": "CM_TEST_SECRET"}
    return {**BASE, "accounts": [{**acc, **over}]}


def test_an_exchange_account_needs_no_holdings() -> None:
    acc = parse_settings(account()).accounts[0]
    assert acc.source == "bybit" and acc.holdings == {} and acc.sync_every_s == 10


@pytest.mark.parametrize(("over", "message"), [
    ({"source": "kraken"}, "not 'config' or a supported exchange"),
    ({"model": "margin_level", "liquidation_level": 1.1}, "model must be unified"),
    ({"api_key_env": None}, "needs api_key_env and api_secret_env"),
    ({"holdings": {"BTC": 1.0}}, "holdings come from the exchange"),
    ({"rest_url": "ftp://x"}, "is not a base URL"),
    ({"rest_url": "https://user:pw@host"}, "holds no credentials"),
])
def test_bad_exchange_accounts_are_one_line_errors(over, message) -> None:
    raw = account(**over)
    raw["accounts"][0] = {k: v for k, v in raw["accounts"][0].items() if v is not None}
    with pytest.raises(ConfigError, match=message) as err:
        parse_settings(raw)
    assert "\n" not in str(err.value)


def test_exchange_keys_on_a_config_account_are_refused() -> None:
    with pytest.raises(ConfigError, match="need source = an exchange id"):
        parse_settings({**BASE, "accounts": [{"name": "c", "holdings": {"BTC": 1.0}, "testnet": True}]})


def test_credentials_from_the_environment_are_redacted() -> None:
    acc = parse_settings(account()).accounts[0]
    creds = load_credentials(acc, environ={"CM_TEST_KEY": "k-123456", "CM_TEST_SECRET": "s-abcdef"})
    assert (creds.api_key, creds.secret) == ("k-123456", "s-abcdef")
    assert "s-abcdef" not in repr(creds) and "k-123456" not in repr(creds)
    assert creds.redact("sign failed for k-123456 with s-abcdef") == "sign failed for <redacted> with <redacted>"


def test_a_missing_credential_names_the_variable_not_a_value() -> None:
    acc = parse_settings(account()).accounts[0]
    with pytest.raises(ConfigError, match="CM_TEST_SECRET is not set"):
        load_credentials(acc, environ={"CM_TEST_KEY": "k-123456"})


def test_secrets_file_is_tightened_to_0600(tmp_path) -> None:
    path = tmp_path / "secrets.toml"
    path.write_text('CM_TEST_KEY = "file-key"\nCM_TEST_SECRET = "file-secret"\n')
    path.chmod(0o644)
    acc = parse_settings(account(secrets_file=str(path))).accounts[0]
    creds = load_credentials(acc, environ={"CM_TEST_KEY": "env-key"})
    assert (creds.api_key, creds.secret) == ("env-key", "file-secret")  # the environment wins
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_broken_secrets_file_never_echoes_its_content(tmp_path) -> None:
    path = tmp_path / "secrets.toml"
    path.write_text('CM_TEST_KEY = "super-secret-value\n')  # unterminated string
    path.chmod(0o600)
    acc = parse_settings(account(secrets_file=str(path))).accounts[0]
    with pytest.raises(ConfigError) as err:
        load_credentials(acc, environ={})
    assert "super-secret-value" not in str(err.value) and str(path) in str(err.value)


def test_live_without_the_flag_is_a_one_line_error(tmp_path) -> None:
    cfg = tmp_path / "live.toml"
    cfg.write_text('[execution]\nmode = "live"\n[assets.BTC]\nprice = "BTC/USDT"\n[assets.USDT]\nprice = 1.0\n'
                   '[[accounts]]\nname = "b"\nmodel = "unified"\nsource = "bybit"\napi_key_env = "CM_TEST_KEY"\n'
                   'api_secret_env = "CM_TEST_SECRET"\n'
                   '[[feeds]]\nname = "s"\nsymbols = ["BTC/USDT"]\nsimulated = { start = { "BTC/USDT" = 1.0 } }\n')
    env = {**os.environ, "CM_TEST_KEY": "k-live-key", "CM_TEST_SECRET": "s-live-secret"}
    proc = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(cfg)], capture_output=True,
                          text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--live" in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "s-live-secret" not in proc.stdout + proc.stderr


def test_credentials_repr_is_safe() -> None:
    assert repr(Credentials("a" * 20, "b" * 20)) == "Credentials(<redacted>)"


@pytest.mark.parametrize("name", ["bybit-testnet.toml", "binance-margin.toml"])
def test_the_example_exchange_configs_are_valid(name) -> None:
    import tomllib
    from pathlib import Path

    from monitor.core import Monitor, check_strategies
    from strategies import default_registry

    data = tomllib.loads((Path(__file__).resolve().parents[1] / "examples" / name).read_text())
    settings = parse_settings(data, name)
    assert settings.feeds[0].driver == "ccxt"  # live prices from the venue
    acc = settings.accounts[0]
    assert acc.source in ("bybit", "binance") and acc.api_key_env and not acc.holdings
    check_strategies(Monitor(settings, default_registry()))
