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

Other modalities bring their own policy half (``FAMILIES``): for text, EDA's and AEDA's ops
grouped (``aug_ops``: ``eda``, the four EDA ops; ``all``, with punctuation; ``word``, the
synonym ops; ``order``, swap, delete and punctuation), ``aug_n`` ops per augmented copy at
magnitude ``aug_m`` (alpha = m / 20) and ``aug_copies`` copies of each text (EDA's n_aug); its
points carry ``aug_modality: text``. Series have the same form over their ops (``aug_ops``:
``reference``, Iwana and Uchida's six; ``all``; ``magnitude``, ``time``, ``frequency``). The
baselines' grid is each family's own (RandAugment's N x M for images, EDA's magnitude x copies
for text, the reference ops' magnitude x copies for series).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from augtrain.augment import Op, Policy
from augtrain.augment.image.policies import RANDAUGMENT_OPS
from augtrain.augment.series.policies import ALL_OPS as SERIES_ALL_OPS, REFERENCE_OPS as SERIES_REFERENCE_OPS
from augtrain.augment.text.policies import EDA_OPS
from augtrain.augment.policy import num_ops_distribution

OP_GROUPS: dict[str, tuple[str, ...]] = {
    "all": RANDAUGMENT_OPS,
    "geometric": ("identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y"),
    "photometric": ("identity", "auto_contrast", "equalize", "solarize", "color", "posterize", "contrast",
                    "brightness", "sharpness"),
}
POLICY_KEYS = ("aug_crop", "aug_hflip", "aug_ops", "aug_n", "aug_m", "aug_cutout")
TEXT_OP_GROUPS: dict[str, tuple[str, ...]] = {
    "eda": EDA_OPS,
    "all": EDA_OPS + ("punctuation",),
    "word": ("synonym_replace", "random_insert"),
    "order": ("random_swap", "random_delete", "punctuation"),
}
# the policy half of families whose policies are ops of a group with copies (text, series)
TEXT_POLICY_KEYS = ("aug_modality", "aug_ops", "aug_n", "aug_m", "aug_copies")
SERIES_OP_GROUPS: dict[str, tuple[str, ...]] = {
    "reference": SERIES_REFERENCE_OPS,
    "all": SERIES_ALL_OPS,
    "magnitude": ("jitter", "scaling", "magnitude_warp"),
    "time": ("time_warp", "window_slice", "window_warp", "permutation"),
    "frequency": ("freq_mask", "freq_perturb"),
}


def _randaugment_grid(n: tuple[int, ...], m: tuple[float, ...]) -> list[str]:
    return [f"rand-n{a}-m{b:g}" for a in n for b in m]


def _eda_grid(eda_m: tuple[float, ...], eda_c: tuple[int, ...]) -> list[str]:
    return [f"eda-m{a:g}-c{b}" for a in eda_m for b in eda_c]


def _series_grid(series_m: tuple[float, ...], series_c: tuple[int, ...]) -> list[str]:
    return [f"series-m{a:g}-c{b}" for a in series_m for b in series_c]


@dataclass(frozen=True)
class PolicyFamily:
    """What the joint space and the baselines need to know of one modality's augmentation."""

    modality: str
    op_groups: dict[str, tuple[str, ...]]
    keys: tuple[str, ...]  # the policy half's keys of a point
    defaults: dict[str, Any]  # JointSpace ranges for this modality
    baselines: tuple[str, ...]  # standard policies trained beside the grid
    simple: str  # the parameter-free standard policy every comparison shows (TrivialAugment's rule)
    grid_prefix: str  # specs of the grid's points start with it
    grid_name: str  # the grid's name in tables
    grid: Any  # (baselines section fields) -> the grid's specs
    pbt: bool = False  # PBA's schedules (tune.pba) are made of this modality's ops

    @property
    def has_copies(self) -> bool:
        """Its points are ``aug_n`` ops of a group with copies (text), not crop, flip, RandAugment
        and cutout (images)."""
        return "aug_copies" in self.keys


FAMILIES: dict[str, PolicyFamily] = {
    "image": PolicyFamily("image", OP_GROUPS, POLICY_KEYS, {}, ("none", "basic", "trivialaugment"), "trivialaugment",
                          "rand-", "RandAugment", lambda b: _randaugment_grid(b.randaugment_n, b.randaugment_m),
                          pbt=True),
    "text": PolicyFamily(
        "text", TEXT_OP_GROUPS, TEXT_POLICY_KEYS,
        {"lr": (1e-5, 1e-3), "weight_decay": (1e-4, 1e-1), "label_smoothing": (0.0, 0.2), "crop": (0.0,),
         "hflip": (0.0,), "cutout": (0.0,), "ops": ("eda", "all", "word", "order"), "n": (0, 1, 2), "m": (0, 6),
         "copies": (1, 2, 4, 8, 16)},
        ("none", "text-trivialaugment"), "text-trivialaugment", "eda-", "EDA",
        lambda b: _eda_grid(b.eda_m, b.eda_c)),
    "series": PolicyFamily(
        "series", SERIES_OP_GROUPS, TEXT_POLICY_KEYS,
        {"lr": (1e-4, 1e-2), "weight_decay": (1e-5, 1e-1), "label_smoothing": (0.0, 0.2), "crop": (0.0,),
         "hflip": (0.0,), "cutout": (0.0,), "ops": tuple(SERIES_OP_GROUPS), "n": (0, 1, 2), "m": (0, 10),
         "copies": (1, 2, 4, 8)},
        ("none", "series-basic", "series-trivialaugment"), "series-trivialaugment", "series-m",
        "reference ops", lambda b: _series_grid(b.series_m, b.series_c)),
}
ALL_POLICY_KEYS = frozenset(POLICY_KEYS) | frozenset(TEXT_POLICY_KEYS)


def family(modality: str) -> PolicyFamily:
    """The joint space's policy half for ``modality``; a ValueError naming the covered ones."""
    if modality not in FAMILIES:
        raise ValueError(f"search: no joint space for {modality!r} policies; covered: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[modality]


def grid_family(spec: str) -> PolicyFamily | None:
    """The family whose grid ``spec`` is a point of (None: not a grid point)."""
    return next((f for f in FAMILIES.values() if str(spec).startswith(f.grid_prefix)), None)


@dataclass(frozen=True)
class JointSpace:
    """Ranges of the joint space (``search.space`` in an experiment file), for ``modality``'s
    policies (``FAMILIES``; the defaults below are the image ones)."""

    modality: str = "image"  # the catalogue its policy ops come from
    lr: tuple[float, float] = (3e-4, 1e-2)  # log-uniform
    weight_decay: tuple[float, float] = (1e-5, 1e-2)  # log-uniform
    label_smoothing: tuple[float, float] = (0.0, 0.2)
    crop: tuple[float, ...] = (0.0, 0.5, 0.7, 0.85)  # random-resized crop's lower scale; 0: no crop
    hflip: tuple[float, ...] = (0.0, 0.5)
    ops: tuple[str, ...] = ("all", "geometric", "photometric")
    n: tuple[int, ...] = (0, 1, 2, 3)
    m: tuple[int, int] = (0, 10)  # integer magnitudes, inclusive
    cutout: tuple[float, ...] = (0.0, 0.5)
    copies: tuple[int, ...] = (0,)  # text: augmented copies of each sample (EDA's n_aug)
    # generated samples mixed into fine-tuning (finetune.synthetic): the fraction of every epoch's
    # slots they fill and the confidence their pseudo-labels need; searched when given more than (0,)
    synthetic_fraction: tuple[float, ...] = (0.0,)
    synthetic_min_confidence: tuple[float, ...] = (0.0,)

    @property
    def searches_synthetic(self) -> bool:
        """Whether points carry the generated samples' fraction and confidence threshold."""
        return self.synthetic_fraction != (0.0,) or self.synthetic_min_confidence != (0.0,)

    @classmethod
    def for_modality(cls, modality: str, **ranges: Any) -> JointSpace:
        """The space for ``modality``: its family's defaults, then ``ranges`` (None: the default)."""
        chosen = {k: v for k, v in ranges.items() if v is not None}
        return cls(modality=modality, **{**family(modality).defaults, **chosen})

    @property
    def family(self) -> PolicyFamily:
        return family(self.modality)

    def __post_init__(self) -> None:
        groups = self.family.op_groups
        for name in ("lr", "weight_decay"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"search.space.{name}: a log-uniform range needs 0 < low <= high, got {lo}..{hi}")
        if not 0 <= self.label_smoothing[0] <= self.label_smoothing[1] < 1:
            raise ValueError(f"search.space.label_smoothing: need 0 <= low <= high < 1, got {self.label_smoothing}")
        unknown = sorted(set(self.ops) - set(groups))
        if unknown:
            raise ValueError(f"search.space.ops: unknown {self.modality} op group(s) {unknown}; known: {sorted(groups)}")
        if self.family.has_copies:
            for name in ("crop", "hflip", "cutout"):
                if any(getattr(self, name)):
                    raise ValueError(f"search.space.{name}: {self.modality} policies have no {name}; leave it out")
        if not self.copies or any(c < 0 for c in self.copies):
            raise ValueError(f"search.space.copies: invalid choices {self.copies}")
        if not 0 <= self.m[0] <= self.m[1] <= 10:
            raise ValueError(f"search.space.m: magnitudes are 0..10, got {self.m}")
        checks = {"crop": all(0 <= c < 1 for c in self.crop), "hflip": all(0 <= p <= 1 for p in self.hflip),
                  "n": all(n >= 0 for n in self.n), "cutout": all(0 <= p <= 1 for p in self.cutout),
                  "synthetic_fraction": all(0 <= f < 1 for f in self.synthetic_fraction),
                  "synthetic_min_confidence": all(0 <= c < 1 for c in self.synthetic_min_confidence)}
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

        hparams = {
            "lr": log_uniform(*self.lr),
            "weight_decay": log_uniform(*self.weight_decay),
            "label_smoothing": float(rng.uniform(*self.label_smoothing)),
        }
        if self.family.has_copies:
            point = {**hparams, "aug_modality": self.modality, "aug_ops": pick(self.ops), "aug_n": pick(self.n),
                     "aug_m": int(rng.integers(self.m[0], self.m[1] + 1)), "aug_copies": pick(self.copies)}
        else:
            point = {
                **hparams,
                "aug_crop": pick(self.crop), "aug_hflip": pick(self.hflip), "aug_ops": pick(self.ops),
                "aug_n": pick(self.n), "aug_m": int(rng.integers(self.m[0], self.m[1] + 1)),
                "aug_cutout": pick(self.cutout),
            }
        if self.searches_synthetic:  # drawn last: spaces without them draw the same points as before
            point.update(synthetic_fraction=float(pick(self.synthetic_fraction)),
                         synthetic_min_confidence=float(pick(self.synthetic_min_confidence)))
        return point

    def tune_domains(self) -> dict[str, Any]:
        """The same space as Ray Tune search domains (for Optuna's TPE through Tune)."""
        from ray import tune

        hparams = {
            "lr": tune.loguniform(*self.lr),
            "weight_decay": tune.loguniform(*self.weight_decay),
            "label_smoothing": tune.uniform(*self.label_smoothing),
        }
        if self.searches_synthetic:
            hparams.update(synthetic_fraction=tune.choice(list(self.synthetic_fraction)),
                           synthetic_min_confidence=tune.choice(list(self.synthetic_min_confidence)))
        if self.family.has_copies:
            return {**hparams, "aug_modality": self.modality, "aug_ops": tune.choice(list(self.ops)),
                    "aug_n": tune.choice(list(self.n)), "aug_m": tune.randint(self.m[0], self.m[1] + 1),
                    "aug_copies": tune.choice(list(self.copies))}
        return {
            **hparams,
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
        modality = point.get("aug_modality", "image")
        if family(modality).has_copies:
            return _family_policy(point, name, family(modality))
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
        return {k: v for k, v in point.items() if k not in ALL_POLICY_KEYS}

    @staticmethod
    def decode(point: dict[str, Any], name: str = "searched") -> tuple[Policy, dict[str, Any]]:
        """(policy, fine-tune overrides) of a point."""
        return JointSpace.policy(point, name), JointSpace.hparams(point)


def _family_policy(point: dict[str, Any], name: str, fam: PolicyFamily) -> Policy:
    """A point of a family whose policies are ``aug_n`` ops of a group at one magnitude, with
    ``aug_copies`` augmented copies of each sample (text)."""
    missing = [k for k in fam.keys if k not in point]
    if missing:
        raise ValueError(f"a {fam.modality} joint-space point needs {list(fam.keys)}; missing {missing}")
    if point["aug_ops"] not in fam.op_groups:
        raise ValueError(f"aug_ops {point['aug_ops']!r} is not a {fam.modality} op group ({sorted(fam.op_groups)})")
    n, m = int(point["aug_n"]), float(point["aug_m"])
    choices = tuple((Op(op, magnitude=m),) for op in fam.op_groups[point["aug_ops"]]) if n else ()
    return Policy(name=name, choices=choices, num_ops=num_ops_distribution(n) if n else (1.0,),
                  copies=int(point["aug_copies"]) if n else 0, modality=fam.modality)


def describe(point: dict[str, Any]) -> str:
    """A point in one short line, for tables and logs."""
    aug = JointSpace.policy(point)
    hp = JointSpace.hparams(point)
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hp.items()))
    return f"{aug.to_string()} | {shown}"
