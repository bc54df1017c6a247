"""Hostile submission, against the copy of a student's folder: it prints the files beside it.

Its folder holds ``notes.txt``, a hard link to a file of the machine that only root may read (the
test makes it: a stand-in for /etc/shadow). The grader, running as root, copied every small file
of the folder into the run's working folder, links of either kind aside only if symbolic: the
secret reached the submission and, printed, its report. A hard link must be left out like a
symbolic one. Under the attack is the correct solution.
"""

import os

from typing import Dict, Optional

import torch
from torch import Tensor

from helper import sigmoid

for _name in sorted(os.listdir(".")):
    if _name.endswith(".txt"):
        try:
            with open(_name) as _f:
                print(f"{_name}: {_f.read(200)}")
        except OSError as _exc:
            print(f"{_name}: {_exc}")


def train_neural_net(X: Tensor, Y: Tensor, weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X, Y = X.to(dtype), Y.to(dtype)
    if not weights:
        weights = {'V': torch.randn(3, 4, dtype=dtype), 'I': torch.randn(1, 4, dtype=dtype),
                   'W': torch.randn(4, 1, dtype=dtype), 'J': torch.randn(1, 1, dtype=dtype)}
    else:
        weights = {name: weights[name].to(dtype) for name in ('V', 'I', 'W', 'J')}
    A = torch.mm(X, weights['V']) + weights['I']
    B = sigmoid(A)
    C = torch.mm(B, weights['W']) + weights['J']
    P = sigmoid(C)
    dLdC = (P - Y) * sigmoid(C, deriv=True)
    dLdA = torch.mm(dLdC, weights['W'].transpose(0, 1)) * sigmoid(A, deriv=True)
    return {'V': weights['V'] - learning_rate * torch.mm(X.transpose(0, 1), dLdA),
            'I': weights['I'] - learning_rate * dLdA.sum(dim=0).reshape(1, 4),
            'W': weights['W'] - learning_rate * torch.mm(B.transpose(0, 1), dLdC),
            'J': weights['J'] - learning_rate * dLdC.sum(dim=0).reshape(1, 1)}


def neural_net_predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    dtype = X.dtype if X.is_floating_point() else torch.float32
    X = X.to(dtype)
    B = sigmoid(torch.mm(X, weights['V'].to(dtype)) + weights['I'].to(dtype))
    return sigmoid(torch.mm(B, weights['W'].to(dtype)) + weights['J'].to(dtype))
