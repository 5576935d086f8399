"""Shared helpers of the benchmark scripts: device description, timing, JSON results."""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from diffrepro.provenance import git_commit


def device_info() -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpus": __import__("os").cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1), cuda=torch.version.cuda)
    return info


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timer:
    def __enter__(self):
        sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync()
        self.seconds = time.perf_counter() - self.t0


def peak_memory_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if torch.cuda.is_available() else float("nan")


def write_result(path, name: str, result: dict):
    """Merge `result` under `name` into the JSON file at `path`, with provenance."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {"command": " ".join([Path(sys.executable).name] + sys.argv), "commit": git_commit(),
                  "device": device_info(), **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(json.dumps({name: result}, indent=2))
