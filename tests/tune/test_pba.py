"""PBA's encoding, explore and schedule extraction: pure functions, no Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augtrain.augment import Policy, PolicyError, Schedule, make_sample_transform
from augtrain.tune.pba import (
    PBA_OPS,
    PBAExplorer,
    PBASpace,
    config_changes,
    explore,
    read_policy_log,
    schedule_from_changes,
    schedule_table,
)


def test_encoding_length_decode_and_round_trip():
    space = PBASpace()
    assert space.length == 60  # PBA's hp_policy: 15 ops x (p, m) x 2 copies
    values = space.random(np.random.default_rng(0))
    policy = space.decode(values)
    assert len(policy.choices) == 30 and policy.num_ops == (0.2, 0.3, 0.5) and not policy.replace
    rotate, translate = policy.choices[0][0], policy.choices[1][0]
    assert (rotate.name, translate.name) == ("rotate", "translate_x")
    assert rotate.p == values[0] / 10 and rotate.magnitude == pytest.approx(values[1] * 10 / 9, abs=1e-4)
    assert policy.choices[15][0].name == "rotate"  # the second copy
    assert space.encode(policy) == values
    assert Policy.from_json(policy.to_json()) == policy
    out = make_sample_transform(policy, size=None)(np.full((8, 8, 1), 100, np.uint8), np.random.default_rng(0))
    assert out["image"].shape == (8, 8, 1)


def test_decode_rejects_out_of_range_and_wrong_length():
    space = PBASpace(ops=("rotate", "cutout"), copies=1)
    with pytest.raises(PolicyError, match="expected 4 integers"):
        space.decode([0, 0])
    with pytest.raises(PolicyError, match="magnitude outside 0-9"):
        space.decode([10, 10, 0, 0])
    with pytest.raises(PolicyError, match="unknown op"):
        PBASpace(ops=("rotate", "warp"))


def test_explore_stays_in_range_and_follows_pba_rules():
    rng = np.random.default_rng(0)
    values = PBASpace().random(rng)
    upper = PBASpace().upper()
    for _ in range(200):
        new = explore(values, rng)
        assert all(0 <= v <= u for v, u in zip(new, upper))
    shifted = np.array([explore(values, rng, resample_probability=0.0) for _ in range(300)])
    steps = np.abs(shifted - np.array(values))
    assert steps.max() <= 3 and set(np.unique(steps)) == {0, 1, 2, 3}  # shifts of 0-3, clipped
    resampled = np.array([explore([0] * 60, rng, resample_probability=1.0) for _ in range(300)])
    assert resampled[:, 0].max() == 10 and resampled[:, 1].max() == 9  # uniform over the whole range
    a, b = PBAExplorer(seed=5), PBAExplorer(seed=5)
    assert a({"pba": values})["pba"] == b({"pba": values})["pba"] and a.calls == 1


def _policy_file_rows(space: PBASpace) -> tuple[list[list], list[list[int]]]:
    """Trial 1's policy file: Tune copies the donor's file (trial 2, which cloned trial 0 at
    iteration 3) and appends trial 1's own exploit of trial 2 at iteration 5. A row of an
    unrelated chain comes first (the file of a trial that cloned twice keeps older rows)."""
    rng = np.random.default_rng(1)
    c0, c1, c2, c3, c4 = (space.random(rng) for _ in range(5))
    rows = [
        ["3_seed=3", "0_seed=0", 2, 2, {"seed": 0, "pba": c4}, {"seed": 0, "pba": c4}],
        ["2_seed=2", "0_seed=0", 3, 3, {"seed": 0, "pba": c0}, {"seed": 0, "pba": c1}],
        ["1_seed=1", "2_seed=2", 6, 5, {"seed": 0, "pba": c2}, {"seed": 0, "pba": c3}],
    ]
    return rows, [c0, c1, c3]


def test_schedule_from_a_policy_log_agrees_with_tune_replay(tmp_path):
    from ray.tune.schedulers import PopulationBasedTrainingReplay

    space = PBASpace(copies=1)
    rows, (start, first, second) = _policy_file_rows(space)
    log = tmp_path / "pbt_policy_trial1.txt"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    initial, changes = config_changes(read_policy_log(log))
    replay = PopulationBasedTrainingReplay(str(log))
    assert initial == replay.config  # the same starting config as Tune's own replay
    assert changes == [tuple(c) for c in replay._policy]
    assert [step for step, _ in changes] == [3, 5]  # the unrelated chain is not followed
    schedule = schedule_from_changes(initial, changes, space, epochs_per_iteration=2)
    assert [s for s, _ in schedule.entries] == [0, 6, 10]
    assert [space.encode(schedule.policy_at(e)) for e in (0, 5, 6, 9, 10, 99)] == [start, start, first, first,
                                                                                    second, second]
    assert Schedule.from_json(schedule.to_json()) == schedule
    stretched = schedule_from_changes(initial, changes, space, epochs_per_iteration=2, stretch=2.0)
    assert [s for s, _ in stretched.entries] == [0, 12, 20]


def test_schedule_without_exploits_is_the_initial_config_and_table_shapes():
    space = PBASpace(ops=("rotate", "solarize"), copies=2)
    initial, changes = config_changes([], initial={"pba": [10, 9, 0, 0, 5, 0, 0, 0]})
    schedule = schedule_from_changes(initial, changes, space)
    assert len(schedule.entries) == 1
    table = schedule_table(schedule, epochs=4)
    assert table["epochs"].tolist() == [0, 1, 2, 3]
    assert table["rotate.p"].tolist() == [1.5] * 4  # copies summed: 1.0 + 0.5
    assert table["rotate.m"][0] == pytest.approx(10.0 * 1.0 / 1.5)  # p-weighted: (1 * 10 + 0.5 * 0) / 1.5
    assert table["solarize.p"].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="no exploit rows"):
        config_changes([])


def test_default_ops_are_pbas_fifteen():
    assert len(PBA_OPS) == 15 and len(set(PBA_OPS)) == 15


def test_random_start_is_seeded_per_member_and_in_range():
    from types import SimpleNamespace

    from augtrain.tune.pbt import RandomStart

    space = PBASpace()
    start = RandomStart(space, seed=0)
    member = SimpleNamespace(config={"seed": 1})
    first = start(member)
    assert first == RandomStart(space, seed=0)(member)  # the same seeds give the same start
    assert first != start(SimpleNamespace(config={"seed": 2})) != RandomStart(space, seed=1)(member)
    space.check(first)
    assert space.decode(first).choices != space.decode(space.zeros()).choices


def test_count_distribution_is_configurable():
    space = PBASpace(ops=("rotate", "solarize"), copies=2, num_ops=(0.0, 0.2, 0.3, 0.5))
    policy = space.decode([10, 2] * 4)
    assert policy.num_ops == (0.0, 0.2, 0.3, 0.5) and policy.until_applied
    assert space.encode(policy) == [10, 2] * 4
    with pytest.raises(ValueError, match="search.pbt.num_ops"):
        PBASpace(ops=("rotate",), copies=2, num_ops=(0.0, 0.0, 0.0, 1.0))  # 3 ops from 2 entries


def test_searched_count_level_moves_pbas_distribution_and_is_explored_in_range():
    space = PBASpace(ops=("rotate", "solarize"), copies=2, count_max=3)
    assert space.length == 9 and space.upper().tolist() == [10, 9] * 4 + [3]
    assert space.count_distribution(2) == (0.2, 0.3, 0.5)  # PBA's own
    assert space.count_distribution(3) == (0.0, 0.2, 0.3, 0.5)
    assert space.count_distribution(1) == (0.5, 0.5) and space.count_distribution(0) == (1.0,)
    assert space.zeros() == [0] * 8 + [2]  # no augmentation, PBA's count
    values = [10, 2] * 4 + [3]
    policy = space.decode(values)
    assert policy.num_ops == (0.0, 0.2, 0.3, 0.5) and space.encode(policy) == values
    with pytest.raises(PolicyError, match="count level outside 0-3"):
        space.decode([10, 2] * 4 + [4])
    explorer = PBAExplorer(seed=0, space=space)
    levels = {explorer({"pba": list(values)})["pba"][-1] for _ in range(200)}
    assert levels == {0, 1, 2, 3}  # resampled and shifted, clipped to 0..count_max
    table = schedule_table(schedule_from_changes({"pba": values}, [(2, {"pba": [0] * 8 + [1]})], space), 4)
    assert table["count"].tolist() == pytest.approx([2.3, 2.3, 0.5, 0.5])
    with pytest.raises(ValueError, match="count_max"):
        PBASpace(ops=("rotate",), copies=1, num_ops=(0.5, 0.5), count_max=2)  # 2 ops from 1 entry


def test_shared_magnitude_is_one_integer_for_every_op():
    space = PBASpace(ops=("rotate", "solarize"), copies=2, count_max=3, shared_magnitude=True)
    assert space.length == 6 and space.upper().tolist() == [10, 10, 10, 10, 9, 3]
    assert space.zeros() == [0, 0, 0, 0, 0, 2]
    values = [3, 0, 10, 7, 4, 3]
    policy = space.decode(values)
    assert [(op.name, op.p) for (op,) in policy.choices] == [("rotate", 0.3), ("solarize", 0.0), ("rotate", 1.0),
                                                            ("solarize", 0.7)]
    assert [op.magnitude for (op,) in policy.choices] == [pytest.approx(40 / 9, abs=1e-4)] * 4
    assert policy.num_ops == (0.0, 0.2, 0.3, 0.5) and space.encode(policy) == values
    with pytest.raises(PolicyError, match="magnitude outside 0-9"):
        space.decode([0, 0, 0, 0, 10, 0])
    mixed = PBASpace(ops=("rotate", "solarize"), copies=2).decode([1, 2, 1, 3, 1, 2, 1, 2])
    with pytest.raises(PolicyError, match="magnitudes differ"):
        PBASpace(ops=("rotate", "solarize"), copies=2, shared_magnitude=True).encode(mixed)
    explorer = PBAExplorer(seed=0, space=space)
    for _ in range(200):
        space.check(explorer({"pba": list(values)})["pba"])  # explored within each position's range
