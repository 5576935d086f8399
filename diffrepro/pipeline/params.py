"""Load and check params.yaml before anything runs: the JSON schema (shipped with the package), then what
a schema cannot say (names an experiment uses are defined, analysis steps are checkpoints, subsets fit
in their dataset). Every error names the offending key, e.g. `methods.sparse-50.mask.ratoi`."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import List

import yaml


class ParamsError(ValueError):
    """params.yaml (or a --config override) is invalid; the message names each bad key."""


def schema() -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath("params.schema.yaml").read_text())


def _key_path(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _describe(error) -> tuple[str, str]:
    """(key path, message) of a schema error, descending into anyOf/oneOf to the branch that fits best."""
    from jsonschema.exceptions import best_match

    if error.validator in ("anyOf", "oneOf") and error.context:
        # `mask: {ratoi: 0.5}` fails both `mask` and `null`: report why it is not a valid mask, i.e. the
        # error of a branch of the value's own type, not that it is not null
        branches = [c for c in error.context if not (c.validator == "type" and not c.path)]
        unknown = [c for c in branches if c.validator == "additionalProperties"]   # a typo beats "x is required"
        return _describe(best_match(unknown or branches or error.context))
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in known]
        if len(extra) == 1:
            return _key_path(path + extra), f"unknown key (known: {', '.join(known)})"
        return _key_path(path), f"unknown keys {', '.join(map(repr, extra))} (known: {', '.join(known)})"
    msg = error.message
    if error.validator == "type" and isinstance(error.instance, str):
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        if {"number", "integer"} & set(expected):
            try:
                float(error.instance)
                text = error.instance.lower()
                fix = text.replace("e", ".0e", 1) if "e" in text and "." not in text.split("e")[0] else text
                msg += (f" (YAML reads {error.instance} as text: write {fix}; a number in exponent notation "
                        f"needs a decimal point)")
            except ValueError:
                pass
    return _key_path(path), msg


def validate_params(params: dict, source: str = "params.yaml") -> dict:
    import jsonschema

    if not isinstance(params, dict):
        raise ParamsError(f"{source} is invalid: expected a mapping at the top level")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"  {key}: {msg}" for key, msg in (_describe(e) for e in errors[:10])]
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(lines))
    _check_references(params, source)
    return params


def analysis_steps(value, training: dict) -> List[int]:
    """The checkpoints an experiment's `analysis_steps` names: a list of steps (integers) or fractions of
    the run (numbers <= 1), or {every: k} (k steps, or a fraction of the run when k < 1)."""
    if not value:
        return []
    total = training["steps"]
    if isinstance(value, dict):
        every = value["every"]
        k = round(every * total) if isinstance(every, float) else every
        if k < 1:
            raise ValueError(f"every {every} of {total} steps is less than one step")
        return list(range(k, total + 1, k))
    return sorted({round(v * total) if isinstance(v, float) else v for v in value})


def _check_references(p: dict, source: str):
    from ..data.identity import available
    from ..data.prepare import heldout_apart
    from ..presets import MLP_PRESETS, UNET_PRESETS

    problems = []
    if p["profile"] not in p["profiles"]:
        problems.append(f"profile: {p['profile']!r} is not defined under profiles ({', '.join(sorted(p['profiles']))})")
    for name, t in p["training"].items():
        if t["network"] not in UNET_PRESETS and t["network"] not in MLP_PRESETS:
            problems.append(f"training.{name}.network: unknown preset {t['network']!r} "
                            f"(choose from {', '.join(sorted(UNET_PRESETS) + sorted(MLP_PRESETS))})")
        if t.get("checkpoint_every", 1) % t.get("log_every", 1):
            problems.append(f"training.{name}.checkpoint_every: must be a multiple of log_every")
    for pname, prof in p["profiles"].items():
        for i, exp in enumerate(prof["experiments"]):
            where = f"profiles.{pname}.experiments[{i}]"
            ds = p["datasets"].get(exp["dataset"])
            if ds is None:
                problems.append(f"{where}.dataset: {exp['dataset']!r} is not defined under datasets")
            for m in exp["methods"]:
                if m not in p["methods"]:
                    problems.append(f"{where}.methods: {m!r} is not defined under methods")
            tr = p["training"].get(exp["training"])
            if tr is None:
                problems.append(f"{where}.training: {exp['training']!r} is not defined under training")
            for s in exp["sampling"]:
                if s not in p["sampling"]:
                    problems.append(f"{where}.sampling: {s!r} is not defined under sampling")
            if "reference" in exp and exp["reference"] not in exp["sampling"]:
                problems.append(f"{where}.reference: {exp['reference']!r} is not one of the experiment's sampling "
                                f"entries ({', '.join(exp['sampling'])}): the reference must be sampled too")
            if tr is not None:
                every = tr.get("checkpoint_every", 500)
                try:
                    steps = analysis_steps(exp.get("analysis_steps"), tr)
                except ValueError as e:
                    problems.append(f"{where}.analysis_steps: {e}")
                    steps = []
                for step in steps:
                    if step > tr["steps"] or step % every:
                        problems.append(f"{where}.analysis_steps: step {step} is not a checkpoint of training "
                                        f"{exp['training']!r} (multiples of {every} up to {tr['steps']})")
            if ds is not None and tr is not None:
                net = tr["network"]
                if ds["kind"] == "toy2d" and net in UNET_PRESETS:
                    problems.append(f"{where}: toy2d dataset {exp['dataset']!r} needs an MLP network, "
                                    f"training {exp['training']!r} uses {net!r}")
                if ds["kind"] == "image" and net in MLP_PRESETS:
                    problems.append(f"{where}: image dataset {exp['dataset']!r} needs a U-Net network, "
                                    f"training {exp['training']!r} uses {net!r}")
            if ds is not None:
                limit = available(ds)
                for j, size in enumerate(exp["sizes"]):
                    if limit is not None and size > limit:
                        problems.append(f"{where}.sizes[{j}]: {size} training examples, but dataset "
                                        f"{exp['dataset']!r} has {limit} for training subsets")
        for dname, count in prof.get("fid_reference", {}).items():
            if dname not in p["datasets"]:
                problems.append(f"profiles.{pname}.fid_reference.{dname}: not defined under datasets")
            elif count is not None and (limit := available(p["datasets"][dname], reference=True)) is not None \
                    and count > limit:
                problems.append(f"profiles.{pname}.fid_reference.{dname}: {count} reference images, but the "
                                f"training split has {limit}")
        for dname in prof.get("fid_heldout", {}):
            ds = p["datasets"].get(dname)
            if ds is None:
                problems.append(f"profiles.{pname}.fid_heldout.{dname}: not defined under datasets")
            elif ds["kind"] != "image" or not heldout_apart(ds):
                problems.append(f"profiles.{pname}.fid_heldout.{dname}: FID against the held-out split needs "
                                f"an image dataset whose held-out images lie apart from its training pool "
                                f"(datasets.{dname}.heldout_split: test, or heldout_source)")
    if problems:
        raise ParamsError(f"{source} is invalid:\n" + "\n".join("  " + s for s in problems))


def _typed(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def typed_overrides(config, base):
    """Snakemake reads nested --config values as text (`--config 'evaluation={fid: {batch_size: 32}}'` gives
    '32'): read numbers, booleans and null back in every value that differs from params.yaml (`base`)."""
    if isinstance(config, dict):
        return {k: typed_overrides(v, base.get(k) if isinstance(base, dict) else None) for k, v in config.items()}
    if isinstance(config, list) and config != base:
        return [typed_overrides(v, None) for v in config]
    if isinstance(config, str) and config != base:
        return _typed(config)
    return config


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the project folder or pass --params")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc


def load_params(path="params.yaml") -> dict:
    return validate_params(read_yaml(path), str(path))
