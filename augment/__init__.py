"""Augmentation: ops and policies as data, executed by albumentations, numpy/cv2 or DALI
(CPU with ``device_id=None``, GPU in the train worker).

The data reader calls ``make_sample_transform(policy, size=..., views=...)`` per sample; the
train step calls ``normalize_batch``. DALI and torch are imported only where used.
"""

from augtrain.augment.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize_batch
from augtrain.augment.ops import OPS, list_ops
from augtrain.augment.plan import Step, augment_rng, sample_plan
from augtrain.augment.policies import list_policies, parse_policy, to_dali_policy
from augtrain.augment.policy import Op, Policy, PolicyError, Schedule
from augtrain.augment.transform import SampleTransform, make_sample_transform

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "OPS", "Op", "Policy", "PolicyError", "SampleTransform", "Schedule",
    "Step", "augment_rng", "list_ops", "list_policies", "make_sample_transform", "normalize_batch", "parse_policy",
    "sample_plan", "to_dali_policy",
]  # fmt: skip
