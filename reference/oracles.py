"""Three independent oracles for every parameter gradient, each a function of (X, Y, weights).

- ``hand_written_gradients``: the reference's backward pass (``reference.network.run``).
- ``autograd_gradients``: torch autograd through the same forward pass, in float64.
- ``finite_difference_gradients``: central differences of the loss in float64, the loss changes
  computed without cancellation and refined by Richardson extrapolation (Ridders' method), so they
  stay accurate where gradients are tiny.

Each takes the assignment (default: the notebook's) and a loss convention (default: the
assignment's documented loss). All three return float64 tensors whatever the input dtype.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from reference.assignment import NOTEBOOK, Assignment, LossConvention, convention_scale
from reference.network import Weights, loss_value, run, run_forward

F64 = torch.float64


def _as_f64(X: Tensor, Y: Tensor, weights: Weights) -> tuple[Tensor, Tensor, Weights]:
    return (
        X.detach().to(F64),
        Y.detach().to(F64),
        {name: w.detach().to(F64) for name, w in weights.items()},
    )


def hand_written_gradients(
    X: Tensor, Y: Tensor, weights: Weights, convention: Optional[LossConvention] = None, *,
    assignment: Assignment = NOTEBOOK,
) -> Weights:
    """The reference's hand-written backward pass, in float64."""
    X, Y, weights = _as_f64(X, Y, weights)
    return run(assignment, X, Y, weights, convention).parameter_gradients()


def autograd_gradients(
    X: Tensor, Y: Tensor, weights: Weights, convention: Optional[LossConvention] = None, *,
    assignment: Assignment = NOTEBOOK,
) -> Weights:
    """torch autograd of the loss through the forward pass, in float64."""
    X, Y, weights = _as_f64(X, Y, weights)
    names = assignment.parameter_names
    leaves = {name: weights[name].clone().requires_grad_(True) for name in names}
    with torch.enable_grad():
        value = loss_value(assignment, X, Y, leaves, convention)
        grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    return {name: (torch.zeros_like(leaves[name]) if g is None else g.detach())
            for name, g in zip(leaves, grads)}


# ------------------------------------------------------------------------------------------------
# Finite differences without cancellation
# ------------------------------------------------------------------------------------------------

def _activation_change(activation: str, a: Tensor, d: Tensor) -> Tensor:
    """f(a + d) - f(a), computed without subtracting two nearly equal numbers."""
    if activation == "sigmoid":
        # sinh(d/2) / (2 cosh((a+d)/2) cosh(a/2))
        return torch.sinh(d / 2) / (2 * torch.cosh((a + d) / 2) * torch.cosh(a / 2))
    if activation == "tanh":
        return torch.sinh(d) / (torch.cosh(a + d) * torch.cosh(a))
    if activation == "relu":
        both = (a > 0) & (a + d > 0)
        return torch.where(both, d, torch.relu(a + d) - torch.relu(a))
    return d


def _residual(assignment: Assignment, Z: Tensor, P: Tensor, Y: Tensor) -> Tensor:
    """p - y; for a sigmoid output -sigmoid(-z) where y is 1, so it keeps its relative precision."""
    if assignment.layers[-1].activation == "sigmoid":
        return torch.where(Y == 1, -torch.sigmoid(-Z), torch.sigmoid(Z) - Y)
    return P - Y


class _Moves:
    """The loss change when one entry of one parameter moves by t, for one (X, Y, weights)."""

    def __init__(self, assignment: Assignment, X: Tensor, Y: Tensor, weights: Weights,
                 convention: LossConvention) -> None:
        self.a, self.X, self.Y, self.w, self.convention = assignment, X, Y, weights, convention
        trace = run_forward(assignment, X, weights)
        L = assignment.depth
        self.Z = [trace[f"Z{k}"] for k in range(1, L + 1)]
        self.A = [X] + [trace[f"A{k}"] for k in range(1, L + 1)]
        self.weights_by_layer = [weights[layer.weight] for layer in assignment.layers]
        self.residual = _residual(assignment, self.Z[-1], self.A[-1], Y)

    def changes(self, name: str, index: int, t: float) -> list[Tensor]:
        """The change of every pre-activation Z_k (k from the moved parameter's layer on)."""
        k = self.a.parameter_layer(name) - 1
        is_weight = name == self.a.layers[k].weight
        row, col = divmod(index, self.w[name].shape[1])
        dZ = torch.zeros_like(self.Z[k])
        dZ[:, col] = self.A[k][:, row] * t if is_weight else t
        out = [dZ]
        for j in range(k, self.a.depth - 1):
            dA = _activation_change(self.a.layers[j].activation, self.Z[j], out[-1])
            out.append(dA @ self.weights_by_layer[j + 1])
        return out

    def crosses_a_kink(self, name: str, index: int, t: float) -> bool:
        """Whether moving by t takes a ReLU pre-activation across 0."""
        k = self.a.parameter_layer(name) - 1
        for offset, dZ in enumerate(self.changes(name, index, t)):
            j = k + offset
            if self.a.layers[j].activation == "relu":
                Z = self.Z[j]
                if bool(((Z > 0) != (Z + dZ > 0)).any()):
                    return True
        return False

    def loss_change(self, name: str, index: int, t: float) -> float:
        """L(weights with one entry moved by t) - L(weights), without catastrophic cancellation.

        Subtracting two evaluations of a loss of order 1 loses every digit of a change of order
        1e-9 (a saturated unit's). Here the change is built from the forward pass alone: the
        moved entry shifts one layer's Z exactly, ``_activation_change`` carries the shift
        through each activation, and for squared errors L' - L = sum(r * dr + dr**2 / 2) (the
        half sum; other conventions scale it); for bce, per element,
        y log1p(sigmoid(-z) expm1(-dz)) + (1 - y) log1p(sigmoid(z) expm1(dz)).
        No derivative formula is used.
        """
        dZ = self.changes(name, index, t)[-1]
        Z, Y, n = self.Z[-1], self.Y, self.X.shape[0]
        if self.a.loss == "bce":
            change = Y * torch.log1p(torch.sigmoid(-Z) * torch.expm1(-dZ)) + \
                (1 - Y) * torch.log1p(torch.sigmoid(Z) * torch.expm1(dZ))
            total = float(change.sum())
            return total if self.convention == "sum" else total / n
        dr = _activation_change(self.a.layers[-1].activation, Z, dZ)
        half_sum = float((self.residual * dr + dr * dr / 2).sum())
        return half_sum * convention_scale(self.convention, n)


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
    # against round-off at small h, which ``loss_change`` does not suffer; and where the h**2
    # error term nearly vanishes, two early estimates can agree by chance, fool the error
    # estimate, and stop the tableau at a relative error of ~1e-7.
    return best


def finite_difference_gradients(
    X: Tensor,
    Y: Tensor,
    weights: Weights,
    convention: Optional[LossConvention] = None,
    step: float = 0.1,
    *,
    assignment: Assignment = NOTEBOOK,
) -> Weights:
    """Central finite differences of the loss in float64, one weight at a time.

    For a ReLU network the first step is shrunk until no pre-activation crosses 0 (the kink),
    so each difference sees one linear piece.
    """
    X, Y, weights = _as_f64(X, Y, weights)
    moves = _Moves(assignment, X, Y, weights, convention or assignment.loss_convention)
    has_relu = any(layer.activation == "relu" for layer in assignment.layers)
    grads: Weights = {}
    for name in assignment.parameter_names:
        w = weights[name]
        g = torch.empty_like(w)
        for index in range(w.numel()):
            def moved(t: float, name=name, index=index) -> float:
                return moves.loss_change(name, index, t)

            h = step
            if has_relu:
                for _ in range(60):
                    if not (moves.crosses_a_kink(name, index, h) or
                            moves.crosses_a_kink(name, index, -h)):
                        break
                    h /= 4
            g.view(-1)[index] = _ridders(moved, h)
        grads[name] = g
    return grads


ORACLES = {
    "hand_written": hand_written_gradients,
    "autograd": autograd_gradients,
    "finite_differences": finite_difference_gradients,
}
