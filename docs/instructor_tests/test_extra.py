"""An instructor's own checks, added to gradkit's with its pytest fixtures.

Run against one student's file:

    pytest docs/instructor_tests --gradkit-submission path/to/alice.py

(or set ``gradkit_submission = alice.py`` in the ``[pytest]`` section of your ini file). The
student's functions run in gradkit's sandbox; what comes back is plain tensors.
"""

import pytest
import torch

from gradkit.testing import assert_close


def test_gradkit_checks_pass(gradkit_report):
    """Everything gradkit checks itself: fail with its own words for what is wrong."""
    failing = [f"{c.id}: {c.message}" for c in gradkit_report.checks
               if c.status in ("fail", "error")]
    assert not failing, "\n".join(failing)


def test_one_step_on_a_batch_of_my_own(gradkit_student, gradkit_reference):
    """One SGD step on a 6-row batch the course never shows, at an unusual learning rate."""
    g = torch.Generator().manual_seed(2024)
    X = torch.rand(6, 3, generator=g, dtype=torch.float64)
    Y = torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0], [0.0]], dtype=torch.float64)
    weights = gradkit_reference.weights(seed=7)
    got = gradkit_student.train(X, Y, weights, learning_rate=0.3)
    assert_close(got, gradkit_reference.train(X, Y, weights, 0.3), quantity="weights after one step")


def test_prediction_is_a_probability(gradkit_student, gradkit_reference):
    X = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [10.0, -10.0, 3.0]], dtype=torch.float64)
    P = gradkit_student.predict(X, gradkit_reference.weights(seed=3))
    assert P.shape == (3, 1)
    assert bool(((P > 0) & (P < 1)).all()), f"predictions outside (0, 1): {P.flatten().tolist()}"


@pytest.mark.gradkit_cases(kind="predict")
def test_predict_on_gradkit_cases(gradkit_case, gradkit_student, gradkit_reference):
    """gradkit's own prediction cases, one test each, compared with gradkit's tolerances."""
    P = gradkit_student.predict(gradkit_case.X, gradkit_case.weights)
    assert_close(P, gradkit_reference.predict(gradkit_case.X, gradkit_case.weights),
                 quantity=f"P on {gradkit_case.id}")
