"""The grader grades itself: mutants of the correct example must fail, or be shown equivalent.

``test_mutation_score`` grades a fixed sample through the real ``check`` and one worker: every
operator at every site of train_neural_net's backward pass (for variable swaps, the first swap at
each site), about 100 mutants. Set GRADKIT_MUTATION_FULL=1 to grade all of them (330, about two
minutes), as ``python -m gradkit.mutation`` does for the README's figure.

Any assignment's network: the names come from its description, and a sample of tanh_bce mutants
goes through ``python -m gradkit.mutation --assignment`` (real CLI, real sandbox), each killed or
passed as it changes the network or not.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gradkit.mutation import (DIAGNOSIS_OPERATORS, SCORE_OPERATORS, Mutant, Names, Score,
                              accepted_lines, benchmark_solutions, diagnosis_benchmark,
                              difference, judge_diagnosis, mutants, score)
from gradkit.sandbox import Sandbox
from reference.assignment import NOTEBOOK, load_assignment

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


# --- any assignment's network --------------------------------------------------------------

EXAMPLES = Path(__file__).parent.parent / "submissions_example"
TANH = load_assignment("tanh_bce")
TANH_CORRECT = EXAMPLES / "tanh_bce" / "correct.py"


def _mutation_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradkit.mutation", *args], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).parent.parent)


def test_the_names_are_the_assignment_s():
    """The notebook's are those the operators always used; another's are its own."""
    notebook = Names.of(NOTEBOOK)
    assert notebook.functions == ("train_neural_net", "neural_net_predict")
    assert notebook.parameters == ("V", "I", "W", "J")
    assert notebook.forward == ("A", "B", "C", "P")
    assert notebook.gradients == ("dLdP", "dPdC", "dLdC", "dLdB", "dBdA", "dLdA", "dLdW",
                                  "dLdJ", "dLdV", "dLdI")
    tanh = Names.of(TANH)
    assert tanh.functions == ("train", "predict")
    assert tanh.parameters == ("W1", "b1", "W2", "b2")
    assert tanh.forward == ("Z1", "A1", "Z2", "P")
    assert tanh.gradients == ("dLdP", "dA2dZ2", "dLdZ2", "dLdA1", "dA1dZ1", "dLdZ1", "dLdW2",
                              "dLdb2", "dLdW1", "dLdb1")


def test_the_mutants_of_another_assignment_use_its_functions_keys_and_names():
    source = TANH_CORRECT.read_text()
    assert mutants(source) == []  # no train_neural_net, no neural_net_predict
    every = mutants(source, assignment=TANH)
    assert {m.function for m in every} == {"train", "predict"}
    keys = {m.after for m in every if m.operator == "change_key"}
    assert keys == {"'W1'", "'b1'", "'W2'", "'b2'"}
    swapped = {(m.before, m.after) for m in every if m.operator == "change_variable"}
    assert ("Z1", "A1") in swapped and ("dLdZ2", "dLdZ1") in swapped
    assert all(a in Names.of(TANH).forward + Names.of(TANH).gradients for _, a in swapped)
    init_branch = _lines_of(source, "if not weights:", "W1, b1, W2, b2 = ")
    assert not any(m.line in init_branch for m in every)


def test_a_weights_only_condition_is_the_init_branch_too():
    """``if weights is None or len(weights) == 0:`` draws random weights: not mutated."""
    source = (EXAMPLES / "tanh_bce" / "correct_chain_rule.py").read_text()
    every = mutants(source, operators=DIAGNOSIS_OPERATORS, assignment=TANH)
    init_branch = _lines_of(source, "if weights is None or len(weights) == 0:",
                            "new = {name: value.clone()")
    assert len(init_branch) == 4 and every
    assert not any(m.line in init_branch[1:] for m in every)


def _lines_of(source: str, start_marker: str, end_marker: str) -> range:
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines, 1) if start_marker in line)
    end = next(i for i, line in enumerate(lines, 1) if end_marker in line)
    return range(start, end)


#: Mutants of tanh_bce/correct.py and what they do: True, the network computes something else
#: (gradkit must fail it); False, it computes the same (gradkit must pass it).
TANH_SAMPLE = {
    "swap_operator@38:12#0": True,  # dLdZ2 = P + Y
    "change_constant@42:23#1": True,  # tanh's derivative 1 - A1 ** 3
    "change_variable@44:18#0": True,  # dLdW1 = X.T @ dLdZ2, broadcast into W1's shape
    "change_key@51:8#0": True,  # W2's update returned under 'W1'
    "drop_term@59:25#1": True,  # predict without b2
    "swap_operator@41:12#0": False,  # dLdZ2 * W2.T: one output unit, the same product
    "change_constant@40:37#0": False,  # keepdim=False: the bias gradient broadcasts the same
    "drop_dim@40:12#0": False,  # dLdZ2.sum(): one output column, the same sum
}


def test_the_judge_knows_another_network():
    source = TANH_CORRECT.read_text()
    assert difference(source, assignment=TANH) is None
    by_id = {m.id: m for m in mutants(source, assignment=TANH)}
    for mutant_id, changes in TANH_SAMPLE.items():
        found = difference(by_id[mutant_id].source, assignment=TANH)
        assert (found is not None) == changes, (mutant_id, found)
    # judged as the notebook's network, the correct tanh solution does not even load
    assert "does not load" in difference(source)


def test_mutants_of_another_assignment_are_killed_as_their_semantics_say():
    """Through the real CLI and sandbox: every changed network fails, every same one passes."""
    only = [a for mutant_id in TANH_SAMPLE for a in ("--only", mutant_id)]
    done = _mutation_cli("--assignment", "tanh_bce", str(TANH_CORRECT), *only, "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    states = {mutant_id: state for state, mutant_id in
              re.findall(r"^(killed|equivalent|MISSED)\s+(\S+)", done.stdout, re.M)}
    assert states == {mutant_id: "killed" if changes else "equivalent"
                      for mutant_id, changes in TANH_SAMPLE.items()}
    assert "mutation score 100.0%: 5 of 5 non-equivalent mutants killed (8 mutants, 3 " \
           "equivalent, 0 equivalent ones failed)" in done.stdout


def test_an_assignment_file_with_names_of_its_own(tmp_path):
    """A description the tool has never seen: its functions, keys and shapes are used."""
    description = tmp_path / "course.toml"
    description.write_text(
        'name = "a course"\ninputs = 2\nloss = "bce"\n'
        'functions = { train = "fit", predict = "forward" }\n\n'
        '[[layers]]\nunits = 8\nactivation = "tanh"\nweight = "Wh"\nbias = "bh"\n\n'
        '[[layers]]\nunits = 1\nactivation = "sigmoid"\nweight = "Wo"\nbias = "bo"\n')
    source = TANH_CORRECT.read_text().replace("def train(", "def fit(").replace(
        "def predict(", "def forward(")
    for old, new in (("W1", "Wh"), ("b1", "bh"), ("W2", "Wo"), ("b2", "bo")):
        source = source.replace(f"'{old}'", f"'{new}'")
    solution = tmp_path / "solution.py"
    solution.write_text(source)
    course = load_assignment(description)
    assert difference(source, assignment=course) is None
    keys = {m.after for m in mutants(source, assignment=course) if m.operator == "change_key"}
    assert keys == {"'Wh'", "'bh'", "'Wo'", "'bo'"}
    done = _mutation_cli("--assignment", str(description), str(solution), "--only",
                         "change_key@51:8#0", "--only", "swap_operator@41:12#0", "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^killed\s+change_key@51:8#0 .*'Wo'\s+->\s+'Wh'", done.stdout, re.M)
    assert re.search(r"^equivalent\s+swap_operator@41:12#0", done.stdout, re.M)
    # the diagnosis benchmark needs solutions for a description it has none of
    done = _mutation_cli("--diagnosis", "--assignment", str(description))
    assert done.returncode == 2 and "give one or more correct solutions" in done.stderr


def test_an_unknown_assignment_is_a_usage_error():
    done = _mutation_cli("--diagnosis", "--assignment", "no_such_course")
    assert done.returncode == 2 and "no_such_course" in done.stderr


def test_each_bundled_assignment_has_styles_to_mutate():
    for name, least in (("tanh_bce", 3), ("relu_mse", 3), ("logistic", 3)):
        solutions = benchmark_solutions(load_assignment(name))
        assert len(solutions) >= least and all(p.parent.name == name for p in solutions)
        for path in solutions:
            assert "# gradkit-expect: verdict=pass" in path.read_text()
            assert difference(path.read_text(), assignment=load_assignment(name)) is None
    assert [p.name for p in benchmark_solutions(NOTEBOOK)] == [
        "correct.py", "matmul_operator.py", "renamed_variables.py", "numpy_inside.py"]


def test_the_diagnosis_benchmark_judges_another_assignment_s_report(sandbox):
    """A removed statement whose name is used later raises in every call of train: counted
    apart, from the assignment's own checks (gradient.W1 ... update), with the line that
    raised; a sign error is diagnosed and timed; an equivalent mutant passes."""
    every = {m.id: m for m in mutants(TANH_CORRECT.read_text(), operators=DIAGNOSIS_OPERATORS,
                                      assignment=TANH)}
    removed = next(i for i, m in every.items()
                   if m.operator == "delete_statement" and m.before.startswith("dLdW2 ="))
    assert every[removed].line == 39 and {39, 48} <= accepted_lines(every[removed])
    result = diagnosis_benchmark([TANH_CORRECT], assignment=TANH, sandbox=sandbox,
                                 only={removed, "swap_operator@38:12#0", "drop_dim@40:12#0"})
    assert result.assignment == "tanh_bce"
    by_id = {o.mutant.id: o for o in result.outcomes}
    assert set(by_id) == {removed, "swap_operator@38:12#0", "drop_dim@40:12#0"}
    assert by_id[removed].killed and by_id[removed].raised
    sign = by_id["swap_operator@38:12#0"]
    assert sign.killed and not sign.raised and sign.diagnoses and sign.seconds > 0
    assert not by_id["drop_dim@40:12#0"].killed
    assert result.diagnosed == [sign]
    text = "\n".join(result.lines() + result.slowest_lines())
    assert "assignment tanh_bce:" in text and "diagnosis time" in text
    assert "--assignment tanh_bce submissions_example/tanh_bce/correct.py --only " \
           "'swap_operator@38:12#0'" in text


def test_the_diagnosis_benchmark_runs_every_bundled_assignment():
    """``--assignment all``: a table for the notebook's and each other bundled assignment, each
    with the diagnosis time, then the slowest diagnoses with what grades each alone."""
    done = _mutation_cli("--diagnosis", "--assignment", "all", "--every", "100000")
    assert done.returncode == 0, done.stdout + done.stderr
    tables = re.findall(r"^assignment (\w+):", done.stdout, re.M)
    assert tables == ["notebook", "logistic", "relu_mse", "tanh_bce"]
    for name in ("correct_numpy.py", "correct_chain_rule.py", "correct_layers_loop.py",
                 "numpy_inside.py"):
        assert re.search(rf"^  {name} +1 mutants,", done.stdout, re.M), name
    assert done.stdout.count("diagnosis time (CPU, in-process) per failing submission: "
                             "median") >= 3
    assert "slowest diagnoses of notebook" in done.stdout


def test_raised_is_judged_on_the_assignment_s_own_checks():
    """A train mutant "raised" when every check of its function errs: for tanh_bce the
    gradients of W1, b1, W2, b2 and the update; one gradient that returned numbers means the
    report is judged on its diagnoses."""
    from gradkit.report import Check, Report, SourceLocation

    def report(statuses: dict[str, str]):
        checks = [Check.model_construct(id=check, status=status, location=SourceLocation(
            file="f", line=39)) for check, status in statuses.items()]
        return Report.model_construct(diagnoses=[], checks=checks, passed=False)

    mutant = Mutant(id="x", operator="delete_statement", function="train", line=39, before="",
                    after="", source=TANH_CORRECT.read_text(), statement=(39, 39))
    errors = {"gradient.W1": "error", "gradient.b1": "error", "gradient.W2": "error",
              "gradient.b2": "error", "update": "error"}
    outcome = judge_diagnosis("correct.py", mutant, report(errors), 0.0, TANH)
    assert outcome.raised and outcome.line_named  # the line that raised is the mutated one
    partly = {**errors, "gradient.W1": "fail"}
    outcome = judge_diagnosis("correct.py", mutant, report(partly), 0.0, TANH)
    assert not outcome.raised and not outcome.line_named  # no diagnosis names line 39
    # a predict mutant is judged on the predict check alone
    predicting = Mutant(id="y", operator="drop_term", function="predict", line=59, before="",
                        after="", source=TANH_CORRECT.read_text(), statement=(59, 59))
    outcome = judge_diagnosis("correct.py", predicting, report({**partly, "predict": "error"}),
                              0.0, TANH)
    assert outcome.raised
