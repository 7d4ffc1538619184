"""Experiment files: one YAML per experiment, checked completely before any cluster work.

    name: fmnist-simclr
    seed: 0
    data:    {train: data/fashion-mnist/train, channels: 1}
    augment: {policy: simclr, size: 28}
    model:   {objective: simclr, encoder: cnn-tiny, encoder_kwargs: {in_chans: 1}}
    engine:  {zero_stage: 2, micro_batch_size: 256, base_lr: 1.0e-3}     # pipelines.engine.EngineConfig
    loop:    {epochs: 1, checkpoint_every: 50}                           # pipelines.train.loop.LoopConfig
    cluster: {workers: 2, cpus_per_worker: 1, max_failures: 2}

An unknown or ill-typed key is an error naming the key and the file; ``--set a.b=value``
overrides (values parsed as YAML scalars). Sections owned by other components (``finetune``,
``search``, ``distill``) are kept as given here and validated by the commands that use them. The fully
resolved config is what checkpoints and results store.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from augtrain.pipelines.train.checkpoint import RetentionConfig
from augtrain.pipelines.train.engine import EngineConfig
from augtrain.pipelines.train.loop import LoopConfig
from augtrain.pipelines.modalities import get_modality
from augtrain.pipelines.validation import first_error, validation_message


class ConfigError(ValueError):
    """A bad experiment file or override; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    train: str | list[str]  # shard spec: directory, manifest, tar, pattern, URL
    test: str | list[str] | None = None
    modality: str = "image"  # a registered modality; a shard manifest recording another is refused
    channels: Literal[1, 3] | None = 3  # images
    label_key: str | None = None  # pretraining needs no labels; "cls" makes them required
    strict: bool = False
    block_rows: int = Field(128, ge=1)
    read_cpus: float = Field(1.0, gt=0)

    @field_validator("modality")
    @classmethod
    def _registered(cls, value: str) -> str:
        get_modality(value)  # raises, naming the registered ones
        return value


class AugmentSection(_Section):
    policy: str = "none"  # a policy spec: none, basic, mae, simclr, rand-n2-m9, trivialaugment, ...
    size: int | None = Field(None, ge=1)  # output side in pixels (crop policies need it)
    backend: Literal["auto", "albumentations", "numpy", "dali"] = "auto"  # per-sample backend in the reader
    # where augmentation runs: auto = in the train worker with DALI when it has a GPU (encoded
    # bytes travel, nvJPEG decodes), else in the Ray Data read tasks on the CPU
    placement: Literal["auto", "reader", "worker"] = "auto"


class ModelSection(_Section):
    objective: str = "simclr"  # registered objective (augtrain.models.list_objectives())
    encoder: str = "cnn-tiny"  # registered encoder (augtrain.models.list_models())
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # objective arguments
    # a checkpoint (or a run's checkpoints folder: its latest) whose weights start the objective:
    # every weight it holds must be the objective's, same shape; the objective's others keep their
    # initialisation (a conditional VAE from a VAE: its class embeddings). Unused when resuming.
    init: str | None = None

    @field_validator("init")
    @classmethod
    def _absolute_init(cls, value: str | None) -> str | None:
        return os.path.abspath(value) if value else None

    @field_validator("encoder_kwargs")
    @classmethod
    def _absolute_tokenizer(cls, value: dict[str, Any]) -> dict[str, Any]:
        from augtrain.pipelines.data.tokenizer import absolute_tokenizer

        return absolute_tokenizer(value)

    def spec(self) -> dict[str, Any]:
        return {"objective": self.objective, "encoder": self.encoder,
                "encoder_kwargs": dict(self.encoder_kwargs), **self.kwargs}


class ClusterSection(_Section):
    address: str | None = None  # Ray address; default: RAY_ADDRESS, else an embedded local Ray
    # Ray Train workers: a count, or [MIN, MAX] for an elastic run that shrinks when nodes are
    # lost and grows when they come back (docs/pretrain/README.md, "Elastic pretraining")
    workers: int | tuple[int, int] = 2
    # an elastic run checks this often whether the cluster holds more (or fewer) workers
    resize_interval_s: float = Field(60.0, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: Literal["auto", True, False] = "auto"
    max_failures: int = Field(2, ge=0)  # worker/node failures restored from the last checkpoint
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    worker_resources: dict[str, float] = Field(default_factory=dict)  # extra custom resources per worker
    image: str | None = None  # container image, for Kubernetes rendering

    @field_validator("workers", mode="before")
    @classmethod
    def _worker_range(cls, value: Any) -> int | tuple[int, int]:
        if isinstance(value, (list, tuple)):
            if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError("expected a count or [MIN, MAX] (two whole numbers)")
            low, high = value
            if not 1 <= low <= high:
                raise ValueError("[MIN, MAX] needs 1 <= MIN <= MAX")
            return low if low == high else (low, high)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ValueError("must be >= 1 (a count, or [MIN, MAX] for an elastic run)")
        return value

    @property
    def elastic(self) -> bool:
        return isinstance(self.workers, tuple)

    @property
    def min_workers(self) -> int:
        return self.workers[0] if isinstance(self.workers, tuple) else self.workers

    @property
    def max_workers(self) -> int:
        return self.workers[1] if isinstance(self.workers, tuple) else self.workers

    def describe_workers(self) -> str:
        return f"{self.min_workers}-{self.max_workers} (elastic)" if self.elastic else str(self.workers)


class ExperimentConfig(_Section):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=47)
    seed: int = 0
    output: str | None = None  # default: runs/<name>
    data: DataSection
    augment: AugmentSection = Field(default_factory=AugmentSection)
    model: ModelSection = Field(default_factory=ModelSection)
    engine: dict[str, Any] = Field(default_factory=dict)  # EngineConfig fields
    loop: dict[str, Any] = Field(default_factory=dict)  # LoopConfig fields
    cluster: ClusterSection = Field(default_factory=ClusterSection)
    finetune: dict[str, Any] | None = None  # validated by `augtrain finetune`
    search: dict[str, Any] | None = None  # validated by `augtrain search`
    distill: dict[str, Any] | None = None  # validated by `augtrain distill`

    @property
    def output_dir(self) -> str:
        return self.output or os.path.join("runs", self.name)

    def engine_config(self, **computed: Any) -> EngineConfig:
        return EngineConfig(**{**computed, **self.engine}).validate()

    def loop_config(self, **computed: Any) -> LoopConfig:
        values = {**computed, **_tuples(self.loop)}
        if isinstance(values.get("retention"), dict):
            values["retention"] = RetentionConfig(**values["retention"])
        return LoopConfig(**values).validate()

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _check_dataclass_section(cls: type, values: dict[str, Any], section: str, where: str) -> None:
    """Unknown keys and wrong types of a dataclass-backed section, named."""
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_unknown(where, f"{section}.{key}", key, fields))
        try:
            TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {section}.{key}: {exc.errors()[0]['msg']} (got {value!r})") from None


def _unknown(where: str, path: str, key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"
    return f"{where}: unknown key {path!r}{hint}"


def apply_overrides(data: dict[str, Any], overrides: list[str], where: str) -> dict[str, Any]:
    """``a.b=value`` -> ``data["a"]["b"] = yaml(value)``."""
    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. engine.zero_stage=3")
        keys = path.split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {key!r} in {where} is not a section")
        node[keys[-1]] = yaml.safe_load(text) if text else None
    return data


def parse_config(data: Any, where: str = "<config>") -> ExperimentConfig:
    """Validate a config mapping; every error names ``where`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections at the top level")
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        error = first_error(exc)
        if error["type"] == "extra_forbidden":  # with the nearest known key
            section = _section_model(error["loc"][:-1])
            path = ".".join(str(p) for p in error["loc"])
            raise ConfigError(_unknown(where, path, str(error["loc"][-1]), section.model_fields)) from None
        raise ConfigError(validation_message(exc, where)) from None
    _check_dataclass_section(EngineConfig, config.engine, "engine", where)
    _check_dataclass_section(LoopConfig, config.loop, "loop", where)
    try:
        config.engine_config()
        config.loop_config()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return config


def _section_model(loc: tuple) -> type[BaseModel]:
    model: type[BaseModel] = ExperimentConfig
    for key in loc:
        annotation = model.model_fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return model


def load_config(path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment file."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    data = apply_overrides(data or {}, list(overrides or []), path)
    return parse_config(data, path)


def save_resolved(config: ExperimentConfig, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(config.resolved(), f, sort_keys=False)
