"""Inference optimization: graph analysis and placement, compilation, CUDA graphs, ONNX Runtime
and INT8, each measured against its parent before it is registered.

Example:
    >>> from abyssal.optimize import optimize_version
    >>> report = optimize_version("fraud:3", target="cpu", methods=["compile", "onnx"])
    ... # doctest: +SKIP
"""

from abyssal.optimize.api import CandidateResult, OptimizeReport, optimize_subject, optimize_version
from abyssal.optimize.candidates import (
    GROUPS,
    METHODS,
    OptimizeError,
    method_rows,
    plugin_methods,
    resolve_methods,
)
from abyssal.optimize.measure import Timing, measure
from abyssal.optimize.subject import Subject, subject_from_version, synthetic_inputs

__all__ = [
    "GROUPS",
    "METHODS",
    "CandidateResult",
    "OptimizeError",
    "OptimizeReport",
    "Subject",
    "Timing",
    "measure",
    "method_rows",
    "optimize_subject",
    "optimize_version",
    "plugin_methods",
    "resolve_methods",
    "subject_from_version",
    "synthetic_inputs",
]
