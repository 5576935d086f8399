"""Expand a profile of params.yaml into the pipeline's jobs, and write each job's spec.

The one place that decides what runs. The Snakefile and the dvc.yaml generator read `plan()`; the
stages never do. Every job is `python -m stages.<stage>` with explicit input and output paths and a
spec: a small JSON file (results/specs/<stage>/<key>.json) holding every parameter the stage uses,
resolved (run metadata included). A job's key is a readable name (`fmnist-n300_edm_tiny-cpu_s0`);
its paths are named after it, so a parameter change rewrites that job's spec, not its paths:

    prepare    -> results/data/<dataset>-n<N>/                  per dataset subset
    fidref     -> results/fidref/<dataset>-ref<count|all>.npz    per image dataset
                  results/fidref/<dataset>-heldout<count|all>.npz held-out split (profile's fid_heldout)
    targetvar  -> results/analysis/targetvar/<subset>.*          per image subset (STF target variance)
    toystudy   -> results/analysis/toystudy/<profile>.*          2D flow fields and memorization sweeps
    train      -> results/runs/<run>/ model.pt, train_metrics.parquet, snapshots/
    sample     -> results/evals/<run>__<sampling>/ samples.npy, grid.png, sample_info.json
    fid, memorize -> results/evals/<run>__<sampling>/ fid.json, memorize.*
    rmse       -> results/evals/<run>__<sampling>/rmse.json      distance to the experiment's reference sampler
    gap, memtrace -> results/analysis/{gap,memtrace}/<run>__step<k>.*   per analysed checkpoint
    trajectory -> results/analysis/trajectory/<run>.*
    aggregate  -> reports/<profile>/metrics.parquet, curves/
    report     -> reports/<profile>/report.md, report.html, summary.json, figures/

A spec file is rewritten only when its content changes, so its modification time says when the job's
parameters last changed: Snakemake (input newer than output) and DVC (content hash) both rerun
exactly the jobs whose spec or code changed.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .params import analysis_steps

SPEC_FORMAT = 1
STAGES = ["prepare", "fidref", "targetvar", "toystudy", "train", "sample", "fid", "rmse", "memorize", "gap",
          "memtrace", "trajectory", "aggregate", "report"]
ANALYSIS_DEFAULTS = {"sigmas": 12, "n_per_set": 500, "memtrace_samples": 500, "trajectory_samples": 128, "seed": 0}
CHECKPOINT_SAMPLER = {"sampler": "heun", "num_steps": 18}   # samples of analysed checkpoints (memtrace, trajectory)
# STF target variance (claim T1): noise levels and reference-batch sizes measured per image subset (a
# profile's `targetvar` overrides them)
TARGETVAR = {"sigmas": [0.05, 0.1, 0.2, 0.35, 0.6, 1.0, 1.7, 3.0, 5.0, 9.0, 16.0, 40.0, 80.0],
             "ref_batches": [64, 256, 1024], "n_samples": 256, "seed": 0}
TOY_STUDY_DEFAULTS = {"eps": 0.02, "num_samples": 1000}
IDENTITY_FREE = ("source", "heldout_source", "allow_download", "url")    # where a dataset's files lie, not what they are
# what FID reference statistics depend on: the training pool's content and how it is brought to the
# models' resolution and channels (not the subset size or the held-out split)
REFERENCE_KEYS = ("entry", "kind", "name", "format", "resolution", "channels", "resize", "seed", "md5", "fingerprint")


def spec_hash(obj, n: int = 8) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# ---------------------------------------------------------------------------------------- paths
class paths:
    """Output paths of every stage (Snakemake's rules use them with '{key}' as the wildcard)."""
    dataset = staticmethod(lambda key: f"results/data/{key}")
    fidref = staticmethod(lambda key: f"results/fidref/{key}.npz")
    run_dir = staticmethod(lambda key: f"results/runs/{key}")
    model = staticmethod(lambda key: f"results/runs/{key}/model.pt")
    train_metrics = staticmethod(lambda key: f"results/runs/{key}/train_metrics.parquet")
    snapshots = staticmethod(lambda key: f"results/runs/{key}/snapshots")
    snapshot = staticmethod(lambda key, step: f"results/runs/{key}/snapshots/step-{step:08d}.pt")
    eval_dir = staticmethod(lambda key: f"results/evals/{key}")
    samples = staticmethod(lambda key: f"results/evals/{key}/samples.npy")
    sample_grid = staticmethod(lambda key: f"results/evals/{key}/grid.png")
    sample_info = staticmethod(lambda key: f"results/evals/{key}/sample_info.json")
    fid = staticmethod(lambda key: f"results/evals/{key}/fid.json")
    rmse = staticmethod(lambda key: f"results/evals/{key}/rmse.json")
    memorize = staticmethod(lambda key: f"results/evals/{key}/memorize.json")
    memorize_table = staticmethod(lambda key: f"results/evals/{key}/memorize.parquet")
    memorize_fig = staticmethod(lambda key: f"results/evals/{key}/memorize.png")
    targetvar = staticmethod(lambda key: f"results/analysis/targetvar/{key}.parquet")
    targetvar_fig = staticmethod(lambda key: f"results/analysis/targetvar/{key}.png")
    gap = staticmethod(lambda key: f"results/analysis/gap/{key}.parquet")
    memtrace = staticmethod(lambda key: f"results/analysis/memtrace/{key}.json")
    trajectory = staticmethod(lambda key: f"results/analysis/trajectory/{key}.parquet")
    trajectory_fig = staticmethod(lambda key: f"results/analysis/trajectory/{key}.png")
    toystudy = staticmethod(lambda key: f"results/analysis/toystudy/{key}.parquet")
    toystudy_flow = staticmethod(lambda key: f"results/analysis/toystudy/{key}-flow.png")
    toystudy_sweep = staticmethod(lambda key: f"results/analysis/toystudy/{key}-sweep.png")
    report_dir = staticmethod(lambda profile: f"reports/{profile}")
    metrics = staticmethod(lambda profile: f"reports/{profile}/metrics.parquet")
    curves = staticmethod(lambda profile: f"reports/{profile}/curves")
    report_md = staticmethod(lambda profile: f"reports/{profile}/report.md")
    report_html = staticmethod(lambda profile: f"reports/{profile}/report.html")
    report_summary = staticmethod(lambda profile: f"reports/{profile}/summary.json")
    report_figures = staticmethod(lambda profile: f"reports/{profile}/figures")
    spec = staticmethod(lambda stage, key: f"results/specs/{stage}/{key}.json")
    log = staticmethod(lambda stage, key: f"results/logs/{stage}/{key}.log")


# What each job writes, by stage, as a function of the job's key (Snakemake's rules use them with "{key}").
OUTPUTS = {
    "prepare": lambda k: {"data": paths.dataset(k)},
    "fidref": lambda k: {"stats": paths.fidref(k)},
    "targetvar": lambda k: {"table": paths.targetvar(k), "figure": paths.targetvar_fig(k)},
    "toystudy": lambda k: {"table": paths.toystudy(k), "flow": paths.toystudy_flow(k), "sweep": paths.toystudy_sweep(k)},
    "train": lambda k: {"model": paths.model(k), "metrics": paths.train_metrics(k), "snapshots": paths.snapshots(k)},
    "sample": lambda k: {"samples": paths.samples(k), "grid": paths.sample_grid(k), "info": paths.sample_info(k)},
    "fid": lambda k: {"fid": paths.fid(k)},
    "rmse": lambda k: {"summary": paths.rmse(k)},
    "memorize": lambda k: {"summary": paths.memorize(k), "table": paths.memorize_table(k), "figure": paths.memorize_fig(k)},
    "gap": lambda k: {"table": paths.gap(k)},
    "memtrace": lambda k: {"summary": paths.memtrace(k)},
    "trajectory": lambda k: {"table": paths.trajectory(k), "figure": paths.trajectory_fig(k)},
    "aggregate": lambda k: {"metrics": paths.metrics(k), "loss_curves": f"{paths.curves(k)}/loss",
                            "fid_curves": f"{paths.curves(k)}/fid"},
    "report": lambda k: {"md": paths.report_md(k), "html": paths.report_html(k), "summary": paths.report_summary(k),
                         "figures": paths.report_figures(k)},
}


# Each stage's command line after `python -m stages.<stage>`: (flag, name of the job's value). Values are
# paths (the spec, inputs, outputs) and where to run (device) or where raw data lies (source, download):
# never a parameter of the computation, which is in the spec.
CLI = {
    "prepare": [("spec", "spec"), ("out", "out"), ("source", "source"), ("heldout-source", "heldout_source"),
                ("download", "download"), ("url", "url")],
    "fidref": [("spec", "spec"), ("out", "out"), ("source", "source"), ("download", "download"), ("url", "url"),
               ("device", "device")],
    "targetvar": [("spec", "spec"), ("data", "data"), ("out", "out"), ("figure", "figure")],
    "toystudy": [("spec", "spec"), ("out", "out"), ("flow", "flow"), ("sweep", "sweep")],
    "train": [("spec", "spec"), ("data", "data"), ("out", "out"), ("device", "device")],
    "sample": [("spec", "spec"), ("model", "model"), ("out", "out"), ("device", "device")],
    "fid": [("spec", "spec"), ("samples", "samples"), ("ref", "ref"), ("heldout-ref", "heldout_ref"), ("out", "out"),
            ("device", "device")],
    "rmse": [("spec", "spec"), ("samples", "samples"), ("reference", "reference"), ("out", "out")],
    "memorize": [("spec", "spec"), ("samples", "samples"), ("data", "data"), ("out", "out"), ("table", "table"),
                 ("figure", "figure"), ("device", "device")],
    "gap": [("spec", "spec"), ("model", "model"), ("data", "data"), ("out", "out"), ("device", "device")],
    "memtrace": [("spec", "spec"), ("model", "model"), ("data", "data"), ("ref", "ref"), ("out", "out"),
                 ("device", "device")],
    "trajectory": [("spec", "spec"), ("model", "model"), ("data", "data"), ("out", "out"), ("figure", "figure"),
                   ("device", "device")],
    "aggregate": [("spec", "spec"), ("out", "out"), ("curves", "curves")],
    "report": [("spec", "spec"), ("metrics", "metrics"), ("out", "out")],
}


@dataclass
class Job:
    stage: str
    key: str
    spec: dict                          # every parameter the stage uses, resolved
    inputs: Dict[str, str]              # named paths the job reads (besides its spec and code)
    values: Dict[str, str]              # what its command line names (see CLI): inputs, output folders, options
    resources: dict = field(default_factory=dict)
    processes: int = 1                  # >1: that many data-parallel processes under torchrun
    variant: str = ""                   # jobs of one stage whose inputs differ in kind (dvc.yaml groups them apart)

    @property
    def outputs(self) -> Dict[str, str]:
        """Named paths the job writes."""
        return OUTPUTS[self.stage](self.key)

    @property
    def spec_path(self) -> str:
        return paths.spec(self.stage, self.key)

    @property
    def log(self) -> str:
        return paths.log(self.stage, self.key)

    @property
    def module(self) -> str:
        """What follows `python -m`: the stage, or torchrun launching it."""
        if self.processes == 1:
            return f"stages.{self.stage}"
        return f"torch.distributed.run --standalone --nproc_per_node {self.processes} -m stages.{self.stage}"

    @property
    def argv(self) -> List[str]:
        vals = {"spec": self.spec_path, **self.values}
        out = []
        for flag, name in CLI[self.stage]:
            if vals.get(name) is not None:
                out += [f"--{flag}", str(vals[name])]
        return out

    @property
    def command(self) -> str:
        import shlex
        return f"python -m {self.module} " + " ".join(shlex.quote(a) for a in self.argv)


@dataclass
class Plan:
    profile: str
    jobs: Dict[str, Dict[str, Job]]
    device: str = "auto"

    def __getitem__(self, stage) -> Dict[str, Job]:
        return self.jobs[stage]

    def all_jobs(self) -> List[Job]:
        return [j for s in STAGES for j in self.jobs[s].values()]

    def targets(self) -> List[str]:
        return list(self.jobs["report"][self.profile].outputs.values())

    def report_file(self) -> str:
        return paths.report_md(self.profile)

    def directory_outputs(self) -> List[str]:
        return [p for j in self.all_jobs() for p in j.outputs.values() if is_directory(p)]


def is_directory(path: str) -> bool:
    """Outputs that are folders: a prepared dataset, a run's snapshots, a report's figures and curves."""
    return (path.startswith("results/data/") or path.endswith("/snapshots") or path.endswith("/figures")
            or "/curves/" in path)


class PlanError(ValueError):
    """Two experiments plan the same job with different parameters."""


# ---------------------------------------------------------------------------------------- plan
def dataset_identity(params: dict, name: str, size: Optional[int] = None) -> dict:
    """A dataset entry as jobs see it: its parameters and content fingerprint, not where its files lie."""
    from ..data.identity import fingerprint

    entry = params["datasets"][name]
    ident = {"entry": name, **{k: v for k, v in entry.items() if k not in IDENTITY_FREE}}
    fp = fingerprint(entry)
    if fp is not None:
        ident["fingerprint"] = fp
    if size is not None:
        ident["n_train"] = size
    return ident


def _location(entry: dict) -> dict:
    return {"source": entry.get("source") or "auto", "heldout_source": entry.get("heldout_source"),
            "download": "yes" if entry.get("allow_download") else "no", "url": entry.get("url")}


class _Builder:
    def __init__(self, params: dict, profile: str):
        self.params, self.profile = params, profile
        self.prof = params["profiles"][profile]
        self.device = self.prof.get("device", "auto")
        self.gpus = self.prof.get("gpus_per_job", 0)
        self.jobs: Dict[str, Dict[str, Job]] = {s: {} for s in STAGES}
        ev = params["evaluation"]
        fid = {**ev["fid"], **self.prof.get("fid", {})}      # a profile's own FID settings win
        self.fid_cfg = {"mode": fid.get("mode", "clean"), "batch_size": fid.get("batch_size", 64)}
        self.threshold = ev["memorization"].get("threshold", 1 / 3)
        self.analysis = {**ANALYSIS_DEFAULTS, **self.prof.get("analysis", {})}

    def add(self, job: Job) -> Job:
        job.spec = {"format": SPEC_FORMAT, "stage": job.stage, "key": job.key, **job.spec}
        have = self.jobs[job.stage].get(job.key)
        if have is not None:
            if have.spec != job.spec:
                raise PlanError(f"profile {self.profile!r} plans {job.stage} job {job.key!r} twice with different "
                                f"parameters; give the experiments different names, sizes or seeds")
            return have
        self.jobs[job.stage][job.key] = job
        return job

    def res(self, mem_mb, runtime, threads=2, gpu=True):
        # CPU profiles run one thread per job and several jobs side by side: on a small, shared machine two
        # OpenMP threads per job spin-wait against each other (a tiny U-Net ran 30 times slower under load)
        threads = threads if self.gpus else 1
        return {"gpu": self.gpus if gpu else 0, "mem_mb": mem_mb, "runtime": runtime, "threads": threads}

    # ------------------------------------------------------------------ per dataset
    def fidref(self, dname: str, heldout: bool = False) -> Optional[str]:
        """The FID reference statistics of an image dataset: its training pool, or with `heldout` its
        held-out split when the profile's fid_heldout names the dataset (else None)."""
        entry = self.params["datasets"][dname]
        table = "fid_heldout" if heldout else "fid_reference"
        if entry["kind"] != "image" or (heldout and dname not in self.prof.get(table, {})):
            return None
        count = self.prof.get(table, {}).get(dname)
        key = f"{dname}-{'heldout' if heldout else 'ref'}{count or 'all'}"
        ident = dataset_identity(self.params, dname)
        ident = {k: ident[k] for k in REFERENCE_KEYS + (("heldout_split",) if heldout else ()) if k in ident}
        spec = {"dataset": ident, "count": count, "fid": self.fid_cfg, **({"split": "heldout"} if heldout else {})}
        self.add(Job("fidref", key, spec, inputs={},
                     values={"out": paths.fidref(key), "device": self.device, **_location(entry)},
                     resources=self.res(8000, 60)))
        return key

    def prepare(self, dname: str, size: int) -> str:
        entry = self.params["datasets"][dname]
        key = f"{dname}-n{size}"
        self.add(Job("prepare", key, {"dataset": dataset_identity(self.params, dname, size)}, inputs={},
                     values={"out": paths.dataset(key), **_location(entry)},
                     resources=self.res(4000, 30, 1, gpu=False)))
        tv = {**TARGETVAR, **self.prof.get("targetvar", {})}
        refs = [r for r in tv["ref_batches"] if r < size]
        if entry["kind"] == "image" and refs:
            self.add(Job("targetvar", key, {"dataset": key, **tv, "ref_batches": refs},
                         inputs={"data": paths.dataset(key)},
                         values={"data": paths.dataset(key), "out": paths.targetvar(key),
                                 "figure": paths.targetvar_fig(key)},
                         resources=self.res(8000, 60, 2, gpu=False)))
        return key

    # ------------------------------------------------------------------ per run
    def run(self, exp: dict, dname: str, dkey: str, size: int, method: str, seed: int, fidref: Optional[str],
            heldout_ref: Optional[str] = None):
        params, tname = self.params, exp["training"]
        kind = params["datasets"][dname]["kind"]
        threads = 2 if kind == "image" else 1   # small MLPs on 2D data gain nothing from more threads
        procs = self.prof.get("train_processes", 1)
        rkey = f"{dkey}_{method}_{tname}_s{seed}"
        data = paths.dataset(dkey)
        spec = {"run": rkey, "dataset": dataset_identity(params, dname, size),
                "method": {"name": method, **params["methods"][method]},
                "training": {"name": tname, **params["training"][tname]}, "seed": seed}
        self.add(Job("train", rkey, spec, inputs={"data": data},
                     values={"data": data, "out": paths.run_dir(rkey), "device": self.device},
                     resources={**self.res(16000 * procs, 24 * 60, threads), "gpu": self.gpus * procs,
                                "threads": self.res(0, 0, threads)["threads"] * procs},
                     processes=procs))
        a = self.analysis
        steps = analysis_steps(exp.get("analysis_steps"), params["training"][tname])
        for step in steps:
            akey = f"{rkey}__step{step}"
            snap = paths.snapshot(rkey, step)
            self.add(Job("gap", akey, {"run": rkey, "step": step, "sigmas": a["sigmas"], "n_per_set": a["n_per_set"],
                                       "seed": a["seed"]},
                         inputs={"model": snap, "data": data}, values={"model": snap, "data": data, "out": paths.gap(akey), "device": self.device},
                         resources=self.res(8000, 60, threads)))
            ref = paths.fidref(fidref) if fidref else None
            n_ckpt = exp.get("analysis_samples", a["memtrace_samples"])
            self.add(Job("memtrace", akey,
                         {"run": rkey, "step": step, "num_samples": n_ckpt, "sampling": CHECKPOINT_SAMPLER,
                          "batch_size": min(n_ckpt, 500), "threshold": self.threshold,
                          "fid": self.fid_cfg if ref else None},
                         inputs={"model": snap, "data": data, **({"ref": ref} if ref else {})},
                         values={"model": snap, "data": data, "ref": ref, "out": paths.memtrace(akey),
                                 "device": self.device},
                         resources=self.res(8000, 60, threads), variant="" if ref else "nofid"))
        if steps:
            self.add(Job("trajectory", rkey, {"run": rkey, "num_samples": a["trajectory_samples"],
                                              "sampling": CHECKPOINT_SAMPLER},
                         inputs={"model": paths.model(rkey), "data": data},
                         values={"model": paths.model(rkey), "data": data, "out": paths.trajectory(rkey),
                                 "figure": paths.trajectory_fig(rkey), "device": self.device},
                         resources=self.res(8000, 60, threads)))
        ev = params["evaluation"]
        for sname in exp["sampling"]:
            ekey = f"{rkey}__{sname}"
            n = exp["num_samples"]
            self.add(Job("sample", ekey, {"eval": ekey, "run": rkey, "sampling": {"name": sname, **params["sampling"][sname]},
                                          "num_samples": n, "batch_size": min(ev.get("sample_batch_size", 256), n),
                                          "compile": ev.get("sample_compile", False)},
                         inputs={"model": paths.model(rkey)},
                         values={"model": paths.model(rkey), "out": paths.eval_dir(ekey), "device": self.device},
                         resources=self.res(16000, 6 * 60, threads)))
            if fidref:
                held = {"heldout_ref": paths.fidref(heldout_ref)} if heldout_ref else {}
                self.add(Job("fid", ekey, {"eval": ekey, "run": rkey, **self.fid_cfg,
                                           **({"heldout": True} if heldout_ref else {})},
                             inputs={"samples": paths.samples(ekey), "ref": paths.fidref(fidref), **held},
                             values={"samples": paths.samples(ekey), "ref": paths.fidref(fidref), **held,
                                     "out": paths.fid(ekey), "device": self.device},
                             resources=self.res(8000, 60), variant="heldout" if heldout_ref else ""))
            reference = exp.get("reference")
            if reference and sname != reference:      # E1: distance to the reference sampler, same latents
                rref = f"{rkey}__{reference}"
                self.add(Job("rmse", ekey, {"eval": ekey, "run": rkey, "reference": reference},
                             inputs={"samples": paths.samples(ekey), "reference": paths.samples(rref)},
                             values={"samples": paths.samples(ekey), "reference": paths.samples(rref),
                                     "out": paths.rmse(ekey)},
                             resources=self.res(4000, 30, 1, gpu=False)))
            self.add(Job("memorize", ekey, {"eval": ekey, "run": rkey, "threshold": self.threshold},
                         inputs={"samples": paths.samples(ekey), "data": data},
                         values={"samples": paths.samples(ekey), "data": data, "out": paths.memorize(ekey),
                                 "table": paths.memorize_table(ekey), "figure": paths.memorize_fig(ekey),
                                 "device": self.device},
                         resources=self.res(16000, 60, 1)))

    # ------------------------------------------------------------------ per profile
    def toystudy(self):
        if "toy_study" not in self.prof:
            return
        p = self.profile
        self.add(Job("toystudy", p, {**TOY_STUDY_DEFAULTS, **self.prof["toy_study"]}, inputs={},
                     values={"out": paths.toystudy(p), "flow": paths.toystudy_flow(p), "sweep": paths.toystudy_sweep(p)},
                     resources=self.res(4000, 60, 1, gpu=False)))

    def aggregate_and_report(self):
        p, J = self.profile, self.jobs
        manifest = {
            "profile": p,
            "runs": {k: {"spec": j.spec, "metrics": j.outputs["metrics"]} for k, j in J["train"].items()},
            "evals": {k: {"run": j.spec["run"], "sampling": j.spec["sampling"], "num_samples": j.spec["num_samples"],
                          "info": paths.sample_info(k), "fid": paths.fid(k) if k in J["fid"] else None,
                          "rmse": paths.rmse(k) if k in J["rmse"] else None,
                          "memorize": paths.memorize(k)} for k, j in J["sample"].items()},
            "analyses": ([{"kind": "targetvar", "key": k, "dataset": J["prepare"][k].spec["dataset"],
                           "path": j.outputs["table"]} for k, j in J["targetvar"].items()]
                         + [{"kind": s, "key": k, "run": j.spec["run"], "path": next(iter(j.outputs.values()))}
                            for s in ("gap", "memtrace", "trajectory") for k, j in J[s].items()]
                         + [{"kind": "toystudy", "key": k, "toy": j.spec["dataset"], "path": j.outputs["table"]}
                            for k, j in J["toystudy"].items()]),
        }
        read = ([r["metrics"] for r in manifest["runs"].values()]
                + [e[n] for e in manifest["evals"].values() for n in ("info", "fid", "rmse", "memorize") if e[n]]
                + [a["path"] for a in manifest["analyses"]])
        inputs = {f"result{i}": path for i, path in enumerate(read)}
        self.add(Job("aggregate", p, manifest, inputs=inputs,
                     values={"out": paths.metrics(p), "curves": paths.curves(p)},
                     resources={"mem_mb": 4000, "runtime": 30, "threads": 1, "gpu": 0}))
        images = (
            [{"kind": "analysis", "path": j.outputs["figure"], "caption": f"{k}: target variance, baseline vs STF"}
             for k, j in J["targetvar"].items()]
            + [{"kind": "analysis", "path": j.outputs["figure"], "caption": f"{k}: trajectory analysis"}
               for k, j in J["trajectory"].items()]
            + [{"kind": "analysis", "path": j.outputs[o], "caption": f"{k}: {what}"} for k, j in J["toystudy"].items()
               for o, what in (("flow", "2D flow fields: ideal denoiser vs trained MLPs"),
                               ("sweep", "2D toy: samples near training points vs width, N, steps"))]
            + [{"kind": "samples", "path": j.outputs["grid"], "caption": f"{k}: samples"} for k, j in J["sample"].items()]
            + [{"kind": "memorized", "path": j.outputs["figure"],
                "caption": f"{k}: most memorized samples (left) and nearest training images (right)"}
               for k, j in J["memorize"].items()])
        self.add(Job("report", p, {"profile": p, "images": images},
                     inputs={"metrics": paths.metrics(p), **{f"image{i}": im["path"] for i, im in enumerate(images)}},
                     values={"metrics": paths.metrics(p), "out": paths.report_dir(p)},
                     resources={"mem_mb": 4000, "runtime": 30, "threads": 1, "gpu": 0}))


def plan(params: dict, profile: Optional[str] = None) -> Plan:
    """The jobs of `profile` (default: params['profile']) of validated params."""
    params = copy.deepcopy(params)
    profile = profile or params["profile"]
    if profile not in params["profiles"]:
        from .params import ParamsError
        raise ParamsError(f"profile {profile!r} is not defined under profiles (have: {', '.join(sorted(params['profiles']))})")
    b = _Builder(params, profile)
    b.toystudy()
    fidrefs = {}
    for exp in b.prof["experiments"]:
        dname = exp["dataset"]
        if dname not in fidrefs:
            fidrefs[dname] = (b.fidref(dname), b.fidref(dname, heldout=True))
        for size in exp["sizes"]:
            dkey = b.prepare(dname, size)
            for method in exp["methods"]:
                for seed in exp["seeds"]:
                    b.run(exp, dname, dkey, size, method, seed, *fidrefs[dname])
    b.aggregate_and_report()
    return Plan(profile=profile, jobs=b.jobs, device=b.device)


# ---------------------------------------------------------------------------------------- spec files
def spec_text(spec: dict) -> str:
    return json.dumps(spec, indent=1, sort_keys=True, default=str) + "\n"


def write_specs(pl: Plan, root: str | Path = ".") -> List[str]:
    """Write every job's spec file whose content changed (only those: the others keep their modification
    time, so nothing that depends on them looks out of date). Returns the paths written."""
    written = []
    for job in pl.all_jobs():
        path = Path(root) / job.spec_path
        text = spec_text(job.spec)
        try:
            if path.read_text() == text:
                continue
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(job.spec_path)
    return written
