"""core/data/resample.py: band-limited resampling keeps frequencies and does not alias."""
import math

import numpy as np
import pytest

from sentryfuse_ros.core.data import resample as conv
from sentryfuse_ros.core.errors import ConversionError


def _peak_hz(pcm, rate):
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return np.argmax(spectrum) * rate / pcm.size


@pytest.mark.parametrize('from_rate, to_rate, tone', [
    (48000, 16000, 440.0), (44100, 16000, 1000.0), (8000, 16000, 1234.0), (16000, 22050, 3000.0),
    (16000.5, 8000, 700.0),
])
def test_resample_preserves_sine_frequency(from_rate, to_rate, tone):
    t = np.arange(int(from_rate * 0.5)) / from_rate
    out = conv.resample(np.sin(2 * np.pi * tone * t).astype(np.float32), from_rate, to_rate)
    assert out.dtype == np.float32 and abs(out.size - 0.5 * to_rate) <= 1
    assert abs(_peak_hz(out, to_rate) - tone) <= 2.0 + to_rate / out.size
    assert abs(np.sqrt(np.mean(out[200:-200] ** 2)) - math.sqrt(0.5)) < 0.01  # amplitude kept


def test_resample_does_not_alias_and_checks_input():
    t = np.arange(24000) / 48000
    out = conv.resample(np.sin(2 * np.pi * 7000 * t).astype(np.float32), 48000, 8000)
    assert np.sqrt(np.mean(out[100:-100] ** 2)) < 1e-3  # 7 kHz is above the new 4 kHz Nyquist
    same = np.ones(5, np.float32)
    np.testing.assert_array_equal(conv.resample(same, 8000, 8000), same)
    with pytest.raises(ConversionError, match=r'to_rate is 0, expected a finite rate > 0'):
        conv.resample(same, 8000, 0)
    with pytest.raises(ConversionError, match=r'pcm shape is \(1, 5\), expected \(samples,\)'):
        conv.resample(same[None], 8000, 16000)
