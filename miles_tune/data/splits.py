"""Seeded split rules shared by the datasets.

Every rule is a pure function of its arguments and a seed (a fresh ``torch.Generator``
or ``numpy`` generator per call), so the same settings give the same split on every
machine; the file datasets also save the resulting sample ids beside their cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def fraction_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Split sizes for ``n`` samples: every split after the first gets ``floor(f * n)``, the first
    the rest (MILES's CREMA-D: 7,442 × (0.7, 0.15, 0.15) -> 5,210 / 1,116 / 1,116, val = test)."""
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    rest = [math.floor(n * f) for f in fractions[1:]]
    return [n - sum(rest), *rest]


def fraction_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Random split of ``range(n)`` by :func:`fraction_sizes`, cutting ``torch.randperm(n)`` seeded
    with ``seed``. Whenever the sizes agree with ``torch.utils.data.random_split``'s (they do for
    7,442 × (0.7, 0.15, 0.15)), the split equals ``random_split(range(n), fractions,
    generator=torch.Generator().manual_seed(seed))``."""
    sizes = fraction_sizes(n, fractions)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    out, start = [], 0
    for size in sizes:
        out.append(perm[start : start + size])
        start += size
    return out


def stratified_split(labels: np.ndarray, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Split indices so every class is spread over the splits in proportion to ``sizes``.

    Per class, the rows are shuffled and cut by the same fractions (largest-remainder
    rounding per split so the totals are exact); each split is then shuffled.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if sum(sizes) > n:
        raise ValueError(f"split sizes {tuple(sizes)} need {sum(sizes)} samples, only {n} available")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    fractions = np.asarray(sizes, dtype=np.float64) / n
    counts = np.array([(labels == c).sum() for c in classes])
    ideal = counts[:, None] * fractions[None, :]  # (classes, splits)
    take = np.floor(ideal).astype(int)
    # Top up to the exact sizes with at most one extra sample per (class, split) cell, so every
    # class stays within one sample of its share in every split: a small bipartite flow from
    # classes (rows left) to splits (samples short), cells taken by largest remainder first.
    take += _top_up(ideal - take, counts - take.sum(1), np.asarray(sizes) - take.sum(0), sizes, counts)
    out: list[list[int]] = [[] for _ in sizes]
    for ci, c in enumerate(classes):
        rows = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for j in range(len(sizes)):
            out[j].extend(rows[start : start + take[ci, j]].tolist())
            start += take[ci, j]
    return [rng.permutation(np.asarray(o, dtype=np.int64)) for o in out]


def _top_up(remainder: np.ndarray, spare: np.ndarray, short: np.ndarray, sizes, counts) -> np.ndarray:
    """0/1 matrix (classes × splits) with row sums ≤ ``spare`` and column sums = ``short``."""
    n_classes, n_splits = remainder.shape
    extra = np.zeros((n_classes, n_splits), dtype=int)
    spare, short = spare.copy(), short.copy()
    for c, j in sorted(np.ndindex(n_classes, n_splits), key=lambda cj: -remainder[cj]):  # greedy first
        if short[j] > 0 and spare[c] > 0:
            extra[c, j], short[j], spare[c] = 1, short[j] - 1, spare[c] - 1
    while short.sum() > 0:  # then augmenting paths: split j takes a cell whose class frees another
        path = _augmenting_path(extra, spare, short)
        if path is None:
            raise ValueError(f"cannot split classes of sizes {list(counts)} into {tuple(sizes)}")
        for c, j, add in path:
            extra[c, j] += 1 if add else -1
        spare[path[0][0]] -= 1
        short[path[-1][1]] -= 1
    return extra


def _augmenting_path(extra: np.ndarray, spare: np.ndarray, short: np.ndarray):
    """BFS from classes with rows left to a short split, alternating unused and used cells."""
    from collections import deque

    n_classes, n_splits = extra.shape
    parent: dict[tuple[str, int], tuple[tuple[str, int], int, int, bool] | None] = {}
    queue = deque()
    for c in np.flatnonzero(spare > 0):
        parent[("c", int(c))] = None
        queue.append(("c", int(c)))
    while queue:
        kind, i = queue.popleft()
        if kind == "c":
            for j in range(n_splits):
                if extra[i, j] == 0 and ("s", j) not in parent:
                    parent[("s", j)] = (("c", i), i, j, True)
                    if short[j] > 0:
                        path, node = [], ("s", j)
                        while parent[node] is not None:
                            prev, c, jj, add = parent[node]
                            path.append((c, jj, add))
                            node = prev
                        return path[::-1]
                    queue.append(("s", j))
        else:
            for c in range(n_classes):
                if extra[c, i] == 1 and ("c", c) not in parent:
                    parent[("c", c)] = (("s", i), c, i, False)
                    queue.append(("c", c))
    return None
