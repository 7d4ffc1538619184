"""The ``finetune`` section of an experiment: its schema, the schedule's length from the
labelled count (``steps: auto``), and its defaults taken from the rest of the experiment; and the
``distill`` section (a student trained on fine-tuned teachers' predictions, ``distill.py``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from augtrain.pipelines.modalities import get_modality
from augtrain.pipelines.validation import validation_message


class UnlabelledConfig(BaseModel):
    """``finetune.unlabelled``: training on the pool's samples outside the labelled and validation
    subsets beside the labelled batch (``unlabelled.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # none: the labelled subset only; fixmatch: FixMatch's consistency loss (Sohn et al. 2020)
    method: Literal["none", "fixmatch"] = "none"
    ratio: int = Field(3, ge=1)  # unlabelled samples per labelled one in each step (FixMatch's mu; 7 there)
    threshold: float = Field(0.95, gt=0, le=1)  # confidence a pseudo-label needs (FixMatch's tau)
    weight: float = Field(1.0, ge=0)  # of the unlabelled loss beside the labelled one (lambda_u)
    # the weak view that gives the pseudo-label; left out: the modality's (images: ``weak``, a
    # flip and a translation of up to 12.5 %, as FixMatch's); the strong view is the policy in force
    weak: str | None = None

    @property
    def enabled(self) -> bool:
        return self.method != "none"


class FinetuneConfig(BaseModel):
    """The ``finetune`` section of an experiment file (see ``configs/finetune-*.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: str | list[str] | None = None  # pool of labelled shards (default: the experiment's data.train)
    test: str | list[str] | None = None  # held-out evaluation split (default: data.test)
    labels: int | float = 0.01  # labelled subset: a count (int) or a fraction of the pool (float in (0, 1])
    val_labels: int | float = 0  # validation subset drawn from the rest of the pool (0: none)
    # a member naming each sample's group (``group``: rotten-tomatoes' film): the validation subset
    # is then whole groups, and the labelled subset comes from the others (a group-disjoint test
    # split is measured by a group-disjoint validation split)
    val_group_key: str | None = None
    label_seed: int = 0
    label_key: str = "cls"
    modality: str = "image"  # a registered modality (default: the experiment's data.modality)
    mode: Literal["full", "linear", "scratch"] = "full"
    encoder: str | None = None  # registered encoder when no checkpoint is given (scratch)
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    probe_batch_norm: bool = False  # linear mode: BatchNorm (no affine) before the linear layer, as MAE
    # keep the first k layers of the pretrained projection head on the encoder (SimCLRv2's
    # fine-tuning from the head's middle layer; objectives with a projection head only)
    head_layers: int = Field(0, ge=0)
    channels: Literal[1, 3] = 3
    size: int | None = Field(None, ge=1)  # input side; None keeps the stored size
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    # augmentation of the labelled subset (any parse_policy spec of the modality); left out (or
    # null): the modality's default, its catalogue's finetune_default (TrivialAugment for images,
    # none for text and series)
    policy: str = "trivialaugment"
    # generated samples mixed into training (``augtrain generate`` shards, labelled): this fraction
    # of every epoch's slots holds one of them instead of a real sample, so an epoch keeps its
    # length and every fraction trains for the same compute; their labels' confidence must reach
    # ``synthetic_min_confidence``. Never in the validation or test split.
    synthetic: str | list[str] | None = None
    synthetic_fraction: float = Field(0.0, ge=0, lt=1)
    synthetic_min_confidence: float = Field(0.0, ge=0, lt=1)
    # the pool's other samples, unlabelled, in training (FixMatch); see UnlabelledConfig
    unlabelled: UnlabelledConfig = Field(default_factory=UnlabelledConfig)
    backend: Literal["auto", "albumentations", "numpy", "dali"] = "auto"
    # the schedule's length: ``epochs`` when given, else ``steps`` optimizer steps rounded up to
    # whole epochs; ``steps: auto`` scales them with the labelled-set size (``auto_steps``)
    epochs: int | None = Field(None, ge=1)
    steps: int | Literal["auto"] = "auto"
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # mixup (Zhang et al. 2018): each batch trains on lam x + (1 - lam) x' of itself and a shuffled
    # copy, lam ~ Beta(mixup, mixup), the loss mixed likewise; 0 turns it off
    mixup: float = Field(0.0, ge=0)
    # what is mixed: ``input`` the encoder's inputs (continuous ones only: images, series);
    # ``features`` the pooled features the linear layer sees (Guo et al. 2019's senMixup for
    # text, Verma et al. 2019's manifold mixup at the last layer); ``auto``: input where the
    # modality's inputs are continuous, features otherwise (token ids)
    mixup_at: Literal["auto", "input", "features"] = "auto"
    layer_decay: float = Field(1.0, gt=0, le=1)  # LR of block i = lr * layer_decay ** (blocks - i)
    warmup_epochs: float | None = Field(None, ge=0)  # absolute; when None, warmup_fraction of the run
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    seed: int = 0
    # bf16 autocast where it is fast (a CUDA device with bf16, a CPU with AMX), fp32 otherwise
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # epochs between validation passes (and checkpoints) of `augtrain finetune`; auto: about 10
    # a run (30 with ``keep: best-val``; every epoch of a short run), the last epoch always
    validate_every: int | Literal["auto"] = "auto"
    # the weights a run ends with (tested, saved, predicted with): the last epoch's, or those of
    # its validation pass with the highest accuracy (early stopping's selection, as EDA's reference
    # code and transformers' load_best_model_at_end do; needs val_labels). A copy of the best
    # weights is kept on the CPU and in every checkpoint, so a resumed run selects the same way.
    keep: Literal["last", "best-val"] = "last"
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False

    @field_validator("labels", "val_labels")
    @classmethod
    def _count_or_fraction(cls, value: int | float, info: ValidationInfo) -> int | float:
        if isinstance(value, float) and value > 1.0 and not value.is_integer():
            raise ValueError(f"{value} is neither a fraction in (0, 1] nor a whole count")
        if value < 0 or (info.field_name == "labels" and value == 0):
            raise ValueError(f"must be {'> 0' if info.field_name == 'labels' else '>= 0'}, got {value}")
        return value

    @field_validator("encoder_kwargs")
    @classmethod
    def _absolute_tokenizer(cls, value: dict[str, Any]) -> dict[str, Any]:
        from augtrain.pipelines.data.tokenizer import absolute_tokenizer

        return absolute_tokenizer(value)

    @field_validator("synthetic")
    @classmethod
    def _absolute_synthetic(cls, value: str | list[str] | None) -> str | list[str] | None:
        """Local paths made absolute (trials run in their own working directories); URLs kept."""
        import os

        from augtrain.pipelines.data.storage import is_url

        if isinstance(value, list):
            return [v if is_url(v) else os.path.abspath(v) for v in value]
        return value if value is None or is_url(value) else os.path.abspath(value)

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str) -> str:
        get_modality(value)  # raises, naming the registered ones
        return value

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and "modality" in info.data:  # else the modality's own error is reported
            get_modality(info.data["modality"]).parse_policy(value)  # raises PolicyError naming the op
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_policy(cls, data: Any) -> Any:
        """No policy named: the modality's default (its catalogue's ``finetune_default``)."""
        if isinstance(data, dict) and data.get("policy") is None:
            from augtrain.augment.registry import PolicyError, catalogue

            try:
                data = {**data, "policy": catalogue(str(data.get("modality", "image"))).finetune_default}
            except PolicyError:
                pass  # an unknown modality: its own error is reported
        return data

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if isinstance(self.validate_every, int) and self.validate_every < 1:
            raise ValueError(f"validate_every must be >= 1 or 'auto', got {self.validate_every}")
        if self.val_group_key and not self.val_labels:
            raise ValueError(f"val_group_key {self.val_group_key!r} draws the validation subset by group: set "
                             "finetune.val_labels (> 0)")
        if self.keep == "best-val" and not self.val_labels:
            raise ValueError("keep: best-val selects on the validation split: set finetune.val_labels (> 0)")
        if isinstance(self.steps, int) and self.steps < 1:
            raise ValueError(f"steps must be >= 1 or 'auto', got {self.steps}")
        if self.epochs is not None and self.warmup_epochs is not None and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be <= epochs ({self.epochs})")
        if self.unlabelled.weak is not None:
            get_modality(self.modality).parse_policy(self.unlabelled.weak)  # raises PolicyError naming the op
        if self.synthetic_fraction > 0 and self.synthetic is None:
            raise ValueError(f"synthetic_fraction {self.synthetic_fraction} needs finetune.synthetic (generated shards)")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} need the same number of entries")
        if self.mixup > 0 and self.mixup_at == "input" and not get_modality(self.modality).mixable:
            raise ValueError(f"mixup_at input: the {self.modality} modality's inputs cannot be mixed "
                             "(mix the encoder's features: finetune.mixup_at features, or auto)")
        return self

    @property
    def mixup_layer(self) -> Literal["input", "features"]:
        """Where mixup mixes: ``mixup_at`` with ``auto`` resolved by the modality."""
        if self.mixup_at != "auto":
            return self.mixup_at
        return "input" if get_modality(self.modality).mixable else "features"

    def with_updates(self, **values: Any) -> FinetuneConfig:
        """A validated copy with ``values`` replaced."""
        return FinetuneConfig.model_validate({**self.model_dump(), **values})

    def for_labelled(self, n: int) -> FinetuneConfig:
        """This config with its length fixed for ``n`` labelled samples: ``epochs`` from
        ``steps`` unless ``epochs`` is given."""
        return self if self.epochs is not None else self.with_updates(
            epochs=budget_epochs(self.steps, n, self.batch_size))

    @property
    def resolved_epochs(self) -> int:
        """``epochs`` of a config that ``for_labelled`` has fixed."""
        if self.epochs is None:
            raise ValueError("finetune: the schedule is not fixed yet (call for_labelled with the labelled count)")
        return self.epochs

    @property
    def resolved_validate_every(self) -> int:
        """Epochs between validation passes: ``validate_every``, or (auto) a tenth of the run (a
        thirtieth with ``keep: best-val``, whose selection is only as fine as its passes)."""
        if self.validate_every != "auto":
            return int(self.validate_every)
        return max(1, self.resolved_epochs // (30 if self.keep == "best-val" else 10))

    def validates_after(self, epoch: int) -> bool:
        """Whether the validation split is evaluated after ``epoch`` (1-based): every
        ``resolved_validate_every`` epochs and after the last."""
        return epoch == self.resolved_epochs or epoch % self.resolved_validate_every == 0

    @property
    def resolved_warmup_epochs(self) -> float:
        """Warmup in epochs: ``warmup_epochs`` when given, else ``warmup_fraction`` of the run."""
        if self.warmup_epochs is not None:
            return min(self.warmup_epochs, self.resolved_epochs)
        return self.warmup_fraction * self.resolved_epochs


def auto_steps(n: int, batch_size: int) -> int:
    """Optimizer steps for ``n`` labelled samples: 30 passes over the data, at least 500 steps
    and at most 10,000 (the idea of BiT-HyperRule, Kolesnikov et al. 2020: the schedule's length
    from the dataset's size, 500 steps below 20k examples and 10k above, so that 100 labels
    and 60,000 both get a sensible run without tuning). 100 or 600 labels at batch 64: 500
    steps; 10,000: 4,688; 60,000: 10,000."""
    return int(min(10_000, max(500, round(30 * n / batch_size))))


def budget_epochs(steps: int | str, n: int, batch_size: int) -> int:
    """Whole epochs that hold ``steps`` optimizer steps (``auto``: ``auto_steps``) over ``n``
    labelled samples at ``batch_size`` (the last batch of an epoch may be short)."""
    if n < 1:
        raise ValueError(f"finetune: no labelled samples to plan a schedule for (n={n})")
    steps = auto_steps(n, batch_size) if steps == "auto" else int(steps)
    return max(1, math.ceil(steps / math.ceil(n / batch_size)))


def parse_finetune_config(data: dict[str, Any] | None, where: str = "<config>", **defaults: Any) -> FinetuneConfig:
    """Validate a ``finetune`` mapping; ``defaults`` fill keys it leaves out. Errors name the key."""
    values = {**{k: v for k, v in defaults.items() if v is not None}, **(data or {})}
    try:
        return FinetuneConfig.model_validate(values)
    except ValidationError as exc:
        raise ValueError(validation_message(exc, where, "finetune")) from None


def finetune_config_from_experiment(experiment: Any, where: str = "<config>", **overrides: Any) -> FinetuneConfig:
    """The ``finetune`` section of an experiment (``pipelines.config.ExperimentConfig``), with the
    keys it leaves out taken from the experiment: data.train/test/modality/channels, augment.size,
    loop.mean/std and seed. ``overrides`` (command-line values) win over both."""
    loop = experiment.loop or {}
    defaults = {"train": experiment.data.train, "test": experiment.data.test, "modality": experiment.data.modality,
                "channels": experiment.data.channels,
                "size": experiment.augment.size, "mean": loop.get("mean"), "std": loop.get("std"),
                "seed": experiment.seed}
    section = dict(experiment.finetune or {})
    section.update({k: v for k, v in overrides.items() if v is not None})
    return parse_finetune_config(section, where, **defaults)


class DistillConfig(BaseModel):
    """The ``distill`` section of an experiment (``augtrain distill``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # soften the teachers' logits by this temperature before averaging (SimCLRv2 uses 1)
    temperature: float = Field(1.0, gt=0)
    # the student's starting weights: the pretraining checkpoint (as a fine-tune starts), or the
    # same architecture from scratch
    init: Literal["pretrained", "scratch"] = "pretrained"
    # optimizer steps over the student's set (pool minus validation), counted at batch_size as
    # finetune.steps are; whole epochs follow from them (with N workers each step takes N batches)
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float | None = Field(None, gt=0)  # default: the teacher's
    weight_decay: float | None = Field(None, ge=0)  # default: the teacher's
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # soft targets are smooth already
    policy: str | None = None  # the student's noise; default: the teacher's policy
    seed: int | None = None  # default: the teacher's
    workers: int | None = Field(None, ge=1)  # Ray Train workers of the student; default: the teacher's


def parse_distill_config(data: dict[str, Any] | None, where: str = "<config>") -> DistillConfig:
    """Validate a ``distill`` mapping; errors name the key."""
    try:
        return DistillConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ValueError(validation_message(exc, where, "distill")) from None
