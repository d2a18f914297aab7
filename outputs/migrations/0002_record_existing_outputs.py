"""Outputs recorded before the archive existed get rows too: the sweep then saves what the
provider still has and marks the rest expired."""

from django.db import migrations


def record_existing_outputs(apps, schema_editor):
    Prediction = apps.get_model("predictions", "Prediction")
    Output = apps.get_model("outputs", "Output")
    rows = []
    predictions = Prediction.objects.filter(output__isnull=False).only("pk", "team_id", "output")
    for prediction in predictions.iterator(chunk_size=2000):
        output = prediction.output
        urls = [output] if isinstance(output, str) else output if isinstance(output, list) else []
        urls = [u for u in urls if isinstance(u, str) and u.startswith(("https://", "http://"))]
        rows += [
            Output(prediction_id=prediction.pk, team_id=prediction.team_id, index=i, source_url=u)
            for i, u in enumerate(urls)
        ]
    Output.objects.bulk_create(rows, batch_size=2000, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("outputs", "0001_initial"),
        ("predictions", "0003_prediction_browse_indexes"),
    ]

    operations = [migrations.RunPython(record_existing_outputs, migrations.RunPython.noop)]
