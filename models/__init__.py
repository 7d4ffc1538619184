"""Model builders by name, self-supervised objectives and heads.

    encoder = create_model("resnet18", small_input=True)
    objective = create_objective("mae", encoder="vit-base")
    loss = objective([images])          # a scalar; objective.num_views views per sample
    encoder = objective.export_encoder()  # forward_features: [B, C, H, W] -> [B, D]
"""

# The shipped models register themselves on import; importing them here (an explicit
# catalogue) fills the registry before any lookup, and no module imports its importer.
from augtrain.models import cnn, efficientnet, mae, series, simclr, text, text_cnn, text_rnn, vae, vit  # noqa: F401
from augtrain.models.heads import Classifier
from augtrain.models.registry import (
    build_from_spec,
    create_model,
    create_objective,
    list_models,
    list_objectives,
    model_modalities,
    objective_modalities,
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
    "model_modalities",
    "objective_modalities",
    "register_model",
    "register_objective",
]
