"""The modality interface and its registry: one object per kind of sample that every stage asks.

A ``Modality`` answers the questions the reader, the train loop, fine-tuning and the controls
would otherwise answer with ``if image``: which tar members hold a sample and what they decode
to, how a decoded value is written back, which augmentation catalogue applies and how a
sample's views are drawn, how a column of samples becomes a model input, how samples of
different sizes are brought to one, what the linear control's raw features are, which encoders
and objectives fit and which metric a fine-tune reports. Stages find it by name::

    modality = get_modality(config.data.modality)      # "image", or a registered plug-in
    out = modality.decode_members(raw.members, spec)    # {"image": uint8 [H, W, C]}
    x = modality.to_tensor(batch["view0"], mean, std)   # float [B, C, H, W]

A new modality subclasses ``Modality``, fills in the abstract methods and registers an
instance (``register_modality``) from the module that defines it, so that processes that
unpickle one of its objects (Ray workers) register it too. ``docs/architecture.md`` lists what
it must provide, with the image modality as the worked example.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class SampleError(ValueError):
    """A sample that cannot be used; ``reason`` is short and stable enough to count by."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ModalityError(ValueError):
    """An unknown modality, or data or a model of another modality than the one asked for."""


@dataclass(frozen=True)
class DecodeSpec:
    """What to take from each sample.

    ``modality``: the registered modality its members decode through.
    ``label_key``: extension holding the integer label (None for unlabelled corpora).
    ``channels``: images only: 1 (grayscale) or 3 (RGB); None keeps what is stored.
    ``decode_images``: images only: False passes encoded bytes through (GPU decoders take them).
    """

    label_key: str | None = "cls"
    channels: int | None = 3
    decode_images: bool = True
    modality: str = "image"

    def __post_init__(self) -> None:
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None, got {self.channels!r}")


# (value, rng) -> named outputs of one sample: {"image": ...} or {"view0": ..., "view1": ...}
SampleTransform = Callable[[Any, np.random.Generator], dict[str, Any]]


class Modality:
    """One kind of sample. Subclasses set the class attributes and implement the methods that
    raise ``NotImplementedError``; the others have defaults that fit array-valued samples."""

    name: str = ""
    members: tuple[str, ...] = ()  # tar member extensions holding the value, in preference order
    column: str = ""  # the reader's column of the decoded (un-augmented) value
    formats: tuple[str, ...] = ()  # member extensions ``encode`` writes, the default first
    metric: str = "accuracy"  # what a fine-tune's val_acc / test_acc measure
    worker_augment: bool = False  # can augment batches of encoded samples in the train worker (DALI)
    raw_features_name: str = "raw values"  # what ``raw_features`` are, for the linear control's name
    mixable: bool = True  # encoder inputs are continuous, so two can be mixed (finetune.mixup_at input, auto)

    # ---------------------------------------------------------------- shards

    def find_member(self, members: Mapping[str, bytes]) -> str | None:
        """The extension of the member that holds this sample's value, or None."""
        return next((ext for ext in self.members if ext in members), None)

    def decode(self, ext: str, data: bytes, spec: DecodeSpec) -> Any:
        """One member's bytes -> the sample's value; raises ``SampleError`` when it cannot."""
        raise NotImplementedError

    def decode_members(self, members: Mapping[str, bytes], spec: DecodeSpec) -> dict[str, Any]:
        """A sample's members -> its data columns (``{column: value}`` unless overridden)."""
        ext = self.find_member(members)
        if ext is None:
            raise SampleError("no usable member", f"no {self.name} member ({', '.join(self.members)}) among "
                                                  f"extensions {sorted(members)}")
        return {self.column: self.decode(ext, members[ext], spec)}

    def encode(self, value: Any, fmt: str | None = None) -> tuple[str, bytes]:
        """A value -> (member extension, bytes) for the shard writer; ``fmt`` (one of ``formats``)
        picks the extension."""
        raise NotImplementedError

    def manifest_fields(self, fmt: str, source: Any = None) -> dict[str, Any]:
        """Modality-specific ``manifest.json`` fields of shards of ``source`` written in ``fmt``."""
        return {}

    # ---------------------------------------------------------------- augmentation

    def sample_transform(self, policy: Any, *, size: int | None, views: int, backend: str = "auto"
                         ) -> SampleTransform:
        """A picklable per-sample transform of ``policy`` (a policy of this modality) returning
        ``views`` outputs named by ``view_keys(views)``. The default applies each op's reference
        implementation from the modality's augmentation catalogue; ``backend`` must be auto."""
        if backend != "auto":
            raise ModalityError(f"augment.backend {backend!r}: the {self.name} modality has one backend (auto)")
        return CatalogueTransform(self.parse_policy(policy), size, self.view_keys(views))

    def preview(self, values: Sequence[Any], policy: Any, *, size: int | None = None, per_sample: int = 4,
                seed: int = 0, backend: str = "auto") -> np.ndarray | None:
        """A picture (RGB uint8 ``[H, W, 3]``) of ``values`` beside ``per_sample`` augmented copies
        each under ``policy`` (applied by ``backend``), for reports; None where the modality has no
        picture of its samples."""
        return None

    def describe_augmented(self, values: Sequence[Any], policy: Any, *, per_sample: int = 4, seed: int = 0
                           ) -> str | None:
        """Each of ``values`` beside ``per_sample`` augmented copies under ``policy``, as text (for
        modalities whose samples read as text); None where a picture (``preview``) shows them."""
        return None

    def view_keys(self, num_views: int) -> list[str]:
        """The reader's column names of ``num_views`` augmented views of a sample."""
        from augtrain.augment.plan import view_names

        return view_names(num_views, self.column)

    def parse_policy(self, spec: Any):
        """A policy spec of this modality (names resolve in its augmentation catalogue)."""
        from augtrain.augment import parse_policy

        return parse_policy(spec, self.name)

    # ---------------------------------------------------------------- batches and models

    def to_tensor(self, column: np.ndarray, mean: Sequence[float], std: Sequence[float]):
        """A batch column of values -> the float tensor the encoder takes."""
        raise NotImplementedError

    def stack(self, values: list[Any], where: str) -> np.ndarray:
        """Values of one split (all brought to one shape) -> one array; ``where`` names the data."""
        shapes = {np.shape(v) for v in values}
        if len(shapes) > 1:
            raise ValueError(f"{where}: {self.name} samples of different shapes {sorted(shapes)[:3]}; "
                             f"set finetune.size to bring them to one")
        return np.stack(values)

    def resize(self, value: Any, size: int) -> Any:
        """A value brought to ``size`` (fine-tune inputs of different sizes); identity by default."""
        return value

    def raw_features(self, values: np.ndarray) -> np.ndarray:
        """Values [N, ...] -> float32 [N, D]: the raw features of the linear control."""
        return np.asarray(values, dtype=np.float32).reshape(len(values), -1)

    # inverse regularisation strengths of the linear control, chosen on the validation split
    raw_c_values: tuple[float, ...] = (0.01, 0.1, 1.0)

    def raw_feature_steps(self) -> list[Any]:
        """scikit-learn steps from values to the linear control's features, fitted on the
        labelled subset: ``raw_features`` standardised, by default."""
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        return [FunctionTransformer(self.raw_features), StandardScaler()]

    def check_model(self, encoder: str | None = None, objective: str | None = None, where: str = "model") -> None:
        """Raise ``ModalityError`` when a registered encoder or objective is made for another modality."""
        from augtrain.models import model_modalities, objective_modalities

        for kind, name, fits in (("encoder", encoder, model_modalities), ("objective", objective, objective_modalities)):
            if name is None:
                continue
            allowed = fits(name)
            if allowed is not None and self.name not in allowed:
                raise ModalityError(f"{where}.{kind}: {name!r} is made for {', '.join(allowed)} data, "
                                    f"not {self.name!r}")

    def __repr__(self) -> str:
        return f"<modality {self.name}>"

    def __reduce__(self):
        # unpickled in a process (a Ray worker) that has not registered it: it registers itself
        return (_restore_modality, (type(self), dict(self.__dict__)))


def _restore_modality(cls: type[Modality], state: dict[str, Any]) -> Modality:
    """The registered modality of that name, or this one, registered now."""
    modality = cls.__new__(cls)
    modality.__dict__.update(state)
    return _MODALITIES.setdefault(modality.name, modality)


class CatalogueTransform:
    """Applies plans of a policy with the reference ops of its modality's catalogue:
    ``t(value, rng) -> {key: augmented value}`` for each of ``keys`` (one view per key).
    Values are arrays whose leading one or two dimensions are the ones ops resize."""

    def __init__(self, policy: Any, size: int | None, keys: list[str]) -> None:
        from augtrain.augment.registry import catalogue

        self.policy, self.size, self.keys = policy, size, list(keys)
        self.catalogue = catalogue(policy.modality)  # travels with the transform

    def __setstate__(self, state: dict[str, Any]) -> None:
        from augtrain.augment.registry import list_catalogues, register_catalogue

        self.__dict__.update(state)
        if self.catalogue.modality not in list_catalogues():  # a plug-in's, in a process that never imported it
            register_catalogue(self.catalogue)

    def __call__(self, value: Any, rng: np.random.Generator) -> dict[str, Any]:
        from augtrain.augment.plan import apply_plan

        out = {}
        for key in self.keys:
            x, _ = apply_plan(self.policy, value, rng, self.size, self.catalogue.ops)
            out[key] = np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x
        return out


_MODALITIES: dict[str, Modality] = {}


def register_modality(modality: Modality) -> Modality:
    """Add ``modality`` under its name; a name can be registered once."""
    if not modality.name or not modality.column:
        raise ValueError(f"{type(modality).__name__}: a modality needs a name and a column")
    if modality.name in _MODALITIES and _MODALITIES[modality.name] is not modality:
        raise ValueError(f"modality {modality.name!r} is already registered")
    _MODALITIES[modality.name] = modality
    return modality


def unregister_modality(name: str) -> None:
    _MODALITIES.pop(name, None)


def get_modality(name: str | Modality) -> Modality:
    """The registered modality called ``name`` (a ``Modality`` is returned as it is)."""
    if isinstance(name, Modality):
        return name
    if name not in _MODALITIES:
        raise ModalityError(f"unknown modality {name!r}; registered: {', '.join(sorted(_MODALITIES))}")
    return _MODALITIES[name]


def list_modalities() -> list[str]:
    return sorted(_MODALITIES)
