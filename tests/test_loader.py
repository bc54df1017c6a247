"""Loading submissions: notebooks with IPython lines, line origins, the student's own modules."""

from __future__ import annotations

import nbformat
import pytest

from conftest import EXAMPLES
from gradkit.loader import LoadError, load_submission
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
