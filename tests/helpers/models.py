"""Networks that several test files run: one text each, so that every target is
tested on the same spec."""

from __future__ import annotations

# Brian2's CUBA at reduced size (80 + 20 neurons), written the natural way:
# jumps for on_pre, refractory clamping v while ge and gi go on, no input layer;
# exc -> inh feed-forward with delay = 1 as Brian2 delivers
_CUBA = """
neuron Cuba {
    param taum = 20 ms
    param taue = 5 ms
    param taui = 10 ms
    param Vt   = -50 mV
    param Vr   = -60 mV
    param El   = -49 mV
    state v  = Vr
    state ge = 0 mV
    state gi = 0 mV
    input Ie : mV
    input Ii : mV
    jump ge += Ie
    jump gi += Ii
    dv/dt  = (ge + gi - (v - El)) / taum
    dge/dt = -ge / taue
    dgi/dt = -gi / taui
    spike v > Vt
    reset v = Vr
    refractory 5 ms
}
network CUBA {
    dt    = 0.1 ms
    steps = STEPS
    layer exc[80] = Cuba <- sparse(exc, p = 0.1, weight = 1.62 mV, seed = 1) -> Ie
                          + sparse(inh, p = 0.1, weight = -9 mV, seed = 2) -> Ii
    layer inh[20] = Cuba <- sparse(exc, p = 0.1, weight = 1.62 mV, seed = 3, delay = 1) -> Ie
                          + sparse(inh, p = 0.1, weight = -9 mV, seed = 4) -> Ii
    output exc
    output inh
}
"""


def cuba_small(steps: int = 2000) -> str:
    """The reduced autonomous CUBA network (network name ``CUBA``)."""
    return _CUBA.replace("STEPS", str(int(steps)))
