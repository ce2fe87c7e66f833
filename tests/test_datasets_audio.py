"""Torch-only audio: scipy-equivalent spectrogram, resampling, mel filters, WAV reading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch
from fixtures_data import one_thread, write_wav  # noqa: F401  (autouse fixture)
from scipy.io import wavfile

from miles_tune.data import DatasetError
from miles_tune.data.audio import (
    fit_length,
    mel_filter_bank,
    mel_spectrogram,
    read_wav,
    resample,
    scipy_spectrogram,
    tukey_window,
)


def test_tukey_window_matches_scipy() -> None:
    for m, alpha in ((512, 0.25), (400, 0.5), (17, 0.25)):
        ours = tukey_window(m, alpha).numpy()
        ref = scipy.signal.get_window(("tukey", alpha), m)  # fftbins=True: the periodic window
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fs, seconds", [(16000, 3.0), (22050, 1.0)])
def test_spectrogram_matches_scipy(fs: int, seconds: float) -> None:
    x = np.random.default_rng(0).standard_normal(int(fs * seconds))
    _, _, ref = scipy.signal.spectrogram(x, fs, nperseg=512, noverlap=353)
    ours = scipy_spectrogram(torch.from_numpy(x), fs, 512, 353).numpy()
    assert ours.shape == ref.shape
    if fs == 16000:
        assert ours.shape == (257, 299)  # the MILES CREMA-D shape
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref.max())


def test_spectrogram_rejects_short_input() -> None:
    with pytest.raises(ValueError, match="shorter than nperseg"):
        scipy_spectrogram(torch.zeros(100), 16000)


@pytest.mark.parametrize("orig, new", [(22050, 16000), (48000, 16000), (8000, 16000), (44100, 22050)])
def test_resample_reproduces_a_sine(orig: int, new: int) -> None:
    t = np.arange(orig) / orig  # one second
    x = torch.from_numpy(np.sin(2 * math.pi * 440 * t))
    y = resample(x, orig, new)
    assert y.shape == (new,)
    ref = np.sin(2 * math.pi * 440 * np.arange(new) / new)
    edge = 64  # the filter sees zeros beyond the ends
    assert np.abs(y.numpy() - ref)[edge:-edge].max() < 1e-3
    poly = scipy.signal.resample_poly(x.numpy(), new // math.gcd(orig, new), orig // math.gcd(orig, new))
    assert np.abs(y.numpy() - poly)[edge:-edge].max() < 5e-3


def test_resample_identity_batch_and_dtype() -> None:
    x = torch.randn(3, 1000)
    assert resample(x, 16000, 16000) is x
    y = resample(x.float(), 22050, 16000)
    assert y.shape == (3, math.ceil(1000 * 16000 / 22050)) and y.dtype == torch.float32
    np.testing.assert_allclose(y[1].numpy(), resample(x[1], 22050, 16000).numpy(), atol=1e-6)


def test_fit_length_tiles_and_pads() -> None:
    x = torch.tensor([1.0, 2.0, 3.0])
    assert fit_length(x, 7).tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert fit_length(x, 5, "pad").tolist() == [1, 2, 3, 0, 0]
    assert fit_length(x, 2).tolist() == [1, 2]
    with pytest.raises(ValueError):
        fit_length(torch.zeros(0), 4)


def test_mel_filter_bank_follows_the_htk_formula() -> None:
    n_freqs, sr, n_mels = 201, 16000, 96
    fb = mel_filter_bank(n_freqs, 0.0, 8000.0, n_mels, sr).numpy()
    assert fb.shape == (n_freqs, n_mels)
    # independent evaluation of the triangle formula at every (bin, filter)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = hz(np.linspace(mel(0.0), mel(8000.0), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_freqs)
    for j in (0, 10, 50, 95):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        expect = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
        np.testing.assert_allclose(fb[:, j], expect, atol=1e-12)
    assert (fb >= 0).all() and fb.max() <= 1.0 + 1e-12
    assert (np.argmax(fb, axis=0)[1:] >= np.argmax(fb, axis=0)[:-1]).all()  # centres ascend


def test_mel_spectrogram_shapes_and_power() -> None:
    sr = 16000
    x = torch.sin(2 * math.pi * 1000 * torch.arange(8000) / sr)  # 0.5 s of 1 kHz
    m = mel_spectrogram(x, sr, n_mels=96, f_max=8000)
    assert m.shape == (96, 1 + 8000 // 200)
    peak_bin = int(m.mean(-1).argmax())
    fb = mel_filter_bank(201, 0, 8000, 96, sr)
    assert abs(peak_bin - int(fb[25].argmax())) <= 1  # 1 kHz is FFT bin 25 (40 Hz bins): its filter peaks
    assert mel_spectrogram(torch.zeros(50), sr, n_mels=8).shape == (8, 2)  # shorter than n_fft/2: padded


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_wav_integer_widths(tmp_path, width: int) -> None:
    x = 0.5 * np.sin(np.linspace(0, 20, 800))
    path = write_wav(tmp_path / f"w{width}.wav", x, 22050, width=width)
    y, rate = read_wav(path)
    assert rate == 22050 and y.dtype == np.float32 and y.shape == (800,)
    assert np.abs(y - x).max() < (2.0 / 2 ** (8 * width - 1) + 1e-6)


def test_read_wav_stereo_and_float(tmp_path) -> None:
    x = np.linspace(-0.5, 0.5, 100)
    y, _ = read_wav(write_wav(tmp_path / "s.wav", np.stack([x, x], 1), 16000, channels=2))
    assert y.shape == (100,) and np.abs(y - x).max() < 1e-4
    wavfile.write(tmp_path / "f.wav", 8000, x.astype(np.float32))  # IEEE float: wave cannot, scipy can
    y, rate = read_wav(tmp_path / "f.wav")
    assert rate == 8000 and np.allclose(y, x, atol=1e-7)


def test_read_wav_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(DatasetError, match="missing audio file .*nope.wav"):
        read_wav(tmp_path / "nope.wav")
    bad = tmp_path / "garbage.wav"
    bad.write_bytes(b"this is not a wav file at all" * 10)
    with pytest.raises(DatasetError, match="corrupt or unsupported WAV .*garbage.wav"):
        read_wav(bad)
    good = write_wav(tmp_path / "cut.wav", np.zeros(1000), 16000)
    good.write_bytes(good.read_bytes()[:500])  # truncated: the header announces more frames
    with pytest.raises(DatasetError, match="cut.wav"):
        read_wav(good)
    empty, _ = read_wav(write_wav(tmp_path / "empty.wav", np.zeros(0), 16000))
    assert empty.size == 0  # empty is not an error here: the dataset decides
