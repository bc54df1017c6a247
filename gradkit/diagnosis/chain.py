"""The backward pass as diagnosis reads it, in the course's names, for any assignment.

``Chain.of(assignment)`` is built once per description from ``reference.steps.step_table``
and holds every table the diagnosis modules read: the parameters, the forward quantities, the
steps of the backward pass and the update with their inputs and how each is computed, the
formula kind of each step and its documented form, which parameters a wrong step reaches,
which steps each check is charged with, the layer of each step and the student's function
names. Everything is keyed by the course's names (the notebook's ``dLdC``, a generic
description's ``dLdZ2``), so a message can name what the student was asked to compute.

For the notebook's description the tables are exactly those the notebook catalogue was written
against (``tests/test_diagnosis_chain.py`` pins them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

from torch import Tensor

from reference.assignment import Assignment
from reference.steps import LOSS_LINEAR as LOSS_LINEAR_KINDS
from reference.steps import downstream_parameters, step_table


@dataclass(frozen=True)
class ChainStep:
    """One step of the chain: its course name, generic id, layer and kind, its inputs (course
    names; ``learning_rate`` for an update), how it is computed and the scale of its rounding
    (``reference.steps.Step``; None where rounding is relative to 1)."""

    name: str
    id: str
    layer: int
    kind: str
    inputs: tuple[str, ...]
    compute: Callable[..., Tensor]
    magnitude: Optional[Callable[..., Tensor]]
    #: the step reads Y: its value carries the loss convention's factor (dL/dP, a fused bce
    #: dL/dZ of the output), which localisation multiplies in
    scaled: bool = False


_DERIVATIVE_FORMS = {
    "sigmoid": "sigmoid({z}, deriv=True)", "tanh": "1 - tanh({z})**2", "relu": "({z} > 0)",
    "identity": "1",
}
_ACTIVATION_FORMS = {"sigmoid": "sigmoid({z})", "tanh": "tanh({z})", "relu": "relu({z})",
                     "identity": "{z}"}
_LOSS_FORMS = {"half_sse": "{P} - {Y}", "sse": "2 * ({P} - {Y})", "mse": "2 * ({P} - {Y}) / n",
               "bce": "({P} - {Y}) / ({P} * (1 - {P}))"}

#: The steps whose formula kind and documented form depend on nothing but their inputs.
_PLAIN_FORMS = {
    "pre_activation": ("affine", "{%s} @ {%s} + {%s}"),
    "pre_activation_gradient": ("elementwise", "{%s} * {%s}"),
    "loss_fused": ("loss", "{%s} - {%s}"),
    "weight_gradient": ("left_transposed", "{%s}.T @ {%s}"),
    "bias_gradient": ("sum_rows", "{%s}.sum(dim=0, keepdim=True)"),
    "input_gradient": ("right_transposed", "{%s} @ {%s}.T"),
}


@dataclass(frozen=True, eq=False)  # one per assignment: compared (and hashed) by identity
class Chain:
    """Every table of the diagnosis, for one assignment, in the course's names."""

    assignment: Assignment
    is_notebook: bool
    train: str
    predict: str
    loss: str
    #: activation of each layer, layer 1 first
    activations: tuple[str, ...]
    parameters: tuple[str, ...]
    #: Z1, A1, ..., ZL, AL under the course's names (the notebook's A, B, C, P)
    forward: tuple[str, ...]
    #: the backward pass's steps, in the order the reference computes them (dLdP ... dLdI)
    gradient_names: tuple[str, ...]
    #: the forward and backward steps, each with its inputs and compute
    steps: tuple[ChainStep, ...]
    #: every step name, then update.<parameter> for every parameter
    step_names: tuple[str, ...]
    gradient_of: dict[str, str]
    loss_linear: frozenset[str]
    derivatives: frozenset[str]
    #: formula kind and operands of every step (``edits.candidates``)
    formulas: dict[str, tuple[str, ...]]
    #: each step written with {Q} placeholders for the student's names
    documented: dict[str, str]
    #: the same, plainly (for messages)
    expressions: dict[str, str]
    downstream: dict[str, tuple[str, ...]]
    charged: dict[str, tuple[str, ...]]
    quantity_words: dict[str, str]
    layer_of: dict[str, int]
    #: generic id of every name (X, Y, parameters, steps), and back
    ids: dict[str, str]
    names: dict[str, str]

    # -- building ------------------------------------------------------------------------------

    @staticmethod
    def of(assignment: Assignment) -> "Chain":
        """The chain of ``assignment`` (built once per description)."""
        return _build(assignment)

    # -- reading -------------------------------------------------------------------------------

    @functools.cached_property
    def step(self) -> dict[str, ChainStep]:
        return {s.name: s for s in self.steps}

    @property
    def depth(self) -> int:
        return len(self.activations)

    @property
    def output(self) -> str:
        """The prediction's name (the notebook's P)."""
        return self.forward[-1]

    def name(self, step_id: str) -> str:
        """The course's name of a generic id (``dLdZ2`` -> ``dLdC`` in the notebook)."""
        return self.names[step_id]

    def layer_parameters(self, layer: int) -> tuple[str, str]:
        """(weight, bias) of a layer (1-based)."""
        spec = self.assignment.layers[layer - 1]
        return spec.weight, spec.bias

    def parameter_layer(self, parameter: str) -> int:
        return self.assignment.parameter_layer(parameter)

    def of_layer(self, kind: str, layer: int) -> str:
        """The name of a layer's step of a kind: ``pre_activation``, ``activation``,
        ``derivative`` (dA{k}dZ{k}), ``upstream`` (dLdA{k}), ``delta`` (dLdZ{k}), ``weight``
        (dLdW{k}), ``bias`` (dLdb{k})."""
        step_id = {"pre_activation": f"Z{layer}", "activation": f"A{layer}",
                   "derivative": f"dA{layer}dZ{layer}", "upstream": f"dLdA{layer}",
                   "delta": f"dLdZ{layer}", "weight": f"dLdW{layer}",
                   "bias": f"dLdb{layer}"}[kind]
        return self.names[step_id]

    def layer_words(self, layer: int) -> str:
        """'the output layer' (of a one-layer network, 'the only layer') or 'layer k' (the
        hidden layers counted from the input)."""
        if layer == self.depth:
            return "the output layer" if self.depth > 1 else "the only layer"
        return f"layer {layer}"

    @property
    def multi_row_excluded(self) -> frozenset[int]:
        """Batch sizes that leave two quantities' shapes alike (1, the inputs, every layer's
        units): a call of another size tells every quantity apart by shape."""
        return frozenset({1, self.assignment.inputs, *(l.units for l in self.assignment.layers)})


@functools.lru_cache(maxsize=32)
def _build(assignment: Assignment) -> Chain:
    table = step_table(assignment)
    a = assignment
    names: dict[str, str] = {"X": "X", "Y": "Y"}
    for k, layer in enumerate(a.layers, start=1):
        names[f"W{k}"], names[f"b{k}"] = layer.weight, layer.bias
    for s in table:
        if s.kind != "update":
            names[s.id] = s.name
    ids = {name: step_id for step_id, name in names.items()}
    parameters = a.parameter_names
    forward = tuple(s.name for s in table if s.is_forward)
    backward = tuple(s.name for s in table if not s.is_forward and s.kind != "update")

    def n(i: str) -> str:
        return names.get(i, i)

    steps = tuple(ChainStep(s.name, s.id, s.layer, s.kind, tuple(n(i) for i in s.inputs),
                            s.compute, s.magnitude, "Y" in s.inputs)
                  for s in table if s.kind != "update")
    gradient_of = {p: names["dLd" + a.parameter_ids[p]] for p in parameters}
    step_names = tuple(s.name for s in steps) + tuple(f"update.{p}" for p in parameters)
    loss_linear = frozenset(s.name for s in table
                            if s.kind in LOSS_LINEAR_KINDS and s.kind != "update")
    derivatives = frozenset(s.name for s in table if s.kind == "activation_derivative")

    formulas: dict[str, tuple[str, ...]] = {}
    documented: dict[str, str] = {}
    L = a.depth
    for s in table:
        k = s.layer
        act = a.layers[k - 1].activation
        ins = tuple(n(i) for i in s.inputs)
        if s.kind in _PLAIN_FORMS:
            # bce's fused output gradient (P - Y) is written as a loss's
            fused = s.kind == "pre_activation_gradient" and "Y" in s.inputs
            kind, form = _PLAIN_FORMS["loss_fused" if fused else s.kind]
            formulas[s.name] = (kind, *ins)
            documented[s.name] = form % ins
        elif s.kind == "activation":
            formulas[s.name] = ("activation", *ins)
            documented[s.name] = _ACTIVATION_FORMS[act].format(z="{%s}" % ins[0])
        elif s.kind == "loss_gradient":
            formulas[s.name] = ("loss", *ins)
            documented[s.name] = _LOSS_FORMS[a.loss].format(P="{%s}" % ins[0],
                                                            Y="{%s}" % ins[1])
        elif s.kind == "activation_derivative":
            formulas[s.name] = ("derivative", ins[0], names[f"A{k}"])
            documented[s.name] = _DERIVATIVE_FORMS[act].format(z="{%s}" % ins[0])
        elif s.kind == "update":
            p = s.parameter
            key = f"update.{p}"
            formulas[key] = ("update", p, gradient_of[p])
            documented[key] = "{%s} - learning_rate * {%s}" % (p, gradient_of[p])
    expressions = {k: v.replace("{", "").replace("}", "") for k, v in documented.items()}

    downstream = {s.name: downstream_parameters(a, s.id) for s in table if s.kind != "update"}
    downstream.update({f"update.{p}": (p,) for p in parameters})

    charged: dict[str, tuple[str, ...]] = {}
    for p in parameters:
        k = a.parameter_layer(p)
        own = [f"dLdA{k}", f"dA{k}dZ{k}", f"dLdZ{k}", "dLd" + a.parameter_ids[p]]
        charged[f"gradient.{p}"] = forward + tuple(names[i] for i in own)
    charged["update"] = tuple(f"update.{p}" for p in parameters)

    layer_of = {s.name: s.layer for s in table if s.kind != "update"}
    layer_of.update({f"update.{p}": a.parameter_layer(p) for p in parameters})
    layer_of.update({p: a.parameter_layer(p) for p in parameters})

    return Chain(
        assignment=a, is_notebook=a.is_notebook, train=a.functions.train,
        predict=a.functions.predict, loss=a.loss,
        activations=tuple(layer.activation for layer in a.layers), parameters=parameters,
        forward=forward, gradient_names=backward, steps=steps, step_names=step_names,
        gradient_of=gradient_of, loss_linear=loss_linear, derivatives=derivatives,
        formulas=formulas, documented=documented, expressions=expressions,
        downstream=downstream, charged=charged,
        quantity_words={p: f"dL/d{p}" for p in parameters}, layer_of=layer_of,
        ids=ids, names=names)


def rerun(chain: Chain, values: dict[str, Tensor],
          overrides: Optional[dict[str, Callable[[dict[str, Tensor]], Tensor]]] = None,
          scale: float = 1.0) -> dict[str, Tensor]:
    """Every step of the chain from X, Y and the parameters in ``values`` (course names), with
    the steps named in ``overrides`` computed by their function of the values so far instead
    (a mistake planted at one step, the rest done right). ``scale`` multiplies the steps that
    read Y (a loss convention's factor). Without Y, the forward pass only. Returns every value
    by name."""
    out = dict(values)
    overrides = overrides or {}
    for step in chain.steps:
        if "Y" not in out and step.kind not in ("pre_activation", "activation"):
            break  # a prediction: the forward pass only
        if step.name in overrides:
            out[step.name] = overrides[step.name](out)
            continue
        result = step.compute(*(out[i] for i in step.inputs))
        out[step.name] = result * scale if step.scaled and scale != 1.0 else result
    return out
