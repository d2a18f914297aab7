"""The deployment's price rules for the catalog's models, from published prices.

These figures were NOT checked live: Darkroom's build had no network. They are Replicate's prices
as its model pages and https://replicate.com/pricing list them, last read as cited in each
`source`. Owners check them against their own bill and add a team rule (or a new deployment rule
with a later `effective_from`) where they differ; a new rule never rewrites earlier costs.

CometAPI resells Replicate's models at prices of its own that we could not confirm, so its models
are left unpriced: their predictions show as "unpriced", never as $0, until a rule is added.

The simulator's rules are demo prices: nothing is billed; they mirror Replicate's units and
figures so that the costs pages show realistic numbers in demos.
"""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

# From before Darkroom's first prediction: the seeded price covers the whole history.
SINCE = datetime(2024, 1, 1, tzinfo=UTC)
NOT_LIVE = "Not checked live when seeded (no network); check it against your bill."

REPLICATE = [
    (
        "black-forest-labs/flux-schnell",
        "per_image",
        "0.003",
        "https://replicate.com/black-forest-labs/flux-schnell (Pricing: $3 per thousand output "
        "images) and https://replicate.com/pricing (flux-schnell: $3.00 / thousand output "
        "images), as listed on 2026-10-07.",
    ),
    (
        "black-forest-labs/flux-dev",
        "per_image",
        "0.025",
        "https://replicate.com/pricing (flux-dev: $0.025 / output image), as listed on "
        "2026-10-07.",
    ),
    (
        "black-forest-labs/flux-1.1-pro",
        "per_image",
        "0.04",
        "https://replicate.com/pricing (flux-1.1-pro: $0.04 / output image), as listed on "
        "2026-10-07.",
    ),
    (
        "black-forest-labs/flux-kontext-pro",
        "per_image",
        "0.04",
        "https://replicate.com/black-forest-labs/flux-kontext-pro (Pricing: $0.04 per output "
        "image), as listed at its launch in May 2025; the same $0.04 an image is Black Forest "
        "Labs' own list price for Kontext [pro].",
    ),
    (
        "stability-ai/sdxl",
        "per_second",
        "0.000975",
        "https://replicate.com/pricing (Nvidia L40S GPU, gpu-l40s: $0.000975/sec), as listed "
        "in 2026. Replicate bills stability-ai/sdxl by the second of predict_time on the "
        "hardware its model page names, Nvidia L40S when last read (2025). The hardware is the "
        "least certain part: on an A40 (Large) it would be $0.000725/sec.",
    ),
]


def seed_price_rules(apps, schema_editor):
    PriceRule = apps.get_model("costs", "PriceRule")
    rules = []
    for model, unit, amount, source in REPLICATE:
        common = {"model": model, "unit": unit, "amount": Decimal(amount), "currency": "USD"}
        rules.append(
            PriceRule(
                provider="replicate",
                effective_from=SINCE,
                source=f"{source} {NOT_LIVE}",
                **common,
            )
        )
        rules.append(
            PriceRule(
                provider="simulator",
                effective_from=SINCE,
                source=(
                    "DEMO PRICE for the simulator: nothing is billed. It mirrors Replicate's "
                    f"published price so demos show realistic figures ({source})"
                ),
                **common,
            )
        )
    PriceRule.objects.bulk_create(rules, ignore_conflicts=True)


def remove_seeded_rules(apps, schema_editor):
    PriceRule = apps.get_model("costs", "PriceRule")
    PriceRule.objects.filter(
        team=None,
        effective_from=SINCE,
        provider__in=["replicate", "simulator"],
        model__in=[model for model, *_ in REPLICATE],
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("costs", "0001_initial")]

    operations = [migrations.RunPython(seed_price_rules, remove_seeded_rules)]
