"""Non-dense state (quantized tensors, packed tuples, dtypes, scalars) to safetensors and back."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from abyssal.core.errors import StoreError
from abyssal.core.state_flatten import flatten_state, storable_tensors, unflatten_state
from abyssal.core.store import ModelStore


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _dynamic_int8(seed: int) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        return torch.ao.quantization.quantize_dynamic(
            _mlp(seed), {torch.nn.Linear}, dtype=torch.qint8
        )


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_dynamic_int8_model_round_trips_through_the_store_exactly(store: ModelStore) -> None:
    original = _dynamic_int8(seed=0)
    mv = store.register("int8", original.state_dict(), solution="s", config={}, metrics={})
    fresh = _dynamic_int8(seed=1)  # same architecture, other weights
    x = torch.randn(7, 6)
    assert not torch.equal(fresh(x), original(x))
    fresh.load_state_dict(store.load_tensors(mv))
    assert torch.equal(fresh(x), original(x))
    assert store.load_weights(mv).keys() == original.state_dict().keys()


def test_per_channel_quantized_tensor_round_trips(store: ModelStore) -> None:
    x = torch.randn(4, 5)
    scales = torch.tensor([0.1, 0.02, 0.3, 0.05, 0.07], dtype=torch.float64)
    zero_points = torch.tensor([0, 3, 10, 128, 7])
    q = torch.quantize_per_channel(x, scales, zero_points, axis=1, dtype=torch.quint8)
    mv = store.register("pc", {"w": q, "plain": x}, solution="s", config={}, metrics={})
    got = store.load_tensors(mv)["w"]
    assert (got.dtype, got.qscheme(), got.q_per_channel_axis()) == (
        torch.quint8,
        torch.per_channel_affine,
        1,
    )
    assert torch.equal(got.int_repr(), q.int_repr())
    assert torch.equal(got.q_per_channel_scales(), scales)
    assert torch.equal(got.q_per_channel_zero_points(), zero_points)
    assert torch.equal(got.dequantize(), q.dequantize())


@pytest.mark.parametrize(
    ("dtype", "scale", "zero_point"),
    [(torch.quint8, 0.05, 7), (torch.qint8, 0.1, -3), (torch.qint32, 1e-4, 0)],
)
def test_per_tensor_quantized_tensors_round_trip(dtype, scale: float, zero_point: int) -> None:
    q = torch.quantize_per_tensor(torch.randn(3, 4), scale, zero_point, dtype)
    tensors, meta = flatten_state({"q": q})
    assert list(tensors) == ["q"] and tensors["q"].dtype == q.int_repr().dtype
    got = unflatten_state(tensors, json.loads(json.dumps(meta)))["q"]
    assert (got.dtype, got.q_scale(), got.q_zero_point()) == (dtype, q.q_scale(), zero_point)
    assert torch.equal(got.int_repr(), q.int_repr())


def test_tuples_lists_dtypes_and_scalars_round_trip() -> None:
    q = torch.quantize_per_tensor(torch.randn(2), 0.5, 1, torch.qint8)
    state = {
        "packed": (q, torch.ones(2), None),
        "nested": [torch.zeros(1), (torch.arange(2), 3)],
        "dtype": torch.bfloat16,
        "flag": True,
        "count": 7,
        "ratio": 0.1,
        "inf": math.inf,
        "name": "head",
        "nothing": None,
    }
    tensors, meta = flatten_state(state)
    got = unflatten_state(tensors, json.loads(json.dumps(meta)))  # meta survives JSON
    assert sorted(got) == sorted(state)
    assert isinstance(got["packed"], tuple) and isinstance(got["nested"], list)
    assert torch.equal(got["packed"][0].int_repr(), q.int_repr()) and got["packed"][2] is None
    assert torch.equal(got["nested"][1][0], torch.arange(2)) and got["nested"][1][1] == 3
    assert got["dtype"] is torch.bfloat16 and got["flag"] is True and got["count"] == 7
    assert got["ratio"] == 0.1 and got["inf"] == math.inf and got["name"] == "head"
    assert got["nothing"] is None


def test_a_dense_state_dict_flattens_to_itself_without_copies() -> None:
    state = {"w": torch.randn(3, 2), "b": torch.zeros(2)}
    tensors, meta = flatten_state(state)
    assert meta == {}
    assert all(tensors[k] is state[k] for k in state)
    assert unflatten_state(tensors, meta) == tensors


def test_unknown_objects_are_named_by_key_and_type() -> None:
    with pytest.raises(StoreError, match=r"state_dict\['opt'\] has type dict; storable values"):
        flatten_state({"w": torch.ones(1), "opt": {"lr": 0.1}})
    with pytest.raises(StoreError, match=r"clashes with a flattened name"):
        flatten_state({"t": (torch.ones(1),), "t::0": torch.ones(1)})


def test_damaged_meta_is_reported() -> None:
    with pytest.raises(StoreError, match="state meta has version 9, expected 1"):
        unflatten_state({}, {"version": 9, "entries": {}})
    meta = {"version": 1, "entries": {"q": {"kind": "quantized", "qscheme": "per_tensor_affine"}}}
    with pytest.raises(StoreError, match="names tensor 'q', which the tensors file does not hold"):
        unflatten_state({}, meta)
    meta = {"version": 1, "entries": {"d": {"kind": "dtype", "name": "Tensor"}}}
    with pytest.raises(StoreError, match="unknown torch dtype 'Tensor'"):
        unflatten_state({}, meta)


def test_the_safetensors_header_describes_non_dense_files_only(store: ModelStore) -> None:
    dense = store.register("d", {"w": torch.ones(2)}, solution="s", config={}, metrics={})
    packed = store.register("p", {"t": (torch.ones(2),)}, solution="s", config={}, metrics={})
    with safe_open(store.artifact_path(dense, "model.safetensors"), "pt") as fh:
        assert fh.metadata() == {"format": "pt"}  # what transformers expects
    with safe_open(store.artifact_path(packed, "model.safetensors"), "pt") as fh:
        header = json.loads(fh.metadata()["abyssal.state"])
        assert list(fh.keys()) == ["t::0"]
    assert header == packed.weights.meta["state"]
    assert header["entries"] == {"t": {"kind": "tuple", "items": [{"kind": "tensor"}]}}


def test_storable_tensors_copies_only_what_it_must() -> None:
    base = torch.randn(4, 6)
    state = {
        "own": base,  # contiguous CPU, own storage: passed through
        "tied": base,  # same storage again: cloned
        "view_t": base.t(),  # same storage, not contiguous: packed into new memory
        "grad": torch.ones(2, requires_grad=True),
    }
    out = storable_tensors(state)
    assert out["own"].data_ptr() == base.data_ptr()
    assert out["tied"].data_ptr() != base.data_ptr() and torch.equal(out["tied"], base)
    assert out["view_t"].is_contiguous() and torch.equal(out["view_t"], base.t())
    assert out["grad"].requires_grad is False
    ptrs = [t.untyped_storage().data_ptr() for t in out.values()]
    assert len(set(ptrs)) == len(ptrs)
