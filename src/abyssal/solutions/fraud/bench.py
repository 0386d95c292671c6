"""The fraud solution's benchmark hooks: perturbed graphs and the attributes of test accounts.

A test account's risk comes from one forward over the whole graph, so the graph the model scores
on is the test split's input: ``drop_edges`` removes a fraction of the graph's edges (of every
kind; each edge is fed to the model in both directions, and both go), ``feature_noise`` adds
Gaussian noise to the test accounts' own node features. Labels, splits, node ids and the
transactions scored by the transaction head stay as they were.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from abyssal.data.perturb import Perturbation, check_kind, perturbed_identity
from abyssal.data.perturb_records import column_std, drop_edges, feature_noise
from abyssal.solutions.fraud.dataset import FraudData

KINDS = ("drop_edges", "feature_noise")
"""The perturbations a fraud graph takes."""

EDGE_ARRAYS = ("edge_src", "edge_dst", "edge_value", "edge_time", "edge_kind")
"""The aligned per-edge arrays of a ``FraudGraph``."""


def perturb_fraud_data(data: FraudData, perturbation: Perturbation) -> FraudData:
    """A copy of ``data`` whose scoring graph carries ``perturbation``; ``data`` is unchanged.

    - ``drop_edges``: ``round(level * E)`` of the graph's ``E`` edges removed at random (seeded);
      the nodes, their features, their latest event times (edge ages are measured from them) and
      the transactions stay.
    - ``feature_noise``: the test accounts' node features plus Gaussian noise of ``level`` times
      each feature's standard deviation over the training accounts; indicator features (node
      type, one-hot and missing flags: only 0 and 1 in the graph) are left as they are.

    Raises:
        ConfigError: another kind (the message lists :data:`KINDS`).
    """
    perturbation = check_kind(perturbation, KINDS, "solution 'fraud'")
    fingerprint, description = perturbed_identity(data.fingerprint, data.description, perturbation)
    g = data.graph
    if perturbation.kind == "drop_edges":
        arrays = {name: getattr(g, name) for name in EDGE_ARRAYS}
        graph = dataclasses.replace(g, **drop_edges(arrays, perturbation.level, perturbation.seed))
    else:
        x = np.asarray(g.x, dtype=np.float64)
        numeric = ~np.all((x == 0) | (x == 1), axis=0)  # (F,) not an indicator
        noisy = feature_noise(
            x,
            column_std(x[data.masks["train"]]),
            perturbation.level,
            perturbation.seed,
            rows=np.flatnonzero(data.masks["test"]),
            columns=numeric,
        )
        graph = dataclasses.replace(g, x=noisy.astype(g.x.dtype))
    return dataclasses.replace(
        data,
        graph=graph,
        masks={name: mask.copy() for name, mask in data.masks.items()},
        fingerprint=fingerprint,
        description=description,
    )


def account_attributes(data: FraudData) -> pd.DataFrame:
    """One row per test account, in node order (as ``FraudSolution.held_out`` lists them).

    Columns: ``id`` (the account id); ``in_degree``, ``out_degree`` and ``degree`` (the graph's
    edges of every kind into, out of and touching it); for transaction graphs
    ``n_transactions`` (made or received), ``total_amount`` (their amounts) and ``devices``
    (distinct devices used); for graphs with times ``first_seen`` and ``last_seen`` (Unix
    seconds of its first and last edge; missing for an account left with no edge) and
    ``age_days`` (from its first edge to the last edge of the graph); for edge lists with a node
    file, the node file's own columns (as typed there; ``given_<name>`` if a name is taken
    above).
    """
    g = data.graph
    test = np.flatnonzero(data.masks["test"])
    n = g.num_nodes
    out_degree = np.bincount(g.edge_src, minlength=n)
    in_degree = np.bincount(g.edge_dst, minlength=n)
    frame = pd.DataFrame(
        {
            "id": [g.node_keys[i][1] for i in test.tolist()],
            "in_degree": in_degree[test].astype(np.int64),
            "out_degree": out_degree[test].astype(np.int64),
            "degree": (in_degree + out_degree)[test].astype(np.int64),
        }
    )
    txn = g.transactions
    if txn is not None:
        made = np.bincount(txn.user, minlength=n) + np.bincount(txn.counterparty, minlength=n)
        amount = np.bincount(txn.user, weights=txn.amount, minlength=n)
        amount += np.bincount(txn.counterparty, weights=txn.amount, minlength=n)
        pairs = np.unique(np.stack([txn.user, txn.device], axis=1), axis=0)  # (P, 2)
        devices = np.bincount(pairs[:, 0], minlength=n) if len(pairs) else np.zeros(n, np.int64)
        frame["n_transactions"] = made[test].astype(np.int64)
        frame["total_amount"] = amount[test].astype(np.float64)
        frame["devices"] = devices[test].astype(np.int64)
    if not g.static and g.num_edges:
        first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        for ends in (g.edge_src, g.edge_dst):
            np.minimum.at(first, ends, g.edge_time)
            np.maximum.at(last, ends, g.edge_time)
        seen = (in_degree + out_degree)[test] > 0
        end = int(g.edge_time.max())
        frame["first_seen"] = pd.Series(first[test], dtype="Int64").mask(~seen)  # NA: no edge
        frame["last_seen"] = pd.Series(last[test], dtype="Int64").mask(~seen)
        frame["age_days"] = np.where(seen, (end - first[test]) / 86400.0, np.nan)
    if g.attributes is not None:
        for name, values in g.attributes.values.items():
            column = name if name not in frame.columns else f"given_{name}"
            frame[column] = values[test]
    return frame
