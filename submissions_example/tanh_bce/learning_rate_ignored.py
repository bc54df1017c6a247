# gradkit-expect: assignment=tanh_bce
# gradkit-expect: verdict=fail
# gradkit-expect: failing=gradient.W1,gradient.W2,gradient.b1,gradient.b2,update
# gradkit-expect: mistake=The update subtracts the gradient without the learning_rate, so steps are right only for learning_rate = 1.
# gradkit-expect: code=GK202
# gradkit-expect: line=47
"""The 2-8-1 tanh network with an update that ignores the learning rate."""

from typing import Dict, Optional

import torch
from torch import Tensor


def train(X: Tensor, Y: Tensor, weights: Optional[Dict[str, Tensor]] = None,
          learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One SGD step on the batch (X, Y); returns the updated weights W1, b1, W2, b2."""
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X = X.to(dtype)
    Y = Y.to(dtype)
    if not weights:
        weights = {}
        weights['W1'] = torch.randn(2, 8, dtype=dtype)
        weights['b1'] = torch.randn(1, 8, dtype=dtype)
        weights['W2'] = torch.randn(8, 1, dtype=dtype)
        weights['b2'] = torch.randn(1, 1, dtype=dtype)
    W1, b1, W2, b2 = weights['W1'], weights['b1'], weights['W2'], weights['b2']

    # forward pass
    Z1 = X @ W1 + b1
    A1 = torch.tanh(Z1)
    Z2 = A1 @ W2 + b2
    P = torch.sigmoid(Z2)

    # backward pass
    dLdZ2 = P - Y
    dLdW2 = A1.T @ dLdZ2
    dLdb2 = dLdZ2.sum(dim=0, keepdim=True)
    dLdA1 = dLdZ2 @ W2.T
    dA1dZ1 = 1 - A1 ** 2
    dLdZ1 = dLdA1 * dA1dZ1
    dLdW1 = X.T @ dLdZ1
    dLdb1 = dLdZ1.sum(dim=0, keepdim=True)

    # the update
    return {
        'W1': W1 - dLdW1,
        'b1': b1 - dLdb1,
        'W2': W2 - dLdW2,
        'b2': b2 - dLdb2,
    }


def predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """P = sigmoid(tanh(X W1 + b1) W2 + b2)."""
    A1 = torch.tanh(X @ weights['W1'] + weights['b1'])
    return torch.sigmoid(A1 @ weights['W2'] + weights['b2'])
