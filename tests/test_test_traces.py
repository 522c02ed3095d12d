"""`spikedsl test --save DIR` writes what a test recorded; `spikedsl plot` draws it."""

from __future__ import annotations

import numpy as np

from spikedsl.cli import main
from spikedsl.runtime.plots import load_simulation

SPEC = """
neuron LIF {
    param tau = 10 ms
    state v = 0.0
    input I
    dv/dt = (-v + I) / tau
    spike v >= 1
    reset v = 0
}
test "LIF first spike" {
    neuron = LIF
    dt = 0.1 ms
    drive I = 2.0
    run 20 ms
    expect first_spike == 7.0 ms +- 0.1 ms
    expect v at 3 ms == 0.518 +- 1e-3
    targets = [torch]
}
"""


def test_saved_traces_plot(tmp_path, capsys):
    spec = tmp_path / "lif.spk"
    spec.write_text(SPEC)
    assert main(["test", str(spec), "--save", str(tmp_path / "rec")]) == 0
    saved = tmp_path / "rec" / "LIF_first_spike-torch.npz"
    arrays, meta = load_simulation(saved)
    assert meta["dt"] == 1e-4 and meta["unit"] == "ms" and meta["target"] == "torch"
    spikes = arrays[meta["spiking"][0]]
    assert spikes.shape[0] == 200
    # first spike in the step ending at 7.0 ms (tau ln 2 = 6.93 ms, rounded up to the grid)
    assert int(np.argmax(spikes.reshape(200, -1)[:, 0])) + 1 == 70
    assert main(["plot", str(saved), "-o", str(tmp_path / "plots")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["LIF_first_spike-torch_raster.png", "LIF_first_spike-torch_traces.png"]
