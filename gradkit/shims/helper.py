"""The course notebook's ``helper`` module, as gradkit provides it to a submission.

gradkit appends this folder to a submission's ``sys.path``, so ``from helper import sigmoid, to_2d``
in a student's file finds these. They behave as the original course helpers did. Self-contained:
it imports nothing but torch.
"""

import torch
from torch import Tensor

__all__ = ["sigmoid", "to_2d"]


def sigmoid(x: Tensor, deriv: bool = False) -> Tensor:
    """1 / (1 + exp(-x)) elementwise; with ``deriv=True``, sigmoid(x) * (1 - sigmoid(x)).

    ``x`` is the pre-activation in both cases: the derivative is taken at the same x, not applied
    to an already-computed sigmoid.
    """
    # The original's formula, 1.0 / (1.0 + torch.exp(-x)) and s * (1.0 - s), bit for bit: the
    # reflected operators `1.0 / t` and `1.0 - t` dispatch to these same kernels (reciprocal,
    # then a product with 1.0; rsub), here called without their Python wrappers, which cost a
    # third of a student's training step.
    s = torch.reciprocal(1.0 + torch.exp(-x))
    if deriv:
        return s * torch.rsub(s, 1.0)
    return s


def to_2d(a: Tensor, type: str = "col") -> Tensor:
    """A 1-D tensor of length n as a column (n, 1) (``type="col"``) or a row (1, n) ("row")."""
    assert a.dim() == 1, "Input tensors must be 1 dimensional"
    if type == "col":
        return a.reshape(-1, 1)
    if type == "row":
        return a.reshape(1, -1)
    raise ValueError(f"type must be 'col' or 'row', not {type!r}")
