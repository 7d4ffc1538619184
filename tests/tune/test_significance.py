"""Paired comparison of two models on one test set: McNemar's exact p-value and the interval of
the accuracy difference, checked against hand-computed values and scipy's binomial test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from augtrain.tune.significance import compare, mcnemar_exact_p


def test_mcnemar_exact_p_by_hand():
    # 10 against 2 discordant samples: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12
    assert mcnemar_exact_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_exact_p(2, 10) == mcnemar_exact_p(10, 2)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(0, 1) == 1.0  # one discordant sample says nothing
    assert mcnemar_exact_p(0, 20) == pytest.approx(2 / 2**20)
    with pytest.raises(ValueError, match="discordant counts"):
        mcnemar_exact_p(-1, 3)


@pytest.mark.parametrize("only_a,only_b", [(0, 7), (3, 9), (40, 61), (700, 760), (2400, 2550)])
def test_mcnemar_exact_p_agrees_with_scipys_binomial_test(only_a, only_b):
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact_p(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_compare_counts_discordant_samples_and_brackets_the_difference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 10_000)
    right_a = rng.random(10_000) < 0.80
    right_b = np.where(rng.random(10_000) < 0.9, right_a, rng.random(10_000) < 0.78)  # mostly the same mistakes
    wrong = (labels + 1) % 10
    result = compare(labels, np.where(right_a, labels, wrong), np.where(right_b, labels, wrong))
    assert result.n == 10_000
    assert result.acc_a == pytest.approx(right_a.mean()) and result.acc_b == pytest.approx(right_b.mean())
    assert result.only_a == int(np.sum(right_a & ~right_b)) and result.only_b == int(np.sum(right_b & ~right_a))
    assert result.difference == pytest.approx((result.only_a - result.only_b) / 10_000)
    low, high = result.ci95
    assert low < result.difference < high
    # the interval's half-width is 1.96 standard errors of the mean per-sample difference
    d = right_a.astype(float) - right_b.astype(float)
    assert (high - low) / 2 == pytest.approx(1.959964 * d.std(ddof=1) / math.sqrt(len(d)))
    assert result.p_value == mcnemar_exact_p(result.only_a, result.only_b)
    swapped = compare(labels, np.where(right_b, labels, wrong), np.where(right_a, labels, wrong))
    assert swapped.difference == pytest.approx(-result.difference) and swapped.p_value == result.p_value


def test_identical_models_are_indistinguishable_and_bad_shapes_are_named():
    labels = np.arange(100) % 10
    result = compare(labels, labels, labels)
    assert result.difference == 0 and result.ci95 == (0.0, 0.0) and result.p_value == 1.0
    with pytest.raises(ValueError, match="one length"):
        compare(labels, labels[:50], labels)
