"""synth: write the embedded procedural room as a Blender-style dataset in paths.data."""

from pathlib import Path

from econsg.config import Params
from econsg.pipeline import stage_main
from econsg.scene.synthetic import write_synthetic_dataset


def run(params: Params) -> None:
    write_synthetic_dataset(Path(params.paths.data), params.synth)


if __name__ == "__main__":
    stage_main("synth")
