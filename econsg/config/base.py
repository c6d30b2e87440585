"""Base class for every params.yaml section: frozen, documented, unknown keys refused."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """One params.yaml section. Subclasses give every field a `Field(description=...)` and a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def params_hash(self) -> str:
        """A stable content hash of the section's values (sha256 of canonical JSON)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()
