"""The three gradient oracles agree, in ordinary and saturated regimes, under every loss convention.

gradkit trusts these oracles to say what a correct gradient is, so they are checked against each
other on many random networks: the hand-written backward pass, torch autograd and finite
differences share no derivative code.
"""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor

from reference.assignment import CONVENTION_WORDS, NOTEBOOK, LossConvention, convention_scale
from reference.network import Weights, forward, train_neural_net
from reference.oracles import (
    ORACLES,
    autograd_gradients,
    finite_difference_gradients,
    hand_written_gradients,
)

BATCH_SIZES = (1, 2, 5, 8, 32)
DTYPES = (torch.float32, torch.float64)
AGREEMENT = 1e-7
TINY = 1e-6
MIN_MAGNITUDE = 1e-30
ORACLE_PAIRS = [
    ("hand_written", "autograd"),
    ("hand_written", "finite_differences"),
    ("autograd", "finite_differences"),
]
# The finite-difference oracle takes ~10-15 ms a case; these keep the file to a few seconds.
ORACLE_SETTINGS = settings(max_examples=150, deadline=None)
SATURATED_SETTINGS = settings(max_examples=100, deadline=None)


def relative_error(a: Tensor, b: Tensor) -> float:
    """max|a - b| / max|b|: the worst difference as a fraction of b's largest entry.

    Zero when both are exactly zero (e.g. dL/dV when every x is 0), infinite if only b is.
    """
    difference = (a - b).abs().max().item()
    size = b.abs().max().item()
    if size == 0.0:
        return 0.0 if difference == 0.0 else math.inf
    return difference / size


def assert_agree(grads: dict[str, Weights], pairs=ORACLE_PAIRS,
                 terms: dict[str, float] | None = None) -> None:
    """Every pair within 1e-7 relative error; with ``terms`` (per parameter, the size of the
    batch sum's terms, ``row_terms``), relative to the larger of the result and its terms."""
    for first, second in pairs:
        for name in NOTEBOOK.parameter_names:
            a, b = grads[first][name], grads[second][name]
            if terms is None:
                error = relative_error(a, b)
            else:
                size = max(b.abs().max().item(), terms[name])
                error = (a - b).abs().max().item() / size if size else 0.0
            assert error < AGREEMENT, f"{first} vs {second} on d/d{name}: {error:.3g}"


def row_terms(X: Tensor, Y: Tensor, weights: Weights) -> dict[str, float]:
    """The largest entry of sum over rows of |the row's gradient|, per parameter.

    A batch gradient is a sum of one term per row; where terms of opposite sign cancel, the sum
    can only be known to within rounding of the terms themselves, not of the (tiny) sum.
    """
    rows = [ORACLES["hand_written"](X[i:i + 1], Y[i:i + 1], weights, "half_sum")
            for i in range(X.shape[0])]
    return {name: sum(r[name].abs() for r in rows).max().item()
            for name in NOTEBOOK.parameter_names}


def all_oracles(X: Tensor, Y: Tensor, weights: Weights, convention: LossConvention = "half_sum"):
    return {name: oracle(X, Y, weights, convention) for name, oracle in ORACLES.items()}


# Strategies -------------------------------------------------------------------------------------


def _flush_tiny(value: float) -> float:
    # Entries like 1e-308 make products of several of them underflow into float64's subnormals,
    # where no oracle keeps its relative precision; no network holds such weights. Zero stays.
    return value if abs(value) >= MIN_MAGNITUDE else 0.0


def _tensor(draw, dtype: torch.dtype, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    """A tensor of ``dtype`` with entries 0 or of magnitude >= 1e-30 in [low, high]."""
    np_dtype, width = (np.float32, 32) if dtype == torch.float32 else (np.float64, 64)
    elements = st.floats(low, high, width=width).map(_flush_tiny)
    return torch.from_numpy(draw(arrays(np_dtype, shape, elements=elements)).copy())


def _signed(draw, dtype: torch.dtype, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    """Entries of magnitude in [low, high], each with a random sign."""
    magnitude = _tensor(draw, dtype, shape, low, high)
    signs = torch.from_numpy(draw(arrays(np.bool_, shape)).copy())
    return torch.where(signs, magnitude, -magnitude)


def _labels(draw, dtype: torch.dtype, n: int) -> Tensor:
    return torch.from_numpy(draw(arrays(np.int64, (n, 1), elements=st.integers(0, 1)))).to(dtype)


@st.composite
def ordinary_cases(draw) -> tuple[Tensor, Tensor, Weights]:
    """X, Y, weights with |A| <= 14 and |C| <= 10: no unit saturated past float64's reach."""
    n = draw(st.sampled_from(BATCH_SIZES))
    dtype = draw(st.sampled_from(DTYPES))
    shapes = NOTEBOOK.parameter_shapes
    X = _tensor(draw, dtype, (n, NOTEBOOK.n_inputs), -2.0, 2.0)
    weights = {name: _tensor(draw, dtype, shapes[name], -2.0, 2.0) for name in shapes}
    return X, _labels(draw, dtype, n), weights


@st.composite
def saturated_cases(draw) -> tuple[str, Tensor, Tensor, Weights]:
    """A layer ("A", "C" or "both") whose every pre-activation has magnitude in [18, 20].

    With X in [0, 1] and |V| <= 1/8, |X V| <= 3/8, so a bias of magnitude in [18.5, 19.5]
    puts |A| in [18.125, 19.875]; likewise B in (0, 1) and |W| <= 3/32 for C. (Bounds are
    exact binary fractions so that float32 draws can use them.)

    Why not beyond 20: autograd differentiates sigmoid as s * (1 - s) from the rounded s. Near
    x = 20, 1 - s is about 2e-9 while float64 rounds s near 1 to within 5.5e-17, so 1 - s (and
    p - y for y = 1) is only good to about 3e-8 relative, twice over in a product; a few units
    further autograd itself misses 1e-7 (measured: ~8e-8 at 20, ~2e-7 at 21, ~5e-7 at 22),
    while the hand-written pass (sigmoid(x) * sigmoid(-x)) and the finite differences stay
    exact.

    Half the batches have one label for every row. With mixed labels, rows of opposite p - y
    can cancel in a gradient's sum over the batch: the sum is then known only to within rounding
    of its terms (each oracle's ~1e-16 to ~3e-8 per row), so those batches are held to 1e-7 of
    the terms' size (``row_terms``). With one label, X >= 0 and B > 0, every sum adds terms of
    one sign and nothing cancels.
    """
    layer = draw(st.sampled_from(("A", "C", "both")))
    n = draw(st.sampled_from(BATCH_SIZES))
    dtype = draw(st.sampled_from(DTYPES))
    shapes = NOTEBOOK.parameter_shapes
    X = _tensor(draw, dtype, (n, NOTEBOOK.n_inputs), 0.0, 1.0)
    if layer in ("A", "both"):
        V = _tensor(draw, dtype, shapes["V"], -0.125, 0.125)
        I = _signed(draw, dtype, shapes["I"], 18.5, 19.5)
    else:
        V = _tensor(draw, dtype, shapes["V"], -2.0, 2.0)
        I = _tensor(draw, dtype, shapes["I"], -2.0, 2.0)
    if layer in ("C", "both"):
        W = _tensor(draw, dtype, shapes["W"], -0.09375, 0.09375)
        J = _signed(draw, dtype, shapes["J"], 18.5, 19.5)
    else:
        W = _tensor(draw, dtype, shapes["W"], -2.0, 2.0)
        J = _tensor(draw, dtype, shapes["J"], -2.0, 2.0)
    if draw(st.booleans()):
        Y = torch.full((n, 1), float(draw(st.integers(0, 1))), dtype=dtype)
    else:
        Y = _labels(draw, dtype, n)
    return layer, X, Y, {"V": V, "I": I, "W": W, "J": J}


# Agreement --------------------------------------------------------------------------------------


@ORACLE_SETTINGS
@given(ordinary_cases())
def test_oracles_agree(case: tuple[Tensor, Tensor, Weights]) -> None:
    X, Y, weights = case
    grads = all_oracles(X, Y, weights)
    for oracle_grads in grads.values():
        for name, shape in NOTEBOOK.parameter_shapes.items():
            assert oracle_grads[name].shape == shape
            assert oracle_grads[name].dtype == torch.float64
    assert_agree(grads)


@SATURATED_SETTINGS
@given(saturated_cases())
def test_oracles_agree_where_units_saturate(case: tuple[str, Tensor, Tensor, Weights]) -> None:
    layer, X, Y, weights = case
    fwd = forward(X.double(), {name: w.double() for name, w in weights.items()})
    saturated = {"A": ["A"], "C": ["C"], "both": ["A", "C"]}[layer]
    for name in saturated:
        magnitude = getattr(fwd, name).abs()
        assert 18.0 <= magnitude.min() and magnitude.max() <= 20.0, (name, magnitude)
    grads = all_oracles(X, Y, weights)
    # The regime is the point: the gradients behind a saturated unit are all tiny. Behind A,
    # those of V and I; behind C, every gradient.
    tiny = ["V", "I", "W", "J"] if "C" in saturated else ["V", "I"]
    for name in tiny:
        assert grads["hand_written"][name].abs().max() < TINY, name
    # See saturated_cases: with mixed labels the terms of a batch sum may cancel (rows with
    # p - y of opposite signs), so there the oracles are held to 1e-7 of the terms' size.
    one_label = bool((Y == Y[0, 0]).all())
    assert_agree(grads, terms=None if one_label else row_terms(X, Y, weights))


# Loss conventions -------------------------------------------------------------------------------


def test_conventions_are_the_ones_described() -> None:
    assert set(get_args(LossConvention)) == set(CONVENTION_WORDS)


@pytest.mark.parametrize(
    ("convention", "factor"),
    [("half_sum", lambda n: 1.0), ("sum", lambda n: 2.0),
     ("half_mean", lambda n: 1.0 / n), ("mean", lambda n: 2.0 / n)],
)
@pytest.mark.parametrize("n", [1, 5, 32])
def test_convention_scale_values(convention: LossConvention, factor, n: int) -> None:
    assert convention_scale(convention, n) == factor(n)


def seeded_case(n: int, dtype: torch.dtype = torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, NOTEBOOK.n_inputs, generator=generator, dtype=dtype)
    Y = torch.randint(0, 2, (n, 1), generator=generator).to(dtype)
    weights = {
        name: torch.randn(*shape, generator=generator, dtype=dtype)
        for name, shape in NOTEBOOK.parameter_shapes.items()
    }
    return X, Y, weights


@pytest.mark.parametrize("oracle_name", list(ORACLES))
@pytest.mark.parametrize("convention", get_args(LossConvention))
@pytest.mark.parametrize("n", [1, 5, 32])
def test_each_convention_scales_the_gradients(
    oracle_name: str, convention: LossConvention, n: int
) -> None:
    X, Y, weights = seeded_case(n)
    documented = hand_written_gradients(X, Y, weights, "half_sum")
    got = ORACLES[oracle_name](X, Y, weights, convention)
    scale = convention_scale(convention, n)
    for name in NOTEBOOK.parameter_names:
        error = relative_error(got[name], scale * documented[name])
        assert error < AGREEMENT, (name, error)


def test_oracle_names_are_the_three_oracles() -> None:
    assert ORACLES == {
        "hand_written": hand_written_gradients,
        "autograd": autograd_gradients,
        "finite_differences": finite_difference_gradients,
    }


# train_neural_net -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_dtype", ["same", torch.int64])
@pytest.mark.parametrize("n", BATCH_SIZES)
def test_train_neural_net_takes_one_sgd_step_in_the_input_dtype(
    dtype: torch.dtype, label_dtype, n: int
) -> None:
    X, Y, weights = seeded_case(n, dtype, seed=n)
    Y = Y if label_dtype == "same" else Y.to(label_dtype)
    learning_rate = 0.5
    updated = train_neural_net(X, Y, weights, learning_rate)
    gradients = autograd_gradients(X, Y, weights)
    assert set(updated) == set(NOTEBOOK.parameter_names)
    for name, shape in NOTEBOOK.parameter_shapes.items():
        assert updated[name].dtype == dtype
        assert updated[name].shape == shape
        expected = weights[name].double() - learning_rate * gradients[name]
        torch.testing.assert_close(updated[name], expected.to(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 8])
def test_train_neural_net_draws_missing_weights_in_the_notebook_order(
    dtype: torch.dtype, n: int
) -> None:
    X, Y, _ = seeded_case(n, dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(70318)
        # A zero learning rate returns the drawn weights unchanged.
        drawn = train_neural_net(X, Y, None, learning_rate=0.0)
        torch.manual_seed(70318)
        by_hand = {
            "V": torch.randn(3, 4, dtype=dtype),
            "I": torch.randn(1, 4, dtype=dtype),
            "W": torch.randn(4, 1, dtype=dtype),
            "J": torch.randn(1, 1, dtype=dtype),
        }
    for name in NOTEBOOK.parameter_names:
        assert torch.equal(drawn[name], by_hand[name]), name


def test_train_neural_net_rejects_mismatched_batches() -> None:
    X, Y, weights = seeded_case(4)
    with pytest.raises(ValueError, match="4 rows but Y has 3"):
        train_neural_net(X, Y[:3], weights)


def test_autograd_of_bce_keeps_its_digits_where_the_sigmoid_saturates():
    """dL/dZ of the summed cross-entropy is sigmoid(Z) - Y to the last digit at any Z: torch's
    softplus is linear above 20 and put it at exactly 0 for Y = 1 (a correct solution failed
    gradient checks against autograd on a saturated chain step)."""
    from reference.assignment import load_assignment
    from reference.oracles import autograd_gradients

    logistic = load_assignment("logistic")
    n = logistic.inputs
    X = torch.ones(3, n, dtype=torch.float64)
    weights = {logistic.layers[0].weight: torch.full((n, 1), 8.0, dtype=torch.float64),
               logistic.layers[0].bias: torch.tensor([[-3.0]], dtype=torch.float64)}
    Z = X @ weights[logistic.layers[0].weight] + weights[logistic.layers[0].bias]
    assert float(Z[0, 0]) > 20  # where softplus's threshold lies
    for label in (1.0, 0.0):
        Y = torch.full((3, 1), label, dtype=torch.float64)
        grads = autograd_gradients(X, Y, weights, assignment=logistic)
        want = (torch.sigmoid(Z) - Y).sum(dim=0, keepdim=True)
        assert torch.allclose(grads[logistic.layers[0].bias], want, rtol=1e-12, atol=0)
