"""Band-limited resampling of mono PCM in numpy (no scipy): a Kaiser-windowed sinc, polyphase for
integer rate ratios. Used by the message conversions (any microphone rate -> the model's rate).

Shapes: pcm (L,) float32 -> (L * to_rate / from_rate,) float32.
"""
import math

import numpy as np

from sentryfuse_ros.core.errors import ConversionError


def _sinc_weights(frac: np.ndarray, offsets: np.ndarray, cutoff: float, half: int) -> np.ndarray:
    """(n, taps) Kaiser-windowed sinc weights, unit DC gain, for fractional positions ``frac``."""
    dist = frac[:, None] - offsets[None, :]  # (n, taps) distance to each input tap [samples]
    window = np.i0(8.0 * np.sqrt(np.clip(1.0 - (dist / half) ** 2, 0.0, 1.0)))  # ~80 dB
    weights = np.sinc(cutoff * dist) * window
    return weights / weights.sum(axis=1, keepdims=True)


def resample(pcm: np.ndarray, from_rate: float, to_rate: float, *,
             zero_crossings: int = 16, chunk: int = 8192) -> np.ndarray:
    """Band-limited resampling of mono float PCM (Kaiser-windowed sinc, numpy only).

    Output sample n sits at input position t = n * from_rate / to_rate and sums the inputs
    within ``zero_crossings`` lobes of a sinc cut off at min(from, to)/2, so downsampling does
    not alias. For integer rates whose reduced ratio up/down has up <= 4096 (48k->16k, 44.1k->16k,
    8k->16k) the weights of the ``up`` phases are computed once (polyphase); otherwise per
    sample. Vectorized over ``chunk`` outputs at a time.

    Args:
        pcm: (samples,) float PCM.
        from_rate: input rate [Hz] > 0.
        to_rate: output rate [Hz] > 0.
        zero_crossings: half-width of the sinc kernel in lobes (quality vs cost).
        chunk: outputs computed per vectorized block (memory: chunk * taps floats).
    """
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.ndim != 1:
        raise ConversionError(f'pcm shape is {pcm.shape}, expected (samples,)')
    for name, rate in (('from_rate', from_rate), ('to_rate', to_rate)):
        if not (math.isfinite(rate) and rate > 0):
            raise ConversionError(f'{name} is {rate}, expected a finite rate > 0')
    if from_rate == to_rate or pcm.size == 0:
        return pcm.copy()
    ratio = from_rate / to_rate  # input samples per output sample
    n_out = int(math.floor(pcm.size / ratio))
    cutoff = min(1.0, 1.0 / ratio)  # fraction of the input Nyquist kept
    half = int(math.ceil(zero_crossings / cutoff))  # taps each side
    offsets = np.arange(-half + 1, half + 1)  # (taps,)
    table = None
    if float(from_rate).is_integer() and float(to_rate).is_integer():
        g = math.gcd(int(from_rate), int(to_rate))
        up, down = int(to_rate) // g, int(from_rate) // g
        if up <= 4096:
            table = _sinc_weights(np.arange(up) / up, offsets, cutoff, half)  # (up, taps)
    out = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, chunk):
        n = np.arange(start, min(start + chunk, n_out), dtype=np.int64)  # (n,)
        if table is not None:
            base, phase = np.divmod(n * down, up)
            weights = table[phase]  # (n, taps)
        else:
            t = n * ratio
            base = np.floor(t).astype(np.int64)
            weights = _sinc_weights(t - base, offsets, cutoff, half)  # (n, taps)
        idx = base[:, None] + offsets[None, :]  # (n, taps) input indices
        taps = np.where((idx >= 0) & (idx < pcm.size), pcm[np.clip(idx, 0, pcm.size - 1)], 0.0)
        out[start:start + n.size] = (taps * weights).sum(axis=1)
    return out
