"""Hostile submission: every gradient by forward-mode AD, with dual tensors made in a thread of
its own. gradkit switched forward-mode AD off in the thread that runs the submission; a new
thread starts with it on, so nothing was switched, and forward mode builds no graph node:
100/100 and a passing policy. gradkit must see the dual level entered (GKP112).
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

_fwad = importlib.import_module("torch." + "auto" + "grad.forward_ad")


def _gradients(params, X, Y):
    grads = []

    def work():
        for k, p in enumerate(params):
            g = torch.zeros(p.numel(), dtype=p.dtype)
            for index in range(p.numel()):
                with _fwad.dual_level():
                    duals = [_fwad.make_dual(q, t) for q, t in zip(params, _basis(params, k, index))]
                    g[index] = _fwad.unpack_dual(_loss(*duals, X, Y)).tangent
            grads.append(g.reshape(p.shape))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
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
