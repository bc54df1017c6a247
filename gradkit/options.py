"""The grading options: one validated object, built once by each way in and passed through.

``gradkit check``/``gradkit grade`` build it from their command-line options, ``gradkit.check``
from its keyword arguments, the pytest plugin from its options and ini keys, and ``batch``
sends it to its grading processes as plain data (``to_json``/``from_json``). Everything that
changes a grade is here, so ``key()`` says when a saved report is still valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gradkit import __version__
from gradkit.sandbox import Limits
from gradkit.sandbox.backend import ENVIRONMENT_VARIABLE
from reference.assignment import (FAMILY_CONVENTIONS, NOTEBOOK, Assignment, LossConvention,
                                  check_ids, parse_assignment)

if TYPE_CHECKING:  # (gradkit.tolerances imports torch: only when the table is used)
    from gradkit.tolerances import Tolerances


def _sandbox_from_environment() -> str:
    """The backend named by ``$GRADKIT_SANDBOX``, else ``auto`` (validated like any other)."""
    return os.environ.get(ENVIRONMENT_VARIABLE) or "auto"


class Options(BaseModel):
    """Everything besides the submission that changes a grade."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    assignment: Assignment = Field(NOTEBOOK, description="The network the submission implements.")
    rtol: Optional[float] = Field(None, ge=0, description="Relative tolerance for every dtype.")
    atol: Optional[float] = Field(None, ge=0, description="Absolute tolerance for every dtype.")
    points: dict[str, float] = Field(default_factory=dict,
                                     description="Check id -> points, over the assignment's.")
    limits: Limits = Field(default_factory=Limits, description="The sandbox's resource limits.")
    accept_conventions: tuple[LossConvention, ...] = Field(
        (), description="Loss conventions also accepted as correct.")
    allow_autograd: bool = Field(False, description="Report autograd use without failing.")
    credit_upstream: bool = Field(False, description="Partial credit follows the steps.")
    sandbox: Literal["auto", "linux", "portable"] = Field(
        default_factory=_sandbox_from_environment, validate_default=True,
        description="The sandbox backend that runs the submission ($GRADKIT_SANDBOX, else "
                    "auto: linux where it can run, else portable).")

    @model_validator(mode="after")
    def _fits_the_assignment(self) -> "Options":
        known = check_ids(self.assignment)
        for key, value in self.points.items():
            if key not in known:
                raise ValueError(f"points: no check {key!r} in assignment "
                                 f"{self.assignment.name!r} (its checks: {', '.join(known)})")
            if value < 0:
                raise ValueError(f"points: {key}={value:g}; points cannot be negative")
        allowed = FAMILY_CONVENTIONS[self.assignment.loss]
        for convention in self.accept_conventions:
            if convention not in allowed:
                raise ValueError(f"accept_conventions: {convention!r} is not a convention of "
                                 f"loss {self.assignment.loss!r} (use {', '.join(allowed)})")
        return self

    @property
    def tolerances(self) -> "Tolerances":
        """The tolerance table in force: gradkit's, the assignment's, then rtol/atol."""
        from gradkit.tolerances import Tolerances

        base = tuple((dtype, rule.rtol, rule.atol)
                     for dtype, rule in sorted(self.assignment.tolerances.items()))
        return Tolerances(rtol=self.rtol, atol=self.atol, base=base)

    @property
    def check_points(self) -> dict[str, float]:
        """Points of every check: the defaults, the assignment's, then these options'."""
        from reference.assignment import default_points

        return {**default_points(self.assignment), **self.assignment.points, **self.points}

    def key(self) -> str:
        """Changes whenever a grade could: any option, the assignment, gradkit's version."""
        text = json.dumps([self.assignment.fingerprint, self.rtol, self.atol,
                           sorted(self.points.items()), repr(self.limits),
                           sorted(self.accept_conventions), self.allow_autograd,
                           self.credit_upstream, self.sandbox, __version__])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """Plain data, for a grading process started as a fresh interpreter."""
        a = self.assignment
        return {"assignment": {"path": a.path, "text": a.text,
                               "description": None if a.text is not None else a.description()},
                "rtol": self.rtol, "atol": self.atol, "points": self.points,
                "limits": dataclasses.asdict(self.limits),
                "accept_conventions": list(self.accept_conventions),
                "allow_autograd": self.allow_autograd, "credit_upstream": self.credit_upstream,
                "sandbox": self.sandbox}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Options":
        source = data["assignment"]
        if source.get("text") is not None:
            assignment = parse_assignment(source["text"], source.get("path") or "<assignment>")
        else:
            assignment = Assignment.model_validate(source["description"])
        return cls(assignment=assignment, rtol=data["rtol"], atol=data["atol"],
                   points=data["points"], limits=Limits(**data["limits"]),
                   accept_conventions=tuple(data["accept_conventions"]),
                   allow_autograd=data["allow_autograd"],
                   credit_upstream=data["credit_upstream"],
                   sandbox=data.get("sandbox") or "auto")

    @classmethod
    def build(cls, *, assignment: Assignment | str | None = None,
              tolerances: Optional["Tolerances"] = None, **fields: Any) -> "Options":
        """Options from loose keyword arguments: ``assignment`` may be a path or bundled name,
        ``tolerances`` a ``Tolerances`` (its rtol/atol are taken), ``None`` means the default."""
        from reference.assignment import load_assignment

        if isinstance(assignment, str) or (assignment is not None and
                                           not isinstance(assignment, Assignment)):
            assignment = load_assignment(assignment)
        values = {k: v for k, v in fields.items() if v is not None}
        if tolerances is not None:
            values.setdefault("rtol", tolerances.rtol)
            values.setdefault("atol", tolerances.atol)
            values = {k: v for k, v in values.items() if v is not None}
        if assignment is not None:
            values["assignment"] = assignment
        return cls(**values)
