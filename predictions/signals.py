"""What a prediction tells the apps built on it, without knowing them.

`changed` is sent inside the transaction that stores a provider's answer or a move to an end
state, so a receiver's rows (an output to archive, a cost) are written with it or not at all:
nothing a receiver must do can be lost between the two.
"""

from django.dispatch import Signal

# Sent with `prediction` (its fields as just stored) after a provider's answer or a transition
# to an end state changed it.
changed = Signal()
