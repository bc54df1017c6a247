"""The course network (3-4-1, sigmoid) and every gradient of it, done right.

``reference.network`` has the forward and backward passes and the student-facing functions;
``reference.oracles`` three independent ways to compute the parameter gradients;
``reference.assignment`` the shapes, names and loss convention they all read.
"""

from reference.assignment import NOTEBOOK, Assignment, LossConvention
from reference.network import (
    GRADIENT_NAMES,
    Backward,
    Forward,
    backward,
    forward,
    init_weights,
    loss,
    neural_net_predict,
    sgd_update,
    sigmoid,
    train_neural_net,
)
from reference.oracles import (
    autograd_gradients,
    finite_difference_gradients,
    hand_written_gradients,
)

__all__ = [
    "NOTEBOOK",
    "Assignment",
    "LossConvention",
    "GRADIENT_NAMES",
    "Backward",
    "Forward",
    "backward",
    "forward",
    "init_weights",
    "loss",
    "neural_net_predict",
    "sgd_update",
    "sigmoid",
    "train_neural_net",
    "autograd_gradients",
    "finite_difference_gradients",
    "hand_written_gradients",
]
