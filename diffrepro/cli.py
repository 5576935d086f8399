"""What every stage's command line shares: reading its spec, argument helpers, and one-line errors for the
mistakes a user can fix (a bug keeps its traceback).

A spec is a JSON file holding every parameter a stage uses (the planner writes one per job under
results/specs/; you may write your own). Paths never go in a spec: they are the stage's arguments.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("diffrepro")


class UserError(Exception):
    """A failure the user fixes from its message alone: printed as one line, without a traceback."""


class SpecError(UserError, ValueError):
    """A spec file is missing, is not JSON, or lacks a key the stage needs."""


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="the job's spec: a JSON file of every parameter this stage uses")
    return p


def add_device(p: argparse.ArgumentParser):
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to compute (auto: the GPU when there is one)")


def add_location(p: argparse.ArgumentParser, source_help: str):
    """--source, --download and --url: where a dataset's raw files lie or come from (never part of a spec: the
    same files elsewhere are the same data)."""
    p.add_argument("--source", default="auto", help=source_help)
    p.add_argument("--download", choices=["yes", "no"], default="no", help="download (verified) when not found")
    p.add_argument("--url", default=None, help="where to download from (a known dataset's mirror; default: official)")


def location(args: argparse.Namespace) -> dict:
    """The dataset-entry keys that add_location's arguments stand for."""
    return {"source": None if args.source == "auto" else args.source, "allow_download": args.download == "yes",
            "url": args.url}


def load_spec(path, stage: str, required=()) -> dict:
    """The spec at `path`, checked to be meant for `stage` and to hold the `required` keys."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec {path} not found") from None
    except ValueError as exc:
        raise SpecError(f"spec {path} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"spec {path} must hold a JSON object")
    if spec.get("stage", stage) != stage:
        raise SpecError(f"spec {path} is for stage {spec['stage']!r}, not {stage!r}")
    missing = [k for k in required if k not in spec]
    if missing:
        raise SpecError(f"spec {path} lacks {', '.join(missing)} (stage {stage} needs them)")
    return spec


def params_hash(spec: dict, n: int = 8) -> str:
    """A hash of everything a job computes from (its spec without the bookkeeping keys)."""
    body = {k: v for k, v in spec.items() if k not in ("format", "stage", "key")}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# Failures the user can fix from the message alone: bad params or specs, missing or corrupt data, a
# diverged run, missing FID weights. Named rather than imported, so that a stage's code closure (what
# reruns it when edited) does not pull in every module that defines one.
USER_ERRORS = {"diffrepro.cli.UserError", "diffrepro.pipeline.params.ParamsError", "diffrepro.data.sources.DatasetError",
               "diffrepro.training.TrainingDiverged", "diffrepro.metrics.fid.InceptionWeightsError",
               "builtins.FileNotFoundError"}


def is_user_error(exc: BaseException) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in USER_ERRORS for c in type(exc).__mro__)


def main_guard(main):
    """Run a stage's main(): a user error prints `error: <message>` and exits 1; anything else (a bug)
    keeps its traceback. DIFFREPRO_DEBUG=1 shows the traceback of user errors too."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        main()
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get("DIFFREPRO_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
