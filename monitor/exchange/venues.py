"""What each supported venue's account looks like, in our terms (no ccxt here: pure parsing).

A venue's raw account payload (as ccxt hands it over in `info`) becomes a VenueState:
holdings, liabilities (borrowed plus accrued interest), perpetual positions and the
venue's own risk figure in the account model's native unit, so the drift check can
compare it with ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from monitor.risk.tiers import Tiers, Unit

# Which margin models each venue's account maps onto (config validation uses this).
VENUE_MODELS: dict[str, tuple[str, ...]] = {
    "bybit": ("unified",),
    "binance": ("margin_level",),  # classic cross margin
    "okx": ("unified",),  # multi-currency margin
    "binanceusdm": ("unified",),  # USDⓈ-M futures in Multi-Assets mode
}
# Venues whose account holds margin and perpetuals only: no spot market to sell collateral on.
PERPS_ONLY = {"binanceusdm"}
NEEDS_PASSPHRASE = {"okx"}  # venues whose API keys come with a passphrase
# The wallet a top-up moves collateral into, per venue that supports it (ccxt's account names).
TOP_UP_INTO: dict[str, str] = {"bybit": "unified"}
# Where each venue liquidates an account type, in the model's figure (config `liquidation_level`
# overrides): Binance classic cross margin at margin level 1.1 ("Margin Level" FAQ); Binance
# Portfolio Margin at uniMMR 1.05 ("What is uniMMR"). Others: 1 (MM rate 100%).
LIQUIDATION_LEVEL: dict[tuple[str, str], float] = {("binance", "margin_level"): 1.1,
                                                   ("binancepm", "unified"): 1.05}
NO_TESTNET = {"binance": "Binance's testnet has no margin endpoints: use dry_run (a read-only key is enough) or "
                         "live (USDⓈ-M futures accounts have a testnet: source = \"binanceusdm\")"}


@dataclass(frozen=True, slots=True)
class VenuePosition:
    symbol: str  # ccxt's unified symbol, e.g. BTC/USDT:USDT
    size: float  # signed: < 0 is short
    entry: float
    # Maintenance: the venue's risk-limit tiers for the symbol (Tiers on |size| or its notional,
    # progressive, with the venue's deductions), else the position's MM / value as one flat rate.
    mmr: float | Tiers


@dataclass(frozen=True, slots=True)
class VenueState:
    """One account as the venue reports it."""
    holdings: dict[str, float]  # unified: net per coin (negative = borrowed); others: gross held
    borrowed: dict[str, float] = field(default_factory=dict)  # gross liabilities incl. interest (non-netting models)
    positions: tuple[VenuePosition, ...] = ()
    native: float | None = None  # the venue's own figure (unified: account MM rate as a fraction)
    ts_ms: int = 0
    # The venue's collateral weights per coin, in the venue's unit (coin quantity on Bybit and OKX).
    tiers: dict[str, Tiers] = field(default_factory=dict)
    reserve: dict[str, float] = field(default_factory=dict)  # what the reserve wallet could move in (top-ups)
    borrow_tiers: dict[str, Tiers] = field(default_factory=dict)  # unified: a borrowed coin's maintenance
    totals: VenueTotals | None = None  # the venue's own sums, for calibration
    # Where the venue says it liquidates this account, in the model's figure (Binance margin:
    # forceLiquidationBar); the book takes it unless the config sets `liquidation_level`.
    liquidation_level: float | None = None


@dataclass(frozen=True, slots=True)
class VenueTotals:
    """The venue's own account sums in USD, in the model's terms: `num` and `den` as the model
    divides them (unified: margin balance and maintenance margin; margin_level: total asset value
    and total liabilities), and the components it reports ("collateral", "liabilities",
    "maintenance", "pnl"), so a disagreement can name the part that differs."""
    num: float
    den: float
    parts: dict[str, float] = field(default_factory=dict)


def _num(raw: Any) -> float:
    try:
        return float(raw) if raw not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


def bybit_collateral_tiers(result: dict[str, Any]) -> dict[str, Tiers]:
    """GET /v5/spot-margin-trade/collateral ("Get Tiered Collateral Ratio", public): per coin, the
    collateral ratio of each band of the holding's quantity ("minQty"/"maxQty": "in coin"),
    progressive (lower bound, ratio).
    https://bybit-exchange.github.io/docs/v5/spot-margin-uta/tier-collateral-ratio"""
    out = {}
    for item in result.get("list") or []:
        bands = sorted(((_num(b.get("minQty")), _num(b.get("collateralRatio")))
                        for b in item.get("collateralRatioList") or []), key=lambda b: b[0])
        if bands and bands[0][0] == 0:
            out[str(item.get("currency"))] = Tiers.bands(bands, "qty")
    return out


def _upper_bounded(tiers: list[tuple[float, float]], unit: Unit,
                   deductions: tuple[float, ...] | None = None) -> Tiers | None:
    """A schedule from tiers given by their upper bound (Bybit's "0 - 1,000", ">1,000 - 2,000"):
    (upper bound, rate) pairs; each band starts where the one before ends."""
    tiers = sorted(tiers)
    if not tiers or any(hi <= 0 for hi, _ in tiers):
        return None
    lows = [0.0] + [hi for hi, _ in tiers[:-1]]
    return Tiers.bands(list(zip(lows, [r for _, r in tiers], strict=True)), unit, deductions)


def bybit_borrow_tiers(result: dict[str, Any]) -> dict[str, Tiers]:
    """GET /v5/spot-margin-trade/position-tiers ("Get Position Tiers", signed): per coin, the loan
    maintenance margin rate (positionMMR) of each tier of the borrowed quantity; borrowLimit is
    the tier's accumulated upper bound, so the schedule is progressive by coin quantity.
    https://bybit-exchange.github.io/docs/v5/spot-margin-uta/position-tiers"""
    out = {}
    for item in result.get("list") or []:
        tiers = [(_num(t.get("borrowLimit")), _num(t.get("positionMMR"))) for t in item.get("positionTiersRatioList") or []]
        schedule = _upper_bounded(tiers, "qty")
        if schedule is not None:
            out[str(item.get("currency"))] = schedule
    return out


def _risk_limit_scale(item: dict[str, Any]) -> float:
    """1, or 0.01 where the rates are in percent: the docs' example lists BTCUSD's first tier as
    maintenanceMargin "0.5", initialMargin "1" at maxLeverage "100" (IM x leverage = 100), while
    live linear tiers (and ccxt) give fractions ("0.005", "0.01": IM x leverage = 1)."""
    return 0.01 if _num(item.get("initialMargin")) * _num(item.get("maxLeverage")) > 10 else 1.0


def bybit_risk_limit_tiers(items: list[dict[str, Any]]) -> dict[str, Tiers]:
    """GET /v5/market/risk-limit (category linear, public): per symbol (Bybit's id, e.g. BTCUSDT)
    the maintenance margin of a position by its value: riskLimitValue is each tier's upper
    bound, maintenanceMargin its rate and mmDeduction what Bybit subtracts ("" on the first
    tier), so MM = value x MMR - mmDeduction in the tier the value falls in: "any excess beyond
    a tier is subject to the next tier's MMR" (help centre "Maintenance Margin (USDT Contract)",
    https://www.bybit.com/en/help-center/article/Maintenance-Margin-USDT-Contract; the tier
    follows the position's value at the mark price since 2025: "The New Margin Calculation").
    https://bybit-exchange.github.io/docs/v5/market/risk-limit"""
    by_symbol: dict[str, list[tuple[float, float, str]]] = {}
    for item in items:
        scale = _risk_limit_scale(item)
        by_symbol.setdefault(str(item.get("symbol")), []).append(
            (_num(item.get("riskLimitValue")), _num(item.get("maintenanceMargin")) * scale,
             str(item.get("mmDeduction") or "")))
    out = {}
    for symbol, tiers in by_symbol.items():
        tiers.sort()
        # Bybit's own deductions when it publishes them; else each band adds its own part (the same schedule).
        deductions = tuple(_num(d) for _, _, d in tiers) if any(_num(d) for _, _, d in tiers) else None
        schedule = _upper_bounded([(hi, rate) for hi, rate, _ in tiers], "value", deductions)
        if schedule is not None:
            out[symbol] = schedule
    return out


def bybit_coin_net(coin: dict[str, Any]) -> float:
    """A coin's balance net of its liabilities, as Bybit counts its equity: walletBalance -
    spotBorrow (equity = walletBalance - spotBorrow + unrealisedPnl + option value; "Old
    walletBalance = New walletBalance - spotBorrow", API docs "Get Wallet Balance",
    https://bybit-exchange.github.io/docs/v5/account/wallet-balance). Since Bybit's 2025 manual
    borrow a spot or manual borrow is credited to walletBalance and owed in spotBorrow (accrued
    interest included: help centre "Manual Borrow in UTA Loan"); before, and for a derivatives
    loss still, the liability is a negative walletBalance and spotBorrow is "0" or absent.
    borrowAmount (spot + derivatives liabilities) and accruedInterest are parts of these, never
    added again. The perpetuals' unrealised PnL is left out: positions carry it."""
    return _num(coin.get("walletBalance")) - _num(coin.get("spotBorrow"))


def bybit_totals(wallet: dict[str, Any]) -> VenueTotals | None:
    """The account's own sums (same page): totalMarginBalance (num: weighted collateral less
    liabilities plus totalPerpUPL) over totalMaintenanceMargin (den: borrowed coins', positions'
    and orders' MM). Liabilities are each owing coin's net at the coin's USD price (usdValue /
    equity); collateral follows from the margin balance when every liability could be priced."""
    if wallet.get("totalMarginBalance") in (None, "") or wallet.get("totalMaintenanceMargin") in (None, ""):
        return None
    balance, maint, upl = (_num(wallet.get(k)) for k in ("totalMarginBalance", "totalMaintenanceMargin",
                                                         "totalPerpUPL"))
    parts = {"maintenance": maint, "pnl": upl}
    owed = 0.0
    for coin in wallet.get("coin") or []:
        net, equity, usd = bybit_coin_net(coin), _num(coin.get("equity")), _num(coin.get("usdValue"))
        if net >= 0:
            continue
        if not (equity and usd):  # a liability without a price: no liability or collateral part
            return VenueTotals(balance, maint, parts)
        owed += -net * usd / equity
    parts.update(liabilities=owed, collateral=balance - upl + owed)
    return VenueTotals(balance, maint, parts)


def bybit_positions(positions: list[dict[str, Any]], risk_limits: dict[str, Tiers]) -> tuple[VenuePosition, ...]:
    """ccxt positions from GET /v5/position/list (or the `position` stream): each with its
    symbol's risk-limit tiers when known, else its own positionMM / positionValue (both at the mark)."""
    out = []
    for p in positions:
        size = _num(p.get("contracts"))
        value = _num(p["info"].get("positionValue"))
        if size == 0 or value == 0:
            continue
        signed = -size if p.get("side") == "short" else size
        entry = p.get("entryPrice") or p["info"].get("avgPrice")  # REST says avgPrice, the stream entryPrice
        mmr = risk_limits.get(str(p["info"].get("symbol"))) or _num(p["info"].get("positionMM")) / value
        out.append(VenuePosition(p["symbol"], signed, _num(entry), mmr))
    return tuple(out)


def bybit_unified_state(wallet: dict[str, Any], positions: list[dict[str, Any]], ts_ms: int,
                        tiers: dict[str, Tiers] | None = None, borrow_tiers: dict[str, Tiers] | None = None,
                        risk_limits: dict[str, Tiers] | None = None) -> VenueState:
    """GET /v5/account/wallet-balance (accountType=UNIFIED) and /v5/position/list (or the
    `wallet` and `position` streams), through ccxt, with the published schedules.

    Each coin is netted as Bybit nets it (bybit_coin_net). The account maintenance-margin rate
    accountMMRate is total maintenance margin / margin balance, liquidation at 100% (help
    centre "Trading Terms and Formulas in Unified Trading Account",
    https://www.bybit.com/en/help-center/article/Glossary-Unified-Trading-Account).
    """
    holdings: dict[str, float] = {}
    for coin in wallet.get("coin") or []:
        net = bybit_coin_net(coin)
        if net != 0:
            holdings[str(coin.get("coin"))] = net
    rate = wallet.get("accountMMRate")
    native = _num(rate) if rate not in (None, "") else None
    return VenueState(holdings, {}, bybit_positions(positions, risk_limits or {}), native if native else None,
                      ts_ms, tiers or {}, borrow_tiers=borrow_tiers or {}, totals=bybit_totals(wallet))


def bybit_transferable(result: dict[str, Any]) -> dict[str, float]:
    """GET /v5/asset/transfer/query-account-coins-balance: per coin, what can be transferred
    out now (transferBalance; walletBalance may include amounts that cannot move)."""
    out = {}
    for coin in result.get("balance") or []:
        amount = _num(coin.get("transferBalance"))
        if amount > 0:
            out[str(coin.get("coin"))] = amount
    return out


def binance_margin_state(account: dict[str, Any], ts_ms: int, liquidation_level: float | None = None) -> VenueState:
    """GET /sapi/v1/margin/account (Cross Margin Classic, accountType MARGIN_1), through ccxt.

    Binance counts gross: each asset's free + locked is a held asset and its borrowed + interest a
    liability, so a coin both held and borrowed is on both sides. Margin level = total asset value /
    (total liabilities + outstanding interest) ("Margin Level and Margin Call" FAQ,
    https://www.binance.com/en/support/faq/binance-margin-level-and-margin-call-360030493931).
    Without liabilities Binance reports a placeholder level (999): no figure then.
    """
    holdings, borrowed = {}, {}
    for a in account.get("userAssets") or []:
        held = _num(a.get("free")) + _num(a.get("locked"))
        owed = _num(a.get("borrowed")) + _num(a.get("interest"))
        if held:
            holdings[str(a.get("asset"))] = held
        if owed:
            borrowed[str(a.get("asset"))] = owed
    level = _num(account.get("marginLevel"))
    native = level if borrowed and level > 0 else None
    return VenueState(holdings, borrowed, (), native, ts_ms, liquidation_level=liquidation_level)


def binance_margin_totals(account: dict[str, Any], btc_usdt: float) -> VenueTotals:
    """The margin account's own sums, which it reports in BTC (totalAssetOfBtc / totalLiabilityOfBtc
    is its marginLevel: API docs "Query Cross Margin Account Details",
    https://developers.binance.com/docs/margin_trading/account/Query-Cross-Margin-Account-Details),
    in USDT at Binance's BTCUSDT margin price index `btc_usdt` (GET /sapi/v1/margin/priceIndex: the
    index price the liquidation price is reckoned at, FAQ "How to Calculate Margin Liquidation
    Price?", https://www.binance.com/en/support/faq/f6b010588e55413aa58b7d63ee0125ed)."""
    assets = _num(account.get("totalAssetOfBtc")) * btc_usdt
    liabilities = _num(account.get("totalLiabilityOfBtc")) * btc_usdt
    return VenueTotals(assets, liabilities, {"collateral": assets, "liabilities": liabilities})


def binance_margin_liquidation_bar(coeff: dict[str, Any]) -> float | None:
    """GET /sapi/v1/margin/tradeCoeff ("Get Summary of Margin account", margin level bars of the
    account: normalBar, marginCallBar, forceLiquidationBar): the margin level it is liquidated at,
    https://developers.binance.com/docs/margin_trading/account/Get-Summary-Of-Margin-Account."""
    bar = _num(coeff.get("forceLiquidationBar"))
    return bar if bar > 0 else None


# -- OKX multi-currency margin ------------------------------------------------------------------
# Where the rules below come from:
# - OKX help centre, "Multi-currency margin mode: cross margin trading"
#   (https://www.okx.com/help/iv-multi-currency-margin-mode-cross-margin-trading): a coin's equity =
#   balance (cashBal) + floating PnL of the cross positions settled in it - accrued interest; its
#   liability = |min(0, equity)| + isolated liabilities; adjusted equity = the coins' equity at their
#   discount rates in USD; liquidation when the margin ratio falls to 100%.
# - OKX help centre, "Tiered maintenance margin ratio rules"
#   (https://www.okx.com/help/v-tiered-maintenance-margin-ratio-rules): liquidation when equity is at
#   or below the maintenance margin plus the liquidation fees; a position's tier (by its size in
#   contracts) sets the maintenance margin ratio of the whole position.
# - OKX API v5 docs (https://www.okx.com/docs-v5/en/): "Get balance" (cashBal, eq, liab, crossLiab,
#   uplLiab, interest, disEq, eqUsd; adjEq, mmr "the sum of maintenance margins of all open positions
#   under cross margin mode in USD", mgnRatio, notionalUsd), "Get positions", "Get position tiers"
#   (minSz/maxSz in contracts, or the borrowing amount in the coin when `ccy` is given, and mmr),
#   "Get discount rate and interest-free quota" (minAmt/maxAmt "the unit is the currency",
#   minDiscountRate beyond the last tier). The "Get balance" response example has adjEq 10,679,688.05,
#   mmr 134.89 (0.4% of notionalUsd 33,722.94) and mgnRatio 70,375.35: adjEq / mgnRatio =
#   mmr + 0.05% x notionalUsd. So `mmr` holds no liquidation fee; the fee is the positions' notional
#   at a fee rate (OKX charges liquidations at the taker rate of the account's fee tier).
OKX_MAX_FEE_RATE = 0.01  # a derived liquidation fee rate above this is not a fee: left to the residual
OkxTierRows = tuple[tuple[float, float], ...]  # (maxSz, mmr) per tier, in tier order


def okx_discount_tiers(data: list[dict[str, Any]]) -> dict[str, Tiers]:
    """GET /api/v5/public/discount-rate-interest-free-quota (public): per coin, the discount rate of
    each band of the coin's equity, progressive (each band's part at its own rate: OKX's worked example
    values 11M USDT over bands 1 / 0.9 / 0.8 at 10.3M). Bands are in the coin; beyond a last tier with a
    bound, minDiscountRate applies."""
    out = {}
    for item in data:
        rows = sorted(((_num(b.get("minAmt")), _num(b.get("discountRate")), b.get("maxAmt"))
                       for b in item.get("details") or []), key=lambda b: b[0])
        if not rows or rows[0][0] != 0:
            continue
        bands = [(lo, rate) for lo, rate, _ in rows]
        last_max = _num(rows[-1][2])
        if last_max > rows[-1][0]:  # "" (no bound) reads as 0
            bands.append((last_max, _num(item.get("minDiscountRate"))))
        out[str(item.get("ccy"))] = Tiers.bands(bands, "qty")
    return out


def okx_tier_rows(data: list[dict[str, Any]]) -> OkxTierRows:
    """GET /api/v5/public/position-tiers (public, tdMode cross): one instrument family's tiers
    (instType SWAP: maxSz in contracts) or one coin's borrowing tiers (instType MARGIN with `ccy`:
    maxSz is the borrowed amount in the coin), as (maxSz, mmr) in tier order."""
    rows = sorted((int(_num(t.get("tier"))), _num(t.get("maxSz")), _num(t.get("mmr"))) for t in data)
    return tuple((hi, mmr) for _, hi, mmr in rows)


def okx_whole_amount_tiers(rows: OkxTierRows, unit_size: float = 1.0, plus: float = 0.0) -> Tiers:
    """OKX's tiers as a schedule of the amount in base units (`unit_size` coins per counted unit: ctVal
    for contracts). The tier an amount is in (minSz < x <= maxSz) sets the rate of the whole amount,
    so f(x) = mmr_j * x with no deduction: a jump at each bound, not a band-wise sum. `plus` adds a
    rate on every tier (the liquidation fee on a position's notional)."""
    lows = [0.0] + [math.nextafter(hi * unit_size, math.inf) for hi, _ in rows[:-1]]  # maxSz is in tier j
    return Tiers(tuple(lows), tuple(mmr + plus for _, mmr in rows), "qty", (0.0,) * len(rows))


def okx_borrowed(account: dict[str, Any]) -> list[str]:
    """Coins the account has borrowed: a net holding (cashBal - interest) below zero."""
    return [str(d.get("ccy")) for d in account.get("details") or []
            if _num(d.get("cashBal")) - _num(d.get("interest")) < 0]


def okx_liquidation_fee_rate(account: dict[str, Any]) -> float:
    """The account's liquidation fee per USD of position notional: adjEq / mgnRatio is the
    denominator (mmr + liquidation fees), mmr holds none of the fee ("Get balance" example)."""
    ratio, notional = _num(account.get("mgnRatio")), _num(account.get("notionalUsd"))
    if ratio <= 0 or notional <= 0:
        return 0.0
    rate = (_num(account.get("adjEq")) / ratio - _num(account.get("mmr"))) / notional
    return max(rate, 0.0) if -1e-9 <= rate <= OKX_MAX_FEE_RATE else 0.0


def okx_positions(positions: list[dict[str, Any]], tiers: dict[str, OkxTierRows] | None = None,
                  fee_rate: float = 0.0) -> tuple[VenuePosition, ...]:
    """ccxt positions from GET /api/v5/account/positions (instType SWAP): size in contracts of ctVal
    base units each. Maintenance is the symbol's position tiers (by ccxt symbol) in base units plus
    the liquidation fee rate; without tiers, the position's mmr / notionalUsd plus the fee rate."""
    out = []
    for p in positions:
        ct_val = _num(p.get("contractSize")) or 1.0
        size = _num(p.get("contracts")) * ct_val
        value = _num(p["info"].get("notionalUsd"))
        if size == 0 or value == 0:
            continue
        signed = -size if p.get("side") == "short" else size
        rows = (tiers or {}).get(p["symbol"])
        mmr = (okx_whole_amount_tiers(rows, ct_val, fee_rate) if rows
               else _num(p["info"].get("mmr")) / value + fee_rate)
        out.append(VenuePosition(p["symbol"], signed, _num(p["info"].get("avgPx")), mmr))
    return tuple(out)


def okx_totals(account: dict[str, Any], positions: list[dict[str, Any]]) -> VenueTotals | None:
    """OKX's own sums in the model's terms: num = adjEq, den = adjEq / mgnRatio (maintenance margin
    plus liquidation fees); liabilities = what each coin owes without its swaps' PnL (interest -
    cashBal: liab less the PnL's share of eq) at the coin's USD price (eqUsd / eq); pnl = the swap
    positions' upl; collateral = what makes adjEq = collateral - liabilities + pnl (OKX discounts a
    coin's equity, its PnL included: the difference shows as collateral)."""
    adj, ratio = _num(account.get("adjEq")), _num(account.get("mgnRatio"))
    if ratio == 0 or adj / ratio <= 0:
        return None
    liabilities = 0.0
    for coin in account.get("details") or []:
        eq, owed = _num(coin.get("eq")), _num(coin.get("interest")) - _num(coin.get("cashBal"))
        if eq != 0 and owed > 0:
            liabilities += owed * _num(coin.get("eqUsd")) / eq
    pnl = sum(_num(p["info"].get("upl")) for p in positions)
    parts = {"collateral": adj + liabilities - pnl, "liabilities": liabilities, "maintenance": adj / ratio,
             "pnl": pnl}
    return VenueTotals(adj, adj / ratio, parts)


def okx_multi_currency_state(balance: dict[str, Any], positions: list[dict[str, Any]], ts_ms: int,
                             tiers: dict[str, Tiers] | None = None,
                             position_tiers: dict[str, OkxTierRows] | None = None,
                             borrow_tiers: dict[str, OkxTierRows] | None = None) -> VenueState:
    """GET /api/v5/account/balance (or the `account` channel) and the swap positions of a
    multi-currency margin account, through ccxt.

    OKX nets each coin: a borrowed coin's cashBal goes negative (the balance already holds what was
    borrowed), accrued interest is owed on top, and liab = |min(0, eq)| counts both (and the
    positions' unrealised loss, uplLiab) once. The net holding is cashBal - interest; the perps'
    PnL is the positions'. mgnRatio = adjusted equity / (maintenance margin + liquidation fees),
    liquidation at <= 100%: our health; the unified model's native figure is its inverse.
    `position_tiers` (by ccxt symbol) and `borrow_tiers` (by coin) are the published tiers.
    """
    holdings: dict[str, float] = {}
    for coin in balance.get("details") or []:
        net = _num(coin.get("cashBal")) - _num(coin.get("interest"))
        if net != 0:
            holdings[str(coin.get("ccy"))] = net
    ratio = _num(balance.get("mgnRatio"))  # "" when nothing is owed and nothing is open
    fee = okx_liquidation_fee_rate(balance)
    borrows = {c: okx_whole_amount_tiers(rows) for c, rows in (borrow_tiers or {}).items() if rows}
    return VenueState(holdings, {}, okx_positions(positions, position_tiers, fee),
                      1.0 / ratio if ratio > 0 else None, ts_ms, tiers or {}, borrow_tiers=borrows,
                      totals=okx_totals(balance, positions))


def binance_asset_haircuts(index: list[dict[str, Any]]) -> dict[str, Tiers]:
    """GET /fapi/v1/assetIndex (public, "Multi-Assets Mode Asset Index"): Multi-Assets mode values
    a positive balance of a margin asset at index x (1 - bidBuffer), so 1 - bidBuffer is the
    asset's weight: one flat band (symbol "BTCUSD" -> BTC)."""
    out = {}
    for item in index:
        symbol = str(item.get("symbol") or "")
        if symbol.endswith("USD") and item.get("bidBuffer") not in (None, ""):
            out[symbol[:-3]] = Tiers.flat(1.0 - _num(item.get("bidBuffer")))
    return out


def binance_leverage_brackets(data: list[dict[str, Any]], symbol_of: dict[str, str]) -> dict[str, Tiers]:
    """GET /fapi/v1/leverageBracket ("Notional and Leverage Brackets", the account's own): per
    symbol, brackets of the position's notional from notionalFloor, each with its maintMarginRatio
    and cum, the maintenance amount: maintenance margin = notional x maintMarginRatio - cum
    (Binance FAQ "Leverage and Margin of USDⓈ-M Futures",
    https://www.binance.com/en/support/faq/leverage-and-margin-of-usd%E2%93%A2-m-futures-360033162192).
    `symbol_of` maps Binance's market ids to ccxt's symbols."""
    out = {}
    for item in data:
        symbol = symbol_of.get(str(item.get("symbol")))
        brackets = sorted(item.get("brackets") or [], key=lambda b: _num(b.get("notionalFloor")))
        if symbol is None or not brackets or _num(brackets[0].get("notionalFloor")) != 0:
            continue
        bands = [(_num(b.get("notionalFloor")), _num(b.get("maintMarginRatio"))) for b in brackets]
        out[symbol] = Tiers.bands(bands, "value", tuple(_num(b.get("cum")) for b in brackets))
    return out


def binance_usdm_state(account: dict[str, Any], symbol_of: dict[str, str], ts_ms: int,
                       tiers: dict[str, Tiers] | None = None, brackets: dict[str, Tiers] | None = None) -> VenueState:
    """GET /fapi/v3/account of a USDⓈ-M futures account in Multi-Assets mode, through ccxt.

    Each margin asset's walletBalance is held; a negative one (losses settled in Multi-Assets mode,
    auto-exchanged past a threshold: "Multi-Assets Mode" rules page) is owed, a liability. A
    position's positionAmt is signed, notional is its signed value at the mark, and the entry
    follows from notional - unrealizedProfit; its maintenance is the symbol's leverage brackets
    (`brackets`), else its maintMargin / notional as one rate. Binance's margin ratio is account
    maintenance margin / account equity, both in USD, liquidation at 100% ("How to Calculate
    Margin Ratio in the Multi-Assets Mode", https://www.binance.com/en/support/faq/
    how-to-calculate-margin-in-multi-assets-mode-c983a9268cfa4e70a4916c276bb3b7bc): the unified
    model's MM rate; totalMarginBalance and totalMaintMargin are those sums (in USD in
    Multi-Assets mode, API docs "Account Information V3").
    """
    holdings = {str(a.get("asset")): _num(a.get("walletBalance")) for a in account.get("assets") or []
                if _num(a.get("walletBalance")) != 0}
    brackets = brackets or {}
    positions = []
    for p in account.get("positions") or []:
        size, notional = _num(p.get("positionAmt")), _num(p.get("notional"))
        symbol = symbol_of.get(str(p.get("symbol")))
        if size == 0 or notional == 0 or symbol is None:
            continue
        entry = (notional - _num(p.get("unrealizedProfit"))) / size
        mmr = brackets.get(symbol) or _num(p.get("maintMargin")) / abs(notional)
        positions.append(VenuePosition(symbol, size, entry, mmr))
    maint, balance = _num(account.get("totalMaintMargin")), _num(account.get("totalMarginBalance"))
    native = maint / balance if maint > 0 and balance > 0 else None
    totals = VenueTotals(balance, maint, {"maintenance": maint, "pnl": _num(account.get("totalUnrealizedProfit"))})
    return VenueState(holdings, {}, tuple(positions), native, ts_ms, tiers or {}, totals=totals)
