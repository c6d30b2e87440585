"""Dataset readers behind one interface: `read_scene(root, format)` -> SceneSource.

Each reader module exposes `FORMAT` (its name), `detect(root) -> bool` and
`read(root) -> SceneSource`. `auto` tries them in order and, when none matches, says what it looked for.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from econsg.errors import EconsgError
from econsg.scene.data import SceneSource
from econsg.scene.readers import blender, extra_formats


def available_readers() -> dict[str, ModuleType]:
    """Reader modules by format name, in detection order (an error importing one is raised, never hidden: it used to
    drop every real dataset's reader and say only 'unknown or unavailable format')."""
    modules: list[ModuleType] = [blender, *extra_formats.READERS]
    return {module.FORMAT: module for module in modules}


FORMAT_ALIASES = {"nerfstudio": "blender"}  # one reader takes Blender's and nerfstudio's transforms.json


def detect_format(root: Path) -> str:
    """The first reader whose `detect` accepts `root`."""
    readers = available_readers()
    for name, module in readers.items():
        if module.detect(root):
            return name
    looked_for = "; ".join(f"{name}: {module.LOOKS_FOR}" for name, module in readers.items())
    raise EconsgError(f"{root}: no known dataset layout found. Looked for {looked_for}")


def read_scene(root: str | Path, format: str = "auto") -> SceneSource:
    """Read a dataset folder with the named (or detected) reader."""
    root = Path(root)
    if not root.is_dir():
        raise EconsgError(f"{root}: dataset folder does not exist ({root.absolute()}); set paths.data to your "
                          "dataset's folder (the benchmarks' layouts: pipelines/README.md; the demo's own room is written "
                          "there by the synth stage)")
    readers = available_readers()
    name = detect_format(root) if format == "auto" else FORMAT_ALIASES.get(format, format)
    if name not in readers:
        raise EconsgError(f"ingest.format: unknown or unavailable format {name!r}; available: {sorted(readers)}")
    return readers[name].read(root)
