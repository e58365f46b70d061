"""Which files a submission sends, and how it splits them into jobs the server accepts.

Images are chosen by name (the server decides by content and rejects the rest);
the accepted types, the files per job and the bytes per request are the server's
own limits (``GET /api/v1/limits``), never copied here.
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

_types = mimetypes.MimeTypes()  # Python's own table only, whatever the system's mime.types says
_types.add_type("image/webp", ".webp")  # missing from Python's table before 3.13


@dataclass(frozen=True)
class ImageFile:
    path: Path
    size: int

    @property
    def part_size(self) -> int:
        return self.size + PART_OVERHEAD + len(self.path.name.encode())


def content_type(path: Path) -> str | None:
    """The media type ``path``'s name suggests, by Python's own table."""
    return _types.guess_type(path.name)[0]


def is_image(path: Path, content_types: Iterable[str]) -> bool:
    return content_type(path) in set(content_types)


def _visible(path: Path, folder: Path) -> bool:
    """Not hidden below ``folder`` (dot files include macOS's ``._name.jpg`` metadata, which is no image)."""
    return not any(part.startswith(".") for part in path.relative_to(folder).parts)


def find_images(paths: Sequence[str | Path], content_types: Iterable[str]) -> list[ImageFile]:
    """The image files among ``paths``, folders searched recursively (in name order, hidden ones skipped),
    each file once.

    A named file must be an image; a missing path is an error.
    """
    accepted = set(content_types)
    found: dict[Path, ImageFile] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(
                p for p in path.rglob("*") if _visible(p, path) and p.is_file() and is_image(p, accepted)
            )
        elif path.is_file():
            if not is_image(path, accepted):
                raise UsageError(f"{path} is not an image the server accepts ({', '.join(sorted(accepted))}).")
            candidates = [path]
        else:
            raise UsageError(f"{path}: no such file or folder.")
        for candidate in candidates:
            found.setdefault(candidate.resolve(), ImageFile(candidate, candidate.stat().st_size))
    if not found:
        raise UsageError("No image files found in " + ", ".join(str(p) for p in paths) + ".")
    return list(found.values())


def split(images: Sequence[ImageFile], max_files: int, max_bytes: int) -> list[list[ImageFile]]:
    """Consecutive groups of at most ``max_files`` images whose request stays within ``max_bytes``."""
    room = max_bytes - REQUEST_OVERHEAD
    groups: list[list[ImageFile]] = []
    current: list[ImageFile] = []
    used = 0
    for image in images:
        if image.part_size > room:
            raise UsageError(f"{image.path} is {image.size} bytes; the server takes at most {max_bytes} per request.")
        if current and (len(current) == max_files or used + image.part_size > room):
            groups.append(current)
            current, used = [], 0
        current.append(image)
        used += image.part_size
    if current:
        groups.append(current)
    return groups
