"""``Client``: the yolo-jobs API from Python, as the ``yolo-jobs`` command uses it.

    client = Client("http://127.0.0.1:8000", key)
    jobs = client.submit(["photos/"], conf=0.4)          # one job per 100 images (the server's limit)
    finished = client.wait([j.job_id for j in jobs])
    coco = client.export_merged(finished, "coco")        # one COCO document for them all

    (video,) = client.upload(["big.mp4"])                # tus, resumable: see yolo_jobs_client.tus
    client.submit(file_ids=[video.file_id])              # a job on stored files
    client.rerun(jobs[0].job_id, model="other")          # the same files again, no byte sent

    (weights,) = client.upload(["yolo11n.pt"], purpose="weights")  # admin key: a model of your own, no restart
    client.register_model("coco", file_id=weights.file_id)

    (clip,) = client.submit(["clip.mp4"], fps=5, track=True)  # a video goes by tus, then joins its job
    (done,) = client.wait([clip.job_id])
    for frame in client.frames(clip.job_id, done["files"][0]["file_id"], start=10, end=20):
        print(frame["time"], frame["detections"])

Each job's upload (or rerun) carries an ``Idempotency-Key`` of its own, so a retried
request (a lost answer, a 503) never makes a second job.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from requests_toolbelt.multipart.encoder import MultipartEncoder, MultipartEncoderMonitor

from yolo_jobs_client.batches import ImageFile, find_images, split
from yolo_jobs_client.errors import Unavailable, UsageError
from yolo_jobs_client.merge import merge
from yolo_jobs_client.transport import Transport
from yolo_jobs_client.uploads import CHUNK_BYTES, UploadedFile, default_state_file

FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
JOBS_PATH = "/api/v1/jobs"
FILES_PATH = "/api/v1/files"
MODELS_PATH = "/api/v1/models"
# An upload's purpose when it holds model weights (admin keys only), not an image or a video.
WEIGHTS = "weights"
# The export formats and the suffix of each one's file: images' (mergeable across jobs), then videos' only.
EXPORT_FORMATS = {"coco": "json", "yolo": "zip", "csv": "csv", "labelstudio": "json", "mot": "txt", "cvat-video": "xml"}
FRAMES_PAGE = 500  # the server's default page of a video's frames

# Called with the bytes of image data sent so far and the submission's total.
UploadProgress = Callable[[int, int], None]
# Called with a file being sent by tus, the bytes the server holds of it and its size.
FileUploadProgress = Callable[[Path, int, int], None]


def json_body(payload: Mapping[str, Any]) -> Callable[[], tuple[bytes, str]]:
    """A :meth:`Transport.request` body of ``payload`` as JSON."""
    data = json.dumps(payload).encode()
    return lambda: (data, "application/json")


@dataclass(frozen=True)
class JobOptions:
    """What a job asks of inference (``model`` … ``callback_url``) and of videos and large images: ``fps`` (frames
    sampled per second; every frame when None), ``start`` and ``end`` (seconds), ``track`` (track ids) and
    ``tiles`` (``auto``, ``off`` or tiles along an image's longest side). None leaves a parameter to the server
    (or, on a rerun, to the original job)."""

    model: str | None = None
    conf: float | None = None
    iou: float | None = None
    imgsz: int | None = None
    callback_url: str | None = None
    fps: float | None = None
    start: float | None = None
    end: float | None = None
    track: bool | None = None
    tiles: str | int | None = None

    def given(self) -> dict[str, Any]:
        """The parameters set, as a JSON body names them."""
        return {name: value for name, value in vars(self).items() if value is not None}

    def form(self) -> dict[str, str]:
        """The parameters set, as multipart form fields (``track`` as ``true`` or ``false``)."""
        return {
            name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in self.given().items()
        }


@dataclass(frozen=True)
class ExportedFile:
    """An export's bytes and the file name the server gave it (or one made up: ``job-<id>-<format>.<ext>``)."""

    data: bytes
    filename: str


def default_export_name(job_id: str, export_format: str) -> str:
    return f"job-{job_id}-{export_format}.{EXPORT_FORMATS.get(export_format, 'bin')}"


def attachment_name(disposition: str | None) -> str | None:
    """The plain file name a ``Content-Disposition`` header gives (``filename*`` too), never a path nor a hidden
    file; None without one. Header values arrive as Latin-1: a UTF-8 name is decoded back."""
    if not disposition:
        return None
    header = Message()
    header["Content-Disposition"] = disposition
    raw = header.get_filename()
    if not raw:
        return None
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):  # else not UTF-8 sent as Latin-1: as it came
        raw = raw.encode("latin-1").decode("utf-8")
    name = PurePosixPath(raw.replace("\\", "/")).name.strip()
    if not name or name.startswith(".") or not name.isprintable():
        return None
    return name


def videos_in(jobs: Iterable[Mapping[str, Any]]) -> int:
    """How many of the listed files of ``jobs`` (their JSON) are videos."""
    return sum(1 for job in jobs for file in job.get("files") or () if (file.get("media") or {}).get("kind") == "video")


@dataclass(frozen=True)
class SubmittedJob:
    """A job a submission made: its id, the files it holds, and the key its upload was sent under."""

    job_id: str
    files: list[str]
    idempotency_key: str


class Client:
    """The API at ``url`` with ``api_key``; transient failures are retried (see :mod:`yolo_jobs_client.transport`)."""

    def __init__(self, url: str, api_key: str, attempts: int = 8) -> None:
        self.transport = Transport(url, api_key, attempts=attempts)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(self, path: str, **params: Any) -> Any:
        return self.transport.request("GET", path, params=params or None).json()

    def limits(self) -> dict[str, Any]:
        """What one job may hold: ``max_files_per_job``, ``max_upload_bytes``, ``content_types``."""
        return dict(self._get("/api/v1/limits"))

    def models(self) -> list[dict[str, Any]]:
        """Every registered model, the default first and retired ones too (``retired_at``)."""
        return list(self._get(MODELS_PATH)["models"])

    def register_model(self, name: str, *, weights: str | None = None, file_id: str | None = None) -> dict[str, Any]:
        """Register model ``name`` (admin keys only) running ``weights``, a path on the server's shared volume, or
        ``file_id``, a stored file (:meth:`upload` sends one); jobs may ask for it at once."""
        payload = {"name": name, "weights": weights, "file_id": file_id}
        body = json_body({key: value for key, value in payload.items() if value is not None})
        return dict(self.transport.request("POST", MODELS_PATH, body=body).json())

    def retire_model(self, name: str) -> dict[str, Any]:
        """Retire model ``name`` (admin keys only): new jobs are refused it, jobs accepted before still run."""
        return dict(self.transport.request("POST", f"{MODELS_PATH}/{quote(name, safe='')}/retire").json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._get(f"{JOBS_PATH}/{job_id}"))

    def jobs(self, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """A page of jobs, newest first: ``jobs``, ``total``, and ``next`` when there are more."""
        return dict(self._get(JOBS_PATH, limit=limit, offset=offset))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self.transport.request("POST", f"{JOBS_PATH}/{job_id}/cancel").json())

    def retry(self, job_id: str) -> dict[str, Any]:
        return dict(self.transport.request("POST", f"{JOBS_PATH}/{job_id}/retry").json())

    def rerun(
        self,
        job_id: str,
        *,
        model: str | None = None,
        conf: float | None = None,
        iou: float | None = None,
        imgsz: int | None = None,
        callback_url: str | None = None,
        fps: float | None = None,
        start: float | None = None,
        end: float | None = None,
        track: bool | None = None,
        tiles: str | int | None = None,
    ) -> dict[str, Any]:
        """A new job on ``job_id``'s files (its deleted ones skipped) with the parameters given changed (see
        :class:`JobOptions`); the answer is a submission's (``job_id``, ``status``, ``files``)."""
        options = JobOptions(model, conf, iou, imgsz, callback_url, fps, start, end, track, tiles)
        headers = {"Idempotency-Key": f"yolo-jobs-rerun-{uuid.uuid4().hex}"}
        path = f"{JOBS_PATH}/{job_id}/rerun"
        return dict(self.transport.request("POST", path, headers=headers, body=json_body(options.given())).json())

    def delete_job(self, job_id: str) -> None:
        """Delete a job (cancelled first if running): its results and its references to files."""
        self.transport.request("DELETE", f"{JOBS_PATH}/{job_id}")

    def delete_file(self, file_id: str) -> None:
        """Delete a stored file and every reference of this tenant's to it; the bytes go with the last one."""
        self.transport.request("DELETE", f"{FILES_PATH}/{file_id}")

    def upload(
        self,
        paths: Sequence[str | Path],
        *,
        state_file: Path | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        checksum: bool = False,
        on_progress: FileUploadProgress | None = None,
        on_file: Callable[[UploadedFile], None] | None = None,
        purpose: str | None = None,
    ) -> list[UploadedFile]:
        """Send each file of ``paths`` by tus, in ``chunk_bytes`` PATCHes (each with its SHA-1 when
        ``checksum``), resuming the uploads ``state_file`` (default :func:`default_state_file`) names; return
        the stored files in order.

        ``on_file`` hears of each as soon as the server stored it. ``purpose``: :data:`WEIGHTS` for model
        weights (a .pt or .onnx file, admin keys only) to register with :meth:`register_model`; without it the
        server keeps images and videos only.
        """
        from yolo_jobs_client.tus import ResumableUpload, open_state  # tuspy: only when sending (see uploads)

        stored: list[UploadedFile] = []
        with open_state(state_file or default_state_file()) as state:
            sender = ResumableUpload(self.transport, state, chunk_bytes, checksum, purpose)
            for raw in paths:
                path = Path(raw)

                def progress(held: int, size: int, path: Path = path) -> None:
                    if on_progress is not None:
                        on_progress(path, held, size)

                uploaded = sender.send(path, progress)
                stored.append(uploaded)
                if on_file is not None:
                    on_file(uploaded)
        return stored

    def export_file(
        self,
        job_id: str,
        export_format: str,
        *,
        file_id: str | None = None,
        partial: bool = False,
        confidence: bool = False,
    ) -> ExportedFile:
        """One job's export (``EXPORT_FORMATS``) and the name the server gives its file; a job with videos exports
        one of them (``file_id``, else its first). ``partial`` for a failed or cancelled job, ``confidence`` for
        YOLO labels with a conf column."""
        params = {"format": export_format, "partial": str(partial).lower(), "confidence": str(confidence).lower()}
        if file_id is not None:
            params["file_id"] = file_id
        response = self.transport.request("GET", f"{JOBS_PATH}/{job_id}/export", params=params)
        named = attachment_name(response.headers.get("Content-Disposition"))
        return ExportedFile(response.content, named or default_export_name(job_id, export_format))

    def export(
        self,
        job_id: str,
        export_format: str,
        partial: bool = False,
        confidence: bool = False,
        file_id: str | None = None,
    ) -> bytes:
        """The bytes of :meth:`export_file`."""
        return self.export_file(job_id, export_format, file_id=file_id, partial=partial, confidence=confidence).data

    def frames(
        self, job_id: str, file_id: str, start: float = 0.0, end: float | None = None, limit: int = FRAMES_PAGE
    ) -> Iterator[dict[str, Any]]:
        """The analysed frames of the job's video ``file_id`` with ``start <= time < end`` (seconds; to the
        video's end when None), in time order: ``frame``, ``time`` and ``detections`` (each with ``track`` in a
        tracked job). Fetched ``limit`` frames a request (at most 5000), each page as the iteration reaches it."""
        path = f"{JOBS_PATH}/{job_id}/files/{file_id}/frames"
        params: dict[str, Any] = {"start": start, "limit": limit} | ({} if end is None else {"end": end})
        while True:
            page = self._get(path, **params)
            yield from page["frames"]
            if not page.get("next"):
                return
            # The server's own query for the rest; its path is ours (a proxy's prefix would differ).
            params = dict(parse_qsl(urlsplit(page["next"]).query))

    def submit_images(
        self,
        images: Sequence[ImageFile],
        form: Mapping[str, str],
        idempotency_key: str,
        on_sent: Callable[[int], None] | None = None,
        file_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        """One job of ``images`` (streamed from disk), then the stored files ``file_ids``; ``on_sent`` hears
        the image bytes sent so far."""
        files_bytes = sum(image.size for image in images)
        with ExitStack() as opened:

            def body() -> tuple[MultipartEncoderMonitor, str]:
                opened.close()  # the files of an earlier attempt
                fields: list[tuple[str, Any]] = list(form.items())
                for image in images:
                    handle = opened.enter_context(image.path.open("rb"))
                    fields.append(("image", (image.path.name, handle, "application/octet-stream")))
                fields.extend(("file_id", file_id) for file_id in file_ids)
                encoder = MultipartEncoder(fields)

                def report(monitor: MultipartEncoderMonitor) -> None:
                    if on_sent is not None:
                        on_sent(files_bytes * monitor.bytes_read // max(encoder.len, 1))

                monitor = MultipartEncoderMonitor(encoder, report)
                return monitor, monitor.content_type

            headers = {"Idempotency-Key": idempotency_key}
            return dict(self.transport.request("POST", JOBS_PATH, headers=headers, body=body).json())

    def submit_files(self, file_ids: Sequence[str], options: Mapping[str, Any], idempotency_key: str) -> dict[str, Any]:
        """One job of stored files (a JSON submission: no byte sent)."""
        payload = {"file_ids": list(file_ids), **options}
        headers = {"Idempotency-Key": idempotency_key}
        return dict(self.transport.request("POST", JOBS_PATH, headers=headers, body=json_body(payload)).json())

    def submit(
        self,
        paths: Sequence[str | Path] = (),
        *,
        file_ids: Sequence[str] = (),
        model: str | None = None,
        conf: float | None = None,
        iou: float | None = None,
        imgsz: int | None = None,
        callback_url: str | None = None,
        fps: float | None = None,
        start: float | None = None,
        end: float | None = None,
        track: bool | None = None,
        tiles: str | int | None = None,
        state_file: Path | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        checksum: bool = False,
        on_upload: UploadProgress | None = None,
        on_file_upload: FileUploadProgress | None = None,
        on_job: Callable[[SubmittedJob], None] | None = None,
    ) -> list[SubmittedJob]:
        """Submit the images and videos among ``paths`` (folders recursively) as as many jobs as the server's
        limits need, with the parameters given (see :class:`JobOptions`).

        Videos, and images too large for one request, are sent first by tus (as :meth:`upload`, with
        ``state_file``, ``chunk_bytes``, ``checksum``; ``on_file_upload`` hears of each file's bytes): they join
        the first job, then the stored files ``file_ids`` (from :meth:`upload`, or files of earlier jobs), or make
        a job of their own without images. ``on_upload`` hears of the images' bytes sent. ``on_job`` hears of
        each job as soon as it exists, so a failure later in a large submission still leaves the caller knowing
        what was made.
        """
        options = JobOptions(model, conf, iou, imgsz, callback_url, fps, start, end, track, tiles)
        images: list[ImageFile] = []
        references = {file_id: file_id for file_id in file_ids}  # a stored file's id -> how the job lists it
        limits: dict[str, Any] = {}
        if paths:
            limits = self.limits()
            streamed: list[ImageFile] = []
            for found in find_images(paths, limits["content_types"]):
                (streamed if found.video or not found.fits(limits["max_upload_bytes"]) else images).append(found)
            if streamed:  # else no state file is opened, nor tuspy imported
                stored = self.upload(
                    [file.path for file in streamed],
                    state_file=state_file,
                    chunk_bytes=chunk_bytes,
                    checksum=checksum,
                    on_progress=on_file_upload,
                )
                references = {uploaded.file_id: str(uploaded.path) for uploaded in stored} | references
        submission = uuid.uuid4().hex
        if not images:
            if not references:
                raise UsageError("Nothing to submit: give image or video paths, or file ids.")
            key = f"yolo-jobs-{submission}-0"
            job = SubmittedJob(
                self.submit_files(list(references), options.given(), key)["job_id"], [*references.values()], key
            )
            if on_job is not None:
                on_job(job)
            return [job]
        groups = split(images, limits["max_files_per_job"], limits["max_upload_bytes"])
        form = options.form()
        total = sum(image.size for image in images)
        jobs: list[SubmittedJob] = []
        sent_before = 0
        for index, group in enumerate(groups):
            key = f"yolo-jobs-{submission}-{index}"

            def sent(count: int, before: int = sent_before) -> None:
                if on_upload is not None:
                    on_upload(before + count, total)

            joining = references if index == 0 else {}
            answer = self.submit_images(group, form, key, sent, list(joining))
            sent_before += sum(image.size for image in group)
            sent(0, sent_before)  # the whole group, whatever the last progress report said
            job = SubmittedJob(answer["job_id"], [str(image.path) for image in group] + [*joining.values()], key)
            jobs.append(job)
            if on_job is not None:
                on_job(job)
        return jobs

    def wait(
        self,
        job_ids: Sequence[str],
        interval: float = 1.0,
        timeout: float | None = None,
        on_progress: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Poll until every job has finished; return them in order. ``on_progress`` sees each round."""
        deadline = None if timeout is None else time.monotonic() + timeout
        latest: dict[str, dict[str, Any]] = {}
        while True:
            for job_id in job_ids:
                if latest.get(job_id, {}).get("status") not in FINISHED_STATUSES:
                    latest[job_id] = self.job(job_id)
            if on_progress is not None:
                on_progress([latest[job_id] for job_id in job_ids])
            if all(job["status"] in FINISHED_STATUSES for job in latest.values()):
                return [latest[job_id] for job_id in job_ids]
            if deadline is not None and time.monotonic() > deadline:
                raise Unavailable(f"The jobs did not finish within {timeout} s.")
            time.sleep(interval)

    def export_merged_file(
        self, jobs: Iterable[Mapping[str, Any]], export_format: str, confidence: bool = False
    ) -> ExportedFile:
        """One file for finished ``jobs`` (their JSON), each job once: a job that did not succeed adds the
        images it analysed. A single job's file keeps the server's name; a merged one is named after the first job.

        A video exports alone: jobs holding a video and any other file are refused (export each video with
        :meth:`export_file` and its ``file_id``).
        """
        listed = list(jobs)
        files = sum(int(job.get("files_total") or len(job.get("files") or ())) for job in listed)
        if videos_in(listed) and files > 1:
            raise UsageError(
                f"The jobs hold a video among {files} files: a video exports alone; "
                "export each one by its job and file id (yolo-jobs export JOB --file-id ID)."
            )
        statuses = {job["job_id"]: job["status"] for job in listed}
        fetched: dict[str, ExportedFile] = {}

        def export(job_id: str) -> bytes:
            partial = statuses[job_id] != "succeeded"
            fetched[job_id] = self.export_file(job_id, export_format, partial=partial, confidence=confidence)
            return fetched[job_id].data

        data = merge(export_format, statuses, export)
        if len(fetched) == 1:
            return next(iter(fetched.values()))
        return ExportedFile(data, default_export_name(next(iter(fetched)), export_format))

    def export_merged(self, jobs: Iterable[Mapping[str, Any]], export_format: str, confidence: bool = False) -> bytes:
        """The bytes of :meth:`export_merged_file`."""
        return self.export_merged_file(jobs, export_format, confidence).data
