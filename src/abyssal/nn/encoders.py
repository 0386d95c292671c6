"""Per-modality encoders for multimodal classifiers. Each has an attribute ``dim`` and its forward
returns ``(tokens, mask)``: tokens ``(B, T, dim)`` float and mask ``(B, T)`` bool, True for a real
token, so that a fusion layer can combine modalities.

Text: :class:`TextEncoder` (a loaded Hugging Face encoder). Images: :class:`ImageEncoder` over a
trunk from :func:`torchvision_trunk` or :func:`timm_trunk`. Log-mel audio (from
``abyssal.solutions.multimodal.audio.log_mel``): :class:`AudioConvEncoder`,
:class:`AudioTransformerEncoder`; raw waveforms: :class:`PretrainedAudioEncoder` (wav2vec 2.0,
Baevski et al. 2020, arXiv:2006.11477). :data:`ENCODERS` names them by modality and kind.

Example:
    >>> enc = AudioConvEncoder(n_mels=64, dim=128)
    >>> tokens, mask = enc(torch.randn(2, 64, 100), torch.tensor([100, 40]))
    >>> tokens.shape, mask.sum(dim=1).tolist()
    (torch.Size([2, 13, 128]), [13, 5])
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from abyssal.core.errors import ConfigError
from abyssal.core.optional import require
from abyssal.core.registry import Registry

Encoded = tuple[torch.Tensor, torch.Tensor]
"""``(tokens (B, T, dim) float, mask (B, T) bool)``."""


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner} {name} must be a whole number >= 1, got {value!r}")


def _check_inputs(owner: str, x: torch.Tensor, mask: torch.Tensor | None) -> None:
    if x.ndim != 2 or (mask is not None and mask.shape != x.shape):
        got = None if mask is None else tuple(mask.shape)
        raise ValueError(
            f"{owner} expects inputs (B, L) and attention_mask of the same shape, "
            f"got {tuple(x.shape)} and {got}"
        )


# --- pretrained Hugging Face encoders -----------------------------------------------------------


class _WrappedEncoder(nn.Module):
    """A loaded Hugging Face model, optionally frozen, and a Linear from its width to ``dim``.

    A frozen model runs without gradients and stays in eval mode (no dropout) whatever
    ``.train()`` says; only the projection learns.
    """

    def __init__(self, model: nn.Module, dim: int, hidden: int | None, freeze: bool) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_positive(owner, dim=dim)
        if hidden is None:
            hidden = getattr(getattr(model, "config", None), "hidden_size", None)
            if hidden is None:
                raise ValueError(f"{owner}: the model has no config.hidden_size; pass hidden=")
        _check_positive(owner, hidden=hidden)
        self.model, self.dim, self.hidden, self.frozen = model, dim, hidden, freeze
        self.proj = nn.Linear(hidden, dim)
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> _WrappedEncoder:
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def _hidden_states(self, **inputs: torch.Tensor | None) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.model(**inputs).last_hidden_state  # (B, T, hidden)


class TextEncoder(_WrappedEncoder):
    """A Hugging Face text encoder (``transformers.AutoModel``) whose last hidden states are
    projected to ``dim``; the mask is the attention mask.

    Args:
        model: called as ``model(input_ids=, attention_mask=)``, read via ``.last_hidden_state``.
        dim: the output width.
        hidden: the model's width (default ``model.config.hidden_size``).
        freeze: keep the model's weights fixed (and in eval mode); only the projection learns.

    Shapes:
        - input_ids: (B, L) long; attention_mask: (B, L), 1 for real tokens.
        - tokens: (B, L, dim); mask: (B, L) bool, equal to ``attention_mask.bool()``.

    Example:
        >>> bert = transformers.AutoModel.from_pretrained(path)  # doctest: +SKIP
        >>> enc = TextEncoder(bert, dim=128, freeze=True)  # doctest: +SKIP
        >>> tokens, mask = enc(batch["input_ids"], batch["attention_mask"])  # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module, dim: int, *, hidden: int | None = None, freeze: bool = False
    ) -> None:
        super().__init__(model, dim, hidden, freeze)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Encoded:
        _check_inputs("TextEncoder", input_ids, attention_mask)
        hidden = self._hidden_states(input_ids=input_ids, attention_mask=attention_mask)
        return self.proj(hidden), attention_mask.bool()  # (B, L, dim), (B, L)


class PretrainedAudioEncoder(_WrappedEncoder):
    """A Hugging Face audio model on raw waveforms (wav2vec 2.0, HuBERT, ...) whose last hidden
    states are projected to ``dim``.

    A frame is real if ``model._get_feat_extract_output_lengths(attention_mask.sum(1))`` counts it
    (all frames are real without that method or a mask). wav2vec 2.0 *base* models expect zero
    padding; the attention mask is passed to the model either way.

    Args:
        model: called as ``model(input_values=, attention_mask=)``.
        dim: the output width.
        hidden: the model's width (default ``model.config.hidden_size``).
        freeze: keep the model's weights fixed (and in eval mode); the default.
        normalize: scale each clip to zero mean and unit variance over its real samples (and
            zero its padding) first, as the model's feature extractor does with
            ``do_normalize`` (wav2vec 2.0 and HuBERT checkpoints).

    Shapes:
        - input_values: (B, S) float; attention_mask: (B, S) or None, 1 for real samples.
        - tokens: (B, T, dim) with T the model's frame count; mask: (B, T) bool.

    Example:
        >>> w2v = transformers.Wav2Vec2Model.from_pretrained(local_dir)  # doctest: +SKIP
        >>> enc = PretrainedAudioEncoder(w2v, dim=128)  # doctest: +SKIP
        >>> tokens, mask = enc(waves, attention_mask)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        dim: int,
        *,
        hidden: int | None = None,
        freeze: bool = True,
        normalize: bool = False,
    ) -> None:
        super().__init__(model, dim, hidden, freeze)
        self.normalize = normalize

    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> Encoded:
        _check_inputs("PretrainedAudioEncoder", input_values, attention_mask)
        if self.normalize:
            input_values = _normalise_clips(input_values, attention_mask)
        hidden = self._hidden_states(input_values=input_values, attention_mask=attention_mask)
        b, t = hidden.shape[:2]
        mask = torch.ones(b, t, dtype=torch.bool, device=hidden.device)
        out_lengths = getattr(self.model, "_get_feat_extract_output_lengths", None)
        if attention_mask is not None and out_lengths is not None:
            lengths = out_lengths(attention_mask.long().sum(dim=1)).to(hidden.device)  # (B,)
            mask = torch.arange(t, device=hidden.device) < lengths[:, None]  # (B, T)
        return self.proj(hidden), mask


def _normalise_clips(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Each row of ``x`` (B, S) at zero mean and unit variance over its real samples (``mask``
    1; all without a mask), padding zeroed."""
    real = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    count = real.sum(1, keepdim=True).clamp_min(1.0)
    mean = (x * real).sum(1, keepdim=True) / count
    var = ((x - mean).square() * real).sum(1, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + 1e-7) * real


# --- images -------------------------------------------------------------------------------------


class ImageEncoder(nn.Module):
    """One token per position of a backbone's feature map, projected to ``dim``, plus a learned
    2-D position embedding on a ``grid x grid`` lattice, bilinearly resized to the map's size
    (so any image size works). Every token is real.

    Args:
        backbone: maps ``(B, in_channels, H, W)`` to a feature map ``(B, channels, h, w)``.
        channels: the feature map's channel count.
        dim: the output width.
        in_channels: the image channels the backbone takes.
        grid: side of the learned position lattice; ``0`` for no position embedding.

    Shapes:
        - images: (B, in_channels, H, W) float.
        - tokens: (B, h * w, dim), row-major over the feature map; mask: (B, h * w) all True.

    Example:
        >>> trunk, channels = torchvision_trunk("resnet18")
        >>> enc = ImageEncoder(trunk, channels, dim=64)
        >>> enc(torch.randn(2, 3, 64, 96))[0].shape  # a 2 x 3 feature map
        torch.Size([2, 6, 64])
    """

    def __init__(
        self, backbone: nn.Module, channels: int, dim: int, *, in_channels: int = 3, grid: int = 7
    ) -> None:
        super().__init__()
        _check_positive("ImageEncoder", channels=channels, dim=dim, in_channels=in_channels)
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 0:
            raise ValueError(f"ImageEncoder grid must be a whole number >= 0, got {grid!r}")
        self.backbone, self.channels, self.dim = backbone, channels, dim
        self.in_channels = in_channels
        self.proj = nn.Linear(channels, dim)
        self.pos = nn.Parameter(torch.zeros(1, dim, grid, grid)) if grid else None
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)  # ViT's initialisation

    def forward(self, images: torch.Tensor) -> Encoded:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"ImageEncoder images must be (B, {self.in_channels}, H, W), "
                f"got shape {tuple(images.shape)}"
            )
        feats = self.backbone(images)  # (B, C, h, w)
        if feats.ndim != 4 or feats.shape[1] != self.channels:
            raise ValueError(
                f"ImageEncoder backbone must give a feature map (B, {self.channels}, h, w), "
                f"got shape {tuple(feats.shape)}"
            )
        b, _, h, w = feats.shape
        tokens = self.proj(feats.flatten(2).transpose(1, 2))  # (B, h * w, dim)
        if self.pos is not None:
            pos = nn.functional.interpolate(self.pos, (h, w), mode="bilinear")  # (1, dim, h, w)
            tokens = tokens + pos.flatten(2).transpose(1, 2)
        return tokens, torch.ones(b, h * w, dtype=torch.bool, device=tokens.device)


def torchvision_trunk(name: str = "resnet18", weights: str | None = None) -> tuple[nn.Module, int]:
    """A torchvision classification network without its pooling and classifier.

    ResNets (also resnext, wide_resnet) keep their children up to ``layer4``, networks with a
    ``.features`` block (efficientnet, mobilenet, convnext, ...) keep that. Parameter names stay
    those of the full network, so a state dict of either the network or the trunk loads.

    Args:
        name: a torchvision classification model name.
        weights: a local ``.pt``/``.pth``/``.safetensors`` state dict, or ``None`` (random).

    Returns:
        ``(trunk, channels)``: the trunk maps ``(B, 3, H, W)`` to ``(B, channels, h, w)``.

    Raises:
        ValueError: an unknown name, or a network without a feature-map trunk.
        ConfigError: from :func:`load_trunk_weights`.
        MissingDependencyError: torchvision is not installed.

    Example:
        >>> torchvision_trunk("resnet50")[1]
        2048
    """
    models = require("torchvision.models", extra="multimodal", purpose="image trunks")
    known = models.list_models(module=models)
    if name not in known:
        raise ValueError(f"unknown torchvision model {name!r}; e.g. {', '.join(known[:8])}, ...")
    net = models.get_model(name, weights=None)
    if isinstance(getattr(net, "layer4", None), nn.Module) and hasattr(net, "fc"):
        trunk = nn.Sequential(
            OrderedDict((k, m) for k, m in net.named_children() if k not in ("avgpool", "fc"))
        )
    elif isinstance(getattr(net, "features", None), nn.Module):
        trunk = nn.Sequential(OrderedDict(features=net.features))
    else:
        raise ValueError(
            f"torchvision model {name!r} has no feature-map trunk this builder knows; use a "
            "ResNet or a model with a .features block (efficientnet_b0, convnext_tiny, ...)"
        )
    if weights is not None:
        load_trunk_weights(trunk, weights)
    return trunk, _feature_channels(trunk)


def timm_trunk(name: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """A timm model without its classifier, giving its last feature map.

    ``timm.create_model(name, pretrained=False, num_classes=0, global_pool="")``: convolutional
    models (resnets, efficientnets, convnexts, ...) then give ``(B, C, h, w)``; transformers give
    token sequences, which :class:`ImageEncoder` rejects.

    Args:
        name: a timm model name.
        weights: a local state dict of that model (classifier keys are ignored), or ``None``.

    Returns:
        ``(trunk, channels)`` with ``channels = model.num_features``.

    Raises:
        ConfigError: from :func:`load_trunk_weights`.
        MissingDependencyError: timm is not installed.

    Example:
        >>> trunk, channels = timm_trunk("resnet18", weights="resnet18.pth")  # doctest: +SKIP
    """
    timm = require("timm", extra="multimodal", purpose="timm image trunks")
    model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    if weights is not None:
        load_trunk_weights(model, weights)
    return model, int(model.num_features)


def load_trunk_weights(net: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``net``, strictly except for classifier keys that ``net``
    lacks (``fc.*``, ``classifier.*``, ``head.*``, ``head_dist.*``).

    ``.safetensors`` or torch files (``weights_only=True``); a ``state_dict`` / ``model`` entry
    is unwrapped and ``module.`` prefixes (DDP) are removed.

    Raises:
        ConfigError: names the file: missing, unreadable, not a state dict of tensors, or keys
            missing / unexpected / of another shape (a few are named).
    """
    state = _read_state_dict(Path(path))
    own = net.state_dict()
    heads = ("fc.", "classifier.", "head.", "head_dist.")
    state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)}
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(own.keys() & state.keys())
        if state[k].shape != own[k].shape
    ]
    found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": shapes}
    problems = [f"{len(v)} {k} (e.g. {', '.join(v[:3])})" for k, v in found.items() if v]
    if problems:
        raise ConfigError(
            f"weights file {path} does not fit {type(net).__name__}: {'; '.join(problems)}"
        )
    net.load_state_dict(state)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"weights file {path} cannot be read as a state dict ({exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


@torch.no_grad()
def _feature_channels(trunk: nn.Module) -> int:
    """Channels of the trunk's feature map, from one small forward pass in eval mode."""
    was_training = trunk.training
    trunk.eval()
    channels = int(trunk(torch.zeros(1, 3, 64, 64)).shape[1])
    trunk.train(was_training)
    return channels


# --- audio (log-mel) ----------------------------------------------------------------------------


def _frame_mask(spec: torch.Tensor, lengths: torch.Tensor, n_mels: int, owner: str) -> torch.Tensor:
    """Check ``spec (B, n_mels, F)`` and ``lengths (B,)``; return the frame mask (B, F)."""
    if spec.ndim != 3 or spec.shape[1] != n_mels:
        raise ValueError(f"{owner} expects (B, {n_mels}, frames), got {tuple(spec.shape)}")
    b, _, frames = spec.shape
    if lengths.shape != (b,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        got = f"{lengths.dtype} {tuple(lengths.shape)}"
        raise ValueError(f"{owner} lengths must be integer ({b},), got {got}")
    eager = not (torch.jit.is_tracing() or torch.compiler.is_compiling())  # export: no values
    if eager and b and (int(lengths.min()) < 1 or int(lengths.max()) > frames):
        raise ValueError(f"{owner} lengths must be in [1, {frames}], got {lengths.tolist()}")
    return torch.arange(frames, device=spec.device) < lengths.to(spec.device)[:, None]


class AudioConvEncoder(nn.Module):
    """A small 2-D CNN over log-mel spectrograms: three conv-BN-ReLU blocks (3x3, stride 2 in
    frequency and time), then frequency and channels flattened and projected to ``dim``, one
    token per 8 frames.

    Padded frames are zeroed first, so outputs do not depend on the padding's values. A token is
    real if any real frame fell in its 8 frames: ``ceil(length / 8)`` real tokens.

    Args:
        n_mels: mel bands of the input.
        dim: the output width.
        channels: channels of the first block (doubled in the later ones).

    Shapes:
        - spec: (B, n_mels, frames) float; lengths: (B,) integer, real frames (padding after).
        - tokens: (B, ceil(frames / 8), dim), zero at padded tokens; mask: (B, ceil(frames / 8)).

    Example:
        >>> AudioConvEncoder(40, 16)(torch.randn(1, 40, 17), torch.tensor([17]))[0].shape
        torch.Size([1, 3, 16])
    """

    stride = 8

    def __init__(self, n_mels: int, dim: int, *, channels: int = 32) -> None:
        super().__init__()
        _check_positive("AudioConvEncoder", n_mels=n_mels, dim=dim, channels=channels)
        self.n_mels, self.dim = n_mels, dim
        widths = [1, channels, 2 * channels, 2 * channels]
        blocks = [
            (nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU())
            for a, b in itertools.pairwise(widths)
        ]
        self.convs = nn.Sequential(*(nn.Sequential(*block) for block in blocks))
        mels_out = math.ceil(n_mels / self.stride)  # ceil(ceil(n / 2) / 2) ... = ceil(n / 8)
        self.proj = nn.Linear(widths[-1] * mels_out, dim)

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        frames = _frame_mask(spec, lengths, self.n_mels, "AudioConvEncoder")  # (B, F)
        x = (spec * frames[:, None, :]).unsqueeze(1)  # (B, 1, n_mels, F)
        x = self.convs(x)  # (B, C, ceil(n_mels / 8), ceil(F / 8))
        tokens = self.proj(x.flatten(1, 2).transpose(1, 2))  # (B, T, dim)
        real = (lengths.to(spec.device) + self.stride - 1) // self.stride  # ceil(length / 8)
        mask = torch.arange(tokens.shape[1], device=spec.device) < real[:, None]  # (B, T)
        return tokens.masked_fill(~mask[..., None], 0.0), mask


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed sine/cosine positions (Vaswani et al. 2017, arXiv:1706.03762), any length.

    Shapes:
        returns (length, dim) float32: sines in the even features, cosines in the odd ones.
    """
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (L, 1)
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )  # (ceil(dim / 2),)
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(position * freq)
    out[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return out


class AudioTransformerEncoder(nn.Module):
    """Patches of ``patch`` log-mel frames projected to ``dim``, sinusoidal positions, and a
    pre-norm ``nn.TransformerEncoder`` that masks padded patches (an audio ViT in the spirit of
    AST, Gong et al. 2021, arXiv:2104.01778, with time-only patches).

    Padded frames are zeroed and padded patches masked out of attention, so real tokens do not
    depend on padding. A patch is real if any real frame fell in it: ``ceil(length / patch)``.

    Args:
        n_mels: mel bands of the input.
        dim: the output width; a multiple of ``heads``.
        patch: frames per token.
        layers: transformer layers.
        heads: attention heads (the layers have a 4 * dim feed-forward and dropout 0.1).

    Shapes:
        - spec: (B, n_mels, frames) float; lengths: (B,) integer, real frames (padding after).
        - tokens: (B, ceil(frames / patch), dim), zero at padded tokens; mask: same (B, T).

    Example:
        >>> enc = AudioTransformerEncoder(40, 32, patch=4).eval()
        >>> enc(torch.randn(2, 40, 10), torch.tensor([10, 3]))[1].tolist()
        [[True, True, True], [True, False, False]]
    """

    def __init__(
        self, n_mels: int, dim: int, *, patch: int = 4, layers: int = 2, heads: int = 4
    ) -> None:
        super().__init__()
        owner = "AudioTransformerEncoder"
        _check_positive(owner, n_mels=n_mels, dim=dim, patch=patch, layers=layers, heads=heads)
        if dim % heads:
            raise ValueError(f"{owner} dim {dim} must be a multiple of heads {heads}")
        self.n_mels, self.dim, self.patch = n_mels, dim, patch
        self.embed = nn.Linear(n_mels * patch, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(
            layer, layers, nn.LayerNorm(dim), enable_nested_tensor=False
        )

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor) -> Encoded:
        frames = _frame_mask(spec, lengths, self.n_mels, "AudioTransformerEncoder")  # (B, F)
        b, _, f = spec.shape
        t = math.ceil(f / self.patch)
        x = nn.functional.pad(spec * frames[:, None, :], (0, t * self.patch - f))  # (B, M, T * P)
        x = x.reshape(b, self.n_mels, t, self.patch).permute(0, 2, 1, 3).flatten(2)  # (B, T, M*P)
        x = self.embed(x) + sinusoidal_positions(t, self.dim, spec.device)  # (B, T, dim)
        real = (lengths.to(spec.device) + self.patch - 1) // self.patch  # ceil(length / patch)
        mask = torch.arange(t, device=spec.device) < real[:, None]  # (B, T)
        tokens = self.encoder(x, src_key_padding_mask=~mask)
        return tokens.masked_fill(~mask[..., None], 0.0), mask


# --- registry -----------------------------------------------------------------------------------


def torchvision_image_encoder(
    dim: int, *, name: str = "resnet18", weights: str | None = None, grid: int = 7
) -> ImageEncoder:
    """An :class:`ImageEncoder` over :func:`torchvision_trunk` ``(name, weights)``."""
    trunk, channels = torchvision_trunk(name, weights)
    return ImageEncoder(trunk, channels, dim, grid=grid)


def timm_image_encoder(
    dim: int, *, name: str, weights: str | None = None, grid: int = 7
) -> ImageEncoder:
    """An :class:`ImageEncoder` over :func:`timm_trunk` ``(name, weights)``."""
    trunk, channels = timm_trunk(name, weights)
    return ImageEncoder(trunk, channels, dim, grid=grid)


ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder", group="abyssal.encoders")
"""Encoder classes and factories by ``modality/kind``; each takes ``dim`` among its arguments."""
for _name, _obj, _summary in (
    ("text/hf", TextEncoder, "a loaded Hugging Face text encoder, projected to dim"),
    ("image/torchvision", torchvision_image_encoder, "a torchvision CNN's feature map as tokens"),
    ("image/timm", timm_image_encoder, "a timm CNN's feature map as tokens (needs timm)"),
    ("audio/conv", AudioConvEncoder, "a small 2-D CNN over log-mel frames"),
    ("audio/transformer", AudioTransformerEncoder, "a masked transformer over log-mel patches"),
    ("audio/pretrained", PretrainedAudioEncoder, "a loaded Hugging Face waveform model (wav2vec2)"),
):
    ENCODERS.add(_name, _obj, summary=_summary)


def encoder_names(modality: str) -> list[str]:
    """The registered encoder names of one modality, sorted.

    Raises:
        ValueError: a modality with no encoders (the known ones are listed).

    Example:
        >>> encoder_names("audio")
        ['audio/conv', 'audio/pretrained', 'audio/transformer']
    """
    names = [n for n in ENCODERS.names() if n.split("/", 1)[0] == modality]
    if not names:
        known = sorted({n.split("/", 1)[0] for n in ENCODERS.names()})
        raise ValueError(f"no encoders for modality {modality!r}; choose one of: {known}")
    return names
