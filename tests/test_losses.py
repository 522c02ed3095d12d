"""Every loss and metric of training runs on tiny tensors, against values
computed by hand (docs/training.md gives the formulas)."""

from __future__ import annotations

import math

import pytest
import torch

from spikedsl.frontend.program import LOSSES
from spikedsl.runtime import losses as L

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


def test_every_known_loss_is_implemented():
    assert set(L.LOSS_FUNCTIONS) == set(LOSSES)


def test_ce_rate_uses_spike_counts():
    # T=2, B=1, N=3: counts [2, 1, 0]
    z = t([[[1, 0, 0]], [[1, 1, 0]]])
    want = math.log(1 + math.exp(-1) + math.exp(-2))  # -log softmax([2,1,0])[0]
    assert L.ce_rate(z, torch.tensor([0])).item() == pytest.approx(want, abs=1e-12)
    # a reduced readout (sum(y)) is the counts already
    assert L.ce_rate(t([[2, 1, 0]]), torch.tensor([0]), trace=False).item() == \
        pytest.approx(want, abs=1e-12)


def test_mse_rate_one_hot_on_off():
    z = t([[[1, 1, 0]], [[1, 0, 0]]])  # rates [1, .5, 0]
    assert L.mse_rate(z, torch.tensor([1])).item() == pytest.approx(1.25 / 3, abs=1e-12)
    got = L.mse_rate(z, torch.tensor([1]), on=0.8, off=0.1).item()
    assert got == pytest.approx((0.81 + 0.09 + 0.01) / 3, abs=1e-12)
    # sum(y) readout over 2 steps, mean(y) readout
    assert L.mse_rate(t([[2, 1, 0]]), torch.tensor([1]), trace=False, steps=2,
                      reduced_by="sum").item() == pytest.approx(1.25 / 3, abs=1e-12)
    assert L.mse_rate(t([[1, .5, 0]]), torch.tensor([1]), trace=False,
                      reduced_by="mean").item() == pytest.approx(1.25 / 3, abs=1e-12)


def test_mse_membrane_every_step():
    v = t([[[0.5, 0.2]], [[1.0, -0.5]]])  # T=2, B=1, N=2; target [1, 0]
    assert L.mse_membrane(v, torch.tensor([0])).item() == pytest.approx(0.54 / 4, abs=1e-12)
    # float target (a frame), broadcast over time
    got = L.mse_membrane(v, None, t([[0.5, 0.0]])).item()
    assert got == pytest.approx((0 + 0.04 + 0.25 + 0.25) / 4, abs=1e-12)


@pytest.mark.parametrize("how, logits", [
    ("max", [1.0, 0.2]), ("sum", [1.5, -0.3]), ("mean", [0.75, -0.15]), ("last", [1.0, -0.5])])
def test_ce_membrane_reductions(how, logits):
    v = t([[[0.5, 0.2]], [[1.0, -0.5]]])
    a, b = logits
    want = math.log(1 + math.exp(a - b))  # label 1
    assert L.ce_membrane(v, torch.tensor([1]), reduce=how).item() == pytest.approx(want, abs=1e-12)


def test_bce_probabilities_and_logits():
    p, y = t([[0.9, 0.2]]), t([[1.0, 0.0]])
    want = -(math.log(0.9) + math.log(0.8)) / 2
    assert L.bce(p, y).item() == pytest.approx(want, abs=1e-12)
    logit = torch.log(p / (1 - p))
    assert L.bce(logit, y, probabilities=False).item() == pytest.approx(want, abs=1e-12)
    # a trace of probabilities is averaged over time first
    tr = t([[[0.8, 0.1]], [[1.0, 0.3]]])
    assert L.bce(tr, y, trace=True).item() == pytest.approx(want, abs=1e-12)


def test_masked_membrane_formula_by_hand():
    # T=2, B=1, N=3, theta = 1
    X = t([[[1, 0, 1]], [[0, 1, 0]]])
    S = t([[[1, 1, 0]], [[0, 1, 1]]])
    V = t([[[1.2, 0.7, 0.4]], [[0.1, 1.5, 1.1]]]).requires_grad_()
    # mask = XOR(X, S) = [[0,1,1],[0,0,1]];  O = X
    # E = mask (O - V) = [[0, -0.7, 0.6], [0, 0, -1.1]];  L = 0.5 * 2.06
    loss = L.masked_membrane(V, S, X, theta=1.0)
    assert loss.item() == pytest.approx(1.03, abs=1e-12)
    loss.backward()
    E = t([[[0, -0.7, 0.6]], [[0, 0, -1.1]]])
    assert torch.allclose(V.grad, -E, atol=1e-12)  # dL/dV = -E (eq. 9 of Roy et al.)
    # theta scales the target membrane: O = 2 X
    E2 = t([[[0, -0.7, 1.6]], [[0, 0, -1.1]]])
    assert L.masked_membrane(V.detach(), S, X, theta=2.0).item() == pytest.approx(
        0.5 * float((E2 ** 2).sum()), abs=1e-12)


def test_masked_membrane_batch_mean_and_no_mask_gradient():
    X = t([[[1, 0, 1]], [[0, 1, 0]]])
    S = t([[[1, 1, 0]], [[0, 1, 1]]]).requires_grad_()
    V = t([[[1.2, 0.7, 0.4]], [[0.1, 1.5, 1.1]]])
    X2, S2, V2 = (torch.cat([a, a], 1) for a in (X, S.detach(), V))
    assert L.masked_membrane(V2, S2, X2, theta=1.0).item() == pytest.approx(1.03, abs=1e-12)
    out = L.masked_membrane(V.requires_grad_(), S, X, theta=1.0)
    out.backward()
    assert S.grad is None or torch.all(S.grad == 0)  # the mask is a constant
    with pytest.raises(ValueError, match="same size"):
        L.masked_membrane(V.detach(), S.detach(), X[:, :, :2], theta=1.0)


def test_masked_membrane_matches_elementwise_loop():
    g = torch.Generator().manual_seed(0)
    T_, B, N = 4, 3, 5
    X = (torch.rand(T_, B, N, generator=g) < 0.4).to(D)
    S = (torch.rand(T_, B, N, generator=g) < 0.4).to(D)
    V = torch.randn(T_, B, N, generator=g, dtype=D)
    total = 0.0
    for i in range(T_):
        for b in range(B):
            for n in range(N):
                m = float(bool(X[i, b, n]) != bool(S[i, b, n]))
                e = m * (0.7 * X[i, b, n].item() - V[i, b, n].item())
                total += 0.5 * e * e
    assert L.masked_membrane(V, S, X, theta=0.7).item() == pytest.approx(total / B, abs=1e-12)


def test_mse_plain_and_trace():
    assert L.mse(t([[0.5, 1.0]]), t([[0.0, 1.0]])).item() == pytest.approx(0.125, abs=1e-12)
    tr = t([[[0.0, 1.0]], [[1.0, 1.0]]])  # time mean [0.5, 1.0]
    assert L.mse(tr, t([[0.0, 1.0]]), trace=True).item() == pytest.approx(0.125, abs=1e-12)


def test_spike_mse_roy_panda_roy():
    # output spike map (summed over time) [2, 0, 1, 1], input map [1, 0, 0, 1]
    out = t([[[1, 0, 1, 0]], [[1, 0, 0, 1]]])
    inp = t([[[1, 0, 0, 0]], [[0, 0, 0, 1]]])
    # standardised: [√2, -√2, 0, 0] and [1, -1, -1, 1]  ->  MSE = 2 - √2
    assert L.spike_mse(out, inp).item() == pytest.approx(2 - math.sqrt(2), abs=1e-12)
    # invariant to scale and offset of either map; a constant map counts as zeros
    assert L.normalized_mse(t([[3, 7, 5]]), t([[0.3, 0.7, 0.5]])).item() == pytest.approx(0)
    assert L.normalized_mse(t([[1, 1, 1]]), t([[1, 2, 3]])).item() == pytest.approx(1.0)


def test_one_hot_and_reduce_time():
    assert L.one_hot(torch.tensor([2, 0]), 3, 0.9, 0.05, dtype=D).tolist() == [[0.05, 0.05, 0.9],
                                                                       [0.9, 0.05, 0.05]]
    x = t([[1, 5], [3, 2]])
    assert L.reduce_time(x, "sum").tolist() == [4, 7]
    assert L.reduce_time(x, "max").tolist() == [3, 5]
    assert L.reduce_time(x, "last").tolist() == [3, 2]
    with pytest.raises(ValueError):
        L.reduce_time(x, "median")
