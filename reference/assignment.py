"""The assignment description: layer sizes, parameter names and shapes, loss convention.

Everything that knows "the network is 3-4-1" reads it from here, so a course that changes a layer
size changes one number.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: How the loss that the gradients differentiate is written. The course notebook documents
#: ``half_sum``: its ``mse_loss`` returns (p - y)**2 per row, but its hand-written dL/dP is
#: P - Y, which is the derivative of L = 1/2 * sum((p - y)**2) over the batch.
LossConvention = Literal["half_sum", "sum", "half_mean", "mean"]

CONVENTION_WORDS: dict[str, str] = {
    "half_sum": "L = 1/2 * sum over the batch of (p - y)^2 (the notebook's documented gradients)",
    "sum": "L = sum over the batch of (p - y)^2 (the notebook's mse_loss, without the 1/2)",
    "half_mean": "L = 1/2 * mean over the batch of (p - y)^2 (a batch mean)",
    "mean": "L = mean over the batch of (p - y)^2 (a batch mean, without the 1/2)",
}


def convention_scale(convention: LossConvention, batch_size: int) -> float:
    """The factor by which a convention's gradients differ from the ``half_sum`` ones."""
    return {
        "half_sum": 1.0,
        "sum": 2.0,
        "half_mean": 1.0 / batch_size,
        "mean": 2.0 / batch_size,
    }[convention]


class Assignment(BaseModel):
    """A one-hidden-layer sigmoid network trained by one hand-written SGD step."""

    model_config = ConfigDict(frozen=True)

    n_inputs: int = Field(3, ge=1, description="Columns of X.")
    n_hidden: int = Field(4, ge=1, description="Hidden units (the notebook's reshape(1, 4)).")
    n_outputs: int = Field(1, ge=1, description="Columns of P.")
    loss_convention: LossConvention = Field(
        "half_sum", description="The loss whose gradients count as the documented answer."
    )
    accepted_conventions: tuple[LossConvention, ...] = Field(
        (), description="Other conventions a course accepts as correct (e.g. 'sum')."
    )

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Parameter names in the notebook's initialisation order (V, I, then W, J)."""
        return ("V", "I", "W", "J")

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, int]]:
        return {
            "V": (self.n_inputs, self.n_hidden),
            "I": (1, self.n_hidden),
            "W": (self.n_hidden, self.n_outputs),
            "J": (1, self.n_outputs),
        }


#: The course notebook's assignment.
NOTEBOOK = Assignment()
