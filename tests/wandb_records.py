"""Read back a W&B offline run file (run-<id>.wandb) as wandb_internal_pb2.Record messages.

The file is W&B's record log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then the
LevelDB log format: 32 KiB blocks of chunks, each with a 7-byte header (CRC32C, little-endian
length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4). wandb 0.31 no longer ships a Python reader.
"""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, records, pending = HEADER, [], b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # trailer padding: the next chunk starts in the next block
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding at the end of a file still being written
            break
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        rec = pb.Record()
        rec.ParseFromString(pending)
        records.append(rec)
        pending = b""
    return records


def history(records: list[pb.Record]) -> list[dict]:
    import json

    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in r.history.item
                }
            )
    return rows
