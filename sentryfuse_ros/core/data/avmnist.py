"""AV-MNIST style two-modality dataset from real files: a handwritten digit and a spoken digit.

camera = an MNIST test image (28x28 grey, replicated to RGB, resized to image_size, standardized);
audio  = a Free Spoken Digit Dataset clip of the same digit (8 kHz mono 16-bit WAV).
The two are paired by label, not recorded together. Splits are disjoint in both modalities:
FSDD by speaker (1 val and 1 test speaker, the other 4 train, so test voices are unseen) and MNIST images
by a seeded partition (70% / 15% / 15%). Files are read in place from ``root``:

    root/mnist/t10k-images-idx3-ubyte.gz, root/mnist/t10k-labels-idx1-ubyte.gz
    root/fsdd/recordings/{digit}_{speaker}_{index}.wav
"""
import gzip
import pathlib
import re
import wave
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from sentryfuse_ros.core.data.datasets import MultimodalTensors
from sentryfuse_ros.core.errors import DataError
from sentryfuse_ros.core.data.preprocess import PreprocessConfig, preprocess_audio, preprocess_camera

DIGIT_NAMES = tuple(str(d) for d in range(10))
SPLITS = ('train', 'val', 'test')
MNIST_FRACTIONS = (0.70, 0.15, 0.15)    # MNIST test images in train / val / test
_IDX_DTYPES = {0x08: np.uint8}
_IDX_MAGIC = {'images': 2051, 'labels': 2049}
_FSDD_NAME = re.compile(r'^(\d)_([A-Za-z]+)_(\d+)\.wav$')


def read_idx(path: pathlib.Path, kind: str) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array: 'images' -> (N, rows, cols), 'labels' -> (N,).

    Args:
        path: the .gz file.
        kind: 'images' (magic 2051) or 'labels' (magic 2049).
    """
    path = pathlib.Path(path)
    try:
        with gzip.open(path, 'rb') as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f'IDX file {str(path)!r} cannot be read as gzip: {exc}') from exc
    if len(raw) < 8:
        raise DataError(f'IDX file {str(path)!r} is {len(raw)} bytes: expected a header of at least 8')
    magic = int.from_bytes(raw[:4], 'big')
    if magic != _IDX_MAGIC[kind]:
        raise DataError(f'IDX file {str(path)!r} has magic number {magic}: expected {_IDX_MAGIC[kind]} for {kind}')
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    header = 4 + 4 * ndim
    if len(raw) - header != int(np.prod(dims)):
        raise DataError(f'IDX file {str(path)!r} holds {len(raw) - header} data bytes: expected {int(np.prod(dims))} '
                        f'for dims {dims}')
    return np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=header).reshape(dims)


def read_wav(path: pathlib.Path) -> Tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as (mono float32 samples in [-1, 1], sample rate); channels are averaged."""
    path = pathlib.Path(path)
    try:
        with wave.open(str(path), 'rb') as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise DataError(f'WAV file {str(path)!r} cannot be read: {exc}') from exc
    if width != 2:
        raise DataError(f'WAV file {str(path)!r} has sample width {width} bytes: expected 2 (16-bit PCM)')
    pcm = np.frombuffer(frames, dtype='<i2').astype(np.float32) / 32768.0
    pcm = pcm.reshape(-1, channels).mean(axis=1)  # (L * C,) -> (L, C) -> (L,)
    return pcm, rate


def _require_dir(path: pathlib.Path) -> pathlib.Path:
    if not path.is_dir():
        raise DataError(f'AV-MNIST folder {str(path)!r} does not exist: expected the shared data layout '
                        f'(mnist/ and fsdd/recordings/)')
    return path


def fsdd_index(recordings: pathlib.Path) -> List[Tuple[int, str, int, pathlib.Path]]:
    """(digit, speaker, take, path) of every clip in ``recordings``, sorted; bad names are errors."""
    clips = []
    for path in sorted(_require_dir(pathlib.Path(recordings)).glob('*.wav')):
        match = _FSDD_NAME.match(path.name)
        if match is None:
            raise DataError(f'FSDD file name {path.name!r}: expected {{digit}}_{{speaker}}_{{index}}.wav')
        clips.append((int(match.group(1)), match.group(2), int(match.group(3)), path))
    if not clips:
        raise DataError(f'FSDD folder {str(recordings)!r} has no .wav clips')
    return clips


def speaker_split(speakers: List[str], seed: int) -> Dict[str, List[str]]:
    """Assign speakers to splits, shuffled by ``seed``: one val, one test, the rest (4 of FSDD's 6) train."""
    speakers = sorted(set(speakers))
    if len(speakers) < 3:
        raise DataError(f'FSDD has speakers {speakers}: expected at least 3 to split by speaker')
    order = [speakers[i] for i in np.random.default_rng([seed, 1]).permutation(len(speakers))]
    return {'train': sorted(order[:-2]), 'val': [order[-2]], 'test': [order[-1]]}


def mnist_split(n_images: int, seed: int) -> Dict[str, np.ndarray]:
    """Disjoint MNIST image indices per split (MNIST_FRACTIONS), shuffled by ``seed``."""
    perm = np.random.default_rng([seed, 2]).permutation(n_images)
    bounds = np.round(np.cumsum([0.0, *MNIST_FRACTIONS]) * n_images).astype(int)
    return {name: perm[a:b] for name, a, b in zip(SPLITS, bounds[:-1], bounds[1:])}


def load_avmnist(root: pathlib.Path, split: str, seed: int, pre_cfg: PreprocessConfig,
                 n: Optional[int] = None) -> MultimodalTensors:
    """The AV-MNIST ``split`` as preprocessed tensors: camera (N, 3, S, S), audio (N, A), labels (N,).

    Every clip of the split's speakers is used once (in a seeded order), each paired with a
    different image of its digit from the split's MNIST images. ``n`` < clips takes the first n
    of that order; ``n`` > clips goes round the clips again with fresh images.

    Args:
        root: the folder holding mnist/ and fsdd/recordings/ (e.g. ../shared/data).
        split: 'train', 'val' or 'test'.
        seed: fixes the speaker assignment, the MNIST partition and the pairing.
        pre_cfg: preprocessing (image_size, audio_rate, audio_samples).
        n: number of samples; default one per clip.
    """
    if split not in SPLITS:
        raise DataError(f'split={split!r}: expected one of {list(SPLITS)}')
    if n is not None and (not isinstance(n, int) or n < 1):
        raise DataError(f'n={n!r}: expected a positive int or None')
    root = _require_dir(pathlib.Path(root))
    mnist_dir = _require_dir(root / 'mnist')
    images = read_idx(mnist_dir / 't10k-images-idx3-ubyte.gz', 'images')
    digits = read_idx(mnist_dir / 't10k-labels-idx1-ubyte.gz', 'labels')
    if len(images) != len(digits):
        raise DataError(f'MNIST has {len(images)} images but {len(digits)} labels: expected equal counts')
    clips = fsdd_index(root / 'fsdd' / 'recordings')
    speakers = speaker_split([c[1] for c in clips], seed)[split]
    clips = [c for c in clips if c[1] in speakers]
    rng = np.random.default_rng([seed, 3, SPLITS.index(split)])
    clip_order = rng.permutation(len(clips))
    image_ids = mnist_split(len(images), seed)[split]
    pools = {d: rng.permutation(image_ids[digits[image_ids] == d]) for d in range(10)}
    used = {d: 0 for d in range(10)}
    total = len(clips) if n is None else n
    s, a = pre_cfg.image_size, pre_cfg.audio_samples
    camera, audio = np.empty((total, 3, s, s), np.float32), np.empty((total, a), np.float32)
    labels = np.empty(total, np.int64)
    for i in range(total):  # one (clip, image) pair per sample
        digit, _, _, path = clips[clip_order[i % len(clips)]]
        pool = pools[digit]
        if len(pool) == 0:
            raise DataError(f'MNIST split {split!r} has no image of digit {digit}: expected every digit')
        image = images[pool[used[digit] % len(pool)]]
        used[digit] += 1
        pcm, rate = read_wav(path)
        camera[i] = preprocess_camera(np.repeat(image[:, :, None], 3, axis=2), pre_cfg)  # (28, 28) -> (28, 28, 3)
        audio[i] = preprocess_audio(pcm, rate, pre_cfg)
        labels[i] = digit
    return MultimodalTensors({'camera': torch.from_numpy(camera), 'audio': torch.from_numpy(audio)},
                             torch.from_numpy(labels), DIGIT_NAMES)


def split_speakers(root: pathlib.Path, seed: int) -> Dict[str, List[str]]:
    """Which FSDD speakers ``load_avmnist`` puts in each split for ``seed``."""
    return speaker_split([c[1] for c in fsdd_index(pathlib.Path(root) / 'fsdd' / 'recordings')], seed)
