"""Model zoo: a registry of architectures with an injected activation (ReLU or kWTA), all taking inputs in [0, 1]
(normalization inside the model) and returning logits.

``create_model(name, activation=..., num_classes=..., in_channels=..., input_size=..., **kw)`` builds one;
``ModelSpec`` records how (for checkpoints); ``convert_activations`` swaps ReLU ↔ kWTA in any ``nn.Module``;
``describe_model`` / ``weight_sparsity`` measure a model. One module per architecture registers it with
``@register_model``; the first registry lookup imports every module here and in :mod:`kwta_robust.zoo`.
"""

from kwta_robust.models.registry import (
    REGISTRY,
    ModelSpec,
    Normalize,
    available_models,
    create_model,
    register_model,
)
from kwta_robust.models.describe import describe_model, weight_sparsity
from kwta_robust.models.convert import convert_activations

__all__ = [
    "REGISTRY", "ModelSpec", "Normalize", "available_models", "create_model", "register_model", "describe_model",
    "weight_sparsity", "convert_activations",
]
