"""load_model composes a version's chain: base weights first, then adapters, checked key by key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import abyssal.solutions
from abyssal.core.artifacts import ArtifactSource, ExternalBase
from abyssal.core.digest import fingerprint_path
from abyssal.core.errors import StoreError
from abyssal.core.registry import Registry
from abyssal.core.store import ModelStore
from abyssal.solutions.loading import KEYS_SHOWN, load_model

SPEC = {"inputs": 3, "outputs": 2}


@dataclass
class ToyConfig:
    hidden: int = 4
    rank: int = 0  # > 0: a low-rank delta on the head, as a LoRA adapter adds
    base_path: str = ""  # a folder whose encoder.safetensors the builder loads itself


class LowRankDelta(nn.Module):
    """``x @ A.T @ B.T``: the parameters a LoRA adapter adds beside a frozen layer."""

    def __init__(self, features: int, outputs: int, rank: int) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.zeros(rank, features))
        self.lora_b = nn.Parameter(torch.zeros(outputs, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.lora_a.T @ self.lora_b.T


class Toy(nn.Module):
    def __init__(self, cfg: ToyConfig, spec: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = nn.Linear(spec["inputs"], cfg.hidden)
        self.head = nn.Linear(cfg.hidden, spec["outputs"])
        self.delta = LowRankDelta(cfg.hidden, spec["outputs"], cfg.rank) if cfg.rank else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.encoder(x))
        return self.head(h) + (self.delta(h) if self.delta is not None else 0)


class ToySolution:
    """Just what load_model uses of a solution: its config class and builder."""

    name = "toy"
    config_cls = ToyConfig

    def build_model(self, cfg: ToyConfig, spec: dict[str, Any]) -> nn.Module:
        torch.manual_seed(1234)  # fresh weights that differ from every registered ones
        model = Toy(cfg, spec)
        if cfg.base_path:
            model.load_state_dict(
                load_file(Path(cfg.base_path) / "encoder.safetensors"), strict=False
            )
        return model


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    solutions: Registry[type] = Registry("solution")
    solutions.add("toy", ToySolution)
    monkeypatch.setattr(abyssal.solutions, "SOLUTIONS", solutions)  # undone after the test
    return ModelStore(tmp_path / "store")


def _config(**changes: Any) -> dict[str, Any]:
    return {"solution_config": {**ToyConfig().__dict__, **changes}, "model_spec": SPEC}


def _register_base(store: ModelStore) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    weights = Toy(ToyConfig(), SPEC).state_dict()
    store.register("toy", weights, solution="toy", config=_config(), metrics={})
    return weights


def _adapter(**extra: torch.Tensor) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return {
        "delta.lora_a": torch.randn(2, 4, generator=gen),
        "delta.lora_b": torch.randn(2, 2, generator=gen),
        **extra,
    }


def _register_adapter(store: ModelStore, adapter: dict[str, torch.Tensor]) -> None:
    store.register(
        "toy-lora",
        artifacts=[
            ArtifactSource.tensors("adapter_model.safetensors", "adapter", adapter),
            ArtifactSource.json("adapter_config.json", "aux", {"r": 2}),  # not applied: aux
        ],
        base="toy:1",
        solution="toy",
        config=_config(rank=2),
        metrics={},
    )


def test_adapter_on_a_base_version_equals_the_model_assembled_by_hand(store: ModelStore) -> None:
    base = _register_base(store)
    _register_adapter(store, _adapter())
    loaded = load_model("toy-lora", store=store)
    assert loaded.version.ref == "toy-lora:1" and not loaded.model.training
    assert loaded.cfg == ToyConfig(rank=2) and loaded.spec == SPEC
    by_hand = Toy(ToyConfig(rank=2), SPEC)
    by_hand.load_state_dict({**base, **_adapter()})
    x = torch.randn(5, 3)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), by_hand(x))
        base_only = load_model("toy:1", store=store).model
        assert not torch.equal(base_only(x), by_hand(x))  # the adapter changed the outputs
        assert torch.equal(base_only.encoder.weight, by_hand.encoder.weight)


def test_an_adapter_key_the_model_lacks_is_an_error(store: ModelStore) -> None:
    _register_base(store)
    _register_adapter(store, _adapter(**{"delta.lora_c": torch.zeros(1)}))
    with pytest.raises(
        StoreError,
        match=r"toy-lora:1: artifact 'adapter_model.safetensors' holds 1 key\(s\) the model "
        r"does not have: delta.lora_c$",
    ):
        load_model("toy-lora", store=store)


def test_keys_no_artifact_provides_are_an_error(store: ModelStore) -> None:
    _register_base(store)
    store.register("toy-lora", base="toy:1", solution="toy", config=_config(rank=2), metrics={})
    with pytest.raises(
        StoreError,
        match=r"toy-lora:1: the artifacts of toy-lora:1 -> toy:1 leave 2 model key\(s\) unset: "
        r"delta.lora_a, delta.lora_b$",
    ):
        load_model("toy-lora", store=store)


def test_error_lists_at_most_ten_keys(store: ModelStore) -> None:
    _register_base(store)
    extra = {f"junk.{i:02d}": torch.zeros(1) for i in range(KEYS_SHOWN + 3)}
    _register_adapter(store, _adapter(**extra))
    with pytest.raises(StoreError, match=r"holds 13 key\(s\) .*junk.00, .*junk.09 \(and 3 more\)$"):
        load_model("toy-lora", store=store)


def test_a_missing_file_anywhere_in_the_chain_is_named(store: ModelStore) -> None:
    _register_base(store)
    _register_adapter(store, _adapter())
    base = store.resolve("toy:1")
    blob = store.root / "blobs" / base.weights_sha256[:2] / f"{base.weights_sha256}.safetensors"
    blob.unlink()
    with pytest.raises(
        StoreError,
        match=rf"toy:1: weights file '{blob}' \(artifact 'model.safetensors'\) is missing",
    ):
        load_model("toy-lora:1", store=store)


def test_external_base_supplies_what_the_builder_loads_and_must_not_change(
    store: ModelStore, tmp_path: Path
) -> None:
    folder = tmp_path / "hf-encoder"
    folder.mkdir()
    torch.manual_seed(3)
    encoder = {
        k: v for k, v in Toy(ToyConfig(), SPEC).state_dict().items() if k.startswith("encoder")
    }
    save_file(encoder, folder / "encoder.safetensors")
    head = {"head.weight": torch.ones(2, 4), "head.bias": torch.zeros(2)}
    store.register(
        "toy-ext",
        head,
        base=ExternalBase.from_path(folder),
        solution="toy",
        config=_config(base_path=str(folder)),
        metrics={},
    )
    model = load_model("toy-ext", store=store).model
    assert torch.equal(model.encoder.weight, encoder["encoder.weight"])  # from the external base
    assert torch.equal(model.head.weight, torch.ones(2, 4))  # from the version's artifact
    registered = store.resolve("toy-ext").base.fingerprint
    (folder / "notes.txt").write_text("changed")
    with pytest.raises(StoreError) as info:
        load_model("toy-ext", store=store)
    message = str(info.value)
    assert message.startswith(f"toy-ext:1: external base '{folder}' changed since registration")
    assert f"fingerprint {fingerprint_path(folder)}, registered {registered}" in message


def test_a_version_without_a_solution_config_is_refused(store: ModelStore) -> None:
    store.register("raw", {"w": torch.ones(1)}, solution="toy", config={}, metrics={})
    with pytest.raises(StoreError, match="raw:1 was not registered by a solution"):
        load_model("raw", store=store)
