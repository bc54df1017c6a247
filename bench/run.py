"""gradkit's speed, measured side by side with its baselines in one run; prints ratios and memory.

    python bench/run.py            # the whole benchmark (a few minutes on 2 cores)
    python bench/run.py --quick    # fewer repeats and a 60-submission class
    python bench/run.py --other-assignment-only --class-size 8   # just the non-notebook class

Targets (issue 7): `gradkit check` on the correct example within 1.3x `python -c "import torch"`;
`gradkit grade --jobs 2` on 200+ submissions at 25+ per second and 15x faster than a fresh
interpreter per submission; peak memory below 1 GB for the batch and 500 MB for one check;
`gradkit --help` and `gradkit schema` under 0.3 s without importing torch. As root, the batch is
also graded as an ordinary user (uid 65534, from a venv of the system's Python built once by
tests/user_venv.py). Two lines say where the time and memory go: the batch again without its
HTML pages (`--no-html`), and the memory of an idle fresh interpreter holding torch and numpy
(what the sandbox's worker, a fresh interpreter since issue 11, adds to a check).

Memory is the peak, over the run, of the summed proportional set size (PSS: shared pages split
between the processes sharing them) of the command's whole process tree, sampled every 20 ms in
a run of its own (sampling slows the command it measures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "submissions_example"
GRADKIT = [sys.executable, "-m", "gradkit"]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(cmd: list[str], *, memory: bool = False, env: dict | None = None) -> tuple[float, int]:
    """Wall seconds of a command and (if asked) its tree's peak PSS in MB."""
    peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, cwd=ROOT)
    if memory:
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                tree = [proc.pid] + _children(proc.pid)
                peak = max(peak, sum(_pss_kb(p) for p in tree))
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    proc.wait()
    elapsed = time.perf_counter() - start
    if memory:
        stop.set()
        sampler.join()
    return elapsed, peak // 1024


IDLE_WORKER = ("import sys, time, numpy, torch\n"
               "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)")


def idle_worker_memory() -> tuple[int, int]:
    """(PSS, private anonymous memory) in MB of a fresh isolated interpreter that imported
    torch and numpy, alone: what the sandbox's worker (a fresh interpreter, issue 11) adds to a
    command that imported torch itself, before any run."""
    proc = subprocess.Popen([sys.executable, "-I", "-c", IDLE_WORKER], stdout=subprocess.PIPE,
                            cwd="/")
    try:
        proc.stdout.readline()
        fields = {}
        with open(f"/proc/{proc.pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1])
        return fields["Pss"] // 1024, fields["Pss_Anon"] // 1024
    finally:
        proc.kill()
        proc.wait()


def median_time(cmd: list[str], repeats: int) -> float:
    run(cmd)  # warm the page cache
    return statistics.median(run(cmd)[0] for _ in range(repeats))


#: A bundled assignment other than the notebook's whose examples make a second class.
OTHER_ASSIGNMENT = "tanh_bce"


def example_sources(assignment: str = "notebook") -> list[Path]:
    """The bundled examples with an expected verdict: for the notebook correct, other styles,
    buggy, notebooks; for another bundled assignment its folder's examples."""
    if assignment != "notebook":
        return sorted((EXAMPLES / assignment).glob("*.py"))
    sources = sorted(p for p in EXAMPLES.rglob("*.py")
                     if p.read_text().startswith("# gradkit-expect")
                     and not p.read_text().startswith("# gradkit-expect: assignment="))
    return sources + sorted(EXAMPLES.glob("*.ipynb"))


def build_class(folder: Path, size: int, assignment: str = "notebook") -> list[Path]:
    """A class of ``size`` submissions: correct, other styles, buggy and notebooks, in turn.

    Each file is made distinct (a line naming its student), as a real class's files are: no
    two share a hash, so nothing keyed on a file's content can be reused between students.
    """
    sources = example_sources(assignment)
    folder.mkdir(parents=True)
    made = []
    for i in range(size):
        source = sources[i % len(sources)]
        target = folder / f"student_{i:03d}{source.suffix}"
        signature = f"submitted by student {i:03d}"
        if source.suffix == ".ipynb":
            notebook = json.loads(source.read_text())
            notebook["cells"].append({"cell_type": "markdown", "id": f"student-{i:03d}",
                                      "metadata": {},
                                      "source": [signature]})
            target.write_text(json.dumps(notebook, indent=1))
        else:
            target.write_text(source.read_text() + f"\n# {signature}\n")
        made.append(target)
    return made


FLOOR = """
import sys, time
from gradkit.cases import build_cases
from gradkit.loader import load_submission
from gradkit.sandbox.runner import SHIMS
sys.path.append(SHIMS)
case = next(c for c in build_cases() if c.kind == "training")
rows = case.rows.tolist()
total = 0.0
for path in sys.argv[1:]:
    submission = load_submission(path)
    namespace = {"__name__": "__main__"}
    started = time.process_time()
    try:
        exec(compile(submission.source, path, "exec"), namespace)  # a notebook trains here too
        weights, train = case.weights, namespace["train_neural_net"]
        for row in rows:
            weights = train(case.X[row:row + 1], case.Y[row:row + 1], weights, case.learning_rate)
    except Exception:
        pass
    total += time.process_time() - started
print(total / (len(sys.argv) - 1))
"""


def students_floor(sources: list[Path]) -> float:
    """CPU seconds per submission of the students' own code alone: loading the file and the
    notebook's 800-step training loop, in one plain process (the mean over the class's files).
    No grader can do a submission in less."""
    result = subprocess.run([sys.executable, "-c", FLOOR, *map(str, sources)], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def as_ordinary_user(work: Path, class_dir: Path, size: int) -> tuple[str, str, str] | None:
    """The same batch graded as uid 65534 (a venv of the system's Python it can read, a private
    home; tests/user_venv.py), where root can become that user: its row, or None."""
    sys.path.insert(0, str(ROOT / "tests"))
    import user_venv

    why_not = user_venv.available()
    if why_not is not None:
        print(f"(the batch as an ordinary user is not timed: {why_not})")
        return None
    venv = user_venv.user_venv()
    os.chmod(work, 0o755)
    home = user_venv.private_home(work)
    out = work / "user-reports"
    out.mkdir()
    os.chown(out, user_venv.USER, user_venv.USER)
    started = time.perf_counter()
    result = user_venv.as_user([str(venv / "bin" / "gradkit"), "grade", str(class_dir),
                                "--jobs", "2", "--out", str(out), "--force"], home, cwd=work)
    seconds = time.perf_counter() - started
    graded = len(list((out / "reports").glob("*.json")))
    if result.returncode != 0 or graded != size:
        raise SystemExit(f"the batch as an ordinary user failed (exit {result.returncode}, "
                         f"{graded} of {size} reports): {result.stderr[-2000:]}")
    return ("  as an ordinary user (uid 65534, user namespaces)",
            f"{seconds:.1f} s, {size / seconds:.1f} submissions/s", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--class-size", type=int, default=None)
    parser.add_argument("--other-assignment-only", action="store_true",
                        help=f"Only grade a class of the bundled {OTHER_ASSIGNMENT!r} assignment.")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    size = args.class_size or (60 if args.quick else 200)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.platform()}")
    rows: list[tuple[str, str, str]] = []
    if args.other_assignment_only:
        rows += other_assignment_class(size)
        _print(rows)
        return

    torch_s = median_time([sys.executable, "-c", "import torch"], repeats)
    check_s = median_time(GRADKIT + ["check", str(EXAMPLES / "correct.py")], repeats)
    _, check_mb = run(GRADKIT + ["check", str(EXAMPLES / "correct.py")], memory=True)
    rows.append(("gradkit check correct.py", f"{check_s:.2f} s vs import torch {torch_s:.2f} s",
                 f"{check_s / torch_s:.2f}x (target <= 1.3x)"))
    rows.append(("  peak memory of one check", f"{check_mb} MB", "target < 500 MB"))
    idle_pss, idle_private = idle_worker_memory()
    rows.append(("  a fresh interpreter with torch and numpy, idle",
                 f"{idle_pss} MB alone, {idle_private} MB of it private",
                 "the sandbox's worker before any run"))

    for name, cmd in (("gradkit --help", ["gradkit", "--help"]),
                      ("gradkit schema", ["gradkit", "schema"])):
        # the console script beside this interpreter (the one whose gradkit is measured), not
        # whichever ``gradkit`` comes first on PATH
        exe = Path(sys.executable).with_name("gradkit" + (".exe" if os.name == "nt" else ""))
        seconds = median_time([str(exe)] + cmd[1:] if exe.exists() else GRADKIT + cmd[1:],
                              repeats)
        imported = subprocess.run(
            [sys.executable, "-c", "import sys; sys.argv = " + repr(cmd) + "\n"
             "from gradkit.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules, file=sys.stderr)"],
            capture_output=True, text=True, cwd=ROOT).stderr.strip().splitlines()[-1]
        rows.append((name, f"{seconds:.2f} s", f"torch imported: {imported} (target < 0.3 s, "
                     "no torch)"))

    work = Path(tempfile.mkdtemp(prefix="gradkit-bench-"))
    try:
        class_dir = work / "class"
        submissions = build_class(class_dir, size)
        out = work / "reports"
        grade = GRADKIT + ["grade", str(class_dir), "--jobs", "2", "--out", str(out), "--force"]
        # timed and measured in separate runs: reading the tree's smaps_rollup every 20 ms walks
        # its page tables, which costs the batch a noticeable share of a core
        batch_s, _ = run(grade)
        _, batch_mb = run(grade, memory=True)
        rate = size / batch_s
        plain_s, _ = run(grade + ["--no-html"])
        # baseline: a fresh interpreter per submission, two at a time, on a sample
        sample = submissions[: min(20, size)]
        start = time.perf_counter()
        procs: list[subprocess.Popen] = []
        for path in sample:
            if len(procs) == 2:
                procs.pop(0).wait()
            procs.append(subprocess.Popen(GRADKIT + ["check", str(path), "--format", "json"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in procs:
            p.wait()
        fresh_per = (time.perf_counter() - start) / len(sample)
        rows.append((f"gradkit grade {size} submissions --jobs 2",
                     f"{batch_s:.1f} s, {rate:.1f} submissions/s", "target >= 25/s"))
        rows.append(("  vs a fresh interpreter per submission (2 at a time)",
                     f"{fresh_per:.2f} s each vs {batch_s / size:.3f} s",
                     f"{fresh_per / (batch_s / size):.1f}x faster (target >= 15x)"))
        rows.append(("  peak memory of the batch", f"{batch_mb} MB", "target < 1000 MB"))
        rows.append(("  without the HTML pages (--no-html)",
                     f"{plain_s:.1f} s, {size / plain_s:.1f} submissions/s",
                     f"the pages take {100 * (batch_s - plain_s) / batch_s:.0f}% of the time"))
        user = as_ordinary_user(work, class_dir, size)
        if user is not None:
            rows.append(user)
        floor = students_floor(submissions[: len(example_sources())])  # one of each
        rows.append(("  the students' own code alone (load + training loop)",
                     f"{floor * 1000:.0f} ms CPU per submission",
                     f"caps 2 cores at {2 / floor:.0f}/s"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows += other_assignment_class(size)
    _print(rows)


def other_assignment_class(size: int) -> list[tuple[str, str, str]]:
    """`gradkit grade --assignment` on a class of a bundled non-notebook assignment's examples;
    every report must say what the example's header expects."""
    work = Path(tempfile.mkdtemp(prefix="gradkit-bench-other-"))
    try:
        class_dir = work / "class"
        build_class(class_dir, size, OTHER_ASSIGNMENT)
        out = work / "reports"
        seconds, _ = run(GRADKIT + ["grade", str(class_dir), "--jobs", "2", "--out", str(out),
                                    "--force", "--assignment", OTHER_ASSIGNMENT])
        sources = example_sources(OTHER_ASSIGNMENT)
        wrong = 0
        for i in range(size):
            expected = "verdict=pass" in sources[i % len(sources)].read_text()
            report = json.loads((out / "reports" / f"student_{i:03d}.json").read_text())
            wrong += report["passed"] != expected or report["error"] is not None
        return [(f"gradkit grade {size} submissions --assignment {OTHER_ASSIGNMENT} --jobs 2",
                 f"{seconds:.1f} s, {size / seconds:.1f} submissions/s",
                 f"{size - wrong}/{size} verdicts as expected")]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _print(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, value, verdict in rows:
        print(f"{name:<{width}}  {value:<40}  {verdict}")


if __name__ == "__main__":
    main()
