"""The pydantic models of params.yaml: one per section, unknown keys refused, every field described.

`load_params(path)` validates a whole file before any work starts and raises `ConfigError` whose
`lines` read `section.field: message`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from econsg.config.autoencode import AutoencodeParams
from econsg.config.base import ParamsModel, Section
from econsg.config.crr import CrrParams
from econsg.config.evaluate import EvaluateParams
from econsg.config.extract import ExtractParams
from econsg.config.fuse import FuseParams
from econsg.config.ingest import IngestParams
from econsg.config.paths import PathsParams
from econsg.config.splat import SplatParams
from econsg.config.synth import SynthParams
from econsg.errors import ConfigError, EconsgError, first_line, not_utf8

__all__ = [
    "AutoencodeParams",
    "ConfigError",
    "CrrParams",
    "EvaluateParams",
    "ExtractParams",
    "FuseParams",
    "IngestParams",
    "Params",
    "PathsParams",
    "Section",
    "SplatParams",
    "SynthParams",
    "describe_params",
    "format_validation_error",
    "load_params",
]


class Params(ParamsModel):
    """The whole params.yaml: shared keys plus one section per stage."""

    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of every random choice after synth (teacher noise, "
                      "autoencoder, splat); torch's generators take seeds below 2^64, and the stages derive theirs "
                      "as seed x 1000 + k.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="Torch device: auto picks CUDA when present.")
    paths: PathsParams = Field(default_factory=PathsParams, description="Where data, artifacts and metrics live.")
    synth: SynthParams = Field(default_factory=SynthParams, description="The embedded procedural scene.")
    ingest: IngestParams = Field(default_factory=IngestParams, description="Dataset reading.")
    extract: ExtractParams = Field(default_factory=ExtractParams, description="2D vision-language features and masks.")
    crr: CrrParams = Field(default_factory=CrrParams, description="Confidence-guided region regularization.")
    fuse: FuseParams = Field(default_factory=FuseParams, description="Multi-view 3D fusion.")
    autoencode: AutoencodeParams = Field(default_factory=AutoencodeParams, description="The low-dimensional latent space.")
    splat: SplatParams = Field(default_factory=SplatParams, description="Semantic Gaussian splatting.")
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams, description="Scoring of held-out views.")

    @model_validator(mode="after")
    def _tau2_below_tau1(self) -> Params:
        """crr's tau2 below an absolute tau1 where both are probabilities (under extract.confidence: cosine tau1
        thresholds a cosine, tau2 a probability: no order between them)."""
        crr = self.crr
        if crr.tau1_mode == "absolute" and self.extract.confidence == "softmax" and crr.tau2 >= crr.tau1:
            raise ValueError(f"crr.tau2: {crr.tau2} must be below crr.tau1 ({crr.tau1}) when crr.tau1_mode is "
                             "'absolute' and extract.confidence is 'softmax' (both probabilities)")
        return self


def describe_params(key: str = "") -> list[tuple[str, object, str]]:
    """(dotted key, default, description) of every params field under `key` ('' = all, a section such as 'fuse',
    or one field such as 'fuse.voxel_size'), nested sections (extract.synthetic) flattened."""
    rows: list[tuple[str, object, str]] = []

    def walk(model: type[BaseModel], defaults: dict, prefix: str) -> None:
        for name, field in model.model_fields.items():
            dotted = f"{prefix}{name}"
            nested = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
            if nested is not None:
                walk(nested, defaults[name], f"{dotted}.")
            else:
                rows.append((dotted, defaults[name], field.description or ""))

    walk(Params, Params().model_dump(mode="json"), "")
    chosen = [row for row in rows if not key or row[0] == key or row[0].startswith(f"{key}.")]
    if not chosen:
        if key in REPLACED_KEYS:
            raise EconsgError(f"{key!r}: {REPLACED_KEYS[key]}")
        parent = key.rpartition(".")[0]  # the deepest section the key names that exists: its fields
        while parent and not any(row[0].startswith(f"{parent}.") for row in rows):
            parent = parent.rpartition(".")[0]
        choices = sorted({row[0][len(parent) + 1 :].split(".")[0] for row in rows if row[0].startswith(f"{parent}.")}
                         if parent else {row[0].split(".")[0] for row in rows})  # fmt: skip
        where = f"the fields of {parent}" if parent else "the sections"
        raise EconsgError(f"{key!r}: no such params key or section; expected one of {where}: {', '.join(choices)}")
    return chosen


# Keys a release replaced: what an older params.yaml should say instead.
REPLACED_KEYS = {
    "splat.distill_ignored": "replaced by splat.distill_pixels (true -> all, false -> labelled; default labelled_or_pooled)",
    "evaluate.consistency_pairs": "removed: nothing ever read it (consistency compares every pixel with valid depth); "
    "delete the line",
}


# pydantic ends the location of an error in one member of a union with that member's name, which no field has
UNION_MEMBER = re.compile(r"\W")  # 'constrained-float', "literal['auto']"


def unknown_key_message(parts: list[str]) -> str:
    """What to say of a key no model has: the section's nearest field name when one is close (a typo)."""
    model: type[BaseModel] | None = Params
    for part in parts[:-1]:
        field = model.model_fields.get(part) if model is not None else None
        annotation = field.annotation if field is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    where = "a section or top-level key of params.yaml" if len(parts) == 1 else "a field of this section"
    close = difflib.get_close_matches(parts[-1], list(model.model_fields), n=1, cutoff=0.7) if model else []
    return f"unknown key (not {where}; " + (f"did you mean {close[0]!r}?)" if close else "check the spelling)")


CROSS_SECTION_ERROR = re.compile(r"Value error, ([a-z_]+\.[a-z_0-9]+): (.*)", re.DOTALL)  # "section.field: ..."


def format_validation_error(error: ValidationError) -> list[str]:
    """One `section.field: message` line per field pydantic refused; a value no member of a union takes (a number
    or 'auto') gets one line that says what each member expected."""
    messages: dict[str, list[str]] = {}
    inputs: dict[str, str] = {}
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        if item["type"] != "extra_forbidden" and len(parts) > 1 and UNION_MEMBER.search(parts[-1]):
            parts = parts[:-1]  # a union member's tag, not a key (an unknown key keeps its name, hyphens and all)
        location = ".".join(parts) or "(root)"
        message = item["msg"]
        if not parts and (named := CROSS_SECTION_ERROR.match(message)):  # a check across sections names its field
            location, message = named.group(1), named.group(2)
        if item["type"] == "extra_forbidden":
            message = REPLACED_KEYS.get(location) or unknown_key_message(parts)
        elif "input" in item and item["type"] != "missing" and not isinstance(item["input"], dict):
            inputs[location] = f" (got {item['input']!r})"  # not a whole section's values, which a section's check sees
        messages.setdefault(location, []).append(message)
    return [f"{location}: {' or '.join(texts)}{inputs.get(location, '')}" for location, texts in messages.items()]


def parse_params(data: object, source: str = "params") -> Params:
    """Validate an already-loaded mapping."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(root): expected a mapping of sections, got {type(data).__name__}"])
    try:
        return Params.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, format_validation_error(error)) from None


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...], source: str) -> dict:
    """Apply `section.key=value` overrides (values parsed as YAML) to a loaded params mapping."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(source, [f"--set {item!r}: expected section.key=value"])
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(source, [f"--set {item!r}: the value is not valid YAML ({first_line(error)}); quote a list as "
                                       "'[a, b]'"]) from None
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader refusing a key given twice in one mapping: PyYAML would keep the last one silently (a second
    `fuse:` section would drop the first one's settings)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys are defaults the mapping may override
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read and validate params.yaml (plus `section.key=value` overrides); raises ConfigError naming every bad `section.field`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(str(path), [f"(file): {path} is a folder; expected a params YAML file, like {path / 'params.yaml'}"])
    if not path.is_file():
        raise ConfigError(str(path), [f"(file): {path} does not exist; expected a params YAML file (write the defaults "
                                      f"to it with `econsg params defaults > {path}`)"])
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(str(path), [f"(file): not valid YAML: {error}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(str(path), [f"(file): {not_utf8(error)}; expected UTF-8, as YAML and DVC read it (save the "
                                      "file as UTF-8)"]) from None
    source = str(path) + "".join(f" --set {item}" for item in overrides)  # an override may be what is wrong
    if data is not None and not isinstance(data, dict):
        raise ConfigError(str(path), [f"(root): expected a mapping of sections, got {type(data).__name__}"])
    if overrides:
        data = apply_overrides(data or {}, overrides, source)
    return parse_params(data, source)
