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
    "html": "gradkit.render.html:render",
    "prairielearn": "gradkit.render.prairielearn:render",
}
#: formats whose view shows the student's source lines (read from the graded file)
_SHOWS_SOURCE = ("html",)
CONVENTIONS = ("sum", "half_mean", "mean")


def _source(path: Path):
    """The graded file as gradkit read it, for views that quote its lines (None if unreadable;
    each view checks its sha256 against the report's)."""
    from gradkit.loader import LoadError, load_submission

    try:
        return load_submission(path)
    except (LoadError, OSError):
        return None


def _github_links(html_path: Optional[Path]) -> None:
    """Append where the visual report is to the job summary (it cannot embed the page)."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target or html_path is None:
        return
    run = "/".join(os.environ.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY"))
    link = f"{run}/actions/runs/{os.environ['GITHUB_RUN_ID']}" if \
        os.environ.get("GITHUB_RUN_ID") and run.strip("/") else ""
    where = f"[this run's artifacts]({link}#artifacts)" if link else "this run's artifacts"
    with open(target, "a", encoding="utf-8") as out:
        out.write(f"The visual report (`{html_path}`) is in {where} (upload it with "
                  "actions/upload-artifact).\n\n")


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


def _points(values: tuple[str, ...], assignment) -> dict[str, float]:
    from reference.assignment import check_ids

    known = [c for c in check_ids(assignment) if c != "policy"]
    points = {}
    for value in values:
        key, sep, number = value.partition("=")
        if not sep or key not in known:
            raise click.BadParameter(f"{value!r}: use CHECK=POINTS with CHECK one of "
                                     f"{', '.join(known)}", param_hint="--points")
        try:
            points[key] = float(number)
        except ValueError:
            raise click.BadParameter(f"{number!r} is not a number", param_hint="--points")
    return points


def grading_options(command):
    """The options that change a grade, shared by ``check`` and ``grade``."""
    options = [
        click.option("--assignment", "assignment", metavar="FILE|NAME",
                     help="The assignment description: a TOML file, or a bundled one (notebook, "
                          "tanh_bce, relu_mse, logistic). Default: the course notebook's."),
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
    """``--sandbox``: which backend runs the submissions (``$GRADKIT_SANDBOX`` by default); it
    becomes ``Options.sandbox``."""
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


def load_assignment_or_exit(spec: Optional[str]):
    """The assignment a command names (default: the notebook's); a bad file is a usage error:
    its one message on stderr, exit code 2."""
    from reference.assignment import NOTEBOOK, AssignmentError, load_assignment

    if spec is None:
        return NOTEBOOK
    try:
        return load_assignment(spec)
    except AssignmentError as exc:
        click.echo(f"gradkit: bad assignment: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def _check_options(assignment: Optional[str], rtol: Optional[float], atol: Optional[float],
                   points: tuple[str, ...], accept: tuple[str, ...], allow_autograd: bool,
                   credit_upstream: bool, timeout: float, sandbox: str = "auto"):
    """The one ``gradkit.options.Options`` the grading options ask for."""
    from pydantic import ValidationError

    from gradkit.options import Options
    from gradkit.sandbox import Limits

    description = load_assignment_or_exit(assignment)
    try:
        return Options(assignment=description, rtol=rtol, atol=atol,
                       points=_points(points, description), limits=Limits(total_seconds=timeout),
                       accept_conventions=accept, allow_autograd=allow_autograd,
                       credit_upstream=credit_upstream, sandbox=sandbox)
    except ValidationError as exc:
        raise click.UsageError("; ".join(e["msg"].removeprefix("Value error, ")
                                         for e in exc.errors())) from None


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
@click.option("--gradescope-output", type=click.Choice(["md", "html"]), default="md",
              show_default=True,
              help="Gradescope format: the top-level output as markdown, or as the visual "
                   "report (Gradescope's output_format html).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the visual report (one self-contained HTML page) here.")
@grading_options
@sandbox_option
@click.option("--color/--no-color", default=None, help="Force colour on or off.")
def check(path: Path, fmt: str, output: Optional[Path], color: Optional[bool],
          gradescope_output: str, html_path: Optional[Path], **grading: object) -> None:
    """Check one submission (.py or .ipynb) against the reference and autograd."""
    render_options: dict = {"visibility": click.get_current_context().meta.get(
        "gradkit.visibility", {}), "output_format": gradescope_output} \
        if fmt == "gradescope" else {}
    options = _check_options(**grading)  # (no torch: a bad assignment file exits at once)
    # first thing: the linux backend's worker (a fresh interpreter) imports torch while this
    # process does
    backend = _open_sandbox(options.sandbox, hidden=[p.resolve().parent for p in
                                                     (output, html_path) if p is not None])
    try:
        from gradkit.api import check as run_check
        import torch

        # the grader's tensors are tiny: one thread, not an OpenMP pool spinning on every core
        torch.set_num_threads(1)
        report = run_check(path, sandbox=backend, options=options)
    finally:
        backend.close()
    if fmt == "terminal":
        from rich.console import Console

        from gradkit.render import terminal

        terminal.render(report, Console(highlight=False, force_terminal=color,
                                        no_color=color is False))
        text = None
    else:
        if fmt in _SHOWS_SOURCE or render_options.get("output_format") == "html":
            render_options["submission"] = _source(path)
        text = renderer(fmt)(report, **render_options)
        if fmt == "html":  # (the other formats' renderers guard their own documents)
            from gradkit.render.untrusted import html_document

            text = html_document(text)
        click.echo(text)
    if output is not None:
        output.write_text(text if text is not None else renderer("json")(report))
    if html_path is not None:
        html_path.write_text(renderer("html")(report, submission=_source(path)),
                             encoding="utf-8")
    if os.environ.get("GITHUB_ACTIONS") == "true":
        try:
            from gradkit.render import github
        except ImportError:
            pass
        else:
            github.emit(report, sys.stdout)
            _github_links(html_path)
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
@click.option("--html/--no-html", "pages", default=True, show_default=True,
              help="Also write OUT/summary.html and each student's report as "
                   "OUT/reports/<student>.html.")
@grading_options
@sandbox_option
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar on stderr while grading.")
def grade(paths: tuple[Path, ...], jobs: int, out: Path, gradebook: Optional[Path], force: bool,
          pages: bool, progress: bool, **grading: object) -> None:
    """Grade a class: a folder of submissions, or one file or folder per student.

    One folder: each .py/.ipynb file in it, and each subfolder, is one student. Several paths:
    each is one student's submission. Writes OUT/reports/<student>.json (and .html), a
    gradebook CSV and OUT/summary.html, then prints a summary. Exit code 0 when the batch
    completed (whatever the scores), 3 if gradkit itself failed on a submission, 2 on a usage
    error.
    """
    import time

    from rich.console import Console

    from gradkit import batch

    from gradkit.sandbox import SandboxUnavailable
    from gradkit.sandbox.backend import available

    try:  # the grading processes open it; the name they get is the one that runs
        grading["sandbox"] = available(str(grading["sandbox"]))
    except SandboxUnavailable as exc:
        raise click.UsageError(str(exc)) from None
    settings = _check_options(**grading)
    functions = settings.assignment.functions
    submissions = batch.find_submissions(list(paths), exclude=[out],
                                         functions=(functions.train, functions.predict))
    if not submissions:
        raise click.UsageError("no submissions found: give a folder of .py/.ipynb files or "
                               "student folders, or the submissions themselves")
    where = batch.Batch(out=out, gradebook=gradebook, pages=pages)
    try:
        where.reports.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot create {where.reports}: {exc.strerror}",
                                 param_hint="--out") from None
    started = time.monotonic()
    console = Console(stderr=True, highlight=False)
    if progress:
        from rich.markup import escape
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        from gradkit.render.untrusted import visible

        # redrawn on each event, by no thread of its own: the grading processes are forks of
        # this one, made while it runs no other thread
        bar = Progress(TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                       transient=False, auto_refresh=False)
        task = bar.add_task("", total=len(submissions))
        with bar:
            rows = batch.grade_all(
                submissions, where, jobs=jobs, settings=settings, force=force,
                on_start=lambda s: bar.update(task, description=escape(visible(s.student)),
                                              refresh=True),
                on_done=lambda r: bar.update(task, advance=1, refresh=True))
    else:
        rows = batch.grade_all(submissions, where, jobs=jobs, settings=settings, force=force)
    from gradkit.render.untrusted import command_safe, markdown_block, visible

    summary = batch.summarize(rows, seconds=time.monotonic() - started)
    page = batch.write_summary_page(rows, summary, where) if pages else None
    lines = [visible(line) for line in batch.summary_lines(summary)]
    lines.append(visible(f"gradebook: {where.gradebook_path} · reports: {where.reports}/"
                         + (f" · summary: {page}" if page else "")))
    click.echo(command_safe("\n".join(lines)))
    if os.environ.get("GITHUB_ACTIONS") == "true" and os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as step_summary:
            step_summary.write("### gradkit grade\n\n"
                               + markdown_block("\n".join(lines[:-1])) + "\n")
        _github_links(page)
    sys.exit(EXIT_INTERNAL if summary.internal_errors else 0)


@main.group()
def assignment() -> None:
    """Assignment descriptions: the network your students backpropagate (a TOML file)."""


@assignment.command("show")
@click.argument("spec", metavar="FILE|NAME")
def assignment_show(spec: str) -> None:
    """Print what gradkit understood of an assignment file (or a bundled one: notebook,
    tanh_bce, relu_mse, logistic): the network, its shapes, the student's contract, and every
    step of the backward pass with its id and name. Exit code 2 for a bad file."""
    from reference.describe import describe

    for line in describe(load_assignment_or_exit(spec)):
        click.echo(line)


@assignment.command("new")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def assignment_new(path: Optional[Path], force: bool) -> None:
    """Write a commented template of an assignment file to PATH (or print it)."""
    from reference.describe import TEMPLATE

    if path is None:
        click.echo(TEMPLATE, nl=False)
        return
    if path.exists() and not force:
        click.echo(f"gradkit: {path} exists (use --force to overwrite it)", err=True)
        sys.exit(EXIT_USAGE)
    path.write_text(TEMPLATE, encoding="utf-8")
    click.echo(f"wrote {path}; check it with: gradkit assignment show {path}")


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

        from gradkit.render.untrusted import command_safe, visible

        # the message may quote a submission's bytes (a name, a value): shown, never obeyed
        sys.stderr.write(command_safe(visible(traceback.format_exc(), keep="\n")))
        code = EXIT_INTERNAL
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
