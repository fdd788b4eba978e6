"""Losses against small hand-computed cases."""
import math

import pytest
import torch

from helpers import losses


def test_info_nce_hand_computed():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each row and column: -log(e^1 / (e^1 + e^0)) at temperature 1 (log-scale 0)
    expected = -math.log(math.e / (math.e + 1))
    assert losses.info_nce(scores, torch.tensor(0.0)).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_symmetric_in_directions():
    scores = torch.tensor([[0.9, 0.5], [0.1, 0.2]])
    a = losses.info_nce(scores, torch.tensor(math.log(10)))
    b = losses.info_nce(scores.t(), torch.tensor(math.log(10)))
    assert a.item() == pytest.approx(b.item())


def test_vse_triplet_hardest_negative_hand_computed():
    scores = torch.tensor([[0.8, 0.7, 0.1], [0.2, 0.5, 0.4], [0.0, 0.9, 0.6]])
    # image i -> hardest caption: row 0: 0.2+0.7-0.8=0.1; row 1: 0.2+0.4-0.5=0.1; row 2: 0.2+0.9-0.6=0.5
    # caption j -> hardest image: col 0: 0.2+0.2-0.8=0 (clamped from -0.4); col 1: 0.2+0.9-0.5=0.6; col 2: 0.2+0.4-0.6=0
    expected = (0.1 + 0.1 + 0.5 + 0.0 + 0.6 + 0.0) / 3
    assert losses.vse_triplet(scores, margin=0.2).item() == pytest.approx(expected, abs=1e-6)


def test_vse_triplet_zero_when_margin_met():
    assert losses.vse_triplet(torch.eye(4), margin=0.2).item() == 0.0
