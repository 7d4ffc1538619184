"""The ``search`` section of an experiment file: the search method over the joint space of policy
and fine-tune hyperparameters, the controls, baselines, seeds and resources. Checked before Ray starts.

    search:
      method:    halving            # halving | tpe | random | pbt | none
      space:     {lr: [3.0e-4, 1.0e-2], crop: [0, 0.5, 0.7, 0.85], n: [0, 1, 2, 3], ...}   # tune.space.JointSpace
      halving:   {candidates: 16, eta: 4, min_fraction: 0.125}
      random:    {num_samples: auto}  # the control: random points at full length, at the method's compute
      controls:  {enabled: true, knn_k: 20}
      baselines: {policies: [none, basic, trivialaugment], randaugment_n: [1, 2, 3], randaugment_m: [2, 4, 6, 8]}
                                      # text: {policies: [none, text-trivialaugment], eda_m: [1, 2], eda_c: [4, 16]}
                                      # series: {policies: [none, series-basic], series_m: [2, 5], series_c: [1, 4]}
      evaluate_seeds: [1, 2]          # every row of the table trained again with these seeds
      distill:   {enabled: false, student: {steps: 1000, batch_size: 128}}   # searched model -> student
      pbt:       {population: 4, perturbation_interval: 3, quantile_fraction: 0.25, init: zeros, epochs: null}
      hpo:       {when: before, num_samples: 8, policy: trivialaugment}
      resources: {cpus_per_trial: 1, reserve_cpus: 1}

Epoch counts come from the ``finetune`` section (``finetune.epochs``): every baseline and the
replay train that many epochs, and so does every PBT member unless ``search.pbt.epochs`` makes
the search shorter (the schedule is then stretched to ``finetune.epochs`` for the replay).
Compute is counted in trial-epochs either way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from augtrain.augment import parse_policy
from augtrain.pipelines.finetune.config import DistillConfig
from augtrain.pipelines.validation import validation_message
from augtrain.tune.pba import NUM_OPS, PBA_OPS, PBASpace
from augtrain.tune.space import FAMILIES, JointSpace, family


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PBTSection(_Section):
    population: int = Field(4, ge=2)
    perturbation_interval: int = Field(3, ge=1)  # iterations (epochs_per_iteration epochs each) between exploits
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.2, ge=0, le=1)  # PBA's explore
    ops: tuple[str, ...] = PBA_OPS
    copies: int = Field(2, ge=1)
    num_ops: tuple[float, ...] = NUM_OPS  # probabilities of a count of 0, 1, 2, ... ops fired per sample
    # > 0: the count is searched too, as a level 0..count_max that moves num_ops (PBASpace)
    count_max: int = Field(0, ge=0)
    # true: one magnitude shared by every op (RandAugment's global magnitude), searched as one integer
    shared_magnitude: bool = False
    # iterations before the first exploit (Tune's burn_in_period): members train with their
    # starting policies first, so that early rankings, which favour weak augmentation, do not decide
    burn_in: int = Field(0, ge=0)
    synch: bool = False  # True: every member waits at each perturbation point (PBA's PBT is asynchronous)
    seed: int = 0
    # zeros: every member starts with no augmentation (PBA); random: each member starts from its
    # own uniform draw of the encoding (seeded by search.pbt.seed and the member's seed)
    init: Literal["zeros", "random"] = "zeros"
    # epochs each member trains (its own warmup and cosine decay); the searched schedule is then
    # stretched to finetune.epochs for the replay, as PBA stretches a schedule to a longer run.
    # None: finetune.epochs (no stretch)
    epochs: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> PBTSection:
        self.space()  # unknown ops and impossible counts are named
        return self

    def space(self) -> PBASpace:
        """The encoding these settings define."""
        return PBASpace(tuple(self.ops), self.copies, tuple(self.num_ops), self.count_max, self.shared_magnitude)


class BaselineSection(_Section):
    """Standard policies and a grid trained beside the search: images the RandAugment (N, M)
    grid, text EDA's (magnitude, copies) grid, series the reference ops' (magnitude, copies) grid
    (``tune.space.FAMILIES``)."""

    policies: tuple[str, ...] | None = None  # default: the modality's (none, basic, trivialaugment for images)
    randaugment_n: tuple[int, ...] = (1, 2, 3)
    randaugment_m: tuple[float, ...] = (2, 4, 6, 8)
    eda_m: tuple[float, ...] = (1, 2)  # magnitude (alpha = m / 20): EDA's recommended 0.05 and 0.1
    eda_c: tuple[int, ...] = (4, 16)  # copies: EDA's recommendations for 5,000+ and for 500 texts
    series_m: tuple[float, ...] = (2, 5)  # series: the reference ops' magnitude (5: their papers' settings)
    series_c: tuple[int, ...] = (1, 4)  # series: augmented copies of each series

    @model_validator(mode="after")
    def _check(self) -> BaselineSection:
        for spec in self.policies or ():  # a spec no modality knows (each is checked for its modality later)
            errors = []
            for modality in FAMILIES:
                try:
                    parse_policy(spec, modality)
                    break
                except ValueError as exc:
                    errors.append(str(exc))
            else:
                raise ValueError(errors[0])
        if any(n < 0 for n in self.randaugment_n) or any(not 0 <= m <= 10 for m in self.randaugment_m):
            raise ValueError("randaugment_n must be >= 0 and randaugment_m in [0, 10]")
        if any(not 0 <= m <= 10 for m in self.eda_m) or any(c < 0 for c in self.eda_c):
            raise ValueError("eda_m must be in [0, 10] and eda_c >= 0")
        if any(not 0 <= m <= 10 for m in self.series_m) or any(c < 0 for c in self.series_c):
            raise ValueError("series_m must be in [0, 10] and series_c >= 0")
        return self

    def specs(self, modality: str = "image") -> list[str]:
        """Every baseline policy spec of ``modality``: the named ones, then its grid (each checked)."""
        fam = family(modality)
        specs = list(self.policies if self.policies is not None else fam.baselines) + fam.grid(self)
        for spec in specs:
            parse_policy(spec, modality)  # PolicyError naming the spec
        return specs


class HPOSection(_Section):
    when: Literal["off", "before", "after"] = "off"  # before: best hyperparameters feed the policy search
    num_samples: int = Field(8, ge=1)
    policy: str = "trivialaugment"  # augmentation during HPO when it runs before the policy search
    grace_period: int = Field(2, ge=1)  # ASHA: epochs before the first stop decision
    reduction_factor: float = Field(2.0, gt=1)
    lr: tuple[float, float] = (1e-4, 1e-2)  # log-uniform
    weight_decay: tuple[float, float] = (1e-6, 1e-2)  # log-uniform
    label_smoothing: tuple[float, float] = (0.0, 0.2)
    layer_decay: tuple[float, float] = (0.5, 1.0)
    epochs: tuple[int, ...] = ()  # choices; empty: finetune.epochs only
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> HPOSection:
        for name in ("lr", "weight_decay", "label_smoothing", "layer_decay"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: range {lo}..{hi} is decreasing")
        if self.lr[0] <= 0 or self.weight_decay[0] <= 0:
            raise ValueError("lr and weight_decay ranges are log-uniform: their lower ends must be > 0")
        if any(e < 1 for e in self.epochs):
            raise ValueError(f"epochs choices must be >= 1, got {self.epochs}")
        parse_policy(self.policy)
        return self


class SpaceSection(_Section):
    """Ranges of the joint space (``tune.space.JointSpace`` has their meaning); a range left out
    takes the fine-tune's modality's default (``tune.space.FAMILIES``)."""

    lr: tuple[float, float] | None = None
    weight_decay: tuple[float, float] | None = None
    label_smoothing: tuple[float, float] | None = None
    crop: tuple[float, ...] | None = None
    hflip: tuple[float, ...] | None = None
    ops: tuple[str, ...] | None = None
    n: tuple[int, ...] | None = None
    m: tuple[int, int] | None = None
    cutout: tuple[float, ...] | None = None
    copies: tuple[int, ...] | None = None  # text: EDA's augmented copies per sample
    # generated samples (finetune.synthetic): fractions of the epoch and pseudo-label confidences
    synthetic_fraction: tuple[float, ...] | None = None
    synthetic_min_confidence: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> SpaceSection:
        """The ranges, checked now for the modality whose op groups hold ``ops`` (images when
        unset); ``build`` checks them again for the fine-tune's modality."""
        modality = next((m for m, f in FAMILIES.items() if self.ops is None or set(self.ops) <= set(f.op_groups)),
                        "image")
        self.build(modality)
        return self

    def build(self, modality: str = "image") -> JointSpace:
        """The space for ``modality`` (ValueError naming the range at fault)."""
        return JointSpace.for_modality(modality, **self.model_dump())


class HalvingSection(_Section):
    """Successive halving (Jamieson and Talwalkar 2016) in which every rung trains its survivors
    again from the checkpoint with a complete schedule (warmup and decay) at the rung's length,
    rather than continuing truncated runs: rung r trains ``ceil(candidates / eta**r)`` points for
    ``min_fraction * eta**r`` of the full length, until a rung at the full length."""

    candidates: int = Field(16, ge=1)
    eta: int = Field(4, ge=2)
    min_fraction: float = Field(0.125, gt=0, le=1)

    def rungs(self) -> list[tuple[int, float]]:
        """(points, fraction of the full length) per rung; the last rung is at the full length."""
        rungs, count, fraction = [], self.candidates, self.min_fraction
        while True:
            full = fraction >= 1.0 - 1e-3  # 1/9 written as 0.1111111 reaches 1 after two rungs
            rungs.append((count, 1.0 if full else fraction))
            if full:
                return rungs
            count, fraction = max(1, -(-count // self.eta)), fraction * self.eta


class TPESection(_Section):
    """Optuna's TPE over complete short runs (``fraction`` of the full length); the best point is
    trained again at the full length."""

    num_samples: int = Field(10, ge=1)
    fraction: float = Field(0.5, gt=0, le=1)


class RandomSection(_Section):
    """Random search over the same space, every point at the full length: the search's control.
    ``auto``: as many points as the method's compute buys (its trial-epochs / full length)."""

    enabled: bool = True
    num_samples: int | Literal["auto"] = "auto"
    seed_offset: int = 1000  # its draws differ from the method's candidates


class ControlSection(_Section):
    """Rows that say whether the method helped: logistic regression on raw features and a kNN of
    the checkpoint (no training loop), a linear probe and the same network from scratch
    (without augmentation and with the searched policy), each with every evaluation seed."""

    enabled: bool = True
    knn_k: int = Field(20, ge=1)
    probe_lr: float = Field(1e-2, gt=0)  # the linear probe's LR (a frozen encoder takes a larger one)


class ResourceSection(_Section):
    executor: Literal["train", "local"] = "train"  # train: each trial fits a TorchTrainer; local: in the trial process
    cpus_per_trial: float = Field(1.0, gt=0)  # local executor; the train executor uses finetune.workers x cpus_per_worker
    reserve_cpus: float = Field(1.0, ge=0)  # left free for Ray Data tasks and drivers
    max_concurrent: int | None = Field(None, ge=1)  # default: from the cluster's CPUs
    epochs_per_iteration: int = Field(1, ge=1)  # epochs per Tune report (one report = one checkpoint)


class DistillSection(_Section):
    """After the evaluation stage, the searched model of each seed as the teacher of a student of
    the same seed, trained on its soft labels over the unlabelled pool (``augtrain distill``;
    ``pipelines.finetune.distill.DistillConfig`` holds the student's settings)."""

    enabled: bool = False
    student: DistillConfig = Field(default_factory=DistillConfig)  # steps, batch_size, workers, ...


class SearchConfig(_Section):
    name: str | None = None  # Tune experiment prefix; default: the experiment's name
    metric: Literal["val_acc"] = "val_acc"
    # halving (the default: it measured best, docs/tune/README.md), tpe, random, pbt (PBA), or none
    # (baselines and controls only)
    method: Literal["halving", "tpe", "random", "pbt", "none"] = "halving"
    seed: int = 0  # the search's own draws (candidates, TPE)
    space: SpaceSection = Field(default_factory=SpaceSection)
    halving: HalvingSection = Field(default_factory=HalvingSection)
    tpe: TPESection = Field(default_factory=TPESection)
    random: RandomSection = Field(default_factory=RandomSection)
    controls: ControlSection = Field(default_factory=ControlSection)
    pbt: PBTSection = Field(default_factory=PBTSection)
    baselines: BaselineSection = Field(default_factory=BaselineSection)
    hpo: HPOSection = Field(default_factory=HPOSection)
    resources: ResourceSection = Field(default_factory=ResourceSection)
    max_failures: int = Field(2, ge=0)  # retries of a failed trial (from its last checkpoint)
    # repeated hold-out, for labelled sets too small for one validation split to rank trials: every
    # trial of the selection stages trains on `folds` labelled/validation splits at once (drawn with
    # label seeds finetune.label_seed, +1, ...) and reports their mean validation accuracy; its test
    # accuracy and the evaluation stage use the first split. Costs `folds` x the compute (counted in
    # trial-epochs). Local executor only.
    folds: int = Field(1, ge=1)
    replay_seeds: tuple[int, ...] = (0,)  # fine-tune seeds the searched PBT schedule is replayed with
    # after the search, every row of the comparison (no augmentation, TrivialAugment, the grid's
    # best, the searched and random-search points, the controls) trained again with these seeds
    # beside finetune.seed (test accuracy mean and spread; not search compute)
    evaluate_seeds: tuple[int, ...] = ()
    distill: DistillSection = Field(default_factory=DistillSection)


def parse_search_config(data: dict[str, Any] | None, where: str = "<config>") -> SearchConfig:
    """Validate a ``search`` mapping; errors name the file and the key (``search.pbt.population``)."""
    try:
        return SearchConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ValueError(validation_message(exc, where, "search")) from None
