"""The fixed battery of cases every submission is run on, reproducible from seeds.

Each case is drawn from its own ``torch.Generator`` seeded with ``Case.seed``, in float64, and cast
to the case's dtype afterwards, so a float32 case holds exactly representable numbers and anyone
can rebuild a case with ``build_cases()``. The report prints every case's id, seed and shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Optional

import torch
from torch import Tensor

from reference.assignment import NOTEBOOK, Assignment
from reference.toy_data import generate_x_y

CaseKind = Literal["step", "chain", "init", "predict", "training"]
Weights = dict[str, Tensor]

NOTEBOOK_SEED = 70318
TRAINING_STEPS = 800
TRAINING_LEARNING_RATE = 4.0
TRAINING_CHECKPOINTS = tuple(range(100, TRAINING_STEPS + 1, 100))


@dataclass(frozen=True)
class Case:
    """One call (or one loop of calls) of the student's functions, with everything it is given."""

    id: str
    kind: CaseKind
    description: str
    seed: int
    X: Tensor
    Y: Optional[Tensor] = None
    weights: Optional[Weights] = None
    learning_rate: float = 1.0
    #: chains: the (X, Y) batch of every step; step 0 is (X, Y)
    batches: tuple[tuple[Tensor, Tensor], ...] = ()
    #: training: the row drawn at each step
    rows: Optional[Tensor] = None
    #: step cases called twice on fresh copies, to see hidden state
    repeat: bool = False
    #: capture the intermediates of the call (the notebook's dLdP ... dLdI)
    capture: bool = True
    tags: tuple[str, ...] = field(default=())

    @property
    def dtype(self) -> torch.dtype:
        return self.X.dtype

    @property
    def batch_size(self) -> int:
        return self.X.shape[0]


def _weights(g: torch.Generator, assignment: Assignment, dtype: torch.dtype, scale: float = 1.0
             ) -> Weights:
    """``torch.randn`` weights in the notebook's order of draws (V, I, then W, J)."""
    return {
        name: (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
        for name, shape in assignment.parameter_shapes.items()
    }


def _batch(g: torch.Generator, n: int, assignment: Assignment, dtype: torch.dtype
           ) -> tuple[Tensor, Tensor]:
    X = torch.rand(n, assignment.n_inputs, generator=g, dtype=torch.float64).to(dtype)
    Y = torch.randint(0, 2, (n, assignment.n_outputs), generator=g).to(dtype)
    return X, Y


def notebook_row(assignment: Assignment = NOTEBOOK) -> Case:
    """The notebook's own single-row example: its draws, in its order, from seed 70318."""
    g = torch.Generator().manual_seed(NOTEBOOK_SEED)
    X = torch.rand(1, assignment.n_inputs, generator=g)
    shapes = assignment.parameter_shapes
    weights = {name: torch.randn(*shape, generator=g) for name, shape in shapes.items()}
    Y = torch.randint(high=2, size=(1, assignment.n_outputs), generator=g)  # int64, as printed
    return Case("notebook_row", "step", "the notebook's single-row example (Y is int64 there)",
                NOTEBOOK_SEED, X, Y, weights, learning_rate=0.01, tags=("notebook",))


def _toy_data() -> tuple[Tensor, Tensor]:
    _, X, y = generate_x_y(random_seed=NOTEBOOK_SEED)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def _step(case_id: str, description: str, seed: int, n: int, dtype: torch.dtype,
          learning_rate: float, assignment: Assignment, weight_scale: float = 1.0,
          **extra) -> Case:
    g = torch.Generator().manual_seed(seed)
    X, Y = _batch(g, n, assignment, dtype)
    weights = _weights(g, assignment, dtype, weight_scale)
    return Case(case_id, "step", description, seed, X, Y, weights, learning_rate, **extra)


def _saturated(seed: int, assignment: Assignment) -> Case:
    """Pre-activations of magnitude about 12: sigmoid'(12) is 6e-6, so gradients are tiny."""
    g = torch.Generator().manual_seed(seed)
    X, Y = _batch(g, 5, assignment, torch.float64)
    weights = _weights(g, assignment, torch.float64, scale=0.3)
    signs = torch.where(torch.arange(assignment.n_hidden) % 2 == 0, 1.0, -1.0).double()
    weights["I"] = (12.0 * signs).reshape(1, -1)
    weights["J"] = torch.full((1, assignment.n_outputs), 12.0, dtype=torch.float64)
    return Case("saturated", "step", "saturating pre-activations (|A|, |C| about 12), n=5, float64",
                seed, X, Y, weights, learning_rate=1.0, tags=("saturated",))


def _chain(seed: int, steps: int, n: int, assignment: Assignment) -> Case:
    g = torch.Generator().manual_seed(seed)
    batches = tuple(_batch(g, n, assignment, torch.float64) for _ in range(steps))
    weights = _weights(g, assignment, torch.float64)
    X, Y = batches[0]
    return Case(f"chain_{steps}x{n}", "chain",
                f"{steps} SGD steps, each fed the weights the previous step returned, n={n}, "
                "float64, learning rate 1", seed, X, Y, weights, 1.0, batches=batches)


def _training(assignment: Assignment) -> Case:
    X, Y = _toy_data()
    g = torch.Generator().manual_seed(NOTEBOOK_SEED)
    weights = {name: torch.randn(*shape, generator=g)
               for name, shape in assignment.parameter_shapes.items()}
    rows = torch.randint(0, X.shape[0], (TRAINING_STEPS,), generator=g)
    return Case("training_loop", "training",
                f"the notebook's training loop: {TRAINING_STEPS} single-row SGD steps on the "
                f"8-row toy dataset, learning rate {TRAINING_LEARNING_RATE:g}, float32",
                NOTEBOOK_SEED, X, Y, weights, TRAINING_LEARNING_RATE, rows=rows, capture=False)


@lru_cache(maxsize=4)
def build_cases(assignment: Assignment = NOTEBOOK) -> tuple[Case, ...]:
    """The whole battery, in the order it runs."""
    f32, f64 = torch.float32, torch.float64
    toy_X, toy_Y = _toy_data()
    g = torch.Generator().manual_seed(1)
    toy_weights = _weights(g, assignment, f32)
    lr_seed = 20
    cases = [
        notebook_row(assignment),
        Case("toy_batch", "step", "the notebook's 8-row toy dataset as one batch, float32",
             1, toy_X, toy_Y, toy_weights, 1.0),
        _step("batch2", "random batch, n=2, float64", 11, 2, f64, 1.0, assignment),
        _step("batch5", "random batch, n=5, float64, called twice to see hidden state", 12, 5,
              f64, 1.0, assignment, repeat=True),
        _step("batch32", "random batch, n=32, float64", 13, 32, f64, 1.0, assignment),
        _step("batch5_f32", "random batch, n=5, float32", 14, 5, f32, 1.0, assignment),
        _step("batch32_f32", "random batch, n=32, float32", 15, 32, f32, 1.0, assignment),
    ]
    for lr in (0.01, 1.0, 4.0):
        cases.append(_step(f"lr_{lr:g}", f"same n=5 float64 batch, learning rate {lr:g}",
                           lr_seed, 5, f64, lr, assignment, tags=("learning_rate",)))
    cases += [
        _saturated(30, assignment),
        _chain(40, 5, 4, assignment),
        Case("init_none", "init", "weights=None on the notebook's row: fresh weights are drawn",
             NOTEBOOK_SEED, notebook_row(assignment).X, torch.zeros(1, 1), None, 1.0,
             capture=False),
        _init_draws(assignment),
        Case("predict_toy", "predict", "neural_net_predict on the 8-row toy dataset, float32",
             1, toy_X, None, toy_weights),
        _predict("predict_batch32", 50, 32, f64, assignment),
        _predict("predict_batch1", 51, 1, f32, assignment),
    ]
    cases += _probes(cases, assignment)
    cases.append(_training(assignment))
    return tuple(cases)


#: How far a probe moves every entry of one weight: enough to change any forward pass that uses it.
PROBE_SHIFT = 0.5
#: The cases probes repeat with one weight moved: a step case and a predict case.
PROBE_BASES = ("batch5", "predict_batch32")


def _probes(cases: list[Case], assignment: Assignment) -> list[Case]:
    """Each base case again with one weight moved, tagged ("probe",): not graded, read by diagnosis.

    If moving ``weights['I']`` leaves the student's prediction (or the gradients of one step)
    exactly as they were, the forward pass does not read ``weights['I']``; it may read a global.
    """
    by_id = {case.id: case for case in cases}
    probes = []
    for base_id in PROBE_BASES:
        base = by_id[base_id]
        function = "neural_net_predict" if base.kind == "predict" else "train_neural_net"
        for name in assignment.parameter_names:
            weights = {**base.weights, name: base.weights[name] + PROBE_SHIFT}
            kind = "predict" if base.kind == "predict" else "step"
            probes.append(Case(
                f"probe_{kind}_{name}", base.kind,
                f"probe: {base_id} with every entry of weights[{name!r}] moved by "
                f"{PROBE_SHIFT:g}, to see whether {function} reads it (not graded)",
                base.seed, base.X, base.Y, weights, base.learning_rate, capture=False,
                tags=("probe",)))
    return probes


def is_probe(case: Case) -> bool:
    """Probe cases feed diagnosis only; no check counts them."""
    return "probe" in case.tags


def _init_draws(assignment: Assignment) -> Case:
    """init_none's call with the weights it should draw given: the two must return the same.

    Comparing the student's function with itself judges the draws (V, I, W, J from
    ``torch.randn`` in the notebook's order after seeding) apart from the gradients.
    """
    g = torch.Generator().manual_seed(NOTEBOOK_SEED)
    weights = {name: torch.randn(*shape, generator=g)
               for name, shape in assignment.parameter_shapes.items()}
    return Case("init_draws", "step", "probe: init_none with the notebook's seeded draws given",
                NOTEBOOK_SEED, notebook_row(assignment).X, torch.zeros(1, 1), weights, 1.0,
                capture=False, tags=("probe",))


def _predict(case_id: str, seed: int, n: int, dtype: torch.dtype, assignment: Assignment
             ) -> Case:
    g = torch.Generator().manual_seed(seed)
    X, _ = _batch(g, n, assignment, dtype)
    weights = _weights(g, assignment, dtype)
    return Case(case_id, "predict", f"neural_net_predict on a random batch, n={n}, {str(dtype)[6:]}",
                seed, X, None, weights, capture=False)
