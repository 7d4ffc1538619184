"""Population Based Augmentation (Ho et al. 2019): the policy encoding, its explore step, and the
schedule that a PBT run leaves behind.

Encoding (PBA's ``hp_policy``): for each of ``copies`` copies of the op list, for each op, two
integers: probability 0-10 (p = value / 10) and magnitude 0-9 (m = value * 10 / 9 on augtrain's
0-10 scale). Decoded, it is a policy with PBA's apply rule: draw a count of 0, 1 or 2
(probabilities 0.2, 0.3, 0.5; PBA's code also lists a count of 3, at probability 0, and
``num_ops`` sets these), then visit every op in a random order, each firing with its
probability, until that many fired (``Policy.until_applied``). Probabilities so decide which
ops run, and the count how many, as in PBA's ``apply_policy``. With ``shared_magnitude`` one
magnitude serves every op (RandAugment's global magnitude): a probability per op copy, then
the magnitude.

Explore (PBA's ``explore``): every integer is resampled uniformly with probability 0.2, else
shifted by 0, 1, 2 or 3 (equally likely) up or down (equally likely), clipped to its range.

Schedule: Tune's PBT logs, per trial, every exploit as ``[trial tag, donor tag, trial
iteration, donor iteration, donor config, new config]`` (``pbt_policy_<trial>.txt``); the chain
of a trial's exploits, read back from its last one, is its schedule (what Tune's
``PopulationBasedTrainingReplay`` replays and PBA's ``parse_log_schedule`` reads).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from augtrain.augment import Op, Policy, PolicyError, Schedule

# PBA's HP_TRANSFORMS, in its order, by augtrain op name.
PBA_OPS = (
    "rotate", "translate_x", "translate_y", "brightness", "color", "invert", "sharpness", "posterize",
    "shear_x", "solarize", "shear_y", "equalize", "auto_contrast", "cutout", "contrast",
)  # fmt: skip
PROB_MAX = 10
MAG_MAX = 9
NUM_OPS = (0.2, 0.3, 0.5)


@dataclass(frozen=True)
class PBASpace:
    """The op list and number of copies that fix the encoding's length (2 * len(ops) * copies,
    or len(ops) * copies + 1 with a shared magnitude, plus one for a searched count level)."""

    ops: tuple[str, ...] = PBA_OPS
    copies: int = 2
    num_ops: tuple[float, ...] = NUM_OPS  # probabilities of a count of 0, 1, 2, ... ops that fire
    # > 0: one more integer, the count level L in 0..count_max, is searched with the policy: the
    # count distribution is num_ops moved so that its largest count is L (counts below 0 become
    # 0); with PBA's 0.2/0.3/0.5, L = 2 is PBA's own and L = 3 gives 1/2/3 ops
    count_max: int = 0
    # True: one magnitude for every op (RandAugment's single global magnitude) instead of one per
    # op copy; the encoding is then the probabilities, the magnitude, and the count level if any
    shared_magnitude: bool = False

    def __post_init__(self) -> None:
        from augtrain.augment import OPS

        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise PolicyError(f"search.pbt.ops: unknown op(s) {unknown}")
        if not self.ops or self.copies < 1:
            raise PolicyError("search.pbt: ops must be non-empty and copies >= 1")
        if (not self.num_ops or any(q < 0 for q in self.num_ops) or abs(sum(self.num_ops) - 1.0) > 1e-6
                or len(self.num_ops) - 1 > len(self.ops) * self.copies):
            raise PolicyError(f"search.pbt.num_ops: {list(self.num_ops)} must be probabilities of 0, 1, 2, ... ops "
                              f"summing to 1, for at most {len(self.ops) * self.copies} ops")
        if not 0 <= self.count_max <= len(self.ops) * self.copies:
            raise PolicyError(f"search.pbt.count_max: {self.count_max} must be 0 (count not searched) to "
                              f"{len(self.ops) * self.copies} (every op)")

    @property
    def pairs(self) -> int:
        """Number of (probability, magnitude) pairs: one per op copy."""
        return len(self.ops) * self.copies

    @property
    def base_level(self) -> int:
        """The count level at which the distribution is ``num_ops`` itself."""
        return len(self.num_ops) - 1

    def count_distribution(self, level: int) -> tuple[float, ...]:
        """``num_ops`` moved so that its largest count is ``level`` (counts below 0 become 0)."""
        out = [0.0] * (level + 1)
        for count, q in enumerate(self.num_ops):
            out[max(0, count + level - self.base_level)] += q
        return tuple(out)

    @property
    def policy_length(self) -> int:
        """Integers that encode the ops: a pair per op copy, or a probability per op copy and
        the shared magnitude."""
        return self.pairs + 1 if self.shared_magnitude else 2 * self.pairs

    @property
    def length(self) -> int:
        return self.policy_length + (1 if self.count_max else 0)

    def upper(self) -> np.ndarray:
        """Largest value of each position: [10, 9, 10, 9, ..., (count_max)], or with a shared
        magnitude [10, 10, ..., 9, (count_max)]."""
        if self.shared_magnitude:
            ops = np.append(np.full(self.pairs, PROB_MAX), MAG_MAX)
        else:
            ops = np.tile([PROB_MAX, MAG_MAX], self.pairs)
        return np.append(ops, self.count_max) if self.count_max else ops

    def zeros(self) -> list[int]:
        """PBA's starting point: every probability and magnitude 0 (no augmentation); a searched
        count level starts where the distribution is ``num_ops`` itself (PBA's)."""
        return [0] * self.policy_length + ([min(self.base_level, self.count_max)] if self.count_max else [])

    def random(self, rng: np.random.Generator) -> list[int]:
        """Uniform over every position's range."""
        return [int(v) for v in rng.integers(0, self.upper() + 1)]

    def check(self, values: Sequence[int]) -> None:
        if len(values) != self.length:
            raise PolicyError(f"PBA encoding: expected {self.length} integers, got {len(values)}")
        arr = np.asarray(values)
        if arr.dtype.kind not in "iu" and not np.all(arr == np.round(arr)):
            raise PolicyError(f"PBA encoding: values must be integers, got {list(values)[:6]}...")
        if (arr < 0).any() or (arr > self.upper()).any():
            raise PolicyError("PBA encoding: a probability is outside 0-10, a magnitude outside 0-9 or the count "
                              f"level outside 0-{self.count_max}")

    def decode(self, values: Sequence[int], name: str = "pba-searched") -> Policy:
        """Integers -> Policy (one ``choices`` entry per op copy; p = v / 10, m = v * 10 / 9)."""
        self.check(values)
        entries = []
        for k in range(self.pairs):
            op = self.ops[k % len(self.ops)]
            p_value, m_value = ((values[k], values[self.pairs]) if self.shared_magnitude
                                else (values[2 * k], values[2 * k + 1]))
            p, m = int(p_value) / PROB_MAX, round(int(m_value) * 10.0 / MAG_MAX, 4)
            entries.append((Op(op, p=p, magnitude=m),))
        num_ops = self.count_distribution(int(values[-1])) if self.count_max else self.num_ops
        return Policy(name=name, choices=tuple(entries), num_ops=num_ops, replace=False, until_applied=True)

    def encode(self, policy: Policy) -> list[int]:
        """Inverse of ``decode`` for policies of this space's shape (ops in order, all copies)."""
        if len(policy.choices) != self.pairs:
            raise PolicyError(f"policy {policy.name!r} has {len(policy.choices)} entries, the space {self.pairs}")
        probabilities, magnitudes = [], []
        for i, entry in enumerate(policy.choices):
            op = entry[0]
            if len(entry) != 1 or op.name != self.ops[i % len(self.ops)]:
                raise PolicyError(f"policy {policy.name!r}: entry {i} is not {self.ops[i % len(self.ops)]!r}")
            probabilities.append(int(round(op.p * PROB_MAX)))
            magnitudes.append(int(round(op.magnitude * MAG_MAX / 10.0)))
        if self.shared_magnitude:
            if len(set(magnitudes)) > 1:
                raise PolicyError(f"policy {policy.name!r}: magnitudes differ, the space shares one")
            out = probabilities + magnitudes[:1]
        else:
            out = [v for pair in zip(probabilities, magnitudes) for v in pair]
        if self.count_max:
            levels = [lv for lv in range(self.count_max + 1) if _same_distribution(self.count_distribution(lv),
                                                                                   policy.num_ops)]
            if not levels:
                raise PolicyError(f"policy {policy.name!r}: num_ops {policy.num_ops} is no count level of this space")
            out.append(levels[0])
        return out


def _same_distribution(a: Sequence[float], b: Sequence[float]) -> bool:
    n = max(len(a), len(b))
    return bool(np.allclose(list(a) + [0.0] * (n - len(a)), list(b) + [0.0] * (n - len(b)), atol=1e-9))


def explore(values: Sequence[int], rng: np.random.Generator, resample_probability: float = 0.2,
            upper: Sequence[int] | None = None) -> list[int]:
    """PBA's perturbation of an encoding (see the module docstring); ``upper``: each position's
    largest value (default: probability and magnitude pairs)."""
    upper = np.tile([PROB_MAX, MAG_MAX], len(values) // 2) if upper is None else np.asarray(upper)
    if len(upper) != len(values):
        raise ValueError(f"explore: {len(values)} values but {len(upper)} upper bounds")
    out = []
    for value, top in zip(values, upper):
        if rng.random() < resample_probability:
            out.append(int(rng.integers(0, top + 1)))
            continue
        amount = int(rng.integers(0, 4))
        out.append(max(0, int(value) - amount) if rng.random() < 0.5 else min(int(top), int(value) + amount))
    return out


class PBAExplorer:
    """``custom_explore_fn`` for Tune's PBT: perturbs ``config[key]`` with ``explore``.

    Owns its generator (seeded), so a search's explore steps depend only on the seed and the
    order of calls. Counts its calls, for reports."""

    def __init__(self, key: str = "pba", seed: int = 0, resample_probability: float = 0.2,
                 space: PBASpace | None = None) -> None:
        self.key, self.resample_probability = key, resample_probability
        self.upper = None if space is None else [int(v) for v in space.upper()]
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        config[self.key] = explore(config[self.key], self.rng, self.resample_probability, self.upper)
        return config


# ---------------------------------------------------------------- schedules from PBT logs


def read_policy_log(path: str | Path) -> list[tuple[str, str, int, int, dict, dict]]:
    """The rows of a ``pbt_policy_*.txt`` / ``pbt_global.txt`` file."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            old_tag, new_tag, old_step, new_step, old_conf, new_conf = json.loads(line)
        except (json.JSONDecodeError, ValueError):
            raise ValueError(f"{path}:{number}: not a PBT policy row") from None
        rows.append((str(old_tag), str(new_tag), int(old_step), int(new_step), old_conf, new_conf))
    return rows


def config_changes(rows: list[tuple[str, str, int, int, dict, dict]], initial: dict | None = None
                   ) -> tuple[dict, list[tuple[int, dict]]]:
    """(starting config, [(iteration, config from then on), ...]) of the last exploit chain of a
    trial's policy log, read backwards as Tune's ``PopulationBasedTrainingReplay`` does."""
    if not rows:
        if initial is None:
            raise ValueError("no exploit rows and no initial config")
        return initial, []
    changes, last_new_tag, first_old_conf = [], None, None
    for old_tag, new_tag, _old_step, new_step, old_conf, new_conf in reversed(rows):
        if last_new_tag is not None and old_tag != last_new_tag:
            break
        last_new_tag, first_old_conf = new_tag, old_conf
        changes.append((new_step, new_conf))
    return first_old_conf, list(reversed(changes))


def schedule_from_changes(initial: dict, changes: list[tuple[int, dict]], space: PBASpace, key: str = "pba",
                          epochs_per_iteration: int = 1, stretch: float = 1.0) -> Schedule:
    """A ``Schedule`` of decoded policies: entry i starts at ``iteration * epochs_per_iteration *
    stretch`` epochs (PBA stretches a searched schedule to a longer final run)."""
    entries: dict[int, Policy] = {0: space.decode(initial[key], name="pba-epoch-0")}
    for iteration, config in changes:
        start = int(round(iteration * epochs_per_iteration * stretch))
        entries[start] = space.decode(config[key], name=f"pba-epoch-{start}")
    merged: list[tuple[int, Policy]] = []
    for start in sorted(entries):
        if not merged or not _same_ops(merged[-1][1], entries[start]):
            merged.append((start, entries[start]))
    return Schedule(tuple(merged))


def _same_ops(a: Policy, b: Policy) -> bool:
    return a.choices == b.choices and a.num_ops == b.num_ops


def schedule_table(schedule: Schedule, epochs: int) -> dict[str, np.ndarray]:
    """Per-op probability and magnitude at every epoch (copies summed for p, p-weighted mean m),
    and the mean count drawn: ``{"epochs": [E], "count": [E], "<op>.p": [E], "<op>.m": [E]}``."""
    out: dict[str, list[float]] = {"epochs": list(range(epochs)), "count": []}
    for epoch in range(epochs):
        policy = schedule.policy_at(epoch)
        out["count"].append(policy.mean_num_ops)
        by_op: dict[str, list[tuple[float, float]]] = {}
        for entry in policy.choices:
            for op in entry:
                by_op.setdefault(op.name, []).append((op.p, op.magnitude))
        for name, pm in by_op.items():
            p_total = sum(p for p, _ in pm)
            mean_m = sum(p * m for p, m in pm) / p_total if p_total else 0.0
            out.setdefault(f"{name}.p", []).append(p_total)
            out.setdefault(f"{name}.m", []).append(mean_m)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}
