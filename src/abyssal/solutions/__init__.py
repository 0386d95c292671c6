"""Reference solutions, one package each, registered by name.

Registration is lazy: listing names (and their summaries) imports nothing heavy. A solution whose
optional libraries are missing stays listed; using it names the extra to install.
"""

from __future__ import annotations

from abyssal.contracts.solution import Solution
from abyssal.core.errors import RegistryError
from abyssal.core.registry import Registry

SOLUTIONS: Registry[type[Solution]] = Registry("solution", group="abyssal.solutions")

SOLUTIONS.add_lazy(
    "fraud",
    "abyssal.solutions.fraud.solution:FraudSolution",
    extra="fraud",
    summary="transaction-graph fraud detection: GAT + temporal features, rings, live scoring",
)
SOLUTIONS.add_lazy(
    "tabular",
    "abyssal.solutions.tabular.solution:TabularSolution",
    extra="tabular",
    summary="classification or regression on a table: neural network beside boosted trees",
)
SOLUTIONS.add_lazy(
    "defect",
    "abyssal.solutions.defect.solution:DefectSolution",
    extra="defect",
    summary="visual defect inspection: ResNet-50 transfer, focal loss, few-shot, Grad-CAM, INT8",
)
SOLUTIONS.add_lazy(
    "text",
    "abyssal.solutions.text.solution:TextSolution",
    extra="text",
    summary="text classification on a Hugging Face model: full, LoRA or frozen-base fine-tuning",
)
SOLUTIONS.add_lazy(
    "nodule",
    "abyssal.solutions.nodule.solution:NoduleSolution",
    extra="nodule",
    summary="lung-nodule malignancy on CT: 3-D CNN, multi-scale fusion, Models Genesis, "
    "knowledge-guided decoder, Grad-CAM",
)
SOLUTIONS.add_lazy(
    "multimodal",
    "abyssal.solutions.multimodal.solution:MultimodalSolution",
    extra="multimodal",
    summary="classification from text, images and audio, any missing: per-modality encoders, "
    "cross-modal attention fusion",
)


def solution_class(name: str) -> type[Solution]:
    """The class registered as ``name``, checked: its ``name`` is ``name`` (the name its
    versions are stored under and loaded by), and a plugin's is a :class:`Solution` subclass.

    Raises:
        RegistryError: an unknown name (the choices are listed), a plugin that fails to load, or
            an entry that is not a Solution subclass or is registered under another name than
            its own (the plugin's package is named).
    """
    cls = SOLUTIONS.get(name)
    plugin = SOLUTIONS.origin(name)
    where = f" from the plugin package {plugin.package} {plugin.version}" if plugin else ""
    if plugin is not None and not (isinstance(cls, type) and issubclass(cls, Solution)):
        raise RegistryError(
            f"solution '{name}'{where} is {cls!r}, not a subclass of "
            "abyssal.contracts.solution.Solution"
        )
    own = getattr(cls, "name", None)
    if own != name:
        raise RegistryError(
            f"solution '{name}'{where} is {cls.__name__}, whose name is {own!r}: the entry "
            f"point's name and {cls.__name__}.name must be the same"
        )
    return cls


def get_solution(name: str) -> Solution:
    """An instance of the solution registered as ``name`` (:func:`solution_class`'s checks)."""
    return solution_class(name)()


__all__ = ["SOLUTIONS", "Solution", "get_solution", "solution_class"]
