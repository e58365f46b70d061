"""A video job's exports, each read back by the tool it is for: MOT scored by motmetrics against the ground truth,
COCO loaded by pycocotools, CSV by the csv module, and CVAT for video checked against its 1.1 format.

The detections are drawn from a synthetic ground truth: three objects moving over 200 frames sampled every third
frame of a 30 fps video (one lost for a while and found again under its id, one misclassified on a frame), two
boxes the tracker left without a track, and stretches of frames with nothing in them.
"""

from __future__ import annotations

import csv
import io
import tracemalloc
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import motmetrics
import pytest
from pycocotools.coco import COCO

from jobs import video_exports
from jobs.exports import CHUNK_BYTES
from jobs.video_exports import VIDEO_CSV_COLUMNS, VIDEO_FORMATS, FrameRow, VideoExport

NAMES = {0: "person", 1: "car", 2: "dog"}
SAMPLES = 200
STEP = 3  # 30 fps sampled at 10 fps: every third frame of the video
WIDTH, HEIGHT = 640, 360
EMPTY_SAMPLES = [*range(0, 5), *range(150, 170)]


@dataclass(frozen=True)
class MovingObject:
    """A ground-truth object: its track, class, the samples it is seen on, where it starts and how it moves."""

    track: int
    cls: int
    samples: list[int]
    start: tuple[float, float]
    velocity: tuple[float, float]
    size: tuple[float, float]

    def box(self, sample: int) -> tuple[float, float, float, float]:
        """x1, y1, x2, y2 on ``sample`` (multiples of 0.5: exact in the database's float4)."""
        moved = sample - self.samples[0]
        x1, y1 = self.start[0] + self.velocity[0] * moved, self.start[1] + self.velocity[1] * moved
        return x1, y1, x1 + self.size[0], y1 + self.size[1]


PERSON = MovingObject(1, 0, list(range(5, 150)), (10, 20), (2, 1), (40, 30))
CAR = MovingObject(2, 1, [*range(20, 150), *range(170, 200)], (400, 200), (-1.5, 0.5), (60, 50))
DOG = MovingObject(7, 2, list(range(50, 121)), (100, 250), (3, -0.5), (30, 30))
OBJECTS = (PERSON, CAR, DOG)
MISCLASSIFIED = (DOG, 60, 0)  # the dog is taken for a person on sample 60
UNTRACKED_BOX = (500.0, 50.0, 540.0, 90.0)
UNTRACKED_SAMPLES = (30, 31)


def frame_of(sample: int) -> int:
    return sample * STEP


def detections(sample: int) -> FrameRow:
    """The row of ``sample``: the objects seen on it (score 0.9), then any untracked box (score 0.3)."""
    boxes: list[float] = []
    classes: list[int] = []
    scores: list[float] = []
    tracks: list[int] = []
    for thing in OBJECTS:
        if sample in thing.samples:
            boxes += thing.box(sample)
            classes.append(0 if (thing, sample) == MISCLASSIFIED[:2] else thing.cls)
            scores.append(0.9)
            tracks.append(thing.track)
    if sample in UNTRACKED_SAMPLES:
        boxes += UNTRACKED_BOX
        classes.append(0)
        scores.append(0.3)
        tracks.append(-1)
    return FrameRow(sample, frame_of(sample), sample / 10, boxes, classes, scores, tracks)


class RowSource:
    """``VideoExport.rows``: a generator of rows on each call, as the database pages them; counts the calls and
    the rows handed out."""

    def __init__(self, make_row: Callable[[int], FrameRow], count: int) -> None:
        self.make_row = make_row
        self.count = count
        self.calls = 0
        self.read = 0

    def __call__(self) -> Iterator[FrameRow]:
        self.calls += 1
        for sample in range(self.count):
            self.read += 1
            yield self.make_row(sample)


def video(rows: Callable[[], Iterator[FrameRow]], frames_total: int = SAMPLES) -> VideoExport:
    return VideoExport("job-1", "upload-1", "clip.mp4", WIDTH, HEIGHT, 30.0, 10.0, frames_total, NAMES, rows)


def exported(export_format: str, rows: Callable[[], Iterator[FrameRow]] | None = None) -> bytes:
    return VIDEO_FORMATS[export_format](video(rows or RowSource(detections, SAMPLES))).content


def tracked_boxes() -> int:
    return sum(len(thing.samples) for thing in OBJECTS)


def all_boxes() -> int:
    return tracked_boxes() + len(UNTRACKED_SAMPLES)


def test_each_format_is_its_kind_of_file() -> None:
    kinds = {name: build(video(RowSource(detections, 1))) for name, build in VIDEO_FORMATS.items()}
    assert {name: (f.media_type, f.extension) for name, f in kinds.items()} == {
        "mot": ("text/plain", "txt"),
        "cvat-video": ("application/xml", "xml"),
        "coco": ("application/json", "json"),
        "csv": ("text/csv", "csv"),
    }
    assert set(video_exports.VIDEO_MEDIA_TYPES) == {f.media_type for f in kinds.values()}


def ground_truth_mot(path: Path) -> None:
    """The objects in MOTChallenge's ground-truth format (frames from 1, confidence 1: a box to score)."""
    lines = []
    for thing in OBJECTS:
        for sample in thing.samples:
            x1, y1, x2, y2 = thing.box(sample)
            lines.append(f"{frame_of(sample) + 1},{thing.track},{x1},{y1},{x2 - x1},{y2 - y1},1,-1,-1,-1\n")
    path.write_text("".join(lines))


# motmetrics 1.4.0 shifts the boxes with a tuple, which pandas 3 deprecates: its code, not the export's.
@pytest.mark.filterwarnings("ignore:Operation with tuple is deprecated")
def test_mot_scores_perfectly_against_the_ground_truth(tmp_path: Path) -> None:
    truth, results = tmp_path / "gt.txt", tmp_path / "results.txt"
    ground_truth_mot(truth)
    results.write_bytes(exported("mot"))

    expected = motmetrics.io.loadtxt(str(truth), fmt="mot15-2D", min_confidence=1)
    found = motmetrics.io.loadtxt(str(results), fmt="mot15-2D")
    # motmetrics' IoU distance calls numpy's asfarray, gone in numpy 2: match on the squared distance between
    # (x, y, w, h) instead, at most 1 px² (the export rounds to a thousandth of a pixel).
    accumulator = motmetrics.utils.compare_to_groundtruth(expected, found, "seuc", distth=1.0)
    metrics = ["mota", "idf1", "num_objects", "num_false_positives", "num_misses", "num_switches"]
    summary = motmetrics.metrics.create().compute(accumulator, metrics=metrics).iloc[0]

    assert summary["num_objects"] == tracked_boxes()
    assert summary["mota"] == 1.0 and summary["idf1"] == 1.0
    assert (summary["num_false_positives"], summary["num_misses"], summary["num_switches"]) == (0, 0, 0)
    # The untracked boxes are left out; frames count from 1.
    lines = results.read_text().splitlines()
    assert len(lines) == tracked_boxes()
    assert lines[0] == f"{frame_of(5) + 1},1,10.0,20.0,40.0,30.0,0.9,-1,-1,-1"


def test_mot_of_a_video_never_tracked_is_empty() -> None:
    untracked = RowSource(lambda sample: replace(detections(sample), tracks=None), SAMPLES)
    assert exported("mot", untracked) == b""


def test_coco_loads_in_pycocotools_with_an_image_per_frame(tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    path.write_bytes(exported("coco"))
    coco = COCO(str(path))

    assert len(coco.getImgIds()) == SAMPLES and len(coco.getAnnIds()) == all_boxes()
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == {1: "person", 2: "car", 3: "dog"}
    first = coco.loadImgs(1)[0]
    assert first == {
        "id": 1,
        "file_name": "clip/frame_000000.jpg",
        "width": WIDTH,
        "height": HEIGHT,
        "video_id": 1,
        "frame_index": 0,
        "time": 0.0,
    }
    assert coco.dataset["videos"] == [{"id": 1, "name": "clip.mp4", "width": WIDTH, "height": HEIGHT, "fps": 30.0}]
    assert [coco.getAnnIds(imgIds=[sample + 1]) for sample in EMPTY_SAMPLES] == [[]] * len(EMPTY_SAMPLES)

    car = coco.loadAnns(coco.getAnnIds(imgIds=[21], catIds=[2]))[0]  # sample 20: the car's first box
    assert car["bbox"] == [400, 200, 60, 50] and car["area"] == 3000 and car["score"] == 0.9
    assert car["track_id"] == 2 and car["attributes"] == {"track_id": 2}
    assert coco.loadImgs(21)[0]["frame_index"] == frame_of(20)
    untracked = [a for a in coco.loadAnns(coco.getAnnIds()) if "track_id" not in a]
    assert [(a["image_id"], a["score"]) for a in untracked] == [(31, 0.3), (32, 0.3)]
    assert "attributes" not in untracked[0]


def test_csv_has_every_analysed_frame_and_every_box() -> None:
    rows = list(csv.DictReader(io.StringIO(exported("csv").decode())))

    assert tuple(rows[0]) == VIDEO_CSV_COLUMNS
    assert len(rows) == all_boxes() + len(EMPTY_SAMPLES)
    assert {int(row["frame"]) for row in rows} == {frame_of(sample) for sample in range(SAMPLES)}
    empty = [row for row in rows if row["x1"] == ""]
    assert [int(row["frame"]) for row in empty] == [frame_of(sample) for sample in EMPTY_SAMPLES]
    assert all(value == "" for row in empty for key, value in row.items() if key not in ("frame", "time"))
    first_person = next(row for row in rows if row["track"] == "1")
    assert first_person == {
        "frame": "15",
        "time": "0.5",
        "x1": "10.0",
        "y1": "20.0",
        "x2": "50.0",
        "y2": "50.0",
        "class": "0",
        "name": "person",
        "confidence": "0.9",
        "track": "1",
    }
    assert [row["frame"] for row in rows if row["confidence"] == "0.3" and row["track"] == ""] == ["90", "93"]


BOX_ATTRIBUTES = {"frame", "xtl", "ytl", "xbr", "ybr", "outside", "occluded", "keyframe", "z_order"}


@dataclass(frozen=True)
class CvatTrack:
    """A <track> as read back: its label, its visible boxes by frame, and the frames it is marked outside on."""

    label: str
    visible: dict[int, tuple[float, float, float, float]]
    outside: list[int]


def read_cvat(content: bytes) -> tuple[ElementTree.Element, dict[int, CvatTrack]]:
    """The file's meta task and its tracks by id, checking each box against CVAT for video 1.1: the attributes
    it must have, 0/1 flags, keyframes, frames rising within the track."""
    root = ElementTree.fromstring(content)
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    assert [child.tag for child in root][:2] == ["version", "meta"]
    assert {child.tag for child in root[2:]} <= {"track"}
    tracks: dict[int, CvatTrack] = {}
    for element in root.iter("track"):
        assert set(element.attrib) == {"id", "label", "source"} and element.get("source") == "auto"
        boxes = list(element)
        assert boxes and {box.tag for box in boxes} == {"box"}
        assert all(set(box.attrib) == BOX_ATTRIBUTES for box in boxes)
        assert all((box.get("occluded"), box.get("keyframe"), box.get("z_order")) == ("0", "1", "0") for box in boxes)
        assert {box.get("outside") for box in boxes} <= {"0", "1"}
        frames = [int(box.get("frame", "")) for box in boxes]
        assert frames == sorted(set(frames))
        visible = {
            int(box.get("frame", "")): tuple(float(box.get(corner, "")) for corner in ("xtl", "ytl", "xbr", "ybr"))
            for box in boxes
            if box.get("outside") == "0"
        }
        outside = [int(box.get("frame", "")) for box in boxes if box.get("outside") == "1"]
        track_id = int(element.get("id", ""))
        assert track_id not in tracks
        tracks[track_id] = CvatTrack(element.get("label", ""), visible, outside)  # type: ignore[arg-type]
    task = root.find("meta/task")
    assert task is not None
    return task, tracks


def test_cvat_video_has_a_track_per_object_ended_where_it_is_lost() -> None:
    task, tracks = read_cvat(exported("cvat-video"))

    assert task.findtext("mode") == "interpolation"
    assert (task.findtext("start_frame"), task.findtext("stop_frame")) == ("0", str(frame_of(SAMPLES - 1)))
    assert (task.findtext("frame_filter"), task.findtext("size")) == ("step=3", str(SAMPLES))
    assert (task.findtext("original_size/width"), task.findtext("original_size/height")) == ("640", "360")
    assert [label.findtext("name") for label in task.iterfind("labels/label")] == list(NAMES.values())

    for thing in OBJECTS:
        track = tracks[thing.track]
        assert track.visible == {frame_of(sample): thing.box(sample) for sample in thing.samples}
        assert track.label == NAMES[thing.cls]  # the dog's one frame as a person does not relabel it
    assert tracks[PERSON.track].outside == [frame_of(150)]
    assert tracks[CAR.track].outside == [frame_of(150)]  # lost 150-169; seen on the last frame, so no end
    assert tracks[DOG.track].outside == [frame_of(121)]
    # Each untracked box is a one-box track numbered after the highest track id, ended on the next frame.
    assert tracks[8] == CvatTrack("person", {frame_of(30): UNTRACKED_BOX}, [frame_of(31)])
    assert tracks[9] == CvatTrack("person", {frame_of(31): UNTRACKED_BOX}, [frame_of(32)])
    assert set(tracks) == {1, 2, 7, 8, 9}
    # Every frame a box is on is one of CVAT's task frames: start_frame + k * step, up to stop_frame.
    frames = {frame for track in tracks.values() for frame in [*track.visible, *track.outside]}
    assert all(frame % STEP == 0 and frame <= frame_of(SAMPLES - 1) for frame in frames)


def test_cvat_video_spooled_on_disk_is_the_same_file(monkeypatch: pytest.MonkeyPatch) -> None:
    in_memory = exported("cvat-video")
    monkeypatch.setattr(video_exports, "SPOOL_BYTES", 1024)  # the boxes take about 26 KiB
    assert exported("cvat-video") == in_memory


def test_cvat_video_of_unevenly_sampled_untracked_frames() -> None:
    frames = [0, 4, 7, 10, 15]
    boxed = {0: (1.0, 2.0, 3.0, 4.0), 7: (5.0, 6.0, 7.0, 8.5)}

    def row(index: int) -> FrameRow:
        frame = frames[index]
        box = boxed.get(frame)
        return FrameRow(frame, frame, frame / 30, box or [], [2] if box else [], [0.5] if box else [], None)

    task, tracks = read_cvat(exported("cvat-video", RowSource(row, len(frames))))

    assert (task.findtext("start_frame"), task.findtext("stop_frame")) == ("0", "15")
    assert (task.findtext("frame_filter"), task.findtext("size")) == ("", "16")  # every frame from 0 to 15
    assert tracks == {
        0: CvatTrack("dog", {0: boxed[0]}, [4]),
        1: CvatTrack("dog", {7: boxed[7]}, [10]),
    }


def first_chunk_after(export_format: str, source: RowSource) -> int:
    """How many rows ``export_format`` had read when it handed out its first chunk."""
    chunks = iter(VIDEO_FORMATS[export_format](video(source, source.count)).chunks)
    first = next(chunks)
    read = source.read
    assert len(first) >= CHUNK_BYTES
    for _ in chunks:
        pass
    return read


def busy_frame(sample: int) -> FrameRow:
    """A frame of ten tracked boxes, for exports large enough to stream."""
    boxes = [float(v) for n in range(10) for v in (n * 50 + sample % 7, 10, n * 50 + 40, 60 + sample % 5)]
    return FrameRow(sample, sample, sample / 30, boxes, [n % 3 for n in range(10)], [0.5] * 10, list(range(10)))


@pytest.mark.parametrize("export_format", ["mot", "csv", "coco"])
def test_time_ordered_formats_hand_out_chunks_before_the_rows_end(export_format: str) -> None:
    source = RowSource(busy_frame, 3000)
    assert first_chunk_after(export_format, source) < source.count / 2


def peak_bytes(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("export_format", list(VIDEO_FORMATS))
def test_exports_take_far_less_memory_than_the_rows(export_format: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_exports, "SPOOL_BYTES", CHUNK_BYTES)
    source = RowSource(busy_frame, 1500)
    rows = peak_bytes(lambda: list(source()))

    def export() -> None:
        for _ in VIDEO_FORMATS[export_format](video(source, source.count)).chunks:
            pass

    assert peak_bytes(export) < rows / 4
    assert source.calls == 1 + (2 if export_format == "coco" else 1)
