"""The portable backend: real submissions through the real CLI with ``--sandbox portable``, the
choice of backend, and the portable path run where the Linux-only modules cannot be imported.

The last tests build a Python in which ``resource``, ``fcntl``, ``termios``, ``pwd`` and ``grp``
cannot be imported and ``os.fork`` (with ``forkpty`` and ``pidfd_open``) is gone, as on Windows,
and run ``gradkit`` with it in a subprocess. That Python is a throwaway virtual environment whose
interpreter is this one and whose ``.pth`` file installs the blocker and then reads this venv's
packages, so the submission's process (the same interpreter, started by the backend) is just as
deprived as the grader.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT

pytest_plugins = ["pytester"]
from gradkit.report import Report
from gradkit.sandbox import backend

HOSTILE = ROOT / "tests" / "data" / "hostile"
LINUX_ONLY = ("resource", "fcntl", "termios", "pwd", "grp")
#: the checks the sign error in dL/dP fails (tests/test_hostile.py says why)
SIGN_ERROR_FAILS = {"gradient.V", "gradient.I", "gradient.W", "gradient.J", "update",
                    "training"}

# A submission that reports, on its stdout, what its process can see of the grader: the modules
# it holds, its environment, where it runs. The rest of it is the correct solution.
PROBE = textwrap.dedent('''\
    import os as _os, sys as _sys
    print("modules:", sorted(m for m in _sys.modules
                             if m.split(".")[0] in ("gradkit", "reference")))
    print("environment:", sorted(_os.environ))
    print("cwd:", _os.getcwd())
    _missing = []
    for _name in ("resource", "fcntl", "termios", "pwd", "grp"):
        try:
            __import__(_name)
        except ImportError:
            _missing.append(_name)
    print("unimportable:", _missing, "fork:", hasattr(_os, "fork"))
    ''')


def failing(report: dict) -> set[str]:
    return {c["id"] for c in report["checks"] if c["status"] in ("fail", "error")}


def probe_file(tmp_path: Path) -> Path:
    path = tmp_path / "probe.py"
    path.write_text(PROBE + (EXAMPLES / "correct.py").read_text())
    return path


def printed(report: dict, what: str) -> str:
    return next(line for line in report["output"]["stdout"].splitlines()
                if line.startswith(what + ":"))[len(what) + 1:].strip()


# -- real submissions through the real CLI -----------------------------------------------------

def test_a_correct_file_passes(check_json):
    report, code = check_json(EXAMPLES / "correct.py", "--sandbox", "portable")
    assert code == 0 and report["passed"] and report["score"] == report["max_score"] == 100
    isolation = report["isolation"]
    assert isolation["backend"] == "portable"
    assert isolation["process"].startswith("own process (a fresh interpreter)")
    assert isolation["syscalls"] == "no filter (portable runner)"
    assert "system calls: no filter (the portable runner has none)" in isolation["exposed"]
    if sys.platform.startswith("linux"):  # the rlimits this platform has
        assert {"cpu_seconds", "address_space", "file_size", "open_files"} <= \
            set(isolation["limits"])


def test_a_buggy_file_gets_the_same_verdict_and_diagnosis_as_under_linux(check_json):
    path = EXAMPLES / "buggy" / "sign_error_dLdP.py"
    portable, code = check_json(path, "--sandbox", "portable")
    assert code == 1 and failing(portable) == SIGN_ERROR_FAILS
    if backend.linux_unavailable() is None:
        linux, _ = check_json(path, "--sandbox", "linux")
        assert linux["isolation"]["backend"] == "linux"
        for key in ("score", "checks", "diagnoses", "intermediates"):
            assert portable[key] == linux[key], key


def test_the_submission_process_holds_nothing_of_the_grader(check_json, tmp_path):
    """A fresh interpreter: the grader's modules, its environment and its folder stay out."""
    report, code = check_json(probe_file(tmp_path), "--sandbox", "portable")
    assert code == 0, report["checks"]
    modules = printed(report, "modules")
    assert "reference" not in modules and "gradkit.grading" not in modules
    assert "gradkit.api" not in modules and "gradkit.diagnosis" not in modules
    environment = set(json.loads(printed(report, "environment").replace("'", '"')))
    assert environment <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT", "WINDIR",
                           "HOME", "TMPDIR", "TEMP", "TMP", "USERPROFILE", "OMP_NUM_THREADS",
                           "MKL_NUM_THREADS", "PYTHONHASHSEED"}, environment  # gradkit's seed
    cwd = Path(printed(report, "cwd"))
    assert cwd.name.startswith("gradkit-") and cwd != tmp_path
    assert not cwd.exists()  # the private copy is gone after the run


@pytest.mark.parametrize("attack, check_id, words", [
    ("loop_in_call", "gradient.V", "call 'notebook_row' ran past its 10 s limit"),
    ("exit_at_import", "load", "loading the file raised SystemExit: 0"),
    ("forged_frames", "load", "something other than gradkit wrote to its result channel"),
])
def test_a_hostile_file_is_stopped_with_a_clear_message(check_json, attack, check_id, words):
    report, code = check_json(HOSTILE / f"{attack}.py", "--sandbox", "portable",
                              "--timeout", "15")
    assert code == 1 and not report["passed"]
    verdict = next(c for c in report["checks"] if c["id"] == check_id)
    assert verdict["status"] == "error" and words in verdict["message"], verdict["message"]
    assert report["duration_seconds"] < 15 + 30  # the run's limit, and interpreters' starts


@pytest.mark.parametrize("attack", ["delegates_sys_modules", "delegates_gc", "delegates_source"])
def test_reaching_for_the_reference_fails_the_policy_check(check_json, attack):
    """Nothing of the grader is in the fresh interpreter's memory, and the reference's files,
    which the portable runner cannot hide, are watched: the attempt is seen and costs every
    point."""
    report, code = check_json(HOSTILE / f"{attack}.py", "--sandbox", "portable")
    assert code == 1 and report["score"] == 0
    policy = next(c for c in report["checks"] if c["id"] == "policy")
    assert policy["status"] == "fail" and "GKP203" in policy["message"], policy["message"]


def test_memory_is_limited_where_the_platform_can(check_json):
    report, code = check_json(HOSTILE / "memory_exhaustion.py", "--sandbox", "portable",
                              "--timeout", "15")
    assert code == 1
    message = next(c for c in report["checks"] if c["id"] == "gradient.V")["message"]
    if "address_space" in report["isolation"]["limits"] or os.name == "nt":
        assert "DefaultCPUAllocator: can't allocate memory" in message
    else:  # macOS does not enforce RLIMIT_AS: the wall clock stops it
        assert "ran past its 10 s limit" in message


def test_megabytes_of_output_are_capped(check_json):
    report, code = check_json(HOSTILE / "huge_output.py", "--sandbox", "portable")
    assert code == 0 and report["passed"]
    assert 0 < len(report["output"]["stdout"]) <= 64 << 10
    assert report["output"]["truncated_bytes"] > 16 << 20


def test_a_child_that_fails_before_the_submission_runs_says_why(tmp_path):
    """Before its first frame the child runs only gradkit's code: its failure is gradkit's,
    reported with the last line it wrote, not blamed on the submission."""
    if os.name == "nt":
        pytest.skip("Windows has no rlimits for the child to look up")
    from gradkit.sandbox import Limits
    from gradkit.sandbox.portable import PortableSandbox

    class NoLimits(Limits):
        def for_child(self) -> dict:
            return {}  # the child looks up its rlimits in this, and fails

    with PortableSandbox() as sandbox:
        outcome = sandbox.run({"workdir": str(tmp_path), "calls": []}, b"", NoLimits(), [])
    assert not outcome.frames and outcome.exit == {"code": 71}
    assert outcome.fault == ("the submission's process failed to start (exited with code 71): "
                             "KeyError: 'cpu_seconds'")


def test_an_assignment_with_its_own_function_names_runs_there_too(check_json):
    """The request carries the assignment's function names (tanh_bce: ``train``, ``predict``)
    to the portable child as it does to linux's."""
    tanh_bce = ROOT / "submissions_example" / "tanh_bce"
    report, code = check_json(tanh_bce / "correct.py", "--assignment", "tanh_bce",
                              "--sandbox", "portable")
    assert code == 0 and report["passed"], [c["message"] for c in report["checks"]
                                            if c["status"] != "pass"]
    assert report["isolation"]["backend"] == "portable"
    report, code = check_json(tanh_bce / "sign_error.py", "--assignment", "tanh_bce",
                              "--sandbox", "portable")
    assert code == 1 and "gradient.W1" in failing(report)


def test_frames_over_the_budget_count_for_nothing_there_too(check_json, tmp_path):
    """The frame budget (``wire.Budget``) is checked by the shared result order, so the
    portable backend refuses frames whose arrays share bytes as linux does. (The attack writes
    to linux's result descriptor, 1000; here it writes to the portable child's, which its
    command line names.)"""
    attack = (HOSTILE / "frames_sharing_bytes.py").read_text()
    assert "os.write(1000, _view)" in attack
    path = tmp_path / "frames_sharing_bytes.py"
    path.write_text(attack.replace("os.write(1000, _view)",
                                   "os.write(int(__import__('sys').argv[-1]), _view)"))
    report, code = check_json(path, "--sandbox", "portable")
    assert code == 1 and report["score"] == 0
    load = next(c for c in report["checks"] if c["id"] == "load")
    assert load["status"] == "error"
    assert "no result of this run counts (two arrays describe the same bytes" in \
        load["message"], load["message"]


# Writes five call frames, each well under the frame reader's 1 MiB header and fine alone, whose
# headers together hold more JSON values than a run's budget (2**21), to the portable child's
# result channel (its command line names it), in the order the child would; then exits.
OVER_THE_RUN_BUDGET = textwrap.dedent('''\
    import gc, json, os, struct, sys

    def _frame(header):
        head = json.dumps({**header, "payload": 0}, separators=(",", ":")).encode()
        return struct.pack(">I", len(head)) + head

    _ids = next(v["calls"] for v in gc.get_objects()
                if isinstance(v, dict) and "calls" in v and "source" in v)
    _out = _frame({"type": "load", "ok": True, "seconds": 0.0, "functions": {
        "train_neural_net": "ok", "neural_net_predict": "ok"}, "new_modules": [],
        "globals": {}})
    for _call in _ids[:5]:
        _out += _frame({"type": "call", "id": _call["id"], "ok": True, "seconds": 0.0,
                        "steps": [], "junk": [[0] * 1000] * 450})
    _view = memoryview(_out)
    while _view:
        _view = _view[os.write(int(sys.argv[-1]), _view):]
    os._exit(0)
    ''')


def test_a_run_past_its_frame_budget_counts_for_nothing_there_too(check_json, tmp_path):
    """The budget is one per run, kept by the shared result order: frames each fine alone are
    refused together on the portable backend too."""
    path = tmp_path / "over_the_run_budget.py"
    path.write_text(OVER_THE_RUN_BUDGET)
    report, code = check_json(path, "--sandbox", "portable")
    assert code == 1 and report["score"] == 0
    load = next(c for c in report["checks"] if c["id"] == "load")
    assert "no result of this run counts (the run's result headers hold more values than " \
        "gradkit reads)" in load["message"], load["message"]


def test_the_autograd_engine_watch_runs_there_too(check_json):
    """The request's autograd switch reaches the portable child: its engine watch counts the
    graph nodes built by other routes, and --allow-autograd lets them pass."""
    report, code = check_json(HOSTILE / "autograd_by_other_routes.py", "--sandbox", "portable")
    policy = next(c for c in report["checks"] if c["id"] == "policy")
    assert code == 1 and policy["status"] == "fail", policy["message"]
    assert "GKP110" in policy["message"] and "torch's engine built" in policy["message"]
    report, code = check_json(HOSTILE / "autograd_by_other_routes.py", "--sandbox", "portable",
                              "--allow-autograd")
    policy = next(c for c in report["checks"] if c["id"] == "policy")
    assert policy["status"] != "fail", policy["message"]


# -- choosing the backend ----------------------------------------------------------------------

def test_the_backend_is_named_once_and_checked(monkeypatch):
    monkeypatch.delenv(backend.ENVIRONMENT_VARIABLE, raising=False)
    assert backend.resolve() == ("linux" if backend.linux_unavailable() is None else "portable")
    assert backend.resolve("portable") == "portable"
    monkeypatch.setenv(backend.ENVIRONMENT_VARIABLE, "portable")
    assert backend.resolve() == "portable" and backend.resolve("linux") == "linux"
    monkeypatch.setenv(backend.ENVIRONMENT_VARIABLE, "docker")
    with pytest.raises(ValueError, match="no sandbox backend 'docker'"):
        backend.resolve()


def test_the_backend_is_a_grading_option(monkeypatch, tmp_path):
    """``Options.sandbox``: $GRADKIT_SANDBOX, else auto; validated; sent to batch's grading
    processes; part of the key; ``gradkit.check`` opens the one it names."""
    from pydantic import ValidationError

    import gradkit
    from gradkit.options import Options

    monkeypatch.delenv(backend.ENVIRONMENT_VARIABLE, raising=False)
    assert Options().sandbox == "auto"
    monkeypatch.setenv(backend.ENVIRONMENT_VARIABLE, "portable")
    options = Options()
    assert options.sandbox == "portable" and Options(sandbox="linux").sandbox == "linux"
    assert Options.from_json(options.to_json()) == options
    assert options.key() != Options(sandbox="linux").key()
    monkeypatch.setenv(backend.ENVIRONMENT_VARIABLE, "docker")
    with pytest.raises(ValidationError):
        Options()
    monkeypatch.delenv(backend.ENVIRONMENT_VARIABLE)
    report = gradkit.check(EXAMPLES / "correct.py", sandbox="portable")
    assert report.passed and report.isolation.backend == "portable"


def test_the_pytest_plugin_takes_the_backend(pytester):
    """``--gradkit-sandbox portable``: the fixtures grade and call the student's functions in
    the portable backend."""
    pytester.makepyfile(test_mine="""
        import torch

        def test_report(gradkit_report):
            assert gradkit_report.passed and gradkit_report.isolation.backend == "portable"

        def test_student(gradkit_student, gradkit_reference):
            X = torch.tensor([[1.0, 0.5, -1.0]], dtype=torch.float64)
            Y = torch.tensor([[1.0]], dtype=torch.float64)
            weights = gradkit_reference.weights(seed=0)
            got = gradkit_student.train(X, Y, weights, 0.5)
            want = gradkit_reference.train(X, Y, weights, 0.5)
            assert all(torch.allclose(got[k], want[k]) for k in want)
        """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gradkit-submission",
                                           str(EXAMPLES / "correct.py"), "--gradkit-sandbox",
                                           "portable")
    result.assert_outcomes(passed=2)


def test_an_unknown_backend_in_the_environment_is_a_usage_error(gradkit_cli, monkeypatch):
    monkeypatch.setenv(backend.ENVIRONMENT_VARIABLE, "docker")
    result = gradkit_cli("check", EXAMPLES / "correct.py")
    assert result.exit_code == 2
    assert "'docker' is not one of 'auto', 'linux', 'portable'" in result.stderr


def test_a_report_of_format_1_was_made_by_the_linux_backend():
    old = json.loads(Report(gradkit_version="0.1.0", torch_version="2", python_version="3",
                            submission={"path": "a.py", "kind": "py"}).model_dump_json())
    old["format_version"] = "1.0"
    del old["isolation"]["backend"]
    report = Report.model_validate(old)
    assert report.format_version == "2.0" and report.isolation.backend == "linux"


# -- the portable path where the Linux-only modules cannot be imported ---------------------------

BLOCKER = textwrap.dedent('''\
    """Makes this Python look like Windows to gradkit: no Linux-only modules, no fork."""
    import importlib.abc
    import os
    import sys

    BLOCKED = {blocked!r}


    class _Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None


    for _name in BLOCKED:
        sys.modules.pop(_name, None)
    sys.meta_path.insert(0, _Blocker())
    for _name in ("fork", "forkpty", "pidfd_open"):
        if hasattr(os, _name):
            delattr(os, _name)
    ''')


@pytest.fixture(scope="module")
def deprived_python(tmp_path_factory) -> Path:
    """A Python where LINUX_ONLY cannot be imported and os.fork is gone, in this one and in
    every process started with it; it reads this venv's packages (gradkit, torch)."""
    if os.name == "nt":
        pytest.skip("builds a POSIX virtual environment by hand (and Windows is the real thing)")
    venv = tmp_path_factory.mktemp("deprived")
    real = Path(os.path.realpath(sys.executable))
    (venv / "pyvenv.cfg").write_text(f"home = {real.parent}\ninclude-system-site-packages = "
                                     f"false\nversion = {sys.version.split()[0]}\n")
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(real)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    site.mkdir(parents=True)
    (site / "_deprive_gradkit.py").write_text(BLOCKER.format(blocked=set(LINUX_ONLY)))
    ours = sysconfig.get_paths()["purelib"]
    (site / "_deprive_gradkit.pth").write_text(
        f"import _deprive_gradkit; import site; site.addsitedir({ours!r})\n")
    python = venv / "bin" / "python"
    seen = subprocess.run([str(python), "-I", "-c", "import os, sys\n"
                           "for name in ('resource', 'pwd'):\n"
                           "    try:\n        __import__(name)\n    except ImportError:\n"
                           "        print('blocked', name)\n"
                           "print('fork', hasattr(os, 'fork'))\nimport gradkit\n"],
                          capture_output=True, text=True, timeout=120)
    assert seen.stdout.split("\n")[:3] == ["blocked resource", "blocked pwd", "fork False"], \
        seen.stdout + seen.stderr
    return python


def gradkit(python: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k != backend.ENVIRONMENT_VARIABLE}
    return subprocess.run([str(python), "-m", "gradkit", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=environment)


def test_check_runs_without_the_linux_only_modules(deprived_python, tmp_path):
    result = gradkit(deprived_python, "check", str(probe_file(tmp_path)), "--sandbox",
                     "portable", "--format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["passed"] and report["isolation"]["backend"] == "portable"
    # the submission's process was as deprived as the grader: no rlimits could be set there,
    # and the submission itself could import none of those modules
    assert report["isolation"]["limits"] == []
    assert printed(report, "unimportable") == f"{sorted(LINUX_ONLY, key=LINUX_ONLY.index)} " \
                                              "fork: False"


def test_a_buggy_file_fails_the_same_checks_without_them(deprived_python):
    result = gradkit(deprived_python, "check", str(EXAMPLES / "buggy" / "sign_error_dLdP.py"),
                     "--format", "json")  # auto: the linux backend cannot run, so portable
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["isolation"]["backend"] == "portable"
    assert failing(report) == SIGN_ERROR_FAILS


def test_asking_for_linux_there_is_a_usage_error(deprived_python):
    result = gradkit(deprived_python, "check", str(EXAMPLES / "correct.py"), "--sandbox",
                     "linux")
    assert result.returncode == 2
    assert "the linux sandbox cannot run here" in result.stderr
    assert "No module named 'resource'" in result.stderr or "os.fork" in result.stderr


def test_grade_runs_without_them(deprived_python, tmp_path):
    """``gradkit grade``'s grading processes cannot be forks there: fresh interpreters that
    take requests on stdin and answer on stdout."""
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "alice.py").write_text((EXAMPLES / "correct.py").read_text())
    (folder / "bob.py").write_text((EXAMPLES / "buggy" / "sign_error_dLdP.py").read_text())
    out = tmp_path / "out"
    result = gradkit(deprived_python, "grade", str(folder), "--out", str(out), "--jobs", "2",
                     "--no-progress", "--sandbox", "portable")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["student"]: row for row in csv.DictReader(
        (out / "gradebook.csv").read_text(encoding="utf-8").splitlines())}
    assert rows["alice"]["score"] == "100" and rows["alice"]["passed"] == "yes"
    assert set(rows["bob"]["failing"].split()) == SIGN_ERROR_FAILS
    report = json.loads((out / "reports" / "bob.json").read_text())
    assert report["isolation"]["backend"] == "portable"
