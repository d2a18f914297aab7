"""Celery's filesystem broker, with messages written atomically.

kombu's filesystem transport writes a message file in place, so a worker listing the folder can
take the file before its content is written and fail on an empty message. Writing under a name no
consumer matches and renaming it into place makes each message appear whole.
"""

import os
import uuid

from kombu.transport import filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        final = os.path.join(
            self.data_folder_out, f"{int(filesystem.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        )
        partial = f"{final}.partial"
        with open(partial, "wb") as f:
            f.write(dumps(payload).encode())
        os.replace(partial, final)


class Transport(filesystem.Transport):
    Channel = Channel
