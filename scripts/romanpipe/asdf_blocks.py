"""Whether an ASDF file is whole: every binary block present, complete and matching its checksum.

Opening a file reads only its YAML tree; a file cut inside its data (a copy interrupted,
a full disk) opens fine and fails later, deep inside a step, with an error that names no
file. This reads every block once, in chunks of bounded size (a full-detector ramp is
gigabytes), and checks it against its header as the ASDF standard lays blocks out:
``\\xd3BLK``, a 2-byte header size, then flags, compression, allocated, used and data
sizes and the MD5 of the used bytes (asdf writes it; zeros mean none). Blocks follow the
tree's end marker (``...``); the tree names each block it uses by its index
(``source: N``), so a file cut between blocks is found missing its last ones.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

from .errors import InputFileError

BLOCK_MAGIC = b"\xd3BLK"
_HEADER = struct.Struct(">I4sQQQ16s")  # flags, compression, allocated, used, data size, MD5
_CHUNK = 8 << 20
_TREE_END = re.compile(rb"\r?\n\.\.\.\r?\n")
_BLOCK_SOURCE = re.compile(rb"^\s*source:\s*(\d+)\s*$", re.MULTILINE)
# The tree of a Roman product is a few hundred kB at most; an end marker further away
# means a file that is not ASDF with blocks.
_MAX_TREE_BYTES = 64 << 20


def check_blocks(path: str | Path) -> int:
    """The number of blocks of a whole file; InputFileError naming the first problem otherwise."""
    path = Path(path)
    with open(path, "rb") as stream:
        head = stream.read(_MAX_TREE_BYTES)
        end = _TREE_END.search(head)
        if not head.startswith(b"#ASDF"):
            raise InputFileError(path, "not an ASDF file (no #ASDF header)")
        if end is None:
            raise InputFileError(path, "truncated inside its metadata tree (no end marker)")
        sources = [int(n) for n in _BLOCK_SOURCE.findall(head[: end.start()])]
        offset = head.find(BLOCK_MAGIC, end.end())
        count = 0
        while offset >= 0:
            offset = _check_block(stream, path, offset, count)
            count += 1
    needed = max(sources) + 1 if sources else 0
    if count < needed:
        raise InputFileError(path, f"truncated: the tree uses {needed} data blocks, the file holds {count}")
    return count


def _check_block(stream, path: Path, offset: int, index: int) -> int:
    """Check the block at ``offset``; the offset of the next one, or -1 after the last."""
    stream.seek(offset)
    start = stream.read(len(BLOCK_MAGIC) + 2)
    if len(start) < len(BLOCK_MAGIC) + 2:
        raise InputFileError(path, f"truncated inside the header of data block {index}")
    (header_size,) = struct.unpack(">H", start[len(BLOCK_MAGIC):])
    header = stream.read(header_size)
    if header_size < _HEADER.size or len(header) < header_size:
        raise InputFileError(path, f"truncated or corrupt header of data block {index}")
    _flags, _compression, allocated, used, _data_size, checksum = _HEADER.unpack(header[: _HEADER.size])
    digest = hashlib.md5(usedforsecurity=False)
    remaining = used
    while remaining:
        chunk = stream.read(min(_CHUNK, remaining))
        if not chunk:
            raise InputFileError(path, f"truncated inside data block {index} "
                                       f"({used - remaining} of its {used} bytes present)")
        digest.update(chunk)
        remaining -= len(chunk)
    if any(checksum) and digest.digest() != checksum:
        raise InputFileError(path, f"data block {index} does not match its checksum (corrupt data)")
    following = offset + len(start) + header_size + allocated
    stream.seek(following)
    return following if stream.read(len(BLOCK_MAGIC)) == BLOCK_MAGIC else -1
