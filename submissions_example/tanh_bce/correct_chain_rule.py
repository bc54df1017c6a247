# gradkit-expect: assignment=tanh_bce
# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""The 2-8-1 tanh network in another style: torch.mm, the chain rule written out in full (dL/dP,
then dP/dZ2), tanh's derivative from the pre-activation, and in-place updates on copies.
"""

import torch


def _sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


def train(X, Y, weights=None, learning_rate=1.0):
    Y = Y.to(X.dtype)
    if weights is None or len(weights) == 0:
        weights = {}
        for name, shape in (('W1', (2, 8)), ('b1', (1, 8)), ('W2', (8, 1)), ('b2', (1, 1))):
            weights[name] = torch.randn(*shape, dtype=X.dtype)
    new = {name: value.clone() for name, value in weights.items()}

    hidden_in = torch.mm(X, weights['W1']) + weights['b1']
    hidden = torch.tanh(hidden_in)
    out_in = torch.mm(hidden, weights['W2']) + weights['b2']
    out = _sigmoid(out_in)

    # binary cross-entropy: dL/dP = -Y/P + (1 - Y)/(1 - P); dP/dZ2 = P (1 - P)
    dL_dP = -Y / out + (1 - Y) / (1 - out)
    dP_dZ2 = out * (1 - out)
    dL_dZ2 = dL_dP * dP_dZ2
    grad_W2 = torch.mm(hidden.t(), dL_dZ2)
    grad_b2 = torch.sum(dL_dZ2, 0, keepdim=True)
    dL_dA1 = torch.mm(dL_dZ2, weights['W2'].t())
    dL_dZ1 = dL_dA1 / torch.cosh(hidden_in) ** 2
    grad_W1 = torch.mm(X.t(), dL_dZ1)
    grad_b1 = torch.sum(dL_dZ1, 0, keepdim=True)

    new['W1'] -= learning_rate * grad_W1
    new['b1'] -= learning_rate * grad_b1
    new['W2'] -= learning_rate * grad_W2
    new['b2'] -= learning_rate * grad_b2
    return new


def predict(X, weights):
    hidden = torch.tanh(torch.mm(X, weights['W1']) + weights['b1'])
    return _sigmoid(torch.mm(hidden, weights['W2']) + weights['b2'])
