"""How numbers are written for people: percentages with halves rounded up (as papers round them) and plain
numbers without scientific notation. Every table, chart, tooltip, log line and flag message of the package writes
its percentages with :func:`percent_text`, so one count never reads as two numbers in two places."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal


def percent_text(v: float, digits: int = 1) -> str:
    """A fraction as a percentage without the sign, halves rounded up as papers do: ``0.875`` → ``87.5``,
    ``27/48`` (56.25%) → ``56.3`` (Python's format would print ``56.2``: it rounds exact halves to even)."""
    if not math.isfinite(v):
        return f"{100.0 * v:.{digits}f}"
    exact = Decimal(f"{100.0 * v:.10f}")  # float noise first (14.499999999999998 is 14.5)
    return str(exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def number_text(v: float) -> str:
    """A plain number for a table: 4 significant digits below 1,000 (``0.1234``, ``12.35``), every integer digit
    above (a noise score ``100685``, never ``1.007e+05``)."""
    if math.isfinite(v) and abs(v) >= 1000:
        return f"{v:.0f}" if v == round(v) else f"{v:.1f}"
    return f"{v:.4g}"
