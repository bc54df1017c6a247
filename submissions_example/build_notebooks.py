"""Build the two example notebooks from the text export of the course notebook.

    python submissions_example/build_notebooks.py [path/to/export.txt]

writes ``notebook.ipynb`` (the course notebook, its bias bug included) and ``notebook_fixed.ipynb``
(the same with only that bug fixed) beside this script. The default export is
``/work/shared/seed/000_9226395d3abf80fb.txt``. The output is deterministic: rebuilding from the
same export gives byte-identical files.

How the export is read. It is a sequence of ``In [k]:`` headers; after each comes the cell's code,
then (after a blank line) possibly the printed output, then possibly markdown, up to the next
header. Markdown before the first header would belong to no code cell; there is none. Code ends at
the first blank line that is followed by an output or a markdown line; an output is one paragraph
whose first line starts like a printed value (``tensor(``, ``torch.Size(``, ...); everything after
it up to the next header is one markdown cell. The parser knows only this export's shapes and fails
loudly on anything it does not recognise.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

DEFAULT_EXPORT = Path("/work/shared/seed/000_9226395d3abf80fb.txt")
HERE = Path(__file__).resolve().parent

#: First lines of a printed value in the export (torch 0.4's tensor repr, a DataFrame as CSV).
OUTPUT_STARTS = ("tensor(", "(tensor(", "torch.Size(", "Unnamed: 0,")
#: First lines of a markdown paragraph: LaTeX, a heading, or prose (no code line starts so).
MARKDOWN_START = re.compile(r"^(\$|#{2,} |[A-Z][a-z]+ )")
HEADER = re.compile(r"^In \[(\d+)\]:$")

EXPECTED_CELLS = [*range(1, 34), 52, 53]

BUGGY_HEADER = (
    "# gradkit-expect: verdict=fail\n"
    "# gradkit-expect: mistake=the forward passes add the notebook-level globals I and J instead"
    " of weights['I'] and weights['J'] (the course notebook's own bug)\n"
)
FIXED_HEADER = "# gradkit-expect: verdict=pass\n"

BUGGY_INTRO = """\
# The course notebook (example submission)

This is the course notebook that gradkit grades against, rebuilt cell by cell from its text export
(a July 2018 draft of "Chapter 3" of *Deep Learning from Scratch*) by `build_notebooks.py`; do not
edit it by hand. Code is exactly as exported; outputs are as the export printed them (torch 0.4).

It keeps the notebook's own bug: `train_neural_net` and `neural_net_predict` add the
notebook-level globals `I` and `J` instead of `weights['I']` and `weights['J']`, so the learned
biases are never used. gradkit should fail it. The `gradkit-expect` comments in the first code cell
state the expected verdict.
"""

FIXED_INTRO = """\
# The course notebook with its bias bug fixed (example submission)

This is the course notebook that gradkit grades against, rebuilt cell by cell from its text export
by `build_notebooks.py`; do not edit it by hand. It differs from `notebook.ipynb` only in
`train_neural_net` and `neural_net_predict`, whose forward passes add `weights['I']` and
`weights['J']` instead of the notebook-level globals `I` and `J`. gradkit should pass it.

Outputs are as the export printed them, except the final table (In [53]), which the buggy code
printed and which is therefore left out here.
"""

#: The fix: in the two functions, the forward pass's bias terms (each line occurs once in each).
BIAS_FIX = {
    "A = torch.mm(X, weights['V']) + I\n": "A = torch.mm(X, weights['V']) + weights['I']\n",
    "C = torch.mm(B, weights['W']) + J\n": "C = torch.mm(B, weights['W']) + weights['J']\n",
}
FIXED_FUNCTIONS = ("def train_neural_net(", "def neural_net_predict(")


@dataclass(frozen=True)
class ExportedCell:
    """One ``In [k]:`` block of the export."""

    number: int
    code: str
    output: str | None
    markdown_after: str | None


def _paragraphs(lines: list[str]) -> list[list[str]]:
    """Lines split at blank lines (runs of blank lines count as one break)."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


def _split_block(number: int, lines: list[str]) -> ExportedCell:
    """Code, then an optional output paragraph, then optional markdown, from one block's lines."""
    # Code ends at the first blank line followed by an output or markdown line.
    end = len(lines)
    for i in range(1, len(lines)):
        if lines[i - 1].strip() == "" and (
            lines[i].startswith(OUTPUT_STARTS) or MARKDOWN_START.match(lines[i])
        ):
            end = i
            break
    code = "\n".join(lines[:end]).strip("\n")
    rest = _paragraphs(lines[end:])
    output = None
    if rest and rest[0][0].startswith(OUTPUT_STARTS):
        output = "\n".join(rest.pop(0))
    if rest and not MARKDOWN_START.match(rest[0][0]):
        raise ValueError(f"In [{number}]: cannot tell what {rest[0][0]!r} is")
    markdown = "\n\n".join("\n".join(p) for p in rest) or None
    if not code:
        raise ValueError(f"In [{number}] has no code")
    return ExportedCell(number, code, output, markdown)


def parse_export(text: str) -> tuple[str | None, list[ExportedCell]]:
    """The markdown before the first code cell (if any) and the export's code cells, in order."""
    lines = text.splitlines()
    headers = [(i, int(m.group(1))) for i, line in enumerate(lines) if (m := HEADER.match(line))]
    if not headers:
        raise ValueError("no 'In [k]:' headers in the export")
    preamble = "\n".join(lines[: headers[0][0]]).strip() or None
    cells = []
    for (start, number), (stop, _) in zip(headers, [*headers[1:], (len(lines), 0)]):
        cells.append(_split_block(number, lines[start + 1 : stop]))
    return preamble, cells


def _printed_output(cell: ExportedCell):
    """The export's printed text as an nbformat output: print() is a stream, else a result."""
    last_line = cell.code.splitlines()[-1]
    if last_line.startswith("print("):
        return new_output("stream", name="stdout", text=cell.output + "\n")
    return new_output(
        "execute_result", data={"text/plain": cell.output}, execution_count=cell.number
    )


def _fix_bias_bug(code: str) -> str:
    for wrong, right in BIAS_FIX.items():
        if code.count(wrong) != 1:
            raise ValueError(f"expected {wrong!r} once in the cell, found {code.count(wrong)}")
        code = code.replace(wrong, right)
    return code


def build_notebook(cells: list[ExportedCell], preamble: str | None, fixed: bool):
    """The notebook: intro markdown, then every exported cell in order, with the header comments."""
    nb_cells = [new_markdown_cell(FIXED_INTRO if fixed else BUGGY_INTRO)]
    if preamble:
        nb_cells.append(new_markdown_cell(preamble))
    fixed_functions = set()
    for position, cell in enumerate(cells):
        code = cell.code
        if position == 0:
            code = (FIXED_HEADER if fixed else BUGGY_HEADER) + code
        if fixed and code.startswith(FIXED_FUNCTIONS):
            code = _fix_bias_bug(code + "\n").removesuffix("\n")
            fixed_functions.add(code.split("(", 1)[0])
        outputs = []
        # The final table was printed by the buggy code, so it does not belong to the fixed one.
        if cell.output is not None and not (fixed and cell.number == 53):
            outputs.append(_printed_output(cell))
        nb_cells.append(
            new_code_cell(code, execution_count=cell.number, outputs=outputs)
        )
        if cell.markdown_after:
            nb_cells.append(new_markdown_cell(cell.markdown_after))
    if fixed and len(fixed_functions) != len(FIXED_FUNCTIONS):
        raise ValueError(f"fixed only {sorted(fixed_functions)}")
    notebook = new_notebook(
        cells=nb_cells,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )
    # nbformat gives every cell a random id; number them instead so a rebuild is byte-identical.
    for index, nb_cell in enumerate(notebook.cells):
        nb_cell["id"] = f"cell-{index:02d}"
    nbformat.validate(notebook)
    return notebook


def main(argv: list[str]) -> int:
    export = Path(argv[1]) if len(argv) > 1 else DEFAULT_EXPORT
    preamble, cells = parse_export(export.read_text(encoding="utf-8"))
    numbers = [cell.number for cell in cells]
    if numbers != EXPECTED_CELLS:
        raise ValueError(f"expected cells In [1]..In [33], In [52], In [53]; found {numbers}")
    for name, fixed in (("notebook.ipynb", False), ("notebook_fixed.ipynb", True)):
        path = HERE / name
        with path.open("w", encoding="utf-8", newline="\n") as f:
            nbformat.write(build_notebook(cells, preamble, fixed), f)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
