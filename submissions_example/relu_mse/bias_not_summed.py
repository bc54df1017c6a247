# gradkit-expect: assignment=relu_mse
# gradkit-expect: verdict=fail
# gradkit-expect: failing=gradient.b3,update
# gradkit-expect: mistake=dL/db3 is the per-row dL/dP, not summed over the batch, so for n > 1 rows b3 comes back with n rows instead of shape (1, 2).
# gradkit-expect: code=GK105
# gradkit-expect: line=40
"""The 4-6-3-2 ReLU network with the output bias gradient left per row, not summed over the batch."""

from typing import Dict, Optional

import torch
from torch import Tensor

SHAPES = {'W1': (4, 6), 'b1': (1, 6), 'W2': (6, 3), 'b2': (1, 3), 'W3': (3, 2), 'b3': (1, 2)}


def train(X: Tensor, Y: Tensor, weights: Optional[Dict[str, Tensor]] = None,
          learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One SGD step on the batch (X, Y); returns the updated weights."""
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X = X.to(dtype)
    Y = Y.to(dtype)
    if not weights:
        weights = {name: torch.randn(*shape, dtype=dtype) for name, shape in SHAPES.items()}
    W1, b1 = weights['W1'], weights['b1']
    W2, b2 = weights['W2'], weights['b2']
    W3, b3 = weights['W3'], weights['b3']
    n = X.shape[0]

    # forward pass
    Z1 = X @ W1 + b1
    A1 = torch.relu(Z1)
    Z2 = A1 @ W2 + b2
    A2 = torch.relu(Z2)
    P = A2 @ W3 + b3

    # backward pass
    dLdP = 2 * (P - Y) / n
    dLdW3 = A2.T @ dLdP
    dLdb3 = dLdP
    dLdA2 = dLdP @ W3.T
    dLdZ2 = dLdA2 * (Z2 > 0).to(dtype)
    dLdW2 = A1.T @ dLdZ2
    dLdb2 = dLdZ2.sum(dim=0, keepdim=True)
    dLdA1 = dLdZ2 @ W2.T
    dLdZ1 = dLdA1 * (Z1 > 0).to(dtype)
    dLdW1 = X.T @ dLdZ1
    dLdb1 = dLdZ1.sum(dim=0, keepdim=True)

    # the update
    grads = {'W1': dLdW1, 'b1': dLdb1, 'W2': dLdW2, 'b2': dLdb2, 'W3': dLdW3, 'b3': dLdb3}
    return {name: weights[name] - learning_rate * grads[name] for name in SHAPES}


def predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """P = relu(relu(X W1 + b1) W2 + b2) W3 + b3."""
    A1 = torch.relu(X @ weights['W1'] + weights['b1'])
    A2 = torch.relu(A1 @ weights['W2'] + weights['b2'])
    return A2 @ weights['W3'] + weights['b3']
