"""Params of the synth stage: the embedded procedural room (econsg/scene/synthetic.py)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from econsg.config.base import Section
from econsg.errors import EconsgError
from econsg.scene.synthetic import (
    DEFAULT_OBJECT_CLASSES,
    DEFAULT_ROOM_SIZE,
    MAX_OBJECTS,
    check_object_classes,
    check_room_size,
    object_capacity,
)


class SynthParams(Section):
    """A room with furniture, rendered by an exact ray caster from two camera rings; every
    `test_every`-th view is held out for testing."""

    seed: int = Field(0, ge=0, description="Seed of the room layout, textures and camera jitter.")
    num_views: int = Field(48, ge=2, le=10_000, description="Number of rendered views (train + test).")
    test_every: int = Field(
        8, ge=2, description="View v is a test view when v % test_every == test_every - 1 (interleaved novel views)."
    )
    width: int = Field(
        256, ge=8, le=4096,
        description="Image width in pixels. At 256 x 192 the synthetic teacher's default 8-pixel cells "
        "(extract.synthetic.patch_size) form a 32 x 24 grid, near a real CLIP ViT-B/16's 28 x 28 at 448 px; at "
        "128 x 96 they form 16 x 12, which loses thin objects.",
    )
    height: int = Field(192, ge=8, le=4096, description="Image height in pixels.")
    num_objects: int = Field(
        6, ge=0, le=MAX_OBJECTS, description="Pieces of furniture; classes are drawn without replacement while possible."
    )
    object_classes: tuple[str, ...] = Field(
        DEFAULT_OBJECT_CLASSES,
        description="Object classes to draw from (each has a shape recipe): a non-empty subset of "
        f"{list(DEFAULT_OBJECT_CLASSES)}. All of them enter the class list after wall, floor, ceiling.",
    )
    fov_deg: float = Field(70.0, gt=20.0, lt=140.0, description="Horizontal field of view of every camera, degrees.")
    room_size: tuple[float, float, float] = Field(
        DEFAULT_ROOM_SIZE, description="Room extent (x, y, height) in metres; x, y in [4.5, 20], height in [2.2, 6]."
    )

    @field_validator("object_classes")
    @classmethod
    def _known_unique_classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return check_object_classes(value, where="object_classes")
        except EconsgError as error:
            raise ValueError(str(error)) from None

    @field_validator("room_size")
    @classmethod
    def _room_size_in_range(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        try:
            return check_room_size(value, where="room_size")
        except EconsgError as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _consistent(self) -> SynthParams:
        if self.test_every > self.num_views:
            raise ValueError(
                f"test_every ({self.test_every}) exceeds num_views ({self.num_views}); no view would be held out for testing"
            )
        capacity = object_capacity(self.room_size)
        if self.num_objects > capacity:
            raise ValueError(
                f"num_objects ({self.num_objects}) exceeds what a room of {list(self.room_size)} m holds ({capacity}); "
                "use fewer objects or a larger room_size"
            )
        return self
