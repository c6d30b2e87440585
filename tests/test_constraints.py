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
