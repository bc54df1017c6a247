"""The grader grades itself: mutants of the correct example must fail, or be shown equivalent.

``test_mutation_score`` grades a fixed sample through the real ``check`` and one worker: every
operator at every site of train_neural_net's backward pass (for variable swaps, the first swap at
each site), about 100 mutants. Set GRADKIT_MUTATION_FULL=1 to grade all of them (330, about two
minutes), as ``python -m gradkit.mutation`` does for the README's figure.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

from gradkit.mutation import Mutant, Score, difference, mutants, score
from gradkit.sandbox import Sandbox

CORRECT = Path(__file__).parent.parent / "submissions_example" / "correct.py"
SOURCE = CORRECT.read_text()
OPERATORS = {"swap_operator", "drop_term", "change_constant", "change_key", "change_variable",
             "remove_transpose", "add_transpose", "swap_arguments", "drop_dim", "drop_argument"}


def _lines_between(start_marker: str, end_marker: str) -> range:
    lines = SOURCE.splitlines()
    start = next(i for i, line in enumerate(lines, 1) if start_marker in line)
    end = next(i for i, line in enumerate(lines, 1) if end_marker in line)
    return range(start, end)


def backward_pass_sample(every: list[Mutant]) -> list[Mutant]:
    """Every operator at every site of the backward pass; one variable swap per site."""
    backward = _lines_between("# backpropagation", "# update the weights")
    chosen, swapped_sites = [], set()
    for mutant in every:
        if mutant.function != "train_neural_net" or mutant.line not in backward:
            continue
        site = mutant.id.split("#")[0]
        if mutant.operator == "change_variable":
            if site in swapped_sites:
                continue
            swapped_sites.add(site)
        chosen.append(mutant)
    return chosen


def test_mutants_are_single_changes_of_both_functions_by_every_operator():
    every = mutants(SOURCE)
    assert [m.id for m in every] == [m.id for m in mutants(SOURCE)], "not deterministic"
    assert {m.operator for m in every} == OPERATORS
    assert {m.function for m in every} == {"train_neural_net", "neural_net_predict"}
    assert len({m.id for m in every}) == len(every)
    original = ast.unparse(ast.parse(SOURCE))
    init_branch = _lines_between("if not weights:", "else:")
    for mutant in every:
        assert mutant.source != original
        assert mutant.line not in init_branch  # random draws: checked for shape, not value
        ast.parse(mutant.source)
    by_id = {m.id: m for m in every}
    assert by_id["swap_operator@56:11#0"].after == "-1.0 / (Y - P)"
    assert any(m.operator == "remove_transpose" and "X.transpose(0, 1)" in m.before
               for m in every)


def test_the_independent_judge_tells_equivalent_from_different():
    path, modules = list(sys.path), set(sys.modules)
    assert difference(SOURCE) is None
    assert sys.path == path and set(sys.modules) - modules <= {"reference.network"}
    same = SOURCE.replace("dLdW = torch.mm(B.transpose(0, 1), dLdC)",
                          "dLdW = torch.mm(B.transpose(1, 0), dLdC)")
    assert same != SOURCE and difference(same) is None
    wrong_sign = SOURCE.replace("dLdP = -1.0 * (Y - P)", "dLdP = Y - P")
    assert "weights['V'] differs" in difference(wrong_sign)
    mean = SOURCE.replace("dLdI = dLdA.sum(dim=0)", "dLdI = dLdA.mean(dim=0)")
    assert "weights['I'] differs" in difference(mean)
    in_place = SOURCE.replace("    X = X.to(dtype)\n    Y = Y.to(dtype)\n",
                              "    X = X.to(dtype)\n    Y = Y.to(dtype)\n    X.mul_(1.0)\n"
                              "    X[0, 0] = 7\n", 1)
    assert difference(in_place) == "trial 0: changed its inputs in place"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as shared:
        yield shared


def test_mutation_score(sandbox, record_property):
    every = mutants(SOURCE)
    full = os.environ.get("GRADKIT_MUTATION_FULL") == "1"
    selected = every if full else backward_pass_sample(every)
    assert len(selected) >= (300 if full else 80)
    assert {m.operator for m in selected} == OPERATORS
    result: Score = score(selected, sandbox=sandbox)
    record_property("mutation_score", result.summary())
    print(result.summary())
    missed = "\n".join(f"{o.mutant}: {o.difference}" for o in result.missed)
    assert not result.missed, f"gradkit passed mutants that differ from the reference:\n{missed}"
    alarms = "\n".join(f"{o.mutant}: {o.why}" for o in result.false_alarms)
    assert not result.false_alarms, f"gradkit failed mutants equivalent to the reference:\n{alarms}"
    assert result.ratio == 1.0
    assert result.non_equivalent >= len(selected) - 10  # most changes do change the behaviour
