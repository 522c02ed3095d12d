"""One initialisation for every target: for the same seed, the reference, the
torch module (run standalone, from its generated source), the Norse module and
the generated Brian2 script start from the same weights, for every projection
kind and initialiser, with and without bias (docs/semantics.md, "Initialisation")."""

from __future__ import annotations

import math

import numpy as np
import pytest

import spikedsl
from spikedsl.lowering import weights
from spikedsl.runtime import reference

torch = pytest.importorskip("torch")

SCHEMES = ["default", "xavier", "kaiming", "zeros", "normal(0.3)", "uniform(-0.2, 0.5)"]


def spec(init: str, bias: str) -> str:
    return f"""
neuron LIF {{
    param tau = 10 ms
    param g   = 1.0    [per_neuron(uniform(0.5, 1.5)), trainable]
    state v = 0.0
    input I
    dv/dt = (-v + g * I) / tau   method exact
    spike v >= 1.0
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}}
network Net {{
    dt = 1 ms
    steps = 3
    input x[2, 6, 6] : spikes
    layer c[3, 4, 4] = LIF <- conv2d(x, channels = 3, kernel = 3, init = {init}, bias = {bias})
    layer f = flatten(c)
    layer h[5] = LIF <- dense(f, init = {init}, bias = {bias})
                      + dense(x, init = {init}, bias = {bias}, sign = inhibitory)
                      + sparse(f, p = 0.3, weight = 0.7, seed = 11)
    layer o[5] = LIF <- one_to_one(h, weight = 0.25) + dense(h, init = {init}, bias = {bias})
    output o
}}
"""


def network(init: str, bias: str):
    return spikedsl.loads(spec(init, bias)).network("Net").ir


def torch_standalone(net, seed: int) -> dict[str, np.ndarray]:
    """The generated torch module, executed from its source alone."""
    from spikedsl.targets import torch as torch_target

    src = torch_target.convert(net)
    assert "spikedsl" not in "".join(ln for ln in src.splitlines()
                                     if ln.startswith(("import ", "from ")))
    ns: dict = {"__name__": "standalone_net"}
    exec(compile(src, "<standalone>", "exec"), ns)
    m = ns["Net"](seed=seed, dtype=torch.float64)
    return m.export_weights()


def norse_weights(net, seed: int) -> dict[str, np.ndarray]:
    pytest.importorskip("norse")
    from spikedsl.targets import norse as norse_target

    return norse_target.build(net, dtype=torch.float64, seed=seed).export_weights()


def brian2_script(net):
    pytest.importorskip("brian2")
    from spikedsl.targets import brian2 as b2t

    return b2t.module(net)


def assert_same(want: dict[str, np.ndarray], got: dict[str, np.ndarray], who: str) -> None:
    missing = set(want) - set(got)
    assert not missing, f"{who} lacks {sorted(missing)}"
    for k, v in want.items():
        g = np.asarray(got[k], dtype=np.float64)
        assert g.shape == v.shape, (who, k)
        assert np.array_equal(g, v), f"{who}: '{k}' differs (max |d| = {np.abs(g - v).max()})"


@pytest.mark.parametrize("bias", ["true", "false"])
@pytest.mark.parametrize("init", SCHEMES)
def test_every_target_starts_from_the_same_weights(init, bias):
    net = network(init, bias)
    seed = 5
    want = reference.init_weights(net, seed)
    od = net.layer("o").projections[1].param_name  # dense(h) next to one_to_one(h)
    trained = ["c", "h.f", "h.x", od]
    names = {f"{p}.weight" for p in trained} | {"c.g", "h.g", "o.g"}
    if bias == "true":
        names |= {f"{p}.bias" for p in trained}
    assert set(want) == names
    # the schemes as documented
    fan_in = {"c.weight": 2 * 9, "h.f.weight": 48, "h.x.weight": 72, f"{od}.weight": 5}
    fan_out = {"c.weight": 3 * 9, "h.f.weight": 5, "h.x.weight": 5, f"{od}.weight": 5}
    for k in fan_in:
        w = want[k]
        bound = {"default": 1 / math.sqrt(fan_in[k]), "kaiming": math.sqrt(6 / fan_in[k]),
                 "xavier": math.sqrt(6 / (fan_in[k] + fan_out[k]))}.get(init)
        if bound is not None:
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.5 * bound
        elif init == "zeros":
            assert not w.any()
        elif init.startswith("uniform") and k != "h.x.weight":
            assert w.min() >= -0.2 and w.max() <= 0.5 and w.min() < 0 < w.max()
        if k == "h.x.weight":  # sign = inhibitory: the weight holds the magnitude
            assert (w >= 0).all()
        bkey = k.replace(".weight", ".bias")
        if bias == "true":
            b = want[bkey]
            if init == "default":
                assert 0 < np.abs(b).max() <= 1 / math.sqrt(fan_in[k])
            else:  # every other scheme starts its biases at 0
                assert not b.any()
    assert want["h.g"].min() >= 0.5 and want["h.g"].max() <= 1.5 and want["h.g"].std() > 0
    # a new seed draws new numbers (zeros stay zeros)
    other = reference.init_weights(net, seed + 1)
    assert not np.array_equal(other["h.g"], want["h.g"])

    standalone, nor = torch_standalone(net, seed), norse_weights(net, seed)
    assert_same(want, standalone, "torch (standalone module)")
    assert_same(want, nor, "norse")
    ns = brian2_script(net)
    assert_same(want, ns["init_weights"](ns["ARRAYS"], seed), "brian2 script")

    # the fixed weights: the sparse mask and one_to_one
    sp, o2o = net.layer("h").projections[2], net.layer("o").projections[0]
    mask = weights.sparse_matrix(sp)
    assert mask.shape == (5, 48) and set(np.unique(mask)) == {0.0, 0.7}
    assert np.array_equal(reference.sparse_mask(sp) * 0.7, mask)
    for who, got in (("torch", standalone), ("norse", nor)):
        assert np.array_equal(got[f"{sp.param_name}.weight"], mask), who
        assert float(got[f"{o2o.param_name}.weight"]) == 0.25, who
    assert np.array_equal(ns["sparse_mask"](5, 48, sp.p, sp.seed) * 0.7, mask)


def test_the_embedded_block_gives_the_same_numbers_without_numpy():
    """Generated code without numpy draws with the pure-Python PCG64: the same numbers."""
    ns: dict = {"math": math}
    exec(weights.generated_source(), ns)
    with_numpy = {d: ns["init_values"]("h.weight", 257, d, a, m, 3)
                  for d, a, m in (("uniform", (-0.3, 0.7), False), ("normal", (0.1, 2.0), True),
                                  ("constant", (-1.5,), True))}
    mask = ns["mask_values"](9, 0.25, 300)
    ns["random_floats"] = ns["pcg64_random"]  # as when `import numpy` fails
    for (d, a, m), v in zip((("uniform", (-0.3, 0.7), False), ("normal", (0.1, 2.0), True),
                             ("constant", (-1.5,), True)), with_numpy.values()):
        pure = ns["init_values"]("h.weight", 257, d, a, m, 3)
        assert isinstance(pure, list)
        assert np.array_equal(np.asarray(pure), np.asarray(v)), d
    assert np.array_equal(np.asarray(ns["mask_values"](9, 0.25, 300)), np.asarray(mask))
    for entropy in (0, 7, 2**40 + 3, [5, *b"h.weight"], [2**33, 1]):
        assert np.array_equal(np.asarray(ns["pcg64_random"](entropy, 64)),
                              np.random.default_rng(entropy).random(64))


def test_lowering_resolves_fan_and_init_and_the_step_timing():
    net = network("xavier", "true")
    conv = net.layer("c").projections[0]
    assert (conv.fan_in, conv.fan_out) == (18, 27)
    b = math.sqrt(6 / (18 + 27))
    assert conv.weight_init.dist == "uniform" and conv.weight_init.args == (-b, b)
    assert conv.bias_init.dist == "constant" and conv.bias_init.args == (0.0,)
    inh = net.layer("h").projections[1]
    assert inh.weight_init.magnitude and not conv.weight_init.magnitude
    assert net.layer("h").projections[2].weight_init is None  # sparse: fixed weights
    n = net.layer("h").neuron
    assert n.dt == pytest.approx(1e-3) and n.refractory_steps == 0
    text = spec("default", "false").replace("    reset v = 0\n",
                                            "    reset v = 0\n    refractory 2.5 ms\n")
    n2 = spikedsl.loads(text).network("Net").ir.layer("o").neuron
    assert n2.refractory_steps == 3  # ceil(2.5 ms / 1 ms - 1e-9)
    steps = spikedsl.loads("""
neuron N {
    state v = 0.0
    input I
    update v = 0.5 * v + I
    spike v >= 1.0
    reset v = 0
    refractory 2
}
network Net {
    dt = 1
    steps = 3
    input x[2] : spikes
    layer h[2] = N <- dense(x)
    output h
}
""").network("Net").ir.layer("h").neuron
    assert (steps.dt, steps.refractory_steps) == (1.0, 2)
