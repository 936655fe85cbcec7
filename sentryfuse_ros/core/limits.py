"""Limits on the sizes a file may declare, checked before anything is allocated or looped over.

Every format the project reads (checkpoint, ONNX export manifest, bag-dataset manifest and shards,
bag metadata and messages) declares sizes: tensor shapes, model widths, preprocessing sizes, sample
counts, bag durations, compressed payload sizes. A small file can declare a huge size; each reader
checks what is declared against :class:`ReadLimits` and against the data actually present (a shard's
byte count, the tensors stored in a checkpoint, the bag's storage files) before it allocates a
buffer, builds a model or runs a loop whose length the file chose.

The defaults are an order of magnitude above the shipped ``robot`` preset (dim 384, depth 6, 128 x 416
camera input, 128 x 144 BEV grid, 16000 audio samples, a 41 MB checkpoint); a caller that needs more
passes its own ``ReadLimits(...)`` (every reader takes ``limits=``). The chosen values and the cases
they stop are listed in docs/reliability.md.
"""
import dataclasses
import math
import pathlib
from typing import Any

from sentryfuse_ros.core.config import check


@dataclasses.dataclass(frozen=True)
class ReadLimits:
    # --- checkpoints (core/pruning/checkpoint.py) ---
    max_checkpoint_bytes: int = 1 << 30       # uncompressed bytes of all records of a checkpoint (1 GiB)
    max_params: int = 100_000_000             # parameter elements a checkpoint's config may build (400 MB fp32)
    max_dim: int = 4096                       # model.dim, model.head_dim
    max_depth: int = 64                       # model.depth (transformer layers)
    max_heads: int = 64                       # model.num_heads (and so num_kv_heads)
    max_ffn_dim: int = 16384                  # model.ffn_dim
    max_tokens: int = 4096                    # tokens one forward pass attends over (all modalities, fusion included)
    max_audio_bins: int = 8192                # model.n_fft, model.n_mels
    # --- preprocessing sizes (checkpoint config, ONNX manifest, dataset manifest) ---
    max_image_side: int = 2048                # preprocess.image_size / image_width [pixels]
    max_bev_side: int = 2048                  # preprocess.bev_size / bev_width [cells]
    max_audio_samples: int = 10 * 192_000     # preprocess.audio_samples (10 s at 192 kHz)
    max_audio_rate: int = 192_000             # preprocess.audio_rate [Hz]
    # --- datasets (core/data/bagdataset.py) and export manifests (core/runtime/export.py) ---
    max_manifest_bytes: int = 64 << 20        # manifest.json / labels.json size [bytes]
    max_samples: int = 50_000_000             # samples one dataset shard may declare
    max_subnetworks: int = 4096               # sub-networks one export manifest may list
    max_classes: int = 10_000                 # class names a manifest may list
    # --- bags (core/bags/reader.py) ---
    max_bag_duration_s: float = 7 * 86400.0   # duration a bag may declare or hold [s] (one week)
    max_bag_messages: int = 100_000_000       # messages a bag may declare
    max_message_bytes: int = 256 << 20        # one message after decompression [bytes]
    bag_time_tolerance_s: float = 1.0         # metadata.yaml start/end may differ from the storage files' by this [s]

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and value > 0, f.name, value, 'a finite positive limit')


DEFAULT_LIMITS = ReadLimits()


def over(value: Any, limit: float) -> bool:
    """True when ``value`` is not a number in [0, limit] (non-numbers and NaN are over every limit)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return not (0 <= value <= limit)


def outside_folder(folder: pathlib.Path, name: Any) -> str:
    """'' when ``name`` is a plain name of an entry directly inside ``folder`` (no separator, no '..', not
    absolute, no link that resolves elsewhere), else why not: a file must not make its reader open
    something outside its own folder."""
    if not isinstance(name, str) or not name or name in ('.', '..') or '/' in name or '\\' in name or '\0' in name:
        return 'expected a plain name inside the folder (no absolute path, no directories, no ..)'
    root = pathlib.Path(folder).resolve()
    target = (pathlib.Path(folder) / name).resolve()
    if target.parent != root:
        return f'it resolves to {str(target)!r}, outside {str(root)!r}'
    return ''
