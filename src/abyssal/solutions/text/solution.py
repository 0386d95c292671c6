"""The text-classification solution: a Hugging Face base model with a linear head, fine-tuned in
full, through a LoRA adapter (PEFT), or as a linear probe on a frozen base.

Every version records its base folder as an external base (with a fingerprint of its files) and
a fingerprint of the base's tensors. A LoRA version stores only its adapter (the LoRA matrices
and the head, kilobytes to megabytes); a frozen-base version only its head; a full fine-tune all
its weights. Loading rebuilds the classifier on the base and lays the stored tensors over it; a
base whose files changed is refused.

Example:
    >>> from abyssal.train.api import train
    >>> out = train("text", overrides=["data.path=reviews.csv", "model.tuning=lora"])
    ... # doctest: +SKIP
    >>> out.metrics["trainable_share"] < 0.02  # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from abyssal.contracts.solution import MetricLayout, Registration, Solution, held_out_frame
from abyssal.core.artifacts import ArtifactSource, ExternalBase
from abyssal.data.perturb import Perturbation, check_kind
from abyssal.nn.lora import adapter_state, base_fingerprint, resolve_targets
from abyssal.nn.metrics import classification_metrics, confusion, prefixed
from abyssal.solutions.text.bench import KINDS, perturb_texts, text_attributes
from abyssal.solutions.text.config import TextConfig
from abyssal.solutions.text.data import TextData, prepare_text_data
from abyssal.solutions.text.model import (
    attach_lora,
    build_classifier,
    freeze_base,
    hf_base,
    parameter_counts,
)
from abyssal.solutions.text.sample import TextSampleConfig, generate_sample
from abyssal.solutions.text.task import TextTask, length_sorted_batches, pad_batch


def build_text_model(cfg: TextConfig, spec: dict[str, Any], *, base: Any = None) -> torch.nn.Module:
    """The classifier ``spec`` describes: the base's weights loaded from its folder (or ``base``,
    an already loaded ``transformers`` model), a fresh head, and per ``spec["tuning"]`` a new LoRA
    adapter or a frozen base."""
    model = build_classifier(
        Path(spec["base"]),
        len(spec["classes"]),
        kind=spec["kind"],
        pooling=spec["pooling"],
        dropout=cfg.model.dropout,
        base=base,
    )
    tuning = spec.get("tuning", "full")
    if tuning == "lora":
        return attach_lora(model, spec["lora"])
    if tuning == "frozen":
        return freeze_base(model)
    return model


def text_spec(cfg: TextConfig, data: TextData) -> dict[str, Any]:
    """The model spec of ``cfg`` on ``data``: classes, base folder and kind, pooling, tuning,
    token limit and padding id, and the LoRA targets resolved against the real base."""
    from abyssal.solutions.text.data import open_base

    folder, config, _, kind = open_base(cfg.model)
    pooling = cfg.model.pooling
    if pooling == "auto":
        pooling = "last" if kind == "causal" else "mean"
    spec: dict[str, Any] = {
        "classes": list(data.classes),
        "base": str(folder),
        "kind": kind,
        "pooling": pooling,
        "tuning": cfg.model.tuning,
        "max_length": int(data.tokens.limit),
        "pad_id": int(data.tokens.pad_id),
        "vocab_size": int(getattr(config, "vocab_size", 0) or 0),
    }
    if cfg.model.tuning == "lora":
        probe = build_classifier(
            folder, len(data.classes), kind=kind, pooling=pooling, dropout=0.0, weights=False
        )
        spec["lora"] = {
            "r": cfg.lora.r,
            "alpha": cfg.lora.alpha,
            "dropout": cfg.lora.dropout,
            "target_modules": resolve_targets(probe.base, cfg.lora.target_modules),
        }
    return spec


@dataclass
class TextScores:
    """Probabilities of some texts, and their labels."""

    probabilities: np.ndarray
    labels: np.ndarray


@torch.no_grad()
def score_rows(
    model: torch.nn.Module, data: TextData, rows: np.ndarray, batch_size: int
) -> TextScores:
    """Class probabilities of the texts ``rows`` (scored in length-sorted batches, returned in
    the order of ``rows``)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    rows = np.asarray(rows)
    probs = np.zeros((len(rows), len(data.classes)), dtype=np.float32)
    lengths = data.tokens.lengths[rows]
    for part in length_sorted_batches(lengths, np.arange(len(rows)), batch_size):
        ids = [data.tokens.ids[r] for r in rows[part]]
        batch = pad_batch(ids, data.tokens.pad_id).to(device)
        logits = model(batch.input_ids, batch.attention_mask).float()
        probs[part] = torch.softmax(logits, dim=1).cpu().numpy()
    model.train(was)
    return TextScores(probs, data.labels[rows])


def confusion_metrics(split: str, scores: TextScores, classes: list[str]) -> dict[str, float]:
    """``<split>_confusion__<true>__<predicted>`` counts."""
    m = confusion(scores.labels, scores.probabilities.argmax(axis=1), len(classes))
    return {
        f"{split}_confusion__{t}__{p}": int(m[i, j])
        for i, t in enumerate(classes)
        for j, p in enumerate(classes)
    }


class TextSolution(Solution):
    """Classify texts with a fine-tuned (full, LoRA or frozen-base) Hugging Face model."""

    name: ClassVar[str] = "text"
    config_cls: ClassVar[type] = TextConfig
    default_metric: ClassVar[str] = "val_macro_f1"
    sample_config_cls: ClassVar[type] = TextSampleConfig
    metric_layout: ClassVar[MetricLayout] = MetricLayout(
        columns=(("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("texts", "texts")),
        extras=(
            "best_epoch",
            "epochs_run",
            "trainable_params",
            "trainable_share",
            "train_tokens_per_s",
            "train_padding_efficiency",
        ),
        headline="test_macro_f1",
        confusion=("test",),
    )

    def __init__(self) -> None:
        self._task: TextTask | None = None

    # -- the training half ---------------------------------------------------------------------

    def prepare(self, cfg: TextConfig) -> TextData:
        return prepare_text_data(cfg.data, cfg.model)

    def task(self, cfg: TextConfig, data: TextData) -> TextTask:
        self._task = TextTask(cfg, data, self.model_spec(cfg, data))
        return self._task

    def model_spec(self, cfg: TextConfig, data: TextData) -> dict[str, Any]:
        if self._task is not None and self._task.data is data:
            return dict(self._task.spec)
        return text_spec(cfg, data)

    def build_model(self, cfg: TextConfig, spec: dict[str, Any]) -> torch.nn.Module:
        return build_text_model(cfg, spec)

    def evaluate(self, cfg: TextConfig, model: torch.nn.Module, data: TextData) -> dict[str, float]:
        out: dict[str, float] = {}
        for split in ("val", "test"):
            scores = score_rows(model, data, data.rows(split), cfg.data.eval_batch_size)
            metrics = classification_metrics(
                scores.labels, scores.probabilities, data.classes, count="texts"
            )
            out.update(prefixed(metrics, f"{split}_"))
            out.update(confusion_metrics(split, scores, data.classes))
        out.update(parameter_counts(model))
        if self._task is not None:
            out.update(self._task.clock.metrics())
        return out

    def registration(self, cfg: TextConfig, model: torch.nn.Module, data: TextData) -> Registration:
        """A LoRA version stores its adapter, a frozen-base one its head, a full fine-tune all
        its weights; each names its base folder and the fingerprint of the base's tensors."""
        spec = self.model_spec(cfg, data)
        model = getattr(model, "module", model)
        tuning = spec["tuning"]
        if tuning == "lora":
            state = adapter_state(model)
            artifacts = [ArtifactSource.tensors("adapter_model.safetensors", "adapter", state)]
        elif tuning == "frozen":
            head = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}
            artifacts = [ArtifactSource.tensors("head.safetensors", "weights", head)]
        else:
            artifacts = [ArtifactSource.tensors("model.safetensors", "weights", model.state_dict())]
        lineage = {"base_fingerprint": base_fingerprint(hf_base(model)), "tuning": tuning}
        return Registration(artifacts, ExternalBase.from_path(spec["base"]), lineage)

    def held_out(
        self, cfg: TextConfig, model: torch.nn.Module, data: TextData, *, split: str = "test"
    ) -> Any:
        """The test split's texts, in file order, scored as :meth:`evaluate` scores them, as a
        ``pandas.DataFrame``.

        ``id`` is the 1-based line of the file the text starts on (its row in a CSV, counting
        the header). Two classes: ``label`` is 1 for the second class in sorted order (e.g.
        ``positive`` of negative/positive) and ``score`` the model's probability of it. More
        classes: ``label`` and ``prediction`` are class names and ``probability`` the predicted
        class's probability (no ``score``: there is no one positive class).
        """

        rows = data.rows(split)
        scores = score_rows(model, data, rows, cfg.data.eval_batch_size)
        probability = scores.probabilities.astype(np.float64)  # (n, K)
        return held_out_frame(
            [int(data.records.lines[r]) for r in rows.tolist()],
            scores.labels,
            probability,
            data.classes,
        )

    def explain(
        self,
        cfg: TextConfig,
        model: torch.nn.Module,
        data: TextData,
        n: int,
        *,
        out: Path | None = None,
    ) -> Any:
        """Integrated gradients over the token embeddings of ``n`` test texts.

        Captum's ``LayerIntegratedGradients`` on the base's input embedding layer explains the
        predicted class's logit of each text, from a baseline in which every token but the
        special ones (``[CLS]``, ``[SEP]``, the end token; not the unknown-word token) is the
        padding token; a token's score is the sum over its embedding's entries (special tokens
        score 0 and are left out). Each
        text's scores are drawn as a bar chart in ``out`` (default: a new temporary folder).
        There is no global permutation importance (tokens are not columns to shuffle across
        texts); the extras list the tokens with the largest mean absolute score over the
        explained texts instead.
        """
        from abyssal.contracts.explain import (
            Attribution,
            Explanations,
            explain_folder,
            explained_rows,
            integrated_gradients,
            safe_name,
            token_scores,
            top_scores,
            write_bar_chart,
        )
        from abyssal.core.errors import AbyssalError
        from abyssal.solutions.text.data import open_base

        try:
            embeddings = hf_base(model).get_input_embeddings()
        except AttributeError:
            raise AbyssalError(
                f"text explanations need the eager classifier, got {type(model).__name__}; "
                "explain the version an optimized one was made from"
            ) from None
        _, _, tokenizer, _ = open_base(cfg.model)
        special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}  # unknown words count
        pad = int(data.tokens.pad_id)
        device = next(model.parameters()).device
        folder = explain_folder(out, self.name)

        def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return model(ids, mask)

        was_training = model.training
        model.eval()
        items: list[Attribution] = []
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        try:
            for r in explained_rows(data.rows("test"), n).tolist():
                ids = torch.from_numpy(data.tokens.ids[r]).long().unsqueeze(0).to(device)  # (1, T)
                mask = torch.ones_like(ids)
                keep = torch.tensor([t in special for t in ids[0].tolist()], device=device)
                baseline = torch.where(keep, ids, torch.full_like(ids, pad))
                with torch.no_grad():
                    logits = model(ids, mask).float()[0]  # (K,)
                c = int(logits.argmax())
                ig = integrated_gradients(
                    forward, ids, baseline, c, layer=embeddings, extra_args=(mask,)
                )
                values = ig[0].float().sum(dim=-1).cpu().numpy()  # (T,)
                words = tokenizer.convert_ids_to_tokens(ids[0].tolist())
                kept = [i for i, t in enumerate(ids[0].tolist()) if t not in special]
                scores = token_scores([words[i] for i in kept], [float(values[i]) for i in kept])
                for i in kept:
                    totals[words[i]] = totals.get(words[i], 0.0) + abs(float(values[i]))
                    counts[words[i]] = counts.get(words[i], 0) + 1
                item = f"line {data.records.lines[r]}"
                prediction, label = data.classes[c], data.classes[int(data.labels[r])]
                image = write_bar_chart(
                    scores,
                    folder / f"{safe_name(item)}.png",
                    title=f"{item}: predicted {prediction} (label {label})",
                    xlabel=f"attribution to the logit of {prediction!r}",
                )
                text = data.records.texts[r]
                note = f"text: {text[:80]}{'…' if len(text) > 80 else ''}"
                items.append(Attribution(item, prediction, label, top_scores(scores), image, note))
        finally:
            model.train(was_training)
        mean = {t: totals[t] / counts[t] for t in totals}
        shown = ", ".join(f"{t} {v:.3g}" for t, v in top_scores(mean, 10).items())
        extras = [
            "no global permutation importance: tokens are not columns to shuffle across texts",
        ]
        if shown:
            extras.append(f"largest mean |attribution| over the explained texts: {shown}")
        return Explanations(
            "integrated gradients (Captum) over the token embeddings",
            items,
            {},
            "",
            extras,
            folder,
        )

    # -- the benchmark half ---------------------------------------------------------------------

    perturbations: ClassVar[tuple[str, ...]] = KINDS

    def perturb(self, cfg: TextConfig, data: TextData, perturbation: Perturbation) -> TextData:
        """A copy of ``data`` whose test texts have typos in a ``level`` fraction of their words,
        tokenized again as in training (see :func:`~abyssal.solutions.text.bench.perturb_texts`).

        Raises:
            ConfigError: a kind other than ``typos``.
        """
        perturbation = check_kind(perturbation, KINDS, f"solution '{self.name}'")
        return perturb_texts(data, perturbation, cfg.model)

    def item_attributes(self, cfg: TextConfig, data: TextData) -> pd.DataFrame:
        """The test texts of :meth:`held_out`, in its order (same ``id``: the line), with their
        lengths in words, characters and tokens and whether they were cut (see
        :func:`~abyssal.solutions.text.bench.text_attributes`)."""
        return text_attributes(data)

    # -- the serving half ----------------------------------------------------------------------

    def example_inputs(self, cfg: TextConfig, spec: dict[str, Any]) -> tuple[Any, ...]:
        vocab = max(2, int(spec.get("vocab_size") or 100))
        ids = torch.randint(
            1, min(vocab, 1000), (2, 16), generator=torch.Generator().manual_seed(0)
        )
        return ids, torch.ones_like(ids)

    def input_axes(self, cfg: TextConfig, spec: dict[str, Any]) -> tuple[dict[int, str], ...]:
        return ({0: "batch", 1: "tokens"}, {0: "batch", 1: "tokens"})

    def model_inputs(
        self, cfg: TextConfig, data: TextData, batch: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` validation texts (drawn with replacement when the split is smaller)."""
        rows = data.rows("val")
        pick = np.random.default_rng(seed).choice(rows, size=batch, replace=batch > len(rows))
        padded = pad_batch([data.tokens.ids[r] for r in np.sort(pick)], data.tokens.pad_id)
        return padded.input_ids, padded.attention_mask

    def decision_score(self, loaded: Any) -> Any:
        """Two classes: a response's ``p_<second class>`` (what :meth:`held_out`'s ``score`` is
        about); more: its ``probability`` (the predicted class's: the confidence an
        accept-or-review point decides on)."""
        classes = list(loaded.spec.get("classes") or [])
        if len(classes) < 2:
            return None
        if len(classes) == 2:
            key = f"p_{classes[1]}"
            return lambda response: float(response[key])
        return lambda response: float(response["probability"])

    def predictor(self, loaded: Any) -> Any:
        from abyssal.solutions.text.predict import TextPredictor

        return TextPredictor.from_loaded(loaded)

    def predict_file(
        self,
        loaded: Any,
        path: str | Path,
        *,
        out: str | Path | None = None,
        explain: str | Path | None = None,
    ) -> Any:
        """Predict every text of a CSV, JSONL or PhraseBank file (labels, when present, are
        checked against the trained classes and scored)."""
        from abyssal.solutions.text.predict import predict_texts

        if explain is not None:
            raise self._lacks("predict_file(explain=...)", "explanations of predictions")
        return predict_texts(self.predictor(loaded), path, out=out)

    def adapter_onto(self, base_model: torch.nn.Module, ref: str, store: Any = None) -> Any:
        """The adapter version ``ref`` on ``base_model`` (see :mod:`.adapters`)."""
        from abyssal.solutions.text.adapters import adapter_onto

        return adapter_onto(base_model, ref, store)

    def merge_adapter(
        self, ref: str, *, name: str | None = None, alias: str | None = None, store: Any = None
    ) -> Any:
        """See :func:`.adapters.merge_adapter`."""
        from abyssal.solutions.text.adapters import merge_adapter

        return merge_adapter(ref, name=name, alias=alias, store=store)

    def generate_sample(self, options: TextSampleConfig, out: Path) -> list[str]:
        return generate_sample(options, out)
