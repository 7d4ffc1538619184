"""Time-series augmentation: magnitude, time and frequency-domain ops (``ops``) and the standard
series policies (``policies``). Series are float32 ``[T, C]``; the modality's default per-sample
transform applies the ops (no other backend).

Importing this package registers the series catalogue.
"""

from augtrain.augment.registry import Catalogue, register_catalogue
from augtrain.augment.series import policies
from augtrain.augment.series.ops import OPS

# fine-tuning's default: none until a series policy is measured to help across problems
CATALOGUE = register_catalogue(Catalogue("series", OPS, policies.standard, tuple(policies.STANDARD),
                                         ("series-mM-cC",), finetune_default="none"))
