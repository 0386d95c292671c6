"""The lifecycle of LoRA adapters of the text solution: onto a base, merged, several on one base.

- :func:`adapter_onto` lays a registered adapter onto a base model the caller already holds,
  after checking that the base's tensors are the ones the adapter was trained on.
- :func:`merge_adapter` folds an adapter into its base (PEFT's ``merge_and_unload``) and registers
  the plain model as a new version whose parent is the adapter; ``abyssal optimize`` takes it on
  to INT8, so the lineage reads adapter -> merged -> quantized.
- :class:`AdapterSet` holds one base and several adapters (one per customer or task), each with
  its own head, and scores each call with the adapter it names.

Example:
    >>> merged = merge_adapter("reviews-lora:3")  # doctest: +SKIP
    >>> merged.lineage["parent"]  # doctest: +SKIP
    'reviews-lora:3'
    >>> adapters = AdapterSet(["bank-a:1", "bank-b:2"])  # doctest: +SKIP
    >>> adapters.predict(["Profit rose 5 %"], adapter="bank-b:2")[0]["label"]  # doctest: +SKIP
    'positive'
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abyssal.core.artifacts import ExternalBase
from abyssal.core.errors import ConfigError, StoreError
from abyssal.core.store import ModelStore, ModelVersion
from abyssal.nn.lora import base_fingerprint
from abyssal.solutions.loading import load_model, version_config
from abyssal.solutions.text.model import attach_lora, build_classifier, load_tokenizer

HEAD = "base_model.model.head.modules_to_save.default."
"""Where PEFT keeps the adapter's own copy of the head in a saved adapter's keys."""


def adapter_version(ref: str, store: ModelStore) -> ModelVersion:
    """The version ``ref``, checked to be a text LoRA adapter."""
    mv = store.resolve(ref)
    spec = mv.config.get("model_spec", {})
    if mv.solution != "text" or spec.get("tuning") != "lora":
        raise ConfigError(f"{mv.ref} is not a LoRA adapter of the text solution")
    return mv


def check_base(mv: ModelVersion, base: nn.Module, what: str = "this base model") -> None:
    """Refuse ``base`` unless its tensors are the ones ``mv`` was trained on."""
    expected = mv.lineage.get("base_fingerprint")
    found = base_fingerprint(base)
    if expected is not None and found != expected:
        raise StoreError(
            f"{mv.ref} was trained on a base with tensor fingerprint {expected}; {what} has "
            f"{found}: an adapter only works on the weights it was trained on"
        )


def adapter_onto(base_model: nn.Module, ref: str, store: ModelStore | None = None) -> nn.Module:
    """The classifier of adapter version ``ref`` built on ``base_model`` (a ``transformers``
    model the caller loaded), in eval mode.

    Raises:
        StoreError: ``base_model``'s tensors are not the adapter's base.
    """
    store = store or ModelStore()
    mv = adapter_version(ref, store)
    check_base(mv, base_model)
    spec = mv.config["model_spec"]
    model = build_classifier(
        _folder(spec), len(spec["classes"]), kind=spec["kind"], pooling=spec["pooling"],
        dropout=0.0, base=base_model,
    )  # fmt: skip
    model = attach_lora(model, spec["lora"])
    _load(model, store.load_tensors(mv, "adapter_model.safetensors"), mv.ref)
    return model.eval()


def _folder(spec: dict[str, Any]) -> Path:
    return Path(spec["base"])


def _load(model: nn.Module, state: dict[str, torch.Tensor], ref: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise StoreError(f"{ref}: the adapter holds keys the model lacks: {sorted(unexpected)[:5]}")
    lora = [k for k in missing if "lora_" in k and any(n in k for n in _adapter_names(state))]
    if lora:
        raise StoreError(f"{ref}: the adapter lacks LoRA tensors the model has: {lora[:5]}")


def _adapter_names(state: dict[str, torch.Tensor]) -> set[str]:
    """The PEFT adapter names the keys of ``state`` use (``...lora_A.<name>.weight``)."""
    return {k.split("lora_A.", 1)[1].split(".", 1)[0] for k in state if "lora_A." in k}


def merge_adapter(
    ref: str,
    *,
    name: str | None = None,
    alias: str | None = None,
    store: ModelStore | None = None,
) -> ModelVersion:
    """Fold the adapter ``ref`` into its base and register the plain model.

    The merged version stores all of its weights, names the same external base (for its
    tokenizer), has the adapter as its ``parent``, and records the largest difference between
    the adapter's and the merged model's logits on a probe batch.

    Args:
        ref: a text LoRA adapter version.
        name: the merged model's name (default: the adapter's name + ``-merged``).
        alias: point this alias at the merged version.
        store: the model store (default: the default store).
    """
    store = store or ModelStore()
    mv = adapter_version(ref, store)
    loaded = load_model(mv.ref, store)
    probe = loaded.solution.example_inputs(loaded.cfg, loaded.spec)
    with torch.no_grad():
        before = loaded.model(*probe).float()
        merged = loaded.model.merge_and_unload()
        after = merged(*probe).float()
    cfg = copy.deepcopy(loaded.cfg)
    cfg.model.tuning = "full"
    spec = {k: v for k, v in loaded.spec.items() if k != "lora"} | {"tuning": "full"}
    version = store.register(
        name or f"{mv.name}-merged",
        merged.state_dict(),
        base=ExternalBase.from_path(spec["base"]),
        solution="text",
        config={
            **version_config(loaded.solution, cfg, spec),
            "headline_metric": mv.config.get("headline_metric", "test_macro_f1"),
        },
        metrics={**mv.metrics, "merge_max_abs_logit_diff": float((before - after).abs().max())},
        lineage={
            "parent": mv.ref,
            "merged_adapter": mv.ref,
            "base_fingerprint": base_fingerprint(merged.base),
            "data_fingerprint": mv.lineage.get("data_fingerprint"),
            "data": mv.lineage.get("data", ""),
        },
    )
    if alias is not None:
        store.set_alias(version.name, alias, version.version)
    return version


class AdapterSet:
    """One base model and several LoRA adapters trained on it, chosen per call.

    The base is loaded once; each adapter's LoRA matrices go into it under their own name and
    each keeps its own head (adapters may classify different label sets). :meth:`predict` scores
    with the adapter it names. Every adapter must have been trained on the same base tensors.

    Args:
        refs: adapter versions of the text solution.
        store: the model store.

    Raises:
        StoreError: an adapter trained on another base than the first's.
    """

    def __init__(self, refs: Sequence[str], store: ModelStore | None = None) -> None:
        if not refs:
            raise ConfigError("AdapterSet needs at least one adapter ref")
        self.store = store or ModelStore()
        first = load_model(adapter_version(refs[0], self.store).ref, self.store)
        self.model, self.spec, self.cfg = first.model, first.spec, first.cfg
        self.tokenizer = load_tokenizer(_folder(first.spec), first.spec["kind"])
        self.base_print = first.version.lineage.get("base_fingerprint")
        self.names: dict[str, str] = {}  # ref -> PEFT adapter name
        self.heads: dict[str, nn.Linear] = {}
        self.classes: dict[str, list[str]] = {}
        self.pii: dict[str, str] = {}  # ref -> data.pii the adapter was trained with
        self._take(first.version, "default")
        for i, ref in enumerate(refs[1:], 1):
            self.add(ref, f"adapter{i}")

    def add(self, ref: str, adapter_name: str | None = None) -> str:
        """Load one more adapter (checked against the base); returns its pinned ref."""
        mv = adapter_version(ref, self.store)
        if mv.lineage.get("base_fingerprint") != self.base_print:
            raise StoreError(
                f"{mv.ref} was trained on another base (tensor fingerprint "
                f"{mv.lineage.get('base_fingerprint')}) than this set's ({self.base_print})"
            )
        spec = mv.config["model_spec"]
        if spec["base"] != self.spec["base"] or spec["pooling"] != self.spec["pooling"]:
            raise StoreError(f"{mv.ref} uses another base folder or pooling than this set")
        name = adapter_name or f"adapter{len(self.names)}"
        from abyssal.nn.lora import LoraConfig

        lora = spec["lora"]
        config = LoraConfig(
            r=int(lora["r"]),
            lora_alpha=lora["alpha"],
            target_modules=lora["target_modules"],
            lora_dropout=lora["dropout"],
        )
        self.model.add_adapter(name, config)
        state = self.store.load_tensors(mv, "adapter_model.safetensors")
        renamed = {k.replace(".default.", f".{name}."): v for k, v in state.items() if "lora_" in k}
        _load(self.model, renamed, mv.ref)
        self.model.eval()  # the new adapter's dropout layers start in training mode
        self._take(mv, name, state)
        return mv.ref

    def _take(self, mv: ModelVersion, name: str, state: dict | None = None) -> None:
        state = (
            state if state is not None else self.store.load_tensors(mv, "adapter_model.safetensors")
        )
        weight, bias = state[HEAD + "weight"], state[HEAD + "bias"]
        head = nn.Linear(weight.shape[1], weight.shape[0])
        head.load_state_dict({"weight": weight, "bias": bias})
        self.names[mv.ref] = name
        self.heads[mv.ref] = head.eval()
        self.classes[mv.ref] = list(mv.config["model_spec"]["classes"])
        self.pii[mv.ref] = mv.config.get("solution_config", {}).get("data", {}).get("pii", "mask")

    def _ref(self, adapter: str) -> str:
        if adapter in self.names:
            return adapter
        try:
            pinned = self.store.resolve(adapter).ref
        except StoreError:
            pinned = None
        if pinned not in self.names:
            raise ConfigError(f"adapter {adapter!r} is not in this set: {sorted(self.names)}")
        return pinned

    @torch.no_grad()
    def predict(self, texts: Sequence[str], *, adapter: str) -> list[dict[str, Any]]:
        """Labels and probabilities of ``texts`` under the adapter ``adapter`` (a ref); personal
        data is masked first unless that adapter was trained with ``data.pii=keep``."""
        from abyssal.solutions.text.data import tokenize
        from abyssal.solutions.text.privacy import guard_texts
        from abyssal.solutions.text.task import pad_batch

        ref = self._ref(adapter)
        self.model.set_adapter(self.names[ref])
        tokens = tokenize(
            self.tokenizer,
            guard_texts(texts, self.pii[ref]),
            limit=int(self.spec["max_length"]),
            overlong="truncate",
        )
        batch = pad_batch(tokens.ids, tokens.pad_id)
        inner = self.model.get_base_model()
        pooled = inner.embed(batch.input_ids, batch.attention_mask)
        probs = torch.softmax(self.heads[ref](pooled).float(), dim=1).numpy()
        classes = self.classes[ref]
        return [
            {"adapter": ref, "label": classes[int(np.argmax(p))], "probability": float(p.max())}
            for p in probs
        ]
