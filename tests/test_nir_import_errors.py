"""Malformed or unsupported NIR input gives a SpecError with a clear message (never
a traceback), and the importer survives a fuzzer."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

nir = pytest.importorskip("nir")
h5py = pytest.importorskip("h5py")

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikedsl
from spikedsl.targets.nir import importer as nir_import

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def valid_graph(n=3):
    return nir.NIRGraph(
        nodes={"input": nir.Input(np.array([n])),
               "w": nir.Affine(weight=np.eye(n), bias=np.zeros(n)),
               "lif": nir.LIF(tau=np.full(n, 0.01), r=np.ones(n), v_leak=np.zeros(n),
                              v_threshold=np.ones(n), v_reset=np.zeros(n)),
               "output": nir.Output(np.array([n]))},
        edges=[("input", "w"), ("w", "lif"), ("lif", "output")])


def write_valid(path, n=3):
    nir.write(str(path), valid_graph(n))
    return str(path)


def expect_error(src, code, *fragments, **kw):
    with pytest.raises(spikedsl.SpecError) as e:
        nir_import.convert_nir(src, **kw)
    assert e.value.codes == [code], e.value.render()
    msg = e.value.render()
    for f in fragments:
        assert f in msg, msg
    return msg


def graph_dict(nodes, edges):
    return {"type": "NIRGraph", "nodes": nodes, "edges": edges}


INPUT = {"type": "Input", "shape": np.array([3])}
OUTPUT = {"type": "Output", "shape": np.array([3])}


def lif(**over):
    d = {"type": "LIF", "tau": np.full(3, 0.01), "r": np.ones(3), "v_leak": np.zeros(3),
         "v_threshold": np.ones(3), "v_reset": np.zeros(3)}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def affine(n_in=3, n_out=3):
    return {"type": "Affine", "weight": np.ones((n_out, n_in)), "bias": np.zeros(n_out)}


def chain(*mid):
    nodes = {"input": INPUT}
    names = ["input"]
    for i, m in enumerate(mid):
        nodes[f"n{i}"] = m
        names.append(f"n{i}")
    nodes["output"] = OUTPUT
    names.append("output")
    return graph_dict(nodes, list(itertools.pairwise(names)))


# ---------------------------------------------------------------------- files
def test_valid_file_imports(tmp_path):
    r = nir_import.convert_nir(write_valid(tmp_path / "ok.nir"))
    assert "layer  lif[3] = LIF <- dense(input_)" in r.text


def test_not_hdf5(tmp_path):
    p = tmp_path / "text.nir"
    p.write_text("this is not HDF5\n")
    expect_error(str(p), "nir-file", "not an HDF5 file")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.nir"
    p.write_bytes(b"")
    expect_error(str(p), "nir-file")


def test_missing_file(tmp_path):
    expect_error(str(tmp_path / "nope.nir"), "nir-file", "no such file")


def test_hdf5_without_node_group(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("data", data=np.arange(3))
    expect_error(str(p), "nir-file", "no 'node' group")


def test_missing_key_in_file(tmp_path):
    p = write_valid(tmp_path / "m.nir")
    with h5py.File(p, "a") as f:
        del f["node/nodes/lif/tau"]
    expect_error(p, "nir-node", "'lif'", "LIF", "'tau' is missing")


def test_missing_edges_in_file(tmp_path):
    p = write_valid(tmp_path / "e.nir")
    with h5py.File(p, "a") as f:
        del f["node/edges"]
    expect_error(p, "nir-invalid", "no 'edges'")


def test_nan_parameter_in_file(tmp_path):
    p = write_valid(tmp_path / "nan.nir")
    with h5py.File(p, "a") as f:
        f["node/nodes/lif/v_threshold"][1] = np.nan
    expect_error(p, "nir-node", "'v_threshold' contains NaN")


def test_unknown_node_type_in_file(tmp_path):
    p = write_valid(tmp_path / "u.nir")
    with h5py.File(p, "a") as f:
        del f["node/nodes/w/type"]
        f["node/nodes/w"].create_dataset("type", data="Quantum", dtype=h5py.string_dtype())
    expect_error(p, "nir-unknown-node", "'w'", "'Quantum'", "importable node types")


# ---------------------------------------------------------------------- graphs
def test_unknown_and_unsupported_node_types():
    expect_error(chain({"type": "Delay", "delay": np.ones(3)}), "nir-unknown-node", "Delay")
    expect_error(chain({"type": "Conv1d", "weight": np.ones((3, 3, 1))}), "nir-unknown-node")
    expect_error(chain({"notype": 1}), "nir-invalid", "has no 'type'")


def test_wrong_shapes():
    expect_error(chain({"type": "Affine", "weight": np.ones(3), "bias": np.zeros(3)}),
                 "nir-node", "weight must be 2-D")
    expect_error(chain(affine(4, 3), lif()), "nir-node", "its weight has 4 inputs")
    expect_error(chain({"type": "Affine", "weight": np.ones((3, 3)), "bias": np.zeros(2)},
                       lif()), "nir-node", "its bias has shape [2]")
    expect_error(chain(affine(), lif(tau=np.full(2, 0.01))), "nir-node",
                 "parameters have different shapes")
    expect_error(chain(affine(), lif(), {"type": "Conv2d", "weight": np.ones((2, 3, 3, 3))}),
                 "nir-node", "needs a [C, H, W] input")
    expect_error(graph_dict({"input": {"type": "Input", "shape": np.array([0])},
                             "output": OUTPUT}, [("input", "output")]), "nir-node",
                 "invalid shape")


def test_bad_parameters():
    expect_error(chain(affine(), lif(tau=np.array([0.01, np.inf, 0.01]))), "nir-node",
                 "NaN or infinite")
    expect_error(chain(affine(), lif(tau=np.array([0.01, -1.0, 0.01]))), "nir-node",
                 "'tau' must be positive")
    expect_error(chain(affine(), lif(r=np.array(["a", "b", "c"]))), "nir-node", "not numeric")
    expect_error(chain(affine(), lif(tau=None)), "nir-node", "'tau' is missing")


def test_cycle_without_neuron():
    g = graph_dict({"input": INPUT, "a": affine(), "b": affine(), "lif": lif(), "output": OUTPUT},
                   [("input", "a"), ("a", "b"), ("b", "a"), ("a", "lif"), ("lif", "output")])
    # "a" sums two inputs first; make a clean cycle through two single-input stages
    g = graph_dict({"input": {"type": "Input", "shape": np.array([3])},
                    "lif": lif(), "a": affine(), "b": affine(), "c": affine(),
                    "output": OUTPUT},
                   [("input", "lif"), ("lif", "output"), ("a", "b"), ("b", "c"), ("c", "a")])
    expect_error(g, "nir-cycle", "a -> b -> c -> a")


def test_recurrent_cycle_through_neuron_is_fine():
    g = graph_dict({"input": INPUT, "w": affine(), "lif": lif(), "rec": affine(),
                    "output": OUTPUT},
                   [("input", "w"), ("w", "lif"), ("lif", "rec"), ("rec", "lif"),
                    ("lif", "output")])
    r = nir_import.convert_nir(g)
    assert "dense(input_) + dense(lif)" in r.text


def test_structure_errors():
    expect_error(graph_dict({"lif": lif(), "output": OUTPUT}, [("lif", "output")]),
                 "nir-invalid", "no Input node")
    expect_error(graph_dict({"input": INPUT, "lif": lif()}, [("input", "lif")]),
                 "nir-invalid", "no Output node")
    expect_error(graph_dict({"input": INPUT, "output": OUTPUT}, [("input", "ghost")]),
                 "nir-invalid", "unknown node 'ghost'")
    expect_error(graph_dict({"input": INPUT, "output": OUTPUT}, [("output", "input")]),
                 "nir-invalid", "leads into an Input node")
    expect_error(graph_dict({}, []), "nir-invalid", "no nodes")
    expect_error({"type": "NIRGraph", "nodes": {"input": INPUT}}, "nir-invalid", "no 'edges'")
    expect_error(graph_dict({"input": INPUT, "output": OUTPUT}, [("input",)]), "nir-invalid",
                 "not a pair")
    expect_error(chain(affine(), lif()), "nir-invalid", "unknown convention",
                 convention="brian")
    expect_error(chain(affine(), lif()), "nir-invalid", "dt must be a positive", dt=-1.0)


def test_threshold_node_imports_as_stateless_neuron():
    from helpers.nir import reference

    g = chain(affine(), {"type": "Threshold", "threshold": np.array([0.5, 1.0, 1.5])})
    r = nir_import.convert_nir(g)
    net = spikedsl.loads(r.text).network("Imported").ir
    x = np.ones((4, 2, 3))
    out = reference(net, {"input_": x}, r.weights)[r.outputs["output"]]
    # Affine of ones (weights 1, bias 0): input 3 everywhere -> all above threshold
    np.testing.assert_array_equal(out, np.ones((4, 2, 3)))
    out0 = reference(net, {"input_": x * 0.3}, r.weights)[r.outputs["output"]]
    np.testing.assert_array_equal(out0[0, 0], [1.0, 0.0, 0.0])  # 0.9 > 0.5 only


def test_sub_graphs_are_inlined():
    inner = graph_dict({"in": INPUT, "lif": lif(), "rec": affine(), "out": OUTPUT},
                       [("in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")])
    inner["type"] = "NIRGraph"
    g = graph_dict({"input": INPUT, "w": affine(), "sub": inner, "output": OUTPUT},
                   [("input", "w"), ("w", "sub"), ("sub", "output")])
    r = nir_import.convert_nir(g)
    assert "layer  sub_lif[3] = LIF <- dense(input_) + dense(sub_lif)" in r.text


# ---------------------------------------------------------------------- command line
def run_cli(*argv):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("SPIKEDSL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "spikedsl.cli", *argv], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300, check=False)


def test_cli_import_errors_have_no_traceback(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_text("garbage")
    r = run_cli("import-nir", str(bad), "-o", str(tmp_path / "m.spk"))
    assert r.returncode == 1
    assert "not an HDF5 file" in r.stderr and "Traceback" not in r.stderr
    from spikedsl.cli import main

    with pytest.raises(SystemExit) as e:
        main(["import-nir", str(tmp_path / "missing.nir"), "-o", str(tmp_path / "m.spk")])
    assert e.value.code == 2
    ok = write_valid(tmp_path / "ok.nir")
    assert main(["import-nir", ok, "--dt", "1e-3", "-o", str(tmp_path / "m.spk")]) == 0
    assert (tmp_path / "m.spk").exists() and (tmp_path / "m.npz").exists()
    prog = spikedsl.load(str(tmp_path / "m.spk"))
    assert prog.network("Imported").ir.dt == 1e-3
    w = np.load(tmp_path / "m.npz")
    assert set(w.files) == {"lif.weight", "lif.bias"}


# ---------------------------------------------------------------------- fuzzing
FIELD_NAMES = ["weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset", "tau_syn",
               "tau_mem", "w_in", "shape", "kernel_size", "stride", "padding", "start_dim",
               "end_dim", "input_type", "scale", "threshold", "dilation", "groups",
               "input_shape", "metadata"]
TYPES = list(nir_import.FIELDS) + ["NIRGraph", "Delay", "Bogus"]

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([0.0, 1.0, 1e-3, -1.0, 3.0]))
arrays = st.one_of(
    floats.map(np.float64),
    st.lists(floats, min_size=0, max_size=6).map(np.array),
    st.tuples(st.integers(1, 4), st.integers(1, 4)).map(lambda s: np.ones(s)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)).map(
        lambda s: np.ones(s)),
    st.sampled_from(["same", "valid", b"bytes", None, 3, [1, 2], {"a": 1}]),
)


@st.composite
def node_dicts(draw):
    t = draw(st.sampled_from(TYPES))
    d = {"type": t}
    if t in nir_import.FIELDS and draw(st.booleans()):
        req, opt = nir_import.FIELDS[t]
        n = draw(st.integers(1, 4))
        for k in req + tuple(opt):
            if draw(st.integers(0, 9)) == 0:
                continue
            d[k] = draw(st.one_of(st.just(np.full(n, 0.01)), st.just(np.ones((n, n))), arrays))
    for _ in range(draw(st.integers(0, 3))):
        d[draw(st.sampled_from(FIELD_NAMES))] = draw(arrays)
    if t == "NIRGraph":
        d["nodes"] = {"i": {"type": "Input", "shape": np.array([2])}}
        d["edges"] = []
    return d


@st.composite
def graphs(draw):
    names = draw(st.lists(st.sampled_from(["input", "output", "a", "b", "c", "d", "lif"]),
                          min_size=1, max_size=6, unique=True))
    nodes = {k: draw(node_dicts()) for k in names}
    if "input" in nodes and draw(st.booleans()):
        nodes["input"] = {"type": "Input", "shape": draw(arrays)}
    pool = names + ["ghost"]
    edges = draw(st.lists(st.tuples(st.sampled_from(pool), st.sampled_from(pool)), max_size=8))
    return graph_dict(nodes, edges)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(), st.sampled_from(["auto", "nir", "norse"]))
def test_fuzz_graph_dicts(g, convention):
    try:
        r = nir_import.convert_nir(g, convention=convention)
    except spikedsl.SpecError as e:
        assert e.diagnostics and e.render()
        return
    assert isinstance(r.text, str)
    spikedsl.loads(r.text)  # whatever imports also loads


def _base_graphs():
    n = 3
    conv = graph_dict(
        {"input": {"type": "Input", "shape": np.array([1, 6, 6])},
         "conv": {"type": "Conv2d", "weight": np.ones((2, 1, 3, 3)), "bias": np.zeros(2),
                  "stride": np.array([1, 1]), "padding": np.array([0, 0]),
                  "dilation": np.array([1, 1]), "groups": np.array(1)},
         "lif": lif(tau=np.full((2, 4, 4), 0.01), r=np.ones((2, 4, 4)),
                    v_leak=np.zeros((2, 4, 4)), v_threshold=np.ones((2, 4, 4)),
                    v_reset=np.zeros((2, 4, 4))),
         "pool": {"type": "SumPool2d", "kernel_size": np.array([2, 2]),
                  "stride": np.array([2, 2]), "padding": np.array([0, 0])},
         "flat": {"type": "Flatten", "start_dim": np.array(0), "end_dim": np.array(-1)},
         "w": affine(8, n), "out_lif": {"type": "CubaLIF", "tau_syn": np.full(n, 5e-3),
                                        "tau_mem": np.full(n, 1e-2), "r": np.ones(n),
                                        "v_leak": np.zeros(n), "v_threshold": np.ones(n)},
         "output": OUTPUT},
        [("input", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"), ("flat", "w"),
         ("w", "out_lif"), ("out_lif", "output")])
    rec = graph_dict({"input": INPUT, "w": affine(), "lif": lif(), "rec": affine(),
                      "li": {"type": "LI", "tau": np.full(n, 0.02), "r": np.ones(n),
                             "v_leak": np.zeros(n)},
                      "if": {"type": "IF", "r": np.ones(n), "v_threshold": np.ones(n)},
                      "output": OUTPUT},
                     [("input", "w"), ("w", "lif"), ("lif", "rec"), ("rec", "lif"),
                      ("lif", "if"), ("if", "li"), ("li", "output")])
    return [conv, rec, chain(affine(), lif())]


@st.composite
def mutated_graphs(draw):
    import copy

    g = copy.deepcopy(draw(st.sampled_from(_base_graphs())))
    names = list(g["nodes"])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 5))
        k = draw(st.sampled_from(names))
        node = g["nodes"][k]
        fields = [f for f in node if f != "type"]
        if op == 0 and fields:
            del node[draw(st.sampled_from(fields))]
        elif op == 1 and fields:
            node[draw(st.sampled_from(fields))] = draw(arrays)
        elif op == 2:
            node["type"] = draw(st.sampled_from(TYPES))
        elif op == 3:
            g["edges"].append((draw(st.sampled_from(names)), draw(st.sampled_from(names))))
        elif op == 4 and g["edges"]:
            g["edges"].pop(draw(st.integers(0, len(g["edges"]) - 1)))
        else:
            g["nodes"][k + "_x"] = draw(node_dicts())
    return g


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_graphs(), st.sampled_from(["auto", "nir", "norse"]))
def test_fuzz_mutated_graphs(g, convention):
    try:
        r = nir_import.convert_nir(g, convention=convention)
    except spikedsl.SpecError as e:
        msg = e.render()
        assert "Error:" not in msg, msg  # no internal exception turned into a message
        return
    spikedsl.loads(r.text)


def test_base_graphs_import():
    for g in _base_graphs():
        spikedsl.loads(nir_import.convert_nir(g).text)


@pytest.fixture(scope="module")
def valid_bytes():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "v.nir")
        nir.write(p, valid_graph())
        with open(p, "rb") as fh:
            return fh.read()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_corrupted_files(valid_bytes, data):
    b = bytearray(valid_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        b = b[: data.draw(st.integers(0, len(b)))]
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "c.nir")
        with open(p, "wb") as fh:
            fh.write(bytes(b))
        try:
            nir_import.convert_nir(p)
        except spikedsl.SpecError:
            pass
