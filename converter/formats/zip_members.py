"""Where a zip member's bytes start in the file: read from its local header (whose name and extra-field
lengths may differ from the central directory's), so that a stored member can be read in place."""

from __future__ import annotations

import struct
import zipfile

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes we do not need, name and extra lengths
SIGNATURE = b"PK\x03\x04"


def data_offset(raw, info: zipfile.ZipInfo) -> int | None:
    """The file offset of `info`'s data in the open binary file `raw`; None for a damaged local header."""
    raw.seek(info.header_offset)
    header = raw.read(LOCAL_HEADER.size)
    if len(header) != LOCAL_HEADER.size:
        return None
    signature, name_len, extra_len = LOCAL_HEADER.unpack(header)
    if signature != SIGNATURE:
        return None
    return info.header_offset + LOCAL_HEADER.size + name_len + extra_len
