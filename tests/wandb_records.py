"""Read back an offline W&B run file (``offline-run-*/run-*.wandb``): config, history rows and summary.

The file is wandb's LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB
blocks of chunks, each with a 7-byte header (crc32, uint16 length, uint8 type FULL/FIRST/MIDDLE/LAST);
a chunk header never straddles a block end (the tail is zero padding). Each reassembled payload is a
``wandb_internal_pb2.Record``. Used by tests and reports to check what a run really logged.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

_BLOCK = 32768
_HEADER = struct.Struct("<IHB")
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file (bad header)")
    pos, parts = 7, []
    while pos + _HEADER.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER.size:
            pos += room
            continue
        _crc, length, kind = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        if kind == 0 and length == 0:  # zero padding at a block end
            pos += room - _HEADER.size
            continue
        chunk = data[pos:pos + length]
        pos += length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            parts = [chunk]
        elif kind == _MIDDLE:
            parts.append(chunk)
        elif kind == _LAST:
            parts.append(chunk)
            yield b"".join(parts)


def read_run(path: str | Path) -> dict:
    """``{"config", "history": [{...}, ...], "summary", "run", "exit_code", "artifacts": [...]}`` of one run file
    (or of the single ``run-*.wandb`` inside an ``offline-run-*`` folder)."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        path = next(path.glob("run-*.wandb"))
    out = {"config": {}, "history": [], "summary": {}, "run": {}, "exit_code": None, "artifacts": []}
    for payload in _payloads(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "run":
            out["run"] = {"name": rec.run.display_name, "group": rec.run.run_group, "id": rec.run.run_id,
                          "project": rec.run.project, "job_type": rec.run.job_type, "commit": rec.run.git.commit}
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
        elif kind == "artifact":
            a = rec.artifact
            out["artifacts"].append({"type": a.type, "name": a.name, "aliases": list(a.aliases),
                                     "metadata": json.loads(a.metadata) if a.metadata else {},
                                     "files": [e.path for e in a.manifest.contents]})
    return out
