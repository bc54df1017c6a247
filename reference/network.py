"""Any assignment's network, done right: forward pass, hand-written backward pass, one SGD step.

``run(assignment, X, Y, weights)`` computes every step of ``reference.steps.step_table`` and
returns a ``Trace`` (every value by id, and by the course's names); ``train`` and ``predict``
are the student's two functions done right, for any description.

The notebook's own view is kept below, unchanged: ``forward``/``backward`` with the notebook's
names (A = X V + I, B = sigmoid(A), C = B W + J, P = sigmoid(C); dLdP ... dLdI), and
``train_neural_net``/``neural_net_predict``. Its documented gradients are those of

    L = 1/2 * sum over the batch of (p - y)^2

so dL/dP = P - Y (the notebook writes ``-1.0 * (Y - P)``). Bias gradients are sums over the
batch, not means. Unlike the notebook, the forward pass adds ``weights['I']`` and
``weights['J']`` (the notebook adds its leftover globals ``I`` and ``J``, so its learned biases
are never used).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor

from reference.assignment import NOTEBOOK, Assignment, LossConvention
from reference.steps import Step, derivative, sigmoid, step_table

Weights = dict[str, Tensor]

__all__ = ["Trace", "run", "run_forward", "train", "predict", "loss_value", "init_weights",
           "sgd_update", "sigmoid", "Forward", "Backward", "forward", "backward", "loss",
           "train_neural_net", "neural_net_predict", "GRADIENT_NAMES", "PARAMETER_GRADIENT"]


# ------------------------------------------------------------------------------------------------
# Any assignment
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """Every value of one forward and backward pass, by id (``Z1``, ``dLdW2``, ...)."""

    assignment: Assignment
    values: dict[str, Tensor]
    convention: str

    def __getitem__(self, step_id: str) -> Tensor:
        return self.values[step_id]

    @property
    def P(self) -> Tensor:
        return self.values[f"A{self.assignment.depth}"]

    def named(self) -> dict[str, Tensor]:
        """The values under the course's names (``dLdC`` for the notebook's ``dLdZ2``)."""
        a = self.assignment
        out = {"X": self.values["X"]}
        if "Y" in self.values:
            out["Y"] = self.values["Y"]
        for step in step_table(a, self.convention):
            if step.id in self.values and step.kind != "update":
                out[step.name] = self.values[step.id]
        return out

    def parameter_gradients(self) -> Weights:
        """dL/d(parameter) for every parameter, by its name, in the order of the draws."""
        a = self.assignment
        return {name: self.values["dLd" + a.parameter_ids[name]] for name in a.parameter_names}

    def rounding_scales(self) -> Weights:
        """For every parameter, by its name, the scale of the float rounding in its gradient:
        a correct solution that computes it in another order, or with the textbook formulas,
        differs from the reference by about eps times this, not eps times the gradient.

        A first-order running bound, carried through the pass on the reference's own float64
        values. Every value v gets a scale s(v) >= |v|: the data and the parameters their
        absolute values; a step whose ``Step.magnitude`` m says how it rounds (sums of absolute
        terms instead of differences) gets the sum over its inputs of m with that input's scale
        in place of its absolute value (the error each input brings, and the step's own
        rounding); an activation |f(z)| + |f'(z)| s(z) (ReLU and the identity are exact); an
        activation derivative the magnitude of its textbook formula, s (1 + s) for the sigmoid's
        s (1 - s) and 1 + tanh^2 for tanh's 1 - tanh^2 (a saturated unit's 1 - s is known to
        eps, not to eps times itself), plus |f''(z)| s(z). A gradient that is a tiny sum of large
        terms which cancel, or the product of a large upstream gradient and a saturated
        derivative, gets the scale of those terms.
        """
        a = self.assignment
        values = self.values
        scales = {name: value.abs() for name, value in values.items()
                  if name in ("X", "Y") or name in a.parameter_ids.values()}
        for step in step_table(a, self.convention):
            if step.kind == "update" or step.id not in values:
                break
            if step.magnitude is not None:
                absolute = [values[i].abs() for i in step.inputs]
                total = None
                for index, name in enumerate(step.inputs):
                    term = step.magnitude(*absolute[:index], scales[name], *absolute[index + 1:])
                    total = term if total is None else total + term
                scales[step.id] = total
                continue
            activation = a.layers[step.layer - 1].activation
            z = values[step.inputs[0]]
            first = derivative(activation, z).abs()
            if step.kind == "activation":
                scales[step.id] = values[step.id].abs() + first * scales[step.inputs[0]]
            elif activation == "sigmoid":
                s = torch.sigmoid(z)
                scales[step.id] = s * (1 + s) + first * (1 - 2 * s).abs() * scales[step.inputs[0]]
            elif activation == "tanh":
                t = torch.tanh(z)
                scales[step.id] = 1 + t * t + 2 * first * t.abs() * scales[step.inputs[0]]
            else:  # ReLU's and the identity's derivatives are exact
                scales[step.id] = first
        return {name: scales["dLd" + a.parameter_ids[name]] for name in a.parameter_names}

def _inputs(assignment: Assignment, X: Tensor, Y: Optional[Tensor], weights: Weights
            ) -> dict[str, Tensor]:
    values = {"X": X}
    if Y is not None:
        values["Y"] = Y
    for name, step_id in assignment.parameter_ids.items():
        values[step_id] = weights[name]
    return values


def _compute(step: Step, values: dict[str, Tensor]) -> Tensor:
    return step.compute(*(values[i] for i in step.inputs))


def run_forward(assignment: Assignment, X: Tensor, weights: Weights) -> Trace:
    """The forward pass only: X, the parameters, Z{k} and A{k} for every layer."""
    values = _inputs(assignment, X, None, weights)
    for step in step_table(assignment):
        if not step.is_forward:
            break
        values[step.id] = _compute(step, values)
    return Trace(assignment, values, assignment.loss_convention)


def run(assignment: Assignment, X: Tensor, Y: Tensor, weights: Weights,
        convention: Optional[LossConvention] = None) -> Trace:
    """The forward pass and the hand-written backward pass, every step kept (no update).

    ``convention``: the loss convention of the gradients (default: the documented loss).
    """
    convention = convention or assignment.loss_convention
    values = _inputs(assignment, X, Y, weights)
    for step in step_table(assignment, convention):
        if step.kind == "update":
            break
        values[step.id] = _compute(step, values)
    return Trace(assignment, values, convention)


def predict(assignment: Assignment, X: Tensor, weights: Weights) -> Tensor:
    """The prediction P for every row of X."""
    return run_forward(assignment, X, weights).P


def loss_value(assignment: Assignment, X: Tensor, Y: Tensor, weights: Weights,
               convention: Optional[LossConvention] = None) -> Tensor:
    """The scalar loss whose gradients ``run`` computes (differentiable: autograd's oracle).

    bce is computed from the output's pre-activation Z as softplus(Z) - Y Z, which is
    -(Y log P + (1 - Y) log(1 - P)) without its cancellation where the sigmoid saturates.
    softplus is log(e^0 + e^Z) (``logaddexp``), whose derivative is sigmoid(Z) everywhere:
    torch's ``softplus`` is Z itself above 20, with a derivative of exactly 1 there, which put
    autograd's dL/dZ at 0 where the true one is -sigmoid(-Z) (-2e-9 at Z = 20, times the layer's
    activations 1e-7 in a weight's gradient: a correct solution failed against it).
    """
    convention = convention or assignment.loss_convention
    trace = run_forward(assignment, X, weights)
    P = trace.P
    if assignment.loss == "bce":
        Z = trace[f"Z{assignment.depth}"]
        total = (torch.logaddexp(Z, torch.zeros_like(Z)) - Y * Z).sum()
        return total if convention == "sum" else total / P.shape[0]
    return loss(P, Y, convention)


def sgd_update(weights: Weights, gradients: Weights, learning_rate: float) -> Weights:
    """w <- w - learning_rate * dL/dw, as a new dict."""
    return {name: weights[name] - learning_rate * gradients[name] for name in weights}


def init_weights(assignment: Assignment = NOTEBOOK, dtype: torch.dtype = torch.float32,
                 generator: Optional[torch.Generator] = None) -> Weights:
    """Fresh ``torch.randn`` weights in the description's order of draws: each layer's weight,
    then its bias, layer by layer (the notebook's V, I, then W, J)."""
    return {
        name: torch.randn(*shape, dtype=dtype, generator=generator)
        for name, shape in assignment.parameter_shapes.items()
    }


def train(assignment: Assignment, X: Tensor, Y: Tensor, weights: Optional[Weights] = None,
          learning_rate: float = 1.0) -> Weights:
    """One SGD step on a batch: the updated weights, by name, in the dtype of ``X``.

    Missing weights are drawn with ``torch.randn`` in the description's order, so a seeded run
    reproduces a seeded student's.
    """
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    if not weights:
        weights = init_weights(assignment, X.dtype)
    Y = Y.to(X.dtype)
    grads = run(assignment, X, Y, weights).parameter_gradients()
    return sgd_update(weights, grads, learning_rate)


# ------------------------------------------------------------------------------------------------
# The notebook's view, under its names
# ------------------------------------------------------------------------------------------------

#: The hand-written intermediates, in the order the notebook computes them.
GRADIENT_NAMES = ("dLdP", "dPdC", "dLdC", "dLdW", "dLdJ", "dLdB", "dBdA", "dLdA", "dLdV", "dLdI")
#: Which intermediate is the gradient of which parameter.
PARAMETER_GRADIENT = {"V": "dLdV", "I": "dLdI", "W": "dLdW", "J": "dLdJ"}


@dataclass(frozen=True)
class Forward:
    """Every activation of one forward pass of the notebook's network."""

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
    """The notebook's forward pass, keeping every activation."""
    trace = run_forward(NOTEBOOK, X, weights)
    return Forward(X=X, A=trace["Z1"], B=trace["A1"], C=trace["Z2"], P=trace["A2"])


def backward(
    fwd: Forward, Y: Tensor, weights: Weights, convention: LossConvention = "half_sum"
) -> Backward:
    """The notebook's hand-written backward pass (for ``half_sum``), every step kept."""
    values = {"X": fwd.X, "Y": Y, "W1": weights["V"], "b1": weights["I"], "W2": weights["W"],
              "b2": weights["J"], "Z1": fwd.A, "A1": fwd.B, "Z2": fwd.C, "A2": fwd.P}
    for step in step_table(NOTEBOOK, convention):
        if step.is_forward:
            continue
        if step.kind == "update":
            break
        values[step.id] = _compute(step, values)
    return Backward(**{NOTEBOOK.name_of(i): values[i] for i in (
        "dLdA2", "dA2dZ2", "dLdZ2", "dLdW2", "dLdb2", "dLdA1", "dA1dZ1", "dLdZ1", "dLdW1",
        "dLdb1")})


def loss(P: Tensor, Y: Tensor, convention: LossConvention = "half_sum") -> Tensor:
    """The scalar squared-error loss under a convention (the notebook's is ``half_sum``)."""
    sse = ((P - Y) ** 2).sum()
    return {"half_sum": 0.5 * sse, "sum": sse, "half_mean": 0.5 * sse / P.shape[0],
            "mean": sse / P.shape[0]}[convention]


def train_neural_net(
    X: Tensor,
    Y: Tensor,
    weights: Optional[Weights] = None,
    learning_rate: float = 1.0,
) -> Weights:
    """One SGD step of the notebook's network: returns the updated weights {'V', 'I', 'W', 'J'}.

    Missing weights are drawn with ``torch.randn`` in the notebook's order, so a seeded run
    reproduces the notebook's. Results keep the dtype of ``X``.
    """
    return train(NOTEBOOK, X, Y, weights, learning_rate)


def neural_net_predict(X: Tensor, weights: Weights) -> Tensor:
    """The notebook network's prediction P for every row of X."""
    return predict(NOTEBOOK, X, weights)

