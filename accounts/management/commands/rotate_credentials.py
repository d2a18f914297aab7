from django.core.management.base import BaseCommand

from accounts.models import ProviderCredential


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored provider key with the first of DARKROOM_ENCRYPTION_KEYS, "
        "so the older keys can then be dropped."
    )

    def handle(self, *args, **options) -> None:
        credentials = ProviderCredential.objects.all()
        for credential in credentials:
            credential.rotate()
        self.stdout.write(f"Re-encrypted {len(credentials)} provider keys with the first key.")
