"""No false words: for every catalogue code, a submission that comes close to its mistake but
where its claim would be false, graded through the real CLI and sandbox: the code is not given.

Each case is a real file (an example, a planted or uncatalogued mistake) or correct.py with one
edit. Where the submission is wrong, some other diagnosis must explain it (the numbers are not
left unexplained to keep a code out).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT
from gradkit.diagnosis import catalogue

DATA = ROOT / "tests" / "data"
CORRECT = (EXAMPLES / "correct.py").read_text()
U = DATA / "uncatalogued"

#: code -> (why the claim would be false, the submission: a path, or (old, new) in correct.py)
CASES: dict[str, tuple[str, object]] = {
    "GK101": ("only dL/dW lacks dP/dC; every other gradient has it",
              ("dLdW = torch.mm(B.transpose(0, 1), dLdC)",
               "dLdW = torch.mm(B.transpose(0, 1), dLdP)")),
    "GK102": ("only dL/dV lacks dB/dA; dL/dI has it", U / "dLdV_from_dLdB.py"),
    "GK103": ("dB/dA is tanh's derivative, not the sigmoid's at B", U / "tanh_derivative.py"),
    "GK104": ("the gradients are right; the update adds them", DATA / "catalogue" /
              "gradient_ascent.py"),
    "GK105": ("the bias gradients are averaged, not left per row", EXAMPLES / "buggy" /
              "bias_mean_not_sum.py"),
    "GK106": ("the bias gradients are summed; the update divides every step by n",
              U / "learning_rate_over_n.py"),
    "GK107": ("dL/dI and dL/dV both lack dB/dA: dL/dA itself is wrong", EXAMPLES / "buggy" /
              "no_hidden_sigmoid_derivative.py"),
    "GK108": ("dL/dV has V's shape; its values are a reshape, not a transpose",
              U / "reshape_for_transpose.py"),
    "GK201": ("the update subtracts; dL/dP has the wrong sign", EXAMPLES / "buggy" /
              "sign_error_dLdP.py"),
    "GK202": ("the step follows the learning rate (twice)", U / "learning_rate_twice.py"),
    "GK203": ("the weights are updated in place after every gradient is computed",
              EXAMPLES / "styles" / "inplace_updates.py"),
    "GK301": ("only dL/dW is doubled", ("dLdW = torch.mm(B.transpose(0, 1), dLdC)",
                                        "dLdW = 2 * torch.mm(B.transpose(0, 1), dLdC)")),
    "GK302": ("dL/dP is P - Y; the update divides the step by n", U / "learning_rate_over_n.py"),
    "GK401": ("neural_net_predict ignores every weight, not one", U / "predict_ignores_weights.py"),
    "GK402": ("neural_net_predict returns sigmoid(C) of a wrong C", U /
              "predict_no_hidden_sigmoid.py"),
    "GK501": ("the caller's dict entries are rebound; its tensors are untouched",
              ("    return weights\n",
               "    if caller:  # a new tensor in the caller's dict: its old one is untouched\n"
               "        caller['V'] = caller['V'] * 2.0\n    return weights\n")),
    "GK502": ("module-level state is written but never read", (
        "    # check consistent batch sizes\n",
        "    CALLS.append(1)\n    # check consistent batch sizes\n")),
    "GK503": ("every value is finite, only far too large",
              ("dLdP = -1.0 * (Y - P)", "dLdP = -1e30 * (Y - P)")),
    "GK601": ("nothing is wrong", EXAMPLES / "correct.py"),
    "GK602": ("one step, with the learning rate applied twice", U / "learning_rate_twice.py"),
    "GK603": ("the update is stored; the gradients are zero",
              ("dLdP = -1.0 * (Y - P)", "dLdP = 0.0 * (Y - P)")),
    "GK610": ("the draws are the notebook's; the gradients are wrong", EXAMPLES / "buggy" /
              "sign_error_dLdP.py"),
    "GK620": ("neural_net_predict uses its weights, and rounds", U / "predict_thresholds.py"),
    "GK621": ("neural_net_predict returns C, not classes", EXAMPLES / "buggy" /
              "predict_returns_C.py"),
    "GK622": ("neural_net_predict returns C: a single sigmoid is missing, which GK402 names",
              EXAMPLES / "buggy" / "predict_returns_C.py"),
}


def test_every_code_with_a_claim_has_a_case():
    # GK001-GK003 say only that a step (or prediction) is wrong: nothing to be false
    assert set(CASES) == set(catalogue.ENTRIES) - {"GK001", "GK002", "GK003"}


def _submission(source: object, tmp_path: Path) -> Path:
    if isinstance(source, Path):
        return source
    old, new = source  # type: ignore[misc]
    assert CORRECT.count(old) == 1, old
    text = CORRECT.replace(old, new)
    if "caller" in new:
        text = text.replace("    # check consistent batch sizes\n",
                            "    caller = weights\n    # check consistent batch sizes\n")
    if "CALLS" in new:
        text = text.replace("from helper import sigmoid\n", "from helper import sigmoid\n\n"
                            "CALLS = []\n")
    path = tmp_path / "solution.py"
    path.write_text(text)
    return path


@pytest.mark.parametrize("code", sorted(CASES))
def test_a_code_is_not_given_where_its_claim_would_be_false(code, check_json, tmp_path):
    why, source = CASES[code]
    report, _ = check_json(_submission(source, tmp_path))
    codes = [d["code"] for d in report["diagnoses"]]
    assert code not in codes, f"{code} given where {why}: {report['diagnoses']}"
    if not report["passed"] and any(c["status"] == "fail" and c["id"] != "dtype"
                                    for c in report["checks"]):
        assert codes, "a wrong submission left without any diagnosis"


def test_a_caller_tensor_changed_in_place_is_still_named(check_json, tmp_path):
    """The other side of GK501's rule: the caller's tensor itself changed into neither the old
    nor the returned weights."""
    path = _submission(("    return weights\n",
                        "    if caller:\n        caller['V'].mul_(2.0)\n    return weights\n"),
                       tmp_path)
    report, _ = check_json(path)
    named = [d for d in report["diagnoses"] if d["code"] == "GK501"]
    assert named and "the caller's weight tensors" in named[0]["message"]


# -- per layer, for the other bundled descriptions ------------------------------------------------

def _example(assignment: str, name: str) -> Path:
    return EXAMPLES / assignment / f"{name}.py"


#: (assignment, example, code, why its claim would be false there): each example is a real,
#: wrong submission of that description, close to the code's mistake but not it
PER_LAYER: list[tuple[str, str, str, str]] = [
    ("tanh_bce", "tanh_derivative_one_minus_tanh", "GK102",
     "layer 1's tanh derivative is there, written as 1 - A1, not left out"),
    ("tanh_bce", "tanh_derivative_one_minus_tanh", "GK103",
     "the derivative is 1 - A1, not tanh's derivative taken at A1"),
    ("tanh_bce", "no_hidden_tanh_derivative", "GK101",
     "the output layer's dL/dZ2 = P - Y is right; only layer 1's derivative is missing"),
    ("tanh_bce", "tanh_derivative_of_activation", "GK102",
     "layer 1's derivative is taken at A1, not left out"),
    ("tanh_bce", "bias_averaged", "GK105", "b2's gradient is averaged, not left per row"),
    ("tanh_bce", "bias_averaged", "GK302", "only b2's gradient is divided by n"),
    ("tanh_bce", "batch_mean_loss", "GK106", "every gradient is divided by n, not only the "
     "biases'"),
    ("relu_mse", "bias_not_summed", "GK106", "b1's gradient is left per row, not averaged"),
    ("relu_mse", "sign_error", "GK201", "the update subtracts; dL/dP has the wrong sign"),
    ("relu_mse", "gradient_ascent", "GK104", "the gradients are right; the update adds them"),
    ("relu_mse", "gradient_ascent", "GK202", "the step follows the learning rate"),
    ("relu_mse", "no_relu_derivative_layer2", "GK101",
     "the output layer is the identity: only layer 2's ReLU derivative is missing"),
    ("relu_mse", "sum_not_mean", "GK106", "every gradient is n times the documented one"),
    ("relu_mse", "relu_derivative_is_relu", "GK102",
     "layer 1's derivative is there, written as relu(Z1), not left out"),
    ("logistic", "no_sigmoid_derivative", "GK102", "the network has no hidden layer"),
    ("logistic", "predict_without_sigmoid", "GK401", "predict uses every weight"),
]


@pytest.mark.parametrize("assignment,name,code,why", PER_LAYER,
                         ids=[f"{a}/{n}-{c}" for a, n, c, _ in PER_LAYER])
def test_a_per_layer_code_is_not_given_where_its_claim_would_be_false(assignment, name, code, why,
                                                                      check_json):
    report, _ = check_json(_example(assignment, name), "--assignment", assignment)
    codes = [d["code"] for d in report["diagnoses"]]
    assert code not in codes, f"{code} given where {why}: {report['diagnoses']}"
    assert codes, "a wrong submission left without any diagnosis"


def test_a_per_layer_code_names_only_the_layer_it_is_at(check_json):
    """relu_mse's transposed product is at layer 2 only: GK108 names W2, not W1 or W3."""
    report, _ = check_json(_example("relu_mse", "transposed_product"), "--assignment", "relu_mse")
    named = [d for d in report["diagnoses"] if d["code"] == "GK108"]
    assert len(named) == 1
    assert named[0]["evidence"]["details"]["layer"] == 2
    assert named[0]["quantities"] == ["dL/dW2", "update"]
    assert "At layer 2, dLdW2" in named[0]["message"]
