"""Thumbnails: WebP images of a stored output, sized so pages can reserve their space."""

import io

from PIL import Image


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of a `width` x `height` image scaled down to fit a `box`-pixel square (never
    up). Pages compute a thumbnail's size with this too, so they agree with the file."""
    scale = min(1.0, box / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnails(content: bytes, boxes: list[int]) -> list[bytes]:
    """WebPs of the image (its first frame) fitting each of `boxes`, largest first.

    The image is decoded once, and each thumbnail is made from the one before it: the archive
    spends most of its CPU here (see `manage.py bench_archive`).
    """
    with Image.open(io.BytesIO(content)) as image:
        width, height = image.size
        has_alpha = "A" in image.mode or "transparency" in image.info
        source = image.convert("RGBA" if has_alpha else "RGB")
    made = []
    for box in sorted(boxes, reverse=True):
        source = source.resize(fit(width, height, box), Image.Resampling.LANCZOS, reducing_gap=2.0)
        buffer = io.BytesIO()
        source.save(buffer, "WEBP", quality=80, method=2)
        made.append(buffer.getvalue())
    return made
