"""The client's choice of files and its split into jobs by the server's limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo_jobs_client.batches import PART_OVERHEAD, REQUEST_OVERHEAD, ImageFile, find_images, split
from yolo_jobs_client.errors import UsageError

TYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff"]


def images(*sizes: int) -> list[ImageFile]:
    return [ImageFile(Path(f"{n:03}.png"), size) for n, size in enumerate(sizes)]


def test_split_keeps_order_and_the_file_count_limit() -> None:
    groups = split(images(*[10] * 250), max_files=100, max_bytes=10**9)
    assert [len(g) for g in groups] == [100, 100, 50]
    assert [i.path.name for g in groups for i in g] == [f"{n:03}.png" for n in range(250)]


def test_split_keeps_each_request_under_the_byte_limit() -> None:
    part = 1000 + PART_OVERHEAD + len("000.png")
    limit = REQUEST_OVERHEAD + 3 * part  # room for exactly three
    groups = split(images(*[1000] * 7), max_files=100, max_bytes=limit)
    assert [len(g) for g in groups] == [3, 3, 1]
    with pytest.raises(UsageError, match="at most"):
        split(images(1000, limit), max_files=100, max_bytes=limit)


def test_find_images_walks_folders_once_and_skips_what_is_hidden_or_not_an_image(tmp_path: Path) -> None:
    for name in ("b/2.PNG", "b/c/3.webp", "a.jpg", "b/notes.txt", "b/c/.hidden.tif", "b/.git/x.png", "b/1.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * 5)
    found = find_images([tmp_path / "b", tmp_path / "a.jpg", tmp_path / "b/1.jpeg"], TYPES)
    assert [str(i.path.relative_to(tmp_path)) for i in found] == [
        "b/1.jpeg",
        "b/2.PNG",
        "b/c/3.webp",
        "a.jpg",
    ]
    assert {i.size for i in found} == {5}
    with pytest.raises(UsageError, match="not an image"):
        find_images([tmp_path / "b/notes.txt"], TYPES)
    with pytest.raises(UsageError, match="no such file"):
        find_images([tmp_path / "missing"], TYPES)
    with pytest.raises(UsageError, match="No image files"):
        find_images([tmp_path / "b/c/"], ["image/gif"])
