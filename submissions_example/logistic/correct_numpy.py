# gradkit-expect: assignment=logistic
# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""Logistic regression computed with NumPy float64 arrays and names of its own, returning torch
tensors in X's dtype: prob = sigmoid(x coef + offset); with the binary cross-entropy summed over
the batch, the error at the pre-activation is prob - y.
"""

import numpy as np
import torch


def _as_array(t):
    return t.detach().cpu().numpy().astype(np.float64)


def train(X, Y, weights=None, learning_rate=1.0):
    dtype = X.dtype if X.is_floating_point() else torch.float32
    if not weights:
        weights = {'w': torch.randn(3, 1, dtype=dtype), 'b': torch.randn(1, 1, dtype=dtype)}

    x, y = _as_array(X), _as_array(Y)
    coef, offset = _as_array(weights['w']), _as_array(weights['b'])

    prob = 1.0 / (1.0 + np.exp(-(np.dot(x, coef) + offset)))
    err = prob - y
    grad_coef = np.dot(x.T, err)
    grad_offset = np.sum(err, axis=0, keepdims=True)

    return {'w': torch.from_numpy(coef - learning_rate * grad_coef).to(dtype),
            'b': torch.from_numpy(offset - learning_rate * grad_offset).to(dtype)}


def predict(X, weights):
    dtype = X.dtype if X.is_floating_point() else torch.float32
    z = np.dot(_as_array(X), _as_array(weights['w'])) + _as_array(weights['b'])
    return torch.from_numpy(1.0 / (1.0 + np.exp(-z))).to(dtype)
