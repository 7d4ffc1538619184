"""The standard series policies by spec (the series catalogue's ``standard``).

Specs: ``none``; ``series-basic`` (one op per augmented copy, drawn from the six of Iwana and
Uchida 2021's comparison, jitter, scaling, magnitude warp, time warp, window slice and window
warp, at their reference settings (magnitude 5), one augmented copy of each series beside the
original, as their protocol doubled the training set); ``series-m{M}-c{C}`` (the same six at
magnitude M with C copies: the baselines' grid); ``series-trivialaugment`` (one op of all nine,
magnitude uniform in [0, 10], one copy: TrivialAugment's rule over the series ops).
"""

from __future__ import annotations

import re

from augtrain.augment.policy import Op, Policy

REFERENCE_OPS = ("jitter", "scaling", "magnitude_warp", "time_warp", "window_slice", "window_warp")
ALL_OPS = REFERENCE_OPS + ("permutation", "freq_mask", "freq_perturb")
MODALITY = "series"


def none_policy() -> Policy:
    return Policy(name="none", num_ops=(1.0,), modality=MODALITY)


def reference_policy(magnitude: float = 5.0, copies: int = 1, name: str | None = None) -> Policy:
    """One of the six reference ops per augmented copy, at ``magnitude``, ``copies`` copies."""
    return Policy(name=name or f"series-m{magnitude:g}-c{copies}",
                  choices=tuple((Op(op, magnitude=magnitude),) for op in REFERENCE_OPS),
                  num_ops=(0.0, 1.0), copies=copies, modality=MODALITY)


def trivialaugment_policy() -> Policy:
    return Policy(name="series-trivialaugment", choices=tuple((Op(op, magnitude_range=(0.0, 10.0)),) for op in ALL_OPS),
                  num_ops=(0.0, 1.0), copies=1, modality=MODALITY)


STANDARD = {
    "none": none_policy,
    "series-basic": lambda: reference_policy(5.0, 1, name="series-basic"),
    "series-trivialaugment": trivialaugment_policy,
}
_GRID = re.compile(r"^series-m(?P<m>\d+(?:\.\d+)?)-c(?P<c>\d+)$")


def standard(spec: str) -> Policy | None:
    """The standard series policy a lower-case ``spec`` names, or None."""
    if spec in STANDARD:
        return STANDARD[spec]()
    match = _GRID.match(spec)
    if match:
        return reference_policy(float(match["m"]), int(match["c"]))
    return None
