"""Loading submissions: notebooks with IPython lines, line origins, the student's own modules."""

from __future__ import annotations

import nbformat
import pytest

from conftest import EXAMPLES
from gradkit.loader import MAX_TOKENS, LoadError, load_submission
from gradkit.report import Report

CORRECT = (EXAMPLES / "correct.py").read_text()


def _notebook(cells: list[tuple[str, str]]) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) if kind == "code" else
                nbformat.v4.new_markdown_cell(src) for kind, src in cells]
    return nbformat.writes(nb)


def test_ipython_lines_are_neutralised_and_lines_map_to_cells(tmp_path):
    path = tmp_path / "student.ipynb"
    path.write_text(_notebook([
        ("markdown", "# My solution"),
        ("code", "%matplotlib inline\n!pip install torch\nfiles = !ls\nimport torch"),
        ("code", "%%time\nthis is not python at all"),
        ("code", "x = 1\ny = (\n"),
    ]))
    submission = load_submission(path)
    assert submission.kind == "ipynb"
    live = [line.strip() for line in submission.source.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    assert live[0] == "import torch"  # the magics, the shell escapes and the %%time cell are out
    error = submission.syntax_error
    assert error is not None and "cell 4, line 2" in error.message
    assert submission.origins[error.line].cell == 4


def test_a_notebook_from_an_older_jupyter_loads_without_a_warning(tmp_path, recwarn):
    """Cells without ids (nbformat 4.4 and before) are a notebook all the same: no warning."""
    import json

    notebook = json.loads(_notebook([("code", "import torch\nx = 1")]))
    notebook["nbformat_minor"] = 5
    for cell in notebook["cells"]:
        cell.pop("id", None)
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(notebook))
    assert "x = 1" in load_submission(path).source
    assert [str(w.message) for w in recwarn] == []


@pytest.mark.parametrize("content, words", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8"),
    (b'{"nbformat": 4}', "not a readable Jupyter notebook"),
])
def test_unreadable_notebooks_raise_load_error(tmp_path, content, words):
    path = tmp_path / "x.ipynb"
    path.write_bytes(content)
    with pytest.raises(LoadError, match=words):
        load_submission(path)


def test_a_notebook_with_magics_grades_like_the_file(tmp_path, check_json):
    code = CORRECT.replace("from helper import sigmoid", "%load_ext autoreload\nfrom helper import sigmoid")
    path = tmp_path / "student.ipynb"
    path.write_text(_notebook([("markdown", "Homework 3"), ("code", "!pip install torch"),
                               ("code", code)]))
    report, code_ = check_json(path)
    assert code_ == 0, [c["message"] for c in report["checks"] if c["status"] != "pass"]
    assert report["submission"]["kind"] == "ipynb"


def test_the_submissions_own_folder_comes_first_on_its_path(tmp_path, check_json):
    # a student's own helper.py (here a wrong sigmoid) is used instead of gradkit's shim
    (tmp_path / "helper.py").write_text(
        "import torch\n\ndef sigmoid(x, deriv=False):\n"
        "    s = torch.tanh(x)\n    return 1 - s * s if deriv else s\n")
    (tmp_path / "student.py").write_text(CORRECT)
    report, code = check_json(tmp_path / "student.py")
    assert code == 1
    assert Report.model_validate(report).check("predict").status == "fail"


def test_gradkits_helper_modules_behave_like_the_notebooks(tmp_path, check_json):
    # the notebook's imports, used only where the student's folder has no such module
    (tmp_path / "student.py").write_text(
        "from nn_helper import generate_x_y, train_and_display, accuracy_binary\n"
        "from helper import sigmoid, to_2d\n"
        "df, X_toy, y_toy = generate_x_y(random_seed=70318)\n"
        "assert X_toy.tolist()[0] == [0, 0, 1] and y_toy.ravel().tolist() == [0, 1, 1, 0, 0, 0, 1, 1]\n"
        + CORRECT)
    report, code = check_json(tmp_path / "student.py")
    assert code == 0, [c["message"] for c in report["checks"] if c["status"] != "pass"]


# -- bounded work on what a student hands in ---------------------------------------------------

_OLD_IPYTHON_LINE = __import__("re").compile(r"^\s*(%|!)|^\s*[\w.,\s]+=\s*(%|!)")


@pytest.mark.parametrize("line", ["%matplotlib inline", "  !pip install x", "files = !ls",
                                  "a, b.c = %who", " =!x", "x == !y", "x = 1", "", "y = (",
                                  "d = {'a': !b}", "é = %time f()", "\t\t", "% ", "a b = %x"])
def test_the_ipython_line_scan_agrees_with_the_pattern_it_replaced(line):
    from gradkit.loader import is_ipython_line

    assert is_ipython_line(line) == bool(_OLD_IPYTHON_LINE.match(line))


def test_the_ipython_line_scan_agrees_on_arbitrary_lines():
    from hypothesis import given, settings, strategies as st

    from gradkit.loader import is_ipython_line

    @settings(max_examples=400, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list(" \t\u00a0\u2003a_Z9é.,=%!(){}'\"#\u0663")),
                   max_size=30))
    def agree(line):
        assert is_ipython_line(line) == bool(_OLD_IPYTHON_LINE.match(line))

    agree()


def test_a_long_line_of_spaces_loads_in_linear_time(tmp_path):
    """The old pattern backtracked quadratically: about 2.5 hours on this line."""
    import time

    path = tmp_path / "long.ipynb"
    # (120,000 words: within the tokens gradkit parses, loader.MAX_TOKENS)
    path.write_text(_notebook([("code", " " * 1_000_000 + "x"), ("code", "a " * 120_000)]))
    started = time.monotonic()
    submission = load_submission(path)
    assert time.monotonic() - started < 5
    assert submission.kind == "ipynb"


def test_a_sparse_file_of_gigabytes_is_refused_by_its_size(tmp_path):
    import time

    path = tmp_path / "huge.py"
    with open(path, "wb") as f:
        f.truncate(3 << 30)  # 3 GB that occupy no disk
    started = time.monotonic()
    with pytest.raises(LoadError, match=f"{3 << 30} bytes, over the"):
        load_submission(path)
    assert time.monotonic() - started < 1


def test_a_symbolic_link_is_refused_not_followed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:$6$hash-of-a-password:19000:0:99999:7:::\n")
    link = tmp_path / "student.py"
    link.symlink_to(secret)
    with pytest.raises(LoadError, match="is a symbolic link") as caught:
        load_submission(link)
    assert "hash-of-a-password" not in caught.value.message


@pytest.mark.parametrize("depth", [200, 5000, 200_000])
def test_absurdly_nested_source_is_a_problem_of_the_file(tmp_path, depth):
    """ast.parse raises RecursionError or MemoryError on deep nesting: the student's problem."""
    path = tmp_path / "deep.py"
    path.write_text("x = " + "(" * depth + "1" + ")" * depth + "\n")
    if 2 * depth > MAX_TOKENS:  # refused before it is parsed
        with pytest.raises(LoadError, match="Python tokens"):
            load_submission(path)
        return
    submission = load_submission(path)
    assert submission.tree is not None or submission.syntax_error is not None
