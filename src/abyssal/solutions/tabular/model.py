"""A multilayer perceptron over standardised numbers, missing indicators and category embeddings.

Each categorical column has its own embedding table (code 0, "missing, rare or unseen", starts
at zero, so an input never seen in training adds nothing until it is learnt). The embeddings are
concatenated with the numeric inputs and passed through ``layers`` blocks of Linear, ReLU and
dropout, then a linear head: one logit per class, or one value for regression. This is the
embedding-MLP baseline of Gorishniy et al., "Revisiting Deep Learning Models for Tabular Data",
NeurIPS 2021. Pure torch: no I/O, no config objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TabularMLP(nn.Module):
    """MLP over ``[numeric, embedding(categorical_1), ..., embedding(categorical_Fc)]``.

    Args:
        numeric_features: width ``W`` of the numeric input (columns plus missing indicators).
        cardinalities: codes per categorical column (code 0 included).
        outputs: ``C`` logits (classification) or 1 (regression).
        hidden: width of each hidden layer.
        layers: number of hidden layers.
        dropout: dropout after each hidden layer.
        embedding_dim: size of each column's embedding.

    Shapes:
        numeric: (B, W) float; categorical: (B, Fc) int64 codes -> (B, outputs).

    Example:
        >>> model = TabularMLP(3, [4, 2], outputs=2, hidden=8)
        >>> model(torch.zeros(5, 3), torch.zeros(5, 2, dtype=torch.long)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        numeric_features: int,
        cardinalities: Sequence[int],
        outputs: int,
        *,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.1,
        embedding_dim: int = 8,
    ) -> None:
        super().__init__()
        if numeric_features < 0 or min(cardinalities, default=1) < 1 or outputs < 1:
            raise ValueError(
                f"bad sizes: numeric_features={numeric_features}, "
                f"cardinalities={list(cardinalities)}, outputs={outputs}"
            )
        width = numeric_features + embedding_dim * len(cardinalities)
        if width == 0:
            raise ValueError("TabularMLP needs at least one numeric or categorical input")
        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in cardinalities)
        for table in self.embeddings:
            nn.init.zeros_(table.weight[0:1])
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [
                nn.Linear(width if i == 0 else hidden, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric.float()]  # (B, W)
        parts += [table(categorical[:, j]) for j, table in enumerate(self.embeddings)]  # (B, E)
        return self.head(self.body(torch.cat(parts, dim=1)))  # (B, outputs)
