"""Grading a whole class: many submissions, parallel isolated workers, a gradebook and a summary.

``find_submissions`` turns the paths an instructor gives into one ``Submission`` per student,
``grade_all`` grades them with ``jobs`` grading processes (forks of this one, each with its own
``Sandbox``, whose worker holds nothing of the grader or the batch: it is forked by one fresh
interpreter, ``gradkit.sandbox.runner.WorkerSource``, started before anything else), writes
one JSON report (and HTML page) per student and a gradebook CSV, and returns the rows;
``summarize`` reads the class's score distribution and commonest mistakes from those rows.

Which files are whose (also in the README):

- one folder given: it is the class. Each ``.py``/``.ipynb`` file in it is one student (named
  after the file's stem); each subfolder is one student (named after the folder).
- several paths given: each is one student's submission, a file or a folder.
- in a student's folder the graded file is the ``.py``/``.ipynb`` that defines
  ``train_neural_net``: the least deeply nested, then one that also defines
  ``neural_net_predict``, then ``.py`` before ``.ipynb``, then by name. Its folder's other files
  are visible to it (``siblings=True``); a student's file in a shared folder sees no other file.

A rerun reuses a student's report when the graded files (sha256), the grading settings and the
gradkit version are unchanged; ``force=True`` grades everything again.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import hashlib
import json
import os
import queue
import re
import socket
import stat
import statistics
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Sequence

from gradkit import __version__
from gradkit.loader import hard_link_problem
from gradkit.options import Options
from gradkit.report import Report
from gradkit.sandbox import open_sandbox

if TYPE_CHECKING:
    from gradkit.sandbox.runner import WorkerSource

SUFFIXES = (".py", ".ipynb")
SKIPPED_NAMES = ("__pycache__", ".ipynb_checkpoints")
GRADEBOOK_COLUMNS = ("student", "score", "max", "passed", "diagnoses", "failing", "duration",
                     "error", "submission", "sha256", "reused")
MANIFEST = ".gradkit-batch.json"
_FUNCTIONS = ("train_neural_net", "neural_net_predict")
_MAX_SCAN_BYTES = 2 << 20
_MAX_FOLDER_FILES = 500
#: how deep a student's folder is searched, and how many of its entries are looked at: a folder
#: of a thousand nested folders, or of a million files, costs no more than this
_MAX_FOLDER_DEPTH = 8
_MAX_FOLDER_ENTRIES = 20_000
#: bytes of a submission's files hashed to tell whether it changed (their sizes and times always)
_MAX_DIGEST_BYTES = 96 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
    getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Submission:
    """One student's submission: the file gradkit checks and where it came from."""

    student: str
    path: Path  # the file to check; the folder itself when none was found in it
    folder: Optional[Path] = None  # set for a folder-per-student submission
    problem: str = ""  # why no file could be picked, if none could

    @property
    def siblings(self) -> bool:
        return self.folder is not None


#: Everything besides the files that changes a grade (a change regrades every student): the
#: grading options, one object (``gradkit.options.Options``: ``key()``, ``to_json()``,
#: ``from_json()``).
Settings = Options


@dataclass
class Row:
    """One line of the gradebook."""

    student: str
    score: float
    max: float
    passed: bool
    diagnoses: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)
    duration: float = 0.0
    error: str = ""
    submission: str = ""
    sha256: str = ""
    reused: bool = False
    #: diagnosis code -> title, for the summary (not a gradebook column)
    titles: dict[str, str] = field(default_factory=dict)
    #: gradkit itself failed on this submission (exit code 3)
    internal_error: bool = False

    def csv_row(self) -> dict[str, str]:
        return {"student": self.student, "score": f"{self.score:g}", "max": f"{self.max:g}",
                "passed": "yes" if self.passed else "no", "diagnoses": " ".join(self.diagnoses),
                "failing": " ".join(self.failing), "duration": f"{self.duration:.2f}",
                "error": self.error, "submission": self.submission, "sha256": self.sha256,
                "reused": "yes" if self.reused else "no"}


# -- which files are whose ---------------------------------------------------------------------

def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in SKIPPED_NAMES


def _open_regular(path: Path) -> Optional[int]:
    """A descriptor of a regular file that is not a link, or None.

    Opened with ``O_NOFOLLOW`` (a link, even one made after the folder was listed, is never
    followed) and ``O_NONBLOCK`` (a FIFO never blocks), then checked by ``fstat``.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        opened = os.fstat(fd)
        if stat.S_ISREG(opened.st_mode) and opened.st_nlink == 1:  # not a hard link either
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _chunks(path: Path, limit: int) -> Iterator[bytes]:
    """The first ``limit`` bytes of a regular file that is not a link, a MiB at a time."""
    fd = _open_regular(path)
    if fd is None:
        return
    try:
        while limit > 0 and (chunk := os.read(fd, min(limit, 1 << 20))):
            limit -= len(chunk)
            yield chunk
    except OSError:
        return
    finally:
        os.close(fd)


def _defines(path: Path, functions: tuple[str, str] = _FUNCTIONS) -> set[str]:
    text = b"".join(_chunks(path, _MAX_SCAN_BYTES)).decode("utf-8", "replace")
    return {name for name in functions if _has_def(text, name)}


def _has_def(text: str, name: str) -> bool:
    """``def NAME(`` (any whitespace) appears in ``text``: a plain scan, linear in the text."""
    start = 0
    while (at := text.find(name, start)) >= 0:
        start = at + 1
        after = at + len(name)
        while after < len(text) and text[after].isspace():
            after += 1
        before = at
        while before > 0 and text[before - 1].isspace():
            before -= 1
        if after < len(text) and text[after] == "(" and before < at and \
                text[max(0, before - 3):before] == "def":
            return True
    return False


def _walk(folder: Path) -> tuple[list[Path], list[Path], bool]:
    """The visible regular files under ``folder`` (sorted, breadth first), the links met, and
    whether the search stopped at one of its bounds.

    Iterative, at most ``_MAX_FOLDER_DEPTH`` folders deep and ``_MAX_FOLDER_ENTRIES`` entries in
    all; no link is followed, to a folder or to a file.
    """
    files: list[Path] = []
    links: list[Path] = []
    level, depth, seen = [folder], 0, 0
    while level and depth < _MAX_FOLDER_DEPTH and len(files) < _MAX_FOLDER_FILES:
        deeper: list[Path] = []
        for current in level:
            try:
                with os.scandir(current) as listing:
                    entries = []
                    for entry in listing:
                        seen += 1
                        if seen > _MAX_FOLDER_ENTRIES:
                            break
                        entries.append(entry)
            except OSError:
                continue
            for entry in sorted(entries, key=lambda e: e.name):
                if not _visible(Path(entry.name)):
                    continue
                path = Path(entry.path)
                if entry.is_symlink():
                    if path.suffix in SUFFIXES:
                        links.append(path)
                elif entry.is_dir(follow_symlinks=False):
                    deeper.append(path)
                elif path.suffix in SUFFIXES and entry.is_file(follow_symlinks=False):
                    files.append(path)
            if seen > _MAX_FOLDER_ENTRIES or len(files) >= _MAX_FOLDER_FILES:
                break
        level, depth = deeper, depth + 1
    stopped = seen > _MAX_FOLDER_ENTRIES or len(files) >= _MAX_FOLDER_FILES or bool(level)
    return files[:_MAX_FOLDER_FILES], links, stopped


def pick_file(folder: Path, functions: tuple[str, str] = _FUNCTIONS) -> Optional[Path]:
    """The file of a student's folder that gradkit grades (see the module's docstring)."""
    return _pick(folder, functions)[0]


def _pick(folder: Path, functions: tuple[str, str] = _FUNCTIONS) -> tuple[Optional[Path], str]:
    """The file to grade in a student's folder, or None and why."""
    candidates, links, stopped = _walk(folder)
    ranked = []
    for path in candidates:
        defined = _defines(path, functions)
        if functions[0] not in defined:
            continue
        depth = len(path.relative_to(folder).parts)
        ranked.append((depth, functions[1] not in defined, path.suffix != ".py",
                       path.name, path))
    if ranked:
        return min(ranked)[-1], ""
    top = [p for p in candidates if p.parent == folder]
    if len(top) == 1:
        return top[0], ""
    problem = f"no .py or .ipynb file in {folder} defines {functions[0]}"
    if links:
        named = ", ".join(str(p.relative_to(folder)) for p in links[:3])
        problem += f" ({named}: a symbolic link, which gradkit never follows)"
    if stopped:
        problem += (f"; gradkit looked at {_MAX_FOLDER_ENTRIES:,} entries, "
                    f"{_MAX_FOLDER_FILES} .py/.ipynb files and {_MAX_FOLDER_DEPTH} folders deep "
                    "at most, and stopped there")
    return None, problem


def _name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def find_submissions(paths: Sequence[Path], exclude: Iterable[Path] = (),
                     functions: tuple[str, str] = _FUNCTIONS) -> list[Submission]:
    """One submission per student, named uniquely, sorted by name (a student's folder is
    searched for the file that defines ``functions``: the assignment's train and predict).

    No symbolic link is followed: a link among the class's entries (to a file or a folder,
    inside the class or out of it) is a student whose row says what it links to, graded as no
    one's work, and a link inside a student's folder is never picked.
    """
    excluded = {p.resolve() for p in exclude}
    if len(paths) == 1 and paths[0].is_dir():
        entries = [p for p in sorted(paths[0].iterdir())
                   if _visible(p) and (p.is_symlink() or p.resolve() not in excluded)
                   and (p.suffix in SUFFIXES or _is_folder(p))]
        classmates = {p.resolve(): p for p in entries if not p.is_symlink()}
    else:
        entries = list(paths)
        classmates = {p.resolve(): p for p in entries if not p.is_symlink()}
    found = []
    for entry in entries:
        if entry.is_symlink():
            found.append((entry, Submission("", entry, problem=_link_problem(entry,
                                                                             classmates))))
        elif entry.is_dir():
            picked, problem = _pick(entry, functions)
            found.append((entry, Submission("", picked or entry, entry, problem)))
        elif entry.is_file():
            found.append((entry, Submission("", entry)))
        else:  # a device, a pipe or a dangling link: nothing gradkit should read
            found.append((entry, Submission("", entry, problem=f"{entry} is not a regular file")))
    found = _refuse_hard_links(found)
    names = _unique_names([entry for entry, _ in found])
    return sorted((Submission(name, s.path, s.folder, s.problem)
                   for name, (_, s) in zip(names, found)), key=lambda s: s.student)


def _refuse_hard_links(found: list[tuple[Path, Submission]]) -> list[tuple[Path, Submission]]:
    """Each submission whose file is a hard link, graded as no one's work: where two students'
    files are the same file (one inode), neither's; where a file has other names out of the
    class, its own (another name can be any file of the machine, ``/etc/shadow`` too)."""
    inodes: dict[tuple[int, int], list[int]] = {}
    links: dict[int, int] = {}
    for index, (_, submission) in enumerate(found):
        if submission.problem:
            continue
        try:
            seen = os.lstat(submission.path)
        except OSError:
            continue
        if stat.S_ISREG(seen.st_mode) and seen.st_nlink > 1:
            inodes.setdefault((seen.st_dev, seen.st_ino), []).append(index)
            links[index] = seen.st_nlink
    out = list(found)
    for same in inodes.values():
        for index in same:
            entry, submission = found[index]
            others = [found[i][0].name for i in same if i != index]
            if others:
                problem = (f"{submission.path.name} is a hard link to the same file as "
                           f"another student's submission ({', '.join(others)[:300]}): a hard "
                           "link is graded as neither student's work")
            else:
                problem = hard_link_problem(submission.path, links[index])
            out[index] = (entry, dataclasses.replace(submission, problem=problem))
    return out


def _is_folder(path: Path) -> bool:
    """A folder, or a link that points at one (it becomes a row that says it is a link)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _link_problem(link: Path, classmates: dict[Path, Path]) -> str:
    """Why a linked entry is not graded: what it links to, and whose work that is."""
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    where = f"{link.name} is a symbolic link to {target[:200]}"
    resolved = _real(link)
    owner = classmates.get(resolved) or next(
        (entry for path, entry in classmates.items() if path in resolved.parents), None)
    if owner is not None:
        return (f"{where}, in another student's submission ({owner.name}): a link is graded "
                "as neither student's work")
    return (f"{where}, and gradkit follows no link in a class folder (one could lead out of "
            "it): it is not a regular file")


def _real(path: Path) -> Path:
    """``path`` with its links resolved as far as they lead: a loop of links (``a.py`` linked
    to itself) raised ``RuntimeError`` in ``Path.resolve`` and stopped the whole class."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # (RuntimeError for a loop before Python 3.13)
        return Path(os.path.realpath(path))


#: the longest student name, in UTF-8 bytes: it names the report files (``.NAME.json.ID.tmp``
#: while one is written), and a file name has at most 255 bytes
_MAX_NAME_BYTES = 120


def _safe(name: str) -> str:
    safe = re.sub(r"[^\w.@+-]", "_", name).lstrip(".") or "student"
    if len(safe.encode("utf-8", "surrogatepass")) <= _MAX_NAME_BYTES:
        return safe
    # a long name keeps its start and a digest of the whole, so two long names stay two
    tag = hashlib.sha256(os.fsencode(name)).hexdigest()[:10]
    short = safe.encode("utf-8", "surrogatepass")[:_MAX_NAME_BYTES - 11].decode("utf-8", "ignore")
    return f"{short}-{tag}"


def _unique_names(entries: list[Path]) -> list[str]:
    """Stems, then full names (alice.py, alice.ipynb), then parent-name (a-sol, b-sol)."""
    names = [_safe(_name(e)) for e in entries]
    for widen in (lambda e, n: _safe(e.name), lambda e, n: _safe(f"{e.parent.name}-{n}")):
        counts = Counter(names)
        names = [widen(e, n) if counts[n] > 1 else n for e, n in zip(entries, names)]
    out: list[str] = []
    for name in names:
        candidate, number = name, 2
        while candidate in out:
            candidate, number = f"{name}-{number}", number + 1
        out.append(candidate)
    return out


def fingerprint(submission: Submission) -> str:
    """sha256 of what the submission's run can read: its file, and its folder's other files."""
    digest = hashlib.sha256()
    files = [submission.path]
    if submission.siblings and submission.path.is_file():
        files += [p for p in sorted(submission.path.parent.iterdir())[:_MAX_FOLDER_ENTRIES]
                  if p != submission.path and p.is_file() and not p.is_symlink()]
    budget = _MAX_DIGEST_BYTES  # bounded however many and however large the files are
    for path in files:
        try:
            info = path.lstat()
            digest.update(f"{info.st_size}:{info.st_mtime_ns}".encode())
        except OSError:
            pass
        # (a name need not be UTF-8: its bytes as the system gave them)
        digest.update(os.fsencode(path.name) + b"\0" + _file_digest(path, min(budget, 64 << 20)))
        budget = max(0, budget - (path.stat().st_size if path.is_file() else 0))
    return digest.hexdigest()


def _file_digest(path: Path, limit: int = 64 << 20) -> bytes:
    """sha256 of a regular file's first ``limit`` bytes; of nothing for anything else (a link
    included)."""
    one = hashlib.sha256()
    for chunk in _chunks(path, limit):
        one.update(chunk)
    return one.digest()


# -- grading -----------------------------------------------------------------------------------

def row_of(submission: Submission, report: Report, reused: bool = False) -> Row:
    """The gradebook row of a report: every number read from the report as it is."""
    ordered = sorted(report.diagnoses, key=lambda d: ("error", "warning", "info").index(
        d.severity))
    codes = list(dict.fromkeys(d.code for d in ordered))[:3]
    failing = [c.id for c in report.checks if c.status in ("fail", "error")]
    error = submission.problem
    if not error and report.error:
        error = report.error.strip().splitlines()[0]
    if not error:
        # what stopped grading: the file not loading, else a check the code could not run
        # (one stopped by a crash or a time limit first: the others only say "not run")
        broken = [c for c in report.checks if c.status == "error" or
                  (c.id == "load" and c.status != "pass")]
        broken.sort(key=lambda c: (c.id != "load", "stopped during" not in c.message))
        error = broken[0].message.strip().splitlines()[0] if broken and broken[0].message else ""
    return Row(student=submission.student, score=report.score, max=report.max_score,
               passed=report.passed, diagnoses=codes, failing=failing,
               duration=report.duration_seconds, error=error[:300],
               submission=str(submission.path), sha256=report.submission.sha256 or "",
               reused=reused, titles={d.code: d.title for d in report.diagnoses},
               internal_error=report.error is not None)


def _failed_row(submission: Submission, exc: BaseException) -> Row:
    return Row(student=submission.student, score=0.0, max=0.0, passed=False,
               error=f"gradkit failed: {type(exc).__name__}: {exc}"[:300],
               submission=str(submission.path), internal_error=True)


class _Manifest:
    """What each saved report was graded from, so a rerun can skip it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        try:
            self.entries = json.loads(path.read_text())
            if not isinstance(self.entries, dict):
                self.entries = {}
        except (OSError, ValueError):
            self.entries = {}

    def matches(self, student: str, stamp: dict) -> bool:
        return self.entries.get(student) == stamp

    def record(self, student: str, stamp: Optional[dict]) -> None:
        with self.lock:
            if stamp is None:
                self.entries.pop(student, None)
            else:
                self.entries[student] = stamp
            _write_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Batch:
    """Where a batch writes: ``reports/<student>.json``, ``gradebook.csv`` and a manifest."""

    out: Path
    gradebook: Optional[Path] = None
    #: also write each student's report as HTML (reports/<student>.html)
    pages: bool = True

    @property
    def reports(self) -> Path:
        return self.out / "reports"

    @property
    def gradebook_path(self) -> Path:
        return self.gradebook or self.out / "gradebook.csv"

    def report_path(self, student: str) -> Path:
        return self.reports / f"{student}.json"

    def page_path(self, student: str) -> Path:
        """The student's report as HTML, beside its JSON."""
        return self.reports / f"{student}.html"

    @property
    def summary_page(self) -> Path:
        return self.out / "summary.html"


def grade_all(submissions: Sequence[Submission], batch: Batch, *, jobs: int = 1,
              settings: Optional[Settings] = None, force: bool = False,
              on_start: Callable[[Submission], None] = lambda s: None,
              on_done: Callable[[Row], None] = lambda r: None) -> list[Row]:
    """Grade every submission with ``jobs`` parallel grading processes; write reports and the
    gradebook.

    Each grading process (``_Grader``) owns one sandbox and grades one submission at a time, so
    the grader's own work (comparisons, diagnosis, the report) runs on every core, not under one
    interpreter lock. Never stops for a submission: whatever one does (raise, crash, hang,
    exhaust memory), its row says so and the others are graded. Rows come back sorted by student.
    """
    settings = settings or Settings()
    batch.reports.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(batch.out / MANIFEST)
    settings_key = settings.key()
    todo: "queue.Queue[Submission]" = queue.Queue()
    rows: list[Row] = []
    rows_lock = threading.Lock()

    def finish(row: Row) -> None:
        with rows_lock:
            rows.append(row)
        on_done(row)

    stamps = {}
    for submission in submissions:
        stamp = stamps[submission.student] = {
            "fingerprint": fingerprint(submission), "settings": settings_key,
            "file": str(submission.path)}
        saved = batch.report_path(submission.student)
        if not force and manifest.matches(submission.student, stamp) and saved.is_file():
            try:
                report = Report.model_validate_json(saved.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
            else:
                if batch.pages and not batch.page_path(submission.student).is_file():
                    write_report_page(batch.page_path(submission.student), report,
                                      submission.path)
                finish(row_of(submission, report, reused=True))
                continue
        todo.put(submission)

    count = min(jobs, todo.qsize())
    # the grading processes' workers start first, so that their import of torch overlaps this
    # process's imports (the HTML views' libraries, torch) instead of following them
    source, sockets = _start_workers(settings, count)
    if batch.pages and count:
        # the HTML views' libraries, loaded once here and shared by every forked grader
        from gradkit.render import html  # noqa: F401

    # what no submission's process may see: every submission's folder and the folder holding
    # it (the class folder), the reports and the gradebook
    hidden = {str(batch.out.resolve()), str(batch.gradebook_path.resolve().parent)}
    for submission in submissions:
        where = _real(submission.folder or submission.path)
        hidden.update({str(_real(submission.path).parent), str(where.parent)})
    # every grading process starts here, while this process has no other thread (a fork)
    graders = []
    for i in range(count):
        worker = None
        if source is not None:
            pid = source.pid(sockets[i])
            worker = (pid, sockets[i]) if pid else None
        graders.append(_Grader(settings, batch, sorted(hidden), worker, others=sockets))
        if sockets:
            sockets[i].close()  # the grading process has it now

    def work(grader: _Grader) -> None:
        try:
            while True:
                try:
                    submission = todo.get_nowait()
                except queue.Empty:
                    return
                on_start(submission)
                if submission.problem and (submission.path.is_symlink()
                                           or not submission.path.is_dir()):
                    finish(Row(student=submission.student, score=0.0, max=0.0, passed=False,
                               error=submission.problem, submission=str(submission.path)))
                    continue
                try:
                    row = grader.grade(submission)
                except _GraderDied as exc:  # gradkit's own failure: the batch goes on
                    row = _failed_row(submission, exc)
                    grader.close()
                    grader = _Grader(settings, batch, sorted(hidden))
                # a report gradkit failed to make is not worth keeping for the next run
                manifest.record(submission.student,
                                None if row.internal_error else stamps[submission.student])
                finish(row)
        finally:
            grader.close()

    threads = [threading.Thread(target=work, args=(grader,), name=f"gradkit-grader-{i}",
                                daemon=True) for i, grader in enumerate(graders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if source is not None:  # (each grading process has stopped its worker)
        source.close()
    rows.sort(key=lambda r: natural_key(r.student))
    write_gradebook(rows, batch.gradebook_path)
    return rows


class _GraderDied(Exception):
    pass


def _forks_graders() -> bool:
    """Whether ``_Grader`` forks this process (Linux, and no other thread running)."""
    return threading.active_count() == 1 and hasattr(os, "fork") and \
        sys.platform.startswith("linux")


def _start_workers(settings: Settings, count: int) -> tuple[Optional["WorkerSource"],
                                                           list[socket.socket]]:
    """Where the grading processes about to be forked use the linux backend: a source of
    workers (``gradkit.sandbox.runner.WorkerSource``: one fresh interpreter that imports torch,
    numpy and the child harness, and forks a worker for each, sharing its pages) and the
    sockets of ``count`` workers asked of it; else (None, []), and each grading process opens its
    own sandbox."""
    if not count or not _forks_graders():
        return None, []
    from gradkit.sandbox.backend import linux_unavailable, resolve

    try:
        if resolve(settings.sandbox) != "linux" or linux_unavailable() is not None:
            return None, []
    except ValueError:
        return None, []
    from gradkit.sandbox.runner import WorkerSource

    source = WorkerSource()
    return source, [source.request() for _ in range(count)]


class _Grader:
    """One grading process: a fork of this process when that is safe (Linux, and no other thread
    running: it then shares this process's torch), else a fresh interpreter that takes its
    requests on stdin and answers on stdout (which works on every platform). It owns a sandbox,
    grades the submissions it is sent one at a time, writes each report, and answers with its
    gradebook row.

    It runs no student code (its sandbox's processes do), so it is trusted; the messages are
    JSON lines all the same.
    """

    def __init__(self, settings: Settings, batch: Batch, hidden: list[str],
                 worker: Optional[tuple[int, socket.socket]] = None,
                 others: Sequence[socket.socket] = ()) -> None:
        """``worker``: a sandbox worker started for this grading process (``_start_workers``),
        which a forked one uses; ``others``: the sockets of the other grading processes'
        workers, which it closes."""
        job = json.dumps({"settings": settings.to_json(), "reports": str(batch.reports),
                          "hidden": hidden, "pages": batch.pages})
        self.proc: subprocess.Popen
        # forking a process that loaded torch is safe on Linux only (macOS's system libraries
        # are not fork-safe; Windows cannot fork)
        if _forks_graders():
            import torch  # noqa: F401  (once, here: every grading process shares it)

            from gradkit.sandbox import ForkedProcess

            ours, theirs = socket.socketpair()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    ours.close()
                    for sock in others:
                        if worker is None or sock is not worker[1]:
                            sock.close()
                    _serve(theirs.makefile("rb"), theirs.makefile("wb"), job, worker)
                except BaseException:
                    code = 70
                finally:
                    os._exit(code)
            theirs.close()
            self.proc = ForkedProcess(pid)
            self.requests, self.replies = ours.makefile("wb"), ours.makefile("rb")
            self._sock: Optional[socket.socket] = ours
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from gradkit.batch import _serve_stdio; "
                 "_serve_stdio(sys.argv[1])", job],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=os.name != "nt")
            self.requests, self.replies = self.proc.stdin, self.proc.stdout
            self._sock = None

    def grade(self, submission: Submission) -> Row:
        message = {"student": submission.student, "path": str(submission.path),
                   "folder": None if submission.folder is None else str(submission.folder),
                   "problem": submission.problem}
        try:
            self.requests.write(json.dumps(message).encode() + b"\n")
            self.requests.flush()
            line = self.replies.readline()
        except (OSError, ValueError) as exc:
            raise _GraderDied(f"its grading process stopped ({exc})") from None
        if not line:
            raise _GraderDied("its grading process stopped")
        return Row(**json.loads(line))

    def close(self) -> None:
        closers = [self.requests.close, self.replies.close] + (
            [self._sock.close] if self._sock is not None else [])
        for closing in closers:
            try:
                closing()
            except OSError:
                pass
        try:  # it exits when its requests end; a grader stuck for a minute is killed
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _serve_stdio(job: str) -> None:
    """A grading process started as a fresh interpreter: requests on stdin, rows on what was
    stdout (anything printed goes to stderr instead, so it cannot break a row)."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, replies, job)


def _serve(requests, replies, job_text: str,
           worker: Optional[tuple[int, socket.socket]] = None) -> None:
    """The grading process: grade each submission sent, write its report, answer its row.

    Its sandbox's worker is a fresh interpreter (never a fork of this process, which holds the
    grader and the batch): ``worker`` (pid, socket), started by the batch's main process before
    it forked this one, or else one started first thing here, so that it imports torch while
    this process does."""
    import signal

    job = json.loads(job_text)
    sandbox = open_sandbox(job["settings"].get("sandbox"), hidden=job.get("hidden") or (),
                           worker=worker)
    import torch

    from gradkit.api import check
    from gradkit.render import json_report

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)  # one grading process per core
    settings = Settings.from_json(job["settings"])
    reports = Path(job["reports"])
    # what is loaded now lives as long as the process: out of the garbage collector's full
    # sweeps, which would otherwise walk its ~200k objects every few submissions
    gc.freeze()
    try:
        for line in requests:
            message = json.loads(line)
            folder = message["folder"]
            submission = Submission(student=message["student"], path=Path(message["path"]),
                                    folder=None if folder is None else Path(folder),
                                    problem=message["problem"])
            try:
                report = check(submission.path, sandbox=sandbox, siblings=submission.siblings,
                               options=settings)
                # the same text as `gradkit check --format json`: safe to print, same data
                _write_atomic(reports / f"{submission.student}.json", json_report.render(report))
                if job.get("pages", True):
                    write_report_page(reports / f"{submission.student}.html", report,
                                      submission.path)
                row = row_of(submission, report)
            except Exception as exc:  # gradkit's own failure: the batch goes on
                row = _failed_row(submission, exc)
            replies.write(json.dumps(dataclasses.asdict(row)).encode() + b"\n")
            replies.flush()
    finally:
        sandbox.close()


def write_report_page(path: Path, report: Report, source: Path) -> None:
    """One student's report as a self-contained HTML page (``gradkit.render.html``), quoting
    the graded file's lines when it is still the file the report graded."""
    from gradkit.loader import LoadError, load_submission
    from gradkit.render import html

    try:
        submission = load_submission(source) if source.is_file() else None
    except (LoadError, OSError):
        submission = None
    _write_atomic(path, html.render(report, submission))


def write_summary_page(rows: Sequence[Row], summary: "Summary", batch: Batch) -> Path:
    """The class summary (``summary.html``): links relative to it, to each student's page."""
    from gradkit.render import html

    out = batch.out.resolve()
    gradebook = Path(os.path.relpath(batch.gradebook_path.resolve(), out)).as_posix()
    reports = Path(os.path.relpath(batch.reports.resolve(), out)).as_posix()
    pages = {r.student for r in rows if batch.page_path(r.student).is_file()}
    _write_atomic(batch.summary_page, html.render_summary(
        rows, summary, gradebook=gradebook, reports=reports, pages=pages))
    return batch.summary_page


def natural_key(name: str) -> tuple:
    """Sorts student2 before student10."""
    return tuple(int(part) if part.isdigit() else part.lower()
                 for part in re.split(r"(\d+)", name))


#: gradebook columns whose text a submission can choose (its file's name, its messages)
UNTRUSTED_COLUMNS = ("student", "error", "submission")


def write_gradebook(rows: Sequence[Row], path: Path) -> None:
    """The gradebook CSV. Cells a submission can choose go through ``untrusted.csv_cell``: one
    that starts like a spreadsheet formula (``=``, ``+``, ``-``, ``@``, tab, CR) is prefixed with
    ``'``, so ``+A2+B2.py`` is the student ``'+A2+B2``, not a sum."""
    from gradkit.render.untrusted import csv_cell

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=GRADEBOOK_COLUMNS)
        writer.writeheader()
        for row in rows:
            cells = row.csv_row()
            writer.writerow({column: csv_cell(text) if column in UNTRUSTED_COLUMNS else text
                             for column, text in cells.items()})
    os.replace(tmp, path)


# -- the class at a glance ---------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """The class's results at a glance (data; ``summary_lines`` writes it as text)."""

    students: int
    graded: int
    reused: int
    passed: int
    errors: int
    internal_errors: int
    mean: Optional[float]
    median: Optional[float]
    max_score: Optional[float]
    #: (label, count) per score band, lowest first
    distribution: list[tuple[str, int]]
    #: (code, title, students) for the commonest diagnoses
    mistakes: list[tuple[str, str, int]]
    #: (check id, students) for the checks failed most often
    failing: list[tuple[str, int]]
    seconds: float = 0.0


BANDS = ((0, 50), (50, 60), (60, 70), (70, 80), (80, 90), (90, 100))


def summarize(rows: Sequence[Row], seconds: float = 0.0, top: int = 5) -> Summary:
    scores = [r.score for r in rows]
    maxima = {r.max for r in rows if r.max}
    max_score = max(maxima) if maxima else None
    distribution = []
    for low, high in BANDS:
        count = sum(1 for r in rows if r.max and low <= 100 * r.score / r.max < high)
        distribution.append((f"{low}-{high}%", count))
    distribution.append(("100%", sum(1 for r in rows if r.max and r.score >= r.max)))
    codes: Counter[str] = Counter(c for r in rows for c in dict.fromkeys(r.diagnoses))
    titles = {code: title for r in rows for code, title in r.titles.items()}
    failing: Counter[str] = Counter(c for r in rows for c in r.failing)
    return Summary(
        students=len(rows), graded=sum(not r.reused for r in rows),
        reused=sum(r.reused for r in rows), passed=sum(r.passed for r in rows),
        errors=sum(bool(r.error) for r in rows),
        internal_errors=sum(r.internal_error for r in rows),
        mean=statistics.fmean(scores) if scores else None,
        median=statistics.median(scores) if scores else None, max_score=max_score,
        distribution=distribution,
        mistakes=[(code, titles.get(code, ""), n) for code, n in codes.most_common(top)],
        failing=failing.most_common(top), seconds=seconds)


def summary_lines(summary: Summary) -> list[str]:
    """The summary as plain text lines (gradkit's words and numbers: codes, titles, check ids;
    the CLI still prints them through ``untrusted.command_safe``)."""
    max_text = f" / {summary.max_score:g}" if summary.max_score else ""
    out = [f"{summary.students} submissions: {summary.passed} passed every check, "
           f"{summary.students - summary.passed} did not"
           + (f"; {summary.errors} could not be fully graded (see the error column)"
              if summary.errors else "")
           + (f"; {summary.reused} unchanged since the last run (reports reused)"
              if summary.reused else "")
           + (f" · {summary.seconds:.1f} s" if summary.seconds else "")]
    if summary.mean is not None:
        out.append(f"score: mean {summary.mean:.1f}{max_text}, median {summary.median:g}"
                   f"{max_text}")
        widest = max(n for _, n in summary.distribution) or 1
        for label, count in summary.distribution:
            bar = "#" * round(30 * count / widest)
            out.append(f"  {label:>8}  {count:4d}  {bar}")
    if summary.mistakes:
        out.append("most common mistakes:")
        out += [f"  {n:4d}  {code}  {title}" for code, title, n in summary.mistakes]
    if summary.failing:
        out.append("checks failed most often:")
        out += [f"  {n:4d}  {check_id}" for check_id, n in summary.failing]
    return out
