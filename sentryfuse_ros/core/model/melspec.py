"""Log-mel spectrogram in plain torch (no torchaudio): a mel filterbank matrix and torch.stft.

Shapes:
    B batch, A waveform samples, K = n_fft // 2 + 1 frequency bins, M mel bands,
    N = 1 + A // hop STFT frames (centred, reflect-padded).
"""
import torch
from torch import Tensor, nn

from sentryfuse_ros.core.errors import ModelError

LOG_FLOOR = 1e-4   # added to mel power before the log (about -9.2 in log units)
LOG_SCALE = 0.25   # log-mel values are multiplied by this so they sit roughly in [-2.5, 2.5]


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale: 2595 * log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(*, n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float = 0.0) -> Tensor:
    """Triangular mel filters (peak 1) as a (M, K) matrix.

    Args:
        n_fft: STFT size; K = n_fft // 2 + 1 bins from 0 to sample_rate / 2.
        n_mels: number of bands M.
        sample_rate: waveform rate [Hz].
        f_min: lowest band edge [Hz].
        f_max: highest band edge [Hz]; 0 means sample_rate / 2.
    """
    f_max = f_max or sample_rate / 2.0
    if not 0 <= f_min < f_max <= sample_rate / 2.0:
        raise ModelError(f'mel filterbank f_min={f_min}, f_max={f_max}: expected 0 <= f_min < f_max <= '
                         f'{sample_rate / 2.0} (Nyquist)')
    cpu = torch.device('cpu')  # also when a model is built on the meta device (checkpoint.py checks shapes so)
    freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64, device=cpu)  # (K,)
    mel_lo, mel_hi = (float(hz_to_mel(torch.tensor(f, device=cpu))) for f in (f_min, f_max))
    edges = mel_to_hz(torch.linspace(mel_lo, mel_hi, n_mels + 2, dtype=torch.float64, device=cpu))  # (M + 2,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    rising = (freqs[None, :] - lower) / (centre - lower)   # (M, K)
    falling = (upper - freqs[None, :]) / (upper - centre)  # (M, K)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()  # (M, K)


def num_frames(num_samples: int, hop: int) -> int:
    """STFT frames of a centred transform: 1 + A // hop."""
    return 1 + num_samples // hop


class LogMel(nn.Module):
    """(B, A) waveform -> (B, N, M) scaled log-mel power.

    Args:
        sample_rate: waveform rate [Hz].
        n_fft: STFT size (Hann window of the same length).
        hop: STFT hop [samples].
        n_mels: mel bands M.
        f_min: lowest band edge [Hz].
        f_max: highest band edge [Hz] (0 = Nyquist).
    """

    def __init__(self, *, sample_rate: int, n_fft: int, hop: int, n_mels: int, f_min: float = 0.0,
                 f_max: float = 0.0):
        super().__init__()
        self.n_fft, self.hop, self.n_mels = n_fft, hop, n_mels
        self.register_buffer('window', torch.hann_window(n_fft), persistent=False)
        self.register_buffer('filterbank', mel_filterbank(n_fft=n_fft, n_mels=n_mels, sample_rate=sample_rate,
                                                            f_min=f_min, f_max=f_max).T,
                             persistent=False)  # (K, M)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() != 2:
            raise ModelError(f'audio waveform shape {tuple(wave.shape)}: expected (batch, samples)')
        spec = torch.stft(wave.float(), self.n_fft, hop_length=self.hop, window=self.window.float(),
                          center=True, pad_mode='reflect', return_complex=True)  # (B, K, N) complex
        power = spec.real.square() + spec.imag.square()  # (B, K, N)
        mel = torch.matmul(power.transpose(1, 2), self.filterbank.float())  # (B, N, K) @ (K, M) -> (B, N, M)
        return (torch.log(mel + LOG_FLOOR) * LOG_SCALE).to(wave.dtype)  # (B, N, M)

    def macs(self, num_samples: int) -> int:
        """Multiply-accumulates flop_counter sees (the mel matmul; the FFT itself is not counted)."""
        return num_frames(num_samples, self.hop) * (self.n_fft // 2 + 1) * self.n_mels
