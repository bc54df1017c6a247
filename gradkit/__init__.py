"""gradkit: grade hand-written backpropagation, gradient by gradient.

The public surface: ``check()`` grades one submission and returns a ``Report``; the report
models describe every field of it; ``Options`` holds the grading settings, with the
``Assignment`` (``load_assignment`` reads an assignment file or a bundled name); ``assert_close`` compares tensors with gradkit's tolerances
(for instructors' own tests, with the pytest plugin's fixtures). Importing gradkit does not
import torch.
"""

__version__ = "0.1.0"

from gradkit.api import check  # noqa: E402
from gradkit.options import Options  # noqa: E402
from gradkit.report import (  # noqa: E402
    Check,
    Comparison,
    Diagnosis,
    Report,
    Tolerance,
)

from reference.assignment import Assignment, AssignmentError, load_assignment  # noqa: E402

__all__ = ["__version__", "check", "assert_close", "Check", "Comparison", "Diagnosis", "Report",
           "Tolerance", "Options", "Assignment", "AssignmentError", "load_assignment"]


def __getattr__(name: str):
    # assert_close needs torch: imported on first use, so `import gradkit` stays light
    if name == "assert_close":
        from gradkit.testing import assert_close

        return assert_close
    raise AttributeError(f"module 'gradkit' has no attribute {name!r}")
