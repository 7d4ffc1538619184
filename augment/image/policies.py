"""The standard image policies by spec (the image catalogue's ``standard``).

Specs: ``none``, ``basic``, ``mae``, ``simclr``, ``trivialaugment``, ``autoaugment-imagenet``,
``autoaugment-cifar10``, ``rand-n{N}-m{M}`` (RandAugment; ``randaugment`` = ``rand-n2-m9``),
``pba`` (PBA's 0/1/2 ops draw over the RandAugment ops). ``parse_policy`` also reads the
``pre=...|choices=...`` form of ``Policy.to_string``, a JSON object, and ``A+B``, which runs
the ``pre`` ops of A and B in order, then the ``choices`` of the one that has them
(``mae+rand-n2-m9``: crop and flip, then RandAugment).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from augtrain.augment.policy import Op, Policy, PolicyError, num_ops_distribution

# The RandAugment op set (Cubuk et al. 2020, as in timm and DALI's auto_aug suite).
RANDAUGMENT_OPS = (
    "identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize",
    "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)  # fmt: skip


def none_policy() -> Policy:
    """No augmentation (a resize to the transform's size when one is given)."""
    return Policy(name="none", num_ops=(1.0,))


def basic_policy() -> Policy:
    """The seed's list: crop, flips, small rotation, color jitter, grayscale, blur, noise."""
    return Policy(
        name="basic",
        pre=(
            Op("random_resized_crop", args={"scale": (0.35, 1.0)}),
            Op("hflip", p=0.5),
            Op("vflip", p=0.1),
            Op("rotate", p=0.3, magnitude=3.0),
            Op("color_jitter", p=0.8, magnitude=5.0),
            Op("grayscale", p=0.1),
            Op("gaussian_blur", p=0.1, magnitude_range=(0.0, 5.0)),
            Op("gaussian_noise", p=0.1, magnitude=2.0),
        ),
    )


def weak_policy() -> Policy:
    """FixMatch's weak view (Sohn et al. 2020): a horizontal flip (p 0.5) and a translation of up
    to 12.5 % of the side on each axis (magnitude up to 2.78: translate's 0.45 x side at 10)."""
    shift = round(0.125 / 0.45 * 10.0, 4)
    return Policy(
        name="weak",
        pre=(Op("hflip", p=0.5), Op("translate_x", magnitude_range=(0.0, shift)),
             Op("translate_y", magnitude_range=(0.0, shift))),
    )


def mae_policy() -> Policy:
    """MAE pretraining: random resized crop (scale 0.2-1) and horizontal flip."""
    return Policy(
        name="mae",
        pre=(Op("random_resized_crop", args={"scale": (0.2, 1.0)}), Op("hflip", p=0.5)),
    )


def simclr_policy() -> Policy:
    """SimCLR views: crop, flip, color jitter (p 0.8, strength 1), grayscale (0.2), blur (0.5)."""
    return Policy(
        name="simclr",
        pre=(
            Op("random_resized_crop", args={"scale": (0.08, 1.0)}),
            Op("hflip", p=0.5),
            Op("color_jitter", p=0.8, magnitude=10.0),
            Op("grayscale", p=0.2),
            Op("gaussian_blur", p=0.5, magnitude_range=(0.0, 10.0)),
        ),
        views=2,
    )


def randaugment_policy(n: int = 2, m: float = 9.0) -> Policy:
    """RandAugment: ``n`` ops drawn with replacement from the 14-op set, all at magnitude ``m``."""
    if n < 0:
        raise PolicyError(f"randaugment: n must be >= 0, got {n}")
    return Policy(
        name=f"rand-n{n}-m{m:g}",
        choices=tuple((Op(name, magnitude=m),) for name in RANDAUGMENT_OPS),
        num_ops=num_ops_distribution(n),
    )


def trivialaugment_policy() -> Policy:
    """TrivialAugment: one op per sample from the RandAugment set, magnitude uniform in [0, 10]."""
    return Policy(
        name="trivialaugment",
        choices=tuple((Op(name, magnitude_range=(0.0, 10.0)),) for name in RANDAUGMENT_OPS),
        num_ops=(0.0, 1.0),
    )


def pba_policy() -> Policy:
    """PBA-style: a count of 0/1/2 (probabilities 0.2/0.3/0.5), ops visited in a random order
    until that many fired (PBA's rule), p 0.5 and magnitude 5 each."""
    return Policy(
        name="pba",
        choices=tuple((Op(name, p=0.5, magnitude=5.0),) for name in RANDAUGMENT_OPS + ("cutout", "invert")),
        num_ops=(0.2, 0.3, 0.5),
        replace=False,
        until_applied=True,
    )


_AA_NAMES = {
    "ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x", "TranslateY": "translate_y",
    "Rotate": "rotate", "Color": "color", "Posterize": "posterize", "Solarize": "solarize",
    "Contrast": "contrast", "Sharpness": "sharpness", "Brightness": "brightness",
    "AutoContrast": "auto_contrast", "Equalize": "equalize", "Invert": "invert",
}  # fmt: skip

# AutoAugment (Cubuk et al. 2019) sub-policies, magnitudes as bin indices 0-9 of 10 bins.
_AA_IMAGENET = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)), (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)), (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)), (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)), (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)  # fmt: skip
_AA_CIFAR10 = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)), (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)), (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)  # fmt: skip


def _autoaugment(name: str, table: tuple) -> Policy:
    entries = tuple(
        tuple(Op(_AA_NAMES[op], p=p, magnitude=0.0 if b is None else round(b * 10.0 / 9.0, 4)) for op, p, b in sub)
        for sub in table
    )
    return Policy(name=name, choices=entries, num_ops=(0.0, 1.0))


STANDARD: dict[str, Callable[[], Policy]] = {
    "none": none_policy,
    "basic": basic_policy,
    "weak": weak_policy,
    "mae": mae_policy,
    "simclr": simclr_policy,
    "randaugment": randaugment_policy,
    "trivialaugment": trivialaugment_policy,
    "autoaugment-imagenet": lambda: _autoaugment("autoaugment-imagenet", _AA_IMAGENET),
    "autoaugment-cifar10": lambda: _autoaugment("autoaugment-cifar10", _AA_CIFAR10),
    "pba": pba_policy,
}

_RAND = re.compile(r"^rand(?:-(?:n(?P<n>\d+)|m(?P<m>\d+(?:\.\d+)?)))+$")


def standard(spec: str) -> Policy | None:
    """The standard policy a lower-case ``spec`` names, or None."""
    if spec in STANDARD:
        return STANDARD[spec]()
    match = _RAND.match(spec)
    if match:
        n = int(match["n"]) if match["n"] else 2
        m = float(match["m"]) if match["m"] else 9.0
        return randaugment_policy(n, m)
    return None
