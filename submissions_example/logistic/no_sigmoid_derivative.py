# gradkit-expect: assignment=logistic
# gradkit-expect: verdict=fail
# gradkit-expect: failing=gradient.b,gradient.w,training,update
# gradkit-expect: mistake=dL/dZ is dL/dP without the factor dP/dZ = P (1 - P): the activation derivative of layer 1 (the output) is missing, so both gradients are wrong.
# gradkit-expect: code=GK101
# gradkit-expect: line=26
"""Logistic regression with dL/dZ taken as dL/dP: the output sigmoid's derivative is left out."""

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
    dL_dz = dL_dp
    grads = {'w': torch.mm(X.t(), dL_dz), 'b': dL_dz.sum(0).reshape(1, 1)}
    return {k: weights[k] - learning_rate * grads[k] for k in ('w', 'b')}


def predict(X, weights):
    return sigmoid(torch.mm(X, weights['w']) + weights['b'])
