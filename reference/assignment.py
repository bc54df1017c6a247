"""The assignment description: the network a course asks for, read from a TOML file.

An instructor writes the network once (layer sizes, activations, parameter names, loss, the
student's function names) and every part of gradkit reads it from the one validated
``Assignment`` built here: the reference, the oracles, the cases, the checks and the report.
``load_assignment`` takes a path or the name of a bundled description (``notebook``,
``tanh_bce``, ``relu_mse``, ``logistic``; files in ``reference/assignments/``) and raises
``AssignmentError`` naming the key and its line for anything wrong.

Ids and names. Every quantity of the network has a generic, layer-indexed *id* (``X``, ``Y``,
``W1``, ``b1``, ``Z1``, ``A1``, ..., ``dLdZ2``, ``dLdW1``; see ``reference.steps``) and a *name*:
what the course calls it (the parameter names of ``[[layers]]``, the intermediate names of
``[names]``). The notebook's ``dLdC`` is the id ``dLdZ2``; its ``V`` is the id ``W1``.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_validator)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Activation = Literal["sigmoid", "tanh", "relu", "identity"]
ACTIVATIONS: tuple[str, ...] = ("sigmoid", "tanh", "relu", "identity")
#: The loss an assignment documents. Every loss is summed over the batch except ``mse``.
LossName = Literal["half_sse", "sse", "mse", "bce"]
LOSSES: dict[str, str] = {
    "half_sse": "L = 1/2 * sum over rows and outputs of (p - y)^2 (the notebook's)",
    "sse": "L = sum over rows and outputs of (p - y)^2",
    "mse": "L = mean over rows of the sum over outputs of (p - y)^2",
    "bce": "L = sum over rows and outputs of -(y log p + (1 - y) log(1 - p)), p a sigmoid output",
}

#: A loss *convention*: the documented loss, or one that differs from it by a uniform factor on
#: every gradient (a missing 1/2, a batch mean). The course notebook documents ``half_sum``: its
#: ``mse_loss`` returns (p - y)**2 per row, but its hand-written dL/dP is P - Y, which is the
#: derivative of L = 1/2 * sum((p - y)**2) over the batch.
LossConvention = Literal["half_sum", "sum", "half_mean", "mean"]

CONVENTION_WORDS: dict[str, str] = {
    "half_sum": "L = 1/2 * sum over the batch of (p - y)^2 (the notebook's documented gradients)",
    "sum": "L = sum over the batch of (p - y)^2 (the notebook's mse_loss, without the 1/2)",
    "half_mean": "L = 1/2 * mean over the batch of (p - y)^2 (a batch mean)",
    "mean": "L = mean over the batch of (p - y)^2 (a batch mean, without the 1/2)",
}
#: The convention each loss documents, and the conventions its family has.
DOCUMENTED_CONVENTION: dict[str, LossConvention] = {
    "half_sse": "half_sum", "sse": "sum", "mse": "mean", "bce": "sum"}
FAMILY_CONVENTIONS: dict[str, tuple[str, ...]] = {
    "half_sse": ("half_sum", "sum", "half_mean", "mean"),
    "sse": ("half_sum", "sum", "half_mean", "mean"),
    "mse": ("half_sum", "sum", "half_mean", "mean"),
    "bce": ("sum", "mean"),
}

BUNDLED_DIR = Path(__file__).resolve().parent / "assignments"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def convention_scale(convention: LossConvention, batch_size: int) -> float:
    """The factor by which a convention's gradients differ from the ``half_sum`` ones."""
    return {
        "half_sum": 1.0,
        "sum": 2.0,
        "half_mean": 1.0 / batch_size,
        "mean": 2.0 / batch_size,
    }[convention]


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value) or keyword.iskeyword(value):
        raise ValueError(f"{value!r} is not a Python identifier (letters, digits and _, not "
                         "starting with a digit, not a keyword)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Layer(_Strict):
    """One dense layer: Z = A_prev @ weight + bias, A = activation(Z)."""

    units: int = Field(ge=1, le=4096, description="Units of the layer (columns of its output).")
    activation: Activation = Field(description="sigmoid, tanh, relu or identity.")
    weight: str = Field(description="Key of the weight in the weights dict, shape (fan_in, units).")
    bias: str = Field(description="Key of the bias in the weights dict, shape (1, units).")

    @field_validator("weight", "bias")
    @classmethod
    def _names(cls, value: str) -> str:
        return _identifier(value)


class Functions(_Strict):
    """The names of the student's two functions (default: the notebook's)."""

    train: str = Field("train_neural_net", description="train(X, Y, weights=None, "
                       "learning_rate=1.0) -> the updated weights dict.")
    predict: str = Field("neural_net_predict", description="predict(X, weights) -> P.")

    @field_validator("train", "predict")
    @classmethod
    def _names(cls, value: str) -> str:
        return _identifier(value)


class Training(_Strict):
    """The training check: single-row SGD steps from seeded weights on a small data set."""

    dataset: Literal["notebook", "separable"] = Field(
        "separable", description="'notebook': the notebook's 8-row, 3-bit toy set (inputs = 3, "
        "one output); 'separable': a seeded, linearly separable set of the assignment's width.")
    seed: int = Field(70318, ge=0, description="Seed of the data set, start weights and rows.")
    rows: int = Field(16, ge=2, le=256, description="Rows of the separable data set.")
    steps: int = Field(800, ge=1, le=20000, description="Single-row SGD steps.")
    learning_rate: float = Field(0.1, gt=0, description="Learning rate of every step (the "
                                 "notebook's is 4; 0.1 keeps most networks from diverging).")
    checkpoint_every: int = Field(100, ge=1, description="Steps between the checkpoints compared.")

    @property
    def checkpoints(self) -> tuple[int, ...]:
        every = min(self.checkpoint_every, self.steps)
        return tuple(range(every, self.steps + 1, every))


class ToleranceRule(_Strict):
    rtol: float = Field(ge=0)
    atol: float = Field(ge=0)


class Assignment(_Strict):
    """A feed-forward network trained by one hand-written SGD step per call.

    Read from a TOML file by ``load_assignment``; every field is documented in
    ``gradkit assignment new``'s template.
    """

    name: str = Field(min_length=1, description="What the assignment is called (in reports).")
    inputs: int = Field(ge=1, le=4096, description="Columns of X.")
    loss: LossName = Field("half_sse", description="half_sse, sse, mse or bce.")
    functions: Functions = Field(default_factory=Functions)
    layers: tuple[Layer, ...] = Field(min_length=1, max_length=16,
                                      description="From the input; the last is the output layer.")
    names: dict[str, str] = Field(
        default_factory=dict, description="Step id -> the course's name for it (what to look "
        "for in the student's code), e.g. dLdZ2 = 'dLdC'. Default: the id; a parameter "
        "gradient's default is 'dLd' + the parameter's name.")
    accepted_conventions: tuple[LossConvention, ...] = Field(
        (), description="Other conventions accepted as correct (e.g. 'sum').")
    points: dict[str, float] = Field(default_factory=dict,
                                     description="Check id -> points, over the defaults.")
    tolerances: dict[Literal["float32", "float64"], ToleranceRule] = Field(
        default_factory=dict, description="Per dtype, over gradkit's table.")
    training: Training = Field(default_factory=Training)

    # where it was read from (not part of the description)
    _path: Optional[str] = PrivateAttr(None)
    _text: Optional[str] = PrivateAttr(None)
    _fingerprint: Optional[str] = PrivateAttr(None)

    # -- validation ----------------------------------------------------------------------------

    @field_validator("names")
    @classmethod
    def _names_are_identifiers(cls, names: dict[str, str]) -> dict[str, str]:
        for key, value in names.items():
            try:
                _identifier(value)
            except ValueError as exc:
                raise ValueError(f"names.{key}: {exc}") from None
        return names

    @field_validator("points")
    @classmethod
    def _points_are_positive(cls, points: dict[str, float]) -> dict[str, float]:
        for key, value in points.items():
            if value < 0:
                raise ValueError(f"points.{key} is {value:g}; points cannot be negative")
        return points

    @model_validator(mode="after")
    def _consistent(self) -> "Assignment":
        parameters = [n for layer in self.layers for n in (layer.weight, layer.bias)]
        seen: set[str] = set()
        for name in parameters:
            if name in seen:
                raise ValueError(f"the parameter name {name!r} is used twice: every weight and "
                                 "bias needs its own key in the weights dict")
            seen.add(name)
        if self.functions.train == self.functions.predict:
            raise ValueError("functions.train and functions.predict must differ")
        ids = step_ids(self)
        unknown = sorted(set(self.names) - set(ids))
        if unknown:
            raise ValueError(f"names has unknown step id(s) {', '.join(unknown)}; this network's "
                             f"ids are {', '.join(ids)}")
        taken: dict[str, str] = {}
        for step_id in ids:
            name = self.name_of(step_id)
            if name in taken:
                raise ValueError(f"the name {name!r} is given to both {taken[name]} and "
                                 f"{step_id}; every quantity needs its own name")
            taken[name] = step_id
        if self.loss == "bce" and self.layers[-1].activation != "sigmoid":
            raise ValueError(f"loss 'bce' is the cross-entropy of a sigmoid output, but the "
                             f"output layer's activation is {self.layers[-1].activation!r}")
        allowed = FAMILY_CONVENTIONS[self.loss]
        for convention in self.accepted_conventions:
            if convention not in allowed:
                raise ValueError(f"accepted_conventions: {convention!r} is not a convention of "
                                 f"loss {self.loss!r} (use {', '.join(allowed)})")
        if self.training.dataset == "notebook" and (self.inputs != 3 or self.outputs != 1):
            raise ValueError("training.dataset 'notebook' is the notebook's 3-bit, one-label "
                             "set: it needs inputs = 3 and one output unit")
        checks = set(check_ids(self))
        for key in self.points:
            if key not in checks:
                raise ValueError(f"points has an unknown check {key!r}; this assignment's "
                                 f"checks are {', '.join(sorted(checks))}")
        return self

    # -- shapes and names ----------------------------------------------------------------------

    @property
    def outputs(self) -> int:
        return self.layers[-1].units

    @property
    def depth(self) -> int:
        return len(self.layers)

    def fan_in(self, layer: int) -> int:
        """Columns entering layer ``layer`` (1-based)."""
        return self.inputs if layer == 1 else self.layers[layer - 2].units

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Parameter names in the order of their draws: weight, then bias, layer by layer."""
        return tuple(n for layer in self.layers for n in (layer.weight, layer.bias))

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, int]]:
        shapes: dict[str, tuple[int, int]] = {}
        for k, layer in enumerate(self.layers, start=1):
            shapes[layer.weight] = (self.fan_in(k), layer.units)
            shapes[layer.bias] = (1, layer.units)
        return shapes

    @property
    def parameter_ids(self) -> dict[str, str]:
        """Parameter name -> its generic id (``W1``, ``b1``, ...)."""
        ids: dict[str, str] = {}
        for k, layer in enumerate(self.layers, start=1):
            ids[layer.weight] = f"W{k}"
            ids[layer.bias] = f"b{k}"
        return ids

    def parameter_layer(self, name: str) -> int:
        """The 1-based layer a parameter belongs to."""
        return int(self.parameter_ids[name][1:])

    def name_of(self, step_id: str) -> str:
        """The course's name for a quantity id (``dLdZ2`` -> ``dLdC`` in the notebook)."""
        if step_id in self.names:
            return self.names[step_id]
        match = re.fullmatch(r"(dLd)?([Wb])(\d+)", step_id)
        if match:
            layer = self.layers[int(match.group(3)) - 1]
            parameter = layer.weight if match.group(2) == "W" else layer.bias
            return f"dLd{parameter}" if match.group(1) else parameter
        return step_id

    # -- the loss ------------------------------------------------------------------------------

    @property
    def loss_convention(self) -> LossConvention:
        """The convention the documented loss is written in (``half_sum`` for the notebook)."""
        return DOCUMENTED_CONVENTION[self.loss]

    def convention_scale(self, convention: LossConvention, batch_size: int) -> float:
        """The factor by which a convention's gradients differ from the documented ones."""
        return convention_scale(convention, batch_size) / convention_scale(
            self.loss_convention, batch_size)

    # -- the notebook's legacy view ------------------------------------------------------------

    @property
    def n_inputs(self) -> int:
        return self.inputs

    @property
    def n_outputs(self) -> int:
        return self.outputs

    @property
    def n_hidden(self) -> int:
        """Units of the first hidden layer (the notebook's 4); the output's for one layer."""
        return self.layers[0].units

    @property
    def is_notebook(self) -> bool:
        """The notebook's network as the notebook names it (what the notebook catalogue of
        diagnoses is written for): 3-4-1 sigmoid, V I W J, half_sse, its function names."""
        notebook = _bundled_notebook()
        return notebook is None or (
            self.inputs, self.loss, self.functions, self.layers, self.names) == (
            notebook.inputs, notebook.loss, notebook.functions, notebook.layers, notebook.names)

    # -- identity ------------------------------------------------------------------------------

    def description(self) -> dict[str, Any]:
        """The description as plain data, with every default filled in."""
        return self.model_dump(mode="json")

    @property
    def fingerprint(self) -> str:
        """sha256 of the description (not of the file: comments do not change it)."""
        if self._fingerprint is None:
            text = json.dumps(self.description(), sort_keys=True)
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()
        return self._fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Assignment) and self.fingerprint == other.fingerprint

    @property
    def path(self) -> Optional[str]:
        return self._path

    @property
    def text(self) -> Optional[str]:
        return self._text

    @property
    def sha256(self) -> Optional[str]:
        """sha256 of the file it was read from (None when built in code)."""
        return None if self._text is None else hashlib.sha256(self._text.encode()).hexdigest()

    def info(self) -> dict[str, Any]:
        """What a report carries: name, the file's sha256 and path, the whole description."""
        return {
            "name": self.name, "sha256": self.sha256, "path": self._path,
            "fingerprint": self.fingerprint, "description": self.description(),
            "source": self._text,
            # the notebook-era keys, kept for readers of 1.0 reports
            "n_inputs": self.inputs, "n_hidden": self.n_hidden, "n_outputs": self.outputs,
            "loss_convention": self.loss_convention,
            "accepted_conventions": list(self.accepted_conventions),
            "parameter_shapes": {k: list(v) for k, v in self.parameter_shapes.items()},
        }


#: The notebook's points per check (override with ``--points ID=N`` or the assignment's
#: ``[points]``); load is a gate worth nothing.
DEFAULT_POINTS: dict[str, float] = {
    "load": 0, "predict": 10, "gradient.V": 15, "gradient.I": 10, "gradient.W": 15,
    "gradient.J": 10, "update": 10, "init": 5, "training": 20, "side_effects": 5,
}


def default_points(assignment: Assignment) -> dict[str, float]:
    """Points per check before the assignment's and the options' own: the notebook's
    ``DEFAULT_POINTS`` (and 0 for the dtype rule, so its scores are those it always had); for
    another description 15 per weight's gradient and 10 per bias's, and 5 for the dtype rule."""
    if assignment.is_notebook:
        points = {**DEFAULT_POINTS, "dtype": 0}
    else:
        points = {"load": 0, "predict": 10}
        for layer in assignment.layers:
            points[f"gradient.{layer.weight}"] = 15
            points[f"gradient.{layer.bias}"] = 10
        points.update({"update": 10, "dtype": 5, "init": 5, "training": 20, "side_effects": 5})
    return {check: points[check] for check in check_ids(assignment) if check in points}


def step_ids(assignment: Assignment) -> tuple[str, ...]:
    """The ids a course may name in ``[names]``: forward and backward steps (not X, Y, the
    parameters, whose names are the ``[[layers]]`` keys, nor the updates). See
    ``reference.steps`` for what each is."""
    L = len(assignment.layers)
    ids = [i for k in range(1, L + 1) for i in (f"Z{k}", f"A{k}")]
    ids.append(f"dLdA{L}")
    for k in range(L, 0, -1):
        ids += [f"dA{k}dZ{k}", f"dLdZ{k}", f"dLdW{k}", f"dLdb{k}"]
        if k > 1:
            ids.append(f"dLdA{k - 1}")
    return tuple(ids)


def check_ids(assignment: Assignment) -> tuple[str, ...]:
    """Every check an assignment's report has, in report order (``load`` and ``policy`` first
    and last; ``gradient.<name>`` for every parameter)."""
    return ("load", "predict", *(f"gradient.{n}" for n in assignment.parameter_names), "update",
            "dtype", "init", "training", "side_effects", "policy")


# ----------------------------------------------------------------------------------------------
# Loading a file
# ----------------------------------------------------------------------------------------------

class AssignmentError(ValueError):
    """An assignment file that cannot be used: where (file, line, key) and what is wrong."""

    def __init__(self, message: str, path: Optional[str] = None, line: Optional[int] = None,
                 key: Optional[str] = None, column: Optional[int] = None) -> None:
        self.message, self.path, self.line, self.key, self.column = (
            message, path, line, key, column)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "assignment"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


def bundled() -> dict[str, Path]:
    """The bundled descriptions by name (the file's stem)."""
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.toml"))}


def resolve(spec: str | Path) -> Path:
    """A path to an assignment file, or the name of a bundled one, as a path."""
    path = Path(spec)
    if path.is_file():
        return path
    found = bundled().get(str(spec))
    if found is not None:
        return found
    raise AssignmentError(f"no such file, and no bundled assignment of that name (bundled: "
                          f"{', '.join(bundled())})", path=str(spec))


def load_assignment(spec: str | Path) -> Assignment:
    """The validated ``Assignment`` of a TOML file (a path, or a bundled name such as
    ``notebook``). Raises ``AssignmentError`` with the file, line and key of the problem."""
    path = resolve(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AssignmentError(f"cannot be read: {exc}", path=str(path)) from None
    return parse_assignment(text, str(path))


def parse_assignment(text: str, path: str = "<assignment>") -> Assignment:
    """``load_assignment`` for a file's text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, column = _toml_position(exc)
        message = str(exc).split(" (at line")[0]
        raise AssignmentError(f"not valid TOML: {message}", path=path, line=line,
                              column=column) from None
    try:
        assignment = Assignment.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, text, path) from None
    assignment._path = path
    assignment._text = text
    return assignment


def _toml_position(exc: Exception) -> tuple[Optional[int], Optional[int]]:
    lineno, colno = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if lineno is None:
        match = re.search(r"at line (\d+), column (\d+)", str(exc))
        if match:
            lineno, colno = int(match.group(1)), int(match.group(2))
    return lineno, colno


def _first_error(exc: ValidationError, text: str, path: str) -> AssignmentError:
    """The first of pydantic's errors, as the key and the line it is on."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "literal_error":
        given = error.get("input")
        message = f"{given!r} is not one of the allowed values ({message.removeprefix('Input should be ')})"
    elif error["type"] == "extra_forbidden":
        message = "unknown key (a misspelling?)"
    elif error["type"] == "missing":
        message = "is required"
    key = _key_words(loc)
    if not loc:  # a whole-model check: the message names its key; find that key's line
        named = re.match(r"(\w+(?:\.\w+)?)", message)
        line = None
        for candidate in re.findall(r"'([A-Za-z_]\w*)'", message) + (
                [named.group(1)] if named else []):
            line = _line_of_value(text, candidate, last="twice" in message) or \
                _line_of((candidate.split(".")[0],), text)
            if line:
                break
        return AssignmentError(message, path=path, line=line)
    return AssignmentError(message, path=path, line=_line_of(loc, text), key=key)


def _key_words(loc: tuple) -> str:
    words = ""
    for part in loc:
        words += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if words else part)
    return words


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.'\-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_'\-]+)\s*=")


def _line_of(loc: tuple, text: str) -> Optional[int]:
    """The line of the TOML text a pydantic location points at (best effort: the key's line,
    else its table's header, else its parent's)."""
    lines = text.splitlines()
    table: tuple = ()
    counts: dict[str, int] = {}
    best: Optional[int] = None
    keys = [p for p in loc if isinstance(p, str)]
    want_table = tuple(keys[:-1])
    index = next((p for p in loc if isinstance(p, int)), None)
    for number, line in enumerate(lines, start=1):
        stripped = line.split("#", 1)[0]
        header = _HEADER.match(stripped)
        if header:
            name = tuple(header.group(2).strip("'").split("."))
            if header.group(1) == "[[":
                counts[name[0]] = counts.get(name[0], -1) + 1
            table = name
            if (table == tuple(keys) and (index is None or counts.get(table[0]) == index)) or \
                    (table == want_table and (index is None or counts.get(table[0]) == index)):
                best = best or number
            continue
        key = _KEY.match(stripped)
        if not key:
            continue
        name = key.group(1).strip("'")
        in_table = table == want_table and (index is None or counts.get(
            table[0] if table else "", None) == index)
        if in_table and keys and name == keys[-1]:
            return number
        if not table and keys and name == keys[0]:
            # an inline table or a top-level key: functions = { train = ... }
            if len(keys) == 1 or re.search(rf"\b{re.escape(keys[-1])}\s*=", stripped[key.end():]):
                return number
            best = best or number
    return best


def _line_of_value(text: str, value: str, last: bool = False) -> Optional[int]:
    """The first (or ``last``) line that sets a key to the string ``value``."""
    found = [number for number, line in enumerate(text.splitlines(), start=1)
             if re.search(rf"=\s*[\"']{re.escape(value)}[\"']", line.split("#", 1)[0])]
    return (found[-1] if last else found[0]) if found else None


_NOTEBOOK: list[Assignment] = []


def _bundled_notebook() -> Optional[Assignment]:
    if not _NOTEBOOK:
        path = BUNDLED_DIR / "notebook.toml"
        _NOTEBOOK.append(parse_assignment(path.read_text(encoding="utf-8"), str(path)))
    return _NOTEBOOK[0]


#: The course notebook's assignment (``reference/assignments/notebook.toml``).
NOTEBOOK = _bundled_notebook()
