"""Calling a student's functions on your own tensors, inside the sandbox.

``StudentFunctions`` is the handle behind the pytest plugin's ``gradkit_student`` fixture: each
call builds an ad-hoc ``Case`` from the caller's tensors, runs it in a fresh child of the sandbox
(the same isolation, limits and wire format as ``check()``) and rebuilds what came back as plain
``torch.Tensor`` objects. Nothing the student defines reaches the caller's process.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

from gradkit.loader import LoadError, Submission, load_submission
from gradkit.sandbox import Limits, SandboxBackend, prepare_workdir

#: What a weights dict maps to: the parameter names V, I, W, J.
Weights = dict[str, Any]


class SubmissionError(AssertionError):
    """The student's code did not return a usable result: it raised, crashed or returned junk.

    An ``AssertionError``, so a pytest test that calls the student fails (rather than errors)
    with this message. ``line`` is the student's line where it raised, when known. The message
    quotes the submission, so its controls are made visible and no line of it is a workflow
    command (``gradkit.render.untrusted``): pytest prints it to people and to CI logs.
    """

    def __init__(self, message: str, line: Optional[int] = None) -> None:
        from gradkit.render.untrusted import command_safe, visible

        message = command_safe(visible(message, keep="\n"))
        super().__init__(message)
        self.message = message
        self.line = line


class StudentFunctions:
    """A submission's train and predict functions (the assignment's names: the notebook's
    ``train_neural_net`` and ``neural_net_predict`` by default), run in the sandbox.

    Every call starts a fresh child (the student's file is loaded again), so calls share no
    state. ``siblings`` copies the files next to the submission into its working folder, as
    ``check()`` does.
    """

    def __init__(self, path: str | Path, sandbox: SandboxBackend, *, limits: Limits = Limits(),
                 siblings: bool = True, assignment=None) -> None:
        from reference.assignment import NOTEBOOK

        self.assignment = assignment or NOTEBOOK
        self.path = Path(path)
        self.sandbox = sandbox
        self.limits = limits
        self.siblings = siblings
        self._submission: Optional[Submission] = None

    @property
    def submission(self) -> Submission:
        if self._submission is None:
            try:
                self._submission = load_submission(self.path)
            except LoadError as exc:
                raise SubmissionError(exc.message, exc.line) from None
        return self._submission

    def train(self, X, Y, weights: Optional[Weights] = None, learning_rate: float = 1.0, *,
              seed: int = 70318) -> dict[str, Any]:
        """``train(X, Y, weights, learning_rate)`` (the assignment's train function): the
        weights it returned.

        With ``weights=None`` the call runs after ``torch.manual_seed(seed)``, so the weights the
        student draws are reproducible. Raises ``SubmissionError`` if the call raised or did not
        return a dict of tensors.
        """
        import torch

        from gradkit.cases import Case

        X, Y = _tensor("X", X), _tensor("Y", Y)
        given = None if weights is None else {str(k): _tensor(f"weights[{k!r}]", v)
                                              for k, v in weights.items()}
        case = Case(id="call", kind="step" if given is not None else "init",
                    description="an ad-hoc call", seed=int(seed), X=X, Y=Y, weights=given,
                    learning_rate=float(learning_rate), capture=False)
        train = self.assignment.functions.train
        returned = self._call(case, train)
        if returned.kind != "dict" or not all(v.kind == "array" for v in returned.items.values()):
            raise SubmissionError(f"{train} returned {returned.describe()}, not a dict of "
                                  "tensors")
        return {name: value.tensor for name, value in returned.items.items()
                if isinstance(value.tensor, torch.Tensor)}

    def predict(self, X, weights: Weights):
        """``predict(X, weights)`` (the assignment's predict function): the tensor it returned."""
        from gradkit.cases import Case

        X = _tensor("X", X)
        given = {str(k): _tensor(f"weights[{k!r}]", v) for k, v in weights.items()}
        case = Case(id="call", kind="predict", description="an ad-hoc call", seed=0, X=X,
                    weights=given, capture=False)
        predict = self.assignment.functions.predict
        returned = self._call(case, predict)
        if returned.kind != "array":
            raise SubmissionError(f"{predict} returned {returned.describe()}, not a tensor")
        return returned.tensor

    def _call(self, case, function: str):
        from gradkit.plan import build_request, read_call

        submission = self.submission
        if submission.syntax_error is not None:
            raise SubmissionError(submission.syntax_error.message, submission.syntax_error.line)
        workdir = prepare_workdir(submission.path, self.siblings)
        try:
            functions = self.assignment.functions
            request, payload = build_request((case,), submission.source, str(submission.path),
                                             str(workdir),
                                             functions=(functions.train, functions.predict))
            outcome = self.sandbox.run(request, payload, self.limits, [case.id])
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        stopped = outcome.killed or outcome.fault or (
            None if outcome.exit.get("code") == 0 else f"the submission's process "
                                                       f"{outcome.exit_words}")
        load = next((f.header for f in outcome.frames if f.header.get("type") == "load"), None)
        if load is None:
            raise SubmissionError(f"loading {submission.path.name} failed: "
                                  f"{stopped or 'it sent nothing back'}")
        if not load.get("ok"):
            raise _raised("loading the file", load.get("error"), submission)
        state = (load.get("functions") or {}).get(function, "missing")
        if state != "ok":
            raise SubmissionError(f"{function} {'is not defined' if state == 'missing' else state}")
        frame = next((f for f in outcome.frames if f.header.get("type") == "call"), None)
        if frame is None:
            raise SubmissionError(f"{function} produced no result: {stopped or 'no reply'}")
        result = read_call(frame)
        if result.error:
            raise _raised(function, result.error, submission)
        if not result.steps:
            raise SubmissionError(f"{function} produced no result")
        return result.steps[0].returned


def _tensor(name: str, value: Any):
    import torch

    if isinstance(value, torch.Tensor):
        return torch.Tensor.detach(value).clone()
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor (or convertible to one), not "
                        f"{type(value).__name__}") from None


def _raised(what: str, error: Any, submission: Submission) -> SubmissionError:
    error = error if isinstance(error, dict) else {"type": "?", "message": str(error)}
    line = error.get("line") if isinstance(error.get("line"), int) else None
    message = f"{what} raised {error.get('type')}: {error.get('message')}"
    if line:
        message += f" at {submission.where(line)}"
    trace = error.get("traceback") or []
    if trace:
        message += "\n  " + "\n  ".join(str(t) for t in trace)
    return SubmissionError(message, line)
