"""The grader grades itself: small changes to a correct solution must fail it.

``mutants`` makes every single change that a fixed set of operators can make to the syntax tree
of ``train_neural_net`` and ``neural_net_predict`` in a correct solution (swapped operators,
changed constants, dropped terms, removed or added transposes, swapped arguments, changed keys,
indices, dims and variables). ``difference`` compares a mutant with the reference network on many
random inputs, independently of gradkit's cases: a mutant that gradkit passes must be shown
equivalent this way, or gradkit has a blind spot.

The mutation score is killed / non-equivalent mutants. ``python -m gradkit.mutation`` computes it
for every mutant (``--every K`` for a sample) and lists any survivor that is not equivalent.

Mutants are generated from a solution gradkit ships, not from student code, so ``difference``
runs them in this process.
"""

from __future__ import annotations

import argparse
import ast
import copy
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

FUNCTIONS = ("train_neural_net", "neural_net_predict")
SHIMS = Path(__file__).parent / "shims"
ACTIVATIONS = ("A", "B", "C", "P")
GRADIENTS = ("dLdP", "dPdC", "dLdC", "dLdB", "dBdA", "dLdA", "dLdW", "dLdJ", "dLdV", "dLdI")
WEIGHT_KEYS = ("V", "I", "W", "J")
_SWAPPED = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
            ast.Pow: ast.Mult, ast.MatMult: ast.Mult}


@dataclass(frozen=True)
class Mutant:
    """One single-point change of the solution."""

    id: str  # operator@line:column#variant, stable for a given solution
    operator: str
    function: str
    line: int
    before: str  # the changed expression, before and after
    after: str
    source: str  # the whole mutated file

    def __str__(self) -> str:
        return f"{self.id} ({self.function}, line {self.line}): {self.before}  ->  {self.after}"


def _replacements(node: ast.AST, scope: frozenset[str]) -> Iterator[tuple[str, ast.AST]]:
    """(operator, replacement) for every change the operators make to ``node`` itself."""
    if isinstance(node, ast.BinOp):
        if type(node.op) in _SWAPPED:
            yield "swap_operator", ast.BinOp(node.left, _SWAPPED[type(node.op)](), node.right)
        if isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            yield "drop_term", node.left
            yield "drop_term", node.right
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = node.value
        for new in dict.fromkeys([-value if value else 1, value + 1, value - 1, value * 2]):
            if new != value:
                yield "change_constant", ast.Constant(type(value)(new))
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        yield "change_constant", ast.Constant(not node.value)
    elif isinstance(node, ast.Constant) and node.value in WEIGHT_KEYS:
        for key in WEIGHT_KEYS:
            if key != node.value:
                yield "change_key", ast.Constant(key)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        group = ACTIVATIONS if node.id in ACTIVATIONS else GRADIENTS if node.id in GRADIENTS \
            else ()
        for name in group:
            if name != node.id and name in scope:
                yield "change_variable", ast.Name(name, ast.Load())
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
        if method == "sum" and node.keywords:
            yield "drop_dim", ast.Call(node.func, node.args, [])
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
    """ids of the nodes inside ``if not weights:`` (random draws: not compared by value)."""
    skipped: set[int] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.If) and isinstance(node.test, ast.UnaryOp) \
                and isinstance(node.test.op, ast.Not):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def mutants(source: str, functions: tuple[str, ...] = FUNCTIONS) -> list[Mutant]:
    """Every distinct single-point mutant of ``functions`` in ``source``, in source order.

    The branch that draws fresh weights (``if not weights:``) is left alone: its draws are
    random, so gradkit checks their shapes and dtype, not their values.
    """
    tree = ast.parse(source)
    found: dict[str, Mutant] = {}
    original = {f.name: ast.unparse(f) for f in tree.body if isinstance(f, ast.FunctionDef)}
    seen = set(original.values())
    for index, function in enumerate(tree.body):
        if not (isinstance(function, ast.FunctionDef) and function.name in functions):
            continue
        scope = _assigned(function)
        skipped = _in_init_branch(function)
        # defaults and annotations are not what gradkit calls: it passes every argument
        skipped.update(id(n) for n in ast.walk(function.args))
        parents = {id(child): (node, field, position)
                   for node in ast.walk(function)
                   for field, value in ast.iter_fields(node)
                   for position, child in (enumerate(value) if isinstance(value, list)
                                           else [(None, value)])
                   if isinstance(child, ast.AST)}
        for node in ast.walk(function):
            if id(node) in skipped or id(node) not in parents or isinstance(node, ast.expr_context):
                continue
            parent, field, position = parents[id(node)]
            if isinstance(parent, ast.Expr) or field == "returns":  # docstring, annotation
                continue
            for variant, (operator, replacement) in enumerate(_replacements(node, scope)):
                mutated = _replace(tree, index, function, node, replacement)
                text = ast.unparse(mutated.body[index])
                if text in seen:  # the original, or a change another mutant already makes
                    continue
                seen.add(text)
                mutant_id = f"{operator}@{node.lineno}:{node.col_offset}#{variant}"
                found[mutant_id] = Mutant(
                    id=mutant_id, operator=operator, function=function.name, line=node.lineno,
                    before=ast.unparse(node), after=ast.unparse(replacement),
                    source=ast.unparse(mutated))
    return list(found.values())


def _replace(tree: ast.Module, index: int, function: ast.FunctionDef, node: ast.AST,
             replacement: ast.AST) -> ast.Module:
    """A copy of ``tree`` with ``node`` (inside ``function``) replaced."""
    marker = "__gradkit_mutation_target__"
    setattr(node, marker, True)
    try:
        mutated = copy.deepcopy(tree)
    finally:
        delattr(node, marker)
    new = copy.deepcopy(replacement)
    for target in ast.walk(mutated.body[index]):
        for field, value in ast.iter_fields(target):
            if isinstance(value, list):
                for position, child in enumerate(value):
                    if getattr(child, marker, False):
                        value[position] = new
            elif getattr(value, marker, False):
                setattr(target, field, new)
    return ast.fix_missing_locations(mutated)


# --- an independent judge: the reference on many random inputs --------------------------------

def load_functions(source: str) -> tuple[Callable, Callable]:
    """``train_neural_net`` and ``neural_net_predict`` of ``source``, run in this process.

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
    return module.train_neural_net, module.neural_net_predict


def difference(source: str, trials: int = 60, seed: int = 20180703) -> Optional[str]:
    """How ``source`` behaves differently from the reference network, or None if it does not.

    Random batches of 1 to 64 rows in float64 and float32 (0/1 and fractional labels, weights of
    several scales, learning rates from 0.01 to 4), each compared on the returned weights, the
    predictions, their dtypes and shapes, and on the inputs left untouched.
    """
    import torch

    from reference import network

    try:
        train, predict = load_functions(source)
    except Exception as exc:
        return f"does not load: {type(exc).__name__}: {exc}"
    g = torch.Generator().manual_seed(seed)
    sizes = (1, 2, 3, 5, 8, 32, 64)
    for trial in range(trials):
        n = sizes[trial % len(sizes)]
        dtype = torch.float64 if trial % 3 else torch.float32
        scale = (0.3, 1.0, 3.0)[trial % 3]
        lr = (0.01, 1.0, 4.0, 0.5)[trial % 4]
        X = (torch.randn(n, 3, generator=g, dtype=torch.float64) * 2).to(dtype)
        Y = (torch.rand(n, 1, generator=g, dtype=torch.float64) if trial % 5 == 0 else
             torch.randint(0, 2, (n, 1), generator=g).to(torch.float64)).to(dtype)
        weights = {name: (torch.randn(*shape, generator=g, dtype=torch.float64) * scale)
                   .to(dtype) for name, shape in (("V", (3, 4)), ("I", (1, 4)), ("W", (4, 1)),
                                                   ("J", (1, 1)))}
        rtol, atol = (1e-9, 1e-12) if dtype == torch.float64 else (1e-5, 1e-6)
        given = {k: v.clone() for k, v in weights.items()}
        Xc, Yc = X.clone(), Y.clone()
        try:
            got = train(Xc, Yc, given, lr)
            seen = predict(Xc, {k: v.clone() for k, v in weights.items()})
        except Exception as exc:
            return f"trial {trial} (n={n}, {dtype}): raised {type(exc).__name__}: {exc}"
        want = network.train_neural_net(X, Y, {k: v.clone() for k, v in weights.items()}, lr)
        expected_P = network.neural_net_predict(X, weights)
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
          progress: Optional[Callable[[Outcome], None]] = None) -> Score:
    """Grade every mutant with ``gradkit.check`` and judge each against the reference."""
    import tempfile

    from gradkit.api import check
    from gradkit.sandbox import Sandbox

    started = time.monotonic()
    own = sandbox is None
    sandbox = sandbox or Sandbox()
    outcomes = []
    try:
        with tempfile.TemporaryDirectory(prefix="gradkit-mutants-", dir=workdir) as folder:
            for mutant in selected:
                path = Path(folder) / "solution.py"  # alone in its folder: no siblings
                path.write_text(mutant.source)
                report = check(path, sandbox=sandbox)
                if report.error is not None:
                    raise RuntimeError(f"gradkit failed on mutant {mutant}: {report.error}")
                failing = [c for c in report.checks if c.status in ("fail", "error")]
                why = f"{failing[0].id}: {failing[0].message}" if failing else "passed"
                outcome = Outcome(mutant, not report.passed, why, difference(mutant.source))
                outcomes.append(outcome)
                if progress:
                    progress(outcome)
    finally:
        if own:
            sandbox.close()
    return Score(outcomes, time.monotonic() - started)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradkit.mutation", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("solution", nargs="?", type=Path,
                        default=Path(__file__).parent.parent / "submissions_example" /
                        "correct.py")
    parser.add_argument("--every", type=int, default=1, help="grade every K-th mutant only")
    parser.add_argument("--verbose", "-v", action="store_true", help="a line per mutant")
    args = parser.parse_args(argv)
    selected = mutants(args.solution.read_text())[::args.every]
    print(f"{len(selected)} mutants of {args.solution}")

    def show(outcome: Outcome) -> None:
        if args.verbose:
            state = "killed" if outcome.killed else "equivalent" if outcome.equivalent \
                else "MISSED"
            print(f"{state:10} {outcome.mutant}")

    result = score(selected, progress=show)
    for outcome in result.missed:
        print(f"MISSED: {outcome.mutant}\n    {outcome.difference}")
    for outcome in result.false_alarms:
        print(f"FAILED BUT EQUIVALENT: {outcome.mutant}\n    {outcome.why[:300]}")
    print(result.summary())
    return 0 if not result.missed and not result.false_alarms else 1


if __name__ == "__main__":
    sys.exit(main())
