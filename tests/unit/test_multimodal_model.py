"""The multimodal network on tiny inputs: encoders built from the config (a small image CNN,
both audio encoders, a local Hugging Face text model), logits for any mix of modalities, a
modality absent from a row that cannot move its output, modality dropout in training only, and
the settings this build refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from abyssal.core.errors import ConfigError
from abyssal.solutions.multimodal.config import MultimodalModelConfig
from abyssal.solutions.multimodal.model import (
    INPUT_NAMES,
    build_encoder,
    build_multimodal_model,
    flat_inputs,
)
from tests.unit.tiny_audio import tiny_wav2vec

transformers = pytest.importorskip("transformers")

SPEC = {"classes": ["a", "b", "c"], "n_mels": 16, "image_channels": 3}


@pytest.fixture(scope="module")
def text_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved as a local model folder (no download)."""
    folder = tmp_path_factory.mktemp("bert")
    config = transformers.BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32,
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def batch(n: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "tokens": torch.randint(1, 30, (n, 6), generator=g),
        "token_lengths": torch.tensor([6, 3, 0][:n]),
        "images": torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8),
        "mels": torch.randn(n, 16, 24, generator=g),
        "mel_lengths": torch.tensor([24, 10, 17][:n]),
        "present": torch.tensor([[True, True, True], [True, False, True], [False, True, True]]),
    }


def model(text_base: Path, **settings: object):
    cfg = MultimodalModelConfig(dim=16, heads=2, **settings)
    modalities = [m for m in ("text", "image", "audio") if cfg.encoder(m) != "none"]
    spec = {**SPEC, "modalities": modalities, "text_base": str(text_base)}
    return build_multimodal_model(cfg, spec)


@pytest.mark.parametrize("fusion", ["cross_attention", "early", "concat", "late"])
def test_every_fusion_gives_logits_for_any_mix_of_modalities(text_base: Path, fusion: str) -> None:
    torch.manual_seed(0)
    net = model(text_base, fusion=fusion).eval()
    assert net.modalities == ["text", "image", "audio"]
    out = net.explain(batch())
    assert out.logits.shape == (3, 3) and torch.isfinite(out.logits).all()
    assert out.contributions[1, 1] == 0 and out.contributions[2, 0] == 0  # absent: no share
    torch.testing.assert_close(out.contributions.sum(1), torch.ones(3))


def test_an_absent_modality_cannot_move_the_output(text_base: Path) -> None:
    torch.manual_seed(0)
    net = model(text_base).eval()
    first = net(batch())
    other = batch()
    other["images"][1] = 255 - other["images"][1]  # row 1 has no image
    other["tokens"][2] = 7  # row 2 has no text
    with torch.no_grad():
        again = net(other)
    torch.testing.assert_close(again[1:], first[1:].detach())


def test_modality_dropout_acts_in_training_only_and_gradients_flow(text_base: Path) -> None:
    torch.manual_seed(0)
    net = model(text_base, modality_dropout=0.9, audio="transformer", dropout=0.0)
    net.eval()
    with torch.no_grad():
        fixed = net(batch())
        torch.testing.assert_close(net(batch()), fixed)  # no dropout of any kind in eval
        net.train()
        draws = {tuple(net(batch()).flatten().tolist()) for _ in range(6)}
    assert len(draws) > 1  # modalities dropped at random in training
    net.dropout = 0.0
    net(batch()).logsumexp(1).sum().backward()
    image_grads = [p.grad for p in net.encoders["image"].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in image_grads)
    assert sum(g.abs().sum() for g in image_grads) > 0
    text = net.encoders["text"]
    assert all(not p.requires_grad for p in text.model.parameters())  # text_freeze=True


def test_one_modality_and_the_settings_this_build_refuses(text_base: Path) -> None:
    alone = model(text_base, text="none", audio="none")
    assert alone.modalities == ["image"] and type(alone.fusion).__name__ == "ConcatFusion"
    with pytest.raises(ConfigError, match="audio=pretrained:/x: no such folder"):
        build_encoder("audio", "pretrained:/x", SPEC, 16)
    with pytest.raises(ConfigError, match="takes colour images"):
        build_encoder("image", "torchvision:resnet18", {**SPEC, "image_channels": 1}, 16)
    grey = build_encoder("image", "small", {**SPEC, "image_channels": 1}, 16)
    assert grey(torch.rand(2, 1, 16, 16))[0].shape == (2, 4, 16)


def test_the_positional_form_gives_the_dict_forms_logits(text_base: Path) -> None:
    torch.manual_seed(0)
    net = model(text_base).eval()
    spec = {**SPEC, "modalities": net.modalities, "image_size": 16, "n_mels": 16}
    flat = flat_inputs(batch(), spec)
    assert len(flat) == len(INPUT_NAMES) == 8
    with torch.no_grad():
        torch.testing.assert_close(net(*flat), net(batch()))
    # a model without audio ignores the sound's arrays; a batch without them gets fillers
    quiet = model(text_base, audio="none").eval()
    without = {k: v for k, v in batch().items() if k not in ("mels", "mel_lengths")}
    filled = flat_inputs(without, {**spec, "modalities": quiet.modalities})
    assert filled[4].shape == (3, 16, 1) and filled[5].tolist() == [0, 0, 0]
    with torch.no_grad():
        torch.testing.assert_close(quiet(*filled), quiet(without))
    with pytest.raises(TypeError):
        net(*flat, flat[0])


@pytest.fixture(scope="module")
def wav2vec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny wav2vec 2.0 with its feature extractor's settings, as a local folder."""
    return tiny_wav2vec(tmp_path_factory.mktemp("wav2vec"))


def test_a_pretrained_waveform_encoder_reads_waves_and_masks_padding(
    text_base: Path, wav2vec: Path
) -> None:
    torch.manual_seed(0)
    spec = {**SPEC, "sample_rate": 16000}
    encoder = build_encoder("audio", f"pretrained:{wav2vec}", spec, 16)
    assert encoder.normalize and encoder.frozen  # do_normalize read from the folder
    with pytest.raises(ConfigError, match=r"takes 16000 Hz audio: set data\.sample_rate=16000"):
        build_encoder("audio", f"pretrained:{wav2vec}", {**spec, "sample_rate": 8000}, 16)
    (wav2vec.parent / "broken").mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match="cannot load it"):
        build_encoder("audio", f"pretrained:{wav2vec.parent / 'broken'}", spec, 16)
    cfg = MultimodalModelConfig(dim=16, heads=2, audio=f"pretrained:{wav2vec}")
    net = build_multimodal_model(cfg, {**spec, "modalities": ["text", "image", "audio"],
                                       "text_base": str(text_base)}).eval()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    waves = {
        "waves": torch.randn(3, 3200, generator=g),
        "wave_lengths": torch.tensor([3200, 1600, 0]),
    }
    sound = {k: v for k, v in batch().items() if k not in ("mels", "mel_lengths")} | waves
    sound["present"] = torch.tensor([[True, True, True], [True, False, True], [True, True, False]])
    with torch.no_grad():
        first = net(sound)
        louder = dict(sound, waves=sound["waves"] * 3.0)  # normalised: loudness does not count
        torch.testing.assert_close(net(louder), first, atol=1e-4, rtol=1e-4)
        padded = dict(sound, waves=sound["waves"].clone())
        padded["waves"][1, 1600:] = 5.0  # beyond row 1's clip
        torch.testing.assert_close(net(padded)[:2], first[:2], atol=1e-4, rtol=1e-4)
        flat = flat_inputs(sound, {**spec, "modalities": net.modalities, "image_size": 16})
        torch.testing.assert_close(net(*flat), first)
