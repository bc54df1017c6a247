"""gradkit.diagnosis.intermediates: finding the notebook's intermediates, comparing them, following the steps.

The first half builds observations by hand from the reference (no student code runs) to pin the
step-by-step localisation and the name/value matching; the second half runs real submissions
through the real sandbox and reads ``Report.intermediates``.
"""

from __future__ import annotations

import ast

import pytest
import torch

from conftest import EXAMPLES
from gradkit import check
from gradkit.cases import build_cases
from gradkit.expected import expect_step
from gradkit.diagnosis.intermediates import (STEP_NAMES, SourceIndex, credit, find, fit_factor,
                                   localise_call, observe)
from gradkit.loader import Submission
from gradkit.plan import StepResult, Value
from gradkit.report import Tolerance
from gradkit.tolerances import Tolerances
from reference.network import sgd_update

F64 = torch.float64
CASES = {case.id: case for case in build_cases()}


def observation(captured: dict[str, torch.Tensor], case_id: str = "batch5",
                returned: dict[str, torch.Tensor] | None = None,
                function: str = "train_neural_net"):
    """A call of train_neural_net on a battery case that held ``captured`` and returned
    ``returned`` (the reference's update by default)."""
    case = CASES[case_id]
    exp = expect_step(case.X, case.Y, case.weights, case.learning_rate)
    if returned is None:
        returned = sgd_update(case.weights, exp.gradients, case.learning_rate)
    result = StepResult(
        returned=Value("dict", items={n: Value("array", tensor=t) for n, t in returned.items()}),
        captured={function: {n: Value("array", tensor=t) for n, t in captured.items()}})
    return observe(case, 0, exp, result, case.weights, returned, Tolerances())


def reference_values(case_id: str = "batch5") -> dict[str, torch.Tensor]:
    case = CASES[case_id]
    exp = expect_step(case.X, case.Y, case.weights, case.learning_rate)
    fwd = exp.forward
    return {"A": fwd.A, "B": fwd.B, "C": fwd.C, "P": fwd.P, **exp.backward.as_dict()}


# --------------------------------------------------------------------------------------------
# finding by name and by value
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variable", ["dLdW", "dL_dW", "dl_dw", "grad_W", "dW", "dLoss_dW"])
def test_common_variants_of_a_name_are_found_by_name(variable):
    values = reference_values()
    obs = observation({variable: values["dLdW"], "unrelated": torch.zeros(2, 2, dtype=F64)})
    found = find([obs])
    assert found["dLdW"].variable == variable and found["dLdW"].by == "name"
    assert "dLdV" not in found  # nothing holds it


def test_other_names_are_found_by_value_and_shapes_tell_them_apart():
    values = reference_values()
    held = {"error": values["dLdP"], "grad_out": values["dLdC"], "delta": values["dLdA"],
            "upstream": values["dLdB"], "g_in": values["dLdV"], "wrong": values["dLdW"] * 3}
    found = find([observation(held)])
    assert {q: f.variable for q, f in found.items() if f.by == "value"} == {
        "dLdP": "error", "dLdC": "grad_out", "dLdB": "upstream", "dLdA": "delta",
        "dLdV": "g_in"}
    assert "dLdW" not in found  # a wrong value under an unknown name cannot be matched


def test_value_matching_uses_a_multi_row_call():
    """On one row, dLdI and dLdA have the same shape and values; on five rows they do not."""
    values = reference_values("batch5")
    one_row = observation({"x": reference_values("notebook_row")["dLdA"]}, "notebook_row")
    five_rows = observation({"x": values["dLdA"]})
    found = find([one_row, five_rows])
    assert found["dLdA"].variable == "x" and "dLdI" not in found


def test_a_transposed_gradient_under_its_own_name_is_still_found():
    values = reference_values()
    found = find([observation({"dLdW": values["dLdW"].T})])
    assert found["dLdW"].by == "name"


# --------------------------------------------------------------------------------------------
# localisation: each step from the student's own upstream values
# --------------------------------------------------------------------------------------------

def _planted(dLdC_wrong: bool = True, drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The intermediates of a student whose dLdC is dLdP (no dP/dC), everything after it right
    from that wrong dLdC."""
    v = reference_values()
    case = CASES["batch5"]
    X, W = case.X.to(F64), case.weights["W"].to(F64)
    dLdC = v["dLdP"] if dLdC_wrong else v["dLdC"]
    dLdB = dLdC @ W.T
    dLdA = dLdB * v["dBdA"]
    held = {**{k: v[k] for k in ("A", "B", "C", "P", "dLdP", "dPdC", "dBdA")}, "dLdC": dLdC,
            "dLdW": v["B"].T @ dLdC, "dLdJ": dLdC.sum(0, keepdim=True), "dLdB": dLdB,
            "dLdA": dLdA, "dLdV": X.T @ dLdA, "dLdI": dLdA.sum(0, keepdim=True)}
    return {k: t for k, t in held.items() if k not in drop}


def _returned(held: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    case = CASES["batch5"]
    grads = {"V": held["dLdV"], "I": held["dLdI"], "W": held["dLdW"], "J": held["dLdJ"]}
    return {n: case.weights[n] - case.learning_rate * grads[n] for n in grads}


def test_the_wrong_step_is_named_not_the_cascade_below_it():
    held = _planted()
    obs = observation(held, returned=_returned(held))
    checks = localise_call(obs, find([obs]))
    wrong = [s for s in STEP_NAMES if checks[s].status == "wrong"]
    assert wrong == ["dLdC"]
    assert all(checks[s].status == "right" for s in STEP_NAMES if s != "dLdC")


def test_a_step_the_function_did_not_hold_is_folded_into_the_next():
    held = _planted(drop=("dLdC",))
    obs = observation(held, returned=_returned(_planted()))
    checks = localise_call(obs, find([obs]))
    assert checks["dLdC"].status == "unknown"
    wrong = [s for s in STEP_NAMES if checks[s].status == "wrong"]
    # dLdW, dLdJ and dLdB all start from the missing dLdC: each says the mistake may be there
    assert wrong == ["dLdW", "dLdJ", "dLdB"]
    assert all(checks[s].span == ("dLdC",) for s in wrong)


def test_a_right_submission_has_every_step_right():
    held = _planted(dLdC_wrong=False)
    obs = observation(held)
    checks = localise_call(obs, find([obs]))
    assert {c.status for c in checks.values()} == {"right"}


def test_a_wrong_update_is_a_step_of_its_own():
    held = _planted(dLdC_wrong=False)
    case = CASES["batch5"]
    ascent = {n: case.weights[n] + case.learning_rate * g
              for n, g in (("V", held["dLdV"]), ("I", held["dLdI"]), ("W", held["dLdW"]),
                           ("J", held["dLdJ"]))}
    obs = observation(held, returned=ascent)
    checks = localise_call(obs, find([obs]))
    assert [s for s in STEP_NAMES if checks[s].status == "wrong"] == \
        ["update.V", "update.I", "update.W", "update.J"]


def test_credit_follows_the_steps():
    held = _planted()
    obs = observation(held, returned=_returned(held))
    checks = localise_call(obs, find([obs]))
    # dLdC is charged to W and J; V, I and the update were computed right from it
    assert credit(checks, "gradient.W") is None and credit(checks, "gradient.J") is None
    assert credit(checks, "gradient.V") == ("dLdC",)
    assert credit(checks, "gradient.I") == ("dLdC",)
    assert credit(checks, "update") == ("dLdC",)


def test_no_credit_without_the_students_own_gradient():
    held = _planted(drop=("dLdV",))
    obs = observation(held, returned=_returned(_planted()))
    checks = localise_call(obs, find([obs]))
    assert credit(checks, "gradient.V") is None


# --------------------------------------------------------------------------------------------
# fitting a factor
# --------------------------------------------------------------------------------------------

F64_TOL = Tolerance(dtype="float64", rtol=1e-6, atol=1e-10)
F32_TOL = Tolerance(dtype="float32", rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("factor", [2.0, -1.0, 0.2, 0.01])
def test_an_exact_multiple_is_fitted_exactly(factor):
    g = torch.Generator().manual_seed(3)
    expected = torch.randn(5, 4, generator=g, dtype=F64)
    fit = fit_factor([(factor * expected, expected, F64_TOL)])
    assert fit is not None and fit.exact
    assert fit.factor == pytest.approx(factor, rel=1e-12) and fit.residual < 1e-12


def test_a_value_that_is_no_multiple_is_not_exact():
    g = torch.Generator().manual_seed(4)
    expected = torch.randn(5, 4, generator=g, dtype=F64)
    actual = 2 * expected + 0.05 * torch.randn(5, 4, generator=g, dtype=F64)
    fit = fit_factor([(actual, expected, F64_TOL)])
    assert fit is not None and not fit.exact and fit.residual > 1e-3


def test_float64_calls_pin_the_factor_and_float32_rounding_does_not_pull_it_off():
    g = torch.Generator().manual_seed(5)
    exact = torch.randn(3, 4, generator=g, dtype=F64)
    rounded = torch.randn(200, 4, generator=g, dtype=F64) * 100
    noisy = (0.01 * rounded).to(torch.float32).to(F64)
    fit = fit_factor([(0.01 * exact, exact, F64_TOL), (noisy, rounded, F32_TOL)])
    assert fit is not None and fit.exact and fit.factor == pytest.approx(0.01, rel=1e-9)


def test_nothing_to_fit():
    zero = torch.zeros(2, 2, dtype=F64)
    assert fit_factor([]) is None
    assert fit_factor([(zero, zero, F64_TOL)]) is None
    assert fit_factor([(torch.ones(2, 1, dtype=F64), torch.ones(1, 2, dtype=F64), F64_TOL)]) is None


# --------------------------------------------------------------------------------------------
# the student's source
# --------------------------------------------------------------------------------------------

SOURCE = '''\
import torch
I = torch.zeros(1, 4)
_seen = []

def train_neural_net(X, Y, weights=None, lr=1.0):
    X /= 2
    _seen.append(1)
    A = X @ weights['V'] + I
    dLdV = X.T @ A
    lr = 0.5
    weights['V'] = weights['V'] - lr * dLdV
    return {'V': weights['V'],
            'I': weights['I'] - lr * A.sum(0)}
'''


def _index(source: str = SOURCE) -> SourceIndex:
    from pathlib import Path

    tree = ast.parse(source)
    return SourceIndex(Submission(path=Path("student.py"), kind="py", source=source, sha256="",
                                  size=len(source), tree=tree))


def test_source_lines_of_assignments_updates_globals_and_state():
    index = _index()
    assert index.assignment_line("train_neural_net", "dLdV") == 9
    assert index.update_line("V", "dLdV") == 11
    assert index.update_line("I", None) == 13  # the dict literal's value for 'I'
    assert index.global_reads("train_neural_net", "I") == [8]
    assert index.global_reads("train_neural_net", "A") == []  # a local
    assert index.module_assignment("I") == 2
    assert index.in_place_lines("train_neural_net", "X") == [6]
    assert index.state_write_line("train_neural_net") == 7
    assert index.assignment_line("train_neural_net", "lr") == 10
    assert index.parameter("train_neural_net", 3, "learning_rate") == "lr"


@pytest.mark.parametrize("expression, shape", [
    ("X.T @ dLdA", (3, 4)),
    ("torch.mm(dLdA.transpose(0, 1), X)", (4, 3)),
    ("dLdA.t().mm(X)", (4, 3)),
    ("torch.matmul(B.T, dLdC)", (4, 1)),
    ("dLdC.T @ B", (1, 4)),
    ("dLdC * 2", None),
])
def test_shape_of_a_product_from_the_names_in_it(expression, shape):
    shapes = {"X": (5, 3), "dLdA": (5, 4), "B": (5, 4), "dLdC": (5, 1)}
    node = ast.parse(expression, mode="eval").body
    assert _index().shape_of(node, shapes) == shape


# --------------------------------------------------------------------------------------------
# real submissions through the sandbox: Report.intermediates
# --------------------------------------------------------------------------------------------

def _intermediates(path, sandbox):
    report = check(path, sandbox=sandbox)
    assert report.error is None, report.error
    return report, {i.name: i for i in report.intermediates}


def test_the_notebook_names_are_found_and_match(sandbox):
    report, found = _intermediates(EXAMPLES / "correct.py", sandbox)
    assert list(found) == ["dLdP", "dPdC", "dLdC", "dLdW", "dLdJ", "dLdB", "dBdA", "dLdA",
                           "dLdV", "dLdI"]
    for name, result in found.items():
        assert result.status == "match" and result.found_as == name and \
            result.matched_by == "name"
        assert result.location is not None and result.location.code.startswith(f"{name} =")
        assert result.comparison is not None and result.comparison.passed


def test_renamed_intermediates_are_matched_by_value(sandbox):
    _, found = _intermediates(EXAMPLES / "styles" / "renamed_variables.py", sandbox)
    by_value = {n: r.found_as for n, r in found.items() if r.matched_by == "value"}
    assert by_value == {"dLdP": "error", "dLdC": "grad_out", "dLdW": "grad_hidden_to_out",
                        "dLdJ": "grad_out_bias", "dLdA": "delta_hidden",
                        "dLdV": "grad_in_to_hidden", "dLdI": "grad_hidden_bias"}
    assert all(found[n].status == "match" for n in by_value)
    # computed inline, never held in a variable: not found, which is not a failure
    assert {n for n, r in found.items() if r.status == "not_found"} == {"dPdC", "dBdA", "dLdB"}


def test_variant_names_are_matched_by_name(sandbox):
    _, found = _intermediates(EXAMPLES / "styles" / "numpy_inside.py", sandbox)
    assert found["dLdW"].found_as == "dl_dw" and found["dLdW"].matched_by == "name"
    assert found["dLdW"].status == "match"


def test_nothing_to_find_is_not_a_failure(sandbox):
    report, found = _intermediates(EXAMPLES / "styles" / "element_loops.py", sandbox)
    assert {r.status for r in found.values()} == {"not_found"}
    assert report.passed and report.diagnoses == []


def test_a_wrong_intermediate_is_a_mismatch_at_its_line(sandbox):
    path = EXAMPLES / "buggy" / "no_output_sigmoid_derivative.py"
    _, found = _intermediates(path, sandbox)
    assert found["dLdP"].status == "match" and found["dPdC"].status == "match"
    wrong = found["dLdC"]
    assert wrong.status == "mismatch" and wrong.location.line == 60
    assert wrong.location.code == "dLdC = dLdP"
    assert wrong.comparison is not None and not wrong.comparison.passed
    assert wrong.comparison.tolerance is not None


# -- any description's names -------------------------------------------------------------------

def test_name_variants_follow_the_description_s_names():
    from gradkit.diagnosis.chain import Chain
    from gradkit.diagnosis.intermediates import aliases
    from reference.assignment import load_assignment

    chain = Chain.of(load_assignment("tanh_bce"))
    assert {"dldw1", "dw1", "gradw1", "w1grad"} <= aliases("dLdW1", chain)
    assert {"dldb2", "db2", "gradb2"} <= aliases("dLdb2", chain)
    assert "dz1" in aliases("dLdZ1", chain) and aliases("Z1", chain) == {"z1"}
    assert aliases("dA1dZ1", chain) == {"da1dz1"}
    # the notebook's are what they were
    assert aliases("dLdW") == {"dldw", "dlossdw", "dw", "gradw", "wgrad", "dlw"}
    assert aliases("dPdC") == {"dpdc"} and aliases("B") == {"b"}


def test_another_description_s_intermediates_are_found_under_variant_names(check_json,
                                                                          tmp_path):
    """tanh_bce with dL_dZ1-style names and its output bias averaged: the intermediates are
    found under the student's names, and the diagnosis names the variable and its line."""
    source = (EXAMPLES / "tanh_bce" / "correct.py").read_text()
    for old, new in (("dLdZ2", "dL_dZ2"), ("dLdW2", "grad_W2"), ("dLdb2", "dL_db2"),
                     ("dLdA1", "dL_dA1"), ("dLdZ1", "dZ1"), ("dLdW1", "dW1"),
                     ("dLdb1", "db1")):
        source = source.replace(old, new)
    source = source.replace("dL_db2 = dL_dZ2.sum(dim=0, keepdim=True)",
                            "dL_db2 = dL_dZ2.mean(dim=0, keepdim=True)")
    path = tmp_path / "renamed.py"
    path.write_text(source)
    report, _ = check_json(path, "--assignment", "tanh_bce")
    found = {i["name"]: (i["status"], i.get("found_as")) for i in report["intermediates"]}
    assert found["dLdW2"] == ("match", "grad_W2") and found["dLdZ1"] == ("match", "dZ1")
    assert found["dLdb2"] == ("mismatch", "dL_db2")
    (diagnosis,) = report["diagnoses"]
    line = next(n for n, text in enumerate(source.splitlines(), start=1)
                if text.strip().startswith("dL_db2 ="))
    assert diagnosis["code"] == "GK106" and diagnosis["location"]["line"] == line
    assert "At the output layer (b2), dL_db2 is averaged" in diagnosis["message"]
