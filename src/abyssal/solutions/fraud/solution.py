"""The fraud solution: transaction-graph fraud detection with GAT plus temporal features."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from abyssal.contracts.solution import MetricLayout, Solution
from abyssal.core.errors import DataError
from abyssal.data.perturb import Perturbation
from abyssal.solutions.fraud.baselines import run_baselines
from abyssal.solutions.fraud.bench import KINDS, account_attributes, perturb_fraud_data
from abyssal.solutions.fraud.config import FraudConfig
from abyssal.solutions.fraud.dataset import (
    FraudData,
    GraphTensors,
    edge_feature_size,
    prepare_fraud_data,
    transaction_graph,
)
from abyssal.solutions.fraud.features import signed_log
from abyssal.solutions.fraud.metrics import split_metrics, split_positives
from abyssal.solutions.fraud.model import TemporalGAT
from abyssal.solutions.fraud.predict import (
    EDGE_SOURCES,
    FraudPredictor,
    PredictReport,
    predict_file,
)
from abyssal.solutions.fraud.sample import FraudSampleConfig, write_sample
from abyssal.solutions.fraud.task import ARCHITECTURE_KEYS, FraudTask, build_model
from abyssal.solutions.loading import LoadedModel


class FraudSolution(Solution):
    """Risk scores for accounts and transactions, fraud rings, and live scoring.

    Example:
        >>> sol = FraudSolution()
        >>> cfg = sol.config_cls()
        >>> data = sol.prepare(cfg)  # doctest: +SKIP
    """

    name: ClassVar[str] = "fraud"
    config_cls: ClassVar[type] = FraudConfig
    default_metric: ClassVar[str] = "val_auprc"
    sample_config_cls: ClassVar[type] = FraudSampleConfig
    metric_layout: ClassVar[MetricLayout] = MetricLayout(
        columns=(
            ("auroc", "AUROC"),
            ("auprc", "AUPRC"),
            ("macro_f1", "macro-F1"),
            ("recall_at_k", "Recall@K"),
        ),
        models=(
            ("", "model"),
            ("gbdt_own_", "gbdt_own"),
            ("gbdt_graph_", "gbdt_graph"),
            ("txn_", "txn"),
        ),
        extras=("threshold", "val_positives", "test_positives", "best_epoch", "epochs_run"),
        headline="test_auprc",
    )

    def prepare(self, cfg: FraudConfig) -> FraudData:
        return prepare_fraud_data(cfg.data)

    def task(self, cfg: FraudConfig, data: FraudData) -> FraudTask:
        return FraudTask(cfg, data, self.model_spec(cfg, data))

    def model_spec(self, cfg: FraudConfig, data: FraudData) -> dict[str, Any]:
        """The shapes and names the model is built from, the input format (which scoring path
        fits: ``transactions``, ``edges`` or ``pyg``), ``static`` (no time encoding), and the
        keys that cannot change once weights exist (architecture, feature windows)."""
        g = data.graph
        temporal = g.activity is not None and not g.static
        fixed = [k for k in ARCHITECTURE_KEYS if not (g.static and k == "time_dim")]
        return {
            "in_features": int(g.x.shape[1]),
            "edge_features": edge_feature_size(len(g.kinds)),
            "feature_names": list(g.feature_names),
            "node_types": list(g.node_types),
            "kinds": list(g.kinds),
            "input": data.input_format,
            "static": bool(g.static),
            "architecture": {k: getattr(cfg.model, k) for k in fixed},
            "windows": [int(w) for w in cfg.data.windows] if temporal else None,
        }

    def build_model(self, cfg: FraudConfig, spec: dict[str, Any]) -> TemporalGAT:
        return build_model(cfg, spec)

    def evaluate(
        self, cfg: FraudConfig, model: torch.nn.Module, data: FraudData
    ) -> dict[str, float]:
        """Metrics per split, the positives in each (a warning below 30), transactions' too."""
        check_feature_count(model, data)
        node_risk, txn_risk = score_graph(model, data)
        metrics = split_metrics(data.graph.y, node_risk, data.masks)
        where = cfg.data.path or f"{cfg.data.source} data"
        metrics.update(split_positives(data.graph.y, data.masks, where))
        tmasks = data.transaction_masks()
        if tmasks is not None and txn_risk is not None:
            label = data.graph.transactions.label
            metrics.update(split_metrics(label, txn_risk, tmasks, prefix="txn_"))
        return metrics

    def held_out(
        self, cfg: FraudConfig, model: torch.nn.Module, data: FraudData, *, split: str = "test"
    ) -> pd.DataFrame:
        """The test split's labelled accounts: ``id`` (the account id as in the data), ``label``
        (1 = the account made a fraudulent transaction, or the source's node label) and ``score``
        (the node risk :meth:`evaluate` scores, the whole graph in one forward), in node order."""
        check_feature_count(model, data)
        node_risk, _ = score_graph(model, data)
        test = np.flatnonzero(data.masks[split])
        keys = data.graph.node_keys
        return pd.DataFrame(
            {
                "id": [keys[i][1] for i in test.tolist()],
                "label": data.graph.y[test].astype(np.int64),
                "score": node_risk[test].astype(np.float64),
            }
        )

    def baselines(self, cfg: FraudConfig, data: FraudData) -> dict[str, float]:
        return run_baselines(data, seed=cfg.train.seed) if cfg.baselines else {}

    def explain(
        self,
        cfg: FraudConfig,
        model: torch.nn.Module,
        data: FraudData,
        n: int,
        *,
        out: Path | None = None,
    ) -> Any:
        """Attention over the neighbours of the ``n`` riskiest test accounts, permutation
        importance of the node features, and the suspected rings.

        An account's scores are the attention its last graph-attention layer pays to each
        neighbour (the layer's softmax weights, averaged over the heads and summed over parallel
        edges, so they add up to 1 over the neighbours it attends to; with
        ``model.neighbour_cap``, only the edges the cap keeps), drawn as a bar chart in ``out``
        (default: a new temporary folder). Its note names the own features that move its risk
        logit most, by gradient x input against the training mean (the model's standardisation
        centre). Globally, each node feature is shuffled across all nodes (3 repeats) and the
        drop of the test AUPRC kept. The extras describe the rings found as ``abyssal predict
        fraud`` finds them (accounts at or above ``rings.min_risk``, by default the
        validation threshold).
        """
        from abyssal.contracts.explain import (
            Attribution,
            Explanations,
            eager_network,
            explain_folder,
            explained_rows,
            permutation_importance,
            safe_name,
            top_scores,
            write_bar_chart,
        )
        from abyssal.nn.recent_edges import recent_edge_mask
        from abyssal.solutions.fraud.metrics import best_threshold, ranking_metrics
        from abyssal.solutions.fraud.model import edge_group_count, edge_groups
        from abyssal.solutions.fraud.rings import find_rings

        net = eager_network(model, TemporalGAT, "fraud")
        check_feature_count(net, data)
        g, folder = data.graph, explain_folder(out, self.name)
        device = next(net.parameters()).device
        x, edge_index, edge_attr, edge_dt = (t.to(device) for t in graph_inputs(data)[:4])
        graph = (edge_index, edge_attr, edge_dt)

        def name(node: int) -> str:
            kind, key = g.node_keys[node]
            return f"{kind} {key}"

        def risks(features: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return torch.sigmoid(net(features, *graph)[0]).float().cpu().numpy()  # (N,)

        items: list[Attribution] = []
        extras: list[str] = []
        was_training = net.training
        net.eval()
        try:
            risk = risks(x)
            with torch.no_grad():
                keep = torch.ones(edge_index.shape[1], dtype=torch.bool, device=device)
                if net.neighbour_cap is not None:
                    groups, count = edge_groups(edge_attr), edge_group_count(edge_attr)
                    keep = recent_edge_mask(
                        edge_index[1], edge_dt, net.neighbour_cap, groups, num_groups=count
                    )
                h = net.embed(x, *graph)[-2]  # the last attention layer's input
                _, (pairs, alpha) = net.convs[-1](
                    (h, h),
                    edge_index[:, keep],
                    net.edge_inputs(edge_attr[keep], edge_dt[keep]),
                    return_attention_weights=True,
                )
            senders, receivers = pairs.cpu().numpy()
            weights = alpha.float().mean(dim=1).cpu().numpy()  # (E kept,) mean over heads
            test = np.flatnonzero(data.masks["test"])
            for a in explained_rows(test[np.argsort(-risk[test], kind="stable")], n).tolist():
                scores: dict[str, float] = {}
                incoming = receivers == a
                pairs_in = zip(senders[incoming].tolist(), weights[incoming].tolist(), strict=True)
                for s, w in pairs_in:
                    scores[name(s)] = scores.get(name(s), 0.0) + w
                with torch.enable_grad():
                    xg = x.detach().clone().requires_grad_(True)
                    (grad,) = torch.autograd.grad(net(xg, *graph)[0][a], xg)
                own = (grad[a] * (x[a] - net.feature_mean)).cpu().numpy()  # (F,)
                top = top_scores(dict(zip(g.feature_names, own.tolist(), strict=True)), 3)
                note = "own features (gradient x input): " + ", ".join(
                    f"{f} {v:+.3g}" for f, v in top.items()
                )
                item, label = name(a), int(g.y[a])
                image = write_bar_chart(
                    scores,
                    folder / f"{safe_name(item)}.png",
                    title=f"{item}: risk {risk[a]:.3f} (label {label})",
                    xlabel="attention of the last layer (mean over heads)",
                )
                items.append(
                    Attribution(item, float(risk[a]), label, top_scores(scores), image, note)
                )

            mask, x_np = data.masks["test"], x.cpu().numpy()

            def score(features: np.ndarray) -> float:
                shuffled = risks(torch.from_numpy(features).to(device))
                return ranking_metrics(g.y[mask], shuffled[mask])["auprc"]

            try:
                importance = permutation_importance(
                    score, list(g.feature_names), x_np, "test_auprc", seed=cfg.train.seed
                )
            except ValueError as e:
                importance = {}
                extras.append(f"no permutation importance: {e}")
        finally:
            net.train(was_training)
        val = data.masks["val"]
        threshold = cfg.rings.min_risk
        if threshold is None:
            threshold = best_threshold(g.y[val], risk[val])
        rings = find_rings(g, risk, threshold, cfg.rings.min_size)
        extras.append(f"{len(rings)} suspected rings among accounts with risk >= {threshold:.3f}")
        for ring in rings[:10]:
            members = ", ".join(ring.members[:20]) + (", ..." if ring.size > 20 else "")
            extras.append(
                f"ring {ring.ring_id}: {ring.size} accounts, mean risk {ring.mean_risk:.2f}, "
                f"total amount {ring.total_amount:,.2f}; members: {members}"
            )
            extras += [f"  - {line}" for line in ring.evidence()[:6]]
        method = "graph attention weights of the last layer over each account's neighbours"
        return Explanations(method, items, importance, "test_auprc", extras, folder)

    # -- the benchmark half ---------------------------------------------------------------------

    perturbations: ClassVar[tuple[str, ...]] = KINDS

    def perturb(self, cfg: FraudConfig, data: FraudData, perturbation: Perturbation) -> FraudData:
        """A copy of ``data`` whose scoring graph loses a fraction of its edges (``drop_edges``)
        or whose test accounts' features carry noise (``feature_noise``); see
        :func:`~abyssal.solutions.fraud.bench.perturb_fraud_data`. The graph is shared by every
        split, so :meth:`evaluate` on the copy sees the dropped edges on validation too;
        :meth:`held_out` scores the same test accounts."""
        return perturb_fraud_data(data, perturbation)

    def item_attributes(self, cfg: FraudConfig, data: FraudData) -> pd.DataFrame:
        """The test accounts of :meth:`held_out`, in its order, with their degrees, transactions,
        amounts, devices and first/last-seen times (see
        :func:`~abyssal.solutions.fraud.bench.account_attributes`)."""
        return account_attributes(data)

    def decision_score(self, loaded: Any) -> Any:
        """A response's ``risk`` (the probability the transaction or edge is fraudulent)."""
        return lambda response: float(response["risk"])

    def decision_frame(
        self, cfg: FraudConfig, model: torch.nn.Module, data: FraudData, *, split: str = "test"
    ) -> pd.DataFrame:
        """On transactions data, the transactions of the split's accounts: ``id`` (the
        transaction id), ``label`` (1 = fraudulent) and ``score`` (the transaction risk the
        service answers with, the whole graph in one forward); on an edge list, the accounts
        of :meth:`held_out` (the service's edge risk is its source account's)."""
        masks = data.transaction_masks()
        if masks is None:
            return self.held_out(cfg, model, data, split=split)
        check_feature_count(model, data)
        _, txn_risk = score_graph(model, data)
        txn = data.graph.transactions
        rows = np.flatnonzero(masks[split])
        return pd.DataFrame(
            {
                "id": txn.ids[rows].astype(str),
                "label": txn.label[rows].astype(np.int64),
                "score": np.asarray(txn_risk, dtype=np.float64)[rows],
            }
        )

    def score_table(self, loaded: Any, table: pd.DataFrame) -> np.ndarray:
        """Transaction risk of every row of a transactions table: the graph of the whole table
        (every row is history for the others) scored in one forward, the rows' own labels
        unused. For a model trained on transactions (not an edge list)."""
        from abyssal.solutions.fraud.schema import read_transactions

        if loaded.cfg.data.source in EDGE_SOURCES:
            raise DataError(
                f"{loaded.version.ref} was trained on an edge list; score_table scores "
                "transactions tables"
            )
        df = read_transactions(table, sort=False).reset_index(drop=True)
        ordered = df.sort_values(["timestamp", "transaction_id"], kind="stable")
        graph = transaction_graph(ordered.reset_index(drop=True), loaded.cfg.data.windows)
        data = FraudData(graph, {}, "", "score_table")
        check_feature_count(loaded.model, data)
        _, txn_risk = score_graph(loaded.model, data)
        out = np.empty(len(df), dtype=np.float64)
        out[ordered.index.to_numpy()] = np.asarray(txn_risk, dtype=np.float64)
        return out

    def example_inputs(self, cfg: FraudConfig, spec: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """A 6-account ring with 8 directed edges: ``(x, edge_index, edge_attr, edge_dt)``, and
        for a transaction graph two transactions: ``txn_nodes`` (2, 3) and ``txn_amount`` (2,)."""
        gen = torch.Generator().manual_seed(0)
        n, e = 6, 8
        src = torch.tensor([0, 1, 2, 3, 4, 5, 0, 3])
        dst = torch.tensor([1, 2, 3, 4, 5, 0, 3, 0])
        x = torch.rand(n, spec["in_features"], generator=gen)  # (N, F)
        edge_attr = torch.rand(e, spec["edge_features"], generator=gen)  # (E, A)
        edge_dt = torch.rand(e, generator=gen) * 86400.0  # (E,) seconds
        graph = (x, torch.stack([src, dst]), edge_attr, edge_dt)
        if spec.get("input") != "transactions":
            return graph
        return (*graph, torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.rand(2, generator=gen))

    def input_axes(self, cfg: FraudConfig, spec: dict[str, Any]) -> tuple[dict[int, str], ...]:
        """Nodes, edges (and transactions) vary between graphs; a forward scores a whole graph,
        so there is no batch axis."""
        graph = ({0: "nodes"}, {1: "edges"}, {0: "edges"}, {0: "edges"})
        if spec.get("input") != "transactions":
            return graph
        return (*graph, {0: "transactions"}, {0: "transactions"})

    def model_inputs(
        self, cfg: FraudConfig, data: FraudData, batch: int, seed: int
    ) -> tuple[torch.Tensor, ...]:
        """The whole graph as :func:`score_graph` feeds it (with its transactions, for a
        transaction graph); ``batch`` does not apply (one forward scores every account).
        Different seeds scale the node features by a factor within 1 ± 1e-3, so repeated calls
        see fresh values."""
        inputs = graph_inputs(data)
        gen = torch.Generator().manual_seed(seed)
        x = inputs[0]
        jitter = 1.0 + 1e-3 * (2 * torch.rand(x.shape, generator=gen) - 1)  # (N, F)
        return (x * jitter if seed else x, *inputs[1:])

    def predictor(self, loaded: LoadedModel) -> FraudPredictor:
        return FraudPredictor(loaded)

    def predict_file(
        self,
        loaded: LoadedModel,
        path: str | Path,
        *,
        out: str | Path | None = None,
        explain: str | Path | None = None,
    ) -> PredictReport:
        if explain is not None:
            raise self._lacks("predict_file(explain=...)", "explanations of predictions")
        return predict_file(loaded, path, out=out)

    def generate_sample(self, options: FraudSampleConfig, out: Path) -> list[str]:
        return write_sample(options, out)


def check_feature_count(model: torch.nn.Module, data: FraudData) -> None:
    """Refuse data whose node features do not fit the model's input layer.

    Raises:
        DataError: names both counts and the settings that decide the features.
    """
    encoder = getattr(model, "encoder", None)
    expected = getattr(encoder, "in_features", None)
    given = int(data.graph.x.shape[1])
    if expected is None or expected == given:
        return
    raise DataError(
        f"{data.description.split(';')[0]}: the data gives {given} node features, the model "
        f"was trained on {expected}; the features depend on the data's timestamps (static or "
        "not), its node files and data.ignore_columns, data.label_column and "
        "data.max_onehot_values, which must be as they were in training"
    )


def graph_inputs(data: FraudData) -> tuple[torch.Tensor, ...]:
    """The model's inputs for the whole graph: ``(x, edge_index, edge_attr, edge_dt)`` and, for a
    transaction graph, every transaction's ``txn_nodes`` (T, 3) and signed-log ``txn_amount``."""
    g = GraphTensors.from_graph(data.graph)
    graph = (g.x, g.edge_index, g.edge_attr, g.edge_dt())
    txn = data.graph.transactions
    if txn is None:
        return graph
    amount = torch.tensor([signed_log(a) for a in txn.amount.tolist()], dtype=torch.float32)
    nodes = torch.from_numpy(np.stack([txn.user, txn.counterparty, txn.device], axis=1))
    return (*graph, nodes, amount)


@torch.no_grad()
def score_graph(model: torch.nn.Module, data: FraudData) -> tuple[np.ndarray, np.ndarray | None]:
    """Account risk (N,) and, for transaction graphs, transaction risk (T,), in [0, 1].

    The model may be on any device; the graph goes to the model's device.
    """
    model.eval()
    device = next(model.parameters()).device
    inputs = tuple(t.to(device) for t in graph_inputs(data))
    node, txn_logits = model(*inputs)
    node_risk = torch.sigmoid(node).float().cpu().numpy()
    if txn_logits is None:
        return node_risk, None
    return node_risk, torch.sigmoid(txn_logits).float().cpu().numpy()
