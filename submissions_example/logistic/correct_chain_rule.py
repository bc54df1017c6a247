# gradkit-expect: assignment=logistic
# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""Logistic regression in another style: the chain rule written out (dL/dP, then dP/dZ), numpy-
like names, and a loop over the parameters for the update.
"""

import torch


def sigmoid(z):
    return 1.0 / (1.0 + torch.exp(-z))


def train(X, Y, weights=None, learning_rate=1.0):
    Y = Y.to(X.dtype)
    if not weights:
        weights = {}
        weights['w'] = torch.randn(3, 1, dtype=X.dtype)
        weights['b'] = torch.randn(1, 1, dtype=X.dtype)
    z = torch.mm(X, weights['w']) + weights['b']
    p = sigmoid(z)
    dL_dp = -(Y / p) + (1 - Y) / (1 - p)
    dp_dz = p * (1 - p)
    dL_dz = dL_dp * dp_dz
    grads = {'w': torch.mm(X.t(), dL_dz), 'b': dL_dz.sum(0).reshape(1, 1)}
    return {k: weights[k] - learning_rate * grads[k] for k in ('w', 'b')}


def predict(X, weights):
    return sigmoid(torch.mm(X, weights['w']) + weights['b'])
