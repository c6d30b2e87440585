"""Base class for every params.yaml section: frozen, documented, unknown keys refused."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


# A length in the scene's units, or 'auto': a fraction of the scene's median depth (`econsg.scene.scale.resolve_scene_length`)
SceneLength = Annotated[float, Field(gt=0)] | Literal["auto"]


class Section(BaseModel):
    """One params.yaml section. Subclasses give every field a `Field(description=...)` and a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


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
