"""Bulk-read results: a ZIP holding one CSV, rewritten with bounded memory.

The upstream's ZIP is spooled to a temporary file (it can be far larger than a JSON page),
each CSV inside is rewritten row by row into a new ZIP, also spooled, so memory stays
bounded whatever the export size. Columns of private fields are kept with their header and
emptied. A member that is not a CSV, or a ZIP that does not open, is refused: the gateway
never passes on what it could not check.
"""

from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from collections.abc import Callable
from typing import IO

from gateway.errors import UnreadableUpstream

SPOOL_IN_MEMORY = 8 * 1024 * 1024
csv.field_size_limit(64 * 1024 * 1024)


def spooled() -> tempfile.SpooledTemporaryFile[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)


def rewrite_zip(
    source: IO[bytes], blank: Callable[[str], str | None], counts: dict[str, int]
) -> IO[bytes]:
    """Return a new ZIP (a file positioned at 0) whose CSV columns for which ``blank(header)``
    names a field are emptied. ``counts`` gains the number of values emptied per field."""
    out = spooled()
    try:
        with (
            zipfile.ZipFile(source) as zin,
            zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zout,
        ):
            for member in zin.infolist():
                if member.is_dir():
                    continue
                if not member.filename.lower().endswith(".csv"):
                    raise UnreadableUpstream()
                with zin.open(member) as raw, zout.open(member.filename, "w") as dst:
                    _rewrite_csv(raw, dst, blank, counts)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, UnicodeDecodeError, csv.Error) as exc:
        out.close()
        raise UnreadableUpstream() from exc
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def _rewrite_csv(
    raw: IO[bytes], dst: IO[bytes], blank: Callable[[str], str | None], counts: dict[str, int]
) -> None:
    reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
    text_out = io.TextIOWrapper(dst, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text_out, lineterminator="\r\n")
    try:
        header = next(reader)
    except StopIteration:
        text_out.detach()
        return
    writer.writerow(header)
    targets = [(i, name) for i, h in enumerate(header) if (name := blank(h)) is not None]
    for _, name in targets:  # a withheld column is named even when it held nothing
        counts.setdefault(name, 0)
    width = len(header)
    for row in reader:
        if len(row) > width:  # a value under no header cannot be checked
            raise UnreadableUpstream()
        for i, name in targets:
            if i < len(row):
                row[i] = ""
                counts[name] += 1
        writer.writerow(row)
    text_out.flush()
    text_out.detach()
