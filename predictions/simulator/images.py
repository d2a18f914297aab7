"""Real output images for simulated predictions, so a demo shows pictures and tests decode files."""

import io
import random

from PIL import Image, ImageDraw, ImageFont, ImageOps

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "4:3": (4, 3),
    "3:4": (3, 4),
    "3:2": (3, 2),
    "2:3": (2, 3),
    "21:9": (21, 9),
    "9:21": (9, 21),
    "4:5": (4, 5),
    "5:4": (5, 4),
    "2:1": (2, 1),
    "1:2": (1, 2),
}
# FLUX Kontext's default; the simulator never fetches the input image, so it renders a square.
MATCH_INPUT_IMAGE = "match_input_image"

# output_format -> (Pillow encoder, Content-Type)
OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    "webp": ("WEBP", "image/webp"),
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}

# Real models return about a megapixel; a smaller long side keeps rendering to a few milliseconds.
LONG_SIDE = 768


def image_size(aspect_ratio: str) -> tuple[int, int]:
    """Width and height for an aspect ratio, rounded to multiples of 16 as diffusion models do."""
    across, down = ASPECT_RATIOS[aspect_ratio]
    scale = LONG_SIDE / max(across, down)
    return round(across * scale / 16) * 16, round(down * scale / 16) * 16


def render_image(
    prompt: str, seed: int, index: int, aspect_ratio: str, output_format: str, quality: int
) -> bytes:
    """Encode a picture that is always the same for the same prompt, seed and output index."""
    rng = random.Random(f"{seed}/{index}/{prompt}")
    width, height = image_size(aspect_ratio)

    shade = Image.linear_gradient("L")
    if rng.random() < 0.5:
        shade = shade.transpose(Image.Transpose.ROTATE_90)
    shade = shade.resize((width, height))
    image = ImageOps.colorize(shade, _colour(rng, 0, 120), _colour(rng, 120, 255))

    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(rng.randint(5, 9)):
        x, y = rng.randrange(width), rng.randrange(height)
        radius = rng.randint(LONG_SIDE // 16, LONG_SIDE // 4)
        box = (x - radius, y - radius, x + radius, y + radius)
        fill = (*_colour(rng, 0, 255), rng.randint(70, 170))
        if rng.random() < 0.6:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)

    _draw_caption(draw, seed, width, height)

    encoder = OUTPUT_FORMATS[output_format][0]
    buffer = io.BytesIO()
    image.save(buffer, encoder, quality=quality)
    return buffer.getvalue()


def _colour(rng: random.Random, low: int, high: int) -> tuple[int, int, int]:
    return rng.randint(low, high), rng.randint(low, high), rng.randint(low, high)


def _draw_caption(draw: ImageDraw.ImageDraw, seed: int, width: int, height: int) -> None:
    """The seed in a corner, as a model's watermark might be; never the prompt, which a share
    link may be asked to hide (and which the gallery shows beside the image anyway)."""
    size = max(14, width // 28)
    font = ImageFont.load_default(size=size)
    top = height - size * 2
    draw.rectangle((0, top - size // 2, width, height), fill=(0, 0, 0, 140))
    draw.text((size, top), f"seed {seed}", font=font, fill=(255, 255, 255))
