"""Length-bucketed batches under a token budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from abyssal.core.errors import ConfigError
from abyssal.data.buckets import BucketBatchSampler, length_buckets, padding_efficiency


def _skewed(n: int = 600, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(4, 120, size=n)


def test_every_item_once_and_every_batch_within_budget() -> None:
    lengths = _skewed()
    batches = length_buckets(lengths, max_tokens=512, seed=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert all(len(b) * lengths[b].max() <= 512 for b in batches)


def test_an_item_over_the_budget_gets_a_batch_of_its_own_and_max_items_caps() -> None:
    batches = length_buckets([3, 50, 4, 5], max_tokens=20, seed=0)
    assert [1] in [b.tolist() for b in batches]
    capped = length_buckets([2] * 10, max_tokens=100, seed=0, max_items=3)
    assert sorted(len(b) for b in capped) == [1, 3, 3, 3]


def test_buckets_pad_less_than_fixed_size_random_batches() -> None:
    lengths = _skewed()
    bucketed = padding_efficiency(lengths, length_buckets(lengths, max_tokens=1024, seed=0))
    order = np.random.default_rng(0).permutation(len(lengths))
    fixed = padding_efficiency(lengths, np.array_split(order, len(order) // 16))
    assert bucketed > 0.9 and fixed < 0.7 and bucketed > fixed


def test_order_is_seeded_and_changes_with_the_epoch() -> None:
    lengths = _skewed(200)
    a = [b.tolist() for b in length_buckets(lengths, max_tokens=256, seed=3)]
    assert a == [b.tolist() for b in length_buckets(lengths, max_tokens=256, seed=3)]
    sampler = BucketBatchSampler(lengths, max_tokens=256, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and len(sampler) == len(list(sampler))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="must be >= 1"):
        length_buckets([3], max_tokens=0, seed=0)
    with pytest.raises(ConfigError, match=r"item 1 has length 0"):
        length_buckets([3, 0], max_tokens=10, seed=0)


def test_a_dataloader_takes_it_as_its_batch_sampler() -> None:
    lengths = [3, 9, 4, 8, 2, 7]
    data = [torch.ones(n) for n in lengths]

    def collate(items):
        return torch.nn.utils.rnn.pad_sequence(items, batch_first=True)

    loader = DataLoader(
        data, batch_sampler=BucketBatchSampler(lengths, max_tokens=16), collate_fn=collate
    )
    shapes = [tuple(batch.shape) for batch in loader]
    assert sum(s[0] for s in shapes) == 6 and all(s[0] * s[1] <= 16 for s in shapes)
