"""Policies as data: JSON and string round trips, validation errors naming the op, schedules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augtrain.augment import Op, Policy, PolicyError, Schedule, list_policies, parse_policy, sample_plan
from augtrain.augment.image.policies import STANDARD

# Every standard policy needs an entry here: what a plan drawn from it must look like.
POLICY_CASES = {
    "none": {"always": [], "never": ["random_resized_crop"]},
    "basic": {"always": ["random_resized_crop"], "may": ["hflip", "vflip", "rotate", "color_jitter", "grayscale", "gaussian_blur", "gaussian_noise"]},
    "mae": {"always": ["random_resized_crop"], "may": ["hflip"]},
    "weak": {"always": ["translate_x", "translate_y"], "may": ["hflip"]},
    "simclr": {"always": ["random_resized_crop"], "may": ["hflip", "color_jitter", "grayscale", "gaussian_blur"]},
    "randaugment": {"always": ["resize"], "count": 2},
    "trivialaugment": {"always": ["resize"], "count": 1},
    "autoaugment-imagenet": {"always": ["resize"], "max": 2},
    "autoaugment-cifar10": {"always": ["resize"], "max": 2},
    "pba": {"always": ["resize"], "max": 2},
}


def test_every_standard_policy_has_a_case() -> None:
    assert set(POLICY_CASES) == set(STANDARD), "add a POLICY_CASES entry for each standard policy"


@pytest.mark.parametrize("name", sorted(POLICY_CASES))
def test_standard_policy_plans(name: str) -> None:
    case = POLICY_CASES[name]
    policy = parse_policy(name)
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    for _ in range(200):
        steps = [s.name for s in sample_plan(policy, rng, 64, 80, 32)]
        seen.update(steps)
        for required in case["always"]:
            assert required in steps
        for banned in case.get("never", []):
            assert banned not in steps
        rest = [s for s in steps if s not in case["always"]]
        if "count" in case:
            assert len(rest) == case["count"], steps
        if "max" in case:
            assert len(rest) <= 2 * case["max"]
    for optional in case.get("may", []):
        assert optional in seen, f"{name}: {optional} never drawn in 200 plans"


@pytest.mark.parametrize("spec", list_policies() + ["rand-n3-m5", "rand-m7", "mae+rand-n1-m4", "simclr+trivialaugment",
                                                   "basic+pba"])
def test_json_and_string_round_trip(spec: str) -> None:
    policy = parse_policy(spec)
    assert Policy.from_json(policy.to_json()) == policy
    assert Policy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert parse_policy(policy.to_string()) == policy


def test_custom_policy_string_form_round_trips() -> None:
    policy = Policy(
        name="searched",
        pre=(Op("random_resized_crop", args={"scale": (0.3, 1.0)}), Op("hflip", p=0.5)),
        choices=((Op("rotate", p=0.7, magnitude=4.5),), (Op("solarize", p=0.2, magnitude=8), Op("equalize"))),
        num_ops=(0.2, 0.3, 0.5),
        replace=False,
        views=2,
    )
    text = policy.to_string()
    assert text.startswith("name=searched|pre=random_resized_crop{scale=0.3~1},hflip@0.5|")
    assert "n=0:0.2/1:0.3/2:0.5" in text and "norepl" in text
    assert parse_policy(text) == policy
    assert Policy.from_json(policy.to_json()) == policy
    assert policy.to_dict()["num_ops"] == {"0": 0.2, "1": 0.3, "2": 0.5}


def test_randaugment_spec_forms() -> None:
    p = parse_policy("rand-n2-m9")
    assert p.num_ops == (0.0, 0.0, 1.0) and {op.magnitude for e in p.choices for op in e} == {9.0}
    assert parse_policy("rand-m9-n2") == p == parse_policy("randaugment")
    assert str(parse_policy("rand-n1-m3")) == "rand-n1-m3"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"pre": [{"name": "warp_drive"}]}, "unknown op 'warp_drive'"),
        ({"pre": [{"name": "rotate", "magnitude": 11}]}, "op 'rotate': magnitude 11"),
        ({"pre": [{"name": "rotate", "magnitude": -1}]}, "op 'rotate': magnitude -1"),
        ({"pre": [{"name": "hflip", "p": 1.5}]}, "op 'hflip': probability p=1.5"),
        ({"pre": [{"name": "hflip", "strength": 2}]}, "op 'hflip': unknown field"),
        ({"pre": [{"name": "random_resized_crop", "args": {"zoom": 2}}]}, "op 'random_resized_crop': unknown arg"),
        ({"pre": [{"name": "random_resized_crop", "args": {"scale": [1.0, 0.5]}}]}, "arg 'scale'"),
        ({"choices": [[{"name": "rotate", "magnitude_range": [7, 3]}]]}, "op 'rotate': magnitude_range"),
        ({"choices": [[{"name": "rotate"}]], "num_ops": {"0": 0.5, "1": 0.6}}, "must sum to 1"),
        ({"choices": [[{"name": "random_resized_crop"}]]}, "must be in 'pre'"),
        ({"choices": [[{"name": "rotate"}]], "num_ops": 3, "replace": False}, "without replacement"),
        ({"num_ops": 2}, "'choices' is empty"),
        ({"pre": [], "mystery": 1}, "unknown field"),
    ],
)
def test_invalid_policies_raise_naming_the_problem(data: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")):
        Policy.from_dict(data)


def test_bad_specs_raise() -> None:
    with pytest.raises(PolicyError, match="unknown policy 'fancy'"):
        parse_policy("fancy")
    with pytest.raises(PolicyError, match="cannot parse op"):
        parse_policy("pre=rotate@@2")
    with pytest.raises(PolicyError, match="unknown op 'spin'"):
        parse_policy("pre=spin:3")
    with pytest.raises(PolicyError, match="only one part"):
        parse_policy("rand-n2-m9+trivialaugment")


def test_schedule_by_epoch_and_round_trip() -> None:
    sched = Schedule(((0, parse_policy("rand-n1-m2")), (5, parse_policy("rand-n2-m6")), (12, parse_policy("none"))))
    assert sched.policy_at(0).name == "rand-n1-m2" and sched.policy_at(4).name == "rand-n1-m2"
    assert sched.policy_at(5).name == "rand-n2-m6" and sched.policy_at(11).name == "rand-n2-m6"
    assert sched.policy_at(100).name == "none"
    assert Schedule.from_json(sched.to_json()) == sched
    with pytest.raises(PolicyError, match="strictly increasing"):
        Schedule(((0, parse_policy("none")), (0, parse_policy("mae"))))
    with pytest.raises(PolicyError, match="epoch 0"):
        Schedule(((3, parse_policy("none")),))


def test_num_ops_distribution_is_followed() -> None:
    rng = np.random.default_rng(0)
    always = Policy(choices=tuple((Op(n),) for n in ("invert", "equalize", "hflip")), num_ops=(0.2, 0.3, 0.5), replace=False)
    plans = [[s.name for s in sample_plan(always, rng, 8, 8, None)] for _ in range(3000)]
    lengths = np.bincount([len(p) for p in plans], minlength=3)
    np.testing.assert_allclose(lengths / 3000, [0.2, 0.3, 0.5], atol=0.03)
    assert all(len(set(p)) == len(p) for p in plans), "without replacement: no op twice"


def test_until_applied_counts_ops_that_fired() -> None:
    """PBA's rule: entries are visited once in a random order until k of them fired, so low
    probabilities pick which ops run, not how many (uniform draws would thin the count out)."""
    rng = np.random.default_rng(0)
    names = ("invert", "equalize", "hflip", "vflip", "solarize", "posterize")
    weak = tuple((Op(n, p=0.3, magnitude=5),) for n in names)
    pba = Policy(choices=weak, num_ops=(0.2, 0.3, 0.5), replace=False, until_applied=True)
    uniform = Policy(choices=weak, num_ops=(0.2, 0.3, 0.5), replace=False)
    counts = [len(sample_plan(pba, rng, 8, 8, None)) for _ in range(4000)]
    thinned = [len(sample_plan(uniform, rng, 8, 8, None)) for _ in range(4000)]
    # k = 1 falls short when none of the 6 entries fires, k = 2 when fewer than 2 do (Bin(6, 0.3))
    p_short2, p_none1 = 0.7 ** 6 + 6 * 0.3 * 0.7 ** 5, 0.7 ** 6
    expected = 0.3 * (1 - p_none1) + 0.5 * (2 * (1 - p_short2) + 1 * (6 * 0.3 * 0.7 ** 5))
    assert np.mean(counts) == pytest.approx(expected, abs=0.04)
    assert np.mean(thinned) == pytest.approx(1.3 * 0.3, abs=0.04)
    plans = [[s.name for s in sample_plan(pba, rng, 8, 8, None)] for _ in range(500)]
    assert all(len(set(p)) == len(p) <= 2 for p in plans)
    # every probability 1: exactly k ops; every probability 0: none
    sure = Policy(choices=tuple((Op(n),) for n in names), num_ops=(0.2, 0.3, 0.5), replace=False, until_applied=True)
    lengths = np.bincount([len(sample_plan(sure, rng, 8, 8, None)) for _ in range(3000)], minlength=3)
    np.testing.assert_allclose(lengths / 3000, [0.2, 0.3, 0.5], atol=0.03)
    never = Policy(choices=tuple((Op(n, p=0.0),) for n in names), num_ops=(0.2, 0.3, 0.5), replace=False,
                   until_applied=True)
    assert all(not sample_plan(never, rng, 8, 8, None) for _ in range(200))


def test_until_applied_round_trips_and_needs_no_replacement() -> None:
    policy = Policy(choices=((Op("rotate", p=0.4, magnitude=3),), (Op("solarize", p=0.1, magnitude=9),)),
                    num_ops=(0.2, 0.3, 0.5), replace=False, until_applied=True)
    assert "untilapplied" in policy.to_string() and parse_policy(policy.to_string()) == policy
    assert Policy.from_json(policy.to_json()) == policy and policy.to_dict()["until_applied"] is True
    assert "until_applied" not in Policy(choices=policy.choices, replace=False).to_dict()
    with pytest.raises(PolicyError, match="until_applied visits each entry once"):
        Policy(choices=policy.choices, until_applied=True)


def test_combined_policy_keeps_the_choices_rule() -> None:
    combined = parse_policy("basic+pba")
    assert combined.until_applied and not combined.replace and combined.num_ops == parse_policy("pba").num_ops
