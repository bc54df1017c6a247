"""``check()``: grade one submission and return its report.

The order matters for speed: the sandbox's worker starts first (it imports torch in its own
process), then the grader imports torch and builds cases and expectations while it loads.
"""

from __future__ import annotations

import platform
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from gradkit import __version__
from gradkit.sandbox import wire
from gradkit.loader import LoadError, Submission, load_submission
from gradkit.options import Options
from gradkit.report import (Check, Isolation, Output, Report, SourceLocation, SubmissionInfo)
from gradkit.sandbox.backend import (Limits, RunOutcome, SandboxBackend, open_sandbox,
                                     prepare_workdir)


def _torch_version() -> str:
    import torch

    return torch.__version__


def _base_report(path: Path, submission: Optional[Submission]) -> Report:
    import sys

    return Report(
        gradkit_version=__version__, torch_version=_torch_version(),
        python_version=platform.python_version() or sys.version.split()[0],
        submission=SubmissionInfo(
            path=str(path), kind=submission.kind if submission else "unknown",
            sha256=submission.sha256 if submission else None,
            size=submission.size if submission else None),
    )


def _load_check(options: Options, status: str, message: str, hint: str = "",
                location: Optional[SourceLocation] = None) -> Check:
    from gradkit.grading import hints, titles

    return Check(id="load", group="load", title=titles(options.assignment)["load"],
                 status=status, points=0.0, max_points=0.0, message=message,
                 hint=hint or (hints(options.assignment)["load"] if message else ""),
                 location=location)


def _not_run(reason: str, options: Options) -> list[Check]:
    from gradkit.grading import titles

    points = options.check_points
    return [Check(id=check_id, group=check_id.split(".")[0], title=title,
                  status="error", points=0.0, max_points=float(points.get(check_id, 0)),
                  message=f"not run: {reason}")
            for check_id, title in titles(options.assignment).items() if check_id != "load"]


def check(
    path: str | Path,
    *,
    options: Optional[Options] = None,
    assignment=None,
    tolerances=None,
    points: Optional[dict[str, float]] = None,
    limits: Optional[Limits] = None,
    sandbox: Optional[SandboxBackend | str] = None,
    siblings: bool = True,
    accept_conventions: tuple[str, ...] = (),
    allow_autograd: bool = False,
    credit_upstream: bool = False,
) -> Report:
    """Run a submission (.py or .ipynb) on every case and return its report.

    Never raises for anything the submission does: a missing file, a syntax error, an exception,
    a crash or a timeout all come back as failed checks in a valid report. ``report.error`` is set
    only when gradkit itself failed.

    The grading settings are one ``gradkit.options.Options`` (``options``); the keyword
    arguments build one when it is not given: ``assignment`` (an ``Assignment``, or a path or
    bundled name of an assignment file; default the notebook's), ``tolerances``, ``points``,
    ``limits``, ``accept_conventions`` (loss conventions such as 'sum' whose gradients also count
    as correct), ``allow_autograd`` (autograd use, reported in the ``policy`` check, does not
    fail the submission), ``credit_upstream`` (a gradient wrong only because of an earlier wrong
    step, charged to another check, keeps its credit). Raises ``AssignmentError`` or pydantic's
    ``ValidationError`` for settings that cannot be used.
    ``sandbox``: a backend from ``gradkit.sandbox.open_sandbox`` to run it in (kept open for
    the next call), or the name of one ('auto', 'linux', 'portable': ``options.sandbox``);
    by default the one ``options.sandbox`` names (``$GRADKIT_SANDBOX``, else ``auto``) is
    opened for this call and closed after it.
    """
    name = sandbox if isinstance(sandbox, str) else None
    if isinstance(sandbox, str):
        sandbox = None
    if options is None:
        options = Options.build(assignment=assignment, tolerances=tolerances, points=points,
                                limits=limits, accept_conventions=tuple(accept_conventions),
                                allow_autograd=allow_autograd, credit_upstream=credit_upstream,
                                sandbox=name)
    elif name is not None:
        options = Options.model_validate({**dict(options), "sandbox": name})
    started = time.monotonic()
    path = Path(path)
    own = sandbox is None
    try:
        sandbox = sandbox or open_sandbox(options.sandbox)
        try:
            report = _check(path, options, sandbox, siblings)
        finally:
            if own:
                sandbox.close()
    except Exception as exc:  # gradkit's own bug: still a valid report, and the exit code says so
        import traceback

        report = _base_report(path, None)
        report.error = f"gradkit failed: {type(exc).__name__}: {exc}\n" + \
            "".join(traceback.format_exc(limit=-6))
    if sandbox is not None:
        report.isolation.backend = sandbox.name
    report.duration_seconds = round(time.monotonic() - started, 4)
    return report


def _check(path: Path, options: Options, sandbox: SandboxBackend, siblings: bool) -> Report:
    from gradkit.cases import build_cases

    try:
        submission = load_submission(path)
    except LoadError as exc:
        report = _base_report(path, None)
        report.assignment = options.assignment.info()
        report.checks = [_load_check(options, "error", exc.message)] + _not_run(
            "the file could not be read", options)
        return report
    report = _base_report(path, submission)
    cases = build_cases(options.assignment)
    report.tolerances = options.tolerances.table()
    report.cases = [_case_info(case) for case in cases]
    report.assignment = options.assignment.info()
    if submission.syntax_error is not None:
        error = submission.syntax_error
        report.checks = [_load_check(options, "error", error.message,
                                     "Fix the syntax error, then run gradkit again.",
                                     submission.location(error.line, error.column))]
        report.checks += _not_run("the file has a syntax error", options)
        return report
    outcome, interrupted = _run(submission, cases, options, sandbox, siblings)
    _finish(report, submission, cases, outcome, options, interrupted)
    from gradkit import policy

    policy_check, failing = policy.evaluate(submission, [f.header for f in outcome.frames],
                                            options.allow_autograd)
    report.checks.append(policy_check)
    policy.withhold(report.checks, failing)
    return report


def _case_info(case):
    from gradkit.report import CaseInfo
    from gradkit.tolerances import dtype_name

    steps = len(case.batches) if case.kind == "chain" else (
        len(case.rows) if case.rows is not None else (2 if case.repeat else 1))
    return CaseInfo(id=case.id, kind=case.kind, description=case.description, seed=case.seed,
                    batch_size=case.batch_size, dtype=dtype_name(case.dtype),
                    learning_rate=None if case.kind == "predict" else case.learning_rate,
                    steps=steps)


#: How many times a run that stopped in one call (a timeout, a crash) is resumed in a fresh
#: child with the calls it did not reach, so one hanging case does not cost every later one.
MAX_RESUMES = 2


def _run(submission: Submission, cases, options: Options, sandbox: SandboxBackend,
         siblings: bool) -> tuple[RunOutcome, dict[str, str]]:
    """Run every case; returns the (merged) outcome and, for each case a run stopped in, why."""
    from gradkit.expected import prepare
    from gradkit.plan import build_request

    limits = options.limits
    functions = (options.assignment.functions.train, options.assignment.functions.predict)
    workdir = prepare_workdir(submission.path, siblings)
    started = time.monotonic()
    interrupted: dict[str, str] = {}
    # the reference's side needs nothing from the student: compute it while the child runs
    warm = threading.Thread(target=prepare, args=(cases, options.assignment), daemon=True)
    try:
        request, payload = build_request(cases, submission.source, str(submission.path),
                                         str(workdir), options.allow_autograd,
                                         functions)
        warm.start()
        outcome = sandbox.run(request, payload, limits, [case.id for case in cases])
        for _ in range(MAX_RESUMES):
            remaining = _resumable(outcome, cases, interrupted)
            budget = limits.total_seconds - (time.monotonic() - started)
            if not remaining or budget < limits.load_seconds + limits.call_seconds:
                break
            shutil.rmtree(workdir, ignore_errors=True)
            workdir = prepare_workdir(submission.path, siblings)
            request, payload = build_request(remaining, submission.source,
                                             str(submission.path), str(workdir),
                                             options.allow_autograd, functions)
            later = sandbox.run(request, payload, replace(limits, total_seconds=budget),
                                [case.id for case in remaining])
            outcome = _merge(outcome, later)
        return outcome, interrupted
    finally:
        if warm.is_alive() or warm.ident is not None:
            warm.join()
        shutil.rmtree(workdir, ignore_errors=True)


def _resumable(outcome: RunOutcome, cases, interrupted: dict[str, str]) -> list:
    """The cases a fresh child should run: those after the call a run stopped in (recorded in
    ``interrupted``), if it stopped in a call by timing out or crashing, not by anything else."""
    stopped = outcome.stopped
    loaded = any(f.header.get("type") == "load" and f.header.get("ok") for f in outcome.frames)
    crashed = outcome.killed is None and outcome.fault is None
    if stopped is None or not loaded or not (outcome.call_timed_out or crashed) or \
            outcome.running in ("load", "done"):
        return []
    interrupted[outcome.running] = stopped
    done = {f.header.get("id") for f in outcome.frames if f.header.get("type") == "call"}
    return [c for c in cases if c.id not in done and c.id not in interrupted]


def _merge(first: RunOutcome, later: RunOutcome) -> RunOutcome:
    """One outcome from a run and its resumption: the first load frame, every call frame."""
    later.frames = first.frames + [f for f in later.frames if f.header.get("type") == "call"]
    later.stdout, later.stderr = first.stdout + later.stdout, first.stderr + later.stderr
    later.stdout_dropped += first.stdout_dropped
    later.stderr_dropped += first.stderr_dropped
    later.isolation = first.isolation or later.isolation
    return later


def _finish(report: Report, submission: Submission, cases, outcome: RunOutcome,
            options: Options, interrupted: Optional[dict[str, str]] = None) -> None:
    from gradkit.grading import grade
    from gradkit.plan import CallResult, read_call

    report.output = Output(stdout=outcome.stdout, stderr=outcome.stderr,
                           truncated_bytes=outcome.stdout_dropped + outcome.stderr_dropped)
    report.isolation = Isolation(**{k: v for k, v in outcome.isolation.items()
                                    if k in Isolation.model_fields})
    load = next((f.header for f in outcome.frames if f.header.get("type") == "load"), None)
    calls: dict[str, CallResult] = {}
    for frame in outcome.frames:
        if frame.header.get("type") != "call":
            continue
        try:
            result = read_call(frame)
        except wire.WireError as exc:
            result = CallResult(case_id=str(frame.header.get("id")),
                                missing=f"its result could not be read back ({exc})")
        calls.setdefault(result.case_id, result)  # the first frame for a call counts
    ended = outcome.stopped
    if load is None:
        reason = ended or "it sent nothing back"
        report.checks = [_load_check(options, "error", f"loading the file failed: {reason}")]
        report.checks += _not_run("the file did not load", options)
        return
    if not load.get("ok"):
        error = load.get("error") or {}
        line = error.get("line") if isinstance(error.get("line"), int) else None
        trace = "; ".join(str(t) for t in error.get("traceback") or [])
        message = f"loading the file raised {error.get('type')}: {error.get('message')}"
        if line:
            message += f" at {submission.where(line)}"
        if trace:
            message += f" (traceback: {trace})"
        report.checks = [_load_check(options, "error", message, "", submission.location(line))]
        report.checks += _not_run("the file did not load", options)
        return
    functions = load.get("functions") or {}
    problems = [f"{name} {'is not defined' if state == 'missing' else state}"
                for name, state in functions.items() if state != "ok"]
    report.checks = [_load_check(options, "fail" if problems else "pass", "; ".join(problems))]
    first_missing = True
    named = options.assignment.functions
    for case in cases:
        if case.id in calls:
            continue
        needs = named.predict if case.kind == "predict" else named.train
        if functions.get(needs) != "ok":
            calls[case.id] = CallResult(case.id, missing=f"{needs} cannot be called")
        elif case.id in (interrupted or {}):
            calls[case.id] = CallResult(
                case.id, missing=f"stopped during this case: {interrupted[case.id]}")
        elif ended and first_missing:
            calls[case.id] = CallResult(case.id, missing=f"stopped during this case: {ended}")
            first_missing = False
        else:
            calls[case.id] = CallResult(case.id, missing="not run: an earlier case stopped the "
                                        "submission's process")
    grading = grade(submission, cases, calls, options)
    report.checks += grading.checks
    report.plots = grading.plots
    from gradkit.diagnosis.diagnose import diagnose, module_globals

    load_frame = next((f for f in outcome.frames if f.header.get("type") == "load"), None)
    report.intermediates, report.diagnoses = diagnose(
        submission, cases, calls, grading, tolerances=options.tolerances,
        module_tensors=module_globals(load_frame))
