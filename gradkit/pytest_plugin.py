"""gradkit's pytest plugin, registered through the ``pytest11`` entry point.

Instructors add their own checks to gradkit's in ordinary test files::

    pytest --gradkit-submission alice.py tests_for_students/

or ``gradkit_submission = alice.py`` in the ``[pytest]`` ini section (relative to the rootdir);
``--gradkit-assignment FILE`` (or the ini key ``gradkit_assignment``) names the assignment
description (a TOML file or a bundled name; default the notebook's).
Fixtures (all session-scoped, so the student's file is graded once and one worker serves all):

- ``gradkit_report``: the submission's ``Report``, as ``gradkit check`` makes it;
- ``gradkit_student``: calls the student's ``train(X, Y, weights, learning_rate)`` and
  ``predict(X, weights)`` inside the sandbox and returns plain tensors
  (``gradkit.session.StudentFunctions``);
- ``gradkit_reference``: the course network done right (``gradkit.testing.Reference``);
- ``gradkit_cases``: gradkit's fixed cases; a test that takes ``gradkit_case`` is parametrised
  over them (narrow with ``@pytest.mark.gradkit_cases(kind="step")``);
- ``gradkit_options``: the grading options (``gradkit.options.Options``, with the assignment
  and the sandbox backend);
- ``gradkit_submission`` and ``gradkit_sandbox`` (``--gradkit-sandbox auto|linux|portable``),
  which the others build on.

Compare tensors with ``gradkit.testing.assert_close`` (gradkit's tolerances and messages).
Nothing here imports torch until a fixture is used, so the plugin costs nothing elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pytest

if TYPE_CHECKING:
    from gradkit.report import Report
    from gradkit.sandbox import SandboxBackend
    from gradkit.session import StudentFunctions
    from gradkit.testing import Reference

CASE_KINDS = ("step", "chain", "init", "predict", "training")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradkit", "grading hand-written backpropagation with gradkit")
    group.addoption("--gradkit-submission", action="store", dest="gradkit_submission",
                    metavar="PATH", default=None,
                    help="The submission (.py or .ipynb) that gradkit's fixtures grade.")
    group.addoption("--gradkit-sandbox", action="store", dest="gradkit_sandbox",
                    choices=("auto", "linux", "portable"), default=None,
                    help="The sandbox backend the fixtures run the submission in (default: "
                         "$GRADKIT_SANDBOX, else auto).")
    parser.addini("gradkit_submission", "The submission gradkit's fixtures grade (relative to "
                  "the rootdir); --gradkit-submission overrides it.", default=None)
    group.addoption("--gradkit-assignment", action="store", dest="gradkit_assignment",
                    metavar="FILE", default=None,
                    help="The assignment description (a TOML file, or a bundled name such as "
                         "tanh_bce); default: the course notebook's.")
    parser.addini("gradkit_assignment", "The assignment description gradkit grades against "
                  "(relative to the rootdir, or a bundled name); --gradkit-assignment "
                  "overrides it.", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gradkit_cases(kind=None, ids=None): parametrise the test's gradkit_case "
        "argument over gradkit's fixed cases of this kind (step, chain, init, predict, "
        "training) or with these ids")


def submission_path(config: pytest.Config) -> Optional[Path]:
    """The submission named on the command line, else in the ini file; None if neither."""
    option = config.getoption("gradkit_submission")
    if option:
        return (config.invocation_params.dir / option).resolve()
    value = config.getini("gradkit_submission")
    if value:
        return (config.rootpath / str(value)).resolve()
    return None


def assignment_spec(config: pytest.Config) -> Optional[str]:
    """The assignment named on the command line, else in the ini file (a path, made absolute
    when it names a file, or a bundled name); None for the notebook's."""
    option = config.getoption("gradkit_assignment")
    base = config.invocation_params.dir if option else config.rootpath
    value = option or config.getini("gradkit_assignment")
    if not value:
        return None
    path = base / str(value)
    return str(path.resolve()) if path.is_file() else str(value)


def options_of(config: pytest.Config):
    """The grading options of this session (built once): the assignment and the sandbox
    backend, nothing else."""
    cached = getattr(config, "_gradkit_options", None)
    if cached is None:
        from pydantic import ValidationError

        from gradkit.options import Options
        from reference.assignment import AssignmentError

        try:
            cached = Options.build(assignment=assignment_spec(config),
                                   sandbox=config.getoption("gradkit_sandbox"))
        except AssignmentError as exc:
            raise pytest.UsageError(f"gradkit: bad assignment: {exc}") from None
        except ValidationError as exc:  # ($GRADKIT_SANDBOX names no backend)
            raise pytest.UsageError(f"gradkit: bad option: {exc}") from None
        config._gradkit_options = cached  # type: ignore[attr-defined]
    return cached


def pytest_report_header(config: pytest.Config) -> Optional[str]:
    path = submission_path(config)
    if path is None:
        return None
    spec = assignment_spec(config)
    return f"gradkit: grading {path}" + (f" against {spec}" if spec else "")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gradkit_case" not in metafunc.fixturenames:
        return
    from gradkit.cases import build_cases

    cases = list(build_cases(options_of(metafunc.config).assignment))
    marker = metafunc.definition.get_closest_marker("gradkit_cases")
    if marker is not None:
        kinds = marker.kwargs.get("kind", marker.args[0] if marker.args else None)
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        ids = marker.kwargs.get("ids")
        unknown = set(kinds or ()) - set(CASE_KINDS)
        if unknown:
            pytest.fail(f"gradkit_cases: unknown kind {sorted(unknown)}; use "
                        f"{', '.join(CASE_KINDS)}", pytrace=False)
        cases = [c for c in cases if (not kinds or c.kind in kinds)
                 and (not ids or c.id in ids)]
    metafunc.parametrize("gradkit_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def gradkit_submission(pytestconfig: pytest.Config) -> Path:
    """The path of the submission under test (``--gradkit-submission`` or the ini key)."""
    path = submission_path(pytestconfig)
    if path is None:
        pytest.fail("no submission to grade: pass --gradkit-submission PATH or set "
                    "gradkit_submission in the [pytest] ini section", pytrace=False)
    return path


@pytest.fixture(scope="session")
def gradkit_options(pytestconfig: pytest.Config):
    """The grading options (``gradkit.options.Options``): the assignment of
    ``--gradkit-assignment`` or the ini key, the backend of ``--gradkit-sandbox`` (else
    ``$GRADKIT_SANDBOX``, else auto), everything else at its default."""
    return options_of(pytestconfig)


@pytest.fixture(scope="session")
def gradkit_sandbox(gradkit_options) -> "SandboxBackend":
    """One sandbox for the whole session, the backend ``gradkit_options.sandbox`` names
    (``--gradkit-sandbox``, else ``$GRADKIT_SANDBOX``, else auto); each call runs in a fresh
    process of it."""
    from gradkit.sandbox import SandboxUnavailable, open_sandbox

    try:
        sandbox = open_sandbox(gradkit_options.sandbox)
    except (SandboxUnavailable, ValueError) as exc:
        pytest.fail(str(exc), pytrace=False)
    with sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def gradkit_report(gradkit_submission: Path, gradkit_sandbox: "SandboxBackend",
                   gradkit_options) -> "Report":
    """The submission's report, exactly as ``gradkit check`` makes it."""
    from gradkit.api import check

    return check(gradkit_submission, sandbox=gradkit_sandbox, options=gradkit_options)


@pytest.fixture(scope="session")
def gradkit_student(gradkit_submission: Path, gradkit_sandbox: "SandboxBackend",
                    gradkit_options) -> "StudentFunctions":
    """The student's functions, run in the sandbox: ``.train(...)`` and ``.predict(...)``."""
    from gradkit.session import StudentFunctions

    return StudentFunctions(gradkit_submission, gradkit_sandbox,
                            assignment=gradkit_options.assignment,
                            limits=gradkit_options.limits)


@pytest.fixture(scope="session")
def gradkit_reference(gradkit_options) -> "Reference":
    """The assignment's network done right: ``.train``, ``.predict``, ``.gradients``,
    ``.weights``."""
    from gradkit.testing import Reference

    return Reference(gradkit_options.assignment)


@pytest.fixture(scope="session")
def gradkit_cases(gradkit_options):
    """gradkit's fixed cases (``gradkit.cases.Case``), in the order ``check`` runs them."""
    from gradkit.cases import build_cases

    return build_cases(gradkit_options.assignment)
