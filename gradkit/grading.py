"""From rebuilt results to graded checks: every comparison, then a verdict and points per check.

Checks are independent by construction: gradients are judged only from what the student's
``train`` function returned, predictions only from ``predict``, and training with the
reference's forward pass on the student's trained weights, so one wrong function never fails
another's checks. Check ids, titles, hints and points come from the assignment's description
(``gradient.<name>`` for every parameter).

The dtype rule: the returned weights and predictions keep X's dtype (as the notebook's own code
does). A change of dtype is the ``dtype`` check's finding, never a gradient's: every value is
compared at the tolerance of the less precise of X's dtype and its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from gradkit import expected as oracle
from gradkit.cases import Case, is_probe
from gradkit.compare import all_finite, compare, passes
from gradkit.loader import Submission
from gradkit.plan import CallResult, StepResult, Value
from gradkit.report import (MAX_PICTURE_ENTRIES, Check, CheckGroup, Comparison,
                            GradientPicture, Plots, Tolerance, TrainingCurve)
from gradkit.tolerances import STRETCH_TRACKING, TRAINING_TRACKING, Tolerances, dtype_name
from reference.assignment import (DEFAULT_POINTS, NOTEBOOK, Assignment, LossConvention,
                                  check_ids, default_points)
from reference.steps import gradient_id, step_table

if TYPE_CHECKING:
    from gradkit.options import Options

F64 = torch.float64

# The points per check live with the description (``reference.assignment``).
TITLES = {
    "load": "loads, and defines train_neural_net and neural_net_predict",
    "predict": "neural_net_predict matches the reference",
    "gradient.V": "dL/dV implied by the update matches the reference and autograd",
    "gradient.I": "dL/dI implied by the update matches the reference and autograd",
    "gradient.W": "dL/dW implied by the update matches the reference and autograd",
    "gradient.J": "dL/dJ implied by the update matches the reference and autograd",
    "update": "updated weights match the reference's SGD step",
    "dtype": "returned weights and predictions keep X's dtype",
    "init": "weights=None draws V, I, W, J of the right shapes, in the notebook's order",
    "training": "the notebook's training loop classifies all 8 rows and tracks the reference loss",
    "side_effects": "X and Y are left unchanged, and the same call gives the same result",
}
HINTS = {
    "predict": "neural_net_predict must return P = sigmoid(sigmoid(X V + I) W + J), using "
               "weights['I'] and weights['J'].",
    "gradient.V": "dL/dV = X.T @ dL/dA, with dL/dA = (dL/dC @ W.T) * sigmoid'(A).",
    "gradient.I": "dL/dI = dL/dA summed over the batch rows: dLdA.sum(dim=0, keepdim=True).",
    "gradient.W": "dL/dW = B.T @ dL/dC, with dL/dC = (P - Y) * sigmoid'(C).",
    "gradient.J": "dL/dJ = dL/dC summed over the batch rows: dLdC.sum(dim=0, keepdim=True).",
    "update": "Each weight becomes w - learning_rate * dL/dw; return all four in a dict.",
    "dtype": "Return tensors of X's dtype: compute in X.dtype, or cast the results back with "
             ".to(X.dtype).",
    "init": "With weights=None, draw torch.randn(3, 4), (1, 4), (4, 1), (1, 1) for V, I, W, J.",
    "training": "Train with the gradients above; the loop feeds each step the weights you return.",
    "side_effects": "Work on copies (X = X.clone()) instead of changing the caller's tensors, and "
                    "keep no state between calls.",
    "load": "Define both functions at the top level of the file, with the notebook's signatures.",
}
GRADIENT_QUANTITY = {"V": "dL/dV", "I": "dL/dI", "W": "dL/dW", "J": "dL/dJ"}


def titles(assignment: Assignment = NOTEBOOK) -> dict[str, str]:
    """Every check's title, in the assignment's names."""
    if assignment.is_notebook:
        return dict(TITLES)
    train, predict = assignment.functions.train, assignment.functions.predict
    names = assignment.parameter_names
    out = {"load": f"loads, and defines {train} and {predict}",
           "predict": f"{predict} matches the reference"}
    for name in names:
        out[f"gradient.{name}"] = (f"dL/d{name} implied by the update matches the reference "
                                   "and autograd")
    out.update({
        "update": "updated weights match the reference's SGD step",
        "dtype": TITLES["dtype"],
        "init": f"weights=None draws {', '.join(names)} of the right shapes, in the "
                "description's order",
        "training": "the training loop classifies the training rows as well as the reference "
                    "and tracks its loss",
        "side_effects": TITLES["side_effects"],
    })
    return out


def hints(assignment: Assignment = NOTEBOOK) -> dict[str, str]:
    """What to try, per check, in the assignment's names (from its step table)."""
    if assignment.is_notebook:
        return dict(HINTS)
    table = {s.id: s for s in step_table(assignment)}
    train, predict = assignment.functions.train, assignment.functions.predict
    forward = "; ".join(s.formula for s in table.values() if s.is_forward)
    out = {
        "load": f"Define {train}(X, Y, weights=None, learning_rate=1.0) and {predict}(X, "
                "weights) at the top level of the file.",
        "predict": f"{predict} must return the output of the forward pass: {forward}.",
    }
    for name in assignment.parameter_names:
        step = table[gradient_id(assignment, name)]
        upstream = table[step.inputs[-1]]
        out[f"gradient.{name}"] = f"{step.formula}, with {upstream.formula}."
    draws = ", ".join(f"torch.randn{shape}" for shape in assignment.parameter_shapes.values())
    out.update({
        "update": f"Each weight becomes w - learning_rate * dL/dw; return all "
                  f"{len(assignment.parameter_names)} in a dict.",
        "dtype": HINTS["dtype"],
        "init": f"With weights=None, draw {draws} for {', '.join(assignment.parameter_names)}, "
                "in this order.",
        "training": HINTS["training"],
        "side_effects": HINTS["side_effects"],
    })
    return out


def gradient_quantity(name: str) -> str:
    return GRADIENT_QUANTITY.get(name, f"dL/d{name}")


@dataclass
class CaseVerdict:
    """Comparisons of one case for one check; ``error`` when there was nothing to compare."""

    case: str
    comparisons: list[Comparison] = field(default_factory=list)
    error: Optional[str] = None
    line: Optional[int] = None
    #: with credit_upstream: the upstream steps whose mistake alone made this case's numbers wrong
    credited: Optional[tuple[str, ...]] = None
    #: a training case's losses and final predictions, for the report's pictures
    curve: Optional[TrainingCurve] = None

    @property
    def passed(self) -> bool:
        return self.error is None and (self.credited is not None or
                                       all(c.passed for c in self.comparisons))


@dataclass(frozen=True)
class SeenStep:
    """One call of train_neural_net that returned a dict of weights, kept for diagnosis."""

    case: Case
    index: int  # the step within a chain (0 otherwise)
    expectation: oracle.StepExpectation
    result: StepResult
    given: dict[str, Tensor]
    returned: dict[str, Tensor]
    #: the loss convention its gradients were judged under (the documented one unless accepted)
    convention: LossConvention
    scale: float  # that convention's factor on the documented gradients
    #: the gradients the update implies, (given - returned) / learning_rate in float64 (None
    #: where the returned weight has another shape or dtype)
    implied: dict[str, Optional[Tensor]]


@dataclass
class Grading:
    """Everything ``grade`` worked out, for the report and for diagnosis."""

    checks: list[Check]
    verdicts: dict[str, list[CaseVerdict]]
    #: every call of train_neural_net that returned weights, probes included, for diagnosis
    steps: list[SeenStep]
    #: the conventions accepted as correct besides the documented one
    accepted_conventions: tuple[LossConvention, ...] = ()
    notes: list[str] = field(default_factory=list)
    #: the numbers behind the HTML view's pictures (``Report.plots``)
    plots: Plots = field(default_factory=Plots)
    assignment: Assignment = NOTEBOOK


def weights_of(value: Value, assignment: Assignment = NOTEBOOK
               ) -> tuple[Optional[dict[str, Tensor]], Optional[str]]:
    """The weight tensors of a returned dict, by name, or why they cannot be read."""
    if value.kind != "dict":
        return None, f"returned {value.describe()}, not a dict of weights"
    missing = [n for n in assignment.parameter_names if n not in value.items]
    if missing:
        return None, f"the returned dict has no key {', '.join(map(repr, missing))} " \
                     f"(it has {sorted(value.items)})"
    weights = {}
    for name in assignment.parameter_names:
        item = value.items[name]
        if item.kind != "array":
            return None, f"weights[{name!r}] is {item.describe()}, not a tensor"
        if item.source == "ndarray":
            return None, f"weights[{name!r}] is a numpy array; return torch tensors " \
                         f"(torch.from_numpy(...))"
        weights[name] = item.tensor
    return weights, None


def _error_words(call: Optional[CallResult], function: str, submission: Submission) -> tuple[str, Optional[int]]:
    if call is None:
        return f"{function} was not run", None
    if call.error:
        err = call.error
        line = err.get("line") if isinstance(err.get("line"), int) else None
        where = f" at {submission.where(line)}" if line else ""
        return f"{function} raised {err.get('type')}: {err.get('message')}{where}", line
    return call.missing or f"{function} produced no result", None


def _check(check_id: str, group: CheckGroup, verdicts: list[CaseVerdict], points: dict[str, float],
           submission: Submission, titles_: dict[str, str] = TITLES,
           hints_: dict[str, str] = HINTS) -> Check:
    max_points = float(points.get(check_id, 0))
    run = len(verdicts)
    passed = sum(v.passed for v in verdicts)
    comparisons = [c for v in verdicts for c in v.comparisons]
    credited = [v for v in verdicts if v.credited is not None and
                not all(c.passed for c in v.comparisons)]
    if run == 0:
        return Check(id=check_id, group=group, title=titles_[check_id], status="skipped",
                     points=0.0, max_points=max_points, message="no case could be run")
    errors = [v for v in verdicts if v.error]
    failing = [v for v in verdicts if not v.passed]
    if not failing:
        status, message = "pass", ""
        if credited:
            message = _credit_words(credited)
    else:
        status = "error" if len(errors) == run else "fail"
        first = failing[0]
        worst = next((c for c in first.comparisons if not c.passed), None)
        detail = first.error or (worst.message if worst else "")
        names = ", ".join(v.case for v in failing[:6]) + (" ..." if len(failing) > 6 else "")
        message = f"wrong in {len(failing)} of {run} case(s) ({names}); in {first.case}: {detail}"
    if failing and credited:
        message += "; " + _credit_words(credited)
    line = next((v.line for v in errors if v.line), None)
    return Check(id=check_id, group=group, title=titles_[check_id], status=status,
                 points=round(max_points * passed / run, 4), max_points=max_points,
                 message=message, hint=hints_.get(check_id, "") if failing else "",
                 location=submission.location(line), cases_passed=passed, cases_run=run,
                 comparisons=comparisons)


def _credit_words(credited: list[CaseVerdict]) -> str:
    steps = sorted({s for v in credited for s in v.credited or ()})
    names = ", ".join(v.case for v in credited[:6]) + (" ..." if len(credited) > 6 else "")
    return (f"credited in {len(credited)} case(s) ({names}): computed correctly, and wrong "
            f"there only because of the mistake in {', '.join(steps)}, charged to another check")


def _step_inputs(case: Case, results: list[StepResult], assignment: Assignment
                 ) -> list[tuple[Tensor, Tensor, Optional[dict[str, Tensor]]]]:
    """The (X, Y, weights) each step of a case was given: chains start from the student's own."""
    if case.kind == "chain":
        inputs: list[tuple[Tensor, Tensor, Optional[dict[str, Tensor]]]] = []
        weights: Optional[dict[str, Tensor]] = case.weights
        for index, (X, Y) in enumerate(case.batches[: len(results)]):
            inputs.append((X, Y, weights))
            weights, _ = weights_of(results[index].returned, assignment)
            if not _usable(weights, assignment):
                break  # the next step's expectation needs well-formed, finite weights
        return inputs
    return [(case.X, case.Y, case.weights)] * len(results)


def _usable(weights: Optional[dict[str, Tensor]], assignment: Assignment) -> bool:
    return weights is not None and all(
        tuple(weights[n].shape) == shape and weights[n].dtype.is_floating_point
        and all_finite(weights[n])
        for n, shape in assignment.parameter_shapes.items())


def grade(submission: Submission, cases: tuple[Case, ...], calls: dict[str, CallResult],
          options: "Options") -> Grading:
    """Every check of a submission that loaded, from its calls' results, under ``options``.

    ``options.accept_conventions`` (with the assignment's own ``accepted_conventions``) are loss
    conventions whose gradients (and updates) count as correct besides the documented one.
    ``options.credit_upstream``: partial credit follows the steps; a case in which a gradient is
    wrong only because it was computed, correctly, from an earlier wrong step that another check
    is charged with passes (see ``gradkit.diagnosis.intermediates.CHARGED``). Probe cases are
    not graded.
    """
    assignment, tolerances, points = options.assignment, options.tolerances, options.check_points
    train, predict = assignment.functions.train, assignment.functions.predict
    verdicts: dict[str, list[CaseVerdict]] = {
        k: [] for k in check_ids(assignment) if k not in ("load", "policy")}
    accepted = tuple(dict.fromkeys(
        c for c in (*assignment.accepted_conventions, *options.accept_conventions)
        if c != assignment.loss_convention))
    steps_seen: list[SeenStep] = []
    notes: list[str] = []
    for case in cases:
        if is_probe(case):
            # probes feed diagnosis only: their steps are kept, nothing of them is compared
            call = calls.get(case.id)
            if case.kind == "step" and call is not None and call.steps and call.error is None:
                _steps(case, call, tolerances, assignment, None, steps_seen, accepted)
            continue
        call = calls.get(case.id)
        function = predict if case.kind == "predict" else train
        # a chain that raised part-way is graded on the steps it finished
        partial_chain = case.kind == "chain" and call is not None and bool(call.steps)
        failed = call is None or not call.steps or (call.error is not None and not partial_chain)
        if failed:
            words, line = _error_words(call, function, submission)
            targets = {"predict": ["predict"], "init": ["init"], "training": ["training"]}.get(
                case.kind, [f"gradient.{n}" for n in assignment.parameter_names] + ["update"])
            for target in targets:
                verdicts[target].append(CaseVerdict(case.id, error=words, line=line))
            continue
        if case.kind == "predict":
            verdicts["predict"].append(_predict(case, call, tolerances, assignment))
        elif case.kind == "init":
            verdicts["init"].append(_init(case, call, tolerances, assignment,
                                          calls.get("init_draws")))
        elif case.kind == "training":
            if not bool(torch.isfinite(oracle.expect_training(case, assignment).losses).all()):
                # the description's training settings make the reference itself diverge: there
                # is nothing to track, and the student is not charged for it
                notes.append(f"the training check was skipped: the reference diverges on "
                             f"{case.id} (lower [training] learning_rate in the assignment)")
                continue
            verdicts["training"].append(_training(case, call, tolerances, assignment))
        else:
            _steps(case, call, tolerances, assignment, verdicts, steps_seen, accepted)
        if case.kind != "training":
            verdicts["dtype"].append(_dtype(case, call, assignment))
        if case.kind in ("step", "chain", "predict"):
            verdicts["side_effects"].append(_side_effects(case, call, tolerances, assignment))
    if options.credit_upstream:
        _credit_upstream(verdicts, steps_seen, tolerances, assignment)
    check_titles, check_hints = titles(assignment), hints(assignment)
    checks = [_check(check_id, check_id.split(".")[0], verdicts[check_id], points, submission,
                     check_titles, check_hints)
              for check_id in verdicts]
    for check in checks:
        if check.id == "training" and check.status == "skipped" and notes:
            check.message = "; ".join(notes)
    return Grading(checks=checks, verdicts=verdicts, steps=steps_seen,
                   accepted_conventions=accepted, notes=notes, assignment=assignment,
                   plots=plots_of(checks, verdicts, steps_seen))


def computed_dtype(returned: torch.dtype, given: torch.dtype) -> torch.dtype:
    """The dtype a value is judged at: the less precise of X's and its own (the dtype rule:
    a change of dtype is the dtype check's finding, so it never tightens another's tolerance)."""
    if not returned.is_floating_point:
        return given
    if not given.is_floating_point:
        return returned
    return returned if torch.finfo(returned).eps >= torch.finfo(given).eps else given


def _dtype(case: Case, call: CallResult, assignment: Assignment) -> CaseVerdict:
    """The dtype rule on one case: every returned weight (or the prediction) has X's dtype."""
    verdict = CaseVerdict(case.id)
    want = case.dtype
    returned: list[tuple[str, Value]] = []
    for index, step in enumerate(call.steps[:1] if case.repeat else call.steps):
        value = step.returned
        label = f" at step {index + 1}" if case.kind == "chain" else ""
        if case.kind == "predict":
            returned.append((f"P{label}", value))
        elif value.kind == "dict":
            returned += [(f"weights[{n!r}]{label}", value.items[n])
                         for n in assignment.parameter_names if n in value.items]
    wrong = [(what, v) for what, v in returned
             if v.kind == "array" and v.tensor is not None and v.tensor.dtype != want]
    seen = [v for _, v in returned if v.kind == "array" and v.tensor is not None]
    if not seen:
        return verdict  # nothing to judge: the other checks say what came back
    function = assignment.functions.predict if case.kind == "predict" else \
        assignment.functions.train
    first_what, first = wrong[0] if wrong else returned[0]
    verdict.comparisons.append(Comparison(
        quantity=f"dtype of what {function} returned", case=case.id, against="rule",
        passed=not wrong, problem="dtype" if wrong else None,
        expected_shape=list(first.tensor.shape), actual_shape=list(first.tensor.shape),
        actual_dtype=dtype_name(first.tensor.dtype), mismatched=len(wrong), total=len(seen),
        message="" if not wrong else
        f"X is {dtype_name(want)}, but {first_what} came back "
        f"{dtype_name(first.tensor.dtype)} ({len(wrong)} of {len(seen)} returned tensors "
        "changed dtype)"))
    return verdict


def observations(steps: list[SeenStep], tolerances: Tolerances, *, probes: bool = False):
    """The graded calls (or, with ``probes``, every call) as ``intermediates.StepObservation``."""
    from gradkit.diagnosis.intermediates import observe

    return [observe(s.case, s.index, s.expectation, s.result, s.given, s.returned, tolerances,
                    s.scale, implied=s.implied)
            for s in steps if probes or not is_probe(s.case)]


def _credit_upstream(verdicts: dict[str, list[CaseVerdict]], steps: list[SeenStep],
                     tolerances: Tolerances, assignment: Assignment) -> None:
    """Pass a case's failing gradient (or update) verdict when, in every call of it that is
    wrong, the check's own steps were right from the student's own upstream values, and the
    returned weights show it (``_weights_show``).

    The captured intermediates are the student's to forge: they explain and localise, but a
    call earns credit only through what the function returned."""
    from gradkit.diagnosis import intermediates
    from gradkit.diagnosis.chain import Chain

    seen = observations(steps, tolerances)
    chain = Chain.of(assignment)
    found = intermediates.find(seen)
    by_case: dict[str, list[dict]] = {}
    for obs in seen:
        by_case.setdefault(obs.case.id, []).append(intermediates.localise_call(obs, found))
    for check_id in [f"gradient.{n}" for n in assignment.parameter_names] + ["update"]:
        for verdict in verdicts[check_id]:
            if verdict.error is not None or verdict.passed or verdict.case not in by_case:
                continue
            reasons: set[str] = set()
            for checks in by_case[verdict.case]:
                upstream = intermediates.credit(checks, check_id)
                if upstream is not None and not _weights_show(checks, check_id):
                    break
                if upstream is None:
                    # a call whose own numbers for this check are right needs no credit
                    if not _check_right(checks, check_id):
                        break
                else:
                    reasons.update(upstream)
            else:
                if reasons:
                    verdict.credited = tuple(sorted(reasons, key=chain.step_names.index))


def _weights_show(checks: dict, check_id: str) -> bool:
    """The returned weights carry what would be credited: each weight the check is about moved
    where the reference's moves (a step that leaves the weights where they were earns nothing
    for gradients or the update), by exactly the learning rate
    times the student's own gradient that was right from its upstream values (the update step
    judged from the returned weights, not from a captured local alone)."""
    from gradkit.diagnosis.intermediates import close

    obs = next(iter(checks.values())).observation
    names = obs.given if check_id == "update" else [check_id.split(".")[1]]
    for name in names:
        applied = checks.get(f"update.{name}")
        implied = obs.implied.get(name)
        if applied is None or applied.status != "right" or applied.span or implied is None:
            return False
        still = torch.zeros_like(implied)
        tolerance = obs.gradient_tolerance(name)
        if close(implied, still, tolerance) and not close(obs.gradient(name), still, tolerance):
            return False  # the weight did not move, where the reference's does
    return True


def _check_right(checks: dict, check_id: str) -> bool:
    """This call's numbers for the check are right against the reference itself."""
    obs = next(iter(checks.values())).observation
    names = obs.given if check_id == "update" else [check_id.split(".")[1]]
    return all(obs.gradient_right(n) for n in names)


def _convention(implied: dict[str, Optional[Tensor]], exp: oracle.StepExpectation,
                tolerances: dict[str, Tolerance], batch_size: int, documented: LossConvention,
                accepted: tuple[LossConvention, ...], assignment: Assignment = NOTEBOOK
                ) -> tuple[LossConvention, float]:
    """The convention a call's gradients are judged under: an accepted one they all match, or
    the documented one. The scale is relative to the documented loss's gradients."""
    for convention in accepted:
        scale = assignment.convention_scale(convention, batch_size)
        if all(g is not None and compare("", "", g, scale * exp.gradients[n], tolerances[n]).passed
               for n, g in implied.items()):
            return convention, scale
    return documented, 1.0


def _steps(case: Case, call: CallResult, tolerances: Tolerances, assignment: Assignment,
           verdicts: Optional[dict[str, list[CaseVerdict]]], steps_seen: list[SeenStep],
           accepted: tuple[LossConvention, ...] = ()) -> None:
    """A step or chain case's calls: their comparisons into ``verdicts``, and the calls that
    returned weights into ``steps_seen``. A probe (``verdicts`` None) is only seen."""
    names = assignment.parameter_names
    results = call.steps[:1] if case.repeat else call.steps
    inputs = _step_inputs(case, results, assignment)
    per_check = {key: CaseVerdict(case.id) for key in [f"gradient.{n}" for n in names] + ["update"]}
    if case.kind == "chain" and call.error is not None and results and \
            _usable(weights_of(results[-1].returned, assignment)[0], assignment):
        # the student's function raised on weights that were fine: an error of this case
        line = call.error.get("line") if isinstance(call.error.get("line"), int) else None
        for verdict in per_check.values():
            verdict.error = (f"at step {len(results) + 1} of the chain, "
                             f"{assignment.functions.train} raised "
                             f"{call.error.get('type')}: {call.error.get('message')}")
            verdict.line = line
    # (a chain cut short because a step returned unusable weights is judged on that step)
    for index, (result, (X, Y, given)) in enumerate(zip(results, inputs)):
        step = index + 1 if case.kind == "chain" else None
        returned, problem = weights_of(result.returned, assignment)
        exp = oracle.expect_step(X, Y, given, case.learning_rate, assignment)
        if returned is None:
            for verdict in per_check.values():
                verdict.error = f"{assignment.functions.train} {problem}"
            continue
        lr = case.learning_rate
        before = {name: given[name].to(F64) for name in names}
        implied: dict[str, Optional[Tensor]] = {}
        gradient_tolerance: dict[str, Tolerance] = {}
        for name in names:
            after = returned[name]
            if tuple(after.shape) != tuple(before[name].shape) or \
                    not after.dtype.is_floating_point:
                implied[name] = None
                continue
            implied[name] = (before[name] - after.to(F64)) / lr
            weight_scale = float(before[name].abs().max()) if before[name].numel() else 1.0
            gradient_tolerance[name] = tolerances.implied_gradient(
                computed_dtype(after.dtype, X.dtype), weight_scale, lr, exp.rounding_of(name))
        documented = assignment.loss_convention
        convention, scale = _convention(implied, exp, gradient_tolerance, X.shape[0], documented,
                                        accepted, assignment) if accepted else \
            (documented, 1.0)
        if scale != 1.0:  # the gradient's rounding scales with the convention's factor
            for name in list(gradient_tolerance):
                weight_scale = float(before[name].abs().max()) if before[name].numel() else 1.0
                gradient_tolerance[name] = tolerances.implied_gradient(
                    computed_dtype(returned[name].dtype, X.dtype), weight_scale, lr,
                    exp.rounding_of(name, scale))
        steps_seen.append(SeenStep(case, index, exp, result, given, returned, convention, scale,
                                   implied))
        if verdicts is None:
            continue  # a probe feeds diagnosis only: no comparison of it is reported
        under = "" if convention == documented else \
            f", under the accepted {convention!r} convention"
        value_tolerance: dict[torch.dtype, Tolerance] = {}
        for name in names:
            after = returned[name]
            quantity = gradient_quantity(name)
            judged_at = computed_dtype(after.dtype, X.dtype)
            # under the documented convention this is the reference's own update (expect_step
            # computes w - lr * gradient from the same float64 weights)
            updated = exp.updated[name] if scale == 1.0 else \
                before[name] - lr * scale * exp.gradients[name]
            if judged_at not in value_tolerance:
                value_tolerance[judged_at] = tolerances.values(judged_at)
            if implied[name] is None:
                bad = compare(f"weights[{name!r}]", case.id, after, updated,
                              value_tolerance[judged_at], step=step)
                per_check[f"gradient.{name}"].comparisons.append(bad)
                per_check["update"].comparisons.append(bad)
                continue
            for against, truth in (("reference", exp.gradients[name]),
                                   ("autograd", exp.autograd[name])):
                per_check[f"gradient.{name}"].comparisons.append(compare(
                    f"{quantity} (implied by the update{under})", case.id, implied[name],
                    oracle.scaled(truth, scale), gradient_tolerance[name], against=against,
                    step=step, computed_in=judged_at))
            gradient = oracle.scaled(exp.gradients[name], scale)
            per_check["update"].comparisons.append(compare(
                f"weights[{name!r}] after the step{under}", case.id, after, updated,
                tolerances.updated_weight(judged_at, gradient_tolerance[name], lr,
                                          float(gradient.abs().max()) if gradient.numel() else 0.0),
                step=step))
    if verdicts is not None:
        for key, verdict in per_check.items():
            verdicts[key].append(verdict)


def _predict(case: Case, call: CallResult, tolerances: Tolerances,
             assignment: Assignment = NOTEBOOK) -> CaseVerdict:
    verdict = CaseVerdict(case.id)
    value = call.steps[0].returned
    truth = oracle.predictions(case.X, case.weights, assignment)
    if value.kind != "array" or value.source == "ndarray":
        verdict.comparisons.append(compare("P", case.id, None, truth, tolerances.values(F64),
                                           problem_if_missing=f"{assignment.functions.predict} "
                                           f"returned {value.describe()}, not a tensor"))
        return verdict
    verdict.comparisons.append(compare("P", case.id, value.tensor, truth, tolerances.values(
        computed_dtype(value.tensor.dtype, case.dtype))))
    return verdict


def _init(case: Case, call: CallResult, tolerances: Tolerances, assignment: Assignment,
          given_draws: Optional[CallResult] = None) -> CaseVerdict:
    verdict = CaseVerdict(case.id)
    returned, problem = weights_of(call.steps[0].returned, assignment)
    if returned is None:
        verdict.error = f"with weights=None, {assignment.functions.train} {problem}"
        return verdict
    # (a float dtype other than X's is the dtype check's finding, not this one's)
    for name, shape in assignment.parameter_shapes.items():
        t = returned[name]
        ok_shape = tuple(t.shape) == shape
        floating = t.dtype.is_floating_point
        finite = all_finite(t) if floating else False
        problem_kind = None if ok_shape and finite else (
            "shape" if not ok_shape else "dtype" if not floating else "nonfinite")
        message = "" if problem_kind is None else {
            "shape": f"weights[{name!r}] has shape {tuple(t.shape)}, expected {shape}",
            "dtype": f"weights[{name!r}] is {dtype_name(t.dtype)}, not a floating-point tensor",
            "nonfinite": f"weights[{name!r}] has NaN or inf values",
        }[problem_kind]
        verdict.comparisons.append(Comparison(
            quantity=f"weights[{name!r}] drawn by weights=None", case=case.id, against="rule",
            passed=problem_kind is None, problem=problem_kind, expected_shape=list(shape),
            actual_shape=list(t.shape), actual_dtype=dtype_name(t.dtype), total=t.numel(),
            message=message))
    if all(c.passed for c in verdict.comparisons) and given_draws is not None:
        verdict.comparisons += _seeded_init(case, returned, given_draws, tolerances, assignment)
    return verdict


def _seeded_init(case: Case, returned: dict[str, Tensor], given_draws: CallResult,
                 tolerances: Tolerances, assignment: Assignment) -> list[Comparison]:
    """The draws, judged apart from the gradients: the child seeds torch with ``case.seed``
    before the call, so weights=None drawn in the notebook's order must give what the same
    function returns when handed those draws (the ``init_draws`` probe)."""
    same_step, _ = weights_of(given_draws.steps[0].returned, assignment) \
        if given_draws.steps else (None, None)
    if same_step is None or not _usable(same_step, assignment):
        return []  # the function fails on given weights: the gradient checks say so
    comparisons = []
    for name in assignment.parameter_names:
        whose = "the notebook's" if assignment.is_notebook else "the"
        cmp = compare(f"weights[{name!r}] from weights=None, against the same call handed "
                      f"{whose} seeded draws", case.id, returned[name],
                      same_step[name].to(F64), tolerances.values(
                          computed_dtype(returned[name].dtype, case.dtype)), against="rule")
        if not cmp.passed:
            draws = ", ".join(f"torch.randn{shape}"
                              for shape in assignment.parameter_shapes.values())
            cmp.message = (f"after torch.manual_seed({case.seed}), weights=None should draw "
                           f"{', '.join(assignment.parameter_names)} in "
                           f"{whose} description's order ({draws}), so seeded runs "
                           "reproduce; " + cmp.message) if not assignment.is_notebook else (
                f"after torch.manual_seed({case.seed}), weights=None should draw "
                f"V, I, W, J in the notebook's order ({draws}), so seeded runs "
                "reproduce; " + cmp.message)
        comparisons.append(cmp)
    return comparisons




def _training(case: Case, call: CallResult, tolerances: Tolerances, assignment: Assignment
              ) -> CaseVerdict:
    verdict = CaseVerdict(case.id)
    exp = oracle.expect_training(case, assignment)
    checkpoints = []
    for result in call.steps:
        weights, problem = weights_of(result.returned, assignment)
        if weights is None:
            verdict.error = f"at step {result.step}, {assignment.functions.train} {problem}"
            return verdict
        checkpoints.append(weights)
    marks = case.checkpoints
    if len(checkpoints) != len(marks):
        verdict.error = "the training loop did not finish"
        return verdict
    if any(tuple(w[n].shape) != s for w in checkpoints
           for n, s in assignment.parameter_shapes.items()):
        verdict.error = "the weights returned during training have the wrong shapes"
        return verdict
    losses = torch.tensor([oracle.training_loss(case.X, case.Y, w, assignment)
                           for w in checkpoints], dtype=F64)
    words = f"{oracle.training_loss_words(assignment)} at steps {marks[0]}..{marks[-1]}"
    tracking = compare(words, case.id, losses, exp.losses, TRAINING_TRACKING)
    allowed = exp.misclassified
    if not tracking.passed:
        stretches = _tracked_stretch_by_stretch(case, checkpoints, losses, exp, tracking,
                                                assignment)
        if stretches is not None:
            tracking, allowed = stretches
    verdict.comparisons.append(tracking)
    P = oracle.predictions(case.X, checkpoints[-1], assignment)
    labels = case.Y.to(F64)
    verdict.curve = TrainingCurve(
        case=case.id, steps=list(marks), student_loss=_finite(losses),
        reference_loss=exp.losses.tolist(), predictions=_finite(P),
        labels=labels.reshape(-1).tolist(), loss=oracle.training_loss_words(assignment),
        outputs=labels.shape[1] if labels.dim() == 2 else 1)
    wrong = oracle.misclassified(case.X, case.Y, checkpoints[-1], assignment)
    # as well as the reference: all of them, where the reference classifies all (the notebook)
    failed = int(wrong.sum()) > allowed
    reference_words = "" if allowed == 0 else \
        f"; the reference, trained the same way, misclassifies {allowed}"
    verdict.comparisons.append(Comparison(
        quantity="rows classified correctly after training", case=case.id, against="rule",
        passed=not failed, problem="values" if failed else None,
        expected_shape=list(labels.shape), actual_shape=list(P.shape), actual_dtype="float64",
        mismatched=int(wrong.sum()), total=labels.numel(),
        worst_index=[int(torch.nonzero(wrong)[0])] if failed else None,
        message="" if not failed else
        f"after {marks[-1]} steps, {int(wrong.sum())} of {labels.numel()} rows "
        f"are misclassified (predictions {[round(float(p), 3) for p in P.reshape(-1)]})"
        + reference_words))
    return verdict


def _tracked_stretch_by_stretch(case: Case, checkpoints: list, losses: Tensor,
                                exp: "oracle.TrainingExpectation", drift: Comparison,
                                assignment: Assignment) -> Optional[tuple[Comparison, int]]:
    """The loss tracked stretch by stretch, when the whole run did not: each checkpoint's loss
    against the reference's SGD run from the student's *previous* checkpoint (the first from
    the common start), and the rows the last stretch's weights misclassify. None when a
    stretch does not track either.

    A run can leave a plateau at another step than the reference's (float32 rounding decides
    when a near-saddle's growing direction takes over), so a correct loop may be far from the
    reference's whole run at one checkpoint and on it again later. Stretches are computed up to
    the first that fails: a wrong step usually fails the first, which costs nothing more.
    """
    marks = case.checkpoints
    expected = [float(exp.losses[0])]
    final = None
    for k in range(len(marks)):
        if not passes(losses[: k + 1], torch.tensor(expected, dtype=F64), STRETCH_TRACKING):
            return None
        if k + 1 == len(marks):
            break
        final = oracle.training_stretch(case, checkpoints[k], marks[k] + 1, marks[k + 1],
                                        assignment)
        expected.append(oracle.training_loss(case.X, case.Y, final, assignment))
    comparison = compare(
        f"{oracle.training_loss_words(assignment)} at steps {marks[0]}..{marks[-1]}, each "
        f"against the reference's run from your previous checkpoint", case.id, losses,
        torch.tensor(expected, dtype=F64), STRETCH_TRACKING)
    comparison.message = (
        f"your loop's loss tracks the reference's stretch by stretch (every {marks[1] - marks[0]} "
        f"steps, from your own weights), though not the reference's whole run (at step "
        f"{marks[int(drift.worst_index[0])]}: {float(losses[drift.worst_index[0]]):.4g} against "
        f"{float(exp.losses[drift.worst_index[0]]):.4g}): a run this sensitive grows "
        f"differences as small as float rounding") if drift.worst_index else ""
    allowed = exp.misclassified if final is None else max(
        exp.misclassified, int(oracle.misclassified(case.X, case.Y, final, assignment).sum()))
    return comparison, allowed


def _side_effects(case: Case, call: CallResult, tolerances: Tolerances, assignment: Assignment
                  ) -> CaseVerdict:
    verdict = CaseVerdict(case.id)
    first = call.steps[0]
    given = {"X": case.X, "Y": case.Y}
    for name, original in given.items():
        if original is None or name not in first.after:
            continue
        after = first.after[name]
        same = after.kind == "array" and tuple(after.tensor.shape) == tuple(original.shape) and \
            bool(torch.equal(after.tensor.to(F64), original.to(F64)))
        verdict.comparisons.append(Comparison(
            quantity=f"{name} after the call", case=case.id, against="rule", passed=same,
            problem=None if same else "values", expected_shape=list(original.shape),
            total=original.numel(),
            message="" if same else f"the call changed its argument {name} in place"))
    if case.repeat and len(call.steps) == 2:
        a, _ = weights_of(call.steps[0].returned, assignment)
        b, _ = weights_of(call.steps[1].returned, assignment)
        if a is not None and b is not None:
            for name in assignment.parameter_names:
                if a[name].shape != b[name].shape:
                    continue
                cmp = compare(f"weights[{name!r}] on a second identical call", case.id, b[name],
                              a[name].to(F64), tolerances.values(b[name].dtype), against="rule")
                if not cmp.passed:
                    cmp.message = ("the same call, made twice on fresh copies of the same "
                                   "inputs, returned different results: " + cmp.message)
                verdict.comparisons.append(cmp)
    return verdict


# -- the numbers behind the pictures (Report.plots) --------------------------------------------

def plots_of(checks: list[Check], verdicts: dict[str, list[CaseVerdict]],
             steps: list[SeenStep]) -> Plots:
    """For each wrong gradient, its matrices in the case that shows the mistake most clearly;
    and the training loop's losses and final predictions. Only numbers grading already has."""
    curve = next((v.curve for v in verdicts.get("training", []) if v.curve is not None), None)
    return Plots(gradients=[p for c in checks if c.group == "gradient"
                            for p in [_gradient_picture(c, steps)] if p is not None],
                 training=curve)


def _finite(values: Tensor) -> list[Optional[float]]:
    """A tensor's values as a list, None where not finite (JSON has no NaN)."""
    return [v if math.isfinite(v) else None for v in values.reshape(-1).tolist()]


def _clarity(comparison: Comparison, expected: Tensor, actual: Tensor) -> tuple[float, float]:
    """How plainly a comparison shows a mistake on one colour scale: the share of entries
    outside tolerance, then the worst error against the larger matrix, weighted by how
    comparable the two matrices' sizes are (a 1e-12 gradient beside a 1e-6 one shows as blank)."""
    share = comparison.mismatched / comparison.total if comparison.total else 0.0
    sizes = sorted((float(expected.abs().max()), float(actual.abs().max())))
    if sizes[1] == 0.0:
        return share, 0.0
    return share, (comparison.max_abs_error or 0.0) / sizes[1] * (sizes[0] / sizes[1])


def _gradient_picture(check: Check, steps: list[SeenStep]) -> Optional[GradientPicture]:
    name = check.id.split(".", 1)[1]
    seen = {(s.case.id, s.index): s for s in steps if not is_probe(s.case)}
    best: Optional[tuple[tuple[float, float], Comparison, Tensor, Tensor]] = None
    for comparison in check.comparisons:
        if comparison.passed or comparison.problem != "values" or \
                comparison.against != "reference":
            continue
        step = seen.get((comparison.case, (comparison.step or 1) - 1))
        implied = step.implied.get(name) if step is not None else None
        if step is None or implied is None or implied.numel() > MAX_PICTURE_ENTRIES:
            continue
        expected = oracle.scaled(step.expectation.gradients[name], step.scale).to(F64)
        if expected.shape != implied.shape or not all_finite(implied):
            continue
        clarity = _clarity(comparison, expected, implied)
        if best is None or clarity > best[0]:
            best = (clarity, comparison, expected, implied)
    if best is None:
        return None
    _, comparison, expected, implied = best
    as_matrix = (lambda t: t.reshape(1, -1) if t.dim() < 2 else t.reshape(t.shape[0], -1))
    expected, implied = as_matrix(expected), as_matrix(implied.to(F64))
    worst = int((implied - expected).abs().argmax())
    return GradientPicture(
        parameter=name, quantity=GRADIENT_QUANTITY.get(name, f"dL/d{name}"),
        case=comparison.case, step=comparison.step, expected=expected.tolist(),
        actual=implied.tolist(), worst_index=[worst // expected.shape[1], worst % expected.shape[1]],
        tolerance=comparison.tolerance or Tolerance(dtype="float64", rtol=0.0, atol=0.0))
