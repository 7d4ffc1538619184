"""Text augmentation: EDA's and AEDA's word-level ops (``ops``), WordNet synonyms read offline
(``wordnet``) and the standard text policies (``policies``). Texts are ``str``; the modality's
default per-sample transform applies the ops (no other backend).

Importing this package registers the text catalogue.
"""

from augtrain.augment.registry import Catalogue, register_catalogue
from augtrain.augment.text import policies
from augtrain.augment.text.ops import OPS

# fine-tuning's default: none (augmentation rarely helps a pretrained Transformer, Longpre et al. 2020)
CATALOGUE = register_catalogue(Catalogue("text", OPS, policies.standard, tuple(policies.STANDARD), ("eda-mM-cC",),
                                         finetune_default="none"))
