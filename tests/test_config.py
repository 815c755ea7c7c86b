"""Config: the contract file loads as written; every mistake a user can make ends in
one ConfigError line that starts with the file (or 'config') and names the key."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitor.config import load_settings, parse_settings
from monitor.errors import ConfigError, UserError

CONTRACT = Path(__file__).parent / "configs" / "contract.toml"
BASE = CONTRACT.read_text()


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, f"the contract changed: {old!r} not found once"
    return text.replace(old, new)


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "monitor.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
    assert msg.startswith(f"{path}: "), msg
    assert "Traceback" not in msg and "pydantic" not in msg.lower(), msg
    return msg


def test_contract_loads_as_written():
    s = load_settings(CONTRACT)
    assert s.execution.mode == "dry_run"
    assert (s.execution.fee_rate, s.execution.slippage) == (0.001, 0.0005)
    assert list(s.assets) == ["BTC", "ETH", "USDT"]
    btc, eth, usdt = s.assets["BTC"], s.assets["ETH"], s.assets["USDT"]
    assert (btc.price, btc.symbol, btc.weight) == ("BTC/USDT", "BTC/USDT", 0.95)
    assert [(t.up_to, t.weight) for t in eth.weight] == [(1_000_000, 0.95), (5_000_000, 0.90), (None, 0.80)]
    assert (usdt.price, usdt.symbol, usdt.weight) == (1.0, None, 1.0)
    assert s.is_stable("USDT") and not s.is_stable("BTC")
    assert s.symbol_of_asset() == {"BTC": "BTC/USDT", "ETH": "ETH/USDT"}
    (acc,) = s.accounts
    assert (acc.name, acc.model, acc.source) == ("main", "health_factor", "config")
    assert acc.holdings == {"BTC": 1.0, "ETH": 10.0, "USDT": -50_000.0}
    assert acc.weights == {"ETH": 0.825}
    warn, act = acc.levels
    assert (warn.name, warn.health, warn.action, warn.threshold_key, warn.target_key) == ("warn", 1.3, "alert", "health", None)
    assert (act.name, act.health, act.action, act.strategy, act.target) == ("act", 1.15, "rebalance", "repay_debt", 1.4)
    assert (act.confirm_s, act.cooldown_s, act.hysteresis) == (30, 300, 0.02)
    assert (warn.confirm_s, warn.cooldown_s) == (0.0, 300.0)  # the defaults
    with pytest.raises(ValidationError):
        acc.name = "other"  # settings are frozen


def test_parse_settings_messages_start_with_config():
    data = tomllib.loads(BASE)
    data["accounts"][0]["levels"][0]["helth"] = 1.2
    with pytest.raises(ConfigError) as err:
        parse_settings(data)
    assert str(err.value) == "config: accounts.0.levels.0.helth: unknown key (check the spelling)"
    assert isinstance(err.value, UserError)


@pytest.mark.parametrize("old, new, path", [
    ("[execution]", "frobnicate = true\n[execution]", "frobnicate"),
    ('mode = "dry_run"', 'mode = "dry_run"\nfee = 0.1', "execution.fee"),
    ('weight = 0.95             #', 'wieght = 0.95 #', "assets.BTC.wieght"),
    ('{ weight = 0.80 }', '{ weight = 0.80, upto = 1 }', "assets.ETH.weight.2.upto"),
    ('model = "health_factor"', 'model = "health_factor"\nholding = { BTC = 1 }', "accounts.0.holding"),
    ('health = 1.3 ', 'health = 1.3\n  confrim_s = 30 ', "accounts.0.levels.0.confrim_s"),
    ('target = 1.4 ', 'target = 1.4\n  params = { anything = 1 }\n  max_notionl = 5 ', "accounts.0.levels.1.max_notionl"),
])
def test_unknown_keys_anywhere_name_their_path(tmp_path, old, new, path):
    msg = error_of(tmp_path, edit(old, new))
    assert f": {path}: unknown key" in msg


@pytest.mark.parametrize("old, new, path, words", [
    ("BTC = 1.0,", 'BTC = "one",', "accounts.0.holdings.BTC", "number"),
    ("BTC = 1.0,", "BTC = true,", "accounts.0.holdings.BTC", "number"),  # not silently 1 BTC
    ('weight = 1.0', 'weight = true', "assets.USDT.weight", "number"),
    ('weight = 1.0', 'weight = "0.9"', "assets.USDT.weight", "number"),
    ("confirm_s = 30 ", 'confirm_s = "30" ', "accounts.0.levels.1.confirm_s", "number"),
    ('model = "health_factor"', 'model = "aave"', "accounts.0.model", "health_factor"),
    ('mode = "dry_run"', 'mode = "yolo"', "execution.mode", "dry_run"),
    ('name = "main"', 'name = "main"\nmax_actions_per_day = 2.5', "accounts.0.max_actions_per_day", "integer"),
    ('name = "main"', 'name = "main"\nmax_actions_per_day = -1', "accounts.0.max_actions_per_day", "0"),
    ('name = "main"', 'name = 7', "accounts.0.name", "string"),
    ('strategy = "repay_debt"', "strategy = 5", "accounts.0.levels.1.strategy", "string"),  # not "levels.1ategy"
    ('strategy = "repay_debt"', 'strategy = ""', "accounts.0.levels.1.strategy", "at least 1 character"),
    ('name = "main"', 'name = "main"\nstable = 5', "accounts.0.stable", "string"),
    ('price = "ETH/USDT"', "price = [1]", "assets.ETH.price", "valid"),
    ("[execution]", '[[feeds]]\nname = "f"\nsymbols = ["BTC/USDT"]\nsimulated = { interval_s = "fast" }\n[execution]',
     "feeds.0.simulated.interval_s", "number"),  # not "simulated.erval_s"
    ("health = 1.3 ", "health = -1.3 ", "accounts.0.levels.0.health", "greater than 0"),
    ('weight = 1.0', 'weight = 1.5', "assets.USDT.weight", "between 0 and 1"),
    ('price = 1.0 ', 'price = -1.0 ', "assets.USDT.price", "positive"),
])
def test_wrong_types_and_values(tmp_path, old, new, path, words):
    msg = error_of(tmp_path, edit(old, new))
    assert f": {path}: " in msg and words in msg


def test_ltv_account_needs_liquidation_ltv(tmp_path):
    text = edit('model = "health_factor"', 'model = "ltv"')
    msg = error_of(tmp_path, text)
    assert "accounts.0" in msg and "liquidation_ltv" in msg
    ok = tmp_path / "ok.toml"
    ok.write_text(edit('model = "ltv"', 'model = "ltv"\nliquidation_ltv = 0.85', text))
    assert load_settings(ok).accounts[0].liquidation_ltv == 0.85


def test_margin_level_account_needs_liquidation_level(tmp_path):
    msg = error_of(tmp_path, edit('model = "health_factor"', 'model = "margin_level"'))
    assert "accounts.0" in msg and "liquidation_level" in msg


@pytest.mark.parametrize("old, new, key, asset", [
    ("USDT = -50000", "XRP = -50000", "holdings", "XRP"),
    ("USDT = -50000 }", "USDT = -50000 }\nborrowed = { DOGE = 5 }", "borrowed", "DOGE"),
    ("weights = { ETH = 0.825 }", "weights = { SOL = 0.5 }", "weights", "SOL"),
    ('name = "main"', 'name = "main"\nstable = "USDC"', "stable", "USDC"),
])
def test_unknown_asset_in_an_account(tmp_path, old, new, key, asset):
    msg = error_of(tmp_path, edit(old, new))
    assert f"accounts[0] (main).{key}: unknown asset {asset!r}" in msg


def test_positions_only_on_unified_accounts(tmp_path):
    pos = 'weights = { ETH = 0.825 }\npositions = [{ symbol = "BTC/USDT:USDT", size = 0.5, entry = 60000, mmr = 0.005 }]'
    text = edit("weights = { ETH = 0.825 }", pos)
    msg = error_of(tmp_path, text)
    assert "accounts.0" in msg and "positions are only supported on unified accounts" in msg
    ok = tmp_path / "ok.toml"
    ok.write_text(edit('model = "health_factor"', 'model = "unified"', text))
    (p,) = load_settings(ok).accounts[0].positions
    assert (p.symbol, p.size, p.entry, p.mmr) == ("BTC/USDT:USDT", 0.5, 60000, 0.005)
    unpriced = edit('symbol = "BTC/USDT:USDT"', 'symbol = "SOL/USDT:USDT"', ok.read_text())
    assert "no asset is priced by 'SOL/USDT:USDT'" in error_of(tmp_path, unpriced)


@pytest.mark.parametrize("tiers, words", [
    ("[ { up_to = 5_000_000, weight = 0.95 }, { up_to = 1_000_000, weight = 0.90 }, { weight = 0.80 } ]",
     "strictly increasing"),
    ("[ { up_to = 1_000_000, weight = 0.95 }, { up_to = 1_000_000, weight = 0.90 }, { weight = 0.80 } ]",
     "strictly increasing"),
    ("[ { up_to = 1_000_000, weight = 0.95 }, { weight = 0.90 }, { weight = 0.80 } ]", "strictly increasing"),
    ("[ { up_to = 1_000_000, weight = 0.95 }, { up_to = 5_000_000, weight = 0.90 } ]", "last tier must have no up_to"),
    ("[]", "at least one tier"),
    ("[ { up_to = 1_000_000, weight = 1.95 }, { weight = 0.80 } ]", "less than or equal to 1"),
    ("[ { up_to = -5, weight = 0.95 }, { weight = 0.80 } ]", "greater than 0"),
])
def test_bad_tier_lists(tmp_path, tiers, words):
    old = "[ { up_to = 1_000_000, weight = 0.95 }, { up_to = 5_000_000, weight = 0.90 }, { weight = 0.80 } ]"
    msg = error_of(tmp_path, edit(old, tiers))
    assert "assets.ETH.weight" in msg and words in msg


def test_bad_tiers_in_an_account_override(tmp_path):
    bad = "weights = { ETH = [ { up_to = 10, weight = 0.9 }, { up_to = 20, weight = 0.8 } ] }"
    msg = error_of(tmp_path, edit("weights = { ETH = 0.825 }", bad))
    assert "accounts.0.weights" in msg and "last tier must have no up_to" in msg


@pytest.mark.parametrize("old, new, words", [
    ("health = 1.3 ", "health = 1.3\n  ltv = 0.5 ", "exactly one threshold"),
    ("health = 1.3 ", "mm_rate = 0.5\n  margin_level = 1.3 ", "exactly one threshold"),
    ("health = 1.3 ", "", "exactly one threshold"),
    ('strategy = "repay_debt"', "", "needs a strategy and a target"),
    ("target = 1.4 ", "", "needs a strategy and a target"),
    ("target = 1.4 ", "target = 1.4\n  target_ltv = 0.5 ", "at most one target"),
])
def test_bad_levels(tmp_path, old, new, words):
    msg = error_of(tmp_path, edit(old, new))
    assert "accounts.0.levels." in msg and words in msg


@pytest.mark.parametrize("model, old, new, key", [
    ("health_factor", "health = 1.3 ", "ltv = 0.7 ", "ltv"),
    ("health_factor", "target = 1.4 ", "target_mm_rate = 0.5 ", "target_mm_rate"),
    ("ltv", "health = 1.3 ", "margin_level = 1.3 ", "margin_level"),
    ("unified", "target = 1.4 ", "target_ltv = 0.5 ", "target_ltv"),
    ("margin_level", "health = 1.3 ", "mm_rate = 0.7 ", "mm_rate"),
])
def test_native_unit_of_the_wrong_model(tmp_path, model, old, new, key):
    text = edit('model = "health_factor"', f'model = "{model}"\nliquidation_ltv = 0.85\nliquidation_level = 1.1')
    msg = error_of(tmp_path, edit(old, new, text))
    assert f"{key} is not a unit of the {model} model" in msg and "accounts.0" in msg


def test_duplicate_names(tmp_path):
    level = edit('name = "warn"', 'name = "act"')
    assert "level names must be unique" in error_of(tmp_path, level)
    second = BASE + '\n[[accounts]]\nname = "main"\n'
    assert "duplicate account name 'main'" in error_of(tmp_path, second)


def test_invalid_toml(tmp_path):
    msg = error_of(tmp_path, BASE + "\n[[[broken\n")
    assert "not valid TOML" in msg and "line" in msg
    msg = error_of(tmp_path, 'a = "unterminated\n')
    assert "not valid TOML" in msg


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[assets.BTC]\nprice = "BTC/\xe9"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value).startswith(f"{path}: not valid TOML") and "\n" not in str(err.value)


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as err:
        load_settings(missing)
    assert str(err.value) == f"{missing}: cannot read (No such file or directory)"
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert str(err.value).startswith(f"{tmp_path}: cannot read (")


def test_missing_sections(tmp_path):
    assert ": assets: Field required" in error_of(tmp_path, "")
    no_accounts = BASE.split("[[accounts]]")[0]
    assert ": accounts: Field required" in error_of(tmp_path, no_accounts)


def test_messages_stay_one_line_whatever_the_user_wrote(tmp_path):
    # TOML escapes let a user put a newline into a name or a key; the message must still be one line
    msg = error_of(tmp_path, edit('name = "main"', 'name = "ma\\nin"', edit("USDT = -50000", "XRP = -50000")))
    assert "unknown asset 'XRP'" in msg
    msg = error_of(tmp_path, edit("BTC = 1.0,", '"B\\nTC" = "x",'))
    assert "accounts.0.holdings" in msg


def test_unified_account_nets_each_coin(tmp_path):
    cfg = tmp_path / "uta.toml"
    cfg.write_text("""
[assets.USDT]
price = 1.0
[[accounts]]
name = "u"
model = "unified"
holdings = { USDT = 100 }
borrowed = { USDT = 50 }
""")
    with pytest.raises(ConfigError, match="unified account nets each coin: write USDT"):
        load_settings(cfg)


def test_notifier_levels_and_feed_symbols_must_exist(tmp_path):
    base = (Path(__file__).parent / "configs" / "contract.toml").read_text()
    notifier = tmp_path / "n.toml"
    notifier.write_text(base + '\n[[notifiers]]\nname = "ops"\nkind = "console"\nlevels = ["critical"]\n')
    with pytest.raises(ConfigError, match="notifiers.0. .ops..levels: no account has a level named 'critical'"):
        load_settings(notifier)
    feed = tmp_path / "f.toml"
    feed.write_text(base + '\n[[feeds]]\nname = "sim"\nsymbols = ["BTC/USDC"]\n')
    with pytest.raises(ConfigError, match="no asset is priced by 'BTC/USDC'"):
        load_settings(feed)


# -- every number finite and bounded ---------------------------------------------------------
BIG_INT = "1" + "0" * 400  # TOML integers have no size limit


@pytest.mark.parametrize("old, new, path, words", [
    ("confirm_s = 30 ", "confirm_s = inf ", "accounts.0.levels.1.confirm_s", "finite"),
    ("confirm_s = 30 ", "confirm_s = 1e308 ", "accounts.0.levels.1.confirm_s", "at most a year (31536000 s)"),
    ("cooldown_s = 300 ", "cooldown_s = nan ", "accounts.0.levels.1.cooldown_s", "finite"),
    ("cooldown_s = 300 ", f"cooldown_s = {BIG_INT} ", "accounts.0.levels.1.cooldown_s", "number too large"),
    ('name = "main"', 'name = "main"\nstale_after_s = inf', "accounts.0.stale_after_s", "finite"),
    ('name = "main"', 'name = "main"\nstale_after_s = 31536001', "accounts.0.stale_after_s", "at most a year"),
    ("BTC = 1.0,", "BTC = 1e308,", "accounts.0.holdings.BTC", "at most 1e15"),
    ("BTC = 1.0,", "BTC = -inf,", "accounts.0.holdings.BTC", "finite"),
    ("price = 1.0 ", "price = inf ", "assets.USDT.price", "finite"),
    ("price = 1.0 ", "price = 1e-308 ", "assets.USDT.price", "between 1e-15 and 1e15"),
    ("weight = 0.95             # collateral", "weight = nan #", "assets.BTC.weight", "finite"),
    ("up_to = 1_000_000,", "up_to = inf,", "assets.ETH.weight.0.up_to", "finite"),
    ("fee_rate = 0.001 ", "fee_rate = nan ", "execution.fee_rate", "finite"),
    ("[execution]", "[alerts]\ngroup_wait_s = inf\n[execution]", "alerts.group_wait_s", "finite"),
    ("[execution]", "[alerts]\nretry_base_s = inf\n[execution]", "alerts.retry_base_s", "finite"),
    ("[execution]", "[alerts]\nrepeat_s = { warn = inf }\n[execution]", "alerts.repeat_s.warn", "finite"),
    ("[execution]", "[store]\njournal_keep_days = 366\n[execution]", "store.journal_keep_days", "365 days"),
    ("[execution]", f"[daemon]\nqueue_size = {BIG_INT}\n[execution]", "daemon.queue_size", "less than"),
    ("[execution]", '[[feeds]]\nname = "f"\nsymbols = ["BTC/USDT"]\nsimulated = { step_ms = 1e400 }\n[execution]',
     "feeds.0.simulated.step_ms", "integer"),
    ("cooldown_s = 300 ", 'cooldown_s = 300\n  params = { x = [1, { y = inf }] }',
     "accounts.0.levels.1.params", "x.1.y: not a finite number"),
])
def test_numbers_are_finite_and_bounded(tmp_path, old, new, path, words):
    msg = error_of(tmp_path, edit(old, new))
    assert f": {path}: " in msg and words in msg, msg


def _settings_models():
    from monitor import config
    from pydantic import BaseModel
    return [m for m in vars(config).values()
            if isinstance(m, type) and issubclass(m, config.Frozen) and m is not config.Frozen and m is not BaseModel]


def _float_fields():
    for model in _settings_models():
        for name, info in model.model_fields.items():
            text = str(info.annotation)
            if "float" in text and "Tier" not in text:  # tiered weights: covered through Tier itself
                yield pytest.param(model, name, "dict[" in text, id=f"{model.__name__}.{name}")


@pytest.mark.parametrize("model, name, is_dict", list(_float_fields()))
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_no_float_setting_takes_inf_or_nan(model, name, is_dict, bad):
    with pytest.raises(ValidationError) as err:
        model.model_validate({name: {"X": bad} if is_dict else bad}, strict=True)
    assert any(e["loc"][0] == name for e in err.value.errors())


@pytest.mark.parametrize("model, name", [
    pytest.param(m, n, id=f"{m.__name__}.{n}") for m in _settings_models() for n in m.model_fields
    if n.endswith(("_s", "_ms", "_days"))])
def test_every_duration_is_at_most_a_year(model, name):
    year = {"_s": 365 * 86_400, "_ms": 365 * 86_400_000, "_days": 365}[name[name.rindex("_"):]]
    value = {"X": year + 1} if "dict[" in str(model.model_fields[name].annotation) else year + 1
    with pytest.raises(ValidationError) as err:
        model.model_validate({name: value}, strict=True)
    # a year is the outer bound; some durations have a tighter one of their own
    assert any(e["loc"][0] == name and e["type"] in ("value_error", "less_than_equal")
               for e in err.value.errors()), err.value.errors()


@pytest.mark.parametrize("value", ["[" * 600 + "]" * 600, "{a=" * 600 + "1" + "}" * 600, "[" * 40 + "]" * 40])
def test_deep_nesting_is_one_line(tmp_path, value):
    msg = error_of(tmp_path, edit("cooldown_s = 300 ", f"cooldown_s = 300\n  params = {{ x = {value} }}"))
    assert "nested too deeply" in msg
