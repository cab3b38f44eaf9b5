"""Images the page stores with a message: only real JPEG, PNG or WebP files, within a size cap.

The stored bytes are served back under their sniffed type, never a type the client claimed, so a
stored "image" can never come back as a page.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image, UnidentifiedImageError

from flashsight.server.errors import APIError
from flashsight.web.store import StoredImage

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


def stored_image(data_url: str, max_bytes: int, param: str) -> StoredImage:
    """The decoded image of a `data:image/...;base64,` URL, or a 400/413 naming `param`."""
    prefix = _DATA_URL.match(data_url)
    if prefix is None:
        raise APIError(400, f"{param}: must be a data:image/...;base64 URL", param=param)
    encoded = data_url[prefix.end():]
    if len(encoded) * 3 // 4 > max_bytes:
        raise APIError(413, f"{param}: the image is larger than {max_bytes} bytes", param=param, code="request_too_large")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: the base64 data is not valid", param=param) from None
    return StoredImage(_media_type(data, param), data)


def _media_type(data: bytes, param: str) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            image_format = image.format
    except (UnidentifiedImageError, OSError):
        image_format = None
    if image_format not in MEDIA_TYPES:
        raise APIError(400, f"{param}: only JPEG, PNG and WebP images are kept", param=param)
    return MEDIA_TYPES[image_format]
