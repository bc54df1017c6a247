# gradkit-expect: assignment=relu_mse
# gradkit-expect: verdict=fail
# gradkit-expect: failing=gradient.b1,gradient.b2,gradient.b3,update
# gradkit-expect: mistake=every layer's bias gradient averages dL/dZ over the batch instead of summing it (one line in a loop over the layers), so each is n times too small for n > 1 rows.
# gradkit-expect: code=GK106
# gradkit-expect: line=42
"""The 4-6-3-2 ReLU network as a loop over layers (correct_layers_loop.py) with the bias gradient
averaged over the batch instead of summed: one line, every layer. The line is found through the
loop's table of layer names (``new[b]`` takes 'b1', 'b2', 'b3').
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
        new[b] = weights[b] - learning_rate * grad.mean(0, keepdim=True)
        grad = torch.matmul(grad, weights[w].transpose(0, 1))
    return new


def predict(X, weights):
    return _forward(X, weights)[0]
