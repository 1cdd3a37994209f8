"""Image variants: a small WebP thumbnail, made off the event loop by the caller."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

THUMBNAIL_EDGE = 256
THUMBNAIL_CONTENT_TYPE = "image/webp"
# Refuse decompression bombs outright (Pillow only warns below twice its default limit).
_MAX_PIXELS = 50_000_000


def make_thumbnail(source: Path, edge: int = THUMBNAIL_EDGE) -> bytes | None:
    """WebP bytes of the image scaled to fit `edge` x `edge`; None if it cannot be decoded."""
    try:
        with Image.open(source) as image:
            if image.width * image.height > _MAX_PIXELS:
                return None
            image.thumbnail((edge, edge))
            small: Image.Image = image
            if small.mode not in ("RGB", "RGBA"):
                small = small.convert("RGBA" if "transparency" in small.info else "RGB")
            out = io.BytesIO()
            small.save(out, format="WEBP", quality=80)
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
