"""Bad input gets a clear message in a valid report, never a traceback from gradkit itself.

Each case is the correct example with one thing broken, written to a temporary folder and run
through the real `gradkit check --format json` and the real sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import EXAMPLES
from gradkit.report import Report

CORRECT = (EXAMPLES / "correct.py").read_text()
UPDATE_V = "    weights['V'] = weights['V'] - learning_rate * dLdV\n"


def _replace(old: str, new: str) -> str:
    assert old in CORRECT
    return CORRECT.replace(old, new, 1)


def line_of(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


RAISES = _replace("    dLdV = torch.mm(X.transpose(0, 1), dLdA)\n",
                  "    dLdV = _backward_V(X, dLdA)\n") + (
    "\n\ndef _backward_V(X, dLdA):\n"
    "    raise ValueError('shapes do not line up')\n")

# (name, file name, source, {check id: status}, words the report must contain, line)
CASES = [
    ("syntax_error", "student.py", _replace("    B = sigmoid(A)\n", "    B = sigmoid(A\n"),
     {"load": "error", "gradient.V": "error"}, ["syntax error", "column"], None),
    ("missing_predict", "student.py", CORRECT.split("def neural_net_predict")[0],
     {"load": "fail", "predict": "error", "gradient.V": "pass"}, ["neural_net_predict is not defined"],
     None),
    ("wrong_signature", "student.py", _replace("                     learning_rate: float = 1.0)",
                                               "                     )"),
     {"load": "fail", "gradient.W": "error", "predict": "pass"},
     ["train_neural_net cannot be called with 4 positional arguments"], None),
    ("import_time_exception", "student.py", CORRECT + "\nraise RuntimeError('oops at import')\n",
     {"load": "error", "predict": "error"}, ["RuntimeError: oops at import"], "raise RuntimeError"),
    ("exception_in_call", "student.py", RAISES,
     {"load": "pass", "gradient.V": "error", "predict": "pass"},
     ["train_neural_net raised ValueError: shapes do not line up"], "raise ValueError"),
    ("returns_a_list", "student.py", _replace("    return weights\n",
                                              "    return list(weights.values())\n"),
     {"gradient.V": "error", "update": "error", "init": "error", "predict": "pass"},
     ["returned a list", "not a dict of weights"], None),
    ("returns_numpy", "student.py", _replace("    return weights\n",
                                             "    return {k: v.numpy() for k, v in weights.items()}\n"),
     {"gradient.V": "error", "predict": "pass"}, ["numpy array", "torch.from_numpy"], None),
    ("wrong_shape", "student.py", _replace("    return weights\n",
                                           "    weights['W'] = weights['W'].T\n    return weights\n"),
     {"gradient.W": "fail", "gradient.V": "pass", "init": "fail"}, ["shape (1, 4), expected (4, 1)"],
     None),
    ("wrong_dtype", "student.py", _replace("    return weights\n",
                                           "    weights['J'] = weights['J'].half()\n    return weights\n"),
     {"gradient.J": "fail", "gradient.V": "pass"}, ["float16; gradkit expects float32 or float64"],
     None),
    ("nan_outputs", "student.py", _replace(UPDATE_V, UPDATE_V.replace("dLdV", "dLdV * float('nan')")),
     {"gradient.V": "fail", "gradient.W": "pass"}, ["non-finite"], None),
    ("init_zeros", "student.py", _replace("        weights['V'] = torch.randn(3, 4, dtype=dtype)\n",
                                          "        weights['V'] = torch.zeros(3, 4, dtype=dtype)\n"),
     {"init": "fail", "gradient.V": "pass", "training": "pass"},
     ["should draw V, I, W, J in the notebook's order"], None),
    ("init_order_swapped", "student.py", _replace(
        "        weights['V'] = torch.randn(3, 4, dtype=dtype)\n"
        "        weights['I'] = torch.randn(1, 4, dtype=dtype)\n",
        "        weights['I'] = torch.randn(1, 4, dtype=dtype)\n"
        "        weights['V'] = torch.randn(3, 4, dtype=dtype)\n"),
     {"init": "fail", "gradient.V": "pass"}, ["torch.randn(3, 4), torch.randn(1, 4)"], None),
    ("not_python", "student.txt", "just some words\n", {"load": "error"},
     ["not a .py file or a .ipynb notebook"], None),
    ("binary_garbage", "student.py", None, {"load": "error"}, ["not UTF-8"], None),
    ("broken_notebook", "student.ipynb", '{"cells": [', {"load": "error"},
     ["not a readable Jupyter notebook"], None),
]


@pytest.mark.parametrize("name, filename, source, statuses, words, line_text", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_failed_check(tmp_path: Path, gradkit_cli, name, filename, source,
                                             statuses, words, line_text):
    path = tmp_path / filename
    if source is None:
        path.write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    else:
        path.write_text(source)
    result = gradkit_cli("check", path, "--format", "json")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    report = Report.model_validate_json(result.stdout)
    got = {c.id: c.status for c in report.checks}
    for check_id, status in statuses.items():
        assert got[check_id] == status, (check_id, report.check(check_id).message)
    text = json.dumps([c.message for c in report.checks])
    for word in words:
        assert word in text
    if line_text is not None:
        located = [c.location for c in report.checks if c.location is not None]
        assert located and located[0].line == line_of(source, line_text)
        assert located[0].file == str(path)


def test_syntax_error_names_line_and_column(tmp_path: Path, gradkit_cli):
    path = tmp_path / "student.py"
    source = _replace("    B = sigmoid(A)\n", "    B = = sigmoid(A)\n")
    path.write_text(source)
    report = Report.model_validate_json(gradkit_cli("check", path, "--format", "json").stdout)
    load = report.check("load")
    assert load.location.line == line_of(source, "B = = sigmoid")
    assert load.location.column is not None
    assert f"{path}:{load.location.line}" in load.message


def test_exception_traceback_is_trimmed_to_the_student_frames(tmp_path: Path, gradkit_cli):
    path = tmp_path / "student.py"
    path.write_text(RAISES)
    report = Report.model_validate_json(gradkit_cli("check", path, "--format", "json").stdout)
    check = report.check("gradient.V")
    assert check.location.line == line_of(RAISES, "raise ValueError")
    assert check.location.code == "raise ValueError('shapes do not line up')"
    assert "gradkit" not in check.message.replace(str(path), "")


def test_missing_file_and_folder(tmp_path: Path, gradkit_cli):
    for target, words in ((tmp_path / "nope.py", "no file at"), (tmp_path, "is a folder")):
        result = gradkit_cli("check", target, "--format", "json")
        assert result.exit_code == 1
        report = Report.model_validate_json(result.stdout)
        assert words in report.check("load").message
        assert report.score == 0 and not report.passed


def test_usage_errors_have_their_own_exit_code(gradkit_cli):
    result = gradkit_cli("check", EXAMPLES / "correct.py", "--points", "nonsense=3")
    assert result.exit_code == 2
    assert "CHECK=POINTS" in result.output


def test_a_case_that_hangs_costs_only_itself(tmp_path: Path, sandbox):
    from gradkit import check
    from gradkit.sandbox import Limits

    path = tmp_path / "student.py"
    path.write_text(_replace("    # forward pass\n", "    # forward pass\n"
                             "    while X.shape[0] == 32:  # hangs on 32-row batches only\n"
                             "        pass\n"))
    report = check(path, sandbox=sandbox,
                   limits=Limits(load_seconds=4, call_seconds=1, total_seconds=20))
    v = report.check("gradient.V")
    assert (v.status, v.cases_run - v.cases_passed) == ("fail", 2)
    assert "stopped during this case: call 'batch32' ran past its 1 s limit" in v.message
    # the cases after the hanging ones ran in a fresh process and were graded
    for check_id in ("training", "init", "predict", "side_effects"):
        assert report.check(check_id).status == "pass", check_id
