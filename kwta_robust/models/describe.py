"""Measured descriptions of a model: activations, kWTA settings and weight sparsity read from the tensors.

Used for checkpoint metadata and evaluation records, so a reported sparsity is always *measured* (the fraction
of exact zeros in the weight tensors of convolutional and linear layers), never copied from a config.
"""

from __future__ import annotations

from torch import nn

from kwta_robust.layers import kwta_layers

#: Layer types whose ``weight`` tensors count towards weight sparsity.
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


def weight_sparsity(model: nn.Module) -> dict:
    """Fraction of exact zeros in the weights of every conv/linear layer and overall.

    Reads ``module.weight`` (so a ``torch.nn.utils.prune`` mask is applied). Returns
    ``{"overall": float, "zeros": int, "total": int, "layers": {name: float}}``; ``overall`` is 0.0 for a model
    without such layers.
    """
    layers: dict[str, float] = {}
    zeros = total = 0
    for name, module in model.named_modules():
        if not isinstance(module, WEIGHT_LAYERS):
            continue
        weight = getattr(module, "weight", None)
        if weight is None:
            continue
        n_zero = int((weight.detach() == 0).sum().item())
        n = weight.numel()
        layers[name] = n_zero / n if n else 0.0
        zeros += n_zero
        total += n
    return {"overall": zeros / total if total else 0.0, "zeros": zeros, "total": total, "layers": layers}


def _common(layers: list[dict], key: str):
    """The value of ``key`` shared by all ``layers``, else ``None``."""
    values = {d[key] for d in layers}
    return values.pop() if len(values) == 1 else None


def describe_model(model: nn.Module) -> dict:
    """Plain-data summary: activation kind, each kWTA layer's settings, parameter count and weight sparsity.

    ``activation`` is ``"kwta"`` (only kWTA layers), ``"relu"`` (only ReLUs), ``"mixed"`` or ``"none"``: the
    layers recognised here, not what the model computes (a top-k or ``torch.relu`` written in a model of one's own
    leaves it ``"none"``; the layer probe, a record's ``detection``, finds those, and the tables show its findings).
    ``num_relu_layers`` counts the ``nn.ReLU`` modules the model holds, called or not (Xiao et al.'s kWTA ResNet
    holds one per block and calls it only with ``use_relu``); a record's ``relu_calls`` counts the ReLUs one
    forward applied (:mod:`kwta_robust.relu_calls`).
    ``kwta_layers`` maps each kWTA layer name to its ``describe()`` (mode, ratio, k, boost_strength,
    k_inference_factor); ``kwta_ratio``/``kwta_k``/``k_inference_factor``/``boost_strength`` summarize them
    (``None`` when the layers disagree or there are none); ``kwta_mode`` is the mode of the convolutional kWTA
    layers (dense layers always compete over all features), or ``"dense"`` for a model with dense ones only.
    """
    kwta = {name: layer.describe() for name, layer in kwta_layers(model).items()}
    # k-winners layers of other implementations that describe themselves alike (kwta_robust.zoo's nupic layers)
    kwta.update({name: m.describe() for name, m in model.named_modules()
                 if name not in kwta and getattr(m, "describes_as_kwta", False)})
    n_relu = sum(1 for m in model.modules() if isinstance(m, nn.ReLU))
    if kwta and n_relu:
        activation = "mixed"
    elif kwta:
        activation = "kwta"
    elif n_relu:
        activation = "relu"
    else:
        activation = "none"

    spatial = [d for d in kwta.values() if d["mode"] != "dense"]

    return {
        "activation": activation,
        "num_kwta_layers": len(kwta),
        "num_relu_layers": n_relu,
        "kwta_ratio": _common(list(kwta.values()), "ratio"),
        "kwta_k": _common(list(kwta.values()), "k"),
        "kwta_mode": _common(spatial or list(kwta.values()), "mode"),
        "k_inference_factor": _common(list(kwta.values()), "k_inference_factor"),
        "boost_strength": _common(list(kwta.values()), "boost_strength"),
        "kwta_layers": kwta,
        "num_params": sum(p.numel() for p in model.parameters()),
        "weight_sparsity": weight_sparsity(model),
    }
