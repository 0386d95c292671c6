"""Temporal neighbour cap: each receiver keeps only its ``cap`` most recent incoming edges.

Temporal graph networks bound the cost of a node's update by attending to a fixed number of its
most recent neighbours (TGN: Rossi et al., "Temporal Graph Networks for Deep Learning on Dynamic
Graphs", 2020; TGAT: Xu et al., "Inductive Representation Learning on Temporal Graphs", ICLR 2020).
Applied the same way in training, evaluation and live scoring, the cap keeps a hub's cost per new
event independent of its degree, and live scores equal a full recomputation.

"Most recent" is the smallest edge age; among edges of equal age the one later in the edge list
counts as more recent, so the rule is deterministic.
"""

from __future__ import annotations

import torch


def recent_edge_mask(
    dst: torch.Tensor,
    age: torch.Tensor,
    cap: int | None,
    group: torch.Tensor | None = None,
    num_groups: int | None = None,
) -> torch.Tensor:
    """Mark, for every receiver (and every edge group), its ``cap`` most recent incoming edges.

    Args:
        dst: receiver of each edge.
        age: age of each edge at its receiver (smaller = more recent); any real dtype.
        cap: how many incoming edges each receiver keeps (per group); ``None`` keeps them all.
        group: an optional non-negative group id per edge (e.g. its kind); the cap then applies
            to each receiver's edges of each group, so rare old edges of one kind (a device
            link) are not crowded out by many recent ones of another (purchases).
        num_groups: an upper bound on the group ids, when known; with it (or without groups)
            the mask is computed with fixed shapes and no device-to-host synchronisation, so a
            forward that calls it can be captured in a CUDA graph or exported.

    Returns:
        A bool mask over the edges; ties in age go to the edge with the larger position.

    Raises:
        ValueError: ``cap`` is below 1, or ``dst`` and ``age`` differ in length.

    Shapes:
        - dst: (E,) int; age: (E,); group: (E,) int or None -> (E,) bool.

    Example:
        >>> dst = torch.tensor([0, 0, 0, 1])
        >>> recent_edge_mask(dst, torch.tensor([5.0, 1.0, 1.0, 9.0]), cap=1).tolist()
        [False, False, True, True]
    """
    if cap is not None and cap < 1:
        raise ValueError(f"neighbour cap must be >= 1 or None, got {cap}")
    if dst.shape != age.shape or dst.dim() != 1:
        raise ValueError(
            f"dst and age must be (E,) alike, got {tuple(dst.shape)} and {tuple(age.shape)}"
        )
    e = dst.numel()
    if cap is None or e == 0:
        return torch.ones(e, dtype=torch.bool, device=dst.device)
    if group is not None:  # one ranking per (receiver, group)
        width = num_groups if num_groups is not None else int(group.max()) + 1
        dst = dst * width + group
    # Every sort below is over distinct keys, so any sort algorithm gives the same order and the
    # whole computation has fixed shapes: no device sync, exportable to ONNX and capturable.
    pos = torch.arange(e, device=dst.device)
    by_age = _dense_rank(age) * e + (e - 1 - pos)  # (E,) distinct: older last, ties: later first
    within = torch.empty_like(pos)
    within[torch.argsort(by_age)] = pos  # (E,) position in (age, later-first) order
    order = torch.argsort(_dense_rank(dst) * e + within)  # grouped by receiver, then by age
    run = _dense_rank(dst[order])  # (E,) which receiver run each sorted edge belongs to
    start = torch.full_like(pos, e).scatter_reduce(0, run, pos, "amin")  # first slot of each run
    mask = torch.zeros(e, dtype=torch.bool, device=dst.device)
    mask[order] = pos - start[run] < cap
    return mask


def _dense_rank(values: torch.Tensor) -> torch.Tensor:
    """(E,) the rank of each value among the distinct values (equal values share a rank)."""
    order = torch.argsort(values)
    ordered = values[order]
    new = torch.ones_like(ordered, dtype=torch.long)
    new[1:] = (ordered[1:] != ordered[:-1]).long()
    rank = torch.empty_like(new)
    rank[order] = torch.cumsum(new, 0) - 1
    return rank
