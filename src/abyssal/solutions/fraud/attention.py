"""Graph attention over a chosen set of receivers, from cached sender and edge inputs.

For a receiver v with incoming edges e = (u -> v), a GAT (Velickovic et al., ICLR 2018) or GATv2
(Brody et al., ICLR 2022) layer computes

    out_v = sum_e softmax_v(a_e) * x_u,

with attention logits ``a_e`` and sender values ``x_u`` (per head). :class:`AttentionView` reads the
logits and values out of a ``torch_geometric`` ``GATv2Conv`` or ``GATConv`` so that the live scorer
can evaluate the layer for a few receivers only, from its cached sender projections, and match the
layer itself; :func:`softmax_aggregate` sums the weighted values per receiver.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class AttentionView:
    """Per-edge logits and sender values of a ``GATv2Conv`` or ``GATConv`` (no self-loops).

    Shapes:
        - senders / receivers: (n, D) input embeddings -> (n, H, C).
        - logits: (E, H); values: (E, H, C); finish: (n, H, C) -> (n, H * C).
    """

    def __init__(self, conv: nn.Module) -> None:
        self.conv = conv
        self.heads, self.channels = conv.heads, conv.out_channels
        self.v2 = hasattr(conv, "lin_l")
        if getattr(conv, "add_self_loops", False) or not getattr(conv, "concat", True):
            raise ValueError("incremental attention needs add_self_loops=False and concat=True")

    def senders(self, h: torch.Tensor) -> torch.Tensor:
        lin = self.conv.lin_l if self.v2 else self.conv.lin
        return lin(h).view(-1, self.heads, self.channels)

    def receivers(self, h: torch.Tensor) -> torch.Tensor:
        lin = self.conv.lin_r if self.v2 else self.conv.lin
        return lin(h).view(-1, self.heads, self.channels)

    def logits(self, xs: torch.Tensor, xr: torch.Tensor, edge_in: torch.Tensor) -> torch.Tensor:
        """Attention logits of edges with sender values ``xs`` and receiver values ``xr``."""
        return self.logits_from(xs, xr, self.edge_terms(edge_in))

    def edge_terms(self, edge_in: torch.Tensor) -> torch.Tensor:
        """What an edge's own inputs contribute to its logit: (E, H, C) for GATv2, (E, H) for
        GAT. It depends on the edge alone, so callers may cache it."""
        c = self.conv
        e = c.lin_edge(edge_in).view(-1, self.heads, self.channels)  # (E, H, C)
        return e if self.v2 else (e * c.att_edge).sum(-1)

    def logits_from(self, xs: torch.Tensor, xr: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
        """Logits from sender and receiver values and cached :meth:`edge_terms`."""
        c = self.conv
        if self.v2:
            return (F.leaky_relu(xs + xr + terms, c.negative_slope) * c.att).sum(-1)
        a = (xs * c.att_src).sum(-1) + (xr * c.att_dst).sum(-1) + terms
        return F.leaky_relu(a, c.negative_slope)

    def finish(self, aggregated: torch.Tensor) -> torch.Tensor:
        out = aggregated.reshape(aggregated.shape[0], -1)
        return out if self.conv.bias is None else out + self.conv.bias


def softmax_aggregate(
    logit: torch.Tensor, value: torch.Tensor, dst: torch.Tensor, n: int
) -> torch.Tensor:
    """``sum_e softmax(logit)_e * value_e`` per receiver, without keeping the sums.

    Shapes: logit (E, H), value (E, H, C), dst (E,) positions in 0..n-1 -> (n, H, C); receivers
    without edges get zeros.
    """
    h = logit.shape[1]
    m = torch.full((n, h), float("-inf"), dtype=logit.dtype)
    m = m.scatter_reduce(0, dst.unsqueeze(1).expand(-1, h), logit, reduce="amax")
    w = torch.exp(logit - m[dst])  # (E, H)
    z = torch.zeros(n, h, dtype=logit.dtype).index_add_(0, dst, w)
    num = torch.zeros(n, *value.shape[1:], dtype=value.dtype)
    num.index_add_(0, dst, w.unsqueeze(-1) * value)
    return num / z.clamp_min(1e-30).unsqueeze(-1)
