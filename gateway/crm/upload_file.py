"""Reader for a bulk-write upload: which record ids does it name? (pure, synchronous)

A bulk-write upload is ``multipart/form-data`` with one ``file`` part holding a ZIP of
CSVs. :func:`scan_upload` returns the ids the CSVs name, or raises :class:`UploadRefused`
when the upload cannot be read with certainty or passes a cap. It does CPU-bound work
(inflating, CSV parsing) and must be run off the event loop::

    scan = await asyncio.to_thread(scan_upload, content_type, body, limits)

Nothing from the upload ever goes into an :class:`UploadRefused`: its ``reason`` is a
fixed code from :data:`REASONS` and its message the fixed text for that code.

Multipart (RFC 2046 / RFC 7578), parsed by hand. ``email.parser`` is not used because it
is lenient by design: it records defects instead of failing, keeps one of two
``boundary`` parameters, reads preambles and bare-LF delimiters, unfolds headers and
decodes base64 / quoted-printable parts -- every one a place where the gateway and the
CRM could read different files from one body. The hand parser accepts exactly one shape
and refuses (``ambiguous_multipart``) everything else:

* Content-Type ``multipart/form-data`` with exactly one ``boundary`` parameter
  (parameter names case-insensitive), 1-70 RFC 2046 characters, no backslash in any
  quoted value.
* The body starts with ``--boundary CRLF`` (no preamble); every occurrence of
  ``--boundary`` anywhere in the body is at the start of a CRLF line and is followed by
  CRLF (next part) or ``--`` (close); nothing but an optional CRLF after the close.
* Part headers are CRLF lines ``Name: value`` (UTF-8, no folding), with exactly one
  ``Content-Disposition: form-data; name="..."`` (no ``name*``, no repeated parameter)
  and no Content-Transfer-Encoding other than 7bit / 8bit / binary.
* Part names are compared case-sensitively (``file``), as RFC 7578 form field names
  are; but a part whose name would be ``file`` after trimming or case-folding (also the
  Turkish I that Java's ``equalsIgnoreCase`` folds) is refused, so the choice cannot be
  exploited if the CRM compares differently. Exactly one ``file`` part, or
  ``file_part_count``.

ZIP: only stored or deflated members (``zipfile`` inflates bzip2 / LZMA without an
output bound per read); no encrypted member; every non-directory member named ``*.csv``
(case-insensitive); directory entries hold no data. The members must tile the archive
from offset 0 to the central directory with no gap, overlap or prepended data, so a
streaming reader (local headers) and a central-directory reader see the same entries
(``ambiguous_zip``). Sizes in the headers are not trusted: decompressed bytes are counted
as they are read (in chunks) against the total cap and the per-member ratio
(decompressed / compressed size; checked once a member has inflated
``ratio_floor_bytes``, so tiny, very regular CSVs pass).

CSV: UTF-8 (a BOM is tolerated), the ``csv`` module's default dialect in strict mode (a
stray quote is refused rather than guessed at). The first record
of each member is its header; it must not be blank. A column is an id column when its
header, stripped of whitespace and BOM, is ``id`` in any letter case. ``rows`` counts
every record after the headers (blank lines too) and is capped; so are the characters of
one record (``max_row_chars``), which bounds memory per record (``csv.field_size_limit``
is process-wide and raised elsewhere in the gateway, so it is not relied on).

Id normalisation (as the CRM reads ids): surrounding whitespace is stripped; a value
made only of decimal digits (optionally after a ``+``) is written with ASCII digits and
no leading zeros, so ``"  00123"`` and ``"123"`` are one id. ``ids`` holds the non-empty
values of id columns; ``other_ids`` every other cell (headers included) that is 15-25
decimal digits after stripping, minus those already in ``ids``. Both are de-duplicated
in first-seen order.
"""

from __future__ import annotations

import csv
import io
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Final

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "upload_too_large": "The upload is larger than allowed.",
        "not_multipart": "The upload must be multipart/form-data with a boundary.",
        "ambiguous_multipart": "The multipart body cannot be read with certainty.",
        "file_part_count": "The upload needs exactly one part named 'file'.",
        "not_zip": "The file must be a ZIP archive.",
        "ambiguous_zip": "The ZIP archive cannot be read with certainty.",
        "unsupported_compression": "ZIP members must be stored or deflated.",
        "encrypted_member": "The ZIP archive holds an encrypted member.",
        "too_many_members": "The ZIP archive holds too many members.",
        "not_csv": "Every file in the ZIP archive must be a CSV.",
        "bad_encoding": "The CSV files must be UTF-8.",
        "bad_header": "Every CSV file must start with a header line.",
        "decompressed_too_large": "The ZIP archive inflates to more than allowed.",
        "compression_ratio": "A ZIP member is compressed more than allowed.",
        "too_many_rows": "The CSV files hold more rows than allowed.",
        "row_too_large": "A CSV row is longer than allowed.",
    }
)

_CHUNK = 64 * 1024
_BCHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")
_IDENTITY_CTE = frozenset({"7bit", "8bit", "binary"})
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_SIG = b"PK\x01\x02"
_LAYOUT_FLAGS = 0x01 | 0x08 | 0x20 | 0x40  # encrypted, descriptor, patched, strong enc.
_DESCRIPTOR_SIZES = frozenset({12, 16, 20, 24})  # data descriptor: (sig?) crc, sizes 32/64
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i"})  # Turkish I: Java folds them to "i"


@dataclass(frozen=True)
class UploadLimits:
    max_compressed_bytes: int = 50 * 1024 * 1024  # the whole request body
    max_decompressed_bytes: int = 256 * 1024 * 1024  # total over all members
    max_rows: int = 2_000_000  # total records after the headers
    max_members: int = 10  # ZIP entries, directories included
    max_ratio: int = 200  # decompressed / compressed, per member
    ratio_floor_bytes: int = 1024 * 1024  # ratio checked once a member inflated this much
    max_row_chars: int = 1024 * 1024  # characters of one CSV record


@dataclass(frozen=True)
class UploadScan:
    ids: tuple[str, ...]
    other_ids: tuple[str, ...]
    rows: int
    #: per column index (those that hold any), the id-like values of columns not headed
    #: ``id``: a job's field mapping may make such a column the key
    columns: tuple[tuple[int, tuple[str, ...]], ...] = ()


class UploadRefused(Exception):
    """The upload is refused; ``reason`` is a key of :data:`REASONS`, never upload data."""

    def __init__(self, reason: str) -> None:
        if reason not in REASONS:
            raise ValueError("unknown refusal reason")
        super().__init__(REASONS[reason])
        self.reason = reason
        self.message = REASONS[reason]


def scan_upload(content_type: str, body: bytes, limits: UploadLimits) -> UploadScan:
    """The record ids named by the CSVs of a bulk-write upload (see the module doc)."""
    if len(body) > limits.max_compressed_bytes:
        raise UploadRefused("upload_too_large")
    boundary = _boundary(content_type)
    data = _file_part(body, boundary)
    return _scan_zip(data, limits)


# -- multipart ------------------------------------------------------------------------


def _loose(text: str) -> str:
    """``text`` trimmed and case-folded the most permissive way (for ambiguity checks)."""
    return text.strip().translate(_FOLD).casefold()


def _params(text: str) -> tuple[str, dict[str, str]]:
    """``value; k=v; k="v"`` -> (value, {lower k: v}); a repeated or malformed parameter
    or a backslash in a quoted value is ambiguous."""
    head, sep, rest = text.partition(";")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while sep and i < n:
        eq = rest.find("=", i)
        if eq < 0:
            raise UploadRefused("ambiguous_multipart")
        key = rest[i:eq].strip().lower()
        if not key or any(c in key for c in ' \t";\\'):
            raise UploadRefused("ambiguous_multipart")
        j = eq + 1
        while j < n and rest[j] in " \t":
            j += 1
        if j < n and rest[j] == '"':
            end = rest.find('"', j + 1)
            if end < 0:
                raise UploadRefused("ambiguous_multipart")
            value = rest[j + 1 : end]
            if "\\" in value:
                raise UploadRefused("ambiguous_multipart")
            k = end + 1
            while k < n and rest[k] in " \t":
                k += 1
            if k < n and rest[k] != ";":
                raise UploadRefused("ambiguous_multipart")
        else:
            k = rest.find(";", j)
            k = n if k < 0 else k
            value = rest[j:k].strip()
            if not value or any(c in value for c in ' \t"\\'):
                raise UploadRefused("ambiguous_multipart")
        if key in params:
            raise UploadRefused("ambiguous_multipart")
        params[key] = value
        i = k + 1
    return head.strip().lower(), params


def _boundary(content_type: str) -> bytes:
    kind, params = _params(content_type)
    if kind != "multipart/form-data" or "boundary" not in params:
        raise UploadRefused("not_multipart")
    raw = params["boundary"]
    if not raw.isascii():
        raise UploadRefused("ambiguous_multipart")
    boundary = raw.encode("ascii")
    if not 1 <= len(boundary) <= 70 or boundary.endswith(b" ") or not set(boundary) <= _BCHARS:
        raise UploadRefused("ambiguous_multipart")
    return boundary


def _file_part(body: bytes, boundary: bytes) -> bytes:
    delim = b"--" + boundary
    if not body.startswith(delim):
        raise UploadRefused("ambiguous_multipart")  # a preamble, or no delimiter at all
    files: list[bytes] = []
    pos = 0
    while True:
        after = pos + len(delim)
        if body.startswith(b"--", after):  # the close delimiter
            if body[after + 2 :] not in (b"", b"\r\n"):
                raise UploadRefused("ambiguous_multipart")
            break
        if not body.startswith(b"\r\n", after):
            raise UploadRefused("ambiguous_multipart")
        start = after + 2
        nxt = body.find(delim, start)
        if nxt < 0 or body[nxt - 2 : nxt] != b"\r\n" or nxt - 2 < start:
            raise UploadRefused("ambiguous_multipart")  # unclosed, or a bare-LF delimiter
        name, content = _part(body[start : nxt - 2])
        if name == "file":
            files.append(content)
        elif _loose(name) == "file":
            raise UploadRefused("ambiguous_multipart")
        pos = nxt
    if len(files) != 1:
        raise UploadRefused("file_part_count")
    return files[0]


def _part(part: bytes) -> tuple[str, bytes]:
    """(form field name, content) of one part."""
    end = part.find(b"\r\n\r\n")
    if end < 0:
        raise UploadRefused("ambiguous_multipart")
    try:
        block = part[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise UploadRefused("ambiguous_multipart") from None
    headers: dict[str, str] = {}
    for line in block.split("\r\n"):
        name, colon, value = line.partition(":")
        key = name.lower()
        if (
            not colon
            or not name
            or any(c in name for c in " \t\r\n")
            or "\r" in value
            or "\n" in value
            or key in headers
        ):
            raise UploadRefused("ambiguous_multipart")
        headers[key] = value.strip()
    cte = headers.get("content-transfer-encoding")
    if cte is not None and cte.lower() not in _IDENTITY_CTE:
        raise UploadRefused("ambiguous_multipart")
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise UploadRefused("ambiguous_multipart")
    kind, params = _params(disposition)
    if kind != "form-data" or "name" not in params or "name*" in params:
        raise UploadRefused("ambiguous_multipart")
    return params["name"], part[end + 4 :]


# -- zip ------------------------------------------------------------------------------


class _Budget:
    """Decompressed bytes read so far, over all members."""

    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self.total = 0


class _CappedMember(io.RawIOBase):
    """A ZIP member's bytes, counted as read against the total cap and the ratio."""

    def __init__(self, src: IO[bytes], compressed: int, budget: _Budget) -> None:
        self._src = src
        self._compressed = max(compressed, 1)
        self._budget = budget
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._src.read(min(len(view), _CHUNK))
        n = len(data)
        self._read += n
        self._budget.total += n
        limits = self._budget.limits
        if self._budget.total > limits.max_decompressed_bytes:
            raise UploadRefused("decompressed_too_large")
        if (
            self._read > limits.ratio_floor_bytes
            and self._read > limits.max_ratio * self._compressed
        ):
            raise UploadRefused("compression_ratio")
        view[:n] = data
        return n


def _check_layout(data: bytes, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """The members tile the archive from offset 0 to the central directory, and each
    local header agrees with its central entry: a reader walking the local headers and
    one reading the central directory see the same members."""
    expected, descriptor = 0, False
    for info in sorted(infos, key=lambda i: i.header_offset):
        offset = info.header_offset
        _check_gap(offset - expected, descriptor)
        header = data[offset : offset + 30]
        if len(header) < 30 or header[:4] != _LOCAL_SIG:
            raise UploadRefused("ambiguous_zip")
        flags, method, _, _, _, compressed, _, name_len, extra_len = struct.unpack(
            "<HHHHIIIHH", header[6:30]
        )
        descriptor = bool(info.flag_bits & 0x08)
        if (
            (flags ^ info.flag_bits) & _LAYOUT_FLAGS
            or method != info.compress_type
            or not (descriptor or compressed in (info.compress_size, 0xFFFFFFFF))
        ):
            raise UploadRefused("ambiguous_zip")
        expected = offset + 30 + name_len + extra_len + info.compress_size
    _check_gap(archive.start_dir - expected, descriptor)


def _check_gap(gap: int, descriptor: bool) -> None:
    """Between a member's data and the next header: its data descriptor, or nothing."""
    if gap not in (_DESCRIPTOR_SIZES if descriptor else (0,)):
        raise UploadRefused("ambiguous_zip")


def _scan_zip(data: bytes, limits: UploadLimits) -> UploadScan:
    # Every central-directory entry starts with its signature, so this bounds the entries
    # zipfile would build objects for, before it builds them.
    if data.count(_CENTRAL_SIG) > limits.max_members:
        raise UploadRefused("too_many_members")
    ids: dict[str, None] = {}
    others: dict[str, None] = {}
    columns: dict[int, dict[str, None]] = {}
    budget = _Budget(limits)
    rows = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > limits.max_members:
                raise UploadRefused("too_many_members")
            _check_layout(data, archive, infos)
            for info in infos:
                if info.flag_bits & 0x01:
                    raise UploadRefused("encrypted_member")
                if info.compress_type not in _ZIP_METHODS:
                    raise UploadRefused("unsupported_compression")
                if not info.is_dir() and not info.filename.lower().endswith(".csv"):
                    raise UploadRefused("not_csv")
            for info in infos:
                with archive.open(info) as src:
                    member = _CappedMember(src, info.compress_size, budget)
                    if info.is_dir():
                        if member.read(1):
                            raise UploadRefused("not_csv")
                        continue
                    rows = _scan_csv(member, limits, rows, ids, others, columns)
    except UploadRefused:
        raise
    except UnicodeDecodeError:
        raise UploadRefused("bad_encoding") from None
    except csv.Error:
        raise UploadRefused("not_csv") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error):
        raise UploadRefused("not_zip") from None
    except NotImplementedError:
        raise UploadRefused("unsupported_compression") from None
    return UploadScan(
        ids=tuple(ids),
        other_ids=tuple(i for i in others if i not in ids),
        rows=rows,
        columns=tuple((pos, tuple(column)) for pos, column in sorted(columns.items())),
    )


# -- csv ------------------------------------------------------------------------------


def _normalise(value: str) -> str:
    """An id as the CRM reads it: trimmed; decimal digits as ASCII without leading zeros."""
    value = value.strip()
    digits = value[1:] if value.startswith("+") else value
    if digits.isdecimal():
        ascii_digits = (
            digits
            if digits.isascii()
            else "".join(chr(48 + unicodedata.decimal(c)) for c in digits)
        )
        return ascii_digits.lstrip("0") or "0"
    return value


def _looks_like_id(value: str) -> bool:
    """Whether a normalised cell could be a record's id (leading zeros dropped first: the
    CRM reads ``000123`` as ``123``)."""
    return 15 <= len(value) <= 25 and value.isdecimal()


def _scan_csv(
    member: _CappedMember,
    limits: UploadLimits,
    rows: int,
    ids: dict[str, None],
    others: dict[str, None],
    columns: dict[int, dict[str, None]],
) -> int:
    text = io.TextIOWrapper(
        io.BufferedReader(member, _CHUNK), encoding="utf-8-sig", errors="strict", newline=""
    )
    pending = [0]  # characters read for the record being parsed

    def lines() -> Iterator[str]:
        while line := text.readline(limits.max_row_chars + 1):
            pending[0] += len(line)
            if pending[0] > limits.max_row_chars:
                raise UploadRefused("row_too_large")
            yield line

    reader = csv.reader(lines(), strict=True)
    header = next(reader, None)
    if header is None:
        return rows  # an empty file
    pending[0] = 0
    names = [_loose(h.strip().lstrip("\ufeff")) for h in header]
    if not any(names):
        raise UploadRefused("bad_header")
    id_cols = frozenset(i for i, name in enumerate(names) if name == "id")
    for i, cell in enumerate(header):
        if _looks_like_id(value := _normalise(cell)):
            others.setdefault(value)
            columns.setdefault(i, {}).setdefault(value)
    for record in reader:
        pending[0] = 0
        rows += 1
        if rows > limits.max_rows:
            raise UploadRefused("too_many_rows")
        for i, cell in enumerate(record):
            value = _normalise(cell)
            if i in id_cols:
                if value:
                    ids.setdefault(value)
            elif _looks_like_id(value):
                others.setdefault(value)
                columns.setdefault(i, {}).setdefault(value)
    return rows
