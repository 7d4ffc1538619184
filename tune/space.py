"""The joint search space: an augmentation policy and the fine-tuning hyperparameters, searched together.

A point of the space is a flat dict of plain values (what Tune and Optuna sample, and what
trial configs and logs hold); ``JointSpace.decode`` turns it into a ``Policy`` and fine-tune
overrides:

    space = JointSpace()
    point = space.sample(np.random.default_rng(0))
    # {'lr': 0.0021, 'weight_decay': 3e-05, 'label_smoothing': 0.06, 'aug_crop': 0.7, 'aug_hflip': 0.5,
    #  'aug_ops': 'all', 'aug_n': 2, 'aug_m': 6, 'aug_cutout': 0.0}
    policy, hparams = space.decode(point)

The policy half: a random-resized crop (lower scale bound, or none) and a horizontal flip
applied to every sample first (``pre``), then RandAugment over an op group (``aug_ops``: all
14 RandAugment ops, the geometric ones or the photometric ones), ``aug_n`` ops per sample at
magnitude ``aug_m``. Cutout (probability ``aug_cutout``) ends the ``pre`` ops, so RandAugment's
geometric ops move its hole with the image. The RandAugment grid is the
slice ``crop=none, hflip=0, ops=all, cutout=0`` of it, so a search over this space can at worst
find the grid's points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from augtrain.augment import Op, Policy
from augtrain.augment.image.policies import RANDAUGMENT_OPS
from augtrain.augment.policy import num_ops_distribution

OP_GROUPS: dict[str, tuple[str, ...]] = {
    "all": RANDAUGMENT_OPS,
    "geometric": ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y"),
    "photometric": ("identity", "auto_contrast", "equalize", "solarize", "color", "posterize", "contrast",
                    "brightness", "sharpness"),
}
POLICY_KEYS = ("aug_crop", "aug_hflip", "aug_ops", "aug_n", "aug_m", "aug_cutout")


@dataclass(frozen=True)
class JointSpace:
    """Ranges of the joint space (``search.space`` in an experiment file)."""

    modality = "image"  # the catalogue its policy ops come from (RandAugment's image ops)

    lr: tuple[float, float] = (3e-4, 1e-2)  # log-uniform
    weight_decay: tuple[float, float] = (1e-5, 1e-2)  # log-uniform
    label_smoothing: tuple[float, float] = (0.0, 0.2)
    crop: tuple[float, ...] = (0.0, 0.5, 0.7, 0.85)  # random-resized crop's lower scale; 0: no crop
    hflip: tuple[float, ...] = (0.0, 0.5)
    ops: tuple[str, ...] = ("all", "geometric", "photometric")
    n: tuple[int, ...] = (0, 1, 2, 3)
    m: tuple[int, int] = (0, 10)  # integer magnitudes, inclusive
    cutout: tuple[float, ...] = (0.0, 0.5)

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"search.space.{name}: a log-uniform range needs 0 < low <= high, got {lo}..{hi}")
        if not 0 <= self.label_smoothing[0] <= self.label_smoothing[1] < 1:
            raise ValueError(f"search.space.label_smoothing: need 0 <= low <= high < 1, got {self.label_smoothing}")
        unknown = sorted(set(self.ops) - set(OP_GROUPS))
        if unknown:
            raise ValueError(f"search.space.ops: unknown op group(s) {unknown}; known: {sorted(OP_GROUPS)}")
        if not 0 <= self.m[0] <= self.m[1] <= 10:
            raise ValueError(f"search.space.m: magnitudes are 0..10, got {self.m}")
        checks = {"crop": all(0 <= c < 1 for c in self.crop), "hflip": all(0 <= p <= 1 for p in self.hflip),
                  "n": all(n >= 0 for n in self.n), "cutout": all(0 <= p <= 1 for p in self.cutout)}
        for name, ok in checks.items():
            if not ok or not getattr(self, name):
                raise ValueError(f"search.space.{name}: invalid choices {getattr(self, name)}")

    # ------------------------------------------------------------ sampling

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One point drawn uniformly (log-uniformly for lr and weight decay)."""

        def log_uniform(lo: float, hi: float) -> float:
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

        def pick(choices: tuple) -> Any:
            value = choices[int(rng.integers(len(choices)))]
            return value.item() if isinstance(value, np.generic) else value

        return {
            "lr": log_uniform(*self.lr),
            "weight_decay": log_uniform(*self.weight_decay),
            "label_smoothing": float(rng.uniform(*self.label_smoothing)),
            "aug_crop": pick(self.crop), "aug_hflip": pick(self.hflip), "aug_ops": pick(self.ops),
            "aug_n": pick(self.n), "aug_m": int(rng.integers(self.m[0], self.m[1] + 1)),
            "aug_cutout": pick(self.cutout),
        }

    def tune_domains(self) -> dict[str, Any]:
        """The same space as Ray Tune search domains (for Optuna's TPE through Tune)."""
        from ray import tune

        return {
            "lr": tune.loguniform(*self.lr),
            "weight_decay": tune.loguniform(*self.weight_decay),
            "label_smoothing": tune.uniform(*self.label_smoothing),
            "aug_crop": tune.choice(list(self.crop)), "aug_hflip": tune.choice(list(self.hflip)),
            "aug_ops": tune.choice(list(self.ops)), "aug_n": tune.choice(list(self.n)),
            "aug_m": tune.randint(self.m[0], self.m[1] + 1), "aug_cutout": tune.choice(list(self.cutout)),
        }

    # ------------------------------------------------------------ decoding

    @staticmethod
    def is_point(config: dict[str, Any]) -> bool:
        return any(key in config for key in POLICY_KEYS)

    @staticmethod
    def policy(point: dict[str, Any], name: str = "searched") -> Policy:
        """The policy a point describes (see the module docstring)."""
        missing = [k for k in POLICY_KEYS if k not in point]
        if missing:
            raise ValueError(f"a joint-space point needs {list(POLICY_KEYS)}; missing {missing}")
        pre = []
        if point["aug_crop"] > 0:
            pre.append(Op("random_resized_crop", args={"scale": (float(point["aug_crop"]), 1.0)}))
        if point["aug_hflip"] > 0:
            pre.append(Op("hflip", p=float(point["aug_hflip"])))
        if point["aug_cutout"] > 0:
            pre.append(Op("cutout", p=float(point["aug_cutout"]), magnitude=5.0))
        n, m = int(point["aug_n"]), float(point["aug_m"])
        choices = tuple((Op(op, magnitude=m),) for op in OP_GROUPS[point["aug_ops"]]) if n else ()
        return Policy(name=name, pre=tuple(pre), choices=choices, num_ops=num_ops_distribution(n) if n else (1.0,))

    @staticmethod
    def hparams(point: dict[str, Any]) -> dict[str, Any]:
        """The fine-tune overrides of a point (its keys that are not policy keys)."""
        return {k: v for k, v in point.items() if k not in POLICY_KEYS}

    @staticmethod
    def decode(point: dict[str, Any], name: str = "searched") -> tuple[Policy, dict[str, Any]]:
        """(policy, fine-tune overrides) of a point."""
        return JointSpace.policy(point, name), JointSpace.hparams(point)


def describe(point: dict[str, Any]) -> str:
    """A point in one short line, for tables and logs."""
    aug = JointSpace.policy(point)
    hp = JointSpace.hparams(point)
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hp.items()))
    return f"{aug.to_string()} | {shown}"
