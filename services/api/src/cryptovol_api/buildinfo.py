"""What build is running: API version and git commit, resolved once at start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptovol_api import __version__

API_VERSION = __version__


def resolve_git_sha(explicit: str = "") -> str:
    """``GIT_SHA`` when set (images), else ``git rev-parse`` next to this file,
    else ``"unknown"``."""
    if explicit.strip():
        return explicit.strip()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha or "unknown"
