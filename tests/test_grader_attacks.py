"""Attacks on the grader itself, through the real CLI and the real sandbox.

Each attack here works on what the grader does with what a submission hands it (its source, its
notebook, its folder, its result frames, its captured locals, its use of torch), not on the
sandbox's walls. Every test runs ``gradkit`` as its own process, bounded by a timeout, measures
the peak resident memory of that process tree (``RUSAGE_CHILDREN`` of a wrapper that runs only
it), and asserts the exit code (0 or 1: a submission can fail its own run, never the grader,
whose exit 3 means gradkit's own bug) and the target: the report of the symlinked student, the
credited points, the policy verdict.

The attack files are in tests/data/hostile/; what is too large to commit (a 3 GB sparse file, a
thousand nested folders) or cannot be (links to files of this machine) is made in tmp_path.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "data" / "hostile"
EXAMPLES = ROOT / "submissions_example"
#: the grader, its worker and the submission's process, at their largest (torch alone is about
#: 250 MB in each); the frames attack took the grader alone to 3.6 GB
PEAK_MEMORY = 1 << 30

#: runs one command and reports its exit code and the peak RSS of its process tree
_MEASURE = """
import json, resource, subprocess, sys
# an attack that gets past a fix must fail the test, not take the machine's memory
resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
with open(sys.argv[1], "wb") as out, open(sys.argv[2], "wb") as err:
    code = subprocess.run(sys.argv[3:], stdout=out, stderr=err, stdin=subprocess.DEVNULL).returncode
print(json.dumps({"code": code,
                  "peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
""".replace("ADDRESS_SPACE", str(6 << 30))


@dataclass
class Run:
    code: int
    peak: int  # bytes
    seconds: float
    stdout: str
    stderr: str

    def report(self) -> dict:
        return json.loads(self.stdout)


def gradkit(tmp_path: Path, *args: str, seconds: float = 90) -> Run:
    """``gradkit ARGS`` in a process of its own, within ``seconds``, its memory measured."""
    out, err = tmp_path / "gradkit.out", tmp_path / "gradkit.err"
    started = time.monotonic()
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(out), str(err), sys.executable, "-m", "gradkit",
         *map(str, args)],
        capture_output=True, text=True, timeout=seconds, cwd=ROOT,
        env={**os.environ, "COLUMNS": "240", "NO_COLOR": "1"})
    took = time.monotonic() - started
    assert measured.returncode == 0, measured.stderr
    result = json.loads(measured.stdout)
    run = Run(result["code"], result["peak"], took, out.read_text(errors="replace"),
              err.read_text(errors="replace"))
    assert run.code in (0, 1), f"exit {run.code} (3 is gradkit's own failure):\n{run.stderr}" \
                               f"\n{run.stdout[-3000:]}"
    assert run.peak < PEAK_MEMORY, f"peak memory {run.peak >> 20} MiB"
    return run


def check(tmp_path: Path, path: Path, *options: str, seconds: float = 90) -> tuple[dict, Run]:
    run = gradkit(tmp_path, "check", path, "--format", "json", *options, seconds=seconds)
    report = run.report()
    assert report["error"] is None, report["error"]
    return report, run


def verdicts(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["checks"]}


def gradebook(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "gradebook.csv", newline="", encoding="utf-8") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


# -- bounded work on everything parsed or walked from a submission ------------------------------

def test_a_notebook_line_of_150000_spaces_is_graded_in_seconds(tmp_path):
    """The IPython-line pattern backtracked quadratically on this line, in the grader."""
    report, run = check(tmp_path, HOSTILE / "long_line.ipynb", seconds=60)
    assert run.code == 0 and report["passed"], verdicts(report)
    assert run.seconds < 45


def test_a_sparse_file_of_3_gb_is_refused_without_being_read(tmp_path):
    huge = tmp_path / "class" / "sparse.py"
    huge.parent.mkdir()
    with open(huge, "wb") as f:
        f.truncate(3 << 30)  # no disk used: reading it would be 3 GB of memory
    report, run = check(tmp_path, huge, seconds=60)
    assert run.code == 1
    assert f"sparse.py is {3 << 30} bytes, over the" in verdicts(report)["load"]["message"]
    shutil.copy(EXAMPLES / "correct.py", tmp_path / "class" / "alice.py")
    graded = gradkit(tmp_path, "grade", tmp_path / "class", "--out", tmp_path / "out")
    assert graded.code == 0
    rows = gradebook(tmp_path / "out")
    assert rows["alice"]["passed"] == "yes"
    assert "bytes, over the" in rows["sparse"]["error"]


def test_a_wrong_line_of_a_very_deep_expression_is_the_students_mistake(tmp_path):
    """Its shape was read by recursion: RecursionError in the grader, exit 3."""
    report, run = check(tmp_path, HOSTILE / "deep_expression.py", seconds=60)
    assert run.code == 1
    gradient = verdicts(report)["gradient.W"]
    assert gradient["status"] == "error" and "doesn't match the broadcast shape" in \
        gradient["message"]
    assert verdicts(report)["predict"]["status"] == "pass"


def test_many_lines_nested_as_deep_as_python_allows_are_read_in_linear_time(tmp_path):
    """Diagnosis walked every sum inside every sum of these 14 lines: over half an hour. Now an
    expression is read 48 levels deep at most; the policy still sees what is cut off."""
    report, run = check(tmp_path, HOSTILE / "deep_lines_quadratic.py", seconds=60)
    assert run.code == 1 and run.seconds < 45
    assert "GK603" in [d["code"] for d in report["diagnoses"]]
    assert verdicts(report)["gradient.I"]["status"] == "fail"
    policy = verdicts(report)["policy"]
    assert policy["status"] == "fail" and "GKP101" in policy["message"]
    assert policy["location"]["line"] == 48  # the .backward() 100 levels down


@pytest.mark.parametrize("code", ["_x = [" + "a," * 1_000_000 + "]\n",
                                  "if 0:\n" + " a;" * 650_000 + "\n",
                                  "_x = f'" + "{a}" * 650_000 + "'\n"])
def test_two_mib_of_tiny_tokens_is_refused_before_it_is_parsed(tmp_path, code):
    """ast.parse of 2 MiB of ``a,a,a,...`` took the grader to 1.4 GB (0.7 KB a token)."""
    path = tmp_path / "tokens.py"
    source = (EXAMPLES / "correct.py").read_text() + code
    assert len(source.encode()) < 2 << 20
    path.write_text(source)
    report, run = check(tmp_path, path, seconds=60)
    assert run.code == 1 and run.peak < 600 << 20
    load = verdicts(report)["load"]
    assert load["status"] == "error" and "more than 250,000 Python tokens" in load["message"]


@pytest.mark.parametrize("kind", ["ipynb", "py"])
def test_line_separators_in_strings_and_comments_keep_the_lines_as_python_reads_them(tmp_path,
                                                                                    kind):
    """str.splitlines() also splits at U+2028, U+0085, form feeds...: the notebook's cell became
    a syntax error, and a .py file's lines were shown shifted (another line as the mistake)."""
    path = HOSTILE / "notebook_line_separators.ipynb"
    if kind == "py":
        cell = json.loads(path.read_text(encoding="utf-8"))["cells"][1]["source"]
        path = tmp_path / "separators.py"
        path.write_text(cell, encoding="utf-8", newline="\n")
    report, run = check(tmp_path, path)
    assert run.code == 1 and verdicts(report)["load"]["status"] == "pass"
    assert verdicts(report)["predict"]["status"] == "pass"
    wrong_sign = [d for d in report["diagnoses"] if d["code"] == "GK104"]
    assert wrong_sign and wrong_sign[0]["location"]["code"] == "dLdP = Y - P"


def test_a_notebook_cell_whose_source_is_not_text_is_the_students_problem(tmp_path):
    """nbformat returns a notebook that breaks its schema as it is: .splitlines() on a number
    was "gradkit failed", exit 3."""
    report, run = check(tmp_path, HOSTILE / "notebook_source_not_text.ipynb")
    assert run.code == 1
    assert "the source of cell 3 is not text" in verdicts(report)["load"]["message"]


def test_a_student_folder_of_a_thousand_nested_folders_does_not_stop_the_class(tmp_path):
    """os.walk recursed into it and crashed `gradkit grade` before anyone was graded."""
    cls = tmp_path / "class"
    deep = cls / "deep"
    deep.mkdir(parents=True)
    shutil.copy(EXAMPLES / "correct.py", cls / "alice.py")
    shutil.copy(EXAMPLES / "correct.py", deep / "solution.py")
    fd = os.open(deep, os.O_RDONLY)
    try:
        for _ in range(1000):  # relative to a descriptor: the path is far past PATH_MAX
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("train.py", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as f:
            f.write("def train_neural_net(X, Y, weights=None, learning_rate=1.0):\n    pass\n")
    finally:
        os.close(fd)
    run = gradkit(tmp_path, "grade", cls, "--out", tmp_path / "out", seconds=120)
    assert run.code == 0, run.stderr
    rows = gradebook(tmp_path / "out")
    assert rows["alice"]["passed"] == "yes" and rows["deep"]["passed"] == "yes"
    assert rows["deep"]["submission"].endswith("deep/solution.py")
    assert run.seconds < 90
    nested_only = tmp_path / "class2" / "lost"
    nested_only.mkdir(parents=True)
    os.rename(deep / "d", nested_only / "d")
    try:
        run = gradkit(tmp_path, "grade", tmp_path / "class2", "--out", tmp_path / "out2")
        assert run.code == 0
        lost = gradebook(tmp_path / "out2")["lost"]["error"]
        assert "defines train_neural_net" in lost and "8 folders deep at most, and stopped" in lost
    finally:
        _remove_chain(nested_only)  # shutil.rmtree (pytest's cleanup) recurses, and fails


def _remove_chain(top: Path, name: str = "d") -> None:
    """Remove top/d/d/.../d and the files in them, deepest first, without recursion."""
    fds = [os.open(top, os.O_RDONLY)]
    try:
        while name in os.listdir(fds[-1]):
            fds.append(os.open(name, os.O_RDONLY, dir_fd=fds[-1]))
        while len(fds) > 1:
            fd = fds.pop()
            for entry in os.listdir(fd):
                os.unlink(entry, dir_fd=fd)
            os.close(fd)
            os.rmdir(name, dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


def test_finding_def_train_neural_net_is_the_old_pattern_in_linear_time():
    """``gradkit grade`` looks for ``def train_neural_net(`` in every candidate file: the plain
    scan agrees with the pattern it replaced, and a 2 MiB adversarial text takes milliseconds."""
    import re

    from hypothesis import given, settings, strategies as st

    from gradkit.batch import _has_def

    name = "train_neural_net"
    old = re.compile(rf"def\s+{name}\s*\(")

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(["def", " ", "\t", "\n", "\u00a0", name, "(", "x",
                                     "undef", "train_neural_ne"]), max_size=12))
    def agree(parts):
        text = "".join(parts)
        assert _has_def(text, name) == bool(old.search(text))

    agree()
    for text in ("def" + " " * (2 << 20) + name, (name + " ") * 100_000, "def " * 500_000):
        started = time.monotonic()
        assert not _has_def(text, name)
        assert time.monotonic() - started < 2


def test_result_frames_that_describe_the_same_bytes_many_times_count_for_nothing(tmp_path):
    """16 MiB described as 220 arrays was rebuilt 220 times: 3.6 GB in the grader."""
    report, run = check(tmp_path, HOSTILE / "frames_sharing_bytes.py", seconds=60)
    assert run.code == 1
    load = verdicts(report)["load"]
    assert load["status"] == "error"
    assert "no result of this run counts (two arrays describe the same bytes" in load["message"]
    assert report["score"] == 0


def test_empty_tensors_of_a_huge_shape_are_not_rebuilt(tmp_path):
    """A tensor of shape (0, 2147483647) holds nothing; diagnosis broadcast a candidate to its
    shape: 17 GB, and the grader was killed. The child reads back no tensor whose shape spans
    more than a million elements (an empty dimension counted as 1), the grader rebuilds none
    past 4 Mi (a forged frame)."""
    report, run = check(tmp_path, HOSTILE / "empty_tensors_huge_shape.py")
    assert run.code == 1 and run.peak < PEAK_MEMORY
    message = verdicts(report)["gradient.V"]["message"]
    assert "tensor of shape (0, 2147483647) and dtype torch.float32, which gradkit does not " \
        "read back" in message
    forged = tmp_path / "forged.py"
    source = (HOSTILE / "frames_sharing_bytes.py").read_text()
    start, end = source.index("_SIZE = 16 << 20"), source.index("_forged = _frame(")
    source = source[:start] + (
        '_items = {name: {"kind": "array", "dtype": "float64", "shape": [0, 2147483647], '
        '"offset": 0, "nbytes": 0, "source": "tensor"} for name in ("V", "I", "W", "J")}\n'
        "_SIZE = 0\n") + source[end:]
    forged.write_text(source)
    report, run = check(tmp_path, forged)
    assert run.code == 1 and report["score"] == 0
    assert "an array of shape (0, 2147483647) is larger than gradkit rebuilds" in \
        verdicts(report)["load"]["message"]


@pytest.mark.parametrize("base, line, appended", [
    ("correct.py", "    # forward pass\n", "    raise ValueError('boom')  # "),
    ("buggy/sign_error_dLdP.py", "    dLdP = Y - P\n", "    dLdP = Y - P  # "),
])
def test_a_source_line_of_megabytes_is_quoted_in_part(tmp_path, base, line, appended):
    """A line of 1.9 MB: raised on, the child's error frame was over the 1 MiB header bound
    ("something other than gradkit wrote to its result channel", 0 points for a student's
    exception); pointed at, it was quoted in full wherever the report points (Gradescope's
    results.json: 12 MB)."""
    source = (EXAMPLES / base).read_text()
    assert line in source
    path = tmp_path / "long.py"
    long_line = appended + "y" * 1_900_000 + "\n"
    path.write_text(source.replace(line, long_line if base != "correct.py" else long_line + line,
                                   1))
    report, run = check(tmp_path, path)
    assert run.code == 1 and verdicts(report)["load"]["status"] == "pass"
    assert len(run.stdout) < 1 << 20
    if base == "correct.py":
        assert "train_neural_net raised ValueError: boom" in \
            verdicts(report)["gradient.V"]["message"]
        assert verdicts(report)["predict"]["status"] == "pass"
    codes = [c["location"]["code"] for c in report["checks"] if c.get("location")] + \
        [d["location"]["code"] for d in report["diagnoses"] if d.get("location")]
    assert codes and all(len(code) <= 402 for code in codes)
    graded = gradkit(tmp_path, "check", path, "--format", "gradescope")
    assert len(graded.stdout) < 1 << 20


# -- class folders without symlink tricks -------------------------------------------------------

SECRET = "root:$6$gradkit-test-hash-0b9e:19000:0:99999:7:::"


def test_links_in_a_class_folder_are_never_followed(tmp_path):
    """A link to a file of the machine is never read; a link to a classmate's file is graded as
    neither student's work; a link inside a student's folder is never picked."""
    secret = tmp_path / "shadow"  # a stand-in for /etc/shadow, which only root may read
    secret.write_text(SECRET + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(EXAMPLES / "correct.py", outside / "solution.py")
    cls = tmp_path / "class"
    cls.mkdir()
    shutil.copy(EXAMPLES / "correct.py", cls / "alice.py")
    (cls / "bob.py").symlink_to("alice.py")  # bob hands in alice's file
    (cls / "eve.py").symlink_to(secret)
    (cls / "mallory").symlink_to(outside)  # a student "folder" that leads out of the class
    (cls / "carol").mkdir()
    (cls / "carol" / "solution.py").symlink_to(cls / "alice.py")
    if os.path.exists("/etc/shadow"):
        (cls / "root.py").symlink_to("/etc/shadow")
    run = gradkit(tmp_path, "grade", cls, "--out", tmp_path / "out", seconds=120)
    assert run.code == 0, run.stderr
    rows = gradebook(tmp_path / "out")
    assert rows["alice"]["passed"] == "yes" and rows["alice"]["score"] == "100"
    bob = rows["bob"]
    assert bob["score"] == "0" and bob["passed"] == "no"
    assert "bob.py is a symbolic link to alice.py, in another student's submission (alice.py)" \
        in bob["error"] and "graded as neither student's work" in bob["error"]
    assert not (tmp_path / "out" / "reports" / "bob.json").exists()
    for student in ("eve", "mallory"):
        assert rows[student]["score"] == "0"
        assert "is a symbolic link to" in rows[student]["error"]
        assert "follows no link in a class folder" in rows[student]["error"]
    assert rows["carol"]["score"] == "0"
    assert "solution.py: a symbolic link, which gradkit never follows" in rows["carol"]["error"]
    # nothing of the linked file reached any output
    everything = run.stdout + run.stderr + (tmp_path / "out" / "gradebook.csv").read_text()
    for report in (tmp_path / "out" / "reports").iterdir():
        everything += report.read_text()
    assert "gradkit-test-hash" not in everything and "$6$" not in everything
    if "root.py" in os.listdir(cls):
        assert "is a symbolic link to /etc/shadow" in rows["root"]["error"]


def test_hard_links_loops_and_odd_entries_in_a_class_folder(tmp_path):
    """A hard link is a link too: to a classmate's file (graded as neither), to a file of the
    machine (its first line was in the report, read as root), beside a student's file (copied
    into the run, as root: the submission printed it). A loop of links and a non-UTF-8 name
    stopped the whole class (exit 3), a 255-byte name failed its own report (exit 3); a FIFO, a
    socket and a folder named like a file are rows that say what they are."""
    import socket

    secret = tmp_path / "shadow"  # a stand-in for /etc/shadow, which only root may read
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    cls = tmp_path / "class"
    cls.mkdir()
    shutil.copy(EXAMPLES / "correct.py", cls / "alice.py")
    os.link(cls / "alice.py", cls / "bob.py")  # bob hands in alice's file, hard-linked
    os.link(secret, cls / "eve.py")
    (cls / "loop.py").symlink_to("loop.py")
    os.mkfifo(cls / "fifo.py")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(cls / "sock.py"))
    (cls / "folder.py").mkdir()
    shutil.copy(EXAMPLES / "correct.py", cls / "folder.py" / "solution.py")
    dave = cls / "dave"
    dave.mkdir()
    shutil.copy(HOSTILE / "prints_sibling_file.py", dave / "solution.py")
    os.link(secret, dave / "notes.txt")
    (dave / "plain.txt").write_text("a note of dave's own\n")
    shutil.copy(EXAMPLES / "correct.py", os.fsencode(cls) + b"/caf\xe9.py")  # Latin-1 name
    long_name = "x" * 252 + ".py"
    shutil.copy(EXAMPLES / "correct.py", cls / long_name)
    if os.geteuid() == 0 and os.path.exists("/etc/shadow") and \
            os.stat("/etc/shadow").st_dev == os.stat(cls).st_dev:
        # (only root may link a file it does not own: protected_hardlinks)
        os.link("/etc/shadow", cls / "root.py")
    run = gradkit(tmp_path, "grade", cls, "--out", tmp_path / "out", "--jobs", "2",
                  seconds=180)
    assert run.code == 0, run.stderr
    rows = gradebook(tmp_path / "out")
    for student in ("alice", "bob"):
        other = "bob.py" if student == "alice" else "alice.py"
        assert rows[student]["score"] == "0" and rows[student]["passed"] == "no"
        assert f"is a hard link to the same file as another student's submission ({other})" \
            in rows[student]["error"] and "graded as neither" in rows[student]["error"]
    assert "eve.py is a hard link (the same file has 3 names" in rows["eve"]["error"]
    assert rows["loop"]["score"] == "0" and "symbolic link to loop.py" in rows["loop"]["error"]
    assert "fifo.py is not a regular file" in rows["fifo"]["error"]
    assert "sock.py is not a regular file" in rows["sock"]["error"]
    assert rows["folder.py"]["score"] == "100"
    assert rows["dave"]["score"] == "100"
    dave_report = json.loads((tmp_path / "out" / "reports" / "dave.json").read_text())
    assert "plain.txt: a note of dave's own" in dave_report["output"]["stdout"]
    assert "notes.txt" not in dave_report["output"]["stdout"]  # never copied into the run
    assert rows["caf_"]["score"] == "100"
    long_rows = [r for name, r in rows.items() if name.startswith("x" * 100)]
    assert len(long_rows) == 1 and long_rows[0]["score"] == "100"
    assert all(len(p.name.encode()) < 200 for p in (tmp_path / "out" / "reports").iterdir())
    everything = run.stdout + run.stderr + (tmp_path / "out" / "gradebook.csv").read_text()
    for report in (tmp_path / "out" / "reports").iterdir():
        everything += report.read_text()
    assert "gradkit-test-hash" not in everything and "$6$" not in everything
    if "root.py" in os.listdir(cls):
        assert "root.py is a hard link" in rows["root"]["error"]
        os.unlink(cls / "root.py")


def test_a_hard_link_given_to_check_is_refused_not_read(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\n")
    link = tmp_path / "student.py"
    os.link(secret, link)
    report, run = check(tmp_path, link, seconds=60)
    assert run.code == 1
    assert "student.py is a hard link" in verdicts(report)["load"]["message"]
    assert "gradkit-test-hash" not in run.stdout + run.stderr


def test_a_link_given_to_check_is_refused_not_read(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\n")
    link = tmp_path / "student.py"
    link.symlink_to(secret)
    report, run = check(tmp_path, link, seconds=60)
    assert run.code == 1
    load = verdicts(report)["load"]
    assert "is a symbolic link" in load["message"] and "gradkit reads no link" in load["message"]
    assert "gradkit-test-hash" not in run.stdout + run.stderr


# -- credit only from what the function returned ------------------------------------------------

@pytest.mark.parametrize("attack, was", [("credit_unmoved_weights", 55.0),
                                         ("credit_forged_locals", 70.0)])
def test_forged_locals_earn_no_credit(tmp_path, attack, was):
    """With --credit-upstream, captured locals explain; only the returned weights earn."""
    strict, _ = check(tmp_path, HOSTILE / f"{attack}.py")
    credited, run = check(tmp_path, HOSTILE / f"{attack}.py", "--credit-upstream")
    assert run.code == 1
    assert credited["score"] == strict["score"] < was
    for check_id in ("gradient.V", "gradient.I", "gradient.W", "gradient.J", "update"):
        verdict = verdicts(credited)[check_id]
        assert "credited" not in verdict["message"]
        assert verdict["points"] == verdicts(strict)[check_id]["points"]
    assert sum(verdicts(credited)[c]["points"] for c in ("gradient.V", "gradient.I",
                                                         "gradient.W", "gradient.J",
                                                         "update")) <= 2.5


def test_a_real_upstream_mistake_keeps_its_credit(tmp_path):
    """The rule does not take credit from an honest one: the sign of dL/dP wrong, every later
    step right from it, the weights moved by it."""
    credited, _ = check(tmp_path, EXAMPLES / "buggy" / "sign_error_dLdP.py", "--credit-upstream")
    for check_id in ("gradient.V", "gradient.I", "update"):
        assert verdicts(credited)[check_id]["status"] == "pass"
        assert "credited" in verdicts(credited)[check_id]["message"]


# -- autograd caught by any route ---------------------------------------------------------------

@pytest.mark.parametrize("attack, code, words", [
    ("autograd_by_other_routes", "GKP110", "torch's engine built"),
    ("autograd_in_a_thread", "GKP110", "torch's engine built"),
    ("autograd_watch_switched_off", "GKP112", "gradkit's watch of autograd off"),
    ("autograd_forward_mode_within_a_call", "GKP112", "switched forward-mode autograd back on"),
    ("autograd_dual_levels_in_a_thread", "GKP112", "switched forward-mode autograd back on"),
])
def test_autograd_by_another_route_fails_the_policy(tmp_path, attack, code, words):
    """Built names, the counter's own __wrapped__, setattr(requires_grad), detached results,
    grad mode switched back off, another thread, forward mode switched on and off within a call
    (jvp) or used in a thread of its own: 100/100 and a passing policy before."""
    report, run = check(tmp_path, HOSTILE / f"{attack}.py")
    assert run.code == 1 and not report["passed"]
    policy = verdicts(report)["policy"]
    assert policy["status"] == "fail"
    assert code in policy["message"] and words in policy["message"]
    assert report["score"] <= 20  # the gradient, update and training points are withheld
    allowed, run = check(tmp_path, HOSTILE / f"{attack}.py", "--allow-autograd")
    assert run.code == 0 and allowed["passed"] and allowed["score"] == 100
    if attack != "autograd_forward_mode_within_a_call":  # (not watched when allowed: unseen)
        assert "allowed (autograd is allowed)" in verdicts(allowed)["policy"]["message"]


def test_forward_mode_autograd_switched_back_on_fails_the_policy():
    """Forward-mode AD builds no graph node; gradkit switches it off before the file loads and
    finds it back on. Through the real sandbox with long limits: torch's first dual operation
    loads its formulas, a dozen seconds on a busy machine, more than the default load limit."""
    from gradkit import check as grade
    from gradkit.sandbox import Limits

    limits = Limits(load_seconds=120, call_seconds=60, total_seconds=300)
    path = HOSTILE / "autograd_forward_mode.py"
    report = grade(path, limits=limits)
    assert report.error is None and report.check("load").status == "pass"
    policy = report.check("policy")
    assert policy.status == "fail" and "GKP112" in policy.message
    assert "switched forward-mode autograd back on" in policy.message
    assert report.score <= 20
    allowed = grade(path, limits=limits, allow_autograd=True)
    assert allowed.passed and allowed.score == 100  # not watched when allowed


def test_a_solution_by_hand_shows_no_autograd(tmp_path):
    report, run = check(tmp_path, EXAMPLES / "correct.py")
    assert run.code == 0 and verdicts(report)["policy"]["status"] == "pass"
    assert verdicts(report)["policy"]["message"] == ""


@pytest.mark.parametrize("engine, codes", [
    ({"nodes": 0, "grad_mode": False, "threads": 2, "all_threads": True}, []),
    ({"nodes": 0, "grad_mode": False, "threads": 2, "all_threads": False}, ["GKP113"]),
    ({"nodes": 0, "grad_mode": False, "threads": -1, "all_threads": True}, ["GKP113"]),
    ({"nodes": 7, "grad_mode": True, "threads": 0, "all_threads": True}, ["GKP110", "GKP112"]),
])
def test_what_the_engine_saw_is_judged_by_the_policy(engine, codes):
    """A thread that builds no graph (a progress bar's monitor) is no violation where nodes are
    counted in every thread; where they cannot be, any thread is, and so is a watch closed."""
    from gradkit.policy import scan_run

    found = scan_run([{"type": "load", "ok": True, "engine": {"nodes": 0}},
                      {"type": "call", "id": "batch5", "ok": True, "engine": engine}])
    assert [v.code for v in found] == codes
    if "GKP110" in codes:
        assert "torch's engine built 7 graph nodes in batch5" in found[0].detail
