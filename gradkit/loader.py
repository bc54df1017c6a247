"""Reading a submission: a .py file or a Jupyter notebook, turned into one Python source.

Nothing here runs student code: a notebook's code cells are joined in order with IPython magics
and shell escapes commented out, and the result is parsed (``ast``) to report syntax errors with
their line and column before any process starts. A line map turns a line of the joined source back
into "cell N, line M" for notebooks.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

_MAX_SOURCE_BYTES = 2 * 1024 * 1024
#: the characters of a source line the report quotes
MAX_QUOTED = 400
#: how deep within one statement the grader's analysis of the source follows an expression, and
#: how many syntax-tree nodes it analyses at all. Diagnosis walks subtrees of subtrees (the names
#: in each ``a + b`` of a function): linear in a student's code, whose expressions nest a dozen
#: deep, but quadratic in 2 MiB of lines nested 3,000 deep (hours in the grader). Deeper
#: expressions are cut (``Submission.pruned``); a larger tree is not analysed (``analysable``).
MAX_ANALYSED_DEPTH = 48
MAX_ANALYSED_NODES = 250_000
#: the Python tokens of a submission the grader parses at all: its syntax tree costs up to
#: 0.7 KB a token (2 MiB of ``a,a,a,...`` took the grader to 1.4 GB in ``ast.parse``), and a
#: submission holds a few thousand
MAX_TOKENS = 250_000
#: an upper bound of the tokens in a source, in one linear pass (every word and every other
#: character that is not white space: more than the tokenizer's count, never fewer)
_ROUGH_TOKEN = re.compile(r"\w+|[^\w\s]")


class LoadError(Exception):
    """A submission that cannot be read; ``message`` is written for the student."""

    def __init__(self, message: str, line: Optional[int] = None, column: Optional[int] = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class LineOrigin:
    """Where a line of the joined source came from in a notebook."""

    cell: int  # 1-based index among all cells
    line: int  # 1-based line within the cell


@dataclass
class Submission:
    """A submission as gradkit grades it."""

    path: Path
    kind: Literal["py", "ipynb"]
    source: str
    sha256: str
    size: int
    origins: dict[int, LineOrigin] = field(default_factory=dict)
    tree: Optional[ast.Module] = None
    syntax_error: Optional[LoadError] = None
    #: subtrees cut out of ``tree`` because they nest deeper than ``MAX_ANALYSED_DEPTH`` (each
    #: replaced there by ``...`` at its place): the policy scan still reads them
    pruned: list[ast.AST] = field(default_factory=list)
    #: whether the tree is small enough (``MAX_ANALYSED_NODES``) for diagnosis to read it
    analysable: bool = True
    _lines: Optional[tuple[str, list[str]]] = field(default=None, repr=False, compare=False)

    def analysed_tree(self) -> Optional[ast.Module]:
        """The syntax tree diagnosis reads: None where there is none or it is too large."""
        return self.tree if self.analysable else None

    def every_tree(self) -> list[ast.AST]:
        """The tree and every subtree cut out of it: together, all of the source's nodes."""
        return ([self.tree] if self.tree is not None else []) + self.pruned

    def where(self, line: Optional[int]) -> str:
        """``file:line``, or ``file, cell N line M`` in a notebook."""
        if line is None:
            return str(self.path)
        origin = self.origins.get(line)
        if origin is not None:
            return f"{self.path} (cell {origin.cell}, line {origin.line})"
        return f"{self.path}:{line}"

    def location(self, line: Optional[int], column: Optional[int] = None):
        """A ``report.SourceLocation`` for a line, with its notebook cell; None without a line."""
        from gradkit.report import SourceLocation

        if line is None:
            return None
        origin = self.origins.get(line)
        return SourceLocation(file=str(self.path), line=line, column=column,
                              cell=origin.cell if origin else None,
                              cell_line=origin.line if origin else None,
                              code=self.source_line(line))

    def source_line(self, line: Optional[int]) -> str:
        if self._lines is None or self._lines[0] is not self.source:
            self._lines = (self.source, python_lines(self.source))
        lines = self._lines[1]
        if line is None or not 1 <= line <= len(lines):
            return ""
        text = lines[line - 1].strip()
        # a line is quoted wherever the report points at it: a line of megabytes would be in
        # every output that many times over (Gradescope's results.json grew to 12 MB)
        return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + " …"


def python_lines(text: str) -> list[str]:
    """The lines of ``text`` as Python numbers them: ended by ``\\n``, ``\\r\\n`` or ``\\r`` only.

    ``str.splitlines`` also ends a line at ``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``, ``\\x85``,
    ``\\u2028`` and ``\\u2029``, which Python reads as characters: one in a string or a comment
    cut the line in two (a syntax error in a notebook that runs) and shifted every later line.
    """
    return [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]


def is_ipython_line(line: str) -> bool:
    """A line IPython treats specially: ``%magic``, ``%%cell magic``, ``!shell``, and
    ``x = !cmd`` / ``x, y = %magic`` (names, dots, commas and spaces before the ``=``).

    A plain scan, linear in the line: a regular expression here backtracked for hours on one
    long line of spaces.
    """
    start = len(line) - len(line.lstrip())
    if line[start:start + 1] in ("%", "!"):
        return True
    equals = line.find("=", start)
    if equals <= 0 or not all(c.isalnum() or c in "_., " or c.isspace() for c in line[:equals]):
        return False
    return line[equals + 1:].lstrip()[:1] in ("%", "!")


def _neutralise(line: str) -> str:
    return "# gradkit: IPython line skipped: " + line.strip() if is_ipython_line(line) else line


def _notebook_source(raw: bytes, path: Path) -> tuple[str, dict[int, LineOrigin]]:
    import warnings

    import nbformat

    try:
        with warnings.catch_warnings():  # a notebook from an older Jupyter (cells without ids)
            warnings.simplefilter("ignore")  # is still a notebook: no warning on the terminal
            notebook = nbformat.reads(raw.decode("utf-8-sig"), as_version=4)
    except UnicodeDecodeError:
        raise LoadError(f"{path.name} is not UTF-8 text, so it is not a Jupyter notebook") from None
    except Exception as exc:  # nbformat raises several unrelated types for bad JSON/schema
        raise LoadError(f"{path.name} is not a readable Jupyter notebook: {str(exc)[:300]}") \
            from None
    lines: list[str] = []
    origins: dict[int, LineOrigin] = {}
    # nbformat warns about a notebook that breaks its schema, and returns it as it is: every
    # field read here can be any JSON value
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise LoadError(f"{path.name} is not a readable Jupyter notebook: it has no list of cells")
    for cell_index, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        text = cell.get("source", "")
        if isinstance(text, list) and all(isinstance(part, str) for part in text):
            text = "".join(text)
        if not isinstance(text, str):
            raise LoadError(f"{path.name} is not a readable Jupyter notebook: the source of "
                            f"cell {cell_index} is not text")
        cell_lines = python_lines(text)
        in_cell_magic = bool(cell_lines) and cell_lines[0].lstrip().startswith("%%")
        for line_index, line in enumerate(cell_lines, start=1):
            lines.append("# " + line if in_cell_magic else _neutralise(line))
            origins[len(lines)] = LineOrigin(cell_index, line_index)
        lines.append("")
    return "\n".join(lines) + "\n", origins


def read_student_file(path: Path, limit: int) -> bytes:
    """The bytes of a student's file, read without trusting it. Raises ``LoadError``.

    Its size is checked by ``stat`` before any byte is read (a sparse file of gigabytes costs
    nothing), a symbolic link is refused rather than followed (``O_NOFOLLOW``: a link to
    ``/etc/shadow`` is never opened, even by a grader running as root), and the descriptor
    opened is checked to be the regular file that was looked at.
    """
    try:
        seen = os.lstat(path)
    except FileNotFoundError:
        raise LoadError(f"no file at {path}") from None
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISLNK(seen.st_mode):
        raise LoadError(f"{path} is a symbolic link (to {_link_target(path)}); gradkit reads "
                        "no link: give the file itself")
    if stat.S_ISDIR(seen.st_mode):
        raise LoadError(f"{path} is a folder; give the .py or .ipynb file to check")
    if not stat.S_ISREG(seen.st_mode):
        raise LoadError(f"{path} is not a regular file")
    if seen.st_size > limit:
        raise LoadError(f"{path.name} is {seen.st_size} bytes, over the {limit} allowed")
    if seen.st_nlink > 1:
        raise LoadError(hard_link_problem(path, seen.st_nlink))
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a link since the lstat
            raise LoadError(f"{path} is a symbolic link; gradkit reads no link") from None
        raise LoadError(f"cannot read {path}: {exc.strerror}") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != \
                (seen.st_dev, seen.st_ino):
            raise LoadError(f"{path} changed while it was opened")
        if opened.st_nlink > 1:  # linked since the lstat
            raise LoadError(hard_link_problem(path, opened.st_nlink))
        if opened.st_size > limit:
            raise LoadError(f"{path.name} is {opened.st_size} bytes, over the {limit} allowed")
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > limit:  # it grew after the stat
        raise LoadError(f"{path.name} is over the {limit} bytes allowed")
    return raw


def hard_link_problem(path: Path, names: int) -> str:
    """Why a file with several names (hard links) is not read: one of its other names can be
    anywhere on the machine (a classmate's file, ``/etc/shadow``), and this one reads the same
    bytes, whoever may read them there."""
    return (f"{path.name} is a hard link (the same file has {names} names, the others anywhere "
            "on this machine): gradkit reads no hard link; give a copy of the file")


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)[:200]
    except OSError:
        return "?"


def load_submission(path: str | Path) -> Submission:
    """Read and parse a submission. Raises ``LoadError`` when it cannot be read at all.

    A syntax error does not raise: it is kept in ``syntax_error`` so the report can show it.
    """
    path = Path(path)
    raw = read_student_file(path, _MAX_SOURCE_BYTES)
    digest = hashlib.sha256(raw).hexdigest()
    if path.suffix == ".ipynb":
        source, origins = _notebook_source(raw, path)
        kind: Literal["py", "ipynb"] = "ipynb"
    else:
        if path.suffix not in (".py", ""):
            raise LoadError(f"{path.name} is not a .py file or a .ipynb notebook")
        try:
            source = raw.decode("utf-8-sig")  # Python reads a file that starts with a BOM
        except UnicodeDecodeError:
            raise LoadError(f"{path.name} is not UTF-8 text, so it is not Python source") from None
        origins = {}
        kind = "py"
    submission = Submission(path=path, kind=kind, source=source, sha256=digest, size=len(raw),
                            origins=origins)
    tokens = count_tokens(source)
    if tokens > MAX_TOKENS:
        raise LoadError(f"{path.name} holds more than {MAX_TOKENS:,} Python tokens (words, "
                        "numbers, operators), more than gradkit reads: a solution holds a few "
                        "thousand. Remove generated code or data written out as literals.")
    try:
        submission.tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        where = submission.where(exc.lineno)
        submission.syntax_error = LoadError(
            f"syntax error at {where}" + (f", column {exc.offset}" if exc.offset else "")
            + f": {exc.msg}", exc.lineno, exc.offset
        )
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        submission.syntax_error = LoadError(f"{path.name} cannot be parsed as Python: {exc}")
    if submission.tree is not None:
        submission.analysable = _prune(submission.tree, submission.pruned)
    return submission


def count_tokens(source: str, limit: int = MAX_TOKENS) -> int:
    """Whether ``source`` holds more than ``limit`` Python tokens: a count over ``limit`` if it
    does (an f-string counts each word and sign in it: its fields are parsed as expressions),
    else one at most ``limit`` (0 when a cheap bound already shows it). A rough linear count
    first; the tokenizer only when that count is over ``limit`` (a long comment or string, say),
    stopped at ``limit + 1``. Costs no memory however the source is made."""
    if len(source) <= limit:  # every token is at least one character
        return 0
    if sum(1 for _ in _ROUGH_TOKEN.finditer(source)) <= limit:
        return 0
    import tokenize

    count = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            count += 1
            if token.type == tokenize.STRING and "f" in token.string[:3].lower():
                count += sum(1 for _ in _ROUGH_TOKEN.finditer(token.string))
            if count > limit:
                break
    except (tokenize.TokenError, SyntaxError):  # the parser says what is wrong, and where
        pass
    return count


_OPAQUE_FIELDS = frozenset({"ctx", "op"})


def _prune(tree: ast.AST, pruned: list[ast.AST]) -> bool:
    """Cut every expression nested more than ``MAX_ANALYSED_DEPTH`` deep within its statement
    out of ``tree`` (into ``pruned``, an ``...`` constant left at its place); whether the tree
    has at most ``MAX_ANALYSED_NODES`` nodes. Iterative, linear in the tree."""
    nodes, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        for name, value in ast.iter_fields(node):
            if name in _OPAQUE_FIELDS:
                continue
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                if not isinstance(item, ast.AST):
                    continue
                inner = 0 if isinstance(item, ast.stmt) else depth + 1
                if inner <= MAX_ANALYSED_DEPTH:
                    stack.append((item, inner))
                    continue
                pruned.append(item)
                cut = ast.copy_location(ast.Constant(value=...), item)
                if isinstance(value, list):
                    value[index] = cut
                else:
                    setattr(node, name, cut)
    return nodes <= MAX_ANALYSED_NODES


def assignment_lines(tree: Optional[ast.Module]) -> dict[str, list[int]]:
    """For every simple name assigned anywhere in the source, the lines that assign it."""
    found: dict[str, list[int]] = {}
    if tree is None:
        return found
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    found.setdefault(sub.id, []).append(node.lineno)
    return found
