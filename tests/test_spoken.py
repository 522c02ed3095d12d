"""spoken_digits: WAV / SPHERE reading, log-mel spectrograms, the FSDD and TI-46
layouts, the espeak-ng set, the cache and the messages."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from spikedsl.runtime import spoken as S
from spikedsl.runtime.data import DataError, load_dataset

RATE = 8000


def tone(freq: float, seconds: float = 0.4, rate: int = RATE, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def write_wav(path: Path, x: np.ndarray, rate: int = RATE, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def write_sphere(path: Path, x: np.ndarray, rate: int = 12500, order: str = "01",
                 coding: str = "pcm") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [f"sample_rate -i {rate}", "sample_n_bytes -i 2", "channel_count -i 1",
              f"sample_byte_format -s2 {order}", f"sample_coding -s{len(coding)} {coding}",
              f"sample_count -i {len(x)}", "end_head"]
    head = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\n").encode()
    head += b" " * (1024 - len(head))
    pcm = np.round(x * 32767).astype(">i2" if order == "10" else "<i2")
    path.write_bytes(head + pcm.tobytes())


# ------------------------------------------------------------------ readers
def test_read_wav_16bit_mono_and_stereo(tmp_path):
    x = np.array([0.0, 0.5, -0.5, 0.25])
    write_wav(tmp_path / "m.wav", x)
    y, rate = S.read_wav(tmp_path / "m.wav")
    assert rate == RATE
    np.testing.assert_allclose(y, np.round(x * 32767) / 32768, atol=1e-9)
    write_wav(tmp_path / "s.wav", x, channels=2)
    y2, _ = S.read_wav(tmp_path / "s.wav")
    np.testing.assert_allclose(y2, y)  # the channels are averaged


@pytest.mark.parametrize("order", ["01", "10"])
def test_read_sphere_both_byte_orders(tmp_path, order):
    x = np.array([0.0, 0.5, -0.25, 0.125])
    write_sphere(tmp_path / "a.sph", x, order=order)
    y, rate = S.read_wav(tmp_path / "a.sph")  # dispatches on the NIST_1A magic
    assert rate == 12500
    np.testing.assert_allclose(y, np.round(x * 32767) / 32768, atol=1e-9)


def test_read_sphere_refuses_shorten(tmp_path):
    write_sphere(tmp_path / "a.sph", np.zeros(10), coding="pcm,embedded-shorten-v2.00")
    with pytest.raises(DataError, match="sph2pipe"):
        S.read_wav(tmp_path / "a.sph")


def test_read_wav_not_audio(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"hello world, not a wav")
    with pytest.raises(DataError, match="not a PCM WAV"):
        S.read_wav(tmp_path / "x.wav")


# ------------------------------------------------------------------ features
def test_mel_filterbank_shape_and_peaks():
    fb = S.mel_filterbank(RATE, 256)
    assert fb.shape == (39, 129)
    assert fb.max() <= 1.0 + 1e-12 and fb.min() >= 0.0
    peaks = fb.argmax(1)
    assert np.all(np.diff(peaks) >= 0)  # centres rise with the channel
    assert peaks[-1] * RATE / 256 <= 4000


def test_spectrogram_of_a_tone_lights_its_mel_channel():
    spec = S.spectrogram(tone(1000.0), RATE, frames=20)
    assert spec.shape == (39, 20) and spec.dtype == np.float32
    assert 0.0 <= spec.min() and spec.max() <= 1.0
    fb = S.mel_filterbank(RATE, 256)
    want = int(fb[:, round(1000 * 256 / RATE)].argmax())
    got = int(spec.mean(1).argmax())
    assert got == want
    # a 2 kHz tone lights a higher channel
    assert int(S.spectrogram(tone(2000.0), RATE, frames=20).mean(1).argmax()) > got + 5


def test_trim_cuts_silence():
    x = np.concatenate([np.zeros(800), tone(500, 0.2), np.zeros(1600)])
    y = S.trim(x, RATE)
    assert 1500 <= len(y) <= 1700  # 0.2 s of tone, 10 ms blocks


def test_add_noise_snr():
    rng = np.random.default_rng(0)
    x = tone(440, 2.0)
    n = S.add_noise(x, 10.0, rng) - x
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean(n ** 2))
    assert abs(snr - 10.0) < 0.2


# ------------------------------------------------------------------ layouts
def fsdd(root: Path, speakers=("jackson", "nicolas"), per=7) -> None:
    for d in range(10):
        for s, spk in enumerate(speakers):
            for i in range(per):
                write_wav(root / "recordings" / f"{d}_{spk}_{i}.wav",
                          tone(300 + 150 * d + 20 * s, 0.25))


def test_fsdd_layout_and_its_split(tmp_path):
    fsdd(tmp_path)
    (tmp_path / "recordings" / "README.txt").write_text("not a recording")
    ds = load_dataset("spoken_digits", {"source": "fsdd", "path": str(tmp_path),
                                        "cache": "off", "frames": 12}, ".", 0)
    # indices 0-4 are the test set: 10 digits x 2 speakers x 5; 5-6 train: x 2
    assert ds.n_test == 100 and ds.n_train == 40
    assert ds.shape == (39 * 12,) and ds.n_classes == 10
    assert np.bincount(ds.y_train).tolist() == [4] * 10
    assert set(ds.info["speakers_test"]) == {"jackson", "nicolas"}
    img = load_dataset("spoken_digits", {"source": "fsdd", "path": str(tmp_path),
                                         "cache": "off", "frames": 12, "shape": "image"}, ".", 0)
    assert img.x_train.shape == (40, 1, 39, 12)
    np.testing.assert_array_equal(img.x_train.reshape(40, -1), ds.x_train)
    # the tone's channel rises with the digit
    peak = [int(ds.x_train[ds.y_train == d].reshape(-1, 39, 12).mean((0, 2)).argmax())
            for d in range(10)]
    assert peak == sorted(peak) and peak[-1] > peak[0]


def test_ti46_layout(tmp_path):
    for spk in ("f1", "m2"):
        for w in range(12):  # words 10, 11 are commands, not digits
            for n in range(4):
                write_sphere(tmp_path / "ti20" / "train" / spk / f"{w:02d}{spk}set{n}.sph",
                             tone(300 + 100 * (w % 10), 0.3, rate=12500))
    ds = load_dataset("spoken_digits", {"source": "ti46", "path": str(tmp_path),
                                        "cache": "off", "frames": 10}, ".", 3)
    assert ds.n_train + ds.n_test == 80  # 10 digits x 2 speakers x 4
    assert np.bincount(ds.y_test).tolist() == [1] * 10  # round(8 * 0.15) per digit
    assert ds.info["sample_rate"] == 12500


@pytest.mark.parametrize("source", ["fsdd", "ti46"])
def test_missing_recordings_say_what_is_expected(tmp_path, source):
    with pytest.raises(DataError) as e:
        load_dataset("spoken_digits", {"source": source, "path": str(tmp_path / "none")}, ".", 0)
    msg = str(e.value)
    assert "does not exist" in msg
    assert ("{digit}_{speaker}_{index}.wav" in msg) if source == "fsdd" else ("LDC93S9" in msg)


def test_cache_is_written_once_and_read_back(tmp_path):
    fsdd(tmp_path / "d", per=6)
    args = {"source": "fsdd", "path": str(tmp_path / "d"), "cache": str(tmp_path / "c"),
            "frames": 8}
    a = load_dataset("spoken_digits", args, ".", 0)
    files = list((tmp_path / "c").iterdir())
    assert len(files) == 1 and files[0].name.startswith("spoken-fsdd-")
    assert a.info["cache"] == str(files[0])
    b = load_dataset("spoken_digits", args, ".", 0)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    # a changed file changes the key: a second entry
    write_wav(tmp_path / "d" / "recordings" / "0_jackson_0.wav", tone(999, 0.3))
    load_dataset("spoken_digits", args, ".", 0)
    assert len(list((tmp_path / "c").iterdir())) == 2


# ------------------------------------------------------------------ espeak-ng
def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(S, "espeak_binary", lambda: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        load_dataset("spoken_digits", {"per_digit": 1, "cache": "off"}, ".", 0)


def test_espeak_is_called_with_an_argument_list(monkeypatch, tmp_path):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"], seen["kw"] = cmd, kw
        write_wav(Path(cmd[cmd.index("-w") + 1]), tone(500, 0.3))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(S.subprocess, "run", fake_run)
    item = S.espeak_plan(1, 0)[7]
    S.espeak_render("/usr/bin/espeak-ng", item, tmp_path / "u.wav")
    assert seen["cmd"] == ["/usr/bin/espeak-ng", "-w", str(tmp_path / "u.wav"), "-v",
                           item["voice"], "-p", str(item["pitch"]), "-s", str(item["speed"]),
                           "seven"]
    assert not seen["kw"].get("shell")


def test_espeak_plan_varies_voices_pitch_speed():
    plan = S.espeak_plan(30, 0)
    assert len(plan) == 300
    assert [p["digit"] for p in plan[:30]] == [0] * 30
    assert len({p["voice"] for p in plan if p["digit"] == 4}) == 30  # 30 different voices
    assert {p["pitch"] for p in plan} <= set(range(S.PITCH[0], S.PITCH[1] + 1))
    assert len({p["speed"] for p in plan}) > 20
    assert plan == S.espeak_plan(30, 0) and plan != S.espeak_plan(30, 1)


@pytest.mark.skipif(S.espeak_binary() is None,
                    reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_espeak_digits_end_to_end():
    args = {"per_digit": 2, "cache": "off", "frames": 16}
    a = load_dataset("spoken_digits", args, ".", 0)
    assert a.n_train + a.n_test == 20 and a.shape == (39 * 16,)
    assert 0.0 <= a.x_train.min() and a.x_train.max() == pytest.approx(1.0)
    assert 0.05 < float(a.x_train.mean()) < 0.5  # 30 dB of range: a sparse map
    b = load_dataset("spoken_digits", args, ".", 0)  # synthesis and noise are seeded
    np.testing.assert_array_equal(a.x_train, b.x_train)
    # different words give different spectrograms
    x = np.concatenate([a.x_train, a.x_test])
    y = np.concatenate([a.y_train, a.y_test])
    assert np.abs(x[y == 1].mean(0) - x[y == 7].mean(0)).mean() > 0.05


def test_bad_arguments():
    with pytest.raises(DataError, match="source"):
        load_dataset("spoken_digits", {"source": "tidigits"}, ".", 0)
    with pytest.raises(DataError, match="snr_min"):
        load_dataset("spoken_digits", {"snr_min": 30, "snr_max": 10, "cache": "off"}, ".", 0)
