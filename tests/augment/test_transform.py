"""The per-sample transform the data reader calls: shapes, dtypes, views, pickling, seeds."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from augtrain.augment import PolicyError, list_policies, make_sample_transform, normalize_batch


def _image(h: int = 90, w: int = 120, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.mark.parametrize("policy", list_policies() + ["rand-n2-m9", "mae+rand-n2-m9"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_standard_policy_outputs_uint8_views_of_the_size(policy: str, channels: int) -> None:
    t = pickle.loads(pickle.dumps(make_sample_transform(policy, size=48, views=2)))
    rng = np.random.default_rng(0)
    for seed in range(8):
        out = t(_image(c=channels, seed=seed), rng)
        assert sorted(out) == ["view0", "view1"]
        for view in out.values():
            assert view.dtype == np.uint8 and view.shape == (48, 48, channels)
            assert view.flags.c_contiguous


def test_mae_single_view_and_none_without_size() -> None:
    image = _image()
    out = make_sample_transform("mae", size=32)(image, np.random.default_rng(0))
    assert list(out) == ["image"] and out["image"].shape == (32, 32, 3)
    same = make_sample_transform("none", size=None)(image, np.random.default_rng(0))["image"]
    np.testing.assert_array_equal(same, image)
    grey2d = make_sample_transform("none", size=16)(image[:, :, 0], np.random.default_rng(0))["image"]
    assert grey2d.shape == (16, 16, 1)


def test_crop_policy_without_size_is_an_error() -> None:
    with pytest.raises(PolicyError, match="needs an output size"):
        make_sample_transform("mae", size=None)


@pytest.mark.parametrize("backend", ["numpy", "albumentations"])
def test_fixed_seed_reproduces_and_different_seeds_differ(backend: str) -> None:
    t = make_sample_transform("rand-n2-m9", size=40, views=2, backend=backend)
    image = _image()
    a = [t(image, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(a[0]["view0"], a[1]["view0"])
    np.testing.assert_array_equal(a[0]["view1"], a[1]["view1"])
    others = [t(image, np.random.default_rng(s))["view0"] for s in range(8, 16)]
    assert any(not np.array_equal(o, a[0]["view0"]) for o in others)


def test_unknown_backend_and_bad_input_raise() -> None:
    with pytest.raises(PolicyError, match="backend"):
        make_sample_transform("mae", size=8, backend="tpu")
    t = make_sample_transform("mae", size=8)
    with pytest.raises(ValueError, match="uint8"):
        t(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0))


def test_normalize_batch_layout_and_values() -> None:
    import torch

    batch = torch.from_numpy(np.stack([_image(4, 5, 3, s) for s in range(2)]))
    out = normalize_batch(batch, (0.5, 0.25, 0.0), (0.5, 0.5, 1.0))
    assert out.shape == (2, 3, 4, 5) and out.dtype == torch.float32
    expected = (batch[1, 2, 3, 1].item() / 255.0 - 0.25) / 0.5
    assert out[1, 1, 2, 3].item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="std"):
        normalize_batch(batch, (0.5,), (0.0,))
    with pytest.raises(ValueError, match="mean"):
        normalize_batch(batch, (0.5, 0.5), (1.0,))


@pytest.mark.timeout(120)
def test_dali_sample_backend_follows_the_same_draws() -> None:
    pytest.importorskip("nvidia.dali")
    image = _image(64, 72, 3)
    albu = make_sample_transform("simclr", size=32, views=2, backend="albumentations")
    dali = pickle.loads(pickle.dumps(make_sample_transform("simclr", size=32, views=2, backend="dali")))
    for seed in range(3):
        a, d = albu(image, np.random.default_rng(seed)), dali(image, np.random.default_rng(seed))
        for key in ("view0", "view1"):
            diff = np.abs(a[key].astype(np.int16) - d[key])
            assert d[key].shape == (32, 32, 3) and diff.mean() < 0.6 and (diff > 2).mean() < 0.08


def test_augment_rng_streams_per_epoch_rank_worker() -> None:
    from augtrain.augment import augment_rng

    draw = lambda *key: augment_rng(*key).integers(0, 2**31, 4).tolist()  # noqa: E731
    assert draw(7, 1, 0, 0) == draw(7, 1, 0, 0)
    keys = [(7, 1, 0, 0), (7, 2, 0, 0), (7, 1, 1, 0), (7, 1, 0, 1), (8, 1, 0, 0)]
    assert len({tuple(draw(*k)) for k in keys}) == len(keys)
    with pytest.raises(ValueError, match="epoch"):
        augment_rng(7, -1)


def test_normalize_batch_takes_read_only_numpy_without_touching_it() -> None:
    import warnings

    batch = np.stack([_image(4, 5, 1, s) for s in range(3)])
    batch.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_batch(batch, (0.5,), (0.25,))
    assert out.shape == (3, 1, 4, 5)
    assert out[2, 0, 1, 2].item() == pytest.approx((batch[2, 1, 2, 0] / 255.0 - 0.5) / 0.25, abs=1e-6)


def test_explicit_backend_that_cannot_run_is_an_error(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if DALI were not installed
    with pytest.raises(RuntimeError, match="backend 'dali' cannot run"):
        make_sample_transform("mae", size=8, backend="dali")
