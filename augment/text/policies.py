"""The standard text policies by spec (the text catalogue's ``standard``).

Specs: ``none``; ``eda`` (EDA: one of its four ops per copy at alpha 0.1, 4 copies: the paper's
setting above 5,000 training texts); ``eda-m{M}-c{C}`` (magnitude M, alpha = M / 20, and C
augmented copies of each text beside the original: ``eda-m1-c16`` is the paper's recommendation
for 500 texts, ``eda-m1-c8`` for 2,000; Wei and Zou 2019, table 3); ``aeda`` (AEDA's punctuation
insertion, one copy); ``text-trivialaugment`` (one op of the five, magnitude uniform in [0, 10],
one copy: TrivialAugment's rule over the text ops).
"""

from __future__ import annotations

import re

from augtrain.augment.policy import Op, Policy

EDA_OPS = ("synonym_replace", "random_insert", "random_swap", "random_delete")
MODALITY = "text"


def none_policy() -> Policy:
    return Policy(name="none", num_ops=(1.0,), modality=MODALITY)


def eda_policy(magnitude: float = 2.0, copies: int = 4, name: str | None = None) -> Policy:
    """EDA: each augmented copy gets one of its four ops at ``alpha = magnitude / 20``."""
    return Policy(name=name or f"eda-m{magnitude:g}-c{copies}", choices=tuple((Op(op, magnitude=magnitude),)
                                                                            for op in EDA_OPS),
                  num_ops=(0.0, 1.0), copies=copies, modality=MODALITY)


def aeda_policy() -> Policy:
    return Policy(name="aeda", choices=((Op("punctuation", magnitude=10.0),),), num_ops=(0.0, 1.0), copies=1,
                  modality=MODALITY)


def trivialaugment_policy() -> Policy:
    return Policy(name="text-trivialaugment",
                  choices=tuple((Op(op, magnitude_range=(0.0, 10.0)),) for op in EDA_OPS + ("punctuation",)),
                  num_ops=(0.0, 1.0), copies=1, modality=MODALITY)


STANDARD = {
    "none": none_policy,
    "eda": lambda: eda_policy(2.0, 4, name="eda"),
    "aeda": aeda_policy,
    "text-trivialaugment": trivialaugment_policy,
}
_EDA = re.compile(r"^eda-m(?P<m>\d+(?:\.\d+)?)-c(?P<c>\d+)$")


def standard(spec: str) -> Policy | None:
    """The standard text policy a lower-case ``spec`` names, or None."""
    if spec in STANDARD:
        return STANDARD[spec]()
    match = _EDA.match(spec)
    if match:
        return eda_policy(float(match["m"]), int(match["c"]))
    return None
