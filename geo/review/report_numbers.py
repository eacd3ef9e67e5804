"""How reports print areas: one rounding, applied once to the exact sum, in every report.

``idou summary`` (district CSV and HTML) and ``idou batch``'s ``summary.html`` both sum the
exact polygon areas and round the sum here, so the same changes give the same figure in both
and a total row is never the sum of rounded parts (no ``1330.6999999999998``).
"""

from __future__ import annotations

AREA_DECIMALS = 1


def round_area(m2: float) -> float:
    """An area in m² rounded for a report (0.1 m²)."""
    return round(float(m2), AREA_DECIMALS)


def format_area(m2: float) -> str:
    """An area in m² as a report prints it: ``1,479.6``."""
    return f"{round_area(m2):,.{AREA_DECIMALS}f}"


__all__ = ["AREA_DECIMALS", "format_area", "round_area"]
