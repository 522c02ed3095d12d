"""Spoken digits 0-9 as spectrograms (pure numpy; no torch, no librosa).

``load_dataset("spoken_digits", {...})`` (docs/data.md) reads one of three
sources and turns every utterance into a log-mel spectrogram of 39 channels
(the channel count of Roy, Panda & Roy's TI-46 spectrograms) over a fixed
number of frames, scaled to [0, 1]:

* ``espeak`` (default, no download): the ten words spoken by the ``espeak-ng``
  synthesiser with varied voices (accent x voice variant), pitch and speed,
  plus white noise at a random signal-to-noise ratio; rendered to WAV with a
  subprocess (arguments as a list, no shell);
* ``fsdd``: the Free Spoken Digit Dataset, ``<path>/recordings/{digit}_{speaker}_{index}.wav``
  (its own split: indices 0-4 are the test set);
* ``ti46``: the digits of the TI-46 corpus (TI-20 vocabulary), files named
  ``{word:02d}{speaker}set{n}.sph`` / ``.wav`` anywhere under ``path``
  (NIST SPHERE or RIFF WAV), split 85/15 per digit as the paper.

The spectrograms of a source are cached as one ``.npz`` (written atomically)
in the spikedsl cache directory (``$SPIKEDSL_CACHE``, ``~/.cache/spikedsl``)
or in ``cache = "<dir>"``; ``cache = off`` (or ``SPIKEDSL_CACHE=off``) turns it off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CHANNELS = 39
# espeak-ng voices: an accent (language voice) and a voice variant (espeak-ng-data/voices/!v)
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3")
PITCH = (20, 80)     # espeak-ng -p (0-99)
SPEED = (120, 200)   # espeak-ng -s (words per minute)
FMAX = 4000.0        # Hz: the mel bands span 50 Hz .. 4 kHz for every source (FSDD is 8 kHz)
FMIN = 50.0
DYNAMIC_RANGE = 30.0  # dB below the utterance's loudest cell that map to 0
_FORMAT = 1           # bump when the features change (cache key)

PARAMS = ("source", "path", "per_digit", "frames", "channels", "noise", "snr_min", "snr_max",
          "test_fraction", "split_seed", "shape", "cache", "n_train", "n_test", "gen_seed")

INSTALL_ESPEAK = (
    "install it with your package manager: apt-get install espeak-ng (Debian, Ubuntu), "
    "dnf install espeak-ng (Fedora), brew install espeak-ng (macOS); "
    "see https://github.com/espeak-ng/espeak-ng; 'make espeak' runs apt-get where available"
)


def _error(msg: str) -> Exception:
    from spikedsl.runtime.data import DataError

    return DataError(msg)


# --------------------------------------------------------------------- espeak
def espeak_binary() -> str | None:
    """Path of ``espeak-ng`` (or the older ``espeak``) on PATH, None when absent."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def espeak_version(exe: str) -> str:
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                           check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return r.stdout.split("Data at")[0].strip() or "?"


def espeak_plan(per_digit: int, seed: int) -> list[dict[str, Any]]:
    """The utterances of the embedded set: ``per_digit`` per word, each with a
    voice (accent + variant, cycled so that every voice speaks every digit
    about equally), a pitch, a speed and a signal-to-noise draw in [0, 1)."""
    rng = np.random.default_rng(seed)
    voices = [(a, v) for v in VARIANTS for a in ACCENTS]
    plan = []
    for d in range(10):
        order = rng.permutation(len(voices))
        for i in range(per_digit):
            acc, var = voices[int(order[i % len(voices)])]
            plan.append({"digit": d, "voice": f"{acc}+{var}",
                         "pitch": int(rng.integers(PITCH[0], PITCH[1] + 1)),
                         "speed": int(rng.integers(SPEED[0], SPEED[1] + 1)),
                         "snr_u": float(rng.random())})
    return plan


def espeak_render(exe: str, item: dict[str, Any], path: Path) -> None:
    """Speak ``WORDS[item['digit']]`` into the WAV file ``path``."""
    cmd = [exe, "-w", str(path), "-v", item["voice"], "-p", str(item["pitch"]),
           "-s", str(item["speed"]), WORDS[item["digit"]]]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise _error(f"spoken_digits: cannot run {exe}: {e}") from None
    if r.returncode != 0 or not path.is_file():
        raise _error(f"spoken_digits: {' '.join(cmd)} failed (exit {r.returncode}): "
                     f"{r.stderr.strip()[:300]}")


# --------------------------------------------------------------------- audio files
def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A RIFF WAV (PCM 8/16/24/32 bit) or NIST SPHERE file -> (mono float64 in [-1, 1], rate)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as e:
        raise _error(f"cannot read audio file {p}: {e.strerror or e}") from None
    if head.startswith(b"NIST_1A"):
        return read_sphere(p)
    try:
        with wave.open(str(p), "rb") as w:
            rate, width, ch, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), \
                w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise _error(f"{p}: not a PCM WAV file ({e})") from None
    return _pcm(raw, width, ch, "<", p), rate


def read_sphere(path: Path) -> tuple[np.ndarray, int]:
    """NIST SPHERE (TI-46's format): a text header of ``NIST_1A``, its size, then
    ``name -type value`` lines up to ``end_head``; uncompressed PCM only."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        size = int(data[8:16].split()[0])
        lines = data[16:size].decode("ascii", "replace").splitlines()
    except (ValueError, IndexError):
        raise _error(f"{path}: bad NIST SPHERE header") from None
    fields = {}
    for line in lines:
        parts = line.split(None, 2)
        if parts and parts[0] == "end_head":
            break
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
    coding = fields.get("sample_coding", "pcm")
    if "shorten" in coding or not coding.startswith("pcm"):
        raise _error(f"{path}: SPHERE sample coding '{coding}' is compressed; convert the "
                     "files to WAV first, e.g. sph2pipe -f wav in.sph out.wav")
    width = int(fields.get("sample_n_bytes", "2"))
    order = ">" if fields.get("sample_byte_format", "01") == "10" else "<"
    rate = int(fields.get("sample_rate", "0"))
    if rate <= 0:
        raise _error(f"{path}: SPHERE header has no sample_rate")
    return _pcm(data[size:], width, int(fields.get("channel_count", "1")), order, path), rate


def _pcm(raw: bytes, width: int, channels: int, order: str, path: Path) -> np.ndarray:
    if width == 1:
        a = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width in (2, 4):
        n = len(raw) // width * width
        a = np.frombuffer(raw[:n], dtype=f"{order}i{width}").astype(np.float64)
        a /= float(2 ** (8 * width - 1))
    elif width == 3:
        b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        if order == ">":
            b = b[:, ::-1]
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        a = np.where(v >= 2 ** 23, v - 2 ** 24, v).astype(np.float64) / 2 ** 23
    else:
        raise _error(f"{path}: unsupported sample width {width} bytes")
    if channels > 1:
        a = a[: len(a) // channels * channels].reshape(-1, channels).mean(1)
    return a


# --------------------------------------------------------------------- features
def _mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(rate: int, n_fft: int, channels: int = CHANNELS) -> np.ndarray:
    """Triangular filters ``[channels, n_fft // 2 + 1]`` equally spaced on the mel
    scale (HTK formula) between 50 Hz and min(4 kHz, rate / 2)."""
    hi = min(FMAX, rate / 2.0)
    edges = 700.0 * (10 ** (np.linspace(_mel(FMIN), _mel(hi), channels + 2) / 2595.0) - 1.0)
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    fb = np.zeros((channels, len(freqs)))
    for m in range(channels):
        lo, c, up = edges[m], edges[m + 1], edges[m + 2]
        rise = (freqs - lo) / (c - lo)
        fall = (up - freqs) / (up - c)
        fb[m] = np.clip(np.minimum(rise, fall), 0.0, None)
    return fb


def _frames(signal: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """25 ms Hann windows every 10 ms -> ``[n_frames, win]`` and the FFT size."""
    win = max(16, int(round(0.025 * rate)))
    hop = max(1, int(round(0.010 * rate)))
    if len(signal) < win:
        signal = np.pad(signal, (0, win - len(signal)))
    n = 1 + (len(signal) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    return signal[idx] * np.hanning(win)[None, :], 1 << (win - 1).bit_length()


def trim(signal: np.ndarray, rate: int, below_db: float = 35.0) -> np.ndarray:
    """Cut leading and trailing 10 ms blocks quieter than the loudest by ``below_db``."""
    hop = max(1, int(round(0.010 * rate)))
    n = len(signal) // hop
    if n < 2:
        return signal
    e = (signal[: n * hop].reshape(n, hop) ** 2).mean(1)
    db = 10 * np.log10(e + 1e-20)
    keep = np.flatnonzero(db >= db.max() - below_db)
    return signal[keep[0] * hop: (keep[-1] + 1) * hop]


def spectrogram(signal: np.ndarray, rate: int, frames: int, channels: int = CHANNELS
                ) -> np.ndarray:
    """Log-mel spectrogram ``[channels, frames]`` in [0, 1]: power through the mel
    filters, dB, the top ``DYNAMIC_RANGE`` dB of the utterance mapped to [0, 1],
    and the time axis resampled linearly to ``frames`` (time normalisation)."""
    win, n_fft = _frames(np.asarray(signal, dtype=np.float64), rate)
    power = np.abs(np.fft.rfft(win, n_fft, axis=1)) ** 2
    mel = power @ mel_filterbank(rate, n_fft, channels).T        # [n, channels]
    db = 10 * np.log10(mel + 1e-12)
    db = np.clip((db - db.max() + DYNAMIC_RANGE) / DYNAMIC_RANGE, 0.0, 1.0)
    pos = np.linspace(0.0, len(db) - 1.0, frames)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(db) - 1)
    w = (pos - i0)[:, None]
    return ((db[i0] * (1 - w) + db[i1] * w).T).astype(np.float32)


def add_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` relative to the signal's mean power."""
    p = float(np.mean(signal ** 2)) or 1e-12
    return signal + rng.normal(0.0, np.sqrt(p / 10 ** (snr_db / 10)), size=signal.shape)


# --------------------------------------------------------------------- sources
def _espeak(per_digit: int, frames: int, channels: int, noise: bool, snr: tuple[float, float],
            gen_seed: int, cache: Path | None, log) -> dict[str, Any]:
    exe = espeak_binary()
    if exe is None:
        raise _error("spoken_digits: the embedded data set speaks the digits with espeak-ng, "
                     f"which is not installed; {INSTALL_ESPEAK}. Or read recordings: "
                     "spoken_digits(source = fsdd, path = ...) or (source = ti46, path = ...)")
    version = espeak_version(exe)
    key = ["espeak", version, per_digit, frames, channels, noise, snr, gen_seed, ACCENTS, DYNAMIC_RANGE,
           VARIANTS, PITCH, SPEED]
    hit = _cache_read(cache, "espeak", key)
    if hit is not None:
        return hit
    plan = espeak_plan(per_digit, gen_seed)
    rng = np.random.default_rng([gen_seed, 1])
    xs, rate = [], 0
    if log:
        log(f"spoken_digits: speaking {len(plan)} digits with {exe} ({version})")
    with tempfile.TemporaryDirectory(prefix="spikedsl-espeak-") as tmp:
        for i, item in enumerate(plan):
            wav = Path(tmp) / f"u{i}.wav"
            espeak_render(exe, item, wav)
            sig, rate = read_wav(wav)
            wav.unlink()
            sig = trim(sig, rate)
            pad = np.zeros(int(0.05 * rate))
            sig = np.concatenate([pad, sig, pad])
            if noise:
                sig = add_noise(sig, snr[0] + item["snr_u"] * (snr[1] - snr[0]), rng)
            xs.append(spectrogram(sig, rate, frames, channels))
    out = {"x": np.stack(xs), "y": np.array([p["digit"] for p in plan], dtype=np.int64),
           "speaker": np.array([p["voice"] for p in plan]), "test": None, "rate": rate,
           "what": f"espeak-ng ({version})"}
    _cache_write(cache, "espeak", key, out)
    return out


_FSDD = re.compile(r"^([0-9])_([A-Za-z0-9-]+)_([0-9]+)\.wav$")
_TI46 = re.compile(r"^([0-9]{2})([fm][0-9]+)set([0-9]+)\.(sph|wav)$", re.IGNORECASE)


def _files(kind: str, root: Path) -> list[tuple[Path, int, str, int]]:
    if kind == "fsdd":
        base = root / "recordings" if (root / "recordings").is_dir() else root
        pat, where = _FSDD, base
        found = [(p, m) for p in sorted(base.glob("*.wav")) if (m := pat.match(p.name))]
        how = (f"files recordings/{{digit}}_{{speaker}}_{{index}}.wav under {root} (clone "
               "https://github.com/Jakobovski/free-spoken-digit-dataset there)")
    else:
        where = root
        found = [(p, m) for p in sorted(root.rglob("*")) if (m := _TI46.match(p.name))
                 and int(m.group(1)) < 10]
        how = (f"TI-46 digit files {{word:02d}}{{speaker}}set{{n}}.sph or .wav (e.g. "
               f"ti20/train/f1/00f1set0.sph) under {root}; the corpus is LDC93S9 "
               "(https://catalog.ldc.upenn.edu/LDC93S9), it cannot be downloaded freely")
    if not root.is_dir() or not found:
        raise _error(f"spoken_digits(source = {kind}): no recordings found in {where}"
                     + ("" if root.is_dir() else " (the directory does not exist)")
                     + f"; expected {how}")
    return [(p, int(m.group(1)), m.group(2), int(m.group(3))) for p, m in found]


def _recordings(kind: str, root: Path, frames: int, channels: int, cache: Path | None,
                log) -> dict[str, Any]:
    files = _files(kind, root)
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p, *_ in files]
    key = [kind, frames, channels, DYNAMIC_RANGE, stats]
    hit = _cache_read(cache, kind, key)
    if hit is not None:
        return hit
    if log:
        log(f"spoken_digits: reading {len(files)} {kind} recordings from {root}")
    xs, rate = [], 0
    for p, _, _, _ in files:
        sig, rate = read_wav(p)
        xs.append(spectrogram(trim(sig, rate), rate, frames, channels))
    test = np.array([i < 5 for *_, i in files]) if kind == "fsdd" else None
    out = {"x": np.stack(xs), "y": np.array([d for _, d, _, _ in files], dtype=np.int64),
           "speaker": np.array([s for _, _, s, _ in files]), "test": test, "rate": rate,
           "what": f"{kind} ({root})"}
    _cache_write(cache, kind, key, out)
    return out


# --------------------------------------------------------------------- cache
def _cache_file(cache: Path | None, kind: str, key: list) -> Path | None:
    if cache is None:
        return None
    h = hashlib.sha256(json.dumps([_FORMAT, key], default=str).encode()).hexdigest()[:24]
    return cache / f"spoken-{kind}-{h}.npz"


def _cache_read(cache: Path | None, kind: str, key: list) -> dict[str, Any] | None:
    p = _cache_file(cache, kind, key)
    if p is None or not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return {"x": z["x"], "y": z["y"], "speaker": z["speaker"],
                    "test": z["test"] if bool(z["has_test"]) else None, "rate": int(z["rate"]),
                    "what": str(z["what"]), "cache": str(p), "from_cache": True}
    except Exception:  # an unreadable entry is recomputed
        return None


def _cache_write(cache: Path | None, kind: str, key: list, d: dict[str, Any]) -> None:
    from spikedsl.atomic import WriteError, atomic_path

    p = _cache_file(cache, kind, key)
    if p is None:
        return
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p, ".npz") as tmp:
            own = d["test"] is not None
            np.savez_compressed(tmp, x=d["x"], y=d["y"], speaker=d["speaker"],
                                test=np.asarray(d["test"] if own else [], dtype=bool),
                                has_test=own, rate=d["rate"], what=d["what"])
    except (OSError, WriteError):
        return
    d["cache"] = str(p)


def _cache_dir(a, base_dir: str) -> Path | None:
    v = a.get("cache", "auto")
    if v is False or v == "off":
        return None
    if v is True or v == "auto":
        from spikedsl.cache import cache_dir

        d = cache_dir()
        return Path(d) if d else None
    return a.path("cache", "auto", base_dir)


# --------------------------------------------------------------------- loader
def load_spoken(a, base_dir: str, seed: int, log=None):
    """The ``spoken_digits`` data set (spikedsl.runtime.data.DATASETS)."""
    from spikedsl.runtime.data import _finish, _split, _subset

    source = a.choice("source", "espeak", ("espeak", "fsdd", "ti46"))
    frames = a.integer("frames", 40, lo=2) or 40
    channels = a.integer("channels", CHANNELS, lo=1) or CHANNELS
    cache = _cache_dir(a, base_dir)
    if source == "espeak":
        per_digit = a.integer("per_digit", 100, lo=1) or 1
        snr = (a.num("snr_min", 10.0, -20.0, 100.0), a.num("snr_max", 30.0, -20.0, 100.0))
        if snr[0] > snr[1]:
            raise _error("spoken_digits: snr_min must not exceed snr_max")
        d = _espeak(per_digit, frames, channels, a.flag("noise", True), snr,
                    a.integer("gen_seed", 0) or 0, cache, log)
    else:
        default = "data/free-spoken-digit-dataset" if source == "fsdd" else "data/ti46"
        d = _recordings(source, a.path("path", default, base_dir), frames, channels, cache, log)
    x = d["x"]
    if a.choice("shape", "flat", ("flat", "image")) == "flat":
        x = x.reshape(len(x), -1)
    else:
        x = x[:, None]
    split_seed = a.integer("split_seed", seed) or 0
    idx = np.arange(len(x))
    if d["test"] is not None:  # the data set's own split (FSDD)
        test = np.asarray(d["test"], dtype=bool)
        i_tr, y_tr, i_te, y_te = idx[~test], d["y"][~test], idx[test], d["y"][test]
    else:
        i_tr, y_tr, i_te, y_te = _split(idx, d["y"], a.num("test_fraction", 0.15, 0.0, 0.9),
                                        split_seed)
    i_tr, y_tr = _subset(i_tr, y_tr, a.integer("n_train", None), split_seed)
    i_te, y_te = _subset(i_te, y_te, a.integer("n_test", None), split_seed)
    ds = _finish("spoken_digits", x[i_tr], y_tr, x[i_te], y_te, 10, source=d["what"],
                 sample_rate=d["rate"], channels=channels, frames=frames,
                 speakers_train=[str(s) for s in d["speaker"][i_tr]],
                 speakers_test=[str(s) for s in d["speaker"][i_te]])
    if "cache" in d:
        ds.info["cache"] = d["cache"]
        ds.info["from_cache"] = bool(d.get("from_cache", False))
    return ds
