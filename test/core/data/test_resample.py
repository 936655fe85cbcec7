"""core/data/resample.py: band-limited resampling keeps frequencies, does not alias, and bounds its work
by the data (absurd rates are refused by name, fast)."""
import math
import re
import time

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
    with pytest.raises(ConversionError, match=r'to_rate is 0, expected a rate in \[1000, 768000\] Hz'):
        conv.resample(same, 8000, 0)
    with pytest.raises(ConversionError, match=r'pcm shape is \(1, 5\), expected \(samples,\)'):
        conv.resample(same[None], 8000, 16000)


@pytest.mark.parametrize('rate', [4294967295, 1, 7, 999, 768001, float('nan'), float('inf'), -16000])
def test_sample_rate_outside_the_audio_range_is_refused_by_name_without_work(rate):
    # 4294967295 made the old resampler size a 205 GiB table; 1 or 7 took 6.3 s per 20 ms frame
    frame = np.zeros(320, np.float32)
    t0 = time.perf_counter()
    with pytest.raises(ConversionError, match=rf'from_rate is {re.escape(repr(rate))}, expected a rate in '
                                              r'\[1000, 768000\] Hz'):
        conv.resample(frame, rate, 8000)
    assert time.perf_counter() - t0 < 0.05


def test_output_is_bounded_by_the_input_and_the_rate_ratio():
    pcm = np.zeros(960, np.float32)
    for from_rate in (1000, 8000, 44100, 768000):
        out = conv.resample(pcm, from_rate, 8000)
        assert abs(out.size - 960 * 8000 / from_rate) <= 1


def test_pcm_with_nan_is_refused_with_the_count():
    pcm = np.zeros(480, np.float32)
    pcm[[3, 7]] = np.nan
    with pytest.raises(ConversionError, match=r'pcm has 2 non-finite samples of 480, expected finite values'):
        conv.resample(pcm, 48000, 8000)
