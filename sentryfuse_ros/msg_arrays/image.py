"""sensor_msgs/Image and CompressedImage <-> (H, W, C) numpy arrays."""
from __future__ import annotations

import struct
from typing import Any, Tuple

import cv2
import numpy as np

from sentryfuse_ros.core.errors import ConversionError
from sentryfuse_ros.msg_arrays._buffers import IMAGE_ENCODINGS, DEPTH_ENCODINGS, Stamp, _bytes_of, _fill_header, _uint8_array, message_reader

# ---------------------------------------------------------------------------- Image
@message_reader('Image')
def image_to_array(msg: Any) -> np.ndarray:
    """Pixels of a ``sensor_msgs/Image``.

    Returns (H, W, 3) uint8 RGB for rgb8/bgr8/8UC3 (read as BGR)/rgba8/bgra8 (alpha dropped), and
    (H, W) for mono8/8UC1 (uint8), mono16/16UC1 (uint16), 32FC1 (float32). Honours ``step`` row
    padding and ``is_bigendian``.
    """
    encoding = msg.encoding
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f'Image.encoding {encoding!r} is unsupported, expected one of '
                              f'{sorted(IMAGE_ENCODINGS)}')
    kind, channels, order = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f'Image is {width}x{height} (width x height), expected both > 0')
    dtype = np.dtype(('>' if msg.is_bigendian else '<') + kind)
    pixel_bytes = channels * dtype.itemsize
    if step < width * pixel_bytes:
        raise ConversionError(f'Image.step is {step}, expected >= width*bytes_per_pixel = '
                              f'{width}*{pixel_bytes} = {width * pixel_bytes} for {encoding}')
    buf = _bytes_of(msg.data, 'Image.data')
    if buf.size != height * step:
        raise ConversionError(f'Image.data has {buf.size} bytes, expected height*step = '
                              f'{height}*{step} = {height * step}')
    view = np.ndarray((height, width, channels), dtype=dtype, buffer=buf,
                      strides=(step, pixel_bytes, dtype.itemsize))  # (H, W, channels), no copy
    if channels == 1:
        return view[:, :, 0].astype(dtype.newbyteorder('='))  # (H, W) native, owned
    if channels == 3 and order == 'rgb':
        return view.copy()  # (H, W, 3), contiguous, owned
    code = {('bgr', 3): cv2.COLOR_BGR2RGB, ('bgr', 4): cv2.COLOR_BGRA2RGB,
            ('rgb', 4): cv2.COLOR_RGBA2RGB}[order, channels]
    return cv2.cvtColor(view, code)  # (H, W, C) -> (H, W, 3), SIMD, ~40x a numpy reversed copy


@message_reader('Image or CompressedImage')
def image_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any supported Image (or CompressedImage): the camera input.

    Mono is replicated to 3 channels; mono16 keeps its top 8 bits (full-scale, like a camera);
    depth (16UC1, 32FC1) is scaled min-max over its finite pixels, non-finite pixels black.
    """
    if not hasattr(msg, 'encoding') and hasattr(msg, 'format'):
        return compressed_image_to_array(msg)
    pixels = image_to_array(msg)
    if pixels.ndim == 3:
        return pixels
    if msg.encoding in DEPTH_ENCODINGS:
        values = pixels.astype(np.float32)
        finite = np.isfinite(values)
        lo = float(values[finite].min()) if finite.any() else 0.0
        hi = float(values[finite].max()) if finite.any() else 0.0
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        pixels = np.where(finite, np.rint(scaled), 0).astype(np.uint8)
    elif pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return np.repeat(pixels[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)


def array_to_image(arr: np.ndarray, *, encoding: str = 'rgb8', stamp: Stamp = None,
                   frame_id: str = '') -> Any:
    """A little-endian, unpadded ``sensor_msgs/Image`` holding ``arr``.

    Args:
        arr: (H, W, 3) uint8 RGB for rgb8/bgr8/8UC3 (stored in the encoding's order); (H, W, 3)
            or (H, W, 4) RGB(A) uint8 for rgba8/bgra8 (alpha 255 when absent); (H, W) uint8 for
            mono8/8UC1, uint16 for mono16/16UC1, float32 for 32FC1.
        encoding: one of IMAGE_ENCODINGS.
        stamp: None, seconds, (sec, nanosec) or a Time message.
        frame_id: header.frame_id.
    """
    from sensor_msgs.msg import Image

    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f'encoding {encoding!r} is unsupported, expected one of '
                              f'{sorted(IMAGE_ENCODINGS)}')
    kind, channels, order = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.dtype != np.dtype(kind):
        raise ConversionError(f'array dtype is {arr.dtype}, expected {np.dtype(kind)} for '
                              f'{encoding}')
    allowed = ((3,) if channels == 3 else (3, 4)) if channels > 1 else ()
    ok = arr.ndim == 2 and channels == 1 or arr.ndim == 3 and arr.shape[2] in allowed
    if not ok or arr.shape[0] == 0 or arr.shape[1] == 0:
        want = '(H, W)' if channels == 1 else f'(H, W, {"|".join(map(str, allowed))})'
        raise ConversionError(f'array shape is {arr.shape}, expected non-empty {want} for '
                              f'{encoding}')
    if channels > 1:
        code = {('bgr', 3, 3): cv2.COLOR_RGB2BGR, ('bgr', 4, 3): cv2.COLOR_RGB2BGRA,
                ('bgr', 4, 4): cv2.COLOR_RGBA2BGRA, ('rgb', 4, 3): cv2.COLOR_RGB2RGBA}
        key = (order, channels, arr.shape[2])
        if key in code:  # (H, W, 3|4) -> (H, W, channels), alpha 255 when added
            arr = cv2.cvtColor(np.ascontiguousarray(arr), code[key])
    height, width = arr.shape[:2]
    msg = Image()
    _fill_header(msg, stamp, frame_id)
    msg.height, msg.width, msg.encoding, msg.is_bigendian = height, width, encoding, 0
    msg.step = width * channels * arr.dtype.itemsize
    msg.data = _uint8_array(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder('<')).tobytes())
    return msg


# ---------------------------------------------------------------------------- CompressedImage
def _compressed_format(fmt: str) -> str:
    """'jpeg' or 'png' from a CompressedImage.format such as 'jpeg' or 'rgb8; png compressed'."""
    low = fmt.lower()
    if 'compresseddepth' not in low:
        if 'jpeg' in low or 'jpg' in low:
            return 'jpeg'
        if 'png' in low:
            return 'png'
    raise ConversionError(f"CompressedImage.format {fmt!r} is unsupported, expected one "
                          f"naming 'jpeg' or 'png'")


MAX_DECODED_PIXELS = 25_000_000  # a 20-megapixel camera (5472x3648) fits; a decoded image is 3 bytes/pixel
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT/JPG/DAC)
JPEG_MAX_SEGMENTS = 256  # segments read looking for the frame header (real files: a few APPn first)


def encoded_image_size(buf: np.ndarray) -> Tuple[str, int, int]:
    """('png' | 'jpeg', width, height) read from a compressed image's header, without decoding it.

    A few hundred kB of png or jpeg can declare a gigapixel image; the header says so before any
    pixel is decoded. ConversionError when the data is neither png nor jpeg or has no readable header.
    """
    head = bytes(buf[:24])
    if head[:8] == PNG_SIGNATURE and head[12:16] == b'IHDR' and len(head) >= 24:
        width, height = struct.unpack('>II', head[16:24])
        return 'png', width, height
    if head[:2] == b'\xff\xd8':
        data, i = bytes(buf), 2
        for _ in range(JPEG_MAX_SEGMENTS):
            if i + 4 > len(data) or data[i] != 0xFF:
                break
            marker = data[i + 1]
            if marker == 0xFF:                                  # fill byte
                i += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:        # segments without a length
                i += 2
                continue
            if marker in JPEG_SOF_MARKERS and i + 9 <= len(data):
                height, width = struct.unpack('>HH', data[i + 5:i + 9])
                return 'jpeg', width, height
            if marker == 0xDA:                                  # start of scan before any frame header
                break
            i += 2 + struct.unpack('>H', data[i + 2:i + 4])[0]
        raise ConversionError(f'CompressedImage.data ({buf.size} bytes) is a jpeg without a readable frame '
                              f'header in its first {JPEG_MAX_SEGMENTS} segments')
    raise ConversionError(f'CompressedImage.data ({buf.size} bytes) starts with {head[:8]!r}, expected a '
                          f'png or jpeg signature')


@message_reader('CompressedImage')
def compressed_image_to_array(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a jpeg or png ``sensor_msgs/CompressedImage`` (via cv2.imdecode).

    The header's size is checked before decoding: more than MAX_DECODED_PIXELS is a ConversionError
    (a small message cannot make the decoder allocate gigabytes).
    """
    fmt = _compressed_format(msg.format)
    buf = _bytes_of(msg.data, 'CompressedImage.data')
    if buf.size == 0:
        raise ConversionError(f'CompressedImage.data is empty, expected {fmt} bytes')
    kind, width, height = encoded_image_size(buf)
    if width * height > MAX_DECODED_PIXELS or width == 0 or height == 0:
        raise ConversionError(f'CompressedImage.data ({buf.size} bytes of {kind}) declares {width}x{height} '
                              f'pixels, expected 1 to {MAX_DECODED_PIXELS} pixels')
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ConversionError(f'CompressedImage.data ({buf.size} bytes) is not decodable '
                              f'as {fmt}: {exc}') from exc
    if bgr is None:
        raise ConversionError(f'CompressedImage.data ({buf.size} bytes, starting '
                              f'{bytes(buf[:8])!r}) is not decodable as {fmt}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def array_to_compressed_image(arr: np.ndarray, *, fmt: str = 'jpeg', quality: int = 90,
                              stamp: Stamp = None, frame_id: str = '') -> Any:
    """A ``sensor_msgs/CompressedImage`` (format 'jpeg' or 'png') of an (H, W, 3) uint8 RGB array.

    Args:
        arr: (H, W, 3) uint8 RGB.
        fmt: 'jpeg' (lossy, ``quality`` 0-100) or 'png' (lossless).
        quality: jpeg quality.
        stamp: None, seconds, (sec, nanosec) or a Time message.
        frame_id: header.frame_id.
    """
    from sensor_msgs.msg import CompressedImage

    if fmt not in ('jpeg', 'png'):
        raise ConversionError(f"fmt {fmt!r} is unsupported, expected 'jpeg' or 'png'")
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise ConversionError(f'array is {arr.dtype} {arr.shape}, expected uint8 (H, W, 3) RGB')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == 'jpeg' else []
    bgr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', bgr, params)
    if not ok:
        raise ConversionError(f'cv2.imencode failed to encode a {arr.shape} array as {fmt}')
    msg = CompressedImage()
    _fill_header(msg, stamp, frame_id)
    msg.format = fmt
    msg.data = _uint8_array(encoded.tobytes())
    return msg
