"""Running ``python -m nlp_lstm`` as a user would: in a subprocess, or in this process
(a fraction of a second a call instead of a fresh interpreter's seconds)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, cwd: Path | None = None, stdin: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "nlp_lstm", *args],
        cwd=cwd or REPO,
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])


def run_main(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """``python -m nlp_lstm ARGS`` in this process: exit code, stdout, stderr."""
    from nlp_lstm.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_stdin = sys.argv, sys.stdin
    sys.argv = ["nlp_lstm", *args]
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv, sys.stdin = saved_argv, saved_stdin
    return code, out.getvalue(), err.getvalue()
