"""``Client``: the yolo-jobs API from Python, as the ``yolo-jobs`` command uses it.

    client = Client("http://127.0.0.1:8000", key)
    jobs = client.submit(["photos/"], conf=0.4)          # one job per 100 images (the server's limit)
    finished = client.wait([j.job_id for j in jobs])
    coco = client.export_merged(finished, "coco")        # one COCO document for them all

    (video,) = client.upload(["big.mp4"])                # tus, resumable: see yolo_jobs_client.tus
    client.submit(file_ids=[video.file_id])              # a job on stored files
    client.rerun(jobs[0].job_id, model="other")          # the same files again, no byte sent

Each job's upload (or rerun) carries an ``Idempotency-Key`` of its own, so a retried
request (a lost answer, a 503) never makes a second job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from requests_toolbelt.multipart.encoder import MultipartEncoder, MultipartEncoderMonitor

from yolo_jobs_client.batches import ImageFile, find_images, split
from yolo_jobs_client.errors import Unavailable, UsageError
from yolo_jobs_client.merge import merge
from yolo_jobs_client.transport import Transport
from yolo_jobs_client.uploads import CHUNK_BYTES, UploadedFile, default_state_file

FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
JOBS_PATH = "/api/v1/jobs"
FILES_PATH = "/api/v1/files"

# Called with the bytes of image data sent so far and the submission's total.
UploadProgress = Callable[[int, int], None]
# Called with a file being sent by tus, the bytes the server holds of it and its size.
FileUploadProgress = Callable[[Path, int, int], None]


def json_body(payload: Mapping[str, Any]) -> Callable[[], tuple[bytes, str]]:
    """A :meth:`Transport.request` body of ``payload`` as JSON."""
    data = json.dumps(payload).encode()
    return lambda: (data, "application/json")


def job_options(
    model: str | None, conf: float | None, iou: float | None, imgsz: int | None, callback_url: str | None
) -> dict[str, Any]:
    """A job's parameters, the ones given only (the server picks the others)."""
    options = {"model": model, "conf": conf, "iou": iou, "imgsz": imgsz, "callback_url": callback_url}
    return {name: value for name, value in options.items() if value is not None}


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
        return list(self._get("/api/v1/models")["models"])

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
    ) -> dict[str, Any]:
        """A new job on ``job_id``'s files (its deleted ones skipped) with the parameters given changed; the
        answer is a submission's (``job_id``, ``status``, ``files``)."""
        payload = job_options(model, conf, iou, imgsz, callback_url)
        headers = {"Idempotency-Key": f"yolo-jobs-rerun-{uuid.uuid4().hex}"}
        path = f"{JOBS_PATH}/{job_id}/rerun"
        return dict(self.transport.request("POST", path, headers=headers, body=json_body(payload)).json())

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
    ) -> list[UploadedFile]:
        """Send each file of ``paths`` by tus, in ``chunk_bytes`` PATCHes (each with its SHA-1 when
        ``checksum``), resuming the uploads ``state_file`` (default :func:`default_state_file`) names; return
        the stored files in order.

        ``on_file`` hears of each as soon as the server stored it.
        """
        from yolo_jobs_client.tus import ResumableUpload, open_state  # tuspy: only when sending (see uploads)

        stored: list[UploadedFile] = []
        with open_state(state_file or default_state_file()) as state:
            sender = ResumableUpload(self.transport, state, chunk_bytes, checksum)
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

    def export(self, job_id: str, export_format: str, partial: bool = False, confidence: bool = False) -> bytes:
        """One job's export (``coco``, ``yolo``, ``csv``, ``labelstudio``); ``partial`` for a failed or
        cancelled job, ``confidence`` for YOLO labels with a conf column."""
        params = {"format": export_format, "partial": str(partial).lower(), "confidence": str(confidence).lower()}
        return self.transport.request("GET", f"{JOBS_PATH}/{job_id}/export", params=params).content

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
        on_upload: UploadProgress | None = None,
        on_job: Callable[[SubmittedJob], None] | None = None,
    ) -> list[SubmittedJob]:
        """Submit the images among ``paths`` (folders recursively) as as many jobs as the server's limits need,
        and the stored files ``file_ids`` (from :meth:`upload`, or files of earlier jobs) with the first of them,
        or as a job of their own without images.

        ``on_job`` hears of each job as soon as it exists, so a failure later in a
        large submission still leaves the caller knowing what was made.
        """
        options = job_options(model, conf, iou, imgsz, callback_url)
        submission = uuid.uuid4().hex
        if not paths:
            if not file_ids:
                raise UsageError("Nothing to submit: give image paths or file ids.")
            key = f"yolo-jobs-{submission}-0"
            job = SubmittedJob(self.submit_files(file_ids, options, key)["job_id"], list(file_ids), key)
            if on_job is not None:
                on_job(job)
            return [job]
        limits = self.limits()
        images = find_images(paths, limits["content_types"])
        groups = split(images, limits["max_files_per_job"], limits["max_upload_bytes"])
        form = {name: str(value) for name, value in options.items()}
        total = sum(image.size for image in images)
        jobs: list[SubmittedJob] = []
        sent_before = 0
        for index, group in enumerate(groups):
            key = f"yolo-jobs-{submission}-{index}"

            def sent(count: int, before: int = sent_before) -> None:
                if on_upload is not None:
                    on_upload(before + count, total)

            references = file_ids if index == 0 else ()
            answer = self.submit_images(group, form, key, sent, references)
            sent_before += sum(image.size for image in group)
            sent(0, sent_before)  # the whole group, whatever the last progress report said
            job = SubmittedJob(answer["job_id"], [str(image.path) for image in group] + list(references), key)
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

    def export_merged(self, jobs: Iterable[Mapping[str, Any]], export_format: str, confidence: bool = False) -> bytes:
        """One file for finished ``jobs`` (their JSON), each job once: a job that did not succeed adds the
        images it analysed."""
        statuses = {job["job_id"]: job["status"] for job in jobs}

        def export(job_id: str) -> bytes:
            return self.export(job_id, export_format, partial=statuses[job_id] != "succeeded", confidence=confidence)

        return merge(export_format, statuses, export)
