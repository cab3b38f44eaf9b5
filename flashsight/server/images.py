"""Turn an OpenAI `image_url` into a decoded RGB image, refusing anything unsafe or broken.

Client images are untrusted input to C decoders, so the byte size is checked before
decoding, the formats are limited to a short list, and the pixel count is read from the
header before a single pixel is decompressed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import string
from dataclasses import dataclass

import anyio.to_thread
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from flashsight.security.fetch import DownloadTooLarge, FetchError, SafeFetcher, URLForbidden

# Modes holding more than 8 bits per sample; converting them straight to RGB would clip.
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_DROP_WHITESPACE = str.maketrans("", "", string.whitespace)


@dataclass(frozen=True)
class ImageLimits:
    """What a client image may be; everything else is refused with an ImageError."""

    max_bytes: int = 20 * 1024 * 1024  # of the encoded file, after base64 decoding
    max_pixels: int = 50_000_000  # width * height, read from the header before decoding
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
    max_aspect_ratio: float = 200.0
    min_side: int = 1

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("ImageLimits.max_bytes and max_pixels must be positive")
        if self.min_side < 1 or self.max_aspect_ratio < 1:
            raise ValueError("ImageLimits.min_side and max_aspect_ratio must be at least 1")
        Image.init()
        unknown = sorted(set(self.formats) - set(Image.OPEN))
        if not self.formats or unknown:
            raise ValueError(f"ImageLimits.formats has formats Pillow cannot open: {unknown}")


class ImageError(Exception):
    """An image the server will not use; the message is one sentence for the client."""

    def __init__(self, message: str, code: str = "invalid_image") -> None:
        super().__init__(message)
        self.code = code


async def load_image(url: str, limits: ImageLimits, fetcher: SafeFetcher) -> Image.Image:
    """Decode a `data:` URL or download an http(s) URL; decoding runs in a worker thread."""
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme == "data":
        return await anyio.to_thread.run_sync(decode_data_url, url, limits)
    if scheme in ("http", "https"):
        data = await _download(url, fetcher)
        return await anyio.to_thread.run_sync(decode_image, data, limits)
    raise ImageError("image_url must be a data: URL or an http(s) URL", "invalid_image_url")


async def _download(url: str, fetcher: SafeFetcher) -> bytes:
    try:
        return await fetcher.fetch(url)
    except URLForbidden as exc:
        raise ImageError(str(exc), "image_url_forbidden") from exc
    except DownloadTooLarge as exc:
        raise ImageError(str(exc), "image_too_large") from exc
    except FetchError as exc:
        raise ImageError(str(exc), "image_fetch_failed") from exc


def decode_data_url(url: str, limits: ImageLimits) -> Image.Image:
    """Decode `data:image/<type>;base64,<payload>`; the size is judged before decoding."""
    header, comma, payload = url.partition(",")
    if header[:5].lower() != "data:" or not comma:
        raise ImageError("image data URL must look like data:image/png;base64,<data>")
    mime, *params = header[5:].split(";")
    mime = mime.strip().lower()
    # An empty media type is let through: the format check on the bytes decides.
    if mime and not mime.startswith("image/"):
        raise ImageError(f"image data URL has media type {mime[:64]!r}, not image/*")
    if "base64" not in (param.strip().lower() for param in params):
        raise ImageError("image data URL must be base64-encoded (data:image/png;base64,...)")
    return decode_image(_decode_base64(payload, limits), limits)


def _decode_base64(payload: str, limits: ImageLimits) -> bytes:
    # Line-wrapped base64 is common; looking for whitespace first spares the copy (~0.5 ms with
    # the GIL held, for a photo) when there is none.
    wrapped = any(space in payload for space in string.whitespace)
    compact = payload.translate(_DROP_WHITESPACE) if wrapped else payload
    decoded_size = len(compact) * 3 // 4 - compact[-2:].count("=")
    if decoded_size > limits.max_bytes:
        raise ImageError(f"image is larger than {limits.max_bytes} bytes", "image_too_large")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("image data URL is not valid base64") from exc


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode an encoded image into a detached RGB image (GIF: first frame, EXIF applied)."""
    if len(data) > limits.max_bytes:
        raise ImageError(f"image is larger than {limits.max_bytes} bytes", "image_too_large")
    try:
        with Image.open(io.BytesIO(data), formats=limits.formats) as image:
            _check_dimensions(image.size, limits)
            # Truncated files raise here as long as ImageFile.LOAD_TRUNCATED_IMAGES stays
            # False: this module never sets it, and nothing in flashsight may.
            image.load()
            return _with_source(_to_rgb(_apply_orientation(image)), data)
    except ImageError:
        raise
    # Pillow's own bomb guard fires inside Image.open, before our check sees the size. The
    # warning is caught as well, for when warnings are errors; a catch_warnings() block would
    # be tidier but it swaps process-wide state, which is unsafe from worker threads.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("image has too many pixels", "image_too_large") from exc
    except UnidentifiedImageError as exc:
        allowed = ", ".join(limits.formats)
        raise ImageError(f"image is not in a supported format ({allowed})") from exc
    except Exception as exc:  # Pillow's decoders raise OSError, ValueError, SyntaxError, ...
        raise ImageError("image data is corrupt or truncated") from exc


def _check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        message = f"image is {width}x{height}, more than {limits.max_pixels} pixels"
        raise ImageError(message, "image_too_large")
    if min(width, height) < limits.min_side:
        raise ImageError(f"image is {width}x{height}; each side must be at least {limits.min_side}")
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise ImageError(
            f"image aspect ratio {ratio:.0f}:1 exceeds the limit of {limits.max_aspect_ratio:g}:1"
        )


def _with_source(image: Image.Image, data: bytes) -> Image.Image:
    """The image remembers the file it came from, by hash and size, for the audit log."""
    image.info["source_sha256"] = hashlib.sha256(data).hexdigest()
    image.info["source_bytes"] = len(data)
    return image


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Rotate as the EXIF Orientation tag says (phone photos). With nothing to rotate, the
    image itself, not a copy (~1 ms for a 1024x1024 photo, on the first token's path): it is
    loaded, so it stays whole once its file is closed."""
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) not in _ROTATED:
            return image
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF (any error) should not cost the client the image
        return image


_ROTATED = range(2, 9)  # the values that flip or turn the picture (1 is upright)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_DEPTH_MODES:
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
