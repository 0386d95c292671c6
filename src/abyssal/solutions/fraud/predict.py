"""Score new transactions (or, for a model trained on an edge list, new edges) against the live
graph of a registered fraud model: a whole file (:func:`predict_file`, which dispatches on the
data the model was trained on) or request by request (:class:`FraudPredictor`).

Every training input has a scoring path: a transactions table (or synthetic data) scores new
transactions; an edge list (with or without timestamps, with or without node files) and
Bitcoin-OTC score new edges. The live graph is the model's training graph, node attributes
included, grown one event at a time by :class:`~abyssal.solutions.fraud.live.LiveScorer`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abyssal.core.display import table
from abyssal.core.errors import DataError
from abyssal.data.tables import write_table
from abyssal.solutions.fraud.config import FraudConfig, FraudDataConfig
from abyssal.solutions.fraud.graph import FraudGraph, graph_from_edges
from abyssal.solutions.fraud.live import LiveScorer
from abyssal.solutions.fraud.rings import Ring, find_rings
from abyssal.solutions.fraud.streams import (
    check_new_edges,
    check_not_before_history,
    history_start,
    parse_edge_request,
    read_new_edges,
    score_edge_row,
)
from abyssal.solutions.loading import LoadedModel

EDGE_SOURCES = ("edges", "bitcoin_otc")
"""Data sources whose models score new edges rather than new transactions."""


@dataclass
class PredictReport:
    """Scores of a stream of new transactions (or edges), their latency, and the rings afterwards.

    Attributes:
        noun: what was scored (``transactions`` or ``edges``), for the report.
        shown: the score columns the report's table shows, ids first.
    """

    scores: pd.DataFrame
    threshold: float
    rings: list[Ring] = field(default_factory=list)
    output: Path | None = None
    ref: str = "fraud"
    noun: str = "transactions"
    shown: tuple[str, ...] = ("transaction_id", "risk", "user_risk", "counterparty_risk")

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
        one = self.noun.rstrip("s")
        lines = [
            f"{self.ref}: scored {self.rows} new {self.noun}, {self.flagged} flagged; latency "
            f"per {one} p50 {self.latency_ms(50):.2f} ms, p99 {self.latency_ms(99):.2f} ms"
        ]
        alerted = self.alerted_accounts
        if alerted:
            shown = ", ".join(alerted[:top]) + (" ..." if len(alerted) > top else "")
            lines.append(
                f"{len(alerted)} accounts crossed the risk threshold {self.threshold:.3f}: {shown}"
            )
        head = self.scores.sort_values("risk", ascending=False).head(top)
        cols = [*self.shown, "flagged"]
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
    """The graph new events are scored against: ``history`` if given, else ``live.history``,
    else the data the model was trained on (as its config names it: edge lists with their node
    files), with the model's feature windows.

    For a model trained on an edge list, ``history`` is an edge list (the node files stay those
    of ``data.labels_path`` / ``data.features_path``); otherwise a transactions table.
    """
    from abyssal.solutions.fraud.schema import read_transactions

    d: FraudDataConfig = cfg.data
    history = history if history is not None else cfg.live.history
    if d.source == "edges":
        from abyssal.solutions.fraud.dataset import edge_list_graph

        path = d.path if history is None else str(history)
        return edge_list_graph(replace(d, path=path))[0]
    from abyssal.solutions.fraud.dataset import load_transactions, transaction_graph

    if history is not None:
        return transaction_graph(read_transactions(history), d.windows)
    if d.source in ("transactions", "synthetic"):
        return transaction_graph(load_transactions(d), d.windows)
    from abyssal.solutions.fraud.bitcoin_otc import load_bitcoin_otc

    otc = load_bitcoin_otc(d.path)
    return graph_from_edges(otc.edges, otc.labels, d.windows)


def predict_file(
    loaded: LoadedModel, source: str | Path | pd.DataFrame, *, out: str | Path | None = None
) -> PredictReport:
    """Score a file of new events with the path that fits the model's training data: new edges
    for a model trained on an edge list (or Bitcoin-OTC), new transactions otherwise.

    Example:
        >>> report = predict_file(load_model("fraud:1"), "new_edges.csv")  # doctest: +SKIP
        >>> report.noun  # doctest: +SKIP
        'edges'
    """
    if loaded.cfg.data.source in EDGE_SOURCES:
        return predict_edges(loaded, source, out=out)
    return predict_transactions(loaded, source, out=out)


def predict_edges(
    loaded: LoadedModel,
    edges: str | Path | pd.DataFrame,
    *,
    history: str | Path | None = None,
    out: str | Path | None = None,
) -> PredictReport:
    """Score each new edge as it arrives (risk = the source account's), then find rings.

    Every row is validated, and unknown accounts are checked (``live.on_unknown_account``),
    before anything is scored or written.

    Args:
        loaded: a fraud model version trained on an edge list.
        edges: new edges (file or frame): ``source, target[, timestamp][, weight]``.
        history: an edge list to build the live graph from; default the model's training data.
        out: where to write the scores (CSV or Parquet), atomically.

    Returns:
        Per-edge scores (``source``, ``target``, ``risk``, ``source_risk``, ``target_risk``,
        ``rescored``, ``latency_ms``, ``alerts``, ``flagged``), the threshold and the rings.
    """
    name = str(edges) if not isinstance(edges, pd.DataFrame) else None
    scorer = live_scorer(loaded, history)
    new = read_new_edges(edges, static=scorer.graph.static, source_name=name)
    if "timestamp" in new:
        check_not_before_history(new["timestamp"].to_numpy(), history_start(scorer), name)
    check_new_edges(scorer, new.to_dict("records"), path=name)
    if "timestamp" in new:  # scored in time order; errors above name file rows
        new = new.sort_values("timestamp", kind="stable").reset_index(drop=True)
    scores = pd.DataFrame([score_edge_row(scorer, r) for r in new.to_dict("records")])
    shown = ("source", "target", "risk", "source_risk", "target_risk")
    return _finish(loaded, scorer, scores, out, noun="edges", shown=shown)


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
    from abyssal.solutions.fraud.schema import read_transactions, sort_transactions

    if loaded.solution.name != "fraud":
        raise DataError(f"{loaded.version.ref} is a '{loaded.solution.name}' model, not fraud")
    name = str(transactions) if not isinstance(transactions, pd.DataFrame) else None
    new = read_transactions(transactions, source_name=name, sort=False)  # file rows in errors
    scorer = live_scorer(loaded, history)
    check_not_before_history(new["timestamp"].to_numpy(), history_start(scorer), name)
    scorer.check_transactions(new.to_dict("records"), path=name)
    rows = sort_transactions(new).to_dict("records")
    scores = pd.DataFrame([vars(scorer.score_transaction(r)) for r in rows])
    return _finish(loaded, scorer, scores, out)


def _finish(
    loaded: LoadedModel, scorer: LiveScorer, scores: pd.DataFrame, out: str | Path | None, **kw
) -> PredictReport:
    """Flag the scores, find rings in the grown graph, write the scores: the report."""
    cfg: FraudConfig = loaded.cfg
    scores["flagged"] = scores["risk"] >= _flag_threshold(loaded)
    threshold = scorer.alert_threshold
    min_risk = cfg.rings.min_risk if cfg.rings.min_risk is not None else threshold
    rings = find_rings(scorer.snapshot(), scorer.risks(), min_risk, cfg.rings.min_size)
    path = write_table(scores, out) if out is not None else None
    return PredictReport(scores, threshold, rings, path, loaded.version.ref, **kw)


def live_scorer(loaded: LoadedModel, history: str | Path | None = None) -> LiveScorer:
    """A :class:`LiveScorer` over the history graph, with the version's alert threshold.

    Raises:
        DataError: the history graph's features are not those the model was trained on (the
            node files or the timestamps changed since training), or the model was trained on
            a ``torch_geometric`` ``Data`` given in Python (no history to rebuild).
    """
    cfg: FraudConfig = loaded.cfg
    if loaded.spec.get("input") == "pyg":
        raise DataError(
            f"{loaded.version.ref} was trained on a torch_geometric Data given in Python: there "
            "is no history graph to rebuild or file format to score; score a grown Data with "
            "abyssal.solutions.fraud.solution.score_graph"
        )
    graph = history_graph(cfg, history)
    check_history_features(graph, loaded.spec.get("feature_names"), loaded.version.ref)
    return LiveScorer(
        loaded.model,
        graph,
        cfg.live.on_unknown_account,
        rescore_neighbourhood=cfg.live.rescore_neighbourhood,
        alert_threshold=float(loaded.version.metrics.get("threshold", 0.5)),
    )


def check_history_features(graph: FraudGraph, expected: list[str] | None, ref: str) -> None:
    """Refuse a history graph whose node features differ from the model's (by name, in order).

    Example:
        >>> check_history_features(graph, ["type_user"], "fraud:1")  # doctest: +SKIP
    """
    if expected is None or list(graph.feature_names) == list(expected):
        return
    lacking = [n for n in expected if n not in graph.feature_names]
    extra = [n for n in graph.feature_names if n not in expected]
    raise DataError(
        f"{ref} was trained on {len(expected)} node features, but its history graph now gives "
        f"{len(graph.feature_names)} (missing: {', '.join(lacking[:5]) or '-'}; new: "
        f"{', '.join(extra[:5]) or '-'}): the data files (edge timestamps, node files, "
        "data.ignore_columns, data.label_column) must be those the model was trained on"
    )


def _flag_threshold(loaded: LoadedModel) -> float:
    # the transaction head's own threshold when it was trained on labelled transactions
    metrics = loaded.version.metrics
    return float(metrics.get("txn_threshold", metrics.get("threshold", 0.5)))


class FraudPredictor:
    """Scores transactions (or edges) one request at a time against a growing live graph.

    ``parse`` validates one transaction (the columns of the transactions table, as JSON values)
    or, for a model trained on an edge list, one edge (``source``, ``target``, ``timestamp``,
    ``weight``), and checks it against the live graph; ``predict`` adds each to the graph and
    scores it.

    Example:
        >>> predictor = FraudPredictor(load_model("fraud:production"))  # doctest: +SKIP
        >>> predictor.predict([predictor.parse({"transaction_id": "T9", ...})])  # doctest: +SKIP
        [{'transaction_id': 'T9', 'risk': 0.03, ...}]
    """

    stateful = True
    """Predicting grows the live graph (a service journals what it applied)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.scorer = live_scorer(loaded)
        self.threshold = _flag_threshold(loaded)
        self.edges = loaded.cfg.data.source in EDGE_SOURCES
        self.start = history_start(self.scorer)

    def parse(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """One checked request: a transaction, or (edge-list models) an edge
        ``{"source", "target", "timestamp", "weight"}``."""
        if self.edges:
            row = parse_edge_request(payload, static=self.scorer.graph.static)
            check_new_edges(self.scorer, [row], path="request")
        else:
            row = self._parse_transaction(payload)
        if "timestamp" in row:
            check_not_before_history(np.array([row["timestamp"]]), self.start, "request")
        return row

    def _parse_transaction(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        from abyssal.solutions.fraud.schema import read_transactions

        if not isinstance(payload, Mapping):
            raise DataError(f"a transaction must be an object, got {type(payload).__name__}")
        frame = pd.DataFrame([{k: _cell(v) for k, v in payload.items()}])
        row = read_transactions(frame, source_name="request").to_dict("records")[0]
        self.scorer.check_transactions([row], path="request")
        return row

    def state_dict(self) -> dict[str, Any]:
        """The live graph and everything scoring has cached about it (not the model): what a
        service snapshots so that a restart need not replay every transaction."""
        return {"scorer": self.scorer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the state :meth:`state_dict` gave (of a predictor of the same model version)."""
        self.scorer.load_state_dict(state["scorer"])

    def predict(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            if self.edges:
                score = score_edge_row(self.scorer, item)
            else:
                score = vars(self.scorer.score_transaction(item))
            score["flagged"] = bool(score["risk"] >= self.threshold)
            out.append(score)
        return out


def _cell(value: Any) -> Any:
    """A JSON value as a table cell: text, as a CSV reader would give it (None stays missing)."""
    return None if value is None else str(value)
