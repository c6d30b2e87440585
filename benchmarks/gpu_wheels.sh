#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels the lent GPU machine lacks, into .whl/ (git-ignored).
#
#     bash benchmarks/gpu_wheels.sh           # then: device run, carry [".whl"], command "bash benchmarks/gpu_check.sh"
#
# The GPU machine has its own Python 3.12, torch (CUDA), numpy, scipy, typer, rich, pytest, torchmetrics,
# timm, huggingface_hub, ninja and jaxtyping, and no network. What econsg's imports and its CUDA tests need
# beyond those is listed here, at the versions constraints.txt pins, as CPython 3.12 manylinux x86_64 wheels
# (pure-Python ones where a package has no compiled part). --no-deps: the list is the whole closure.
# GPU_PYTHON_VERSION=3.11 fetches the same set for this machine's Python, to rehearse the install here.
set -euo pipefail
PYTHON_VERSION=${GPU_PYTHON_VERSION:-3.12}
cd "$(dirname "$0")/.."

PACKAGES=(gsplat zarr donfig google-crc32c numcodecs pydantic pydantic_core annotated-types typing-inspection
          plyfile open_clip_torch ftfy wcwidth segment-anything)
# Already on the GPU machine (the device tool's KINDS.md, read 2026-12-02), at its own versions with their own
# needs; not fetched. tests/test_constraints.py checks that PACKAGES and this list cover econsg's dependencies.
ON_GPU_MACHINE=(torch torchvision numpy scipy pillow pyyaml packaging typer rich click shellingham annotated-doc
                markdown-it-py mdurl pygments typing-extensions pytest iniconfig pluggy torchmetrics
                lightning-utilities timm huggingface-hub safetensors regex tqdm ninja jaxtyping wadler-lindig fsspec
                filelock)
# Not needed there: dvc (the checks call the stages directly), pycolmap (imported only by the COLMAP reader).
NOT_NEEDED_ON_GPU_MACHINE=(dvc pycolmap)

PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$tag")
done
rm -rf .whl && mkdir -p .whl
# constraints.txt pins each one's version (pip matches names as PEP 503 normalises them)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    "${PLATFORMS[@]}" -c constraints.txt -d .whl "${PACKAGES[@]}"
ls -1 .whl
du -sh .whl
