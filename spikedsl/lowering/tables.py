"""The keyword arguments (with their defaults) of the network language's
encoders, projections, stages and cells, the reductions of outputs and the
network settings; :mod:`spikedsl.lowering.network` checks calls against them."""

ENCODERS = {
    "direct": {},
    "poisson": {"max_rate": 1.0, "seed": 0.0},
    "latency": {"tau": 5.0, "threshold": 0.01, "normalize": 1.0, "linear": 0.0},
    "spikes": {},
}
PROJECTIONS = {
    "dense": {"bias": True, "delay": 0, "init": "default", "sign": "none", "seed": 0},
    "conv2d": {"channels": None, "kernel": None, "stride": 1, "padding": 0, "bias": True,
               "delay": 0, "init": "default", "sign": "none", "seed": 0},
    "sparse": {"p": 0.1, "weight": 1.0, "delay": 0, "seed": 0, "sign": "none"},
    "one_to_one": {"weight": 1.0, "delay": 0, "sign": "none"},
}
STAGES = {
    "avgpool2d": {"kernel": None, "stride": None},
    "sumpool2d": {"kernel": None, "stride": None},
    "maxpool2d": {"kernel": None, "stride": None},
    "flatten": {},
    "batchnorm": {"momentum": 0.1, "eps": 1e-5, "per_step": False},
    "dropout": {"p": 0.5},
}
CELLS = {
    "slstm": {"hidden": None, "threshold": 1.0},
    "sconv_lstm": {"channels": None, "kernel": None, "threshold": 1.0},
}
REDUCTIONS = ("sum", "mean", "last")
NET_SETTINGS = ("dt", "steps", "weights", "seed")
