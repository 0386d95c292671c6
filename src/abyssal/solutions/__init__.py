"""Reference solutions, one package each, registered by name.

Registration is lazy: listing names imports nothing heavy.
"""

from __future__ import annotations

from abyssal.core.registry import Registry
from abyssal.solutions.base import Solution

SOLUTIONS: Registry[type[Solution]] = Registry("solution")

SOLUTIONS.add_lazy("fraud", "abyssal.solutions.fraud.solution:FraudSolution")

SUMMARIES = {
    "fraud": "transaction-graph fraud detection: GAT + temporal features, rings, live scoring",
}


def get_solution(name: str) -> Solution:
    """An instance of the solution registered as ``name`` (unknown names list the choices)."""
    return SOLUTIONS.get(name)()


__all__ = ["SOLUTIONS", "SUMMARIES", "Solution", "get_solution"]
