"""The STEP TABLE: every quantity of an assignment's forward and backward pass, in order.

``step_table(assignment)`` lists, for any description, each step's generic id, the course's name
for it, its layer, its kind, the ids of its inputs, its formula in the course's names, and how to
compute it from those inputs. ``reference.network`` runs the table to get the reference's values;
diagnosis walks it to recompute each step from the student's *own* upstream values (is their
dLdW2 equal to A1.T @ dLdZ2 for *their* dLdZ2?) and to search for the edit that explains a wrong
one.

Ids, for a network of L layers (layer k has weight ``W{k}`` and bias ``b{k}``; ``A0`` is ``X``):

============  =======================  ==========================================  ==========
id            kind                     formula                                     inputs
============  =======================  ==========================================  ==========
Z{k}          pre_activation           A{k-1} @ W{k} + b{k}                        X or A{k-1}, W{k}, b{k}
A{k}          activation               f_k(Z{k})     (A{L} is the prediction P)    Z{k}
dLdA{L}       loss_gradient            dL/dP of the documented loss                A{L}, Y
dA{k}dZ{k}    activation_derivative    f_k'(Z{k})                                  Z{k}
dLdZ{k}       pre_activation_gradient  dLdA{k} * dA{k}dZ{k}                        dLdA{k}, dA{k}dZ{k}
                                       (bce, k = L: the fused P - Y)               (A{L}, Y)
dLdW{k}       weight_gradient          A{k-1}.T @ dLdZ{k}                          X or A{k-1}, dLdZ{k}
dLdb{k}       bias_gradient            dLdZ{k}.sum(dim=0, keepdim=True)            dLdZ{k}
dLdA{k-1}     input_gradient (k > 1)   dLdZ{k} @ W{k}.T                            dLdZ{k}, W{k}
update.W{k}   update                   W{k} - learning_rate * dLdW{k}              W{k}, dLdW{k}, learning_rate
============  =======================  ==========================================  ==========

The backward steps come layer by layer from the output: dLdA{L}, then for k = L..1 the steps
dA{k}dZ{k}, dLdZ{k}, dLdW{k}, dLdb{k}, dLdA{k-1}; the updates last, in the order of the
parameters. For the notebook (``reference/assignments/notebook.toml``) that is exactly its order
and names: dLdP, dPdC, dLdC, dLdW, dLdJ, dLdB, dBdA, dLdA, dLdV, dLdI.

Loss gradients are those of the documented loss (``Assignment.loss``): half_sse P - Y; sse
2 (P - Y); mse 2 (P - Y) / n; bce (P - Y) / (P (1 - P)), and for bce the output layer's dLdZ{L}
is taken as the fused P - Y (the product loses every digit where the sigmoid saturates). Every
step of kind in ``LOSS_LINEAR`` scales with a loss convention's factor
(``Assignment.convention_scale``); activation derivatives and the forward pass do not.

ReLU's derivative at exactly 0 is 0 (as torch's autograd has it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional

import torch
from torch import Tensor

from reference.assignment import step_ids

if TYPE_CHECKING:
    from reference.assignment import Assignment

__all__ = ["Step", "StepKind", "step_table", "step_ids", "gradient_id", "downstream_parameters",
           "activate", "derivative", "sigmoid", "loss_factor", "LOSS_LINEAR", "FORWARD_KINDS"]

StepKind = Literal["pre_activation", "activation", "loss_gradient", "activation_derivative",
                   "pre_activation_gradient", "weight_gradient", "bias_gradient",
                   "input_gradient", "update"]
FORWARD_KINDS = ("pre_activation", "activation")
#: Kinds whose values are multiplied by a loss convention's factor.
LOSS_LINEAR = frozenset({"loss_gradient", "pre_activation_gradient", "weight_gradient",
                         "bias_gradient", "input_gradient"})


@dataclass(frozen=True)
class Step:
    """One step of the network.

    ``compute(*inputs)`` gives its value from the values of ``inputs`` (ids, in order; a
    ``learning_rate`` input is a float). ``magnitude(*inputs)`` is the same computation on the
    inputs' absolute values (sums instead of differences), the scale of its float rounding;
    None where the rounding is relative to 1 (activations and their derivatives).
    """

    id: str
    name: str
    layer: int
    kind: StepKind
    inputs: tuple[str, ...]
    formula: str
    compute: Callable[..., Tensor]
    magnitude: Optional[Callable[..., Tensor]] = None
    #: the parameter (course name) whose gradient or update this is
    parameter: Optional[str] = None

    @property
    def is_forward(self) -> bool:
        return self.kind in FORWARD_KINDS


# ------------------------------------------------------------------------------------------------
# Activations and their derivatives
# ------------------------------------------------------------------------------------------------

def sigmoid(x: Tensor, deriv: bool = False) -> Tensor:
    """1 / (1 + exp(-x)); with ``deriv=True``, sigmoid(x) * (1 - sigmoid(x)) at the same x."""
    # sigmoid(-x) is 1 - sigmoid(x) without the cancellation that loses its digits at large x.
    return torch.sigmoid(x) * torch.sigmoid(-x) if deriv else torch.sigmoid(x)


def activate(activation: str, z: Tensor) -> Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(z)
    if activation == "tanh":
        return torch.tanh(z)
    if activation == "relu":
        return torch.relu(z)
    if activation == "identity":
        return z
    raise ValueError(f"unknown activation {activation!r}")


def derivative(activation: str, z: Tensor) -> Tensor:
    """f'(z) from the pre-activation z; ReLU's is 0 at exactly 0."""
    if activation == "sigmoid":
        return sigmoid(z, deriv=True)
    if activation == "tanh":
        return 1 - torch.tanh(z) ** 2
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "identity":
        return torch.ones_like(z)
    raise ValueError(f"unknown activation {activation!r}")


DERIVATIVE_WORDS = {
    "sigmoid": "sigmoid({z}) * (1 - sigmoid({z}))",
    "tanh": "1 - tanh({z})**2",
    "relu": "({z} > 0)",
    "identity": "1",
}
ACTIVATION_WORDS = {"sigmoid": "sigmoid({z})", "tanh": "tanh({z})", "relu": "relu({z})",
                    "identity": "{z}"}


def loss_factor(loss: str, convention: str, batch_size: int) -> float:
    """The factor on the loss's base gradient (P - Y for squared errors, the bce gradient for
    bce) under a convention: half_sum 1, sum 2, half_mean 1/n, mean 2/n (bce: sum 1, mean 1/n)."""
    from reference.assignment import convention_scale

    scale = convention_scale(convention, batch_size)  # type: ignore[arg-type]
    return scale / 2.0 if loss == "bce" else scale


def _sum_rows(t: Tensor) -> Tensor:
    return t.sum(dim=0, keepdim=True)


def _scaled(factor: float, t: Tensor) -> Tensor:
    # x * 1.0 is x exactly; skipping it keeps the notebook's numbers bit for bit
    return t if factor == 1.0 else factor * t


def _loss_gradient(loss: str, convention: str) -> tuple[Callable, Callable]:
    def squared(P: Tensor, Y: Tensor) -> Tensor:
        return _scaled(loss_factor(loss, convention, P.shape[0]), P - Y)

    def squared_magnitude(P: Tensor, Y: Tensor) -> Tensor:
        return _scaled(loss_factor(loss, convention, P.shape[0]), P.abs() + Y.abs())

    def bce(P: Tensor, Y: Tensor) -> Tensor:
        return _scaled(loss_factor(loss, convention, P.shape[0]), (P - Y) / (P * (1 - P)))

    def bce_magnitude(P: Tensor, Y: Tensor) -> Tensor:
        return _scaled(loss_factor(loss, convention, P.shape[0]),
                       (P.abs() + Y.abs()) / (P * (1 - P)).abs())

    return (bce, bce_magnitude) if loss == "bce" else (squared, squared_magnitude)


def _fused_bce(convention: str) -> tuple[Callable, Callable]:
    def fused(P: Tensor, Y: Tensor) -> Tensor:
        return _scaled(loss_factor("bce", convention, P.shape[0]), P - Y)

    def fused_magnitude(P: Tensor, Y: Tensor) -> Tensor:
        return _scaled(loss_factor("bce", convention, P.shape[0]), P.abs() + Y.abs())

    return fused, fused_magnitude


LOSS_GRADIENT_WORDS = {
    "half_sse": "{P} - {Y}", "sse": "2 * ({P} - {Y})", "mse": "2 * ({P} - {Y}) / n",
    "bce": "({P} - {Y}) / ({P} * (1 - {P}))",
}


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------

def step_table(assignment: "Assignment", convention: Optional[str] = None) -> tuple[Step, ...]:
    """Every step of the assignment's network in the order the reference computes them:
    forward (Z1, A1, ..., ZL, AL), backward (dLdA{L} ... dLdb1), then the updates.

    ``convention``: the loss convention the loss-linear steps are computed under (default:
    the documented one).
    """
    return _table(assignment, convention or assignment.loss_convention)


@functools.lru_cache(maxsize=64)
def _table(assignment: "Assignment", convention: str) -> tuple[Step, ...]:
    n = assignment.name_of
    L = len(assignment.layers)
    steps: list[Step] = []

    def prev(k: int) -> str:
        return "X" if k == 1 else f"A{k - 1}"

    def pname(i: str) -> str:
        return "X" if i == "X" else "Y" if i == "Y" else n(i)

    for k, layer in enumerate(assignment.layers, start=1):
        a, w, b = prev(k), f"W{k}", f"b{k}"
        steps.append(Step(
            f"Z{k}", n(f"Z{k}"), k, "pre_activation", (a, w, b),
            f"{n(f'Z{k}')} = {pname(a)} @ {layer.weight} + {layer.bias}",
            lambda A, W, B: A @ W + B, lambda A, W, B: A.abs() @ W.abs() + B.abs()))
        steps.append(Step(
            f"A{k}", n(f"A{k}"), k, "activation", (f"Z{k}",),
            f"{n(f'A{k}')} = " + ACTIVATION_WORDS[layer.activation].format(z=n(f"Z{k}")),
            lambda Z, act=layer.activation: activate(act, Z)))
    P = f"A{L}"
    compute, magnitude = _loss_gradient(assignment.loss, convention)
    scale_words = "" if convention == assignment.loss_convention else \
        f" (under the {convention!r} convention)"
    steps.append(Step(
        f"dLdA{L}", n(f"dLdA{L}"), L, "loss_gradient", (P, "Y"),
        f"{n(f'dLdA{L}')} = " + LOSS_GRADIENT_WORDS[assignment.loss].format(P=n(P), Y="Y")
        + scale_words, compute, magnitude))
    for k in range(L, 0, -1):
        layer = assignment.layers[k - 1]
        z, a, dz, da, dadz = f"Z{k}", prev(k), f"dLdZ{k}", f"dLdA{k}", f"dA{k}dZ{k}"
        steps.append(Step(
            dadz, n(dadz), k, "activation_derivative", (z,),
            f"{n(dadz)} = " + DERIVATIVE_WORDS[layer.activation].format(z=n(z)),
            lambda Z, act=layer.activation: derivative(act, Z)))
        if k == L and assignment.loss == "bce":
            fused, fused_magnitude = _fused_bce(convention)
            steps.append(Step(
                dz, n(dz), k, "pre_activation_gradient", (P, "Y"),
                f"{n(dz)} = {n(da)} * {n(dadz)} = {n(P)} - Y (bce of a sigmoid output)"
                + scale_words, fused, fused_magnitude))
        else:
            steps.append(Step(
                dz, n(dz), k, "pre_activation_gradient", (da, dadz),
                f"{n(dz)} = {n(da)} * {n(dadz)}", lambda g, d: g * d,
                lambda g, d: g.abs() * d.abs()))
        steps.append(Step(
            f"dLdW{k}", n(f"dLdW{k}"), k, "weight_gradient", (a, dz),
            f"{n(f'dLdW{k}')} = {pname(a)}.T @ {n(dz)}", lambda A, g: A.T @ g,
            lambda A, g: A.abs().T @ g.abs(), parameter=layer.weight))
        steps.append(Step(
            f"dLdb{k}", n(f"dLdb{k}"), k, "bias_gradient", (dz,),
            f"{n(f'dLdb{k}')} = {n(dz)}.sum(dim=0, keepdim=True)", _sum_rows,
            lambda g: _sum_rows(g.abs()), parameter=layer.bias))
        if k > 1:
            below = f"dLdA{k - 1}"
            steps.append(Step(
                below, n(below), k, "input_gradient", (dz, f"W{k}"),
                f"{n(below)} = {n(dz)} @ {layer.weight}.T", lambda g, W: g @ W.T,
                lambda g, W: g.abs() @ W.abs().T))
    for k, layer in enumerate(assignment.layers, start=1):
        for kind, parameter in (("W", layer.weight), ("b", layer.bias)):
            grad = f"dLd{kind}{k}"
            steps.append(Step(
                f"update.{kind}{k}", f"update.{parameter}", k, "update",
                (f"{kind}{k}", grad, "learning_rate"),
                f"{parameter} = {parameter} - learning_rate * {n(grad)}",
                lambda W, g, lr: W - lr * g, lambda W, g, lr: W.abs() + abs(lr) * g.abs(),
                parameter=parameter))
    return tuple(steps)


def gradient_id(assignment: "Assignment", parameter: str) -> str:
    """The id of a parameter's gradient step: ``V`` -> ``dLdW1`` in the notebook."""
    return "dLd" + assignment.parameter_ids[parameter]


def downstream_parameters(assignment: "Assignment", step_id: str) -> tuple[str, ...]:
    """The parameters (course names) whose gradient a wrong value of this step makes wrong:
    a forward step or the output's loss gradient reaches every one; a layer's dLdZ{k} (and its
    dA{k}dZ{k}, dLdA{k}) reaches layers 1..k; dLdW{k}, dLdb{k} and the updates only their own."""
    table = {s.id: s for s in step_table(assignment)}  # (cached)
    step = table[step_id]
    if step.kind in FORWARD_KINDS or step.kind == "loss_gradient":
        return assignment.parameter_names
    if step.parameter is not None:
        return (step.parameter,)
    top = step.layer - 1 if step.kind == "input_gradient" else step.layer
    return tuple(p for p in assignment.parameter_names if assignment.parameter_layer(p) <= top)
