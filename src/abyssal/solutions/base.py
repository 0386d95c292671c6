"""The solution protocol: everything generic (training, evaluation, serving, gating) works on any
solution through this one interface.

A solution is a registered recipe for one problem. It owns its config dataclass (which holds a
``train: TrainConfig`` section), reads its data formats, builds its model and describes how to
evaluate it. A new solution is one package under ``solutions/`` plus one line in
``abyssal.solutions.SOLUTIONS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch

    from abyssal.train.task import TrainTask


class PreparedData(Protocol):
    """Data a solution has read and prepared for one config; ``fingerprint`` identifies it."""

    fingerprint: str


class Solution(ABC):
    """Base class of every solution.

    Class attributes:
        name: registry name (``"fraud"``).
        summary: one line for ``abyssal solutions``.
        config_cls: the solution's config dataclass (must have a ``train`` field).
        default_metric: the validation metric that early stopping and gates watch.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    config_cls: ClassVar[type]
    default_metric: ClassVar[str]

    @abstractmethod
    def prepare(self, cfg: Any) -> PreparedData:
        """Read and validate the data that ``cfg`` points at."""

    @abstractmethod
    def task(self, cfg: Any, data: PreparedData) -> TrainTask:
        """The :class:`~abyssal.train.task.TrainTask` that trains the model on ``data``."""

    @abstractmethod
    def model_spec(self, cfg: Any, data: PreparedData) -> dict[str, Any]:
        """What, besides the config, is needed to rebuild the model (input sizes, names); JSON."""

    @abstractmethod
    def build_model(self, cfg: Any, spec: dict[str, Any]) -> torch.nn.Module:
        """A fresh model for ``cfg`` and ``spec`` (weights are loaded by the caller)."""

    @abstractmethod
    def evaluate(self, cfg: Any, model: torch.nn.Module, data: PreparedData) -> dict[str, float]:
        """Metrics of ``model`` on ``data`` (validation and test splits), flat ``name -> value``."""

    def baselines(self, cfg: Any, data: PreparedData) -> dict[str, float]:
        """Metrics of reference models on the same features and splits; none by default."""
        return {}
