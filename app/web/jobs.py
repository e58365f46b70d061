"""``/jobs``: the recent jobs (``?status=`` one or several, as in the API), each with its short id, progress and
model; ``/jobs/<job_id>``: a job's progress, its downloads (every export format, a zip of the annotated images; a
failed or cancelled job's hold what it analysed), then its videos (each a player with its boxes drawn over it and
its segments as a timeline, ``app/static/video.js``, and its own exports) and its images, their boxes drawn over
the thumbnails, with Cancel and Retry buttons, "Run again with…" (a new job on the same files, with another model
or settings) and "Delete…" (its confirmation unfolds first). All are plain form posts with CSRF tokens, so they
work without JavaScript.

While the job runs, ``app/static/job.js`` polls ``/api/v1/jobs/<id>/progress`` for the page's window of files and
fills in each card as its result lands (its counts, and its boxes drawn in SVG over the thumbnail); the boxes of a
finished file are drawn by the template the same way, so the thumbnail itself stays the plain image the browser
caches for a day."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Response, redirect, render_template, request, url_for

from app import job_actions
from app.annotate import PALETTE, Box, boxes
from app.api.annotated import THUMBNAIL_SIDE
from app.auth import tenant_scope
from app.errors import ApiError, to_api_error
from app.extensions import db_session, get_job_service
from app.forms import status_filter
from app.quotas import limit_submissions
from app.serializers import frames_url, part_json
from app.web import bp
from jobs.errors import AlreadyFinished, JobNotFound, NotRetryable
from jobs.exports import FORMATS
from jobs.progress import DELETED, DONE, FAILED, NOT_REACHED, WAITING, file_state
from jobs.registry import ModelNotFound
from jobs.service import JobFiles
from jobs.video_exports import VIDEO_FORMATS
from storage.tables import JOB_STATUSES, Job, Upload

JOBS_PER_PAGE = 25
# A job's page shows this many of its files (``?page=``): a job of 10,000 is read and drawn a page at a time.
FILES_PER_PAGE = 100
MAX_PAGE_NUMBER = 100_000  # the last page the list serves: a larger number is read as this one
NAMES_PER_JOB = 3
# How often the page asks for the job's JSON while it runs (ms): a page of videos carries every segment's state, so
# it asks less often; a segment takes seconds anyway.
POLL_MS = 700
VIDEO_POLL_MS = 2000

JobAction = Response | tuple[str, int]
# What each export is, as the job page offers it; a format missing here is offered by its name.
EXPORT_LABELS = {"coco": "COCO (JSON)", "yolo": "YOLO labels (zip)", "csv": "CSV", "labelstudio": "Label Studio (JSON)"}
VIDEO_EXPORT_LABELS = {
    "mot": "MOT Challenge tracks (text)",
    "cvat-video": "CVAT for video (XML)",
    "coco": "COCO, one image per frame (JSON)",
    "csv": "CSV",
}
# What an image's card says, by its state (``jobs.progress.file_state``); a file analysed with something found
# says what instead. The template writes these, and job.js fills cards in from the same (a data- attribute).
CARD_SENTENCES = {
    WAITING: "Waiting…",
    DONE: "Nothing found",
    FAILED: "Could not be processed",
    NOT_REACHED: "Not analysed",
    DELETED: "Deleted",
}
# Why a job never reached some of its files, by how it ended: their cards and the page's summary say it.
UNREACHED_REASONS = {"cancelled": "the job was cancelled first", "failed": "the job failed first"}
# The cards' sentences on the page of a job of each status.
SENTENCES_BY_STATUS = {
    status: {**CARD_SENTENCES, NOT_REACHED: f"{CARD_SENTENCES[NOT_REACHED]}: {UNREACHED_REASONS[status]}"}
    if status in UNREACHED_REASONS
    else CARD_SENTENCES
    for status in JOB_STATUSES
}


@dataclass(frozen=True)
class Download:
    """A file the job page offers: what it is, and its URL."""

    label: str
    url: str
    name: str


def _download(job: Job, endpoint: str, label: str, name: str, **query: Any) -> Download:
    """A download of the job; what a failed or cancelled job analysed (``partial=true``)."""
    partial = {"partial": "true"} if job.status != "succeeded" else {}
    return Download(label, url_for(endpoint, job_id=job.id, **query, **partial), name)


def job_downloads(job: Job, has_video: bool, has_images: bool) -> list[Download]:
    """The job's exports (those of its images: a job with videos exports each video by itself) and, when it has
    images, the zip of them annotated."""
    exports = [] if has_video else FORMATS
    downloads = [_download(job, "api.export_job", EXPORT_LABELS.get(n, n), n, format=n) for n in exports]
    if has_images:
        downloads.append(_download(job, "api.annotated_zip", "Annotated images (zip)", "annotated"))
    return downloads


def video_downloads(job: Job, upload: Upload) -> list[Download]:
    """A video's exports (MOT only for a job with tracks)."""
    return [
        _download(job, "api.export_job", VIDEO_EXPORT_LABELS.get(n, n), n, format=n, file_id=upload.file_id)
        for n in VIDEO_FORMATS
        if n != "mot" or job.track
    ]


@dataclass(frozen=True)
class FileView:
    """One upload as the job page shows it: its size in pixels and the boxes found in it."""

    upload: Upload
    width: int
    height: int
    boxes: list[Box]

    @classmethod
    def of(cls, upload: Upload) -> FileView:
        """``upload`` as shown; one whose file its owner deleted has no size and no boxes."""
        result, file = upload.result, upload.file
        width = (result.width if result else None) or (file.width if file else None) or 0
        height = (result.height if result else None) or (file.height if file else None) or 0
        return cls(upload, width, height, boxes(result.detections) if result else [])

    @property
    def font_size(self) -> float:
        """Label size in image pixels, so labels keep their share of the picture at any display size."""
        return round(max(14.0, max(self.width, self.height) / 28), 1)

    @property
    def thumbnail_size(self) -> tuple[int, int]:
        """The thumbnail's size, so the grid keeps its layout while thumbnails load."""
        scale = min(1.0, THUMBNAIL_SIDE / max(self.width or 1, self.height or 1))
        return max(1, round((self.width or 1) * scale)), max(1, round((self.height or 1) * scale))

    @property
    def counts(self) -> list[tuple[str, int]]:
        """How many objects of each class were found, in class order."""
        return class_counts([self])

    def state(self, job: Job) -> str:
        """What became of the file (``jobs.progress.file_state``)."""
        return file_state(job, self.upload)

    @property
    def media(self) -> dict[str, Any] | None:
        """A video's probe (``stored_files.media``); None for an image, or a file its owner deleted."""
        file = self.upload.file
        return file.media if file is not None else None


@dataclass(frozen=True)
class VideoView:
    """One video as the job page plays it: where its bytes and its frames' boxes are, and its segments (the parts
    the timeline under the player draws, as the job's JSON gives them)."""

    file: FileView
    media: dict[str, Any]
    segments: list[dict[str, Any]]

    @property
    def upload(self) -> Upload:
        return self.file.upload

    @property
    def frames_url(self) -> str:
        return frames_url(self.upload)

    @property
    def failed_segments(self) -> list[dict[str, Any]]:
        """The segments that say what went wrong (frames that could not be decoded, or the segment failing)."""
        return [segment for segment in self.segments if segment["error"]]


def page_parts(shown: JobFiles) -> list[dict[str, Any]]:
    """The parts of the page's files as the job's JSON lists them (``app.serializers.part_json``): the player's
    timeline starts from these, then follows the polled JSON."""
    file_ids = {upload.id: upload.file_id for upload in shown.uploads}
    return [part_json(part, file_ids[part.upload_id]) for part in shown.parts if part.upload_id in file_ids]


def video_views(files: Sequence[FileView], parts: Sequence[dict[str, Any]]) -> list[VideoView]:
    """The videos among ``files``, each with its segments."""
    segments: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        if part["kind"] == "segment":
            segments.setdefault(part["file_id"], []).append(part)
    return [VideoView(f, f.media, segments.get(str(f.upload.file_id), [])) for f in files if f.media]


def file_noun(images: Sequence[FileView], videos: Sequence[VideoView]) -> str:
    """What the page's progress counts: images, videos, or files when it shows both."""
    if not videos:
        return "images"
    return "files" if images else "videos"


def sampling(job: Job) -> str:
    """Which frames of its videos the job analyses, as the page's facts say it."""
    return f"{job.sample_fps:g} per second" if job.sample_fps else "every frame"


def time_range(job: Job) -> str | None:
    """The part of its videos the job analyses (None: all of them)."""
    if job.start_seconds is None and job.end_seconds is None:
        return None
    end = f"{job.end_seconds:g} s" if job.end_seconds is not None else "the end"
    return f"{job.start_seconds or 0:g} s to {end}"


def class_counts(files: Sequence[FileView]) -> list[tuple[str, int]]:
    """Objects found per class over ``files``, in class order."""
    counts = Counter((box.cls, box.name) for file in files for box in file.boxes)
    return [(name, count) for (_cls, name), count in sorted(counts.items())]


@bp.app_template_filter("when")
def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


@bp.get("/jobs/<uuid:job_id>")
def job_page(job_id: uuid.UUID) -> str:
    return _render_job(job_id)


@bp.get("/jobs/<path:anything>")
def no_such_job(anything: str) -> str:
    """A job URL whose id is not a job id: the same sentence as for an unknown job."""
    raise JobNotFound


def _render_job(job_id: uuid.UUID, error: str | None = None, rerun: Mapping[str, str] | None = None) -> str:
    """The job's page (a page of its files, ``?page=``; the summary counts those), with ``error`` as a sentence
    on it; ``rerun``: the "Run again with…" choices a refused rerun asked for (the form then shows them,
    unfolded), else the job's own."""
    service = get_job_service()
    page = min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE_NUMBER)
    shown = service.find_page(db_session(), job_id, tenant_scope(), FILES_PER_PAGE, (page - 1) * FILES_PER_PAGE)
    job = shown.job
    files = [FileView.of(u) for u in shown.uploads]
    videos = video_views(files, page_parts(shown))
    images = [f for f in files if not f.media]
    done = [f for f in images if f.upload.result is not None and not f.upload.result.error]
    own = {"model": job.model, "conf": f"{job.conf:g}", "iou": f"{job.iou:g}", "imgsz": job.imgsz or ""}
    first = (page - 1) * FILES_PER_PAGE + 1
    paged = shown.total > FILES_PER_PAGE
    return render_template(
        "job.html",
        job=job,
        downloads=_page_downloads(job, videos, images),
        video_downloads={v.upload.id: video_downloads(job, v.upload) for v in videos if _exportable(job)},
        sentences=SENTENCES_BY_STATUS[job.status],
        sentences_by_status=SENTENCES_BY_STATUS,
        unreached_reason=UNREACHED_REASONS.get(job.status),
        models=service.models_of(db_session()),
        rerun={**own, **rerun} if rerun is not None else own,
        rerun_open=rerun is not None,
        files=images,
        videos=videos,
        noun=file_noun(images, videos),
        # A job of plain or tiled images has no frames, though its total_frames may read 0 rather than NULL.
        counts_frames=bool(videos or job.total_frames),
        sampling=sampling(job),
        time_range=time_range(job),
        palette=PALETTE,
        progress_url=url_for("api.job_progress", job_id=job.id, offset=first - 1, limit=FILES_PER_PAGE),
        poll_ms=VIDEO_POLL_MS if videos else POLL_MS,
        page=page,
        first=first,
        has_next=page * FILES_PER_PAGE < shown.total,
        paged=paged,
        page_counts=paged or bool(videos),
        summary=class_counts(images),
        done=done,
        empty=sum(1 for f in done if not f.boxes),
        failed=sum(1 for f in images if f.upload.result is not None and f.upload.result.error),
        unreached=sum(1 for f in images if f.state(job) == NOT_REACHED),
        reused=sum(1 for f in done if f.upload.result is not None and f.upload.result.cached),
        bundled=runs_bundled_model(job),
        error=error,
    )


def runs_bundled_model(job: Job) -> bool:
    """Whether the job ran the bundled shapes model, as the registry says (then its pages say what that model
    cannot find); a model the registry does not hold is not it."""
    try:
        return get_job_service().models.find(db_session(), job.model).bundled
    except ModelNotFound:
        return False


def _exportable(job: Job) -> bool:
    """Whether the job has anything to export: it has finished, with at least one file analysed."""
    return job.is_finished and job.done_files > 0


def _page_downloads(job: Job, videos: Sequence[VideoView], images: Sequence[FileView]) -> list[Download]:
    """The job's downloads as its page offers them: none before it has finished, or when it analysed nothing."""
    if not _exportable(job):
        return []
    # A video on another page counts too: the export route exports a job's first video unless told which.
    has_video = bool(videos) or get_job_service().video_source(db_session(), job.id, tenant_scope(), None)[1]
    return job_downloads(job, bool(has_video), bool(images))


@bp.get("/jobs/<uuid:job_id>/files/<uuid:file_id>")
def file_page(job_id: uuid.UUID, file_id: uuid.UUID) -> str:
    """One image of a job at full size, its boxes drawn over it and listed, with links to its neighbours (the
    nearest ones whose file was not deleted)."""
    service, session = get_job_service(), db_session()
    job, upload = service.find_upload(session, job_id, file_id, tenant_scope())
    if upload is None:
        raise ApiError(404, "not_found", "This job has no file with this id.")
    previous, next_upload = service.neighbours(session, upload)
    return render_template(
        "file.html",
        job=job,
        file=FileView.of(upload),
        position=upload.position,
        previous=previous,
        next_upload=next_upload,
        bundled=runs_bundled_model(job),
    )


def _act(job_id: uuid.UUID, action: Callable[[uuid.UUID], object]) -> JobAction:
    """Run a job action (``app.job_actions``), then show the job again; a refusal reads as a sentence on the
    page (an unknown job is the 404 page)."""
    try:
        action(job_id)
    except (AlreadyFinished, NotRetryable) as exc:
        error = to_api_error(exc)
        return _render_job(job_id, error.message), error.status
    return redirect(url_for("web.job_page", job_id=job_id), 303)


@bp.post("/jobs/<uuid:job_id>/cancel")
def cancel_job(job_id: uuid.UUID) -> JobAction:
    return _act(job_id, job_actions.cancel)


@bp.post("/jobs/<uuid:job_id>/retry")
def retry_job(job_id: uuid.UUID) -> JobAction:
    return _act(job_id, job_actions.retry)


@bp.post("/jobs/<uuid:job_id>/rerun")
@limit_submissions
def rerun_job(job_id: uuid.UUID) -> JobAction:
    """A new job on this job's files with the form's model and settings; its page next. A refusal (a bad
    setting, every file deleted, too many active jobs) reads as a sentence on this job's page."""
    try:
        submission = job_actions.rerun(job_id, request.form)
    except JobNotFound:
        raise
    except Exception as exc:  # every other failure reads as a sentence on the page
        error = to_api_error(exc)
        return _render_job(job_id, error.message, request.form), error.status
    return redirect(url_for("web.job_page", job_id=submission.job_id), 303)


@bp.post("/jobs/<uuid:job_id>/delete")
def delete_job(job_id: uuid.UUID) -> Response:
    """Delete the job (cancelled first if unfinished) and the bytes no one else refers to, as the API's DELETE
    does (``jobs.deletion``); the jobs list next."""
    job_actions.delete_job(job_id)
    return redirect(url_for("web.jobs_page"), 303)


@bp.get("/jobs")
def jobs_page() -> str:
    page = min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE_NUMBER)
    statuses = status_filter(request.args.getlist("status"))
    offset = (page - 1) * JOBS_PER_PAGE
    service, session = get_job_service(), db_session()
    jobs, total = service.page(session, JOBS_PER_PAGE, offset, tenant_scope(), statuses)
    return render_template(
        "jobs.html",
        jobs=jobs,
        names=service.first_filenames(session, jobs, NAMES_PER_JOB),
        names_per_job=NAMES_PER_JOB,
        page=page,
        has_next=page * JOBS_PER_PAGE < total,
        total=total,
        statuses=JOB_STATUSES,
        chosen=statuses,
        filter_args={"status": ",".join(statuses)} if statuses else {},
    )
