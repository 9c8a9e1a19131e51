import numpy as np
import pytest

from bpmf import metrics


def test_rmse_mae_against_hand_values():
    y, yhat = [1.0, 2.0, 4.0], [2.0, 2.0, 2.0]
    assert metrics.rmse(y, yhat) == pytest.approx(np.sqrt(5 / 3))
    assert metrics.mae(y, yhat) == pytest.approx(1.0)


def test_coverage_counts_closed_intervals():
    assert metrics.coverage([1, 2, 3, 4], [1, 0, 3.5, 5], [1, 1, 4, 6]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="lower bound"):
        metrics.coverage([1], [2], [1])


def test_input_validation():
    with pytest.raises(ValueError, match="Shapes differ"):
        metrics.rmse([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        metrics.mae([], [])
    with pytest.raises(ValueError, match="finite"):
        metrics.rmse([np.nan], [1.0])


def test_precision_at_k():
    users = ["a", "a", "a", "b", "b"]
    truth = [5, 1, 4, 2, 5]
    score = [0.9, 0.8, 0.1, 0.7, 0.2]
    # a: top-2 by score = items rated 5, 1 -> 1/2 relevant; b: 2, 5 -> 1/2
    assert metrics.precision_at_k(users, truth, score, k=2, threshold=4) == pytest.approx(0.5)
    assert metrics.precision_at_k(users, truth, score, k=1, threshold=4) == pytest.approx(0.5)


def test_ndcg_at_k_perfect_and_reversed():
    users = [1, 1, 1]
    truth = [3.0, 2.0, 1.0]
    assert metrics.ndcg_at_k(users, truth, [3, 2, 1], k=3) == pytest.approx(1.0)
    dcg = 1 / np.log2(2) + 2 / np.log2(3) + 3 / np.log2(4)
    ideal = 3 / np.log2(2) + 2 / np.log2(3) + 1 / np.log2(4)
    assert metrics.ndcg_at_k(users, truth, [1, 2, 3], k=3) == pytest.approx(dcg / ideal)
    with pytest.raises(ValueError, match="positive integer"):
        metrics.ndcg_at_k(users, truth, [1, 2, 3], k=0)
