"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real market data in shared/data: beside the repo checkout, else $CM_SHARED_DATA."""
    beside_repo = REPO_ROOT.parent / "shared" / "data"
    if beside_repo.is_dir():
        return beside_repo
    from_env = os.environ.get("CM_SHARED_DATA")
    if from_env and Path(from_env).is_dir():
        return Path(from_env)
    pytest.skip(
        f"shared data not found: neither {beside_repo} nor $CM_SHARED_DATA ({from_env or 'unset'}) is a directory"
    )


CONFIGS = REPO_ROOT / "tests" / "configs"
BINANCE_2021 = "binance_1m_2021-04/binance_{}USDT_1m_2021-04-16_2021-04-19.csv.gz"


@pytest.fixture(scope="session")
def contract_config() -> Path:
    """The config an issue published as a contract: it must pass check-config and replay as written."""
    return CONFIGS / "contract.toml"


@pytest.fixture(scope="session")
def crash_prices(shared_data: Path) -> list[str]:
    """--prices arguments for BTC and ETH over the 2021-04-18 liquidation dump."""
    return [f"{a}/USDT={shared_data / BINANCE_2021.format(a)}" for a in ("BTC", "ETH")]


# CI runs the property tests on a fixed example sequence, so a red build is reproducible;
# local runs explore new examples each time.
# Data generation slows down on a loaded machine: that is not a failure of the code under test.
from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("dev", suppress_health_check=[HealthCheck.too_slow])
_hypothesis_settings.register_profile("ci", parent=_hypothesis_settings.get_profile("dev"), derandomize=True,
                                      print_blob=True)
_hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory):
    """One redis-server for the session; tests that share it use their own key prefix."""
    from tests.redis_server import RedisServer
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path):
    """A redis-server of the test's own, which the test may stop and start."""
    from tests.redis_server import RedisServer
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
