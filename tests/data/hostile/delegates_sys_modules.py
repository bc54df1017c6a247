"""Hostile submission (delegation): no gradient code of its own. It looks the reference solution up
in sys.modules under a computed name (no static scan can read it) and, failing that, imports it
by that name with importlib; then calls the reference's train_neural_net and
neural_net_predict. gradkit fails it with GKP203: the reference is neither loaded in the
submission's process nor in view, and the attempt is seen.
"""

from typing import Dict, Optional

from torch import Tensor

import importlib
import sys

_NAME = "".join(["ref", "erence"])


def _find():
    for _name, _module in list(sys.modules.items()):
        if _name.startswith(_NAME) and hasattr(_module, "train_neural_net"):
            return _module
    try:
        return importlib.import_module(_NAME + ".network")
    except ImportError:
        return None


_reference = _find()
print("reference found:", _reference is not None)


def train_neural_net(X: Tensor,
                     Y: Tensor,
                     weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """The reference's own step."""
    return _reference.train_neural_net(X, Y, weights, learning_rate)


def neural_net_predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """The reference's own prediction."""
    return _reference.neural_net_predict(X, weights)
