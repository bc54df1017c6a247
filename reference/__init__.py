"""Any assignment's network, and every gradient of it, done right.

``reference.assignment`` reads an assignment file (TOML) into the validated ``Assignment``;
``reference.steps`` lists every step of its forward and backward pass (the STEP TABLE);
``reference.network`` runs them (``run``, ``train``, ``predict``) and keeps the notebook's own
view (``forward``, ``backward``, ``train_neural_net``); ``reference.oracles`` has three
independent ways to compute the parameter gradients. Bundled descriptions are in
``reference/assignments/`` (the notebook's is ``notebook.toml``).
"""

import importlib
from typing import Any

#: public name -> the module that defines it; imported on first use, so that reading an
#: assignment file (``reference.assignment``) does not import torch
_WHERE = {
    **dict.fromkeys(("NOTEBOOK", "Assignment", "AssignmentError", "LossConvention",
                     "load_assignment"), "reference.assignment"),
    **dict.fromkeys(("GRADIENT_NAMES", "Backward", "Forward", "Trace", "backward", "forward",
                     "init_weights", "loss", "neural_net_predict", "predict", "run",
                     "sgd_update", "sigmoid", "train", "train_neural_net"), "reference.network"),
    **dict.fromkeys(("autograd_gradients", "finite_difference_gradients",
                     "hand_written_gradients"), "reference.oracles"),
    **dict.fromkeys(("Step", "step_table"), "reference.steps"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'reference' has no attribute {name!r}")


__all__ = [
    "NOTEBOOK",
    "Assignment",
    "AssignmentError",
    "LossConvention",
    "load_assignment",
    "GRADIENT_NAMES",
    "Backward",
    "Forward",
    "Trace",
    "backward",
    "forward",
    "init_weights",
    "loss",
    "neural_net_predict",
    "predict",
    "run",
    "sgd_update",
    "sigmoid",
    "train",
    "train_neural_net",
    "autograd_gradients",
    "finite_difference_gradients",
    "hand_written_gradients",
    "Step",
    "step_table",
]
