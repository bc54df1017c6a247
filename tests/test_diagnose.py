"""Diagnosis: each catalogue mistake, planted in an otherwise correct solution, is named exactly,
at its line; correct solutions get no diagnosis at all; the notebook is diagnosed with its
globals I and J. Everything runs through the real sandbox (the session's shared worker).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import EXAMPLES, ROOT
from gradkit import check
from gradkit.diagnosis import catalogue
from gradkit.diagnosis.diagnose import FactorPattern, factor_pattern, factor_words
from gradkit.report import Tolerance

PLANTED = sorted((ROOT / "tests" / "data" / "catalogue").glob("*.py"))
EXPECT = re.compile(r"^# expect-diagnosis: (GK\d{3}) line=(\d+)$", re.MULTILINE)
CORRECT = [EXAMPLES / "correct.py", *sorted((EXAMPLES / "styles").glob("*.py")),
           EXAMPLES / "notebook_fixed.ipynb"]
#: The bundled buggy examples: the code each must get; the line is the one in its header.
BUGGY = {
    "W_updated_before_use.py": ["GK203"], "batch_mean_loss.py": ["GK302"],
    "bias_from_dLdB.py": ["GK107"], "bias_mean_not_sum.py": ["GK106"],
    "bias_not_summed.py": ["GK105"], "global_biases.py": ["GK401", "GK401"],
    "gradient_ascent.py": ["GK201"], "init_wrong_shapes.py": [],
    "learning_rate_hardcoded.py": ["GK202"], "mse_without_half.py": ["GK301"],
    "mutates_X.py": ["GK501"], "no_hidden_sigmoid_derivative.py": ["GK102"],
    "no_output_sigmoid_derivative.py": ["GK101"], "predict_returns_C.py": ["GK402"],
    "sigmoid_of_activation.py": ["GK103"], "sign_error_dLdP.py": ["GK104"],
}


def expected(path: Path) -> tuple[str, int]:
    match = EXPECT.search(path.read_text())
    assert match, f"{path.name} has no '# expect-diagnosis: CODE line=N' header"
    return match.group(1), int(match.group(2))


def test_every_catalogue_entry_has_a_planted_file():
    planted = {expected(path)[0] for path in PLANTED}
    assert planted == set(catalogue.ENTRIES)


@pytest.mark.parametrize("path", PLANTED, ids=lambda p: p.stem)
def test_a_planted_mistake_yields_exactly_its_code_at_its_line(path, sandbox):
    code, line = expected(path)
    report = check(path, sandbox=sandbox)
    assert report.error is None, report.error
    assert [(d.code, d.location.line if d.location else None) for d in report.diagnoses] == \
        [(code, line)]
    diagnosis = report.diagnoses[0]
    entry = catalogue.ENTRIES[code]
    assert diagnosis.title == entry.title and diagnosis.explanation == entry.explanation
    assert "{" not in diagnosis.message and diagnosis.message  # the template was filled in
    assert diagnosis.location.code == path.read_text().splitlines()[line - 1].strip()
    assert diagnosis.quantities and diagnosis.evidence.cases
    assert not report.passed


@pytest.mark.parametrize("path", CORRECT, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_correct_solutions_get_no_diagnosis(path, sandbox):
    report = check(path, sandbox=sandbox)
    assert report.error is None, report.error
    # right gradients in another dtype fail only the dtype rule, never with a diagnosis
    header = dict(re.findall(r"# gradkit-expect: (\w+)=([^\n]*)", path.read_text()))
    assert report.passed or header.get("failing") == "dtype"
    assert report.diagnoses == []
    assert all(i.status != "mismatch" for i in report.intermediates)


@pytest.mark.parametrize("name", sorted(BUGGY))
def test_the_bundled_buggy_examples_get_their_codes_at_their_lines(name, sandbox):
    path = EXAMPLES / "buggy" / name
    header = dict(re.findall(r"# gradkit-expect: (\w+)=([^\n]*)", path.read_text()))
    report = check(path, sandbox=sandbox)
    assert [d.code for d in report.diagnoses] == BUGGY[name]
    if BUGGY[name]:
        assert report.diagnoses[0].location.line == int(header["line"])


def test_the_notebook_is_diagnosed_with_its_globals_I_and_J(sandbox):
    path = EXAMPLES / "notebook.ipynb"
    report = check(path, sandbox=sandbox)
    assert [d.code for d in report.diagnoses] == ["GK401", "GK401"]
    by_weight = {d.evidence.details["weight"]: d for d in report.diagnoses}
    assert set(by_weight) == {"I", "J"}
    for name, code in (("I", "A = torch.mm(X, weights['V']) + I"),
                       ("J", "C = torch.mm(B, weights['W']) + J")):
        diagnosis = by_weight[name]
        details = diagnosis.evidence.details
        assert details["global"] == name
        assert details["functions"] == ["train_neural_net", "neural_net_predict"]
        assert details["confirmed_by_values"] == {"train_neural_net": True,
                                                  "neural_net_predict": True}
        # the line in train_neural_net's cell that reads the global, and where it was set
        assert diagnosis.location.cell == 31 and diagnosis.location.code == code
        assert f"module-level {name} (set at {path} (cell 30, line" in diagnosis.message
        assert details["set_at"].startswith(f"{path} (cell 30, line")
        assert [w.split(" (cell")[1].split(",")[0] for w in details["read_at"][
            "neural_net_predict"]] == [" 37"]  # neural_net_predict is in cell 37
        assert f"weights['{name}']" in diagnosis.message
        assert {"dL/dV", "dL/dI", "dL/dW", "dL/dJ", "P"} <= set(diagnosis.quantities)


# --------------------------------------------------------------------------------------------
# conventions and partial credit
# --------------------------------------------------------------------------------------------

GRADIENT_CHECKS = ("gradient.V", "gradient.I", "gradient.W", "gradient.J", "update")


def test_the_documented_convention_is_the_answer_and_others_can_be_accepted(check_json):
    path = EXAMPLES / "buggy" / "mse_without_half.py"
    default, code = check_json(path)
    statuses = {c["id"]: c["status"] for c in default["checks"]}
    assert code == 1 and all(statuses[c] == "fail" for c in GRADIENT_CHECKS)
    assert [d["code"] for d in default["diagnoses"]] == ["GK301"]
    assert "convention" in default["diagnoses"][0]["message"]
    assert default["diagnoses"][0]["evidence"]["factor"] == 2.0

    accepted, code = check_json(path, "--accept-convention", "sum")
    statuses = {c["id"]: c["status"] for c in accepted["checks"]}
    assert code == 0 and all(statuses[c] == "pass" for c in GRADIENT_CHECKS)
    assert accepted["diagnoses"] == []
    assert all(i["status"] == "match" for i in accepted["intermediates"])
    gradient_w = next(c for c in accepted["checks"] if c["id"] == "gradient.W")
    assert all("'sum' convention" in c["quantity"] for c in gradient_w["comparisons"])


def test_accepting_one_convention_does_not_accept_another(sandbox):
    path = EXAMPLES / "buggy" / "batch_mean_loss.py"
    wrong = check(path, sandbox=sandbox, accept_conventions=("sum",))
    assert wrong.check("gradient.V").status == "fail"
    assert [d.code for d in wrong.diagnoses] == ["GK302"]
    right = check(path, sandbox=sandbox, accept_conventions=("half_mean",))
    assert all(right.check(c).status == "pass" for c in GRADIENT_CHECKS)
    assert right.diagnoses == []


def test_partial_credit_follows_the_steps_when_asked(sandbox):
    path = EXAMPLES / "buggy" / "sign_error_dLdP.py"
    strict = check(path, sandbox=sandbox)
    assert all(strict.check(c).status == "fail" for c in GRADIENT_CHECKS)
    credited = check(path, sandbox=sandbox, credit_upstream=True)
    # the sign is wrong in dLdP, an output-layer step: W and J pay for it, V, I and the update
    # were computed correctly from it
    for check_id in ("gradient.V", "gradient.I", "update"):
        result = credited.check(check_id)
        assert result.status == "pass" and result.points == result.max_points
        assert "credited" in result.message and "dLdP" in result.message
    for check_id in ("gradient.W", "gradient.J"):
        assert credited.check(check_id).status == "fail"
        assert credited.check(check_id).points == strict.check(check_id).points
    assert credited.score > strict.score
    assert [d.code for d in credited.diagnoses] == ["GK104"]  # diagnosis is unchanged


def test_partial_credit_follows_each_layer_s_steps_for_any_description(sandbox):
    from reference.assignment import load_assignment

    tanh_bce = load_assignment("tanh_bce")
    path = EXAMPLES / "tanh_bce" / "sign_error.py"
    strict = check(path, sandbox=sandbox, assignment=tanh_bce)
    credited = check(path, sandbox=sandbox, assignment=tanh_bce, credit_upstream=True)
    # the sign is wrong in dLdZ2, the output layer's: W2 and b2 pay for it; layer 1's
    # gradients and the update were computed correctly from it
    for check_id in ("gradient.W1", "gradient.b1", "update"):
        assert strict.check(check_id).status == "fail"
        result = credited.check(check_id)
        assert result.status == "pass" and result.points == result.max_points
        assert "credited" in result.message and "dLdZ2" in result.message
    for check_id in ("gradient.W2", "gradient.b2"):
        assert credited.check(check_id).status == "fail"
        assert credited.check(check_id).points == strict.check(check_id).points
    assert [d.code for d in credited.diagnoses] == ["GK104"]


def test_no_credit_without_intermediates_to_follow(sandbox):
    path = ROOT / "tests" / "data" / "catalogue" / "unknown_without_intermediates.py"
    strict = check(path, sandbox=sandbox)
    credited = check(path, sandbox=sandbox, credit_upstream=True)
    assert credited.score == strict.score < strict.max_score


# --------------------------------------------------------------------------------------------
# the views: terminal first, JSON, `gradkit explain`
# --------------------------------------------------------------------------------------------

def test_the_terminal_view_puts_diagnoses_first(gradkit_cli):
    path = EXAMPLES / "buggy" / "no_hidden_sigmoid_derivative.py"
    result = gradkit_cli("check", path, "--no-color")
    out = result.stdout
    assert result.exit_code == 1
    assert out.index("GK102") < out.index("gradient.V")
    assert f"{path}:66" in out and "dLdA = dLdB" in out
    assert "gradkit explain GK102" in out


def test_the_json_report_carries_every_part_of_a_diagnosis(check_json):
    report, _ = check_json(EXAMPLES / "buggy" / "bias_mean_not_sum.py")
    (diagnosis,) = report["diagnoses"]
    assert diagnosis["code"] == "GK106"
    assert set(diagnosis) >= {"code", "title", "message", "quantities", "evidence", "location",
                              "explanation"}
    assert {"dL/dI", "dL/dJ"} <= set(diagnosis["quantities"])
    assert diagnosis["location"]["line"] == 62
    assert diagnosis["evidence"]["cases"] and "toy_batch" in diagnosis["evidence"]["cases"]
    assert "notebook_row" not in diagnosis["evidence"]["cases"]  # one row cannot tell them apart
    json.dumps(report)


@pytest.mark.parametrize("code", sorted(catalogue.ENTRIES))
def test_gradkit_explain_prints_the_long_explanation(code, gradkit_cli):
    entry = catalogue.ENTRIES[code]
    result = gradkit_cli("explain", code.lower())
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{code} {entry.slug}: {entry.title}")
    assert entry.explanation in result.stdout


def test_codes_and_slugs_are_stable_and_unique():
    assert all(re.fullmatch(r"GK\d{3}", code) for code in catalogue.ENTRIES)
    assert all(entry.code == code for code, entry in catalogue.ENTRIES.items())
    slugs = [entry.slug for entry in catalogue.ENTRIES.values()]
    assert len(set(slugs)) == len(slugs)
    # GK601 is the edit search, made where GK001 would stand
    assert set(catalogue.MATCHERS) | {"GK001", "GK002", "GK003", "GK601"} == \
        set(catalogue.ENTRIES)


# --------------------------------------------------------------------------------------------
# fitting: factors across calls
# --------------------------------------------------------------------------------------------

TOL = Tolerance(dtype="float64", rtol=1e-6, atol=1e-10)


def _calls(factor, sizes=(1, 2, 5, 32), rates=(1.0, 1.0, 0.01, 4.0)):
    g = torch.Generator().manual_seed(7)
    pairs = []
    for n, lr in zip(sizes, rates):
        expected = torch.randn(4, 1, generator=g, dtype=torch.float64)
        pairs.append((factor(n, lr) * expected, expected, TOL, n, lr))
    return pairs


@pytest.mark.parametrize("factor, pattern", [
    (lambda n, lr: 2.0, FactorPattern("constant", 2.0, 0.0)),
    (lambda n, lr: -1.0, FactorPattern("constant", -1.0, 0.0)),
    (lambda n, lr: 1.0 / n, FactorPattern("per_row", 1.0, 0.0)),
    (lambda n, lr: 2.0 / n, FactorPattern("per_row", 2.0, 0.0)),
    (lambda n, lr: 0.01 / lr, FactorPattern("per_learning_rate", 0.01, 0.0)),
])
def test_factor_patterns_across_calls(factor, pattern):
    found = factor_pattern(_calls(factor))
    assert found is not None
    assert (found.kind, found.value) == (pattern.kind, pattern.value)
    assert found.residual < 1e-12


def test_no_pattern_is_reported_when_none_holds_exactly():
    assert factor_pattern(_calls(lambda n, lr: n + lr)) is None


def test_factor_words():
    assert "sign is flipped" in factor_words(FactorPattern("constant", -1.0, 0.0))
    assert "1/n" in factor_words(FactorPattern("per_row", 1.0, 0.0))
    assert "0.01/learning_rate" in factor_words(FactorPattern("per_learning_rate", 0.01, 0.0))
    assert factor_words(None) == ""


# --------------------------------------------------------------------------------------------
# every description: the catalogue's whole-call and behaviour entries on tanh_bce
# --------------------------------------------------------------------------------------------

TANH_BCE = (EXAMPLES / "tanh_bce" / "correct.py").read_text()

#: name -> (edits of tanh_bce/correct.py, the code, a phrase of its message, the line)
TANH_BCE_MISTAKES = {
    "forward_ignores_b1": ([("    Z1 = X @ W1 + b1\n", "    Z1 = X @ W1\n"),
                            ("A1 = torch.tanh(X @ weights['W1'] + weights['b1'])",
                             "A1 = torch.tanh(X @ weights['W1'])")],
                           "GK401", "train and predict do not use weights['b1']", 32),
    "W2_updated_before_use": ([("    dLdA1 = dLdZ2 @ W2.T\n",
                                "    W2 = W2 - learning_rate * dLdW2\n    dLdA1 = dLdZ2 @ W2.T\n"),
                               ("'W2': W2 - learning_rate * dLdW2", "'W2': W2")],
                              "GK203", "W2 is updated before dLdA1 is computed", 52),
    "mutates_X": ([("    X = X.to(dtype)\n", "    X = X.to(dtype)\n    X[0, 0] = X[0, 0] + 1.0\n")],
                  "GK501", "train changes X in place", 22),
    "hidden_state": ([("def train(", "STATE = []\n\n\ndef train("),
                      ("    dLdZ2 = P - Y\n", "    STATE.append(1)\n    dLdZ2 = (P - Y) * len(STATE)\n")],
                     "GK502", "train keeps state between calls", 41),
    "b1_not_updated": ([("'b1': b1 - learning_rate * dLdb1", "'b1': b1")],
                       "GK603", "weights['b1'] comes back exactly as it was given", 50),
    "draws_in_another_order": ([("        weights['W1'] = torch.randn(2, 8, dtype=dtype)\n"
                                 "        weights['b1'] = torch.randn(1, 8, dtype=dtype)\n",
                                 "        weights['b1'] = torch.randn(1, 8, dtype=dtype)\n"
                                 "        weights['W1'] = torch.randn(2, 8, dtype=dtype)\n")],
                               "GK610", "in the order b1, W1, W2, b2", 25),
    "weight_decay": ([("'W1': W1 - learning_rate * dLdW1",
                       "'W1': W1 - learning_rate * (dLdW1 + 0.01 * W1)")],
                     "GK601", "(layer 1) is W1 - learning_rate * (dLdW1 + 0.01 * W1)", 49),
    "predict_rounds": ([("return torch.sigmoid(A1 @ weights['W2'] + weights['b2'])",
                         "return torch.round(torch.sigmoid(A1 @ weights['W2'] + weights['b2']))")],
                       "GK621", "instead of P = sigmoid(Z2), the probability", 59),
    "predict_without_tanh": ([("A1 = torch.tanh(X @ weights['W1'] + weights['b1'])",
                               "A1 = X @ weights['W1'] + weights['b1']")],
                             "GK622", "the tanh of layer 1 left out", 58),
    "predict_ignores_weights": ([("A1 = torch.tanh(X @ weights['W1'] + weights['b1'])\n"
                                  "    return torch.sigmoid(A1 @ weights['W2'] + weights['b2'])",
                                  "return torch.full((X.shape[0], 1), 0.5, dtype=X.dtype)")],
                                "GK620", "moving any of W1, b1, W2, b2 changes nothing", 58),
}


def _tanh_bce_with(edits: list[tuple[str, str]], path: Path) -> Path:
    """The correct tanh_bce solution with each (old, new) edit made once, written to ``path``."""
    text = TANH_BCE
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(TANH_BCE_MISTAKES))
def test_another_description_gets_the_catalogue_s_codes_in_its_own_names(name, tmp_path,
                                                                          check_json):
    edits, code, phrase, line = TANH_BCE_MISTAKES[name]
    report, exit_code = check_json(_tanh_bce_with(edits, tmp_path / f"{name}.py"),
                                   "--assignment", "tanh_bce")
    assert report["error"] is None and exit_code == 1
    located = [(d["code"], (d.get("location") or {}).get("line")) for d in report["diagnoses"]]
    assert located[0] == (code, line), located
    assert phrase in report["diagnoses"][0]["message"], report["diagnoses"][0]["message"]
    for diagnosis in report["diagnoses"]:
        assert "neural_net_predict" not in diagnosis["message"]
        assert "train_neural_net" not in diagnosis["message"]
        # the long words are those for any assignment, not the notebook's V, I, W, J
        assert diagnosis["explanation"] == catalogue.GENERAL[diagnosis["code"]]


@pytest.mark.parametrize("name, beta", [("hidden_state", None), ("momentum", 0.9)])
def test_hidden_state_is_called_momentum_only_when_the_numbers_fit_one(name, beta, tmp_path,
                                                                       check_json):
    """GK502 says "momentum" only when the repeated call's update is the SGD step plus beta
    times the first call's update for one beta in (0, 1) (here 0.9, residual ~1e-15); a counter
    that scales the gradient keeps state too, and is not called momentum."""
    if name == "hidden_state":
        edits = TANH_BCE_MISTAKES["hidden_state"][0]
    else:
        edits = [("def train(", "VELOCITY = {}\n\n\ndef train("),
                 ("'W1': W1 - learning_rate * dLdW1",
                  "'W1': W1 + VELOCITY.setdefault('W1', 0 * W1).mul_(0.9)"
                  ".sub_(learning_rate * dLdW1)")]
    report, _ = check_json(_tanh_bce_with(edits, tmp_path / f"{name}.py"),
                           "--assignment", "tanh_bce")
    state = next(d for d in report["diagnoses"] if d["code"] == "GK502")
    if beta is None:
        assert "momentum" not in state["message"] and "momentum" not in state["evidence"]["details"]
    else:
        assert state["evidence"]["details"]["momentum"]["beta"] == beta
        assert f"plus {beta:g} times the first call's whole update" in state["message"]


def _relu_numpy_with(old: str, new: str, check_json, path: Path) -> tuple[dict, list]:
    """relu_mse's NumPy solution (names of its own, every weight updated in one comprehension
    over zip(KEYS, old, steps)) with ``old`` made ``new`` once, checked: the report, and each
    diagnosis's (code, line)."""
    source = (EXAMPLES / "relu_mse" / "correct_numpy.py").read_text()
    assert source.count(old) == 1, old
    path.write_text(source.replace(old, new))
    report, exit_code = check_json(path, "--assignment", "relu_mse")
    assert exit_code == 1
    return report, [(d["code"], (d.get("location") or {}).get("line"))
                    for d in report["diagnoses"]]


def test_a_forward_mistake_under_the_student_s_own_names_is_one_diagnosis(tmp_path, check_json):
    """relu_mse in NumPy with names of its own (act_a, err_out): a wrong ReLU threshold makes
    every update wrong and nothing the function keeps past Z1 matches. That is said once for
    all six weights (it was six GK001 paragraphs saying the same thing), at their one update
    line, with the steps it may be in from the first one not held right (A1)."""
    report, _ = _relu_numpy_with("act_a = np.maximum(pre_a, 0.0)",
                                 "act_a = np.maximum(pre_a, 1.0)", check_json,
                                 tmp_path / "relu_threshold.py")
    wrong_steps = [d for d in report["diagnoses"] if d["code"] == "GK001"]
    assert len(wrong_steps) == 1, [d["message"] for d in report["diagnoses"]]
    [diagnosis] = wrong_steps
    message = diagnosis["message"]
    for name in ("W1", "b1", "W2", "b2", "W3", "b3"):
        assert f"weights['{name}']" in message
    assert "A1" in diagnosis["evidence"]["details"]["span"]
    assert diagnosis["evidence"]["details"]["also"] == [
        f"update.{name}" for name in ("b1", "W2", "b2", "W3", "b3")]
    # the one line that updates every weight (a comprehension over the table of names)
    assert diagnosis["location"]["line"] == 47
    assert "these updates, or in A1," in message


def test_a_swapped_entry_of_a_table_of_gradients_is_named_where_the_table_is(tmp_path,
                                                                              check_json):
    """relu_mse in NumPy updates every weight in one comprehension over zip(KEYS, old, steps);
    with g_w_a and g_b_a swapped in ``steps`` the update of W1 uses dL/db1: the diagnosis names
    the line of the table (45), not the comprehension (47) or none."""
    report, located = _relu_numpy_with("steps = (g_w_a, g_b_a,", "steps = (g_b_a, g_w_a,",
                                       check_json, tmp_path / "swapped_table.py")
    assert located and all(where == ("GK601", 45) for where in located), located
    assert report["diagnoses"][0]["location"]["code"].startswith("steps = (g_b_a, g_w_a,")


def test_updates_that_read_both_operands_from_one_table_are_one_diagnosis_at_the_loop(
        tmp_path, check_json):
    """zip(KEYS, old, old): every update subtracts learning_rate times the weight itself. The
    table entries are right; the comprehension's zip is wrong: one GK601 at its line (47) that
    names the same edit for the other five weights (not six paragraphs at the table's line)."""
    report, located = _relu_numpy_with("step in zip(KEYS, old, steps)",
                                       "step in zip(KEYS, old, old)", check_json,
                                       tmp_path / "old_twice.py")
    assert located == [("GK601", 47)], located
    assert "The updates of b1, W2, b2, W3 and b3 have the same edit." in \
        report["diagnoses"][0]["message"]
