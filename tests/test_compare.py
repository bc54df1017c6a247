"""Comparison as data: stages (presence, shape, dtype, finiteness, values), numbers, one layout."""

from __future__ import annotations

import pytest
import torch

from gradkit.compare import compare
from gradkit.tolerances import TABLE, Tolerances

F64 = torch.float64
TOL = Tolerances().values(F64)


def test_values_record_the_numbers_and_the_worst_element():
    expected = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=F64)
    actual = expected.clone()
    actual[1, 2] = 6.5
    actual[0, 0] = 1.0 + 1e-3
    c = compare("dL/dV", "batch5", actual, expected, TOL)
    assert not c.passed and c.problem == "values"
    assert (c.mismatched, c.total) == (2, 6)
    assert c.worst_index == [1, 2]
    assert c.max_abs_error == pytest.approx(0.5)
    assert c.max_rel_error == pytest.approx(0.5 / 6)
    assert (c.actual_at_worst, c.expected_at_worst) == (6.5, 6.0)
    assert c.tolerance == TOL
    assert c.message.startswith("dL/dV: mismatched elements 2 / 6 (33.3%) · greatest absolute "
                                "difference 0.5 at index (1, 2) (got 6.5, expected 6;")


@pytest.mark.parametrize("actual, problem, words", [
    (None, "missing", "is missing"),
    (torch.zeros(3, 2, dtype=F64), "shape", "has shape (3, 2), expected (2, 3)"),
    (torch.zeros(2, 3, dtype=torch.int64), "dtype", "is int64; gradkit expects float32 or float64"),
    (torch.zeros(2, 3, dtype=torch.float16), "dtype", "is float16"),
    (torch.tensor([[0.0, float("nan"), 0.0], [float("inf"), 0.0, 0.0]], dtype=F64), "nonfinite",
     "has 2 non-finite value(s) (NaN or inf), the first at index (0, 1)"),
])
def test_stages_fail_before_values(actual, problem, words):
    c = compare("W", "case", actual, torch.zeros(2, 3, dtype=F64), TOL)
    assert not c.passed and c.problem == problem and words in c.message


def test_a_right_float32_result_passes_at_float32_tolerance_only():
    g = torch.Generator().manual_seed(0)
    exact = torch.randn(32, 4, generator=g, dtype=F64)
    # a few float32 roundings in a row: relative errors of a few 1e-6
    computed_in_float32 = exact.to(torch.float32) * (1 + 3e-6)
    assert compare("B", "c", computed_in_float32, exact,
                   Tolerances().values(torch.float32)).passed
    assert not compare("B", "c", computed_in_float32.to(F64), exact, TOL).passed


def test_implied_gradients_widen_atol_by_the_rounding_of_w_over_the_learning_rate():
    tolerances = Tolerances()
    small_lr = tolerances.implied_gradient(torch.float32, weight_scale=2.0, learning_rate=0.01)
    large_lr = tolerances.implied_gradient(torch.float32, weight_scale=2.0, learning_rate=4.0)
    eps = torch.finfo(torch.float32).eps
    assert small_lr.atol == pytest.approx(TABLE[torch.float32].atol + 8 * eps * 2.0 / 0.01)
    assert small_lr.atol > 100 * large_lr.atol > 0
    assert small_lr.rtol == large_lr.rtol == TABLE[torch.float32].rtol


def test_implied_gradients_widen_atol_by_the_rounding_of_their_terms_where_rtol_falls_short():
    tolerances = Tolerances()
    eps = torch.finfo(F64).eps
    rule = TABLE[F64]
    plain = tolerances.implied_gradient(F64, weight_scale=1.0, learning_rate=1.0)
    # the failing chain step of a saturating network: dL/dW1 = -2.09e-7 out of terms of 2.36e10
    gradient = torch.tensor([[6.7e-15, -2.09e-7]], dtype=F64)
    scale = torch.tensor([[2.0e3, 2.36e10]], dtype=F64)
    wide = tolerances.implied_gradient(F64, 1.0, 1.0, (gradient, scale))
    assert wide.atol == pytest.approx(plain.atol + 8 * eps * 2.36e10 - rule.rtol * 2.09e-7)
    assert compare("dL/dW1", "chain", torch.tensor([[0.0, -1.91e-7]], dtype=F64), gradient,
                   wide).passed
    assert not compare("dL/dW1", "chain", torch.tensor([[0.0, -1.91e-7]], dtype=F64), gradient,
                       plain).passed
    # terms no larger than rtol * |gradient| / (8 eps) already covers: the table's tolerance
    covered = tolerances.implied_gradient(F64, 1.0, 1.0, (gradient, gradient.abs() * 100))
    assert covered == plain
    # a diverged gradient's scale is not finite: no widening
    assert tolerances.implied_gradient(
        F64, 1.0, 1.0, (gradient, torch.full_like(scale, float("inf")))) == plain


def test_command_line_overrides_apply_to_every_dtype():
    tolerances = Tolerances(rtol=0.5, atol=0.25)
    assert [(t.rtol, t.atol) for t in tolerances.table()] == [(0.5, 0.25), (0.5, 0.25)]
