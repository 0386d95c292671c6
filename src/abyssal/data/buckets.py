"""Length-bucketed batches under a token budget: sequences of similar length share a batch, so
padding shrinks (the article's dynamic batching for text).

Each epoch the items are shuffled (seeded), cut into pools of ``pool`` items, each pool sorted by
length and cut greedily into batches whose padded size (items x longest item) stays within
``max_tokens``; then the batches are shuffled, so lengths do not arrive in order. This is the
scheme of fairseq's and torchtext's bucket iterators; :class:`BucketBatchSampler` hands it to a
``DataLoader`` as its ``batch_sampler``.

Example:
    >>> batches = length_buckets([5, 9, 6, 30, 8, 7], max_tokens=20, seed=0)
    >>> sorted(int(i) for b in batches for i in b)
    [0, 1, 2, 3, 4, 5]
    >>> all(len(b) * max([5, 9, 6, 30, 8, 7][i] for i in b) <= 20 or len(b) == 1 for b in batches)
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from abyssal.core.errors import ConfigError


def length_buckets(
    lengths: Sequence[int] | np.ndarray,
    *,
    max_tokens: int,
    seed: int,
    max_items: int | None = None,
    pool: int = 1024,
) -> list[np.ndarray]:
    """Batches of item indices whose padded size stays within ``max_tokens``.

    Args:
        lengths: each item's length in tokens (>= 1).
        max_tokens: the most padded tokens (items x the batch's longest) per batch; an item
            longer than this gets a batch of its own.
        seed: the shuffle's seed (derive it from the epoch for a new order each epoch).
        max_items: the most items per batch, whatever their length; ``None``: no limit.
        pool: items sorted together; larger pools pad less but mix lengths less across batches.

    Returns:
        The batches, in a shuffled order; every index appears exactly once.

    Raises:
        ConfigError: a budget or pool below 1, or a length below 1.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_tokens < 1 or pool < 1 or (max_items is not None and max_items < 1):
        raise ConfigError("max_tokens, pool and max_items must be >= 1")
    if len(lengths) and lengths.min() < 1:
        raise ConfigError(f"item {int(lengths.argmin())} has length {int(lengths.min())} (< 1)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(_cut(chunk, lengths, max_tokens, max_items))
    return [batches[i] for i in rng.permutation(len(batches))]


def _cut(
    chunk: np.ndarray, lengths: np.ndarray, max_tokens: int, max_items: int | None
) -> list[np.ndarray]:
    """Greedy cut of items sorted by length: add while (count + 1) x length fits."""
    out, current = [], []
    for index in chunk:
        longest = int(lengths[index])  # sorted ascending: the newest item is the longest
        full = max_items is not None and len(current) >= max_items
        if current and ((len(current) + 1) * longest > max_tokens or full):
            out.append(np.array(current, dtype=np.int64))
            current = []
        current.append(int(index))
    if current:
        out.append(np.array(current, dtype=np.int64))
    return out


def padding_efficiency(lengths: Sequence[int] | np.ndarray, batches: Sequence[np.ndarray]) -> float:
    """Real tokens over padded tokens (items x longest, summed over batches); 1 is no padding."""
    lengths = np.asarray(lengths, dtype=np.int64)
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches if len(b))
    return real / padded if padded else 1.0


class BucketBatchSampler(Sampler[list[int]]):
    """:func:`length_buckets` as a ``DataLoader`` ``batch_sampler``; call :meth:`set_epoch`
    before each epoch for a new (seeded) order.

    Example:
        >>> sampler = BucketBatchSampler([3, 5, 4], max_tokens=12, seed=0)
        >>> sorted(i for batch in sampler for i in batch)
        [0, 1, 2]
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        max_tokens: int,
        seed: int = 0,
        max_items: int | None = None,
        pool: int = 1024,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens, self.seed, self.max_items, self.pool = max_tokens, seed, max_items, pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        return length_buckets(
            self.lengths,
            max_tokens=self.max_tokens,
            seed=seed,
            max_items=self.max_items,
            pool=self.pool,
        )

    def __iter__(self) -> Iterator[list[int]]:
        return (b.tolist() for b in self._batches())

    def __len__(self) -> int:
        return len(self._batches())
