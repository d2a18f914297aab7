"""Zips of archived outputs, streamed as they are written: a 2 GB board never sits in memory.

`zipfile` writes into a buffer that keeps only what was written since the generator last
drained it. The buffer cannot seek, so every entry carries a data descriptor after its data
(sizes and CRC are known only then) and forced ZIP64 sizes, so entries over 4 GB stay valid.
Entries are stored, not deflated: images and videos are compressed already.
"""

import logging
import zipfile
from collections.abc import Iterable, Iterator

from django.core.files.storage import default_storage
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify

from .models import Output

CHUNK_SIZE = 64 * 1024

logger = logging.getLogger(__name__)


class WriteBuffer:
    """A write-only file: what `zipfile` wrote since the last `drain()`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def entry_names(outputs: Iterable[Output], hide_prompts: bool = False) -> list[str]:
    """Each output's file name, with " (2)", " (3)" ... added where two would be the same."""
    names, taken = [], set()
    for output in outputs:
        name = output.file_name(hide_prompts)
        stem, dot, extension = name.rpartition(".")
        copy = 1
        while name in taken:
            copy += 1
            name = f"{stem} ({copy}){dot}{extension}"
        taken.add(name)
        names.append(name)
    return names


def zip_chunks(outputs: list[Output], hide_prompts: bool = False) -> Iterator[bytes]:
    """The zip of `outputs`' archived copies, in pieces of about CHUNK_SIZE bytes. A copy missing
    from storage is left out (the response has started, so it can no longer fail)."""
    buffer = WriteBuffer()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for output, name in zip(outputs, entry_names(outputs, hide_prompts), strict=True):
            try:
                source = default_storage.open(output.stored_name(), "rb")
            except FileNotFoundError:
                logger.warning("Left %s out of a zip: its stored copy is missing", output)
                continue
            created = timezone.localtime(output.created_at)
            info = zipfile.ZipInfo(name, date_time=created.timetuple()[:6])
            with source, archive.open(info, "w", force_zip64=True) as entry:
                while chunk := source.read(CHUNK_SIZE):
                    entry.write(chunk)
                    yield buffer.drain()
            yield buffer.drain()
    yield buffer.drain()


def zip_response(outputs: Iterable[Output], name: str, hide_prompts: bool = False):
    """A download of the archived ones among `outputs` as `<name>.zip`, streamed."""
    archived = [output for output in outputs if output.is_archived]
    filename = f"{slugify(name)[:80].strip('-') or 'darkroom'}.zip"
    response = StreamingHttpResponse(
        (chunk for chunk in zip_chunks(archived, hide_prompts) if chunk),
        content_type="application/zip",
    )
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response
