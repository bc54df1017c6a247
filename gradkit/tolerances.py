"""The one tolerance table: how close a student's numbers must be, by the dtype they computed in.

A float32 solution that is right must pass, so float32 results are held to float32 accuracy.
Gradients implied by an update, (w_before - w_after) / learning_rate, lose digits to the
subtraction: ``implied_gradient`` widens the absolute tolerance by the rounding of w. A gradient
is also only known to the rounding of the terms it is computed from, which can be far larger than
the gradient (a tiny sum of large terms that cancel, a large upstream gradient times a saturated
unit's 1 - sigmoid): where rtol * |gradient| falls short of that, it widens the absolute
tolerance too (``implied_gradient``'s ``rounding``, from the reference's
``Trace.rounding_scales``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import Tensor

from gradkit.report import Tolerance


@dataclass(frozen=True)
class Rule:
    rtol: float
    atol: float


#: dtype -> (rtol, atol); settable from the command line with --rtol / --atol.
TABLE: dict[torch.dtype, Rule] = {
    torch.float64: Rule(rtol=1e-6, atol=1e-10),
    torch.float32: Rule(rtol=1e-4, atol=1e-6),
}
#: Rounding units allowed on the scale of a value's rounding: w's, which the subtraction in an
#: implied gradient amplifies by 1/learning_rate, and the gradient's own.
_ROUNDING_SLACK = 8


@dataclass(frozen=True)
class Tolerances:
    """The table in force for one run: the defaults, an assignment's per-dtype rules
    (``base``: (dtype name, rtol, atol) triples), then ``rtol``/``atol`` for every dtype."""

    rtol: float | None = None
    atol: float | None = None
    base: tuple[tuple[str, float, float], ...] = ()

    def rule(self, dtype: torch.dtype) -> Rule:
        base = TABLE.get(dtype, TABLE[torch.float32])
        for name, rtol, atol in self.base:
            if name == dtype_name(dtype if dtype in TABLE else torch.float32):
                base = Rule(rtol=rtol, atol=atol)
        if self.rtol is not None:
            base = replace(base, rtol=self.rtol)
        if self.atol is not None:
            base = replace(base, atol=self.atol)
        return base

    def values(self, dtype: torch.dtype) -> Tolerance:
        rule = self.rule(dtype)
        return Tolerance(dtype=dtype_name(dtype), rtol=rule.rtol, atol=rule.atol)

    def implied_gradient(self, dtype: torch.dtype, weight_scale: float, learning_rate: float,
                         rounding: Optional[tuple[Tensor, Tensor]] = None) -> Tolerance:
        """The tolerance of (w_before - w_after) / learning_rate computed in ``dtype``: the
        table's, with atol widened by the rounding of w (``weight_scale``: the largest |w|) and,
        where the table's rtol * |gradient| does not cover it, by the rounding of the gradient
        itself. ``rounding``: the reference's gradient and the scale of its rounding, elementwise
        (``reference.network.Trace.rounding_scales``); the widening is the least that gives every
        element ``_ROUNDING_SLACK`` * eps * its scale."""
        rule = self.rule(dtype)
        eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
        atol = rule.atol + _ROUNDING_SLACK * eps * max(weight_scale, 1.0) / learning_rate
        if rounding is not None and rounding[0].numel() and rounding[0].shape == rounding[1].shape:
            gradient, scale = rounding
            short = float((_ROUNDING_SLACK * eps * scale.to(torch.float64)
                           - rule.rtol * gradient.to(torch.float64).abs()).max())
            if math.isfinite(short) and short > 0:  # (no finite widening covers a diverged one)
                atol += short
        return Tolerance(dtype=dtype_name(dtype), rtol=rule.rtol, atol=atol)

    def updated_weight(self, dtype: torch.dtype, gradient: Tolerance, learning_rate: float,
                       gradient_scale: float) -> Tolerance:
        """The tolerance of a returned weight, w - learning_rate * g, computed in ``dtype``: the
        table's, with atol widened by learning_rate times what its implied gradient is allowed
        (``gradient``, for a gradient of at most ``gradient_scale``), so that a step whose
        implied gradient is right is not wrong as an update. Where learning_rate * |g| is far
        larger than |w| the new weight is a difference of large terms, and its error is the
        gradient's error times the learning rate, not a fraction of the small result."""
        rule = self.rule(dtype)
        widening = abs(learning_rate) * (gradient.atol + gradient.rtol * gradient_scale)
        atol = rule.atol + (widening if math.isfinite(widening) else 0.0)
        return Tolerance(dtype=dtype_name(dtype), rtol=rule.rtol, atol=atol)

    def table(self) -> list[Tolerance]:
        return [self.values(dtype) for dtype in TABLE]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


#: How closely the training loop's loss must track the reference's (a behaviour, not rounding).
TRAINING_TRACKING = Tolerance(dtype="float64", rtol=0.25, atol=0.02)
#: How closely each stretch between two checkpoints must track the reference's run from the
#: student's own previous checkpoint: rounding over 100 steps, not a whole run's drift (a
#: correct float32 loop on a run that leaves its plateau at another step than the reference's
#: is within 3e-6 of it; a loop that smooths the labels in place is 0.027 away).
STRETCH_TRACKING = Tolerance(dtype="float64", rtol=0.02, atol=1e-3)
