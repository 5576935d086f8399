# Shared setup: load the plan and expose per-job lookups to the rules.
import shlex
import sys
from pathlib import Path

import yaml

from diffrepro.pipeline.grid import paths, plan
from diffrepro.pipeline.params import validate_params

PARAMS = "params.yaml"
PY = sys.executable


def _only_profile_overridden():
    # Stages re-read params.yaml, so command-line overrides other than `profile` would be ignored by them.
    on_disk = yaml.safe_load(Path(PARAMS).read_text())
    changed = sorted(k for k in set(on_disk) | set(config) if k != "profile" and on_disk.get(k) != config.get(k))
    if changed:
        raise ValueError(f"only 'profile' may be overridden with --config; edit {PARAMS} for: {', '.join(changed)}")


_only_profile_overridden()
validate_params(config, PARAMS)
PLAN = plan(config, config["profile"], PARAMS)


wildcard_constraints:
    key="[^/]+",


def job_args(stage):
    return lambda w: " ".join(shlex.quote(a) for a in PLAN[stage][w.key].args)


def job_spec(stage):
    return lambda w: PLAN[stage][w.key].spec


def job_deps(stage):
    return lambda w: PLAN[stage][w.key].deps


def job_resource(stage, name, default=0):
    return lambda w: PLAN[stage][w.key].resources.get(name, default)
