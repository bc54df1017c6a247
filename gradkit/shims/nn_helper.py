"""The course notebook's ``nn_helper`` module, as gradkit provides it to a submission.

gradkit appends this folder to a submission's ``sys.path``, so ``from nn_helper import ...`` in a
student's file finds these names:

- ``generate_x_y``: the notebook's toy data set, exactly as the original built it (it lives in
  ``reference.toy_data``; in the sandbox, its source arrives with the request).
- ``train_and_display`` and ``accuracy_binary``: NumPy helpers for a bias-free two-layer sigmoid
  network from an older version of the course. The notebook imports them but never calls them; these
  are small, working versions, not copies of the originals.

Importing this module calls ``random.seed(1104)``, as the original did.
"""

import random

import numpy as np

try:  # in the sandbox: built by the harness from the grader's copy (the reference stays hidden)
    from gradkit.sandbox.toy_data import generate_x_y
except ImportError:  # anywhere else
    from reference.toy_data import generate_x_y

__all__ = ["generate_x_y", "train_and_display", "accuracy_binary"]

random.seed(1104)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _predict(X: np.ndarray, V: np.ndarray, W: np.ndarray) -> np.ndarray:
    """P = sigmoid(sigmoid(X V) W): the bias-free network's predictions, one row per example."""
    return _sigmoid(_sigmoid(X @ V) @ W)


def accuracy_binary(X, Y, V, W) -> float:
    """The fraction of rows whose prediction, thresholded at 0.5, equals the 0/1 label in Y.

    X is (n, k), Y (n, 1), V (k, h), W (h, 1); NumPy arrays or CPU tensors.
    """
    X, Y, V, W = (np.asarray(a, dtype=np.float64) for a in (X, Y, V, W))
    predicted = (_predict(X, V, W) > 0.5).astype(np.float64)
    return float(np.mean(predicted == Y.reshape(predicted.shape)))


def train_and_display(X, Y, num_epochs: int = 1000, num_hidden: int = 8):
    """Train the bias-free network by full-batch gradient descent; print progress; return (V, W).

    Loss 1/2 * sum((p - y)^2), learning rate 1. The starting weights are drawn from NumPy's
    generator seeded from Python's ``random`` module, so ``random.seed`` makes a run repeatable.
    Prints the loss and accuracy ten times over the run.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64).reshape(-1, 1)
    rng = np.random.default_rng(random.getrandbits(64))
    V = rng.standard_normal((X.shape[1], num_hidden))
    W = rng.standard_normal((num_hidden, 1))
    learning_rate = 1.0
    report_every = max(1, num_epochs // 10)
    for epoch in range(1, num_epochs + 1):
        B = _sigmoid(X @ V)
        P = _sigmoid(B @ W)
        dLdC = (P - Y) * P * (1.0 - P)
        dLdW = B.T @ dLdC
        dLdV = X.T @ ((dLdC @ W.T) * B * (1.0 - B))
        W = W - learning_rate * dLdW
        V = V - learning_rate * dLdV
        if epoch % report_every == 0 or epoch == num_epochs:
            loss = 0.5 * float(np.sum((_predict(X, V, W) - Y) ** 2))
            print(
                f"epoch {epoch:>{len(str(num_epochs))}}: loss {loss:.4f}, "
                f"accuracy {accuracy_binary(X, Y, V, W):.2f}"
            )
    return V, W
