"""Sampling: a policy and a random generator give a plan, the list of ``(op, params)`` steps
one view goes through. Every backend applies plans, so two backends fed the same plan are
comparable op by op."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augtrain.augment.policy import Op, Policy, PolicyError
from augtrain.augment.registry import Params, ops


@dataclass(frozen=True)
class Step:
    """One op with its drawn parameters."""

    name: str
    params: Params


def sample_op(op: Op, rng: np.random.Generator, h: int, w: int, size: int | None, modality: str = "image") -> Step:
    """Draw the parameters of ``op`` for an ``h x w`` input (magnitude ranges drawn here)."""
    magnitude = op.magnitude
    if op.magnitude_range is not None:
        magnitude = float(rng.uniform(*op.magnitude_range))
    opdef = ops(modality)[op.name]
    args = {**opdef.default_args, **op.args}
    return Step(op.name, opdef.sample(rng, magnitude, args, h, w, size))


def sample_plan(policy: Policy, rng: np.random.Generator, h: int, w: int, size: int | None) -> list[Step]:
    """Draw one view's steps; a policy without a crop starts with a resize when ``size`` is set
    (in a modality whose catalogue has a ``resize`` op; ``h`` and ``w`` are the input's leading
    dimensions)."""
    registered = ops(policy.modality)
    steps: list[Step] = []
    if size is not None and not policy.has_crop and (h, w) != (size, size) and "resize" in registered:
        steps.append(Step("resize", {"out_h": float(size), "out_w": float(size)}))
        h = w = size

    def visit(op: Op) -> bool:
        nonlocal h, w
        if op.p >= 1.0 or rng.random() < op.p:
            step = sample_op(op, rng, h, w, size, policy.modality)
            steps.append(step)
            if registered[op.name].sets_size:
                h, w = int(step.params["out_h"]), int(step.params["out_w"])
            return True
        return False

    for op in policy.pre:
        visit(op)
    if policy.choices:
        k = int(rng.choice(len(policy.num_ops), p=np.asarray(policy.num_ops))) if len(policy.num_ops) > 1 else 0
        if k and policy.until_applied:  # PBA: visit every entry once, in a random order, until k ran
            for index in rng.permutation(len(policy.choices)):
                ran = [visit(op) for op in policy.choices[int(index)]]
                k -= any(ran)
                if k == 0:
                    break
        elif k:
            for index in rng.choice(len(policy.choices), size=k, replace=policy.replace):
                for op in policy.choices[int(index)]:
                    visit(op)
    return steps


def apply_plan(policy: Policy, value, rng: np.random.Generator, size: int | None = None,
               table=None) -> tuple[object, list[str]]:
    """One view of ``value`` under ``policy`` with the reference ops of its modality's catalogue
    (or ``table``, the ops by name): the augmented value and the names of the ops it went through.
    The value's leading one or two dimensions are the ones a plan is sampled for."""
    table = table if table is not None else ops(policy.modality)
    shape = np.shape(value)
    h, w = (shape[0] if shape else 1), (shape[1] if len(shape) > 1 else 1)
    x, names = value, []
    for step in sample_plan(policy, rng, h, w, size):
        x = table[step.name].apply(x, step.params)
        names.append(step.name)
    return x, names


def view_names(num_views: int, single: str) -> list[str]:
    """The names of a sample's augmented views: ``[single]`` for one view (``"image"`` for
    images), else ``view0``, ``view1``, ... (the one rule every transform and reader follows)."""
    return [single] if num_views == 1 else [f"view{i}" for i in range(num_views)]


def op_rates(policy: Policy, draws: int = 20_000, seed: int = 0) -> dict[str, float]:
    """Mean number of times each op of ``choices`` runs per sample, measured over ``draws``
    sampled plans (the exact rules; for exports that must keep each op's rate)."""
    inner = Policy(name=policy.name, choices=policy.choices, num_ops=policy.num_ops, replace=policy.replace,
                   until_applied=policy.until_applied, modality=policy.modality)  # choices only: no pre ops, no resize
    rng = np.random.default_rng(seed)
    counts = {op.name: 0 for entry in policy.choices for op in entry}
    for _ in range(draws):
        for step in sample_plan(inner, rng, 32, 32, None):
            counts[step.name] += 1
    return {name: n / draws for name, n in counts.items()}


def augment_rng(base_seed: int, epoch: int, rank: int = 0, worker: int = 0) -> np.random.Generator:
    """Independent generator per (base seed, epoch, rank, worker): same tuple, same stream."""
    for name, value in (("base_seed", base_seed), ("epoch", epoch), ("rank", rank), ("worker", worker)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"augment_rng: {name} must be a non-negative int, got {value!r}")
    return np.random.default_rng(np.random.SeedSequence([int(base_seed), int(epoch), int(rank), int(worker)]))


def max_plan_length(policy: Policy) -> int:
    """Upper bound on the number of steps of any plan of ``policy`` (resize included)."""
    longest_entry = max((len(e) for e in policy.choices), default=0)
    return 1 + len(policy.pre) + policy.max_num_ops * longest_entry


def check_size(policy: Policy, size: int | None) -> None:
    """A crop needs an output size; sizes must be positive."""
    if size is None and policy.has_crop:
        raise PolicyError(f"policy {policy.name!r} crops, so it needs an output size (size=None was given)")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise PolicyError(f"size must be a positive int or None, got {size!r}")
