"""The issue's targets, each printed beside the ratio ``make bench`` measured for it, with
whether it holds. Every ratio comes from the one run that prints it."""

from __future__ import annotations

HEADER = ["| ratio | measured | target | holds |", "|---|---|---|---|"]


def _show(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:+.3f} ms"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:.2f}x"


def row(
    name: str,
    value: float | None,
    limit: float,
    *,
    unit: str = "x",
    at_most: bool = True,
    skipped: str = "",
) -> str:
    """One line: ``value`` against ``limit`` (``at_most``: the value must not exceed it)."""
    sign = "<=" if at_most else ">="
    if value is None:
        return f"| {name} | - | {sign} {_show(limit, unit)} | {skipped or 'not measured'} |"
    holds = "yes" if (value <= limit if at_most else value >= limit) else "NO"
    return f"| {name} | {_show(value, unit)} | {sign} {_show(limit, unit)} | {holds} |"
