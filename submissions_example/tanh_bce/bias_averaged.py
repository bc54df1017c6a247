# gradkit-expect: assignment=tanh_bce
# gradkit-expect: verdict=fail
# gradkit-expect: failing=gradient.b2,update
# gradkit-expect: mistake=dL/db2 averages dL/dZ2 over the batch instead of summing it, so it is n times too small for n > 1 rows.
# gradkit-expect: code=GK106
# gradkit-expect: line=38
"""The 2-8-1 tanh network with the output bias gradient averaged over the batch instead of summed."""

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
    dLdb2 = dLdZ2.mean(dim=0, keepdim=True)
    dLdA1 = dLdZ2 @ W2.T
    dA1dZ1 = 1 - A1 ** 2
    dLdZ1 = dLdA1 * dA1dZ1
    dLdW1 = X.T @ dLdZ1
    dLdb1 = dLdZ1.sum(dim=0, keepdim=True)

    # the update
    return {
        'W1': W1 - learning_rate * dLdW1,
        'b1': b1 - learning_rate * dLdb1,
        'W2': W2 - learning_rate * dLdW2,
        'b2': b2 - learning_rate * dLdb2,
    }


def predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """P = sigmoid(tanh(X W1 + b1) W2 + b2)."""
    A1 = torch.tanh(X @ weights['W1'] + weights['b1'])
    return torch.sigmoid(A1 @ weights['W2'] + weights['b2'])
