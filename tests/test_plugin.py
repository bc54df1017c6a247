"""The pytest plugin, through pytester in subprocesses so it loads by its pytest11 entry point;
the handle (gradkit.session) and the assertion helper (gradkit.testing) in process."""

from __future__ import annotations

import pytest
import torch

from conftest import EXAMPLES, ROOT
from gradkit.session import StudentFunctions, SubmissionError
from gradkit.testing import Reference, assert_close

pytest_plugins = ["pytester"]

INSTRUCTOR_TESTS = ROOT / "docs" / "instructor_tests" / "test_extra.py"


def run_example(pytester: pytest.Pytester, submission) -> pytest.RunResult:
    pytester.makepyfile(test_extra=INSTRUCTOR_TESTS.read_text())
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gradkit-submission",
                                         str(submission))


def test_the_documented_example_passes_on_a_correct_submission(pytester):
    result = run_example(pytester, EXAMPLES / "correct.py")
    result.assert_outcomes(passed=3 + sum(1 for _ in predict_cases()))
    result.stdout.fnmatch_lines([f"gradkit: grading {EXAMPLES / 'correct.py'}"])


def test_the_documented_example_fails_a_buggy_submission_in_its_words(pytester):
    result = run_example(pytester, EXAMPLES / "buggy" / "predict_returns_C.py")
    predict = sum(1 for _ in predict_cases())
    # gradkit's own checks fail on predict; the instructor's step test passes; the predictions
    # are outside (0, 1) and differ from the reference on every predict case
    result.assert_outcomes(passed=1, failed=2 + predict)
    result.stdout.fnmatch_lines(["*predict: wrong in*", "*mismatched elements*",
                                 "*predictions outside (0, 1)*"])


def predict_cases():
    from gradkit.cases import build_cases

    return [c for c in build_cases() if c.kind == "predict"]


def test_ini_key_markers_and_fixtures(pytester):
    pytester.makeini(f"[pytest]\ngradkit_submission = {EXAMPLES / 'correct.py'}\n")
    pytester.makepyfile(test_mine="""
        import pytest
        from gradkit.report import Report

        def test_report(gradkit_report, gradkit_submission):
            assert isinstance(gradkit_report, Report) and gradkit_report.passed
            assert gradkit_report.submission.path == str(gradkit_submission)

        def test_cases(gradkit_cases):
            assert {c.kind for c in gradkit_cases} >= {"step", "predict", "training"}

        @pytest.mark.gradkit_cases(ids=["notebook_row", "batch2"])
        def test_by_id(gradkit_case, gradkit_student, gradkit_reference):
            got = gradkit_student.train(gradkit_case.X, gradkit_case.Y, gradkit_case.weights,
                                        gradkit_case.learning_rate)
            want = gradkit_reference.train(gradkit_case.X, gradkit_case.Y, gradkit_case.weights,
                                           gradkit_case.learning_rate)
            assert set(got) == set(want)

        @pytest.mark.gradkit_cases(kind="training")
        def test_by_kind(gradkit_case):
            assert gradkit_case.kind == "training"
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*test_by_id?notebook_row? PASSED*",
                                 "*test_by_id?batch2? PASSED*",
                                 "*test_by_kind?training_loop? PASSED*"])


def test_without_a_submission_the_fixtures_say_what_to_do(pytester):
    pytester.makepyfile(test_mine="def test_it(gradkit_report):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no submission to grade: pass --gradkit-submission PATH*"])


def test_an_unknown_case_kind_is_a_usage_error(pytester):
    pytester.makepyfile(test_mine="""
        import pytest

        @pytest.mark.gradkit_cases(kind="steps")
        def test_it(gradkit_case):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["gradkit_cases: unknown kind ?'steps'?; use step, chain*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_the_plugin_registers_its_options(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*gradkit*", "*--gradkit-submission=PATH*",
                                 "*gradkit_submission (string)*"])


# -- the handle: the student's functions, called in the sandbox --------------------------------

@pytest.fixture(scope="module")
def batch_of_four():
    g = torch.Generator().manual_seed(5)
    X = torch.rand(4, 3, generator=g, dtype=torch.float64)
    Y = torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64)
    return X, Y, Reference().weights(seed=1)


def test_the_handle_returns_plain_tensors(sandbox, batch_of_four):
    X, Y, weights = batch_of_four
    student = StudentFunctions(EXAMPLES / "correct.py", sandbox)
    got = student.train(X, Y, weights, 0.5)
    assert set(got) == {"V", "I", "W", "J"} and all(type(t) is torch.Tensor for t in got.values())
    assert_close(got, Reference().train(X, Y, weights, 0.5))
    P = student.predict(X, weights)
    assert type(P) is torch.Tensor and P.shape == (4, 1)
    fresh = student.train(X, Y, None, 1.0, seed=3)
    assert fresh["V"].shape == (3, 4)
    assert_close(student.train(X, Y, None, 1.0, seed=3), fresh)  # seeded: reproducible


def test_the_handle_reports_the_students_exception_with_its_line(sandbox, batch_of_four,
                                                                 tmp_path):
    X, Y, weights = batch_of_four
    path = tmp_path / "raises.py"
    path.write_text("def train_neural_net(X, Y, weights=None, learning_rate=1.0):\n"
                    "    return {'V': X @ Y}\n\n"
                    "def neural_net_predict(X, weights):\n    return 'P'\n")
    student = StudentFunctions(path, sandbox)
    with pytest.raises(SubmissionError, match=r"RuntimeError.*raises.py:2") as raised:
        student.train(X, Y, weights)
    assert raised.value.line == 2
    with pytest.raises(SubmissionError, match="returned a str"):
        student.predict(X, weights)
    with pytest.raises(SubmissionError, match="no file"):
        StudentFunctions(tmp_path / "missing.py", sandbox).predict(X, weights)


def test_a_student_cannot_touch_the_callers_tensors(sandbox, batch_of_four):
    X, Y, weights = batch_of_four
    before = X.clone()
    StudentFunctions(EXAMPLES / "buggy" / "mutates_X.py", sandbox).train(X, Y, weights)
    assert torch.equal(X, before)


# -- the assertion helper ----------------------------------------------------------------------

def test_assert_close_uses_the_tolerance_of_the_students_dtype():
    expected = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    assert_close(expected.float() * (1 + 5e-5), expected)  # within float32's rtol 1e-4
    with pytest.raises(AssertionError) as failed:
        assert_close(expected * (1 + 5e-5), expected, quantity="dL/dW")  # float64: rtol 1e-6
    message = str(failed.value)
    assert "dL/dW: mismatched elements 2 / 2" in message
    assert "float64 tolerance: rtol=1e-06, atol=1e-10" in message
    assert_close(expected * (1 + 5e-5), expected, rtol=1e-3)


@pytest.mark.parametrize("actual, words", [
    (torch.zeros(2, 1), "has shape (2, 1), expected (1, 2)"),
    ({"V": torch.zeros(1, 2)}, "is a dict"),
    ("text", "is a str, not a tensor"),
])
def test_assert_close_says_what_is_wrong(actual, words):
    with pytest.raises(AssertionError, match=words.replace("(", r"\(").replace(")", r"\)")):
        assert_close(actual, torch.zeros(1, 2, dtype=torch.float64))


def test_assert_close_compares_weights_key_by_key():
    weights = Reference().weights(seed=2)
    changed = {**weights, "J": weights["J"] + 1}
    with pytest.raises(AssertionError, match=r"weights\['J'\]") as failed:
        assert_close(changed, weights, quantity="weights")
    assert "weights['V']" not in str(failed.value)
    with pytest.raises(AssertionError, match=r"weights\['I'\] is missing"):
        assert_close({k: v for k, v in weights.items() if k != "I"}, weights,
                     quantity="weights")
