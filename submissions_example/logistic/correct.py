# gradkit-expect: assignment=logistic
# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""One SGD step of logistic regression: P = sigmoid(X w + b), trained on the binary
cross-entropy summed over the batch, so dL/dZ = P - Y.
"""

from typing import Dict, Optional

import torch
from torch import Tensor


def train(X: Tensor, Y: Tensor, weights: Optional[Dict[str, Tensor]] = None,
          learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One SGD step on the batch (X, Y); returns the updated weights {'w', 'b'}."""
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X = X.to(dtype)
    Y = Y.to(dtype)
    if not weights:
        weights = {'w': torch.randn(3, 1, dtype=dtype), 'b': torch.randn(1, 1, dtype=dtype)}
    w, b = weights['w'], weights['b']

    Z = X @ w + b
    P = torch.sigmoid(Z)

    dLdZ = P - Y
    dLdw = X.T @ dLdZ
    dLdb = dLdZ.sum(dim=0, keepdim=True)

    return {'w': w - learning_rate * dLdw, 'b': b - learning_rate * dLdb}


def predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """P = sigmoid(X w + b)."""
    return torch.sigmoid(X @ weights['w'] + weights['b'])
