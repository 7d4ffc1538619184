"""Modalities: what a sample of each kind decodes to, how it is augmented and how its batches
become model inputs (``base.Modality``), found by name.

Shipped: ``image`` (PNG/JPEG/WebP), ``series`` (``npy`` or ``json`` arrays, ``[T, C]``) and
``text`` (``txt`` or ``json`` with a ``text`` field). Importing the package registers them;
a plug-in registers its own from the module that defines it.
"""

from augtrain.pipelines.modalities import image, series, text  # noqa: F401  (register the shipped ones)
from augtrain.pipelines.modalities.base import (
    DecodeSpec,
    Modality,
    ModalityError,
    SampleError,
    SampleTransform,
    get_modality,
    list_modalities,
    register_modality,
    unregister_modality,
)

__all__ = [
    "DecodeSpec", "Modality", "ModalityError", "SampleError", "SampleTransform", "get_modality", "list_modalities",
    "register_modality", "unregister_modality",
]  # fmt: skip
