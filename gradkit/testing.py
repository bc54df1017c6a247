"""For instructors' own tests: the reference network, and comparing tensors the way gradkit does.

``assert_close`` uses gradkit's tolerance table (by the dtype the student computed in) and its
message layout ("mismatched elements 2 / 12 (16.7%) · greatest absolute difference ..."), and
says which tolerance it used. ``Reference`` is the course network done right. The pytest plugin
hands both out as fixtures (``gradkit_reference``); import ``assert_close`` from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import Tensor

from gradkit.compare import compare
from gradkit.report import Comparison, Tolerance
from gradkit.tolerances import Tolerances
from reference import network
from reference.assignment import NOTEBOOK, Assignment

__all__ = ["Reference", "assert_close"]


def _tolerance(actual: Any, rtol: Optional[float], atol: Optional[float]) -> Tolerance:
    dtype = actual.dtype if isinstance(actual, Tensor) and actual.is_floating_point() \
        else torch.float64
    return Tolerances(rtol=rtol, atol=atol).values(dtype)


def _one(actual: Any, expected: Any, quantity: str, rtol: Optional[float],
         atol: Optional[float]) -> Comparison:
    expected_t = torch.as_tensor(expected).detach()
    if actual is not None and not isinstance(actual, Tensor):
        try:
            actual = torch.as_tensor(actual)
        except (TypeError, ValueError, RuntimeError):
            return Comparison(quantity=quantity, case="", passed=False, problem="type",
                              expected_shape=list(expected_t.shape),
                              message=f"{quantity} is a {type(actual).__name__}, not a tensor")
    tolerance = _tolerance(actual, rtol, atol)
    return compare(quantity, "", None if actual is None else actual.detach(),
                   expected_t.to(torch.float64), tolerance)


def assert_close(actual: Any, expected: Any, *, quantity: str = "value",
                 rtol: Optional[float] = None, atol: Optional[float] = None) -> None:
    """Assert that ``actual`` matches ``expected`` within gradkit's tolerances.

    Tensors (or anything ``torch.as_tensor`` takes), or dicts of them such as weights: every key
    of ``expected`` must be in ``actual``. The tolerance is the table's for the dtype ``actual``
    was computed in (float64: rtol 1e-6, atol 1e-10; float32: rtol 1e-4, atol 1e-6) unless
    ``rtol``/``atol`` say otherwise. Raises ``AssertionError`` with gradkit's message.
    """
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            raise AssertionError(f"{quantity} is a {type(actual).__name__}, expected a dict "
                                 f"with keys {sorted(expected)}")
        results = [_one(actual.get(key), value, f"{quantity}[{key!r}]", rtol, atol)
                   for key, value in expected.items()]
    else:
        results = [_one(actual, expected, quantity, rtol, atol)]
    failed = [r for r in results if not r.passed]
    if failed:
        lines = []
        for r in failed:
            t = r.tolerance
            used = f" [{t.dtype} tolerance: rtol={t.rtol:g}, atol={t.atol:g}]" if t else ""
            lines.append(r.message + used)
        raise AssertionError("\n".join(lines))


class Reference:
    """An assignment's network done right (``reference.network``; default: the course
    notebook's); the ``gradkit_reference`` fixture.

    Unlike the notebook, the notebook's forward pass uses ``weights['I']`` and ``weights['J']``;
    its gradients are those of L = 1/2 sum (p - y)^2 over the batch.
    """

    def __init__(self, assignment: Optional[Assignment] = None) -> None:
        self.assignment = assignment or NOTEBOOK

    def train(self, X: Tensor, Y: Tensor, weights: Optional[Mapping[str, Tensor]] = None,
              learning_rate: float = 1.0) -> dict[str, Tensor]:
        """One SGD step: the updated weights, in the dtype of X."""
        return network.train(self.assignment, X, Y, dict(weights) if weights else None,
                             learning_rate)

    def predict(self, X: Tensor, weights: Mapping[str, Tensor]) -> Tensor:
        return network.predict(self.assignment, X, dict(weights))

    def gradients(self, X: Tensor, Y: Tensor, weights: Mapping[str, Tensor]
                  ) -> dict[str, Tensor]:
        """Every parameter's gradient from the hand-written backward pass, in float64."""
        from reference.oracles import hand_written_gradients

        return hand_written_gradients(X, Y, dict(weights), assignment=self.assignment)

    def weights(self, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
        """Reproducible ``randn`` weights of the right shapes (the notebook's V, I, W, J)."""
        g = torch.Generator().manual_seed(seed)
        return {name: torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
                for name, shape in self.assignment.parameter_shapes.items()}

    def __repr__(self) -> str:
        return (f"<gradkit reference network ({self.assignment.name}), parameters "
                f"{list(self.assignment.parameter_names)}>")


def describe_tolerances() -> str:
    """The tolerance table, in words (for a test's header)."""
    table = Tolerances().table()
    return ", ".join(f"{t.dtype}: rtol={t.rtol:g}, atol={t.atol:g}" for t in table)
