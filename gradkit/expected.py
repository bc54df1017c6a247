"""What every call should have produced, from the reference and autograd, in float64.

Everything is computed from the assignment's description (``reference.network.run``).
Expectations depend only on a call's inputs (and the assignment), so they are cached by the
inputs' bytes: a class of submissions shares one computation per case (and a chain's later
steps, which start from each student's own weights, are computed once per distinct start).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from typing import Optional

from gradkit.cases import Case
from gradkit.compare import float64_array
from reference import network
from reference.assignment import NOTEBOOK, Assignment
from reference.oracles import autograd_gradients
from reference.toy_data import cross_entropy

F64 = torch.float64
Weights = dict[str, Tensor]


@dataclass(frozen=True)
class StepExpectation:
    #: the notebook's view of ``trace`` (its A, B, C, P and dLdP ... dLdI); None for any other
    #: description
    forward: Optional[network.Forward]
    backward: Optional[network.Backward]
    gradients: Weights  # hand-written, float64, by parameter name
    autograd: Weights  # torch autograd, float64
    updated: Weights  # w - learning_rate * gradient, float64
    #: every value of the reference's forward and backward pass, by step id (float64)
    trace: Optional[network.Trace] = None
    #: the scale of the rounding in each gradient, by parameter name (``Trace.rounding_scales``)
    rounding: Optional[Weights] = None

    def rounding_of(self, name: str, scale: float = 1.0) -> tuple[Tensor, Tensor] | None:
        """The reference gradient of ``name`` and the scale of its rounding, under a loss
        convention's ``scale`` (for ``Tolerances.implied_gradient``); None where unknown."""
        rounding = (self.rounding or {}).get(name)
        if rounding is None:
            return None
        if scale == 1.0:
            return self.gradients[name], rounding
        return self.gradients[name] * scale, rounding * abs(scale)


@dataclass(frozen=True)
class TrainingExpectation:
    checkpoints: tuple[Weights, ...]  # the reference's weights at each checkpoint
    losses: Tensor  # ``training_loss`` on the training dataset at each checkpoint
    #: rows the reference's final weights classify wrongly
    misclassified: int = 0


def _key(*tensors: Tensor) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(float64_array(t).tobytes())  # row-major bytes of the float64 values
    return digest.digest()


_STEP_CACHE: dict[tuple[bytes, float, str], StepExpectation] = {}


def expect_step(X: Tensor, Y: Tensor, weights: Weights, learning_rate: float,
                assignment: Assignment = NOTEBOOK) -> StepExpectation:
    """The reference's forward, backward and update for one call, in float64."""
    names = sorted(weights)
    key = (_key(X, Y, *(weights[n] for n in names)), learning_rate, assignment.fingerprint)
    cached = _STEP_CACHE.get(key)
    if cached is not None:
        return cached
    X64, Y64 = X.to(F64), Y.to(F64)
    w64 = {name: weights[name].to(F64) for name in assignment.parameter_names}
    trace = network.run(assignment, X64, Y64, w64)
    grads = trace.parameter_gradients()
    fwd = bwd = None
    if assignment.is_notebook:
        fwd = network.Forward(X=X64, A=trace["Z1"], B=trace["A1"], C=trace["Z2"], P=trace["A2"])
        bwd = network.Backward(**{assignment.name_of(i): trace[i] for i in (
            "dLdA2", "dA2dZ2", "dLdZ2", "dLdW2", "dLdb2", "dLdA1", "dA1dZ1", "dLdZ1", "dLdW1",
            "dLdb1")})
    result = StepExpectation(fwd, bwd, grads,
                             autograd_gradients(X64, Y64, w64, assignment=assignment),
                             network.sgd_update(w64, grads, learning_rate), trace,
                             trace.rounding_scales())
    if len(_STEP_CACHE) > 4096:
        _STEP_CACHE.clear()
    _STEP_CACHE[key] = result
    return result


def scaled(value: Tensor, scale: float) -> Tensor:
    """A reference value under a loss convention's ``scale``: ``value * scale``, or ``value``
    itself for the documented convention (x * 1.0 is x, so no new tensor is needed)."""
    return value if scale == 1.0 else value * scale


def predictions(X: Tensor, weights: Weights, assignment: Assignment = NOTEBOOK) -> Tensor:
    return network.predict(assignment, X.to(F64),
                           {n: weights[n].to(F64) for n in assignment.parameter_names})


def mean_cross_entropy(X: Tensor, Y: Tensor, weights: Weights,
                       assignment: Assignment = NOTEBOOK) -> float:
    P = predictions(X, weights, assignment).clamp(1e-12, 1 - 1e-12)
    return float(cross_entropy(P, Y.to(F64)).mean())


def training_loss(X: Tensor, Y: Tensor, weights: Weights, assignment: Assignment = NOTEBOOK
                  ) -> float:
    """What the training check tracks: the mean cross-entropy of a sigmoid output (the
    notebook's table), else the mean over rows of the summed squared error."""
    if assignment.layers[-1].activation == "sigmoid":
        return mean_cross_entropy(X, Y, weights, assignment)
    P = predictions(X, weights, assignment)
    return float(((P - Y.to(F64)) ** 2).sum(dim=1).mean())


def training_loss_words(assignment: Assignment = NOTEBOOK) -> str:
    return "mean cross-entropy" if assignment.layers[-1].activation == "sigmoid" else \
        "mean squared error"


def misclassified(X: Tensor, Y: Tensor, weights: Weights, assignment: Assignment = NOTEBOOK
                  ) -> Tensor:
    """Per label, whether the prediction thresholded at 0.5 differs from it (flattened)."""
    P = predictions(X, weights, assignment)
    return ((P > 0.5).to(F64) != Y.to(F64)).reshape(-1)


_TRAINING_CACHE: dict[tuple[bytes, str], TrainingExpectation] = {}


def _training(case: Case, assignment: Assignment) -> TrainingExpectation:
    X, Y = case.X.to(F64), case.Y.to(F64)
    weights = {n: w.to(F64) for n, w in case.weights.items()}
    checkpoints = []
    marks = set(case.checkpoints)
    for step, row in enumerate(case.rows.tolist(), start=1):
        weights = network.train(assignment, X[row : row + 1], Y[row : row + 1], weights,
                                case.learning_rate)
        if step in marks:
            checkpoints.append(weights)
    losses = torch.tensor([training_loss(X, Y, w, assignment) for w in checkpoints], dtype=F64)
    wrong = int(misclassified(X, Y, checkpoints[-1], assignment).sum()) if checkpoints else 0
    return TrainingExpectation(tuple(checkpoints), losses, wrong)


def training_stretch(case: Case, start: Weights, first: int, last: int,
                     assignment: Assignment = NOTEBOOK) -> Weights:
    """The reference's weights after steps ``first``..``last`` (1-based, as the loop counts
    them) of the training loop, started from ``start`` (a student's checkpoint): what plain SGD
    does from *their* weights, over one stretch between two checkpoints."""
    X, Y = case.X.to(F64), case.Y.to(F64)
    weights = {n: start[n].to(F64) for n in assignment.parameter_names}
    for row in case.rows.tolist()[first - 1:last]:
        weights = network.train(assignment, X[row : row + 1], Y[row : row + 1], weights,
                                case.learning_rate)
    return weights


def expect_training(case: Case, assignment: Assignment = NOTEBOOK) -> TrainingExpectation:
    """The reference's run of the training loop from the same start and rows."""
    key = (_key(case.X, case.Y, case.rows, *case.weights.values()), assignment.fingerprint)
    if key not in _TRAINING_CACHE:
        _TRAINING_CACHE[key] = _training(case, assignment)
    return _TRAINING_CACHE[key]


def prepare(cases: tuple[Case, ...], assignment: Assignment = NOTEBOOK) -> None:
    """Compute every expectation that does not depend on the student (run while the child runs)."""
    for case in cases:
        if case.kind in ("step", "chain") and case.weights is not None:
            expect_step(case.X, case.Y, case.weights, case.learning_rate, assignment)
        elif case.kind == "training":
            expect_training(case, assignment)
