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
-- A resumable upload may hold any file: an image has its upright size, anything else none.
ALTER TABLE stored_files ALTER COLUMN width DROP NOT NULL;
ALTER TABLE stored_files ALTER COLUMN height DROP NOT NULL;

-- The owners of jobs, and their API keys (stored only as a SHA-256 of the key; the
-- prefix names a key in lists). An admin key sees every tenant's jobs.
CREATE TABLE IF NOT EXISTS tenants (
    id         uuid PRIMARY KEY,
    name       text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The secret that signs the tenant's webhooks (Standard Webhooks: whsec_ and 32 base64 bytes; two
-- gen_random_uuid(), a strong random source built in, give 244 random bits). A volatile default is
-- evaluated per row, so adding the column gives every existing tenant a secret of its own;
-- rotation sets it to DEFAULT again (accounts/tenants.py).
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS webhook_secret text NOT NULL
    DEFAULT 'whsec_' || encode(decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'), 'base64');

CREATE TABLE IF NOT EXISTS api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    prefix       char(8)     NOT NULL UNIQUE,
    secret_hash  char(64)    NOT NULL,
    admin        boolean     NOT NULL DEFAULT false,
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- One detection request over one or more files. A running attempt holds a lease
-- (lease_token, lease_expires_at): its writes are fenced by the token, and beat's
-- reaper re-sends the task of a job whose lease expired. task_id is the Celery task
-- id of the job's latest message (the job id, until a re-send or a retry).
CREATE TABLE IF NOT EXISTS jobs (
    id            uuid PRIMARY KEY,
    status        text        NOT NULL DEFAULT 'queued'
                  CONSTRAINT jobs_status_check
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
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
    CONSTRAINT jobs_finished_check
        CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS task_id text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS lease_token uuid;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz;
-- The tenant whose key made the job (null for jobs made before owners existed: admins see them).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS tenant_id uuid REFERENCES tenants (id);
-- Where to POST the job.finished webhook when the job ends (app/forms.py checks it).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS callback_url text CONSTRAINT jobs_callback_url_check
    CHECK (length(callback_url) <= 2048);
-- 0.1.0 had no 'cancelled' status, and an unnamed finished check (jobs_check).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_status_check'
                   AND strpos(pg_get_constraintdef(oid), 'cancelled') > 0) THEN
        ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_status_check;
        ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
            CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_finished_check') THEN
        ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_check;
        ALTER TABLE jobs ADD CONSTRAINT jobs_finished_check
            CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL));
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (status) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_tenant_created_at ON jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_tenant_unfinished ON jobs (tenant_id) WHERE finished_at IS NULL;

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
-- A file its owner deleted (DELETE /api/v1/files/<id>) leaves the job's upload in place, with no file
-- and no result: the job keeps its shape, and file_deleted_at says when.
ALTER TABLE uploads ALTER COLUMN file_id DROP NOT NULL;
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS file_deleted_at timestamptz;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'uploads'::regclass AND conname = 'uploads_file_check') THEN
        ALTER TABLE uploads ADD CONSTRAINT uploads_file_check CHECK ((file_id IS NULL) = (file_deleted_at IS NOT NULL));
    END IF;
END $$;

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
-- What produced a result, so that another job may take it instead of running inference (RESULT_REUSE):
-- reuse_key is the SHA-256 of the file's digest, the weights' digest, conf, iou, the effective imgsz, the
-- backend and the precision (jobs/reuse.py). cached: this result was taken from an earlier one.
ALTER TABLE results ADD COLUMN IF NOT EXISTS reuse_key char(64);
ALTER TABLE results ADD COLUMN IF NOT EXISTS weights_sha256 char(64);
ALTER TABLE results ADD COLUMN IF NOT EXISTS backend text;
ALTER TABLE results ADD COLUMN IF NOT EXISTS precision text;
ALTER TABLE results ADD COLUMN IF NOT EXISTS cached boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS results_reuse_key ON results (reuse_key) WHERE reuse_key IS NOT NULL AND error IS NULL;

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
-- What the API needs to say which inference size a job runs at: the model's largest stride
-- and the size its weights were trained at (NULL: Ultralytics' 640).
ALTER TABLE models ADD COLUMN IF NOT EXISTS stride integer;
ALTER TABLE models ADD COLUMN IF NOT EXISTS imgsz integer;
-- The model registry: each name a job may ask for, registered by YOLO_MODELS (source 'settings', seeded at every
-- start-up: jobs/catalog.py) or by an admin through the API (source 'api'); a row without a source is only what a
-- worker of an earlier release reported. A retired model takes no new job, but its row stays: the jobs that ran
-- on it keep their class names, and its name is never given to other weights. The report columns above (and
-- fixed_imgsz, the one input size an export made at a fixed size runs at) stay NULL until a worker loads the
-- weights; loaded_at says when one last did.
ALTER TABLE models ADD COLUMN IF NOT EXISTS source text CONSTRAINT models_source_check CHECK (source IN ('settings', 'api'));
ALTER TABLE models ADD COLUMN IF NOT EXISTS registered_at timestamptz;
ALTER TABLE models ADD COLUMN IF NOT EXISTS registered_by uuid REFERENCES api_keys (id);
ALTER TABLE models ADD COLUMN IF NOT EXISTS retired_at timestamptz;
ALTER TABLE models ADD COLUMN IF NOT EXISTS retired_by uuid REFERENCES api_keys (id);
ALTER TABLE models ADD COLUMN IF NOT EXISTS fixed_imgsz integer CONSTRAINT models_fixed_imgsz_check CHECK (fixed_imgsz > 0);
ALTER TABLE models ALTER COLUMN task DROP NOT NULL;
ALTER TABLE models ALTER COLUMN classes DROP NOT NULL;
ALTER TABLE models ALTER COLUMN loaded_at DROP NOT NULL;
ALTER TABLE models ALTER COLUMN loaded_at DROP DEFAULT;

-- Idempotency-Key of POST /api/v1/jobs, per tenant: the request's fingerprint, and once
-- answered the job and the response, replayed for the same key and request for 24 hours.
-- A claim (no response yet) whose locked_until passed was abandoned and may be taken over.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    key          text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint  char(64)    NOT NULL,
    job_id       uuid        REFERENCES jobs (id) ON DELETE CASCADE,
    status_code  integer,
    response     jsonb,
    locked_until timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at ON idempotency_keys (expires_at);

-- The webhook outbox: one row per end of a job that has a callback_url, inserted in the
-- transaction that ends the job, so a delivery is never lost between the two. The
-- delivery task claims a row by moving next_attempt_at past its attempt; beat's sweep
-- re-sends the task of a pending row whose next_attempt_at has passed (a lost message,
-- or a back-off too long to wait for in the broker). event_status and counts are the
-- job as it ended; the body is built from them at each attempt, identically.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              uuid PRIMARY KEY,
    job_id          uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    url             text        NOT NULL,
    event_status    text        NOT NULL CHECK (event_status IN ('succeeded', 'failed', 'cancelled')),
    counts          jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CONSTRAINT webhook_deliveries_status_check
                    CHECK (status IN ('pending', 'delivered', 'failed', 'gone', 'refused')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT webhook_deliveries_pending_check CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_job_id ON webhook_deliveries (job_id, created_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- Every attempt of a delivery: when, the HTTP status or the error, and how long it took.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id  uuid        NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    number       integer     NOT NULL CHECK (number > 0),
    attempted_at timestamptz NOT NULL DEFAULT now(),
    http_status  integer,
    error        text,
    duration_ms  integer     NOT NULL CHECK (duration_ms >= 0),
    PRIMARY KEY (delivery_id, number)
);

-- A receiver answered 410 Gone: no delivery to this URL for a job of this tenant submitted
-- before then is attempted any more. A job submitted later with the URL sends to it again.
CREATE TABLE IF NOT EXISTS webhook_gone_urls (
    tenant_id uuid        NOT NULL REFERENCES tenants (id),
    url       text        NOT NULL,
    gone_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, url)
);

-- A tenant's files of its own, outside any job: each finished resumable upload. A job may run on them
-- (file_ids), like on the files of the tenant's earlier jobs. filename is the name the tenant gave it.
CREATE TABLE IF NOT EXISTS tenant_files (
    tenant_id  uuid        NOT NULL REFERENCES tenants (id),
    file_id    uuid        NOT NULL REFERENCES stored_files (id),
    filename   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, file_id)
);
CREATE INDEX IF NOT EXISTS tenant_files_file_id ON tenant_files (file_id);

-- Resumable uploads (tus 1.0, /api/v1/uploads): the bytes go to part_path on the shared volume, and
-- received counts those that are durable there. A finished upload has its stored file (file_id); an
-- unfinished one is removed, part and row, once expires_at passes.
CREATE TABLE IF NOT EXISTS resumable_uploads (
    id          uuid PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    length      bigint      NOT NULL CHECK (length >= 0),
    received    bigint      NOT NULL DEFAULT 0,
    filename    text        NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    part_path   text        NOT NULL,
    file_id     uuid        REFERENCES stored_files (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    finished_at timestamptz,
    CONSTRAINT resumable_uploads_received_check CHECK (received BETWEEN 0 AND length),
    CONSTRAINT resumable_uploads_finished_check CHECK ((finished_at IS NULL) = (file_id IS NULL))
);
CREATE INDEX IF NOT EXISTS resumable_uploads_tenant_unfinished ON resumable_uploads (tenant_id) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS resumable_uploads_expiring ON resumable_uploads (expires_at) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS resumable_uploads_file_id ON resumable_uploads (file_id);

-- Who deleted what, and when: one row per DELETE of a job or a file, kept for audit after the rows it
-- names are gone. files: [{"file_id", "sha256", "size", "freed"}] (freed: its bytes left the volume then).
CREATE TABLE IF NOT EXISTS tombstones (
    id          uuid PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('job', 'file')),
    subject_id  uuid        NOT NULL,
    tenant_id   uuid        REFERENCES tenants (id),
    deleted_by  uuid        REFERENCES api_keys (id),
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    job_ids     uuid[]      NOT NULL DEFAULT '{}',
    files       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    bytes_freed bigint      NOT NULL DEFAULT 0 CHECK (bytes_freed >= 0)
);
CREATE INDEX IF NOT EXISTS tombstones_tenant_deleted_at ON tombstones (tenant_id, deleted_at DESC);
CREATE INDEX IF NOT EXISTS tombstones_subject_id ON tombstones (subject_id);

-- What a video file holds, probed once when it is stored (storage/media.py): {"kind": "video", "container",
-- "codec", "width", "height", "rotation", "fps", "duration", "frames"}. NULL for images and other files.
ALTER TABLE stored_files ADD COLUMN IF NOT EXISTS media jsonb;

-- A job's media parameters: for videos the sample rate (NULL: every frame), the time range in seconds and
-- whether tracks are assigned; for images whether they run as tiles (auto, off or tiles on the longest side).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS sample_fps real CHECK (sample_fps > 0);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS start_seconds double precision CHECK (start_seconds >= 0);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS end_seconds double precision CHECK (end_seconds > 0);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS track boolean NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS tiles text NOT NULL DEFAULT 'off' CHECK (tiles ~ '^(auto|off|[1-9][0-9]?)$');
-- A job with parts counts its frames: to do (exact once each segment has listed its own), analysed, not decodable.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS total_frames integer CHECK (total_frames >= 0);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS done_frames integer NOT NULL DEFAULT 0 CHECK (done_frames >= 0);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS failed_frames integer NOT NULL DEFAULT 0 CHECK (failed_frames >= 0);

-- Large media split across workers (jobs/parts.py): a video's segments (frames by timestamp in
-- [start_seconds, end_seconds)), an image's tiles (a list of [x1, y1, x2, y2] in its pixels), and the one
-- 'finish' part of an upload that needs a last step over all of them (tracks, or merging tiles). Each part runs
-- as a task of its own under a lease fenced like a job's; the job ends when its last part does. units are frames
-- (segments) or tiles; units_expected is NULL until the part has listed them.
CREATE TABLE IF NOT EXISTS job_parts (
    id               uuid PRIMARY KEY,
    job_id           uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    upload_id        uuid        NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    kind             text        NOT NULL CHECK (kind IN ('segment', 'tiles', 'finish')),
    number           integer     NOT NULL CHECK (number >= 0),
    start_seconds    double precision,
    end_seconds      double precision,
    tiles            jsonb,
    status           text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    lease_token      uuid,
    lease_expires_at timestamptz,
    task_id          text,
    enqueued_at      timestamptz,
    units_expected   integer     CHECK (units_expected >= 0),
    units_done       integer     NOT NULL DEFAULT 0 CHECK (units_done >= 0),
    units_failed     integer     NOT NULL DEFAULT 0 CHECK (units_failed >= 0),
    detections       jsonb,
    error            text,
    finished_at      timestamptz,
    UNIQUE (upload_id, kind, number),
    CONSTRAINT job_parts_finished_check CHECK ((status IN ('done', 'failed')) = (finished_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS job_parts_job_id ON job_parts (job_id);
CREATE INDEX IF NOT EXISTS job_parts_unfinished ON job_parts (status) WHERE finished_at IS NULL;

-- What inference found in one sampled frame of a video upload, compactly: one row per frame, its boxes as
-- flat arrays (x1, y1, x2, y2 per box in boxes; one class, score and track id per box). pts is the frame's
-- timestamp in its stream's time base (unique per frame, so a segment written twice never duplicates one);
-- frame is round(time x the stream's average rate); time is in seconds from the stream's start.
CREATE TABLE IF NOT EXISTS frame_results (
    upload_id uuid             NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    pts       bigint           NOT NULL,
    frame     integer          NOT NULL CHECK (frame >= 0),
    time      double precision NOT NULL,
    boxes     real[]           NOT NULL,
    classes   smallint[]       NOT NULL,
    scores    real[]           NOT NULL,
    tracks    integer[],
    PRIMARY KEY (upload_id, pts)
);
CREATE INDEX IF NOT EXISTS frame_results_time ON frame_results (upload_id, time);
