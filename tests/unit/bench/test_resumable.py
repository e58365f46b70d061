"""bench.resumable's own tools: each round's file is new content, and the memory sampler sees a peak."""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from pathlib import Path

from bench.resumable import MIB, SAMPLE_SECONDS, RssPeak, mark, write_padded_image


def test_a_random_file_has_the_size_asked_even_across_blocks_and_does_not_compress(tmp_path: Path) -> None:
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    write_padded_image(first, 3 * MIB + 5, block=MIB)
    write_padded_image(second, 3 * MIB + 5, block=MIB)
    data = first.read_bytes()
    assert len(data) == 3 * MIB + 5
    assert data != second.read_bytes()
    assert len(zlib.compress(data[:MIB])) > 0.99 * MIB


def test_marking_makes_new_content_of_the_same_size_and_returns_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "source.bin"
    write_padded_image(path, MIB)
    head = path.read_bytes()[:-8]
    assert head.startswith(b"\x89PNG\r\n\x1a\n")
    digests = [mark(path, number) for number in (0, 1, 2, 1)]
    assert digests[1] == digests[3] and len(set(digests)) == 3
    assert digests[3] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.read_bytes() == head + (1).to_bytes(8, "big")


def test_the_rss_peak_sees_memory_taken_and_given_back_inside_the_block() -> None:
    with RssPeak([os.getpid()]) as rss:
        before = rss.now()
        taken = bytearray(64 * MIB)  # zero pages count only once written
        for start in range(0, len(taken), 4096):
            taken[start] = 1
        time.sleep(5 * SAMPLE_SECONDS)
        del taken
        after = rss.now()
    assert rss.peak - before >= 60 * MIB
    assert rss.peak - after >= 60 * MIB
