"""Single-edit explanations: what a wrong step's value *is*, found by search.

Localisation (``gradkit.diagnosis.intermediates``) says which step does not follow from the
student's own inputs. This module says how it differs: for that step (and the steps folded into
it, which the function did not keep), it enumerates the edits students make to the step's
formula, evaluates each on the student's own upstream values of every call, and returns the
first that holds on every call within the call's tolerance:

- another operand of the same shape: one of the student's own intermediates or forward
  quantities, the weights given or the weights returned (an old or updated weight);
- a factor or term left out or added: an activation's derivative, the bias, the learning rate;
- a constant factor fitted over every call (c, c/n, c/learning_rate: a sign, a scale, a batch
  mean), a clip at a bound, a multiple of the weight added to its update (weight decay);
- a transpose done as a reshape, a mean or a sum over every element instead of a sum over rows;
- a derivative written another way (at the activation, without ``deriv=True``, as 1 - P, as
  tanh's 1 - B²).

An edit is data (``Edit``): its kind (``catalogue.EDIT_KINDS``), the student's expression and
the words for what changed, written with placeholders for the notebook's quantities that the
diagnosis fills with the student's own variable names. Candidates are listed simplest first;
the search stops at the first that holds on every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from gradkit.compare import float64_array
from gradkit.diagnosis.chain import Chain
from gradkit.diagnosis.intermediates import (NOTEBOOK_CHAIN, StepCheck, StepObservation,
                                             _broadcast, _quiet, as_expected_shape, fit_factor,
                                             holds, snap)
from reference.steps import activate, derivative, sigmoid

F64 = torch.float64
#: The notebook's formulas, documented forms and derivatives (every description's are its
#: chain's: ``Chain.formulas``, ``Chain.documented``, ``Chain.derivatives``).
FORMULAS = NOTEBOOK_CHAIN.formulas
DOCUMENTED = NOTEBOOK_CHAIN.documented
DERIVATIVES = NOTEBOOK_CHAIN.derivatives
#: An updated weight, as an operand: "V'" is the weights['V'] the call returned.
UPDATED = "'"

Values = dict[str, Optional[Tensor]]


@dataclass(frozen=True)
class Edit:
    """One edit of one step's formula."""

    step: str
    kind: str  # one of catalogue.EDIT_KINDS
    student: str  # the student's expression, {Q} for the notebook's quantity Q
    words: str  # what changed, with the same placeholders
    compute: Callable[[Values, StepObservation], Optional[Tensor]] = field(compare=False)
    #: a free parameter fitted over every call ("factor", "clip", "decay", "shrink")
    fitted: Optional[str] = None


@dataclass
class Explanation:
    """An edit that holds on every call, and where it was found."""

    edit: Edit
    target: str  # the wrong step it explains (the edit's step, or a held step below it)
    cases: list[str]
    parameter: Optional[float] = None  # the fitted value (factor, bound, decay)
    factor_kind: Optional[str] = None  # "constant", "per_row", "per_learning_rate"
    residual: float = 0.0


# --------------------------------------------------------------------------------------------
# Reading a call's values
# --------------------------------------------------------------------------------------------

def value(values: Values, obs: StepObservation, name: str) -> Optional[Tensor]:
    """A quantity of one call: the localisation's value, or an updated weight (``V'``)."""
    if name.endswith(UPDATED):
        returned = obs.returned.get(name[:-1])
        return None if returned is None or not returned.dtype.is_floating_point \
            else returned.to(F64)
    return values.get(name)


def _operands(step: str, chain: Chain) -> tuple[str, ...]:
    """The quantities an operand of ``step`` may be replaced by: everything computed before it
    (the forward pass and earlier gradients), X, Y, the weights given and, for the backward
    pass after the first gradient and for the update, the weights returned."""
    order = ("X", "Y", *chain.parameters) + tuple(s.name for s in chain.steps)
    if step.startswith("update."):
        before = order
    else:
        before = order[:order.index(step)]
    backward = step.startswith("update.") or (
        step in chain.step and chain.step[step].kind not in ("pre_activation", "activation",
                                                             "activation_derivative"))
    updated = tuple(p + UPDATED for p in chain.parameters) if backward else ()
    return before + updated


def _same_shape(values: Values, obs: StepObservation, name: str, shape: tuple[int, ...],
                exclude: tuple[str, ...],
                fits: Optional[Callable[[tuple[int, ...]], bool]] = None) -> list[str]:
    """Operands of ``shape`` (or, with ``fits``, of any shape it accepts: an elementwise
    product broadcasts a column against a matrix)."""
    out = []
    for other in _operands(name, obs.chain):
        if other in exclude:
            continue
        t = value(values, obs, other)
        if t is not None and (tuple(t.shape) == shape if fits is None else fits(tuple(t.shape))):
            out.append(other)
    return out


# --------------------------------------------------------------------------------------------
# The candidates
# --------------------------------------------------------------------------------------------

def _v(values: Values, obs: StepObservation, *names: str) -> Optional[list[Tensor]]:
    out = [value(values, obs, n) for n in names]
    return None if any(t is None for t in out) else out  # type: ignore[return-value]


def _safe(function: Callable[..., Tensor]) -> Callable[[Values, StepObservation],
                                                       Optional[Tensor]]:
    def run(values: Values, obs: StepObservation) -> Optional[Tensor]:
        try:
            return function(values, obs)
        except (RuntimeError, TypeError, IndexError, ValueError):
            return None
    return run


def _need(names: tuple[str, ...], body: Callable[..., Tensor]):
    """A compute from named quantities: None when one is missing or the shapes do not fit."""
    def run(values: Values, obs: StepObservation) -> Optional[Tensor]:
        args = _v(values, obs, *names)
        return None if args is None else body(*args)
    return _safe(run)


def candidates(step: str, values: Values, obs: StepObservation) -> list[Edit]:
    """The edits of ``step``'s formula, simplest first (shapes from one call's ``values``)."""
    chain = obs.chain
    kind, *ops = chain.formulas[step]
    activation = chain.activations[chain.layer_of[step] - 1]
    out: list[Edit] = []

    def add(kind_: str, student: str, words: str, names: tuple[str, ...],
            body: Callable[..., Tensor], fitted: Optional[str] = None) -> None:
        out.append(Edit(step, kind_, student, words, _need(names, body), fitted))

    def add_call(kind_: str, student: str, words: str, names: tuple[str, ...],
                 body: Callable[..., Tensor]) -> None:
        """Like ``add``, for a body that also reads the call (its learning rate)."""
        def run(values: Values, o: StepObservation) -> Optional[Tensor]:
            args = _v(values, o, *names)
            return None if args is None else body(o, *args)
        out.append(Edit(step, kind_, student, words, _safe(run)))

    def swaps(template: str, slot: int, names: tuple[str, ...],
              body: Callable[..., Tensor], broadcast: bool = False,
              accepts: Optional[Callable[[tuple[int, ...]], bool]] = None) -> None:
        """``names[slot]`` replaced by every other quantity of its shape (with ``broadcast``,
        of any shape that gives the step's own shape against the other operands; with
        ``accepts``, of any shape it accepts: a product only needs its inner dimensions)."""
        original = value(values, obs, names[slot])
        if original is None:
            return
        fits = accepts
        if broadcast:
            others = [value(values, obs, n) for i, n in enumerate(names) if i != slot]
            result = obs.given.get(ops[0]) if kind == "update" else values.get(step)
            if result is None or any(o is None for o in others):
                return
            want = tuple(result.shape)

            def fits(shape: tuple[int, ...]) -> bool:
                if kind == "update":  # torch broadcasts the weight up to the update's shape
                    return _broadcast(shape, want) is not None
                return _broadcast(shape, want) == want
        for other in _same_shape(values, obs, step, tuple(original.shape), (names[slot],),
                                 fits):
            swapped = names[:slot] + (other,) + names[slot + 1:]
            kind_ = "order" if other == names[slot] + UPDATED else "operand"
            add(kind_, template.format(*[f"{{{n}}}" for n in swapped]),
                f"{{{other}}} in place of {{{names[slot]}}}", swapped, body)

    if kind == "affine":
        L, R, b = ops
        add("sign", f"{{{L}}} @ {{{R}}} - {{{b}}}", f"the bias {{{b}}} subtracted instead of "
            "added", (L, R, b), lambda l, r, c: l @ r - c)
        add("drop_factor", f"{{{L}}} @ {{{R}}}", f"the bias {{{b}}} left out", (L, R),
            lambda l, r: l @ r)
        for slot in range(2):
            swaps("{} @ {} + {}", slot, (L, R, b), lambda l, r, c: l @ r + c)
        swaps("{} @ {} + {}", 2, (L, R, b), lambda l, r, c: l @ r + c, broadcast=True)
        add("drop_factor", f"{{{b}}}", f"the product {{{L}}} @ {{{R}}} left out", (b,),
            lambda c: c)
    elif kind == "activation":
        (x,) = ops
        if activation == "identity":
            pass  # nothing to leave out
        elif activation == "sigmoid":
            add("activation", f"{{{x}}}", "the sigmoid left out", (x,), lambda t: t)
            swaps("sigmoid({})", 0, (x,), sigmoid, broadcast=True)
        else:
            add("activation", f"{{{x}}}", f"the {activation} left out", (x,), lambda t: t)
            swaps(activation + "({})", 0, (x,), lambda t, f=activation: activate(f, t),
                  broadcast=True)
    elif kind == "loss" and chain.loss not in ("half_sse",) and step == chain.name(
            f"dLdA{chain.depth}"):
        # another loss's own gradient (2 (P - Y), 2 (P - Y) / n, the bce quotient): the sign,
        # and the documented gradient with a factor left out or added
        P, Y = ops
        loss_step = chain.step[step]
        add_call("sign", "-(" + chain.documented[step] + ")", "the sign is flipped", (P, Y),
                 lambda o, p, y: -loss_step.compute(p, y))
        if chain.loss in ("sse", "mse"):
            add("drop_factor", f"{{{P}}} - {{{Y}}}", "the factor 2" + (
                " and the 1/n" if chain.loss == "mse" else "") + " left out", (P, Y),
                lambda p, y: p - y)
        if chain.loss == "mse":
            add_call("drop_factor", f"2 * ({{{P}}} - {{{Y}}})", "the 1/n of the mean left out",
                     (P, Y), lambda o, p, y: 2 * (p - y))
            add_call("drop_factor", f"({{{P}}} - {{{Y}}}) / n", "the factor 2 left out",
                     (P, Y), lambda o, p, y: (p - y) / p.shape[0])
        # another operand in place of P, in the documented formula
        template = chain.documented[step].replace("{%s}" % P, "{0}").replace("{%s}" % Y, "{1}")
        swaps(template, 0, (P, Y), lambda p, y: loss_step.compute(p, y))
    elif kind == "loss":
        P, Y = ops
        add("sign", f"{{{Y}}} - {{{P}}}", "the sign is flipped", (P, Y), lambda p, y: y - p)
        add("drop_factor", f"{{{P}}}", f"{{{Y}}} left out", (P,), lambda p: p)
        add("drop_factor", f"-{{{Y}}}", f"{{{P}}} left out", (Y,), lambda y: -y)
        add("drop_factor", f"-{{{P}}}", f"{{{Y}}} left out and the sign flipped", (P,),
            lambda p: -p)
        add("drop_factor", f"{{{Y}}}", f"{{{P}}} left out and the sign flipped", (Y,),
            lambda y: y)
        add("sign", f"{{{P}}} + {{{Y}}}", f"{{{Y}}} added instead of subtracted", (P, Y),
            lambda p, y: p + y)
        add("sign", f"-({{{P}}} + {{{Y}}})", f"{{{P}}} added instead of subtracted", (P, Y),
            lambda p, y: -(p + y))
        add("operation", f"({{{P}}} - {{{Y}}}) ** 2", "the squared error itself, not its "
            "derivative", (P, Y), lambda p, y: (p - y) ** 2)
        swaps("{} - {}", 0, (P, Y), lambda p, y: p - y)
    elif kind == "derivative" and activation != "sigmoid":
        pre, post = ops
        _derivative_candidates(activation, pre, post, add, swaps)
    elif kind == "derivative":
        pre, post = ops
        add("derivative", f"sigmoid({{{pre}}})", "the sigmoid itself, not its derivative "
            "(deriv=True left out)", (pre,), lambda a: sigmoid(a))
        add("derivative", f"sigmoid({{{post}}}, deriv=True)", f"the derivative taken at the "
            f"activation {{{post}}} instead of {{{pre}}} (the sigmoid applied twice)", (post,),
            lambda b: sigmoid(b, deriv=True))
        add("derivative", f"1 - {{{post}}}", f"the factor {{{post}}} of {{{post}}} * "
            f"(1 - {{{post}}}) left out", (post,), lambda b: 1 - b)
        add("derivative", f"{{{post}}}", f"the factor (1 - {{{post}}}) of {{{post}}} * "
            f"(1 - {{{post}}}) left out", (post,), lambda b: b)
        add("derivative", f"1 - {{{post}}} ** 2", "tanh's derivative 1 - tanh² written for a "
            "sigmoid", (post,), lambda b: 1 - b ** 2)
        add("derivative", f"{{{pre}}} * (1 - {{{pre}}})", f"p * (1 - p) applied to the "
            f"pre-activation {{{pre}}} instead of the activation {{{post}}}", (pre,),
            lambda a: a * (1 - a))
        add("derivative", f"{{{post}}} * (1 + {{{post}}})", f"{{{post}}} * (1 + {{{post}}}): "
            "a sign flipped inside the derivative", (post,), lambda b: b * (1 + b))
        add("derivative", f"{{{post}}} * {{{post}}}", f"{{{post}}} in place of (1 - {{{post}}}) "
            "in the derivative", (post,), lambda b: b * b)
        add("derivative", f"(1 - {{{post}}}) / {{{post}}}", f"divided by {{{post}}} instead of "
            "multiplied, in the derivative", (post,), lambda b: (1 - b) / b)
        add("derivative", "1", "the derivative left out (1)", (pre,), torch.ones_like)
        swaps("sigmoid({}, deriv=True)", 0, (pre,), lambda a: sigmoid(a, deriv=True),
              broadcast=True)
    elif kind == "elementwise":
        a, b = ops
        for kept, dropped in ((a, b), (b, a)):
            add("derivative" if dropped in chain.derivatives else "drop_factor", f"{{{kept}}}",
                f"the factor {{{dropped}}} left out", (kept,), lambda t: t)
        add("operation", f"{{{a}}} / {{{b}}}", "divided instead of multiplied", (a, b),
            lambda x, y: x / y)
        add("operation", f"{{{a}}} + {{{b}}}", "added instead of multiplied", (a, b),
            lambda x, y: x + y)
        for slot in range(2):
            swaps("{} * {}", slot, (a, b), lambda x, y: x * y, broadcast=True)
    elif kind == "left_transposed":
        L, R = ops
        add("transpose", f"({{{R}}}.T @ {{{L}}}).reshape(...)", "the transposed product "
            "reshaped to the weight's shape instead of transposed", (L, R),
            lambda l, r: (r.T @ l).reshape(l.shape[1], r.shape[1]))
        rows = _rows(values, obs, L)
        for slot in range(2):
            swaps("{}.T @ {}", slot, (L, R), lambda l, r: l.T @ r,
                  accepts=lambda shape: len(shape) == 2 and shape[0] == rows)
    elif kind == "right_transposed":
        R, W = ops
        columns = _columns(values, obs, R)
        for slot in range(2):
            swaps("{} @ {}.T", slot, (R, W), lambda r, w: r @ w.T,
                  accepts=lambda shape: len(shape) == 2 and shape[1] == columns)
    elif kind == "sum_rows":
        (g,) = ops
        add("reduction", f"{{{g}}}.mean(dim=0)", "averaged over the rows instead of summed",
            (g,), lambda t: t.mean(0, keepdim=True))
        add("reduction", f"{{{g}}}.sum()", "summed over every element instead of over the "
            "rows", (g,), lambda t: t.sum().expand(1, t.shape[1]))
        add("reduction", f"{{{g}}}[0]", "the first row only, not the sum over the rows",
            (g,), lambda t: t[:1])
        add("reduction", f"{{{g}}}", "not summed over the rows (one row per example)", (g,),
            lambda t: t)
        add("reduction", f"{{{g}}}.sum(dim=1, keepdim=True)", "summed over the other axis "
            "(dim=1)", (g,), lambda t: t.sum(1, keepdim=True))
        add("reduction", f"{{{g}}}.sum(dim=1)", "summed over the other axis (dim=1)", (g,),
            lambda t: t.sum(1).reshape(1, t.shape[1]))
        swaps("{}.sum(dim=0)", 0, (g,), lambda t: t.sum(0, keepdim=True),
              accepts=lambda shape: len(shape) == 2)
    elif kind == "update":
        # in the space of the gradient the update implies: (w_before - w_after) / learning_rate
        w, g = ops
        add_call("learning_rate", f"{{{w}}} - learning_rate * learning_rate * {{{g}}}",
                 "the learning rate applied twice", (g,), lambda o, t: o.learning_rate * t)
        add_call("learning_rate", f"{{{w}}} - {{{g}}}", "the learning rate left out", (g,),
                 lambda o, t: t / o.learning_rate)
        add("sign", f"{{{w}}} + learning_rate * {{{g}}}", "the gradient added instead of "
            "subtracted", (g,), lambda t: -t)
        add_call("factor", f"{{{w}}} - learning_rate / n * {{{g}}}", "the step divided by the "
                 "batch size n (the gradient itself is the documented one)", (g,),
                 lambda o, t: t / o.batch_size)
        add("drop_factor", f"{{{w}}} - learning_rate", f"the gradient {{{g}}} left out", (g,),
            torch.ones_like)
        add_call("drop_factor", f"learning_rate * {{{g}}}", f"the weight {{{w}}} left out: "
                 "the step alone is returned", (g,),
                 lambda o, t, w=w: o.given[w] / o.learning_rate - t)
        add_call("drop_factor", f"-learning_rate * {{{g}}}", f"the weight {{{w}}} left out: "
                 "the step alone is returned", (g,),
                 lambda o, t, w=w: o.given[w] / o.learning_rate + t)
        add("operation", f"{{{w}}} - learning_rate / {{{g}}}", "divided by the gradient "
            "instead of multiplied", (g,), lambda t: 1 / t)
        swaps("{{" + w + "}} - learning_rate * {}", 0, (g,), lambda t: t, broadcast=True)
        for other in _operands(step, chain):
            held = value(values, obs, other)
            if other in chain.gradient_names and held is not None and other != g:
                add_call("operand", f"{{{w}}} - {{{other}}} * {{{g}}}",
                         f"{{{other}}} in place of learning_rate", (g, other),
                         lambda o, t, v: v * t / o.learning_rate)
        weight = obs.given[w]
        for other in _operands(step, chain):
            held = value(values, obs, other)
            if other == w or held is None or \
                    _broadcast(tuple(held.shape), tuple(weight.shape)) is None:
                continue
            add_call("operand", f"{{{other}}} - learning_rate * {{{g}}}",
                     f"{{{other}}} in place of {{{w}}}", (g, other),
                     lambda o, t, v, w=w: (o.given[w] - v) / o.learning_rate + t)
        out.append(Edit(step, "decay", f"{{{w}}} - learning_rate * ({{{g}}} + {{λ}} * {{{w}}})",
                        "plus {λ} × the weight (weight decay)", _zero, "decay"))
        out.append(Edit(step, "decay", f"{{κ}} * {{{w}}} - learning_rate * {{{g}}}",
                        "the weight multiplied by {κ} before the step (weight decay)", _zero,
                        "shrink"))
        out.append(Edit(step, "clip", f"{{{w}}} - learning_rate * {{{g}}}.clamp(-{{λ}}, {{λ}})",
                        "the gradient clipped at ±{λ}", _zero, "clip"))
    if kind not in ("update", "activation"):
        out.append(Edit(step, "clip", "(" + chain.documented[step] + ").clamp(-{λ}, {λ})",
                        "clipped at ±{λ}", _zero, "clip"))
    return out


def _derivative_candidates(activation: str, pre: str, post: str, add, swaps) -> None:
    """The edits of a tanh, ReLU or identity layer's derivative (the sigmoid's are listed in
    ``candidates``, in the notebook catalogue's order)."""
    if activation == "tanh":
        add("derivative", f"tanh({{{pre}}})", "the tanh itself, not its derivative", (pre,),
            torch.tanh)
        add("derivative", f"1 - {{{post}}}", f"tanh's derivative written as 1 - tanh: "
            f"1 - {{{post}}} instead of 1 - {{{post}}}**2", (post,), lambda b: 1 - b)
        add("derivative", f"1 - tanh({{{post}}})**2", f"the derivative taken at the "
            f"activation {{{post}}} instead of {{{pre}}} (tanh applied twice)", (post,),
            lambda b: 1 - torch.tanh(b) ** 2)
        add("derivative", f"1 - {{{pre}}}**2", f"1 - t**2 applied to the pre-activation "
            f"{{{pre}}} instead of the activation {{{post}}}", (pre,), lambda a: 1 - a ** 2)
        add("derivative", f"{{{post}}} * (1 - {{{post}}})", "the sigmoid's derivative "
            "p * (1 - p) written for a tanh", (post,), lambda b: b * (1 - b))
        add("derivative", f"1 + {{{post}}}**2", "a sign flipped inside the derivative "
            "(1 + tanh**2)", (post,), lambda b: 1 + b ** 2)
        add("derivative", f"{{{post}}}**2", "tanh**2 in place of 1 - tanh**2", (post,),
            lambda b: b ** 2)
    elif activation == "relu":
        add("derivative", f"relu({{{pre}}})", "the ReLU itself, not its derivative "
            f"(relu({{{pre}}}) in place of ({{{pre}}} > 0))", (pre,), torch.relu)
        add("derivative", f"({{{pre}}} < 0)", "the step of the ReLU's derivative reversed "
            f"(< 0 in place of > 0)", (pre,), lambda a: (a < 0).to(a.dtype))
        add("derivative", f"sigmoid({{{pre}}}, deriv=True)", "the sigmoid's derivative "
            "written for a ReLU", (pre,), lambda a: sigmoid(a, deriv=True))
    add("derivative", "1", "the derivative left out (1)", (pre,), torch.ones_like)
    if activation != "identity":
        template = {"tanh": "1 - tanh({})**2", "relu": "({} > 0)"}[activation]
        swaps(template, 0, (pre,), lambda a, f=activation: derivative(f, a), broadcast=True)


def _rows(values: Values, obs: StepObservation, name: str) -> Optional[int]:
    t = value(values, obs, name)
    return t.shape[0] if t is not None and t.dim() == 2 else None


def _columns(values: Values, obs: StepObservation, name: str) -> Optional[int]:
    t = value(values, obs, name)
    return t.shape[1] if t is not None and t.dim() == 2 else None


def _zero(values: Values, obs: StepObservation) -> Optional[Tensor]:
    return None  # fitted edits are evaluated by ``_fit``


# --------------------------------------------------------------------------------------------
# Evaluating an edit on every call
# --------------------------------------------------------------------------------------------

def _target_value(check: StepCheck, values: Values) -> Optional[Tensor]:
    """The value the held step should have from ``values`` (an update: its gradient)."""
    step = check.step
    if step.startswith("update."):
        gradient = values.get(check.observation.chain.gradient_of[step.split(".")[1]])
        if gradient is None or check.actual is None:
            return None
        shape = tuple(check.actual.shape)
        if tuple(gradient.shape) != shape:
            given = check.observation.given[step.split(".")[1]]
            if _broadcast(tuple(given.shape), tuple(gradient.shape)) != shape:
                return None
            gradient = torch.broadcast_to(gradient, shape)
        return gradient
    return values.get(step)


def _recompute(values: Values, obs: StepObservation, start: str, target: str,
               edited: Tensor) -> Optional[Values]:
    """``values`` with ``start`` set to ``edited`` and every step after it up to ``target``
    recomputed by the documented formulas (the steps the function did not keep)."""
    chain = obs.chain
    out = dict(values)
    out[start] = edited
    begin = chain.step_names.index(start) + 1
    end = chain.step_names.index(target)
    for name in chain.step_names[begin:end + 1]:
        if name.startswith("update."):
            break
        step = chain.step[name]
        inputs = [out.get(i) for i in step.inputs]
        if any(i is None for i in inputs):
            return None
        try:
            result = step.compute(*inputs)
        except RuntimeError:
            return None
        out[name] = result * obs.scale if step.scaled else result
    return out


def _agrees(actual: Tensor, candidate: Tensor, check: StepCheck) -> bool:
    candidate = as_expected_shape(candidate, actual)
    if tuple(candidate.shape) != tuple(actual.shape) and \
            _broadcast(tuple(candidate.shape), tuple(actual.shape)) == tuple(actual.shape):
        candidate = torch.broadcast_to(candidate, actual.shape)
    if tuple(candidate.shape) != tuple(actual.shape) or check.tolerance is None:
        return False
    a, c = float64_array(actual), float64_array(candidate)
    with _quiet():
        allowed = check.tolerance.atol + check.tolerance.rtol * (np.abs(a) + np.abs(c))
        near = np.abs(a - c) <= allowed
        same = (a == c) | (np.isnan(a) & np.isnan(c))
        return bool((near | same).all())


def _holds_on(edit: Edit, check: StepCheck) -> bool:
    obs = check.observation
    if check.actual is None:
        return False
    edited = edit.compute(check.upstream, obs)
    if edited is None:
        return False
    if edit.step == check.step:
        if check.step.startswith("update.") and \
                check.observation.implied.get(check.step.split(".")[1]) is None:
            # the returned weight has another shape: compare weights, as torch broadcast them
            given = obs.given[check.step.split(".")[1]]
            try:
                edited = given - obs.learning_rate * edited
            except RuntimeError:
                return False
        return _agrees(check.actual, edited, check)
    values = _recompute(check.upstream, obs, edit.step, check.step, edited)
    if values is None:
        return False
    target = _target_value(check, values)
    return target is not None and _agrees(check.actual, target, check)


def _fit(edit: Edit, checks: list[StepCheck]) -> Optional[tuple[float, float]]:
    """The one value of a fitted edit's parameter that holds on every call, and the residual."""
    pairs = [(c.actual, c.expected, c.tolerance) for c in checks]
    if any(a is None or e is None or t is None or a.shape != e.shape for a, e, t in pairs):
        return None
    if edit.fitted == "clip":
        bound = max(float(a.abs().max()) for a, _, _ in pairs)  # type: ignore[union-attr]
        if not np.isfinite(bound) or bound == 0.0:
            return None
        if not any(float(e.abs().max()) > bound * (1 + 1e-3) + t.atol  # type: ignore
                   for _, e, t in pairs):
            return None  # no call reaches the bound: nothing is clipped

        def clipped(b: float) -> bool:
            return holds([(a, e.clamp(-b, b), t) for a, e, t in pairs], 1.0)  # type: ignore

        return (snap(bound, clipped), 0.0) if clipped(bound) else None
    if edit.fitted in ("decay", "shrink"):
        # implied - gradient = lambda * w (decay), or (mu / learning_rate) * w (shrink)
        w = edit.step.split(".")[1]
        rests = []
        for c in checks:
            weight = c.observation.given[w]
            scale = 1.0 if edit.fitted == "decay" else 1.0 / c.observation.learning_rate
            rests.append((c.actual - c.expected, weight * scale, c.tolerance))
        fit = fit_factor(rests)
        if fit is None or not fit.exact or abs(fit.factor) < 1e-9:
            return None
        return snap(fit.factor, lambda k: holds(rests, k)), fit.residual
    return None


def _fitted_ok(edit: Edit, checks: list[StepCheck]) -> Optional[float]:
    result = _fit(edit, checks)
    return None if result is None else result[0]


# --------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------

def _held(checks: list[StepCheck]) -> list[StepCheck]:
    """Calls where the step's value is known and what it should be could be worked out."""
    held = [c for c in checks if c.actual is not None and c.expected is not None
            and c.status in ("right", "wrong")]
    return sorted(held, key=lambda c: c.status != "wrong")  # wrong calls first: most reject


def explain(checks: list[StepCheck]) -> Optional[Explanation]:
    """The first edit, of the wrong step or of a step folded into it, that holds on every call.

    ``checks`` are one step's checks over every call (``Localisation.of(step)``).
    """
    found = explain_all(checks, limit=1)
    return found[0] if found else None


def explain_all(checks: list[StepCheck], limit: int = 4) -> list[Explanation]:
    """Up to ``limit`` edits that hold on every call, simplest first (``explain``'s order).
    Where the function did not keep a step, an edit of it and an edit of the step it was
    folded into can give the same numbers; the caller picks by what the source shows."""
    held = _held(checks)
    wrong = [c for c in held if c.status == "wrong"]
    if not wrong:
        return []
    out: list[Explanation] = []
    target = wrong[0].step
    base = next((c for c in wrong if c.observation.batch_size not in (1, 3, 4)), wrong[0])
    span = tuple(dict.fromkeys(s for c in wrong for s in c.span))
    # the held step itself first, then the steps folded into it, nearest first; an operand
    # swapped (the most permissive edit) only after every other edit of every step
    formulas = base.observation.chain.formulas
    steps = [s for s in (target, *reversed(span)) if s in formulas]
    listed = {step: candidates(step, base.upstream, base.observation) for step in steps}
    ordered = [(step, e) for swaps in (False, True) for step in steps for e in listed[step]
               if (e.kind in ("operand", "order")) == swaps]
    for step, edit in ordered:
        if edit.fitted:
            if step != target:
                continue
            parameter = _fitted_ok(edit, held)
            if parameter is not None:
                out.append(Explanation(edit, target, [c.observation.label for c in wrong],
                                       parameter=parameter))
        elif all(_holds_on(edit, c) for c in held):
            out.append(Explanation(edit, target, [c.observation.label for c in wrong]))
        if len(out) >= limit:
            break
    return out


def holds_as_well(found: Explanation, checks: list[StepCheck]) -> Optional[Explanation]:
    """``found``'s edit (of a step before these checks' step, not fitted) as the explanation of
    these checks too, when it holds on every call of theirs: one wrong forward step explains
    every parameter's update, and one evaluation per call confirms it where a search would try
    every edit again."""
    edit = found.edit
    held = _held(checks)
    wrong = [c for c in held if c.status == "wrong"]
    if edit.fitted or not wrong or edit.step == wrong[0].step or \
            not all(_holds_on(edit, c) for c in held):
        return None
    return Explanation(edit, wrong[0].step, [c.observation.label for c in wrong])


def edited_values(found: Explanation, checks: list[StepCheck]) -> list[tuple[StepCheck, Tensor]]:
    """The value of the edited step on each call where it can be computed (not fitted edits)."""
    out = []
    for check in _held(checks):
        if found.edit.fitted:
            break
        value = found.edit.compute(check.upstream, check.observation)
        if value is not None:
            out.append((check, value))
    return out


def downstream_values(found: Explanation, checks: list[StepCheck]
                      ) -> list[tuple[str, list[tuple[StepCheck, Tensor]]]]:
    """The edited step's value on each call, then each step after it up to the wrong step the
    search started from, recomputed by the documented formulas (not fitted edits)."""
    edited = edited_values(found, checks)
    if not edited:
        return []
    out = [(found.edit.step, edited)]
    if found.edit.step == found.target:
        return out
    chain = edited[0][0].observation.chain
    begin = chain.step_names.index(found.edit.step) + 1
    end = chain.step_names.index(found.target)
    for name in chain.step_names[begin:end]:
        if name.startswith("update.") or name not in chain.step:
            break
        values = []
        for check, value_ in edited:
            recomputed = _recompute(check.upstream, check.observation, found.edit.step, name,
                                    value_)
            if recomputed is None or recomputed.get(name) is None:
                break
            values.append((check, recomputed[name]))
        if len(values) == len(edited):
            out.append((name, values))
    return out


def holds_everywhere(edit: Edit, checks: list[StepCheck]) -> bool:
    """``edit`` (not fitted) explains this step's value on every call where it is held."""
    held = _held(checks)
    return bool(held) and any(c.status == "wrong" for c in held) and \
        all(_holds_on(edit, c) for c in held)
