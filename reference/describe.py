"""An assignment in words: what ``gradkit assignment show`` prints, and the commented template
``gradkit assignment new`` writes. Reads only the description (no torch)."""

from __future__ import annotations

from reference.assignment import LOSSES, Assignment, check_ids, default_points

TEMPLATE = '''\
# A gradkit assignment: the network your students backpropagate by hand.
# Check what gradkit understood with:  gradkit assignment show THIS_FILE
# Grade with:                          gradkit check --assignment THIS_FILE student.py

name = "two hidden layers, tanh and ReLU"   # shown in every report
inputs = 2                                  # columns of X
# The loss whose gradients are the documented answer, summed over the batch except mse:
#   half_sse  1/2 * sum (p - y)^2       (the course notebook's)
#   sse       sum (p - y)^2
#   mse       mean over rows of sum over outputs (p - y)^2
#   bce       -sum (y log p + (1 - y) log(1 - p)), the output layer must be sigmoid
loss = "bce"
# The student's functions: train(X, Y, weights=None, learning_rate=1.0) returns the updated
# weights dict; predict(X, weights) returns P. With weights=None, train draws every parameter
# with torch.randn in this file's order: each layer's weight, then its bias, layer by layer.
functions = { train = "train", predict = "predict" }

# The layers, from the input; the last is the output layer.
# activation: sigmoid, tanh, relu (its derivative at 0 is 0) or identity.
# weight: key of the weights dict, shape (fan_in, units); bias: shape (1, units).
[[layers]]
units = 5
activation = "tanh"
weight = "W1"
bias = "b1"

[[layers]]
units = 4
activation = "relu"
weight = "W2"
bias = "b2"

[[layers]]
units = 1
activation = "sigmoid"
weight = "W3"
bias = "b3"

# Optional: what your course calls each intermediate, so diagnoses use your names and find the
# students' variables. Keys are step ids (see `gradkit assignment show`); default: the id, and
# dLd<parameter> for a parameter's gradient.
[names]
A3 = "P"
dLdA3 = "dLdP"

# Optional: other loss conventions accepted as correct (a uniform factor on every gradient):
# half_sum, sum, half_mean, mean for the squared errors; sum, mean for bce.
# accepted_conventions = ["mean"]

# Optional: points per check (default: 15 per weight's gradient, 10 per bias's, predict 10,
# update 10, dtype 5, init 5, training 20, side_effects 5).
# [points]
# training = 10

# Optional: tolerances per dtype, over gradkit's table.
# [tolerances.float32]
# rtol = 1e-4
# atol = 1e-6

# Optional: the training check (single-row SGD steps from seeded weights on a seeded, linearly
# separable data set of the right width; "notebook" is the notebook's 8-row set).
[training]
seed = 2024
rows = 16
steps = 600
learning_rate = 0.5
'''


def describe(assignment: Assignment) -> list[str]:
    """``gradkit assignment show``: the network, its shapes, the student's contract and every
    step of the backward pass with its id and the course's name."""
    from reference.steps import step_table  # (torch, for the step table's callables)

    a = assignment
    lines = [f"assignment: {a.name}"]
    if a.path:
        lines.append(f"file: {a.path} (sha256 {a.sha256})")
    widths = " -> ".join([str(a.inputs)] + [f"{layer.units} ({layer.activation})"
                                              for layer in a.layers])
    lines += [f"network: {widths}", f"loss: {a.loss}: {LOSSES[a.loss]}"]
    if a.accepted_conventions:
        lines.append(f"also accepted: {', '.join(a.accepted_conventions)}")
    lines += ["", "parameters (weights=None draws them in this order):"]
    for name, shape in a.parameter_shapes.items():
        k = a.parameter_layer(name)
        kind = "weight" if name == a.layers[k - 1].weight else "bias"
        lines.append(f"  {name:<10} {str(shape):<10} layer {k} {kind} (id {a.parameter_ids[name]})")
    draws = ", ".join(f"torch.randn{shape}" for shape in a.parameter_shapes.values())
    keys = ", ".join(repr(n) for n in a.parameter_names)
    lines += [
        "", "the student's contract:",
        f"  {a.functions.train}(X, Y, weights=None, learning_rate=1.0) -> {{{keys}}}, the "
        "weights after one SGD step",
        f"      X: (n, {a.inputs}), Y: (n, {a.outputs}); returned tensors keep X's dtype; "
        f"weights=None draws {draws}",
        f"  {a.functions.predict}(X, weights) -> P of shape (n, {a.outputs})",
        "", "steps (id, the course's name, layer, formula):",
    ]
    for step in step_table(a):
        lines.append(f"  {step.id:<10} {step.name:<10} layer {step.layer}  {step.formula}")
    t = a.training
    data = "the notebook's 8-row toy set" if t.dataset == "notebook" else \
        f"a {t.rows}-row separable set (seed {t.seed})"
    lines += ["", f"training check: {t.steps} single-row SGD steps on {data}, learning rate "
              f"{t.learning_rate:g}, checkpoints every {min(t.checkpoint_every, t.steps)}"]
    points = {**default_points(a), **a.points}
    lines.append("points: " + ", ".join(f"{c} {points[c]:g}" for c in check_ids(a)
                                          if c in points))
    if a.tolerances:
        lines.append("tolerances: " + ", ".join(f"{d}: rtol {r.rtol:g}, atol {r.atol:g}"
                                                for d, r in sorted(a.tolerances.items())))
    return lines
