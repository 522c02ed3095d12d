"""Per-chip limits of the neuromorphic platforms that read NIR graphs.

Every number comes from the vendor's public documentation or toolchain code;
``SOURCES`` names the document of each (docs/platforms.md quotes them).  The
checks that use this table live in :mod:`spikedsl.targets.nir.platform_check`.

A limit that a platform does not have (or whose value the public documents do
not give) is ``None`` and is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PLATFORMS", "SOURCES", "Platform", "SpeckCore", "platform"]

# source key -> citation (docs/platforms.md lists them with the quoted facts)
SOURCES: dict[str, str] = {
    "rockpool-mapper": "rockpool, rockpool/devices/xylo/syns61201/xylo_mapper.py (Xylo Audio 2 "
                       "mapper: max_hidden_neurons=1000, max_output_neurons=8, DRC rules)",
    "rockpool-quantize": "rockpool, rockpool/transform/quantize_methods.py (global_quantize: "
                         "bits_per_weight=8, bits_per_threshold=16)",
    "rockpool-imu": "rockpool docs, devices/xylo-imu/xylo-imu-intro.ipynb (Xylo IMU: 16 inputs, "
                    "496 hidden, 16 outputs, input to the first 128 hidden neurons, output from "
                    "up to 128, fan-out 512, 31,744 recurrent weights)",
    "rockpool-overview": "rockpool docs, devices/xylo-overview.ipynb (LIF neurons with "
                         "exponential synapses; bit-shift decay dash = log2(tau/dt))",
    "nir-support": "NIR docs, docs/source/supported_primitives.md (the NIR nodes each "
                   "toolchain imports: rockpool, Lava, sinabs, SpiNNaker2)",
    "lava-lif": "Lava, src/lava/proc/lif/models.py (PyLifModelBitAcc: u, v 24-bit, du/dv "
                "12-bit, vth 17-bit)",
    "lava-dense": "Lava, src/lava/proc/dense/models.py and src/lava/utils/weightutils.py "
                  "(8-bit signed weights with a shared exponent)",
    "lava-delay": "Lava, src/lava/proc/dense/process.py (DelayDense: synaptic delays in steps)",
    "loihi2-brief": "Intel Labs, 'Taking Neuromorphic Computing to the Next Level with Loihi 2' "
                    "technology brief (2021): 128 neuromorphic cores, up to 1 million neurons "
                    "and 120 million synapses per chip",
    "sinabs-overview": "sinabs docs, docs/speck/overview.md (DYNAP-CNN layer: input <= 128x128, "
                       "output feature map <= 64x64, <= 1024 channels, 8-bit weights, 16-bit "
                       "state, kernel <= 16x16, stride 1/2/4/8, padding 0..7, sum pooling "
                       "1/2/4, fan-out 2; 9 cores; memory formulas)",
    "sinabs-constraints": "sinabs, sinabs/backend/dynapcnn/chips/dynapcnn.py (get_constraints: "
                          "kernel and neuron memory of each of the 9 cores, bias memory 1024)",
    "sinabs-layer": "sinabs, sinabs/backend/dynapcnn/dynapcnn_layer.py (only IAFSqueeze "
                    "integrate-and-fire layers; memory_summary)",
    "sinabs-ops": "sinabs docs, docs/speck/faqs/available_algorithmic_operation.md (leak only "
                  "as a constant bias; pooling 1, 2, 4)",
    "spinnaker2-datasheet": "SpiNNaker2 datasheet v0.03 (2021): 152 ARM Cortex-M4F processing "
                            "elements per chip, 128 KB local SRAM each",
    "py-spinnaker2": "py-spinnaker2 (SpiNNcloud / TU Dresden) `lif` application as documented "
                     "in its examples: weights are integers in [-15, 15], delays 0..7 (hardware "
                     "delay = delay + 1), 250 neurons per processing element by default",
}


@dataclass(frozen=True)
class SpeckCore:
    kernel_memory: int  # entries
    neuron_memory: int  # entries
    bias_memory: int = 1024


@dataclass(frozen=True)
class Platform:
    name: str
    title: str
    neuron_kinds: frozenset[str]  # NIR neuron nodes the toolchain imports
    nodes: frozenset[str]  # other NIR nodes it imports
    weight_bits: int  # signed integer weights
    weight_max: int  # largest |integer weight|
    state_bits: int
    state_float: bool = False  # a floating-point state (no integer range to check)
    max_inputs: int | None = None  # input channels (input neurons)
    max_outputs: int | None = None  # output neurons
    max_hidden: int | None = None  # neurons that are not outputs
    neurons_per_core: int | None = None
    cores: int | None = None
    synapses_per_chip: int | None = None
    max_fan_out: int | None = None  # targets per source neuron (recurrent weights)
    max_recurrent_weights: int | None = None
    input_targets: int | None = None  # hidden neurons the input may reach
    output_sources: int | None = None  # hidden neurons that may feed the outputs
    recurrent: bool = True
    recurrent_outputs: bool = True
    delays: bool = False
    max_delay: int | None = None  # steps
    outputs_from_neurons: bool = False
    inputs_through_weights: bool = False
    leak: bool = True  # a membrane leak (Speck: integrate-and-fire only)
    extra_delay_per_projection: int = 0  # steps the chip adds to each projection
    # Speck (DYNAP-CNN) convolution cores
    speck_cores: tuple[SpeckCore, ...] = ()
    max_kernel: int | None = None
    strides: tuple[int, ...] = ()
    max_padding: int | None = None
    max_channels: int | None = None
    max_input_hw: int | None = None
    max_output_hw: int | None = None
    pool_kernels: tuple[int, ...] = ()
    max_destinations: int | None = None
    sources: dict[str, str] = field(default_factory=dict)  # limit -> SOURCES key
    notes: tuple[str, ...] = ()


_XYLO_SRC = {"neuron_kinds": "nir-support", "nodes": "nir-support",
             "weight_bits": "rockpool-quantize", "state_bits": "rockpool-quantize",
             "max_inputs": "rockpool-mapper", "max_outputs": "rockpool-mapper",
             "max_hidden": "rockpool-mapper", "recurrent_outputs": "rockpool-mapper",
             "outputs_from_neurons": "rockpool-mapper",
             "inputs_through_weights": "rockpool-mapper"}

PLATFORMS: dict[str, Platform] = {
    "xylo": Platform(
        name="xylo", title="SynSense Xylo Audio 2 (SYNS61201)",
        neuron_kinds=frozenset({"LIF", "CubaLIF", "LI"}),
        nodes=frozenset({"Affine", "Linear"}),
        weight_bits=8, weight_max=127, state_bits=16,
        max_inputs=16, max_outputs=8, max_hidden=1000, cores=1,
        recurrent=True, recurrent_outputs=False, outputs_from_neurons=True,
        inputs_through_weights=True,
        sources=_XYLO_SRC,
        notes=("time constants are bit-shift decays: tau = dt * 2**dash with an integer dash "
               "(rockpool-overview)",),
    ),
    "xylo-imu": Platform(
        name="xylo-imu", title="SynSense Xylo IMU (SYNS63300)",
        neuron_kinds=frozenset({"LIF", "CubaLIF", "LI"}),
        nodes=frozenset({"Affine", "Linear"}),
        weight_bits=8, weight_max=127, state_bits=16,
        max_inputs=16, max_outputs=16, max_hidden=496, cores=1, max_fan_out=512,
        max_recurrent_weights=31744, input_targets=128, output_sources=128,
        recurrent=True, recurrent_outputs=False, outputs_from_neurons=True,
        inputs_through_weights=True,
        sources={**_XYLO_SRC, "max_inputs": "rockpool-imu", "max_outputs": "rockpool-imu",
                 "max_hidden": "rockpool-imu", "max_fan_out": "rockpool-imu",
                 "max_recurrent_weights": "rockpool-imu", "input_targets": "rockpool-imu",
                 "output_sources": "rockpool-imu"},
        notes=("one synaptic state per neuron (rockpool-imu)",),
    ),
    "loihi2": Platform(
        name="loihi2", title="Intel Loihi 2 (through Lava / lava-dl)",
        neuron_kinds=frozenset({"LIF", "CubaLIF", "IF"}),
        nodes=frozenset({"Affine", "Linear", "Conv2d", "Flatten", "SumPool2d"}),
        weight_bits=8, weight_max=127, state_bits=24,
        neurons_per_core=8192, cores=128, synapses_per_chip=120_000_000,
        recurrent=True, delays=True,
        sources={"neuron_kinds": "nir-support", "nodes": "nir-support",
                 "weight_bits": "lava-dense", "state_bits": "lava-lif",
                 "neurons_per_core": "loihi2-brief", "cores": "loihi2-brief",
                 "synapses_per_chip": "loihi2-brief", "delays": "lava-delay"},
        notes=("neurons per core: 1,000,000 neurons / 128 cores (loihi2-brief); the real "
               "number depends on the synapse memory the layer needs",),
    ),
    "spinnaker2": Platform(
        name="spinnaker2", title="SpiNNaker2 (through py-spinnaker2)",
        neuron_kinds=frozenset({"LIF", "CubaLIF", "IF"}),
        nodes=frozenset({"Affine", "Linear", "Conv2d", "Flatten", "SumPool2d"}),
        weight_bits=5, weight_max=15, state_bits=32, state_float=True,
        neurons_per_core=250, cores=152, recurrent=True, delays=True, max_delay=8,
        extra_delay_per_projection=1,
        sources={"neuron_kinds": "nir-support", "nodes": "nir-support",
                 "weight_bits": "py-spinnaker2", "neurons_per_core": "py-spinnaker2",
                 "cores": "spinnaker2-datasheet", "delays": "py-spinnaker2",
                 "max_delay": "py-spinnaker2", "state_bits": "spinnaker2-datasheet"},
        notes=("weights are integers in [-15, 15] (sign and 4 bits); the state is a 32-bit "
               "float on the ARM Cortex-M4F (spinnaker2-datasheet)",
               "every projection delivers at least one step later than spikedsl's same-step "
               "feed-forward semantics (py-spinnaker2: hardware delay = delay + 1)"),
    ),
    "speck": Platform(
        name="speck", title="SynSense Speck (DYNAP-CNN, through sinabs)",
        neuron_kinds=frozenset({"IF"}),
        nodes=frozenset({"Affine", "Conv2d", "Flatten", "SumPool2d"}),
        weight_bits=8, weight_max=127, state_bits=16,
        recurrent=False, leak=False, cores=9,
        speck_cores=tuple(SpeckCore(k * 1024, n * 1024) for k, n in
                          zip((16, 16, 16, 32, 32, 64, 64, 16, 16),
                              (64, 64, 64, 32, 32, 16, 16, 16, 16))),
        max_kernel=16, strides=(1, 2, 4, 8), max_padding=7, max_channels=1024,
        max_input_hw=128, max_output_hw=64, pool_kernels=(1, 2, 4), max_destinations=2,
        sources={"neuron_kinds": "sinabs-layer", "nodes": "nir-support",
                 "weight_bits": "sinabs-overview", "state_bits": "sinabs-overview",
                 "cores": "sinabs-overview", "speck_cores": "sinabs-constraints",
                 "max_kernel": "sinabs-overview", "strides": "sinabs-overview",
                 "max_padding": "sinabs-overview", "max_channels": "sinabs-overview",
                 "max_input_hw": "sinabs-overview", "max_output_hw": "sinabs-overview",
                 "pool_kernels": "sinabs-ops", "max_destinations": "sinabs-overview",
                 "leak": "sinabs-ops", "recurrent": "sinabs-overview"},
        notes=("a dense layer runs as a convolution whose kernel covers its whole input "
               "(sinabs converts nn.Linear)",),
    ),
}


def platform(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ValueError(f"unknown platform '{name}' (known: {', '.join(PLATFORMS)})") from None


def cite(p: Platform, limit: str) -> str:
    """The source key of one limit of ``p`` (for messages)."""
    return p.sources.get(limit, "")
