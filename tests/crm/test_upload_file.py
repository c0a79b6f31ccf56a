"""Tests for gateway.crm.upload_file: the ids a bulk-write upload names, or a refusal.

What matters: every id the CSVs name is reported, or the upload is refused with a fixed
reason; caps are enforced on what is actually inflated; nothing from the upload ever
appears in a refusal.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile

import httpx
import pytest

from gateway.crm.upload_file import (
    REASONS,
    UploadLimits,
    UploadRefused,
    UploadScan,
    scan_upload,
)

BOUNDARY = b"b0undary-7f3a"
CT = "multipart/form-data; boundary=" + BOUNDARY.decode()
FILE_HEADERS = (
    b'Content-Disposition: form-data; name="file"; filename="rows.zip"\r\n'
    b"Content-Type: application/zip"
)
LIMITS = UploadLimits()
MARKER = "Zelda7Secret"  # stands in for personal data; must never appear in a refusal
ID1 = "4150868000000224005"
ID2 = "4150868000000224006"


def _zip(members: dict[str, bytes | str], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, content in members.items():
            z.writestr(name, content)
    return buf.getvalue()


def _multipart(*parts: tuple[bytes, bytes], boundary: bytes = BOUNDARY) -> bytes:
    out = b"".join(b"--" + boundary + b"\r\n" + h + b"\r\n\r\n" + c + b"\r\n" for h, c in parts)
    return out + b"--" + boundary + b"--\r\n"


def _upload(members: dict[str, bytes | str], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    return _multipart((FILE_HEADERS, _zip(members, method)))


def _scan(body: bytes, content_type: str = CT, limits: UploadLimits = LIMITS) -> UploadScan:
    return scan_upload(content_type, body, limits)


def _refused(body: bytes, content_type: str = CT, limits: UploadLimits = LIMITS) -> str:
    with pytest.raises(UploadRefused) as info:
        scan_upload(content_type, body, limits)
    exc = info.value
    assert str(exc) == REASONS[exc.reason] == exc.message
    return exc.reason


# -- what an upload names -------------------------------------------------------------


def test_a_normal_upload_sent_by_an_http_client() -> None:
    csv_text = f"id,Last_Name,Account\n{ID1},Smith,{ID2}\n{ID2},Jones,\n"
    request = httpx.Request(
        "POST",
        "https://crm.example/crm/v8/upload",
        files={"file": ("rows.zip", _zip({"Leads.csv": csv_text}), "application/zip")},
        data={"note": "import"},
    )
    body = request.read()
    scan = scan_upload(request.headers["content-type"], body, LIMITS)
    # ID2 in the Account column is an id already (not repeated in other_ids); a job's field
    # mapping could make that column its key, so the column keeps it
    assert scan == UploadScan(ids=(ID1, ID2), other_ids=(), rows=2, columns=((2, (ID2,)),))


def test_ids_of_several_members_are_collected_in_first_seen_order() -> None:
    body = _upload({"a.csv": f"id\n{ID2}\n", "b.CSV": f"Id,x\n{ID1},1\n{ID2},2\n"})
    assert _scan(body) == UploadScan(ids=(ID2, ID1), other_ids=(), rows=3)


@pytest.mark.parametrize("header", ["ID", "Id", " iD ", "\ufeffid", '"ID"', "\u0131d"])
def test_the_id_column_is_found_in_any_letter_case(header: str) -> None:
    body = _upload({"rows.csv": f"Last_Name,{header}\nSmith,{ID1}\n"})
    assert _scan(body).ids == (ID1,)


def test_a_bom_before_the_header_is_tolerated() -> None:
    body = _upload({"rows.csv": f"id,Last_Name\n{ID1},Smith\n".encode("utf-8-sig")})
    assert _scan(body).ids == (ID1,)


def test_ids_are_normalised_as_the_crm_reads_them() -> None:
    text = f"id\n  {ID1}  \n00{ID1}\n\t+{ID1}\n{ID2}\n   \n\n0000\nabc \n"
    scan = _scan(_upload({"rows.csv": text}))
    assert scan.ids == (ID1, ID2, "0", "abc")
    assert scan.rows == 8


def test_other_id_like_cells_are_reported_apart() -> None:
    fifteen, twenty_five = "1" * 15, "9" * 25
    text = (
        f"{fifteen},id,Note\n"  # an id-like header cell counts too
        f"{'2' * 14},{ID1}, 00{twenty_five[:23]} \n"
        f"{'3' * 26},{ID2},{ID1}\n"  # ID1 is an id already: not repeated in other_ids
        f"{twenty_five},,x{ID1}\n"
    )
    scan = _scan(_upload({"rows.csv": text}))
    assert scan.ids == (ID1, ID2)
    assert scan.other_ids == (fifteen, twenty_five[:23], twenty_five)


# -- multipart ------------------------------------------------------------------------


def test_two_file_parts_are_refused() -> None:
    part = (FILE_HEADERS, _zip({"a.csv": f"id\n{ID1}\n"}))
    assert _refused(_multipart(part, part)) == "file_part_count"


def test_an_upload_without_a_file_part_is_refused() -> None:
    other = (b'Content-Disposition: form-data; name="files"', _zip({"a.csv": "id\n"}))
    assert _refused(_multipart(other)) == "file_part_count"


@pytest.mark.parametrize("name", ["File", "FILE", " file", "f\u0131le"])
def test_a_part_named_file_in_another_spelling_is_refused(name: str) -> None:
    headers = f'Content-Disposition: form-data; name="{name}"'.encode()
    good = (FILE_HEADERS, _zip({"a.csv": "id\n"}))
    assert _refused(_multipart(good, (headers, _zip({"b.csv": f"id\n{ID1}\n"})))) == (
        "ambiguous_multipart"
    )


@pytest.mark.parametrize(
    "content_type",
    [
        CT + "; boundary=" + BOUNDARY.decode(),
        CT + "; boundary=other",
        CT + '; Boundary="other"',
    ],
)
def test_a_repeated_boundary_is_refused(content_type: str) -> None:
    assert _refused(_upload({"a.csv": "id\n"}), content_type) == "ambiguous_multipart"


@pytest.mark.parametrize(
    "content_type",
    ["application/zip", "application/json", "multipart/mixed; boundary=x", "multipart/form-data"],
)
def test_a_body_that_is_not_multipart_form_data_is_refused(content_type: str) -> None:
    assert _refused(_upload({"a.csv": "id\n"}), content_type) == "not_multipart"


def _ambiguous_bodies() -> list[bytes]:
    good = _upload({"a.csv": f"id\n{ID1}\n"})
    zipped = _zip({"a.csv": f"id\n{ID1}\n"})
    return [
        b"preamble\r\n" + good,
        good.replace(b"\r\n--" + BOUNDARY, b"\n--" + BOUNDARY),  # bare-LF delimiters
        good.replace(b"--\r\n", b"--\r\n--" + BOUNDARY + b"\r\n" + FILE_HEADERS),  # epilogue
        good[: -len(b"--\r\n")],  # never closed
        _multipart((FILE_HEADERS + b"\r\nContent-Transfer-Encoding: base64", zipped)),
        _multipart((FILE_HEADERS + b"\r\n\tfolded", zipped)),
        _multipart((FILE_HEADERS + b"\r\n" + FILE_HEADERS, zipped)),
        _multipart((b'Content-Disposition: form-data; name="file"; name="x"', zipped)),
        _multipart((b"Content-Disposition: form-data; name*=UTF-8''file", zipped)),
        _multipart((b'Content-Disposition: form-data; filename="a\\"; name="file"', zipped)),
        _multipart((b'Content-Disposition: attachment; name="file"', zipped)),
        _multipart((FILE_HEADERS, zipped + b"\r\n--" + BOUNDARY + b"-suffix")),
    ]


@pytest.mark.parametrize("body", _ambiguous_bodies())
def test_an_ambiguous_multipart_body_is_refused(body: bytes) -> None:
    assert _refused(body) == "ambiguous_multipart"


def test_a_quoted_boundary_and_other_parts_are_read() -> None:
    boundary = b"x'()+_,-./:=? y"
    body = _multipart(
        (b'Content-Disposition: form-data; name="note"', b"hello"),
        (FILE_HEADERS, _zip({"a.csv": f"id\n{ID1}\n"})),
        boundary=boundary,
    )
    content_type = f'multipart/form-data; boundary="{boundary.decode()}"; charset=utf-8'
    assert _scan(body, content_type).ids == (ID1,)


def test_an_upload_larger_than_the_cap_is_refused() -> None:
    body = _upload({"a.csv": f"id\n{ID1}\n"})
    assert _refused(body, limits=UploadLimits(max_compressed_bytes=len(body) - 1)) == (
        "upload_too_large"
    )
    assert _scan(body, limits=UploadLimits(max_compressed_bytes=len(body))).ids == (ID1,)


# -- zip ------------------------------------------------------------------------------


def test_a_file_that_is_not_a_zip_is_refused() -> None:
    assert _refused(_multipart((FILE_HEADERS, f"id\n{ID1}\n".encode()))) == "not_zip"


def test_a_zip_with_a_member_that_is_not_a_csv_is_refused() -> None:
    body = _upload({"a.csv": f"id\n{ID1}\n", "notes.txt": "hello"})
    assert _refused(body) == "not_csv"


def test_directory_entries_are_allowed_but_must_be_empty() -> None:
    assert _scan(_upload({"leads/": b"", "leads/a.csv": f"id\n{ID1}\n"})).ids == (ID1,)
    assert _refused(_upload({"leads/": f"id\n{ID1}\n"})) == "not_csv"


def test_too_many_members_are_refused() -> None:
    members: dict[str, bytes | str] = {f"m{i}.csv": f"id\n{ID1}\n" for i in range(3)}
    assert _refused(_upload(members), limits=UploadLimits(max_members=2)) == "too_many_members"
    assert _scan(_upload(members), limits=UploadLimits(max_members=3)).rows == 3


def test_a_bzip2_member_is_refused() -> None:
    body = _upload({"a.csv": f"id\n{ID1}\n"}, method=zipfile.ZIP_BZIP2)
    assert _refused(body) == "unsupported_compression"


def _set_flag(data: bytes, bit: int) -> bytes:
    """Set a general-purpose flag bit in every local and central header."""
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(sig)
        while pos >= 0:
            (flags,) = struct.unpack_from("<H", out, pos + at)
            struct.pack_into("<H", out, pos + at, flags | bit)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def test_an_encrypted_member_is_refused() -> None:
    zipped = _set_flag(_zip({"a.csv": f"id\n{ID1}\n"}), 0x01)
    assert _refused(_multipart((FILE_HEADERS, zipped))) == "encrypted_member"


def test_data_before_the_first_member_is_refused() -> None:
    zipped = b"PK junk " * 8 + _zip({"a.csv": f"id\n{ID1}\n"})
    assert zipfile.ZipFile(io.BytesIO(zipped)).namelist() == ["a.csv"]  # zipfile accepts it
    assert _refused(_multipart((FILE_HEADERS, zipped))) == "ambiguous_zip"


def test_a_member_hidden_from_the_central_directory_is_refused() -> None:
    shown = _zip({"a.csv": "id\n"})
    hidden_zip = _zip({"b.csv": f"id\n{ID1}\n"})
    hidden = hidden_zip[: zipfile.ZipFile(io.BytesIO(hidden_zip)).start_dir]  # its local entry
    start_dir = zipfile.ZipFile(io.BytesIO(shown)).start_dir
    zipped = bytearray(shown[:start_dir] + hidden + shown[start_dir:])
    eocd = len(zipped) - 22
    struct.pack_into("<I", zipped, eocd + 16, start_dir + len(hidden))
    assert zipfile.ZipFile(io.BytesIO(bytes(zipped))).namelist() == ["a.csv"]
    assert _refused(_multipart((FILE_HEADERS, bytes(zipped)))) == "ambiguous_zip"


def test_a_zip_written_with_data_descriptors_is_read() -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.out = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            data = bytes(b)  # type: ignore[call-overload]
            self.out += data
            return len(data)

    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.csv", f"id\n{ID1}\n")
        z.writestr("b.csv", f"id\n{ID2}\n")
    zipped = bytes(sink.out)
    assert all(i.flag_bits & 0x08 for i in zipfile.ZipFile(io.BytesIO(zipped)).infolist())
    assert _scan(_multipart((FILE_HEADERS, zipped))).ids == (ID1, ID2)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 64 MB member of zero bytes deflated to ~65 KB, written without holding 64 MB."""
    buf = io.BytesIO()
    zeros = bytes(64 * 1024)
    with (
        zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z,
        z.open("rows.csv", "w", force_zip64=True) as f,
    ):
        for _ in range(1024):
            f.write(zeros)
    data = buf.getvalue()
    assert len(data) < 100 * 1024
    assert zipfile.ZipFile(io.BytesIO(data)).getinfo("rows.csv").file_size == 64 * 1024 * 1024
    return _multipart((FILE_HEADERS, data))


def _refused_with_peak(body: bytes, limits: UploadLimits) -> tuple[str, int]:
    """The refusal's reason and the peak memory allocated while scanning."""
    tracemalloc.start()
    try:
        reason = _refused(body, CT, limits)
        return reason, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


MiB = 1024 * 1024
NO_CAP = 10**12


def test_a_zip_bomb_is_refused_by_the_decompressed_cap(bomb: bytes) -> None:
    limits = UploadLimits(max_decompressed_bytes=2 * MiB, max_ratio=NO_CAP, max_row_chars=NO_CAP)
    reason, peak = _refused_with_peak(bomb, limits)
    assert reason == "decompressed_too_large"
    assert peak < 16 * MiB  # read in chunks: nowhere near the 64 MB it inflates to


def test_a_zip_bomb_is_refused_by_the_compression_ratio(bomb: bytes) -> None:
    limits = UploadLimits(max_ratio=20, max_row_chars=NO_CAP)  # 20 x 65 KB: about 1.3 MB
    reason, peak = _refused_with_peak(bomb, limits)
    assert reason == "compression_ratio"
    assert peak < 16 * MiB


def test_a_zip_bomb_is_refused_with_the_default_limits(bomb: bytes) -> None:
    reason, peak = _refused_with_peak(bomb, LIMITS)
    assert reason in {"decompressed_too_large", "compression_ratio", "row_too_large"}
    assert peak < 16 * MiB


def test_the_ratio_is_not_checked_below_its_floor() -> None:
    text = "id,Note\n" + f"{ID1}," + "a," * 100_000 + "\n"  # 200 KB deflated to < 1 KB
    scan = _scan(_upload({"a.csv": text}), limits=UploadLimits(ratio_floor_bytes=10**6))
    assert scan.ids == (ID1,)
    limits = UploadLimits(ratio_floor_bytes=1024, max_ratio=20)
    assert _refused(_upload({"a.csv": text}), limits=limits) == "compression_ratio"


def test_the_decompressed_cap_is_total_over_members() -> None:
    members: dict[str, bytes | str] = {f"m{i}.csv": "id\n" + "x\n" * 5000 for i in range(3)}
    body = _upload(members)
    assert _scan(body, limits=UploadLimits(max_decompressed_bytes=3 * 10_003)).rows == 15_000
    limits = UploadLimits(max_decompressed_bytes=3 * 10_003 - 1)
    assert _refused(body, limits=limits) == "decompressed_too_large"


# -- csv ------------------------------------------------------------------------------


def test_too_many_rows_are_refused() -> None:
    members: dict[str, bytes | str] = {"a.csv": f"id\n{ID1}\n{ID2}\n", "b.csv": "id\n1\n2\n"}
    assert _scan(_upload(members), limits=UploadLimits(max_rows=4)).rows == 4
    assert _refused(_upload(members), limits=UploadLimits(max_rows=3)) == "too_many_rows"


def test_a_row_longer_than_the_cap_is_refused() -> None:
    one_line = f"id,Note\n{ID1},{'a' * 300}\n"
    many_lines = "id,Note\n" + f'{ID1},"' + "a\n" * 150 + '"\n'
    limits = UploadLimits(max_row_chars=256)
    assert _refused(_upload({"a.csv": one_line}), limits=limits) == "row_too_large"
    assert _refused(_upload({"a.csv": many_lines}), limits=limits) == "row_too_large"
    assert _scan(_upload({"a.csv": many_lines}), limits=UploadLimits(max_row_chars=400)).rows == 1


def test_a_csv_that_is_not_utf8_is_refused() -> None:
    body = _upload({"a.csv": f"id,Name\n{ID1},Jos\u00e9\n".encode("latin-1")})
    assert _refused(body) == "bad_encoding"


@pytest.mark.parametrize("text", [f'id,Note\n{ID1},"a"b\n', f'id,Note\n{ID1},"a\n'])
def test_a_csv_with_stray_quotes_is_refused(text: str) -> None:
    assert _refused(_upload({"a.csv": text})) == "not_csv"


def test_a_csv_starting_with_a_blank_line_is_refused() -> None:
    assert _refused(_upload({"a.csv": f"\nid\n{ID1}\n"})) == "bad_header"
    assert _scan(_upload({"a.csv": ""})) == UploadScan(ids=(), other_ids=(), rows=0)


# -- nothing from the upload in a refusal ---------------------------------------------


def _marker_cases() -> list[tuple[bytes, str, UploadLimits]]:
    secret = MARKER.encode()
    rows = f"id,Name\n{ID1},{MARKER}\n{ID2},{MARKER}\n"
    return [
        (_upload({f"{MARKER}.txt": rows}), CT, LIMITS),
        (
            _upload({"a.csv": f"id,{MARKER}\n{ID1},caf\u00e9 {MARKER}\n".encode("latin-1")}),
            CT,
            LIMITS,
        ),
        (_upload({"a.csv": rows}), CT, UploadLimits(max_rows=1)),
        (_upload({"a.csv": rows}), CT, UploadLimits(max_row_chars=10)),
        (_upload({"a.csv": f'id\n"{MARKER}"{MARKER}\n'}), CT, LIMITS),
        (_multipart((FILE_HEADERS, secret)), CT, LIMITS),
        (_upload({"a.csv": rows}), f"multipart/form-data; boundary={MARKER}", LIMITS),
        (_upload({"a.csv": rows}), f"{MARKER}/x; boundary=a", LIMITS),
        (_multipart((f'Content-Disposition: form-data; name="{MARKER}'.encode(), b"")), CT, LIMITS),
    ]


@pytest.mark.parametrize(("body", "content_type", "limits"), _marker_cases())
def test_a_refusal_never_carries_a_value_from_the_upload(
    body: bytes, content_type: str, limits: UploadLimits
) -> None:
    with pytest.raises(UploadRefused) as info:
        scan_upload(content_type, body, limits)
    exc = info.value
    shown = [str(exc), repr(exc), exc.reason, exc.message, *map(str, exc.args)]
    assert not [s for s in shown if MARKER in s]
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
