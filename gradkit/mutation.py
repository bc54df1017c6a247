"""The grader grades itself: small changes to a correct solution must fail it.

``mutants`` makes every single change that a fixed set of operators can make to the syntax tree
of the student's two functions in a correct solution (swapped operators, changed constants,
dropped terms, removed or added transposes, swapped arguments, changed keys, indices, dims and
variables). ``difference`` compares a mutant with the reference network on many random inputs,
independently of gradkit's cases: a mutant that gradkit passes must be shown equivalent this way,
or gradkit has a blind spot. Every name they use (the two functions, the weights dict's keys,
the course's names for the activations and gradients, the shapes) is read from an assignment
description (``reference/assignments/*.toml``; by default the notebook's): ``Names.of``.

The mutation score is killed / non-equivalent mutants. ``python -m gradkit.mutation`` computes it
for every mutant (``--every K`` for a sample) and lists any survivor that is not equivalent;
``--assignment NAME_OR_FILE`` for another network. ``--diagnosis`` is the diagnosis benchmark.

Mutants are generated from a solution gradkit ships, not from student code, so ``difference``
runs them in this process.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from reference.assignment import NOTEBOOK, Assignment, load_assignment, step_ids

SHIMS = Path(__file__).parent / "shims"
ROOT = Path(__file__).resolve().parent.parent
_SWAPPED = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
            ast.Pow: ast.Mult, ast.MatMult: ast.Mult}


@dataclass(frozen=True)
class Names:
    """What the operators change and the judges read, in an assignment's own words."""

    train: str  # the student's two functions
    predict: str
    #: the weights dict's keys, in the order of the draws (the notebook's V, I, W, J)
    parameters: tuple[str, ...]
    #: the course's names of Z1, A1, ..., ZL, AL (the notebook's A, B, C, P)
    forward: tuple[str, ...]
    #: the course's names of the chain's gradients in the order of the backward pass, then of
    #: the parameters' gradients (the notebook's dLdP, dPdC, dLdC, dLdB, dBdA, dLdA, then
    #: dLdW, dLdJ, dLdV, dLdI)
    gradients: tuple[str, ...]

    @classmethod
    def of(cls, assignment: Assignment) -> "Names":
        ids = step_ids(assignment)
        of_parameters = {"dLd" + i for i in assignment.parameter_ids.values()}
        backward = [i for i in ids if i.startswith("d")]
        ordered = [i for i in backward if i not in of_parameters] + \
            [i for i in backward if i in of_parameters]
        return cls(train=assignment.functions.train, predict=assignment.functions.predict,
                   parameters=assignment.parameter_names,
                   forward=tuple(assignment.name_of(i) for i in ids if i[0] in "ZA"),
                   gradients=tuple(assignment.name_of(i) for i in ordered))

    @property
    def functions(self) -> tuple[str, str]:
        return self.train, self.predict


@dataclass(frozen=True)
class Mutant:
    """One single-point change of the solution."""

    id: str  # operator@line:column#variant, stable for a given solution
    operator: str
    function: str
    line: int
    before: str  # the changed expression, before and after
    after: str
    source: str  # the whole mutated file, its lines where the original's are
    #: the lines of the statement the change is in (first, last)
    statement: tuple[int, int] = (0, 0)

    def __str__(self) -> str:
        return f"{self.id} ({self.function}, line {self.line}): {self.before}  ->  {self.after}"


def _replacements(node: ast.AST, scope: frozenset[str], operators: frozenset[str],
                  names: Names, order: tuple[str, ...] = ()) -> Iterator[tuple[str, ast.AST]]:
    """(operator, replacement) for every change the operators make to ``node`` itself.

    ``order`` is the function's own variables in the order it first assigns them: with the
    ``swap_neighbour`` operator, a name is also replaced by the one assigned just before or just
    after it (another operand from the student's own intermediates, whatever they are named).
    """
    for operator, replacement in _all_replacements(node, scope, names, order):
        if operator in operators:
            yield operator, replacement


def _transposed(node: ast.expr) -> ast.expr:
    return ast.Attribute(node, "T", ast.Load())


def _all_replacements(node: ast.AST, scope: frozenset[str], names: Names,
                      order: tuple[str, ...]) -> Iterator[tuple[str, ast.AST]]:
    if isinstance(node, ast.BinOp):
        if type(node.op) in _SWAPPED:
            yield "swap_operator", ast.BinOp(node.left, _SWAPPED[type(node.op)](), node.right)
        if isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            yield "drop_term", node.left
            yield "drop_term", node.right
        if isinstance(node.op, ast.MatMult):
            yield "swap_product", ast.BinOp(node.right, ast.MatMult(), node.left)
            yield "add_transpose_product", ast.BinOp(_transposed(node.left), ast.MatMult(),
                                                     node.right)
            yield "add_transpose_product", ast.BinOp(node.left, ast.MatMult(),
                                                     _transposed(node.right))
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = node.value
        for new in dict.fromkeys([-value if value else 1, value + 1, value - 1, value * 2]):
            if new != value:
                yield "change_constant", ast.Constant(type(value)(new))
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        yield "change_constant", ast.Constant(not node.value)
    elif isinstance(node, ast.Constant) and node.value in names.parameters:
        for key in names.parameters:
            if key != node.value:
                yield "change_key", ast.Constant(key)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        group = names.forward if node.id in names.forward else names.gradients \
            if node.id in names.gradients else ()
        for name in group:
            if name != node.id and name in scope:
                yield "change_variable", ast.Name(name, ast.Load())
        if not group and node.id in order:
            at = order.index(node.id)
            for neighbour in dict.fromkeys(order[max(at - 1, 0):at + 2]):
                if neighbour != node.id:
                    yield "swap_neighbour", ast.Name(neighbour, ast.Load())
    elif isinstance(node, ast.Attribute) and node.attr == "T" and isinstance(node.ctx, ast.Load):
        yield "remove_transpose", node.value
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        method = node.func.attr
        if method in ("transpose", "t"):
            yield "remove_transpose", node.func.value
        if method == "mm" and len(node.args) == 2:
            a, b = node.args
            yield "swap_arguments", ast.Call(node.func, [b, a], node.keywords)
            for index in (0, 1):
                args = list(node.args)
                args[index] = ast.Call(ast.Attribute(args[index], "transpose", ast.Load()),
                                       [ast.Constant(0), ast.Constant(1)], [])
                yield "add_transpose", ast.Call(node.func, args, node.keywords)
        elif method in ("matmul", "dot") and len(node.args) == 2:
            a, b = node.args
            yield "swap_product", ast.Call(node.func, [b, a], node.keywords)
        elif method == "dot" and len(node.args) == 1:  # a.dot(b)
            yield "swap_product", ast.Call(ast.Attribute(node.args[0], "dot", ast.Load()),
                                           [node.func.value], node.keywords)
        if method == "sum" and node.keywords:
            yield "drop_dim", ast.Call(node.func, node.args, [])
        if method == "sum":
            yield "change_reduction", ast.Call(ast.Attribute(node.func.value, "mean",
                                                             ast.Load()), node.args,
                                               node.keywords)
    if isinstance(node, ast.Call) and node.keywords and not (
            isinstance(node.func, ast.Attribute) and node.func.attr == "sum"):
        for index, keyword in enumerate(node.keywords):
            if keyword.arg == "deriv":
                kept = node.keywords[:index] + node.keywords[index + 1:]
                yield "drop_argument", ast.Call(node.func, node.args, kept)


def _assigned(function: ast.FunctionDef) -> frozenset[str]:
    names = {arg.arg for arg in function.args.args}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return frozenset(names)


def _in_init_branch(function: ast.FunctionDef) -> set[int]:
    """ids of the nodes inside ``if not weights:`` (random draws: not compared by value), or
    an ``if`` that reads nothing but the weights argument (``if weights is None or
    len(weights) == 0:``)."""
    arguments = [a.arg for a in function.args.args]
    weights = arguments[2] if len(arguments) > 2 else "weights"
    skipped: set[int] = set()
    for node in ast.walk(function):
        if not isinstance(node, ast.If):
            continue
        read = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
        if (isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)) or (
                weights in read and read <= {weights, "len"}):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


#: The operators of the mutation score (README "Mutation score").
SCORE_OPERATORS = frozenset({"swap_operator", "drop_term", "change_constant", "change_key",
                             "change_variable", "remove_transpose", "add_transpose",
                             "swap_arguments", "drop_dim", "drop_argument"})
#: The diagnosis benchmark's: also the operands and products of solutions in other styles
#: (``@``, ``.T``, ``matmul``, ``dot``, other names), a mean for a sum, and a missing statement.
DIAGNOSIS_OPERATORS = SCORE_OPERATORS | {"swap_neighbour", "swap_product",
                                         "add_transpose_product", "change_reduction",
                                         "delete_statement"}


def _variable_order(function: ast.FunctionDef, skipped: set[int]) -> tuple[str, ...]:
    """The names ``function`` assigns outside its init branch, in order of first assignment."""
    first: dict[str, tuple[int, int]] = {}
    for node in ast.walk(function):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            here = (node.lineno, node.col_offset)
            if node.id not in first or here < first[node.id]:
                first[node.id] = here
    return tuple(sorted(first, key=first.__getitem__))


def _innermost_statements(function: ast.FunctionDef) -> dict[int, ast.stmt]:
    """For every node of ``function``'s body, the innermost statement that holds it."""
    statements = [n for n in ast.walk(function) if isinstance(n, ast.stmt) and n is not function]
    # outer statements first, so a nested statement overwrites its parent's claim
    statements.sort(key=lambda s: (s.lineno, -(s.end_lineno or s.lineno), s.col_offset))
    holder: dict[int, ast.stmt] = {}
    for statement in statements:
        for inner in ast.walk(statement):
            holder[id(inner)] = statement
    return holder


def mutants(source: str, operators: frozenset[str] = SCORE_OPERATORS, *,
            assignment: Optional[Assignment] = None) -> list[Mutant]:
    """Every distinct single-point mutant of the assignment's two functions in ``source``
    (default: the notebook's), in source order.

    The branch that draws fresh weights (``if not weights:``) is left alone: its draws are
    random, so gradkit checks their shapes and dtype, not their values. Each mutant's source is
    the original's text with the one expression replaced (a removed statement becomes
    ``pass``), so every other line keeps its number and ``Mutant.statement`` is where the
    change is in the mutant's own file.
    """
    names = Names.of(assignment or NOTEBOOK)
    tree = ast.parse(source)
    lines = source.encode().splitlines(keepends=True)
    found: dict[str, Mutant] = {}
    seen = {ast.unparse(f) for f in tree.body if isinstance(f, ast.FunctionDef)}
    for function in tree.body:
        if not (isinstance(function, ast.FunctionDef) and function.name in names.functions):
            continue
        scope = _assigned(function)
        skipped = _in_init_branch(function)
        # defaults and annotations are not what gradkit calls: it passes every argument
        skipped.update(id(n) for n in ast.walk(function.args))
        order = _variable_order(function, skipped) if "swap_neighbour" in operators else ()
        parents = {id(child): (node, field, position)
                   for node in ast.walk(function)
                   for field, value in ast.iter_fields(node)
                   for position, child in (enumerate(value) if isinstance(value, list)
                                           else [(None, value)])
                   if isinstance(child, ast.AST)}
        holder = _innermost_statements(function)
        candidates: list[tuple[str, ast.AST, ast.AST, str]] = []
        for node in ast.walk(function):
            if id(node) in skipped or id(node) not in parents or isinstance(node, ast.expr_context):
                continue
            parent, field, position = parents[id(node)]
            if isinstance(parent, ast.Expr) or field == "returns":  # docstring, annotation
                continue
            if isinstance(node, ast.stmt):
                continue
            for variant, (operator, replacement) in enumerate(
                    _replacements(node, scope, operators, names, order)):
                candidates.append((f"{operator}@{node.lineno}:{node.col_offset}#{variant}",
                                   node, replacement, operator))
        if "delete_statement" in operators:
            for statement in ast.walk(function):
                if id(statement) in skipped or not isinstance(
                        statement, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                    continue
                candidates.append((f"delete_statement@{statement.lineno}:"
                                   f"{statement.col_offset}#0", statement, ast.Pass(),
                                   "delete_statement"))
        for mutant_id, node, replacement, operator in candidates:
            text = _splice(lines, node, replacement)
            try:
                mutated = ast.parse(text)
            except SyntaxError:
                continue
            function_text = next(ast.unparse(f) for f in mutated.body
                                 if isinstance(f, ast.FunctionDef) and f.name == function.name)
            if function_text in seen:  # the original, or a change another mutant already makes
                continue
            seen.add(function_text)
            statement = node if isinstance(node, ast.stmt) else holder.get(id(node))
            span = (statement.lineno, statement.end_lineno or statement.lineno) \
                if statement is not None else (node.lineno, node.lineno)
            found[mutant_id] = Mutant(
                id=mutant_id, operator=operator, function=function.name, line=node.lineno,
                before=ast.unparse(node), after=ast.unparse(replacement), source=text,
                statement=span)
    return list(found.values())


def _splice(lines: list[bytes], node: ast.AST, replacement: ast.AST) -> str:
    """The source with ``node``'s text replaced by ``replacement`` (parenthesised), every other
    line where it was. A replaced statement keeps its line count (``pass`` and blank lines)."""
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    start, end = node.col_offset, node.end_col_offset or 0
    if isinstance(replacement, ast.stmt):
        text = ast.unparse(replacement) + "\n" * (last - first)
    else:
        text = "(" + ast.unparse(replacement) + ")"
    head = lines[first][:start]
    tail = lines[last][end:]
    return b"".join(lines[:first] + [head + text.encode() + tail] + lines[last + 1:]).decode()


# --- an independent judge: the reference on many random inputs --------------------------------

def load_functions(source: str, assignment: Optional[Assignment] = None
                   ) -> tuple[Callable, Callable]:
    """The assignment's train and predict functions of ``source`` (default: the notebook's
    ``train_neural_net`` and ``neural_net_predict``), run in this process.

    The course's helper modules are importable while it loads; sys.path is left as it was, and
    sys.modules without them.
    """
    path, modules = list(sys.path), set(sys.modules)
    sys.path.append(str(SHIMS))
    try:
        module = types.ModuleType("gradkit_mutant")
        exec(compile(source, "<mutant>", "exec"), module.__dict__)
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:  # the helper modules found through SHIMS
            if str(getattr(sys.modules[name], "__file__", "")).startswith(str(SHIMS)):
                del sys.modules[name]
    names = Names.of(assignment or NOTEBOOK)
    return getattr(module, names.train), getattr(module, names.predict)


def difference(source: str, trials: int = 60, seed: int = 20180703,
               assignment: Optional[Assignment] = None) -> Optional[str]:
    """How ``source`` behaves differently from the assignment's reference network (default: the
    notebook's), or None if it does not.

    Random batches of 1 to 64 rows in float64 and float32 (0/1 and fractional labels, weights of
    several scales, learning rates from 0.01 to 4), each compared on the returned weights, the
    predictions, their dtypes and shapes, and on the inputs left untouched.
    """
    import torch

    from reference import network

    assignment = assignment or NOTEBOOK
    try:
        train, predict = load_functions(source, assignment)
    except Exception as exc:
        return f"does not load: {type(exc).__name__}: {exc}"
    g = torch.Generator().manual_seed(seed)
    sizes = (1, 2, 3, 5, 8, 32, 64)
    for trial in range(trials):
        n = sizes[trial % len(sizes)]
        dtype = torch.float64 if trial % 3 else torch.float32
        scale = (0.3, 1.0, 3.0)[trial % 3]
        lr = (0.01, 1.0, 4.0, 0.5)[trial % 4]
        X = (torch.randn(n, assignment.inputs, generator=g, dtype=torch.float64) * 2).to(dtype)
        outputs = assignment.outputs
        Y = (torch.rand(n, outputs, generator=g, dtype=torch.float64) if trial % 5 == 0 else
             torch.randint(0, 2, (n, outputs), generator=g).to(torch.float64)).to(dtype)
        weights = {name: (torch.randn(*shape, generator=g, dtype=torch.float64) * scale)
                   .to(dtype) for name, shape in assignment.parameter_shapes.items()}
        rtol, atol = (1e-9, 1e-12) if dtype == torch.float64 else (1e-5, 1e-6)
        if assignment.loss == "bce" and _saturated(assignment, X, weights):
            continue
        given = {k: v.clone() for k, v in weights.items()}
        Xc, Yc = X.clone(), Y.clone()
        try:
            got = train(Xc, Yc, given, lr)
            seen = predict(Xc, {k: v.clone() for k, v in weights.items()})
        except Exception as exc:
            return f"trial {trial} (n={n}, {dtype}): raised {type(exc).__name__}: {exc}"
        want = network.train(assignment, X, Y, {k: v.clone() for k, v in weights.items()}, lr)
        expected_P = network.predict(assignment, X, weights)
        if not (torch.equal(Xc, X) and torch.equal(Yc, Y)
                and all(torch.equal(given[k], weights[k]) for k in weights)):
            return f"trial {trial}: changed its inputs in place"
        if not isinstance(got, dict) or sorted(got) != sorted(want):
            return f"trial {trial}: returned {type(got).__name__} " \
                   f"{sorted(got) if isinstance(got, dict) else ''}"
        for name in want:
            problem = _differ(got[name], want[name], rtol, atol)
            if problem:
                return f"trial {trial} (n={n}, {dtype}, lr={lr}): weights[{name!r}] {problem}"
        problem = _differ(seen, expected_P, rtol, atol)
        if problem:
            return f"trial {trial} (n={n}, {dtype}): prediction {problem}"
    return None


def _saturated(assignment: Assignment, X, weights) -> bool:
    """Whether a sigmoid output rounds to 0 or 1 in X's dtype on some row: there the binary
    cross-entropy's chain rule as students write it, -Y/P + (1 - Y)/(1 - P), divides by zero,
    a correct solution cannot be told from a wrong one, and the trial is left out."""
    import torch

    from reference import network

    P = network.predict(assignment, X.double(), {k: v.double() for k, v in weights.items()})
    return bool((torch.minimum(P, 1 - P) < torch.finfo(X.dtype).eps).any())


def _differ(actual, expected, rtol: float, atol: float) -> Optional[str]:
    import torch

    if not isinstance(actual, torch.Tensor):
        return f"is a {type(actual).__name__}"
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return f"is {tuple(actual.shape)} {actual.dtype}, expected {tuple(expected.shape)} " \
               f"{expected.dtype}"
    if not torch.allclose(actual.double(), expected.double(), rtol=rtol, atol=atol,
                          equal_nan=False):
        worst = float((actual.double() - expected.double()).abs().max())
        return f"differs by up to {worst:.3g}"
    return None


# --- the score -----------------------------------------------------------------------------

@dataclass
class Outcome:
    mutant: Mutant
    killed: bool
    why: str  # the first failing check's message, or "passed"
    difference: Optional[str]  # None: equivalent to the reference

    @property
    def equivalent(self) -> bool:
        return self.difference is None


@dataclass
class Score:
    outcomes: list[Outcome]
    seconds: float

    @property
    def killed(self) -> int:
        return sum(o.killed for o in self.outcomes)

    @property
    def non_equivalent(self) -> int:
        return sum(not o.equivalent for o in self.outcomes)

    @property
    def missed(self) -> list[Outcome]:
        """Survivors that behave differently from the reference: gradkit's blind spots."""
        return [o for o in self.outcomes if not o.killed and not o.equivalent]

    @property
    def false_alarms(self) -> list[Outcome]:
        """Mutants equivalent to the reference that gradkit failed."""
        return [o for o in self.outcomes if o.killed and o.equivalent]

    @property
    def ratio(self) -> float:
        killed = sum(o.killed for o in self.outcomes if not o.equivalent)
        return killed / self.non_equivalent if self.non_equivalent else 1.0

    def summary(self) -> str:
        return (f"mutation score {self.ratio:.1%}: {self.non_equivalent - len(self.missed)} of "
                f"{self.non_equivalent} non-equivalent mutants killed ({len(self.outcomes)} "
                f"mutants, {len(self.outcomes) - self.non_equivalent} equivalent, "
                f"{len(self.false_alarms)} equivalent ones failed) in {self.seconds:.0f} s")


def score(selected: list[Mutant], sandbox=None, workdir: Optional[Path] = None,
          progress: Optional[Callable[[Outcome], None]] = None,
          assignment: Optional[Assignment] = None) -> Score:
    """Grade every mutant with ``gradkit.check`` and judge each against the reference, both for
    ``assignment`` (default: the notebook's)."""
    import tempfile

    from gradkit.api import check
    from gradkit.sandbox import Sandbox

    assignment = assignment or NOTEBOOK
    started = time.monotonic()
    own = sandbox is None
    sandbox = sandbox or Sandbox()
    outcomes = []
    try:
        with tempfile.TemporaryDirectory(prefix="gradkit-mutants-", dir=workdir) as folder:
            for mutant in selected:
                path = Path(folder) / "solution.py"  # alone in its folder: no siblings
                path.write_text(mutant.source)
                report = check(path, assignment=assignment, sandbox=sandbox)
                if report.error is not None:
                    raise RuntimeError(f"gradkit failed on mutant {mutant}: {report.error}")
                failing = [c for c in report.checks if c.status in ("fail", "error")]
                why = f"{failing[0].id}: {failing[0].message}" if failing else "passed"
                outcome = Outcome(mutant, not report.passed, why,
                                  difference(mutant.source, assignment=assignment))
                outcomes.append(outcome)
                if progress:
                    progress(outcome)
    finally:
        if own:
            sandbox.close()
    return Score(outcomes, time.monotonic() - started)


# --- the diagnosis benchmark ---------------------------------------------------------------

#: Correct solutions in different styles the diagnosis benchmark mutates for the notebook (from
#: the repository's root): the notebook's torch.mm, ``@`` and ``.T``, other names, NumPy inside.
DIAGNOSIS_SOLUTIONS = ("submissions_example/correct.py",
                       "submissions_example/styles/matmul_operator.py",
                       "submissions_example/styles/renamed_variables.py",
                       "submissions_example/styles/numpy_inside.py")
EXAMPLES = ROOT / "submissions_example"


def bundled_name(assignment: Assignment) -> Optional[str]:
    """The bundled description ``assignment`` was read from (``tanh_bce``), or None."""
    from reference.assignment import bundled

    for name, path in bundled().items():
        if assignment.path and Path(assignment.path).resolve() == Path(path).resolve():
            return name
    return "notebook" if assignment.is_notebook else None


def benchmark_solutions(assignment: Assignment) -> list[Path]:
    """The correct solutions in different styles the benchmark mutates for ``assignment``: the
    notebook's four, or a bundled assignment's ``submissions_example/<name>/correct*.py``.
    Raises ValueError for a description with none (give the solutions yourself)."""
    name = bundled_name(assignment)
    if assignment.is_notebook:
        return [ROOT / s for s in DIAGNOSIS_SOLUTIONS]
    found = sorted((EXAMPLES / name).glob("correct*.py")) if name else []
    if not found:
        raise ValueError(f"no bundled correct solutions for the assignment {assignment.name!r} "
                         f"({assignment.path or 'not a file'}): give one or more correct "
                         "solutions of it on the command line")
    return found


#: What a diagnosis may say a mutation did, by operator: the edit kinds (``EDIT_KINDS``) that
#: describe the change. A diagnosis "states the edit" when its ``evidence.details['edit']['kind']``
#: (or, for a catalogue entry without one, the kind its code names: ``CODE_EDITS``) is one of
#: these. ``+`` for ``-`` flips a term's sign; a changed constant scales, flips or moves an axis;
#: a swapped name is another operand (or, where it drops a factor, that); and so on.
OPERATOR_EDITS: dict[str, frozenset[str]] = {
    "swap_operator": frozenset({"sign", "operation", "factor", "learning_rate"}),
    "drop_term": frozenset({"drop_factor", "derivative", "operand", "factor", "sign",
                            "learning_rate", "missing", "activation"}),
    "change_constant": frozenset({"factor", "sign", "reduction", "learning_rate", "transpose",
                                  "derivative"}),
    "change_key": frozenset({"operand", "missing"}),
    "change_variable": frozenset({"operand", "derivative", "drop_factor", "activation"}),
    "swap_neighbour": frozenset({"operand", "derivative", "drop_factor", "activation"}),
    "remove_transpose": frozenset({"transpose", "operand"}),
    "add_transpose": frozenset({"transpose", "operand"}),
    "add_transpose_product": frozenset({"transpose", "operand"}),
    "swap_arguments": frozenset({"transpose", "operand"}),
    "swap_product": frozenset({"transpose", "operand"}),
    "drop_dim": frozenset({"reduction"}),
    "change_reduction": frozenset({"reduction", "factor"}),
    "drop_argument": frozenset({"derivative", "activation", "operand"}),
    "delete_statement": frozenset({"missing", "operand", "drop_factor", "derivative",
                                   "activation", "order"}),
}


def stated_edit(diagnosis) -> Optional[str]:
    """The kind of edit a report's diagnosis states, read from its evidence (never its text):
    ``details['edit']['kind']``, else the kind its catalogue code names, else, for a fitted
    factor, "factor" (or "sign" for -1)."""
    from gradkit.diagnosis.catalogue import CODE_EDITS

    edit = diagnosis.evidence.details.get("edit")
    if isinstance(edit, dict) and edit.get("kind"):
        return str(edit["kind"])
    if diagnosis.code in CODE_EDITS:
        return CODE_EDITS[diagnosis.code]
    factor = diagnosis.evidence.factor
    if factor is not None:
        return "sign" if factor == -1.0 else "factor"
    return None


@dataclass
class DiagnosisOutcome:
    """One mutant graded, and whether its diagnoses name its line and state its edit."""

    solution: str
    mutant: Mutant
    killed: bool
    #: every graded call of the mutated function raised: no numbers to diagnose
    raised: bool
    line_named: bool
    edit_stated: bool
    diagnoses: list[tuple[str, Optional[int], Optional[str]]]  # code, line, edit kind
    seconds: float  # CPU time of ``diagnose`` for this report

    def describe(self) -> str:
        said = ", ".join(f"{c}@{line} {kind or '-'}" for c, line, kind in self.diagnoses) or \
            "no diagnosis"
        return (f"{Path(self.solution).name}:{self.mutant.statement[0]} "
                f"{self.mutant.operator}: {self.mutant.before}  ->  {self.mutant.after}  "
                f"[{said}]")


def accepted_lines(mutant: Mutant) -> set[int]:
    """The lines a diagnosis of ``mutant`` may name: its statement's; for a removed statement
    also the function's ``return``, where the value it should have changed goes out. Read from
    the mutant's own syntax tree, whatever the assignment calls its functions and weights."""
    first, last = mutant.statement
    lines = set(range(first, last + 1))
    if mutant.operator == "delete_statement":
        tree = ast.parse(mutant.source)
        for function in tree.body:
            if isinstance(function, ast.FunctionDef) and function.name == mutant.function:
                lines |= {n.lineno for n in ast.walk(function) if isinstance(n, ast.Return)}
    return lines


def judge_diagnosis(solution: str, mutant: Mutant, report, seconds: float,
                    assignment: Optional[Assignment] = None) -> DiagnosisOutcome:
    """Whether ``report`` (the mutant's, graded for ``assignment``, default the notebook's)
    names the mutated line and states the edit. A mutant "raised" when every check of the
    function it changes (train: each parameter's gradient and the update; predict: predict)
    is an error."""
    names = Names.of(assignment or NOTEBOOK)
    lines = accepted_lines(mutant)
    kinds = OPERATOR_EDITS.get(mutant.operator, frozenset())
    said = [(d.code, d.location.line if d.location else None, stated_edit(d))
            for d in report.diagnoses]
    checks = {c.id: c for c in report.checks}
    own = (*(f"gradient.{name}" for name in names.parameters), "update") \
        if mutant.function == names.train else ("predict",)
    ran = [checks[c] for c in own if c in checks]
    raised = bool(ran) and all(c.status == "error" for c in ran)
    line_named = any(line in lines for _, line, _ in said)
    edit_stated = any(line in lines and kind in kinds for _, line, kind in said)
    if raised:  # the report names the line that raised, in the failing check
        line_named = any(c.location is not None and c.location.line in lines for c in ran)
    return DiagnosisOutcome(solution, mutant, not report.passed, raised, line_named,
                            edit_stated, said, seconds)


@dataclass
class DiagnosisScore:
    outcomes: list[DiagnosisOutcome]
    seconds: float
    assignment: str = "notebook"  # the bundled name, or the description's path

    @property
    def diagnosed(self) -> list[DiagnosisOutcome]:
        """Killed mutants whose calls returned numbers: what diagnosis is measured on."""
        return [o for o in self.outcomes if o.killed and not o.raised]

    @property
    def line_rate(self) -> float:
        return _rate([o.line_named for o in self.diagnosed])

    @property
    def edit_rate(self) -> float:
        return _rate([o.edit_stated for o in self.diagnosed])

    def worst(self, count: int = 15) -> list[DiagnosisOutcome]:
        """Diagnosed mutants whose line is not named first, then those whose edit is not
        stated."""
        missing = [o for o in self.diagnosed if not o.line_named] + \
            [o for o in self.diagnosed if o.line_named and not o.edit_stated]
        return missing[:count]

    def slowest(self, count: int = 5) -> list[DiagnosisOutcome]:
        """The diagnosed mutants whose diagnosis took the most CPU time, slowest first."""
        return sorted(self.diagnosed, key=lambda o: -o.seconds)[:count]

    def times(self) -> dict[str, float]:
        """Seconds of ``diagnose`` per failing submission that returned numbers: median, 95th
        percentile (nearest rank) and max; empty when none."""
        times = sorted(o.seconds for o in self.diagnosed)
        if not times:
            return {}
        return {"median": times[len(times) // 2], "p95": times[int(len(times) * 0.95)],
                "max": times[-1]}

    def lines(self) -> list[str]:
        out = [f"assignment {self.assignment}:"]
        for solution in dict.fromkeys(o.solution for o in self.outcomes):
            mine = [o for o in self.diagnosed if o.solution == solution]
            every = [o for o in self.outcomes if o.solution == solution]
            out.append(f"  {Path(solution).name:24} {len(every):4} mutants, "
                       f"{sum(o.killed for o in every):4} killed, "
                       f"{sum(o.raised for o in every if o.killed):3} raised, "
                       f"line {_rate([o.line_named for o in mine]):6.1%}, "
                       f"edit {_rate([o.edit_stated for o in mine]):6.1%}")
        raised = [o for o in self.outcomes if o.killed and o.raised]
        out += [f"line named:  {self.line_rate:6.1%} of {len(self.diagnosed)} killed mutants "
                f"that returned numbers (target >= 90%)",
                f"edit stated: {self.edit_rate:6.1%} (target >= 80%)",
                f"raised:      {len(raised)} killed mutants raised in every call; the report "
                f"names the line in {_rate([o.line_named for o in raised]):.1%}"]
        times = self.times()
        if times:
            slowest = self.slowest(1)[0]
            out.append(f"diagnosis time (CPU, in-process) per failing submission: median "
                       f"{times['median'] * 1e3:.1f} ms, 95th percentile "
                       f"{times['p95'] * 1e3:.1f} ms, max "
                       f"{times['max'] * 1e3:.1f} ms (target < 150 ms); slowest: "
                       f"{Path(slowest.solution).name}:{slowest.mutant.statement[0]} "
                       f"{slowest.mutant.operator}")
        out.append(f"{len(self.outcomes)} mutants graded in {self.seconds:.0f} s")
        return out

    def slowest_lines(self, count: int = 5) -> list[str]:
        """The slowest diagnoses, each with what reproduces it alone (``--only``)."""
        out = []
        for outcome in self.slowest(count):
            mutant = outcome.mutant
            solution = Path(outcome.solution)
            shown = solution.relative_to(ROOT) if solution.is_relative_to(ROOT) else solution
            out.append(f"  {outcome.seconds * 1e3:7.1f} ms  {shown}:{mutant.statement[0]} "
                       f"{mutant.id}  {mutant.before}  ->  {mutant.after}")
            out.append(f"             python -m gradkit.mutation --diagnosis --assignment "
                       f"{self.assignment} {shown} --only '{mutant.id}' -v")
        return out


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 1.0


def diagnosis_benchmark(solutions: list[Path], *, assignment: Optional[Assignment] = None,
                        every: int = 1, only: Optional[set[str]] = None, sandbox=None,
                        save: Optional[Path] = None,
                        progress: Optional[Callable[[DiagnosisOutcome], None]] = None
                        ) -> DiagnosisScore:
    """Grade every ``DIAGNOSIS_OPERATORS`` mutant of each solution of ``assignment`` (default:
    the notebook's; ``every``-th only, or those whose id is in ``only``) with the real
    ``check`` in one sandbox, and judge each killed mutant's diagnoses. ``save``: a folder to
    write each graded mutant's source into, to grade or profile it again."""
    import gc
    import tempfile

    import gradkit.diagnosis.diagnose as diagnose_module
    from gradkit.api import check
    from gradkit.sandbox import Sandbox

    import torch

    assignment = assignment or NOTEBOOK
    torch.set_num_threads(1)  # as gradkit check and every grading process do
    started = time.monotonic()
    own = sandbox is None
    sandbox = sandbox or Sandbox()
    timing: list[float] = []
    original = diagnose_module.diagnose

    def timed(*args, **kwargs):
        begun = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            timing.append(time.thread_time() - begun)

    outcomes = []
    diagnose_module.diagnose = timed  # check() imports it from the module at each call
    try:
        with tempfile.TemporaryDirectory(prefix="gradkit-diagnosis-") as folder:
            for solution in solutions:
                source = Path(solution).read_text()
                selected = mutants(source, operators=DIAGNOSIS_OPERATORS, assignment=assignment)
                selected = [m for m in selected if m.id in only] if only else selected[::every]
                for mutant in selected:
                    path = Path(folder) / Path(solution).name
                    path.write_text(mutant.source)
                    if save is not None:
                        save.mkdir(parents=True, exist_ok=True)
                        (save / f"{Path(solution).stem}__{_file_name(mutant.id)}.py").write_text(
                            mutant.source)
                    # What earlier mutants left is not this one's cost: collected here, and
                    # every survivor frozen, so no collection inside ``diagnose`` walks the
                    # whole heap (it made some diagnoses 3 to 5 times slower than graded
                    # alone; README "The diagnosis benchmark"). After the first, cheap.
                    gc.collect()
                    gc.freeze()
                    timing.clear()
                    report = check(path, assignment=assignment, sandbox=sandbox)
                    if report.error is not None:
                        raise RuntimeError(f"gradkit failed on mutant {mutant}: {report.error}")
                    outcome = judge_diagnosis(str(solution), mutant, report, sum(timing),
                                              assignment)
                    outcomes.append(outcome)
                    if progress:
                        progress(outcome)
    finally:
        diagnose_module.diagnose = original
        gc.unfreeze()
        if own:
            sandbox.close()
    return DiagnosisScore(outcomes, time.monotonic() - started,
                          bundled_name(assignment) or str(assignment.path))


def _file_name(mutant_id: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in mutant_id)


def _assignments(spec: Optional[str]) -> list[Assignment]:
    """``--assignment``: a bundled name or a file; ``all`` for the notebook's and every other
    bundled one."""
    from reference.assignment import bundled

    if spec == "all":
        names = ["notebook", *sorted(n for n in bundled() if n != "notebook")]
        return [load_assignment(n) for n in names]
    return [load_assignment(spec) if spec else NOTEBOOK]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradkit.mutation", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("solution", nargs="*", type=Path,
                        help="correct solution(s) to mutate (default: the assignment's bundled "
                             "ones)")
    parser.add_argument("--assignment", default=None, metavar="NAME_OR_FILE",
                        help="the network: a bundled name (notebook, tanh_bce, relu_mse, "
                             "logistic) or an assignment file; 'all' (with --diagnosis): the "
                             "notebook's and every bundled one, a table each. Default: notebook")
    parser.add_argument("--every", type=int, default=1, help="grade every K-th mutant only")
    parser.add_argument("--only", action="append", metavar="MUTANT_ID",
                        help="grade only this mutant (its id as printed; repeatable)")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="(--diagnosis) write each graded mutant's source into DIR")
    parser.add_argument("--verbose", "-v", action="store_true", help="a line per mutant")
    parser.add_argument("--diagnosis", action="store_true",
                        help="the diagnosis benchmark: mutants of the assignment's correct "
                             "solutions in several styles (or those given); does a diagnosis "
                             "name the mutated line and state the edit?")
    args = parser.parse_args(argv)
    from reference.assignment import AssignmentError

    try:
        assignments = _assignments(args.assignment)
    except AssignmentError as exc:
        parser.error(str(exc))
    if len(assignments) > 1 and (args.solution or not args.diagnosis):
        parser.error("--assignment all runs the diagnosis benchmark on each bundled "
                     "assignment's own solutions: use it with --diagnosis and no solution")
    if args.diagnosis:
        return _diagnosis_main(args, assignments)
    assignment = assignments[0]
    if len(args.solution) > 1:
        parser.error("the mutation score takes one solution")
    try:
        solution = args.solution[0] if args.solution else benchmark_solutions(assignment)[0]
    except ValueError as exc:
        parser.error(str(exc))
    selected = mutants(solution.read_text(), assignment=assignment)
    selected = [m for m in selected if m.id in args.only] if args.only else \
        selected[::args.every]
    print(f"{len(selected)} mutants of {solution}")

    def show(outcome: Outcome) -> None:
        if args.verbose:
            state = "killed" if outcome.killed else "equivalent" if outcome.equivalent \
                else "MISSED"
            print(f"{state:10} {outcome.mutant}")

    result = score(selected, progress=show, assignment=assignment)
    for outcome in result.missed:
        print(f"MISSED: {outcome.mutant}\n    {outcome.difference}")
    for outcome in result.false_alarms:
        print(f"FAILED BUT EQUIVALENT: {outcome.mutant}\n    {outcome.why[:300]}")
    print(result.summary())
    return 0 if not result.missed and not result.false_alarms else 1


def _diagnosis_main(args, assignments: list[Assignment]) -> int:
    def show(outcome: DiagnosisOutcome) -> None:
        if args.verbose:
            state = "passed" if not outcome.killed else "raised" if outcome.raised else \
                "ok" if outcome.line_named and outcome.edit_stated else \
                "line only" if outcome.line_named else "MISSED"
            print(f"{state:10} {outcome.describe()}  ({outcome.seconds * 1e3:.1f} ms)",
                  flush=True)

    results = []
    for assignment in assignments:
        try:
            solutions = args.solution or benchmark_solutions(assignment)
        except ValueError as exc:
            print(f"python -m gradkit.mutation: error: {exc}", file=sys.stderr)
            return 2
        result = diagnosis_benchmark(solutions, assignment=assignment, every=args.every,
                                     only=set(args.only) if args.only else None,
                                     save=args.save, progress=show)
        results.append(result)
        worst = result.worst()
        if worst:
            print(f"worst mutants of {result.assignment} (line not named, then edit not "
                  "stated):")
            for outcome in worst:
                print(f"  {outcome.describe()}")
        print("\n".join(result.lines()), flush=True)
    for result in results:
        slowest = result.slowest_lines()
        if slowest:
            print(f"slowest diagnoses of {result.assignment} (CPU time; the command grades "
                  "that mutant alone):")
            print("\n".join(slowest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
