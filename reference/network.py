"""The course network, done right: forward pass, hand-written backward pass and one SGD step.

The network is A = X V + I, B = sigmoid(A), C = B W + J, P = sigmoid(C). Its documented
gradients are those of

    L = 1/2 * sum over the batch of (p - y)^2

so dL/dP = P - Y (the notebook writes ``-1.0 * (Y - P)``). The notebook's ``mse_loss`` returns
(p - y)^2 without the 1/2; a student who differentiates that gets gradients twice as large. Bias
gradients are sums over the batch, not means. See ``reference.assignment`` for other conventions.

Unlike the notebook, the forward pass adds ``weights['I']`` and ``weights['J']`` (the notebook adds
its leftover globals ``I`` and ``J``, so its learned biases are never used).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor

from reference.assignment import NOTEBOOK, Assignment, LossConvention, convention_scale

Weights = dict[str, Tensor]

#: The hand-written intermediates, in the order the notebook computes them.
GRADIENT_NAMES = ("dLdP", "dPdC", "dLdC", "dLdW", "dLdJ", "dLdB", "dBdA", "dLdA", "dLdV", "dLdI")
#: Which intermediate is the gradient of which parameter.
PARAMETER_GRADIENT = {"V": "dLdV", "I": "dLdI", "W": "dLdW", "J": "dLdJ"}


def sigmoid(x: Tensor, deriv: bool = False) -> Tensor:
    """1 / (1 + exp(-x)); with ``deriv=True``, sigmoid(x) * (1 - sigmoid(x)) at the same x."""
    # sigmoid(-x) is 1 - sigmoid(x) without the cancellation that loses its digits at large x.
    return torch.sigmoid(x) * torch.sigmoid(-x) if deriv else torch.sigmoid(x)


@dataclass(frozen=True)
class Forward:
    """Every activation of one forward pass."""

    X: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    P: Tensor


@dataclass(frozen=True)
class Backward:
    """Every hand-written gradient of one backward pass, under the notebook's names."""

    dLdP: Tensor
    dPdC: Tensor
    dLdC: Tensor
    dLdW: Tensor
    dLdJ: Tensor
    dLdB: Tensor
    dBdA: Tensor
    dLdA: Tensor
    dLdV: Tensor
    dLdI: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def parameter_gradients(self) -> Weights:
        """The gradients of V, I, W and J."""
        return {name: getattr(self, grad) for name, grad in PARAMETER_GRADIENT.items()}


def forward(X: Tensor, weights: Weights) -> Forward:
    """The forward pass, keeping every activation."""
    A = X @ weights["V"] + weights["I"]
    B = sigmoid(A)
    C = B @ weights["W"] + weights["J"]
    P = sigmoid(C)
    return Forward(X=X, A=A, B=B, C=C, P=P)


def backward(
    fwd: Forward, Y: Tensor, weights: Weights, convention: LossConvention = "half_sum"
) -> Backward:
    """The notebook's hand-written backward pass (for ``half_sum``), every step kept."""
    scale = convention_scale(convention, fwd.X.shape[0])
    dLdP = scale * (fwd.P - Y)
    dPdC = sigmoid(fwd.C, deriv=True)
    dLdC = dLdP * dPdC
    dLdW = fwd.B.T @ dLdC
    dLdJ = dLdC.sum(dim=0, keepdim=True)
    dLdB = dLdC @ weights["W"].T
    dBdA = sigmoid(fwd.A, deriv=True)
    dLdA = dLdB * dBdA
    dLdV = fwd.X.T @ dLdA
    dLdI = dLdA.sum(dim=0, keepdim=True)
    return Backward(dLdP, dPdC, dLdC, dLdW, dLdJ, dLdB, dBdA, dLdA, dLdV, dLdI)


def loss(P: Tensor, Y: Tensor, convention: LossConvention = "half_sum") -> Tensor:
    """The scalar loss whose gradients ``backward`` computes."""
    sse = ((P - Y) ** 2).sum()
    return {"half_sum": 0.5 * sse, "sum": sse, "half_mean": 0.5 * sse / P.shape[0],
            "mean": sse / P.shape[0]}[convention]


def sgd_update(weights: Weights, gradients: Weights, learning_rate: float) -> Weights:
    """w <- w - learning_rate * dL/dw, as a new dict."""
    return {name: weights[name] - learning_rate * gradients[name] for name in weights}


def init_weights(
    assignment: Assignment = NOTEBOOK, dtype: torch.dtype = torch.float32
) -> Weights:
    """Fresh ``torch.randn`` weights in the notebook's order of draws: V, I, then W, J."""
    return {
        name: torch.randn(*shape, dtype=dtype)
        for name, shape in assignment.parameter_shapes.items()
    }


def train_neural_net(
    X: Tensor,
    Y: Tensor,
    weights: Optional[Weights] = None,
    learning_rate: float = 1.0,
) -> Weights:
    """One SGD step on a batch: returns the updated weights {'V', 'I', 'W', 'J'}.

    Missing weights are drawn with ``torch.randn`` in the notebook's order, so a seeded run
    reproduces the notebook's. Results keep the dtype of ``X``.
    """
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    if not weights:
        weights = init_weights(NOTEBOOK, X.dtype)
    Y = Y.to(X.dtype)
    fwd = forward(X, weights)
    grads = backward(fwd, Y, weights).parameter_gradients()
    return sgd_update(weights, grads, learning_rate)


def neural_net_predict(X: Tensor, weights: Weights) -> Tensor:
    """The network's prediction P for every row of X."""
    return forward(X, weights).P
