"""Shared CLI plumbing for the stages: argument helpers and clean error reporting."""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

log = logging.getLogger("diffrepro")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return p


def add_params(p: argparse.ArgumentParser):
    p.add_argument("--params", default="params.yaml", help="the experiment grid (params.yaml)")


def add_device(p: argparse.ArgumentParser):
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to compute")


def add_checkpoint_job(p: argparse.ArgumentParser):
    """Arguments of the stages that analyse a trained run: its job key, model file and dataset."""
    p.add_argument("--job", required=True, help="job key (from the workflow plan)")
    p.add_argument("--model", required=True, help="the run's model.pt (its checkpoints sit beside it)")
    p.add_argument("--data", required=True, help="the run's prepared dataset folder")


def snapshot_path(model: str, step: int) -> Path:
    """The EMA snapshot a run saved at `step`; a clear error if that step was never saved."""
    from diffrepro.training import snapshot_file

    snap = snapshot_file(Path(model).parent / "ckpt", step)
    if not snap.exists():
        raise FileNotFoundError(f"checkpoint {snap} not found: analysis steps must be multiples of the run's "
                                f"checkpoint_every")
    return snap


def load_checkpoint_job(args, stage: str):
    """(spec, device, denoiser with the analysed checkpoint's EMA weights, model record) of a
    per-checkpoint analysis job (add_checkpoint_job's arguments)."""
    from diffrepro.device import pick_device
    from diffrepro.models import load_model
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params

    spec = find_job(load_params(args.params), stage, args.job, args.params).spec
    device = pick_device(args.device)
    D, rec = load_model(args.model, device, snapshot=snapshot_path(args.model, spec["step"]))
    return spec, device, D, rec


def main_guard(main):
    """Run a stage's main(); expected failures print one clear line and exit 1 (no traceback)."""
    from diffrepro.pipeline.params import ParamsError

    expected = [ParamsError, KeyError, FileNotFoundError]
    for mod, name in (("diffrepro.data", "DatasetError"), ("diffrepro.training", "TrainingDiverged"),
                      ("diffrepro.metrics.fid", "InceptionWeightsError")):
        try:
            expected.append(getattr(__import__(mod, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        main()
    except tuple(expected) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"error: {msg}", file=sys.stderr)
        if "DIFFREPRO_DEBUG" in __import__("os").environ:
            traceback.print_exc()
        sys.exit(1)
