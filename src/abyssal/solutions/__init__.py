"""Reference solutions, one package each, registered by name.

Registration is lazy: listing names (and their summaries) imports nothing heavy. A solution whose
optional libraries are missing stays listed; using it names the extra to install.
"""

from __future__ import annotations

from abyssal.contracts.solution import Solution
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


def get_solution(name: str) -> Solution:
    """An instance of the solution registered as ``name`` (unknown names list the choices)."""
    return SOLUTIONS.get(name)()


__all__ = ["SOLUTIONS", "Solution", "get_solution"]
