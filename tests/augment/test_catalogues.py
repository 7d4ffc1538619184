"""The policy data model with a modality other than images: a catalogue registered here (a
one-dimensional "vector" modality with two ops) validates, parses, prints and samples."""

from __future__ import annotations

import numpy as np
import pytest

from augtrain.augment import Policy, PolicyError, parse_policy, sample_plan
from augtrain.augment.policy import Op, Schedule
from augtrain.augment.registry import Catalogue, OpDef, list_catalogues, register_catalogue, unregister_catalogue


def _noise_params(rng, m, args, h, w, size):
    return {"std": m / 10.0, "seed": float(rng.integers(1 << 30))}


def _noise(x, p):
    return x + np.random.default_rng(int(p["seed"])).normal(0.0, p["std"], x.shape).astype(x.dtype)


VECTOR_OPS = {
    "noise": OpDef("noise", _noise_params, _noise, ("std", "seed"), uses_magnitude=True, kind="value"),
    "reverse": OpDef("reverse", lambda rng, m, args, h, w, size: {}, lambda x, p: x[::-1].copy(), kind="order"),
}


def _standard(spec: str):
    if spec == "none":
        return Policy(name="none", num_ops=(1.0,), modality="vector")
    if spec == "light":
        return Policy(name="light", pre=(Op("noise", p=0.5, magnitude=2.0),), modality="vector")
    return None


@pytest.fixture
def vector():
    register_catalogue(Catalogue("vector", VECTOR_OPS, _standard, ("light", "none")))
    yield "vector"
    unregister_catalogue("vector")


def test_a_registered_catalogue_parses_prints_and_round_trips(vector):
    assert "vector" in list_catalogues()
    light = parse_policy("light", vector)
    assert (light.modality, light.to_string()) == ("vector", "vector:light")
    assert parse_policy(light.to_string()) == light  # MODALITY:SPEC from any default
    custom = Policy(pre=(Op("reverse", p=0.5),), choices=((Op("noise", magnitude=3.0),),), modality="vector")
    assert custom.to_string().startswith("modality=vector|")
    assert parse_policy(custom.to_string()) == custom
    assert custom.to_dict()["modality"] == "vector"
    assert Policy.from_dict(custom.to_dict()) == custom
    schedule = Schedule(((0, light), (3, custom)))
    assert Schedule.from_dict(schedule.to_dict()) == schedule
    assert "modality" not in parse_policy("simclr").to_dict()  # image JSON unchanged


def test_ops_resolve_in_their_own_modality(vector):
    with pytest.raises(PolicyError, match="unknown op 'rotate' for modality 'vector'"):
        Policy(pre=(Op("rotate", magnitude=3.0),), modality="vector")
    with pytest.raises(PolicyError, match="unknown op 'noise' for modality 'image'"):
        parse_policy({"pre": [{"name": "noise"}]})
    with pytest.raises(PolicyError, match="different modalities"):
        parse_policy("vector:light+simclr")
    with pytest.raises(PolicyError, match="unknown policy 'heavy' for modality 'vector'"):
        parse_policy("heavy", vector)


def test_a_modality_without_a_catalogue_is_named():
    with pytest.raises(PolicyError, match="no augmentation ops for modality 'audio'; registered: .*image"):
        parse_policy({"modality": "audio", "pre": []})


def test_plans_sample_the_modalitys_ops(vector):
    policy = Policy(pre=(Op("reverse"),), choices=((Op("noise", magnitude=5.0),),), num_ops=(0.0, 1.0),
                    modality="vector")
    steps = sample_plan(policy, np.random.default_rng(0), 16, 1, size=8)  # no resize op: none prepended
    assert [s.name for s in steps] == ["reverse", "noise"] and steps[1].params["std"] == 0.5
    x = np.arange(16, dtype=np.float32)
    for step in steps:
        x = VECTOR_OPS[step.name].apply(x, step.params)
    assert x.shape == (16,) and abs(float(x[0]) - 15.0) < 3.0
