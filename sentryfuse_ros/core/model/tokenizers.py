"""Per-modality tokenizers: model input tensors -> (B, N, C) tokens with position and modality embeddings.

Shapes:
    B batch, C width, N tokens of one modality, S image side, G BEV side, P patch side,
    A audio samples, M mel bands, R frames per audio token.
"""
import torch
from torch import Tensor, nn

from sentryfuse_ros.core.model.melspec import LogMel, num_frames
from sentryfuse_ros.core.errors import ModelError


class PatchTokenizer(nn.Module):
    """(B, in_chans, S, S) grid -> (B, (S/P)^2, C) patch tokens (conv with stride = patch).

    Args:
        name: modality name, for error messages.
        in_chans: input channels.
        size: input side S (square).
        patch: patch side P (S % P == 0).
        dim: token width C.
    """

    def __init__(self, *, name: str, in_chans: int, size: int, patch: int, dim: int):
        super().__init__()
        self.name, self.in_chans, self.size, self.patch, self.dim = name, in_chans, size, patch, dim
        self.num_tokens = (size // patch) ** 2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(self.num_tokens, dim))
        self.modality = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.modality, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.in_chans, self.size, self.size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ModelError(f'{self.name} input shape {tuple(x.shape)}: expected (batch, {expected[0]}, '
                             f'{expected[1]}, {expected[2]})')
        x = self.proj(x)                  # (B, C, S/P, S/P)
        x = x.flatten(2).transpose(1, 2)  # (B, C, N) -> (B, N, C)
        return x + self.pos + self.modality

    def macs(self) -> int:
        """Multiply-accumulates of the patch projection at batch 1."""
        return self.num_tokens * self.in_chans * self.patch * self.patch * self.dim


class AudioTokenizer(nn.Module):
    """(B, A) waveform -> log-mel (B, N_frames, M) -> tokens of R frames x all mels -> (B, N, C).

    Trailing frames that do not fill a whole token are dropped.

    Args:
        samples: waveform length A.
        sample_rate: waveform rate [Hz].
        n_fft: STFT size.
        hop: STFT hop.
        n_mels: mel bands M.
        patch_frames: frames per token R.
        dim: token width C.
    """

    def __init__(self, *, samples: int, sample_rate: int, n_fft: int, hop: int, n_mels: int,
                 patch_frames: int, dim: int):
        super().__init__()
        self.name, self.samples, self.patch_frames, self.n_mels, self.dim = 'audio', samples, patch_frames, n_mels, dim
        self.logmel = LogMel(sample_rate=sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels)
        self.num_tokens = num_frames(samples, hop) // patch_frames
        self.proj = nn.Linear(patch_frames * n_mels, dim)
        self.pos = nn.Parameter(torch.zeros(self.num_tokens, dim))
        self.modality = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.modality, std=0.02)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() != 2 or wave.shape[1] != self.samples:
            raise ModelError(f'audio input shape {tuple(wave.shape)}: expected (batch, {self.samples})')
        mel = self.logmel(wave)                                   # (B, N_frames, M)
        n, r = self.num_tokens, self.patch_frames
        mel = mel[:, :n * r].reshape(wave.shape[0], n, r * self.n_mels)  # (B, N*R, M) -> (B, N, R*M)
        return self.proj(mel) + self.pos + self.modality                 # (B, N, C)

    def macs(self) -> int:
        """Multiply-accumulates flop_counter sees at batch 1 (mel matmul + token projection)."""
        return self.logmel.macs(self.samples) + self.num_tokens * self.patch_frames * self.n_mels * self.dim


def build_tokenizer(modality: str, *, model_cfg, pre_cfg) -> nn.Module:
    """The tokenizer of one modality from the model and preprocessing configs."""
    if modality == 'camera':
        return PatchTokenizer(name='camera', in_chans=3, size=pre_cfg.image_size, patch=model_cfg.image_patch,
                              dim=model_cfg.dim)
    if modality == 'lidar':
        return PatchTokenizer(name='lidar', in_chans=3, size=pre_cfg.bev_size, patch=model_cfg.bev_patch,
                              dim=model_cfg.dim)
    if modality == 'audio':
        return AudioTokenizer(samples=pre_cfg.audio_samples, sample_rate=pre_cfg.audio_rate, n_fft=model_cfg.n_fft,
                              hop=model_cfg.hop, n_mels=model_cfg.n_mels, patch_frames=model_cfg.audio_patch_frames,
                              dim=model_cfg.dim)
    raise ModelError(f'modality {modality!r}: expected camera, lidar or audio')
