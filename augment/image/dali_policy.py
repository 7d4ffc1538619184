"""A searched image policy as an ``nvidia.dali.auto_aug`` Policy."""

from __future__ import annotations

from augtrain.augment.policy import Policy, PolicyError


def to_dali_policy(policy: Policy, num_magnitude_bins: int = 11):
    """Export the ``choices`` of a policy as an ``nvidia.dali.auto_aug`` Policy.

    Each entry becomes a sub-policy; magnitude m maps to bin ``round(m / 10 * (bins - 1))``.
    ``pre`` ops (crops, flips) have no auto_aug counterpart and must stay in the pipeline;
    translate ops need ``shape=`` passed to ``apply_auto_augment`` (relative offsets).
    Raises PolicyError for ops DALI's auto_aug does not have, for a num_ops other than exactly
    one entry per sample (auto_aug applies one sub-policy), and for magnitude ranges.
    """
    from nvidia.dali.auto_aug import augmentations as aa
    from nvidia.dali.auto_aug.core import Policy as DaliPolicy

    names = {
        "shear_x": aa.shear_x, "shear_y": aa.shear_y, "translate_x": aa.translate_x,
        "translate_y": aa.translate_y, "rotate": aa.rotate, "brightness": aa.brightness,
        "contrast": aa.contrast, "color": aa.color, "sharpness": aa.sharpness,
        "posterize": aa.posterize, "solarize": aa.solarize, "equalize": aa.equalize,
        "auto_contrast": aa.auto_contrast, "invert": aa.invert, "identity": aa.identity,
    }  # fmt: skip
    if policy.num_ops != (0.0, 1.0):
        raise PolicyError(f"policy {policy.name!r}: auto_aug applies exactly one sub-policy per sample, num_ops={policy.num_ops}")
    ranges = {  # our magnitude tables in DALI's parametrisation (posterize: bits removed)
        "shear_x": (0, 0.3), "shear_y": (0, 0.3), "rotate": (0, 30), "translate_x": (0, 0.45),
        "translate_y": (0, 0.45), "brightness": (0, 0.9), "contrast": (0, 0.9), "color": (0, 0.9),
        "sharpness": (0, 0.9), "posterize": (0, 4), "solarize": (256, 0),
    }  # fmt: skip
    sub_policies = []
    for entry in policy.choices:
        sub = []
        for op in entry:
            if op.name not in names:
                raise PolicyError(f"op {op.name!r} has no nvidia.dali.auto_aug counterpart")
            if op.magnitude_range is not None:
                raise PolicyError(f"op {op.name!r}: auto_aug policies take a fixed magnitude, not a range")
            aug = names[op.name]
            mag_bin = None
            if op.name in ranges:
                aug = aug.augmentation(mag_range=ranges[op.name])
                mag_bin = int(round(op.magnitude / 10.0 * (num_magnitude_bins - 1)))
            sub.append((aug, op.p, mag_bin))
        sub_policies.append(sub)
    return DaliPolicy(name=policy.name, num_magnitude_bins=num_magnitude_bins, sub_policies=sub_policies)
