"""Explanations of a whole call, not one step: what the function did instead of one SGD step.

Registered as catalogue matchers (``catalogue.matcher``), so they come before the localisation
and the edit search, and a call they explain gets no step diagnosis:

- GK602: several SGD steps in one call (the same batch two or three times, or row by row);
- GK603: a weight (or every weight) returned as it was given: the update is never stored;
- GK610: ``weights=None`` draws other weights (another order, shape order, distribution, scale);
- GK620: ``neural_net_predict`` ignores its weights argument (no probe moves its output);
- GK621: it returns classes (rounded or thresholded) instead of the probability;
- GK622: it is one edit away from the forward pass (a sigmoid or a bias left out).

Each reads numbers only: the student's returned tensors against the reference run on the same
inputs another way, in float64.
"""

from __future__ import annotations

import ast
import functools
import itertools
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor

from gradkit.diagnosis.catalogue import ENTRIES, Facts, Match, matcher
from gradkit.diagnosis.chain import Chain
from gradkit.diagnosis.intermediates import (NOTEBOOK_CHAIN, close, distinct, _names_in,
                                             _subscript_key)
from gradkit.grading import weights_of
from reference import network
from reference.network import sigmoid

F64 = torch.float64
Weights = dict[str, Tensor]


def _sgd(X: Tensor, Y: Tensor, weights: Weights, lr: float,
         chain: Chain = NOTEBOOK_CHAIN) -> Weights:
    if chain.is_notebook:
        fwd = network.forward(X, weights)
        gradients = network.backward(fwd, Y, weights).parameter_gradients()
    else:
        gradients = network.run(chain.assignment, X, Y, weights).parameter_gradients()
    return network.sgd_update(weights, gradients, lr)


# --------------------------------------------------------------------------------------------
# GK602: several steps in one call
# --------------------------------------------------------------------------------------------

def _repeated(times: int) -> Callable[..., Weights]:
    def run(X: Tensor, Y: Tensor, weights: Weights, lr: float, chain: Chain) -> Weights:
        for _ in range(times):
            weights = _sgd(X, Y, weights, lr, chain)
        return weights
    return run


def _row_by_row(X: Tensor, Y: Tensor, weights: Weights, lr: float, chain: Chain) -> Weights:
    for row in range(X.shape[0]):
        weights = _sgd(X[row:row + 1], Y[row:row + 1], weights, lr, chain)
    return weights


_SEVERAL = (("2 SGD steps", "two SGD steps on the same batch, one after the other", _repeated(2)),
            ("3 SGD steps", "three SGD steps on the same batch", _repeated(3)),
            ("one SGD step per row", "one SGD step per row of the batch, row by row, each "
             "from the weights the previous row left", _row_by_row))


@matcher("GK602")
def _several_steps(facts: Facts) -> list[Match]:
    parameters = facts.chain.parameters
    if set(facts.wrong_parameters) != set(parameters) or facts.accepted:
        return []
    order = sorted(facts.steps, key=lambda o: o.case.id != "batch5")
    for steps, how, alternative in _SEVERAL:
        hits = []
        for obs in order:
            returned = obs.returned
            if any(returned.get(p) is None or tuple(returned[p].shape) !=
                   tuple(obs.given[p].shape) for p in parameters):
                hits = []
                break
            other = alternative(obs.X, obs.Y, obs.given, obs.learning_rate, facts.chain)
            if not any(distinct(other[p], obs.expectation.updated[p], obs.value_tolerance())
                       for p in parameters):
                continue  # one row: one step either way
            if not all(close(returned[p].to(F64), other[p], obs.value_tolerance(returned[p].dtype))
                       for p in parameters):
                hits = []
                break
            hits.append(obs.label)
        if hits:
            match = Match("GK602", (*parameters, "update"), line=facts.update_line(),
                          cases=tuple(hits), words=dict(steps=steps, how=how),
                          details={"edit": {"kind": "repeated", "steps": steps}})
            if not facts.chain.is_notebook:
                match.message = ENTRIES["GK602"].message.format(**match.words).replace(
                    "train_neural_net", facts.chain.train)
            return [match]
    return []


# --------------------------------------------------------------------------------------------
# GK603: a weight returned as it was given
# --------------------------------------------------------------------------------------------

def update_expression_line(facts: Facts, name: str) -> Optional[int]:
    """The first line of ``train_neural_net`` (outside its init branch) that computes
    ``<weight> - learning_rate * ...`` for weight ``name``, stored or not."""
    train = facts.chain.train
    node = facts.source.function(train)
    if node is None:
        return None
    lr = facts.source.parameter(train, 3, "learning_rate")
    gradient = facts.found.get(facts.chain.gradient_of[name])
    lines = []
    for sub in ast.walk(node):
        if not (isinstance(sub, ast.BinOp) and isinstance(sub.op, (ast.Sub, ast.Add))):
            continue
        names = _names_in(sub)
        if lr not in names:
            continue
        keys = {_subscript_key(n) for n in ast.walk(sub)}
        if name in keys or (gradient is not None and gradient.variable in names):
            lines.append(sub.lineno)
    if lines:
        return min(lines)
    for sub in ast.walk(node):  # {'V': ..., 'J': j} built in one statement
        if isinstance(sub, ast.Dict):
            for key, item in zip(sub.keys, sub.values):
                if isinstance(key, ast.Constant) and key.value == name and \
                        lr in _names_in(sub):
                    return item.lineno
    # no update expression: the last line that stores into weights[name] after the weights
    # were drawn or copied (weights['I'] = weights['I'], the update with its step left out)
    skipped = {id(n) for sub in ast.walk(node) if isinstance(sub, ast.If)
               for inner in sub.body for n in ast.walk(inner)}
    stores = [sub.lineno for sub in ast.walk(node) if isinstance(sub, ast.Assign)
              and id(sub) not in skipped
              and any(_subscript_key(t) == name for t in sub.targets)]
    return max(stores) if stores else None


def _held_gradient_is_zero(facts: Facts, name: str) -> bool:
    """The function holds weight ``name``'s gradient and it is zero where it should not be:
    the update is stored, and nothing comes through the backward pass (not GK603's words)."""
    step = facts.chain.gradient_of[name]
    held = [c for c in facts.localisation.of(step) if c.actual is not None]
    return bool(held) and all(float(c.actual.abs().max()) == 0.0 for c in held)


@matcher("GK603")
def _not_updated(facts: Facts) -> list[Match]:
    chain = facts.chain
    unchanged, cases = [], []
    for name in chain.parameters:
        if name not in facts.wrong_parameters or _held_gradient_is_zero(facts, name):
            continue
        hits, missed = [], False
        for obs in facts.steps:
            returned = obs.returned.get(name)
            if returned is None or tuple(returned.shape) != tuple(obs.given[name].shape) or \
                    not returned.dtype.is_floating_point:
                missed = True
                break
            tolerance = obs.value_tolerance(returned.dtype)
            if not distinct(obs.expectation.updated[name], obs.given[name], tolerance):
                continue  # the step should not move it here
            if not close(returned.to(F64), obs.given[name], tolerance):
                missed = True
                break
            hits.append(obs.label)
        if hits and not missed:
            unchanged.append(name)
            cases += hits
    if not unchanged:
        return []
    returned_at = facts.source.return_line(chain.train)
    if len(unchanged) == len(chain.parameters):
        return [Match("GK603", (*chain.parameters, "update"), line=returned_at,
                      cases=tuple(dict.fromkeys(cases)),
                      words=dict(what=f"Every weight ({', '.join(chain.parameters)})",
                                 comes_come="comes", it_they="it", was_were="was",
                                 why=f"{chain.train} returns the weights it was given, not "
                                     "the updated ones",
                                 fix="Return the dict (or the tensors) the update wrote to."),
                      details={"edit": {"kind": "missing", "weights": list(chain.parameters)}})]
    matches = []
    for name in unchanged:
        line = update_expression_line(facts, name)
        why = ("its update is computed on this line but never stored in what the function "
               "returns" if line is not None else "nothing updates it before the function "
               "returns")
        matches.append(Match(
            "GK603", (name, "update"), line=line if line is not None else returned_at,
            cases=tuple(dict.fromkeys(cases)),
            words=dict(what=f"weights['{name}']", comes_come="comes", it_they="it",
                       was_were="was", why=why,
                       fix=f"Store weights['{name}'] - learning_rate * dL/d{name} in the dict "
                           "the function returns."),
            details={"edit": {"kind": "missing", "weights": [name]}}))
    return matches


def _is_product(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
        node.func.attr in ("mm", "matmul", "dot")


def affine_line(facts: Facts, function: str, weight: str) -> Optional[int]:
    """The line of ``function`` that computes the pre-activation of the layer of parameter
    ``weight`` (the notebook's hidden layer for V, I; the output layer for W, J): the k-th
    ``product + bias`` for layer k (the last one if there are fewer)."""
    node = facts.source.function(function)
    if node is None:
        return None
    # the forward pass's products: the ones without a transpose in them (the backward pass
    # multiplies by transposes)
    lines = sorted({sub.lineno for sub in ast.walk(node) if _is_product(sub) and not any(
        (isinstance(n, ast.Attribute) and n.attr in ("T", "t", "transpose")) for n in
        ast.walk(sub))})
    if not lines:
        return None
    layer = facts.chain.parameter_layer(weight) if weight in facts.chain.parameters else 2
    return lines[min(layer - 1, len(lines) - 1)]


# --------------------------------------------------------------------------------------------
# GK610: the initial draws
# --------------------------------------------------------------------------------------------

_INIT_SEED = 70318


def _draws(order: tuple[str, ...], draw: Callable[[tuple[int, ...], torch.Generator,
                                                     torch.dtype], Tensor],
           dtype: torch.dtype, transposed: frozenset[str] = frozenset(),
           chain: Chain = NOTEBOOK_CHAIN) -> Weights:
    g = torch.Generator().manual_seed(_INIT_SEED)
    shapes = chain.assignment.parameter_shapes
    out = {}
    for name in order:
        shape = shapes[name]
        if name in transposed:
            out[name] = draw(tuple(reversed(shape)), g, dtype).T
        else:
            out[name] = draw(shape, g, dtype)
    return out


@functools.lru_cache(maxsize=16)
def _init_candidates(chain: Chain = NOTEBOOK_CHAIN
                     ) -> list[tuple[str, str, Callable[[torch.dtype], Weights]]]:
    """(words, kind, draws) simplest first: orders, shape orders, distributions, scales."""
    notebook = tuple(chain.parameters)
    shapes = chain.assignment.parameter_shapes
    if len(notebook) > 5:
        orders: Iterable[tuple[str, ...]] = ()  # too many to try; the rest still are
    else:
        orders = itertools.permutations(notebook)

    def randn(shape, g, dtype):
        return torch.randn(*shape, generator=g, dtype=dtype)

    out: list[tuple[str, str, Callable[[torch.dtype], Weights]]] = []
    for order in orders:
        if order != notebook:
            out.append((f"the same torch.randn draws in the order {', '.join(order)}", "order",
                        lambda d, o=order: _draws(o, randn, d, chain=chain)))
    for name in notebook:
        shape = shapes[name]
        if shape[0] != shape[1]:
            out.append((f"{name} as torch.randn{tuple(reversed(shape))}.T (the shape's order "
                        "reversed)", "shape_order",
                        lambda d, n=name: _draws(notebook, randn, d, frozenset({n}), chain)))
    distributions = (
        ("torch.rand: uniform on [0, 1)", "uniform",
         lambda s, g, d: torch.rand(*s, generator=g, dtype=d)),
        ("uniform on [-1, 1) (2 * torch.rand - 1)", "uniform",
         lambda s, g, d: 2 * torch.rand(*s, generator=g, dtype=d) - 1),
        ("uniform on [-0.5, 0.5) (torch.rand - 0.5)", "uniform",
         lambda s, g, d: torch.rand(*s, generator=g, dtype=d) - 0.5),
        ("zeros", "zeros", lambda s, g, d: torch.zeros(*s, dtype=d)),
        ("ones", "constant", lambda s, g, d: torch.ones(*s, dtype=d)),
    )
    for words, kind, draw in distributions:
        out.append((words, kind, lambda d, f=draw: _draws(notebook, f, d, chain=chain)))
    for scale in (0.01, 0.1, 0.5, 2.0):
        out.append((f"{scale:g} × torch.randn (scaled)", "scaled",
                    lambda d, c=scale: {n: c * w for n, w in
                                        _draws(notebook, randn, d, chain=chain).items()}))
    return out
_DRAW_CALLS = frozenset({"randn", "rand", "zeros", "ones", "empty", "normal", "normal_",
                         "uniform_", "randn_like", "rand_like", "full", "tensor"})


def _first_draw_line(facts: Facts) -> Optional[int]:
    node = facts.source.function(facts.chain.train)
    if node is None:
        return None
    lines = [n.lineno for n in ast.walk(node) if isinstance(n, ast.Call) and
             isinstance(n.func, ast.Attribute) and n.func.attr in _DRAW_CALLS]
    return min(lines) if lines else None


@matcher("GK610")
def _init_draws(facts: Facts) -> list[Match]:
    case = next((c for c in facts.cases if c.id == "init_none"), None)
    call = facts.calls.get("init_none")
    if case is None or call is None or call.error or not call.steps:
        return []
    chain = facts.chain
    parameters = chain.parameters
    shapes = chain.assignment.parameter_shapes
    returned, _ = weights_of(call.steps[0].returned, facts.chain.assignment)
    if returned is None or any(n not in returned or tuple(returned[n].shape) != shapes[n] or
                               not returned[n].dtype.is_floating_point for n in parameters):
        return []
    X, Y = case.X.to(F64), case.Y.to(F64)
    tolerance = facts.tolerances.values(returned[parameters[0]].dtype)
    got = {n: returned[n].to(F64) for n in parameters}

    def step_from(draws: Weights) -> Weights:
        return _sgd(X, Y, {n: w.to(F64) for n, w in draws.items()}, case.learning_rate, chain)

    def same(weights: Weights) -> bool:
        return all(close(got[n], weights[n], tolerance) for n in parameters)

    # the draws can be read from the step only if the step itself is right: the same function
    # handed the notebook's draws (the init_draws probe) must return the reference's step
    probe_case = next((c for c in facts.cases if c.id == "init_draws"), None)
    probe = facts.calls.get("init_draws")
    if probe_case is None or probe is None or probe.error or not probe.steps:
        return []
    handed, _ = weights_of(probe.steps[0].returned, facts.chain.assignment)
    reference = step_from(probe_case.weights or {})
    if handed is None or not all(
            tuple(handed[n].shape) == tuple(reference[n].shape) and
            n in handed and tuple(handed[n].shape) == tuple(reference[n].shape) and
            close(handed[n].to(F64), reference[n], tolerance) for n in parameters):
        return []
    for dtype in (case.X.dtype, F64):
        if same(step_from(_draws(tuple(parameters), lambda s, g, d: torch.randn(
                *s, generator=g, dtype=d), dtype, chain=chain))):
            return []  # the documented draws: nothing to say
    for words, kind, draws in _init_candidates(chain):
        for dtype in dict.fromkeys((case.X.dtype, torch.float32, F64)):
            if same(step_from(draws(dtype))):
                match = Match("GK610", ("init",), line=_first_draw_line(facts),
                              cases=("init_none",), words=dict(what=words),
                              details={"edit": {"kind": "init", "draws": kind,
                                                "words": words}})
                if not chain.is_notebook:
                    draws_words = ", ".join(f"{shapes[n]}" for n in parameters)
                    match.title = f"weights=None draws other initial weights"
                    match.message = (
                        f"With weights=None, {chain.train} draws {words}, not torch.randn with "
                        f"the shapes {draws_words} for {', '.join(parameters)} in that order: "
                        "the weights it returned are one SGD step from those draws on every "
                        f"check. Draw {', '.join(parameters)} with torch.randn in the "
                        "description's order so seeded runs reproduce.")
                return [match]
    return []


# --------------------------------------------------------------------------------------------
# GK620, GK621, GK622: neural_net_predict
# --------------------------------------------------------------------------------------------

def _rebinds_weights_line(facts: Facts) -> Optional[int]:
    """The first line of neural_net_predict that assigns its weights parameter another value."""
    parameter = facts.source.parameter(facts.chain.predict, 1, "weights")
    lines = facts.source.assignments(facts.chain.predict, parameter)
    return lines[0] if lines else None


@matcher("GK620")
def _predict_ignores_weights(facts: Facts) -> list[Match]:
    base = facts.predict_base()
    if base is None or base.P is None or base.P.shape != base.forward.P.shape or \
            close(base.P, base.forward.P, base.tolerance) or not facts.probe_predicts:
        return []
    moved = []
    for name, probe in facts.probe_predicts.items():
        if probe.P is None or probe.P.shape != base.P.shape:
            return []
        if distinct(probe.forward.P, base.forward.P, base.tolerance):
            if not close(probe.P, base.P, base.tolerance):
                return []  # this weight moves the prediction: it is used
            moved.append(name)
    chain = facts.chain
    if len(moved) != len(chain.parameters) or _classes(facts) is not None:
        return []  # rounded predictions move with the weights too, only less often
    line = _rebinds_weights_line(facts)
    where = ""
    if line is not None:
        where = f" (it replaces them at {facts.submission.where(line)})"
    match = Match("GK620", ("P",), line=line if line is not None
                  else facts.source.return_line(chain.predict),
                  cases=tuple(f"probe_predict_{n}" for n in moved), words=dict(where=where),
                  details={"edit": {"kind": "operand", "probes_unchanged": moved}})
    if not chain.is_notebook:
        match.title = f"{chain.predict} ignores its weights argument"
        match.message = (
            f"{chain.predict} returns the same predictions whatever weights it is given: "
            f"moving any of {', '.join(chain.parameters)} changes nothing{where}. Compute "
            f"{chain.output} from the weights argument.")
    return [match]


def _classes(facts: Facts) -> Optional[Match]:
    """GK621's match: every prediction is the reference's P rounded (or, the same numbers,
    thresholded at 0.5) where that differs from P."""
    observations = facts.predicts
    if facts.chain.activations[-1] != "sigmoid":
        return None  # only a probability rounds to a class
    for what, kind, alternative in (
            ("classes 0 and 1 (P rounded, or thresholded at 0.5)", "threshold", torch.round),):
        hits = []
        for obs in observations:
            if obs.P is None or obs.P.shape != obs.forward.P.shape:
                hits = []
                break
            other = alternative(obs.forward.P)
            if not distinct(other, obs.forward.P, obs.tolerance):
                continue
            if not close(obs.P, other, obs.tolerance):
                hits = []
                break
            hits.append(obs.case.id)
        if hits:
            chain = facts.chain
            match = Match("GK621", ("P",), line=facts.source.return_line(chain.predict),
                          cases=tuple(hits), words=dict(what=what),
                          details={"edit": {"kind": kind, "words": what}})
            if not chain.is_notebook:
                out = chain.output
                match.title = f"{chain.predict} returns classes, not probabilities"
                match.message = (
                    f"{chain.predict} returns {what} instead of {out} = "
                    f"{chain.expressions[out]}, the probability. Return {out} itself; compare "
                    "it with 0.5 only where a class is needed.")
            return match
    return None


@matcher("GK621")
def _predict_rounds(facts: Facts) -> list[Match]:
    match = _classes(facts)
    return [match] if match is not None else []


def _forward_variants() -> list[tuple[str, str, str, str, Callable[..., Tensor]]]:
    """(student expression, words, kind, where: "B" (the hidden activation's line), "V" or "W"
    (that layer's product line) or "P" (the return), P from X and the weights), simplest
    first."""
    def forward(first=lambda X, V, I: X @ V + I, hidden=sigmoid,
                second=lambda B, W, J: B @ W + J, out=sigmoid):
        return lambda X, V, I, W, J: out(second(hidden(first(X, V, I)), W, J))

    variants: list[tuple[str, str, str, str, Callable[..., Tensor]]] = [
        ("sigmoid((X @ V + I) @ W + J)", "the hidden sigmoid left out (B = A)", "activation",
         "B", forward(hidden=lambda a: a)),
        ("sigmoid(sigmoid(X @ V - I) @ W + J)", "the bias I subtracted", "sign", "V",
         forward(first=lambda X, V, I: X @ V - I)),
        ("sigmoid(sigmoid(X @ V + I) @ W - J)", "the bias J subtracted", "sign", "W",
         forward(second=lambda B, W, J: B @ W - J)),
        ("(X @ V + I) @ W + J", "both sigmoids left out", "activation", "P",
         forward(hidden=lambda a: a, out=lambda c: c)),
        ("sigmoid(sigmoid(I) @ W + J)", "the product X @ V left out", "drop_factor", "V",
         forward(first=lambda X, V, I: I)),
        ("sigmoid(J)", "the product B @ W left out", "drop_factor", "W",
         forward(second=lambda B, W, J: J)),
        ("sigmoid(X @ V + I)", "the output layer left out (B returned)", "activation", "P",
         lambda X, V, I, W, J: sigmoid(X @ V + I)),
        ("X @ V + I", "A returned", "activation", "P", lambda X, V, I, W, J: X @ V + I),
    ]
    for other in ("V", "W", "J"):
        variants.append((f"sigmoid(sigmoid(X @ V + {other}) @ W + J)",
                         f"{other} in place of the bias I", "operand", "V",
                         lambda X, V, I, W, J, o=other: sigmoid(sigmoid(
                             X @ V + {"V": V, "W": W, "J": J}[o]) @ W + J)))
    for other in ("V", "I", "W"):
        variants.append((f"sigmoid(sigmoid(X @ V + I) @ W + {other})",
                         f"{other} in place of the bias J", "operand", "W",
                         lambda X, V, I, W, J, o=other: sigmoid(sigmoid(X @ V + I) @ W +
                                                                {"V": V, "I": I, "W": W}[o])))
    return variants


_VARIANTS = _forward_variants()


@matcher("GK622")
def _predict_one_edit(facts: Facts) -> list[Match]:
    observations = facts.predicts + list(facts.probe_predicts.values())
    if not facts.predicts or any(o.P is None for o in facts.predicts):
        return []
    if not facts.chain.is_notebook:
        return _predict_one_edit_per_layer(facts, observations)
    for student, words, kind, where, compute in _VARIANTS:
        hits = []
        for obs in observations:
            weights = {n: w.to(F64) for n, w in (obs.case.weights or {}).items()}
            if obs.P is None or len(weights) != 4:
                hits = []
                break
            try:
                other = compute(obs.forward.X, weights["V"], weights["I"], weights["W"],
                                weights["J"])
            except RuntimeError:
                hits = []
                break
            if not distinct(other, obs.forward.P, obs.tolerance):
                continue
            if not close(obs.P, other, obs.tolerance):
                hits = []
                break
            hits.append(obs.case.id)
        if hits:
            if where == "B":
                line = facts.source.assignment_line(facts.chain.predict, "B")
            elif where in ("V", "W"):
                line = affine_line(facts, facts.chain.predict, where)
            else:
                line = None
            return [Match("GK622", ("P",), line=line if line is not None
                          else facts.source.return_line(facts.chain.predict), cases=tuple(hits),
                          words=dict(student=student, words=words),
                          details={"edit": {"kind": kind, "student": student,
                                            "words": words}})]
    return []


def _forward_edits(chain: Chain) -> list[tuple[str, str, str, int, dict]]:
    """(student's edit, words, kind, layer, overrides of the forward pass) for a description
    other than the notebook's, layer by layer from the input, simplest first."""
    out: list[tuple[str, str, str, int, dict]] = []
    for k in range(1, chain.depth + 1):
        weight, bias = chain.layer_parameters(k)
        z, a = chain.of_layer("pre_activation", k), chain.of_layer("activation", k)
        below = "X" if k == 1 else chain.of_layer("activation", k - 1)
        activation = chain.activations[k - 1]
        if activation != "identity" and k < chain.depth:  # the output's: GK402
            out.append((f"{a} = {z}", f"the {activation} of {chain.layer_words(k)} left out",
                        "activation", k, {a: lambda v, z=z: v[z]}))
        out.append((f"{z} = {below} @ {weight} - {bias}",
                    f"the bias {bias} subtracted at {chain.layer_words(k)}", "sign", k,
                    {z: lambda v, b=below, w=weight, c=bias: v[b] @ v[w] - v[c]}))
        out.append((f"{z} = {below} @ {weight}", f"the bias {bias} left out at "
                    f"{chain.layer_words(k)}", "drop_factor", k,
                    {z: lambda v, b=below, w=weight: v[b] @ v[w]}))
    return out


def _predict_one_edit_per_layer(facts: Facts, observations: list) -> list[Match]:
    """GK622 for any description: the prediction is the forward pass with one edit at one
    layer (an activation left out, a bias subtracted or left out) on every call."""
    from gradkit.diagnosis.chain import rerun

    chain = facts.chain
    for student, words, kind, layer, overrides in _forward_edits(chain):
        hits = []
        for obs in observations:
            weights = {n: w.to(F64) for n, w in (obs.case.weights or {}).items()}
            if obs.P is None or set(weights) != set(chain.parameters):
                hits = []
                break
            try:
                other = rerun(chain, {"X": obs.forward.X, **weights}, overrides)[chain.output]
            except RuntimeError:
                hits = []
                break
            if not distinct(other, obs.forward.P, obs.tolerance):
                continue
            if other.shape != obs.P.shape or not close(obs.P, other, obs.tolerance):
                hits = []
                break
            hits.append(obs.case.id)
        if hits:
            weight = chain.layer_parameters(layer)[0]
            line = affine_line(facts, chain.predict, weight)
            forward = "; ".join(f"{q} = {chain.expressions[q]}" for q in chain.forward)
            match = Match("GK622", ("P",), line=line if line is not None
                          else facts.source.return_line(chain.predict), cases=tuple(hits),
                          words=dict(student=student, words=words),
                          details={"edit": {"kind": kind, "student": student, "words": words},
                                   "layer": layer})
            match.title = f"{chain.predict} is one edit away from the forward pass"
            match.message = (f"{chain.predict} returns the forward pass with {student} on "
                             f"every call, where it should compute {forward}: {words}.")
            return [match]
    return []
