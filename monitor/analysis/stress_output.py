"""A stress test as a table: per account, health before and after the shock, the level it
lands in, liquidation, the uniform fall that liquidates it, and the plan the daemon would run."""

from __future__ import annotations

from monitor.analysis.stress import AccountStress, PlanOutcome
from monitor.execution.journaled import legs_text


def pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if x else "0.0%"


def _h(x: float) -> str:
    if x == float("inf"):
        return "inf"
    return f"{x:.4f}"


def uniform_text(a: AccountStress) -> str:
    if not a.collateral:
        return "no volatile collateral"
    across = "/".join(a.collateral)
    if a.uniform_shock is None:
        return f"never (all of {across} to zero leaves health above 1)"
    if a.uniform_shock == 0:
        return "already (health below 1 at the starting prices)"
    return f"{pct(a.uniform_shock)} across {across}"


def plan_text(p: PlanOutcome) -> str:
    legs = legs_text(list(p.orders), list(p.repays), list(p.transfers), digits=6)
    if not legs:
        return f"{p.level} ({p.strategy}): nothing to do: {p.note}"
    return f"{p.level} ({p.strategy}): {'; '.join(legs)}; cost {p.cost:,.2f}; health after {_h(p.health_after)}"


def stress_table(title: str, shocks: dict[str, float], results: list[AccountStress], note: str = "") -> str:
    moves = ", ".join(f"{a} {pct(m)}" for a, m in shocks.items()) or "no asset of this config moves"
    lines = [f"{title}: {moves}"] + ([f"  {note}"] if note else [])
    head = ["account", "model", "health", "shocked", "level", "liquidated", "liquidates at a uniform fall of"]
    body = [[a.name, a.model, _h(a.health_before), _h(a.health_after), a.level or "-",
             "YES" if a.liquidated else "no", uniform_text(a)] for a in results]
    widths = [max(len(r[j]) for r in [head, *body]) for j in range(len(head))]
    for r in [head, *body]:
        cells = [c.rjust(w) if j in (2, 3) else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    plans = [(a.name, a.plan) for a in results if a.plan is not None]
    if plans:
        lines.append("  plans the daemon would execute:")
        lines += [f"    {name}: {plan_text(p)}" for name, p in plans]
    return "\n".join(lines) + "\n"
