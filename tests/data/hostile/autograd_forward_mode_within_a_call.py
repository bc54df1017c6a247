"""Hostile submission: every gradient by forward-mode AD, one ``jvp`` per weight element, through
the function under gradkit's counter of ``torch.func.jvp`` (its ``__wrapped__``, by a built
name). ``jvp`` switches forward-mode AD on and back off within the call, so gradkit's check
that the switch is still off after the call saw nothing, and forward mode builds no graph node:
100/100 and a passing policy. gradkit must see the switch turned on (GKP112).
"""

import importlib
import threading
from typing import Dict, Optional

import torch
from torch import Tensor

NAMES = ("V", "I", "W", "J")


def _loss(V, I, W, J, X, Y):
    P = torch.sigmoid(torch.sigmoid(X @ V + I) @ W + J)
    return 0.5 * ((P - Y) ** 2).sum()


def _basis(params, k, index):
    """Tangents that pick element ``index`` of parameter ``k``."""
    tangents = [torch.zeros_like(p) for p in params]
    tangents[k].view(-1)[index] = 1
    return tuple(tangents)

_jvp = getattr(getattr(torch, "fu" + "nc").jvp, "__wrap" + "ped__")


def _gradients(params, X, Y):
    grads = []
    for k, p in enumerate(params):
        g = torch.zeros(p.numel(), dtype=p.dtype)
        for index in range(p.numel()):
            g[index] = _jvp(lambda *ps: _loss(*ps, X, Y), tuple(params), _basis(params, k, index))[1]
        grads.append(g.reshape(p.shape))
    return grads


def train_neural_net(X: Tensor, Y: Tensor, weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X, Y = X.to(dtype), Y.to(dtype)
    if not weights:
        weights = {"V": torch.randn(3, 4, dtype=dtype), "I": torch.randn(1, 4, dtype=dtype),
                   "W": torch.randn(4, 1, dtype=dtype), "J": torch.randn(1, 1, dtype=dtype)}
    else:
        weights = {n: weights[n].to(dtype) for n in NAMES}
    grads = _gradients([weights[n] for n in NAMES], X, Y)
    return {n: weights[n] - learning_rate * g for n, g in zip(NAMES, grads)}


def neural_net_predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X = X.to(dtype)
    B = torch.sigmoid(X @ weights["V"].to(dtype) + weights["I"].to(dtype))
    return torch.sigmoid(B @ weights["W"].to(dtype) + weights["J"].to(dtype))
