"""Calibration to the venue at each sync: the residual, the drift check on the model alone, and
the components a disagreement names. The engine side of a sync, without a network: the venue
states are what a gateway hands over (tests/test_exchange_*.py prove those against the fakes)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from monitor.accounts.synced import SyncApplier, Synced
from monitor.core import Monitor
from monitor.exchange.venues import VenueState, VenueTotals
from monitor.model import EventKind, PriceTick
from monitor.risk.portfolio import to_native
from strategies import default_registry
from tests.test_exchange_bybit import ACCOUNT, settings_for


def synced_monitor(btc: float) -> tuple[Monitor, SyncApplier]:
    settings = settings_for("http://127.0.0.1:1")
    monitor = Monitor(settings, default_registry())
    monitor.on_tick(PriceTick("BTC/USDT", btc, 1_000))
    return monitor, SyncApplier(settings)


def sync(monitor: Monitor, applier: SyncApplier, state: VenueState):
    msg = Synced(ACCOUNT, state)
    monitor.replace_book(applier.book(monitor, msg))
    return applier.drift_event(monitor, msg)


def mm_rate(monitor: Monitor) -> float:
    book = monitor.engine.books[0]
    return to_native(book.model, book.param, float(monitor.engine.health[0]))


def test_a_liability_the_model_cannot_see_is_carried_as_a_residual_and_named():
    # The account: 25 BTC held, 900,000 USDT borrowed, and a venue state whose liability
    # the model misses (the borrow is not in the holdings it was given). The venue's totals:
    # margin balance 600,000 and maintenance 48,000 (MM rate 8%).
    monitor, applier = synced_monitor(60_000)
    state = VenueState({"BTC": 25.0}, native=0.08, ts_ms=2_000,
                       totals=VenueTotals(600_000.0, 48_000.0, {"liabilities": 900_000.0, "maintenance": 48_000.0}))
    event = sync(monitor, applier, state)
    assert mm_rate(monitor) == pytest.approx(0.08)  # the levels act on the venue's figure
    cal = applier.calibration[ACCOUNT]
    assert cal.residual_num == pytest.approx(600_000 - 25 * 60_000 * 0.95)
    assert cal.residual_den == pytest.approx(48_000)
    assert cal.model_native == 0.0  # our model alone sees no debt: an MM rate of 0
    assert event is not None and event.kind == EventKind.DRIFT
    assert "liabilities (ours 0, the venue's 900000)" in event.detail
    assert "maintenance" in event.detail
    # Between syncs the residual stays: BTC falls 10%, health moves with the prices, never inf.
    monitor.on_tick(PriceTick("BTC/USDT", 54_000, 3_000))
    expected = 48_000 / (600_000 - 25 * 6_000 * 0.95)
    assert mm_rate(monitor) == pytest.approx(expected)


def test_a_stream_update_without_the_venues_figures_keeps_the_residual():
    monitor, applier = synced_monitor(60_000)
    sync(monitor, applier, VenueState({"BTC": 25.0}, native=0.08, ts_ms=2_000,
                                      totals=VenueTotals(600_000.0, 48_000.0)))
    # A private-stream update: the balances only (a fill moved 1 BTC out), no totals, no risk figure.
    sync(monitor, applier, VenueState({"BTC": 24.0}, ts_ms=3_000))
    book = monitor.engine.books[0]
    assert book.residual_num == pytest.approx(600_000 - 25 * 60_000 * 0.95)
    assert book.residual_den == pytest.approx(48_000)
    assert mm_rate(monitor) == pytest.approx(48_000 / (600_000 - 60_000 * 0.95))


def test_a_venue_figure_alone_still_keeps_health_finite():
    # No totals, only the venue's MM rate: the maintenance the venue counts beyond ours is the residual.
    monitor, applier = synced_monitor(40_000)
    sync(monitor, applier, VenueState({"BTC": 1.0}, native=0.25, ts_ms=2_000))
    assert mm_rate(monitor) == pytest.approx(0.25)
    assert math.isfinite(float(monitor.engine.health[0]))


def test_a_model_that_agrees_carries_no_residual_and_raises_no_drift():
    # 1 BTC at 40,000 x 0.95 - 30,000 = 8,000 of margin balance; 30,000 x 5% = 1,500 of maintenance.
    monitor, applier = synced_monitor(40_000)
    state = VenueState({"BTC": 1.0, "USDT": -30_000.0}, native=1_500 / 8_000, ts_ms=2_000,
                       totals=VenueTotals(8_000.0, 1_500.0, {"liabilities": 30_000.0, "maintenance": 1_500.0}))
    assert sync(monitor, applier, state) is None
    cal = applier.calibration[ACCOUNT]
    assert cal.residual_num == 0.0 and cal.residual_den == 0.0
    assert cal.disagreeing(0.01) == []
    assert mm_rate(monitor) == pytest.approx(1_500 / 8_000)


def test_no_price_no_calibration():
    settings = settings_for("http://127.0.0.1:1")
    monitor, applier = Monitor(settings, default_registry()), SyncApplier(settings)
    sync(monitor, applier, VenueState({"BTC": 1.0, "USDT": -30_000.0}, native=0.5, ts_ms=2_000,
                                      totals=VenueTotals(8_000.0, 4_000.0)))
    assert ACCOUNT not in applier.calibration  # nothing to compare with: no residual invented
    assert monitor.engine.books[0].residual_num == 0.0 and monitor.engine.books[0].residual_den == 0.0


def test_the_venues_terms_survive_a_stream_update_and_a_reload():
    # Bybit's published bands for BTC (by quantity) and a residual from the last REST sync.
    from monitor.risk.tiers import Tiers

    bands = Tiers.bands([(0.0, 0.98), (10.0, 0.95), (20.0, 0.9)], "qty")
    monitor, applier = synced_monitor(50_000)
    sync(monitor, applier, VenueState({"BTC": 25.0, "USDT": -1_000_000.0}, native=0.3, ts_ms=2_000,
                                      tiers={"BTC": bands}, totals=VenueTotals(190_000.0, 57_000.0)))
    before = monitor.engine.books[0]
    assert before.weights["BTC"] == bands and mm_rate(monitor) == pytest.approx(0.3)
    # The stream: balances only. The bands and the residual stay the venue's.
    sync(monitor, applier, VenueState({"BTC": 25.0, "USDT": -1_000_000.0}, ts_ms=3_000))
    assert monitor.engine.books[0].weights["BTC"] == bands
    assert mm_rate(monitor) == pytest.approx(0.3)
    # A reload builds a new monitor from the config (BTC at a flat 0.95): the venue's terms come back.
    reloaded = Monitor(applier.settings, default_registry())
    reloaded.on_tick(PriceTick("BTC/USDT", 50_000, 4_000))
    reloaded.engine.set_book(replace(reloaded.engine.books[0], exposures=monitor.engine.books[0].exposures))
    assert reloaded.engine.books[0].weights["BTC"] != bands  # the config's, until reapplied
    applier.reapply(reloaded, applier.settings)
    book = reloaded.engine.books[0]
    assert book.weights["BTC"] == bands
    assert (book.residual_num, book.residual_den) == (before.residual_num, before.residual_den)
    assert mm_rate(reloaded) == pytest.approx(0.3)
