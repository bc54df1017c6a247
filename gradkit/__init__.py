"""gradkit: grade hand-written backpropagation, gradient by gradient.

The public surface: ``check()`` grades one submission and returns a ``Report``; the report
models describe every field of it. Importing gradkit does not import torch.
"""

__version__ = "0.1.0"

from gradkit.api import check  # noqa: E402
from gradkit.report import (  # noqa: E402
    Check,
    Comparison,
    Diagnosis,
    Report,
    Tolerance,
)

__all__ = ["__version__", "check", "Check", "Comparison", "Diagnosis", "Report", "Tolerance"]
