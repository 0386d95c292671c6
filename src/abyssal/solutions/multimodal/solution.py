"""The multimodal solution: one class per sample from its text, image and sound, any of which may
be missing, through per-modality encoders and a cross-modal attention fusion (or the early,
concatenation and late baselines, one config switch away).

Inputs: a CSV or JSONL manifest (``id, text, image, audio, label``; see
:mod:`~abyssal.solutions.multimodal.manifest`). Metrics: accuracy and macro F1 per split, each
modality alone on the test samples that have it, and each modality's mean contribution.

Example:
    >>> from abyssal.train.api import train
    >>> data = "data.path=demo-multimodal/manifest.csv"
    >>> out = train("multimodal", overrides=[data])  # doctest: +SKIP
    >>> out.metrics["test_accuracy"]  # doctest: +SKIP
    0.9
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from abyssal.contracts.solution import MetricLayout, Solution
from abyssal.solutions.multimodal.config import MultimodalConfig
from abyssal.solutions.multimodal.data import MultimodalData, prepare_multimodal_data
from abyssal.solutions.multimodal.sample import MultimodalSampleConfig, generate_sample


class MultimodalSolution(Solution):
    """Classification from text, images and audio fused by cross-modal attention."""

    name: ClassVar[str] = "multimodal"
    config_cls: ClassVar[type] = MultimodalConfig
    default_metric: ClassVar[str] = "val_accuracy"
    sample_config_cls: ClassVar[type] = MultimodalSampleConfig
    metric_layout: ClassVar[MetricLayout] = MetricLayout(
        columns=(
            ("accuracy", "accuracy"),
            ("macro_f1", "macro F1"),
            ("text_only_accuracy", "text only"),
            ("image_only_accuracy", "image only"),
            ("audio_only_accuracy", "audio only"),
            ("samples", "samples"),
        ),
        extras=(
            "test_contribution_text",
            "test_contribution_image",
            "test_contribution_audio",
            "best_epoch",
            "epochs_run",
        ),
        headline="test_accuracy",
        confusion=("test",),
    )

    def prepare(self, cfg: MultimodalConfig) -> MultimodalData:
        return prepare_multimodal_data(cfg.data, cfg.model, progress=cfg.train.progress)

    def task(self, cfg: MultimodalConfig, data: MultimodalData) -> Any:
        from abyssal.solutions.multimodal.task import ClassifyTask

        return ClassifyTask(cfg, data, self.model_spec(cfg, data))

    def model_spec(self, cfg: MultimodalConfig, data: MultimodalData) -> dict[str, Any]:
        d = cfg.data
        return {
            "modalities": list(data.modalities),
            "classes": list(data.classes),
            "text_base": str(data.text_base) if data.text_base is not None else None,
            "max_tokens": d.max_tokens,
            "image_size": d.image_size,
            "image_channels": d.image_channels,
            "sample_rate": d.sample_rate,
            "n_mels": d.n_mels,
            "max_seconds": d.max_seconds,
        }

    def build_model(self, cfg: MultimodalConfig, spec: dict[str, Any]) -> torch.nn.Module:
        from abyssal.solutions.multimodal.model import build_multimodal_model

        return build_multimodal_model(cfg.model, spec)

    def evaluate(
        self, cfg: MultimodalConfig, model: torch.nn.Module, data: MultimodalData
    ) -> dict[str, float]:
        from abyssal.solutions.multimodal.evaluation import evaluate_multimodal

        return evaluate_multimodal(model, data, cfg.data.eval_batch_size)

    # -- the serving half ----------------------------------------------------------------------

    def predictor(self, loaded: Any) -> Any:
        from abyssal.solutions.multimodal.predict import MultimodalPredictor

        return MultimodalPredictor.from_loaded(loaded)

    def predict_file(
        self,
        loaded: Any,
        path: str | Path,
        *,
        out: str | Path | None = None,
        explain: str | Path | None = None,
    ) -> Any:
        """Predict every row of a manifest (CSV or JSONL; labels optional: with them the report
        gives the accuracy); per row the class, its probability, the modalities used, their
        attention shares and leave-one-modality-out deltas."""
        from abyssal.solutions.multimodal.predict import predict_manifest

        if explain is not None:
            raise self._lacks("predict_file(explain=...)", "explanation files")
        return predict_manifest(self.predictor(loaded), path, out=out)

    def generate_sample(self, options: MultimodalSampleConfig, out: Path) -> list[str]:
        return generate_sample(options, out)
