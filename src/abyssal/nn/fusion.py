"""Multimodal fusion for a classifier over text, image and audio tokens, any of which may be missing
for a sample.

Every fusion takes ``tokens`` (modality -> (B, T_m, D) floats, already projected to a common
width D) and ``masks`` (modality -> (B, T_m) bool, True where a token is real; a modality missing
for a sample has an all-False mask row) and returns a :class:`FusionOutput`. Four strategies are
registered in :data:`FUSIONS`: :class:`CrossAttentionFusion` (MulT, Tsai et al., "Multimodal
Transformer for Unaligned Multimodal Language Sequences", ACL 2019, arXiv:1906.00295),
:class:`EarlyFusion`, :class:`ConcatFusion` and :class:`LateFusion`. Masked tokens are zeroed on
entry and never attended to, so no output depends on their values.
:func:`modality_dropout` trains robustness to missing modalities (ModDrop, Neverova et al., TPAMI
2016, arXiv:1501.00102); :func:`leave_one_out` explains a prediction by how much its probability
drops when each modality is removed.

Example:
    >>> fusion = build_fusion("late", ["text", "image"], dim=8, classes=3)
    >>> tokens = {"text": torch.randn(2, 5, 8), "image": torch.randn(2, 4, 8)}
    >>> masks = {"text": torch.ones(2, 5, dtype=torch.bool),
    ...          "image": torch.tensor([[True] * 4, [False] * 4])}
    >>> out = fusion(tokens, masks)
    >>> out.logits.shape, out.contributions[1].tolist()
    (torch.Size([2, 3]), [1.0, 0.0])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from abyssal.core.registry import Registry


@dataclass(frozen=True)
class FusionOutput:
    """What every fusion returns.

    Attributes:
        logits: class scores.
        embedding: the fused vector the classification head reads.
        contributions: per sample, each modality's share (in the module's modality order): >= 0,
            summing to 1 over the modalities present in the row, 0 for the absent ones.

    Shapes:
        - logits: (B, C).
        - embedding: (B, D).
        - contributions: (B, M).
    """

    logits: Tensor
    embedding: Tensor
    contributions: Tensor


class MultimodalFusion(nn.Module, ABC):
    """Base of every fusion: checks the inputs, zeroes masked tokens and calls ``_fuse``.

    Args:
        modalities: the modality names, in the order used by ``contributions``.
        dim: token width D.
        classes: number of classes C.
        heads: attention heads (attention-based fusions only; must divide ``dim``).
        layers: transformer blocks, or MLP layers for the MLP-based fusions.
        dropout: dropout probability in ``[0, 1)``.

    Shapes:
        - tokens: modality -> (B, T_m, D) float.
        - masks: modality -> (B, T_m) bool, True where a token is real.
        - output: :class:`FusionOutput` with logits (B, C), embedding (B, D), contributions (B, M).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        classes: int,
        *,
        heads: int = 4,
        layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.modalities = _check_modalities(owner, modalities)
        sizes = {"dim": dim, "classes": classes, "heads": heads, "layers": layers}
        for label, value in sizes.items():
            if value < 1:
                raise ValueError(f"{owner} {label} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{owner} dropout must be in [0, 1), got {dropout}")
        self.dim, self.classes = dim, classes
        self._build(dim, classes, heads, layers, dropout)

    def forward(self, tokens: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> FusionOutput:
        self._check_inputs(tokens, masks)
        ms = [masks[name] for name in self.modalities]
        # zeroed, so that no value under a mask (not even NaN) can reach the output
        xs = [tokens[name].masked_fill(~masks[name].unsqueeze(-1), 0.0) for name in self.modalities]
        presence = torch.stack([m.any(1) for m in ms], 1)  # (B, M)
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):  # eager only: export
            empty = (~presence.any(1)).nonzero()  # graphs cannot branch on values
            if len(empty):
                raise ValueError(
                    f"row {int(empty[0])} has no modality present (every mask is False); "
                    "each sample needs at least one"
                )
        return self._fuse(xs, ms, presence)

    @abstractmethod
    def _build(self, dim: int, classes: int, heads: int, layers: int, dropout: float) -> None:
        """Create the submodules; called by ``__init__`` once the arguments are checked."""

    @abstractmethod
    def _fuse(self, xs: list[Tensor], ms: list[Tensor], presence: Tensor) -> FusionOutput:
        """Fuse zero-padded tokens ``xs`` with masks ``ms`` (modality order); presence is (B, M)."""

    def _check_inputs(self, tokens: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
        built = f"{type(self).__name__} was built for {list(self.modalities)}"
        for label, given in (("tokens", tokens), ("masks", masks)):
            for name in [n for n in given if n not in self.modalities]:
                raise ValueError(f"{label} has unknown modality {name!r}; {built}")
            for name in [n for n in self.modalities if n not in given]:
                raise ValueError(f"{label} lacks modality {name!r} ({built}); mask it all False")
        shapes = {name: tuple(tokens[name].shape) for name in self.modalities}
        for name, shape in shapes.items():
            if len(shape) != 3:
                raise ValueError(f"tokens[{name!r}] must be 3-D (B, T, D), got shape {shape}")
        first = self.modalities[0]
        for name, shape in shapes.items():
            if shape[0] != shapes[first][0]:
                raise ValueError(
                    f"tokens[{name!r}] has batch size {shape[0]} but tokens[{first!r}] has "
                    f"{shapes[first][0]}"
                )
            _check_modality(name, tokens[name], masks[name], self.dim)


def _check_modalities(owner: str, modalities: Sequence[str]) -> tuple[str, ...]:
    names = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    if not names:
        raise ValueError(f"{owner} needs at least one modality")
    for name in names:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(
                f"{owner} modality names must be non-empty strings without '.', got {name!r}"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{owner} modality names must be unique; repeated: {repeated}")
    return names


def _check_heads(owner: str, dim: int, heads: int) -> None:
    if dim % heads:
        raise ValueError(f"{owner} dim {dim} must be divisible by heads {heads}")


def _check_modality(name: str, x: Tensor, mask: Tensor, dim: int) -> None:
    """Raise ``ValueError`` naming the modality when its (3-D) tokens or its mask are malformed."""
    if not x.dtype.is_floating_point:
        raise ValueError(f"tokens[{name!r}] must be a float dtype, got {x.dtype}")
    if x.shape[2] != dim:
        raise ValueError(f"tokens[{name!r}] has width {x.shape[2]}; the fusion expects D={dim}")
    if x.shape[1] < 1:
        raise ValueError(f"tokens[{name!r}] has no token position; pad to >= 1 with a False mask")
    if mask.dtype != torch.bool:
        raise ValueError(f"masks[{name!r}] must be bool, got {mask.dtype}")
    if mask.shape != x.shape[:2]:
        raise ValueError(
            f"masks[{name!r}] must have shape {tuple(x.shape[:2])} to match its tokens, "
            f"got {tuple(mask.shape)}"
        )


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the real tokens, 0 for a row without any: (B, T, D), (B, T) -> (B, D)."""
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def _uniform(presence: Tensor) -> Tensor:
    """Equal shares over the present modalities: (B, M) bool -> (B, M) float."""
    share = presence.float()
    return share / share.sum(1, keepdim=True)


def _mlp(in_dim: int, dim: int, layers: int, dropout: float) -> nn.Sequential:
    blocks: list[nn.Module] = []
    for index in range(layers):
        blocks += [nn.Linear(in_dim if index == 0 else dim, dim), nn.GELU(), nn.Dropout(dropout)]
    return nn.Sequential(*blocks)


class _CrossModalBlock(nn.Module):
    """Pre-norm block for one target modality: attention to the other modalities, then MLP."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_query, self.norm_keys, self.norm_ff = (nn.LayerNorm(dim) for _ in range(3))
        # no dropout inside attention, so the returned weights are a true distribution
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor, keys: Tensor, key_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(B, T, D), (B, T), (B, S, D), (B, S) -> new x (B, T, D), weights (B, T, S)."""
        has_keys = key_mask.any(1, keepdim=True)  # (B, 1)
        # A row with no key at all would softmax over nothing (NaN): it attends to its own zeroed
        # padding instead, and the update and weights are discarded below.
        ignore = ~key_mask & has_keys  # (B, S)
        kv = self.norm_keys(keys)
        update, weights = self.attention(
            self.norm_query(x), kv, kv, key_padding_mask=ignore, need_weights=True
        )  # (B, T, D), (B, T, S) averaged over heads
        keep = (mask & has_keys).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        x = x + self.drop(update) * keep
        x = x + self.drop(self.feed_forward(self.norm_ff(x)))
        return x * mask.unsqueeze(-1), weights * keep


class CrossAttentionFusion(MultimodalFusion):
    """MulT-style cross-modal attention, then attention pooling over the present modalities.

    In each of ``layers`` pre-norm blocks every modality's tokens attend to the concatenated
    tokens of all *other* modalities (residual, then a feed-forward sublayer); a row where no
    other modality is present gets no attention update. Each modality is mean-pooled and the
    vectors combined by a learned softmax score over the present modalities. ``contributions`` is
    the attention mass each modality *received* (mean over heads and real queries, summed over
    query modalities and layers), normalised; with exactly two present modalities each attends
    only to the other, so both get 0.5. ``last_attention`` holds the last forward's weights, per
    layer: modality -> (B, T_m, S_m) over the others' tokens (module order), zero for masked
    queries and rows without keys.

    Shapes: as :class:`MultimodalFusion`; needs at least two modalities.

    Example:
        >>> fusion = CrossAttentionFusion(["text", "image", "audio"], dim=8, classes=4, layers=2)
    """

    def _build(self, dim: int, classes: int, heads: int, layers: int, dropout: float) -> None:
        _check_heads(type(self).__name__, dim, heads)
        if len(self.modalities) < 2:
            raise ValueError(f"CrossAttentionFusion needs >= 2 modalities, got {self.modalities}")
        self.blocks = nn.ModuleList(
            nn.ModuleDict({name: _CrossModalBlock(dim, heads, dropout) for name in self.modalities})
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        # no bias on the score: softmax ignores a shared shift, so it would never learn
        self.pool_score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, False))
        self.head = nn.Linear(dim, classes)
        self.last_attention: list[dict[str, Tensor]] = []

    def _fuse(self, xs: list[Tensor], ms: list[Tensor], presence: Tensor) -> FusionOutput:
        received = torch.zeros(presence.shape, device=presence.device)  # (B, M)
        kept: list[dict[str, Tensor]] = []
        for layer in self.blocks:
            xs, weights = self._cross_layer(layer, xs, ms)
            kept.append(weights)
            received += self._received(weights, ms)
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):  # no state in graphs
            self.last_attention = kept
        means = [_masked_mean(x, m) for x, m in zip(xs, ms, strict=True)]
        pooled = self.norm(torch.stack(means, 1))  # (B, M, D)
        scores = self.pool_score(pooled).squeeze(-1).masked_fill(~presence, float("-inf"))
        embedding = (scores.softmax(1).unsqueeze(-1) * pooled).sum(1)  # (B, D)
        total = received.sum(1, keepdim=True)
        shares = torch.where(total > 0, received / total.clamp_min(1e-12), _uniform(presence))
        return FusionOutput(self.head(embedding), embedding, shares)

    def _cross_layer(
        self, layer: nn.ModuleDict, xs: list[Tensor], ms: list[Tensor]
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Update every modality from the same layer input; returns new tokens and weights."""
        new_xs, weights = [], {}
        for i, name in enumerate(self.modalities):
            keys = torch.cat([x for j, x in enumerate(xs) if j != i], 1)  # (B, S, D)
            key_mask = torch.cat([m for j, m in enumerate(ms) if j != i], 1)  # (B, S)
            x, w = layer[name](xs[i], ms[i], keys, key_mask)
            new_xs.append(x)
            weights[name] = w.detach()
        return new_xs, weights

    def _received(self, weights: dict[str, Tensor], ms: list[Tensor]) -> Tensor:
        """Attention mass each modality received in one layer, per row: (B, M)."""
        received = torch.zeros(ms[0].shape[0], len(ms), device=ms[0].device)
        for i, name in enumerate(self.modalities):
            others = [j for j in range(len(ms)) if j != i]
            parts = weights[name].split([ms[j].shape[1] for j in others], dim=2)  # (B, T_i, T_j)
            for j, part in zip(others, parts, strict=True):
                received[:, j] += _masked_mean(part.sum(2, keepdim=True), ms[i]).squeeze(1)
        return received


class EarlyFusion(MultimodalFusion):
    """One masked transformer encoder over all tokens, each tagged by a learned modality embedding.

    The encoder output is mean-pooled over the real tokens. ``contributions`` is each modality's
    share of those tokens.

    Shapes: as :class:`MultimodalFusion`.

    Example:
        >>> fusion = EarlyFusion(["text", "image"], dim=8, classes=3, heads=2)
    """

    def _build(self, dim: int, classes: int, heads: int, layers: int, dropout: float) -> None:
        _check_heads(type(self).__name__, dim, heads)
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(len(self.modalities), dim))
        block = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            block, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        self.head = nn.Linear(dim, classes)

    def _fuse(self, xs: list[Tensor], ms: list[Tensor], presence: Tensor) -> FusionOutput:
        x = torch.cat([x + self.modality_embedding[i] for i, x in enumerate(xs)], 1)  # (B, S, D)
        mask = torch.cat(ms, 1)  # (B, S)
        embedding = _masked_mean(self.encoder(x, src_key_padding_mask=~mask), mask)  # (B, D)
        counts = torch.stack([m.sum(1) for m in ms], 1).float()  # (B, M)
        return FusionOutput(self.head(embedding), embedding, counts / counts.sum(1, keepdim=True))


class ConcatFusion(MultimodalFusion):
    """Masked mean of each modality (zeros when absent) and the presence flags, into an MLP.

    The MLP has ``layers`` Linear-GELU-dropout layers of width D; its output is the embedding.
    ``heads`` is not used. ``contributions`` is uniform over the present modalities.

    Shapes: as :class:`MultimodalFusion`.

    Example:
        >>> fusion = ConcatFusion(["text", "image"], dim=8, classes=3)
    """

    def _build(self, dim: int, classes: int, heads: int, layers: int, dropout: float) -> None:
        self.mlp = _mlp(len(self.modalities) * (dim + 1), dim, layers, dropout)
        self.head = nn.Linear(dim, classes)

    def _fuse(self, xs: list[Tensor], ms: list[Tensor], presence: Tensor) -> FusionOutput:
        means = [_masked_mean(x, m) for x, m in zip(xs, ms, strict=True)]
        features = torch.cat([*means, presence.to(means[0].dtype)], 1)  # (B, M * D + M)
        embedding = self.mlp(features)  # (B, D)
        return FusionOutput(self.head(embedding), embedding, _uniform(presence))


class LateFusion(MultimodalFusion):
    """One classifier per modality; logits averaged over the present modalities.

    Each modality's masked mean goes through ``encoders[name]`` (``layers`` Linear-GELU-dropout
    layers) and ``heads[name]`` (linear). Logits and embedding are the means over the present
    modalities (score averaging); ``contributions`` is uniform over them. ``heads`` is not used.

    Shapes: as :class:`MultimodalFusion`.

    Example:
        >>> fusion = LateFusion(["text", "image"], dim=8, classes=3)
    """

    def _build(self, dim: int, classes: int, heads: int, layers: int, dropout: float) -> None:
        self.encoders = nn.ModuleDict({m: _mlp(dim, dim, layers, dropout) for m in self.modalities})
        self.heads = nn.ModuleDict({m: nn.Linear(dim, classes) for m in self.modalities})

    def _fuse(self, xs: list[Tensor], ms: list[Tensor], presence: Tensor) -> FusionOutput:
        vectors, logits = [], []
        for name, x, m in zip(self.modalities, xs, ms, strict=True):
            vectors.append(self.encoders[name](_masked_mean(x, m)))  # (B, D)
            logits.append(self.heads[name](vectors[-1]))  # (B, C)
        share = _uniform(presence).unsqueeze(-1)  # (B, M, 1)
        embedding = (share * torch.stack(vectors, 1)).sum(1)  # (B, D)
        fused = (share * torch.stack(logits, 1)).sum(1)  # (B, C)
        return FusionOutput(fused, embedding, share.squeeze(-1))


FUSIONS: Registry[type[MultimodalFusion]] = Registry("fusion", group="abyssal.fusions")
FUSIONS.add("cross_attention", CrossAttentionFusion, summary="MulT-style cross-modal attention")
FUSIONS.add("early", EarlyFusion, summary="one transformer over all tokens, tagged by modality")
FUSIONS.add("concat", ConcatFusion, summary="per-modality means and presence flags into an MLP")
FUSIONS.add("late", LateFusion, summary="one classifier per modality, logits averaged")


def build_fusion(
    name: str, modalities: Sequence[str], dim: int, classes: int, **options: float
) -> MultimodalFusion:
    """Build the fusion registered as ``name``; ``options`` are ``heads``, ``layers``, ``dropout``.

    Raises:
        RegistryError: an unknown name (the choices are listed).

    Example:
        >>> build_fusion("concat", ["text", "audio"], dim=16, classes=2, layers=2)
        ConcatFusion(...)
    """
    return FUSIONS.get(name)(modalities, dim, classes, **options)


def modality_dropout(
    masks: Mapping[str, Tensor], p: float, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Drop each present modality of each row with probability ``p``, for training.

    A dropped modality has its whole mask row set to False. The last present modality of a row is
    never dropped: when every present one was drawn, one of them, chosen uniformly, is kept.

    Args:
        masks: modality -> (B, T_m) bool masks.
        p: drop probability in ``[0, 1]``.
        generator: makes the draw reproducible; it must live on the masks' device.

    Returns:
        New masks with the same keys.

    Example:
        >>> masks = modality_dropout(masks, 0.3, torch.Generator().manual_seed(0))
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"modality_dropout p must be in [0, 1], got {p}")
    names = list(masks)
    for name in names:
        mask = masks[name]
        if mask.dtype != torch.bool or mask.ndim != 2 or len(mask) != len(masks[names[0]]):
            raise ValueError(
                f"masks[{name!r}] must be a 2-D bool (B, T) mask with the B of "
                f"masks[{names[0]!r}], got {mask.dtype} {tuple(mask.shape)}"
            )
    if not names:
        return {}
    presence = torch.stack([masks[name].any(1) for name in names], 1)  # (B, M)
    draw = torch.rand(presence.shape, generator=generator, device=presence.device)
    drop = presence & (draw < p)
    emptied = presence.any(1) & ~(presence & ~drop).any(1)  # (B,)
    pick = torch.rand(presence.shape, generator=generator, device=presence.device)
    rescued = pick.masked_fill(~presence, -1.0).argmax(1)  # a random present modality per row
    drop &= ~(F.one_hot(rescued, len(names)).bool() & emptied.unsqueeze(1))
    return {name: masks[name] & ~drop[:, i, None] for i, name in enumerate(names)}


def leave_one_out(
    fusion: MultimodalFusion, tokens: Mapping[str, Tensor], masks: Mapping[str, Tensor]
) -> Tensor:
    """Leave-one-modality-out deltas: how much each modality supports the predicted class.

    For each modality present in a row: the predicted class's probability minus its probability
    with that modality masked out. When the modality is the row's only one, removing it leaves
    nothing to predict from, so the delta is the probability minus chance (``1 / C``). Absent
    modalities get 0. Runs in eval mode without gradients (``M + 1`` forwards) and restores the
    module's training mode; it overwrites a :class:`CrossAttentionFusion`'s ``last_attention``.

    Returns:
        (B, M) float32 deltas, in the fusion's modality order.

    Example:
        >>> leave_one_out(fusion, tokens, masks).shape
        torch.Size([2, 2])
    """
    was_training = fusion.training
    fusion.eval()
    try:
        with torch.no_grad():
            return _leave_one_out(fusion, tokens, masks)
    finally:
        fusion.train(was_training)


def _leave_one_out(
    fusion: MultimodalFusion, tokens: Mapping[str, Tensor], masks: Mapping[str, Tensor]
) -> Tensor:
    probs = fusion(tokens, masks).logits.float().softmax(1)  # (B, C); also validates the inputs
    predicted = probs.argmax(1, keepdim=True)  # (B, 1)
    base = probs.gather(1, predicted).squeeze(1)  # (B,)
    presence = torch.stack([masks[name].any(1) for name in fusion.modalities], 1)  # (B, M)
    deltas = torch.zeros(presence.shape, device=probs.device)
    for i, name in enumerate(fusion.modalities):
        removable = presence[:, i] & (presence.sum(1) > 1)  # (B,)
        reduced = {**masks, name: masks[name] & ~removable.unsqueeze(1)}
        without = fusion(tokens, reduced).logits.float().softmax(1).gather(1, predicted).squeeze(1)
        alone = torch.where(presence[:, i], base - 1.0 / probs.shape[1], 0.0)
        deltas[:, i] = torch.where(removable, base - without, alone)
    return deltas
