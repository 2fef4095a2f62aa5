"""Intervals that come with every accuracy: Wilson score interval for a proportion."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return (lower, upper)


def ratio_interval(numerators: list[float], denominators: list[float], z: float = 1.959963984540054
                   ) -> tuple[float, float]:
    """95% interval of sum(num)/sum(den) over independent examples (delta method), e.g. loss per token.

    The examples (held-out blocks) are the sampling unit, so the interval says how much the number would
    move on another held-out sample of the same size.
    """
    n = len(numerators)
    total_den = sum(denominators)
    if n < 2 or total_den == 0:
        ratio = sum(numerators) / total_den if total_den else float("nan")
        return (ratio, ratio)
    ratio = sum(numerators) / total_den
    mean_den = total_den / n
    residual_var = sum((a - ratio * b) ** 2 for a, b in zip(numerators, denominators, strict=True)) / (n - 1)
    half = z * math.sqrt(residual_var / n) / mean_den
    return (ratio - half, ratio + half)
