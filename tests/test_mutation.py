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

from gradkit.mutation import (DIAGNOSIS_OPERATORS, SCORE_OPERATORS, Mutant, Score,
                              accepted_lines, diagnosis_benchmark, difference, judge_diagnosis,
                              mutants, score)
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
    init_branch = _lines_between("if not weights:", "else:")
    for mutant in every:
        assert mutant.source != SOURCE
        assert mutant.line not in init_branch  # random draws: checked for shape, not value
        ast.parse(mutant.source)
        # the change is spliced into the text: every line outside its statement is unchanged
        first, last = mutant.statement
        before, after = SOURCE.splitlines(), mutant.source.splitlines()
        assert len(before) == len(after)
        assert [i for i, (a, b) in enumerate(zip(before, after), 1) if a != b] and all(
            first <= i <= last for i, (a, b) in enumerate(zip(before, after), 1) if a != b)
    by_id = {m.id: m for m in every}
    assert by_id["swap_operator@56:11#0"].after == "-1.0 / (Y - P)"
    assert any(m.operator == "remove_transpose" and "X.transpose(0, 1)" in m.before
               for m in every)


def test_the_independent_judge_tells_equivalent_from_different():
    path, modules = list(sys.path), set(sys.modules)
    assert difference(SOURCE) is None
    # the course's helper modules are gone again (torch may import its own submodules lazily)
    assert sys.path == path and not {"helper", "nn_helper"} & (set(sys.modules) - modules)
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


STYLES = Path(__file__).parent.parent / "submissions_example" / "styles"


@pytest.mark.parametrize("name", ["matmul_operator.py", "renamed_variables.py", "numpy_inside.py"])
def test_the_diagnosis_operators_reach_other_styles(name):
    """``@``, ``.T``, ``matmul``/``dot``, other names, a mean for a sum, a missing statement."""
    source = (STYLES / name).read_text()
    score_only = mutants(source)
    every = mutants(source, operators=DIAGNOSIS_OPERATORS)
    assert {m.id for m in score_only} <= {m.id for m in every}
    operators = {m.operator for m in every}
    assert {"swap_neighbour", "swap_product", "remove_transpose", "change_reduction",
            "delete_statement"} <= operators
    for mutant in every:
        ast.parse(mutant.source)
        assert len(mutant.source.splitlines()) == len(source.splitlines())
        if mutant.operator == "delete_statement":
            assert mutant.source.splitlines()[mutant.line - 1].strip() == "pass"


def test_the_score_keeps_its_operators():
    assert len(mutants(SOURCE)) == 330  # the README's figure
    assert {m.operator for m in mutants(SOURCE)} == OPERATORS == SCORE_OPERATORS


def _mutant(operator: str, statement: tuple[int, int], source: str = SOURCE) -> Mutant:
    return Mutant(id="x", operator=operator, function="train_neural_net",
                  line=statement[0], before="", after="", source=source, statement=statement)


def test_a_diagnosis_names_the_line_and_states_the_edit_only_from_its_evidence():
    from gradkit.report import Diagnosis, Evidence, SourceLocation, Report

    def report(*diagnoses):
        return Report.model_construct(diagnoses=list(diagnoses), checks=[], passed=False)

    def diagnosis(code, line, **details):
        return Diagnosis(code=code, title="", message="the sign is flipped",
                         evidence=Evidence(details=details),
                         location=SourceLocation(file="f", line=line))

    mutant = _mutant("swap_operator", (70, 70))
    # the right line, but the evidence states no edit (the message's words do not count)
    outcome = judge_diagnosis("s.py", mutant, report(diagnosis("GK001", 70)), 0.0)
    assert outcome.line_named and not outcome.edit_stated
    outcome = judge_diagnosis("s.py", mutant, report(diagnosis("GK601", 70, edit={
        "kind": "sign"})), 0.0)
    assert outcome.line_named and outcome.edit_stated
    # a stated edit at another line does not count
    outcome = judge_diagnosis("s.py", mutant, report(diagnosis("GK601", 71, edit={
        "kind": "sign"})), 0.0)
    assert not outcome.line_named and not outcome.edit_stated
    # an edit of a kind the operator cannot make does not count
    outcome = judge_diagnosis("s.py", _mutant("change_key", (70, 70)), report(diagnosis(
        "GK601", 70, edit={"kind": "sign"})), 0.0)
    assert outcome.line_named and not outcome.edit_stated
    # a catalogue code is its named edit
    outcome = judge_diagnosis("s.py", mutant, report(diagnosis("GK201", 70)), 0.0)
    assert outcome.edit_stated
    # a removed statement may also be named at the function's return
    deleted = _mutant("delete_statement", (73, 73))
    assert 76 in accepted_lines(deleted) and 73 in accepted_lines(deleted)


def test_the_diagnosis_benchmark_grades_and_judges_real_mutants(sandbox):
    """A few mutants through the real check: killed ones are judged, and the time is taken."""
    result = diagnosis_benchmark([CORRECT], every=60, sandbox=sandbox)
    assert len(result.outcomes) >= 5 and result.diagnosed
    assert all(o.seconds > 0 for o in result.diagnosed)
    text = "\n".join(result.lines())
    assert "line named:" in text and "edit stated:" in text and "diagnosis time" in text
