"""Queue DVC experiments over variations of params.yaml, then run them with `dvc queue start`.

    python -m workflow.dvc_queue --name pmean-1.0 -S methods.edm.sigma_dist.P_mean=-1.0
    python -m workflow.dvc_queue --name small-grid -S profile=small
    dvc queue start --jobs 2        # workers run the queued experiments, each in its own copy
    dvc exp show                    # parameters and report metrics side by side

Job keys in dvc.yaml embed a hash of each job's parameters, so a plain `dvc exp run -S key=value`
would leave dvc.yaml naming the old jobs. This command applies the changes to params.yaml,
validates them, regenerates dvc.yaml for the experiment, queues the workspace snapshot with
`dvc exp run --queue`, and restores both files. Stages an experiment does not touch are restored
from DVC's run cache instead of being recomputed. Needs a git commit to base experiments on.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from diffrepro.pipeline.params import validate_params
from workflow.make_dvc import render


def apply_setting(params: dict, setting: str) -> None:
    """`a.b.c=value` (value read as YAML) sets params['a']['b']['c']; every key but the last must exist."""
    if "=" not in setting:
        raise ValueError(f"-S {setting!r}: expected key.path=value")
    path, raw = setting.split("=", 1)
    keys = path.split(".")
    node = params
    for i, k in enumerate(keys[:-1]):
        if not isinstance(node, dict) or k not in node:
            raise KeyError(f"-S {setting!r}: {'.'.join(keys[:i + 1])} is not in params.yaml")
        node = node[k]
    if not isinstance(node, dict):
        raise KeyError(f"-S {setting!r}: {'.'.join(keys[:-1])} is not a mapping")
    node[keys[-1]] = yaml.safe_load(raw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUE",
                    help="a change to params.yaml (repeatable), e.g. methods.edm.sigma_dist.P_mean=-1.0")
    ap.add_argument("--name", required=True, help="experiment name")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dvc-yaml", default="dvc.yaml")
    ap.add_argument("--dvc", default="dvc", help="the dvc executable")
    args = ap.parse_args(argv)

    params_path, dvc_path = Path(args.params), Path(args.dvc_yaml)
    original = {p: p.read_text() for p in (params_path, dvc_path)}
    params = yaml.safe_load(original[params_path])
    for s in args.set_param:
        apply_setting(params, s)
    validate_params(params, f"{params_path} with {' '.join(args.set_param) or 'no changes'}")
    try:
        params_path.write_text(yaml.safe_dump(params, sort_keys=False, width=200))
        dvc_path.write_text(render(str(params_path)))
        res = subprocess.run([args.dvc, "exp", "run", "--queue", "--name", args.name])
    finally:
        for p, text in original.items():
            p.write_text(text)
    if res.returncode:
        sys.exit(res.returncode)
    print(f"queued {args.name}; run the queue with `dvc queue start`", file=sys.stderr)


if __name__ == "__main__":
    main()
