# gradkit-expect: assignment=relu_mse
# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""The 4-6-3-2 ReLU network computed with NumPy float64 arrays and names of its own, returning
torch tensors in X's dtype. The loss is the mean over rows of the summed squared errors, so the
error at the linear output is 2 (out - y) / n.
"""

import numpy as np
import torch

KEYS = ('W1', 'b1', 'W2', 'b2', 'W3', 'b3')
SHAPES = ((4, 6), (1, 6), (6, 3), (1, 3), (3, 2), (1, 2))


def _as_array(t):
    return t.detach().cpu().numpy().astype(np.float64)


def train(X, Y, weights=None, learning_rate=1.0):
    dtype = X.dtype if X.is_floating_point() else torch.float32
    if not weights:
        weights = {k: torch.randn(*shape, dtype=dtype) for k, shape in zip(KEYS, SHAPES)}

    x, y = _as_array(X), _as_array(Y)
    w_a, b_a, w_b, b_b, w_out, b_out = (_as_array(weights[k]) for k in KEYS)
    rows = x.shape[0]

    pre_a = x.dot(w_a) + b_a
    act_a = np.maximum(pre_a, 0.0)
    pre_b = act_a.dot(w_b) + b_b
    act_b = np.maximum(pre_b, 0.0)
    out = act_b.dot(w_out) + b_out

    err_out = 2.0 * (out - y) / rows
    g_w_out = act_b.T.dot(err_out)
    g_b_out = err_out.sum(axis=0, keepdims=True)
    err_b = err_out.dot(w_out.T) * (pre_b > 0)
    g_w_b = act_a.T.dot(err_b)
    g_b_b = err_b.sum(axis=0, keepdims=True)
    err_a = err_b.dot(w_b.T) * (pre_a > 0)
    g_w_a = x.T.dot(err_a)
    g_b_a = err_a.sum(axis=0, keepdims=True)

    steps = (g_w_a, g_b_a, g_w_b, g_b_b, g_w_out, g_b_out)
    old = (w_a, b_a, w_b, b_b, w_out, b_out)
    return {k: torch.from_numpy(value - learning_rate * step).to(dtype)
            for k, value, step in zip(KEYS, old, steps)}


def predict(X, weights):
    dtype = X.dtype if X.is_floating_point() else torch.float32
    w_a, b_a, w_b, b_b, w_out, b_out = (_as_array(weights[k]) for k in KEYS)
    act_a = np.maximum(_as_array(X).dot(w_a) + b_a, 0.0)
    act_b = np.maximum(act_a.dot(w_b) + b_b, 0.0)
    return torch.from_numpy(act_b.dot(w_out) + b_out).to(dtype)
