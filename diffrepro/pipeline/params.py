"""Load and validate params.yaml: JSON-schema checks first, then cross-references (every name an
experiment uses must be defined). Errors name the offending key path."""
from __future__ import annotations

from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.yaml"


class ParamsError(ValueError):
    pass


def _key_path(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_params(params: dict, source: str = "params.yaml") -> dict:
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            msg = e.message
            if e.validator == "additionalProperties":
                msg = f"unknown key ({e.message})"
            lines.append(f"  {_key_path(e)}: {msg}")
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(lines))
    _check_references(params, source)
    return params


def _check_references(p: dict, source: str):
    from ..presets import MLP_PRESETS, UNET_PRESETS

    problems = []
    if p["profile"] not in p["profiles"]:
        problems.append(f"profile: {p['profile']!r} is not defined under profiles ({sorted(p['profiles'])})")
    for name, t in p["training"].items():
        if t["network"] not in UNET_PRESETS and t["network"] not in MLP_PRESETS:
            problems.append(f"training.{name}.network: unknown preset {t['network']!r} "
                            f"(choose from {sorted(UNET_PRESETS) + sorted(MLP_PRESETS)})")
        if t.get("checkpoint_every", 1) % t.get("log_every", 1):
            problems.append(f"training.{name}: checkpoint_every must be a multiple of log_every")
    for pname, prof in p["profiles"].items():
        for i, exp in enumerate(prof["experiments"]):
            where = f"profiles.{pname}.experiments[{i}]"
            if exp["dataset"] not in p["datasets"]:
                problems.append(f"{where}.dataset: {exp['dataset']!r} is not defined under datasets")
            for m in exp["methods"]:
                if m not in p["methods"]:
                    problems.append(f"{where}.methods: {m!r} is not defined under methods")
            if exp["training"] not in p["training"]:
                problems.append(f"{where}.training: {exp['training']!r} is not defined under training")
            for s in exp["sampling"]:
                if s not in p["sampling"]:
                    problems.append(f"{where}.sampling: {s!r} is not defined under sampling")
            tr = p["training"].get(exp["training"], {})
            for step in exp.get("analysis_steps", []):
                if step > tr.get("steps", 0) or step % tr.get("checkpoint_every", 500):
                    problems.append(f"{where}.analysis_steps: {step} is not a checkpoint of training "
                                    f"{exp['training']!r} (multiples of {tr.get('checkpoint_every', 500)} up to {tr.get('steps')})")
            ds = p["datasets"].get(exp["dataset"], {})
            net = p["training"].get(exp["training"], {}).get("network", "")
            if ds.get("kind") == "toy2d" and net in UNET_PRESETS:
                problems.append(f"{where}: toy2d dataset {exp['dataset']!r} needs an MLP network, "
                                f"training {exp['training']!r} uses {net!r}")
            if ds.get("kind") == "image" and net in MLP_PRESETS:
                problems.append(f"{where}: image dataset {exp['dataset']!r} needs a U-Net network, "
                                f"training {exp['training']!r} uses {net!r}")
        for dname in prof.get("fid_reference", {}):
            if dname not in p["datasets"]:
                problems.append(f"profiles.{pname}.fid_reference.{dname}: not defined under datasets")
    if problems:
        raise ParamsError(f"{source} is invalid:\n" + "\n".join("  " + s for s in problems))


def load_params(path="params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the project folder or pass --params")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    return validate_params(params, str(path))
