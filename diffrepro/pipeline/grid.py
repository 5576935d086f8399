"""Expand a profile of params.yaml into the pipeline's jobs.

The one place that decides what runs: the Snakefile and the dvc.yaml generator both read `plan()`,
so the two orchestrators build the same DAG with the same output paths. Each job carries exactly the
parameters it depends on; its key is a readable name plus a hash of them.

    prepare  -> results/data/<dataset>/                      (per dataset subset)
    targetvar-> results/analysis/targetvar/<dataset>.parquet (per image subset: STF target variance)
    toystudy -> results/analysis/toystudy/<profile>.*         (2D flow fields and memorization sweeps)
    gap, memtrace -> results/analysis/{gap,memtrace}/<run>__step<k>.*  (per analysed checkpoint)
    trajectory -> results/analysis/trajectory/<run>.*       (per analysed run)
    fidref   -> results/fidref/<ref>.npz                     (per image dataset)
    train    -> results/runs/<run>/model.pt, train_metrics.parquet
    sample   -> results/evals/<eval>/samples.npy, grid.png   (per run x sampler)
    fid      -> results/evals/<eval>/fid.json                (image datasets)
    memorize -> results/evals/<eval>/memorize.json, .parquet, .png
    aggregate-> reports/<profile>/metrics.parquet
    report   -> reports/<profile>/report.md, report.html, figures/
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Dict, List

STAGES = ["prepare", "fidref", "targetvar", "toystudy", "train", "sample", "fid", "memorize", "gap", "memtrace",
          "trajectory", "aggregate", "report"]
ANALYSIS_DEFAULTS = {"sigmas": 12, "n_per_set": 500, "memtrace_samples": 500, "trajectory_samples": 128, "seed": 0}

# Target-variance analysis (STF claim T1): noise levels and reference-batch sizes measured per image subset.
TARGETVAR_SIGMAS = [0.05, 0.1, 0.2, 0.35, 0.6, 1.0, 1.7, 3.0, 5.0, 9.0, 16.0, 40.0, 80.0]
TARGETVAR_REF_BATCHES = [64, 256, 1024]


def spec_hash(obj, n: int = 8) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


# ---------------------------------------------------------------------------------------- paths
class paths:
    """Output paths of every stage; Snakemake uses them with '{wildcard}' placeholders."""

    @staticmethod
    def dataset(key):
        return f"results/data/{key}"

    @staticmethod
    def fidref(key):
        return f"results/fidref/{key}.npz"

    @staticmethod
    def run_dir(key):
        return f"results/runs/{key}"

    @staticmethod
    def model(key):
        return f"results/runs/{key}/model.pt"

    @staticmethod
    def train_metrics(key):
        return f"results/runs/{key}/train_metrics.parquet"

    @staticmethod
    def eval_dir(key):
        return f"results/evals/{key}"

    @staticmethod
    def samples(key):
        return f"results/evals/{key}/samples.npy"

    @staticmethod
    def sample_grid(key):
        return f"results/evals/{key}/grid.png"

    @staticmethod
    def sample_info(key):
        return f"results/evals/{key}/sample_info.json"

    @staticmethod
    def fid(key):
        return f"results/evals/{key}/fid.json"

    @staticmethod
    def memorize(key):
        return f"results/evals/{key}/memorize.json"

    @staticmethod
    def memorize_table(key):
        return f"results/evals/{key}/memorize.parquet"

    @staticmethod
    def memorize_fig(key):
        return f"results/evals/{key}/memorize.png"

    @staticmethod
    def targetvar(key):
        return f"results/analysis/targetvar/{key}.parquet"

    @staticmethod
    def targetvar_fig(key):
        return f"results/analysis/targetvar/{key}.png"

    @staticmethod
    def gap(key):
        return f"results/analysis/gap/{key}.parquet"

    @staticmethod
    def memtrace(key):
        return f"results/analysis/memtrace/{key}.json"

    @staticmethod
    def trajectory(key):
        return f"results/analysis/trajectory/{key}.parquet"

    @staticmethod
    def trajectory_fig(key):
        return f"results/analysis/trajectory/{key}.png"

    @staticmethod
    def toystudy(key):
        return f"results/analysis/toystudy/{key}.parquet"

    @staticmethod
    def toystudy_flow(key):
        return f"results/analysis/toystudy/{key}-flow.png"

    @staticmethod
    def toystudy_sweep(key):
        return f"results/analysis/toystudy/{key}-sweep.png"

    @staticmethod
    def metrics(profile):
        return f"reports/{profile}/metrics.parquet"

    @staticmethod
    def report_md(profile):
        return f"reports/{profile}/report.md"

    @staticmethod
    def report_html(profile):
        return f"reports/{profile}/report.html"

    @staticmethod
    def report_summary(profile):
        return f"reports/{profile}/summary.json"

    @staticmethod
    def report_figures(profile):
        return f"reports/{profile}/figures"


@dataclass
class Job:
    stage: str
    key: str
    args: List[str]                  # argv after `python -m stages.<stage>`
    deps: List[str]                  # input paths (files or folders)
    outs: List[str]                  # output paths
    spec: dict                       # exactly the parameters this job depends on
    param_keys: List[str]            # the params.yaml keys behind `spec` (for DVC)
    resources: dict = field(default_factory=dict)
    log: str = ""
    processes: int = 1               # >1: launched as that many data-parallel processes by torchrun

    @property
    def module(self) -> str:
        """What follows `python -m`: the stage module, or torchrun's module launching it."""
        if self.processes == 1:
            return f"stages.{self.stage}"
        return f"torch.distributed.run --standalone --nproc_per_node {self.processes} -m stages.{self.stage}"

    @property
    def command(self) -> str:
        import shlex
        return f"python -m {self.module} " + " ".join(shlex.quote(a) for a in self.args)


@dataclass
class Plan:
    profile: str
    params_path: str
    jobs: Dict[str, Dict[str, Job]]

    def __getitem__(self, stage) -> Dict[str, Job]:
        return self.jobs[stage]

    def all_jobs(self) -> List[Job]:
        return [j for s in STAGES for j in self.jobs[s].values()]

    def targets(self) -> List[str]:
        return self.jobs["report"][self.profile].outs


# ---------------------------------------------------------------------------------------- plan
def dataset_spec(params, name, size):
    return {"key": name, **params["datasets"][name], "n_train": size}


REFERENCE_KEYS = ("kind", "name", "format", "source", "resolution", "channels", "resize", "seed", "md5",
                  "allow_download")   # what FID reference statistics depend on (the whole training pool)


def _leaves(prefix: str, d: dict, only=None) -> List[str]:
    return [f"{prefix}.{k}" for k in d if only is None or k in only]


def plan(params: dict, profile: str | None = None, params_path: str = "params.yaml") -> Plan:
    profile = profile or params["profile"]
    if profile not in params["profiles"]:
        raise KeyError(f"profile {profile!r} is not defined in {params_path} (have: {sorted(params['profiles'])})")
    prof = params["profiles"][profile]
    gpus = prof.get("gpus_per_job", 0)
    procs = prof.get("train_processes", 1)
    device = prof.get("device", "auto")
    jobs: Dict[str, Dict[str, Job]] = {s: {} for s in STAGES}
    P = ["--params", params_path]
    ev = params["evaluation"]
    fid_cfg = {"mode": ev["fid"].get("mode", "clean")}
    mem_cfg = {"threshold": ev["memorization"].get("threshold", 1 / 3)}
    fid_keys = _leaves("evaluation.fid", ev["fid"], {"mode"})
    mem_keys = _leaves("evaluation.memorization", ev["memorization"], {"threshold"})

    def gpu_res(mem_mb, runtime, threads=2):
        return {"gpu": gpus, "mem_mb": mem_mb, "runtime": runtime, "threads": threads}

    analysis = {**ANALYSIS_DEFAULTS, **prof.get("analysis", {})}
    if "toy_study" in prof:
        tspec = {"eps": 0.02, "num_samples": 1000, **prof["toy_study"]}
        outs = [paths.toystudy(profile), paths.toystudy_flow(profile), paths.toystudy_sweep(profile)]
        jobs["toystudy"][profile] = Job(
            "toystudy", profile, P + ["--profile", profile, "--out", outs[0], "--flow", outs[1], "--sweep", outs[2]],
            deps=[], outs=outs, spec=tspec, param_keys=[f"profiles.{profile}.toy_study"],
            resources={"mem_mb": 4000, "runtime": 60, "threads": 1}, log=f"results/logs/toystudy/{profile}.log")

    # FID references: one per image dataset used by the profile
    fidref_of = {}
    for exp in prof["experiments"]:
        dname = exp["dataset"]
        ds = params["datasets"][dname]
        if ds["kind"] != "image" or dname in fidref_of:
            continue
        count = prof.get("fid_reference", {}).get(dname)
        spec = {"dataset": {"key": dname, **{k: v for k, v in ds.items() if k in REFERENCE_KEYS}},
                "count": count, "fid": fid_cfg}
        key = f"{dname}-ref{count or 'all'}-{fid_cfg['mode']}-{spec_hash(spec, 6)}"
        fidref_of[dname] = key
        jobs["fidref"][key] = Job(
            "fidref", key, P + ["--ref", key, "--out", paths.fidref(key), "--device", device],
            deps=[], outs=[paths.fidref(key)], spec=spec,
            param_keys=_leaves(f"datasets.{dname}", ds, REFERENCE_KEYS) + fid_keys
            + ([f"profiles.{profile}.fid_reference.{dname}"] if dname in prof.get("fid_reference", {}) else []),
            resources=gpu_res(8000, 60),
            log=f"results/logs/fidref/{key}.log")

    for exp in prof["experiments"]:
        dname = exp["dataset"]
        ds = params["datasets"][dname]
        threads = 2 if ds["kind"] == "image" else 1   # small MLPs on 2D data gain nothing from more threads
        for size in exp["sizes"]:
            dspec = dataset_spec(params, dname, size)
            dkey = f"{dname}-n{size}-{spec_hash(dspec, 6)}"
            jobs["prepare"].setdefault(dkey, Job(
                "prepare", dkey, P + ["--dataset", dkey, "--out", paths.dataset(dkey)],
                deps=[], outs=[paths.dataset(dkey)], spec=dspec, param_keys=_leaves(f"datasets.{dname}", ds),
                resources={"mem_mb": 4000, "runtime": 30}, log=f"results/logs/prepare/{dkey}.log"))
            refs = [r for r in TARGETVAR_REF_BATCHES if r < size]
            if ds["kind"] == "image" and refs and dkey not in jobs["targetvar"]:
                tspec = {"dataset": dkey, "sigmas": TARGETVAR_SIGMAS, "ref_batches": refs, "n_samples": 256}
                jobs["targetvar"][dkey] = Job(
                    "targetvar", dkey,
                    P + ["--dataset", dkey, "--data", paths.dataset(dkey), "--out", paths.targetvar(dkey),
                         "--figure", paths.targetvar_fig(dkey)],
                    deps=[paths.dataset(dkey)], outs=[paths.targetvar(dkey), paths.targetvar_fig(dkey)],
                    spec=tspec, param_keys=[], resources={"mem_mb": 8000, "runtime": 60, "threads": 2},
                    log=f"results/logs/targetvar/{dkey}.log")
            for method in exp["methods"]:
                for seed in exp["seeds"]:
                    tname = exp["training"]
                    rspec = {"dataset": dspec, "method": {"name": method, **params["methods"][method]},
                             "training": {"name": tname, **params["training"][tname]}, "seed": seed}
                    rkey = f"{dname}-n{size}_{method}_{tname}_s{seed}_{spec_hash(rspec)}"
                    jobs["train"][rkey] = Job(
                        "train", rkey,
                        P + ["--job", rkey, "--data", paths.dataset(dkey), "--out", paths.run_dir(rkey),
                             "--device", device],
                        deps=[paths.dataset(dkey)], outs=[paths.model(rkey), paths.train_metrics(rkey)],
                        spec=rspec,
                        param_keys=_leaves(f"datasets.{dname}", ds) + [f"methods.{method}", f"training.{tname}"],
                        resources={**gpu_res(16000 * procs, 24 * 60, threads * procs), "gpu": gpus * procs},
                        processes=procs, log=f"results/logs/train/{rkey}.log")
                    for step in exp.get("analysis_steps", []):
                        akey = f"{rkey}__step{step}"
                        common = P + ["--job", akey, "--model", paths.model(rkey), "--data", paths.dataset(dkey),
                                      "--device", device]
                        jobs["gap"][akey] = Job(
                            "gap", akey, common + ["--out", paths.gap(akey)],
                            deps=[paths.model(rkey), paths.dataset(dkey)], outs=[paths.gap(akey)],
                            spec={"run": rkey, "step": step, "sigmas": analysis["sigmas"],
                                  "n_per_set": analysis["n_per_set"], "seed": analysis["seed"]},
                            param_keys=[], resources=gpu_res(8000, 60, threads), log=f"results/logs/gap/{akey}.log")
                        # image data: the same samples also give the checkpoint's FID (FID over training)
                        ref = [paths.fidref(fidref_of[dname])] if dname in fidref_of else []
                        jobs["memtrace"][akey] = Job(
                            "memtrace", akey, common + ["--out", paths.memtrace(akey)] + (["--ref", *ref] if ref else []),
                            deps=[paths.model(rkey), paths.dataset(dkey), *ref], outs=[paths.memtrace(akey)],
                            spec={"run": rkey, "step": step, "num_samples": analysis["memtrace_samples"],
                                  "fid_ref": fidref_of.get(dname)},
                            param_keys=[], resources=gpu_res(8000, 60, threads), log=f"results/logs/memtrace/{akey}.log")
                    if exp.get("analysis_steps"):
                        jobs["trajectory"][rkey] = Job(
                            "trajectory", rkey,
                            P + ["--job", rkey, "--model", paths.model(rkey), "--data", paths.dataset(dkey),
                                 "--device", device, "--out", paths.trajectory(rkey),
                                 "--figure", paths.trajectory_fig(rkey)],
                            deps=[paths.model(rkey), paths.dataset(dkey)],
                            outs=[paths.trajectory(rkey), paths.trajectory_fig(rkey)],
                            spec={"run": rkey, "num_samples": analysis["trajectory_samples"]},
                            param_keys=[], resources=gpu_res(8000, 60, threads),
                            log=f"results/logs/trajectory/{rkey}.log")
                    for sname in exp["sampling"]:
                        espec = {"run": rkey, "sampling": {"name": sname, **params["sampling"][sname]},
                                 "num_samples": exp["num_samples"]}
                        ekey = f"{rkey}__{sname}-n{exp['num_samples']}_{spec_hash(espec, 6)}"
                        jobs["sample"][ekey] = Job(
                            "sample", ekey,
                            P + ["--eval", ekey, "--model", paths.model(rkey), "--out", paths.eval_dir(ekey),
                                 "--device", device] + ([] if ev.get("sample_compile", True) else ["--no-compile"]),
                            deps=[paths.model(rkey)],
                            outs=[paths.samples(ekey), paths.sample_grid(ekey), paths.sample_info(ekey)],
                            spec=espec, param_keys=[f"sampling.{sname}"], resources=gpu_res(16000, 6 * 60, threads),
                            log=f"results/logs/sample/{ekey}.log")
                        if ds["kind"] == "image":
                            ref = fidref_of[dname]
                            jobs["fid"][ekey] = Job(
                                "fid", ekey,
                                ["--samples", paths.samples(ekey), "--ref", paths.fidref(ref),
                                 "--out", paths.fid(ekey), "--device", device],
                                deps=[paths.samples(ekey), paths.fidref(ref)], outs=[paths.fid(ekey)],
                                spec={"eval": ekey, "ref": ref, **fid_cfg}, param_keys=fid_keys,
                                resources=gpu_res(8000, 60), log=f"results/logs/fid/{ekey}.log")
                        jobs["memorize"][ekey] = Job(
                            "memorize", ekey,
                            ["--samples", paths.samples(ekey), "--data", paths.dataset(dkey),
                             "--out", paths.memorize(ekey), "--table", paths.memorize_table(ekey),
                             "--figure", paths.memorize_fig(ekey), "--threshold", repr(mem_cfg["threshold"]),
                             "--device", device],
                            deps=[paths.samples(ekey), paths.dataset(dkey)],
                            outs=[paths.memorize(ekey), paths.memorize_table(ekey), paths.memorize_fig(ekey)],
                            spec={"eval": ekey, **mem_cfg}, param_keys=mem_keys,
                            resources=gpu_res(16000, 60, 1), log=f"results/logs/memorize/{ekey}.log")

    agg_deps = ([paths.train_metrics(k) for k in jobs["train"]] + [paths.samples(k) for k in jobs["sample"]]
                + [paths.fid(k) for k in jobs["fid"]] + [paths.memorize(k) for k in jobs["memorize"]]
                + [paths.targetvar(k) for k in jobs["targetvar"]] + [paths.gap(k) for k in jobs["gap"]]
                + [paths.memtrace(k) for k in jobs["memtrace"]] + [paths.trajectory(k) for k in jobs["trajectory"]]
                + [paths.toystudy(k) for k in jobs["toystudy"]])
    jobs["aggregate"][profile] = Job(
        "aggregate", profile, P + ["--profile", profile, "--out", paths.metrics(profile)],
        deps=agg_deps, outs=[paths.metrics(profile)],
        spec={"runs": sorted(jobs["train"]), "evals": sorted(jobs["sample"]),
              "analyses": sorted(f"{s}/{k}" for s in ("targetvar", "gap", "memtrace", "trajectory", "toystudy")
                                 for k in jobs[s])},
        param_keys=[],
        resources={"mem_mb": 4000, "runtime": 30}, log=f"results/logs/aggregate/{profile}.log")
    report_deps = ([paths.metrics(profile)] + [paths.sample_grid(k) for k in jobs["sample"]]
                   + [paths.memorize_fig(k) for k in jobs["memorize"]] + [paths.targetvar_fig(k) for k in jobs["targetvar"]]
                   + [paths.trajectory_fig(k) for k in jobs["trajectory"]]
                   + [f for k in jobs["toystudy"] for f in (paths.toystudy_flow(k), paths.toystudy_sweep(k))])
    jobs["report"][profile] = Job(
        "report", profile,
        P + ["--profile", profile, "--metrics", paths.metrics(profile), "--out", f"reports/{profile}"],
        deps=report_deps,
        outs=[paths.report_md(profile), paths.report_html(profile), paths.report_summary(profile),
              paths.report_figures(profile)],
        spec={"profile": profile}, param_keys=[], resources={"mem_mb": 4000, "runtime": 30},
        log=f"results/logs/report/{profile}.log")
    return Plan(profile=profile, params_path=params_path, jobs=jobs)


def find_job(params: dict, stage: str, key: str, params_path="params.yaml") -> Job:
    """The job `key` of `stage` in any profile (keys embed a hash of their parameters)."""
    for profile in params["profiles"]:
        job = plan(params, profile, params_path).jobs[stage].get(key)
        if job is not None:
            return job
    raise KeyError(
        f"{stage} job {key!r} is not in any profile of {params_path}: the parameters changed since the "
        f"workflow was planned. Rerun snakemake, or regenerate dvc.yaml (python -m workflow.make_dvc) and dvc repro.")
