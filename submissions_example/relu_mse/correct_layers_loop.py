# gradkit-expect: assignment=relu_mse
# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""The 4-6-3-2 ReLU network written as a loop over layers: the forward pass keeps every layer's
input and pre-activation, the backward pass walks them in reverse, ReLU's derivative is a mask.
"""

import torch

LAYERS = [('W1', 'b1', 4, 6, True), ('W2', 'b2', 6, 3, True), ('W3', 'b3', 3, 2, False)]


def _forward(X, weights):
    inputs, pres = [], []
    A = X
    for w, b, _, _, relu in LAYERS:
        inputs.append(A)
        Z = torch.matmul(A, weights[w]) + weights[b]
        pres.append(Z)
        A = Z.clamp(min=0) if relu else Z
    return A, inputs, pres


def train(X, Y, weights=None, learning_rate=1.0):
    Y = Y.to(X.dtype)
    if weights is None or len(weights) == 0:
        weights = {}
        for w, b, fan_in, units, _ in LAYERS:
            weights[w] = torch.randn(fan_in, units, dtype=X.dtype)
            weights[b] = torch.randn(1, units, dtype=X.dtype)
    P, inputs, pres = _forward(X, weights)
    grad = 2.0 * (P - Y) / len(X)  # the mean over rows of the summed squared error
    new = {}
    for (w, b, _, _, relu), A, Z in reversed(list(zip(LAYERS, inputs, pres))):
        if relu:
            grad = torch.where(Z > 0, grad, torch.zeros_like(grad))
        new[w] = weights[w] - learning_rate * torch.matmul(A.transpose(0, 1), grad)
        new[b] = weights[b] - learning_rate * grad.sum(0, keepdim=True)
        grad = torch.matmul(grad, weights[w].transpose(0, 1))
    return new


def predict(X, weights):
    return _forward(X, weights)[0]
