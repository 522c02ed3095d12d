"""Property-based fuzzing of the targets' checks: a neuron assembled from
random parts (linear, quadratic and exponential terms, adaptation and
synaptic states, jumps, methods, resets, refractory clamps, compound spike
conditions) either runs on a target or is refused with ``Unsupported`` and a
message — no target's analysis raises anything else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikedsl
from spikedsl import targets
from spikedsl.errors import SpecError, Unsupported
from spikedsl.targets import Unavailable

V_TERMS = ["-v", "-(v - 0.1)", "+ v * v", "+ 0.2 * exp((v - 1) / 0.2)", "- w", "+ s", "+ I",
           "- s * (v - 2)", "+ 0.5"]
METHODS = ["", " method exact", " method euler", " method rk4", " method exponential_euler"]
SPIKES = ["v >= 1", "v > 1", "v >= 1 and w < 1", "v >= 1 or s > 3"]


@st.composite
def neurons(draw) -> str:
    w = draw(st.booleans())
    s = draw(st.booleans())
    names = {"w": w, "s": s}
    terms = [t for t in draw(st.lists(st.sampled_from(V_TERMS), min_size=1, max_size=4, unique=True))
             if not any(k in t for k, on in names.items() if not on)] or ["-v"]
    lines = ["    param tau = 10", "    state v = 0"]
    lines += ["    state w = 0"] if w else []
    lines += ["    state s = 0"] if s else []
    lines += ["    input I"]
    lines += [f"    dv/dt = ({' '.join(terms)}) / tau{draw(st.sampled_from(METHODS))}"]
    if w:
        lines += [f"    dw/dt = ({draw(st.sampled_from(['0.2 * v - w', '-w', '0.1 * v * v - w']))})"
                  f" / 100{draw(st.sampled_from(METHODS))}"]
    if s:
        lines += [f"    ds/dt = -s / 5{draw(st.sampled_from(METHODS))}"]
        if draw(st.booleans()):
            lines += [f"    jump s {draw(st.sampled_from(['+=', '-=', '=']))} I"]
    spike = draw(st.sampled_from([c for c in SPIKES if not any(
        f" {k} " in f" {c} " for k, on in names.items() if not on)]))
    lines += [f"    spike {spike}"]
    reset = [draw(st.sampled_from(["v = 0", "v -= 1", "v = -0.5"]))]
    if w and draw(st.booleans()):
        reset.append("w += 0.5")
    lines += [f"    reset {'; '.join(reset)}"]
    if draw(st.booleans()):
        clamp = draw(st.sampled_from(["", " [clamp v]"] + ([" [clamp v, w]"] if w else [])))
        lines += [f"    refractory {draw(st.sampled_from([0.2, 1, 2]))}{clamp}"]
    return "neuron F {\n" + "\n".join(lines) + "\n}\n"


NET = """
network N {
    dt = 0.1
    steps = 20
    input x[2] : direct
    layer h[2] = F <- PROJ
    output h
}
"""
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(neurons(), st.sampled_from(["dense(x)", "sparse(x, p = 0.5)", "one_to_one(x)"]))
def test_every_target_runs_or_refuses_a_random_neuron(neuron, proj):
    try:
        net = spikedsl.loads(neuron + NET.replace("PROJ", proj), file="fuzz.spk").network("N").ir
    except SpecError as e:  # the language's own refusal: fine, with a message
        assert all(d.message for d in e.diagnostics)
        return
    for name in targets.TARGETS:
        try:
            err = targets.refusal(name, net)
        except Unavailable:
            continue
        assert err is None or (isinstance(err, Unsupported) and err.diagnostics[0].message), \
            (name, neuron)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(neurons(), st.sampled_from(["dense(x)", "sparse(x, p = 0.5)", "one_to_one(x)"]))
def test_a_random_neuron_gives_the_same_spikes_on_reference_torch_and_brian2(neuron, proj):
    """Where torch and Brian2 accept a random neuron, they agree with the
    reference (float64, 20 steps, the verify command's comparison)."""
    from spikedsl.runtime.verify import verify

    try:
        net = spikedsl.loads(neuron + NET.replace("PROJ", proj), file="fuzz.spk").network("N").ir
    except SpecError:
        return
    names = ["reference"] + [t for t in ("torch", "brian2") if targets.refusal(t, net) is None]
    rep = verify(net, targets=names, batch=2, seed=1, input_scale=5.0)
    assert rep.ok, (neuron, proj, [(p.a, p.b, p.spikes_equal, p.max_diff) for p in rep.pairs])
    bad = {k for k, who in rep.nonfinite.items() if "reference" in who}
    assert not bad or "v * v" in neuron or "exp(" in neuron, (neuron, bad)  # only blow-ups
