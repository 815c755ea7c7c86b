"""Holdings written in the config: settings -> the risk core's AccountBooks."""

from __future__ import annotations

from monitor.config import AccountSettings, Settings, position_asset
from monitor.risk.portfolio import AccountBook, Exposure
from monitor.risk.weights import WeightSchedule


def account_scale(acc: AccountSettings) -> tuple[float, float]:
    """(scale, param): h = scale * N / D; param is the model's liquidation parameter."""
    if acc.model == "ltv":
        return float(acc.liquidation_ltv), float(acc.liquidation_ltv)
    if acc.model == "margin_level":
        return 1.0 / float(acc.liquidation_level), float(acc.liquidation_level)
    return 1.0, 1.0


def build_book(settings: Settings, acc: AccountSettings, holdings: dict[str, float] | None = None,
               borrowed: dict[str, float] | None = None, positions: list | None = None,
               reserve: dict[str, float] | None = None) -> AccountBook:
    """The account's book from its config, or from holdings synced from its venue (same shapes:
    holdings negative = borrowed, borrowed gross, positions with symbol/size/entry/mmr, reserve)."""
    qty: dict[str, float] = {}
    debt: dict[str, float] = {}
    for asset, amount in (acc.holdings if holdings is None else holdings).items():
        (qty if amount >= 0 else debt)[asset] = abs(amount)
    for asset, amount in (acc.borrowed if borrowed is None else borrowed).items():
        debt[asset] = debt.get(asset, 0.0) + amount
    perps: dict[str, list[float]] = {}
    symbols = {a.symbol: n for n, a in settings.assets.items() if a.symbol}
    for p in (acc.positions if positions is None else positions):
        asset = position_asset(p.symbol, symbols, settings.assets)
        s = perps.setdefault(asset, [0.0, 0.0, 0.0])
        s[0] += p.size
        s[1] += p.size * p.entry
        s[2] += abs(p.size) * p.mmr
    exposures = {}
    for asset in sorted(set(qty) | set(debt) | set(perps)):
        size, cost, mm = perps.get(asset, (0.0, 0.0, 0.0))
        exposures[asset] = Exposure(
            qty=qty.get(asset, 0.0), debt=debt.get(asset, 0.0),
            perp_size=size, perp_cost=cost, perp_mm=mm,
            borrow_mmr=acc.borrow_mmr.get(asset, 0.0),
        )
    # Every configured asset gets its schedule, not only those held: proceeds of a sale into an
    # asset the account does not hold yet must count at that asset's weight, not at 100%.
    weights = {a: WeightSchedule.from_spec(acc.weights.get(a, spec.weight)) for a, spec in settings.assets.items()}
    scale, param = account_scale(acc)
    reserve = {a: x for a, x in (acc.reserve if reserve is None else reserve).items() if x > 0}
    return AccountBook(acc.name, acc.model, scale, param, exposures, weights, reserve)


def build_books(settings: Settings) -> list[AccountBook]:
    return [build_book(settings, acc) for acc in settings.accounts]
