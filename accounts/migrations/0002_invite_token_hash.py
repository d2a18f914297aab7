"""Invites keep only the SHA-256 of their token. Links already sent keep working: each stored
token is hashed here, then dropped. Going back gives every invite a new token (the old links
cannot be recovered from their hashes, so they stop working)."""

import hashlib

from django.db import migrations, models

import accounts.models


def hash_tokens(apps, schema_editor):
    Invite = apps.get_model("accounts", "Invite")
    for invite in Invite.objects.only("pk", "token"):
        invite.token_hash = hashlib.sha256(invite.token.encode()).hexdigest()
        invite.save(update_fields=["token_hash"])


def new_tokens(apps, schema_editor):
    Invite = apps.get_model("accounts", "Invite")
    for invite in Invite.objects.only("pk"):
        invite.token = accounts.models.new_invite_token()
        invite.save(update_fields=["token"])


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="invite",
            name="token_hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="invite", name="token", field=models.CharField(max_length=64, null=True)
        ),
        migrations.RunPython(hash_tokens, new_tokens),
        migrations.RemoveField(model_name="invite", name="token"),
        migrations.AlterField(
            model_name="invite",
            name="token_hash",
            field=models.CharField(editable=False, max_length=64, unique=True),
        ),
    ]
