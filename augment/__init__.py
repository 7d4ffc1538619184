"""Augmentation: ops and policies as data, for any modality, and their executors.

Shared by every modality (this package's top): the op definition and the catalogue of each
modality's ops and standard policies (``registry``), the policy data model with its JSON and
string forms, schedules and parser (``policy``), and plan sampling (``plan``). Per modality:
``image/`` (ops, standard policies, albumentations, numpy/cv2 and DALI executors, CPU with
``device_id=None`` or GPU in the train worker); ``text/`` (EDA's and AEDA's word ops, WordNet
synonyms read offline, the standard text policies); ``series/`` (magnitude, time and frequency
ops on ``[T, C]`` series, the standard series policies). Importing the package registers the
shipped catalogues.

The data reader calls ``make_sample_transform(policy, size=..., views=...)`` per sample; the
train step calls ``normalize_batch``. DALI and torch are imported only where used.
"""

from augtrain.augment import image, series, text
from augtrain.augment.image.dali_policy import to_dali_policy
from augtrain.augment.image.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize_batch
from augtrain.augment.image.transform import SampleTransform, make_sample_transform
from augtrain.augment.plan import Step, augment_rng, sample_plan
from augtrain.augment.policy import Op, Policy, Schedule, parse_policy
from augtrain.augment.registry import Catalogue, OpDef, PolicyError, list_ops, list_policies, ops, register_catalogue

OPS = image.OPS  # the image ops by name

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "OPS", "Catalogue", "Op", "OpDef", "Policy", "PolicyError", "SampleTransform",
    "Schedule", "Step", "augment_rng", "list_ops", "list_policies", "make_sample_transform", "normalize_batch", "ops",
    "parse_policy", "register_catalogue", "sample_plan", "to_dali_policy",
]  # fmt: skip
