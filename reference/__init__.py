"""Any assignment's network, and every gradient of it, done right.

``reference.assignment`` reads an assignment file (TOML) into the validated ``Assignment``;
``reference.steps`` lists every step of its forward and backward pass (the STEP TABLE);
``reference.network`` runs them (``run``, ``train``, ``predict``) and keeps the notebook's own
view (``forward``, ``backward``, ``train_neural_net``); ``reference.oracles`` has three
independent ways to compute the parameter gradients. Bundled descriptions are in
``reference/assignments/`` (the notebook's is ``notebook.toml``).
"""

from reference.assignment import (NOTEBOOK, Assignment, AssignmentError, LossConvention,
                                  load_assignment)
from reference.network import (
    GRADIENT_NAMES,
    Backward,
    Forward,
    Trace,
    backward,
    forward,
    init_weights,
    loss,
    neural_net_predict,
    predict,
    run,
    sgd_update,
    sigmoid,
    train,
    train_neural_net,
)
from reference.oracles import (
    autograd_gradients,
    finite_difference_gradients,
    hand_written_gradients,
)
from reference.steps import Step, step_table

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
