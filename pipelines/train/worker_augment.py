"""Augmentation inside the train worker: DALI on batches of encoded images.

On GPU nodes the reader passes encoded bytes through (no CPU decode), and each train worker
runs one DALI pipeline, built once, that decodes with nvJPEG (``mixed``) and augments on its
GPU; the views never go back through the object store. ``placement: worker`` also runs it
with DALI CPU operators where there is no GPU (the same graph, at a higher CPU cost).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from augtrain.augment.plan import view_names


def choose_placement(placement: str, cuda: bool) -> str:
    """``auto``: in the worker (DALI GPU) when CUDA is present, else in the reader (CPU)."""
    if placement not in ("auto", "reader", "worker"):
        raise ValueError(f"augment.placement must be auto, reader or worker, got {placement!r}")
    if placement == "auto":
        return "worker" if cuda else "reader"
    return placement


class WorkerAugment:
    """``(batch, epoch) -> views``: float ``[B, C, size, size]`` tensors on the worker's device.

    Picklable (the DALI pipeline is built lazily, once, in the worker process). The parameters
    of each batch are drawn from a generator seeded by (seed, epoch, first position in the
    batch), so a resumed run augments the same batches the same way.
    """

    def __init__(self, policy: Any, *, size: int, views: int, batch_size: int, channels: int, seed: int,
                 mean: tuple[float, ...], std: tuple[float, ...], device: str = "auto", local_rank: int = 0) -> None:
        self.args = dict(policy=policy, size=size, views=views, batch_size=batch_size, channels=channels,
                         seed=seed, mean=tuple(mean), std=tuple(std), device=device, local_rank=local_rank)
        self._augmenter = None

    def __getstate__(self) -> dict:
        return {"args": self.args, "_augmenter": None}

    def _build(self):
        from augtrain.augment.image.dali_backend import DaliBatchAugmenter

        a = self.args
        return DaliBatchAugmenter(a["policy"], size=a["size"], views=a["views"], batch_size=a["batch_size"],
                                  channels=a["channels"], device=a["device"], local_rank=a["local_rank"],
                                  seed=a["seed"], mean=a["mean"], std=a["std"])

    def __call__(self, batch: dict[str, np.ndarray], epoch: int) -> list:
        if self._augmenter is None:
            self._augmenter = self._build()
        rng = np.random.default_rng([self.args["seed"], epoch, int(batch["__index__"][0]), 0xDA1])
        out = self._augmenter(list(batch["encoded"]), rng)
        return [out[name] for name in view_names(self.args["views"], "image")]
