"""Inference solvers as experiment settings: :class:`SolverSpec`, a solver named by a short
string that ``--set`` can change as a whole (``--set solver=newton``,
``--set solver="newton(tol=1e-6)"``) or option by option (``--set solver.tol=1e-6``)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import pclandscape as pcl

from .base import parse_scalar

__all__ = ["SolverSpec", "SOLVERS"]

SOLVERS = {
    "euler": pcl.Euler,
    "paper_euler": pcl.PaperEuler,
    "heun": pcl.Heun,
    "newton": pcl.Newton,
    "exact_linear": pcl.ExactLinear,
    "epc": pcl.EPC,
}
"""The solver names a spec may use; ``"default"`` is also accepted: ``exact_linear`` for
linear MLPs and ``newton`` otherwise (:func:`pclandscape.default_solver`), with the options
given (e.g. ``default(tol=1e-5)``)."""

_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$")


@dataclass(frozen=True)
class SolverSpec:
    """A solver by name and options, e.g. ``SolverSpec.parse("heun(t1=300, rtol=1e-3)")``.

    ``str(spec)`` gives the same text back (what results.json and the report show);
    :meth:`build` makes the :mod:`pclandscape` solver, raising ``ValueError`` for an unknown
    name or option.
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "SolverSpec":
        """``name`` or ``name(key=value, ...)`` (values: numbers, true/false, or words)."""
        m = _SPEC.match(text)
        if not m:
            raise ValueError(f"solver={text!r}: expected NAME or NAME(key=value, ...), e.g. newton(tol=1e-6).")
        name, body = m.group(1), m.group(2)
        if name not in SOLVERS and name != "default":
            raise ValueError(f"solver={text!r}: unknown solver {name!r}; known: default, {', '.join(SOLVERS)}.")
        options = []
        for part in [p for p in (body or "").split(",") if p.strip()]:
            if "=" not in part:
                raise ValueError(f"solver={text!r}: option {part.strip()!r} is not key=value.")
            key, value = part.split("=", 1)
            options.append((key.strip(), parse_scalar(value)))
        return cls(name, tuple(options))

    def with_option(self, key: str, value) -> "SolverSpec":
        """This spec with option ``key`` set to ``value`` (a string is parsed as in :meth:`parse`)."""
        value = parse_scalar(value) if isinstance(value, str) else value
        opts = dict(self.options)
        opts[key] = value
        return dataclasses.replace(self, options=tuple(opts.items()))

    def build(self, linear: bool = False) -> pcl.AbstractSolver:
        """The solver; ``"default"`` gives ExactLinear for a ``linear`` net and Newton otherwise
        (as :func:`pclandscape.default_solver`)."""
        name, options = self.name, dict(self.options)
        if name == "default":
            name = "exact_linear" if linear else "newton"
            if name == "exact_linear":  # a direct solve: only the reporting tolerance applies
                options = {k: v for k, v in options.items() if k == "tol"}
        try:
            return SOLVERS[name](**options)
        except TypeError as e:  # an option the solver does not have
            raise ValueError(f"solver {self}: {e}".replace("__init__() ", "")) from None

    def check(self) -> None:
        """Raise ``ValueError`` now if :meth:`build` would (for ``default``: for both of its solvers)."""
        self.build(linear=False)
        if self.name == "default":
            self.build(linear=True)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in self.options) + ")"
