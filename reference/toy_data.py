"""The course notebook's toy data set and the two small functions its training loop uses.

``generate_x_y`` rebuilds the original ``nn_helper.generate_x_y``: the eight rows of three bits in a
random order with random 0/1 labels, drawn from Python's ``random`` module (not torch's generator,
so calling it leaves a seeded torch run untouched). ``random_row`` and ``cross_entropy`` are the
notebook's own, so a test can replay its training loop draw for draw.

Importing this module needs only the standard library and NumPy: ``gradkit/shims/nn_helper.py``
re-exports ``generate_x_y``, and pandas is used only if it is installed.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

#: Column names of the table ``generate_x_y`` returns: three input bits, then the label.
COLUMNS = ("X1", "X2", "X3", "y")


class ToyTable:
    """A read-only stand-in for the pandas DataFrame, used when pandas is not installed.

    It offers the few things a notebook does with the frame: ``columns``, ``to_numpy()``,
    ``len()``, a column by name (``table["y"]``) and a repr laid out like pandas'.
    """

    __slots__ = ("_columns", "_values")

    def __init__(self, columns: tuple[str, ...], values: np.ndarray) -> None:
        if values.ndim != 2 or values.shape[1] != len(columns):
            raise ValueError(f"{values.shape} values do not fit columns {columns}")
        frozen = values.copy()
        frozen.setflags(write=False)
        object.__setattr__(self, "_columns", tuple(columns))
        object.__setattr__(self, "_values", frozen)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ToyTable is read-only")

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    @property
    def shape(self) -> tuple[int, int]:
        return self._values.shape

    def to_numpy(self) -> np.ndarray:
        """The values, one row per example (a read-only array)."""
        return self._values

    def __getitem__(self, column: str) -> np.ndarray:
        return self._values[:, self._columns.index(column)]

    def __len__(self) -> int:
        return self._values.shape[0]

    def __iter__(self) -> Iterator[str]:
        # Like a DataFrame, iterating gives the column names.
        return iter(self._columns)

    def __repr__(self) -> str:
        index = [str(i) for i in range(len(self))]
        cells = [[str(v) for v in row] for row in self._values.tolist()]
        index_width = max(len(i) for i in index)
        widths = [
            max(len(name), *(len(row[j]) for row in cells))
            for j, name in enumerate(self._columns)
        ]
        header = " " * index_width + "".join(
            "  " + name.rjust(w) for name, w in zip(self._columns, widths)
        )
        lines = [
            i.ljust(index_width) + "".join("  " + c.rjust(w) for c, w in zip(row, widths))
            for i, row in zip(index, cells)
        ]
        return "\n".join([header, *lines])


def _bits(k: int, width: int = 3) -> list[int]:
    """The ``width`` bits of k, most significant first: 0 -> [0, 0, 0], 7 -> [1, 1, 1]."""
    return [(k >> shift) & 1 for shift in range(width - 1, -1, -1)]


def generate_x_y(random_seed: int = 1104) -> tuple[Any, np.ndarray, np.ndarray]:
    """The notebook's toy data set: ``(df, X, y)``.

    Seeds Python's ``random`` module with ``random_seed`` (as the original did, so it changes the
    global ``random`` state). X, an int array of shape (8, 3), holds the eight three-bit rows in the
    order of ``random.sample(range(1, 9), 8)``, k giving the bits of k - 1 (1 -> [0, 0, 0],
    8 -> [1, 1, 1]). y, an int array of shape (8, 1), is 1 where a second
    ``random.sample(range(1, 9), 8)`` is odd, else 0.

    ``df`` is a pandas DataFrame with columns X1, X2, X3, y when pandas is installed (pandas is not
    a dependency of gradkit), otherwise a read-only ``ToyTable`` with the same columns and values.
    """
    random.seed(random_seed)
    row_order = random.sample(range(1, 9), 8)
    label_draws = random.sample(range(1, 9), 8)
    X = np.array([_bits(k - 1) for k in row_order], dtype=np.int64)
    y = np.array([[k % 2] for k in label_draws], dtype=np.int64)
    values = np.hstack([X, y])
    try:
        import pandas as pd
    except ImportError:
        df: Any = ToyTable(COLUMNS, values)
    else:
        df = pd.DataFrame(values, columns=list(COLUMNS))
    return df, X, y


def random_row(X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """One row of X and its label, chosen with ``torch.randint``, each as a (1, k) tensor.

    The notebook's function: one draw from torch's global generator per call, which is what makes
    its seeded training loop reproducible.
    """
    import torch  # only here, so that generate_x_y stays importable without torch

    num_rows = X.shape[0]
    ind = int(torch.randint(0, num_rows, size=(1,)).item())
    # The notebook writes to_2d(row, "row"): a 1-D row reshaped to (1, k).
    return X[ind].reshape(1, -1), y[ind].reshape(1, -1)


def cross_entropy(predictions: Tensor, actual: Tensor) -> Tensor:
    """Binary cross-entropy per element, -y log p - (1 - y) log(1 - p), as the notebook has it."""
    assert predictions.shape == actual.shape, "Prediction and actual must have same shape"
    return -1.0 * actual * predictions.log() - (1.0 - actual) * (1 - predictions).log()
