# gradkit-expect: assignment=tanh_bce
# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""The 2-8-1 tanh network computed with NumPy float64 arrays and names of its own, returning
torch tensors in X's dtype.

hidden = tanh(x w_in + b_in), prob = sigmoid(hidden w_out + b_out); with the binary
cross-entropy summed over the batch, the error at the output's pre-activation is prob - y.
"""

import numpy as np
import torch

KEYS = ('W1', 'b1', 'W2', 'b2')


def _as_array(t):
    return t.detach().cpu().numpy().astype(np.float64)


def _logistic(z):
    return 1.0 / (1.0 + np.exp(-z))


def train(X, Y, weights=None, learning_rate=1.0):
    dtype = X.dtype if X.is_floating_point() else torch.float32
    if not weights:
        weights = {'W1': torch.randn(2, 8, dtype=dtype), 'b1': torch.randn(1, 8, dtype=dtype),
                   'W2': torch.randn(8, 1, dtype=dtype), 'b2': torch.randn(1, 1, dtype=dtype)}

    x, y = _as_array(X), _as_array(Y)
    w_in, b_in, w_out, b_out = (_as_array(weights[k]) for k in KEYS)

    hidden = np.tanh(x.dot(w_in) + b_in)
    prob = _logistic(hidden.dot(w_out) + b_out)

    err_out = prob - y
    g_w_out = np.dot(hidden.T, err_out)
    g_b_out = err_out.sum(axis=0, keepdims=True)
    err_hidden = err_out.dot(w_out.T) * (1.0 - hidden * hidden)
    g_w_in = np.dot(x.T, err_hidden)
    g_b_in = err_hidden.sum(axis=0, keepdims=True)

    updated = {'W1': w_in - learning_rate * g_w_in, 'b1': b_in - learning_rate * g_b_in,
               'W2': w_out - learning_rate * g_w_out, 'b2': b_out - learning_rate * g_b_out}
    return {k: torch.from_numpy(updated[k]).to(dtype) for k in KEYS}


def predict(X, weights):
    dtype = X.dtype if X.is_floating_point() else torch.float32
    w_in, b_in, w_out, b_out = (_as_array(weights[k]) for k in KEYS)
    hidden = np.tanh(_as_array(X).dot(w_in) + b_in)
    return torch.from_numpy(_logistic(hidden.dot(w_out) + b_out)).to(dtype)
