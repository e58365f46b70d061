"""Weights an admin sends by a resumable upload: what passes as weights, and the name they get on the shared volume.

An upload whose creator declared it weights (an admin key only, ``resumable.service``) is stored when its bytes
are of the form its name says, checked without loading anything (the API never imports torch):
:func:`identify_weights`. A ``.pt`` is the zip archive ``torch.save`` writes, which holds a ``data.pkl``; an
``.onnx`` is an ONNX ``ModelProto``, its top-level protobuf fields walked to the end of the file (lengths
skipped, not read), with the IR version and the graph among them. Nothing else is sent this way: an OpenVINO
export is a folder, and a TensorRT ``.engine`` is built for the server's own GPU and TensorRT, so both go on the
volume and are registered by path. The registry checks a path's file with the same function.

A stored file is a blob named by its digest, without the suffix a worker chooses a model's runtime by (``.pt``,
``.onnx``), and retention deletes it with its tenant's other files. A registered model's weights are a hard link
to the blob (a copy where the volume cannot link), so their bytes stay as long as the model does, whatever
happens to the stored file. Neither fsck nor the cleanup looks under ``models/``.
"""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import BinaryIO

from storage.blobs import BlobStore, fsync_dir, make_dirs_durably
from storage.images import UnsupportedMedia
from storage.media import WeightsInfo

MODELS_DIR = "models"
PYTORCH, ONNX = ".pt", ".onnx"
# The weights a resumable upload may hold, by their name's suffix.
UPLOADED_SUFFIXES = (PYTORCH, ONNX)
PYTORCH_PICKLE = "data.pkl"
# ONNX's ModelProto: the fields every model has (ir_version, a varint; graph, length-delimited), and the most
# top-level fields walked (a model has a dozen or so: its producer, opsets and metadata).
ONNX_IR_VERSION, ONNX_GRAPH = 1, 7
MOST_ONNX_FIELDS = 4096
# Protobuf's wire types: varint, 64-bit, length-delimited, 32-bit (groups, 3 and 4, are not in ONNX).
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
MAX_VARINT_BYTES = 10


def check_weights_name(filename: str) -> None:
    """:class:`UnsupportedMedia` unless ``filename`` names weights an upload may hold (``.pt`` or ``.onnx``)."""
    if PurePath(filename).suffix.lower() not in UPLOADED_SUFFIXES:
        raise UnsupportedMedia(
            "weights are sent as a .pt or .onnx file; put an OpenVINO export folder or a TensorRT .engine on the "
            "server's shared volume (STORAGE_ROOT) and register its path"
        )


def identify_weights(stream: BinaryIO, filename: str) -> WeightsInfo:
    """The weights in a seekable ``stream`` when its bytes are of the form ``filename``'s suffix names
    (:func:`check_weights_name`); :class:`UnsupportedMedia` otherwise. The stream is left at its start."""
    check_weights_name(filename)
    is_form, form = FORMS[PurePath(filename).suffix.lower()]
    try:
        if not is_form(stream):
            raise UnsupportedMedia(f"the file is not {form}")
    finally:
        stream.seek(0)
    return WeightsInfo()


def _is_pytorch(stream: BinaryIO) -> bool:
    """Whether the stream is a zip archive (its central directory read, nothing inflated) holding data.pkl."""
    stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError):
        return False
    return any(PurePath(name).name == PYTORCH_PICKLE for name in names)


def _is_onnx(stream: BinaryIO) -> bool:
    """Whether the stream's top-level protobuf fields run exactly to its end, with an IR version and a graph."""
    size = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    seen: set[tuple[int, int]] = set()
    for _ in range(MOST_ONNX_FIELDS):
        if stream.tell() == size:
            return {(ONNX_IR_VERSION, VARINT), (ONNX_GRAPH, LENGTH_DELIMITED)} <= seen
        key = _varint(stream)
        if key is None:
            return False
        field, wire_type = key >> 3, key & 7
        if field == 0:
            return False
        if wire_type == VARINT:
            skipped = 0 if _varint(stream) is not None else None
        elif wire_type == LENGTH_DELIMITED:
            skipped = _varint(stream)
        else:
            skipped = {FIXED64: 8, FIXED32: 4}.get(wire_type)
        if skipped is None or stream.tell() + skipped > size:
            return False
        stream.seek(skipped, os.SEEK_CUR)
        seen.add((field, wire_type))
    return False


def _varint(stream: BinaryIO) -> int | None:
    """A protobuf varint read from the stream; None where none is (the end, or more than ten bytes)."""
    value = 0
    for shift in range(0, 7 * MAX_VARINT_BYTES, 7):
        byte = stream.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
    return None


# Each suffix an upload may have: how its bytes are checked, and the form they must be of, for the refusal.
FORMS: dict[str, tuple[Callable[[BinaryIO], bool], str]] = {
    PYTORCH: (_is_pytorch, "PyTorch weights (the zip archive torch.save writes, holding data.pkl)"),
    ONNX: (_is_onnx, "an ONNX model (a protobuf ModelProto with an IR version and a graph)"),
}


def place_weights(blobs: BlobStore, relpath: str, filename: str) -> Path:
    """The blob at ``relpath`` as ``models/<filename>`` under the storage root (replacing one there); returns it."""
    target = blobs.root / MODELS_DIR / filename
    make_dirs_durably(target.parent)
    staged = target.with_name(f".{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(blobs.path_of(relpath), staged)
        except OSError:  # a volume without hard links
            shutil.copyfile(blobs.path_of(relpath), staged)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return target
