"""Pipeline stages: each a standalone command (`python -m stages.<name> --help`) that reads a spec (every
parameter it uses, as JSON) and explicit input paths, and writes its outputs atomically. A stage never
reads params.yaml and never decides what else runs: the planner (diffrepro.pipeline) writes the specs,
Snakemake and DVC run the stages."""
