"""The ``yolo-jobs`` command: send files (large ones by tus, resumable), submit jobs on images or stored
files, run them again, follow them, export their detections, delete jobs and files.

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
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tqdm import tqdm

from yolo_jobs_client.client import FINISHED_STATUSES, Client, SubmittedJob
from yolo_jobs_client.errors import (
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    AuthError,
    ClientError,
    UsageError,
)
from yolo_jobs_client.merge import MERGERS
from yolo_jobs_client.uploads import CHUNK_BYTES, UploadedFile, default_state_file

DEFAULT_URL = "http://127.0.0.1:8000"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file beside it, so a failure never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as temp:
        temp.write(data)
    os.replace(temp.name, path)


def byte_size(text: str) -> int:
    """A size in bytes written ``65536``, ``256K``, ``64M`` or ``1G`` (binary units), at least one byte."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not match or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (say 65536, 256K, 64M or 1G)")
    return int(match[1]) * 1024 ** " KMG".index(match[2].upper() or " ")


def _export_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--confidence", action="store_true", help="YOLO labels: add a conf column (not for training)")


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model")
    parser.add_argument("--conf", type=float)
    parser.add_argument("--iou", type=float)
    parser.add_argument("--imgsz", type=int)
    parser.add_argument("--callback-url", help="the server POSTs a signed webhook here when each job ends")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-jobs", description="YOLO detection jobs from the command line.")
    parser.add_argument("--url", default=os.environ.get("YOLO_JOBS_URL", DEFAULT_URL), help="API base URL")
    parser.add_argument("--api-key", default=os.environ.get("YOLO_JOBS_API_KEY"), help="API key (yj_…)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (off anyway without a terminal)")
    commands = parser.add_subparsers(dest="command", required=True)

    upload = commands.add_parser("upload", help="send files of any size (tus, resumable); print each file's id")
    upload.add_argument("files", nargs="+", metavar="FILE", type=Path)
    upload.add_argument(
        "--state-file",
        type=Path,
        help=f"where unfinished uploads are kept, to resume them (default {default_state_file()})",
    )
    upload.add_argument(
        "--chunk-size", type=byte_size, default=CHUNK_BYTES, help="bytes per request, e.g. 16M (default 64M)"
    )
    upload.add_argument(
        "--checksum", action="store_true", help="send each request's SHA-1: the server keeps only bytes that match"
    )

    submit = commands.add_parser("submit", help="submit images (files or folders, recursively) or stored files")
    submit.add_argument("paths", nargs="*", metavar="PATH")
    submit.add_argument(
        "--file-id", dest="file_ids", action="append", default=[], help="a stored file (from upload), repeatable"
    )
    _job_options(submit)
    submit.add_argument("--wait", action="store_true", help="wait for every job to finish")
    submit.add_argument("--export", metavar="FORMAT", choices=sorted(MERGERS), help="merged export (implies --wait)")
    submit.add_argument("--out", type=Path, help="where --export writes")
    _export_options(submit)

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
    export.add_argument("--format", required=True, choices=sorted(MERGERS))
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--partial", action="store_true", help="a failed or cancelled job: the images it analysed")
    _export_options(export)
    commands.add_parser("models", help="the models jobs can ask for")
    return parser


def job_line(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    return f"{job['job_id']}\t{job['status']}\t{progress.get('done', 0)}/{progress.get('total', 0)}"


def made_line(job_id: str, files: int) -> str:
    return f"{job_id}\tqueued\t{files} files"


def wait_with_bar(client: Client, job_ids: Sequence[str], total: int, quiet: bool) -> list[dict[str, Any]]:
    """Wait for the jobs, a bar of their ``total`` files analysed."""
    with tqdm(total=total, unit="img", desc="detect", disable=quiet or None) as bar:

        def progress(states: list[dict[str, Any]]) -> None:
            finished = sum(state["status"] in FINISHED_STATUSES for state in states)
            bar.set_postfix_str(f"{finished}/{len(states)} jobs", refresh=False)
            bar.update(sum(state["progress"]["done"] for state in states) - bar.n)

        return client.wait(job_ids, on_progress=progress)


def job_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in ("model", "conf", "iou", "imgsz", "callback_url")}


def upload(client: Client, args: argparse.Namespace) -> int:
    """Each file's id, SHA-256 and path on stdout as the server stores it; a bar per file on stderr."""
    with ExitStack() as bars:
        current: dict[Path, tqdm[Any]] = {}

        def progress(path: Path, held: int, size: int) -> None:
            if path not in current:
                bars.close()  # the previous file's
                current.clear()
                if held:
                    print(f"yolo-jobs: resuming {path} at {held} of {size} bytes", file=sys.stderr)
                bar = tqdm(
                    total=size,
                    initial=held,
                    unit="B",
                    unit_scale=True,
                    desc=path.name,
                    disable=args.no_progress or None,
                )
                current[path] = bars.enter_context(bar)
            current[path].update(held - current[path].n)

        def stored(uploaded: UploadedFile) -> None:
            tqdm.write(f"{uploaded.file_id}\t{uploaded.sha256}\t{uploaded.path}", file=sys.stdout)

        client.upload(
            args.files,
            state_file=args.state_file,
            chunk_bytes=args.chunk_size,
            checksum=args.checksum,
            on_progress=progress,
            on_file=stored,
        )
    return EXIT_OK


def rerun(client: Client, args: argparse.Namespace) -> int:
    answer = client.rerun(args.job, **job_arguments(args))
    files = len(answer.get("files") or [])
    print(made_line(answer["job_id"], files))
    if not args.wait:
        return EXIT_OK
    (finished,) = wait_with_bar(client, [answer["job_id"]], files, args.no_progress)
    print(job_line(finished))
    return EXIT_OK if finished["status"] == "succeeded" else EXIT_JOB_FAILED


def submit(client: Client, args: argparse.Namespace) -> int:
    if bool(args.export) != bool(args.out):
        raise UsageError("--export and --out go together.")
    if not (args.paths or args.file_ids):
        raise UsageError("Nothing to submit: give image paths or --file-id.")
    quiet = args.no_progress
    started = time.monotonic()
    with tqdm(total=0, unit="B", unit_scale=True, desc="upload", disable=quiet or None) as bar:

        def uploaded(sent: int, total: int) -> None:
            bar.total = total
            bar.update(sent - bar.n)  # redraws at most ten times a second

        def made(job: SubmittedJob) -> None:
            bar.write(made_line(job.job_id, len(job.files)), file=sys.stdout)

        options = job_arguments(args)
        jobs = client.submit(args.paths, file_ids=args.file_ids, **options, on_upload=uploaded, on_job=made)
    if not (args.wait or args.export):
        return EXIT_OK
    images = sum(len(job.files) for job in jobs)
    finished = wait_with_bar(client, [job.job_id for job in jobs], images, quiet)
    for job in finished:
        print(job_line(job))
    elapsed = time.monotonic() - started
    print(f"{images} images in {len(jobs)} jobs: {elapsed:.1f} s, {images / elapsed:.2f} images/s", file=sys.stderr)
    failed = [job for job in finished if job["status"] != "succeeded"]
    if args.export:
        write_atomically(args.out, client.export_merged(finished, args.export, confidence=args.confidence))
        note = f" (the {len(failed)} unsuccessful jobs add only the images they analysed)" if failed else ""
        print(f"wrote {args.out}{note}", file=sys.stderr)
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
        data = client.export(args.job, args.format, partial=args.partial, confidence=args.confidence)
        write_atomically(args.out, data)
        print(f"wrote {args.out}", file=sys.stderr)
        return EXIT_OK
    for model in client.models():
        classes = ",".join((model.get("classes") or {}).values())
        print(f"{model['name']}\t{'default' if model['default'] else ''}\t{classes}")
    return EXIT_OK


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
        resume = " (the same command resumes the upload)" if args.command == "upload" else ""
        print(f"yolo-jobs: interrupted{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout went to a reader that stopped early (``| head``): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
