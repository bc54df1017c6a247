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
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance for every dtype.")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance for every dtype.")
@click.option("--points", multiple=True, metavar="CHECK=N",
              help="Points for a check, e.g. --points training=0 (repeatable).")
@click.option("--accept-convention", "accept", multiple=True, type=click.Choice(CONVENTIONS),
              help="Also accept gradients of this loss convention (repeatable): 'sum' is the "
                   "notebook's (p-y)^2 without the 1/2; 'half_mean'/'mean' are batch means.")
@click.option("--timeout", type=click.FloatRange(min=1), default=60, show_default=True,
              help="Wall-clock seconds for the whole submission.")
@click.option("--color/--no-color", default=None, help="Force colour on or off.")
def check(path: Path, fmt: str, output: Optional[Path], rtol: Optional[float],
          atol: Optional[float], points: tuple[str, ...], accept: tuple[str, ...],
          timeout: float, color: Optional[bool]) -> None:
    """Check one submission (.py or .ipynb) against the reference and autograd."""
    from gradkit.api import check as run_check
    from gradkit.sandbox import Limits, Sandbox

    sandbox = Sandbox()  # its worker imports torch while this process does too
    from gradkit.tolerances import Tolerances

    try:
        report = run_check(path, tolerances=Tolerances(rtol=rtol, atol=atol),
                           points=_points(points), limits=Limits(total_seconds=timeout),
                           sandbox=sandbox, accept_conventions=accept)
    finally:
        sandbox.close()
    if fmt == "terminal":
        from rich.console import Console

        from gradkit.render import terminal

        terminal.render(report, Console(highlight=False, force_terminal=color,
                                        no_color=color is False))
        text = None
    else:
        text = renderer(fmt)(report)
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
    from gradkit import catalogue

    entry = catalogue.ENTRIES.get(code.upper())
    if entry is None:
        known = ", ".join(sorted(catalogue.ENTRIES))
        click.echo(f"gradkit: no diagnosis code {code!r}. Known codes: {known}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(catalogue.explain(entry))


@main.command()
def schema() -> None:
    """Print the JSON Schema of the report."""
    import json

    from gradkit.report import Report

    click.echo(json.dumps(Report.model_json_schema(), indent=2))


def run() -> None:  # pragma: no cover - console entry point kept for tools that want one
    try:
        main()
    except Exception:  # a gradkit bug outside check(): say so with the documented exit code
        import traceback

        traceback.print_exc()
        sys.exit(EXIT_INTERNAL)
