"""Sparse projections on the torch target: index lists drawn by
spikedsl.lowering.weights, the event-driven form (only the synapses of the
nonzero inputs) against the dense product (same spikes, states and gradients
in float64), weights files, and the state memory of networks that record
nothing over time."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spikedsl
from spikedsl.lowering import weights as W
from spikedsl.runtime import reference
from spikedsl.targets.torch import build, convert

F64 = torch.float64
EVENTS, DENSE = float("inf"), 0.0  # sparse_dense_above: always events / always dense


def cuba(ne=160, ni=40, steps=400, outputs="output exc\n    output inh"):
    """specs/networks/cuba.spk at a reduced size (p = 0.1 to keep it active)."""
    with open("specs/networks/cuba.spk", encoding="utf-8") as fh:
        text = fh.read()
    text = re.sub(r"exc\[3200\]", f"exc[{ne}]", text)
    text = re.sub(r"inh\[800\]", f"inh[{ni}]", text)
    text = text.replace("p = 0.02", "p = 0.1").replace("steps = 10000", f"steps = {steps}")
    text = text.replace("output exc\n    output inh", outputs)
    return spikedsl.loads(text, file="specs/networks/cuba.spk").network("CUBA").ir


def forward(net, above, grad=False, **kw):
    m = build(net, dtype=F64, **kw)
    m.sparse_dense_above = above
    if grad:
        return m, m()
    with torch.no_grad():
        return m, m()


def test_mask_pairs_are_the_mask_drawn_in_blocks():
    p = spikedsl.loads("""
neuron N { state v = 0; input I; update v = I; spike v >= 1 }
network Net { steps = 1; input x[300000] : spikes
  layer h[30] = N <- sparse(x, p = 0.001, seed = 5); output h }""").network("Net").ir.layers[1] \
        .projections[0]
    post, pre = W.sparse_pairs(p)  # 30 rows of 300000: several blocks of rows
    want = np.nonzero(W.sparse_mask(p))
    np.testing.assert_array_equal(post, want[0])
    np.testing.assert_array_equal(pre, want[1])
    assert len(post) > 8000


def test_cuba_events_equal_dense_and_reference():
    net = cuba()
    # exc feeds exc and inh with the same delay: one event pass for both
    assert "exc_exc_y, inh_exc_y = _sparse_fan(exc_hist[0], exc_fan_w, exc_on, True)" in \
        convert(net)
    _, ev = forward(net, EVENTS)
    m, de = forward(net, DENSE)
    ref = reference.run(net, None)
    assert float(ev["exc"].sum()) > 50  # the network is active
    for k in ("exc", "inh"):
        np.testing.assert_array_equal(ev[k].numpy(), de[k].numpy())
        np.testing.assert_array_equal(ev[k].numpy(), ref[k])
    _, ev2 = forward(net, EVENTS)
    assert set(ev2) == {"exc", "inh"}


def test_cuba_states_agree_to_1e_12_and_the_step_path_too():
    net = cuba(outputs="output exc\n    output exc.v\n    output inh.ge")
    _, ev = forward(net, EVENTS)
    _, de = forward(net, DENSE, fast=False)
    np.testing.assert_array_equal(ev["exc"].numpy(), de["exc"].numpy())
    for k in ("exc.v", "inh.ge"):
        np.testing.assert_allclose(ev[k].numpy(), de[k].numpy(), rtol=0, atol=1e-12)


def test_the_choice_by_rows_times_density():
    net = cuba(steps=5)
    m = build(net, dtype=F64)
    ns = type(m)._spikedsl_namespace
    h = m.exc.exc
    density = h.weight.numel() / (160 * 160)
    above = ns["SPARSE_DENSE_ABOVE"]
    rows_dense = int(above / density) + 1
    dense = ns["_sparse_weights"](h.weight, h, rows_dense, above)
    events = ns["_sparse_weights"](h.weight, h, max(1, int(above / density) - 1), above)
    assert dense[1] is None and tuple(dense[0].shape) == (160, 160)
    assert events[1] is not None and events[0].shape[0] == 160
    np.testing.assert_array_equal(dense[0].numpy(), W.sparse_matrix(net.layers[0].projections[0]))


BATCHED = """
neuron LIF {
    param beta = 0.9
    state v = 0
    input I
    update v = beta * v + I
    spike v >= 1
    reset v = 0
}
network Net {
    steps = 30
    input x[40] : spikes
    layer h[50] = LIF <- dense(x) + sparse(h, p = 0.2, weight = 0.3, seed = 3)
    layer o[20] = LIF <- sparse(h, p = 0.3, weight = 0.4, seed = 4) + dense(x)
    output o.v
    output h
}
"""


def _grads(above, x):
    net = spikedsl.loads(BATCHED).network("Net").ir
    m = build(net, dtype=F64, seed=1)
    m.sparse_dense_above = above
    for name in ("h.h.weight", "o.h.weight"):
        m.get_buffer(name).requires_grad_(True)
    out = m(x)
    (out["o.v"].pow(2).sum() + out["h"].sum()).backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    grads.update({n: m.get_buffer(n).grad.clone() for n in ("h.h.weight", "o.h.weight")})
    return out, grads


def test_gradients_through_events_equal_the_dense_product():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand((30, 3, 40), generator=g, dtype=F64) < 0.4).to(F64)
    out_e, ge = _grads(EVENTS, x)
    out_d, gd = _grads(DENSE, x)
    np.testing.assert_array_equal(out_e["h"].detach().numpy(), out_d["h"].detach().numpy())
    assert float(out_e["h"].detach().sum()) > 20
    assert set(ge) >= {"h.x.weight", "o.x.weight", "h.h.weight", "o.h.weight"}
    for k in ge:
        assert float(gd[k].abs().max()) > 0, k
        np.testing.assert_allclose(ge[k].numpy(), gd[k].numpy(), rtol=0, atol=1e-12,
                                   err_msg=k)


def test_feed_forward_sparse_runs_all_steps_at_once():
    net = spikedsl.loads(BATCHED.replace("+ sparse(h, p = 0.2, weight = 0.3, seed = 3)", "")
                         ).network("Net").ir
    x = (torch.rand((30, 4, 40), generator=torch.Generator().manual_seed(0), dtype=F64)
         < 0.4).to(F64)
    outs = []
    for above in (EVENTS, DENSE):
        m = build(net, dtype=F64)
        m.sparse_dense_above = above
        with torch.no_grad():
            outs.append(m(x))
    src = convert(net)
    assert "# ---- step by step" not in src and "_sparse(h, o_h_w, None, True)" in src
    np.testing.assert_allclose(outs[0]["o.v"].numpy(), outs[1]["o.v"].numpy(), rtol=0,
                               atol=1e-12)
    ref = reference.run(net, x.numpy())
    np.testing.assert_allclose(outs[0]["o.v"].numpy(), ref["o.v"], rtol=0, atol=1e-12)


def test_weights_files_hold_the_out_in_matrix():
    net = cuba(ne=40, ni=10, steps=50)
    m = build(net, dtype=F64)
    p = net.layers[0].projections[0]
    mask = W.sparse_mask(p) > 0
    dense = m.export_weights()["exc.exc.weight"]
    np.testing.assert_array_equal(dense, W.sparse_matrix(p))
    new = np.where(mask, np.arange(mask.size).reshape(mask.shape) * 1e-6, 7.0)  # 7 off the mask
    m.load_weights({"exc.exc.weight": new})
    np.testing.assert_array_equal(m.export_weights()["exc.exc.weight"], np.where(mask, new, 0))
    assert tuple(m.state_dict()["exc.exc.weight"].shape) == (int(mask.sum()),)
    with pytest.raises(ValueError, match="shape"):
        m.load_weights({"exc.exc.weight": np.zeros((3, 3))})
    out = spikedsl.targets.run("torch", net, None, weights={"exc.exc.weight": new})
    ref = reference.run(net, None, weights={"exc.exc.weight": new})
    np.testing.assert_array_equal(out["exc"], ref["exc"])


def test_nothing_recorded_over_time_keeps_no_trace():
    net = cuba(outputs="output sum(exc)\n    output mean(inh.v)\n    output last(exc.ge)")
    src = convert(net)
    forward_src = src[src.index("    def forward"):]
    assert "_list" not in forward_src and "exc_hist[1:]" not in forward_src
    assert "del exc_hist[0]" in forward_src  # the delay line keeps its last step
    assert "torch.stack(exc_hist)" in forward_src
    full = cuba(outputs="output exc\n    output inh.v\n    output exc.ge")
    _, a = forward(net, EVENTS)
    m, b = forward(full, EVENTS)
    np.testing.assert_array_equal(a["sum(exc)"].numpy(), b["exc"].sum(0).numpy())
    np.testing.assert_allclose(a["mean(inh.v)"].numpy(), b["inh.v"].mean(0).numpy(),
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a["last(exc.ge)"].numpy(), b["exc.ge"][-1].numpy())
    m2 = build(net, dtype=F64)
    with torch.no_grad():
        m2()
    np.testing.assert_array_equal(m2.state["exc@past"].numpy(), m.state["exc@past"].numpy())


def test_continuation_through_the_delay_window():
    net = cuba(ne=80, ni=20, steps=200, outputs="output sum(exc)")
    with torch.no_grad():
        whole = build(net, dtype=F64)()["sum(exc)"]
        m = build(net, dtype=F64)
        m.stateful = True
        m.steps = 120
        first = m()["sum(exc)"]
        m.steps = 80
        second = m()["sum(exc)"]
    assert float(whole.sum()) > 10
    np.testing.assert_array_equal((first + second).numpy(), whole.numpy())


def test_a_torch_checkpoint_of_sparse_values_is_a_weights_file(tmp_path):
    net = cuba(ne=40, ni=10, steps=60)
    m = build(net, dtype=F64)
    with torch.no_grad():
        m.exc.exc.weight.mul_(torch.linspace(0.5, 2.0, m.exc.exc.weight.numel(), dtype=F64))
    torch.save({"model": m.state_dict()}, tmp_path / "ck.pt")
    from spikedsl.runtime import validate

    w = validate.weights(net, str(tmp_path / "ck.pt"))
    np.testing.assert_array_equal(w["exc.exc.weight"], m.export_weights()["exc.exc.weight"])
    out = spikedsl.targets.run("torch", net, None, weights=str(tmp_path / "ck.pt"))
    ref = reference.run(net, None, weights=w)
    np.testing.assert_array_equal(out["exc"], ref["exc"])


def test_brunel_at_a_reduced_size():
    """specs/networks/brunel.spk with 400 neurons (the same expected in-degree,
    p = 0.1 * 5000 / 400 capped at 0.5 as benchmarks/bench_scale.py does)."""
    with open("specs/networks/brunel.spk", encoding="utf-8") as fh:
        text = fh.read()
    text = text.replace("exc[4000]", "exc[320]").replace("inh[1000]", "inh[80]")
    text = text.replace("p = 0.1,", "p = 0.5,").replace("steps = 10000", "steps = 300")
    net = spikedsl.loads(text, file="specs/networks/brunel.spk").network("Brunel").ir
    assert [p.delay for la in net.layers for p in la.projections] == [15] * 4
    out = spikedsl.targets.run("torch", net, None)
    ref = reference.run(net, None)
    for k in ("exc", "inh"):
        np.testing.assert_array_equal(out[k], ref[k])
    rate = out["exc"].sum() / 320 / 0.03
    assert 5 < rate < 200, rate  # asynchronous firing, not silent, not saturated
