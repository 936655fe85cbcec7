import math

import pytest
import torch

from sentryfuse_ros.core.model.melspec import LogMel, hz_to_mel, mel_filterbank, mel_to_hz, num_frames
from sentryfuse_ros.core.errors import ModelError

torch.set_num_threads(1)


def test_mel_scale_round_trips():
    hz = torch.tensor([0.0, 440.0, 4000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(hz)), hz)
    assert abs(float(hz_to_mel(torch.tensor(1000.0))) - 1000.0) < 1.0  # 1 kHz ~ 1000 mel (HTK)


@pytest.mark.parametrize('n_fft, n_mels, rate', [(256, 32, 8000), (128, 16, 16000), (512, 40, 8000)])
def test_filterbank_shape_and_triangles(n_fft, n_mels, rate):
    fb = mel_filterbank(n_fft=n_fft, n_mels=n_mels, sample_rate=rate)
    assert fb.shape == (n_mels, n_fft // 2 + 1)
    assert float(fb.min()) >= 0 and float(fb.max()) <= 1.0 + 1e-6
    assert bool((fb.sum(dim=1) > 0).all())                 # every band sees some bin
    centres = fb.argmax(dim=1)
    assert bool((centres[1:] >= centres[:-1]).all())       # bands ordered by frequency


def test_filterbank_rejects_bad_range():
    with pytest.raises(ModelError, match=r'f_max=5000.*Nyquist'):
        mel_filterbank(n_fft=256, n_mels=8, sample_rate=8000, f_max=5000)


@pytest.mark.parametrize('freq', [300.0, 1200.0, 3000.0])
def test_logmel_peak_band_follows_tone(freq):
    rate, n = 8000, 4000
    t = torch.arange(n) / rate
    wave = 0.5 * torch.sin(2 * math.pi * freq * t)[None]  # (1, A)
    lm = LogMel(sample_rate=rate, n_fft=256, hop=128, n_mels=32)
    out = lm(wave)
    assert out.shape == (1, num_frames(n, 128), 32)
    fb = mel_filterbank(n_fft=256, n_mels=32, sample_rate=rate)
    expected_band = int(fb[:, round(freq / (rate / 2) * 128)].argmax())
    peak_band = int(out[0, 5:-5].mean(0).argmax())
    assert abs(peak_band - expected_band) <= 1
    silent = lm(torch.zeros(1, n))
    assert float(out.max()) > float(silent.max()) + 1.0 and torch.isfinite(silent).all()


def test_logmel_checks_shape_and_counts_macs():
    lm = LogMel(sample_rate=8000, n_fft=256, hop=128, n_mels=32)
    with pytest.raises(ModelError, match=r'audio waveform shape \(8000,\): expected \(batch, samples\)'):
        lm(torch.zeros(8000))
    assert lm.macs(8000) == 63 * 129 * 32
