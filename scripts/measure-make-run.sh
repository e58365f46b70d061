#!/usr/bin/env bash
# What `make run` costs a new user: from a fresh clone of REVISION (default HEAD) with an empty pip cache, the
# size of the venv it installs, and the seconds from `make run` to the first answered request (/healthz through
# nginx) and to the first job's results. docs/operations.md (What the install costs) gives the figures.
# Run it on a quiet machine with nothing on ports 8000 and 5555: scripts/measure-make-run.sh [REVISION]
# The clone's `make run` uses the default database (DATABASE_URL), as a new user's would: the job it submits
# and the admin key it makes stay there.
set -euo pipefail

revision=${1:-HEAD}
url=http://127.0.0.1:8000
work=$(mktemp -d)
cleanup() {
  if [ -n "${run_pid:-}" ]; then
    kill -TERM -- "-$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true  # honcho's exit status after SIGTERM is no failure of the measurement
  fi
  rm -rf "$work"
}
trap cleanup EXIT
answers() { curl --silent --fail --output /dev/null "$url/healthz"; }
if answers; then
  echo "something already answers at $url: stop it first" >&2
  exit 1
fi

git clone --quiet "$(git rev-parse --show-toplevel)" "$work/clone"
git -C "$work/clone" checkout --quiet "$(git rev-parse "$revision")"
export PIP_CACHE_DIR="$work/pip-cache"
mkdir "$PIP_CACHE_DIR"

started=$(date +%s.%N)
since() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$started"; }
deadline=$((SECONDS + 1800))
setsid make -C "$work/clone" run > "$work/run.log" 2>&1 &
run_pid=$!
until answers; do
  if ! kill -0 "$run_pid" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
    tail -n 30 "$work/run.log"
    echo "make run stopped or did not answer in 30 minutes" >&2
    exit 1
  fi
  sleep 0.5
done
answered=$(since)

python=$work/clone/.venv/bin/python
"$python" -c "from PIL import Image, ImageDraw; i = Image.new('RGB', (640, 480), 'white'); \
ImageDraw.Draw(i).ellipse((200, 140, 400, 340), fill='red'); i.save('$work/circle.png')"
key=$(cat "$work/clone/var/admin_key")
job=$(curl --silent --fail -H "Authorization: Bearer $key" -F "image=@$work/circle.png" "$url/api/v1/jobs" \
  | "$python" -c "import json, sys; print(json.load(sys.stdin)['job_id'])")
deadline=$((SECONDS + 300))
status=
until [ "$status" = succeeded ]; do
  status=$(curl --silent --fail -H "Authorization: Bearer $key" "$url/api/v1/jobs/$job" \
    | "$python" -c "import json, sys; print(json.load(sys.stdin)['status'])")
  case $status in failed|cancelled) echo "the job $status" >&2; exit 1 ;; esac
  [ $SECONDS -le $deadline ] || { echo "the job did not end in 5 minutes" >&2; exit 1; }
  sleep 0.5
done
detected=$(since)
found=$(curl --silent --fail -H "Authorization: Bearer $key" "$url/api/v1/jobs/$job" \
  | "$python" -c "import json, sys; print(len(json.load(sys.stdin)['results'][0]['detections']))")

echo "revision $(git rev-parse --short "$revision")"
echo "venv $(du -sm "$work/clone/.venv" | cut -f1) MiB"
echo "first answered request $answered s"
echo "first job's results $detected s ($found detections)"
