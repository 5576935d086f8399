"""Provenance recorded next to every result: code version, environment, device."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from . import __version__

_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """HEAD's hash (with -dirty for uncommitted changes); $DIFFREPRO_GIT_COMMIT names it for copies without .git."""
    if os.environ.get("DIFFREPRO_GIT_COMMIT"):
        return os.environ["DIFFREPRO_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: torch.device | None = None) -> dict:
    env = {"git_commit": git_commit(), "diffrepro": __version__, "torch": torch.__version__,
           "python": platform.python_version(), "host": platform.node()}
    if device is not None:
        env["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return env
