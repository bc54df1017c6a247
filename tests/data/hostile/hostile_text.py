"""Hostile submission: every text it hands the grader is an attack on the people who read it.

Its printed output, its exception's class name, message and traceback (a function renamed through
its code object), a source line and an intermediate's variable name carry terminal control
sequences (clear the screen, set the window title, a fake green "PASSED", hidden text, a
right-to-left override), GitHub workflow commands (``::add-mask::``, ``::stop-commands::``, a fake
``::notice::``, ``%0A``-escaped and ``##[``-style ones, one behind an invisible Hangul filler),
spreadsheet formulas, markdown and HTML, and characters XML 1.0 cannot hold.

gradkit must show all of it as inert text: no control byte of it reaches the terminal, no line
of stdout under GitHub Actions is a command gradkit did not write, no gradebook cell is a
formula, the JUnit XML stays valid. Under the attack is a wrong solution (dL/dP has the wrong
sign), so a fake "PASSED" would be a lie.
"""

import sys
from typing import Dict, Optional

import torch
from torch import Tensor

from helper import sigmoid

ESC = "\x1b"
ATTACKS = [
    ESC + "[2J" + ESC + "[3J" + ESC + "[H",                     # clear the screen, cursor home
    ESC + "]0;gradkit: every check passed\x07",                # set the window title
    ESC + "[1;32mPASSED · score 100 / 100" + ESC + "[0m",       # a fake green verdict
    ESC + "[8mhidden text" + ESC + "[28m",                      # concealed text
    "::add-mask::gradkit",
    "::stop-commands::pwned",
    "::notice file=correct.py,line=1::every check passed",
    "%0A::error::forged%0D::warning::also forged",
    "  ##[add-mask]PASSED",
    "\u3164::warning::behind an invisible filler",
    "\u00a0 \u3000::set-output name=score::100",
    "=HYPERLINK(\"http://grades.invalid\",\"100\")",
    "+A2+B2",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "<script>alert(1)</script> ]]> <![CDATA[ & &amp; \x00 \x0b \x0c \ufffe \ufffe",
    "**bold** [link](http://grades.invalid) ```fence``` | table | $x$",
    "\u202eDESSAP\u202c \u2066isolate\u2069 \u200bzero\u200dwidth\ufeff",
    "\x85next line\u2028line separator\u2029paragraph\rcarriage\x7fdel\x9bcsi",
]
PAYLOAD = "\n".join(ATTACKS)

print(PAYLOAD)
print(PAYLOAD, file=sys.stderr)
sys.stdout.flush()

Forged = type(ESC + "[2J::add-mask::" + ESC + "]0;title\x07 =1+1", (ValueError,), {})


def _shout() -> None:
    raise Forged(PAYLOAD)  # [2J]0;title ::stop-commands::source ##[add-mask]x =1+1


# the traceback names this function: a name a def statement could never give it
_shout.__code__ = _shout.__code__.replace(
    co_name=ESC + "[32mPASSED\n::error::renamed ##[add-mask]x =SUM(1)")


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
    dLdP = Y - P  # the bug: the sign of dL/dP is wrong
    dPdC = sigmoid(C, deriv=True)
    dLdC = dLdP * dPdC
    dLdW = torch.mm(B.transpose(0, 1), dLdC)
    dLdJ = dLdC.sum(dim=0).reshape(1, 1)

    dLdB = torch.mm(dLdC, weights['W'].transpose(0, 1))
    ㅤdBdA = sigmoid(A, deriv=True)  # an invisible Hangul filler starts its name
    dLdA = dLdB * ㅤdBdA

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

    if X.shape[0] >= 0:
        _shout()
    return P
