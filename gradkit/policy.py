"""Policy: what a submission may not use, found in its source and in what its process did.

The assignment asks for gradients written by hand, so computing them with autograd
(``.backward()``, ``torch.autograd``, ``requires_grad``, ``torch.func``) is a violation, unless the
caller allows it (an instructor's own tests may). Importing gradkit or the reference solution is
always one. Evidence comes from two places: the source's syntax tree, and what the child reported
at run time (autograd entry points it saw called, returned tensors that carry autograd history,
modules the file loaded). Run-time evidence is written by the child, so a determined submission
could suppress it; the source scan is done here, in the grader.

The result is the report's ``policy`` check, worth no points: it passes, or fails with every
violation's code, line and words.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Optional

from gradkit.loader import Submission
from gradkit.report import Check, SourceLocation

TITLE = "uses no autograd, and imports neither gradkit nor the reference solution"
HINT = ("Write every gradient by hand, as the notebook does (dL/dP = P - Y, then the chain rule "
        "through each sigmoid and matrix product); remove imports of gradkit and of the "
        "reference. An instructor can allow autograd with --allow-autograd.")


#: code -> (what it is about, words for the student)
CODES: dict[str, tuple[str, str]] = {
    "GKP101": ("autograd", "calls .backward() (autograd computes the gradients)"),
    "GKP102": ("autograd", "uses torch.autograd"),
    "GKP103": ("autograd", "asks autograd to track a tensor (requires_grad)"),
    "GKP104": ("autograd", "uses torch.func or functorch transforms (grad, vjp, jacrev ...)"),
    "GKP110": ("autograd", "ran autograd while it was graded"),
    "GKP111": ("autograd", "returned tensors that carry autograd history (requires_grad or "
                           "grad_fn)"),
    "GKP112": ("autograd", "switched forward-mode autograd back on, or gradkit's watch of "
                           "autograd off, while it was graded"),
    "GKP113": ("autograd", "started threads while it was graded, where gradkit cannot watch "
                           "for autograd"),
    "GKP201": ("import", "imports gradkit"),
    "GKP202": ("import", "imports the reference solution"),
    "GKP203": ("import", "reached for the grader's or the reference's code while it ran"),
}
#: modules the child loads for a submission on purpose (the nn_helper shim's data)
_ALLOWED_MODULES = ("reference.toy_data",)


@dataclass(frozen=True)
class Violation:
    code: str
    found: Literal["source", "run time"]
    line: Optional[int] = None
    detail: str = ""

    @property
    def kind(self) -> str:
        return CODES[self.code][0]

    def words(self, submission: Submission) -> str:
        where = f" at {submission.where(self.line)}" if self.line else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.code}{where}: {CODES[self.code][1]}{detail}"


def _module_code(name: str) -> Optional[str]:
    top = name.split(".")[0]
    if name == "torch.autograd" or name.startswith("torch.autograd."):
        return "GKP102"
    if name == "torch.func" or name.startswith("torch.func.") or top == "functorch":
        return "GKP104"
    if top == "gradkit":
        return "GKP201"
    if top == "reference" and name not in _ALLOWED_MODULES:
        return "GKP202"
    return None


def _is_false(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in (False, None, 0)


def scan_source(*trees: ast.AST) -> list[Violation]:
    """Violations visible in the source's syntax tree (and in the subtrees the loader cut out of
    it: ``Submission.every_tree``), in line order. One walk: linear in the source."""
    found: dict[tuple[str, Optional[int]], Violation] = {}
    nodes = [node for tree in trees for node in ast.walk(tree)]
    # a file that defines its own backward() (a layer class, say) may call it
    own_backward = any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and node.name == "backward" for node in nodes)

    def add(code: Optional[str], node: ast.AST, detail: str = "") -> None:
        if code is not None:
            line = getattr(node, "lineno", None)
            found.setdefault((code, line), Violation(code, "source", line, detail))

    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_module_code(alias.name), node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            add(_module_code(node.module), node, f"from {node.module} import ...")
            for alias in node.names:
                add(_module_code(f"{node.module}.{alias.name}"), node,
                    f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Attribute):
            if node.attr == "backward" and not own_backward:
                add("GKP101", node)
            elif node.attr == "autograd":
                add("GKP102", node)
            elif node.attr == "func" and isinstance(node.value, ast.Name) \
                    and node.value.id == "torch":
                add("GKP104", node)
            elif node.attr == "requires_grad_":
                add("GKP103", node)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr == "requires_grad" \
                        and not _is_false(node.value):
                    add("GKP103", node)
        elif isinstance(node, ast.keyword) and node.arg == "requires_grad" \
                and not _is_false(node.value):
            add("GKP103", node.value)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else \
                node.func.id if isinstance(node.func, ast.Name) else ""
            if called in ("__import__", "import_module"):
                add(_module_code(node.args[0].value), node, f"{called}({node.args[0].value!r})")
    return sorted(found.values(), key=lambda v: (v.line or 0, v.code))


def _arrays_with_history(value: Any) -> Iterable[bool]:
    if isinstance(value, dict):
        if value.get("kind") == "array":
            yield value.get("autograd") is True
        for item in (value.get("items") or {}).values() if isinstance(value.get("items"), dict) \
                else value.get("items") or []:
            yield from _arrays_with_history(item)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _during(places: list[str]) -> str:
    return ", ".join(places[:4]) + (f" and {len(places) - 4} more" if len(places) > 4 else "")


def scan_run(headers: Iterable[dict[str, Any]]) -> list[Violation]:
    """Violations in what the child reported: its load frame and its call frames.

    Autograd is seen by two routes, both named in the detail: the entry points the child
    counted by name, and torch's engine itself (graph nodes built, forward-mode AD or the
    watch found switched, threads started where nodes cannot be counted in every thread).
    """
    found: list[Violation] = []
    calls: dict[str, int] = {}
    modules: set[str] = set()
    history = 0
    nodes: dict[str, int] = {}
    switched: list[str] = []
    threads: dict[str, int] = {}
    headers_list = list(headers)
    for header in headers_list:
        for name, count in (header.get("autograd_calls") or {}).items():
            calls[name] = max(calls.get(name, 0), count)
        if header.get("type") == "load":
            modules.update(header.get("new_modules") or [])
        for step in header.get("steps") or []:
            history += sum(_arrays_with_history(step.get("returned")))
        engine = header.get("engine") or {}
        where = "loading" if header.get("type") == "load" else str(header.get("id"))[:40]
        if engine.get("nodes"):
            nodes[where] = engine["nodes"]
        if engine.get("grad_mode"):
            switched.append(where)
        # a thread matters where the engine's nodes could not be counted in every thread
        if engine.get("threads") and not (engine.get("all_threads") and engine["threads"] > 0):
            threads[where] = engine["threads"]
    ran = {name: count for name, count in calls.items() if count}
    routes = [f"{name} {_plural(count, 'time')}" for name, count in sorted(ran.items())]
    if nodes:
        routes.append(f"torch's engine built {_plural(sum(nodes.values()), 'graph node')} "
                      f"in {_during(list(nodes))}")
    if routes:
        found.append(Violation("GKP110", "run time", detail="; ".join(routes)))
    if switched:
        found.append(Violation("GKP112", "run time", detail=f"found on after {_during(switched)}"))
    if threads:
        tampered = [where for where, count in threads.items() if count < 0]
        started = {where: count for where, count in threads.items() if count > 0}
        words = []
        if started:
            words.append(f"{_plural(sum(started.values()), 'thread')} started in "
                         f"{_during(list(started))}")
        if tampered:
            words.append(f"gradkit's thread watch closed or replaced in {_during(tampered)}")
        found.append(Violation("GKP113", "run time", detail="; ".join(words)))
    if history:
        found.append(Violation("GKP111", "run time", detail=f"{history} returned tensor"
                                                            f"{'s' if history > 1 else ''}"))
    attempts = [a for header in headers_list for a in header.get("delegation") or []
                if isinstance(a, dict)]
    if attempts:
        routes, seen = [], set()
        for attempt in attempts:
            words = f"{attempt.get('route')}: {str(attempt.get('target'))[:200]}"
            if words not in seen:
                seen.add(words)
                routes.append(words)
        line = next((a.get("line") for a in attempts if type(a.get("line")) is int), None)
        found.append(Violation("GKP203", "run time", line=line, detail="; ".join(routes[:5])))
    for code in sorted({c for c in map(_module_code, modules) if c}):
        names = sorted(m for m in modules if _module_code(m) == code)
        found.append(Violation(code, "run time", detail="loaded " + ", ".join(names[:5])))
    return found


def evaluate(submission: Submission, headers: Iterable[dict[str, Any]],
             allow_autograd: bool = False) -> tuple[Check, set[str]]:
    """The ``policy`` check, and the kinds of violation that fail the submission."""
    violations = scan_source(*submission.every_tree())
    seen = {v.code for v in violations}
    violations += [v for v in scan_run(headers) if v.code not in seen]
    failing = [v for v in violations if not (allow_autograd and v.kind == "autograd")]
    allowed = [v for v in violations if v not in failing]
    first = next((v for v in failing if v.line), None)
    location = None
    if first is not None:
        origin = submission.origins.get(first.line)
        location = SourceLocation(file=str(submission.path), line=first.line,
                                  cell=origin.cell if origin else None,
                                  cell_line=origin.line if origin else None,
                                  code=submission.source_line(first.line))
    message = "; ".join(v.words(submission) for v in failing)
    if allowed:
        message += ("; " if message else "") + "allowed (autograd is allowed): " + \
            "; ".join(v.words(submission) for v in allowed)
    return Check(id="policy", group="policy", title=TITLE,
                 status="fail" if failing else "pass", points=0.0, max_points=0.0,
                 message=message, hint=HINT if failing else "", location=location), \
        {v.kind for v in failing}


#: What a violation costs: the checks whose points it withholds (the checks still run and say
#: whether the numbers were right). Autograd answers the gradient questions for the student;
#: importing gradkit or the reference answers all of them.
WITHHELD = {
    "autograd": ("gradient.", "update", "training"),
    "import": ("",),
}


def withhold(checks: list[Check], kinds: set[str]) -> None:
    """Zero the points of the checks a violation of each kind in ``kinds`` answers."""
    prefixes = tuple(p for kind in kinds for p in WITHHELD.get(kind, ()))
    if not prefixes:
        return
    for check in checks:
        if check.id != "policy" and check.points and check.id.startswith(prefixes):
            check.points = 0.0
            note = "points withheld: see the policy check"
            check.message = f"{check.message}; {note}" if check.message else note


_KIND_EXPLANATION = {
    "autograd": (
        "The assignment asks for gradients written by hand, and this submission lets autograd "
        "compute them. The gradient, update and training checks still say whether the numbers "
        "are right, but their points are withheld, and the submission does not pass. Write "
        "each gradient out (dLdP, dPdC, dLdC, ... dLdI) with tensor operations. Courses that "
        "allow autograd run gradkit with --allow-autograd: the use is then reported, not "
        "failed."),
    "import": (
        "The submission imports gradkit or the reference solution that grades it (by an import, "
        "by importlib, by looking it up in sys.modules, or by reading and running its source "
        "files), so its numbers cannot be told from the grader's own: every point is withheld. "
        "Remove the import and compute the network yourself."),
}


def explain(code: str) -> str | None:
    """The long explanation of a policy code, or None if ``code`` is not one."""
    if code not in CODES:
        return None
    kind, words = CODES[code]
    return f"{code}: the submission {words}.\n\n{_KIND_EXPLANATION[kind]}"