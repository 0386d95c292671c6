"""LoRA through PEFT with the article's API, on a tiny BERT built from a config (no download)."""

from __future__ import annotations

import pytest
import torch

from abyssal.core.errors import ConfigError

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


@pytest.fixture
def bert() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(cfg).eval()


def test_the_articles_snippet_runs_with_our_import(bert) -> None:
    from abyssal import LoraConfig, PeftModel

    cfg = LoraConfig(r=16, lora_alpha=32, target_modules=["query", "value"], lora_dropout=0.1)
    model = PeftModel.from_pretrained(bert, cfg)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A" in n}
    assert adapted and all(n.endswith(("query", "value")) for n in adapted)
    assert len(adapted) == 4  # two layers x (query, value), nothing else
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or "classifier" in n for n in trained)


def test_a_target_the_model_lacks_is_refused_with_its_layers_and_a_suggestion(bert) -> None:
    from abyssal import LoraConfig, PeftModel

    cfg = LoraConfig(r=16, lora_alpha=32, target_modules=["query_key_value"], lora_dropout=0.1)
    with pytest.raises(ConfigError) as err:
        PeftModel.from_pretrained(bert, cfg)
    message = str(err.value)
    assert "'query_key_value' matches no linear layer" in message
    assert "dense" in message and "query" in message
    assert "try ['query', 'key', 'value'] (or 'auto')" in message


def test_auto_picks_the_attention_projections(bert) -> None:
    from abyssal import LoraConfig, PeftModel

    model = PeftModel.from_pretrained(bert, LoraConfig(r=4, target_modules="auto"))
    assert set(model.peft_config["default"].target_modules) == {"query", "key", "value"}
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert out.shape == (1, 3)


def test_merge_then_unmerge_restores_the_weights_and_a_saved_adapter_reloads(bert, tmp_path):
    from abyssal import LoraConfig, PeftModel

    before = bert.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    base_state = {k: v.clone() for k, v in bert.state_dict().items()}  # PEFT adapts in place
    model = PeftModel.from_pretrained(bert, LoraConfig(r=4, target_modules="auto"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # a trained-looking adapter (B starts at zero)
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        adapted = model(input_ids=x).logits
        model.merge_adapter()
        merged = model(input_ids=x).logits
        model.unmerge_adapter()
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)
    query = model.base_model.model.bert.encoder.layer[0].attention.self.query
    torch.testing.assert_close(query.base_layer.weight, before, rtol=0, atol=1e-6)
    model.save_pretrained(tmp_path / "adapter")
    state = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}

    torch.manual_seed(0)
    fresh = type(bert)(bert.config).eval()
    fresh.load_state_dict(base_state)
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter"))
    again = {k: v for k, v in reloaded.state_dict().items() if "lora_" in k}
    assert state.keys() == again.keys()
    assert all(torch.equal(state[k], again[k]) for k in state)
    with pytest.raises(ConfigError, match=r"no adapter_config\.json"):
        PeftModel.from_pretrained(fresh, str(tmp_path / "nothing"))


def test_config_values_are_checked() -> None:
    from abyssal import LoraConfig

    with pytest.raises(ConfigError, match="r must be >= 1"):
        LoraConfig(r=0)
    with pytest.raises(ConfigError, match=r"lora_dropout must be in \[0, 1\)"):
        LoraConfig(lora_dropout=1.0)


def test_a_saved_adapter_folder_refuses_another_base(bert, tmp_path) -> None:
    from abyssal import LoraConfig, PeftModel
    from abyssal.core.errors import StoreError
    from abyssal.nn.lora import BASE_FILE, save_adapter

    base_state = {k: v.clone() for k, v in bert.state_dict().items()}
    model = PeftModel.from_pretrained(bert, LoraConfig(r=4, target_modules="auto"))
    save_adapter(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / BASE_FILE).is_file()
    other = type(bert)(bert.config).eval()  # fresh random weights: another base
    with pytest.raises(StoreError, match="tensor fingerprint"):
        PeftModel.from_pretrained(other, str(tmp_path / "adapter"))
    same = type(bert)(bert.config).eval()
    same.load_state_dict(base_state)
    assert PeftModel.from_pretrained(same, str(tmp_path / "adapter")) is not None
    with pytest.raises(ConfigError, match="neither a LoRA config"):
        PeftModel.from_pretrained(same, "no-such-model:3")
