"""Find by name, build with a factory, list for tests: encoders and self-supervised objectives.

    @register_model("cnn-tiny")
    def cnn_tiny(**kw) -> CNNEncoder: ...

    encoder = create_model("cnn-tiny", in_chans=1)
    objective = create_objective("simclr", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1})

Every object built here carries a JSON `spec` (name and keyword arguments), so a checkpoint can
rebuild it with `build_from_spec(spec)` before loading weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

F = TypeVar("F", bound=Callable[..., nn.Module])


class Registry:
    """A name -> factory table with a decorator to fill it; each entry records the modalities
    (``"image"``, ...) it is made for, or None when it fits any."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., nn.Module]] = {}
        self._modalities: dict[str, tuple[str, ...] | None] = {}

    def register(self, name: str, modalities: tuple[str, ...] | None = None) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = fn
            self._modalities[name] = tuple(modalities) if modalities is not None else None
            return fn

        return decorator

    def unregister(self, name: str) -> None:
        self._factories.pop(name, None)
        self._modalities.pop(name, None)

    def modalities(self, name: str) -> tuple[str, ...] | None:
        self.get(name)  # unknown names raise, listing the registered ones
        return self._modalities[name]

    def get(self, name: str) -> Callable[..., nn.Module]:
        if name not in self._factories:
            known = ", ".join(sorted(self._factories))
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {known}")
        return self._factories[name]

    def names(self) -> list[str]:
        return sorted(self._factories)


MODELS = Registry("model")
OBJECTIVES = Registry("objective")


def register_model(name: str, modalities: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Decorator registering an encoder factory under `name`, for the inputs of `modalities`
    (None: any)."""
    return MODELS.register(name, modalities)


def register_objective(name: str, modalities: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Decorator registering an objective factory `fn(encoder: nn.Module, **kw)` under `name`;
    `modalities` names the inputs it is made for (None: any encoder's)."""
    return OBJECTIVES.register(name, modalities)


def model_modalities(name: str) -> tuple[str, ...] | None:
    """The modalities encoder `name` is made for (None: any)."""
    return MODELS.modalities(name)


def objective_modalities(name: str) -> tuple[str, ...] | None:
    """The modalities objective `name` is made for (None: any)."""
    return OBJECTIVES.modalities(name)


def list_models() -> list[str]:
    """Registered encoder names, sorted."""
    return MODELS.names()


def list_objectives() -> list[str]:
    """Registered objective names, sorted."""
    return OBJECTIVES.names()


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the encoder registered as `name`; it gets `.spec = {"name": name, **kwargs}`."""
    model = MODELS.get(name)(**kwargs)
    # a model may resolve its arguments (a relative path made absolute): the spec keeps those
    model.spec = {"name": name, **copy.deepcopy(getattr(model, "spec_kwargs", kwargs))}
    return model


def create_objective(
    name: str,
    encoder: str = "cnn-tiny",
    encoder_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build objective `name` around the encoder `encoder` (a registered model name).

    The result is an `nn.Module` whose `forward(views)` returns a scalar loss, with
    `num_views` (how many augmented views of each sample it takes) and `export_encoder()`.
    """
    encoder_kwargs = dict(encoder_kwargs or {})
    factory = OBJECTIVES.get(name)
    objective = factory(encoder_name=encoder, encoder_kwargs=encoder_kwargs, **kwargs)
    built = getattr(objective, "encoder", None)
    objective.spec = {
        "objective": name,
        "encoder": encoder,
        "encoder_kwargs": copy.deepcopy(getattr(built, "spec_kwargs", encoder_kwargs)),
        **copy.deepcopy(kwargs),
    }
    return objective


def build_from_spec(spec: dict[str, Any], **overrides: Any) -> nn.Module:
    """Rebuild an encoder or objective from its `.spec` (what checkpoints store)."""
    spec = {**copy.deepcopy(spec), **overrides}
    if "objective" in spec:
        return create_objective(spec.pop("objective"), **spec)
    return create_model(spec.pop("name"), **spec)

