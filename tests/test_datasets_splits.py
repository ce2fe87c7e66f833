"""Seeded split rules: the paper's CREMA-D sizes, random_split equivalence, stratification."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miles_tune.data.splits import fraction_sizes, fraction_split, stratified_split


def test_cremad_paper_sizes_equal_random_split() -> None:
    assert fraction_sizes(7442, (0.7, 0.15, 0.15)) == [5210, 1116, 1116]
    ours = fraction_split(7442, (0.7, 0.15, 0.15), seed=5)
    ref = torch.utils.data.random_split(
        range(7442), [0.7, 0.15, 0.15], generator=torch.Generator().manual_seed(5)
    )
    assert [p.tolist() for p in ours] == [list(r.indices) for r in ref]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(3, 5000), seed=st.integers(0, 2**31 - 1))
def test_fraction_split_partitions_with_equal_val_and_test(n: int, seed: int) -> None:
    parts = fraction_split(n, (0.7, 0.15, 0.15), seed)
    assert len(parts[1]) == len(parts[2]) == int(np.floor(0.15 * n))
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(5, 60), min_size=2, max_size=8),
    frac=st.tuples(st.floats(0.1, 0.3), st.floats(0.1, 0.3)),
    seed=st.integers(0, 1000),
)
def test_stratified_split_is_exact_disjoint_and_balanced(
    counts: list[int], frac: tuple[float, float], seed: int
) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    sizes = [int(n * frac[0]), int(n * frac[1])]
    sizes = [n - sum(sizes) - 1, *sizes]  # leave one sample out
    parts = stratified_split(labels, sizes, seed)
    assert [len(p) for p in parts] == sizes
    flat = np.concatenate(parts)
    assert len(set(flat.tolist())) == len(flat)
    for part, size in zip(parts, sizes, strict=True):
        for c, count in enumerate(counts):  # each class within one sample of its share
            assert abs((labels[part] == c).sum() - count * size / n) <= 1 + 1e-9 * n
