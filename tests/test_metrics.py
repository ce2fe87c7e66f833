from __future__ import annotations

import pytest
import torch

from miles_tune.metrics import check_metric, compute_metrics


def test_multiclass_accuracy_and_macro_f1() -> None:
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 1, 1, 2])  # predictions 0, 1, 2, 0
    m = compute_metrics(probs, labels, "multiclass")
    assert m["acc"] == pytest.approx(0.5)
    # per class F1: class0 tp1 fp1 fn0 -> 2/3; class1 tp1 fn1 -> 2/3; class2 fp1 fn1 -> 0
    assert m["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_multilabel_f1_variants() -> None:
    probs = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.6, 0.1], [0.1, 0.1, 0.1]])
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    # predictions: {0,1}, {1}, {}
    m = compute_metrics(probs, labels, "multilabel")
    # micro: tp 2, fp 1, fn 2 -> 4 / 7
    assert m["f1_micro"] == pytest.approx(4 / 7)
    # per class: c0 tp1 -> 1; c1 tp1 fp1 -> 2/3; c2 fn2 -> 0
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["f1_weighted"] == pytest.approx((1 * 1 + 2 / 3 * 1 + 0 * 2) / 4)
    # per sample: s0 tp1 fp1 -> 2/3; s1 tp1 fn1 -> 2/3; s2 fn1 -> 0
    assert m["f1_samples"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["acc"] == 0.0


def test_metric_names_are_checked_per_task() -> None:
    check_metric("acc", "multiclass")
    check_metric("f1_samples", "multilabel")
    with pytest.raises(ValueError, match="f1_samples"):
        check_metric("f1_samples", "multiclass")
