"""The ``gradkit`` command: a thin shell over the library.

It parses options, calls ``gradkit.check`` (or the batch grader), hands the report to a renderer
and exits with ``report.return_code``. Heavy imports (torch) happen inside the commands, so
``gradkit --help`` and ``gradkit schema`` stay fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Optional

import click

from gradkit import __version__
from gradkit.report import EXIT_INTERNAL, EXIT_USAGE
from gradkit.sandbox.backend import BACKENDS, ENVIRONMENT_VARIABLE

#: --format name -> "module:function" taking a Report and returning text.
FORMATS = {
    "terminal": None,
    "json": "gradkit.render.json_report:render",
    "gradescope": "gradkit.render.gradescope:render",
    "junit": "gradkit.render.junit:render",
}
CONVENTIONS = ("sum", "half_mean", "mean")


def renderer(name: str):
    target = FORMATS[name]
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def _visibility(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                ) -> dict[str, str]:
    """--visibility [CHECK=]LEVEL, kept in ctx.meta for the Gradescope renderer."""
    from gradkit.render.gradescope import VISIBILITIES

    settings = {}
    for value in values:
        key, sep, level = value.partition("=")
        if not sep:
            key, level = "*", value
        if level not in VISIBILITIES:
            raise click.BadParameter(f"{value!r}: use [CHECK=]LEVEL with LEVEL one of "
                                     f"{', '.join(VISIBILITIES)}", param_hint="--visibility")
        settings[key] = level
    ctx.meta["gradkit.visibility"] = settings
    return settings


def _points(values: tuple[str, ...]) -> dict[str, float]:
    from gradkit.grading import DEFAULT_POINTS

    points = {}
    for value in values:
        key, sep, number = value.partition("=")
        if not sep or key not in DEFAULT_POINTS:
            raise click.BadParameter(f"{value!r}: use CHECK=POINTS with CHECK one of "
                                     f"{', '.join(DEFAULT_POINTS)}", param_hint="--points")
        try:
            points[key] = float(number)
        except ValueError:
            raise click.BadParameter(f"{number!r} is not a number", param_hint="--points")
    return points


def grading_options(command):
    """The options that change a grade, shared by ``check`` and ``grade``."""
    options = [
        click.option("--rtol", type=click.FloatRange(min=0),
                     help="Relative tolerance for every dtype."),
        click.option("--atol", type=click.FloatRange(min=0),
                     help="Absolute tolerance for every dtype."),
        click.option("--points", multiple=True, metavar="CHECK=N",
                     help="Points for a check, e.g. --points training=0 (repeatable)."),
        click.option("--accept-convention", "accept", multiple=True,
                     type=click.Choice(CONVENTIONS),
                     help="Also accept gradients of this loss convention (repeatable): 'sum' is "
                          "the notebook's (p-y)^2 without the 1/2; 'half_mean'/'mean' are batch "
                          "means."),
        click.option("--allow-autograd", is_flag=True,
                     help="Report autograd use (.backward(), torch.autograd, torch.func) in the "
                          "policy check without failing the submission or withholding points."),
        click.option("--credit-upstream", is_flag=True,
                     help="Partial credit follows the steps: a gradient wrong only because an "
                          "earlier step is wrong is not charged again."),
        click.option("--timeout", type=click.FloatRange(min=1), default=60, show_default=True,
                     help="Wall-clock seconds for each submission."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def sandbox_option(command):
    """``--sandbox``: which backend runs the submissions (``$GRADKIT_SANDBOX`` by default)."""
    return click.option(
        "--sandbox", type=click.Choice(BACKENDS), envvar=ENVIRONMENT_VARIABLE, default="auto",
        show_default=True, show_envvar=True,
        help="Where submissions run: 'linux' (namespaces, seccomp; Linux only), 'portable' (a "
             "fresh interpreter per run, for macOS and Windows; weaker, see the README) or "
             "'auto' (linux where it can run, else portable).")(command)


def _open_sandbox(name: str, hidden: list[Path]):
    """The backend ``name`` asks for; a usage error (exit 2) where it cannot run."""
    from gradkit.sandbox import SandboxUnavailable, open_sandbox

    try:
        return open_sandbox(name, hidden=hidden)
    except SandboxUnavailable as exc:
        raise click.UsageError(str(exc)) from None


def _check_options(rtol: Optional[float], atol: Optional[float], points: tuple[str, ...],
                   accept: tuple[str, ...], allow_autograd: bool, credit_upstream: bool,
                   timeout: float) -> dict:
    """The keyword arguments of ``gradkit.check`` that the grading options ask for."""
    from gradkit.sandbox import Limits
    from gradkit.tolerances import Tolerances

    return {"tolerances": Tolerances(rtol=rtol, atol=atol), "points": _points(points) or None,
            "limits": Limits(total_seconds=timeout), "accept_conventions": accept,
            "allow_autograd": allow_autograd, "credit_upstream": credit_upstream}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradkit")
def main() -> None:
    """Grade hand-written backpropagation: every gradient checked, every mistake explained.

    Exit codes: 0 every check passed, 1 a check failed, 2 usage error, 3 gradkit's own error.
    """


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="terminal",
              show_default=True, help="How to print the report.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report here (in --format, or JSON for the terminal format) "
                   "as well as printing it.")
@click.option("--visibility", multiple=True, metavar="[CHECK=]LEVEL", expose_value=False,
              callback=_visibility,
              help="Gradescope format: when students see a check (a check id, a group such as "
                   "'gradient', or no CHECK for every check): visible, after_due_date, "
                   "after_published or hidden (repeatable).")
@grading_options
@sandbox_option
@click.option("--color/--no-color", default=None, help="Force colour on or off.")
def check(path: Path, fmt: str, output: Optional[Path], color: Optional[bool], sandbox: str,
          **grading: object) -> None:
    """Check one submission (.py or .ipynb) against the reference and autograd."""
    render_options = {"visibility": click.get_current_context().meta.get(
        "gradkit.visibility", {})} if fmt == "gradescope" else {}
    # first thing: the linux backend's worker (a fresh interpreter) imports torch while this
    # process does
    backend = _open_sandbox(sandbox, hidden=[] if output is None else [output.resolve().parent])
    try:
        from gradkit.api import check as run_check
        import torch

        options = _check_options(**grading)
        # the grader's tensors are tiny: one thread, not an OpenMP pool spinning on every core
        torch.set_num_threads(1)
        report = run_check(path, sandbox=backend, **options)
    finally:
        backend.close()
    if fmt == "terminal":
        from rich.console import Console

        from gradkit.render import terminal

        terminal.render(report, Console(highlight=False, force_terminal=color,
                                        no_color=color is False))
        text = None
    else:
        text = renderer(fmt)(report, **render_options)
        click.echo(text)
    if output is not None:
        output.write_text(text if text is not None else renderer("json")(report))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        try:
            from gradkit.render import github
        except ImportError:
            pass
        else:
            github.emit(report, sys.stdout)
    sys.exit(report.return_code)


@main.command()
@click.argument("code")
def explain(code: str) -> None:
    """Print the long explanation of a diagnosis code (e.g. gradkit explain GK101)."""
    from gradkit import policy
    from gradkit.diagnosis import catalogue

    code = code.upper()
    entry = catalogue.ENTRIES.get(code)
    text = catalogue.explain(entry) if entry is not None else policy.explain(code)
    if text is None:
        known = ", ".join(sorted(catalogue.ENTRIES) + sorted(policy.CODES))
        click.echo(f"gradkit: no diagnosis code {code!r}. Known codes: {known}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(text)


@main.command()
def schema() -> None:
    """Print the JSON Schema of the report."""
    import json

    from gradkit.report import Report

    click.echo(json.dumps(Report.model_json_schema(mode="serialization"), indent=2))


@main.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=lambda: os.cpu_count() or 1,
              show_default="the number of CPUs",
              help="Submissions graded at once, each by its own grading process and isolated "
                   "worker.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("gradkit-reports"), show_default=True,
              help="Folder for reports/<student>.json and gradebook.csv.")
@click.option("--gradebook", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the gradebook CSV here instead of OUT/gradebook.csv.")
@click.option("--force", is_flag=True,
              help="Grade every submission again, even those whose report is up to date.")
@grading_options
@sandbox_option
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar on stderr while grading.")
def grade(paths: tuple[Path, ...], jobs: int, out: Path, gradebook: Optional[Path], force: bool,
          progress: bool, sandbox: str, **grading: object) -> None:
    """Grade a class: a folder of submissions, or one file or folder per student.

    One folder: each .py/.ipynb file in it, and each subfolder, is one student. Several paths:
    each is one student's submission. Writes OUT/reports/<student>.json and a gradebook CSV,
    then prints a summary. Exit code 0 when the batch completed (whatever the scores), 3 if
    gradkit itself failed on a submission, 2 on a usage error.
    """
    import time

    from rich.console import Console

    from gradkit import batch

    from gradkit.sandbox import SandboxUnavailable
    from gradkit.sandbox.backend import available

    try:  # the grading processes open it; the name they get is the one that runs
        backend = available(sandbox)
    except SandboxUnavailable as exc:
        raise click.UsageError(str(exc)) from None
    settings = batch.Settings(**_check_options(**grading), sandbox=backend)
    submissions = batch.find_submissions(list(paths), exclude=[out])
    if not submissions:
        raise click.UsageError("no submissions found: give a folder of .py/.ipynb files or "
                               "student folders, or the submissions themselves")
    where = batch.Batch(out=out, gradebook=gradebook)
    try:
        where.reports.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot create {where.reports}: {exc.strerror}",
                                 param_hint="--out") from None
    started = time.monotonic()
    console = Console(stderr=True, highlight=False)
    if progress:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        # redrawn on each event, by no thread of its own: the grading processes are forks of
        # this one, made while it runs no other thread
        bar = Progress(TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                       transient=False, auto_refresh=False)
        task = bar.add_task("", total=len(submissions))
        with bar:
            rows = batch.grade_all(
                submissions, where, jobs=jobs, settings=settings, force=force,
                on_start=lambda s: bar.update(task, description=s.student, refresh=True),
                on_done=lambda r: bar.update(task, advance=1, refresh=True))
    else:
        rows = batch.grade_all(submissions, where, jobs=jobs, settings=settings, force=force)
    summary = batch.summarize(rows, seconds=time.monotonic() - started)
    for line in batch.summary_lines(summary):
        click.echo(line)
    click.echo(f"gradebook: {where.gradebook_path} · reports: {where.reports}/")
    if os.environ.get("GITHUB_ACTIONS") == "true" and os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as step_summary:
            step_summary.write("### gradkit grade\n\n```text\n"
                               + "\n".join(batch.summary_lines(summary)) + "\n```\n")
    sys.exit(EXIT_INTERNAL if summary.internal_errors else 0)


def run() -> None:
    """The console entry point: ``main``, then a fast exit.

    Tearing down an interpreter with torch loaded takes a noticeable fraction of a second; once
    the report is written and the streams flushed there is nothing left to clean up.
    """
    code = 0
    try:
        main()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            code = 1
        else:
            code = exc.code or 0
    except Exception:  # a gradkit bug outside check(): say so with the documented exit code
        import traceback

        traceback.print_exc()
        code = EXIT_INTERNAL
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
