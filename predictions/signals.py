"""What a prediction tells the apps built on it, without knowing them.

`remote_applied` is sent inside the transaction that stores a provider's answer, so a receiver's
rows (an output to archive, later a cost) are written with it or not at all: nothing a receiver
must do can be lost between the two.
"""

from django.dispatch import Signal

# Sent with `prediction` (its fields as just stored) after a provider's answer changed it.
remote_applied = Signal()
