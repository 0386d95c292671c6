"""GAT over the transaction graph with temporal node and edge features.

Node features (temporal statistics, standardised with training-set statistics kept as buffers) are
encoded, then ``layers`` rounds of graph attention (GATv2, Brody et al., ICLR 2022; or GAT,
Velickovic et al., ICLR 2018) aggregate neighbours, with edge attributes (signed-log amount or
rating, edge kind, direction) and a harmonic encoding of each edge's age relative to the receiving
node's latest event (none for a static graph: ``time_dim=0``). A node head scores accounts; a
transaction head scores a transaction from its user, counterparty and device embeddings and its
amount.

With ``neighbour_cap`` K every receiver attends only to its K most recent incoming edges of each
kind and direction
(:func:`~abyssal.nn.recent_edges.recent_edge_mask`, as in TGN's and TGAT's temporal neighbour
sampling), in training and scoring alike; the live scorer relies on that to bound its work per
transaction.

Each layer can be applied to a subset of receiving nodes (``layer``): the live scorer uses that to
recompute only the neighbourhood of a new transaction.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from abyssal.core.optional import require
from abyssal.nn.recent_edges import recent_edge_mask
from abyssal.nn.time_encoding import TimeEncoding


class TemporalGAT(nn.Module):
    """Graph attention network with temporal features.

    Args:
        in_features: node feature size F.
        edge_features: edge attribute size A (without the time encoding).
        hidden: embedding size H.
        heads: attention heads per layer (H must divide by it).
        layers: message-passing rounds.
        time_dim: size of the edge-age encoding; 0 leaves it out (static graphs).
        dropout: dropout on embeddings and attention.
        conv: ``"gatv2"`` or ``"gat"``.
        neighbour_cap: each receiver attends to at most this many of its most recent incoming
            edges (smallest ``edge_dt``; ties to the later edge); ``None``: to all of them.

    Shapes:
        - x: (N, F); edge_index: (2, E); edge_attr: (E, A); edge_dt: (E,) seconds.
        - returns node logits (N,) and, for given transactions (T, 3), their logits (T,).
    """

    def __init__(
        self,
        in_features: int,
        edge_features: int,
        hidden: int = 64,
        heads: int = 4,
        layers: int = 2,
        time_dim: int = 8,
        dropout: float = 0.1,
        conv: str = "gatv2",
        neighbour_cap: int | None = None,
    ) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        if neighbour_cap is not None and neighbour_cap < 1:
            raise ValueError(f"neighbour_cap must be >= 1 or None, got {neighbour_cap}")
        self.neighbour_cap = neighbour_cap
        with warnings.catch_warnings():  # torch_geometric's import-time torch.jit notices
            warnings.simplefilter("ignore", FutureWarning)
            pyg = require("torch_geometric.nn", extra="fraud", purpose="graph attention layers")
        conv_cls = {"gatv2": pyg.GATv2Conv, "gat": pyg.GATConv}[conv]
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))
        self.encoder = nn.Linear(in_features, hidden)
        self.time_encoding = TimeEncoding(time_dim) if time_dim > 0 else None
        self.convs = nn.ModuleList(
            conv_cls(
                hidden,
                hidden // heads,
                heads=heads,
                edge_dim=edge_features + time_dim,
                add_self_loops=False,
                dropout=dropout,
            )
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.node_head = _mlp(2 * hidden, hidden)
        self.transaction_head = _mlp(3 * hidden + 1, hidden)

    def set_feature_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise inputs with these (F,) statistics (from the training nodes)."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-6))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) raw features -> (N, H) layer-0 embeddings."""
        z = (x - self.feature_mean) / self.feature_std  # (N, F)
        return torch.relu(self.encoder(z.clamp(-10.0, 10.0)))

    def layer(
        self,
        i: int,
        h_src: torch.Tensor,
        h_dst: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_dt: torch.Tensor,
    ) -> torch.Tensor:
        """Layer ``i`` for the receiving nodes ``h_dst`` (Nd, H) from senders ``h_src`` (Ns, H).

        ``edge_index`` rows are (sender row in h_src, receiver row in h_dst).
        """
        m = self.convs[i]((h_src, h_dst), edge_index, self.edge_inputs(edge_attr, edge_dt))
        return self.combine(i, h_dst, m)  # (Nd, H)

    def edge_inputs(self, edge_attr: torch.Tensor, edge_dt: torch.Tensor) -> torch.Tensor:
        """(E, A + T) what the attention layers see of each edge: attributes and encoded age
        (attributes only, (E, A), without a time encoding)."""
        if self.time_encoding is None:
            return edge_attr
        return torch.cat([edge_attr, self.time_encoding(edge_dt)], dim=-1)

    def combine(self, i: int, h_dst: torch.Tensor, message: torch.Tensor) -> torch.Tensor:
        """Residual update of layer ``i``: receivers (Nd, H) plus their aggregated messages."""
        return self.norms[i](h_dst + self.dropout(nn.functional.elu(message)))

    def node_logits(self, h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """(N, H) final and layer-0 embeddings -> (N,) account risk logits."""
        return self.node_head(torch.cat([h, h0], dim=-1)).squeeze(-1)

    def transaction_logits(
        self,
        h: torch.Tensor,
        user: torch.Tensor,
        counterparty: torch.Tensor,
        device: torch.Tensor,
        amount: torch.Tensor,
    ) -> torch.Tensor:
        """(T,) transaction risk logits from node indices (T,) and signed-log amounts (T,)."""
        z = torch.cat([h[user], h[counterparty], h[device], amount.unsqueeze(-1)], dim=-1)
        return self.transaction_head(z).squeeze(-1)

    def embed(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_dt: torch.Tensor,
    ) -> list[torch.Tensor]:
        """Embeddings after every layer: ``[h0, h1, ..., hL]``, each (N, H).

        Only each receiver's ``neighbour_cap`` most recent incoming edges take part: the others
        are sent to a spare receiver row that is dropped after each layer, so shapes stay fixed
        and the forward never waits on the device (it can be exported or captured in a CUDA
        graph); the kept edges' attention and messages are exactly those of the capped graph.
        """
        n = x.shape[0]
        capped = self.neighbour_cap is not None
        if capped:
            groups = edge_groups(edge_attr)
            keep = recent_edge_mask(
                edge_index[1],
                edge_dt,
                self.neighbour_cap,
                groups,
                num_groups=edge_group_count(edge_attr),
            )  # (E,)
            sink = torch.full_like(edge_index[1], n)
            edge_index = torch.stack([edge_index[0], torch.where(keep, edge_index[1], sink)])
        hs = [self.encode(x)]
        for i in range(len(self.convs)):
            h = hs[-1]
            h_dst = torch.cat([h, h.new_zeros(1, h.shape[1])]) if capped else h  # (N[+1], H)
            m = self.convs[i]((h, h_dst), edge_index, self.edge_inputs(edge_attr, edge_dt))
            hs.append(self.combine(i, h, m[:n]))
        return hs

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_dt: torch.Tensor,
        txn_nodes: torch.Tensor | None = None,
        txn_amount: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Account risk logits and, when transactions are given, their risk logits.

        Shapes:
            - x (N, F), edge_index (2, E), edge_attr (E, A), edge_dt (E,);
            - txn_nodes (T, 3) user, counterparty and device rows; txn_amount (T,) signed-log;
            - returns node logits (N,) and transaction logits (T,) or ``None``.
        """
        hs = self.embed(x, edge_index, edge_attr, edge_dt)
        node = self.node_logits(hs[-1], hs[0])  # (N,)
        if txn_nodes is None or txn_amount is None:
            return node, None
        user, counterparty, device = txn_nodes.unbind(1)  # (T,) each
        return node, self.transaction_logits(hs[-1], user, counterparty, device, txn_amount)


def edge_groups(edge_attr: torch.Tensor) -> torch.Tensor:
    """(E,) the group of each edge for the neighbour cap: its kind and direction.

    ``edge_attr`` is laid out as ``GraphTensors`` builds it: value, kind one-hot, direction (1 =
    reversed). A node keeps its K most recent edges of each group, so that a user's few device
    links, made when a device was first used, are not crowded out by recent purchases.
    """
    kind = edge_attr[:, 1:-1].argmax(dim=1)  # (E,)
    return kind * 2 + edge_attr[:, -1].round().long()


def edge_group_count(edge_attr: torch.Tensor) -> int:
    """How many groups :func:`edge_groups` can return: two directions of each edge kind."""
    return 2 * (edge_attr.shape[1] - 2)


def _mlp(inputs: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, 1))
