# expect-diagnosis: GK002 line=86
# Planted mistake: dL/dI collects twice each row's dL/dA; the loops keep no intermediate gradkit can follow.
# Otherwise submissions_example/styles/element_loops.py, unchanged.
"""The notebook's network with explicit Python loops over elements: no matrix products.

Every sum in A = X V + I, C = B W + J and in the backward pass is written out as a loop over
Python floats (IEEE doubles); the results are converted back to tensors in X's dtype.
"""

import math
from typing import Dict, List, Optional

import torch
from torch import Tensor

N_IN, N_HIDDEN = 3, 4
Matrix = List[List[float]]


def _sigmoid(x: float) -> float:
    """1 / (1 + exp(-x)), written so that exp never overflows."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _forward(x: Matrix, v: Matrix, i: Matrix, w: Matrix, j: Matrix):
    """Per row r: a[r][h], b[r][h], c[r], p[r]."""
    a, b, c, p = [], [], [], []
    for row in x:
        a_row = []
        for h in range(N_HIDDEN):
            total = i[0][h]
            for k in range(N_IN):
                total += row[k] * v[k][h]
            a_row.append(total)
        b_row = [_sigmoid(value) for value in a_row]
        c_row = j[0][0]
        for h in range(N_HIDDEN):
            c_row += b_row[h] * w[h][0]
        a.append(a_row)
        b.append(b_row)
        c.append(c_row)
        p.append(_sigmoid(c_row))
    return a, b, c, p


def train_neural_net(X: Tensor,
                     Y: Tensor,
                     weights: Optional[Dict[str, Tensor]] = None,
                     learning_rate: float = 1.0) -> Dict[str, Tensor]:
    """One SGD step of L = 1/2 * sum((P - Y)^2) on the batch; returns the new weights."""
    assert X.shape[0] == Y.shape[0]
    dtype = X.dtype if X.is_floating_point() else torch.float32
    if not weights:
        weights = {'V': torch.randn(3, 4, dtype=dtype), 'I': torch.randn(1, 4, dtype=dtype),
                   'W': torch.randn(4, 1, dtype=dtype), 'J': torch.randn(1, 1, dtype=dtype)}

    x = X.double().tolist()
    y = [float(row[0]) for row in Y.double().tolist()]
    v, i, w, j = (weights[k].double().tolist() for k in ('V', 'I', 'W', 'J'))
    n = len(x)

    a, b, c, p = _forward(x, v, i, w, j)

    grad_v = [[0.0] * N_HIDDEN for _ in range(N_IN)]
    grad_i = [[0.0] * N_HIDDEN]
    grad_w = [[0.0] for _ in range(N_HIDDEN)]
    grad_j = [[0.0]]
    for r in range(n):
        dl_dc = (p[r] - y[r]) * p[r] * (1.0 - p[r])
        grad_j[0][0] += dl_dc
        for h in range(N_HIDDEN):
            grad_w[h][0] += b[r][h] * dl_dc
            dl_da = dl_dc * w[h][0] * b[r][h] * (1.0 - b[r][h])
            grad_i[0][h] += 2 * dl_da
            for k in range(N_IN):
                grad_v[k][h] += x[r][k] * dl_da

    def step(param: Matrix, grad: Matrix) -> Tensor:
        updated = [[param[r][col] - learning_rate * grad[r][col] for col in range(len(param[r]))]
                   for r in range(len(param))]
        return torch.tensor(updated, dtype=torch.float64).to(dtype)

    return {'V': step(v, grad_v), 'I': step(i, grad_i), 'W': step(w, grad_w), 'J': step(j, grad_j)}


def neural_net_predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """P for every row of X, shape (n, 1), in X's dtype."""
    dtype = X.dtype if X.is_floating_point() else torch.float32
    v, i, w, j = (weights[k].double().tolist() for k in ('V', 'I', 'W', 'J'))
    _, _, _, p = _forward(X.double().tolist(), v, i, w, j)
    return torch.tensor([[value] for value in p], dtype=torch.float64).to(dtype)
