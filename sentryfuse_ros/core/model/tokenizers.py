"""Per-modality tokenizers: model input tensors -> (B, N, C) tokens with position and modality embeddings.

Shapes:
    B batch, C width, N tokens of one modality, S x SW input rows x columns (camera image or BEV grid),
    P patch side, NH x NW patch grid, A audio samples, M mel bands, R frames per audio token.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sentryfuse_ros.core.model.melspec import LogMel, num_frames
from sentryfuse_ros.core.errors import ModelError


def resize_pos_embed(pos: Tensor, old_grid: Tuple[int, int], new_grid: Tuple[int, int]) -> Tensor:
    """Position embeddings (NH*NW, C) of a patch grid bicubically resized to another grid (NH'*NW', C).

    Lets a checkpoint trained at one input size be loaded at another (ViT practice).
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos
    c = pos.shape[-1]
    grid = pos.detach().float().reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2)  # (1, C, NH, NW)
    grid = F.interpolate(grid, size=tuple(new_grid), mode='bicubic', align_corners=False)    # (1, C, NH', NW')
    return grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], c).to(pos.dtype)    # (NH'*NW', C)


class PatchTokenizer(nn.Module):
    """(B, in_chans, S, SW) grid -> (B, NH*NW, C) patch tokens (conv with stride = patch).

    Loading a state dict whose ``pos`` was trained for another patch grid interpolates it (the
    grid is recorded in the ``pos_grid`` buffer; an old state dict without it must be square).

    Args:
        name: modality name, for error messages.
        in_chans: input channels.
        size: input rows S, or (S, SW) rows and columns.
        patch: patch side P (S % P == SW % P == 0).
        dim: token width C.
        input_norm: standardise each input channel, (x - mean) / std, with the ``in_mean``/``in_std``
            buffers (identity until ``set_input_norm``; stored in the state dict). A sparse input such as
            a lidar BEV grid (9% of cells set, std 0.05-0.12 on the robot scenes, against ~0.8 for the
            camera) otherwise enters at a tenth of the camera's scale, and its branch can stay unlearned.
    """

    def __init__(self, *, name: str, in_chans: int, size, patch: int, dim: int, input_norm: bool = False):
        super().__init__()
        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if hw[0] % patch or hw[1] % patch:
            raise ModelError(f'{name} input {hw[0]}x{hw[1]}: expected both sides divisible by patch={patch}')
        self.name, self.in_chans, self.size, self.patch, self.dim = name, in_chans, hw, patch, dim
        self.grid = (hw[0] // patch, hw[1] // patch)  # (NH, NW)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(self.num_tokens, dim))
        self.modality = nn.Parameter(torch.zeros(dim))
        self.register_buffer('pos_grid', torch.tensor(self.grid), persistent=True)
        self.input_norm = bool(input_norm)
        if self.input_norm:
            self.register_buffer('in_mean', torch.zeros(in_chans), persistent=True)  # (in_chans,)
            self.register_buffer('in_std', torch.ones(in_chans), persistent=True)    # (in_chans,)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.modality, std=0.02)
        self._register_load_state_dict_pre_hook(self._interpolate_pos)

    def _interpolate_pos(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + 'pos'
        if key not in state_dict:
            return
        pos = state_dict[key]
        grid_key = prefix + 'pos_grid'
        if grid_key in state_dict:
            old = tuple(int(v) for v in state_dict[grid_key].tolist())
        else:  # state dicts written before non-square inputs: square grids
            side = int(round(pos.shape[0] ** 0.5))
            old = (side, side) if side * side == pos.shape[0] else self.grid
        if old[0] * old[1] != pos.shape[0]:
            raise ModelError(f'{self.name} pos embedding has {pos.shape[0]} rows: expected {old[0]}x{old[1]}')
        state_dict[key] = resize_pos_embed(pos, old, self.grid)
        state_dict[grid_key] = torch.tensor(self.grid)

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.in_chans,) + self.size
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ModelError(f'{self.name} input shape {tuple(x.shape)}: expected (batch, {expected[0]}, '
                             f'{expected[1]}, {expected[2]})')
        if self.input_norm:
            x = (x - self.in_mean.view(1, -1, 1, 1).to(x.dtype)) / self.in_std.view(1, -1, 1, 1).to(x.dtype)
        x = self.proj(x)                  # (B, C, NH, NW)
        x = x.flatten(2).transpose(1, 2)  # (B, C, N) -> (B, N, C)
        return x + self.pos + self.modality

    def set_input_norm(self, mean: Tensor, std: Tensor) -> None:
        """Per-channel input statistics (in_chans,) each; std values below 1e-6 are raised to 1e-6."""
        if not self.input_norm:
            raise ModelError(f'{self.name} tokenizer built without input_norm: set model.input_norm: true')
        mean, std = torch.as_tensor(mean).float().reshape(-1), torch.as_tensor(std).float().reshape(-1)
        if mean.numel() != self.in_chans or std.numel() != self.in_chans:
            raise ModelError(f'{self.name} input statistics of {mean.numel()}/{std.numel()} channels: expected '
                             f'{self.in_chans}')
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ModelError(f'{self.name} input statistics mean={mean.tolist()} std={std.tolist()}: expected '
                             'finite values')
        self.in_mean.copy_(mean)
        self.in_std.copy_(std.clamp_min(1e-6))

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
        f_min: lowest mel band edge [Hz].
        f_max: highest mel band edge [Hz] (0 = Nyquist).
    """

    def __init__(self, *, samples: int, sample_rate: int, n_fft: int, hop: int, n_mels: int,
                 patch_frames: int, dim: int, f_min: float = 0.0, f_max: float = 0.0):
        super().__init__()
        self.name, self.samples, self.patch_frames, self.n_mels, self.dim = 'audio', samples, patch_frames, n_mels, dim
        self.logmel = LogMel(sample_rate=sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels, f_min=f_min, f_max=f_max)
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
        return PatchTokenizer(name='camera', in_chans=3, size=pre_cfg.image_hw, patch=model_cfg.image_patch,
                              dim=model_cfg.dim, input_norm=model_cfg.input_norm)
    if modality == 'lidar':
        return PatchTokenizer(name='lidar', in_chans=3, size=pre_cfg.bev_hw, patch=model_cfg.bev_patch,
                              dim=model_cfg.dim, input_norm=model_cfg.input_norm)
    if modality == 'audio':
        return AudioTokenizer(samples=pre_cfg.audio_samples, sample_rate=pre_cfg.audio_rate, n_fft=model_cfg.n_fft,
                              hop=model_cfg.hop, n_mels=model_cfg.n_mels, patch_frames=model_cfg.audio_patch_frames,
                              dim=model_cfg.dim, f_min=model_cfg.mel_f_min, f_max=model_cfg.mel_f_max)
    raise ModelError(f'modality {modality!r}: expected camera, lidar or audio')
