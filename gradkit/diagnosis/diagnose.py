"""Diagnosis: which step is wrong, on which line, and the likely mistake.

``diagnose`` reads numbers only (the grader's rebuilt results and the reference's float64
intermediates), never message strings:

1. The intermediates the student's ``train_neural_net`` held are found and compared with the
   reference (``gradkit.diagnosis.intermediates``), and every step of the backward pass is recomputed
   from the student's own upstream values, so the report names the step that is wrong rather
   than the cascade below it.
2. Every entry of the catalogue (``gradkit.diagnosis.catalogue``) is matched against the numbers; an entry
   is reported only when it matches on every call where it can be told apart from the reference.
3. Whatever is still unexplained gets the localisation (GK001: the wrong step and its line; GK002:
   from the parameter gradients alone when no intermediates could be followed) and the fitted
   factor: c in student = c × reference by least squares, reported when it holds within tolerance
   (-1 a sign, 2 or 1/n a scale, k/learning_rate an update that ignores the learning rate).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from gradkit.diagnosis import catalogue, edits, whole_call  # noqa: F401 (registers matchers)
from gradkit.cases import Case, is_probe
from gradkit.diagnosis.catalogue import Facts, Match, PredictObservation, forward_view
from gradkit.grading import Grading, observations
from gradkit.diagnosis.chain import Chain
from gradkit.diagnosis.intermediates import (NOTEBOOK_CHAIN, as_expected_shape,
                                   SourceIndex, StepCheck, StepObservation,
                                   close, compare_intermediates, find, fit_factor, holds,
                                   localise, snap)
from gradkit.loader import Submission
from gradkit.plan import CallResult, rebuild
from gradkit.report import Diagnosis, Evidence, IntermediateResult, Tolerance
from gradkit.tolerances import Tolerances

F64 = torch.float64
QUANTITY_WORDS = NOTEBOOK_CHAIN.quantity_words
_NOTEBOOK_PARAMETERS = NOTEBOOK_CHAIN.parameters
#: What to look at when only the parameter gradients say which are wrong (the notebook's
#: words; any other description's come from its step table, ``_suspects``).
SUSPECTS = {
    frozenset(_NOTEBOOK_PARAMETERS): "Every gradient passes through the output layer: look at dL/dP "
                           "(P - Y), dP/dC (sigmoid'(C)) and dL/dC, and at the forward pass.",
    frozenset({"V", "I"}): "dL/dW and dL/dJ are right, so look at the hidden layer: dL/dB "
                           "(dL/dC @ W.T), dB/dA (sigmoid'(A)) and dL/dA.",
    frozenset({"V"}): "Only V's is wrong: look at its own step, dL/dV = X.T @ dL/dA.",
    frozenset({"I"}): "Only I's is wrong: look at its own step, dL/dI = dL/dA summed over rows.",
    frozenset({"W"}): "Only W's is wrong: look at its own step, dL/dW = B.T @ dL/dC.",
    frozenset({"J"}): "Only J's is wrong: look at its own step, dL/dJ = dL/dC summed over rows.",
}


def module_globals(frame) -> dict[str, Tensor]:
    """The module-level tensors of the student's file, from the child's load frame."""
    if frame is None:
        return {}
    found = {}
    for name, desc in (frame.header.get("globals") or {}).items():
        try:
            value = rebuild(desc, frame.payload)
        except ValueError:  # wire.WireError: a bad description is simply not used
            continue
        if value.kind == "array" and value.tensor is not None:
            found[str(name)] = value.tensor
    return found


# --------------------------------------------------------------------------------------------
# Fitting a factor
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FactorPattern:
    """How a wrong quantity relates to the right one across calls, when it does exactly."""

    kind: str  # "constant": c; "per_row": c = k / n; "per_learning_rate": c = k / learning_rate
    value: float  # c, or k
    residual: float


#: One call's wrong value against what it should be: (actual, expected, tolerance, n, lr).
Pair = tuple[Tensor, Tensor, Tolerance, int, float]


def factor_pattern(pairs: list[Pair]) -> Optional[FactorPattern]:
    """The factor relating wrong values to right ones, when one holds on every call exactly.

    Tried in order: one constant c (actual = c × expected, least squares over every call);
    c = k / n with n the batch size (a batch mean); c = k / learning_rate (an update that
    ignores the learning rate). The factor is rounded to the shortest decimal that still fits
    within every call's tolerance. None when no pattern fits exactly.
    """
    if not pairs or any(a.shape != e.shape for a, e, _, _, _ in pairs):
        return None
    for kind, divisor in (("constant", lambda n, lr: 1.0), ("per_row", lambda n, lr: float(n)),
                          ("per_learning_rate", lambda n, lr: lr)):
        scaled = [(a, e / divisor(n, lr), t) for a, e, t, n, lr in pairs]
        fit = fit_factor(scaled)
        if fit is None or not fit.exact:
            continue
        value = snap(fit.factor, lambda k: holds(scaled, k))
        return FactorPattern(kind, value, fit.residual)
    return None


def _number(x: float) -> str:
    for whole in (2, 3, 4, 5, 8, 10):
        if abs(x * whole - round(x * whole)) < 1e-9 and abs(round(x * whole)) == 1:
            return f"{'-' if x < 0 else ''}1/{whole}"
    return f"{x:g}"


def factor_words(pattern: Optional[FactorPattern]) -> str:
    """The pattern in words, for a message ("" when there is none)."""
    if pattern is None:
        return ""
    if pattern.kind == "constant":
        c = pattern.value
        if abs(c) < 1e-12:
            return " (it is zero: nothing comes through this step)"
        if c == -1.0:
            return " (it is -1 × the right value: the sign is flipped)"
        return f" (it is {_number(c)} × the right value)"
    if pattern.kind == "per_row":
        return f" (it is {_number(pattern.value)}/n × the right value, n the batch size)"
    return (f" (it is {_number(pattern.value)}/learning_rate × the right value: the step does "
            f"not follow the learning rate)")


def _step_pattern(checks: list[StepCheck]) -> Optional[FactorPattern]:
    pairs = []
    for check in checks:
        if check.actual is None or check.expected is None or check.tolerance is None:
            return None
        obs = check.observation
        pairs.append((check.actual, check.expected, check.tolerance, obs.batch_size,
                      obs.learning_rate))
    return factor_pattern(pairs)


def _parameter_pattern(observations: list[StepObservation], name: str
                       ) -> Optional[FactorPattern]:
    pairs = []
    for obs in observations:
        implied = obs.implied.get(name)
        if implied is None:
            return None
        reference = obs.gradient(name)
        if obs.gradient_right(name):
            continue  # right here: the pattern is about the calls where it is wrong
        pairs.append((implied, reference, obs.gradient_tolerance(name), obs.batch_size,
                      obs.learning_rate))
    return factor_pattern(pairs)


# --------------------------------------------------------------------------------------------
# Diagnosis
# --------------------------------------------------------------------------------------------

def _predict_observations(cases: tuple[Case, ...], calls: dict[str, CallResult],
                          tolerances: Tolerances, chain: Chain = NOTEBOOK_CHAIN
                          ) -> list[PredictObservation]:
    observations = []
    for case in cases:
        call = calls.get(case.id)
        if case.kind != "predict" or call is None or call.error or not call.steps:
            continue
        step = call.steps[0]
        value = step.returned
        P = value.tensor.to(F64) if value.kind == "array" and value.tensor is not None and \
            (value.tensor.dtype.is_floating_point) else None
        dtype = value.tensor.dtype if P is not None else F64
        weights = {n: w.to(F64) for n, w in (case.weights or {}).items()}
        after = step.after.get("X")
        observations.append(PredictObservation(
            case=case, P=P, dtype=dtype, forward=forward_view(chain, case.X.to(F64), weights),
            tolerance=tolerances.values(dtype),
            X_after=after.tensor if after is not None and after.kind == "array" else None))
    return observations


def diagnose(submission: Submission, cases: tuple[Case, ...], calls: dict[str, CallResult],
             grading: Grading, *, tolerances: Optional[Tolerances] = None,
             module_tensors: Optional[dict[str, Tensor]] = None
             ) -> tuple[list[IntermediateResult], list[Diagnosis]]:
    """The intermediates found in ``train_neural_net`` and the likely mistakes, for the report.

    ``grading`` is ``gradkit.grading.grade``'s result (its calls, and the loss conventions it
    accepted); ``module_tensors`` the module-level tensors of the student's file
    (``module_globals`` of the child's load frame).
    """
    tolerances = tolerances or Tolerances()
    chain = Chain.of(grading.assignment)
    everything = observations(grading.steps, tolerances, probes=True)
    graded = [o for o in everything if not is_probe(o.case)]
    probe_steps = {o.case.id.rsplit("_", 1)[1]: o for o in everything
                   if is_probe(o.case) and o.case.id.startswith("probe_step_")}
    predicts_all = _predict_observations(cases, calls, tolerances, chain)
    source = SourceIndex(submission, chain)
    found = find(graded)
    intermediates = compare_intermediates(graded, found, submission, source)
    facts = Facts(
        submission=submission, source=source, cases=cases, calls=calls, steps=graded,
        probe_steps=probe_steps,
        predicts=[o for o in predicts_all if not is_probe(o.case)],
        probe_predicts={o.case.id.rsplit("_", 1)[1]: o for o in predicts_all
                        if is_probe(o.case)},
        found=found, localisation=localise(graded, found), module_globals=module_tensors or {},
        tolerances=tolerances, accepted=grading.accepted_conventions, chain=chain)
    matches = _parsimonious([m for match in catalogue.MATCHERS.values() for m in match(facts)])
    diagnoses = [_from_match(m, facts) for m in sorted(
        matches, key=lambda m: (m.line is None, m.line or 0, m.code))]
    diagnoses += _unexplained(facts, matches)
    return intermediates, diagnoses


def _parsimonious(matches: list[Match]) -> list[Match]:
    """Drop a match that explains strictly less than another of the numbers' matches.

    Two alternatives can agree on some quantities: a batch-mean loss also averages the bias
    gradients, and without dB/dA, dL/dI summed from dL/dB is dL/dI summed from dL/dA. The one
    that explains more is the simpler account. Behaviour entries (GK5xx: mutation, hidden
    state, non-finite values) are separate facts: they neither drop nor are dropped.
    """
    def behaviour(m: Match) -> bool:
        return m.code.startswith("GK5")

    return [m for m in matches if behaviour(m) or not any(
        not behaviour(other) and set(other.quantities) > set(m.quantities)
        for other in matches if other is not m)]


def _quantity_words(quantities, chain: Chain = NOTEBOOK_CHAIN) -> list[str]:
    """dL/dV for V, ...; a wrong gradient also explains the wrong update it makes."""
    words = [chain.quantity_words.get(q, q) for q in quantities]
    if any(q in chain.parameters for q in quantities) and "update" not in words:
        words.append("update")
    return list(dict.fromkeys(words))


def _from_match(match: Match, facts: Facts) -> Diagnosis:
    entry = catalogue.ENTRIES[match.code]
    details = dict(match.details)
    if match.code == "GK503" and "edit" not in details:
        # what the first non-finite value is: the step's edit, when one explains it
        step = details.get("first_step") or next(
            (f"update.{q}" for q in match.quantities if q in facts.chain.parameters), None)
        found = _best_edit(facts, step) if step else None
        if found is not None:
            details["edit"] = _edit_details(facts, found)
            holder = None if found.edit.step in facts.found or \
                found.edit.step.startswith("update.") else _holding_variable(facts, found)
            if holder is not None:
                match.line = facts.source.assignment_line(facts.chain.train, holder) or match.line
    if facts.localisation.captured_any() and any(q in facts.chain.parameters for q in match.quantities):
        details["steps"] = _step_summary(facts)
    line = match.line
    if match.code[:3] in ("GK1", "GK3", "GK4") and (line is None or line in _update_lines(facts)):
        line = _searched_line(facts, match) or line
    return Diagnosis(
        code=entry.code, title=match.title or entry.title,
        message=match.message or entry.message.format(**match.words),
        quantities=_quantity_words(match.quantities, facts.chain),
        evidence=Evidence(factor=match.factor, residual=match.residual, cases=list(match.cases),
                          details=details),
        location=facts.submission.location(line), explanation=catalogue.explanation(entry, facts.chain))


def _update_lines(facts: Facts) -> set[int]:
    return {line for p in facts.chain.parameters if (line := facts.line_of(f"update.{p}")) is not None}


def _searched_line(facts: Facts, match: Match) -> Optional[int]:
    """Where a named mistake is, when its step is held under a name of the student's own: the
    variable that holds the edited value the search finds (for a forward-pass weight, the
    line that computes that layer)."""
    if match.code == "GK401":
        functions = match.details.get("functions") or [facts.chain.predict]
        return whole_call.affine_line(facts, functions[0], str(match.details.get("weight", "")))
    for name in facts.chain.parameters:
        if name not in match.quantities:
            continue
        found = _best_edit(facts, f"update.{name}")
        if found is None or found.edit.step.startswith("update."):
            continue
        holder = _holding_variable(facts, found)
        if holder is not None:
            return facts.source.assignment_line(facts.chain.train, holder)
    return None


def _parameter_right(facts: Facts, obs: StepObservation, name: str) -> bool:
    return obs.implied.get(name) is not None and any(
        obs.gradient_right(name, scale) for scale in facts.scales(obs))


def _unexplained(facts: Facts, matches: list[Match]) -> list[Diagnosis]:
    """GK001, GK002 and GK003 for whatever is wrong and no catalogue entry explains."""
    explained = {q for m in matches for q in m.quantities}
    wrong = [p for p in facts.chain.parameters
             if any(not _parameter_right(facts, obs, p) for obs in facts.steps)]
    unexplained = [p for p in wrong if p not in explained]
    diagnoses: list[Diagnosis] = []
    covered: set[str] = set()
    # without a single intermediate held, a wrong update says nothing about where the mistake
    # is: GK002 localises from the parameter gradients instead
    steps = facts.localisation.wrong_steps() if unexplained and \
        facts.localisation.captured_any() else []
    named = {m.line for m in matches if m.line is not None}
    by_line: dict[object, tuple[str, list[str]]] = {}
    for step in steps:
        params = [p for p in facts.chain.downstream[step] if p in unexplained]
        if not params:
            continue
        covered.update(params)
        line = facts.line_of(step)
        if line in named:
            continue  # a catalogue entry already points at this line
        # updates are not grouped here: _merge_alike_updates says once what several
        # updates on one line (or on none) have in common
        key = (line, step) if step.startswith("update.") or line is None else line
        _, before = by_line.setdefault(key, (step, []))
        before.extend(p for p in params if p not in before)
    for step, params in by_line.values():
        diagnoses.append(_wrong_step(facts, step, [p for p in facts.chain.parameters if p in params]))
    diagnoses = _merge_alike_updates(_merge_same_edits(diagnoses, facts.chain), facts)
    remaining = [p for p in unexplained if p not in covered]
    if remaining and not facts.localisation.captured_any():
        # nothing held to follow: each update folds in the whole backward pass; an edit of one
        # step that explains every call of it names the step
        searched = _searched_without_intermediates(facts, remaining)
        diagnoses += searched
        remaining = [p for p in remaining
                     if not any(facts.chain.quantity_words[p] in d.quantities for d in searched)]
    if remaining:
        diagnoses.append(_wrong_gradients(facts, remaining, wrong))
    if "P" not in explained:
        wrong_predictions = [o for o in facts.predicts
                             if o.P is None or not close(o.P, o.forward.P, o.tolerance)]
        if wrong_predictions:
            diagnoses.append(_wrong_prediction(facts, wrong_predictions))
    return diagnoses


def _wrong_step(facts: Facts, step: str, params: list[str]) -> Diagnosis:
    found = _best_edit(facts, step)
    if found is not None:
        return _one_edit(facts, found, params)
    checks = facts.localisation.wrong(step)
    pattern = _step_pattern(checks)
    span = tuple(dict.fromkeys(s for c in checks for s in c.span))
    if step.startswith("update."):
        name = step.split(".")[1]
        variable = f"The new weights['{name}']"
        inputs = [facts.chain.gradient_of[name]]
    else:
        variable = facts.variable(step)
        inputs = [i for i in facts.chain.step[step].inputs
                  if i not in ("X", "Y", *facts.chain.parameters)] or \
            list(facts.chain.step[step].inputs)
    span_words = (f", or in {', '.join(span)} before it (your function does not keep "
                  f"{'that value' if len(span) == 1 else 'those values'} in a variable gradkit "
                  f"recognises)") if span else ""
    unchanged = step.startswith("update.") and pattern is not None and \
        pattern.kind == "constant" and pattern.value == 0.0
    details: dict = {"step": step, "span": list(span), "factor_pattern":
                     None if pattern is None else {"kind": pattern.kind, "value": pattern.value},
                     "steps": _step_summary(facts)}
    if pattern is not None:
        details["edit"] = _factor_edit(step, pattern, unchanged)
    words = dict(variable=variable + _layer_words(facts, step),
                 expression=facts.chain.expressions[step],
                 inputs=", ".join(facts.variable(i) for i in inputs),
                 factor_words=" (the weight comes back unchanged)" if unchanged
                 else factor_words(pattern), span_words=span_words,
                 params=catalogue.and_words([facts.chain.quantity_words[p] for p in params]),
                 s="s" if len(params) == 1 else "")
    entry = catalogue.ENTRIES["GK001"]
    return Diagnosis(
        code=entry.code, title=entry.title, message=entry.message.format(**words),
        quantities=_quantity_words(params, facts.chain),
        evidence=Evidence(
            factor=pattern.value if pattern and pattern.kind == "constant" else None,
            residual=pattern.residual if pattern else None,
            cases=list(dict.fromkeys(c.observation.label for c in checks)),
            details=details),
        location=facts.submission.location(facts.line_of(step)),
        explanation=catalogue.explanation(entry, facts.chain))


def _best_edit(facts: Facts, step: str) -> Optional["edits.Explanation"]:
    """The search's explanation of a wrong step: the first that holds, unless a later one is
    an edit of a step the function did not keep under a recognised name but holds in a
    variable of its own (then the source shows where the mistake is)."""
    if step in facts._explained:
        return facts._explained[step]
    facts._explained[step] = best = _choose_edit(facts, step)
    return best


def _choose_edit(facts: Facts, step: str) -> Optional["edits.Explanation"]:
    found = edits.explain_all(facts.localisation.of(step), limit=3)
    if not found:
        return None
    for explanation in found:
        if explanation.edit.step != explanation.target and \
                _holding_variable(facts, explanation) is not None:
            return explanation
    return found[0]


def _edit_details(facts: Facts, found: "edits.Explanation") -> dict:
    """The edit for the report's evidence, in the student's names."""
    edit = found.edit
    return {"kind": edit.kind, "step": edit.step,
            "student": _render(edit.student, facts, found.parameter),
            "documented": _render(facts.chain.documented[edit.step], facts),
            "words": _render(edit.words, facts, found.parameter),
            # the same words in the course's names, so that the same edit of several
            # parameters is seen as one whatever the student calls them
            "template": edit.words,
            "parameter": found.parameter}


def _holding_variable(facts: Facts, found: "edits.Explanation") -> Optional[str]:
    """The student's variable that holds the edited step's value on every call it was kept
    (a wrong value under a name of their own is not found by value; its edited value is), or,
    when the step is inline, the value of the first step after it that a variable holds."""
    key = (found.edit, found.target, found.parameter)
    if key in facts._holders:
        return facts._holders[key]
    holder = None
    for _, values in edits.downstream_values(found, facts.localisation.of(found.target)):
        holder = _holder_of(facts, values[:3])
        if holder is not None:
            break
    facts._holders[key] = holder
    return holder


def _holder_of(facts: Facts, values: list) -> Optional[str]:
    used = {f.variable for f in facts.found.values() if f.function == facts.chain.train}
    # a copy of an input made before the forward pass (y = Y.numpy()) holds no step
    start = facts.line_of(facts.chain.forward[0]) or whole_call.affine_line(
        facts, facts.chain.train, facts.chain.parameters[0]) or 0
    candidates = None
    for check, value in values:
        captured = check.observation.result.captured.get(facts.chain.train, {})
        here = set()
        for name, held in captured.items():
            if name in used or held.kind != "array" or held.tensor is None or \
                    not held.tensor.dtype.is_floating_point:
                continue
            actual = held.tensor.to(F64)
            if actual.numel() != value.numel():
                continue
            actual = as_expected_shape(actual, value)
            if close(actual, value, check.observation.value_tolerance(held.tensor.dtype)):
                here.add(name)
        candidates = here if candidates is None else candidates & here
        if not candidates:
            return None
    lines = {name: facts.source.assignment_line(facts.chain.train, name) for name in candidates or ()}
    named = [n for n in lines if lines[n] is not None and lines[n] >= start]
    # the step's own variable is assigned after any earlier one that holds the same value
    return max(named, key=lambda n: lines[n]) if named else None


@functools.lru_cache(maxsize=16)
def _parameters_pattern(chain: Chain) -> "re.Pattern[str]":
    """A parameter's name or its gradient's, as a word (``\\b[VIWJ]\\b|dLd[VIWJ]`` for the
    notebook)."""
    names = "|".join(re.escape(p) for p in sorted(chain.parameters, key=len, reverse=True))
    return re.compile(rf"\b(?:{names})\b|dLd(?:{names})")


def _merge_alike_updates(diagnoses: list[Diagnosis], facts: Facts) -> list[Diagnosis]:
    """One GK001 for several updates that are wrong in the same way (the same line, or none;
    no edit found; the same fitted factor or none): a forward-pass or loss mistake under names
    of the student's own makes every update wrong, and one paragraph per weight would say the
    same thing each time."""
    groups: dict[str, list[Diagnosis]] = {}
    for diagnosis in diagnoses:
        details = diagnosis.evidence.details
        if diagnosis.code == "GK001" and \
                str(details.get("step", "")).startswith("update.") and \
                (details.get("edit") or {}).get("kind") in (None, "factor", "sign"):
            line = diagnosis.location.line if diagnosis.location is not None else None
            groups.setdefault(json.dumps([line, details.get("factor_pattern")], sort_keys=True),
                              []).append(diagnosis)
    chain = facts.chain
    dropped: set[int] = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        steps = [d.evidence.details["step"] for d in group]
        params = [s.split(".")[1] for s in steps]
        span = [s for s in chain.step_names
                if any(s in d.evidence.details.get("span", []) for d in group)]
        pattern = group[0].evidence.details.get("factor_pattern")
        factor = group[0].evidence.factor
        words = factor_words(None if pattern is None else
                             FactorPattern(pattern["kind"], pattern["value"], 0.0))
        words = words.replace("(it is", "(each is")
        gradients = catalogue.and_words([facts.variable(chain.gradient_of[p]) for p in params])
        span_words = (f", or in {', '.join(span)} before them (your function does not keep "
                      f"{'that value' if len(span) == 1 else 'those values'} in a variable "
                      f"gradkit recognises)") if span else ""
        message = (f"The new {catalogue.and_words([f'weights[{p!r}]' for p in params])} do not follow "
                   f"from your own {gradients}: each should be the weight - learning_rate * its "
                   f"gradient{words}. The mistake is in these updates{span_words}; the wrong "
                   f"{catalogue.and_words([chain.quantity_words[p] for p in params])} follow "
                   f"from it.")
        kept = group[0]
        kept.message = message
        kept.quantities = list(dict.fromkeys(q for d in group for q in d.quantities))
        kept.evidence.cases = list(dict.fromkeys(c for d in group for c in d.evidence.cases))
        residuals = [d.evidence.residual for d in group if d.evidence.residual is not None]
        kept.evidence.residual = max(residuals) if residuals else None
        kept.evidence.factor = factor
        kept.evidence.details["span"] = span
        kept.evidence.details["also"] = steps[1:]
        dropped.update(id(d) for d in group[1:])
    return [d for d in diagnoses if id(d) not in dropped]


def _merge_same_edits(diagnoses: list[Diagnosis], chain: Chain) -> list[Diagnosis]:
    """One GK601 for the same edit made in several updates (the learning rate applied twice
    in each), at the first one's line."""
    merged: list[Diagnosis] = []
    first: dict[tuple, Diagnosis] = {}
    for diagnosis in diagnoses:
        edit = diagnosis.evidence.details.get("edit") if diagnosis.code == "GK601" else None
        if not edit:
            merged.append(diagnosis)
            continue
        if str(edit.get("step", "")).startswith("update."):
            key = ("update", edit["kind"], edit.get("parameter"),
                   _parameters_pattern(chain).sub("_", edit.get("template", edit["words"])))
        else:  # the same step found wrong from several updates (nothing held below it)
            key = (edit["step"], edit["student"], edit.get("parameter"))
        if key not in first:
            first[key] = diagnosis
            merged.append(diagnosis)
            continue
        kept = first[key]
        kept.quantities = list(dict.fromkeys(kept.quantities + diagnosis.quantities))
        kept.evidence.cases = list(dict.fromkeys(kept.evidence.cases + diagnosis.evidence.cases))
        kept.evidence.details.setdefault("also", []).append(diagnosis.evidence.details["step"])
    for kept in first.values():
        also = [a for a in kept.evidence.details.get("also", []) if a.startswith("update.")]
        # one edit behind several parameters: name them all
        params = [p for p in chain.parameters if chain.quantity_words[p] in kept.quantities]
        kept.message = re.sub(r"the wrong .* follows? from it\.$", lambda _: (
            f"the wrong {catalogue.and_words([chain.quantity_words[p] for p in params])} "
            f"follow{'s' if len(params) == 1 else ''} from it."), kept.message)
        if not kept.evidence.details["step"].startswith("update."):
            continue
        if also:
            kept.message += (f" The updates of {catalogue.and_words([a[7:] for a in also])} "
                             f"have the same edit.")
    return merged


def _searched_without_intermediates(facts: Facts, names: list[str]) -> list[Diagnosis]:
    """GK601 for the parameters whose update an edit of one step explains, grouped by edit."""
    groups: dict[tuple, tuple["edits.Explanation", list[str]]] = {}
    for name in names:
        step = f"update.{name}"
        # an edit of an earlier step found for another parameter is tried first, on this
        # parameter's own calls: where it holds, no search of every edit again
        found = next((again for earlier, _ in groups.values()
                      if not earlier.edit.step.startswith("update.")
                      and (again := edits.holds_as_well(earlier, facts.localisation.of(step)))),
                     None) if step not in facts._explained else None
        if found is not None:
            facts._explained[step] = found
        else:
            found = _best_edit(facts, step)
        if found is None:
            continue
        key = (found.edit.step, found.edit.student, found.parameter) \
            if not found.edit.step.startswith("update.") else \
            ("update", found.edit.kind, found.edit.words, found.parameter)
        groups.setdefault(key, (found, []))[1].append(name)
    return [_one_edit(facts, found, params) for found, params in groups.values()]


def _factor_edit(step: str, pattern: FactorPattern, unchanged: bool) -> dict:
    """The edit a fitted factor states: a sign (-1), the learning rate (k/learning_rate),
    nothing done (an update by 0), or a scale (c, k/n)."""
    if unchanged:
        kind = "missing"
    elif pattern.kind == "per_learning_rate":
        kind = "learning_rate"
    elif pattern.kind == "constant" and pattern.value == -1.0:
        kind = "sign"
    else:
        kind = "factor"
    return {"kind": kind, "step": step, "factor": pattern.value, "pattern": pattern.kind}


def _render(template: str, facts: Facts, parameter: Optional[float] = None) -> str:
    """An edit's expression or words with the student's names: {dLdC} becomes their variable,
    {W'} the updated W, {λ} the fitted value (and {κ} 1 - it)."""
    def name(match: "re.Match[str]") -> str:
        key = match.group(1)
        if key == "λ":
            return _number(parameter) if parameter is not None else "λ"
        if key == "κ":
            return _number(1 - parameter) if parameter is not None else "(1 - λ)"
        if key.endswith(edits.UPDATED):
            return f"{key[:-1]}_updated"
        if key in ("X", "Y", *facts.chain.parameters):
            return facts.input_variable(key)
        return facts.variable(key)
    return re.sub(r"\{([^{}]+)\}", name, template)


def _one_edit(facts: Facts, found: "edits.Explanation", params: list[str]) -> Diagnosis:
    """GK601: the wrong step is the documented formula with one edit."""
    edit = found.edit
    step = edit.step
    holder = None
    if step.startswith("update."):
        name = step.split(".")[1]
        variable = f"The update of weights['{name}']"
        line = facts.line_of(step)
        replaced = re.search(r"in place of \{([^}]+)\}$", edit.words)
        if edit.kind == "operand" and replaced is not None:
            # a looped update takes its operands from tables: the wrong one is where the
            # table names it
            role = {name: "weight", facts.chain.gradient_of[name]: "gradient"}.get(
                replaced.group(1))
            line = (facts.source.looped_operand_line(name, role) if role else None) or line
    else:
        holder = None if step in facts.found else _holding_variable(facts, found)
        variable = holder or facts.variable(step)
        line = facts.source.assignment_line(facts.chain.train, holder) if holder else facts.line_of(step)
    if line is None:
        line = facts.line_of(found.target)
    variable += _layer_words(facts, step)
    rendered = _edit_details(facts, found)
    student, documented, words = rendered["student"], rendered["documented"], rendered["words"]
    below = "" if step == found.target or holder else (
        f" Your function does not keep {facts.variable(step)} in a variable gradkit recognises; "
        f"it was found from {facts.variable(found.target)}.")
    entry = catalogue.ENTRIES["GK601"]
    message = entry.message.format(
        variable=variable, student=student, documented=documented, words=words,
        below=below, params=catalogue.and_words([facts.chain.quantity_words[p] for p in params]),
        s="s" if len(params) == 1 else "")
    return Diagnosis(
        code=entry.code, title=entry.title, message=message,
        quantities=_quantity_words(params, facts.chain),
        evidence=Evidence(
            factor=found.parameter if edit.kind == "factor" else None,
            residual=found.residual, cases=found.cases,
            details={"step": step, "found_at": found.target, "edit": rendered,
                     "steps": _step_summary(facts)}),
        location=facts.submission.location(line), explanation=catalogue.explanation(entry, facts.chain))


def _layer_words(facts: Facts, step: str) -> str:
    """' (layer 2)' after a step's variable, for a description other than the notebook's
    (whose names say their layer)."""
    chain = facts.chain
    if chain.is_notebook or step not in chain.layer_of:
        return ""
    return f" ({chain.layer_words(chain.layer_of[step])})"


def _step_summary(facts: Facts) -> dict[str, str]:
    """Each step of the chain, judged from the student's own upstream values: wrong, right,
    right where held, or not held."""
    return {name: _status(facts, name) for name in facts.chain.step_names}


def _status(facts: Facts, step: str) -> str:
    checks = facts.localisation.of(step)
    if any(c.status == "wrong" for c in checks):
        return "wrong"
    if checks and all(c.status == "right" for c in checks):
        return "right"
    return "right where held" if any(c.status == "right" for c in checks) else "not held"


def _wrong_gradients(facts: Facts, names: list[str], wrong: list[str]) -> Diagnosis:
    patterns = {n: _parameter_pattern(facts.steps, n) for n in names}
    shared = None
    values = list(patterns.values())
    if values and all(p is not None for p in values) and \
            len({(p.kind, round(p.value, 9)) for p in values if p is not None}) == 1:
        shared = values[0]
    suspects = _suspects(facts.chain, wrong, shared)
    words = dict(s="s" if len(names) > 1 else "", params=catalogue.and_words(names),
                 is_are="is" if len(names) == 1 else "are",
                 factor_words=factor_words(shared) if shared else "", suspects=suspects)
    entry = catalogue.ENTRIES["GK002"]
    line = next((facts.line_of(f"update.{n}") for n in names
                 if facts.line_of(f"update.{n}") is not None), None)
    return Diagnosis(
        code=entry.code, title=entry.title, message=entry.message.format(**words),
        quantities=_quantity_words(names, facts.chain),
        evidence=Evidence(
            factor=shared.value if shared and shared.kind == "constant" else None,
            residual=shared.residual if shared else None,
            cases=[o.label for o in facts.steps if any(not _parameter_right(facts, o, n)
                                                       for n in names)],
            details={"factor_patterns": {n: None if p is None else
                                         {"kind": p.kind, "value": p.value}
                                         for n, p in patterns.items()},
                     "wrong": wrong}),
        location=facts.submission.location(line), explanation=catalogue.explanation(entry, facts.chain))


def _wrong_prediction(facts: Facts, wrong: list[PredictObservation]) -> Diagnosis:
    pattern = None
    if all(o.P is not None and o.P.shape == o.forward.P.shape for o in wrong):
        pattern = factor_pattern([(o.P, o.forward.P, o.tolerance, o.case.batch_size, 1.0)
                                  for o in wrong if o.P is not None])
        if pattern is not None and pattern.kind != "constant":
            pattern = None
    entry = catalogue.ENTRIES["GK003"]
    chain = facts.chain
    title, message = entry.title, entry.message.format(factor_words=factor_words(pattern))
    if not chain.is_notebook:
        forward = "; ".join(f"{q} = {chain.expressions[q]}" for q in chain.forward)
        title = f"{chain.predict} returns something else"
        message = (f"{chain.predict} does not return the forward pass's output "
                   f"({forward}){factor_words(pattern)}.")
    return Diagnosis(
        code=entry.code, title=title, message=message, quantities=["P"],
        evidence=Evidence(factor=pattern.value if pattern else None,
                          residual=pattern.residual if pattern else None,
                          cases=[o.case.id for o in wrong]),
        location=facts.submission.location(facts.source.return_line(facts.chain.predict)),
        explanation=catalogue.explanation(entry, facts.chain))


# --------------------------------------------------------------------------------------------
# Where to look, from the parameter gradients alone, in any description's names
# --------------------------------------------------------------------------------------------

def _suspects(chain: Chain, wrong: list[str], shared: Optional[FactorPattern]) -> str:
    """What to look at when only the parameter gradients say which are wrong: the notebook's
    ``SUSPECTS``, or the same reasoning in a description's own names, layer by layer."""
    every = set(wrong) == set(chain.parameters)
    sign = shared is not None and shared.kind == "constant" and abs(shared.value + 1) < 1e-6
    if chain.is_notebook:
        if sign and every:
            return ("Every gradient has the opposite sign: either dL/dP is Y - P instead of "
                    "P - Y, or the update adds the gradient instead of subtracting it.")
        return SUSPECTS.get(frozenset(wrong), "Look at the steps these gradients share.")
    a = chain.assignment
    L = chain.depth
    if sign and every:
        return (f"Every gradient has the opposite sign: either {chain.name(f'dLdA{L}')} has "
                "Y - P where it should have P - Y, or the update adds the gradient instead of "
                "subtracting it.")
    if every:
        return ("Every gradient passes through the output layer: look at " + "; ".join(
            f"{chain.name(i)} = {chain.expressions[chain.name(i)]}"
            for i in (f"dLdA{L}", f"dA{L}dZ{L}", f"dLdZ{L}")) + ", and at the forward pass.")
    if len(wrong) == 1:
        step = chain.gradient_of[wrong[0]]
        return (f"Only {wrong[0]}'s is wrong: look at its own step, {step} = "
                f"{chain.expressions[step]}.")
    top = max(a.parameter_layer(p) for p in wrong)
    if set(wrong) == {p for p in chain.parameters if a.parameter_layer(p) <= top}:
        return (f"The gradients of the layers after layer {top} are right, so look at layer "
                f"{top}: " + "; ".join(
                    f"{chain.name(i)} = {chain.expressions[chain.name(i)]}"
                    for i in (f"dLdA{top}", f"dA{top}dZ{top}", f"dLdZ{top}")) + ".")
    return "Look at the steps these gradients share."
