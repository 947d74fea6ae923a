r"""Confidence intervals for reporting evaluation results.

* :func:`wilson_interval` — for a success rate :math:`\hat p = s/n`,
  :math:`\frac{\hat p + z^2/2n \pm z\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n}`;
  unlike the normal interval it stays inside [0, 1] and is sensible at 0 % or 100 %.
* :func:`mean_ci` — Student-t interval :math:`\bar x \pm t_{n-1} s/\sqrt n`.

Example:
    >>> lo, hi = wilson_interval(9, 10)
    >>> round(lo, 3), round(hi, 3)
    (0.596, 0.982)
    >>> mean_ci([1.0, 2.0, 3.0])[0]
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["mean_ci", "wilson_interval"]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` trials."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes={successes} <= n={n} and n >= 1")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if successes == 0 else max(0.0, mid - half)
    hi = 1.0 if successes == n else min(1.0, mid + half)
    return lo, hi


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Returns ``(mean, low, high)``; the interval is a point when ``n < 2``."""
    n = len(values)
    if n < 1:
        raise ValueError("mean_ci needs at least one value")
    mean = float(sum(values) / n)
    if n < 2:
        return mean, mean, mean
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half

