"""Audio in plain torch: WAV reading, resampling, the scipy-style spectrogram and mel spectrograms.

No torchaudio (it pins torch tightly and is not installable everywhere we run) and no
librosa. What is here, and how it relates to the usual libraries:

- :func:`read_wav`: the stdlib ``wave`` module for integer PCM (8/16/24/32-bit), falling
  back to ``scipy.io.wavfile`` for IEEE-float WAVs. Multi-channel audio is averaged to
  mono. Returns float32 in [-1, 1] and the sample rate from the header.
- :func:`resample`: band-limited (windowed-sinc) polyphase resampling. The ratio is
  reduced to ``up/down``; every output sample is a dot product of the input with a
  Hann-windowed sinc low-pass whose cutoff is ``rolloff`` times the lower Nyquist
  frequency, ``zero_crossings`` lobes each side; each phase's taps are normalised to sum
  to 1 (exact DC gain). Same idea as torchaudio's default ``sinc_interp_hann`` and
  scipy's ``resample_poly``; values differ from both in the last digits.
- :func:`scipy_spectrogram`: reproduces ``scipy.signal.spectrogram(x, fs, nperseg,
  noverlap)`` with scipy's defaults (periodic Tukey(0.25) window, constant detrend,
  density scaling, one-sided, no padding): 48,000 samples with 512/353 give (257, 299),
  the MILES CREMA-D shape. Checked against scipy in the tests.
- :func:`mel_filter_bank` / :func:`mel_spectrogram`: torchaudio ``melscale_fbanks
  (norm=None, mel_scale="htk")`` semantics and ``MelSpectrogram``'s power STFT
  (centred, reflect padding). The shape is checked; the values could not be compared
  with torchaudio itself (not installable here).
"""

from __future__ import annotations

import functools
import math
import os
import wave
from pathlib import Path

import numpy as np
import torch

from miles_tune.data.errors import DatasetError

__all__ = [
    "fit_length",
    "mel_filter_bank",
    "mel_spectrogram",
    "read_wav",
    "resample",
    "scipy_spectrogram",
    "tukey_window",
]


def _pcm_to_float(raw: bytes, width: int, channels: int) -> np.ndarray:
    if width == 1:  # unsigned 8-bit, offset 128
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:  # little-endian 24-bit: widen to int32 keeping the sign
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:
        raise ValueError(f"unsupported sample width {width} bytes")
    return x.reshape(-1, channels)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono float32 in [-1, 1]; returns ``(samples, sample_rate)``.

    Raises :class:`DatasetError` naming the file if it is missing or corrupt. An empty
    file (no samples) is returned as an empty array: the caller decides whether that is
    an error or a known-broken clip.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"missing audio file {path}", path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
        if len(raw) != n * channels * width:
            raise DatasetError(
                f"corrupt WAV {path}: header announces {n} frames, "
                f"file holds {len(raw) // max(channels * width, 1)}",
                path,
            )
        x = _pcm_to_float(raw, width, channels)
    except DatasetError:
        raise
    except (wave.Error, EOFError, ValueError) as exc:
        if "unknown format: 3" not in str(exc):  # 3 = IEEE float, which wave cannot read
            raise DatasetError(f"corrupt or unsupported WAV {path}: {exc}", path) from exc
        x, rate = _read_float_wav(path)
    if rate <= 0:
        raise DatasetError(f"corrupt WAV {path}: sample rate {rate}", path)
    return np.ascontiguousarray(x.mean(axis=1, dtype=np.float32)), int(rate)


def _read_float_wav(path: Path) -> tuple[np.ndarray, int]:
    try:
        from scipy.io import wavfile
    except ImportError as exc:  # pragma: no cover - scipy is in the data extra
        raise DatasetError(f"{path} is a float WAV; reading it needs scipy", path) from exc
    try:
        rate, x = wavfile.read(str(path))
    except Exception as exc:
        raise DatasetError(f"corrupt WAV {path}: {exc}", path) from exc
    x = np.asarray(x, dtype=np.float32)
    return (x[:, None] if x.ndim == 1 else x), int(rate)


# --- resampling -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _sinc_kernel(up: int, down: int, zero_crossings: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """(up, K) polyphase taps and the left margin M (in input samples)."""
    cutoff = rolloff * min(1.0, up / down)  # fraction of the input Nyquist frequency
    half_width = zero_crossings / cutoff  # window half-length in input samples
    margin = math.ceil(half_width)
    taps = down + 2 * margin + 1
    p = torch.arange(up, dtype=torch.float64)[:, None]
    o = torch.arange(taps, dtype=torch.float64)[None, :]
    tau = p * down / up + margin - o  # output time minus input time, in input samples
    h = cutoff * torch.sinc(cutoff * tau) * torch.cos(math.pi * tau / (2 * half_width)) ** 2
    h = torch.where(tau.abs() <= half_width, h, torch.zeros_like(h))
    return h / h.sum(dim=1, keepdim=True), margin


def resample(
    x: torch.Tensor, orig_freq: int, new_freq: int, *, zero_crossings: int = 16, rolloff: float = 0.95
) -> torch.Tensor:
    """Resample the last axis of ``x`` from ``orig_freq`` to ``new_freq`` Hz (see module docstring).

    Output length is ``ceil(L * new / orig)``; dtype follows ``x`` (computed in float64).
    """
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return x
    g = math.gcd(int(orig_freq), int(new_freq))
    up, down = new_freq // g, orig_freq // g
    kernel, margin = _sinc_kernel(up, down, zero_crossings, rolloff)  # (up, K)
    shape, length = x.shape[:-1], x.shape[-1]
    out_len = -(-length * up // down)
    n_frames = -(-out_len // up)
    flat = x.reshape(-1, length).to(torch.float64)
    right = (n_frames - 1) * down + kernel.shape[1] - margin - length
    padded = torch.nn.functional.pad(flat, (margin, max(right, 0)))
    frames = padded.unfold(-1, kernel.shape[1], down)[:, :n_frames]  # (rows, n_frames, K)
    y = (frames @ kernel.T).reshape(flat.shape[0], -1)[:, :out_len]  # (rows, n_frames * up) -> cut
    return y.reshape(*shape, out_len).to(x.dtype)


def fit_length(x: torch.Tensor, length: int, mode: str = "tile") -> torch.Tensor:
    """Make the last axis exactly ``length`` long: ``tile`` (repeat, then cut) or ``pad`` (zeros)."""
    n = x.shape[-1]
    if n == 0:
        raise ValueError("cannot fit an empty signal")
    if mode == "tile":
        if n < length:
            x = x.repeat(*([1] * (x.dim() - 1)), -(-length // n))
    elif mode == "pad":
        if n < length:
            x = torch.nn.functional.pad(x, (0, length - n))
    else:
        raise ValueError(f"mode must be 'tile' or 'pad', got {mode!r}")
    return x[..., :length]


# --- scipy-style spectrogram ----------------------------------------------------------------


def tukey_window(m: int, alpha: float = 0.25, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """scipy's periodic (``sym=False``) Tukey window of length ``m``."""
    n_sym = m + 1  # the periodic window is the symmetric one of length m + 1 without its last sample
    n = torch.arange(n_sym, dtype=torch.float64)
    if alpha <= 0:
        w = torch.ones(n_sym, dtype=torch.float64)
    else:
        width = math.floor(alpha * (n_sym - 1) / 2.0)
        w = torch.ones(n_sym, dtype=torch.float64)
        head = n <= width
        tail = n >= n_sym - width - 1
        w[head] = 0.5 * (1 + torch.cos(math.pi * (-1 + 2.0 * n[head] / (alpha * (n_sym - 1)))))
        w[tail] = 0.5 * (1 + torch.cos(math.pi * (-2.0 / alpha + 1 + 2.0 * n[tail] / (alpha * (n_sym - 1)))))
    return w[:m].to(dtype)


def scipy_spectrogram(x: torch.Tensor, fs: float, nperseg: int = 512, noverlap: int = 353) -> torch.Tensor:
    """``scipy.signal.spectrogram(x, fs, nperseg=nperseg, noverlap=noverlap)[2]`` in torch.

    (..., L) -> (..., nperseg // 2 + 1, 1 + (L - nperseg) // (nperseg - noverlap)), float64.
    """
    if x.shape[-1] < nperseg:
        raise ValueError(f"signal of {x.shape[-1]} samples is shorter than nperseg={nperseg}")
    hop = nperseg - noverlap
    w = tukey_window(nperseg)
    frames = x.to(torch.float64).unfold(-1, nperseg, hop)  # (..., T, nperseg)
    frames = (frames - frames.mean(-1, keepdim=True)) * w  # constant detrend, then window
    power = torch.fft.rfft(frames, n=nperseg).abs() ** 2 / (fs * (w**2).sum())  # density scaling
    if nperseg % 2 == 0:
        power[..., 1:-1] *= 2  # one-sided: double all but DC and Nyquist
    else:
        power[..., 1:] *= 2
    return power.transpose(-1, -2)  # (..., F, T)


# --- mel ------------------------------------------------------------------------------------


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filter_bank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_freqs, n_mels) triangular HTK-mel filters, unnormalised (torchaudio ``norm=None``)."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    mels = torch.linspace(
        _hz_to_mel(torch.tensor(float(f_min), dtype=torch.float64)).item(),
        _hz_to_mel(torch.tensor(float(f_max), dtype=torch.float64)).item(),
        n_mels + 2,
        dtype=torch.float64,
    )
    edges = _mel_to_hz(mels)  # (n_mels + 2,)
    diff = edges[1:] - edges[:-1]  # (n_mels + 1,)
    slopes = edges[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def mel_spectrogram(
    x: torch.Tensor,
    sample_rate: int,
    *,
    n_fft: int = 400,
    hop_length: int = 200,
    n_mels: int = 128,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> torch.Tensor:
    """Power mel spectrogram (..., L) -> (..., n_mels, T), T = 1 + L // hop (centred STFT)."""
    if x.shape[-1] <= n_fft // 2:  # reflect padding needs more samples than the pad
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.shape[-1]))
    shape = x.shape[:-1]
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]).to(torch.float64),
        n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=torch.hann_window(n_fft, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.abs() ** 2  # (rows, n_fft // 2 + 1, T)
    fb = mel_filter_bank(
        n_fft // 2 + 1, f_min, f_max if f_max is not None else sample_rate / 2, n_mels, sample_rate
    )
    mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)  # (rows, n_mels, T)
    return mel.reshape(*shape, n_mels, mel.shape[-1])
