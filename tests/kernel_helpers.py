"""Run a kernel check script in a process of its own: with TRITON_INTERPRET=1 (Triton's interpreter on the
CPU) unless --cuda is among its arguments, and read the JSON it prints last."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_check(script: str, *args: str) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TRITON_INTERPRET": "0" if "--cuda" in args else "1"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / script), *args], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
