"""Score new transactions (or edges) against the live graph of a registered fraud model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from abyssal.core.errors import DataError
from abyssal.data.tables import write_table
from abyssal.solutions.fraud.config import FraudConfig, FraudDataConfig
from abyssal.solutions.fraud.graph import FraudGraph, graph_from_edges, graph_from_transactions
from abyssal.solutions.fraud.live import LiveScorer
from abyssal.solutions.fraud.rings import Ring, find_rings
from abyssal.solutions.loading import LoadedModel


@dataclass
class PredictReport:
    """Scores of a stream of new transactions, their latency, and the rings afterwards."""

    scores: pd.DataFrame
    threshold: float
    rings: list[Ring] = field(default_factory=list)
    output: Path | None = None

    def latency_ms(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of per-transaction scoring latency."""
        return float(np.percentile(self.scores["latency_ms"], q))

    @property
    def flagged(self) -> int:
        return int(self.scores["flagged"].sum())

    @property
    def alerted_accounts(self) -> list[str]:
        """Accounts whose risk crossed the threshold during the stream, in order of first alert."""
        ids = [a for cell in self.scores["alerts"] for a in cell.split(";") if a]
        return list(dict.fromkeys(ids))


def history_graph(cfg: FraudConfig, history: str | Path | None = None) -> FraudGraph:
    """The graph new transactions are scored against: ``history`` if given, else the data the
    model was trained on (as its config names it), with the model's feature windows."""
    from abyssal.solutions.fraud.schema import read_transactions

    d: FraudDataConfig = cfg.data
    if history is not None:
        return graph_from_transactions(read_transactions(history), d.windows)
    if d.source in ("transactions", "synthetic"):
        from abyssal.solutions.fraud.dataset import load_transactions

        return graph_from_transactions(load_transactions(d), d.windows)
    if d.source == "bitcoin_otc":
        from abyssal.solutions.fraud.bitcoin_otc import load_bitcoin_otc

        otc = load_bitcoin_otc(d.path)
        return graph_from_edges(otc.edges, otc.labels, d.windows)
    from abyssal.solutions.fraud.schema import read_edge_list

    el = read_edge_list(d.path, d.labels_path)
    return graph_from_edges(el.edges, el.labels, d.windows)


def predict_transactions(
    loaded: LoadedModel,
    transactions: str | Path | pd.DataFrame,
    *,
    history: str | Path | None = None,
    out: str | Path | None = None,
) -> PredictReport:
    """Score each new transaction as it arrives, then find rings in the grown graph.

    Every row is validated, and unknown accounts are checked (``live.on_unknown_account``),
    before anything is scored or written.

    Args:
        loaded: a fraud model version from :func:`abyssal.solutions.loading.load_model`.
        transactions: new transactions (file or frame) in the transactions format.
        history: transactions to build the live graph from; default the model's training data.
        out: where to write the scores (CSV or Parquet), atomically.

    Returns:
        Per-transaction scores with latency, the decision threshold and the rings.
    """
    from abyssal.solutions.fraud.schema import read_transactions

    if loaded.solution.name != "fraud":
        raise DataError(f"{loaded.version.ref} is a '{loaded.solution.name}' model, not fraud")
    name = str(transactions) if not isinstance(transactions, pd.DataFrame) else None
    new = read_transactions(transactions, source_name=name)
    cfg: FraudConfig = loaded.cfg
    metrics = loaded.version.metrics
    threshold = float(metrics.get("threshold", 0.5))
    scorer = LiveScorer(
        loaded.model,
        history_graph(cfg, history),
        cfg.live.on_unknown_account,
        rescore_neighbourhood=cfg.live.rescore_neighbourhood,
        alert_threshold=threshold,
    )
    rows = new.to_dict("records")
    scorer.check_transactions(rows, path=name)
    scores = pd.DataFrame([vars(scorer.score_transaction(r)) for r in rows])
    # the transaction head's own threshold when it was trained on labelled transactions
    scores["flagged"] = scores["risk"] >= float(metrics.get("txn_threshold", threshold))
    min_risk = cfg.rings.min_risk if cfg.rings.min_risk is not None else threshold
    snapshot = scorer.snapshot()
    rings = find_rings(snapshot, scorer.risks(), min_risk, cfg.rings.min_size)
    path = write_table(scores, out) if out is not None else None
    return PredictReport(scores, threshold, rings, path)
