"""Comparing a student's tensor with an expected one, in stages, as data before words.

``compare`` checks presence, shape, dtype and finiteness, then values against an elementwise
tolerance, and returns a ``Comparison`` with the numbers (max absolute and relative error, worst
index, mismatched count, tolerance used). Messages follow one layout, after torch.testing:
"Mismatched elements: 2 / 12 (16.7%) · greatest absolute difference 0.031 at index (1, 2)
(up to 1e-05 allowed)".
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from gradkit.report import Comparison, Tolerance

FLOAT_DTYPES = (torch.float32, torch.float64)
_TINY = np.finfo(np.float64).tiny


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def float64_array(t: Tensor) -> np.ndarray:
    """A tensor's values as a float64 numpy array (the tensor's own memory when it is float64).

    Comparisons work on tiny tensors, thousands of times per submission: numpy's per-operation
    cost is a fraction of torch's, and float64 arithmetic gives the same numbers in both.
    """
    t = t.detach()
    if t.dtype == torch.float64:
        return t.numpy()
    if t.dtype == torch.float32:  # exact in numpy as in torch, at a third of the cost
        return t.numpy().astype(np.float64)
    return t.to(torch.float64).numpy()


def all_finite(t: Tensor) -> bool:
    """No NaN or infinity among ``t``'s values (as float64)."""
    return bool(np.isfinite(float64_array(t)).all())


def _unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    """The index of element ``flat`` of a row-major tensor (torch.unravel_index imports sympy)."""
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size) if size else (flat, 0)
        index.append(i)
    return index[::-1]


def passes(actual: Optional[Tensor], expected: Tensor, tolerance: Tolerance, *,
           computed_in: Optional[torch.dtype] = None) -> bool:
    """Whether ``compare`` with the same arguments passes, without writing up its numbers."""
    if actual is None or actual.shape != expected.shape or \
            (computed_in or actual.dtype) not in FLOAT_DTYPES:
        return False
    a = float64_array(actual)
    if np.count_nonzero(np.isfinite(a)) != a.size:
        return False
    e = float64_array(expected)
    return not (np.abs(a - e) > tolerance.atol + tolerance.rtol * np.abs(e)).any()


def compare(
    quantity: str,
    case: str,
    actual: Optional[Tensor],
    expected: Tensor,
    tolerance: Tolerance,
    *,
    against: str = "reference",
    step: Optional[int] = None,
    problem_if_missing: str = "",
    computed_in: Optional[torch.dtype] = None,
) -> Comparison:
    """Compare ``actual`` (the student's, already rebuilt) with ``expected`` (float64).

    ``computed_in`` labels a value gradkit derived from the student's (an implied gradient, in
    float64) with the dtype the student computed in.
    """
    base = dict(quantity=quantity, case=case, step=step, against=against,
                expected_shape=list(expected.shape), total=expected.numel(), tolerance=tolerance)
    if actual is None:
        return Comparison(**base, passed=False, problem="missing",
                          message=problem_if_missing or f"{quantity} is missing")
    shape = list(actual.shape)
    if shape != list(expected.shape):
        return Comparison(**base, passed=False, problem="shape", actual_shape=shape,
                          actual_dtype=str(actual.dtype).removeprefix("torch."),
                          message=f"{quantity} has shape {tuple(shape)}, expected "
                                  f"{tuple(expected.shape)}")
    dtype = str(computed_in or actual.dtype).removeprefix("torch.")
    if (computed_in or actual.dtype) not in FLOAT_DTYPES:
        return Comparison(**base, passed=False, problem="dtype", actual_shape=shape,
                          actual_dtype=dtype,
                          message=f"{quantity} is {dtype}; gradkit expects float32 or float64")
    a = float64_array(actual).reshape(-1)
    e = float64_array(expected).reshape(-1)
    finite = np.isfinite(a)
    bad = finite.size - np.count_nonzero(finite)
    if bad:
        index = _unravel(int(finite.argmin()), tuple(expected.shape))
        return Comparison(**base, passed=False, problem="nonfinite", actual_shape=shape,
                          actual_dtype=dtype, mismatched=bad, worst_index=index,
                          message=f"{quantity} has {bad} non-finite value(s) (NaN or inf), the "
                                  f"first at index {tuple(index)}")
    diff = np.abs(a - e)
    magnitude = np.abs(e)
    allowed = tolerance.atol + tolerance.rtol * magnitude
    mismatched = int(np.count_nonzero(diff > allowed))
    # the worst element is the one furthest past its allowance
    flat = int((diff - allowed).argmax()) if diff.size else 0
    index = _unravel(flat, tuple(expected.shape))
    max_abs = float(diff.max()) if diff.size else 0.0
    with np.errstate(over="ignore"):  # a diverged value's relative error is inf, not a warning
        max_rel = float((diff / np.maximum(magnitude, _TINY)).max()) if diff.size else 0.0
    worst_e = float(e[flat]) if diff.size else None
    worst_a = float(a[flat]) if diff.size else None
    passed = mismatched == 0
    message = ""
    if not passed:
        total = e.size
        message = (f"{quantity}: mismatched elements {mismatched} / {total} "
                   f"({100 * mismatched / total:.1f}%) · greatest absolute difference "
                   f"{_fmt(max_abs)} at index {tuple(index)} (got {_fmt(worst_a)}, expected "
                   f"{_fmt(worst_e)}; up to {_fmt(float(allowed[flat]))} allowed)")
    return Comparison(**base, passed=passed, problem=None if passed else "values",
                      actual_shape=shape, actual_dtype=dtype, max_abs_error=max_abs,
                      max_rel_error=min(max_rel, 1e300), worst_index=index,
                      expected_at_worst=worst_e, actual_at_worst=worst_a,
                      mismatched=mismatched, message=message)
