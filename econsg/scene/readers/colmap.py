"""COLMAP sparse models (`sparse/0/` or `sparse/`, binary or text) with undistorted images in `images/`.

Read with pycolmap. COLMAP's `cam_from_world` is world-to-camera in OpenCV axes, so
c2w = inverse(cam_from_world). COLMAP puts the centre of the top-left pixel at (0.5, 0.5), the
same convention as this project, so its principal point is used unchanged. Accepted camera models:
SIMPLE_PINHOLE, PINHOLE, and OPENCV / SIMPLE_RADIAL / RADIAL only when every distortion parameter
is zero; anything else is refused with a pointer to `colmap image_undistorter`. Only registered
images are read, sorted by name; every 8th (0, 8, 16, ...) is held out as test (LLFF convention).
points3D become SceneSource.points / point_rgb.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from econsg.errors import EconsgError
from econsg.scene.data import FrameRecord, SceneSource, check_intrinsics, check_rigid_pose
from econsg.scene.readers.common import image_size, llff_split, pinhole
from econsg.scene.readers.imageio import load_rgb

FORMAT = "colmap"
LOOKS_FOR = "sparse/0/ (or sparse/) with cameras, images and points3D (.bin or .txt) beside an images/ folder"

_DISTORTED_MODELS = {  # model name -> indices of the distortion parameters in `params`
    "OPENCV": (4, 5, 6, 7),
    "SIMPLE_RADIAL": (3,),
    "RADIAL": (3, 4),
}


def model_folder(root: Path) -> Path | None:
    """The folder holding the sparse model: sparse/0, else sparse, else None."""
    for folder in (root / "sparse" / "0", root / "sparse"):
        if any((folder / f"cameras.{ext}").is_file() for ext in ("bin", "txt")):
            return folder
    return None


def detect(root: Path) -> bool:
    return model_folder(root) is not None and (root / "images").is_dir()


def camera_intrinsics(model: str, params: np.ndarray, where: str) -> np.ndarray:
    """3x3 K from a COLMAP camera model's parameter vector; distorted models are refused."""
    params = np.asarray(params, dtype=np.float64)
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = params[:3]
        return pinhole(f, f, cx, cy)
    if model == "PINHOLE":
        return pinhole(*params[:4])
    if model in _DISTORTED_MODELS:
        distortion = params[list(_DISTORTED_MODELS[model])]
        if np.any(np.abs(distortion) > 1e-12):
            raise EconsgError(
                f"{where}: camera model {model} has distortion {distortion.tolist()}; undistort the images first "
                "(colmap image_undistorter --image_path images --input_path sparse/0 --output_path undistorted) "
                "and point ingest at the undistorted folder"
            )
        if model == "OPENCV":
            return pinhole(*params[:4])
        f, cx, cy = params[:3]
        return pinhole(f, f, cx, cy)
    raise EconsgError(
        f"{where}: camera model {model} is not supported; expected PINHOLE or SIMPLE_PINHOLE (run colmap "
        "image_undistorter to get them)"
    )


def read_model(folder: Path):
    """A pycolmap.Reconstruction from `folder`, or EconsgError naming it."""
    pycolmap = import_pycolmap()
    try:
        return pycolmap.Reconstruction(str(folder))
    except Exception as error:  # pycolmap raises plain RuntimeError / ValueError subclasses
        raise EconsgError(f"{folder}: unreadable COLMAP model ({error})") from None


def import_pycolmap():
    """pycolmap, imported without its glog taking over SIGTERM: glog installs a handler that prints a stack trace and
    kills the process, which would replace a stage's (`sigterm_as_interrupt`) and leave its temporary store behind."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        import pycolmap

        return pycolmap
    handler = signal.getsignal(signal.SIGTERM)
    import pycolmap

    if handler is not None:  # None: a handler set outside Python, nothing to restore
        signal.signal(signal.SIGTERM, handler)
    return pycolmap


def view_name(image_name: str) -> str:
    """A COLMAP image's view name: its path under images/ without the extension (a rig's cam0/0001.jpg and
    cam1/0001.jpg differ)."""
    return Path(image_name).with_suffix("").as_posix()


def model_points(reconstruction) -> tuple[np.ndarray | None, np.ndarray | None, list[tuple[str, ...]] | None]:
    """([P,3] float64 xyz, [P,3] uint8 rgb, per point the names of the views whose images observe it: its track) of
    the model's 3D points by id, or (None, None, None) when it has none."""
    points = reconstruction.points3D
    if len(points) == 0:
        return None, None, None
    ordered = [points[key] for key in sorted(points.keys())]  # by point id, so the order is reproducible
    xyz = np.array([p.xyz for p in ordered], dtype=np.float64)  # float32 only once ingest has recentred a far scene
    rgb = np.array([p.color for p in ordered], dtype=np.uint8)
    names = {image_id: view_name(image.name) for image_id, image in reconstruction.images.items()}
    seen_by = [tuple(sorted({names[e.image_id] for e in p.track.elements if e.image_id in names})) for p in ordered]
    return xyz, rgb, seen_by


def read(root: Path) -> SceneSource:
    folder = model_folder(root)
    if folder is None:
        raise EconsgError(f"{root}: no COLMAP model found; expected {LOOKS_FOR}")
    image_dir = root / "images"
    reconstruction = read_model(folder)
    images = sorted((im for im in reconstruction.images.values() if im.has_pose), key=lambda im: im.name)
    if not images:
        raise EconsgError(f"{folder}: the model has no registered images")
    frames = []
    for index, image in enumerate(images):
        where = f"{folder}: image {image.name!r}"
        camera = reconstruction.cameras[image.camera_id]
        K = check_intrinsics(camera_intrinsics(camera.model.name, camera.params, f"{where} (camera {image.camera_id})"), where)
        w2c = np.eye(4)
        w2c[:3] = image.cam_from_world().matrix()
        c2w = check_rigid_pose(np.linalg.inv(w2c), where)
        path = image_dir / image.name
        if not path.is_file():
            raise EconsgError(f"{path}: image named in the COLMAP model ({folder}) does not exist")
        width, height = image_size(path)
        if (width, height) != (camera.width, camera.height):
            raise EconsgError(
                f"{path}: image is {width}x{height} pixels but its COLMAP camera {image.camera_id} is "
                f"{camera.width}x{camera.height}; use the images the model was made from"
            )
        frames.append(
            FrameRecord(
                name=view_name(image.name),
                split=llff_split(index),
                K=K,
                c2w=c2w,
                width=width,
                height=height,
                source=path,
                load_image=partial(load_rgb, path),
            )
        )
    points, colors, seen_by = model_points(reconstruction)
    return SceneSource(root=root, format=FORMAT, frames=frames, points=points, point_rgb=colors, point_views=seen_by)
