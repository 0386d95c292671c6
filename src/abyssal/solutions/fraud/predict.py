"""Score new transactions against the live graph of a registered fraud model: a whole file
(:func:`predict_transactions`) or request by request (:class:`FraudPredictor`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abyssal.core.display import table
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
    ref: str = "fraud"

    def latency_ms(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of per-transaction scoring latency."""
        return float(np.percentile(self.scores["latency_ms"], q))

    @property
    def rows(self) -> int:
        """How many transactions were scored."""
        return len(self.scores)

    @property
    def flagged(self) -> int:
        return int(self.scores["flagged"].sum())

    @property
    def alerted_accounts(self) -> list[str]:
        """Accounts whose risk crossed the threshold during the stream, in order of first alert."""
        ids = [a for cell in self.scores["alerts"] for a in cell.split(";") if a]
        return list(dict.fromkeys(ids))

    def render(self, top: int = 10) -> str:
        """Counts and latency, alerted accounts, the riskiest transactions and the rings."""
        lines = [
            f"{self.ref}: scored {self.rows} new transactions, {self.flagged} flagged; latency "
            f"per transaction p50 {self.latency_ms(50):.2f} ms, p99 {self.latency_ms(99):.2f} ms"
        ]
        alerted = self.alerted_accounts
        if alerted:
            shown = ", ".join(alerted[:top]) + (" ..." if len(alerted) > top else "")
            lines.append(
                f"{len(alerted)} accounts crossed the risk threshold {self.threshold:.3f}: {shown}"
            )
        head = self.scores.sort_values("risk", ascending=False).head(top)
        cols = ["transaction_id", "risk", "user_risk", "counterparty_risk", "flagged"]
        lines += [table(cols, head[cols].values.tolist()), "", f"{len(self.rings)} suspected rings"]
        for ring in self.rings[:top]:
            lines += _ring_lines(ring)
        if self.output is not None:
            lines.append(f"scores written to {self.output}")
        return "\n".join(lines)


def _ring_lines(ring: Ring) -> list[str]:
    when = dt.datetime.fromtimestamp(ring.last_seen, dt.UTC).strftime("%Y-%m-%d %H:%M")
    return [
        f"ring {ring.ring_id}: {ring.size} accounts, mean risk {ring.mean_risk:.2f}, "
        f"total amount {ring.total_amount:,.2f}, last seen {when} UTC",
        f"  members: {', '.join(ring.members)}",
        *(f"  - {line}" for line in ring.evidence()[:6]),
    ]


def history_graph(cfg: FraudConfig, history: str | Path | None = None) -> FraudGraph:
    """The graph new transactions are scored against: ``history`` if given, else
    ``live.history``, else the data the model was trained on (as its config names it), with the
    model's feature windows."""
    from abyssal.solutions.fraud.schema import read_transactions

    d: FraudDataConfig = cfg.data
    history = history if history is not None else cfg.live.history
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
    scorer = live_scorer(loaded, history)
    rows = new.to_dict("records")
    scorer.check_transactions(rows, path=name)
    scores = pd.DataFrame([vars(scorer.score_transaction(r)) for r in rows])
    scores["flagged"] = scores["risk"] >= _flag_threshold(loaded)
    threshold = scorer.alert_threshold
    min_risk = cfg.rings.min_risk if cfg.rings.min_risk is not None else threshold
    rings = find_rings(scorer.snapshot(), scorer.risks(), min_risk, cfg.rings.min_size)
    path = write_table(scores, out) if out is not None else None
    return PredictReport(scores, threshold, rings, path, loaded.version.ref)


def live_scorer(loaded: LoadedModel, history: str | Path | None = None) -> LiveScorer:
    """A :class:`LiveScorer` over the history graph, with the version's alert threshold."""
    cfg: FraudConfig = loaded.cfg
    return LiveScorer(
        loaded.model,
        history_graph(cfg, history),
        cfg.live.on_unknown_account,
        rescore_neighbourhood=cfg.live.rescore_neighbourhood,
        alert_threshold=float(loaded.version.metrics.get("threshold", 0.5)),
    )


def _flag_threshold(loaded: LoadedModel) -> float:
    # the transaction head's own threshold when it was trained on labelled transactions
    metrics = loaded.version.metrics
    return float(metrics.get("txn_threshold", metrics.get("threshold", 0.5)))


class FraudPredictor:
    """Scores transactions one request at a time against a growing live graph.

    ``parse`` validates one transaction (the columns of the transactions table, as JSON values)
    and checks it against the live graph; ``predict`` adds each to the graph and scores it.

    Example:
        >>> predictor = FraudPredictor(load_model("fraud:production"))  # doctest: +SKIP
        >>> predictor.predict([predictor.parse({"transaction_id": "T9", ...})])  # doctest: +SKIP
        [{'transaction_id': 'T9', 'risk': 0.03, ...}]
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.scorer = live_scorer(loaded)
        self.threshold = _flag_threshold(loaded)

    def parse(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        from abyssal.solutions.fraud.schema import read_transactions

        if not isinstance(payload, Mapping):
            raise DataError(f"a transaction must be an object, got {type(payload).__name__}")
        frame = pd.DataFrame([{k: _cell(v) for k, v in payload.items()}])
        row = read_transactions(frame, source_name="request").to_dict("records")[0]
        self.scorer.check_transactions([row], path="request")
        return row

    def predict(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            score = vars(self.scorer.score_transaction(item))
            score["flagged"] = bool(score["risk"] >= self.threshold)
            out.append(score)
        return out


def _cell(value: Any) -> Any:
    """A JSON value as a table cell: text, as a CSV reader would give it (None stays missing)."""
    return None if value is None else str(value)
