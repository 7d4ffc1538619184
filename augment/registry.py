"""What every modality's augmentation shares: the op definition, and the registry of catalogues.

A catalogue is one modality's ops by name and its standard policies by spec. The policy data
model (``augtrain.augment.policy``) validates, parses and prints policies of any registered
catalogue; each modality's package (``augtrain.augment.image``) builds its catalogue, and the
``augtrain.augment`` package registers the ones it ships. Nothing here imports a modality.

    register_catalogue(Catalogue("series", ops={...}, standard=series_policy, policy_names=(...)))
    ops("series")["jitter"].sample(rng, magnitude, args, length, channels, None)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Params = dict[str, float]


class PolicyError(ValueError):
    """An invalid policy; the message names the op or field at fault."""


@dataclass(frozen=True)
class OpDef:
    """A registered op: parameter sampling, reference apply, and what it needs.

    ``sample(rng, magnitude, args, h, w, size)`` draws the parameters for an input whose two
    leading dimensions are ``h`` and ``w`` (an image's height and width; a series' length and
    channels), ``apply(x, params)`` applies them. Parameters are a flat dict of floats in
    ``param_names`` order, so that every backend can apply the very same draw.
    """

    name: str
    sample: Callable[[np.random.Generator, float, dict[str, Any], int, int, int | None], Params]
    apply: Callable[[np.ndarray, Params], np.ndarray]
    param_names: tuple[str, ...] = ()
    uses_magnitude: bool = False
    sets_size: bool = False  # output size is the transform's size (crop, resize)
    kind: str = "color"  # image: "color" | "geometric"; other modalities name their own kinds
    default_args: dict[str, Any] = field(default_factory=dict)

    def check_args(self, args: dict[str, Any]) -> None:
        """Raise PolicyError naming the op for unknown or malformed args."""
        unknown = set(args) - set(self.default_args)
        if unknown:
            raise PolicyError(f"op {self.name!r}: unknown arg(s) {sorted(unknown)}; allowed {sorted(self.default_args)}")
        for key, value in args.items():
            default = self.default_args[key]
            if isinstance(default, tuple) and not (
                isinstance(value, tuple) and len(value) == len(default) and value[0] <= value[1] and value[0] > 0
            ):
                raise PolicyError(f"op {self.name!r}: arg {key!r} must be an increasing positive pair, got {value!r}")

    def pack(self, params: Params) -> np.ndarray:
        """Parameters as a float32 vector in ``param_names`` order (what DALI is fed)."""
        return np.array([params[k] for k in self.param_names], dtype=np.float32)


@dataclass(frozen=True)
class Catalogue:
    """One modality's augmentation: ops by name, and its standard policies.

    ``standard(spec)`` returns the standard policy a lower-case spec names (``None`` when it
    names none); ``policy_names`` lists the specs for messages and ``list_policies``;
    ``spec_forms`` describes parameterised families (``rand-nN-mM``) in error messages;
    ``finetune_default`` is the policy a fine-tune of this modality uses when its config names none;
    ``weak_default`` the weak view of FixMatch's pseudo-labels (``finetune.unlabelled.weak``).
    """

    modality: str
    ops: Mapping[str, OpDef]
    standard: Callable[[str], Any]  # spec -> Policy, or None (policies are built on this module)
    policy_names: tuple[str, ...] = ()
    spec_forms: tuple[str, ...] = ()
    finetune_default: str = "none"
    weak_default: str = "none"


_CATALOGUES: dict[str, Catalogue] = {}


def register_catalogue(catalogue: Catalogue) -> Catalogue:
    """Add a modality's catalogue (modality names are unique)."""
    if catalogue.modality in _CATALOGUES:
        raise ValueError(f"an augmentation catalogue for modality {catalogue.modality!r} is already registered")
    for name, op in catalogue.ops.items():
        if name != op.name:
            raise ValueError(f"catalogue {catalogue.modality!r}: op registered as {name!r} is named {op.name!r}")
    _CATALOGUES[catalogue.modality] = catalogue
    return catalogue


def unregister_catalogue(modality: str) -> None:
    """Remove a catalogue (tests that register a modality of their own clean up with this)."""
    _CATALOGUES.pop(modality, None)


def catalogue(modality: str) -> Catalogue:
    """The catalogue of ``modality``; PolicyError naming the registered ones when there is none."""
    try:
        return _CATALOGUES[modality]
    except KeyError:
        raise PolicyError(f"no augmentation ops for modality {modality!r}; registered: "
                          f"{', '.join(sorted(_CATALOGUES)) or 'none'}") from None


def ops(modality: str = "image") -> Mapping[str, OpDef]:
    """The ops of ``modality`` by name."""
    return catalogue(modality).ops


def list_ops(modality: str = "image") -> list[str]:
    """Names of the ops of ``modality``, sorted."""
    return sorted(ops(modality))


def list_policies(modality: str = "image") -> list[str]:
    """Names of the standard policies of ``modality``, sorted."""
    return sorted(catalogue(modality).policy_names)


def list_catalogues() -> list[str]:
    """Modalities with registered augmentation, sorted."""
    return sorted(_CATALOGUES)
