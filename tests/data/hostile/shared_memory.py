"""Hostile submission (a cross-run channel): leaves data in shared memory for a later run to
find: a System V segment under a fixed key (shmget) and a POSIX one (a file in /dev/shm). Prints
what it could do; then is a correct solution. The test looks for both itself afterwards.
"""

import ctypes
import os
import platform

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SHMGET = {"x86_64": 29, "aarch64": 194}.get(platform.machine(), 29)
_segment = _libc.syscall(ctypes.c_long(_SHMGET), ctypes.c_long(0x6B1D), ctypes.c_long(4096),
                         ctypes.c_long(0o1000 | 0o666))
print("sysv shm created:" if _segment >= 0 else "sysv shm refused: errno",
      _segment if _segment >= 0 else ctypes.get_errno())
try:
    with open("/dev/shm/gradkit-hostile-note", "w") as _f:
        _f.write("left by a run")
    print("posix shm written")
except OSError as exc:
    print("posix shm refused:", exc.strerror)

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
