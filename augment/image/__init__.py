"""Image augmentation: the image ops (``ops``), the standard image policies (``policies``), the
per-sample transform and its CPU backends (``transform``: albumentations, the numpy reference,
DALI CPU), DALI on GPU batches (``dali_backend``), normalisation, previews, and the export of a
policy to DALI's ``auto_aug`` (``dali_policy``).

Importing this package registers the image catalogue (ops and standard policies).
"""

from augtrain.augment.image import policies
from augtrain.augment.image.ops import OPS
from augtrain.augment.registry import Catalogue, register_catalogue

# fine-tuning's default: TrivialAugment needs no tuning and beat `basic` (SimCLR-like crops and
# colour) by 8 points on 600 Fashion-MNIST labels
CATALOGUE = register_catalogue(Catalogue("image", OPS, policies.standard, tuple(policies.STANDARD), ("rand-nN-mM",),
                                         finetune_default="trivialaugment", weak_default="weak"))
