"""`constraints.txt` pins every package econsg installs, so a fresh machine builds the environment the committed
figures were measured with. Between two sessions PyPI's newest releases changed under the unpinned ranges of
`pyproject.toml`, and every artifact's bytes with them. These tests fail when a dependency is added without
`make lock`, or when a pin falls outside the range `pyproject.toml` asks for."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def read_pins(path: Path) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", (
            f"{path.name}:{number}: {line!r}: expected an exact pin NAME==VERSION"
        )
        pins[canonicalize_name(requirement.name)] = Version(specifiers[0].version)
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(line.split("#", 1)[0].strip()) for line in lines]


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution the requirements pull in on this platform, from the installed metadata."""
    environment = default_environment()
    seen: set[str] = set()
    todo = [(requirement, "") for requirement in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras) or [""]
        key = f"{name}[{','.join(extras)}]"
        if key in seen:
            continue
        seen.add(key)
        for dependency in metadata.requires(requirement.name) or []:
            for wanted in extras:
                todo.append((Requirement(dependency), wanted))
    return {key.split("[", 1)[0] for key in seen}


def test_every_pin_is_exact_and_within_pyproject_ranges():
    pins = read_pins(ROOT / "constraints.txt")
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt: {requirement.name} (pyproject.toml) is not pinned; run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt: {name}=={pins[name]} is outside pyproject.toml's {requirement}"
        )


def test_every_installed_dependency_is_pinned():
    pins = read_pins(ROOT / "constraints.txt")
    missing = sorted(installed_closure(project_requirements()) - set(pins))
    assert not missing, f"constraints.txt lacks {missing}; run `make lock`"


def test_read_pins_refuses_a_range(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text("# header\nnumpy==2.0.0\nscipy>=1.11\n")
    with pytest.raises(AssertionError, match=r"constraints.txt:3: 'scipy>=1.11'"):
        read_pins(path)


def shell_array(path: Path, name: str) -> list[str]:
    """The words of a bash array `NAME=(...)` (possibly over several lines) in a script."""
    text = path.read_text()
    start = text.index(f"\n{name}=(") + len(name) + 3
    return text[start:text.index(")", start)].split()


def test_gpu_wheels_cover_every_dependency_the_gpu_machine_lacks():
    """benchmarks/gpu_wheels.sh fetches, --no-deps, what the lent GPU machine lacks: every dependency of econsg, and
    every requirement of a fetched package, must be fetched, on that machine already, or named as not needed there;
    and every fetched package must have a pin to fetch."""
    script = ROOT / "benchmarks" / "gpu_wheels.sh"
    fetched = {canonicalize_name(n) for n in shell_array(script, "PACKAGES")}
    there = {canonicalize_name(n) for n in shell_array(script, "ON_GPU_MACHINE")}
    not_needed = {canonicalize_name(n) for n in shell_array(script, "NOT_NEEDED_ON_GPU_MACHINE")}
    assert fetched <= set(read_pins(ROOT / "constraints.txt")), "gpu_wheels.sh fetches a package constraints.txt does not pin"
    environment = {**default_environment(), "extra": ""}
    uncovered = []
    for requirement in project_requirements():
        if not requirement.marker or requirement.marker.evaluate(environment):
            name = canonicalize_name(requirement.name)
            if name not in fetched | there | not_needed:
                uncovered.append(f"econsg needs {name}")
    for name in sorted(fetched):
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            needed = canonicalize_name(requirement.name)
            if needed not in fetched | there:
                uncovered.append(f"{name} needs {needed}")
    assert not uncovered, f"benchmarks/gpu_wheels.sh: add to PACKAGES or ON_GPU_MACHINE: {uncovered}"
