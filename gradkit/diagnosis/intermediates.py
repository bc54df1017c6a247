"""The notebook's intermediates inside a student's ``train_neural_net``: found, compared, followed.

Everything here reads the tensors each function of the student's file held when it returned
(``StepResult.captured``), rebuilt as plain tensors:

- ``find``: which of the student's variables holds which of the notebook's quantities (the forward
  pass A, B, C, P and the gradients dLdP ... dLdI): by the notebook's names or common variants of
  them (``dL_dW``, ``dl_dw``, ``grad_W``, ``dW``), else by value on a multi-row case, where shapes
  tell the quantities apart.
- ``compare_intermediates``: each found gradient against the reference on every step case, for
  ``Report.intermediates``. A quantity that cannot be found is "not_found", never a failure.
- ``localise``: the backward pass as a chain of steps, each recomputed from the student's *own*
  upstream values (is their dLdW equal to Bᵀ·dLdC for *their* dLdC?), so the step that is wrong
  is told apart from the cascade of right steps below it.
- ``SourceIndex``: where things are in the student's source (the line that assigns a variable,
  updates a weight, reads a global, changes an argument in place).

Comparison here is data (``StepCheck``, ``Fit``); ``gradkit.diagnosis.diagnose`` turns it into words.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterable, Literal, Optional

import numpy as np
import torch
from torch import Tensor

from gradkit.cases import Case
from gradkit.compare import compare, float64_array, passes
from gradkit.expected import StepExpectation, scaled
from gradkit.loader import Submission, assignment_lines
from gradkit.plan import StepResult, Value
from gradkit.report import IntermediateResult, Tolerance
from gradkit.tolerances import Tolerances
from gradkit.diagnosis.chain import Chain, ChainStep
from reference.assignment import NOTEBOOK

F64 = torch.float64
#: The notebook's chain (``Chain.of(NOTEBOOK)``); the tables below are its, kept under their
#: old names for readers of the notebook catalogue. Diagnosis reads each call's own chain
#: (``StepObservation.chain``), so any description is diagnosed in its own names.
NOTEBOOK_CHAIN = Chain.of(NOTEBOOK)
TRAIN = NOTEBOOK_CHAIN.train
PREDICT = NOTEBOOK_CHAIN.predict
PARAMETERS = NOTEBOOK_CHAIN.parameters
FORWARD = NOTEBOOK_CHAIN.forward
QUANTITIES = FORWARD + NOTEBOOK_CHAIN.gradient_names
GRADIENT_OF = NOTEBOOK_CHAIN.gradient_of
LOSS_LINEAR = NOTEBOOK_CHAIN.loss_linear
EXPRESSIONS = NOTEBOOK_CHAIN.expressions
#: A step of the chain (``gradkit.diagnosis.chain.ChainStep``).
Step = ChainStep
STEPS = NOTEBOOK_CHAIN.steps
STEP_NAMES = NOTEBOOK_CHAIN.step_names
DOWNSTREAM = NOTEBOOK_CHAIN.downstream
#: "Partial credit follows the steps": the steps whose mistakes each check is charged with
#: (``Chain.charged``). A mistake in the output layer costs that layer's gradients, one in a
#: hidden layer costs its own, and the forward pass costs all; a gradient computed correctly
#: from an upstream value that was already charged keeps its credit.
CHARGED = NOTEBOOK_CHAIN.charged


# --------------------------------------------------------------------------------------------
# Numbers: closeness and the fit of a constant factor
# --------------------------------------------------------------------------------------------

def allowance(expected: Tensor, tolerance: Tolerance, magnitude: Optional[Tensor] = None
              ) -> Tensor:
    """Elementwise |actual - expected| allowed: atol + rtol * |expected| (or * magnitude)."""
    scale = expected.abs() if magnitude is None else torch.maximum(magnitude.abs(),
                                                                   expected.abs())
    return tolerance.atol + tolerance.rtol * scale


# Diagnosis compares tiny tensors thousands of times per submission, in numpy (see
# ``float64_array``): the same float64 arithmetic as torch's, at a fraction of the cost. Torch
# computes inf - inf or an overflow silently; the numpy below runs under ``_quiet()`` to do the
# same.

def _quiet() -> np.errstate:
    return np.errstate(invalid="ignore", over="ignore")


def _allowed(e: np.ndarray, tolerance: Tolerance,
             magnitude: Optional[np.ndarray | float] = None) -> np.ndarray:
    """``allowance`` on arrays (under ``_quiet()``)."""
    scale = np.abs(e) if magnitude is None else np.maximum(np.abs(magnitude), np.abs(e))
    return tolerance.atol + tolerance.rtol * scale


def _agree(a: np.ndarray, e: np.ndarray, allowed: np.ndarray) -> bool:
    """Every element within its allowance, or equal (equal non-finite values agree; inf - inf
    is judged by that). Under ``_quiet()``."""
    near = np.abs(a - e) <= allowed
    if near.all():
        return True
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    return bool((same | near).all())


def within(actual: Tensor, expected: Tensor, allowed: Tensor) -> bool:
    """Same shape and every element within its allowance; equal non-finite values agree."""
    if actual.shape != expected.shape:
        return False
    with _quiet():
        return _agree(float64_array(actual), float64_array(expected), float64_array(allowed))


def close(actual: Optional[Tensor], expected: Tensor, tolerance: Tolerance) -> bool:
    """``actual`` matches ``expected`` within ``tolerance`` (False when missing or misshapen)."""
    if actual is None or actual.shape != expected.shape:
        return False
    e = float64_array(expected)
    with _quiet():
        return _agree(float64_array(actual), e, _allowed(e, tolerance))


def distinct(one: Tensor, other: Tensor, tolerance: Tolerance, margin: float = 4.0) -> bool:
    """The two differ by clearly more than the tolerance somewhere, so a student's numbers can
    match at most one of them."""
    if one.shape != other.shape:
        return True
    a, b = float64_array(one), float64_array(other)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return not bool(((a == b) | (np.isnan(a) & np.isnan(b))).all())
    with _quiet():
        return bool((np.abs(a - b) > margin * _allowed(b, tolerance)).any())


@dataclass(frozen=True)
class Fit:
    """``actual ≈ factor * expected`` by least squares, and whether it holds within tolerance."""

    factor: float
    residual: float  # ||actual - factor * expected|| / ||actual||
    exact: bool


def fit_factor(pairs: Iterable[tuple[Tensor, Tensor, Tolerance]]) -> Optional[Fit]:
    """The one c that best makes every ``actual`` equal ``c * expected``.

    ``pairs`` are (actual, expected, tolerance) of the same shape. Least squares weighted by each
    element's tolerance, so float64 calls pin c down and float32 ones do not pull it off.
    ``exact`` says whether c * expected matches every actual within its tolerance (rtol applies
    to |c * expected|). None when there is nothing to fit (no pairs, a shape mismatch,
    non-finite values, or an expected value of zero).
    """
    pairs = list(pairs)
    if not pairs or any(a.shape != e.shape for a, e, _ in pairs):
        return None
    # concatenated in numpy (a view per call, not a tensor), then copied into fresh tensors
    actual_values = np.concatenate([float64_array(a).reshape(-1) for a, _, _ in pairs])
    expected_values = np.concatenate([float64_array(e).reshape(-1) for _, e, _ in pairs])
    if not (np.isfinite(actual_values).all() and np.isfinite(expected_values).all()):
        return None
    actual, expected = torch.from_numpy(actual_values), torch.from_numpy(expected_values)
    # every element's allowance at once, with its own call's atol and rtol (np.repeat: torch's
    # repeat_interleave costs milliseconds a call; the arithmetic stays torch's, which
    # tests/test_numbers.py pins, and a diverged value overflows silently in it)
    sizes = [e.numel() for _, e, _ in pairs]
    atol = torch.from_numpy(np.repeat(np.array([t.atol for _, _, t in pairs],
                                               dtype=np.float64), sizes))
    rtol = torch.from_numpy(np.repeat(np.array([t.rtol for _, _, t in pairs],
                                               dtype=np.float64), sizes))
    weight = 1.0 / (atol + rtol * expected.abs()) ** 2
    denominator = float((weight * expected) @ expected)
    if denominator == 0.0:
        return None
    c = float((weight * actual) @ expected) / denominator
    norm = float(actual.norm())
    residual = float((actual - c * expected).norm()) / norm if norm else 0.0
    return Fit(factor=c, residual=residual, exact=holds(pairs, c))


def holds(pairs: Iterable[tuple[Tensor, Tensor, Tolerance]], factor: float) -> bool:
    """Every ``actual`` equals ``factor * expected`` within its tolerance."""
    with _quiet():
        for a, e, t in pairs:
            if a.shape != e.shape:
                return False
            target = factor * float64_array(e)
            if not _agree(float64_array(a), target, _allowed(target, t)):
                return False
    return True


def snap(value: float, holds: Callable[[float], bool]) -> float:
    """The shortest decimal (1 to 6 significant digits) near ``value`` for which ``holds`` is
    still true: a fitted 0.0100000860 becomes 0.01 when 0.01 fits within tolerance too."""
    for digits in range(1, 7):
        candidate = float(f"{value:.{digits}g}")
        if candidate != 0.0 and holds(candidate):
            return candidate
    return value


# --------------------------------------------------------------------------------------------
# Observations: one call of train_neural_net, as diagnosis reads it
# --------------------------------------------------------------------------------------------

@dataclass
class StepObservation:
    """One call of ``train_neural_net`` that returned a dict of weights, with its expectation."""

    case: Case
    index: int  # the step within a chain (0 otherwise)
    X: Tensor  # float64 copies of what the call was given
    Y: Tensor
    given: dict[str, Tensor]
    learning_rate: float
    expectation: StepExpectation  # the reference's, float64, documented convention
    returned: dict[str, Tensor]  # the student's tensors as returned (any shape or dtype)
    #: (given - returned) / learning_rate in float64, None where the shape or dtype is wrong
    implied: dict[str, Optional[Tensor]]
    dtype: torch.dtype  # what the student computed in
    result: StepResult
    tolerances: Tolerances
    #: the loss convention's factor the grader judged this call under (1 unless accepted)
    scale: float = 1.0
    #: the assignment's chain (default: the one the expectation was computed for)
    chain: Chain = field(default=None)  # type: ignore[assignment]
    # tolerances asked for again and again, worked out once for this call
    _gradient_tolerances: dict[str, Tolerance] = field(default_factory=dict, init=False,
                                                       repr=False, compare=False)
    _value_tolerances: dict[torch.dtype, Tolerance] = field(default_factory=dict, init=False,
                                                           repr=False, compare=False)
    _gradients_right: dict[tuple[str, float], bool] = field(default_factory=dict, init=False,
                                                            repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.chain is None:
            trace = self.expectation.trace
            self.chain = Chain.of(trace.assignment) if trace is not None else NOTEBOOK_CHAIN

    @property
    def label(self) -> str:
        return f"{self.case.id} step {self.index + 1}" if self.case.kind == "chain" \
            else self.case.id

    @property
    def step(self) -> Optional[int]:
        return self.index + 1 if self.case.kind == "chain" else None

    @property
    def batch_size(self) -> int:
        return self.X.shape[0]

    def gradient_tolerance(self, name: str) -> Tolerance:
        """The tolerance of an implied gradient of weight ``name`` (as the grader uses it)."""
        tolerance = self._gradient_tolerances.get(name)
        if tolerance is None:
            before = self.given[name]
            scale = float(before.abs().max()) if before.numel() else 1.0
            tolerance = self.tolerances.implied_gradient(
                self.dtype, scale, self.learning_rate,
                self.expectation.rounding_of(name, self.scale))
            self._gradient_tolerances[name] = tolerance
        return tolerance

    def value_tolerance(self, dtype: Optional[torch.dtype] = None) -> Tolerance:
        dtype = dtype or self.dtype
        dtype = dtype if dtype.is_floating_point else torch.float64
        tolerance = self._value_tolerances.get(dtype)
        if tolerance is None:
            tolerance = self._value_tolerances[dtype] = self.tolerances.values(dtype)
        return tolerance

    def gradient_right(self, name: str, scale: Optional[float] = None) -> bool:
        """The gradient of weight ``name`` implied by the update is the reference's, under the
        loss scale ``scale`` (the call's convention by default), within its tolerance.
        Every matcher asks this again: it is worked out once for each scale."""
        key = (name, self.scale if scale is None else scale)
        right = self._gradients_right.get(key)
        if right is None:
            right = self._gradients_right[key] = close(
                self.implied.get(name), self.gradient(name, key[1]),
                self.gradient_tolerance(name))
        return right

    def gradient(self, name: str, scale: Optional[float] = None) -> Tensor:
        """The reference gradient of weight ``name`` (float64) under the call's convention."""
        return scaled(self.expectation.gradients[name], self.scale if scale is None else scale)

    def reference(self, quantity: str) -> Tensor:
        """The reference's value of a quantity of the chain (the notebook's A ... P and
        dLdP ... dLdI; any description's names), float64."""
        chain = self.chain
        trace = self.expectation.trace
        if trace is None:  # an expectation built without a trace: the notebook's view
            if quantity in FORWARD:
                return getattr(self.expectation.forward, quantity)
            value = getattr(self.expectation.backward, quantity)
        else:
            value = trace[chain.ids[quantity]]
        return scaled(value, self.scale) if quantity in chain.loss_linear else value

    def captured(self, function: str, variable: str) -> Optional[Tensor]:
        value = self.result.captured.get(function, {}).get(variable)
        if value is None or value.kind != "array" or value.tensor is None:
            return None
        return value.tensor

    def after(self, name: str) -> Optional[Value]:
        return self.result.after.get(name)


def _computed_dtype(returned: dict[str, Tensor], X: Tensor) -> torch.dtype:
    for t in returned.values():
        if t.dtype.is_floating_point:
            return t.dtype
    return X.dtype if X.dtype.is_floating_point else torch.float32


def observe(case: Case, index: int, expectation: StepExpectation, result: StepResult,
            given: dict[str, Tensor], returned: dict[str, Tensor], tolerances: Tolerances,
            scale: float = 1.0, *, implied: Optional[dict[str, Optional[Tensor]]] = None,
            chain: Optional[Chain] = None) -> StepObservation:
    """A ``StepObservation`` of one call (the grader's ``SeenStep`` carries these parts, the
    gradients its update implies included: ``implied``, worked out here when not given)."""
    X, Y = (case.batches[index] if case.kind == "chain" else (case.X, case.Y))
    lr = case.learning_rate
    if implied is None:
        implied = {}
        for name, before in given.items():
            after = returned.get(name)
            ok = after is not None and tuple(after.shape) == tuple(before.shape) and \
                after.dtype.is_floating_point
            implied[name] = (before.to(F64) - after.to(F64)) / lr if ok else None
    return StepObservation(
        case=case, index=index, X=X.to(F64), Y=Y.to(F64),
        given={n: w.to(F64) for n, w in given.items()}, learning_rate=lr,
        expectation=expectation, returned=returned, implied=implied,
        dtype=_computed_dtype(returned, X), result=result, tolerances=tolerances, scale=scale,
        chain=chain)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Finding the intermediates: by name, else by value
# --------------------------------------------------------------------------------------------

def normalise(name: str) -> str:
    """``dL_dW`` -> ``dldw``: the form names are compared in."""
    return name.replace("_", "").lower()


def aliases(quantity: str, chain: Optional[Chain] = None) -> frozenset[str]:
    """Normalised names a student may give a quantity (dLdW: dL_dW, dl_dw, grad_W, dW...;
    dLdW1: dL_dW1, dW1, grad_W1, dw1...)."""
    chain = chain or NOTEBOOK_CHAIN
    if quantity in chain.forward or quantity in chain.derivatives:
        return frozenset({quantity.lower()})
    if not quantity.startswith("dLd") or len(quantity) <= 3:
        return frozenset({normalise(quantity)})
    x = normalise(quantity[3:])
    return frozenset({f"dld{x}", f"dlossd{x}", f"d{x}", f"grad{x}", f"{x}grad", f"dl{x}"})


@dataclass(frozen=True)
class Found:
    """The student's variable that holds one of the notebook's quantities."""

    quantity: str
    function: str
    variable: str
    by: Literal["name", "value"]
    #: the student's training function (a variable of another is labelled with its function)
    train: str = TRAIN

    @property
    def label(self) -> str:
        return self.variable if self.function == self.train else \
            f"{self.variable} (in {self.function})"


def _fits_shape(actual: Tensor, expected: Tensor) -> bool:
    """Same shape, or the same elements in a shape that broadcasts to it ((4,) for (1, 4))."""
    if tuple(actual.shape) == tuple(expected.shape):
        return True
    return actual.numel() == expected.numel() and \
        _broadcast(tuple(actual.shape), tuple(expected.shape)) == tuple(expected.shape)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> Optional[tuple[int, ...]]:
    """The broadcast shape of ``a`` and ``b``, or None (torch.broadcast_shapes imports sympy,
    a second's import for the first diagnosis that needs it)."""
    out = []
    for x, y in zip(((1,) * (len(b) - len(a)) + a), ((1,) * (len(a) - len(b)) + b)):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 0 not in (x, y) else 0)
    return tuple(out)


def as_expected_shape(actual: Tensor, expected: Tensor) -> Tensor:
    """``actual`` reshaped to ``expected``'s shape when it only lacks unit dimensions."""
    if tuple(actual.shape) != tuple(expected.shape) and _fits_shape(actual, expected):
        return actual.reshape(expected.shape)
    return actual


def _functions(observations: list[StepObservation]) -> list[str]:
    """The student's functions that held tensors, the training function first."""
    names: dict[str, None] = {}
    train = observations[0].chain.train if observations else TRAIN
    for obs in observations:
        for function in obs.result.captured:
            names[function] = None
    return sorted(names, key=lambda f: (f != train, f))


def reference_observation(observations: list[StepObservation]) -> Optional[StepObservation]:
    """The call names are matched on: batch5 (five rows tell every shape apart) if it ran,
    else a call whose rows tell the shapes apart."""
    with_captures = [o for o in observations if o.result.captured and o.case.capture]
    multi_row = [o for o in with_captures
                 if o.batch_size not in o.chain.multi_row_excluded]
    # (batch5 unless five rows make two quantities alike: a description with 5 inputs or units)
    preferred = [o for o in multi_row if o.case.id == "batch5"]
    for group in (preferred, multi_row, with_captures):
        if group:
            return group[0]
    return None


def find(observations: list[StepObservation]) -> dict[str, Found]:
    """Which student variable holds each notebook quantity (A ... P, dLdP ... dLdI).

    A variable named after the quantity (or a common variant of the name) counts if its shape
    fits; any other quantity is looked for by value on the reference call (``batch5``): a
    variable of the same shape whose values match the reference's. Each variable is used once.
    """
    base = reference_observation(observations)
    if base is None:
        return {}
    chain = base.chain
    train = chain.train
    quantities = chain.forward + chain.gradient_names
    found: dict[str, Found] = {}
    used: set[tuple[str, str]] = set()
    functions = _functions([base])
    for quantity in quantities:
        names = aliases(quantity, chain)
        expected = base.reference(quantity)
        candidates = []
        for function in functions:
            for variable, value in base.result.captured[function].items():
                # the notebook's own name always counts (a per-row dLdI is still the student's
                # dLdI, and wrong); a variant of it if it has as many elements as the quantity
                exact = variable == quantity
                if value.tensor is not None and (exact or (
                        normalise(variable) in names and
                        value.tensor.numel() == expected.numel())):
                    candidates.append((function != train, not exact, function, variable))
        if candidates:
            _, _, function, variable = min(candidates)
            found[quantity] = Found(quantity, function, variable, "name", train)
            used.add((function, variable))
    references = {q: base.reference(q) for q in quantities}
    for quantity in quantities:
        if quantity in found:
            continue
        expected = references[quantity]
        if any(other != quantity and tuple(value.shape) == tuple(expected.shape) and
               close(value, expected, base.value_tolerance(F64))
               for other, value in references.items()):
            # two quantities alike on this call (an identity layer's Z and A, a ReLU's where
            # every pre-activation is positive): a value cannot say which is which
            continue
        for function in functions:
            match = next((variable for variable, value in base.result.captured[function].items()
                          if (function, variable) not in used and value.tensor is not None
                          and value.tensor.dtype.is_floating_point
                          and _fits_shape(value.tensor, expected)
                          and close(as_expected_shape(value.tensor, expected).to(F64), expected,
                                    base.value_tolerance(value.tensor.dtype))), None)
            if match is not None:
                found[quantity] = Found(quantity, function, match, "value", train)
                used.add((function, match))
                break
    return found


def student_value(obs: StepObservation, found: Optional[Found]) -> Optional[Tensor]:
    if found is None:
        return None
    return obs.captured(found.function, found.variable)


def compare_intermediates(observations: list[StepObservation], found: dict[str, Found],
                          submission: Submission, source: "SourceIndex"
                          ) -> list[IntermediateResult]:
    """Each of dLdP ... dLdI: found (and how), and compared with the reference on every call."""
    results = []
    chain = observations[0].chain if observations else NOTEBOOK_CHAIN
    for quantity in chain.gradient_names:
        where = found.get(quantity)
        if where is None:
            results.append(IntermediateResult(name=quantity, status="not_found"))
            continue
        # the report shows the first call that fails (else the first call): only its numbers
        # are written up
        shown: Optional[tuple[StepObservation, Tensor, Tensor]] = None
        failed = False
        for obs in observations:
            actual = student_value(obs, where)
            if actual is None:
                continue
            expected = obs.reference(quantity)
            actual = as_expected_shape(actual, expected)
            if not passes(actual, expected, obs.value_tolerance(actual.dtype)):
                shown, failed = (obs, actual, expected), True
                break
            if shown is None:
                shown = (obs, actual, expected)
        if shown is None:
            results.append(IntermediateResult(name=quantity, status="not_found"))
            continue
        obs, actual, expected = shown
        comparison = compare(f"{quantity} ({where.label})", obs.case.id, actual, expected,
                             obs.value_tolerance(actual.dtype), step=obs.step)
        line = source.assignment_line(where.function, where.variable)
        results.append(IntermediateResult(
            name=quantity, status="mismatch" if failed else "match", found_as=where.label,
            matched_by=where.by, location=submission.location(line), comparison=comparison))
    return results


# --------------------------------------------------------------------------------------------
# Localisation: every step against the student's own upstream values
# --------------------------------------------------------------------------------------------

@dataclass
class StepCheck:
    """One step of one call, recomputed from the student's own inputs to it."""

    step: str
    observation: StepObservation
    status: Literal["right", "wrong", "unknown"]
    #: the value the step should have, computed from the student's own upstream values
    expected: Optional[Tensor]
    actual: Optional[Tensor] = None  # the student's value (float64), None if not captured
    tolerance: Optional[Tolerance] = None
    #: steps the student's function did not hold, folded into this one (the mistake may be there)
    span: tuple[str, ...] = ()
    problem: Optional[Literal["shape", "values", "nonfinite"]] = None
    #: the call's values as localisation used them (X, Y, the given weights, each step: the
    #: student's where held, else filled in from the student's own inputs), for the edit search
    upstream: dict[str, Optional[Tensor]] = field(default_factory=dict, repr=False)


class Localisation:
    """Every step of every call, judged from the student's own upstream values.

    The steps are worked out when first read: a submission with nothing wrong never needs them.
    """

    def __init__(self, observations: list[StepObservation], found: dict[str, Found]) -> None:
        self.observations = observations
        self.found = found

    @cached_property
    def checks(self) -> list[dict[str, StepCheck]]:
        """``localise_call`` of each call, in order."""
        return [localise_call(obs, self.found) for obs in self.observations]

    def of(self, step: str) -> list[StepCheck]:
        return [c[step] for c in self.checks if step in c]

    def wrong(self, step: str) -> list[StepCheck]:
        return [c for c in self.of(step) if c.status == "wrong"]

    def wrong_steps(self) -> list[str]:
        """Steps wrong in at least one call, in the order the network computes them."""
        chain = self.observations[0].chain if self.observations else NOTEBOOK_CHAIN
        return [step for step in chain.step_names if self.wrong(step)]

    def captured_any(self) -> bool:
        return any(c.actual is not None for checks in self.checks for n, c in checks.items()
                   if not n.startswith("update."))


#: The magnitude of a step whose rounding is relative to 1 (``Step.magnitude`` None).
UNIT = 1.0


def _magnitude(step: Step, inputs: list[Tensor], scale: float) -> Tensor | float:
    """The scale of a step's rounding (see ``Step``), from its inputs; ``scale`` is the loss
    convention's factor, which dLdP carries."""
    if step.magnitude is None:
        return UNIT
    magnitude = step.magnitude(*(i.abs() for i in inputs))
    return magnitude * abs(scale) if step.scaled else magnitude


def _judge(step: str, obs: StepObservation, actual: Optional[Tensor], expected: Optional[Tensor],
           tolerance: Tolerance, span: tuple[str, ...],
           magnitude: Optional[Callable[[], Tensor | float]] = None) -> StepCheck:
    """The student's value of a step against what it should be. ``magnitude`` (the scale of the
    step's rounding) widens the allowance to atol + rtol * max(|magnitude|, |expected|)."""
    if expected is None:
        return StepCheck(step, obs, "unknown", None, actual, span=span)
    if actual is None:
        return StepCheck(step, obs, "unknown", expected, span=span)
    actual = as_expected_shape(actual.to(F64), expected)
    if actual.shape != expected.shape:
        return StepCheck(step, obs, "wrong", expected, actual, tolerance, span, "shape")
    a, e = float64_array(actual), float64_array(expected)
    with _quiet():
        # The magnitude is worked out only for a value not within atol + rtol * |expected|:
        # with rtol > 0 the wider allowance accepts everything the narrow one does (a NaN in
        # the magnitude comes with a NaN in the expected value, which no allowance accepts).
        right = (magnitude is None or tolerance.rtol > 0) and _agree(a, e, _allowed(e, tolerance))
        if not right and magnitude is not None:
            scale = magnitude()
            if isinstance(scale, Tensor):
                scale = float64_array(scale)
            right = _agree(a, e, _allowed(e, tolerance, scale))
    if right:
        return StepCheck(step, obs, "right", expected, actual, tolerance, span)
    finite = bool(np.isfinite(a).all())
    return StepCheck(step, obs, "wrong", expected, actual, tolerance, span,
                     "values" if finite else "nonfinite")


def localise_call(obs: StepObservation, found: dict[str, Found]) -> dict[str, StepCheck]:
    """Every step of one call, each recomputed from the student's own values of its inputs.

    Where the student's function did not hold a quantity, its value is filled in from the
    student's own inputs to it (as if that step were right), and the next step that was held
    carries it in its ``span``.
    """
    chain = obs.chain
    values: dict[str, Optional[Tensor]] = {"X": obs.X, "Y": obs.Y, **obs.given}
    spans: dict[str, tuple[str, ...]] = {}
    filled: set[str] = set()
    checks: dict[str, StepCheck] = {}
    for step in chain.steps:
        inputs = [values.get(name) for name in step.inputs]
        span = tuple(dict.fromkeys(s for name in step.inputs if name in filled
                                   for s in (*spans.get(name, ()), name)))
        expected = None
        if all(i is not None for i in inputs):
            try:
                expected = step.compute(*inputs)
            except RuntimeError:  # the student's upstream value has a shape that cannot combine
                expected = None
            if expected is not None and step.scaled:
                expected = expected * obs.scale
        actual = student_value(obs, found.get(step.name))
        tolerance = obs.value_tolerance(actual.dtype if actual is not None else None)
        check = _judge(step.name, obs, actual, expected, tolerance, span,
                       lambda: _magnitude(step, inputs, obs.scale))
        checks[step.name] = check
        if actual is not None:
            values[step.name] = check.actual
        else:
            values[step.name] = expected
            filled.add(step.name)
            spans[step.name] = span
    for name in chain.parameters:
        gradient = values.get(chain.gradient_of[name])
        grad_step = chain.gradient_of[name]
        span = (*spans.get(grad_step, ()), grad_step) if grad_step in filled else ()
        key = f"update.{name}"
        if gradient is None:
            checks[key] = StepCheck(key, obs, "unknown", None, span=span)
            continue
        implied = obs.implied.get(name)
        if implied is not None:
            # the student's own gradient, broadcast as their update would have broadcast it
            shape = tuple(implied.shape)
            if tuple(gradient.shape) != shape and \
                    _broadcast(tuple(obs.given[name].shape), tuple(gradient.shape)) == shape:
                gradient = torch.broadcast_to(gradient, shape)
            checks[key] = _judge(key, obs, implied, gradient, obs.gradient_tolerance(name), span)
            continue
        # the returned weight has another shape: compare it with the update the student's own
        # gradient implies, broadcast as torch would
        try:
            expected = obs.given[name] - obs.learning_rate * gradient
        except RuntimeError:
            expected = None
        returned = obs.returned.get(name)
        if returned is None or not returned.dtype.is_floating_point:
            checks[key] = StepCheck(key, obs, "wrong", expected, None, span=span, problem="shape")
            continue
        checks[key] = _judge(key, obs, returned.to(F64), expected,
                             obs.value_tolerance(returned.dtype), span)
    for check in checks.values():
        check.upstream = values
    return checks


def localise(observations: list[StepObservation], found: dict[str, Found]) -> Localisation:
    """``localise_call`` on every call (when first read)."""
    return Localisation(observations, found)


def credit(checks: dict[str, StepCheck], check_id: str) -> Optional[tuple[str, ...]]:
    """Partial credit following the steps, for one call and one check.

    Returns the steps charged to *other* checks whose mistake alone made this check's numbers
    wrong, when every step this check is charged with (``CHARGED``) was right from the
    student's own inputs, and the student's own value of the check's quantity was held so it
    could be seen (for the update: every gradient it used); otherwise None.
    """
    chain = next(iter(checks.values())).observation.chain
    charged = chain.charged[check_id]
    if check_id == "update":
        if any(checks[step].status != "right" or checks[step].span for step in charged):
            return None
    else:
        held = checks[chain.gradient_of[check_id.split(".")[1]]]
        if held.actual is None or held.status != "right":
            return None
        if any(checks[step].status == "wrong" for step in charged):
            return None
    affects = chain.parameters if check_id == "update" else (check_id.split(".")[1],)
    others = tuple(step for step in chain.step_names
                   if step not in charged and checks[step].status == "wrong"
                   and set(chain.downstream[step]) & set(affects))
    return others or None


# --------------------------------------------------------------------------------------------
# The student's source: where a variable is assigned, a weight updated, a global read
# --------------------------------------------------------------------------------------------

def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _bound(target: ast.AST) -> set[str]:
    """The names an assignment target binds: ``a``, ``a, b``, ``*a``; not ``a[k]`` or ``a.x``."""
    names, stack = set(), [target]
    while stack:  # iterative: a target can be nested as deep as the parser allows
        node = stack.pop()
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            stack.extend(node.elts)
        elif isinstance(node, ast.Starred):
            stack.append(node.value)
    return names


def _subscript_key(node: ast.AST) -> Optional[str]:
    """'V' for ``weights['V']``."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
            isinstance(node.slice.value, str):
        return node.slice.value
    return None


#: how many elements of a literal sequence ``_loop_strings`` reads (a layer table is short)
_MAX_LOOP_ELEMENTS = 256


def _elements(node: ast.expr, literals: dict[str, ast.expr], depth: int = 0
              ) -> Optional[list[Optional[ast.expr]]]:
    """The elements a ``for`` loop over ``node`` takes, where the source spells them: a list or
    tuple literal, a name bound to one (``literals``), and ``reversed``, ``list``, ``tuple``,
    ``sorted``, ``zip`` and ``enumerate`` of those; None elsewhere. An element of an operand
    that is not spelled out (``zip(LAYERS, inputs)``'s ``inputs``) is None."""
    if depth > 8:
        return None
    if isinstance(node, (ast.List, ast.Tuple)):
        return list(node.elts[:_MAX_LOOP_ELEMENTS])
    if isinstance(node, ast.Name) and node.id in literals:
        return _elements(literals[node.id], literals, depth + 1)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.keywords:
        return None
    name, args = node.func.id, node.args
    if name in ("reversed", "list", "tuple", "sorted") and len(args) == 1:
        return _elements(args[0], literals, depth + 1)
    if name == "enumerate" and len(args) == 1:
        inner = _elements(args[0], literals, depth + 1)
        return None if inner is None else [
            ast.Tuple(elts=[ast.Constant(i), e or ast.Constant(None)], ctx=ast.Load())
            for i, e in enumerate(inner)]
    if name == "zip" and args:
        columns = [_elements(a, literals, depth + 1) for a in args]
        known = [len(c) for c in columns if c is not None]
        if not known:
            return None
        return [ast.Tuple(elts=[c[i] if c is not None and i < len(c) and c[i] is not None
                                else ast.Constant(None) for c in columns], ctx=ast.Load())
                for i in range(min(known))]
    return None


def _bound_to(target: ast.AST, element: ast.AST, name: str) -> Optional[ast.AST]:
    """The part of ``element`` that ``name`` is bound to when ``target`` is bound to it."""
    stack = [(target, element)]
    while stack:
        target, element = stack.pop()
        if isinstance(target, ast.Name):
            if target.id == name:
                return element
        elif isinstance(target, (ast.Tuple, ast.List)) and \
                isinstance(element, (ast.Tuple, ast.List)) and len(target.elts) == len(element.elts):
            stack.extend(zip(target.elts, element.elts))
    return None


def _string_bound(target: ast.AST, element: ast.AST, name: str) -> Optional[str]:
    """The string ``name`` takes when ``target`` is bound to ``element``, if it is one."""
    held = _bound_to(target, element, name)
    return held.value if isinstance(held, ast.Constant) and isinstance(held.value, str) else None


class SourceIndex:
    """Lines of the student's source, found from its syntax tree (nothing is run)."""

    def __init__(self, submission: Submission, chain: Optional[Chain] = None) -> None:
        self.submission = submission
        self.chain = chain or NOTEBOOK_CHAIN
        self.train = self.chain.train
        self.tree = submission.analysed_tree()  # None where it is too large to read
        self.functions: dict[str, ast.FunctionDef] = {}
        self._assigned: dict[str, dict[str, list[int]]] = {}
        self._loop_strings: dict[tuple[str, str], frozenset[str]] = {}
        if self.tree is not None:
            # the last definition at module level is the one that runs (notebooks redefine)
            for node in self.tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.functions[node.name] = node  # type: ignore[assignment]

    def function(self, name: str) -> Optional[ast.FunctionDef]:
        return self.functions.get(name)

    def parameters(self, function: str) -> list[str]:
        node = self.function(function)
        if node is None:
            return []
        return [a.arg for a in (*node.args.posonlyargs, *node.args.args)]

    def parameter(self, function: str, index: int, default: str) -> str:
        names = self.parameters(function)
        return names[index] if len(names) > index else default

    def _assignment_map(self, function: str) -> dict[str, list[int]]:
        if function not in self._assigned:
            node = self.function(function)
            self._assigned[function] = {} if node is None else \
                assignment_lines(ast.Module(body=[node], type_ignores=[]))
        return self._assigned[function]

    def assignments(self, function: str, variable: str) -> list[int]:
        return sorted(self._assignment_map(function).get(variable, []))

    def assigned_names(self, function: str) -> list[str]:
        """Every simple name ``function`` assigns, in order of first assignment."""
        lines = self._assignment_map(function)
        return sorted(lines, key=lambda name: min(lines[name]))

    def assignment_line(self, function: str, variable: str) -> Optional[int]:
        """The last line of ``function`` that assigns ``variable`` (the value it returned with)."""
        lines = self.assignments(function, variable)
        return lines[-1] if lines else None

    def _locals(self, node: ast.FunctionDef) -> set[str]:
        """Names bound in ``node`` (so not read from the module): parameters, assignment
        targets (``x = ...``, not ``x[k] = ...``), loop variables, imports, ``with ... as``."""
        names = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        declared_global: set[str] = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Assign):
                for target in sub.targets:
                    names |= _bound(target)
            elif isinstance(sub, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
                names |= _bound(sub.target)
            elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                    sub is not node:
                names.add(sub.name)
            elif isinstance(sub, ast.ExceptHandler) and sub.name:
                names.add(sub.name)
            elif isinstance(sub, (ast.For, ast.comprehension)):
                names |= _bound(sub.target)
            elif isinstance(sub, ast.withitem) and sub.optional_vars is not None:
                names |= _bound(sub.optional_vars)
            elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                names |= {a.asname or a.name.split(".")[0] for a in sub.names}
            elif isinstance(sub, ast.Global):
                declared_global |= set(sub.names)
        return names - declared_global

    def global_reads(self, function: str, name: str) -> list[int]:
        """Lines of ``function`` that read ``name`` from the module (a global, not a local)."""
        node = self.function(function)
        if node is None or name in self._locals(node):
            return []
        return sorted({n.lineno for n in ast.walk(node)
                       if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)})

    @functools.cached_property
    def _module_assigned(self) -> dict[str, list[int]]:
        """Names assigned at module level (outside functions and classes), and their lines."""
        if self.tree is None:
            return {}
        body = [node for node in self.tree.body
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        return assignment_lines(ast.Module(body=body, type_ignores=[]))

    def module_assignment(self, name: str) -> Optional[int]:
        """The last top-level line that assigns ``name`` (the value a function reads)."""
        lines = self._module_assigned.get(name)
        return max(lines) if lines else None

    @functools.cached_property
    def _tables(self) -> dict[str, ast.expr]:
        """Names bound to a list or tuple literal, at module level or in the training function
        (the tables a loop over weight names may read)."""
        train = self.function(self.train)
        nodes = (*(self.tree.body if self.tree else []), *(ast.walk(train) if train else ()))
        return {target.id: sub.value for sub in nodes
                if isinstance(sub, ast.Assign) and isinstance(sub.value, (ast.List, ast.Tuple))
                for target in sub.targets if isinstance(target, ast.Name)}

    def loop_strings(self, function: str, name: str) -> set[str]:
        """The strings ``name`` takes as a loop variable of ``function``, where the loop runs
        over a table the source spells out: ``for w, b, relu in LAYERS`` with ``LAYERS = [('W1',
        'b1', True), ...]`` at module level gives {'b1', ...} for ``b`` (through ``reversed``,
        ``zip``, ``enumerate`` too). Empty where the values are not written in the source."""
        if (function, name) not in self._loop_strings:
            self._loop_strings[function, name] = frozenset(self._find_loop_strings(function, name))
        return set(self._loop_strings[function, name])

    def _find_loop_strings(self, function: str, name: str) -> set[str]:
        node = self.function(function)
        if node is None:
            return set()
        found: set[str] = set()
        for sub in ast.walk(node):
            if isinstance(sub, (ast.For, ast.comprehension)) and name in _bound(sub.target):
                for element in _elements(sub.iter, self._tables) or []:
                    if element is not None:
                        found.add(_string_bound(sub.target, element, name))
        return found - {None}

    def _keys_of(self, function: str, node: ast.AST) -> set[str]:
        """The weight names a subscript ``weights[...]`` may take: its string constant, or the
        values of the loop variable it is indexed by (``loop_strings``)."""
        key = _subscript_key(node)
        if key is not None:
            return {key}
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name):
            return self.loop_strings(function, node.slice.id)
        return set()

    def update_line(self, parameter: str, gradient: Optional[str]) -> Optional[int]:
        """The line of the training function that computes the new value of weight
        ``parameter``."""
        node = self.function(self.train)
        if node is None:
            return None
        lr = self.parameter(self.train, 3, "learning_rate")
        wanted = {lr} | ({gradient} if gradient else set())
        statements = []
        for sub in ast.walk(node):
            targets: list[ast.AST] = []
            if isinstance(sub, ast.Assign):
                targets = list(sub.targets)
            elif isinstance(sub, ast.AugAssign):
                targets = [sub.target]
            elif isinstance(sub, ast.Expr) and isinstance(sub.value, ast.Call) and \
                    isinstance(sub.value.func, ast.Attribute):
                targets = [sub.value.func.value]  # weights['V'].sub_(...)
            # new['V'] = ..., or new[b] = ... in a loop over a table that names 'V'
            if any(parameter in self._keys_of(self.train, t) for t in targets) and \
                    _names_in(sub) & wanted:
                statements.append(sub.lineno)
        if statements:
            return min(statements)
        # {'V': V - learning_rate * dLdV, ...} or {'V': V_new, ...}; not a dict of the
        # gradients themselves ({'V': dLdV}), which a comprehension over the weights' names
        # then applies
        entries = [value.lineno for sub in ast.walk(node)
                   if isinstance(sub, ast.Dict) for key, value in zip(sub.keys, sub.values)
                   if isinstance(key, ast.Constant) and key.value == parameter
                   and not (isinstance(value, ast.Name) and value.id == gradient)]
        if entries:
            return entries[0]
        if gradient:
            uses = [n.lineno for n in ast.walk(node) if isinstance(n, ast.BinOp)
                    and {gradient, lr} <= _names_in(n)]
            if uses:
                return min(uses)
        # every weight updated by one expression (a comprehension over the weights' names,
        # weights[name] - learning_rate * grads[name]): that expression, the learning rate's
        # first
        given = self.parameter(self.train, 2, "weights")
        steps = sorted((lr not in _names_in(n), n.lineno) for n in ast.walk(node)
                       if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub))
                       and any(isinstance(s, ast.Subscript) and isinstance(s.value, ast.Name)
                               and s.value.id == given and not isinstance(s.slice, ast.Constant)
                               for s in ast.walk(n)))
        if steps:
            return steps[0][1]
        # every weight updated by one expression in a loop over a table that names it
        # ({k: value - learning_rate * step for k, value, step in zip(KEYS, old, steps)})
        looped = self._looped_update_line(node, parameter, lr)
        if looped is not None:
            return looped
        # the last assignment to weights['V'] (after any initialisation)
        assigned = [sub.lineno for sub in ast.walk(node) if isinstance(sub, ast.Assign)
                    and any(_subscript_key(t) == parameter for t in sub.targets)]
        return max(assigned) if assigned else None

    def _looped_updates(self, node: ast.FunctionDef, parameter: str, lr: str
                        ) -> list[tuple[ast.BinOp, list[tuple[ast.AST, ast.expr]]]]:
        """Each ``old - lr * step`` inside a loop or comprehension one of whose variables takes
        the weight's name (``loop_strings``), with that loop's (target, iterable) pairs."""
        found = []
        for sub in ast.walk(node):
            if isinstance(sub, ast.For):
                loops, bodies = [(sub.target, sub.iter)], list(sub.body)
            elif isinstance(sub, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                loops = [(g.target, g.iter) for g in sub.generators]
                bodies = [sub.key, sub.value] if isinstance(sub, ast.DictComp) else [sub.elt]
            else:
                continue
            names = {n for target, _ in loops for n in _bound(target)}
            if not any(parameter in self.loop_strings(self.train, n) for n in names):
                continue
            found += [(n, loops) for body in bodies for n in ast.walk(body)
                      if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub))
                      and lr in _names_in(n)]
        return found

    def _looped_update_line(self, node: ast.FunctionDef, parameter: str, lr: str
                            ) -> Optional[int]:
        lines = [update.lineno for update, _ in self._looped_updates(node, parameter, lr)]
        return min(lines) if lines else None

    def looped_operand_line(self, parameter: str, role: str) -> Optional[int]:
        """Where the weight's own operand of a looped update is written: in
        ``{k: value - lr * step for k, value, step in zip(KEYS, old, steps)}`` with ``steps =
        (g_w1, g_b1, ...)``, the line of ``g_w1`` for role "gradient" (the term multiplied by
        the learning rate), of the weight's entry in ``old`` for role "weight"."""
        node = self.function(self.train)
        if node is None:
            return None
        lr = self.parameter(self.train, 3, "learning_rate")
        for update, loops in self._looped_updates(node, parameter, lr):
            scaled = update.right
            if not (isinstance(scaled, ast.BinOp) and isinstance(scaled.op, ast.Mult)):
                continue
            terms = [scaled.left, scaled.right]
            gradient = [t for t in terms if not (isinstance(t, ast.Name) and t.id == lr)]
            operands = {"weight": update.left,
                        "gradient": gradient[0] if len(gradient) == 1 else None}
            lines = {name: self._entry_line(operand, loops, parameter)
                     for name, operand in operands.items()}
            # both operands read from one table (zip(KEYS, old, old)): the loop over the
            # tables is wrong, not an entry
            if lines[role] is not None and lines[role] != lines[
                    "gradient" if role == "weight" else "weight"]:
                return lines[role]
        return None

    def _entry_line(self, operand: Optional[ast.expr], loops: list[tuple[ast.AST, ast.expr]],
                    parameter: str) -> Optional[int]:
        """The line of the table entry a looped update's operand (a loop variable) takes for
        ``parameter``."""
        if not isinstance(operand, ast.Name):
            return None
        for target, iterable in loops:
            if operand.id not in _bound(target):
                continue
            keys = [n for n in _bound(target) if parameter in self.loop_strings(self.train, n)]
            for element in _elements(iterable, self._tables) or []:
                if element is None or not any(
                        _string_bound(target, element, k) == parameter for k in keys):
                    continue
                held = _bound_to(target, element, operand.id)
                if isinstance(held, ast.expr) and getattr(held, "lineno", None) is not None:
                    return held.lineno
        return None

    def in_place_lines(self, function: str, name: str) -> list[int]:
        """Lines of ``function`` that change the tensor bound to ``name`` in place."""
        node = self.function(function)
        if node is None:
            return []
        lines = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.AugAssign):
                target = sub.target.value if isinstance(sub.target, ast.Subscript) else sub.target
                if isinstance(target, ast.Name) and target.id == name:
                    lines.add(sub.lineno)
            elif isinstance(sub, ast.Assign):
                for target in sub.targets:
                    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
                            and target.value.id == name:
                        lines.add(sub.lineno)
            elif isinstance(sub, ast.Call):
                func = sub.func
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and \
                        func.value.id == name and func.attr.endswith("_") and \
                        not func.attr.startswith("_"):
                    lines.add(sub.lineno)
                if any(k.arg == "out" and isinstance(k.value, ast.Name) and k.value.id == name
                       for k in sub.keywords):
                    lines.add(sub.lineno)
        return sorted(lines)

    def state_write_line(self, function: str) -> Optional[int]:
        """The first line of ``function`` that writes state kept between calls (a global, a
        module-level container, an attribute of a module-level object)."""
        node = self.function(function)
        if node is None:
            return None
        local = self._locals(node)
        declared = {n for sub in ast.walk(node) if isinstance(sub, ast.Global) for n in sub.names}
        lines = []
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                for target in targets:
                    root = target
                    while isinstance(root, (ast.Subscript, ast.Attribute)):
                        root = root.value
                    if isinstance(root, ast.Name) and (
                            root.id in declared or (root is not target and root.id not in local)):
                        lines.append(sub.lineno)
            elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
                root = sub.func.value
                while isinstance(root, (ast.Subscript, ast.Attribute)):
                    root = root.value
                if isinstance(root, ast.Name) and root.id not in local and root.id in \
                        self._module_assigned and sub.func.attr in _MUTATORS | {"__setitem__"}:
                    lines.append(sub.lineno)
        if lines:
            return min(lines)
        globals_ = [sub.lineno for sub in ast.walk(node) if isinstance(sub, ast.Global)]
        return min(globals_) if globals_ else None

    def return_line(self, function: str) -> Optional[int]:
        node = self.function(function)
        if node is None:
            return None
        lines = [n.lineno for n in ast.walk(node) if isinstance(n, ast.Return)]
        return max(lines) if lines else None

    def assigned_expression(self, function: str, variable: str) -> Optional[ast.expr]:
        """The expression of the last plain assignment ``variable = ...`` in ``function``."""
        node = self.function(function)
        if node is None:
            return None
        last = None
        for sub in ast.walk(node):
            if isinstance(sub, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == variable for t in sub.targets):
                if last is None or sub.lineno >= last.lineno:
                    last = sub
        return last.value if last is not None else None

    def shape_of(self, expression: ast.expr, shapes: dict[str, tuple[int, ...]]
                 ) -> Optional[tuple[int, ...]]:
        """The shape of a product expression, from the shapes of the names in it.

        Knows transposes (``.T``, ``.t()``, ``.transpose(0, 1)``, ``torch.t``) and matrix
        products (``@``, ``torch.mm``/``matmul``, ``.mm``/``.matmul``/``.dot``); None otherwise.
        """
        return _shape(expression, shapes)


_MUTATORS = frozenset({"append", "extend", "update", "setdefault", "pop", "insert", "clear",
                       "add", "add_", "sub_", "mul_", "div_", "copy_", "zero_", "fill_"})
_TRANSPOSE_CALLS = frozenset({"t", "transpose", "permute"})
_PRODUCT_CALLS = frozenset({"mm", "matmul", "dot"})


#: how deep ``_shape`` follows an expression: a student's line nested deeper (thousands of
#: ``@`` or ``.T``) has no shape gradkit reads, rather than a RecursionError in the grader
_MAX_SHAPE_DEPTH = 64


def _shape(node: ast.expr, shapes: dict[str, tuple[int, ...]], depth: int = 0
           ) -> Optional[tuple[int, ...]]:
    if depth > _MAX_SHAPE_DEPTH:
        return None
    depth += 1
    if isinstance(node, ast.Name):
        return shapes.get(node.id)
    key = _subscript_key(node)
    if key is not None:
        return shapes.get(f"weights[{key!r}]")
    if isinstance(node, ast.Attribute) and node.attr in ("T", "mT"):
        inner = _shape(node.value, shapes, depth)
        return tuple(reversed(inner)) if inner is not None and len(inner) == 2 else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        return _product(_shape(node.left, shapes, depth), _shape(node.right, shapes, depth))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        method, owner = node.func.attr, node.func.value
        owner_is_module = isinstance(owner, ast.Name) and owner.id in ("torch", "np", "numpy")
        args = node.args
        if method in _TRANSPOSE_CALLS:
            inner = _shape(args[0], shapes, depth) if owner_is_module and args else \
                _shape(owner, shapes, depth)
            return tuple(reversed(inner)) if inner is not None and len(inner) == 2 else None
        if method in _PRODUCT_CALLS:
            if owner_is_module and len(args) == 2:
                return _product(_shape(args[0], shapes, depth), _shape(args[1], shapes, depth))
            if not owner_is_module and len(args) == 1:
                return _product(_shape(owner, shapes, depth), _shape(args[0], shapes, depth))
        if method in ("to", "clone", "detach", "float", "double", "contiguous") and \
                not owner_is_module:
            return _shape(owner, shapes, depth)
    return None


def _product(left: Optional[tuple[int, ...]], right: Optional[tuple[int, ...]]
             ) -> Optional[tuple[int, ...]]:
    if left is None or right is None or len(left) != 2 or len(right) != 2:
        return None
    return (left[0], right[1])
