"""A catalogue of known mistakes: each a stable code, words for a student, and a matcher.

An entry's matcher is an alternative computation: the gradients (or predictions) a student with
that one mistake would produce, built from the reference's float64 intermediates for each call's
own inputs, or read from a probe. The student's numbers are matched against it within the
tolerance the grader used for that call. An entry is reported only when it matches on every call
where it can be told apart from the reference (and the reference itself does not match there):
an unknown mistake never gets a confident wrong label (``gradkit.diagnosis.diagnose`` gives it the
localisation and the fitted factor instead).

``ENTRIES`` maps each code to its ``Entry``; ``explain(entry)`` is what ``gradkit explain CODE``
prints. Codes are stable: GK0xx unknown mistakes (localised and fitted), GK1xx the backward pass,
GK2xx the update, GK3xx loss conventions, GK4xx the forward pass and prediction, GK5xx behaviour.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from gradkit.cases import Case
from gradkit.compare import all_finite
from gradkit.expected import scaled
from gradkit.grading import weights_of
from gradkit.diagnosis.chain import Chain, rerun
from gradkit.diagnosis.intermediates import (NOTEBOOK_CHAIN, Found, Localisation, SourceIndex,
                                             StepObservation, aliases, allowance, close,
                                             distinct, fit_factor, holds, normalise, snap,
                                             within)
from gradkit.loader import Submission
from gradkit.plan import CallResult
from gradkit.report import Tolerance
from gradkit.tolerances import Tolerances
from reference import network
from reference.assignment import FAMILY_CONVENTIONS
from reference.steps import derivative

F64 = torch.float64


@dataclass(frozen=True)
class Entry:
    """One known mistake."""

    code: str  # stable, e.g. "GK101"
    slug: str  # stable, e.g. "no_output_sigmoid_derivative"
    title: str
    message: str  # a template for the student, filled from the match's words
    quantities: tuple[str, ...]  # what it can explain
    explanation: str  # the long form, for `gradkit explain CODE`


def _entry(code: str, slug: str, title: str, message: str, quantities: tuple[str, ...],
           explanation: str) -> Entry:
    return Entry(code, slug, title, message, quantities, textwrap.dedent(explanation).strip())


_GRADIENTS = ("dL/dV", "dL/dI", "dL/dW", "dL/dJ")

ENTRIES: dict[str, Entry] = {e.code: e for e in (
    _entry("GK001", "wrong_step", "A wrong step in the backward pass",
           "{variable} does not follow from your own {inputs}: it should be {expression}"
           "{factor_words}. The mistake is in this step{span_words}; the wrong {params} "
           "follow{s} from it.",
           ("dLdP", "dPdC", "dLdC", "dLdW", "dLdJ", "dLdB", "dBdA", "dLdA", "dLdV", "dLdI",
            "update"),
           """
           gradkit followed the backward pass step by step, recomputing each step from YOUR OWN
           values of its inputs (is your dLdW equal to B.T @ dLdC for your dLdC?). The step named
           here is the first whose value does not follow from its inputs; the steps after it may
           be right, and are wrong only because they start from this one. No known mistake
           matched it exactly, so gradkit does not guess a name for it; when the wrong value is a
           constant multiple of the right one, the factor is given (-1 is a sign, 2 or 1/n a
           scale, 1/learning_rate a step that ignores the learning rate).

           If the step lists other steps it "may include", your function did not keep those
           values in variables gradkit could recognise, so the mistake may be in any of them.
           """),
    _entry("GK002", "wrong_gradient", "A wrong gradient (seen from the parameter gradients)",
           "The gradient{s} of {params} {is_are} wrong{factor_words}. {suspects}",
           _GRADIENTS,
           """
           gradkit could not follow your backward pass step by step (it found none of the
           notebook's intermediates dLdP ... dLdI among your variables, or those it found are
           right), so it localises the mistake from which parameter gradients are wrong:

           - all four wrong: the output layer (dLdP, dPdC, dLdC) or the forward pass;
           - V and I wrong, W and J right: the hidden layer (dLdB, dBdA, dLdA);
           - one parameter wrong: that parameter's own last step (dLdV = X.T @ dLdA,
             dLdI = dLdA summed over rows, dLdW = B.T @ dLdC, dLdJ = dLdC summed over rows).

           Naming your variables as the notebook does (dLdP, dPdC, dLdC, ...) lets gradkit point
           at the exact line.
           """),
    _entry("GK003", "wrong_prediction", "neural_net_predict returns something else",
           "neural_net_predict does not return P = sigmoid(sigmoid(X @ V + I) @ W + J)"
           "{factor_words}.",
           ("P",),
           """
           neural_net_predict must run the same forward pass as train_neural_net, on the weights
           it is given: A = X @ weights['V'] + weights['I'], B = sigmoid(A),
           C = B @ weights['W'] + weights['J'], and return P = sigmoid(C), one row per row of X.
           No known mistake matched the numbers it returned.
           """),
    _entry("GK601", "one_edit", "A step is one edit away from the documented formula",
           "{variable} is {student} on every call, where it should be {documented}: {words}."
           "{below} The mistake is in this step; the wrong {params} follow{s} from it.",
           ("dLdP", "dPdC", "dLdC", "dLdW", "dLdJ", "dLdB", "dBdA", "dLdA", "dLdV", "dLdI",
            "update"),
           """
           No known mistake matched, so gradkit searched for what the wrong value IS: it took
           the step that does not follow from your own inputs (see GK001), and tried the edits
           students make to that step's formula: another operand of the same shape (one of
           your own intermediates, the forward pass, the weights before or after the update),
           a factor or term left out (an activation's derivative, the bias, the learning rate),
           a derivative written another way (at the activation, without deriv=True, as 1 - P,
           as tanh's 1 - B²), a mean for a sum, a reshape for a transpose, a clip at a bound, a
           multiple of the weight added to the update (weight decay). Each was computed from
           YOUR values on every call gradkit made; the one named matched all of them within
           the call's tolerance. The evidence gives its kind, your expression, the documented
           one, and any fitted number (a bound, a decay).
           """),
    _entry("GK602", "several_steps", "Several SGD steps in one call",
           "train_neural_net takes {steps} on every call instead of one: its result equals "
           "{how}. Do one forward pass, one backward pass and one update per call; the "
           "caller's loop does the rest.",
           (*_GRADIENTS, "update"),
           """
           train_neural_net is one step of SGD: one forward pass over the whole batch, one
           backward pass, one update. gradkit repeated the reference's step on each call's
           inputs (twice or three times on the same batch, or once per row of the batch, in
           order) and found the weights you returned among them on every call. A loop inside
           the function (for _ in range(...), or for each row) does that. A single-row call is
           right either way, which is why some cases pass.
           """),
    _entry("GK603", "not_updated", "A weight comes back as it was given",
           "{what} {comes_come} back exactly as {it_they} {was_were} given: {why}. {fix}",
           (*_GRADIENTS, "update"),
           """
           After one SGD step every weight has moved by -learning_rate times its gradient.
           gradkit compared each weight you returned with the one it passed in: equal on every
           call where the step should move it means the update is never stored. Usually the
           new value is computed but not assigned (w - learning_rate * g on a line of its own),
           assigned to another name or dict than the one returned, or the update line is
           missing.
           """),
    _entry("GK610", "init_draws", "weights=None draws other initial weights",
           "With weights=None, train_neural_net draws {what}, not torch.randn(3, 4), (1, 4), "
           "(4, 1), (1, 1) for V, I, W, J in that order: the weights it returned are one SGD "
           "step from those draws on every check. Draw V, I, W, J with torch.randn in the "
           "notebook's order so seeded runs reproduce.",
           ("init",),
           """
           The notebook draws V = torch.randn(3, 4), I = torch.randn(1, 4), W =
           torch.randn(4, 1), J = torch.randn(1, 1), in that order, after
           torch.manual_seed(70318). gradkit seeded torch the same way, called your function
           with weights=None, and compared the weights it returned with one SGD step from
           other draws: the same draws in another order, in another shape order (randn(4, 3).T),
           from another distribution (torch.rand, zeros, ones), or scaled. The draws named here
           are the ones that match.
           """),
    _entry("GK620", "predict_ignores_weights", "neural_net_predict ignores its weights argument",
           "neural_net_predict returns the same predictions whatever weights it is given: "
           "moving any of V, I, W, J changes nothing{where}. Compute P from the weights "
           "argument.",
           ("P",),
           """
           gradkit calls neural_net_predict on the same X with each weight moved in turn (every
           entry by 0.5). The prediction of a network that uses its weights changes; yours did
           not for any of them, so it reads its weights from somewhere else: module-level
           weights (trained when the file loads, or left from a notebook cell), or weights it
           draws or trains itself.
           """),
    _entry("GK621", "predict_rounds", "neural_net_predict returns classes, not probabilities",
           "neural_net_predict returns {what} instead of P = sigmoid(C), the probability. "
           "Return P itself; compare it with 0.5 only where a class is needed.",
           ("P",),
           """
           The prediction the course checks is the network's output P = sigmoid(C), a number
           between 0 and 1. Rounding it, or thresholding it at 0.5, turns it into a class label:
           useful for accuracy, but not the function's contract, and the training loop's
           cross-entropy needs the probability.
           """),
    _entry("GK622", "predict_one_edit", "neural_net_predict is one edit away from the forward pass",
           "neural_net_predict returns {student} on every call, where it should return "
           "sigmoid(sigmoid(X @ V + I) @ W + J): {words}.",
           ("P",),
           """
           gradkit compared your predictions with forward passes that differ from the
           notebook's by one edit (a sigmoid left out, a bias left out or subtracted, a weight
           used in place of another) and found the one that matches on every call.
           """),
    _entry("GK101", "no_output_sigmoid_derivative", "The output sigmoid's derivative is missing",
           "dL/dC is dL/dP alone: it should be dL/dP * dP/dC, with dP/dC = sigmoid'(C) "
           "(sigmoid(C, deriv=True)). Every gradient misses this factor.",
           _GRADIENTS,
           """
           The chain rule through the output sigmoid P = sigmoid(C) multiplies by its derivative:
           dL/dC = dL/dP * dP/dC, where dP/dC = sigmoid(C) * (1 - sigmoid(C)) =
           sigmoid(C, deriv=True) with the notebook's helper. Leaving it out (dLdC = dLdP) makes
           dL/dW, dL/dJ and, through dL/dB, dL/dV and dL/dI all too large by that factor, which
           is at most 1/4 and near 0 where the output saturates.

           gradkit recognised it because your gradients equal, on every case, the ones computed
           with dLdC = dLdP.
           """),
    _entry("GK102", "no_hidden_sigmoid_derivative", "The hidden sigmoid's derivative is missing",
           "dL/dA is dL/dB alone: it should be dL/dB * dB/dA, with dB/dA = sigmoid'(A) "
           "(sigmoid(A, deriv=True)). The gradients of V and I miss this factor.",
           ("dL/dV", "dL/dI"),
           """
           The hidden layer is B = sigmoid(A), so going back through it multiplies by its
           derivative: dL/dA = dL/dB * dB/dA with dB/dA = sigmoid(A, deriv=True). Without it
           (dLdA = dLdB), dL/dV = X.T @ dL/dA and dL/dI are wrong; dL/dW and dL/dJ, which come
           before the hidden layer in the backward pass, are unaffected.

           gradkit recognised it because your gradients of V and I equal, on every case, the ones
           computed with dLdA = dLdB.
           """),
    _entry("GK103", "sigmoid_derivative_of_activation",
           "A sigmoid's derivative is taken at its output (the sigmoid applied twice)",
           "{derivative} {is_are} computed at the sigmoid's output instead of its input: "
           "{wrong} instead of {right}. The output is already the sigmoid of the input, so this "
           "applies the sigmoid twice. Use {fix}.",
           _GRADIENTS,
           """
           The notebook's helper sigmoid(x, deriv=True) returns sigmoid(x) * (1 - sigmoid(x)):
           it takes the pre-activation x. dB/dA is sigmoid(A, deriv=True) (or B * (1 - B), since
           B = sigmoid(A)), and dP/dC is sigmoid(C, deriv=True) (or P * (1 - P)). Passing the
           activation, sigmoid(B, deriv=True), computes sigmoid(sigmoid(A)) * (1 - ...): the
           sigmoid applied twice, a number between 0.19 and 0.25 that is not the derivative.

           gradkit recognised it because your gradients equal, on every case, the ones computed
           with the derivative taken at the activation.
           """),
    _entry("GK104", "sign_error_dLdP", "The loss derivative has the wrong sign",
           "{variable} has the wrong sign: it is -({expression}) where it should be "
           "{expression}. The derivative of 1/2 (P - Y)² is P - Y, not Y - P; with the sign "
           "flipped every gradient points uphill.",
           _GRADIENTS,
           """
           For L = 1/2 · Σ (p - y)², dL/dP = P - Y (the notebook writes -1.0 * (Y - P)). Writing
           Y - P flips the sign of every gradient after it, so the update w - learning_rate *
           dL/dw moves each weight uphill and training diverges from the labels.

           gradkit tells this apart from gradient ascent (GK201), which gives the same updates,
           by following your intermediates: here the first step with the flipped sign is in the
           backward pass, and your update subtracts your gradients as it should.
           """),
    _entry("GK105", "bias_not_summed", "A bias gradient is not summed over the batch",
           "{quantities} {is_are} not summed over the rows of the batch, so with n rows the "
           "update makes {biases} n rows tall (shape {shapes}). Sum over the rows: {fix}.",
           ("dL/dI", "dL/dJ"),
           """
           A bias is added to every row of the batch, so its gradient collects every row's
           contribution: dL/dJ = dLdC.sum(dim=0, keepdim=True) (shape (1, 1)) and
           dL/dI = dLdA.sum(dim=0, keepdim=True) (shape (1, 4)). Using the per-row dLdC or dLdA
           is right for a single row, but for n rows torch broadcasts the update
           J - learning_rate * dLdC to shape (n, 1), and the returned bias has the wrong shape.
           """),
    _entry("GK106", "bias_mean_not_sum", "A bias gradient is averaged instead of summed",
           "{quantities} {is_are} averaged over the rows of the batch instead of summed, so "
           "{it_they} {is_are} n times too small for n rows (right only for a single row). "
           "Use {fix}.",
           ("dL/dI", "dL/dJ"),
           """
           The notebook's loss is a sum over the batch, so every gradient, the biases' included,
           is a sum over the rows: dLdC.sum(dim=0) and dLdA.sum(dim=0). A mean divides the bias
           gradients (only them) by the batch size, which is invisible on one row. If you meant
           a batch-mean loss, every gradient would need the 1/n (see GK302), not just the
           biases'.
           """),
    _entry("GK107", "bias_from_dLdB", "The hidden bias gradient is taken from dL/dB",
           "{variable} is summed from dL/dB instead of dL/dA, so it misses the hidden sigmoid's "
           "derivative dB/dA. Use dLdA.sum(dim=0, keepdim=True).",
           ("dL/dI",),
           """
           I is added before the hidden sigmoid (A = X @ V + I, B = sigmoid(A)), so its gradient
           is the gradient with respect to A, summed over the rows: dL/dI = dLdA.sum(dim=0).
           dL/dB is one step too early: it is the gradient with respect to the sigmoid's output
           and lacks the factor dB/dA = sigmoid'(A).
           """),
    _entry("GK108", "transposed_product", "A matrix product with its operands transposed",
           "{quantity} has shape {shape}, the transpose of {weight}'s {weight_shape}: the "
           "product's operands are in the wrong order. Compute it as {expression}.",
           ("dL/dV", "dL/dW"),
           """
           A weight's gradient has the weight's shape. With X of shape (n, 3) and dLdA of shape
           (n, 4), dL/dV = X.T @ dLdA is (3, 4) like V; dLdA.T @ X is (4, 3), its transpose.
           Likewise dL/dW = B.T @ dLdC is (4, 1) like W, while dLdC.T @ B is (1, 4). torch then
           either refuses the update (shapes (3, 4) and (4, 3) do not broadcast) or, for W,
           silently broadcasts W - learning_rate * dLdW to a (4, 4) matrix.
           """),
    _entry("GK201", "gradient_ascent", "The update adds the gradient (gradient ascent)",
           "The update adds learning_rate times the gradient: it should be "
           "w - learning_rate * dL/dw. Your gradients are right, but each step climbs the loss.",
           (*_GRADIENTS, "update"),
           """
           Gradient descent moves each weight against its gradient: w <- w - learning_rate *
           dL/dw. With + the loss grows at every step. gradkit checked that the gradients you
           computed (your dLdV, dLdI, dLdW, dLdJ) are right, and that your update moved the
           weights by exactly the opposite of what it should: the sign is in the update, not in
           the backward pass (compare GK104).
           """),
    _entry("GK202", "learning_rate_ignored", "The update ignores the learning_rate argument",
           "The update moves the weights by {lr0} × the gradient whatever learning_rate is "
           "passed{hardcoded}, so the step is right only when learning_rate is {lr0}. Use the "
           "argument: w - learning_rate * dL/dw.",
           (*_GRADIENTS, "update"),
           """
           gradkit calls train_neural_net with learning rates 0.01, 1 and 4 on the same batch.
           Your updates moved the weights by the same multiple of the right gradient each time,
           so the gradient they imply, (w_before - w_after) / learning_rate, changes with the
           learning rate (by a factor of 1/learning_rate). Usually the learning rate is
           overwritten inside the function (learning_rate = 0.01, copied from the notebook) or
           left out of the update.
           """),
    _entry("GK203", "weight_updated_before_use", "W is updated before the backward pass uses it",
           "W is updated before dL/dB is computed, so dL/dB = dL/dC @ W.T uses the new W and the "
           "gradients of V and I are wrong. Compute every gradient first, then update the "
           "weights.",
           ("dL/dV", "dL/dI"),
           """
           Every gradient of one step is taken at the weights the forward pass used. dL/dB =
           dL/dC @ W.T needs the W of the forward pass; updating W first (W = W - learning_rate *
           dLdW, or in place with -= or sub_) makes dL/dB, dL/dA, dL/dV and dL/dI those of a
           network that does not exist. The error grows with the learning rate. Compute all four
           gradients, then update all four weights.
           """),
    _entry("GK301", "sum_convention",
           "Every gradient is twice the documented one (the (p - y)² loss without the 1/2)",
           "Every gradient is 2 × the documented one: you differentiated the notebook's mse_loss "
           "(p - y)² without the 1/2. The course's gradients are those of 1/2 · Σ(p - y)² "
           "(dL/dP = P - Y). This is a convention, not a bug in one place: drop the factor 2"
           "{accept}.",
           _GRADIENTS,
           """
           The notebook's mse_loss returns (p - y)², but its hand-written gradients start from
           dL/dP = P - Y, the derivative of 1/2 · (p - y)². Differentiating (p - y)² itself gives
           2 · (P - Y), and every gradient after it is twice as large: mathematically right for
           that loss, but not the documented answer, and it doubles the effective learning rate.

           A factor shared by every parameter is a convention, not a mistake in one place. An
           instructor can accept it: `gradkit check --accept-convention sum`, or
           accepted_conventions=("sum",) in the assignment description.
           """),
    _entry("GK302", "batch_mean_convention", "Every gradient is divided by the batch size",
           "Every gradient is {factor_words} the documented one: {what}. The course sums the "
           "loss over the batch (1/2 · Σ(p - y)², dL/dP = P - Y). This is a convention, not a "
           "bug in one place: do not divide by the batch size{accept}.",
           _GRADIENTS,
           """
           The documented loss is a sum over the rows of the batch, so gradients grow with the
           batch size. Dividing dL/dP by n (a batch-mean loss, 1/2 · mean (p - y)²; or
           mean (p - y)², which also drops the 1/2 and gives 2/n) scales every gradient by the
           same factor. It is right on a single row and n times too small on n rows.

           A factor shared by every parameter is a convention, not a mistake in one place. An
           instructor can accept it: `gradkit check --accept-convention half_mean` (or mean), or
           accepted_conventions in the assignment description.
           """),
    _entry("GK401", "weight_ignored_by_forward", "The forward pass does not use a weight",
           "{functions} {does_do} not use weights['{param}']: moving it changes nothing. {cause}",
           (*_GRADIENTS, "P"),
           """
           gradkit moves one weight at a time (every entry of weights['I'], say, by 0.5) and
           calls your functions again: if neither the prediction nor the gradients change, the
           forward pass does not read that weight. The usual cause is the course notebook's own
           bug: train_neural_net and neural_net_predict add the notebook-level globals I and J,
           left over from earlier cells, instead of weights['I'] and weights['J'], so the
           learned biases are updated but never used. Loaded alone, without those globals, such
           a file raises NameError. gradkit names the global when your results equal the
           reference's computed with it.
           """),
    _entry("GK402", "predict_returns_C", "neural_net_predict returns the pre-activation C",
           "neural_net_predict returns the pre-activation C = B @ W + J instead of "
           "P = sigmoid(C). Return sigmoid(C).",
           ("P",),
           """
           The network's prediction is the output sigmoid's value P = sigmoid(C), a probability
           between 0 and 1. Returning C, the number that goes into the sigmoid, gives values of
           any sign, which neither the loss nor the training loop's cross-entropy expects.
           """),
    _entry("GK501", "inputs_mutated", "An argument is changed in place",
           "{function} changes {names} in place, so the caller's tensors are different after the "
           "call{consequence}. Work on a copy ({copy}).",
           ("X", "Y", "weights", *_GRADIENTS),
           """
           A function should not change the tensors it is given unless that is its job: the
           caller (gradkit, or the notebook's training loop) uses X and Y again. X /= ...,
           X.div_(...), X[...] = ... and X.clamp_(...) all write into the caller's tensor, and so
           does an operation on a tensor that .to(dtype) returned unchanged (it returns the
           same tensor when the dtype already matches). Clone first: X = X.clone().

           Updating the caller's weight tensors in place (weights['V'] -= ...) is allowed, as
           long as they end up holding the weights you return; changing them into anything
           else is reported here.
           """),
    _entry("GK502", "hidden_state", "Results depend on earlier calls (hidden state)",
           "The same call, made twice on fresh copies of the same inputs, returned different "
           "results: train_neural_net keeps state between calls. Compute everything from the "
           "arguments alone.",
           (*_GRADIENTS, "update"),
           """
           gradkit calls train_neural_net twice with identical, freshly copied inputs; a
           function of its arguments returns the same weights both times. Different results
           mean something survives between calls: a global counter or cache, a module-level
           tensor updated in place, a default argument that is mutated, or a weight kept from
           the previous call. Since every later call then depends on the calls before it,
           gradkit cannot say more about which gradient is wrong.
           """),
    _entry("GK503", "non_finite", "NaN or infinite values",
           "{what} {has_have} NaN or infinite values where the reference's are finite{where}.",
           (*_GRADIENTS, "P"),
           """
           A NaN or an infinity usually comes from a division by something that can be zero
           (a sum of labels, a batch statistic, 1 - P when P rounds to 1), a log of 0, or
           exp of a large number. Once one appears it spreads to every value computed from it.
           gradkit names the first step of your backward pass whose value is not finite while
           its inputs are.
           """),
)}


#: The kind of edit each catalogue entry is a named instance of (``EDIT_KINDS``), for a
#: report's reader and the diagnosis benchmark; entries that are not an edit of a formula
#: (an argument changed in place, hidden state, non-finite values) have none.
EDIT_KINDS = ("sign", "factor", "learning_rate", "operand", "transpose", "reduction",
              "derivative", "drop_factor", "activation", "operation", "order", "clip", "decay",
              "missing", "repeated", "init", "threshold")
CODE_EDITS: dict[str, str] = {
    "GK101": "derivative", "GK102": "derivative", "GK103": "derivative", "GK104": "sign",
    "GK105": "reduction", "GK106": "reduction", "GK107": "operand", "GK108": "transpose",
    "GK201": "sign", "GK202": "learning_rate", "GK203": "order", "GK301": "factor",
    "GK302": "factor", "GK401": "operand", "GK402": "activation",
}


#: Each entry for any assignment file, in the terms of its layer k: Z_k = A_{k-1} @ W_k + b_k,
#: A_k = f_k(Z_k) (A_0 = X, the last A the prediction P), and the backward pass dL/dZ_k =
#: dL/dA_k * f_k'(Z_k), dL/dW_k = A_{k-1}.T @ dL/dZ_k, dL/db_k = dL/dZ_k summed over the rows,
#: dL/dA_{k-1} = dL/dZ_k @ W_k.T; each name is the one the assignment gives (its [names]).
GENERAL: dict[str, str] = {
    "GK001": "A step of the backward pass does not follow from your own values of its inputs "
             "(each step is recomputed from them); the steps after it may be right. When the "
             "wrong value is a constant multiple of the right one, the factor is given.",
    "GK002": "No intermediate could be followed, so the mistake is placed from which parameter "
             "gradients are wrong: all of them, the output layer or the forward pass; those of "
             "layers 1..k only, layer k's dL/dA_k, f_k'(Z_k) or dL/dZ_k; one alone, its own "
             "step.",
    "GK003": "The prediction function must run the forward pass on the weights it is given "
             "and return the output layer's activation, one row per row of X.",
    "GK101": "The output layer's activation derivative is left out: dL/dZ_L = dL/dA_L without "
             "f_L'(Z_L). Every gradient misses the factor.",
    "GK102": "A hidden layer's activation derivative is left out: dL/dZ_k = dL/dA_k without "
             "f_k'(Z_k) (tanh: 1 - tanh(Z_k)**2; ReLU: (Z_k > 0); sigmoid: "
             "sigmoid(Z_k) * (1 - sigmoid(Z_k))). The gradients of layers 1..k miss the "
             "factor; the layers above are right.",
    "GK103": "An activation's derivative is taken at the activation A_k instead of the "
             "pre-activation Z_k (f'(A_k) for f'(Z_k)): the activation applied twice.",
    "GK104": "A step of the backward pass has its sign flipped (Y - P for P - Y); every "
             "gradient after it points uphill, while the update subtracts them as it should "
             "(compare GK201).",
    "GK105": "A bias gradient is the per-row dL/dZ_k, not summed over the rows: right for one "
             "row, and for n rows the update makes b_k n rows tall.",
    "GK106": "A bias gradient is the mean of dL/dZ_k over the rows instead of its sum: n times "
             "too small for n rows (a batch-mean loss would divide every gradient, GK302).",
    "GK107": "A hidden layer's bias gradient is summed from dL/dA_k, before its activation's "
             "derivative, instead of from dL/dZ_k.",
    "GK108": "A weight's gradient is dL/dZ_k.T @ A_{k-1}, the transpose of A_{k-1}.T @ "
             "dL/dZ_k: it has the weight's shape reversed.",
    "GK201": "The update adds the gradient (w + learning_rate * dL/dw): the gradients are "
             "right, the step climbs the loss.",
    "GK202": "The update moves the weights by the same multiple of the gradient whatever "
             "learning_rate is passed.",
    "GK203": "W_k is updated before dL/dA_{k-1} = dL/dZ_k @ W_k.T is computed, so the layers "
             "below take their gradients from the new W_k.",
    "GK301": "Every gradient is the documented one times a constant (the loss with or without "
             "its 1/2): a convention an instructor can accept.",
    "GK302": "Every gradient is the documented one times a function of the batch size (a mean "
             "for a sum, or a sum for a mean): a convention an instructor can accept.",
    "GK401": "The forward pass does not read one of the weights it is given: moving it changes "
             "nothing (a module-level global used in its place, or the term left out).",
    "GK402": "The prediction function returns the output layer's pre-activation Z_L instead of "
             "A_L = f_L(Z_L).",
    "GK501": "An argument (X, Y, or a weight tensor) is changed in place, so the caller's "
             "tensors differ after the call.",
    "GK502": "The same call made twice on fresh copies of the same inputs returns different "
             "results: state is kept between calls.",
    "GK503": "A value is NaN or infinite where the reference's is finite; the first step of "
             "the backward pass to go non-finite is named.",
    "GK601": "The wrong step equals its documented formula with one edit (another operand of "
             "the same shape, a factor left out or added, a derivative written another way, a "
             "mean for a sum, a clip, a weight decay), on every call.",
    "GK602": "The training function takes several SGD steps on every call (twice on the batch, "
             "or row by row) instead of one.",
    "GK603": "A weight comes back exactly as it was given: its update is never stored.",
    "GK610": "With weights=None the weights drawn are not torch.randn of each parameter's "
             "shape in the file's order (weight, then bias, layer by layer): another order, "
             "shape order, distribution or scale.",
    "GK620": "The prediction function returns the same predictions whatever weights it is "
             "given.",
    "GK621": "The prediction function returns classes (its sigmoid output rounded or "
             "thresholded) instead of the probability.",
    "GK622": "The prediction is the forward pass with one edit at one layer: a hidden "
             "activation left out, a bias subtracted or left out.",
}


def explanation(entry: Entry, chain: Optional[Chain] = None) -> str:
    """An entry's long explanation for a report of ``chain``'s assignment: the notebook's words
    for the notebook, the words for any assignment (``GENERAL``) for another."""
    if chain is None or chain.is_notebook:
        return entry.explanation
    return GENERAL.get(entry.code, entry.explanation)


def explain(entry: Entry) -> str:
    """The long explanation of an entry, as `gradkit explain CODE` prints it: the notebook's
    words, then the same for any assignment file."""
    quantities = ", ".join(entry.quantities)
    general = GENERAL.get(entry.code)
    general = "" if general is None else "\n\nFor any assignment file (layer k):\n" + \
        textwrap.fill(general, 95)
    return (f"{entry.code} {entry.slug}: {entry.title}\n\n{entry.explanation}{general}\n\n"
            f"Explains: {quantities} (in the notebook's names)\n")


# --------------------------------------------------------------------------------------------
# What a matcher reads
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ForwardView:
    """What a prediction is judged against: X, the output layer's pre-activation C and the
    prediction P (the notebook's ``network.Forward`` has these too)."""

    X: Tensor
    C: Tensor
    P: Tensor


@dataclass
class PredictObservation:
    """One call of the prediction function."""

    case: Case
    P: Optional[Tensor]  # float64, None when it did not return a tensor
    dtype: torch.dtype
    forward: "network.Forward | ForwardView"  # the reference's, float64
    tolerance: Tolerance
    X_after: Optional[Tensor]  # the caller's X after the call


def forward_view(chain: Chain, X: Tensor, weights: dict[str, Tensor]
                 ) -> "network.Forward | ForwardView":
    """The reference's forward pass for a prediction (the notebook's ``Forward`` for it)."""
    if chain.is_notebook:
        return network.forward(X, weights)
    trace = network.run_forward(chain.assignment, X, weights)
    return ForwardView(X=X, C=trace[f"Z{chain.depth}"], P=trace.P)


@dataclass
class Facts:
    """Everything a matcher may read about one submission, all of it numbers or source lines."""

    submission: Submission
    source: SourceIndex
    cases: tuple[Case, ...]
    calls: dict[str, CallResult]
    steps: list[StepObservation]  # graded calls of train_neural_net
    probe_steps: dict[str, StepObservation]  # weight name -> its probe
    predicts: list[PredictObservation]  # graded calls of neural_net_predict
    probe_predicts: dict[str, PredictObservation]
    found: dict[str, Found]
    localisation: Localisation
    module_globals: dict[str, Tensor]
    tolerances: Tolerances
    accepted: tuple[str, ...] = ()
    #: the assignment's chain (default: the graded calls')
    chain: Chain = field(default=None)  # type: ignore[assignment]
    _wrong: Optional[frozenset[str]] = field(default=None, repr=False)
    _lines: dict[str, Optional[int]] = field(default_factory=dict, repr=False)
    _inputs: dict[str, str] = field(default_factory=dict, repr=False)
    #: the edit search's results, worked out once per step (``diagnose``)
    _explained: dict[str, Any] = field(default_factory=dict, repr=False)
    _holders: dict[Any, Optional[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.chain is None:
            self.chain = self.steps[0].chain if self.steps else self.source.chain

    @property
    def wrong_parameters(self) -> frozenset[str]:
        """Weights whose implied gradient is wrong in some graded call (under every scale)."""
        if self._wrong is None:
            self._wrong = frozenset(
                name for name in self.chain.parameters for obs in self.steps
                if not any(obs.gradient_right(name, s) for s in self.scales(obs)))
        return self._wrong

    def step_base(self) -> Optional[StepObservation]:
        return next((o for o in self.steps if o.case.id == "batch5" and o.index == 0), None)

    def predict_base(self) -> Optional[PredictObservation]:
        return next((o for o in self.predicts if o.case.id == "predict_batch32"), None)

    def scales(self, obs: StepObservation) -> tuple[float, ...]:
        """The loss scales a call's numbers may be judged under: 1 and the accepted ones."""
        a = self.chain.assignment
        return tuple(dict.fromkeys((1.0, *(a.convention_scale(c, obs.batch_size)  # type: ignore
                                           for c in self.accepted))))

    def variable(self, quantity: str) -> str:
        found = self.found.get(quantity)
        return found.label if found else quantity

    def input_variable(self, name: str) -> str:
        """The student's own name for X, Y or a weight in ``train_neural_net``: the local that
        holds exactly its value on the base call (``inputs = X.to(dtype)``), else the name."""
        if name in self._inputs:
            return self._inputs[name]
        found = name
        base = self.step_base()
        if base is not None:
            target = {"X": base.X, "Y": base.Y}.get(name, base.given.get(name))
            captured = base.result.captured.get(self.chain.train, {})
            parameters = set(self.source.parameters(self.chain.train))
            if target is not None:
                exact = [v for v, held in captured.items() if v not in parameters and
                         held.kind == "array" and
                         held.tensor is not None and tuple(held.tensor.shape) ==
                         tuple(target.shape) and torch.equal(held.tensor.to(F64), target)]
                lines = {v: self.source.assignment_line(self.chain.train, v) for v in exact}
                ordered = sorted((v for v in exact if lines[v] is not None), key=lines.get)
                found = ordered[0] if ordered else name
        self._inputs[name] = found
        return found

    def line_of(self, step: str) -> Optional[int]:
        """The line of the student's source where a step is computed, if known."""
        if step not in self._lines:
            self._lines[step] = self._line_of(step)
        return self._lines[step]

    def _line_of(self, step: str) -> Optional[int]:
        train = self.chain.train
        if step.startswith("update."):
            name = step.split(".")[1]
            gradient = self.found.get(self.chain.gradient_of[name])
            return self.source.update_line(name, gradient.variable if gradient else None)
        found = self.found.get(step)
        if found is not None:
            return self.source.assignment_line(found.function, found.variable)
        # not held when the function returned (or not recognised by value): its name may still
        # be in the source
        named = [v for v in self.source.assigned_names(train)
                 if v == step or normalise(v) in aliases(step, self.chain)]
        return self.source.assignment_line(train, named[0]) if named else None

    def first_line(self, steps: tuple[str, ...]) -> Optional[int]:
        """The line of the first of ``steps`` found wrong, else of the first with a known line."""
        for step in steps:
            if self.localisation.wrong(step) and self.line_of(step) is not None:
                return self.line_of(step)
        return next((self.line_of(s) for s in steps if self.line_of(s) is not None), None)

    def update_line(self) -> Optional[int]:
        lines = [self.line_of(f"update.{p}") for p in self.chain.parameters]
        return min((line for line in lines if line is not None), default=None)


@dataclass
class Match:
    """A catalogue entry that matched: what it explains, and the numbers that show it."""

    code: str
    quantities: tuple[str, ...]  # "V", "I", "W", "J", "P", "X", "Y", "weights", "update"
    words: dict[str, str] = field(default_factory=dict)
    line: Optional[int] = None
    cases: tuple[str, ...] = ()
    factor: Optional[float] = None
    residual: Optional[float] = None
    details: dict[str, Any] = field(default_factory=dict)
    #: the whole message and title, where the entry's notebook template does not apply (a
    #: description other than the notebook's: the words name the layer and its quantities)
    message: Optional[str] = None
    title: Optional[str] = None


@dataclass
class Outcome:
    """How one quantity of the student's fared against an alternative, call by call."""

    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    residual: float = 0.0

    @property
    def matched(self) -> bool:
        return bool(self.hits) and not self.misses


Alternative = Callable[[StepObservation], Optional[dict[str, Tensor]]]


def against_alternative(facts: Facts, alternative: Alternative, names: tuple[str, ...],
                        scales: Optional[tuple[float, ...]] = None,
                        observations: Optional[list[StepObservation]] = None
                        ) -> dict[str, Outcome]:
    """Each weight's gradient, implied by the student's update, against the alternative's.

    A call counts for a weight only where the alternative can be told apart from the reference
    (``distinct`` at the call's tolerance); there it is a hit if the student's gradient matches
    the alternative and not the reference, a miss otherwise. When the student returned a weight
    of another shape, the returned weight is compared with the update the alternative implies
    (torch broadcasting included).
    """
    outcomes = {name: Outcome() for name in names}
    # a hit needs a gradient that is not the reference's: skip weights that are right everywhere
    names = tuple(n for n in names if n in facts.wrong_parameters)
    if not names:
        return outcomes
    for obs in observations if observations is not None else facts.steps:
        if all(outcomes[name].misses for name in names):
            break  # every weight has a case the alternative does not explain: no match
        alternative_gradients = alternative(obs)
        if alternative_gradients is None:
            continue
        for name in names:
            if name not in alternative_gradients:
                continue
            verdict = None
            for scale in scales or facts.scales(obs):
                verdict = _one(obs, name, scaled(alternative_gradients[name], scale),
                               scale) or verdict
                if verdict == "hit":
                    break
            if verdict == "hit":
                outcomes[name].hits.append(obs.label)
                implied = obs.implied.get(name)
                if implied is not None:
                    alt = alternative_gradients[name]
                    norm = float(alt.norm()) or 1.0
                    outcomes[name].residual = max(outcomes[name].residual,
                                                  float((implied - alt).norm()) / norm)
            elif verdict == "miss" and not _off_the_drawn_range(obs):
                outcomes[name].misses.append(obs.label)
    return outcomes


#: |Z| beyond which a sigmoid or tanh counts as saturated: 1 - sigmoid(20) is 2e-9, so the
#: derivative written as s * (1 - s) or 1 - t**2 keeps fewer than 8 of float64's digits
_SATURATED = 20.0


def _off_the_drawn_range(obs: StepObservation) -> bool:
    """A chain's later call that starts from the student's own weights, where nothing keeps a
    pre-activation in the range the cases draw: a ReLU's pre-activation may sit at the kink
    (the student's float32 pass may take the other side of it), a sigmoid or tanh may be
    saturated (its derivative, written as the course writes it, then loses its digits to
    cancellation: a planted missing derivative's W1 was 0.3% off the alternative on chain_5x4's
    fifth call, from weights of -209 and 13). Such a call neither confirms nor refutes an
    alternative."""
    if obs.index == 0:
        return False
    chain = obs.chain
    if "relu" in chain.activations:
        return True
    for layer, activation in enumerate(chain.activations, start=1):
        if activation in ("sigmoid", "tanh"):
            pre = obs.reference(chain.of_layer("pre_activation", layer))
            if pre.numel() and float(pre.abs().max()) > _SATURATED:
                return True
    return False


def _one(obs: StepObservation, name: str, alternative: Tensor, scale: float) -> Optional[str]:
    """One call, one weight: "hit", "miss", or None where the alternative (under the loss
    ``scale``) cannot be told apart from the reference."""
    reference = obs.gradient(name, scale)
    implied = obs.implied.get(name)
    if implied is not None:
        tolerance = obs.gradient_tolerance(name)
        if alternative.shape == reference.shape and not distinct(alternative, reference,
                                                                  tolerance):
            return None
        hit = close(implied, alternative, tolerance) and not obs.gradient_right(name, scale)
        return "hit" if hit else "miss"
    returned = obs.returned.get(name)
    if returned is None or not returned.dtype.is_floating_point:
        return "miss"
    given, lr = obs.given[name], obs.learning_rate
    try:
        expected = given - lr * alternative
    except RuntimeError:
        return "miss"
    tolerance = obs.value_tolerance(returned.dtype)
    if expected.shape == given.shape and not distinct(expected, given - lr * reference, tolerance):
        return None
    return "hit" if close(returned.to(F64), expected, tolerance) else "miss"


# --------------------------------------------------------------------------------------------
# Alternative backward passes
# --------------------------------------------------------------------------------------------

def _sum_rows(t: Tensor) -> Tensor:
    return t.sum(dim=0, keepdim=True)


Overrides = dict[str, Callable[[dict[str, Tensor]], Tensor]]


def _values(obs: StepObservation) -> dict[str, Tensor]:
    """The reference's float64 values of one call, by the course's names."""
    trace = obs.expectation.trace
    chain = obs.chain
    if trace is None:
        return rerun(chain, {"X": obs.X, "Y": obs.Y, **obs.given})
    values = {"X": obs.X, "Y": obs.Y, **obs.given}
    values.update({s.name: trace[s.id] for s in chain.steps})
    return values


def _with(obs: StepObservation, overrides: Overrides,
          weights: Optional[dict[str, Tensor]] = None) -> dict[str, Tensor]:
    """Every parameter's gradient for the call with ``overrides`` planted (one or more steps
    computed another way, the rest done right), by parameter name."""
    chain = obs.chain
    values = rerun(chain, {"X": obs.X, "Y": obs.Y, **(weights or obs.given)}, overrides)
    return {p: values[chain.gradient_of[p]] for p in chain.parameters}


def _reference_with(obs: StepObservation, X: Optional[Tensor] = None, Y: Optional[Tensor] = None,
                    weights: Optional[dict[str, Tensor]] = None) -> dict[str, Tensor]:
    """The reference's gradients for the call with other inputs (a mutated X, a global bias)."""
    X = obs.X if X is None else X
    Y = obs.Y if Y is None else Y
    weights = obs.given if weights is None else weights
    chain = obs.chain
    if chain.is_notebook:
        fwd = network.forward(X, weights)
        return network.backward(fwd, Y, weights).parameter_gradients()
    return network.run(chain.assignment, X, Y, weights).parameter_gradients()


MATCHERS: dict[str, Callable[[Facts], list[Match]]] = {}


def matcher(code: str):
    def register(function: Callable[[Facts], list[Match]]):
        MATCHERS[code] = function
        return function
    return register


def _all_matched(outcomes: dict[str, Outcome]) -> bool:
    return all(o.matched for o in outcomes.values())


def _hits(outcomes: dict[str, Outcome]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(h for o in outcomes.values() for h in o.hits))


def _residual(outcomes: dict[str, Outcome]) -> float:
    return max((o.residual for o in outcomes.values() if o.matched), default=0.0)


def _is_are(items) -> str:
    return "is" if len(items) == 1 else "are"


def and_words(items) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _below(chain: Chain, layer: int) -> tuple[str, ...]:
    """The parameters of layers 1..layer (what a mistake at that layer's dL/dZ reaches)."""
    return tuple(p for p in chain.parameters if chain.parameter_layer(p) <= layer)


def _fused(chain: Chain, layer: int) -> bool:
    """The layer's dL/dZ is computed directly (bce's P - Y), not as dL/dA * dA/dZ."""
    return chain.formulas[chain.of_layer("delta", layer)][0] == "loss"


def _with_derivative(chain: Chain, layer: int, local: Callable[[dict[str, Tensor]], Tensor]
                     ) -> Overrides:
    """The overrides that make a layer's dL/dZ be dL/dA times ``local`` (its derivative
    written another way): the derivative step, or for a fused output dL/dZ itself."""
    if _fused(chain, layer):
        upstream = chain.of_layer("upstream", layer)
        return {chain.of_layer("delta", layer): lambda v: v[upstream] * local(v)}
    return {chain.of_layer("derivative", layer): local}


def _param_words(chain: Chain, names) -> str:
    return and_words([chain.quantity_words[n] for n in names])


# --------------------------------------------------------------------------------------------
# GK1xx: the backward pass
# --------------------------------------------------------------------------------------------

def _missing_derivative(facts: Facts, layers: tuple[int, ...], code: str) -> list[Match]:
    """Every layer of ``layers`` (none an identity) has dL/dZ = dL/dA: its activation's
    derivative left out."""
    chain = facts.chain
    if any(chain.activations[k - 1] == "identity" for k in layers):
        return []  # its derivative is 1: nothing to leave out
    names = _below(chain, max(layers))

    def alternative(o: StepObservation) -> dict[str, Tensor]:
        overrides: Overrides = {}
        for k in layers:
            pre = o.chain.of_layer("pre_activation", k)
            overrides.update(_with_derivative(
                o.chain, k, lambda v, pre=pre: torch.ones_like(v[pre])))
        return _with(o, overrides)

    outcomes = against_alternative(facts, alternative, names)
    if not _all_matched(outcomes):
        return []
    steps = tuple(s for k in sorted(layers, reverse=True)
                  for s in (chain.of_layer("derivative", k), chain.of_layer("delta", k)))
    match = Match(code, names, line=facts.first_line(steps), cases=_hits(outcomes),
                  residual=_residual(outcomes),
                  details={"layer": layers[0]} if len(layers) == 1 else {"layers": list(layers)})
    if not chain.is_notebook:
        parts = []
        for k in layers:
            activation = chain.activations[k - 1]
            derivative_name = chain.of_layer("derivative", k)
            delta, upstream = chain.of_layer("delta", k), chain.of_layer("upstream", k)
            form = chain.documented[derivative_name].replace("{", "").replace("}", "")
            parts.append(f"at {chain.layer_words(k)} ({activation}), {facts.variable(delta)} "
                         f"is {facts.variable(upstream)} alone: it should be "
                         f"{facts.variable(upstream)} * {derivative_name}, with "
                         f"{derivative_name} = {form}")
        text = "; ".join(parts)
        where = and_words([chain.layer_words(k) for k in layers])
        match.title = f"The activation's derivative is missing at {where}"
        match.message = (
            f"{text[0].upper()}{text[1:]}. The gradient{'s' if len(names) > 1 else ''} of "
            f"{and_words(names)} miss{'' if len(names) > 1 else 'es'} "
            f"{'this factor' if len(layers) == 1 else 'these factors'}.")
    return [match]


def _derivative_layers(chain: Chain) -> list[int]:
    return [k for k in range(1, chain.depth + 1) if chain.activations[k - 1] != "identity"]


@matcher("GK101")
def _no_output_derivative(facts: Facts) -> list[Match]:
    """The output layer's derivative left out (alone, or, for a description other than the
    notebook's, with every hidden layer's)."""
    chain = facts.chain
    found = _missing_derivative(facts, (chain.depth,), "GK101")
    layers = tuple(_derivative_layers(chain))
    if not found and not chain.is_notebook and len(layers) > 1 and layers[-1] == chain.depth:
        found = _missing_derivative(facts, layers, "GK101")
    return found


@matcher("GK102")
def _no_hidden_derivative(facts: Facts) -> list[Match]:
    """A hidden layer's derivative left out (one layer, from the output down; for a description
    other than the notebook's, then every hidden layer's at once)."""
    chain = facts.chain
    hidden = [k for k in _derivative_layers(chain) if k < chain.depth]
    for layer in reversed(hidden):
        found = _missing_derivative(facts, (layer,), "GK102")
        if found:
            return found
    if not chain.is_notebook and len(hidden) > 1:
        return _missing_derivative(facts, tuple(hidden), "GK102")
    return []


_NOTEBOOK_GK103 = {
    (1,): dict(derivative="dB/dA", is_are="is", wrong="sigmoid'(B)", right="sigmoid'(A)",
               fix="sigmoid(A, deriv=True), or B * (1 - B)"),
    (2,): dict(derivative="dP/dC", is_are="is", wrong="sigmoid'(P)", right="sigmoid'(C)",
               fix="sigmoid(C, deriv=True), or P * (1 - P)"),
    (1, 2): dict(derivative="dP/dC and dB/dA", is_are="are", wrong="sigmoid'(P) and sigmoid'(B)",
                 right="sigmoid'(C) and sigmoid'(A)",
                 fix="sigmoid(C, deriv=True) and sigmoid(A, deriv=True)"),
}
_DETAIL_GK103 = {(1,): "hidden", (2,): "output", (1, 2): "both"}


@matcher("GK103")
def _derivative_of_activation(facts: Facts) -> list[Match]:
    """An activation's derivative taken at the activation instead of the pre-activation, at
    one layer (from the input), else at every layer where it can be."""
    chain = facts.chain
    # ReLU's derivative at relu(z) is its derivative at z; the identity's is 1 everywhere
    layers = [k for k in range(1, chain.depth + 1) if chain.activations[k - 1] in
              ("sigmoid", "tanh")]
    variants = [(k,) for k in layers] + ([tuple(layers)] if len(layers) > 1 else [])
    for variant in variants:
        def alternative(o: StepObservation, variant=variant) -> dict[str, Tensor]:
            overrides: Overrides = {}
            for k in variant:
                act, post = o.chain.activations[k - 1], o.chain.of_layer("activation", k)
                overrides.update(_with_derivative(
                    o.chain, k, lambda v, act=act, post=post: derivative(act, v[post])))
            return _with(o, overrides)

        names = _below(chain, max(variant))
        outcomes = against_alternative(facts, alternative, names)
        if not _all_matched(outcomes):
            continue
        steps = tuple(s for k in sorted(variant, reverse=True)
                      for s in (chain.of_layer("derivative", k), chain.of_layer("delta", k)))
        match = Match("GK103", names, line=facts.first_line(steps), cases=_hits(outcomes),
                      residual=_residual(outcomes),
                      details={"layer": _DETAIL_GK103.get(variant) if chain.is_notebook
                               else list(variant)})
        if chain.is_notebook:
            match.words = _NOTEBOOK_GK103[variant]
        else:
            parts = []
            for k in variant:
                act = chain.activations[k - 1]
                z, a = chain.of_layer("pre_activation", k), chain.of_layer("activation", k)
                parts.append(f"at {chain.layer_words(k)} the {act}'s derivative is taken at its "
                             f"output {a} instead of its input {z}: "
                             f"{act}'({a}) instead of {act}'({z})")
            fixes = [chain.expressions[chain.of_layer("derivative", k)] for k in variant]
            match.title = "An activation's derivative is taken at its output"
            match.message = (
                "; ".join(parts)[0].upper() + "; ".join(parts)[1:] + ". The output is already "
                "the activation of the input, so this applies it twice. Use "
                + and_words(fixes) + ".")
        return [match]
    return []


def _step_fits(facts: Facts, step: str, factor: float) -> bool:
    """Every call where ``step`` is wrong has it equal to ``factor`` × what it should be, within
    the call's tolerance."""
    wrong = facts.localisation.wrong(step)
    if not wrong:
        return False
    for check in wrong:
        if check.actual is None or check.expected is None or check.tolerance is None or \
                check.actual.shape != check.expected.shape:
            return False
        scaled = factor * check.expected
        if not within(check.actual, scaled, allowance(scaled, check.tolerance)):
            return False
    return True


@matcher("GK104")
def _sign_error(facts: Facts) -> list[Match]:
    chain = facts.chain
    outcomes = against_alternative(facts, lambda o: {p: -o.expectation.gradients[p]
                                                     for p in o.chain.parameters},
                                   chain.parameters)
    if not _all_matched(outcomes):
        return []
    wrong = facts.localisation.wrong_steps()
    backward = [s for s in wrong if not s.startswith("update.") and s not in chain.forward]
    if not backward or len(backward) != len(wrong) or not _step_fits(facts, backward[0], -1.0):
        return []
    step = backward[0]
    match = Match("GK104", chain.parameters, line=facts.line_of(step), cases=_hits(outcomes),
                  residual=_residual(outcomes), factor=-1.0,
                  words=dict(variable=facts.variable(step), expression=chain.expressions[step]),
                  details={"step": step, "layer": chain.layer_of[step]})
    if not chain.is_notebook:
        match.title = "A step of the backward pass has the wrong sign"
        match.message = (
            f"{facts.variable(step)} has the wrong sign: it is -({chain.expressions[step]}) "
            f"where it should be {chain.expressions[step]} ({chain.layer_words(chain.layer_of[step])}). "
            "With the sign flipped every gradient after it points uphill.")
    return [match]


def _bias_words(chain: Chain, names: tuple[str, ...], reduce: str) -> dict[str, str]:
    quantities = [chain.quantity_words[n] for n in names]
    fix = {n: f"{chain.of_layer('delta', chain.parameter_layer(n))}.sum(dim=0, keepdim=True)"
           for n in names}
    shapes = {n: f"(n, {chain.assignment.layers[chain.parameter_layer(n) - 1].units})"
              for n in names}
    return dict(quantities=and_words(quantities), is_are=_is_are(names),
                it_they="it" if len(names) == 1 else "they",
                biases=and_words(names), shapes=and_words(shapes[n] for n in names),
                fix=and_words(fix[n] for n in names), reduce=reduce)


def _held_right(facts: Facts, step: str) -> bool:
    """The function holds ``step`` and it follows from its own inputs on every call: a mistake
    that would be in it is not there."""
    checks = [c for c in facts.localisation.of(step) if c.actual is not None]
    return bool(checks) and all(c.status == "right" for c in checks)


def _biases(chain: Chain) -> tuple[str, ...]:
    return tuple(layer.bias for layer in chain.assignment.layers)


def _bias_match(code: str, facts: Facts,
                reduce: Callable[[Tensor], Tensor]) -> list[Match]:
    chain = facts.chain
    biases = _biases(chain)

    def alternative(o: StepObservation) -> dict[str, Tensor]:
        values = _values(o)
        return {b: reduce(values[o.chain.of_layer("delta", o.chain.parameter_layer(b))])
                for b in biases}

    outcomes = against_alternative(facts, alternative, biases)
    names = tuple(n for n in biases if outcomes[n].matched
                  and not _held_right(facts, chain.gradient_of[n]))
    if not names:
        return []
    # the bias gradient's own step, or the update that used the wrong tensor
    lines = [facts.first_line((chain.gradient_of[n], f"update.{n}")) for n in names]
    line = min((line for line in lines if line is not None), default=None)
    words = _bias_words(chain, names, "")
    match = Match(code, names, words=words, line=line,
                  cases=_hits({n: outcomes[n] for n in names}),
                  residual=_residual({n: outcomes[n] for n in names}),
                  details={"layers": [chain.parameter_layer(n) for n in names]})
    if not chain.is_notebook:
        where = and_words([f"{chain.layer_words(chain.parameter_layer(n))} ({n})"
                           for n in names])
        variables = and_words([facts.variable(chain.gradient_of[n]) for n in names])
        if code == "GK105":
            match.title = f"A bias gradient is not summed over the batch at {where}"
            match.message = (
                f"At {where}, {variables} {words['is_are']} not summed over the rows of the "
                f"batch, so with n rows the update makes {words['biases']} n rows tall (shape "
                f"{words['shapes']}). Sum over the rows: {words['fix']}.")
        else:
            match.title = f"A bias gradient is averaged instead of summed at {where}"
            match.message = (
                f"At {where}, {variables} {words['is_are']} averaged over the rows of the batch "
                f"instead of summed, so {words['it_they']} {words['is_are']} n times too small "
                f"for n rows (right only for a single row). Use {words['fix']}.")
    return [match]


@matcher("GK105")
def _bias_not_summed(facts: Facts) -> list[Match]:
    return _bias_match("GK105", facts, lambda t: t)


@matcher("GK106")
def _bias_mean(facts: Facts) -> list[Match]:
    return _bias_match("GK106", facts, lambda t: t.mean(0, keepdim=True))


@matcher("GK107")
def _bias_from_dLdB(facts: Facts) -> list[Match]:
    """A hidden layer's bias gradient summed from dL/dA (before its activation's derivative)
    instead of dL/dZ."""
    chain = facts.chain
    for layer in range(chain.depth - 1, 0, -1):
        if chain.activations[layer - 1] == "identity":
            continue
        bias = chain.layer_parameters(layer)[1]
        upstream = chain.of_layer("upstream", layer)
        outcomes = against_alternative(
            facts, lambda o, u=upstream, b=bias: {b: _sum_rows(_values(o)[u])}, (bias,))
        if not outcomes[bias].matched:
            continue
        step = chain.gradient_of[bias]
        match = Match("GK107", (bias,), words=dict(variable=facts.variable(step)),
                      line=facts.first_line((step, f"update.{bias}")),
                      cases=tuple(outcomes[bias].hits), residual=outcomes[bias].residual,
                      details={"layer": layer})
        if not chain.is_notebook:
            delta = chain.of_layer("delta", layer)
            derivative_name = chain.of_layer("derivative", layer)
            match.title = f"The bias gradient of {chain.layer_words(layer)} is taken from {upstream}"
            match.message = (
                f"At {chain.layer_words(layer)}, {facts.variable(step)} is summed from {upstream} "
                f"instead of {delta}, so it misses the {chain.activations[layer - 1]}'s "
                f"derivative {derivative_name}. Use {delta}.sum(dim=0, keepdim=True).")
        return [match]
    return []


def _weights(chain: Chain) -> tuple[str, ...]:
    return tuple(layer.weight for layer in chain.assignment.layers)


@matcher("GK108")
def _transposed(facts: Facts) -> list[Match]:
    chain = facts.chain
    matches = []
    for name in _weights(chain):
        layer = chain.parameter_layer(name)
        step = chain.gradient_of[name]
        upstream = chain.of_layer("delta", layer)
        below = "X" if layer == 1 else chain.of_layer("activation", layer - 1)
        template = below + ".T @ {" + upstream + "}"
        outcomes = against_alternative(
            facts, lambda o, s=step, n=name: {n: _values(o)[s].T}, (name,))
        held = _held_transposed(facts, step)
        if outcomes[name].matched or held:
            matches.append(_transposed_match(facts, name, step, template, upstream,
                                             tuple(outcomes[name].hits) or held))
        elif not facts.steps:
            static = _static_transposed(facts, name, step)
            if static is not None:
                matches.append(_transposed_match(facts, name, step, template, upstream,
                                                 static, static=True))
    return matches


def _held_transposed(facts: Facts, step: str) -> tuple[str, ...]:
    """Calls where the student's own value of ``step`` is the reference's, transposed."""
    found = facts.found.get(step)
    if found is None:
        return ()
    hits = []
    for obs in facts.steps:
        value = obs.captured(found.function, found.variable)
        expected = obs.reference(step)
        if value is None:
            continue
        if value.shape == expected.shape or not close(value.to(F64), expected.T,
                                                        obs.value_tolerance(value.dtype)):
            return ()
        hits.append(obs.label)
    return tuple(hits)


def _static_transposed(facts: Facts, name: str, step: str) -> Optional[tuple[str, ...]]:
    """When every call raised where the weight is updated (no numbers came back), and the
    student's gradient expression has, from the shapes of the chain's quantities, the
    weight's shape transposed: the calls that raised there."""
    train = facts.chain.train
    graded = [c for c in facts.cases if c.kind in ("step", "chain") and "probe" not in c.tags]
    errors = [facts.calls.get(c.id) for c in graded]
    if not errors or any(e is None or e.error is None for e in errors):
        return None
    lines = {e.error.get("line") for e in errors if e is not None and e.error is not None}
    variables = [v for v in _assigned_names(facts, train)
                 if normalise(v) in aliases(step, facts.chain)]
    if not variables:
        return None
    variable = variables[0]
    where = {facts.source.update_line(name, variable), facts.source.assignment_line(train,
                                                                                     variable)}
    if not lines & where:
        return None
    expression = facts.source.assigned_expression(train, variable)
    if expression is None:
        return None
    shape = facts.source.shape_of(expression, _known_shapes(facts))
    weight = _weight_shape(facts.chain, name)
    if shape is None or shape != tuple(reversed(weight)) or shape == weight:
        return None
    return tuple(c.id for c, e in zip(graded, errors)
                 if e is not None and e.error is not None and e.error.get("line") in where)


def _assigned_names(facts: Facts, function: str) -> list[str]:
    return facts.source.assigned_names(function)


def _weight_shape(chain: Chain, name: str) -> tuple[int, ...]:
    return chain.assignment.parameter_shapes[name]


def _known_shapes(facts: Facts, n: int = 5) -> dict[str, tuple[int, ...]]:
    """Shapes of the chain's quantities for an n-row batch, under every name for them."""
    chain = facts.chain
    a = chain.assignment
    train = chain.train
    by_quantity: dict[str, tuple[int, ...]] = {"X": (n, a.inputs), "Y": (n, a.outputs)}
    for step in chain.steps:
        if step.kind in ("weight_gradient", "bias_gradient"):
            continue
        # dL/dA{k-1} (an input gradient) has the shape of the layer below's output
        layer = step.layer - 1 if step.kind == "input_gradient" else step.layer
        by_quantity[step.name] = (n, a.layers[layer - 1].units)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in a.parameter_shapes.items():
        shapes[name] = shape
        shapes[f"weights[{name!r}]"] = shape
    names = _assigned_names(facts, train) + facts.source.parameters(train)
    for quantity, shape in by_quantity.items():
        shapes[quantity] = shape
        for variable in names:
            if normalise(variable) in aliases(quantity, chain) or variable == quantity:
                shapes[variable] = shape
    params = facts.source.parameters(train)
    if len(params) >= 2:
        shapes[params[0]], shapes[params[1]] = (n, a.inputs), (n, a.outputs)
    return shapes


def _transposed_match(facts: Facts, name: str, step: str, template: str, upstream: str,
                      cases: tuple[str, ...], static: bool = False) -> Match:
    chain = facts.chain
    weight_shape = _weight_shape(chain, name)
    expression = template.format(**{upstream: facts.variable(upstream) if upstream in facts.found
                                    else upstream})
    line = facts.first_line((step,))
    if line is None:
        variables = [v for v in _assigned_names(facts, chain.train)
                     if normalise(v) in aliases(step, chain)]
        line = facts.source.assignment_line(chain.train, variables[0]) if variables else None
    layer = chain.parameter_layer(name)
    words = dict(quantity=f"dL/d{name}", shape=str(tuple(reversed(weight_shape))),
                 weight=name, weight_shape=str(weight_shape), expression=expression)
    match = Match("GK108", (name,), line=line, cases=cases, words=words,
                  details={"from": "source shapes" if static else "values", "layer": layer})
    if not chain.is_notebook:
        match.title = f"A matrix product with its operands transposed at {chain.layer_words(layer)}"
        match.message = (
            f"At {chain.layer_words(layer)}, {facts.variable(step)} ({words['quantity']}) has "
            f"shape {words['shape']}, the transpose of {name}'s {words['weight_shape']}: the "
            f"product's operands are in the wrong order. Compute it as {expression}.")
    return match


# --------------------------------------------------------------------------------------------
# GK2xx: the update
# --------------------------------------------------------------------------------------------

@matcher("GK201")
def _gradient_ascent(facts: Facts) -> list[Match]:
    chain = facts.chain
    outcomes = against_alternative(facts, lambda o: {p: -o.expectation.gradients[p]
                                                     for p in o.chain.parameters},
                                   chain.parameters)
    if not _all_matched(outcomes):
        return []
    wrong = facts.localisation.wrong_steps()
    updates = [f"update.{p}" for p in chain.parameters]
    if sorted(wrong) != sorted(updates):
        return []
    if any(c.span for step in updates for c in facts.localisation.wrong(step)):
        return []  # the gradients were not held: the sign may be anywhere in the backward pass
    if not all(_step_fits(facts, step, -1.0) for step in updates):
        return []
    return [Match("GK201", (*chain.parameters, "update"), line=facts.update_line(),
                  cases=_hits(outcomes), residual=_residual(outcomes), factor=-1.0)]


@matcher("GK202")
def _learning_rate(facts: Facts) -> list[Match]:
    chain = facts.chain
    # implied = (lr0 / lr) * gradient on every call: one lr0 fitted over all of them
    pairs, labels = [], []
    for obs in facts.steps:
        for name in chain.parameters:
            implied = obs.implied.get(name)
            if implied is None:
                return []
            pairs.append((implied, obs.gradient(name) / obs.learning_rate,
                          obs.gradient_tolerance(name)))
        labels.append(obs.label)
    fit = fit_factor(pairs)
    if fit is None or not fit.exact or abs(fit.factor) < 1e-12:
        return []
    lr0 = snap(fit.factor, lambda k: holds(pairs, k))
    if all(abs(lr0 - o.learning_rate) <= 1e-6 * abs(lr0) for o in facts.steps):
        return []  # right on every call: nothing to explain
    # the usual cause: the learning-rate argument set to a number inside the function
    lr_name = facts.source.parameter(chain.train, 3, "learning_rate")
    value = facts.source.assigned_expression(chain.train, lr_name)
    constant = isinstance(value, ast.Constant) and isinstance(value.value, (int, float))
    line = facts.source.assignment_line(chain.train, lr_name) if constant else None
    hardcoded = f" ({lr_name} is set to {value.value:g} inside the function)" \
        if isinstance(value, ast.Constant) and constant else ""
    return [Match("GK202", (*chain.parameters, "update"), line=line or facts.update_line(),
                  cases=tuple(labels), residual=fit.residual,
                  words=dict(lr0=f"{lr0:g}", hardcoded=hardcoded),
                  details={"learning_rate_used": lr0})]


@matcher("GK203")
def _updated_before_use(facts: Facts) -> list[Match]:
    """A layer's weight updated before the backward pass takes dL/dA of the layer below from
    it (the notebook's W before dL/dB)."""
    chain = facts.chain
    for layer in range(chain.depth, 1, -1):
        weight = chain.layer_parameters(layer)[0]
        below = chain.name(f"dLdA{layer - 1}")
        delta = chain.of_layer("delta", layer)
        step = chain.gradient_of[weight]

        def alternative(o: StepObservation, weight=weight, below=below, delta=delta, step=step
                        ) -> dict[str, Tensor]:
            def updated(v: dict[str, Tensor]) -> Tensor:
                return v[delta] @ (v[weight] - o.learning_rate * v[step]).T
            return _with(o, {below: updated})

        names = _below(chain, layer - 1)
        outcomes = against_alternative(facts, alternative, names)
        if not _all_matched(outcomes):
            continue
        match = Match("GK203", names, line=facts.line_of(f"update.{weight}"),
                      cases=_hits(outcomes), residual=_residual(outcomes),
                      details={"layer": layer})
        if not chain.is_notebook:
            match.title = f"{weight} is updated before the backward pass uses it"
            match.message = (
                f"{weight} is updated before {below} is computed, so {below} = "
                f"{chain.expressions[below]} uses the new {weight} and the gradients of "
                f"{and_words(names)} are wrong. Compute every gradient first, then update the "
                "weights.")
        return [match]
    return []


# --------------------------------------------------------------------------------------------
# GK3xx: loss conventions
# --------------------------------------------------------------------------------------------

def _accept_words(convention: str) -> str:
    return f" (an instructor can accept it with --accept-convention {convention})"


def _convention_match(facts: Facts, code: str, convention: str, words: dict[str, str]
                      ) -> list[Match]:
    chain = facts.chain
    a = chain.assignment
    if convention in facts.accepted or convention == a.loss_convention:
        return []
    outcomes = against_alternative(
        facts, lambda o: {p: a.convention_scale(convention, o.batch_size)  # type: ignore
                          * o.expectation.gradients[p] for p in o.chain.parameters},
        chain.parameters, scales=(1.0,))
    if not _all_matched(outcomes):
        return []
    backward = tuple(s for s in chain.gradient_names if s in chain.loss_linear)
    wrong = [s for s in backward if facts.localisation.wrong(s)]
    held = [s for s in backward if any(c.actual is not None for c in facts.localisation.of(s))]
    if held and not wrong:
        return []  # the gradients the function holds are the documented ones: not the loss
    first = chain.name(f"dLdA{chain.depth}")
    line = facts.line_of(wrong[0]) if wrong else facts.first_line((first,))
    ratio = a.convention_scale(convention, 2) / 1.0  # type: ignore[arg-type]
    constant = ratio == a.convention_scale(convention, 3)  # type: ignore[arg-type]
    factor = ratio if constant else None
    match = Match(code, chain.parameters, words={**words, "accept": _accept_words(convention)},
                  line=line, cases=_hits(outcomes), residual=_residual(outcomes), factor=factor,
                  details={"convention": convention})
    if not chain.is_notebook:
        how = f"{ratio:g} ×" if constant else {
            ("sum", "mean"): "n ×", ("half_sum", "mean"): "n/2 ×", ("half_mean", "mean"): "1/2 ×",
            ("mean", "sum"): "1/n ×", ("half_mean", "sum"): "1/(2n) ×",
            ("half_mean", "half_sum"): "1/n ×", ("mean", "half_sum"): "2/n ×",
            ("sum", "half_sum"): "2 ×", ("half_sum", "sum"): "1/2 ×",
        }.get((convention, a.loss_convention), "a batch-size multiple of")
        match.title = ("Every gradient is a multiple of the documented one (another loss "
                       "convention)")
        match.message = (
            f"Every gradient is {how} the documented one: you differentiated "
            f"{_loss_words(a.loss, convention)}, where the course's loss is "
            f"{_loss_words(a.loss, a.loss_convention)}. This is a convention, not a bug in one "
            f"place: use the documented loss{_accept_words(convention)}.")
    return [match]


def _loss_words(loss: str, convention: str) -> str:
    """A loss under a convention, in words (for another description's GK301/GK302)."""
    if loss == "bce":
        return {"sum": "the cross-entropy summed over the batch",
                "mean": "the batch mean of the cross-entropy"}[convention]
    return {"half_sum": "1/2 · Σ(p - y)² over the batch", "sum": "Σ(p - y)² over the batch",
            "half_mean": "1/2 · the batch mean of Σ(p - y)² over the outputs",
            "mean": "the batch mean of Σ(p - y)² over the outputs"}[convention]


@matcher("GK301")
def _sum_convention(facts: Facts) -> list[Match]:
    a = facts.chain.assignment
    if facts.chain.is_notebook:
        return _convention_match(facts, "GK301", "sum", {})
    # a constant factor (a 1/2 kept or dropped)
    for convention in FAMILY_CONVENTIONS[a.loss]:
        if convention != a.loss_convention and \
                a.convention_scale(convention, 2) == a.convention_scale(convention, 3):  # type: ignore
            found = _convention_match(facts, "GK301", convention, {})
            if found:
                return found
    return []


@matcher("GK302")
def _mean_convention(facts: Facts) -> list[Match]:
    a = facts.chain.assignment
    if not facts.chain.is_notebook:
        # a factor of the batch size (a mean for a sum, or a sum for a mean)
        for convention in FAMILY_CONVENTIONS[a.loss]:
            if convention != a.loss_convention and \
                    a.convention_scale(convention, 2) != a.convention_scale(convention, 3):  # type: ignore
                found = _convention_match(facts, "GK302", convention, {})
                if found:
                    return found
        return []
    return _convention_match(
        facts, "GK302", "half_mean",
        dict(factor_words="1/n ×", what="dL/dP is divided by the batch size n (a batch-mean "
                                        "loss, 1/2 · mean (p - y)²)")) or _convention_match(
        facts, "GK302", "mean",
        dict(factor_words="2/n ×", what="the loss is the batch mean of (p - y)², without the "
                                        "1/2"))


# --------------------------------------------------------------------------------------------
# GK4xx: the forward pass and the prediction
# --------------------------------------------------------------------------------------------

def _insensitive(unchanged: dict[str, bool]) -> set[str]:
    """The weights whose probe changed nothing, if moving some other weight changed something
    (a function that ignores every input, or whose gradients are all zero, says nothing)."""
    if all(unchanged.values()):
        return set()
    return {name for name, same in unchanged.items() if same}


def _ignored_by_train(facts: Facts) -> set[str]:
    base = facts.step_base()
    if base is None or any(base.implied.get(p) is None for p in facts.chain.parameters):
        return set()
    unchanged = {}
    for name, probe in facts.probe_steps.items():
        if any(probe.implied.get(p) is None for p in facts.chain.parameters):
            continue
        same = all(close(probe.implied[p], base.implied[p], base.gradient_tolerance(p))
                   for p in facts.chain.parameters)
        differs = any(distinct(probe.expectation.gradients[p], base.expectation.gradients[p],
                               base.gradient_tolerance(p)) for p in facts.chain.parameters)
        if differs:
            unchanged[name] = same
    return _insensitive(unchanged)


def _ignored_by_predict(facts: Facts) -> set[str]:
    base = facts.predict_base()
    # only a prediction of the right shape can say which weights it uses
    if base is None or base.P is None or base.P.shape != base.forward.P.shape:
        return set()
    unchanged = {}
    for name, probe in facts.probe_predicts.items():
        if probe.P is None or probe.P.shape != base.P.shape:
            continue
        if distinct(probe.forward.P, base.forward.P, base.tolerance):
            unchanged[name] = close(probe.P, base.P, base.tolerance)
    return _insensitive(unchanged)


def _substitute(facts: Facts, function: str, name: str) -> tuple[Optional[str], Tensor]:
    """What the function uses instead of weights[name]: a module-level tensor of the weight's
    shape that it reads as a global, else nothing (zeros)."""
    shape = _weight_shape(facts.chain, name)
    for variable, value in facts.module_globals.items():
        if tuple(value.shape) == shape and value.dtype.is_floating_point and \
                facts.source.global_reads(function, variable):
            return variable, value.to(F64)
    return None, torch.zeros(shape, dtype=F64)


@matcher("GK401")
def _weight_ignored(facts: Facts) -> list[Match]:
    in_train, in_predict = _ignored_by_train(facts), _ignored_by_predict(facts)
    if not in_train and not in_predict:
        return []
    train_subs = {n: _substitute(facts, facts.chain.train, n) for n in in_train}
    predict_subs = {n: _substitute(facts, facts.chain.predict, n) for n in in_predict}
    # the numbers, computed with every substitute at once, confirm what the function does
    train_outcomes = against_alternative(
        facts, lambda o: _reference_with(o, weights={**o.given, **{n: v for n, (_, v) in
                                                                   train_subs.items()}}),
        facts.chain.parameters) if in_train else {}
    train_confirmed = bool(train_outcomes) and _all_matched(train_outcomes)
    predict_confirmed = bool(in_predict) and all(
        o.P is not None and close(o.P, forward_view(facts.chain, o.forward.X, {
            **_predict_weights(o), **{n: v for n, (_, v) in predict_subs.items()}}).P,
            o.tolerance)
        for o in facts.predicts)
    matches = []
    for name in facts.chain.parameters:
        if name not in in_train and name not in in_predict:
            continue
        functions = [f for f, ignored in ((facts.chain.train, in_train), (facts.chain.predict, in_predict))
                     if name in ignored]
        subs = [s for s in (train_subs.get(name), predict_subs.get(name)) if s is not None]
        global_name = next((g for g, _ in subs if g is not None), None)
        reads = {f: facts.source.global_reads(f, global_name) for f in functions} \
            if global_name else {}
        line = next((reads[f][0] for f in functions if reads.get(f)), None)
        if global_name is not None:
            set_at = facts.source.module_assignment(global_name)
            cause = (f"It adds the module-level {global_name} (set at "
                     f"{facts.submission.where(set_at)}) instead: use weights['{name}'].")
        else:
            cause = f"Add weights['{name}'] where the forward pass needs it."
            # where the forward pass should use it: A (for V, I) or C (for W, J)
            step = facts.chain.of_layer("pre_activation", facts.chain.parameter_layer(name))
            line = facts.first_line((step,)) if facts.chain.train in functions else \
                facts.source.assignment_line(facts.chain.predict, step)
        quantities = ()
        if name in in_train and train_confirmed:
            quantities += facts.chain.parameters
        if name in in_predict and predict_confirmed:
            quantities += ("P",)
        matches.append(Match(
            "GK401", quantities, line=line,
            words=dict(functions=and_words(functions), does_do="does" if len(functions) == 1
                       else "do", param=name, cause=cause),
            cases=tuple(f"probe_{'step' if f == facts.chain.train else 'predict'}_{name}" for f in functions)
            + (_hits(train_outcomes) if name in in_train and train_confirmed else ()),
            details={"weight": name, "global": global_name, "functions": functions,
                     "read_at": {f: [facts.submission.where(n) for n in lines]
                                 for f, lines in reads.items()},
                     "set_at": facts.submission.where(facts.source.module_assignment(
                         global_name)) if global_name else None,
                     "confirmed_by_values": {facts.chain.train: train_confirmed,
                                             facts.chain.predict: predict_confirmed}}))
    return matches


def _predict_weights(obs: PredictObservation) -> dict[str, Tensor]:
    return {n: w.to(F64) for n, w in (obs.case.weights or {}).items()}


@matcher("GK402")
def _predict_returns_C(facts: Facts) -> list[Match]:
    observations = facts.predicts + list(facts.probe_predicts.values())
    if not observations:
        return []
    hits = []
    for obs in observations:
        if obs.P is None or not close(obs.P, obs.forward.C, obs.tolerance) or \
                close(obs.P, obs.forward.P, obs.tolerance):
            return []
        hits.append(obs.case.id)
    chain = facts.chain
    match = Match("GK402", ("P",), line=facts.source.return_line(chain.predict),
                  cases=tuple(hits))
    if not chain.is_notebook:
        L = chain.depth
        z, out = chain.of_layer("pre_activation", L), chain.output
        activation = chain.activations[L - 1]
        match.title = f"{chain.predict} returns the pre-activation {z}"
        match.message = (
            f"{chain.predict} returns the output layer's pre-activation "
            f"{chain.expressions[z]} instead of {out} = {chain.expressions[out]}: the "
            f"{activation} is left out. Return {chain.expressions[out]}.")
    return [match]


# --------------------------------------------------------------------------------------------
# GK5xx: behaviour
# --------------------------------------------------------------------------------------------

@matcher("GK501")
def _inputs_mutated(facts: Facts) -> list[Match]:
    matches = []
    changed: dict[str, list[StepObservation]] = {"X": [], "Y": []}
    corrupted: list[str] = []
    for obs in facts.steps:
        for name, given in (("X", obs.X), ("Y", obs.Y)):
            after = obs.after(name)
            if after is not None and after.kind == "array" and after.tensor is not None and (
                    after.tensor.shape != given.shape or
                    not torch.equal(after.tensor.to(F64), given)):
                changed[name].append(obs)
        # the caller's tensors after the call (not the dict's entries, which the function may
        # rebind, as the notebook does, without touching a tensor)
        weights_after = obs.after("weight_tensors") or obs.after("weights")
        if weights_after is not None and weights_after.kind == "dict":
            for name, given in obs.given.items():
                item = weights_after.items.get(name)
                returned = obs.returned.get(name)
                if item is None or item.tensor is None or returned is None:
                    continue
                now = item.tensor.to(F64)
                if now.shape == given.shape and torch.equal(now, given):
                    continue
                if now.shape == returned.shape and torch.equal(now, returned.to(F64)):
                    continue  # updated in place to the weights it returns: allowed
                corrupted.append(obs.label)
    names = [n for n in ("X", "Y") if changed[n]]
    if names:
        x_name = facts.source.parameter(facts.chain.train, 0, "X")
        y_name = facts.source.parameter(facts.chain.train, 1, "Y")
        lines = []
        for name in names:
            lines += facts.source.in_place_lines(facts.chain.train, x_name if name == "X" else y_name)
        quantities: tuple[str, ...] = (*names, "side_effects")
        consequence = ""
        mutated = [o for o in facts.steps if o in changed["X"] or o in changed["Y"]]

        def _after(o: StepObservation, name: str) -> Tensor:
            value = o.after(name)
            if value is None or value.kind != "array" or value.tensor is None:
                return o.X if name == "X" else o.Y
            return value.tensor.to(F64)

        # the gradients of the changed inputs: the step trained on them
        outcomes = against_alternative(
            facts, lambda o: _reference_with(o, X=_after(o, "X"), Y=_after(o, "Y")),
            facts.chain.parameters, observations=mutated)
        if _all_matched(outcomes):
            quantities += facts.chain.parameters
            consequence = ", and the step trains on the changed values"
        matches.append(Match(
            "GK501", quantities, line=min(lines) if lines else None,
            cases=tuple(dict.fromkeys(o.label for n in names for o in changed[n])),
            words=dict(function=facts.chain.train, names=and_words(names), consequence=consequence,
                       copy=f"{x_name if 'X' in names else y_name} = "
                            f"{x_name if 'X' in names else y_name}.clone()")))
    if corrupted:
        matches.append(Match(
            "GK501", ("weights", "side_effects"), line=facts.update_line(),
            cases=tuple(corrupted),
            words=dict(function=facts.chain.train, names="the caller's weight tensors", consequence=
                       " (they hold neither the old weights nor the ones it returns)",
                       copy="return new tensors, or update in place to exactly them")))
    predict_changed = [o for o in facts.predicts if o.X_after is not None and (
        o.X_after.shape != o.forward.X.shape or not torch.equal(o.X_after.to(F64),
                                                                 o.forward.X))]
    if predict_changed:
        x_name = facts.source.parameter(facts.chain.predict, 0, "X")
        lines = facts.source.in_place_lines(facts.chain.predict, x_name)
        matches.append(Match(
            "GK501", ("X", "side_effects"), line=min(lines) if lines else None,
            cases=tuple(o.case.id for o in predict_changed),
            words=dict(function=facts.chain.predict, names="X", consequence="",
                       copy=f"{x_name} = {x_name}.clone()")))
    return matches


@matcher("GK502")
def _hidden_state(facts: Facts) -> list[Match]:
    for case in facts.cases:
        call = facts.calls.get(case.id)
        if not case.repeat or call is None or len(call.steps) < 2:
            continue
        first, _ = weights_of(call.steps[0].returned, facts.chain.assignment)
        second, _ = weights_of(call.steps[1].returned, facts.chain.assignment)
        if first is None or second is None:
            continue
        differs = [n for n in facts.chain.parameters if first[n].shape != second[n].shape or
                   not close(second[n].to(F64), first[n].to(F64),
                             facts.tolerances.values(second[n].dtype
                                                     if second[n].dtype.is_floating_point
                                                     else F64))]
        if differs:
            match = Match("GK502", (*facts.chain.parameters, "update", "side_effects"),
                          line=facts.source.state_write_line(facts.chain.train),
                          cases=(case.id,), details={"differs": differs})
            if not facts.chain.is_notebook:
                match.message = ENTRIES["GK502"].message.replace("train_neural_net",
                                                                 facts.chain.train)
            beta = _momentum(facts, case, first, second, differs)
            if beta is not None:
                match.factor, match.residual = beta
                match.details["momentum"] = {"beta": beta[0], "residual": beta[1]}
                match.message = (match.message or ENTRIES["GK502"].message) + (
                    f" The second call's update is the SGD step plus {beta[0]:g} times the "
                    f"first call's whole update (fitted over "
                    f"{and_words([f'weights[{n!r}]' for n in differs])}, residual "
                    f"{beta[1]:.1e}): momentum, with the velocity kept between calls. One "
                    f"call is one plain SGD step.")
            return [match]
    return []


def _momentum(facts: Facts, case, first: dict, second: dict, names: list[str]
              ) -> Optional[tuple[float, float]]:
    """(beta, residual) when the second of two identical calls returned the SGD step plus beta
    times the first call's update (returned - given), for one beta in (0, 1) over the
    parameters ``names`` whose results differ, within the call's tolerance: a velocity kept
    between calls."""
    obs = next((o for o in facts.steps if o.case.id == case.id), None)
    if obs is None:
        return None
    pairs = []
    for name in names:
        given, sgd = obs.given.get(name), obs.expectation.updated.get(name)
        if given is None or sgd is None or first[name].shape != sgd.shape or \
                second[name].shape != sgd.shape:
            return None
        tolerance = facts.tolerances.values(second[name].dtype)
        pairs.append((second[name].to(F64) - sgd, first[name].to(F64) - given, tolerance))
    fit = fit_factor(pairs)
    if fit is None or not fit.exact or not 0.0 < fit.factor < 1.0:
        return None
    beta = snap(fit.factor, lambda b: holds(pairs, b))
    return beta, fit.residual


@matcher("GK503")
def _non_finite(facts: Facts) -> list[Match]:
    bad: dict[str, list[str]] = {}
    for obs in facts.steps:
        for name in facts.chain.parameters:
            returned = obs.returned.get(name)
            if returned is None or not returned.dtype.is_floating_point:
                continue
            if not all_finite(returned) and all_finite(obs.expectation.updated[name]):
                bad.setdefault(name, []).append(obs.label)
    for obs in facts.predicts:
        if obs.P is not None and not all_finite(obs.P):
            bad.setdefault("P", []).append(obs.case.id)
    if not bad:
        return []
    first = next((s for s in facts.chain.forward + facts.chain.gradient_names
                  if any(c.problem == "nonfinite" and all_finite(c.expected)
                         for c in facts.localisation.wrong(s) if c.expected is not None)), None)
    names = [n for n in facts.chain.parameters if n in bad]
    what = [f"weights['{n}']" for n in names] + (
        [f"{facts.chain.predict}'s {facts.chain.output}"] if "P" in bad else [])
    where = f", first in {facts.variable(first)}" if first else ""
    # the first step that went non-finite, else the update of the first such weight
    line = facts.line_of(first) if first else (facts.line_of(f"update.{names[0]}") if names
                                               else facts.source.return_line(facts.chain.predict))
    return [Match("GK503", tuple(bad), line=line,
                  cases=tuple(dict.fromkeys(c for v in bad.values() for c in v)),
                  words=dict(what=and_words(what), has_have="has" if len(what) == 1 else "have",
                             where=where),
                  details={"first_step": first})]
