"""Training on the real Bitcoin-OTC data (marker `data`: needs ../shared/datasets/bitcoin_otc)."""

from __future__ import annotations

import pytest

from abyssal.core.store import ModelStore
from abyssal.train.api import train
from tests.conftest import dataset

pytestmark = pytest.mark.data


def test_bitcoin_otc_split_trains_and_beats_chance() -> None:
    root = dataset("bitcoin_otc")
    out = train(
        "fraud",
        "configs/fraud/bitcoin_otc.yaml",
        [f"data.path={root}", "train.epochs=40", "train.progress=false"],
    )
    m = out.metrics
    # 180 frauds among 5,881 accounts: chance AUPRC is about 0.03
    assert m["test_auprc"] > 0.3 and m["gbdt_graph_test_auprc"] > 0.3
    assert m["test_auroc"] > 0.8
    mv = ModelStore().resolve("fraud:latest")
    assert mv.lineage["data_fingerprint"].endswith("/split0")
