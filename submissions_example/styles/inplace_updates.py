# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""The notebook's network, updating the weight tensors in place with ``-=`` and ``sub_``.

The caller's weight tensors are modified (allowed by the assignment); every gradient is computed
before the first update, so the backward pass sees the old W.
"""

from typing import Dict, Optional

import torch
from torch import Tensor

from helper import sigmoid


def train_neural_net(X: Tensor,
                     Y: Tensor,
                     weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One SGD step of L = 1/2 * sum((P - Y)^2) on the batch; returns the updated weights."""
    assert X.shape[0] == Y.shape[0]
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X = X.to(dtype)
    Y = Y.to(dtype)

    if not weights:
        weights = {}
        weights['V'] = torch.randn(3, 4, dtype=dtype)
        weights['I'] = torch.randn(1, 4, dtype=dtype)
        weights['W'] = torch.randn(4, 1, dtype=dtype)
        weights['J'] = torch.randn(1, 1, dtype=dtype)
    else:
        for name in ('V', 'I', 'W', 'J'):
            if weights[name].dtype != dtype:
                weights[name] = weights[name].to(dtype)

    # forward pass
    A = torch.mm(X, weights['V']) + weights['I']
    B = sigmoid(A)
    C = torch.mm(B, weights['W']) + weights['J']
    P = sigmoid(C)

    # backpropagation (all of it before any weight changes)
    dLdP = P - Y
    dLdC = dLdP * sigmoid(C, deriv=True)
    dLdW = torch.mm(B.t(), dLdC)
    dLdJ = dLdC.sum(dim=0).reshape(1, 1)
    dLdB = torch.mm(dLdC, weights['W'].t())
    dLdA = dLdB * sigmoid(A, deriv=True)
    dLdV = torch.mm(X.t(), dLdA)
    dLdI = dLdA.sum(dim=0).reshape(1, 4)

    # update the weights in place
    weights['V'] -= learning_rate * dLdV
    weights['I'] -= learning_rate * dLdI
    weights['W'].sub_(learning_rate * dLdW)
    weights['J'].sub_(dLdJ, alpha=learning_rate)

    return weights


def neural_net_predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """P for every row of X, shape (n, 1)."""
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X = X.to(dtype)
    A = torch.mm(X, weights['V'].to(dtype)) + weights['I'].to(dtype)
    C = torch.mm(sigmoid(A), weights['W'].to(dtype)) + weights['J'].to(dtype)
    return sigmoid(C)
