# gradkit-expect: verdict=fail
# gradkit-expect: failing=dtype
# gradkit-expect: mistake=none
"""The notebook's network computed entirely in float32, whatever X's dtype.

Correct up to float32 rounding: inputs and weights are cast to float32 and the returned weights
are float32 even when X is float64.
"""

from typing import Dict, Optional

import torch
from torch import Tensor

from helper import sigmoid


def train_neural_net(X: Tensor,
                     Y: Tensor,
                     weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One SGD step of L = 1/2 * sum((P - Y)^2) on the batch; returns float32 weights."""
    assert X.shape[0] == Y.shape[0]
    X = X.float()
    Y = Y.float()

    if not weights:
        weights = {}
        weights['V'] = torch.randn(3, 4)
        weights['I'] = torch.randn(1, 4)
        weights['W'] = torch.randn(4, 1)
        weights['J'] = torch.randn(1, 1)
    V, I, W, J = (weights[k].float() for k in ('V', 'I', 'W', 'J'))

    A = torch.mm(X, V) + I
    B = sigmoid(A)
    C = torch.mm(B, W) + J
    P = sigmoid(C)

    dLdP = -1.0 * (Y - P)
    dLdC = dLdP * sigmoid(C, deriv=True)
    dLdW = torch.mm(B.transpose(0, 1), dLdC)
    dLdJ = dLdC.sum(dim=0).reshape(1, 1)
    dLdB = torch.mm(dLdC, W.transpose(0, 1))
    dLdA = dLdB * sigmoid(A, deriv=True)
    dLdV = torch.mm(X.transpose(0, 1), dLdA)
    dLdI = dLdA.sum(dim=0).reshape(1, 4)

    return {'V': V - learning_rate * dLdV,
            'I': I - learning_rate * dLdI,
            'W': W - learning_rate * dLdW,
            'J': J - learning_rate * dLdJ}


def neural_net_predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """P for every row of X, shape (n, 1), in float32."""
    V, I, W, J = (weights[k].float() for k in ('V', 'I', 'W', 'J'))
    return sigmoid(torch.mm(sigmoid(torch.mm(X.float(), V) + I), W) + J)
