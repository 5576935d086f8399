"""Pipeline stages: each a standalone CLI (`python -m stages.<name> --help`) with explicit inputs and
outputs, written atomically. A stage never decides what else runs; the Snakefile and dvc.yaml do."""
