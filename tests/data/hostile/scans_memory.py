"""Hostile submission (a leak): looks for other students' data in its own process during
`gradkit grade`: every string the garbage collector tracks, and the bytes of its heap and of
every private writable mapping (read through /proc/self/mem), searched for the marker the test
puts in a classmate's file. Prints what it finds; then is a correct solution.
"""

import ctypes
import gc
import re

_MARK = "classmate" + "-marker-"
_found = set()
for _obj in gc.get_objects():
    try:
        for _value in (_obj.values() if isinstance(_obj, dict) else
                       _obj if isinstance(_obj, (list, tuple)) else ()):
            if isinstance(_value, str) and _MARK in _value and _value != _MARK:
                _found.add("gc " + _value[_value.index(_MARK):][:40])
    except Exception:
        pass
_read = 0
with open("/proc/self/maps") as _maps:
    for _line in _maps:
        _fields = _line.split()
        if _fields[1][:2] != "rw" or (len(_fields) > 5 and not _fields[5].startswith("[")):
            continue  # (private writable memory: the heap, the stack, anonymous mappings)
        _start, _end = (int(x, 16) for x in _fields[0].split("-"))
        if _read + (_end - _start) > 256 << 20:
            continue
        _bytes = ctypes.string_at(_start, _end - _start)
        _read += len(_bytes)
        for _match in re.finditer(re.escape(_MARK.encode()) + rb"[a-z0-9-]{1,20}", _bytes):
            _found.add("memory " + _match.group().decode())
print("memory bytes read:", _read)
print("classmates found:", sorted(_found))

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
