"""Statistics over seeds: a 95 % confidence interval for a mean, and the
paired test that says whether re-activation beats its gUAA control.

Why Student's t and not a bootstrap: a grid has a handful of seeds (1 to 5).
A percentile bootstrap over three values has ten distinct resamples and its
interval never reaches beyond the observed range, so it covers the true mean
far less often than it claims; the t interval is the one that is correct at
this n when seed-to-seed variation is roughly normal (it is an average over
thousands of test images). Both come from SciPy (`scipy.stats`), not from
hand-written formulas.

- `mean_interval(values)`: mean and the two-sided 95 % t interval,
  mean ± t(0.975, n-1) · s / √n. One value has a mean and no interval (None
  bounds: the tables print "1 seed, no interval"); identical values have a
  zero-width interval.
- `paired_greater(a, b)`: one-sided paired t-test over seeds, H1: mean(a - b)
  > 0 (scipy.stats.ttest_rel, alternative="greater"), with the 95 % interval
  of the mean difference. Used as a = re-activation ASR, b = gUAA ASR of the
  same defended model and seed. Fewer than two seeds: no test (p None).
  Identical differences (zero spread) make t infinite: p is 0 when they are
  positive and 1 otherwise, which is the limit of the test, stated here
  rather than left to a division by zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.95
#: significance level of the paired test (one-sided)
ALPHA = 0.05
#: differences closer than this (relative) are identical, not a tiny spread
SPREAD_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None
    high: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2.0


@dataclass(frozen=True)
class PairedTest:
    difference: Interval  # of a - b over the paired seeds
    p_value: float | None  # one-sided, H1: mean(a - b) > 0; None below two pairs
    significant: bool | None  # p < ALPHA; None without a test


def _finite(values) -> list[float]:
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out.append(v)
    return out


def mean_interval(values, level: float = LEVEL) -> Interval | None:
    """Mean and two-sided Student-t interval of the finite `values`; None
    without any, no bounds with one."""
    from scipy import stats

    vals = _finite(values)
    if not vals:
        return None
    n = len(vals)
    mean = math.fsum(vals) / n
    if n == 1:
        return Interval(mean, None, None, 1)
    sem = stats.sem(vals)  # s / sqrt(n), ddof=1
    if sem == 0.0:
        return Interval(mean, mean, mean, n)
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), n)


def paired_greater(a, b, alpha: float = ALPHA, level: float = LEVEL) -> PairedTest | None:
    """One-sided paired t-test that mean(a - b) > 0 over the pairs where both
    values are finite (a and b are aligned by position: one entry per seed)."""
    from scipy import stats

    pairs = [(x, y) for x, y in zip(a, b) if _finite([x]) and _finite([y])]
    if not pairs:
        return None
    xs, ys = [float(x) for x, _ in pairs], [float(y) for _, y in pairs]
    differences = [x - y for x, y in zip(xs, ys)]
    difference = mean_interval(differences, level)
    if len(pairs) < 2:
        return PairedTest(difference, None, None)
    # Zero spread (up to rounding: 0.6 - 0.1 and 0.7 - 0.2 differ in the last
    # bit): t is +-inf or undefined, and SciPy would divide by rounding noise.
    if max(differences) - min(differences) <= SPREAD_TOLERANCE * max(1.0, abs(difference.mean)):
        p = 0.0 if difference.mean > 0 else 1.0
    else:
        p = float(stats.ttest_rel(xs, ys, alternative="greater").pvalue)
    return PairedTest(difference, p, p < alpha)


TEST_NAME = ("one-sided paired t-test over seeds (H1: re-activation ASR > gUAA ASR on the same model and seed), "
             f"alpha {ALPHA}")
INTERVAL_NAME = f"{int(LEVEL * 100)} % Student-t confidence interval of the mean over seeds"
