"""Thumbnails: WebP images of a stored output, sized so pages can reserve their space."""

import io

from PIL import Image


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of a `width` x `height` image scaled down to fit a `box`-pixel square (never
    up). Pages compute a thumbnail's size with this too, so they agree with the file."""
    scale = min(1.0, box / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail(content: bytes, box: int) -> bytes:
    """A WebP of the image (its first frame) fitting a `box`-pixel square."""
    with Image.open(io.BytesIO(content)) as image:
        size = fit(image.width, image.height, box)
        if image.mode not in ("RGB", "RGBA"):
            has_alpha = "A" in image.mode or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        small = image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        small.save(buffer, "WEBP", quality=80, method=4)
        return buffer.getvalue()
