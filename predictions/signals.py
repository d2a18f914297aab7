"""What a prediction tells the apps built on it, without knowing them.

`changed` is sent inside the transaction that stores a provider's answer or a move to an end
state, so a receiver's rows (an output to archive, a cost) are written with it or not at all:
nothing a receiver must do can be lost between the two.

`submitting` is sent before new predictions are saved or sent, so an app built on predictions
(a budget in costs) can refuse them while nothing has been spent yet.
"""

from django.dispatch import Signal

# Sent with `prediction` (its fields as just stored) after a provider's answer or a transition
# to an end state changed it.
changed = Signal()

# Sent with `team`, `member` (the user submitting) and `variations` (one dict per prediction to
# create, with its `provider`, `model` and `input`) by the New images form and Run again, before
# anything is saved. A receiver returns why the submission is refused, or None to let it through.
submitting = Signal()
