"""Incremental graph attention: keep each node's softmax sums so that a change of a few senders
updates their receivers in time proportional to the changed edges, not to the receivers' degree.

For a receiver v with incoming edges e = (u -> v), a GAT/GATv2 layer computes

    out_v = sum_e softmax_v(a_e) * x_u  =  N_v / Z_v,
    Z_v = sum_e exp(a_e - m_v),   N_v = sum_e exp(a_e - m_v) * x_u,

with attention logits ``a_e`` and sender values ``x_u`` (per head). Keeping ``m_v, Z_v, N_v`` for
every node (in float64), a sender whose embedding changed is swapped out of its receivers' sums: its
old term is subtracted and its new term added. :class:`AttentionView` reads the logits and values
out of a ``torch_geometric`` ``GATv2Conv`` or ``GATConv`` so that the result matches the layer
itself.
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


class SoftmaxSums:
    """``m_v, Z_v, N_v`` of one attention layer for every node, growable.

    Args:
        n: number of nodes; heads, channels: the layer's H and C.
    """

    def __init__(self, n: int, heads: int, channels: int) -> None:
        self.shift = torch.zeros(n, heads, dtype=torch.float64)
        self.z = torch.zeros(n, heads, dtype=torch.float64)
        self.num = torch.zeros(n, heads, channels, dtype=torch.float64)

    def grow(self, n: int) -> None:
        """Make room for ``n`` nodes (new nodes have no incoming edges yet)."""
        if n <= self.z.shape[0]:
            return
        extra = 2 * n - self.z.shape[0]
        self.shift = torch.cat([self.shift, self.shift.new_zeros(extra, self.shift.shape[1])])
        self.z = torch.cat([self.z, self.z.new_zeros(extra, self.z.shape[1])])
        self.num = torch.cat([self.num, self.num.new_zeros(extra, *self.num.shape[1:])])

    def rebuild(
        self, nodes: torch.Tensor, dst: torch.Tensor, logit: torch.Tensor, value: torch.Tensor
    ) -> None:
        """Recompute the sums of ``nodes`` from all their incoming edges.

        ``dst`` (E,) are positions in ``nodes``; ``logit`` (E, H) and ``value`` (E, H, C).
        """
        n, h = len(nodes), logit.shape[1]
        logit, value = logit.double(), value.double()
        m = torch.full((n, h), float("-inf"), dtype=torch.float64)
        m = m.scatter_reduce(0, dst.unsqueeze(1).expand(-1, h), logit, reduce="amax")
        m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        w = torch.exp(logit - m[dst])  # (E, H)
        self.shift[nodes] = m
        self.z[nodes] = torch.zeros(n, h, dtype=torch.float64).index_add_(0, dst, w)
        num = torch.zeros(n, *value.shape[1:], dtype=torch.float64)
        self.num[nodes] = num.index_add_(0, dst, w.unsqueeze(-1) * value)

    def swap(
        self,
        dst: torch.Tensor,
        old_logit: torch.Tensor,
        old_value: torch.Tensor,
        new_logit: torch.Tensor,
        new_value: torch.Tensor,
    ) -> None:
        """Replace the terms of some edges into nodes ``dst`` (E,) (node ids, repeats allowed)."""
        h = new_logit.shape[1]
        old_logit, new_logit = old_logit.double(), new_logit.double()
        nodes, pos = torch.unique(dst, return_inverse=True)
        m_old = self.shift[nodes]  # (n, H)
        m = m_old.scatter_reduce(0, pos.unsqueeze(1).expand(-1, h), new_logit, reduce="amax")
        scale = torch.exp(m_old - m)
        z = self.z[nodes] * scale
        num = self.num[nodes] * scale.unsqueeze(-1)
        w_old = torch.exp(old_logit - m[pos])
        w_new = torch.exp(new_logit - m[pos])
        z = z.index_add_(0, pos, w_new - w_old)
        delta = w_new.unsqueeze(-1) * new_value.double() - w_old.unsqueeze(-1) * old_value.double()
        self.num[nodes] = num.index_add_(0, pos, delta)
        self.z[nodes] = z.clamp_min(0.0)
        self.shift[nodes] = m

    def output(self, nodes: torch.Tensor) -> torch.Tensor:
        """(n, H, C) float32 softmax-weighted sums; zeros for nodes without incoming edges."""
        z = self.z[nodes].unsqueeze(-1)
        out = torch.where(z > 0, self.num[nodes] / z.clamp_min(1e-300), torch.zeros_like(z))
        return out.float()


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
