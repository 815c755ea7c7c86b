"""Holdings written in the config: settings -> the risk core's AccountBooks."""

from __future__ import annotations

from monitor.config import AccountSettings, MarginSpec, Settings, Tier, WeightSpec, position_asset
from monitor.exchange.venues import LIQUIDATION_LEVEL
from monitor.risk.portfolio import AccountBook, Exposure
from monitor.risk.tiers import Tiers


def tiers_of(spec: WeightSpec | MarginSpec) -> Tiers:
    """A config schedule: a number (one flat rate) or a list of bands ({up_to | up_to_qty, weight | mmr},
    the last without a bound)."""
    if isinstance(spec, int | float):
        return Tiers.flat(float(spec))
    unit = "qty" if spec[0].up_to_qty is not None else "value"
    lows = [0.0] + [float(t.bound) for t in spec[:-1]]
    rates = [float(t.weight if isinstance(t, Tier) else t.mmr) for t in spec]
    return Tiers.bands(list(zip(lows, rates, strict=True)), unit)


def liquidation_level(acc: AccountSettings) -> float:
    """The config's, else the venue's for this account type, else 1 (h = 1 at the native figure's 100%)."""
    if acc.liquidation_level is not None:
        return float(acc.liquidation_level)
    return LIQUIDATION_LEVEL.get((acc.source, acc.model), 1.0)


def account_scale(acc: AccountSettings) -> tuple[float, float]:
    """(scale, param): h = scale * N / D; param is the model's liquidation parameter."""
    if acc.model == "ltv":
        return float(acc.liquidation_ltv), float(acc.liquidation_ltv)
    level = liquidation_level(acc)
    return 1.0 / level, level


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
    perp_tiers: dict[str, Tiers] = {}
    symbols = {a.symbol: n for n, a in settings.assets.items() if a.symbol}
    for p in (acc.positions if positions is None else positions):
        asset = position_asset(p.symbol, symbols, settings.assets)
        s = perps.setdefault(asset, [0.0, 0.0, 0.0])
        s[0] += p.size
        s[1] += p.size * p.entry
        tiers = p.mmr if isinstance(p.mmr, Tiers) else tiers_of(p.mmr)  # a venue's, or the config's
        if tiers.is_flat:
            s[2] += abs(p.size) * tiers.first_rate
        else:  # a risk limit applies to the symbol's net position: the book's schedule for the asset
            perp_tiers[asset] = tiers
    exposures = {}
    for asset in sorted(set(qty) | set(debt) | set(perps)):
        size, cost, mm = perps.get(asset, (0.0, 0.0, 0.0))
        exposures[asset] = Exposure(qty=qty.get(asset, 0.0), debt=debt.get(asset, 0.0),
                                    perp_size=size, perp_cost=cost, perp_mm=mm)
    # Every configured asset gets its schedule, not only those held: proceeds of a sale into an
    # asset the account does not hold yet must count at that asset's weight, not at 100%.
    weights = {a: tiers_of(acc.weights.get(a, spec.weight)) for a, spec in settings.assets.items()}
    borrow_tiers = {a: tiers_of(m) for a, m in acc.borrow_mmr.items()}
    scale, param = account_scale(acc)
    reserve = {a: x for a, x in (acc.reserve if reserve is None else reserve).items() if x > 0}
    return AccountBook(acc.name, acc.model, scale, param, exposures, weights, reserve, borrow_tiers, perp_tiers)


def build_books(settings: Settings) -> list[AccountBook]:
    return [build_book(settings, acc) for acc in settings.accounts]
