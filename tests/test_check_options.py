"""`gradkit check` options: tolerances, points, output file, and the terminal view."""

from __future__ import annotations

import json

from conftest import EXAMPLES
from gradkit.report import Report

BUGGY = EXAMPLES / "buggy" / "mse_without_half.py"


def test_tolerances_are_settable_and_reported(check_json):
    strict, _ = check_json(BUGGY)
    assert Report.model_validate(strict).check("gradient.W").status == "fail"
    loose, code = check_json(BUGGY, "--rtol", "1.5", "--atol", "1e-3")
    report = Report.model_validate(loose)
    assert report.check("gradient.W").status == "pass"
    used = {c.tolerance.rtol for c in report.check("gradient.W").comparisons}
    assert used == {1.5}
    assert {t.rtol for t in report.tolerances} == {1.5}


def test_default_tolerances_depend_on_the_dtype_computed_in(check_json):
    report = Report.model_validate(check_json(EXAMPLES / "styles" / "float32_throughout.py")[0])
    dtypes = {c.actual_dtype: c.tolerance.rtol for c in report.check("update").comparisons}
    assert dtypes == {"float32": 1e-4}  # float32 everywhere, even for float64 cases, and it passes
    correct = Report.model_validate(check_json(EXAMPLES / "correct.py")[0])
    rtols = {c.actual_dtype: c.tolerance.rtol for c in correct.check("update").comparisons}
    assert rtols == {"float32": 1e-4, "float64": 1e-6}


def test_points_are_overridable_and_partial_credit_follows_cases(check_json):
    report = Report.model_validate(check_json(BUGGY, "--points", "training=0",
                                              "--points", "gradient.W=40")[0])
    assert report.check("training").max_points == 0
    w = report.check("gradient.W")
    assert w.max_points == 40 and w.points == 0 and w.cases_run >= 12
    assert report.max_score == 100 - 20 - 15 + 40
    partial = Report.model_validate(check_json(EXAMPLES / "buggy" / "bias_mean_not_sum.py")[0])
    i = partial.check("gradient.I")
    # a mean instead of a sum is right exactly on the single-row cases
    assert 0 < i.cases_passed < i.cases_run
    assert i.points == round(i.max_points * i.cases_passed / i.cases_run, 4)
    assert partial.score == round(sum(c.points for c in partial.checks), 6)


def test_output_file_holds_the_json_report(tmp_path, gradkit_cli):
    target = tmp_path / "report.json"
    result = gradkit_cli("check", EXAMPLES / "correct.py", "--output", target)
    assert result.exit_code == 0
    report = Report.model_validate_json(target.read_text())
    assert report.passed and report.score == 100
    assert json.loads(target.read_text())["format_version"] == "2.0"


def test_terminal_view_shows_marks_scores_and_what_to_try(gradkit_cli):
    result = gradkit_cli("check", EXAMPLES / "buggy" / "bias_mean_not_sum.py", "--no-color")
    assert result.exit_code == 1
    out = result.stdout
    for text in ("gradient.I", "FAIL", "PASS", "FAILED · score", "/ 100"):
        assert text in out
    # the diagnosis comes first, with its line and what to do, and the table row has the numbers
    assert out.index("GK106") < out.index("gradient.I")
    assert "bias_mean_not_sum.py:62" in out and "dLdA.sum(dim=0" in out
    assert "gradkit explain GK106" in out
    assert "wrong in 10 of 12 case(s)" in out and "expected" in out
    ok = gradkit_cli("check", EXAMPLES / "correct.py", "--no-color")
    assert ok.exit_code == 0 and "PASSED · score 100 / 100" in ok.stdout
    assert "FAIL" not in ok.stdout


def test_gradkits_own_failure_is_a_valid_report_with_its_own_exit_code(gradkit_cli, monkeypatch):
    import gradkit.grading

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in gradkit")

    monkeypatch.setattr(gradkit.grading, "grade", broken)
    result = gradkit_cli("check", EXAMPLES / "correct.py", "--format", "json")
    assert result.exit_code == 3
    report = Report.model_validate_json(result.stdout)
    assert "a bug in gradkit" in report.error and not report.passed


def test_autograd_answers_withhold_the_gradient_points_unless_allowed(check_json):
    autograd = EXAMPLES.parent / "tests" / "data" / "hostile" / "autograd.py"
    strict = Report.model_validate(check_json(autograd)[0])
    assert strict.check("policy").status == "fail" and not strict.passed
    for check_id in ("gradient.V", "gradient.W", "update", "training"):
        check = strict.check(check_id)
        assert check.status == "pass" and check.points == 0  # right numbers, not the student's
        assert "points withheld" in check.message
    assert strict.check("predict").points == 10
    allowed = Report.model_validate(check_json(autograd, "--allow-autograd")[0])
    assert allowed.passed and allowed.score == 100
