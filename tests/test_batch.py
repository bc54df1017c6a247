"""`gradkit grade`: a class folder with correct, buggy, notebook, broken and hostile submissions.

The CLI runs through click (conftest's ``gradkit_cli``); every batch runs real grading processes,
each with its own sandbox.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES
from gradkit import batch
from gradkit.report import Report

CORRECT = (EXAMPLES / "correct.py").read_text()
HOSTILE = {
    "broken_syntax.py": "def train_neural_net(X, Y, weights=None, learning_rate=1.0:\n  pass\n",
    "crashes.py": "raise SystemExit('I crash at import')\n",
    # tries to kill the process that forked it (the sandbox's worker) as it loads
    "kills_worker.py": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "hangs.py": "def train_neural_net(X, Y, weights=None, learning_rate=1.0):\n"
                "    while True:\n        pass\n\n"
                "def neural_net_predict(X, weights):\n    while True:\n        pass\n",
}


def make_class(root: Path) -> Path:
    """A class folder: one file per student, and one folder-per-student with a helper module."""
    folder = root / "class"
    folder.mkdir()
    shutil.copy(EXAMPLES / "correct.py", folder / "alice.py")
    shutil.copy(EXAMPLES / "buggy" / "bias_mean_not_sum.py", folder / "bob.py")
    shutil.copy(EXAMPLES / "notebook.ipynb", folder / "carol.ipynb")
    for name, text in HOSTILE.items():
        (folder / name).write_text(text)
    dora = folder / "dora"
    dora.mkdir()
    (dora / "my_sigmoid.py").write_text(
        "import torch\n\ndef sigmoid(x, deriv=False):\n"
        "    s = torch.sigmoid(x)\n    return s * (1 - s) if deriv else s\n")
    (dora / "solution.py").write_text(
        CORRECT.replace("from helper import sigmoid", "from my_sigmoid import sigmoid"))
    (folder / "notes.txt").write_text("not a submission")
    return folder


def gradebook(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded once through the CLI, by two grading processes."""
    from click.testing import CliRunner

    from gradkit.cli import main

    root = tmp_path_factory.mktemp("batch")
    folder = make_class(root)
    out = root / "out"
    result = CliRunner().invoke(main, ["grade", str(folder), "--out", str(out), "--jobs", "2",
                                       "--timeout", "4"], catch_exceptions=False)
    return folder, out, result


def test_every_submission_gets_a_row_and_a_report(graded):
    folder, out, result = graded
    assert result.exit_code == 0, result.output
    rows = gradebook(out / "gradebook.csv")
    assert sorted(rows) == ["alice", "bob", "broken_syntax", "carol", "crashes", "dora",
                            "hangs", "kills_worker"]
    assert list(rows) == sorted(rows)
    for student, row in rows.items():
        report = Report.model_validate_json((out / "reports" / f"{student}.json").read_text())
        assert float(row["score"]) == pytest.approx(report.score)
        assert float(row["max"]) == report.max_score
        assert row["passed"] == ("yes" if report.passed else "no")
        assert row["sha256"] == report.submission.sha256


def test_scores_and_errors_are_those_of_the_submissions(graded):
    _, out, _ = graded
    rows = gradebook(out / "gradebook.csv")
    assert rows["alice"]["passed"] == "yes" and rows["alice"]["score"] == "100"
    assert rows["dora"]["passed"] == "yes", rows["dora"]  # its own helper module was visible
    assert rows["dora"]["submission"].endswith("dora/solution.py")
    assert rows["bob"]["passed"] == "no" and "gradient.I" in rows["bob"]["failing"].split()
    assert rows["bob"]["error"] == ""
    assert rows["carol"]["passed"] == "no" and "predict" in rows["carol"]["failing"]
    assert "syntax error" in rows["broken_syntax"]["error"]
    assert "I crash at import" in rows["crashes"]["error"]
    assert "longer than 4 s" in rows["hangs"]["error"] and rows["hangs"]["score"] == "0"
    assert rows["kills_worker"]["score"] == "0"
    for student in ("broken_syntax", "crashes", "hangs", "kills_worker"):
        assert rows[student]["passed"] == "no" and rows[student]["error"], student


def test_the_summary_shows_the_distribution_and_common_mistakes(graded):
    _, _, result = graded
    text = result.stdout
    assert text.startswith("8 submissions: 2 passed every check, 6 did not")
    assert re.search(r"^\s+100%\s+2\s+#+$", text, re.M), text  # alice and dora
    assert re.search(r"^\s+0-50%\s+[1-9]", text, re.M)
    assert "checks failed most often:" in text
    assert "gradebook:" in text


def test_a_rerun_reuses_reports_of_unchanged_files(graded, gradkit_cli):
    folder, out, _ = graded
    (folder / "bob.py").write_text(CORRECT)  # bob fixes his code
    result = gradkit_cli("grade", folder, "--out", out, "--timeout", "4")
    assert result.exit_code == 0
    rows = gradebook(out / "gradebook.csv")
    assert rows["bob"]["reused"] == "no" and rows["bob"]["passed"] == "yes"
    assert rows["alice"]["reused"] == "yes" and rows["dora"]["reused"] == "yes"
    assert "7 unchanged since the last run" in result.stdout
    forced = gradkit_cli("grade", folder, "--out", out, "--force", "--timeout", "4")
    assert "unchanged" not in forced.stdout
    assert {r["reused"] for r in gradebook(out / "gradebook.csv").values()} == {"no"}


def test_changed_settings_regrade(graded, gradkit_cli, tmp_path):
    folder, _, _ = graded
    solo = tmp_path / "solo"
    solo.mkdir()
    shutil.copy(folder / "alice.py", solo / "alice.py")
    first = gradkit_cli("grade", solo, "--out", tmp_path / "out")
    again = gradkit_cli("grade", solo, "--out", tmp_path / "out", "--points", "training=0")
    assert "unchanged" not in again.stdout and first.exit_code == again.exit_code == 0
    assert gradebook(tmp_path / "out" / "gradebook.csv")["alice"]["max"] == "80"


def test_real_parallel_workers(tmp_path):
    """--jobs 2 with two real sandboxes: each submission graded once, results as with one."""
    for name in ("a", "b", "c"):
        shutil.copy(EXAMPLES / "correct.py", tmp_path / f"{name}.py")
    shutil.copy(EXAMPLES / "buggy" / "predict_returns_C.py", tmp_path / "d.py")
    (tmp_path / "e.py").write_text(HOSTILE["kills_worker.py"])
    subs = batch.find_submissions([tmp_path])
    started = []
    rows = batch.grade_all(subs, batch.Batch(tmp_path / "out"), jobs=2,
                           on_start=lambda s: started.append(s.student))
    assert sorted(started) == ["a", "b", "c", "d", "e"]
    assert [(r.student, r.passed) for r in rows] == \
        [("a", True), ("b", True), ("c", True), ("d", False), ("e", False)]
    assert rows[3].failing == ["predict"]


def test_each_grading_process_gets_a_worker_forked_by_a_fresh_interpreter(tmp_path):
    """`gradkit grade` first starts one fresh isolated interpreter (so that its import of torch
    overlaps the main process's) which forks a worker for each grading process; the workers
    grade, and every one of them and their source are gone after the batch."""
    from gradkit.sandbox.worker import children_of

    for name in ("a", "b", "c"):
        shutil.copy(EXAMPLES / "correct.py", tmp_path / f"{name}.py")

    def command_line(pid: int) -> list[str]:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            return []

    seen: dict[int, set[int]] = {}  # each source of workers -> the workers it forked
    with subprocess.Popen([sys.executable, "-m", "gradkit", "grade", str(tmp_path), "--jobs",
                           "2", "--out", str(tmp_path / "out"), "--no-html"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as grade:
        while grade.poll() is None:
            for pid in children_of(grade.pid):
                line = command_line(pid)
                if "workers" in line[2:] and line[line.index("workers") - 1].endswith("boot.py"):
                    seen.setdefault(pid, set()).update(children_of(pid))
            time.sleep(0.02)
    assert grade.returncode == 0
    assert gradebook(tmp_path / "out" / "gradebook.csv")["a"]["passed"] == "yes"
    [workers] = seen.values()  # one source, started by the command itself
    assert len(workers) == 2  # a worker for each grading process
    deadline = time.monotonic() + 10
    alive = [pid for pid in [*seen, *workers] if running(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if running(pid)]
    assert not alive


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_a_gradkit_failure_on_one_submission_does_not_stop_the_batch(tmp_path, monkeypatch):
    import gradkit.api

    for name in ("a", "b"):
        shutil.copy(EXAMPLES / "correct.py", tmp_path / f"{name}.py")
    real = gradkit.api.check

    def flaky(path, **options):
        if Path(path).stem == "a":
            raise RuntimeError("gradkit bug")
        return real(path, **options)

    monkeypatch.setattr(gradkit.api, "check", flaky)
    rows = batch.grade_all(batch.find_submissions([tmp_path]), batch.Batch(tmp_path / "out"))
    assert rows[0].internal_error and "gradkit bug" in rows[0].error
    assert rows[1].passed
    assert batch.summarize(rows).internal_errors == 1


def test_grading_processes_start_fresh_when_this_process_runs_threads(tmp_path):
    """A fork is only safe with no other thread running; otherwise the grading processes are
    fresh interpreters, with the same settings (sent as plain data) and the same results."""
    import threading

    shutil.copy(EXAMPLES / "correct.py", tmp_path / "a.py")
    shutil.copy(EXAMPLES / "buggy" / "predict_returns_C.py", tmp_path / "b.py")
    settings = batch.Settings(points={"training": 0})
    assert batch.Settings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)
    busy.start()
    try:
        rows = batch.grade_all(batch.find_submissions([tmp_path]), batch.Batch(tmp_path / "out"),
                               jobs=2, settings=settings)
    finally:
        stop.set()
        busy.join()
    assert [(r.student, r.passed, r.max, r.failing) for r in rows] == \
        [("a", True, 80.0, []), ("b", False, 80.0, ["predict"])]


def test_a_grading_process_that_dies_costs_one_row_and_is_replaced(tmp_path, monkeypatch):
    import os

    import gradkit.api

    for name in ("a", "b", "c"):
        shutil.copy(EXAMPLES / "correct.py", tmp_path / f"{name}.py")
    real = gradkit.api.check

    def dies_on_b(path, **options):
        if Path(path).stem == "b":
            os._exit(9)  # in the grading process (a fork, so it sees this patch)
        return real(path, **options)

    monkeypatch.setattr(gradkit.api, "check", dies_on_b)
    rows = batch.grade_all(batch.find_submissions([tmp_path]), batch.Batch(tmp_path / "out"))
    assert [(r.student, r.passed, r.internal_error) for r in rows] == \
        [("a", True, False), ("b", False, True), ("c", True, False)]
    assert "grading process stopped" in rows[1].error
    assert not (tmp_path / "out" / "reports" / "b.json").exists()


def test_exit_codes(gradkit_cli, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert gradkit_cli("grade", empty).exit_code == 2
    assert gradkit_cli("grade", tmp_path / "missing").exit_code == 2
    shutil.copy(EXAMPLES / "correct.py", tmp_path / "x.py")
    (tmp_path / "a_file").write_text("")
    unwritable = gradkit_cli("grade", tmp_path / "x.py", "--out", tmp_path / "a_file" / "out")
    assert unwritable.exit_code == 2 and "Traceback" not in unwritable.output
    assert "Invalid value for --out: cannot create" in unwritable.stderr
    import gradkit.batch

    monkeypatch.setattr(gradkit.batch, "grade_all", lambda *a, **k: [batch.Row(
        student="x", score=0, max=100, passed=False, internal_error=True)])
    assert gradkit_cli("grade", tmp_path / "x.py", "--out", tmp_path / "o").exit_code == 3


# -- which files are whose (no grading) --------------------------------------------------------

def test_one_folder_is_the_class_several_paths_are_students(tmp_path):
    folder = make_class(tmp_path)
    names = [s.student for s in batch.find_submissions([folder])]
    assert names == ["alice", "bob", "broken_syntax", "carol", "crashes", "dora", "hangs",
                     "kills_worker"]
    subs = batch.find_submissions([folder / "dora", folder / "alice.py"])
    assert [(s.student, s.siblings) for s in subs] == [("alice", False), ("dora", True)]
    out = folder / "gradkit-reports"
    out.mkdir()
    assert "gradkit-reports" not in [s.student for s in batch.find_submissions(
        [folder], exclude=[out])]


def test_names_stay_unique(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "sol.py").write_text("")
    (tmp_path / "a" / "sol.ipynb").write_text("{}")
    subs = batch.find_submissions([tmp_path / "a" / "sol.py", tmp_path / "a" / "sol.ipynb",
                                   tmp_path / "b" / "sol.py"])
    names = sorted(s.student for s in subs)
    assert len(set(names)) == 3, names
    assert "sol.ipynb" in names


@pytest.mark.parametrize("files, picked", [
    ({"helper.py": "x = 1", "main.py": "def train_neural_net(X, Y): ..."}, "main.py"),
    ({"nb.ipynb": '"def train_neural_net(X, Y):"', "sol.py": "def train_neural_net(X, Y): ..."},
     "sol.py"),
    ({"a.py": "def train_neural_net(X, Y): ...",
      "b.py": "def train_neural_net(X, Y): ...\ndef neural_net_predict(X, w): ..."}, "b.py"),
    ({"sub/deep.py": "def train_neural_net(X, Y): ...",
      "top.py": "def train_neural_net(X, Y): ..."}, "top.py"),
    ({"only.py": "print('no functions')"}, "only.py"),
    ({"one.py": "x = 1", "two.py": "y = 2"}, None),
    ({".hidden.py": "def train_neural_net(X, Y): ..."}, None),
])
def test_the_file_picked_in_a_students_folder(tmp_path, files, picked):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = batch.pick_file(tmp_path)
    assert (found.relative_to(tmp_path).as_posix() if found else None) == picked


def test_a_folder_without_a_solution_is_a_row_that_says_so(gradkit_cli, tmp_path):
    (tmp_path / "class" / "erin").mkdir(parents=True)
    (tmp_path / "class" / "erin" / "readme.md").write_text("forgot my code")
    result = gradkit_cli("grade", tmp_path / "class", "--out", tmp_path / "out")
    assert result.exit_code == 0
    row = gradebook(tmp_path / "out" / "gradebook.csv")["erin"]
    assert row["score"] == "0" and "defines train_neural_net" in row["error"]


def test_a_file_that_is_not_a_file_is_never_read(gradkit_cli, tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    shutil.copy(EXAMPLES / "correct.py", folder / "alice.py")
    (folder / "endless.py").symlink_to("/dev/zero")
    (folder / "dangling.py").symlink_to(tmp_path / "nowhere.py")
    result = gradkit_cli("grade", folder, "--out", tmp_path / "out")
    assert result.exit_code == 0
    rows = gradebook(tmp_path / "out" / "gradebook.csv")
    assert rows["alice"]["passed"] == "yes"
    for student in ("endless", "dangling"):
        assert rows[student]["error"].endswith("is not a regular file")


def test_summary_counts_mistakes_across_the_class():
    rows = [batch.Row("a", 100, 100, True),
            batch.Row("b", 75, 100, False, diagnoses=["GK1", "GK2"], failing=["gradient.I"],
                      titles={"GK1": "bias mean", "GK2": "other"}),
            batch.Row("c", 40, 100, False, diagnoses=["GK1"], failing=["gradient.I", "update"],
                      titles={"GK1": "bias mean"}, error="crashed")]
    summary = batch.summarize(rows)
    assert (summary.students, summary.passed, summary.errors) == (3, 1, 1)
    assert summary.mistakes[0] == ("GK1", "bias mean", 2)
    assert summary.failing[0] == ("gradient.I", 2)
    assert dict(summary.distribution) == {"0-50%": 1, "50-60%": 0, "60-70%": 0, "70-80%": 1,
                                          "80-90%": 0, "90-100%": 0, "100%": 1}
    text = "\n".join(batch.summary_lines(summary))
    assert "GK1  bias mean" in text and "median 75" in text


def test_gradebook_columns():
    assert batch.GRADEBOOK_COLUMNS[:8] == ("student", "score", "max", "passed", "diagnoses",
                                           "failing", "duration", "error")
    row = batch.Row("a", 1.5, 100, False, diagnoses=["GK1", "GK2"])
    assert row.csv_row()["diagnoses"] == "GK1 GK2"
    assert json.dumps(row.csv_row())


def test_gradebook_rows_sort_naturally():
    from gradkit.batch import natural_key

    assert sorted(["s10", "s2", "s1", "Bob", "alice", "7x"], key=natural_key) == \
        ["7x", "alice", "Bob", "s1", "s2", "s10"]
