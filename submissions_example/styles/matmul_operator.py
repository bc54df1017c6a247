# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""The notebook's network with the ``@`` operator and ``.T`` instead of torch.mm and transpose."""

from typing import Dict, Optional

import torch
from torch import Tensor

from helper import sigmoid


def train_neural_net(X: Tensor,
                     Y: Tensor,
                     weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One SGD step of L = 1/2 * sum((P - Y)^2) on the batch; returns the new weights."""
    assert X.shape[0] == Y.shape[0]
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X, Y = X.to(dtype), Y.to(dtype)

    if not weights:
        V = torch.randn(3, 4, dtype=dtype)
        I = torch.randn(1, 4, dtype=dtype)
        W = torch.randn(4, 1, dtype=dtype)
        J = torch.randn(1, 1, dtype=dtype)
    else:
        V, I, W, J = (weights[k].to(dtype) for k in ('V', 'I', 'W', 'J'))

    A = X @ V + I
    B = sigmoid(A)
    C = B @ W + J
    P = sigmoid(C)

    dLdC = (P - Y) * sigmoid(C, deriv=True)
    dLdW = B.T @ dLdC
    dLdJ = dLdC.sum(dim=0, keepdim=True)
    dLdA = (dLdC @ W.T) * sigmoid(A, deriv=True)
    dLdV = X.T @ dLdA
    dLdI = dLdA.sum(dim=0, keepdim=True)

    return {'V': V - learning_rate * dLdV,
            'I': I - learning_rate * dLdI,
            'W': W - learning_rate * dLdW,
            'J': J - learning_rate * dLdJ}


def neural_net_predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """P for every row of X, shape (n, 1)."""
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X = X.to(dtype)
    V, I, W, J = (weights[k].to(dtype) for k in ('V', 'I', 'W', 'J'))
    return sigmoid(sigmoid(X @ V + I) @ W + J)
