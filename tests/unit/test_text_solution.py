"""The text solution on tiny models built from configs: LoRA placement, merge/unmerge, adapters
stored and reloaded bit for bit, the wrong base refused, causal models, batching, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from abyssal.core.errors import ConfigError, DataError, StoreError
from tests.unit.tiny_text import texts_csv, tiny_bert, tiny_gpt2

pytest.importorskip("peft")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return texts_csv(tmp_path / "texts.csv")


def overrides(data: Path, base: Path, *extra: str) -> list[str]:
    return [
        f"data.path={data}",
        f"model.base={base}",
        "data.val_frac=0.25",
        "data.test_frac=0.25",
        "train.epochs=2",
        "train.lr=0.01",
        "train.device=cpu",
        "train.progress=false",
        "data.max_tokens=64",
        *extra,
    ]


def train_text(data: Path, base: Path, *extra: str, name: str = "t"):
    from abyssal.train.api import train

    return train("text", None, overrides(data, base, *extra), model_name=name)


def test_lora_adapts_the_named_modules_only_and_stores_only_the_adapter(data, bert) -> None:
    out = train_text(data, bert, "model.tuning=lora", "lora.target_modules=[query,value]")
    roles = {a.name: a.role for a in out.version.artifacts}
    assert roles == {"adapter_model.safetensors": "adapter"}
    from abyssal.core.store import ModelStore

    keys = set(ModelStore().load_tensors(out.version, "adapter_model.safetensors"))
    adapted = {k.split(".lora_")[0] for k in keys if ".lora_" in k}
    assert adapted and all(k.endswith(("query", "value")) for k in adapted)
    assert len(adapted) == 4  # 2 layers x (query, value)
    assert {k for k in keys if "lora_" not in k} == {
        "base_model.model.head.modules_to_save.default.weight",
        "base_model.model.head.modules_to_save.default.bias",
    }
    assert 0 < out.metrics["trainable_share"] < 0.5
    assert out.version.base.kind == "huggingface"
    assert len(out.version.lineage["base_fingerprint"]) == 16


def test_a_saved_adapter_reloads_bit_identical_and_scores_the_same(data, bert) -> None:
    from abyssal.core.store import ModelStore
    from abyssal.nn.lora import adapter_state
    from abyssal.solutions.loading import load_model

    out = train_text(data, bert, "model.tuning=lora")
    stored = ModelStore().load_tensors(out.version, "adapter_model.safetensors")
    loaded = load_model(out.version.ref)
    state = adapter_state(loaded.model)
    assert set(state) == set(stored)
    assert all(torch.equal(state[k], stored[k]) for k in stored)
    from abyssal.bench.evaluate import evaluate

    again = evaluate(out.version.ref)
    assert again.metrics["test_accuracy"] == pytest.approx(out.metrics["test_accuracy"])


def test_merge_then_unmerge_restores_the_weights(bert) -> None:
    from abyssal.solutions.text.model import attach_lora, build_classifier

    torch.manual_seed(0)
    model = build_classifier(bert, 3, kind="auto", pooling="auto", dropout=0.0)
    before = {k: v.clone() for k, v in model.base.state_dict().items()}
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]}
    peft_model = attach_lora(model, lora).eval()
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero: make the update non-zero
            torch.nn.init.normal_(p, std=0.5)
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        adapted = peft_model(ids, mask)
        peft_model.merge_adapter()
        merged = peft_model(ids, mask)
        query = peft_model.get_base_model().base.encoder.layer[0].attention.self.query
        assert not torch.equal(
            query.base_layer.weight, before["encoder.layer.0.attention.self.query.weight"]
        )
        peft_model.unmerge_adapter()
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    after = {
        k.replace(".base_layer", ""): v
        for k, v in peft_model.get_base_model().base.state_dict().items()
        if "lora_" not in k
    }
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, atol=1e-6, rtol=0)


def test_the_wrong_base_is_refused(data, bert, tmp_path) -> None:
    import transformers

    from abyssal.solutions import get_solution

    out = train_text(data, bert, "model.tuning=lora")
    other = transformers.AutoModel.from_pretrained(str(tiny_bert(tmp_path / "other", seed=1)))
    with pytest.raises(StoreError, match="tensor fingerprint"):
        get_solution("text").adapter_onto(other, out.version.ref)
    same = transformers.AutoModel.from_pretrained(str(bert))
    model = get_solution("text").adapter_onto(same, out.version.ref)
    assert model(torch.tensor([[2, 10, 3]]), torch.ones(1, 3, dtype=torch.long)).shape == (1, 3)


def test_a_changed_base_folder_is_refused_at_load(data, tmp_path) -> None:
    from abyssal.solutions.loading import load_model

    base = tiny_bert(tmp_path / "base")
    out = train_text(data, base, "model.tuning=lora")
    tiny_bert(base, seed=5)  # the folder now holds other weights
    with pytest.raises(StoreError, match="changed since registration"):
        load_model(out.version.ref)


def test_bad_target_modules_list_the_real_layers(data, bert) -> None:
    with pytest.raises(ConfigError) as err:
        train_text(data, bert, "model.tuning=lora", "lora.target_modules=[query_key_value]")
    assert "'query_key_value' matches no linear layer" in str(err.value)
    assert "query" in str(err.value) and "'auto'" in str(err.value)


def test_frozen_stores_only_the_head_and_full_stores_everything(data, bert) -> None:
    frozen = train_text(data, bert, "model.tuning=frozen", name="f")
    assert [a.name for a in frozen.version.artifacts] == ["head.safetensors"]
    assert frozen.metrics["trainable_params"] == 16 * 3 + 3
    full = train_text(data, bert, "model.tuning=full", name="g")
    assert full.metrics["trainable_share"] == 1.0
    assert "test_confusion__positive__positive" in full.metrics


def test_a_causal_model_is_read_at_its_last_real_token(tmp_path, data) -> None:
    from abyssal.solutions.text.model import build_classifier

    folder = tiny_gpt2(tmp_path / "gpt2")
    model = build_classifier(folder, 3, kind="auto", pooling="auto", dropout=0.0).eval()
    assert model.pooling == "last"
    ids = torch.tensor([[2, 10, 11, 3]])
    padded = torch.tensor([[2, 10, 11, 3, 0, 0]])
    with torch.no_grad():
        a = model(ids, torch.ones_like(ids))
        b = model(padded, torch.tensor([[1, 1, 1, 1, 0, 0]]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    out = train_text(data, folder, "model.tuning=lora", name="causal")
    assert out.version.config["model_spec"]["kind"] == "causal"
    assert set(out.version.config["model_spec"]["lora"]["target_modules"]) == {"c_attn"}


def test_buckets_keep_the_token_budget_and_processes_get_equal_batches(data, bert) -> None:
    from abyssal.contracts.task import Shard
    from abyssal.core.config import load_config
    from abyssal.solutions.text.solution import TextSolution

    solution = TextSolution()
    cfg = load_config(TextSolution.config_cls, None, overrides(data, bert, "data.max_tokens=40"))
    prepared = solution.prepare(cfg)
    task = solution.task(cfg, prepared)
    batches = task.epoch_batches(0)
    lengths = prepared.tokens.lengths
    assert all(len(b) * lengths[b].max() <= 40 or len(b) == 1 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == prepared.rows("train").tolist()
    assert [b.tolist() for b in task.epoch_batches(0)] == [b.tolist() for b in batches]
    parts = [list(task.train_batches(0, Shard(r, 2))) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(batches) // 2
    assert "split.csv" in prepared.run_files()


def test_overlong_texts_are_truncated_or_refused_by_line(tmp_path, bert, caplog) -> None:
    from abyssal.solutions.text.config import TextDataConfig, TextModelConfig
    from abyssal.solutions.text.data import prepare_text_data

    path = texts_csv(tmp_path / "t.csv")
    with path.open("a") as fh:
        fh.write(" ".join(["profit"] * 60) + ",positive\n")
    model = TextModelConfig(base=str(bert))
    with pytest.raises(DataError, match=r"longer than 16 tokens: .*t\.csv line 38"):
        prepare_text_data(TextDataConfig(path=str(path), max_length=16, overlong="refuse"), model)
    with caplog.at_level("WARNING"):
        prepared = prepare_text_data(TextDataConfig(path=str(path), max_length=16), model)
    assert prepared.tokens.lengths.max() == 16
    assert "1 text(s) longer than 16 tokens were truncated" in caplog.text


def test_predict_refuses_a_label_never_trained_naming_the_line(data, bert, tmp_path) -> None:
    from abyssal.solutions.loading import load_model

    out = train_text(data, bert, "model.tuning=lora")
    loaded = load_model(out.version.ref)
    bad = tmp_path / "new.csv"
    bad.write_text("text,label\nprofit rose,positive\nshares flat,mixed\n")
    with pytest.raises(DataError, match=r"new\.csv line 3: label 'mixed' was never trained"):
        loaded.solution.predict_file(loaded, bad)
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "profit rose"}\n{"text": "weak market loss"}\n')
    report = loaded.solution.predict_file(loaded, good, out=tmp_path / "scored.csv")
    assert report.rows == 2 and (tmp_path / "scored.csv").is_file()
    assert set(report.frame["label"]) <= {"positive", "negative", "neutral"}
    predictor = loaded.solution.predictor(loaded)
    with pytest.raises(DataError, match="'text' is empty"):
        predictor.parse({"text": "   "})


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_cached_embeddings_score_as_the_model_and_skip_it_on_a_repeat(data, bert, tuning) -> None:
    from abyssal.core.digest import content_digest
    from abyssal.serve.cache import MemoryFeatureCache
    from abyssal.solutions.loading import load_model

    out = train_text(data, bert, f"model.tuning={tuning}")
    loaded = load_model(out.version.ref)
    plain = loaded.solution.predictor(loaded)
    cached = loaded.solution.predictor(loaded)
    cache = MemoryFeatureCache()
    able = cached.use_cache(cache)
    texts = ["profit rose", "weak market loss", "profit rose", "shares were flat"]
    items = [plain.parse({"text": t}) for t in texts]
    expected = plain.probabilities([i.ids for i in items])
    if not able:  # a model without embed/head scores as it always did
        assert cached.cache is None
        return
    got = cached.probabilities([i.ids for i in items])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    distinct = len({content_digest(i.ids) for i in items})  # equal token ids: one entry
    assert distinct < 4 and len(cache) == distinct  # each distinct input looked up once
    assert (cache.stats.hits, cache.stats.misses) == (0, distinct)
    calls = []
    hook = loaded.model.embed
    loaded.model.embed = lambda *a: calls.append(1) or hook(*a)
    again = cached.probabilities([items[0].ids, items[3].ids])
    assert not calls and cache.stats.hits == 2  # both from the cache: no transformer pass
    np.testing.assert_allclose(again, expected[[0, 3]], atol=1e-5)
    early = cached.predict_cached([items[1], plain.parse({"text": "market profit loss rose"})])
    assert not calls and early[1] is None and cache.stats.misses == distinct  # uncounted look
    assert early[0]["label"] == plain.predict([items[1]])[0]["label"]
    np.testing.assert_allclose(early[0]["probability"], plain.predict([items[1]])[0]["probability"],
                               atol=1e-5)  # fmt: skip
