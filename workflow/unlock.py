"""Remove a stale Snakemake lock, safely: only when no Snakemake process is running in this folder.

    python -m workflow.unlock

A Snakemake that was killed (Ctrl-C twice, SIGKILL, a closed terminal) leaves its lock in
.snakemake/locks/, and the next run stops with a LockException. `make run` calls this first: if a lock
is there and no live Snakemake has this folder as its working directory (read from /proc on Linux), the
lock is stale and `snakemake --unlock` removes it. Where /proc cannot tell, nothing is removed.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def snakemake_running_here(folder: Path) -> bool | None:
    """True if a Snakemake process has `folder` as its working directory; None if that cannot be known."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    here = folder.resolve()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if not any(b"snakemake" in part for part in cmdline[:3]):
                continue
            if Path(os.readlink(entry / "cwd")).resolve() == here:
                return True
        except OSError:          # gone meanwhile, or another user's process
            continue
    return False


def main():
    folder = Path.cwd()
    locks = folder / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return
    running = snakemake_running_here(folder)
    if running is None:
        print("note: a Snakemake lock exists in .snakemake/locks; if no Snakemake is running here, "
              "remove it with `snakemake --unlock`", file=sys.stderr)
        return
    if running:
        print("another Snakemake is running in this folder; wait for it to finish", file=sys.stderr)
        sys.exit(1)
    print("removing the lock a killed Snakemake run left behind (snakemake --unlock)", file=sys.stderr)
    exe = Path(sys.executable).with_name("snakemake")
    subprocess.run([str(exe) if exe.exists() else "snakemake", "--unlock", "--cores", "1", "--quiet", "all"],
                   check=True)


if __name__ == "__main__":
    main()
