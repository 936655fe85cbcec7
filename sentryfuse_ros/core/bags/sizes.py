"""What a bag declares (metadata.yaml's duration, start and count, compressed payload sizes) checked
against :class:`~sentryfuse_ros.core.limits.ReadLimits` and against its storage files before the reader
loops over the bag's time or decompresses a message (used by :mod:`sentryfuse_ros.core.bags.reader`)."""
import pathlib
from typing import Any

from sentryfuse_ros.core.errors import BagError
from sentryfuse_ros.core.limits import ReadLimits, over


def _declared(info: dict, *keys: str) -> Any:
    value = info
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def check_declared(meta_path: pathlib.Path, info: dict, limits: ReadLimits) -> None:
    """BagError for a declared duration, start time or message count that is not an integer in range."""
    checks = ((('duration', 'nanoseconds'), limits.max_bag_duration_s * 1e9, 'duration [ns]'),
              (('starting_time', 'nanoseconds_since_epoch'), 2 ** 63 - 1, 'starting_time [ns]'),
              (('message_count',), limits.max_bag_messages, 'message_count'))
    for keys, limit, what in checks:
        value = _declared(info, *keys)
        if value is None and keys[0] != 'message_count':
            continue  # old metadata versions may lack it; the storage files' own times are used
        if isinstance(value, bool) or not isinstance(value, int) or over(value, limit):
            raise BagError(f'bag metadata {str(meta_path)!r} declares {what} {value!r}: expected an integer in '
                           f'[0, {limit:.0f}] (ReadLimits)')


def check_storage(path: pathlib.Path, reader: Any, limits: ReadLimits) -> None:
    """metadata.yaml's duration, start and count against what the storage files hold (their own
    indexes), so a loop over the bag's time never runs on a declared span the data does not have."""
    metas = [storage.metadata for storage in reader.storage.storages]
    count = sum(m.message_count for m in metas)
    held = [m for m in metas if m.message_count]
    start = min((m.start_time for m in held), default=0)
    end = max((m.end_time for m in held), default=0)
    tol = limits.bag_time_tolerance_s * 1e9
    where = f'bag {str(path)!r}'
    if (end - start) > limits.max_bag_duration_s * 1e9:
        raise BagError(f'{where}: its storage files span {(end - start) / 1e9:.6g} s: expected at most '
                       f'{limits.max_bag_duration_s:g} s (ReadLimits)')
    if not held:
        return
    declared = ((reader.start_time, start, 'starting_time'), (reader.end_time, end, 'end (start + duration)'))
    for claim, found, what in declared:
        if abs(claim - found) > tol:
            raise BagError(f'{where}: metadata.yaml declares {what} {claim} ns but its storage files hold '
                           f'{found} ns: expected them to agree within {tol / 1e9:g} s (run `ros2 bag reindex`)')
    if reader.message_count != count:
        raise BagError(f'{where}: metadata.yaml declares {reader.message_count} messages but its storage files '
                       f'hold {count}: expected them to agree (run `ros2 bag reindex`)')


def bounded_zstd(max_bytes: int) -> Any:
    """A zstd decompressor of one message that refuses more than ``max_bytes`` of output (a small
    payload can expand to any size), from where rosbags takes zstd (stdlib on 3.14, backports before)."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]

    def decompress(raw: bytes) -> bytes:
        declared = zstd.get_frame_info(raw).decompressed_size
        if declared is not None and declared > max_bytes:
            raise BagError(f'a compressed message declares {declared} bytes: expected at most {max_bytes} (ReadLimits)')
        unpacker = zstd.ZstdDecompressor()
        out = unpacker.decompress(raw, max_length=max_bytes + 1)
        if len(out) > max_bytes:
            raise BagError(f'a compressed message expands past {max_bytes} bytes (ReadLimits)')
        return out
    return decompress
