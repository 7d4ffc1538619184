"""A searched policy as an ``nvidia.dali.auto_aug`` Policy, for DALI GPU pipelines (image modality).

    dali_policy, info = dali_export(policy)   # info: sub-policies, op rates, dropped and capped ops
"""

from __future__ import annotations

import itertools
from typing import Any

from augtrain.augment import Op, Policy, to_dali_policy
from augtrain.augment.plan import op_rates

DALI_OPS = {
    "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "contrast", "color",
    "sharpness", "posterize", "solarize", "equalize", "auto_contrast", "invert", "identity",
}  # fmt: skip


def dali_export(policy: Policy) -> tuple[Any, dict[str, Any]]:
    """An ``nvidia.dali.auto_aug`` Policy for ``policy``'s ``choices``, and a description of it.

    auto_aug applies exactly one sub-policy per sample. A policy that already draws one entry per
    sample (and not PBA's ``until_applied`` rule) exports entry for entry. Any other (PBA's 0/1/2
    ops) exports as every pair of its entries, each op's probability set so that it fires as often
    per sample as in the searched policy: each entry's rate is p * E[k] / entries for uniform
    draws, or measured from the policy's own rule (``op_rates``, copies of an op sharing their
    op's rate by probability) under ``until_applied``; a pair of n entries then holds each entry
    in 2 / n of the samples. The count of ops per sample becomes up to 2. Ops DALI lacks (cutout),
    entries with probability 0 and rates a pair cannot carry (capped at probability 1) are listed.
    """
    dropped = sorted({op.name for e in policy.choices for op in e if op.name not in DALI_OPS})
    kept = [e for e in policy.choices if all(op.name in DALI_OPS for op in e) and any(op.p > 0 for op in e)]
    rates, capped = None, []
    if (policy.num_ops == (0.0, 1.0) and not policy.until_applied) or not kept:
        entries = kept or [(Op("identity"),)]
    else:
        rates = _op_rates(policy, kept)
        share = 1.0 if len(kept) == 1 else len(kept) / 2.0  # a pair of n entries holds each in 2 / n of samples
        scaled = []
        for entry, entry_rates in zip(kept, rates):
            ops = []
            for op, rate in zip(entry, entry_rates):
                if rate * share > 1.0 + 1e-9:
                    capped.append(op.name)
                ops.append(Op(op.name, p=round(min(1.0, rate * share), 4), magnitude=op.magnitude))
            scaled.append(tuple(ops))
        entries = scaled if len(scaled) == 1 else [a + b for a, b in itertools.combinations(scaled, 2)]
    single = Policy(name=f"{policy.name}-dali", choices=tuple(entries), num_ops=(0.0, 1.0))
    dali = to_dali_policy(single)
    info = {"sub_policies": [[[op.name, op.p, op.magnitude] for op in e] for e in single.choices],
            "op_rates": None if rates is None else [[round(r, 4) for r in e] for e in rates],
            "capped_ops": sorted(set(capped)), "dropped_ops": dropped, "num_magnitude_bins": dali.num_magnitude_bins,
            "source_num_ops": list(policy.num_ops), "source_until_applied": policy.until_applied}
    return dali, info


def _op_rates(policy: Policy, kept: list[tuple[Op, ...]]) -> list[list[float]]:
    """Per op of each kept entry: how often it runs per sample in ``policy``. Uniform draws:
    p * E[k] / entries. ``until_applied``: measured (``op_rates``), copies of an op sharing
    their op's rate in proportion to their probabilities."""
    if not policy.until_applied:
        return [[policy.mean_num_ops / len(policy.choices) * op.p for op in e] for e in kept]
    measured = op_rates(policy)
    weight: dict[str, float] = {}
    for entry in policy.choices:
        for op in entry:
            weight[op.name] = weight.get(op.name, 0.0) + op.p
    return [[measured[op.name] * op.p / weight[op.name] if weight[op.name] else 0.0 for op in e] for e in kept]
