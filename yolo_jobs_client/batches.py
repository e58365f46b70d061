"""Which files a submission sends, and how it splits them into jobs the server accepts.

Images are chosen by name, videos by name or by their first bytes (the server decides
by content, with its own probe, and rejects the rest); the accepted image types, the
files per job and the bytes per request are the server's own limits
(``GET /api/v1/limits``), never copied here. Videos, and images too large for one
request, are sent by tus (:mod:`yolo_jobs_client.tus`) and join a job by id.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from yolo_jobs_client.errors import UsageError

# Room a request needs besides the files' bytes: the form fields, and each part's headers and name.
REQUEST_OVERHEAD = 4096
PART_OVERHEAD = 256

# Suffixes of the containers phones and cameras write; other videos are known by their first bytes.
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})
SNIFF_BYTES = 12
# Leading bytes of video containers: Matroska and WebM (EBML), MPEG program streams.
VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba")

_types = mimetypes.MimeTypes()  # Python's own table only, whatever the system's mime.types says
_types.add_type("image/webp", ".webp")  # missing from Python's table before 3.13


@dataclass(frozen=True)
class ImageFile:
    """A file to send: an image (a part of a job's request), or a video (``video``: sent by tus)."""

    path: Path
    size: int
    video: bool = False

    @property
    def part_size(self) -> int:
        return self.size + PART_OVERHEAD + len(self.path.name.encode())

    def fits(self, max_bytes: int) -> bool:
        """Whether a request of at most ``max_bytes`` holds this file beside a job's fields."""
        return self.part_size <= max_bytes - REQUEST_OVERHEAD


def content_type(path: Path) -> str | None:
    """The media type ``path``'s name suggests, by Python's own table."""
    return _types.guess_type(path.name)[0]


def is_image(path: Path, content_types: Iterable[str]) -> bool:
    return content_type(path) in set(content_types)


def _sniffed_video(head: bytes) -> bool:
    """Whether ``head`` starts a video container: ISO-BMFF (MP4, MOV, 3GP: ``ftyp`` at 4), AVI, Matroska or
    MPEG-PS."""
    return head[4:8] == b"ftyp" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head.startswith(VIDEO_MAGIC)


def is_video(path: Path) -> bool:
    """Whether ``path`` looks like a video, by its suffix or else its first bytes (the server's probe decides)."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return True
    try:
        with path.open("rb") as opened:
            return _sniffed_video(opened.read(SNIFF_BYTES))
    except OSError:
        return False


def _visible(path: Path, folder: Path) -> bool:
    """Not hidden below ``folder`` (dot files include macOS's ``._name.jpg`` metadata, which is no image)."""
    return not any(part.startswith(".") for part in path.relative_to(folder).parts)


def find_images(paths: Sequence[str | Path], content_types: Iterable[str]) -> list[ImageFile]:
    """The image and video files among ``paths``, folders searched recursively (in name order, hidden ones
    skipped), each file once.

    A named file must be an image or a video; a missing path is an error.
    """
    accepted = set(content_types)
    found: dict[Path, ImageFile] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(
                p
                for p in path.rglob("*")
                if _visible(p, path) and p.is_file() and (is_image(p, accepted) or is_video(p))
            )
        elif path.is_file():
            if not (is_image(path, accepted) or is_video(path)):
                types = ", ".join(sorted(accepted))
                raise UsageError(f"{path} is not an image the server accepts ({types}), nor a video.")
            candidates = [path]
        else:
            raise UsageError(f"{path}: no such file or folder.")
        for candidate in candidates:
            video = not is_image(candidate, accepted)
            found.setdefault(candidate.resolve(), ImageFile(candidate, candidate.stat().st_size, video))
    if not found:
        raise UsageError("No image files or videos found in " + ", ".join(str(p) for p in paths) + ".")
    return list(found.values())


def split(images: Sequence[ImageFile], max_files: int, max_bytes: int) -> list[list[ImageFile]]:
    """Consecutive groups of at most ``max_files`` images whose request stays within ``max_bytes``."""
    room = max_bytes - REQUEST_OVERHEAD
    groups: list[list[ImageFile]] = []
    current: list[ImageFile] = []
    used = 0
    for image in images:
        if not image.fits(max_bytes):
            raise UsageError(f"{image.path} is {image.size} bytes; the server takes at most {max_bytes} per request.")
        if current and (len(current) == max_files or used + image.part_size > room):
            groups.append(current)
            current, used = [], 0
        current.append(image)
        used += image.part_size
    if current:
        groups.append(current)
    return groups
