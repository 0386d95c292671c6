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

from abyssal.contracts.solution import MetricLayout, Solution, held_out_frame
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
    perturbations: ClassVar[tuple[str, ...]] = ("noise", "blur", "contrast", "typos")

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

    def decision_score(self, loaded: Any) -> Any:
        """A classifier with two classes: a response's probability of the second class (what
        :meth:`held_out`'s ``score`` is about; a prediction file row has only its ``label``
        and ``probability``, which give it); more: its ``probability`` (the predicted
        class's: the confidence an accept-or-review point decides on); ``None`` for a
        retrieval model."""
        classes = list(loaded.spec.get("classes") or [])
        if loaded.cfg.task == "retrieval" or len(classes) < 2:
            return None
        if len(classes) > 2:
            return lambda response: float(response["probability"])
        positive = classes[1]

        def score(response: Any) -> float:
            if "probabilities" in response:
                return float(response["probabilities"][positive])
            p = float(response["probability"])
            return p if str(response["label"]) == str(positive) else 1.0 - p

        return score

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

    # -- the governance half (abyssal.govern) ---------------------------------------------------

    def held_out(
        self,
        cfg: MultimodalConfig,
        model: torch.nn.Module,
        data: MultimodalData,
        *,
        split: str = "test",
    ) -> Any:
        """The labelled test samples, in split order, scored as :meth:`evaluate` scores them
        (:func:`~.evaluation.score_rows`), as a ``pandas.DataFrame``.

        ``id`` is the sample's id from the manifest. Two classes: ``label`` is 1 for the second
        class in sorted order and ``score`` the model's probability of it. More classes:
        ``label`` and ``prediction`` are class names and ``probability`` the predicted class's
        probability.

        Raises:
            AbyssalError: a retrieval model (``task: retrieval``): it has no labels to audit.
        """

        from abyssal.solutions.multimodal.evaluation import score_rows

        _no_retrieval_audit(cfg, "held-out predictions")
        rows = _labelled_rows(data, split)
        probability, _ = score_rows(model, data, rows, cfg.data.eval_batch_size)
        probability = probability.astype(np.float64)  # (n, K)
        labels = data.inputs.labels[rows]
        return held_out_frame(
            [data.inputs.ids[r] for r in rows.tolist()], labels, probability, data.classes
        )

    def item_attributes(self, cfg: MultimodalConfig, data: MultimodalData) -> Any:
        """The labelled test samples as :meth:`held_out` lists them, as a ``pandas.DataFrame``:
        ``id``, ``has_text``, ``has_image``, ``has_audio`` (which modalities the sample has),
        ``modalities`` (those names joined by ``+``, e.g. ``text+audio``) and ``text_tokens``
        (its text's length in tokens of the text encoder, special tokens included, after any
        cut at ``data.max_tokens``; 0 without text).

        Raises:
            AbyssalError: a retrieval model's config (``task: retrieval``).
        """
        import pandas as pd

        from abyssal.solutions.multimodal.manifest import MODALITIES

        _no_retrieval_audit(cfg, "item attributes")
        rows = _labelled_rows(data)
        present = data.inputs.present[rows]  # (n, 3)
        lengths = data.inputs.token_lengths
        frame = pd.DataFrame({"id": [data.inputs.ids[r] for r in rows.tolist()]})
        for k, modality in enumerate(MODALITIES):
            frame[f"has_{modality}"] = present[:, k].astype(bool)
        frame["modalities"] = [
            "+".join(m for k, m in enumerate(MODALITIES) if have[k]) for have in present
        ]
        frame["text_tokens"] = (
            np.zeros(len(rows), dtype=np.int64) if lengths is None else lengths[rows]
        )
        return frame

    def perturb(
        self, cfg: MultimodalConfig, data: MultimodalData, perturbation: Any
    ) -> MultimodalData:
        """A copy of ``data`` whose test samples carry ``perturbation``.

        ``noise``, ``blur`` and ``contrast`` change the test samples' images: held decoded as
        uint8 at the model's size, they are perturbed in their own 0-255 range (before the
        image encoder's normalisation), then rounded and clipped to 0-255
        (:func:`abyssal.data.perturb_arrays.apply_to_rows`; sample ``r``'s noise is seeded
        ``seed + r``); samples without an image keep their empty one. ``typos`` gives words of
        the test samples' texts typos (:func:`abyssal.data.perturb_records.typos` over all the
        test texts at once, ``level`` the fraction of words) and tokenizes them again with the
        text encoder's tokenizer. Everything else (train and validation samples, audio, labels,
        ids, splits) is that of ``data`` (shared, not copied); ``data`` is not changed.

        Raises:
            ConfigError: a kind this solution does not have (the message lists those it has);
                ``typos`` on data without texts, an image kind on data without images.
            AbyssalError: a retrieval model's config (``task: retrieval``).
        """
        from dataclasses import replace

        from abyssal.data.perturb import check_kind, perturbed_identity
        from abyssal.data.perturb_arrays import apply_to_rows

        _no_retrieval_audit(cfg, "perturbed benchmarks")
        p = check_kind(perturbation, self.perturbations, f"solution '{self.name}'")
        inputs = data.inputs
        test = data.rows("test")
        if p.kind == "typos":
            inputs = _with_typos(cfg, data, test, p.level, p.seed)
        else:
            if inputs.images is None:
                raise ConfigError(
                    f"perturbation '{p.kind}' changes images, and these samples have none "
                    f"(modalities: {', '.join(data.modalities)})"
                )
            from abyssal.solutions.multimodal.manifest import MODALITIES

            with_image = test[inputs.present[test, MODALITIES.index("image")]]
            images = apply_to_rows(inputs.images, with_image, p, spatial_dims=2)
            inputs = replace(inputs, images=images)
        fingerprint, description = perturbed_identity(data.fingerprint, data.description, p)
        return replace(data, inputs=inputs, fingerprint=fingerprint, description=description)

    def explain(
        self,
        cfg: MultimodalConfig,
        model: torch.nn.Module,
        data: MultimodalData,
        n: int,
        *,
        out: Path | None = None,
    ) -> Any:
        """Each modality's attention share and leave-one-modality-out effect for ``n`` test
        samples, and a modality ablation as the global importance.

        The per-sample scores come from the serving path
        (:meth:`~.predict.MultimodalPredictor.predict`): ``<modality> share`` is the modality's
        share of the cross-modal attention, ``<modality> leave-one-out`` the drop in the
        predicted class's probability when it is masked out (a sample's only modality is
        compared with chance); modalities a sample lacks get no score. Each sample's scores are
        drawn as a bar chart in ``out`` (default: a new temporary folder).

        The global importance of a modality is the drop of the headline test metric when it is
        masked out of every test sample (modality ablation, not a permutation: a modality is
        removed, not shuffled); a sample left with no modality is scored as the uniform
        distribution (the model has nothing to go on).

        Raises:
            AbyssalError: a retrieval model, or a model without the eager network (an ONNX
                variant): explain the version it was made from.
        """
        from abyssal.contracts.explain import (
            Attribution,
            Explanations,
            eager_network,
            explain_folder,
            explained_rows,
            safe_name,
            write_bar_chart,
        )
        from abyssal.nn.metrics import classification_metrics
        from abyssal.solutions.multimodal.evaluation import score_rows
        from abyssal.solutions.multimodal.manifest import MODALITIES
        from abyssal.solutions.multimodal.model import MultimodalNet
        from abyssal.solutions.multimodal.predict import (
            MultimodalItem,
            MultimodalPredictor,
            merge_inputs,
        )

        _no_retrieval_audit(cfg, "explanations")
        eager_network(model, MultimodalNet, self.name)
        spec = self.model_spec(cfg, data)
        predictor = MultimodalPredictor(model, spec, self.name, tokenizer=None)
        folder = explain_folder(out, self.name)
        rows = _labelled_rows(data)
        chosen = explained_rows(rows, n)
        items = [
            MultimodalItem(data.inputs.ids[r], merge_inputs([_one_row(data.inputs, r)]))
            for r in chosen.tolist()
        ]
        answers: list[dict[str, Any]] = []
        batch = cfg.data.eval_batch_size
        for start in range(0, len(items), batch):
            answers += predictor.predict(items[start : start + batch])
        explained: list[Attribution] = []
        for r, answer in zip(chosen.tolist(), answers, strict=True):
            scores = {f"{m} share": float(v) for m, v in answer["attention_share"].items()}
            scores |= {f"{m} leave-one-out": float(v) for m, v in answer["leave_one_out"].items()}
            item = f"sample {answer['id']}"
            label = data.classes[int(data.inputs.labels[r])]
            image = write_bar_chart(
                scores,
                folder / f"{safe_name(item)}.png",
                title=f"{item}: predicted {answer['label']} (label {label})",
                xlabel="attention share / leave-one-out probability drop",
            )
            explained.append(
                Attribution(
                    item=item,
                    prediction=answer["label"],
                    label=label,
                    scores=scores,
                    image=image,
                    note=f"probability {answer['probability']:.4g}; modalities "
                    + "+".join(answer["modalities"]),
                )
            )

        headline = self.headline_metric(cfg, data)
        key = headline.removeprefix("test_")
        labels = data.inputs.labels[rows]

        def metric(probs: np.ndarray) -> float:
            found = classification_metrics(labels, probs, data.classes, count="samples")
            return float(found[key])

        reference_probs, _ = score_rows(model, data, rows, batch)
        reference = metric(reference_probs)
        present = data.inputs.present[rows]
        drops: dict[str, float] = {}
        for modality in data.modalities:
            others = [m for m in data.modalities if m != modality]
            usable = present[:, [MODALITIES.index(m) for m in others]].any(axis=1)
            probs = np.full((len(rows), len(data.classes)), 1 / len(data.classes), np.float32)
            if usable.any():
                probs[usable], _ = score_rows(model, data, rows[usable], batch, keep=others)
            drops[modality] = reference - metric(probs)
        ranked = dict(sorted(drops.items(), key=lambda kv: -kv[1]))
        return Explanations(
            method="attention share and leave-one-modality-out probability drop "
            "(the serving path's per-modality scores)",
            items=explained,
            global_importance=ranked,
            global_metric=f"{headline} (modality ablation: each modality removed from every "
            "test sample)",
            extras=[f"{headline} with every modality: {reference:.4g}"],
            folder=folder,
        )


def _classifier_only(spec: dict[str, Any], verb: str) -> None:
    """Refuse a retrieval model where only classifiers are supported yet."""
    if spec.get("task") == "retrieval":
        raise ConfigError(
            f"{verb} takes multimodal classifiers; this is an image-text retrieval model "
            "(task: retrieval), whose dual encoder and re-ranker have no single forward pass"
        )


def _no_retrieval_audit(cfg: MultimodalConfig, what: str) -> None:
    """Refuse audit hooks for a retrieval model: it predicts pairs, not labelled classes."""
    if cfg.task == "retrieval":
        from abyssal.core.errors import AbyssalError

        raise AbyssalError(
            f"multimodal {what} need a classifier; this is an image-text retrieval model "
            "(task: retrieval), which has no labels to audit"
        )


def _labelled_rows(data: MultimodalData, split: str = "test") -> np.ndarray:
    """The split's rows that have a label, as :func:`~.evaluation.evaluate_multimodal` scores
    them."""
    rows = data.rows(split)
    return rows[data.inputs.labels[rows] >= 0]


def _with_typos(
    cfg: MultimodalConfig, data: MultimodalData, rows: np.ndarray, level: float, seed: int
) -> Any:
    """``data.inputs`` with typos in the texts of ``rows``, tokenized again (a new token array;
    other rows keep their ids, padded to the new width if it grew)."""
    from dataclasses import replace

    from abyssal.data.perturb_records import typos
    from abyssal.solutions.multimodal.data import _options
    from abyssal.solutions.multimodal.inputs import tokenize_texts
    from abyssal.solutions.text import model as text_model

    inputs = data.inputs
    if inputs.tokens is None or inputs.token_lengths is None or data.text_base is None:
        raise ConfigError(
            "perturbation 'typos' changes texts, and these samples have none "
            f"(modalities: {', '.join(data.modalities)})"
        )
    if inputs.texts is None:
        raise ConfigError("these samples were decoded without keeping their texts; prepare again")
    with_text = [r for r in rows.tolist() if inputs.texts[r] is not None]
    tokenizer = text_model.load_tokenizer(data.text_base, "encoder")
    limit = _options(cfg.data, tokenizer).max_tokens
    changed = typos([inputs.texts[r] for r in with_text], level, seed)
    new_ids, new_lengths, _ = tokenize_texts(changed, tokenizer, limit)
    texts = list(inputs.texts)
    for r, text in zip(with_text, changed, strict=True):
        texts[r] = text
    if new_ids is None or new_lengths is None:  # no test sample has text
        return replace(inputs, texts=texts)
    width = max(inputs.tokens.shape[1], new_ids.shape[1])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = np.full((len(inputs), width), pad, dtype=inputs.tokens.dtype)
    tokens[:, : inputs.tokens.shape[1]] = inputs.tokens
    tokens[with_text] = pad
    tokens[with_text, : new_ids.shape[1]] = new_ids
    lengths = inputs.token_lengths.copy()
    lengths[with_text] = new_lengths
    return replace(inputs, tokens=tokens, token_lengths=lengths, texts=texts)


def _one_row(inputs: Any, row: int) -> Any:
    """The decoded inputs of one sample (a :class:`~.inputs.DecodedInputs` of length 1)."""
    from abyssal.solutions.multimodal.inputs import DecodedInputs

    def take(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[row : row + 1]

    return DecodedInputs(
        ids=[inputs.ids[row]],
        rows=[inputs.rows[row]],
        labels=inputs.labels[row : row + 1],
        present=inputs.present[row : row + 1],
        tokens=take(inputs.tokens),
        token_lengths=take(inputs.token_lengths),
        images=take(inputs.images),
        mels=take(inputs.mels),
        mel_lengths=take(inputs.mel_lengths),
        waves=take(inputs.waves),
        wave_lengths=take(inputs.wave_lengths),
    )
