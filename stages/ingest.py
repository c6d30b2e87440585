"""ingest: read the dataset in paths.data (any supported layout) into scene.zarr."""

import numpy as np

from econsg.config import Params
from econsg.pipeline import stage_main
from econsg.scene.ingest import write_scene
from econsg.scene.readers import read_scene


def run(params: Params) -> None:
    source = read_scene(params.paths.data, params.ingest.format)
    write_scene(
        source,
        params.paths.artifact("ingest"),
        params={"ingest": params.ingest.model_dump(mode="json"), "seed": params.seed},
        downscale=params.ingest.downscale,
        sparse_views=params.ingest.sparse_views,
        sparse_selection=params.ingest.sparse_selection,
        frame_stride=params.ingest.frame_stride,
        max_init_points=params.ingest.max_init_points,
        init_voxel_size=params.ingest.init_voxel_size,
        rng=np.random.default_rng([params.seed, 1]),
    )


if __name__ == "__main__":
    stage_main("ingest")
