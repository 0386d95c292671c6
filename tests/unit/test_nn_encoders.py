"""Per-modality encoders: output shapes and masks, masks that follow lengths, padding that does not
leak into real tokens, freezing, trunk building and weight files, the registry, and bad inputs."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from abyssal.core.errors import ConfigError, RegistryError
from abyssal.nn.encoders import (
    ENCODERS,
    AudioConvEncoder,
    AudioTransformerEncoder,
    ImageEncoder,
    PretrainedAudioEncoder,
    TextEncoder,
    encoder_names,
    load_trunk_weights,
    sinusoidal_positions,
    timm_trunk,
    torchvision_trunk,
)

N_MELS = 12


def _tiny_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    return transformers.BertModel(config)


def _spec(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, N_MELS, frames, generator=torch.Generator().manual_seed(seed))


# --- text ---------------------------------------------------------------------------------------


def test_text_encoder_shapes_and_mask_equal_attention_mask() -> None:
    enc = TextEncoder(_tiny_bert(), dim=8)
    ids = torch.randint(1, 50, (2, 5))
    attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    tokens, mask = enc(ids, attention)
    assert enc.dim == 8 and enc.hidden == 16  # hidden read from model.config.hidden_size
    assert tokens.shape == (2, 5, 8) and tokens.dtype == torch.float32
    assert mask.dtype == torch.bool and torch.equal(mask, attention.bool())


def test_text_encoder_freeze_trains_only_the_projection() -> None:
    enc = TextEncoder(_tiny_bert(), dim=8, freeze=True).train()
    assert not any(p.requires_grad for p in enc.model.parameters())
    assert not enc.model.training  # a frozen model stays in eval mode: no dropout
    tokens, _ = enc(torch.randint(1, 50, (2, 4)), torch.ones(2, 4, dtype=torch.long))
    tokens.sum().backward()
    assert enc.proj.weight.grad is not None and enc.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.model.parameters())


def test_text_encoder_unfrozen_trains_the_model() -> None:
    enc = TextEncoder(_tiny_bert(), dim=8).train()
    assert enc.model.training
    tokens, _ = enc(torch.randint(1, 50, (2, 4)), torch.ones(2, 4, dtype=torch.long))
    tokens.sum().backward()
    assert enc.model.embeddings.word_embeddings.weight.grad is not None


def test_text_encoder_bad_inputs() -> None:
    enc = TextEncoder(_tiny_bert(), dim=8)
    with pytest.raises(ValueError, match=r"TextEncoder expects inputs \(B, L\).*got \(5,\)"):
        enc(torch.randint(1, 50, (5,)), torch.ones(5))
    with pytest.raises(ValueError, match=r"got \(2, 5\) and \(2, 4\)"):
        enc(torch.randint(1, 50, (2, 5)), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"no config\.hidden_size; pass hidden="):
        TextEncoder(nn.Linear(2, 2), dim=8)


# --- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "channels"), [("resnet18", 512), ("resnet50", 2048)])
def test_torchvision_trunk_channels(name: str, channels: int) -> None:
    trunk, got = torchvision_trunk(name)
    assert got == channels
    assert trunk(torch.randn(1, 3, 64, 64)).shape == (1, channels, 2, 2)


def test_torchvision_trunk_with_a_features_block() -> None:
    trunk, channels = torchvision_trunk("mobilenet_v3_small")
    assert channels == 576 and trunk(torch.randn(1, 3, 64, 64)).shape[1] == 576


def test_image_encoder_tokens_per_position_for_any_size() -> None:
    trunk, channels = torchvision_trunk("resnet18")
    enc = ImageEncoder(trunk, channels, dim=16).eval()
    tokens, mask = enc(torch.randn(2, 3, 64, 96))  # a 2 x 3 feature map
    assert tokens.shape == (2, 6, 16) and mask.shape == (2, 6) and bool(mask.all())
    assert enc(torch.randn(1, 3, 160, 32))[0].shape == (1, 5, 16)  # 5 x 1: positions resized
    plain = ImageEncoder(trunk, channels, dim=16, grid=0)
    assert plain.pos is None and plain(torch.randn(1, 3, 32, 32))[0].shape == (1, 1, 16)


def test_image_encoder_bad_inputs() -> None:
    trunk, channels = torchvision_trunk("resnet18")
    enc = ImageEncoder(trunk, channels, dim=8)
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\), got shape \(3, 32, 32\)"):
        enc(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(2, 1, 32, 32\)"):
        enc(torch.randn(2, 1, 32, 32))
    wrong = ImageEncoder(trunk, 256, dim=8).eval()
    with pytest.raises(ValueError, match=r"backbone must give a feature map \(B, 256, h, w\)"):
        wrong(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet7'"):
        torchvision_trunk("resnet7")


def test_torchvision_trunk_loads_full_and_trunk_state_dicts(tmp_path: Path) -> None:
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(1)
    full = models.resnet18(num_classes=10)  # another classifier size: its keys are ignored
    path = tmp_path / "resnet18.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}}, path)
    trunk, _ = torchvision_trunk("resnet18", weights=str(path))
    assert torch.equal(trunk.state_dict()["layer4.1.conv2.weight"], full.layer4[1].conv2.weight)

    again = tmp_path / "trunk.pth"
    torch.save(trunk.state_dict(), again)
    reloaded, _ = torchvision_trunk("resnet18", weights=str(again))
    assert torch.equal(reloaded.state_dict()["conv1.weight"], full.conv1.weight)


def test_torchvision_trunk_weight_errors_name_the_file(tmp_path: Path) -> None:
    models = pytest.importorskip("torchvision.models")
    path = tmp_path / "resnet34.pt"
    torch.save(models.resnet34().state_dict(), path)
    with pytest.raises(ConfigError, match=rf"weights file {path} does not fit.*unexpected keys"):
        torchvision_trunk("resnet18", weights=str(path))
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match=rf"weights file {missing} does not exist"):
        torchvision_trunk("resnet18", weights=str(missing))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=rf"weights file {junk} cannot be read"):
        torchvision_trunk("resnet18", weights=str(junk))


def test_load_trunk_weights_reports_shape_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}, path)
    with pytest.raises(ConfigError, match=r"2 shape mismatches \(e\.g\. bias \(3,\) vs \(4,\)"):
        load_trunk_weights(nn.Linear(2, 4), path)


def test_timm_trunk_gives_a_feature_map() -> None:
    pytest.importorskip("timm")
    trunk, channels = timm_trunk("resnet18")
    assert channels == 512
    tokens, mask = ImageEncoder(trunk, channels, dim=8)(torch.randn(1, 3, 64, 64))
    assert tokens.shape == (1, 4, 8) and bool(mask.all())


# --- audio --------------------------------------------------------------------------------------


def test_audio_conv_encoder_shapes_and_mask_follow_lengths() -> None:
    enc = AudioConvEncoder(N_MELS, dim=8, channels=4).eval()
    tokens, mask = enc(_spec(3, 37), torch.tensor([37, 10, 1]))
    assert tokens.shape == (3, 5, 8) and mask.shape == (3, 5)  # ceil(37 / 8) tokens
    assert mask.sum(dim=1).tolist() == [5, 2, 1]  # ceil(length / 8) real tokens
    assert bool((tokens[~mask] == 0).all())


def test_audio_conv_encoder_ignores_padding_values() -> None:
    enc = AudioConvEncoder(N_MELS, dim=8, channels=4).eval()
    spec, lengths = _spec(2, 24), torch.tensor([24, 9])
    noisy = spec.clone()
    noisy[1, :, 9:] = 1e3
    assert torch.allclose(enc(spec, lengths)[0], enc(noisy, lengths)[0])


def test_audio_transformer_real_tokens_do_not_depend_on_padding() -> None:
    torch.manual_seed(0)
    enc = AudioTransformerEncoder(N_MELS, dim=16, patch=4, layers=2, heads=4).eval()
    clip = _spec(1, 10)
    alone, alone_mask = enc(clip, torch.tensor([10]))
    padded = torch.cat([clip, torch.full((1, N_MELS, 14), 7.0)], dim=2)  # 24 frames
    batch = torch.cat([padded, _spec(1, 24, seed=1)])
    tokens, mask = enc(batch, torch.tensor([10, 24]))
    assert tokens.shape == (2, 6, 16) and mask.sum(dim=1).tolist() == [3, 6]
    assert alone_mask.tolist() == [[True, True, True]]
    assert torch.allclose(tokens[0, :3], alone[0], atol=1e-5)  # the last patch is part padding
    assert bool((tokens[0, 3:] == 0).all())


def test_audio_encoders_bad_inputs() -> None:
    for enc in (AudioConvEncoder(N_MELS, 8, channels=4), AudioTransformerEncoder(N_MELS, 8)):
        name = type(enc).__name__
        with pytest.raises(
            ValueError, match=rf"^{name} expects \(B, 12, frames\), got \(2, 10, 8\)$"
        ):
            enc(torch.randn(2, 10, 8), torch.tensor([8, 8]))
        with pytest.raises(ValueError, match=rf"{name} expects .* got \(12, 8\)"):
            enc(torch.randn(N_MELS, 8), torch.tensor([8]))
        with pytest.raises(
            ValueError, match=r"lengths must be integer \(2,\), got torch\.int64 \(3,\)$"
        ):
            enc(_spec(2, 8), torch.tensor([8, 8, 8]))
        with pytest.raises(ValueError, match=r"lengths must be integer .* torch.float32"):
            enc(_spec(2, 8), torch.tensor([8.0, 8.0]))
        for bad in ([9, 8], [0, 8]):
            message = re.escape(f"{name} lengths must be in [1, 8], got {bad}")
            with pytest.raises(ValueError, match=message):
                enc(_spec(2, 8), torch.tensor(bad))
    with pytest.raises(ValueError, match="dim 10 must be a multiple of heads 4"):
        AudioTransformerEncoder(N_MELS, 10)


def test_sinusoidal_positions_any_length_and_odd_width() -> None:
    pos = sinusoidal_positions(7, 5)
    assert pos.shape == (7, 5)
    assert torch.allclose(pos[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))


def _tiny_wav2vec2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.0,
    )
    return transformers.Wav2Vec2Model(config)


def test_pretrained_audio_encoder_mask_from_output_lengths() -> None:
    model = _tiny_wav2vec2()
    enc = PretrainedAudioEncoder(model, dim=8).train()
    assert enc.frozen and not enc.model.training
    assert not any(p.requires_grad for p in enc.model.parameters())
    waves = torch.randn(2, 400)
    attention = (torch.arange(400) < torch.tensor([[400], [200]])).long()
    tokens, mask = enc(waves * attention, attention)
    expected = model._get_feat_extract_output_lengths(torch.tensor([400, 200]))
    assert tokens.shape == (2, int(expected[0]), 8)
    assert mask.sum(dim=1).tolist() == expected.tolist() and expected[1] < expected[0]
    assert bool(enc(waves)[1].all())  # without an attention mask every frame is real


def test_pretrained_audio_encoder_without_length_method_marks_all_real() -> None:
    class Frames(nn.Module):
        def forward(self, input_values: torch.Tensor, attention_mask=None) -> SimpleNamespace:
            return SimpleNamespace(last_hidden_state=input_values.unfold(1, 4, 4))  # (B, S/4, 4)

    enc = PretrainedAudioEncoder(Frames(), dim=3, hidden=4)
    tokens, mask = enc(torch.randn(2, 12), torch.ones(2, 12))
    assert tokens.shape == (2, 3, 3) and bool(mask.all())
    with pytest.raises(ValueError, match=r"PretrainedAudioEncoder expects inputs \(B, L\)"):
        enc(torch.randn(2, 3, 12))


# --- registry and argument checks ---------------------------------------------------------------


def test_registry_names_by_modality() -> None:
    assert encoder_names("text") == ["text/hf"]
    assert encoder_names("image") == ["image/timm", "image/torchvision"]
    assert encoder_names("audio") == ["audio/conv", "audio/pretrained", "audio/transformer"]
    assert all(ENCODERS.summary(name) for name in ENCODERS.names())
    assert ENCODERS.get("audio/conv") is AudioConvEncoder
    enc = ENCODERS.get("image/torchvision")(dim=8, name="resnet18")
    assert isinstance(enc, ImageEncoder) and enc.dim == 8 and enc.channels == 512


def test_registry_unknown_names() -> None:
    with pytest.raises(RegistryError, match=r"unknown encoder 'audio/lstm'; choose one of: audio"):
        ENCODERS.get("audio/lstm")
    with pytest.raises(ValueError, match=r"no encoders for modality 'video'.*'audio', 'image'"):
        encoder_names("video")


@pytest.mark.parametrize(
    "build",
    [
        lambda dim: AudioConvEncoder(N_MELS, dim),
        lambda dim: AudioTransformerEncoder(N_MELS, dim),
        lambda dim: ImageEncoder(nn.Identity(), 4, dim),
        lambda dim: PretrainedAudioEncoder(nn.Identity(), dim, hidden=4),
        lambda dim: TextEncoder(nn.Identity(), dim, hidden=4),
    ],
)
def test_dim_below_one_is_an_error(build) -> None:
    with pytest.raises(ValueError, match=r"dim must be a whole number >= 1, got 0"):
        build(0)


def test_other_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match=r"AudioConvEncoder n_mels must be .* got -1"):
        AudioConvEncoder(-1, 8)
    with pytest.raises(ValueError, match=r"AudioTransformerEncoder patch must be .* got 0"):
        AudioTransformerEncoder(N_MELS, 8, patch=0)
    with pytest.raises(ValueError, match="ImageEncoder grid must be a whole number >= 0"):
        ImageEncoder(nn.Identity(), 4, 8, grid=-1)
