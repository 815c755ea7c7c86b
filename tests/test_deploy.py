"""The deploy/ files as an operator uses them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "collateral-monitor.service"
INSTALLED = "/opt/collateral-monitor/.venv/bin/collateral-monitor"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this checkout's console script,
    # the same program the README installs under /opt.
    script = Path(sys.executable).parent / "collateral-monitor"
    assert script.exists(), script
    text = UNIT.read_text()
    assert INSTALLED in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED, str(script)))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert UNIT.name not in proc.stderr, proc.stderr  # no warning about our unit


def test_unit_has_what_the_readme_promises() -> None:
    keys = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    assert keys["Type"] == ["notify"] and keys["Restart"] == ["on-failure"]
    assert keys["WatchdogSec"] and keys["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    for k in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictAddressFamilies",
              "SystemCallFilter", "StateDirectory", "ConfigurationDirectory", "EnvironmentFile", "User"):
        assert k in keys, k


def test_compose_config_from_the_readme_is_valid(monkeypatch) -> None:
    """The [store] and [http] the README tells a compose user to set, on the example config."""
    import tomllib

    from monitor.config import parse_settings

    compose = (REPO / "deploy" / "compose.yaml").read_text()
    assert "REDIS_URL: redis://redis:6379/0" in compose and "CM_HTTP_TOKEN" in compose
    data = tomllib.loads((REPO / "config.example.toml").read_text())
    data["store"] = {"backend": "redis", "url_env": "REDIS_URL"}
    data["http"] = {"listen": "0.0.0.0:9108", "token_env": "CM_HTTP_TOKEN"}
    settings = parse_settings(data)
    assert settings.store.url_env == "REDIS_URL" and settings.http.token_env == "CM_HTTP_TOKEN"
