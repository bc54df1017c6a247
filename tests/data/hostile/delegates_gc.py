"""Hostile submission (delegation): no gradient code of its own. It walks gc.get_objects() for a
function named train_neural_net that is not its own (the reference's, in a process forked from
the grader) and, failing that, imports the reference with __import__ under a computed name.
gradkit fails it with GKP203.
"""

from typing import Dict, Optional

from torch import Tensor

import gc
import types

_NAME = "".join(["ref", "erence"])


def _find():
    functions = {}
    for _obj in gc.get_objects():
        if isinstance(_obj, types.FunctionType) and _obj.__module__ != __name__ and \
                _obj.__name__ in ("train_neural_net", "neural_net_predict"):
            functions[_obj.__name__] = _obj
    if len(functions) == 2:
        return types.SimpleNamespace(**functions)
    try:
        return __import__(_NAME + ".network", fromlist=["network"])
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
