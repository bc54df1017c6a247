# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""The notebook's network with descriptive names and a locally defined sigmoid.

hidden_pre / hidden_out / output_pre / output are A, B, C, P; grad_out is dL/dC and
delta_hidden is dL/dA.
"""

from typing import Dict, Optional

import torch
from torch import Tensor


def logistic(z: Tensor) -> Tensor:
    """1 / (1 + exp(-z))."""
    return torch.sigmoid(z)


def logistic_slope(z: Tensor) -> Tensor:
    """d/dz logistic(z) = logistic(z) * logistic(-z) = logistic(z) * (1 - logistic(z))."""
    return logistic(z) * logistic(-z)


def _params(weights: Dict[str, Tensor], dtype: torch.dtype):
    return (weights['V'].to(dtype), weights['I'].to(dtype),
            weights['W'].to(dtype), weights['J'].to(dtype))


def train_neural_net(X: Tensor,
                     Y: Tensor,
                     weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One gradient step on 1/2 * sum of squared errors over the batch."""
    if X.shape[0] != Y.shape[0]:
        raise ValueError("inputs and targets have different batch sizes")
    dtype = X.dtype if X.is_floating_point() else torch.float32
    inputs = X.to(dtype)
    targets = Y.to(dtype)

    if not weights:
        in_to_hidden = torch.randn(3, 4, dtype=dtype)
        hidden_bias = torch.randn(1, 4, dtype=dtype)
        hidden_to_out = torch.randn(4, 1, dtype=dtype)
        out_bias = torch.randn(1, 1, dtype=dtype)
    else:
        in_to_hidden, hidden_bias, hidden_to_out, out_bias = _params(weights, dtype)

    hidden_pre = torch.matmul(inputs, in_to_hidden) + hidden_bias
    hidden_out = logistic(hidden_pre)
    output_pre = torch.matmul(hidden_out, hidden_to_out) + out_bias
    output = logistic(output_pre)

    error = output - targets
    grad_out = error * logistic_slope(output_pre)
    grad_hidden_to_out = torch.matmul(hidden_out.t(), grad_out)
    grad_out_bias = torch.sum(grad_out, dim=0, keepdim=True)
    delta_hidden = torch.matmul(grad_out, hidden_to_out.t()) * logistic_slope(hidden_pre)
    grad_in_to_hidden = torch.matmul(inputs.t(), delta_hidden)
    grad_hidden_bias = torch.sum(delta_hidden, dim=0, keepdim=True)

    step = learning_rate
    return {
        'V': in_to_hidden - step * grad_in_to_hidden,
        'I': hidden_bias - step * grad_hidden_bias,
        'W': hidden_to_out - step * grad_hidden_to_out,
        'J': out_bias - step * grad_out_bias,
    }


def neural_net_predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """The network's output for every row of X, shape (n, 1)."""
    dtype = X.dtype if X.is_floating_point() else torch.float32
    in_to_hidden, hidden_bias, hidden_to_out, out_bias = _params(weights, dtype)
    hidden_out = logistic(torch.matmul(X.to(dtype), in_to_hidden) + hidden_bias)
    return logistic(torch.matmul(hidden_out, hidden_to_out) + out_bias)
