"""The ``yolo-jobs`` command: send files (large ones and videos by tus, resumable), submit jobs on images, videos
or stored files, run them again, follow them, export their detections, delete jobs and files; list the models, and
with an admin key register one (its weights sent by tus when they are a local file) or retire one.

Reads ``YOLO_JOBS_URL`` and ``YOLO_JOBS_API_KEY`` (or ``--url``, ``--api-key``).
Results go to stdout (one line per job, or JSON for ``status``), messages and
progress bars to stderr. Exit codes (see :mod:`yolo_jobs_client.errors`): 0 done,
1 a job failed or was cancelled, 2 usage, 3 API key, 4 not found, 5 server or
network, 6 wrong state for that, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from yolo_jobs_client.client import EXPORT_FORMATS, FINISHED_STATUSES, WEIGHTS, Client, ExportedFile, SubmittedJob
from yolo_jobs_client.errors import (
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    AuthError,
    ClientError,
    UsageError,
)
from yolo_jobs_client.uploads import CHUNK_BYTES, UploadedFile, default_state_file

DEFAULT_URL = "http://127.0.0.1:8000"
# A file the command writes is readable by others as any file the user makes is: 0666 less the umask.
FILE_MODE = 0o666


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file beside it, so a failure never leaves half a file.

    The temp file is made with :data:`FILE_MODE` (the umask applies), not a private temp file's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def byte_size(text: str) -> int:
    """A size in bytes written ``65536``, ``256K``, ``64M`` or ``1G`` (binary units), at least one byte."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not match or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (say 65536, 256K, 64M or 1G)")
    return int(match[1]) * 1024 ** " KMG".index(match[2].upper() or " ")


def tiles_value(text: str) -> str:
    """``auto``, ``off`` or a whole number of tiles (the server checks its range)."""
    value = text.strip().lower()
    if value in ("auto", "off") or (value.isascii() and value.isdigit() and int(value) > 0):
        return value
    raise argparse.ArgumentTypeError(f"not a tiling: {text!r} (say auto, off or a number of tiles such as 4)")


def _export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--confidence", action="store_true", help="YOLO labels: add a conf column (not for training)")


def _job_options(parser: argparse.ArgumentParser) -> None:
    """The detection options of ``submit`` and ``rerun`` (a rerun keeps its original's for those not given)."""
    parser.add_argument(
        "--model", metavar="NAME", help="the model to run ('yolo-jobs models' lists them; default: the server's)"
    )
    parser.add_argument(
        "--conf",
        type=float,
        metavar="0-1",
        help="minimum confidence: objects found with less are left out (default 0.25)",
    )
    parser.add_argument(
        "--iou",
        type=float,
        metavar="0-1",
        help="overlap threshold: boxes of one class overlapping more than this are merged into one (default 0.7)",
    )
    parser.add_argument(
        "--imgsz",
        type=int,
        metavar="PIXELS",
        help="images are resized to this on their longest side (32-4096; default: the model's own size); a model "
        "exported at a fixed size runs at it, and the job records the size it ran at",
    )
    parser.add_argument("--callback-url", help="the server POSTs a signed webhook here when each job ends")
    media = parser.add_argument_group("videos and large images")
    media.add_argument("--fps", type=float, help="video frames analysed per second, e.g. 5 (default: every frame)")
    media.add_argument("--start", type=float, metavar="SECONDS", help="analyse videos from this time (default 0)")
    media.add_argument("--end", type=float, metavar="SECONDS", help="analyse videos up to this time (default: the end)")
    media.add_argument(
        "--track",
        action=argparse.BooleanOptionalAction,
        help="give each object seen across a video's frames a track id (needed by --export mot)",
    )
    media.add_argument(
        "--tiles",
        type=tiles_value,
        metavar="auto|off|N",
        help="cut large images into tiles: auto (when over 4x the model's input size), off (the default), or N tiles",
    )


def _tus_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-file",
        type=Path,
        help=f"where unfinished uploads are kept, to resume them (default {default_state_file()})",
    )
    parser.add_argument(
        "--chunk-size", type=byte_size, default=CHUNK_BYTES, help="bytes per request, e.g. 16M (default 64M)"
    )
    parser.add_argument(
        "--checksum", action="store_true", help="send each request's SHA-1: the server keeps only bytes that match"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-jobs", description="YOLO detection jobs from the command line.")
    parser.add_argument("--url", default=os.environ.get("YOLO_JOBS_URL", DEFAULT_URL), help="API base URL")
    parser.add_argument("--api-key", default=os.environ.get("YOLO_JOBS_API_KEY"), help="API key (yj_…)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress bars on stderr (default: only on a terminal)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    upload = commands.add_parser("upload", help="send files of any size (tus, resumable); print each file's id")
    upload.add_argument("files", nargs="+", metavar="FILE", type=Path)
    _tus_options(upload)

    submit = commands.add_parser(
        "submit", help="submit images and videos (files or folders, recursively) or stored files"
    )
    submit.add_argument("paths", nargs="*", metavar="PATH")
    submit.add_argument(
        "--file-id", dest="file_ids", action="append", default=[], help="a stored file (from upload), repeatable"
    )
    _job_options(submit)
    submit.add_argument("--wait", action="store_true", help="wait for every job to finish")
    submit.add_argument(
        "--export",
        metavar="FORMAT",
        choices=sorted(EXPORT_FORMATS),
        help="one file of the detections (implies --wait): coco, yolo, csv, labelstudio; a video's mot, cvat-video",
    )
    submit.add_argument("--out", type=Path, help="where --export writes (default: the name the server gives)")
    _export_options(submit)
    _tus_options(submit)  # videos, and files too large for one request, are sent by tus

    status = commands.add_parser("status", help="a job as JSON (exit 1 when it failed or was cancelled)")
    status.add_argument("job")
    listing = commands.add_parser("jobs", help="recent jobs, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--offset", type=int, default=0)
    commands.add_parser("cancel", help="cancel a queued or running job").add_argument("job")
    commands.add_parser("retry", help="queue a failed or cancelled job again").add_argument("job")
    rerun = commands.add_parser("rerun", help="a new job on a job's files, with the options given changed")
    rerun.add_argument("job")
    _job_options(rerun)
    rerun.add_argument("--wait", action="store_true", help="wait for the new job to finish")
    delete = commands.add_parser("delete", help="delete a job, or a stored file and every reference to it")
    delete.add_argument("kind", choices=("job", "file"))
    delete.add_argument("id")
    export = commands.add_parser("export", help="one job's detections as a file")
    export.add_argument("job")
    export.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS))
    export.add_argument("--out", type=Path, help="where to write (default: the name the server gives)")
    export.add_argument("--file-id", help="a job with videos: which one (default: its first)")
    export.add_argument("--partial", action="store_true", help="a failed or cancelled job: the images it analysed")
    _export_options(export)
    models = commands.add_parser("models", help="the models jobs can ask for; with an admin key, add or retire one")
    model_commands = models.add_subparsers(dest="models_command", metavar="{add,retire}")
    add = model_commands.add_parser(
        "add", help="register a model (admin key): jobs may ask for it at once, no worker restarts"
    )
    add.add_argument("name", help="what jobs ask for it by: letters, digits, '.', '_' or '-'")
    add.add_argument(
        "--weights",
        required=True,
        metavar="PATH",
        help="a local .pt or .onnx file (sent by tus, resumable), or a path on the server's shared volume "
        "(STORAGE_ROOT), where an OpenVINO export folder or a TensorRT .engine must be",
    )
    add.add_argument(
        "--on-server", action="store_true", help="PATH is on the server even though a local file has that path"
    )
    _tus_options(add)
    retire = model_commands.add_parser("retire", help="retire a model (admin key): new jobs are refused it")
    retire.add_argument("name")
    return parser


def bars_disabled(args: argparse.Namespace) -> bool | None:
    """tqdm's ``disable``: True with ``--no-progress``, False with ``--progress``, None (only on a terminal)."""
    return None if args.progress is None else not args.progress


class ByteBars:
    """One bar of bytes sent at a time on stderr (a file sent by tus, or a submission's images): the previous
    one ends when the next begins."""

    def __init__(self, disable: bool | None) -> None:
        self.disable = disable
        self.key: object = None
        self.bar: tqdm[Any] | None = None

    def __enter__(self) -> ByteBars:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def show(self, key: object, label: str, sent: int, total: int) -> None:
        """``sent`` of ``total`` bytes of what ``key`` names (``label`` on the bar)."""
        if self.bar is None or key != self.key:
            self.close()
            self.key = key
            self.bar = tqdm(total=total, initial=sent, unit="B", unit_scale=True, desc=label, disable=self.disable)
        self.bar.total = total
        self.bar.update(sent - self.bar.n)  # redraws at most ten times a second

    def file_progress(self, path: Path, held: int, size: int) -> None:
        """A file sent by tus: its bar, and a word when it resumes an earlier upload."""
        if held and self.key != path:
            tqdm.write(f"yolo-jobs: resuming {path} at {held} of {size} bytes", file=sys.stderr)
        self.show(path, path.name, held, size)


@dataclass(frozen=True)
class Work:
    """What jobs have analysed: their videos' sampled frames when any has videos (``frames``; other jobs are not
    counted), else their files. ``failed``: frames that could not be decoded."""

    frames: bool
    done: int
    failed: int
    total: int

    @classmethod
    def of(cls, jobs: Sequence[Mapping[str, Any]]) -> Work:
        counts = [job["progress"]["frames"] for job in jobs if job["progress"].get("frames")]
        if counts:
            return cls(True, *(sum(count[name] for count in counts) for name in ("done", "failed", "total")))
        return cls(
            False, sum(job["progress"]["done"] for job in jobs), 0, sum(job["progress"]["total"] for job in jobs)
        )

    @property
    def unit(self) -> str:
        return "frame" if self.frames else "img"

    @property
    def processed(self) -> int:
        """Analysed or given up on: what the bar counts."""
        return self.done + self.failed

    def summary(self, jobs: int, elapsed: float) -> str:
        """``N frames analysed`` (or images), the jobs, time and rate, and the frames that could not be decoded."""
        noun = "frames" if self.frames else "images"
        what = f"{self.done} frames analysed" if self.frames else f"{self.done} images"
        line = f"{what} in {jobs} job{'' if jobs == 1 else 's'}: {elapsed:.1f} s, {self.done / elapsed:.2f} {noun}/s"
        return line + (f"; {self.failed} frames could not be decoded" if self.failed else "")


def model_line(model: Mapping[str, Any]) -> str:
    """A model as a line: name, default, its classes (once a worker loaded it), active or retired, and the size a
    job asking for none runs at (``fixed`` when it runs at no other)."""
    classes = ",".join((model.get("classes") or {}).values())
    state = "retired" if model.get("retired_at") else "active"
    size = "" if model.get("imgsz") is None else str(model["imgsz"]) + (" fixed" if model.get("fixed_imgsz") else "")
    return f"{model['name']}\t{'default' if model['default'] else ''}\t{classes}\t{state}\t{size}"


def models(client: Client, args: argparse.Namespace) -> int:
    """List the models, or register or retire one; a model registered or retired is printed as a line."""
    if args.models_command == "retire":
        print(model_line(client.retire_model(args.name)))
        return EXIT_OK
    if args.models_command == "add":
        print(model_line(add_model(client, args)))
        return EXIT_OK
    for model in client.models():
        print(model_line(model))
    return EXIT_OK


def add_model(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """Register ``args.name``: a local file is sent by tus first (resumable, as weights: the server checks they
    are what their name says), then named by its file id; any other path is the server's."""
    local = Path(args.weights)
    if args.on_server or not local.exists():
        return client.register_model(args.name, weights=args.weights)
    if local.is_dir():
        raise UsageError(
            f"{local} is a folder: put an OpenVINO export on the server's shared volume and give its path there, "
            "with --on-server if it is also a local path."
        )
    with ByteBars(bars_disabled(args)) as bars:
        (uploaded,) = client.upload([local], **tus_arguments(args), on_progress=bars.file_progress, purpose=WEIGHTS)
    return client.register_model(args.name, file_id=uploaded.file_id)


def job_line(job: Mapping[str, Any]) -> str:
    progress = job.get("progress") or {}
    return f"{job['job_id']}\t{job['status']}\t{progress.get('done', 0)}/{progress.get('total', 0)}"


def made_line(job_id: str, files: int) -> str:
    return f"{job_id}\tqueued\t{files} files"


def wait_with_bar(client: Client, job_ids: Sequence[str], disable: bool | None) -> list[dict[str, Any]]:
    """Wait for the jobs, a bar of their frames analysed (files, for jobs without videos)."""
    with tqdm(total=0, unit="img", desc="detect", disable=disable) as bar:

        def progress(states: list[dict[str, Any]]) -> None:
            work = Work.of(states)
            finished = sum(state["status"] in FINISHED_STATUSES for state in states)
            bar.unit = work.unit
            bar.total = max(work.total, work.processed)  # the server's count of frames is exact once listed
            bar.set_postfix_str(f"{finished}/{len(states)} jobs", refresh=False)
            bar.update(work.processed - bar.n)

        return client.wait(job_ids, on_progress=progress)


def job_arguments(args: argparse.Namespace) -> dict[str, Any]:
    names = ("model", "conf", "iou", "imgsz", "callback_url", "fps", "start", "end", "track", "tiles")
    return {name: getattr(args, name) for name in names}


def tus_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {"state_file": args.state_file, "chunk_bytes": args.chunk_size, "checksum": args.checksum}


def write_export(exported: ExportedFile, out: Path | None, note: str = "") -> None:
    """Write an export to ``out``, or to the name it came with in the current folder; say where."""
    path = out or Path(exported.filename)
    write_atomically(path, exported.data)
    print(f"wrote {path}{note}", file=sys.stderr)


def upload(client: Client, args: argparse.Namespace) -> int:
    """Each file's id, SHA-256 and path on stdout as the server stores it; a bar per file on stderr."""

    def stored(uploaded: UploadedFile) -> None:
        tqdm.write(f"{uploaded.file_id}\t{uploaded.sha256}\t{uploaded.path}", file=sys.stdout)

    with ByteBars(bars_disabled(args)) as bars:
        client.upload(args.files, **tus_arguments(args), on_progress=bars.file_progress, on_file=stored)
    return EXIT_OK


def rerun(client: Client, args: argparse.Namespace) -> int:
    answer = client.rerun(args.job, **job_arguments(args))
    print(made_line(answer["job_id"], len(answer.get("files") or [])))
    if not args.wait:
        return EXIT_OK
    (finished,) = wait_with_bar(client, [answer["job_id"]], bars_disabled(args))
    print(job_line(finished))
    return EXIT_OK if finished["status"] == "succeeded" else EXIT_JOB_FAILED


def submit(client: Client, args: argparse.Namespace) -> int:
    if args.out and not args.export:
        raise UsageError("--out names where --export writes: give --export FORMAT too.")
    if not (args.paths or args.file_ids):
        raise UsageError("Nothing to submit: give image or video paths, or --file-id.")
    disable = bars_disabled(args)
    started = time.monotonic()
    with ByteBars(disable) as bars:

        def made(job: SubmittedJob) -> None:
            tqdm.write(made_line(job.job_id, len(job.files)), file=sys.stdout)

        jobs = client.submit(
            args.paths,
            file_ids=args.file_ids,
            **job_arguments(args),
            **tus_arguments(args),
            on_upload=lambda sent, total: bars.show("images", "upload", sent, total),
            on_file_upload=bars.file_progress,
            on_job=made,
        )
    if not (args.wait or args.export):
        return EXIT_OK
    finished = wait_with_bar(client, [job.job_id for job in jobs], disable)
    for job in finished:
        print(job_line(job))
    print(Work.of(finished).summary(len(jobs), time.monotonic() - started), file=sys.stderr)
    failed = [job for job in finished if job["status"] != "succeeded"]
    if args.export:
        exported = client.export_merged_file(finished, args.export, confidence=args.confidence)
        note = f" (the {len(failed)} unsuccessful jobs add only the images they analysed)" if failed else ""
        write_export(exported, args.out, note)
    return EXIT_JOB_FAILED if failed else EXIT_OK


def run(client: Client, args: argparse.Namespace) -> int:
    if args.command == "upload":
        return upload(client, args)
    if args.command == "submit":
        return submit(client, args)
    if args.command == "rerun":
        return rerun(client, args)
    if args.command == "delete":
        (client.delete_job if args.kind == "job" else client.delete_file)(args.id)
        print(f"deleted {args.kind} {args.id}", file=sys.stderr)
        return EXIT_OK
    if args.command == "status":
        job = client.job(args.job)
        print(json.dumps(job, indent=2))
        return EXIT_JOB_FAILED if job["status"] in ("failed", "cancelled") else EXIT_OK
    if args.command == "jobs":
        page = client.jobs(args.limit, args.offset)
        for job in page["jobs"]:
            print(f"{job_line(job)}\t{job['model']}\t{job['created_at']}")
        return EXIT_OK
    if args.command in ("cancel", "retry"):
        print(job_line(client.cancel(args.job) if args.command == "cancel" else client.retry(args.job)))
        return EXIT_OK
    if args.command == "export":
        options = {"file_id": args.file_id, "partial": args.partial, "confidence": args.confidence}
        write_export(client.export_file(args.job, args.format, **options), args.out)
        return EXIT_OK
    return models(client, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not args.api_key:
            raise AuthError("No API key: set YOLO_JOBS_API_KEY or pass --api-key.")
        with Client(args.url, args.api_key) as client:
            return run(client, args)
    except ClientError as exc:
        print(f"yolo-jobs: {exc.message}" + (f" ({exc.code})" if exc.code else ""), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        resume = " (the same command resumes what it sent by tus)" if args.command in ("upload", "submit") else ""
        print(f"yolo-jobs: interrupted{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout went to a reader that stopped early (``| head``): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
