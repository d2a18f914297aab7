"""The curated model catalog: the models the New images form offers by name, with their inputs.

Names, choices, ranges and defaults are those of each model's API schema on Replicate, trimmed to
the inputs people set most; anything else a model takes can still be given as JSON under "Other
inputs", and any other model runs in the form's "any model" mode. The prompt is not listed: every
model here takes one, and the form asks for it whatever the model.
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Input:
    name: str
    label: str
    kind: str  # "integer", "number", "choice", "boolean", "text" or "url"
    help: str = ""
    default: Any = None  # what the model uses when the input is not sent; None: nothing shown
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    # Set for an input the model cannot run without: the message when it is missing.
    required_message: str = ""


# The longest prompt the form sends, in characters. The models' schemas state no limit, but their
# text encoders read a few hundred tokens (FLUX's T5: 256 for schnell, 512 for the others; SDXL's
# CLIP: 77) and drop the rest: 2,000 characters is beyond what any of them reads, and catches
# text pasted by mistake. A model run by owner/name gets ANY_MODEL_PROMPT_LENGTH.
PROMPT_LENGTH = 2000
ANY_MODEL_PROMPT_LENGTH = 10_000


@dataclass(frozen=True)
class CatalogModel:
    name: str  # owner/name, as the provider's API takes it
    label: str
    description: str
    inputs: tuple[Input, ...]
    prompt_length: int = PROMPT_LENGTH

    def takes(self, name: str) -> bool:
        return any(spec.name == name for spec in self.inputs)

    def at_default(self, name: str, value: str) -> bool:
        """Whether `value`, as a form sends it, is what this model's input `name` starts at."""
        spec = next((spec for spec in self.inputs if spec.name == name), None)
        if spec is None or spec.default is None:
            return False
        default = spec.default
        return value == (str(default).lower() if isinstance(default, bool) else str(default))


FLUX_ASPECT_RATIOS = (
    "1:1",
    "16:9",
    "21:9",
    "3:2",
    "2:3",
    "4:5",
    "5:4",
    "3:4",
    "4:3",
    "9:16",
    "9:21",
)


def aspect_ratio(choices: tuple[str, ...] = FLUX_ASPECT_RATIOS, default: str = "1:1") -> Input:
    return Input("aspect_ratio", "Aspect ratio", "choice", "Width to height.", default, choices)


def output_format(
    choices: tuple[str, ...] = ("webp", "jpg", "png"), default: str = "webp"
) -> Input:
    return Input("output_format", "Output format", "choice", "", default, choices)


def num_outputs(default: int = 1) -> Input:
    return Input(
        "num_outputs",
        "Images per prediction",
        "integer",
        "1 to 4, made together by one prediction.",
        default,
        minimum=1,
        maximum=4,
    )


def steps(maximum: int, default: int) -> Input:
    return Input(
        "num_inference_steps",
        "Steps",
        "integer",
        f"Denoising steps, 1 to {maximum}: more is slower and often finer.",
        default,
        minimum=1,
        maximum=maximum,
    )


SEED = Input(
    "seed",
    "Seed",
    "integer",
    "0 to 4294967295. Leave it blank for a random one; the same seed and input give the same "
    "image.",
    minimum=0,
    maximum=2**32 - 1,
)
OUTPUT_QUALITY = Input(
    "output_quality",
    "Output quality",
    "integer",
    "0 to 100, for jpg and webp; png is lossless and ignores it.",
    80,
    minimum=0,
    maximum=100,
)
GO_FAST = Input(
    "go_fast", "Fast mode", "boolean", "A quantised, faster run; images may differ slightly.", True
)
PROMPT_UPSAMPLING = Input(
    "prompt_upsampling",
    "Improve the prompt",
    "boolean",
    "Let the model rewrite the prompt into a more detailed one first.",
    False,
)

CATALOG: dict[str, CatalogModel] = {
    model.name: model
    for model in (
        CatalogModel(
            "black-forest-labs/flux-schnell",
            "FLUX.1 [schnell]",
            "The fastest FLUX model, 1 to 4 steps: drafts and quick ideas.",
            (
                aspect_ratio(),
                num_outputs(),
                SEED,
                output_format(),
                OUTPUT_QUALITY,
                steps(4, 4),
                GO_FAST,
            ),
        ),
        CatalogModel(
            "black-forest-labs/flux-dev",
            "FLUX.1 [dev]",
            "More steps and guidance than schnell for finer detail; can start from an image.",
            (
                aspect_ratio(),
                num_outputs(),
                SEED,
                output_format(),
                OUTPUT_QUALITY,
                Input(
                    "guidance",
                    "Guidance",
                    "number",
                    "0 to 10: how closely to follow the prompt; 2 to 3.5 looks most natural.",
                    3,
                    minimum=0,
                    maximum=10,
                ),
                steps(50, 28),
                Input(
                    "image",
                    "Start from image",
                    "url",
                    "Optional: the web address of an image to transform (image to image); "
                    "the output takes its aspect ratio.",
                ),
                Input(
                    "prompt_strength",
                    "Prompt strength",
                    "number",
                    "0 to 1, with a start image: 1 keeps nothing of it.",
                    0.8,
                    minimum=0,
                    maximum=1,
                ),
                GO_FAST,
            ),
        ),
        CatalogModel(
            "black-forest-labs/flux-1.1-pro",
            "FLUX1.1 [pro]",
            "Black Forest Labs' high-quality model: one image per prediction.",
            (
                aspect_ratio(("1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")),
                SEED,
                output_format(),
                OUTPUT_QUALITY,
                Input(
                    "safety_tolerance",
                    "Safety tolerance",
                    "integer",
                    "1 (strictest) to 6 (most permissive).",
                    2,
                    minimum=1,
                    maximum=6,
                ),
                PROMPT_UPSAMPLING,
            ),
        ),
        CatalogModel(
            "black-forest-labs/flux-kontext-pro",
            "FLUX.1 Kontext [pro]",
            "Edits an image from an instruction: say in the prompt what to change.",
            (
                Input(
                    "input_image",
                    "Image to edit",
                    "url",
                    "The web address of a jpeg, png, gif or webp image.",
                    required_message="Give the web address of the image to edit: Kontext edits "
                    "an existing image.",
                ),
                aspect_ratio(
                    ("match_input_image", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")
                    + ("4:5", "5:4", "21:9", "9:21", "2:1", "1:2"),
                    default="match_input_image",
                ),
                SEED,
                output_format(("jpg", "png"), default="png"),
                Input(
                    "safety_tolerance",
                    "Safety tolerance",
                    "integer",
                    "0 (strictest) to 2: the most the model allows when editing an image.",
                    2,
                    minimum=0,
                    maximum=2,
                ),
                PROMPT_UPSAMPLING,
            ),
        ),
        CatalogModel(
            "stability-ai/sdxl",
            "Stable Diffusion XL",
            "Stability AI's SDXL: exact sizes and a negative prompt; always png.",
            (
                Input(
                    "negative_prompt",
                    "Negative prompt",
                    "text",
                    "What the image should not show.",
                ),
                Input(
                    "width",
                    "Width",
                    "integer",
                    "Pixels, 256 to 2048; SDXL is trained at 1024 × 1024.",
                    1024,
                    minimum=256,
                    maximum=2048,
                ),
                Input(
                    "height",
                    "Height",
                    "integer",
                    "Pixels, 256 to 2048.",
                    1024,
                    minimum=256,
                    maximum=2048,
                ),
                num_outputs(),
                SEED,
                Input(
                    "guidance_scale",
                    "Guidance scale",
                    "number",
                    "1 to 50: how closely to follow the prompt.",
                    7.5,
                    minimum=1,
                    maximum=50,
                ),
                steps(500, 50),
            ),
        ),
    )
}
DEFAULT_MODEL = "black-forest-labs/flux-schnell"
