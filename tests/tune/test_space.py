"""The joint space of policy and fine-tune hyperparameters, and the rungs of successive halving (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from augtrain.augment import Policy, parse_policy
from augtrain.tune.config import HalvingSection, parse_search_config
from augtrain.tune.methods import rung_epochs
from augtrain.tune.space import OP_GROUPS, POLICY_KEYS, JointSpace, describe


def test_points_are_seeded_plain_values_within_the_ranges():
    space = JointSpace()
    a = [space.sample(np.random.default_rng([0, 0])) for _ in range(1)][0]
    assert a == space.sample(np.random.default_rng([0, 0]))  # the seed alone decides a point
    points = [space.sample(np.random.default_rng(i)) for i in range(200)]
    for p in points:
        assert all(type(v) in (int, float, str) for v in p.values())  # JSON and Tune configs hold them as they are
        assert space.lr[0] <= p["lr"] <= space.lr[1] and space.m[0] <= p["aug_m"] <= space.m[1]
        assert p["aug_crop"] in space.crop and p["aug_ops"] in space.ops and p["aug_n"] in space.n
    assert {p["aug_n"] for p in points} == set(space.n) and {p["aug_ops"] for p in points} == set(space.ops)
    assert len({round(np.log10(p["lr"])) for p in points}) >= 2  # log-uniform: spread over decades


def test_a_point_decodes_to_its_policy_and_hyperparameters():
    point = {"lr": 2e-3, "weight_decay": 1e-4, "label_smoothing": 0.1, "aug_crop": 0.7, "aug_hflip": 0.5,
             "aug_ops": "geometric", "aug_n": 2, "aug_m": 6, "aug_cutout": 0.5}
    policy, hparams = JointSpace.decode(point)
    assert hparams == {"lr": 2e-3, "weight_decay": 1e-4, "label_smoothing": 0.1}
    assert [op.name for op in policy.pre] == ["random_resized_crop", "hflip", "cutout"]
    assert policy.pre[0].args["scale"] == (0.7, 1.0) and policy.pre[1].p == 0.5 and policy.pre[2].p == 0.5
    assert [e[0].name for e in policy.choices] == list(OP_GROUPS["geometric"])
    assert {e[0].magnitude for e in policy.choices} == {6.0} and policy.num_ops == (0.0, 0.0, 1.0)
    assert Policy.from_json(policy.to_json()) == policy and parse_policy(policy.to_string()).choices == policy.choices
    assert "n=2" in describe(point) and "lr=0.002" in describe(point)


def test_the_randaugment_grid_is_a_slice_of_the_space():
    point = {"aug_crop": 0.0, "aug_hflip": 0.0, "aug_ops": "all", "aug_n": 2, "aug_m": 4, "aug_cutout": 0.0}
    policy = JointSpace.policy(point)
    grid = parse_policy("rand-n2-m4")
    assert policy.pre == () and policy.choices == grid.choices and policy.num_ops == grid.num_ops
    none = JointSpace.policy({**point, "aug_n": 0})
    assert none.pre == () and none.choices == () and none.max_num_ops == 0  # no augmentation at all


def test_bad_ranges_and_points_are_named():
    with pytest.raises(ValueError, match="search.space.ops"):
        JointSpace(ops=("all", "warps"))
    with pytest.raises(ValueError, match="search.space.lr"):
        JointSpace(lr=(0.0, 1e-2))
    with pytest.raises(ValueError, match=r"exp.yaml: search.space"):
        parse_search_config({"space": {"m": [0, 12]}}, "exp.yaml")
    with pytest.raises(ValueError, match="missing"):
        JointSpace.policy({"aug_n": 1})
    assert set(POLICY_KEYS) <= set(JointSpace().sample(np.random.default_rng(0)))


def test_halving_rungs_end_at_the_full_length():
    assert HalvingSection().rungs() == [(16, 0.125), (4, 0.5), (1, 1.0)]  # 2 + 2 + 1 = 5 full-length runs
    assert HalvingSection(candidates=27, eta=3, min_fraction=1 / 9).rungs() == [(27, 1 / 9), (9, 1 / 3), (3, 1.0)]
    assert HalvingSection(candidates=4, eta=4, min_fraction=0.1).rungs() == [(4, 0.1), (1, 0.4), (1, 1.0)]
    assert HalvingSection(candidates=5, min_fraction=1.0).rungs() == [(5, 1.0)]
    assert parse_search_config({}).method == "halving"


def test_rungs_round_down_so_a_bracket_stays_within_its_budget():
    # 9 -> 3 -> 1 at 1/9, 1/3 and the full 50 epochs: 5, 16 and 50 epochs (143 trial-epochs, not 155)
    rungs = HalvingSection(candidates=9, eta=3, min_fraction=1 / 9).rungs()
    epochs = [rung_epochs(50, fraction) for _, fraction in rungs]
    assert epochs == [5, 16, 50] and sum(n * e for (n, _), e in zip(rungs, epochs)) == 143
    assert rung_epochs(50, 0.0111111) == 1 and rung_epochs(3, 1.0) == 3 and rung_epochs(10, 0.3) == 3


def test_the_mix_of_generated_samples_is_searched_only_when_asked():
    from augtrain.pipelines.finetune import FinetuneConfig

    plain = JointSpace()
    mixed = JointSpace(synthetic_fraction=(0.0, 0.25, 0.5), synthetic_min_confidence=(0.0, 0.9))
    assert not plain.searches_synthetic and mixed.searches_synthetic
    a, b = plain.sample(np.random.default_rng(3)), mixed.sample(np.random.default_rng(3))
    assert "synthetic_fraction" not in a  # a space without them draws the same points as before
    assert {k: v for k, v in b.items() if not k.startswith("synthetic_")} == a
    points = [mixed.sample(np.random.default_rng(s)) for s in range(40)]
    assert {p["synthetic_fraction"] for p in points} == {0.0, 0.25, 0.5}
    assert {p["synthetic_min_confidence"] for p in points} == {0.0, 0.9}
    _, hparams = JointSpace.decode(points[0])  # fine-tune overrides a trial applies
    cfg = FinetuneConfig(synthetic="gen").with_updates(**hparams)
    assert cfg.synthetic_fraction == points[0]["synthetic_fraction"]
    assert set(mixed.tune_domains()) >= {"synthetic_fraction", "synthetic_min_confidence"}
    with pytest.raises(ValueError, match="synthetic_fraction"):
        JointSpace(synthetic_fraction=(1.0,))
