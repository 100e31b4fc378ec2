"""Intervals (dual_actor.eval.stats) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dual_actor.eval.stats import bootstrap_interval, paired_difference, sign_test_p, wilson_interval


def test_wilson_interval_by_hand():
    # 20 of 25, z = 1.959964: centre (0.8 + z^2/50) / (1 + z^2/25), half z sqrt(0.16/25 + z^2/2500) / (1 + z^2/25)
    z2 = 1.959963984540054 ** 2
    denom = 1 + z2 / 25
    centre, half = (0.8 + z2 / 50) / denom, math.sqrt(z2) * math.sqrt(0.16 / 25 + z2 / 2500) / denom
    lo, hi = wilson_interval(20, 25)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (round(lo, 3), round(hi, 3)) == (0.609, 0.911)  # the textbook value for 20/25
    assert wilson_interval(0, 25) == pytest.approx((0.0, z2 / 25 / denom), abs=1e-12)  # never empty at 0 ...
    assert wilson_interval(25, 25) == pytest.approx((1 - z2 / 25 / denom, 1.0), abs=1e-12)  # ... or at n
    for bad in ((3, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="wilson_interval"):
            wilson_interval(*bad)


def test_bootstrap_interval_bounds_and_determinism():
    assert bootstrap_interval([0.8, 0.8, 0.8]) == pytest.approx((0.8, 0.8))  # no spread, no interval
    lo, hi = bootstrap_interval([0.6, 0.8, 1.0])
    assert 0.6 <= lo < 0.8 < hi <= 1.0 and (lo, hi) == bootstrap_interval([0.6, 0.8, 1.0])  # fixed generator
    # with two values the resampled means are 0.6 (1/4), 0.7 (1/2), 0.8 (1/4): the 95% interval is [0.6, 0.8]
    assert bootstrap_interval([0.6, 0.8], resamples=20_000) == pytest.approx((0.6, 0.8))
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval([0.5, float("nan")])


def test_paired_difference_and_sign_test():
    assert sign_test_p(5, 0) == pytest.approx(2 / 32)  # two-sided: both all-win and all-lose
    assert sign_test_p(3, 2) == 1.0 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(9, 1) == pytest.approx(2 * (1 + 10) / 1024)
    r = paired_difference([0.9, 0.8, 0.7, 0.6], [0.8, 0.8, 0.5, 0.7])
    assert r["mean"] == pytest.approx(np.mean([0.1, 0.0, 0.2, -0.1]))
    assert (r["wins"], r["ties"], r["losses"]) == (2, 1, 1) and r["sign_p"] == 1.0
    assert r["interval"][0] <= r["mean"] <= r["interval"][1]
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([0.1, 0.2], [0.1])
