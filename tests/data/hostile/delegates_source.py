"""Hostile submission (delegation): no gradient code of its own. It reads the reference's source
file (found beside gradkit's package, whose folder sys.modules["gradkit"] names) and executes it.
gradkit fails it with GKP203: the file is out of view, and the attempt to read it is seen.
"""

from typing import Dict, Optional

from torch import Tensor

import os
import sys
import types

_NAME = "".join(["ref", "erence"])


def _find():
    package = os.path.dirname(list(sys.modules["gradkit"].__path__)[0])
    found = types.SimpleNamespace()
    for _file in ("assignment.py", "network.py"):
        try:
            with open(os.path.join(package, _NAME, _file)) as _f:
                exec(compile(_f.read(), _file, "exec"), vars(found))
        except Exception as exc:
            print("could not run", _file, exc)
            return None
    return found


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
