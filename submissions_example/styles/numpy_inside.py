# gradkit-expect: verdict=pass
# gradkit-expect: mistake=none
"""The notebook's network computed with NumPy float64 arrays, returning torch tensors.

Tensors come in and go out in X's dtype; everything in between is NumPy float64.
"""

from typing import Dict, Optional

import numpy as np
import torch
from torch import Tensor

NAMES = ('V', 'I', 'W', 'J')


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


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

    x, y = _to_numpy(X), _to_numpy(Y)
    v, i, w, j = (_to_numpy(weights[k]) for k in NAMES)

    a = x.dot(v) + i
    b = _sigmoid(a)
    c = b.dot(w) + j
    p = _sigmoid(c)

    dl_dc = (p - y) * p * (1.0 - p)
    dl_dw = b.T.dot(dl_dc)
    dl_dj = dl_dc.sum(axis=0, keepdims=True)
    dl_da = dl_dc.dot(w.T) * b * (1.0 - b)
    dl_dv = x.T.dot(dl_da)
    dl_di = dl_da.sum(axis=0, keepdims=True)

    new = {'V': v - learning_rate * dl_dv, 'I': i - learning_rate * dl_di,
           'W': w - learning_rate * dl_dw, 'J': j - learning_rate * dl_dj}
    return {k: torch.from_numpy(new[k]).to(dtype) for k in NAMES}


def neural_net_predict(X: Tensor, weights: Dict[str, Tensor]) -> Tensor:
    """P for every row of X, shape (n, 1), in X's dtype."""
    dtype = X.dtype if X.is_floating_point() else torch.float32
    v, i, w, j = (_to_numpy(weights[k]) for k in NAMES)
    p = _sigmoid(_sigmoid(_to_numpy(X).dot(v) + i).dot(w) + j)
    return torch.from_numpy(p).to(dtype)
