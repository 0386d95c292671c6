"""The multimodal solution: one class per sample from its text, image and sound, any of which may
be missing, through per-modality encoders and a cross-modal attention fusion (or the early,
concatenation and late baselines, one config switch away); or, with ``task: retrieval``,
image-text retrieval: a dual encoder trained contrastively whose top candidates a cross-attention
scorer re-ranks (:mod:`.retrieval_model`).

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

import numpy as np
import torch

from abyssal.contracts.solution import MetricLayout, Solution
from abyssal.core.errors import ConfigError
from abyssal.solutions.multimodal.config import MultimodalConfig
from abyssal.solutions.multimodal.data import MultimodalData, prepare_multimodal_data
from abyssal.solutions.multimodal.sample import MultimodalSampleConfig, generate_sample


class MultimodalSolution(Solution):
    """Classification from text, images and audio fused by cross-modal attention, or image-text
    retrieval (``task: retrieval``)."""

    name: ClassVar[str] = "multimodal"
    config_cls: ClassVar[type] = MultimodalConfig
    default_metric: ClassVar[str] = "val_accuracy"
    sample_config_cls: ClassVar[type] = MultimodalSampleConfig
    # One layout for both tasks: a table leaves out the rows and columns a model has no metric
    # for, so a classifier shows its "model" rows and a retrieval model its "dual encoder" and
    # "re-ranked" rows (recall@K image->text and text->image).
    metric_layout: ClassVar[MetricLayout] = MetricLayout(
        columns=(
            ("accuracy", "accuracy"),
            ("macro_f1", "macro F1"),
            ("text_only_accuracy", "text only"),
            ("image_only_accuracy", "image only"),
            ("audio_only_accuracy", "audio only"),
            ("samples", "samples"),
            *((f"{d}_r{k}", f"{d} R@{k}") for d in ("i2t", "t2i") for k in (1, 5, 10)),
            ("mean_recall", "mean R"),
            ("images", "images"),
            ("texts", "texts"),
        ),
        models=(("", "model"), ("dual_", "dual encoder"), ("rerank_", "re-ranked")),
        extras=(
            "test_contribution_text",
            "test_contribution_image",
            "test_contribution_audio",
            "temperature",
            "rerank_k",
            "rerank_mix",
            "best_epoch",
            "epochs_run",
        ),
        headline="test_accuracy",
        confusion=("test",),
    )

    def prepare(self, cfg: MultimodalConfig) -> MultimodalData:
        if cfg.task == "retrieval":
            from abyssal.solutions.multimodal.retrieval_data import prepare_retrieval_data

            return prepare_retrieval_data(cfg.data, cfg.model, progress=cfg.train.progress)
        return prepare_multimodal_data(cfg.data, cfg.model, progress=cfg.train.progress)

    def task(self, cfg: MultimodalConfig, data: MultimodalData) -> Any:
        if cfg.task == "retrieval":
            from abyssal.solutions.multimodal.retrieval_task import RetrievalTask

            return RetrievalTask(cfg, data, self.model_spec(cfg, data))
        from abyssal.solutions.multimodal.task import ClassifyTask

        return ClassifyTask(cfg, data, self.model_spec(cfg, data))

    def monitor(self, cfg: MultimodalConfig, data: MultimodalData) -> tuple[str, Any]:
        if cfg.task == "retrieval":
            from abyssal.solutions.multimodal.retrieval_task import MONITOR

            return MONITOR, "max"
        return self.default_metric, "max"

    def headline_metric(self, cfg: MultimodalConfig, data: MultimodalData) -> str:
        if cfg.task == "retrieval":
            from abyssal.solutions.multimodal.retrieval_task import HEADLINE

            return HEADLINE
        return self.metric_layout.headline

    def model_spec(self, cfg: MultimodalConfig, data: MultimodalData) -> dict[str, Any]:
        d = cfg.data
        task = {"task": "retrieval"} if cfg.task == "retrieval" else {}
        return {
            **task,
            "modalities": list(data.modalities),
            "classes": list(data.classes),
            "text_base": str(data.text_base) if data.text_base is not None else None,
            "max_tokens": d.max_tokens,
            "image_size": d.image_size,
            "image_channels": d.image_channels,
            "sample_rate": d.sample_rate,
            "n_mels": d.n_mels,
            "audio_input": "wave" if cfg.model.audio.startswith("pretrained:") else "mel",
            "max_seconds": d.max_seconds,
        }

    def build_model(self, cfg: MultimodalConfig, spec: dict[str, Any]) -> torch.nn.Module:
        if cfg.task == "retrieval":
            from abyssal.solutions.multimodal.retrieval_model import build_retrieval_model

            return build_retrieval_model(cfg.model, spec)
        from abyssal.solutions.multimodal.model import build_multimodal_model

        return build_multimodal_model(cfg.model, spec)

    def evaluate(
        self, cfg: MultimodalConfig, model: torch.nn.Module, data: MultimodalData
    ) -> dict[str, float]:
        if cfg.task == "retrieval":
            from abyssal.solutions.multimodal.retrieval_eval import evaluate_retrieval

            m = cfg.model
            return evaluate_retrieval(
                model, data, batch_size=cfg.data.eval_batch_size, k=m.rerank_k, mix=m.rerank_mix
            )
        from abyssal.solutions.multimodal.evaluation import evaluate_multimodal

        return evaluate_multimodal(model, data, cfg.data.eval_batch_size)

    # -- optimization (abyssal optimize): the network's positional form ------------------------

    def example_inputs(self, cfg: MultimodalConfig, spec: dict[str, Any]) -> tuple[Any, ...]:
        """Two rows with every modality the model takes, in :data:`~.model.INPUT_NAMES`
        order."""
        _classifier_only(spec, "optimize")
        from abyssal.solutions.multimodal.manifest import MODALITIES
        from abyssal.solutions.multimodal.model import flat_inputs

        g = torch.Generator().manual_seed(0)
        rows, frames, width = 2, 16, 8
        side, channels = int(spec["image_size"]), int(spec.get("image_channels", 3))
        batch = {
            "present": torch.tensor([[m in spec["modalities"] for m in MODALITIES]] * rows),
            "tokens": torch.zeros(rows, width, dtype=torch.long),  # id 0: in every vocabulary
            "token_lengths": torch.full((rows,), width, dtype=torch.long),
            "images": torch.randint(
                0, 256, (rows, channels, side, side), generator=g, dtype=torch.uint8
            ),
            "mels": torch.randn(rows, int(spec["n_mels"]), frames, generator=g),
            "mel_lengths": torch.full((rows,), frames, dtype=torch.long),
            "waves": torch.randn(rows, 1600, generator=g),  # 0.1 s at 16 kHz
            "wave_lengths": torch.full((rows,), 1600, dtype=torch.long),
        }  # fmt: skip
        return flat_inputs(batch, spec)

    def input_axes(self, cfg: MultimodalConfig, spec: dict[str, Any]) -> tuple[dict[int, str], ...]:
        from abyssal.solutions.multimodal.model import INPUT_NAMES

        _classifier_only(spec, "optimize")
        axes = {
            "tokens": {0: "batch", 1: "tokens"},
            "mels": {0: "batch", 2: "frames"},
            "waves": {0: "batch", 1: "samples"},
        }
        return tuple(axes.get(n, {0: "batch"}) for n in INPUT_NAMES)

    def model_inputs(
        self, cfg: MultimodalConfig, data: MultimodalData, batch: int, seed: int
    ) -> tuple[Any, ...]:
        """``batch`` validation samples (drawn with replacement when the split is smaller), as
        the network's positional tensors."""
        from abyssal.solutions.multimodal.model import flat_inputs
        from abyssal.solutions.multimodal.task import batch_inputs

        spec = self.model_spec(cfg, data)
        _classifier_only(spec, "optimize")
        rows = data.rows("val")
        if not len(rows):
            rows = data.rows("train")
        pick = np.random.default_rng(seed).choice(rows, size=batch, replace=batch > len(rows))
        return flat_inputs(batch_inputs(data.inputs, np.sort(pick)), spec)

    # -- the serving half ----------------------------------------------------------------------

    def predictor(self, loaded: Any) -> Any:
        """Classification: a class per request; retrieval: a pair's scores per request."""
        if loaded.cfg.task == "retrieval":
            from abyssal.solutions.multimodal.retrieval_predict import PairPredictor

            return PairPredictor.from_loaded(loaded)
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
        attention shares and leave-one-modality-out deltas. A retrieval model ranks the
        manifest's images for every text and its texts for every image
        (:func:`~.retrieval_predict.predict_retrieval_manifest`)."""
        if explain is not None:
            raise self._lacks("predict_file(explain=...)", "explanation files")
        if loaded.cfg.task == "retrieval":
            from abyssal.solutions.multimodal.retrieval_predict import predict_retrieval_manifest

            return predict_retrieval_manifest(loaded, path, out=out)
        from abyssal.solutions.multimodal.predict import predict_manifest

        return predict_manifest(self.predictor(loaded), path, out=out)

    def generate_sample(self, options: MultimodalSampleConfig, out: Path) -> list[str]:
        return generate_sample(options, out)


def _classifier_only(spec: dict[str, Any], verb: str) -> None:
    """Refuse a retrieval model where only classifiers are supported yet."""
    if spec.get("task") == "retrieval":
        raise ConfigError(
            f"{verb} takes multimodal classifiers; this is an image-text retrieval model "
            "(task: retrieval), whose dual encoder and re-ranker have no single forward pass"
        )
