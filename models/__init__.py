"""Model builders by name, self-supervised objectives and heads.

    encoder = create_model("resnet18", small_input=True)
    objective = create_objective("mae", encoder="vit-base")
    loss = objective([images])          # a scalar; objective.num_views views per sample
    encoder = objective.export_encoder()  # forward_features: [B, C, H, W] -> [B, D]
"""

from augtrain.models.heads import Classifier
from augtrain.models.registry import (
    build_from_spec,
    create_model,
    create_objective,
    list_models,
    list_objectives,
    register_model,
    register_objective,
)

__all__ = [
    "Classifier",
    "build_from_spec",
    "create_model",
    "create_objective",
    "list_models",
    "list_objectives",
    "register_model",
    "register_objective",
]
