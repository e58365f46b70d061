-- yolo-jobs schema: the source of truth. Applies cleanly to an empty database and
-- again to an existing one (every statement is idempotent).
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f schema.sql    or    make db

-- Content-addressed bytes on the shared volume. One live row per sha256; a row is
-- tombstoned (deleted_at) when retention removes its bytes, and the same content
-- uploaded later gets a new row.
CREATE TABLE IF NOT EXISTS stored_files (
    id           uuid PRIMARY KEY,
    sha256       char(64)    NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size         bigint      NOT NULL CHECK (size >= 0),
    content_type text        NOT NULL,
    width        integer     NOT NULL CHECK (width > 0),
    height       integer     NOT NULL CHECK (height > 0),
    path         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS stored_files_live_sha256 ON stored_files (sha256) WHERE deleted_at IS NULL;

-- One detection request over one or more files.
CREATE TABLE IF NOT EXISTS jobs (
    id            uuid PRIMARY KEY,
    status        text        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    model         text        NOT NULL,
    conf          real        NOT NULL CHECK (conf >= 0 AND conf <= 1),
    iou           real        NOT NULL CHECK (iou >= 0 AND iou <= 1),
    imgsz         integer     CHECK (imgsz BETWEEN 32 AND 4096),
    total_files   integer     NOT NULL CHECK (total_files > 0),
    done_files    integer     NOT NULL DEFAULT 0 CHECK (done_files >= 0),
    attempts      integer     NOT NULL DEFAULT 0,
    error_code    text,
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    enqueued_at   timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz,
    CHECK ((status IN ('succeeded', 'failed')) = (finished_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (status) WHERE finished_at IS NULL;

-- A file as uploaded to a job: its original name and order. Many uploads may point
-- at one stored file (deduplication).
CREATE TABLE IF NOT EXISTS uploads (
    id           uuid PRIMARY KEY,
    job_id       uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    file_id      uuid        NOT NULL REFERENCES stored_files (id),
    position     integer     NOT NULL CHECK (position >= 0),
    filename     text        NOT NULL,
    deduplicated boolean     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, position)
);
CREATE INDEX IF NOT EXISTS uploads_file_id ON uploads (file_id);

-- What inference found in one upload; at most one row per upload, so a redelivered
-- task can never duplicate results.
CREATE TABLE IF NOT EXISTS results (
    upload_id  uuid        PRIMARY KEY REFERENCES uploads (id) ON DELETE CASCADE,
    job_id     uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    width      integer,
    height     integer,
    detections jsonb       NOT NULL DEFAULT '[]'::jsonb,
    error      text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS results_job_id ON results (job_id);

-- Models as the workers loaded them: what each named model detects, so the API
-- can list classes without loading weights itself.
CREATE TABLE IF NOT EXISTS models (
    name           text PRIMARY KEY,
    weights        text        NOT NULL,
    weights_sha256 char(64),
    task           text        NOT NULL,
    classes        jsonb       NOT NULL,
    loaded_at      timestamptz NOT NULL DEFAULT now()
);
