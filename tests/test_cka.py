import math

import pytest
import torch

from benchmark.measures.cka import centered_gram, linear_cka


def _data(n=40, d=12, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_of_a_matrix_with_itself_is_one():
    x = _data()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_invariant_to_orthogonal_transform():
    x = _data()
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    y = _data(seed=3)
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), abs=1e-10)


def test_cka_invariant_to_isotropic_scaling_not_to_anisotropic():
    x, y = _data(), _data(seed=5)
    assert linear_cka(7.5 * x, y) == pytest.approx(linear_cka(x, y), abs=1e-12)
    scale = torch.ones(12, dtype=torch.float64)
    scale[0] = 50.0
    assert abs(linear_cka(x * scale, x) - 1.0) > 1e-3


def test_cka_symmetric_and_in_unit_interval():
    x, y = _data(), _data(seed=9, d=30)
    v = linear_cka(x, y)
    assert v == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert 0.0 <= v <= 1.0


def test_cka_hand_checked_case():
    # n = 3, one feature each: X = [1, 2, 3], Y = [1, 0, 2].
    # Centred: x = [-1, 0, 1], y = [0, -1, 1]. For 1-d features linear CKA
    # equals the squared cosine of the centred vectors:
    # (x . y)^2 / (|x|^2 |y|^2) = 1 / (2 * 2) = 0.25.
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [0.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25, abs=1e-12)


def test_centered_gram_matches_explicit_centering_matrix():
    x = _data(n=7, d=3)
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n
    k = x.double() @ x.double().T
    assert torch.allclose(centered_gram(x), h @ k @ h, atol=1e-10)


def test_cka_rejects_different_sample_counts_and_handles_constant_features():
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(torch.zeros(3, 2), torch.zeros(4, 2))
    assert linear_cka(torch.ones(5, 3), _data(n=5)) == 0.0
    assert not math.isnan(linear_cka(torch.ones(5, 3), torch.ones(5, 3)))
