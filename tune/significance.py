"""Is one model better than another on the same test set, or is the difference test-set noise?

Two classifiers scored on the same n samples are compared sample by sample (Dietterich, "Approximate
statistical tests for comparing supervised classification learning algorithms", 1998, recommends
McNemar's test for one test set): only the discordant samples, those exactly one of the two gets
right, carry information. ``compare`` gives McNemar's exact two-sided p-value (a binomial test of
the discordant counts against 1/2) and a 95 % interval for the difference in accuracy from the
per-sample differences (normal approximation; n is thousands here).

Both measure the noise of drawing the test set only, not training noise: a model trained again
with another seed moves too, which the search's evaluation stage (``search.evaluate_seeds``) measures.

    labels = np.array([...]); a = model_a_predictions; b = model_b_predictions
    result = compare(labels, a, b)      # result.difference, result.ci95, result.p_value
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    """Model a against model b on the same samples."""

    n: int
    acc_a: float
    acc_b: float
    only_a: int  # samples a gets right and b wrong
    only_b: int  # samples b gets right and a wrong
    ci95: tuple[float, float]  # of acc_a - acc_b
    p_value: float  # McNemar, exact, two-sided

    @property
    def difference(self) -> float:
        return self.acc_a - self.acc_b

    def to_dict(self) -> dict[str, float | int | list[float]]:
        return {"n": self.n, "acc_a": self.acc_a, "acc_b": self.acc_b, "difference": self.difference,
                "only_a": self.only_a, "only_b": self.only_b, "ci95": list(self.ci95), "p_value": self.p_value}


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: P(a split at least this uneven) for ``only_a + only_b``
    discordant samples, each equally likely to favour either model. Exact integer arithmetic."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0 or 2 * k == n:
        return 1.0
    term, tail = 1, 1  # C(n, 0), then C(n, i) for i <= k
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def compare(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray) -> PairedComparison:
    """Model a against model b from their predicted classes for the same ``labels`` ([n] each)."""
    labels, pred_a, pred_b = np.asarray(labels), np.asarray(predictions_a), np.asarray(predictions_b)
    if not (labels.shape == pred_a.shape == pred_b.shape) or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels and both predictions must be 1-d and of one length, got shapes "
                         f"{labels.shape}, {pred_a.shape} and {pred_b.shape}")
    right_a, right_b = pred_a == labels, pred_b == labels
    n = len(labels)
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    # per-sample differences d_i in {-1, 0, 1}: mean (only_a - only_b) / n, sample variance below
    mean = (only_a - only_b) / n
    var = ((only_a + only_b) / n - mean**2) * n / max(n - 1, 1)
    half = 1.959964 * math.sqrt(var / n)
    return PairedComparison(n=n, acc_a=float(right_a.mean()), acc_b=float(right_b.mean()), only_a=only_a,
                            only_b=only_b, ci95=(mean - half, mean + half), p_value=mcnemar_exact_p(only_a, only_b))
