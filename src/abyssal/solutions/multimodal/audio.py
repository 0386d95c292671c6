"""Audio for the multimodal solution: WAV files read to mono float32, and a log-mel front end.

:func:`read_audio` reads a WAV file (RIFF/RIFX/RF64, as :mod:`scipy.io.wavfile` reads it):

- integer PCM becomes float32 in [-1, 1]: 8-bit (unsigned, centred on 128) / 128, 16-bit / 2^15,
  24- and 32-bit / 2^31 (scipy left-justifies 24-bit in int32), 64-bit / 2^63; float files are
  kept, clipped to [-1, 1] with a warning when they go beyond;
- several channels are mixed to mono by their mean;
- a file at another rate is resampled with :func:`scipy.signal.resample_poly` (up/down reduced by
  their greatest common divisor) and a warning says so;
- ``max_seconds`` cuts longer audio, with a warning.

Problems a user can fix are :class:`~abyssal.core.errors.DataError` naming the file: no such file,
not a WAV file or unreadable (scipy's complaint quoted), no samples, non-finite samples.

:func:`log_mel` turns waveforms into log-mel spectrograms: ``torchaudio.transforms.MelSpectrogram``
when torchaudio is importable, else the same computation in plain torch (centred ``torch.stft``
with reflect padding and a periodic Hann window, power 2, a triangular filterbank on the HTK mel
scale without normalisation, then ``log(x + 1e-6)``). The two follow the same definition
(torchaudio 2.11's transforms are pure PyTorch), so they agree to within float32 rounding; the
plain-torch path is the one this project's tests run.

Example:
    >>> x, notes = read_audio("clip.wav", sample_rate=16000, max_seconds=10)  # doctest: +SKIP
    >>> notes  # doctest: +SKIP
    ['resampled from 44100 Hz to 16000 Hz']
    >>> log_mel(torch.from_numpy(x)[None], 16000).shape  # doctest: +SKIP
    torch.Size([1, 64, 1001])
"""

from __future__ import annotations

import math
import warnings as pywarnings
from pathlib import Path

import numpy as np
import torch

from abyssal.core.errors import ConfigError, DataError
from abyssal.core.optional import require

EPS = 1e-6
"""Added to the mel power before the log, so silence gives log(1e-6), not -inf."""
WINDOW_SECONDS = 0.025
"""Default analysis window: 25 ms."""
HOP_SECONDS = 0.010
"""Default hop between frames: 10 ms."""


# --- reading ------------------------------------------------------------------------------------


def read_audio(
    path: str | Path, *, sample_rate: int, max_seconds: float | None = None
) -> tuple[np.ndarray, list[str]]:
    """Read a WAV file as mono float32 in [-1, 1] at ``sample_rate``.

    Args:
        path: the WAV file.
        sample_rate: the rate to return, in Hz; other rates are resampled.
        max_seconds: cut audio longer than this many seconds (``None``: keep it all).

    Returns:
        ``(waveform, warnings)``: the samples, shape ``(T,)`` float32, and what was changed
        (resampling, cutting, clipping, scipy's own warnings about the file).

    Raises:
        ConfigError: ``sample_rate`` or ``max_seconds`` is not positive.
        DataError: names the file: missing, not a WAV file or unreadable, no samples, or
            non-finite samples.

    Example:
        >>> x, notes = read_audio("speech.wav", sample_rate=8000)  # doctest: +SKIP
        >>> x.dtype, notes  # doctest: +SKIP
        (dtype('float32'), ['resampled from 44100 Hz to 8000 Hz'])
    """
    _check_arguments(sample_rate, max_seconds)
    path = Path(path)
    rate, data, notes = _read_wav(path)
    samples = _mono(_to_float(data, path, notes))
    if max_seconds is not None:
        samples = _cut(samples, math.ceil(max_seconds * rate), max_seconds, notes)
    if rate != sample_rate:
        samples = _resample(samples, rate, sample_rate)
        notes.append(f"resampled from {rate} Hz to {sample_rate} Hz")
    if max_seconds is not None:  # exact length at the new rate (the cut above saves work)
        samples = samples[: round(max_seconds * sample_rate)]
    return samples.astype(np.float32, copy=False), notes


def _check_arguments(sample_rate: int, max_seconds: float | None) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive whole number of Hz; got {sample_rate!r}")
    if max_seconds is not None and not (max_seconds > 0 and math.isfinite(max_seconds)):
        raise ConfigError(f"max_seconds must be a positive number or None; got {max_seconds!r}")


def _read_wav(path: Path) -> tuple[int, np.ndarray, list[str]]:
    """The file's rate, its samples ``(T,)`` or ``(T, C)``, and scipy's warnings about it."""
    if not path.exists():
        raise DataError("no such audio file", path=path)
    if path.is_dir():
        raise DataError("a folder, not an audio file", path=path)
    wavfile = require("scipy.io.wavfile", extra="multimodal", purpose="audio files")
    with pywarnings.catch_warnings(record=True) as caught:
        pywarnings.simplefilter("always")
        try:
            rate, data = wavfile.read(path)
        except Exception as e:  # scipy's parser raises many kinds on malformed files
            raise DataError(
                f"cannot be read as a WAV file ({type(e).__name__}: {e}); expected a PCM or "
                "float WAV file (RIFF)",
                path=path,
            ) from None
    notes = [str(w.message) for w in caught]
    if data.shape[0] == 0:
        raise DataError("the WAV file holds no samples (0 frames)", path=path)
    return int(rate), data, notes


def _to_float(data: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """Samples as float32 in [-1, 1] (integer PCM scaled, floats checked and clipped)."""
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.signedinteger):
        full_scale = float(2 ** (8 * data.dtype.itemsize - 1))
        return (data.astype(np.float64) / full_scale).astype(np.float32)
    if not np.issubdtype(data.dtype, np.floating):
        raise DataError(f"samples of type {data.dtype} are not PCM audio", path=path)
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.argmin(finite.reshape(len(data), -1).all(axis=1)))
        raise DataError(
            f"{int((~finite).sum())} sample(s) are NaN or infinite (the first at frame {first})",
            path=path,
        )
    peak = float(np.abs(data).max())
    if peak > 1.0:
        notes.append(f"float samples reach {peak:.3g}, beyond [-1, 1]: clipped")
    return np.clip(data, -1.0, 1.0).astype(np.float32)


def _mono(samples: np.ndarray) -> np.ndarray:
    """``(T,)`` as is; ``(T, C)`` mixed to ``(T,)`` by the mean of the channels."""
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def _cut(samples: np.ndarray, limit: int, max_seconds: float, notes: list[str]) -> np.ndarray:
    if len(samples) <= limit:
        return samples
    notes.append(f"cut to the first {max_seconds:g} s (max_seconds)")
    return samples[:limit]


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling by ``target / rate`` reduced to lowest terms, clipped to [-1, 1]
    (the anti-aliasing filter can overshoot a little)."""
    signal = require("scipy.signal", extra="multimodal", purpose="resampling audio")
    g = math.gcd(rate, target)
    out = signal.resample_poly(samples.astype(np.float64), target // g, rate // g)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


# --- log-mel ------------------------------------------------------------------------------------


def frame_sizes(sample_rate: int) -> tuple[int, int, int]:
    """Default ``(n_fft, win_length, hop_length)``: a 25 ms window, a 10 ms hop, and the FFT
    size the next power of two at or above the window (512 at 16 kHz).

    Example:
        >>> frame_sizes(16000)
        (512, 400, 160)
    """
    win = max(1, round(WINDOW_SECONDS * sample_rate))
    hop = max(1, round(HOP_SECONDS * sample_rate))
    return 1 << (win - 1).bit_length(), win, hop


def hz_to_mel(hz: float | torch.Tensor) -> float | torch.Tensor:
    """HTK mel scale: ``2595 * log10(1 + hz / 700)``."""
    if isinstance(hz, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`: ``700 * (10 ** (mel / 2595) - 1)``."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, sample_rate: int, n_mels: int, f_min: float, f_max: float
) -> torch.Tensor:
    """Triangular filters equally spaced on the HTK mel scale, unnormalised (peak 1), as
    ``torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk")``.

    Shapes:
        returns ``(n_freqs, n_mels)``: column ``m`` weighs the FFT bins of mel band ``m``.
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)  # the STFT bin centres, in Hz
    m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts = mel_to_hz(m_pts)  # (n_mels + 2,) band edges; band m peaks at f_pts[m + 1]
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]  # rising edge of each triangle
    up = slopes[:, 2:] / f_diff[1:]  # falling edge
    return torch.clamp(torch.minimum(down, up), min=0.0)


def log_mel(
    waveform: torch.Tensor,
    sample_rate: int,
    n_mels: int = 64,
    *,
    n_fft: int | None = None,
    win_length: int | None = None,
    hop_length: int | None = None,
    f_min: float = 0.0,
    f_max: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Log-mel spectrogram: ``log(mel(|STFT|^2) + 1e-6)``.

    Frames are centred (the signal is reflect-padded by ``n_fft // 2`` on each side), so a
    waveform of ``T`` samples gives ``1 + T // hop_length`` frames. Clips of ``n_fft // 2``
    samples or fewer, too short to reflect-pad, are first zero-padded on the right to
    ``n_fft // 2 + 1`` samples (so give ``1 + (n_fft // 2 + 1) // hop_length`` frames).

    Args:
        waveform: the samples, float, ``(B, T)`` (any leading dimensions work).
        sample_rate: their rate in Hz.
        n_mels: mel bands.
        n_fft: FFT size (default from :func:`frame_sizes`: 512 at 16 kHz).
        win_length: Hann window length (default 25 ms), at most ``n_fft``.
        hop_length: samples between frames (default 10 ms).
        f_min: lowest band edge in Hz.
        f_max: highest band edge in Hz (default ``sample_rate / 2``).
        backend: ``auto`` (torchaudio if importable, else plain torch), ``torch`` or
            ``torchaudio``.

    Returns:
        The log-mel spectrogram, float32, on the waveform's device.

    Shapes:
        waveform ``(B, T)`` -> ``(B, n_mels, 1 + T // hop_length)``.

    Raises:
        ConfigError: a size or frequency out of range, or an unknown ``backend``.

    Example:
        >>> log_mel(torch.zeros(2, 16000), 16000).shape
        torch.Size([2, 64, 101])
    """
    default_fft, default_win, default_hop = frame_sizes(sample_rate)
    win_length = win_length or min(default_win, n_fft or default_win)
    n_fft = n_fft or max(default_fft, 1 << (win_length - 1).bit_length())
    hop_length = hop_length or default_hop
    f_max = sample_rate / 2 if f_max is None else f_max
    _check_mel_arguments(sample_rate, n_mels, n_fft, win_length, hop_length, f_min, f_max)
    x = _pad_short(waveform.float(), n_fft)
    sizes = dict(n_fft=n_fft, win_length=win_length, hop_length=hop_length)
    if _use_torchaudio(backend):
        mel = _torchaudio_mel(x, sample_rate, n_mels, f_min, f_max, **sizes)
    else:
        mel = _torch_mel(x, sample_rate, n_mels, f_min, f_max, **sizes)
    return torch.log(mel + EPS)


def _check_mel_arguments(
    sample_rate: int, n_mels: int, n_fft: int, win: int, hop: int, f_min: float, f_max: float
) -> None:
    if sample_rate <= 0 or n_mels <= 0 or n_fft <= 0 or win <= 0 or hop <= 0:
        raise ConfigError(
            "sample_rate, n_mels, n_fft, win_length and hop_length must be positive; got "
            f"{sample_rate}, {n_mels}, {n_fft}, {win}, {hop}"
        )
    if win > n_fft:
        raise ConfigError(f"win_length {win} is longer than n_fft {n_fft}")
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ConfigError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 ({sample_rate / 2:g} Hz); got "
            f"f_min={f_min:g}, f_max={f_max:g}"
        )


def _pad_short(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Zero-pad ``(..., T)`` on the right to ``n_fft // 2 + 1`` samples, the least that reflect
    padding accepts."""
    need = n_fft // 2 + 1 - x.shape[-1]
    return torch.nn.functional.pad(x, (0, need)) if need > 0 else x


def _use_torchaudio(backend: str) -> bool:
    if backend not in ("auto", "torch", "torchaudio"):
        raise ConfigError(f"backend must be auto, torch or torchaudio; got {backend!r}")
    if backend == "torch":
        return False
    if backend == "torchaudio":
        require("torchaudio", extra="multimodal", purpose="the torchaudio log-mel backend")
        return True
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_mel(
    x: torch.Tensor,
    sample_rate: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    *,
    n_fft: int,
    win_length: int,
    hop_length: int,
) -> torch.Tensor:
    """Mel power ``(..., n_mels, frames)`` of ``x (..., T)`` in plain torch."""
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])  # (N, T): stft takes one batch dimension
    window = torch.hann_window(win_length, device=x.device)  # periodic, as torchaudio's
    spec = torch.stft(
        flat,
        n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=True,
        pad_mode="reflect",
        onesided=True,
        return_complex=True,
    )  # (N, n_fft // 2 + 1, frames)
    power = spec.abs().pow(2.0)
    fb = mel_filterbank(n_fft // 2 + 1, sample_rate, n_mels, f_min, f_max).to(x.device)
    mel = torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)  # (N, n_mels, frames)
    return mel.reshape(*lead, n_mels, mel.shape[-1])


def _torchaudio_mel(
    x: torch.Tensor,
    sample_rate: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    *,
    n_fft: int,
    win_length: int,
    hop_length: int,
) -> torch.Tensor:
    """Mel power ``(..., n_mels, frames)`` with ``torchaudio.transforms.MelSpectrogram``."""
    transforms = require("torchaudio.transforms", extra="multimodal", purpose="log-mel features")
    mel = transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=n_fft,
        win_length=win_length,
        hop_length=hop_length,
        f_min=f_min,
        f_max=f_max,
        n_mels=n_mels,
        power=2.0,
        center=True,
        pad_mode="reflect",
        norm=None,
        mel_scale="htk",
    )
    return mel.to(x.device)(x)
