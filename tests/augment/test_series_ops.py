"""The series ops: each keeps shape and dtype, is the identity at magnitude 0, reproduces its
output for a seed, and does what its table says; every registered op has a case here."""

from __future__ import annotations

import numpy as np
import pytest

from augtrain.augment import parse_policy
from augtrain.augment.registry import list_policies, ops
from augtrain.augment.series.policies import ALL_OPS, REFERENCE_OPS
from augtrain.pipelines.modalities import get_modality

T, C = 128, 2


def _series(seed: int = 0) -> np.ndarray:
    t = np.linspace(0.0, 6.0 * np.pi, T)
    rng = np.random.default_rng(seed)
    return np.stack([np.sin(t) + 0.1 * rng.normal(size=T), 3.0 + 2.0 * np.cos(0.5 * t)], axis=1).astype(np.float32)


def _apply(name: str, x: np.ndarray, magnitude: float, seed: int = 0) -> np.ndarray:
    op = ops("series")[name]
    params = op.sample(np.random.default_rng(seed), magnitude, dict(op.default_args), len(x), x.shape[1], None)
    assert set(params) == set(op.param_names)
    return op.apply(x, params)


def _cut_points_kept(x, y):  # permutation: the same values, in another order
    return np.allclose(np.sort(x, axis=0), np.sort(y, axis=0))


# op -> a property of its output at magnitude 5 beyond shape, dtype, identity at 0 and seeds
OP_CASES = {
    "jitter": lambda x, y: 0.005 < np.std(y - x) / np.std(x, axis=0).mean() < 0.06,
    "scaling": lambda x, y: np.allclose((y / x).std(axis=0), 0.0, atol=1e-5),  # one factor per channel
    "magnitude_warp": lambda x, y: not np.allclose(x, y) and np.all(np.sign(y) == np.sign(x)),
    "time_warp": lambda x, y: np.allclose(y[[0, -1]], x[[0, -1]], atol=1e-5),  # the ends stay
    "window_slice": lambda x, y: not np.allclose(x, y) and y.min() >= x.min() - 1e-5 and y.max() <= x.max() + 1e-5,
    "window_warp": lambda x, y: np.allclose(y[0], x[0]) and not np.allclose(x, y),
    "permutation": _cut_points_kept,
    "freq_mask": lambda x, y: np.allclose(y.mean(axis=0), x.mean(axis=0), atol=1e-5),  # the mean is never masked
    "freq_perturb": lambda x, y: np.allclose(y.mean(axis=0), x.mean(axis=0), atol=1e-5) and not np.allclose(x, y),
}


def test_every_series_op_has_a_case():
    assert set(OP_CASES) == set(ops("series")) == set(ALL_OPS)


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_an_op_keeps_shape_and_dtype_is_seeded_and_identity_at_zero(name):
    x = _series()
    assert np.array_equal(_apply(name, x, 0.0), x)  # magnitude 0: the identity (a mask of 0 included)
    y = _apply(name, x, 5.0, seed=3)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.array_equal(_apply(name, x, 5.0, seed=3), y)  # the same draw, the same series
    assert not np.array_equal(_apply(name, x, 5.0, seed=4), y)  # another draw, another series
    assert OP_CASES[name](x, y), name
    for length in (1, 2, 5):  # short series neither fail nor change shape
        short = x[:length]
        assert _apply(name, short, 10.0).shape == short.shape


def test_magnitude_sets_the_documented_parameters():
    rng = np.random.default_rng(0)
    table = ops("series")
    drawn = {name: table[name].sample(rng, 5.0, {}, T, C, None) for name in table}
    assert drawn["jitter"]["sigma"] == pytest.approx(0.03) and drawn["scaling"]["sigma"] == pytest.approx(0.1)
    assert drawn["magnitude_warp"]["sigma"] == pytest.approx(0.2) and drawn["time_warp"]["sigma"] == pytest.approx(0.2)
    assert drawn["window_slice"]["cut"] == pytest.approx(0.1) and drawn["window_warp"]["ratio"] == pytest.approx(0.1)
    assert drawn["permutation"]["segments"] == 5 and drawn["freq_mask"]["fraction"] == pytest.approx(0.1)
    assert table["jitter"].sample(rng, 10.0, {}, T, C, None)["sigma"] == pytest.approx(0.06)


def test_a_full_frequency_mask_leaves_the_mean():
    x = _series()
    y = ops("series")["freq_mask"].apply(x, {"fraction": 1.0, "seed": 0.0})
    assert np.allclose(y, x.mean(axis=0, keepdims=True), atol=1e-5)


def test_the_standard_series_policies():
    assert {"none", "series-basic", "series-trivialaugment"} <= set(list_policies("series"))
    basic = parse_policy("series-basic", "series")
    assert (basic.copies, {op.name for (op,) in basic.choices}) == (1, set(REFERENCE_OPS))
    assert all(op.magnitude == 5.0 for (op,) in basic.choices)
    grid = parse_policy("series-m2-c4", "series")
    assert (grid.copies, grid.choices[0][0].magnitude, grid.to_string()) == (4, 2.0, "series:series-m2-c4")
    ta = parse_policy("series-trivialaugment", "series")
    assert {op.name for (op,) in ta.choices} == set(ALL_OPS)
    custom = parse_policy("modality=series|choices=jitter:5,freq_mask:3|n=1", "series")
    assert parse_policy(custom.to_string()) == custom


def test_the_modality_transform_applies_a_policy_to_series():
    modality = get_modality("series")
    transform = modality.sample_transform("series-trivialaugment", size=None, views=2)
    x = _series()
    out = transform(x, np.random.default_rng(0))
    assert set(out) == {"view0", "view1"} and all(v.shape == x.shape and v.dtype == np.float32 for v in out.values())
    batch = modality.to_tensor([x, x[:100]], (0.0,), (1.0,))  # unequal lengths: resampled to the longest
    assert tuple(batch.shape) == (2, C, T)
