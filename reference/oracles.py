"""Three independent oracles for dL/dV, dL/dI, dL/dW and dL/dJ, each a function of (X, Y, weights).

- ``hand_written_gradients``: the reference's backward pass (``reference.network.backward``).
- ``autograd_gradients``: torch autograd through the same forward pass, in float64.
- ``finite_difference_gradients``: central differences of the loss in float64, the loss changes
  computed without cancellation and refined by Richardson extrapolation (Ridders' method), so they
  stay accurate where gradients are tiny.

All three return float64 tensors whatever the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reference.assignment import LossConvention, convention_scale
from reference.network import Weights, backward, forward, loss

F64 = torch.float64


def _as_f64(X: Tensor, Y: Tensor, weights: Weights) -> tuple[Tensor, Tensor, Weights]:
    return (
        X.detach().to(F64),
        Y.detach().to(F64),
        {name: w.detach().to(F64) for name, w in weights.items()},
    )


def hand_written_gradients(
    X: Tensor, Y: Tensor, weights: Weights, convention: LossConvention = "half_sum"
) -> Weights:
    """The reference's hand-written backward pass, in float64."""
    X, Y, weights = _as_f64(X, Y, weights)
    return backward(forward(X, weights), Y, weights, convention).parameter_gradients()


def autograd_gradients(
    X: Tensor, Y: Tensor, weights: Weights, convention: LossConvention = "half_sum"
) -> Weights:
    """torch autograd of the loss through the forward pass, in float64."""
    X, Y, weights = _as_f64(X, Y, weights)
    leaves = {name: w.clone().requires_grad_(True) for name, w in weights.items()}
    with torch.enable_grad():
        value = loss(forward(X, leaves).P, Y, convention)
        grads = torch.autograd.grad(value, list(leaves.values()))
    return {name: g.detach() for name, g in zip(leaves, grads)}


def _residual(C: Tensor, Y: Tensor) -> Tensor:
    """p - y, computed as -sigmoid(-c) where y is 1 so it keeps its relative precision."""
    return torch.where(Y == 1, -torch.sigmoid(-C), torch.sigmoid(C) - Y)


def _sigmoid_change(a: Tensor, d: Tensor) -> Tensor:
    """sigmoid(a + d) - sigmoid(a) without cancellation: sinh(d/2) / (2 cosh((a+d)/2) cosh(a/2))."""
    return torch.sinh(d / 2) / (2 * torch.cosh((a + d) / 2) * torch.cosh(a / 2))


def _loss_change(
    X: Tensor, Y: Tensor, weights: Weights, name: str, index: int, t: float,
    convention: LossConvention,
) -> float:
    """L(weights with one entry moved by t) - L(weights), without catastrophic cancellation.

    Subtracting two evaluations of a loss of order 1 loses every digit of a change of order 1e-9
    (a saturated unit's). Here the change is built from the forward pass alone: the moved entry
    shifts A or C exactly, ``_sigmoid_change`` carries the shift through each sigmoid, and
    L' - L = sum(r * dr + dr**2 / 2) for the half-sum loss. No derivative formula is used.
    """
    A = X @ weights["V"] + weights["I"]
    B = torch.sigmoid(A)
    C = B @ weights["W"] + weights["J"]
    dC = torch.zeros_like(C)
    if name in ("V", "I"):
        row, col = divmod(index, weights[name].shape[1])
        dA = torch.zeros_like(A)
        dA[:, col] = X[:, row] * t if name == "V" else t
        dC = _sigmoid_change(A, dA) @ weights["W"]
    else:
        row, col = divmod(index, weights[name].shape[1])
        dC[:, col] = B[:, row] * t if name == "W" else t
    dr = _sigmoid_change(C, dC)
    half_sum = float((_residual(C, Y) * dr + dr * dr / 2).sum())
    return half_sum * convention_scale(convention, X.shape[0])


def _ridders(f, h: float, steps: int = 8, shrink: float = 1.4) -> float:
    """Ridders' extrapolation of the central difference (f(h) - f(-h)) / 2h to h -> 0.

    ``f(t)`` is the loss with one weight moved by t. Returns the estimate with the smallest
    error estimate across the whole tableau (Numerical Recipes' dfridr, without its early exit).
    """
    fac = shrink**2
    table = [[0.0] * steps for _ in range(steps)]
    table[0][0] = (f(h) - f(-h)) / (2 * h)
    best, best_err = table[0][0], float("inf")
    for i in range(1, steps):
        h /= shrink
        table[0][i] = (f(h) - f(-h)) / (2 * h)
        factor = fac
        for j in range(1, i + 1):
            table[j][i] = (table[j - 1][i] * factor - table[j - 1][i - 1]) / (factor - 1)
            factor *= fac
            err = max(abs(table[j][i] - table[j - 1][i]), abs(table[j][i] - table[j - 1][i - 1]))
            if err <= best_err:
                best, best_err = table[j][i], err
    # No early exit (dfridr stops once the diagonal grows past twice the best error). It guards
    # against round-off at small h, which ``_loss_change`` does not suffer; and where the h**2
    # error term nearly vanishes, two early estimates can agree by chance, fool the error
    # estimate, and stop the tableau at a relative error of ~1e-7.
    return best


def finite_difference_gradients(
    X: Tensor,
    Y: Tensor,
    weights: Weights,
    convention: LossConvention = "half_sum",
    step: float = 0.1,
) -> Weights:
    """Central finite differences of the loss in float64, one weight at a time."""
    X, Y, weights = _as_f64(X, Y, weights)
    grads: Weights = {}
    for name, w in weights.items():
        g = torch.empty_like(w)
        for index in range(w.numel()):
            def moved(t: float, name=name, index=index) -> float:
                return _loss_change(X, Y, weights, name, index, t, convention)

            g.view(-1)[index] = _ridders(moved, step)
        grads[name] = g
    return grads


ORACLES = {
    "hand_written": hand_written_gradients,
    "autograd": autograd_gradients,
    "finite_differences": finite_difference_gradients,
}
