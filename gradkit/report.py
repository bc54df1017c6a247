"""The report: one versioned pydantic model, the single source of truth for every output.

Renderers (terminal, JSON, Gradescope, JUnit, GitHub Actions) are pure functions of a ``Report``;
none recomputes a score or a verdict. ``FORMAT_VERSION`` changes whenever the schema does (a test
pins the schema), and ``Report.migrate`` upgrades older reports on load.

Text from the submission is typed ``Untrusted``: every string a submission can put words into
(its exception messages and tracebacks, what it printed, its file and variable names, its source
lines, and every gradkit message that quotes any of these) is ``Annotated[str, UNTRUSTED]``. In
JSON it is a plain string; the schema marks it ``"x-gradkit-untrusted": true``. Renderers show it
only through ``gradkit.render.untrusted`` (one neutraliser per output), and
``tests/test_untrusted_text.py`` fails when a string field is neither marked nor listed there as
gradkit's own words.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field, model_validator

FORMAT_VERSION = "2.0"


class UntrustedMark:
    """``Annotated`` metadata: this string (or every string inside this container) came from the
    submission, and no output may show it without ``gradkit.render.untrusted``."""

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        schema["x-gradkit-untrusted"] = True
        return schema

    def __repr__(self) -> str:
        return "UNTRUSTED"


UNTRUSTED = UntrustedMark()
_SURROGATE = re.compile("[\ud800-\udfff]")


def no_lone_surrogates(text: str) -> str:
    """A submission's message can hold lone surrogates, which no UTF-8 output (JSON included)
    can carry: each is kept as its visible escape (``\\udc80``)."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


#: A string the submission wrote, or a gradkit message that quotes one (see the module docstring).
Untrusted = Annotated[str, UNTRUSTED, AfterValidator(no_lone_surrogates)]

CheckStatus = Literal["pass", "fail", "error", "skipped"]
CheckGroup = Literal["load", "predict", "gradient", "update", "dtype", "init", "training",
                     "side_effects", "policy"]

#: Exit codes of ``gradkit check`` (also in the README).
EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tolerance(_Model):
    """An elementwise tolerance: |actual - expected| <= atol + rtol * |expected|."""

    dtype: str = Field(description="The dtype the compared values were computed in.")
    rtol: float
    atol: float


class Comparison(_Model):
    """One tensor compared with its expected value, in stages: presence, shape, dtype, values."""

    quantity: Untrusted = Field(description="What was compared, e.g. 'dL/dW (implied by the "
                                "update)'; it can name the student's variable.")
    case: str = Field(description="Case id (see Report.cases).")
    step: Optional[int] = Field(None, description="Step within a chain or training loop.")
    against: Literal["reference", "autograd", "finite_differences", "rule"] = "reference"
    passed: bool
    problem: Optional[Literal["missing", "type", "shape", "dtype", "nonfinite", "values"]] = None
    expected_shape: list[int] = Field(default_factory=list)
    actual_shape: Optional[list[int]] = None
    actual_dtype: Optional[str] = None
    max_abs_error: Optional[float] = None
    max_rel_error: Optional[float] = None
    worst_index: Optional[list[int]] = None
    expected_at_worst: Optional[float] = None
    actual_at_worst: Optional[float] = None
    mismatched: int = 0
    total: int = 0
    tolerance: Optional[Tolerance] = None
    message: Untrusted = ""


class SourceLocation(_Model):
    file: Untrusted
    line: Optional[int] = None
    column: Optional[int] = None
    cell: Optional[int] = Field(None, description="Notebook cell (1-based), for .ipynb files.")
    cell_line: Optional[int] = None
    code: Untrusted = Field("", description="The line of source, stripped.")


class Check(_Model):
    """One graded check: a group of comparisons with points and a verdict."""

    id: str = Field(description="Stable id, e.g. 'gradient.W'.")
    group: CheckGroup
    title: str
    status: CheckStatus
    points: float = Field(description="Points awarded (partial credit: cases passed / run).")
    max_points: float
    message: Untrusted = Field("", description="What is wrong, in words; empty when it passes.")
    hint: str = Field("", description="What to look at or try.")
    location: Optional[SourceLocation] = None
    cases_passed: int = 0
    cases_run: int = 0
    comparisons: list[Comparison] = Field(default_factory=list)


class IntermediateResult(_Model):
    """One of the notebook's intermediates (dLdP ... dLdI) captured from train_neural_net."""

    name: str
    status: Literal["match", "mismatch", "not_found"]
    found_as: Optional[Untrusted] = Field(None, description="The student's variable that held it.")
    matched_by: Optional[Literal["name", "value"]] = None
    location: Optional[SourceLocation] = None
    comparison: Optional[Comparison] = None


class Evidence(_Model):
    factor: Optional[float] = Field(None, description="c in student = c * reference, if fitted.")
    residual: Optional[float] = Field(None, description="Relative residual of the fit or match.")
    cases: list[str] = Field(default_factory=list)
    details: Annotated[dict[str, Any], UNTRUSTED] = Field(default_factory=dict)


class Diagnosis(_Model):
    """A likely mistake, named from the numbers (never from message strings)."""

    code: str = Field(description="Stable code, e.g. 'GK201'; `gradkit explain CODE` prints more.")
    title: str
    message: Untrusted = Field(description="Plain words for the student.")
    severity: Literal["error", "warning", "info"] = "error"
    quantities: list[str] = Field(default_factory=list)
    evidence: Evidence = Field(default_factory=Evidence)
    location: Optional[SourceLocation] = None
    explanation: str = ""


class CaseInfo(_Model):
    id: str
    kind: Literal["step", "chain", "init", "predict", "training"]
    description: str
    seed: int
    batch_size: int
    dtype: str
    learning_rate: Optional[float] = None
    steps: int = 1


class SubmissionInfo(_Model):
    path: Untrusted
    kind: Literal["py", "ipynb", "unknown"]
    sha256: Optional[str] = None
    size: Optional[int] = None


class Isolation(_Model):
    """What the sandbox achieved on this machine (see the README, "Isolation and limits")."""

    backend: Literal["linux", "portable"] = Field(
        "linux", description="The sandbox backend that ran the submission: 'linux' (namespaces, "
        "seccomp, a forked worker) or 'portable' (a fresh interpreter per run, for macOS and "
        "Windows). Reports of format 1.0 were all made by 'linux'.")
    process: str = Field("not started", description="Process, session and PID namespace.")
    user: str = Field("", description="Who the submission ran as.")
    network: str = ""
    filesystem: str = Field("", description="What the submission could write, and what was hidden.")
    syscalls: str = Field("", description="The system-call filter, if one was installed.")
    limits: list[str] = Field(default_factory=list, description="The rlimits that were set.")
    namespaces: list[str] = Field(
        default_factory=list, description="The Linux namespaces the run had of its own (user, "
        "pid, mount, ipc, network).")
    landlock: str = Field("", description="What Landlock restricted, where no user namespace "
                                         "was allowed (empty where it was not needed).")
    exposed: list[str] = Field(
        default_factory=list, description="What this run could reach that the default "
        "confinement keeps from it, one plain sentence each ('files: your home is readable by "
        "the submission'); empty when the run was fully confined.")


class Output(_Model):
    stdout: Untrusted = ""
    stderr: Untrusted = ""
    truncated_bytes: int = 0


# -- data for the pictures (gradkit.render.html): numbers only, bounded in size ---------------

#: A gradient is kept for pictures only when it has at most this many entries.
MAX_PICTURE_ENTRIES = 1024


class GradientPicture(_Model):
    """One parameter's gradient, expected and the student's, in the case that shows its mistake
    most clearly (the most entries outside tolerance, then the largest error on two matrices of
    comparable size). Row-major matrices of the parameter's shape (a vector is one row)."""

    parameter: str = Field(description="The parameter, as in the assignment (e.g. 'V').")
    quantity: str = Field(description="What the matrices are, e.g. 'dL/dV'.")
    case: str = Field(description="Case id (see Report.cases).")
    step: Optional[int] = Field(None, description="Step within a chain, if the case is one.")
    expected: list[list[float]] = Field(description="The reference's gradient (float64).")
    actual: list[list[float]] = Field(description="The gradient the student's update implies.")
    worst_index: list[int] = Field(description="(row, column) of the largest difference.")
    tolerance: Tolerance


class TrainingCurve(_Model):
    """The assignment's training loop run with the student's function and with the reference."""

    case: str = Field(description="Case id of the training case.")
    steps: list[int] = Field(description="The training steps at which the loss was measured.")
    student_loss: list[Optional[float]] = Field(
        description="The training loss (``loss``) of the student's weights at each step (None "
        "where not finite).")
    reference_loss: list[float] = Field(description="The same with the reference's weights.")
    predictions: list[Optional[float]] = Field(
        description="P on each row after the last step, student's weights (None: not finite).")
    labels: list[float] = Field(description="Y on each row.")
    threshold: float = Field(0.5, description="A row counts as class 1 when P exceeds this.")
    loss: Literal["mean cross-entropy", "mean squared error"] = Field(
        "mean cross-entropy", description="What student_loss and reference_loss measure.")
    outputs: int = Field(1, ge=1, description="Outputs per row: predictions and labels are "
                         "row by row, each row's outputs in order.")


class Plots(_Model):
    """What the visual views draw, beyond the checks: the numbers behind the pictures."""

    gradients: list[GradientPicture] = Field(
        default_factory=list, description="One per parameter whose gradient is wrong.")
    training: Optional[TrainingCurve] = None


class Report(_Model):
    """Everything gradkit found about one submission."""

    format_version: Literal["2.0"] = FORMAT_VERSION
    gradkit_version: str
    torch_version: str
    python_version: str
    submission: SubmissionInfo
    assignment: dict[str, Any] = Field(default_factory=dict)
    tolerances: list[Tolerance] = Field(default_factory=list)
    cases: list[CaseInfo] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    intermediates: list[IntermediateResult] = Field(default_factory=list)
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    output: Output = Field(default_factory=Output)
    isolation: Isolation = Field(default_factory=Isolation)
    duration_seconds: float = 0.0
    error: Optional[Untrusted] = Field(None, description="gradkit's own failure, if it had one "
                                       "(it can quote the submission).")
    plots: Plots = Field(default_factory=Plots,
                         description="Numbers for the pictures of the HTML view (format 2.0).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def score(self) -> float:
        return round(sum(c.points for c in self.checks), 6)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_score(self) -> float:
        return round(sum(c.max_points for c in self.checks), 6)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(
            c.status in ("pass", "skipped") for c in self.checks)

    @property
    def return_code(self) -> int:
        if self.error is not None:
            return EXIT_INTERNAL
        return EXIT_PASSED if self.passed else EXIT_FAILED

    def check(self, check_id: str) -> Check:
        return next(c for c in self.checks if c.id == check_id)

    @model_validator(mode="before")
    @classmethod
    def migrate(cls, data: Any) -> Any:
        """Upgrade older report formats; drop the computed fields a dump carries."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("score", "max_score", "passed")}
            if data.get("format_version") == "1.0":
                # 2.0 adds fields (with defaults) and values (the dtype check group)
                data["format_version"] = FORMAT_VERSION
        return data
