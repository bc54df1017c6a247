"""The numbers behind every verdict, computed in numpy, against the same rules written in torch.

Comparison and diagnosis work on tiny tensors thousands of times per submission, so they compute in
numpy (``compare.float64_array``). These tests hold them to the plain torch formulation of each
rule, on ordinary values and on the ones that need care: NaN, infinities, -0.0, values whose
difference overflows, a zero rtol, float32 inputs.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from gradkit.compare import all_finite, compare, passes
from gradkit.diagnosis.intermediates import (StepCheck, _judge, allowance, close, distinct, fit_factor, holds,
                                   within)
from gradkit.report import Tolerance

F64 = torch.float64
INF, NAN = float("inf"), float("nan")

TOLERANCES = [
    Tolerance(dtype="float64", rtol=1e-6, atol=1e-10),
    Tolerance(dtype="float32", rtol=1e-4, atol=1e-6),
    Tolerance(dtype="float64", rtol=0.0, atol=1e-3),
    Tolerance(dtype="float64", rtol=0.5, atol=0.0),
]


def _values() -> list[torch.Tensor]:
    """Pairs of interest come from combining these with each other and with small changes."""
    g = torch.Generator().manual_seed(7)
    ordinary = torch.randn(3, 4, generator=g, dtype=F64)
    return [
        ordinary,
        ordinary * (1 + 1e-7),
        ordinary + 1e-3,
        -ordinary,
        torch.zeros(3, 4, dtype=F64),
        torch.full((3, 4), -0.0, dtype=F64),
        torch.where(ordinary > 0, INF, ordinary),
        torch.where(ordinary > 0, NAN, ordinary),
        torch.where(ordinary > 0, -INF, ordinary),
        ordinary * 1e308,
        -ordinary * 1e308,
        ordinary.float().to(F64),
    ]


VALUES = _values()
PAIRS = list(itertools.product(range(len(VALUES)), repeat=2))


def _torch_within(actual, expected, allowed) -> bool:
    """The rule in torch: every element within its allowance, or equal (NaN equals NaN)."""
    if actual.shape != expected.shape:
        return False
    a, e = actual.to(F64), expected.to(F64)
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    return bool((same | ((a - e).abs() <= allowed.to(F64))).all())


@pytest.mark.parametrize("tolerance", TOLERANCES)
def test_close_within_and_distinct_follow_the_torch_rules(tolerance):
    for i, j in PAIRS:
        actual, expected = VALUES[i], VALUES[j]
        allowed = allowance(expected, tolerance)
        rule = _torch_within(actual, expected, allowed)
        assert close(actual, expected, tolerance) == rule, (i, j)
        assert within(actual, expected, allowed) == rule, (i, j)
        a, b = actual, expected
        if bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
            rule = bool(((a - b).abs() > 4.0 * allowance(b, tolerance)).any())
        else:
            rule = not bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
        assert distinct(actual, expected, tolerance) == rule, (i, j)
    assert not close(None, VALUES[0], tolerance)
    assert not close(VALUES[0][:2], VALUES[0], tolerance)


@pytest.mark.parametrize("tolerance", TOLERANCES)
def test_passes_is_what_compare_decides(tolerance):
    for i, j in PAIRS:
        for actual in (VALUES[i], VALUES[i].float()):
            expected = VALUES[j]
            with np.errstate(all="ignore"):  # both warn alike where a difference overflows
                assert passes(actual, expected, tolerance) == \
                    compare("q", "c", actual, expected, tolerance).passed, (i, j, actual.dtype)
    assert not passes(None, VALUES[0], TOLERANCES[0])
    assert not passes(VALUES[0].T, VALUES[0], TOLERANCES[0])
    assert not passes(VALUES[0].to(torch.float16), VALUES[0], TOLERANCES[0])


def test_all_finite():
    assert all_finite(VALUES[0]) and all_finite(VALUES[0].float())
    assert all_finite(torch.empty(0, 3))
    assert not any(all_finite(VALUES[k]) for k in (6, 7, 8))
    assert all_finite(torch.tensor([1, 2])) and not all_finite(torch.tensor([1.0, NAN]).half())


@pytest.mark.parametrize("tolerance", TOLERANCES)
def test_a_step_is_judged_with_its_magnitude_only_when_it_needs_it(tolerance):
    """The localisation widens a step's allowance by its magnitude only for a value the plain
    allowance rejects: the verdict is the one the widened allowance gives."""
    magnitudes = [VALUES[0].abs() * 10, torch.ones(3, 4, dtype=F64), VALUES[6].abs(),
                  VALUES[7].abs(), (VALUES[9] * 10).abs(), torch.zeros(3, 4, dtype=F64)]
    for (i, j), magnitude in itertools.product(PAIRS, magnitudes):
        actual, expected = VALUES[i], VALUES[j]
        # a NaN in the magnitude comes with one in the expected value, as in any real step
        expected = torch.where(torch.isnan(magnitude), NAN, expected)
        asked = []

        def scale():
            asked.append(True)
            return magnitude

        check = _judge("dLdW", None, actual, expected, tolerance, (),  # type: ignore[arg-type]
                       scale)
        wide = _torch_within(actual, expected, allowance(expected, tolerance, magnitude))
        assert isinstance(check, StepCheck)
        assert check.status == ("right" if wide else "wrong"), (i, j)
        if asked and tolerance.rtol > 0:
            assert not _torch_within(actual, expected, allowance(expected, tolerance))


def _torch_fit(pairs):
    """fit_factor's least squares, each call's allowance computed on its own."""
    actual = torch.cat([a.to(F64).reshape(-1) for a, _, _ in pairs])
    expected = torch.cat([e.to(F64).reshape(-1) for _, e, _ in pairs])
    weight = torch.cat([1.0 / allowance(e.to(F64), t).reshape(-1) ** 2 for _, e, t in pairs])
    c = float((weight * actual) @ expected) / float((weight * expected) @ expected)
    residual = float((actual - c * expected).norm()) / float(actual.norm())
    return c, residual


def test_fit_factor_and_holds_give_the_torch_numbers():
    g = torch.Generator().manual_seed(3)
    shapes = [(3, 4), (1, 4), (4, 1), (1, 1)]
    for trial in range(20):
        pairs = []
        for k in range(1 + trial % 7):
            expected = torch.randn(shapes[k % 4], generator=g, dtype=F64) * 10.0 ** (k - 3)
            actual = (-0.5 + trial / 10) * expected + 1e-9 * torch.randn(
                expected.shape, generator=g, dtype=F64)
            pairs.append((actual.float() if k % 3 == 2 else actual, expected,
                          TOLERANCES[(trial + k) % len(TOLERANCES)]))
        fit = fit_factor(pairs)
        assert fit is not None
        assert (fit.factor, fit.residual) == _torch_fit(pairs)
        for factor in (fit.factor, round(fit.factor, 2), -fit.factor):
            rule = all(_torch_within(a.to(F64), factor * e, allowance(factor * e, t))
                       for a, e, t in pairs)
            assert holds(pairs, factor) == rule
