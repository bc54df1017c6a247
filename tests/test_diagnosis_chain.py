"""The chain diagnosis reads, built from the step table: for the notebook, exactly the tables the
notebook catalogue was written against; for every description, one of each per layer."""

from __future__ import annotations

import pytest
import torch

from gradkit.diagnosis.chain import Chain, rerun
from reference.assignment import NOTEBOOK, load_assignment
from reference.network import GRADIENT_NAMES, run, sigmoid

# The notebook's tables as the diagnosis modules had them as module constants.
PARAMETERS = ("V", "I", "W", "J")
FORWARD = ("A", "B", "C", "P")
GRADIENT_OF = {"V": "dLdV", "I": "dLdI", "W": "dLdW", "J": "dLdJ"}
EXPRESSIONS = {
    "A": "X @ V + I", "B": "sigmoid(A)", "C": "B @ W + J", "P": "sigmoid(C)",
    "dLdP": "P - Y", "dPdC": "sigmoid(C, deriv=True)", "dLdC": "dLdP * dPdC",
    "dLdW": "B.T @ dLdC", "dLdJ": "dLdC.sum(dim=0, keepdim=True)", "dLdB": "dLdC @ W.T",
    "dBdA": "sigmoid(A, deriv=True)", "dLdA": "dLdB * dBdA", "dLdV": "X.T @ dLdA",
    "dLdI": "dLdA.sum(dim=0, keepdim=True)",
    "update.V": "V - learning_rate * dLdV", "update.I": "I - learning_rate * dLdI",
    "update.W": "W - learning_rate * dLdW", "update.J": "J - learning_rate * dLdJ",
}
STEP_INPUTS = {
    "A": ("X", "V", "I"), "B": ("A",), "C": ("B", "W", "J"), "P": ("C",), "dLdP": ("P", "Y"),
    "dPdC": ("C",), "dLdC": ("dLdP", "dPdC"), "dLdW": ("B", "dLdC"), "dLdJ": ("dLdC",),
    "dLdB": ("dLdC", "W"), "dBdA": ("A",), "dLdA": ("dLdB", "dBdA"), "dLdV": ("X", "dLdA"),
    "dLdI": ("dLdA",),
}
DOWNSTREAM = {
    **{name: PARAMETERS for name in ("A", "B", "C", "P", "dLdP", "dPdC", "dLdC")},
    "dLdW": ("W",), "dLdJ": ("J",), "dLdB": ("V", "I"), "dBdA": ("V", "I"), "dLdA": ("V", "I"),
    "dLdV": ("V",), "dLdI": ("I",), **{f"update.{p}": (p,) for p in PARAMETERS},
}
CHARGED = {
    "gradient.W": FORWARD + ("dLdP", "dPdC", "dLdC", "dLdW"),
    "gradient.J": FORWARD + ("dLdP", "dPdC", "dLdC", "dLdJ"),
    "gradient.V": FORWARD + ("dLdB", "dBdA", "dLdA", "dLdV"),
    "gradient.I": FORWARD + ("dLdB", "dBdA", "dLdA", "dLdI"),
    "update": tuple(f"update.{p}" for p in PARAMETERS),
}
FORMULAS = {
    "A": ("affine", "X", "V", "I"), "C": ("affine", "B", "W", "J"),
    "B": ("activation", "A"), "P": ("activation", "C"),
    "dLdP": ("loss", "P", "Y"),
    "dPdC": ("derivative", "C", "P"), "dBdA": ("derivative", "A", "B"),
    "dLdC": ("elementwise", "dLdP", "dPdC"), "dLdA": ("elementwise", "dLdB", "dBdA"),
    "dLdW": ("left_transposed", "B", "dLdC"), "dLdV": ("left_transposed", "X", "dLdA"),
    "dLdB": ("right_transposed", "dLdC", "W"),
    "dLdJ": ("sum_rows", "dLdC"), "dLdI": ("sum_rows", "dLdA"),
    **{f"update.{p}": ("update", p, GRADIENT_OF[p]) for p in PARAMETERS},
}
DOCUMENTED = {
    "A": "{X} @ {V} + {I}", "B": "sigmoid({A})", "C": "{B} @ {W} + {J}", "P": "sigmoid({C})",
    "dLdP": "{P} - {Y}", "dPdC": "sigmoid({C}, deriv=True)", "dLdC": "{dLdP} * {dPdC}",
    "dLdW": "{B}.T @ {dLdC}", "dLdJ": "{dLdC}.sum(dim=0, keepdim=True)",
    "dLdB": "{dLdC} @ {W}.T", "dBdA": "sigmoid({A}, deriv=True)", "dLdA": "{dLdB} * {dBdA}",
    "dLdV": "{X}.T @ {dLdA}", "dLdI": "{dLdA}.sum(dim=0, keepdim=True)",
    **{f"update.{p}": f"{{{p}}} - learning_rate * {{{GRADIENT_OF[p]}}}" for p in PARAMETERS},
}


def test_the_notebook_chain_is_the_notebook_catalogue_s_tables():
    chain = Chain.of(NOTEBOOK)
    assert chain.is_notebook
    assert (chain.train, chain.predict) == ("train_neural_net", "neural_net_predict")
    assert chain.parameters == PARAMETERS
    assert chain.forward == FORWARD
    assert chain.gradient_names == GRADIENT_NAMES
    assert chain.gradient_of == GRADIENT_OF
    assert chain.loss_linear == frozenset(GRADIENT_NAMES) - {"dPdC", "dBdA"}
    assert chain.derivatives == frozenset({"dPdC", "dBdA"})
    assert chain.expressions == EXPRESSIONS
    assert chain.documented == DOCUMENTED
    assert chain.formulas == FORMULAS
    assert {s.name: s.inputs for s in chain.steps} == STEP_INPUTS
    assert [s.name for s in chain.steps] == list(FORWARD + GRADIENT_NAMES)
    assert chain.step_names == FORWARD + GRADIENT_NAMES + tuple(f"update.{p}" for p in PARAMETERS)
    assert chain.downstream == DOWNSTREAM
    assert chain.charged == CHARGED
    assert chain.quantity_words == {p: f"dL/d{p}" for p in PARAMETERS}
    assert [s.name for s in chain.steps if s.scaled] == ["dLdP"]
    assert Chain.of(NOTEBOOK) is chain  # built once


def test_the_notebook_chain_computes_the_notebook_s_steps():
    g = torch.Generator().manual_seed(3)
    X, Y = torch.randn(5, 3, generator=g, dtype=torch.float64), \
        torch.rand(5, 1, generator=g, dtype=torch.float64)
    weights = {"V": torch.randn(3, 4, generator=g, dtype=torch.float64),
               "I": torch.randn(1, 4, generator=g, dtype=torch.float64),
               "W": torch.randn(4, 1, generator=g, dtype=torch.float64),
               "J": torch.randn(1, 1, generator=g, dtype=torch.float64)}
    values = rerun(Chain.of(NOTEBOOK), {"X": X, "Y": Y, **weights})
    A = X @ weights["V"] + weights["I"]
    B = sigmoid(A)
    C = B @ weights["W"] + weights["J"]
    P = sigmoid(C)
    dLdC = (P - Y) * sigmoid(C, deriv=True)
    dLdA = (dLdC @ weights["W"].T) * sigmoid(A, deriv=True)
    for name, want in (("A", A), ("B", B), ("C", C), ("P", P), ("dLdC", dLdC),
                       ("dLdW", B.T @ dLdC), ("dLdA", dLdA), ("dLdV", X.T @ dLdA),
                       ("dLdI", dLdA.sum(0, keepdim=True))):
        assert torch.equal(values[name], want), name


@pytest.mark.parametrize("name", ["tanh_bce", "relu_mse", "logistic"])
def test_every_description_has_one_chain_step_of_each_kind_per_layer(name):
    a = load_assignment(name)
    chain = Chain.of(a)
    assert not chain.is_notebook
    assert chain.train == "train" and chain.predict == "predict"
    for k in range(1, a.depth + 1):
        for kind in ("pre_activation", "activation", "derivative", "upstream", "delta",
                     "weight", "bias"):
            assert chain.layer_of[chain.of_layer(kind, k)] in (k, k + 1)
    trace = run(a, torch.randn(6, a.inputs, dtype=torch.float64),
                torch.rand(6, a.outputs, dtype=torch.float64),
                {p: torch.randn(*s, dtype=torch.float64) for p, s in a.parameter_shapes.items()})
    values = rerun(chain, {"X": trace["X"], "Y": trace["Y"],
                           **{p: trace[a.parameter_ids[p]] for p in a.parameter_names}})
    for step in chain.steps:
        assert torch.equal(values[step.name], trace[step.id]), step.name
    if a.loss == "bce":  # the fused output: dL/dZ of the output layer is P - Y
        delta = chain.of_layer("delta", a.depth)
        assert chain.formulas[delta] == ("loss", chain.output, "Y")
        assert chain.expressions[delta] == f"{chain.output} - Y"
    if a.loss == "mse":
        assert chain.expressions[chain.name(f"dLdA{a.depth}")] == "2 * (P - Y) / n"
