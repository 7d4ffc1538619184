"""``make_sample_transform``: the per-sample callable the data reader runs inside Ray Data
read tasks (CPU, fused with decode), and backend selection for it.

Backends for per-sample CPU work: ``albumentations`` (the default, cheapest measured),
``numpy`` (the reference implementations), ``dali`` (DALI CPU operators, ``device_id=None``;
the same graph the GPU path runs, but ~2.5x the CPU cost). DALI on GPU runs in the train
worker on batches of encoded bytes (``augtrain.augment.image.dali_backend.DaliBatchAugmenter``),
never here.
"""

from __future__ import annotations

import logging

import numpy as np

from augtrain.augment.image.ops import OPS
from augtrain.augment.plan import Step, check_size, sample_plan, view_names
from augtrain.augment.policy import parse_policy
from augtrain.augment.policy import Policy, PolicyError

log = logging.getLogger(__name__)

SAMPLE_BACKENDS = ("auto", "albumentations", "numpy", "dali")


class NumpyBackend:
    """Applies plans with the reference numpy/cv2 implementations of ``augtrain.augment.image.ops``."""

    name = "numpy"

    def apply(self, image: np.ndarray, steps: list[Step]) -> np.ndarray:
        """uint8 ``[H, W, C]`` -> uint8 ``[H', W', C]`` after every step of the plan."""
        for step in steps:
            image = OPS[step.name].apply(image, step.params)
        return np.ascontiguousarray(image)


def resolve_sample_backend(backend: str) -> str:
    """The concrete per-sample (CPU) backend for ``backend``; ``auto`` -> albumentations."""
    if backend not in SAMPLE_BACKENDS:
        raise PolicyError(f"backend must be one of {', '.join(SAMPLE_BACKENDS)}, got {backend!r}")
    if backend == "auto":
        # Per-sample work runs on the reader's CPU: albumentations is the cheapest CPU backend
        # measured (benchmarks/augment_throughput.py); DALI GPU runs in the train worker instead.
        log.debug("augment backend 'auto' -> 'albumentations' for per-sample CPU work")
        return "albumentations"
    return backend


def _require(module: str, backend: str, package: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(f"augment backend {backend!r} cannot run: {package} is not importable ({exc})") from exc


def build_backend(name: str):
    """Instantiate a per-sample backend by concrete name; an explicit backend that cannot run raises."""
    if name == "albumentations":
        _require("albumentations", name, "albumentations==2.0.8")
        from augtrain.augment.image.albumentations_backend import AlbumentationsBackend

        return AlbumentationsBackend()
    if name == "numpy":
        return NumpyBackend()
    if name == "dali":
        _require("nvidia.dali", name, "nvidia-dali-cuda120")
        from augtrain.augment.image.dali_backend import DaliSampleBackend

        return DaliSampleBackend()
    raise PolicyError(f"unknown backend {name!r}")


class SampleTransform:
    """Picklable per-sample transform: ``t(image [H,W,C] uint8, rng) -> {"image": [S,S,C]}``
    (or ``{"view0", "view1"}`` when ``views == 2``)."""

    def __init__(self, policy: Policy, size: int | None, views: int, backend: str) -> None:
        check_size(policy, size)
        if views not in (1, 2):
            raise PolicyError(f"views must be 1 or 2, got {views!r}")
        self.policy = policy
        self.size = size
        self.views = views
        self.backend_name = resolve_sample_backend(backend)
        self._backend = build_backend(self.backend_name)

    def __repr__(self) -> str:
        return f"SampleTransform({self.policy.to_string()!r}, size={self.size}, views={self.views}, backend={self.backend_name!r})"

    def plan(self, image: np.ndarray, rng: np.random.Generator) -> list[Step]:
        """Draw one view's plan for ``image``."""
        return sample_plan(self.policy, rng, image.shape[0], image.shape[1], self.size)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """uint8 ``[H, W, C]`` (C = 1 or 3) -> ``{"image": uint8 [size, size, C]}`` or two views."""
        if image.ndim == 2:
            image = image[:, :, None]
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ValueError(f"transform input must be uint8 [H, W, 1|3], got {image.dtype} {image.shape}")
        return {name: self._backend.apply(image, self.plan(image, rng)) for name in view_names(self.views, "image")}


def make_sample_transform(
    policy: str | dict | Policy, *, size: int | None, views: int = 1, backend: str = "auto"
) -> SampleTransform:
    """Per-sample CPU transform for the data reader (see ``SampleTransform``)."""
    return SampleTransform(parse_policy(policy), size, views, backend)
