"""Hostile submission: autograd reached by routes the names-based counters do not see. The
entry point is found with ``getattr`` and built names, the counting wrapper's own
``__wrapped__`` is called, ``requires_grad`` is set with ``setattr``, grad mode is switched back
on and off again around the step, and the results are detached. The numbers are right; the
policy check must fail it from the engine's own evidence (graph nodes built), unless autograd is
allowed.
"""

from typing import Dict, Optional

import torch
from torch import Tensor

from helper import sigmoid


def _float_dtype(X: Tensor) -> torch.dtype:
    """X's dtype if it is a floating-point one, else float32."""
    return X.dtype if X.is_floating_point() else torch.float32


def train_neural_net(X: Tensor,
                     Y: Tensor,
                     weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One SGD step on the batch (X, Y); returns the updated weights {'V', 'I', 'W', 'J'}.

    X has shape (n, 3) and Y shape (n, 1) (float or integer labels). When ``weights`` is None
    or empty, V, I, W and J are drawn with torch.randn in the notebook's order. The caller's
    dict and tensors are left as they are; the returned tensors have X's dtype.
    """
    # check consistent batch sizes
    assert X.shape[0] == Y.shape[0], "X and Y must have the same number of rows"

    dtype = _float_dtype(X)
    X = X.to(dtype)
    Y = Y.to(dtype)

    if not weights:
        weights = {}
        weights['V'] = torch.randn(3, 4, dtype=dtype)
        weights['I'] = torch.randn(1, 4, dtype=dtype)
        weights['W'] = torch.randn(4, 1, dtype=dtype)
        weights['J'] = torch.randn(1, 1, dtype=dtype)
    else:
        weights = {name: weights[name].to(dtype) for name in ('V', 'I', 'W', 'J')}

    # forward pass
    A = torch.mm(X, weights['V']) + weights['I']
    B = sigmoid(A)
    C = torch.mm(B, weights['W']) + weights['J']
    P = sigmoid(C)

    # backpropagation, by autograd reached through built names
    autograd = getattr(torch, "auto" + "grad")
    backward = getattr(autograd, "back" + "ward")
    backward = getattr(backward, "__wrapped__", backward)  # past any counting wrapper
    switch = getattr(torch, "set_grad_" + "enabled")
    switch(True)
    leaves = {}
    for name, w in weights.items():
        leaf = w.detach().clone()
        setattr(leaf, "requires_" + "grad", True)
        leaves[name] = leaf
    P_ = sigmoid(torch.mm(sigmoid(torch.mm(X, leaves['V']) + leaves['I']), leaves['W'])
                 + leaves['J'])
    backward(0.5 * ((P_ - Y) ** 2).sum())
    switch(False)  # and back off, as it was found
    dLdV, dLdI, dLdW, dLdJ = (getattr(leaves[name], "grad").detach()
                              for name in ('V', 'I', 'W', 'J'))

    # update the weights
    weights['V'] = weights['V'] - learning_rate * dLdV
    weights['I'] = weights['I'] - learning_rate * dLdI

    weights['W'] = weights['W'] - learning_rate * dLdW
    weights['J'] = weights['J'] - learning_rate * dLdJ

    return weights


def neural_net_predict(X: Tensor,
                       weights: Dict[str, Tensor]) -> Tensor:
    """The network's prediction P, shape (n, 1), for every row of X."""
    dtype = _float_dtype(X)
    X = X.to(dtype)

    A = torch.mm(X, weights['V'].to(dtype)) + weights['I'].to(dtype)
    B = sigmoid(A)

    C = torch.mm(B, weights['W'].to(dtype)) + weights['J'].to(dtype)
    P = sigmoid(C)

    return P
