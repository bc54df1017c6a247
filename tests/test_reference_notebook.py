"""The course notebook, reproduced to the four decimals it printed.

The literal numbers below are copied from the notebook's text export (torch 0.4 printed them; a
``1.00000e-02 *`` prefix is kept as a scale). Seeds, order of draws and functions are the
notebook's, so any drift in ``reference`` or the shims shows up as a wrong printed digit.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import nbformat
import numpy as np
import pytest
import torch
from torch import Tensor

from reference.network import backward, forward, neural_net_predict, train_neural_net
from reference.toy_data import ToyTable, cross_entropy, generate_x_y, random_row

REPO = Path(__file__).resolve().parents[1]
SHIMS_DIR = REPO / "gradkit" / "shims"
NOTEBOOK = REPO / "submissions_example" / "notebook.ipynb"
NOTEBOOK_FIXED = REPO / "submissions_example" / "notebook_fixed.ipynb"
SHIM_MODULES = ("helper", "nn_helper")
SEED = 70318

# (name, printed scale, printed values): In [3], [5], [7], [8], [9], then [13]..[23].
STEP_BY_STEP = [
    ("X", 1.0, [[0.1687, 0.3994, 0.2128]]),
    ("A", 1.0, [[0.5258, -0.4453, 0.9763, -1.8463]]),
    ("B", 1.0, [[0.6285, 0.3905, 0.7264, 0.1363]]),
    ("C", 1.0, [[0.7252]]),
    ("P", 1.0, [[0.6738]]),
    ("dLdP", 1.0, [[0.6738]]),
    ("dPdC", 1.0, [[0.2198]]),
    ("dLdC", 1.0, [[0.1481]]),
    ("dLdW", 1.0, [[0.0931], [0.0578], [0.1076], [0.0202]]),
    ("dLdJ", 1.0, [[0.1481]]),
    ("dLdB", 1.0, [[0.0530, 0.0311, 0.1894, 0.0563]]),
    ("dLdA", 1e-2, [[1.2373, 0.7395, 3.7642, 0.6624]]),
    ("dLdV", 1e-2, [
        [0.2088, 0.1248, 0.6352, 0.1118],
        [0.4941, 0.2953, 1.5033, 0.2645],
        [0.2632, 0.1573, 0.8008, 0.1409],
    ]),
    ("dLdI", 1e-2, [[1.2373, 0.7395, 3.7642, 0.6624]]),
]

# In [53]: torch.cat([preds, y, cross_entropy_loss], dim=1), one row per toy example.
FINAL_TABLE = [
    (0.0223, 0.0000, 0.0226),
    (0.9785, 1.0000, 0.0217),
    (0.9879, 1.0000, 0.0122),
    (0.0258, 0.0000, 0.0261),
    (0.0284, 0.0000, 0.0288),
    (0.0291, 0.0000, 0.0296),
    (0.9611, 1.0000, 0.0397),
    (0.9806, 1.0000, 0.0196),
]

# In [28]: generate_x_y(random_seed=70318)'s table, columns X1, X2, X3, y.
TOY_TABLE = [
    [0, 0, 1, 0],
    [0, 1, 0, 1],
    [1, 1, 0, 1],
    [0, 1, 1, 0],
    [1, 0, 1, 0],
    [1, 1, 1, 0],
    [0, 0, 0, 1],
    [1, 0, 0, 1],
]


@pytest.fixture(autouse=True)
def isolated_rngs() -> Iterator[None]:
    """Seeding here (torch, and Python's random via generate_x_y) must not leak to other tests."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(state)


@contextlib.contextmanager
def shims_importable() -> Iterator[None]:
    """gradkit/shims on sys.path as for a submission; sys.path and sys.modules restored after."""
    saved_path = list(sys.path)
    saved_modules = {name: sys.modules.pop(name, None) for name in SHIM_MODULES}
    sys.path.append(str(SHIMS_DIR))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _import_shim(name: str) -> ModuleType:
    module = importlib.import_module(name)
    assert Path(module.__file__).parent == SHIMS_DIR, f"{name} came from {module.__file__}"
    return module


def run_notebook(path: Path) -> dict:
    """Execute a notebook's code cells in order in a fresh namespace; return the namespace."""
    notebook = nbformat.read(path, as_version=4)
    namespace: dict = {"__name__": "__notebook__"}
    with shims_importable(), contextlib.redirect_stdout(io.StringIO()):
        for cell in notebook.cells:
            if cell.cell_type == "code":
                code = compile(cell.source, f"{path.name} In [{cell.execution_count}]", "exec")
                exec(code, namespace)
        for name in SHIM_MODULES:
            _import_shim(name)  # the notebook's imports found the shims, not another module
    return namespace


def printed(value: float, scale: float = 1.0) -> float:
    """``value`` as the notebook printed it: divided by the printed scale, to 4 decimals."""
    return round(value / scale, 4)


# The step-by-step cells -------------------------------------------------------------------------


def notebook_draws() -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """X, the weights and Y drawn exactly as the notebook draws them after its manual_seed."""
    torch.manual_seed(SEED)
    X = torch.rand(1, 3)
    V, I = torch.randn(3, 4), torch.randn(1, 4)
    W, J = torch.randn(4, 1), torch.randn(1, 1)
    Y = torch.randint(high=2, size=(1, 1))
    return X, {"V": V, "I": I, "W": W, "J": J}, Y


def test_notebook_label_is_zero() -> None:
    # In [10] printed tensor([[ 0.]]); torch now returns an int64 tensor from randint.
    _, _, Y = notebook_draws()
    assert Y.tolist() == [[0]]


@pytest.mark.parametrize(
    ("name", "scale", "expected"), STEP_BY_STEP, ids=[name for name, _, _ in STEP_BY_STEP]
)
def test_step_by_step_values_match_the_notebook(
    name: str, scale: float, expected: list[list[float]]
) -> None:
    X, weights, Y = notebook_draws()
    fwd = forward(X, weights)
    values = {**vars(fwd), **backward(fwd, Y.to(X.dtype), weights).as_dict()}
    got = [[printed(v, scale) for v in row] for row in values[name].tolist()]
    assert got == expected


# The training loop ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notebook_namespace() -> dict:
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        namespace = run_notebook(NOTEBOOK)
    random.setstate(state)
    return namespace


@pytest.mark.parametrize(("row", "expected"), list(enumerate(FINAL_TABLE)))
def test_notebook_final_table_with_its_own_functions(
    notebook_namespace: dict, row: int, expected: tuple[float, float, float]
) -> None:
    ns = notebook_namespace
    table = torch.cat([ns["preds"], ns["y"], ns["cross_entropy_loss"]], dim=1)
    assert table.shape == (8, 3)
    assert tuple(printed(v) for v in table[row].tolist()) == expected


def test_notebook_run_left_sys_path_and_modules_as_they_were(notebook_namespace: dict) -> None:
    assert str(SHIMS_DIR) not in sys.path
    assert not any(name in sys.modules for name in SHIM_MODULES)


def test_notebook_uses_leftover_globals_not_learned_biases(notebook_namespace: dict) -> None:
    # The bug the example is meant to carry: the learned biases differ from the globals I and J,
    # and the predictions are those of the globals.
    ns = notebook_namespace
    weights = ns["weights"]
    assert not torch.equal(weights["I"], ns["I"])
    with_globals = neural_net_predict(ns["X"], {**weights, "I": ns["I"], "J": ns["J"]})
    torch.testing.assert_close(ns["preds"], with_globals)


def replay_training(train, predict, X: Tensor, y: Tensor) -> Tensor:
    """The notebook's In [52]: 800 steps of one random row each, learning rate 4."""
    torch.manual_seed(SEED)
    weights = None
    for _ in range(8 * 100):
        X_row, y_row = random_row(X, y)
        weights = train(X_row, y_row, weights, 4)
    return predict(X, weights)


def toy_tensors() -> tuple[Tensor, Tensor]:
    _, X, y = generate_x_y(random_seed=SEED)
    return Tensor(X), Tensor(y)


def test_reference_functions_classify_every_toy_row() -> None:
    X, y = toy_tensors()
    predictions = replay_training(train_neural_net, neural_net_predict, X, y)
    assert ((predictions > 0.5) == (y == 1)).all(), torch.cat([predictions, y], dim=1)
    assert cross_entropy(predictions, y).max() < 0.1


def test_fixed_notebook_learns_what_the_reference_learns() -> None:
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        ns = run_notebook(NOTEBOOK_FIXED)
    random.setstate(state)
    X, y = toy_tensors()
    reference_predictions = replay_training(train_neural_net, neural_net_predict, X, y)
    assert ((ns["preds"] > 0.5) == (y == 1)).all()
    # The notebook's sigmoid is the literal 1 / (1 + exp(-x)), the reference's torch.sigmoid:
    # float32 rounding differs, the learned predictions do not to the printed digits.
    assert [printed(v) for v in ns["preds"].flatten().tolist()] == [
        printed(v) for v in reference_predictions.flatten().tolist()
    ]


def test_example_notebooks_are_valid_and_state_their_verdicts() -> None:
    for path, verdict in ((NOTEBOOK, "fail"), (NOTEBOOK_FIXED, "pass")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.cells[0].cell_type == "markdown"
        code_cells = [c for c in notebook.cells if c.cell_type == "code"]
        assert [c.execution_count for c in code_cells] == [*range(1, 34), 52, 53]
        assert code_cells[0].source.startswith(f"# gradkit-expect: verdict={verdict}\n")


# The toy data -----------------------------------------------------------------------------------


def test_generate_x_y_gives_the_notebook_table() -> None:
    df, X, y = generate_x_y(random_seed=SEED)
    assert list(df.columns) == ["X1", "X2", "X3", "y"]
    assert df.to_numpy().tolist() == TOY_TABLE
    assert X.shape == (8, 3) and y.shape == (8, 1)
    assert X.dtype.kind == "i" and y.dtype.kind == "i"
    assert X.tolist() == [row[:3] for row in TOY_TABLE]
    assert y.tolist() == [row[3:] for row in TOY_TABLE]
    try:
        import pandas as pd
    except ImportError:
        assert isinstance(df, ToyTable)
    else:
        assert isinstance(df, pd.DataFrame)


def test_generate_x_y_default_seed_is_a_permutation_of_all_rows() -> None:
    _, X, y = generate_x_y()
    assert sorted(map(tuple, X.tolist())) == [
        (a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)
    ]
    assert sorted(y.flatten().tolist()) == [0] * 4 + [1] * 4


def test_without_pandas_the_table_is_read_only_and_prints_like_pandas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` raise ImportError
    df, _, _ = generate_x_y(random_seed=SEED)
    assert isinstance(df, ToyTable)
    assert repr(df).splitlines()[:3] == ["   X1  X2  X3  y", "0   0   0   1  0", "1   0   1   0  1"]
    assert df["y"].tolist() == [row[3] for row in TOY_TABLE]
    assert len(df) == 8 and list(df) == ["X1", "X2", "X3", "y"]
    with pytest.raises(ValueError):
        df.to_numpy()[0, 0] = 5
    with pytest.raises(AttributeError):
        df.columns = ("a", "b", "c", "d")


def test_random_row_after_the_notebook_draws_gives_its_printed_row() -> None:
    # In [33] printed (tensor([[ 0.,  0.,  1.]]), tensor([[ 0.]])): the first toy row, drawn
    # after In [1]'s seed and the draws of In [3], [4], [8] and [10].
    X, y = toy_tensors()
    notebook_draws()
    X_row, y_row = random_row(X, y)
    assert X_row.tolist() == [[0.0, 0.0, 1.0]]
    assert y_row.tolist() == [[0.0]]


# The shims --------------------------------------------------------------------------------------


@pytest.fixture
def shims() -> Iterator[tuple[ModuleType, ModuleType]]:
    with shims_importable():
        yield _import_shim("helper"), _import_shim("nn_helper")


@pytest.mark.parametrize(
    ("x", "deriv", "expected"),
    [
        (0.0, False, 0.5),
        (0.0, True, 0.25),  # sigmoid'(0); sigmoid applied to sigmoid(0) would give 0.2350
        (2.0, False, 0.8808),
        (2.0, True, 0.1050),
        (-2.0, True, 0.1050),
        (-100.0, False, 0.0),
        (100.0, False, 1.0),
    ],
)
def test_shim_sigmoid(shims, x: float, deriv: bool, expected: float) -> None:
    helper, _ = shims
    got = helper.sigmoid(torch.tensor([[x]]), deriv=deriv)
    assert got.shape == (1, 1)
    assert printed(got.item()) == expected


def test_shim_sigmoid_matches_torch(shims) -> None:
    helper, _ = shims
    x = torch.linspace(-30, 30, 1001, dtype=torch.float64)
    torch.testing.assert_close(helper.sigmoid(x), torch.sigmoid(x))
    s = torch.sigmoid(x)
    torch.testing.assert_close(helper.sigmoid(x, deriv=True), s * (1 - s))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shim_sigmoid_is_the_original_formula_bit_for_bit(shims, dtype: torch.dtype) -> None:
    """The shim calls the kernels behind ``1.0 / t`` and ``1.0 - t`` directly; a student's
    numbers must not move by one bit from the course helper's literal formula."""
    helper, _ = shims
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(4096, generator=g, dtype=dtype) * scale for scale in (1, 8, 40)]
                  + [torch.tensor([0.0, -0.0, 88.0, -88.0, 710.0, -710.0, float("inf"),
                                   float("-inf"), float("nan"), 1.0, -1.0, 0.5], dtype=dtype)]).reshape(-1, 4)
    s = 1.0 / (1.0 + torch.exp(-x))
    assert torch.equal(helper.sigmoid(x).view(-1).nan_to_num(7.0), s.view(-1).nan_to_num(7.0))
    assert torch.equal(helper.sigmoid(x, deriv=True).nan_to_num(7.0),
                       (s * (1.0 - s)).nan_to_num(7.0))


@pytest.mark.parametrize(("kind", "shape"), [("col", (3, 1)), ("row", (1, 3))])
def test_shim_to_2d(shims, kind: str, shape: tuple[int, int]) -> None:
    helper, _ = shims
    a = torch.tensor([1.0, 2.0, 3.0])
    got = helper.to_2d(a, kind)
    assert got.shape == shape
    assert got.flatten().tolist() == [1.0, 2.0, 3.0]


def test_shim_to_2d_defaults_to_a_column_and_rejects_2d(shims) -> None:
    helper, _ = shims
    assert helper.to_2d(torch.zeros(4)).shape == (4, 1)
    with pytest.raises(AssertionError):
        helper.to_2d(torch.zeros(2, 2))


def test_shim_nn_helper_seeds_random_and_serves_the_toy_data(shims) -> None:
    helper, nn_helper = shims
    after_import = random.random()
    random.seed(1104)
    assert after_import == random.random()
    assert nn_helper.generate_x_y is generate_x_y


def test_shim_nn_helper_trains_a_bias_free_network(shims, capsys) -> None:
    _, nn_helper = shims
    _, X, y = generate_x_y(random_seed=SEED)
    random.seed(0)
    V, W = nn_helper.train_and_display(X, y, num_epochs=1000, num_hidden=8)
    assert V.shape == (3, 8) and W.shape == (8, 1)
    assert nn_helper.accuracy_binary(Tensor(X), Tensor(y), V, W) == 1.0
    assert nn_helper.accuracy_binary(X, 1 - y, V, W) == 0.0
    assert "epoch 1000" in capsys.readouterr().out
    assert np.isfinite(V).all() and np.isfinite(W).all()
