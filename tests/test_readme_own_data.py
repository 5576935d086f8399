"""The README's "your own images" example, as written there: the entry and the profile validate and plan
every image stage on a folder of PNGs (the pipeline run itself: test_data_pipeline, integration tier)."""
import re
from pathlib import Path

import yaml

from data_helpers import make_images, write_png_folder
from diffrepro.pipeline.params import validate_params
from diffrepro.pipeline.plan import plan

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_example_plans_a_run_on_your_folder(tmp_path):
    readme = (REPO / "README.md").read_text()
    intro = readme.index("Your own images:")
    assert "make run PROFILE=mine" in readme[intro:intro + 200]
    block = re.search(r"```yaml\n(.*?)```", readme[intro:], re.S).group(1)
    assert len(block.strip().splitlines()) == 5
    example = yaml.safe_load(block)
    entry = example["datasets"]["mine"]
    write_png_folder(tmp_path / "pngs", make_images(600, size=entry["resolution"], seed=3)[0])
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["mine"] = {**entry, "source": str(tmp_path / "pngs")}
    params["profiles"]["mine"] = example["profiles"]["mine"]
    validate_params(params)
    pl = plan(params, "mine")
    assert set(pl["train"]) == {"mine-n500_edm_tiny-cpu_s0", "mine-n500_sparse-90_tiny-cpu_s0"}
    assert list(pl["fidref"]) == ["mine-refall"] and len(pl["fid"]) == len(pl["memorize"]) == 2
    assert pl["prepare"]["mine-n500"].spec["dataset"]["fingerprint"]       # identified by its content
