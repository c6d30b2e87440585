"""2D vision-language features: text encoders, extract backends (synthetic teacher, open_clip + SAM)."""
