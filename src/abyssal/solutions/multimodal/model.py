"""The multimodal classifier: one encoder per modality (:mod:`abyssal.nn.encoders`) to tokens of
one width, fused by the configured fusion (:mod:`abyssal.nn.fusion`), with modality dropout in
training so that a sample missing a modality at prediction is a case it has seen.

Inputs are the arrays :func:`~abyssal.solutions.multimodal.inputs.decode_samples` makes, as
tensors, for the modalities the model was built for (its spec's ``modalities``), in
:data:`~abyssal.solutions.multimodal.manifest.MODALITIES` order: text ``tokens`` (B, L) and
``token_lengths`` (B,); ``images`` (B, C, S, S) uint8; ``mels`` (B, n_mels, F) and
``mel_lengths`` (B,); and ``present`` (B, 3) bool for all three modalities. A modality absent
from a row (its ``present`` flag false) is masked out whatever its arrays hold.

``forward`` takes the batch dict, or the same arrays as positional tensors in
:data:`INPUT_NAMES` order: the form that ``abyssal optimize`` exports and benchmarks
(:func:`flat_inputs` turns a dict into it).

Example:
    >>> net = build_multimodal_model(cfg.model, spec)  # doctest: +SKIP
    >>> net.explain(batch).contributions  # doctest: +SKIP
    tensor([[0.0000, 0.3100, 0.6900]])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abyssal.core.errors import ConfigError
from abyssal.nn.encoders import (
    AudioConvEncoder,
    AudioTransformerEncoder,
    ImageEncoder,
    PretrainedAudioEncoder,
    TextEncoder,
    timm_image_encoder,
    torchvision_image_encoder,
)
from abyssal.nn.fusion import FusionOutput, build_fusion, modality_dropout
from abyssal.solutions.multimodal.manifest import MODALITIES

INPUT_KEYS = {"text": "tokens", "image": "images", "audio": "mels"}
"""The batch key that carries each modality (absent: no row of the batch has it)."""
INPUT_NAMES = (
    "present", "tokens", "token_lengths", "images", "mels", "mel_lengths", "waves", "wave_lengths"
)  # fmt: skip
""":meth:`MultimodalNet.forward`'s positional inputs (the batch dict's keys), in order."""
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
"""The ImageNet pixel statistics torchvision's and timm's pretrained trunks expect."""


def small_trunk(in_channels: int = 3, width: int = 32) -> tuple[nn.Module, int]:
    """A small CNN trained from scratch (three conv-BN-ReLU blocks, each halving the size):
    (B, in_channels, S, S) -> (B, 2 width, S/8, S/8); returns it and its channel count."""
    layers: list[nn.Module] = []
    cin = in_channels
    for cout in (width, 2 * width, 2 * width):
        layers += [
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
        cin = cout
    return nn.Sequential(*layers), cin


def build_encoder(
    modality: str, setting: str, spec: Mapping[str, Any], dim: int, **kw: Any
) -> nn.Module:
    """The encoder ``setting`` (``model.text`` / ``model.image`` / ``model.audio``) names.

    Raises:
        ConfigError: a setting this build cannot make (a missing or unloadable pretrained
            folder, a colour trunk on grey images, a sampling rate the audio model was not
            trained at).
    """
    if modality == "text":
        from abyssal.solutions.text.model import transformers_module

        folder = spec.get("text_base")
        if not folder:
            raise ConfigError("model.text: the spec names no text model folder")
        model = transformers_module().AutoModel.from_pretrained(str(folder))
        return TextEncoder(model, dim, freeze=bool(kw.get("freeze", True)))
    if modality == "image":
        channels = int(spec.get("image_channels", 3))
        weights = kw.get("weights")
        if setting == "small":
            trunk, width = small_trunk(channels)
            return ImageEncoder(trunk, width, dim, in_channels=channels)
        if channels != 3:
            raise ConfigError(
                f"model.image={setting} takes colour images: set data.image_channels=3"
            )
        kind, _, name = setting.partition(":")
        factory = torchvision_image_encoder if kind == "torchvision" else timm_image_encoder
        return factory(dim, name=name, weights=weights)
    if setting == "conv":
        return AudioConvEncoder(int(spec["n_mels"]), dim)
    if setting == "transformer":
        return AudioTransformerEncoder(int(spec["n_mels"]), dim)
    return pretrained_audio_encoder(setting.partition(":")[2], spec, dim)


def pretrained_audio_encoder(folder: str, spec: Mapping[str, Any], dim: int) -> nn.Module:
    """A local Hugging Face waveform model (``model.audio=pretrained:DIR``: wav2vec 2.0, HuBERT,
    WavLM, ...), frozen, behind a projection to ``dim``; its ``preprocessor_config.json`` (when
    the folder has one) sets the sampling rate it needs and whether clips are normalised.

    Raises:
        ConfigError: no such folder, a folder transformers cannot load, or a model trained at
            another sampling rate than ``data.sample_rate``.
    """
    import json

    from abyssal.solutions.text.model import transformers_module

    where = Path(folder).expanduser()
    if not where.is_dir():
        raise ConfigError(f"model.audio=pretrained:{folder}: no such folder")
    settings: dict[str, Any] = {}
    if (where / "preprocessor_config.json").is_file():
        settings = json.loads((where / "preprocessor_config.json").read_text())
    rate = settings.get("sampling_rate")
    if rate is not None and int(rate) != int(spec["sample_rate"]):
        raise ConfigError(
            f"model.audio=pretrained:{folder} takes {int(rate)} Hz audio: set "
            f"data.sample_rate={int(rate)} (it is {int(spec['sample_rate'])})"
        )
    try:
        model = transformers_module().AutoModel.from_pretrained(str(where))
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.audio=pretrained:{folder}: cannot load it ({e})") from None
    return PretrainedAudioEncoder(model, dim, normalize=bool(settings.get("do_normalize", False)))


class MultimodalNet(nn.Module):
    """Encoders, fusion and modality dropout.

    Args:
        encoders: modality -> encoder, for the modalities the model takes (MODALITIES order).
        fusion: a fusion built for those modalities (:func:`abyssal.nn.fusion.build_fusion`).
        dropout: training-time probability of masking a present modality of a row (never
            the row's last one).
        normalise_images: subtract the ImageNet mean and divide by its spread (pretrained
            trunks); else pixels / 255 only.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: nn.Module,
        *,
        dropout: float = 0.0,
        normalise_images: bool = False,
    ) -> None:
        super().__init__()
        self.modalities = [m for m in MODALITIES if m in encoders]
        if not self.modalities:
            raise ConfigError("the model needs at least one modality")
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.fusion = fusion
        self.dropout = dropout
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1))
        self.normalise_images = normalise_images

    def explain(self, batch: Mapping[str, torch.Tensor]) -> FusionOutput:
        """The fusion's whole output (logits, embedding, contributions) for a batch dict with
        the keys of the module docstring."""
        tokens, masks = {}, {}
        present = batch["present"].bool()
        for k, modality in enumerate(MODALITIES):
            if modality not in self.encoders:
                continue
            if self._key(modality) not in batch:  # no row of the batch has it
                dim = self.fusion.dim
                x = present.new_zeros(len(present), 1, dim, dtype=torch.float32)
                mask = present.new_zeros(len(present), 1)
            else:
                x, mask = self._encode(modality, batch)
            tokens[modality] = x
            masks[modality] = mask & present[:, k : k + 1]
        if self.training and self.dropout > 0:
            masks = modality_dropout(masks, self.dropout)
        return self.fusion(tokens, masks)

    def _key(self, modality: str) -> str:
        """The batch key carrying ``modality`` for this model (waveforms or log-mels)."""
        if isinstance(self.encoders[modality], PretrainedAudioEncoder):
            return "waves"
        return INPUT_KEYS[modality]

    def forward(
        self,
        present: torch.Tensor | Mapping[str, torch.Tensor],
        tokens: torch.Tensor | None = None,
        token_lengths: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        mels: torch.Tensor | None = None,
        mel_lengths: torch.Tensor | None = None,
        waves: torch.Tensor | None = None,
        wave_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, classes) logits of a batch dict (as the only argument), or of the arrays
        positionally (:data:`INPUT_NAMES`; a modality the model does not take is ignored)."""
        if isinstance(present, Mapping):
            return self.explain(present).logits
        given = (present, tokens, token_lengths, images, mels, mel_lengths, waves, wave_lengths)
        batch = {n: t for n, t in zip(INPUT_NAMES, given, strict=True) if t is not None}
        return self.explain(batch).logits

    def _encode(
        self, modality: str, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stats = (self.mean, self.std) if self.normalise_images else None
        return encode_modality(self.encoders[modality], modality, batch, stats)


def flat_inputs(batch: Mapping[str, torch.Tensor], spec: Mapping[str, Any]) -> tuple:
    """A batch dict as :meth:`MultimodalNet.forward`'s six positional tensors (one signature for
    every model, the form ``abyssal optimize`` exports) for the model of ``spec``; an array the
    batch lacks is one empty step (its ``present`` flag is false in every row, or the model does
    not take the modality, so the fusion never reads it).

    Shapes:
        as the module docstring's; an added text is (B, 1) with length 0, an added image
        (B, C, S, S) zeros, an added sound (B, n_mels, 1) with length 0.
    """
    present = batch["present"]
    rows = len(present)
    filler = {
        "tokens": lambda: present.new_zeros(rows, 1, dtype=torch.long),
        "token_lengths": lambda: present.new_zeros(rows, dtype=torch.long),
        "images": lambda: present.new_zeros(
            rows, int(spec.get("image_channels", 3)), *(2 * [int(spec["image_size"])]),
            dtype=torch.uint8,
        ),
        "mels": lambda: present.new_zeros(rows, int(spec["n_mels"]), 1, dtype=torch.float32),
        "mel_lengths": lambda: present.new_zeros(rows, dtype=torch.long),
        # 400 samples: one frame of wav2vec 2.0's convolutional front end
        "waves": lambda: present.new_zeros(rows, 400, dtype=torch.float32),
        "wave_lengths": lambda: present.new_zeros(rows, dtype=torch.long),
    }  # fmt: skip
    return tuple(batch[n] if n in batch else filler[n]() for n in INPUT_NAMES)


def encode_modality(
    encoder: nn.Module,
    modality: str,
    batch: Mapping[str, torch.Tensor],
    image_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, mask)`` of one modality's encoder over a batch dict (module docstring's keys);
    ``image_stats``: the (mean, std) to normalise pixels with after scaling them to [0, 1]."""
    # a row without the modality has length 0: the encoder sees one (masked) step, the
    # fusion none of it (``present``)
    if modality == "text":
        ids = batch["tokens"]
        return encoder(ids, length_mask(batch["token_lengths"], ids.shape[1]).long())
    if modality == "image":
        x = batch["images"].float() / 255.0
        if image_stats is not None:
            x = (x - image_stats[0]) / image_stats[1]
        return encoder(x)
    if isinstance(encoder, PretrainedAudioEncoder):  # waveforms
        waves = batch["waves"].float()
        return encoder(waves, length_mask(batch["wave_lengths"], waves.shape[1]).long())
    return encoder(batch["mels"].float(), batch["mel_lengths"].clamp_min(1))


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) bool, True for the first ``max(length, 1)`` positions of each row."""
    positions = torch.arange(width, device=lengths.device)
    return positions[None] < lengths.clamp_min(1)[:, None]


def build_multimodal_model(model_cfg: Any, spec: Mapping[str, Any]) -> MultimodalNet:
    """The network for a model config and a spec (``modalities``, ``classes``, ``text_base``,
    ``n_mels``, ``image_channels``)."""
    modalities = list(spec["modalities"])
    encoders = {}
    for modality in modalities:
        setting = model_cfg.encoder(modality)
        weights = None if model_cfg.image_weights == "none" else str(Path(model_cfg.image_weights))
        encoders[modality] = build_encoder(
            modality, setting, spec, model_cfg.dim, freeze=model_cfg.text_freeze, weights=weights
        )
    fusion_name = model_cfg.fusion
    if fusion_name == "cross_attention" and len(modalities) < 2:
        fusion_name = "concat"  # one modality: nothing to attend to
    fusion = build_fusion(
        fusion_name,
        modalities,
        model_cfg.dim,
        len(spec["classes"]),
        heads=model_cfg.heads,
        layers=model_cfg.layers,
        dropout=model_cfg.dropout,
    )
    pretrained_image = "image" in modalities and model_cfg.image != "small"
    net = MultimodalNet(
        encoders, fusion, dropout=model_cfg.modality_dropout, normalise_images=pretrained_image
    )
    net.multimodal_spec = dict(spec)
    return net
