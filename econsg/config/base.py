"""Base classes of params.yaml and its sections: frozen, documented, unknown keys and booleans for numbers refused."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

TEMPERATURE_MIN = 1e-3  # a softmax temperature's floor: cos / T stays finite in float32 (T = 1e-40 made a store NaN)


# A length in the scene's units, or 'auto': a fraction of the scene's median depth (`econsg.scene.scale.resolve_scene_length`)
SceneLength = Annotated[float, Field(gt=0)] | Literal["auto"]


def value_types(annotation) -> set:
    """The types a field's annotation takes values of: Annotated and unions opened, Literal values left out."""
    origin = get_origin(annotation)
    if origin is Literal:
        return set()
    if origin is Annotated:
        return value_types(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(value_types(arg) for arg in get_args(annotation)))
    return {annotation}


class ParamsModel(BaseModel):
    """params.yaml and each of its sections: frozen, unknown keys refused, and `true` (YAML's yes and on too) where a
    number and no boolean is expected refused, which pydantic would read as 1 (`fuse.min_views: yes`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_not_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):
            accepted = value_types(cls.model_fields[info.field_name].annotation)
            if accepted & {int, float} and bool not in accepted:
                raise ValueError("expected a number, not a boolean (YAML reads yes, on and true as one)")
        return value


class Section(ParamsModel):
    """One params.yaml section. Subclasses give every field a `Field(description=...)` and a default."""

    def settings_read(self) -> dict:
        """The section's settings a stage reads, as JSON: what its artifact's provenance records. Every field, unless a
        choice in the section leaves some unread (extract's other backend)."""
        return self.model_dump(mode="json")


def unique_names(value: list[str] | None) -> list[str] | None:
    """A list of class names or texts: refused when empty, when a name is blank or has spaces around it, or when a
    name repeats, also in another case (a repeated class would count twice in every mean over classes); None passes."""
    if value is None:
        return value
    if not value:
        raise ValueError("expected at least one name, or null")
    blank = [name for name in value if not name.strip() or name != name.strip()]
    if blank:
        raise ValueError(f"{blank}: blank or with spaces around it; expected each name trimmed and non-blank")
    folded = [name.casefold() for name in value]
    repeated = sorted({name for name, key in zip(value, folded) if folded.count(key) > 1})
    if repeated:
        raise ValueError(f"{repeated} listed more than once (case aside); expected each name once")
    return value
