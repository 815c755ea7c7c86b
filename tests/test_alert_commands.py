"""The alerting commands end to end: test-alert, replay --notify, silence; config and secrets."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from monitor.alerts.ratelimit import RateLimiter, windows_for
from monitor.cli import main
from monitor.config import load_settings
from monitor.durations import parse_duration_ms
from monitor.errors import ConfigError, UserError
from monitor.secrets import Secrets
from tests.fake_services import TELEGRAM_TOKEN, FakeSlack, FakeTelegram, FakeWebhook

CHAT = "-1001234567890"
BASE = """
[assets.BTC]
price = "BTC/USDT"
weight = 0.8
[assets.USDT]
price = 1.0

[[accounts]]
name = "main"
holdings = { BTC = 1.0, USDT = -30000 }
  [[accounts.levels]]
  name = "warn"
  health = 1.3
  [[accounts.levels]]
  name = "critical"
  health = 1.1
"""


def notifiers_toml(telegram_url: str) -> str:
    return f"""
[[notifiers]]
name = "ops-telegram"
kind = "telegram"
token_env = "TELEGRAM_BOT_TOKEN"
chat_id = "{CHAT}"
api_base = "{telegram_url}"
levels = ["critical"]

[[notifiers]]
name = "desk-slack"
kind = "slack"
webhook_url_env = "SLACK_WEBHOOK_URL"

[[notifiers]]
name = "hook"
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"

[alerts]
repeat_s = {{ warn = 14400, critical = 600 }}
group_wait_s = 0.2
secrets_file = "secrets.env"
"""


@pytest.fixture
async def servers(tmp_path: Path, monkeypatch):
    slack, telegram, hook = FakeSlack(), FakeTelegram(chats=(CHAT,)), FakeWebhook()
    for s in (slack, telegram, hook):
        await s.start()
    # Two secrets from the environment, two from the secrets file.
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TELEGRAM_TOKEN)
    monkeypatch.setenv("HOOK_URL", hook.url + "/hook")
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    (tmp_path / "secrets.env").write_text(f"# secrets\nSLACK_WEBHOOK_URL={slack.webhook_url}\nHOOK_SECRET='k3y'\n")
    config = tmp_path / "alerts.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n' + BASE + notifiers_toml(telegram.url))
    monkeypatch.chdir(tmp_path)
    yield config, slack, telegram, hook
    for s in (slack, telegram, hook):
        await s.stop()
    structlog.reset_defaults()  # main() bound logging to this test's captured stderr


async def test_test_alert_reports_each_channel(servers, capsys) -> None:
    config, slack, telegram, hook = servers
    slack.script.append("404")  # a revoked Slack webhook
    code = await asyncio.to_thread(main, ["test-alert", "--config", str(config)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out == ["ops-telegram: ok", "desk-slack: FAILED (slack: HTTP 404 no_service)", "hook: ok"]
    assert telegram.sent[0]["text"].startswith("<b>TEST</b> collateral-monitor test alert from ")
    assert hook.received[0].json["type"] == "test"
    assert "X-Collateral-Monitor-Signature" in hook.received[0].headers


def price_file(path: Path, prices: list[float], start_s: int = 1_618_700_000) -> Path:
    with gzip.open(path, "wt") as f:
        f.write("timestamp,price\n")
        for n, p in enumerate(prices):
            f.write(f"{start_s + n * 60},{p}\n")
    return path


async def test_replay_sends_only_with_notify(servers, tmp_path: Path, capsys) -> None:
    config, slack, telegram, hook = servers
    prices = price_file(tmp_path / "btc.csv.gz", [60000, 47000, 40000, 40000, 60000])
    args = ["replay", "--config", str(config), "--prices", f"BTC/USDT={prices}"]
    assert await asyncio.to_thread(main, args) == 0
    assert hook.received == [] and telegram.received == [] and slack.received == []
    assert await asyncio.to_thread(main, [*args, "--notify"]) == 0
    out = capsys.readouterr().out
    assert "notify hook: 4 notification(s) in 1 message(s), all delivered" in out
    got = [(a["level"], a["state"]) for a in hook.received[0].json["alerts"]]
    assert got == [("warn", "firing"), ("critical", "firing"), ("warn", "resolved"), ("critical", "resolved")]
    # Routing: Telegram hears only critical.
    assert len(telegram.sent) == 1 and "warn" not in telegram.sent[0]["text"].split("</b>", 1)[0]
    assert telegram.sent[0]["text"].startswith("<b>2 alerts:")


def test_silence_cli_sets_lists_and_expires(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n' + BASE)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "monitor", "silence", *args, "--config", str(config)],
                              capture_output=True, text=True, timeout=60)

    set_ = cli("main", "critical", "--for", "2h", "--comment", "rollover")
    assert set_.returncode == 0 and "main/critical muted until" in set_.stdout
    sid = set_.stdout.split()[1].rstrip(":")
    listed = cli("--list")
    assert listed.stdout.startswith(f"{sid}  main/critical  until ") and "# rollover" in listed.stdout
    bad = cli("main", "crit", "--for", "2h")
    assert bad.returncode == 2 and bad.stderr.strip() == "collateral-monitor: error: silence: main has no level named 'crit'"
    bad_for = cli("main", "--for", "soon")
    assert bad_for.returncode == 2 and "not a duration" in bad_for.stderr and "Traceback" not in bad_for.stderr
    assert cli("--expire", sid).returncode == 0
    assert cli("--list").stdout.strip() == "no silences in force"


@pytest.mark.parametrize("text", ["366d", "53w", "1" + "0" * 400 + "d"])
def test_typed_durations_are_at_most_a_year(text: str) -> None:
    assert parse_duration_ms("365d", "--for") == 365 * 86_400_000
    with pytest.raises(UserError, match="--for: .* is longer than a year"):
        parse_duration_ms(text, "--for")


def test_notifier_config_errors_name_the_key(tmp_path: Path) -> None:
    cases = {
        '[[notifiers]]\nname = "t"\nkind = "telegram"\nchat_id = "1"\n': "needs token_env",
        '[[notifiers]]\nname = "t"\nkind = "telegram"\ntoken_env = "X"\n': "needs chat_id",
        '[[notifiers]]\nname = "s"\nkind = "slack"\nwebhook_url = "https://x"\n': "unknown key",
        '[[notifiers]]\nname = "s"\nkind = "slack"\nwebhook_url_env = "X"\ncontrol = true\n': "control needs",
        '[alerts]\nrepeat_s = { warning = 60 }\n': "alerts.repeat_s: no account has a level named 'warning'",
    }
    for snippet, message in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(BASE + snippet)
        with pytest.raises(ConfigError, match=message):
            load_settings(path)


def test_missing_secret_names_the_variable_never_a_value(tmp_path: Path) -> None:
    (tmp_path / "s.env").write_text("OTHER=value-that-must-not-leak\n")
    secrets = Secrets(str(tmp_path / "s.env"), environ={})
    with pytest.raises(ConfigError) as err:
        secrets.get("SLACK_WEBHOOK_URL", "notifiers[0] (desk-slack).webhook_url_env")
    assert "SLACK_WEBHOOK_URL" in str(err.value) and "value-that-must-not-leak" not in str(err.value)
    assert Secrets(None, environ={"A": "1"}).get("A", "x") == "1"


def test_rate_limit_windows_match_the_services() -> None:
    now = [0.0]
    group = RateLimiter(windows_for("telegram", "-100123", None, None), clock=lambda: now[0])
    allowed = []
    for step in range(600):  # ten minutes in 1 s steps of a chat that wants to send all the time
        now[0] = float(step)
        if group.wait_s() == 0:
            group.record()
            allowed.append(step)
    per_minute = max(sum(1 for t in allowed if s <= t < s + 60) for s in range(540))
    assert per_minute == 20 and min(b - a for a, b in zip(allowed, allowed[1:])) >= 1
    assert windows_for("telegram", "42", None, None) == [(1, 1.0)]  # a private chat: 1/s only
    assert windows_for("slack", None, None, None) == [(1, 1.0)]
    assert windows_for("slack", None, 0.5, 30) == [(1, 0.5), (30, 60.0)]


async def test_check_config_shows_channels_and_whether_secrets_are_found(servers, capsys) -> None:
    config, *_ = servers
    assert await asyncio.to_thread(main, ["check-config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == [
        "  notifier ops-telegram: telegram, critical; TELEGRAM_BOT_TOKEN set",
        "  notifier desk-slack: slack, all levels; SLACK_WEBHOOK_URL set",
        "  notifier hook: webhook, all levels; HOOK_URL set, HOOK_SECRET set",
    ]
    assert not any("SECRET-token" in line or "/services/" in line for line in out)
