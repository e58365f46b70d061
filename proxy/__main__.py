"""``python -m proxy [--dir DIR]``: write nginx.conf from the settings into DIR (var/nginx) and run nginx there."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from config import Settings
from config.paths import VAR_DIR
from proxy import prepare


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m proxy", description=__doc__)
    parser.add_argument("--dir", type=Path, default=VAR_DIR / "nginx", help="for nginx.conf, its pid and temp files")
    args = parser.parse_args()
    argv = prepare(Settings.from_env().api, args.dir.resolve())
    print(f"proxy: nginx on {Settings.from_env().api.proxy_bind} in front of gunicorn", flush=True)
    os.execv(argv[0], argv)


main()
