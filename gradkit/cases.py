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
from reference.network import run_forward
from reference.toy_data import generate_x_y

CaseKind = Literal["step", "chain", "init", "predict", "training"]
Weights = dict[str, Tensor]

NOTEBOOK_SEED = 70318
#: The notebook's training loop (``reference/assignments/notebook.toml``'s [training]).
TRAINING_STEPS = 800
TRAINING_LEARNING_RATE = 4.0
TRAINING_CHECKPOINTS = tuple(range(100, TRAINING_STEPS + 1, 100))
#: Pre-activation of a saturated unit, by activation: sigmoid'(12) is 6e-6; tanh'(6) is 2.5e-5
#: (at 12 a student's 1 - tanh(z)**2 keeps only 5 digits, fewer than float64's tolerance asks).
SATURATION = {"sigmoid": 12.0, "tanh": 6.0}
#: Step cases keep every ReLU pre-activation this far from the kink at 0 (relative to its scale).
KINK_CLEARANCE = 1e-6


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
    #: training: the steps after which the weights are sent back
    checkpoints: tuple[int, ...] = TRAINING_CHECKPOINTS

    @property
    def dtype(self) -> torch.dtype:
        return self.X.dtype

    @property
    def batch_size(self) -> int:
        return self.X.shape[0]


def _weights(g: torch.Generator, assignment: Assignment, dtype: torch.dtype, scale: float = 1.0
             ) -> Weights:
    """``torch.randn`` weights in the description's order of draws (the notebook's V, I, W, J)."""
    return {
        name: (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
        for name, shape in assignment.parameter_shapes.items()
    }


def _batch(g: torch.Generator, n: int, assignment: Assignment, dtype: torch.dtype
           ) -> tuple[Tensor, Tensor]:
    X = torch.rand(n, assignment.n_inputs, generator=g, dtype=torch.float64).to(dtype)
    Y = torch.randint(0, 2, (n, assignment.n_outputs), generator=g).to(dtype)
    return X, Y


def clear_of_kinks(assignment: Assignment, X: Tensor, weights: Weights) -> bool:
    """No ReLU pre-activation within rounding of 0 (where its derivative jumps)."""
    if not any(layer.activation == "relu" for layer in assignment.layers):
        return True
    trace = run_forward(assignment, X.to(torch.float64),
                        {n: w.to(torch.float64) for n, w in weights.items()})
    for k, layer in enumerate(assignment.layers, start=1):
        if layer.activation != "relu":
            continue
        Z = trace[f"Z{k}"]
        if bool((Z.abs() <= KINK_CLEARANCE * (1 + Z.abs().max())).any()):
            return False
    return True


def _redraw(seed: int, draw, assignment: Assignment):
    """``draw(generator)`` from ``seed``, or from the next seeds while its pre-activations touch
    a ReLU kink; returns (the seed used, what was drawn)."""
    for attempt in range(100):
        used = seed + 7919 * attempt
        drawn = draw(torch.Generator().manual_seed(used))
        X, weights = drawn[0], drawn[-1]
        if clear_of_kinks(assignment, X, weights):
            return used, drawn
    return used, drawn


def notebook_row(assignment: Assignment = NOTEBOOK) -> Case:
    """The notebook's own single-row example: its draws, in its order, from seed 70318 (for
    another description, the same draws at its shapes)."""
    def draw(g: torch.Generator):
        X = torch.rand(1, assignment.n_inputs, generator=g)
        shapes = assignment.parameter_shapes
        weights = {name: torch.randn(*shape, generator=g) for name, shape in shapes.items()}
        Y = torch.randint(high=2, size=(1, assignment.n_outputs), generator=g)  # int64
        return X, Y, weights

    seed, (X, Y, weights) = _redraw(NOTEBOOK_SEED, draw, assignment)
    if assignment.is_notebook:
        return Case("notebook_row", "step", "the notebook's single-row example (Y is int64 "
                    "there)", seed, X, Y, weights, learning_rate=0.01, tags=("notebook",))
    return Case("single_row", "step", "one row drawn as the notebook draws its example, Y int64 "
                "(integer labels, as the notebook's)", seed, X, Y, weights, learning_rate=0.01)


def separable_data(assignment: Assignment) -> tuple[Tensor, Tensor]:
    """A seeded, linearly separable data set of the assignment's width and outputs (float32):
    X uniform in [-1, 1]^inputs, each output's label 1 on one side of a random hyperplane through
    the data's median, rows within a margin of any plane left out, both labels in every column."""
    training = assignment.training
    g = torch.Generator().manual_seed(training.seed)
    candidates = torch.rand(training.rows * 8, assignment.inputs, generator=g,
                            dtype=torch.float64) * 2 - 1
    normals = torch.randn(assignment.inputs, assignment.outputs, generator=g, dtype=torch.float64)
    scores = candidates @ normals
    scores = scores - scores.median(dim=0, keepdim=True).values
    margin = 0.15 * scores.abs().mean(dim=0, keepdim=True)
    kept = (scores.abs() > margin).all(dim=1)
    X, Y = candidates[kept][: training.rows], (scores[kept][: training.rows] > 0)
    for column in range(assignment.outputs):  # both labels in every column
        if bool(Y[:, column].all()) or not bool(Y[:, column].any()):
            Y[0, column] = not bool(Y[0, column])
            X[0] = X[0] - 2 * (X[0] @ normals[:, column]) * normals[:, column] / \
                normals[:, column].dot(normals[:, column])
    return X.to(torch.float32), Y.to(torch.float32)


def training_data(assignment: Assignment = NOTEBOOK) -> tuple[Tensor, Tensor]:
    """The training check's data set: the notebook's toy set, or ``separable_data``."""
    if assignment.training.dataset == "notebook":
        _, X, y = generate_x_y(random_seed=assignment.training.seed)
        return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    return separable_data(assignment)


def _toy_data() -> tuple[Tensor, Tensor]:
    return training_data(NOTEBOOK)


def _step(case_id: str, description: str, seed: int, n: int, dtype: torch.dtype,
          learning_rate: float, assignment: Assignment, weight_scale: float = 1.0,
          **extra) -> Case:
    def draw(g: torch.Generator):
        X, Y = _batch(g, n, assignment, dtype)
        return X, Y, _weights(g, assignment, dtype, weight_scale)

    seed, (X, Y, weights) = _redraw(seed, draw, assignment)
    return Case(case_id, "step", description, seed, X, Y, weights, learning_rate, **extra)


def _saturating(assignment: Assignment) -> bool:
    return any(layer.activation in SATURATION for layer in assignment.layers)


def _saturated(seed: int, assignment: Assignment) -> Case:
    """Pre-activations of magnitude about 12 (6 for tanh): gradients are tiny."""
    seed, (X, Y, weights) = _redraw(seed, lambda g: _saturating_draw(g, assignment), assignment)
    if assignment.is_notebook:
        description = "saturating pre-activations (|A|, |C| about 12), n=5, float64"
    else:
        description = ("saturating pre-activations (|Z| about 12 in sigmoid layers, 6 in tanh "
                       "layers), n=5, float64")
    return Case("saturated", "step", description, seed, X, Y, weights, learning_rate=1.0,
                tags=("saturated",))


def _saturating_draw(g: torch.Generator, assignment: Assignment):
    X, Y = _batch(g, 5, assignment, torch.float64)
    weights = _weights(g, assignment, torch.float64, scale=0.3)
    last = assignment.depth
    for k, layer in enumerate(assignment.layers, start=1):
        size = SATURATION.get(layer.activation)
        if size is None:
            continue
        if k == last:
            weights[layer.bias] = torch.full((1, layer.units), size, dtype=torch.float64)
        else:
            signs = torch.where(torch.arange(layer.units) % 2 == 0, 1.0, -1.0).double()
            weights[layer.bias] = (size * signs).reshape(1, -1)
    return X, Y, weights


def _chain(seed: int, steps: int, n: int, assignment: Assignment) -> Case:
    def draw(g: torch.Generator):
        batches = tuple(_batch(g, n, assignment, torch.float64) for _ in range(steps))
        return batches[0][0], batches, _weights(g, assignment, torch.float64)

    seed, (_, batches, weights) = _redraw(seed, draw, assignment)
    X, Y = batches[0]
    return Case(f"chain_{steps}x{n}", "chain",
                f"{steps} SGD steps, each fed the weights the previous step returned, n={n}, "
                "float64, learning rate 1", seed, X, Y, weights, 1.0, batches=batches)


def _training(assignment: Assignment) -> Case:
    X, Y = training_data(assignment)
    training = assignment.training
    g = torch.Generator().manual_seed(training.seed)
    weights = {name: torch.randn(*shape, generator=g)
               for name, shape in assignment.parameter_shapes.items()}
    rows = torch.randint(0, X.shape[0], (training.steps,), generator=g)
    if assignment.is_notebook:
        description = (f"the notebook's training loop: {training.steps} single-row SGD steps on "
                       f"the 8-row toy dataset, learning rate {training.learning_rate:g}, "
                       "float32")
    else:
        description = (f"a training loop: {training.steps} single-row SGD steps on a "
                       f"{X.shape[0]}-row separable dataset, learning rate "
                       f"{training.learning_rate:g}, float32")
    return Case("training_loop", "training", description, training.seed, X, Y, weights,
                training.learning_rate, rows=rows, capture=False,
                checkpoints=training.checkpoints)


def build_cases(assignment: Assignment = NOTEBOOK) -> tuple[Case, ...]:
    """The whole battery for an assignment, in the order it runs."""
    return _build_cases(assignment)


@lru_cache(maxsize=8)
def _build_cases(assignment: Assignment) -> tuple[Case, ...]:
    f32, f64 = torch.float32, torch.float64
    predict = assignment.functions.predict
    notebook = assignment.is_notebook
    toy_X, toy_Y = training_data(assignment)
    toy_seed, (_, toy_weights) = _redraw(1, lambda g: (toy_X, _weights(g, assignment, f32)),
                                         assignment)
    lr_seed = 20
    first = notebook_row(assignment)
    data_words = "the notebook's 8-row toy dataset" if notebook else \
        f"the {toy_X.shape[0]}-row training dataset"
    cases = [
        first,
        Case("toy_batch", "step", f"{data_words} as one batch, float32",
             toy_seed, toy_X, toy_Y, toy_weights, 1.0),
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
    if _saturating(assignment):
        cases.append(_saturated(30, assignment))
    cases += [
        _chain(40, 5, 4, assignment),
        Case("init_none", "init", "weights=None on the notebook's row: fresh weights are drawn"
             if notebook else "weights=None on the first case's row: fresh weights are drawn",
             NOTEBOOK_SEED, first.X, torch.zeros(1, assignment.outputs), None, 1.0,
             capture=False),
        _init_draws(assignment, first),
        Case("predict_toy", "predict", f"{predict} on the 8-row toy dataset, float32" if notebook
             else f"{predict} on {data_words}, float32",
             toy_seed, toy_X, None, toy_weights),
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
        function = assignment.functions.predict if base.kind == "predict" else \
            assignment.functions.train
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


def _init_draws(assignment: Assignment, first: Case) -> Case:
    """init_none's call with the weights it should draw given: the two must return the same.

    Comparing the student's function with itself judges the draws (each weight, then its bias,
    from ``torch.randn`` in the description's order after seeding) apart from the gradients.
    """
    g = torch.Generator().manual_seed(NOTEBOOK_SEED)
    weights = {name: torch.randn(*shape, generator=g)
               for name, shape in assignment.parameter_shapes.items()}
    words = "the notebook's seeded draws" if assignment.is_notebook else "the seeded draws"
    return Case("init_draws", "step", f"probe: init_none with {words} given",
                NOTEBOOK_SEED, first.X, torch.zeros(1, assignment.outputs), weights, 1.0,
                capture=False, tags=("probe",))


def _predict(case_id: str, seed: int, n: int, dtype: torch.dtype, assignment: Assignment
             ) -> Case:
    def draw(g: torch.Generator):
        X, _ = _batch(g, n, assignment, dtype)
        return X, _weights(g, assignment, dtype)

    seed, (X, weights) = _redraw(seed, draw, assignment)
    return Case(case_id, "predict", f"{assignment.functions.predict} on a random batch, n={n}, "
                f"{str(dtype)[6:]}", seed, X, None, weights, capture=False)
