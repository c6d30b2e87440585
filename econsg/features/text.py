"""Text side of the method: prompt templates, vocabulary embeddings t_c, and an offline text encoder.

`HashedTextEncoder` is a stand-in for CLIP's text tower, used by the embedded demo because model weights
cannot be downloaded on these machines. It has no language understanding: a prompt's embedding is the
normalised sum of one fixed random unit vector per distinct word, each drawn from a generator seeded by a
stable hash (sha256) of the word and the encoder's seed. Words shared by the prompt templates ("a",
"photo", "of", ...) give every class a common component, so the template-averaged class embeddings have
pairwise cosines around 0.5-0.8, like CLIP's; class names that share a word ("table", "coffee table")
are closer still. Everything else about it (synonyms, paraphrase) is what a real text tower would add.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Sequence

import numpy as np

from econsg.errors import EconsgError
from econsg.features.base import TextEncoder, normalize_rows

# CLIP-style prompt ensemble (a short subset of the ImageNet templates plus indoor ones).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a {} in a room.",
    "a photo of the {} in the scene.",
    "a rendering of a {}.",
    "there is a {} in the scene.",
)

_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script: 'стол' and 'стул' are two words, as 'bed' and 'bad'


def template_error(template: object) -> str | None:
    """Why `template` cannot take a class name: None when it is a string with exactly one bare '{}' and no other
    format field ('{{' and '}}' stand for braces), else what is wrong with it."""
    if not isinstance(template, str):
        return f"expected a string, got {type(template).__name__}"
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as error:  # a lone '{' or '}'
        return f"not a format string ({error}); write a literal brace as '{{{{' or '}}}}'"
    if fields != [("", "", None)]:
        return "expected exactly one '{}' (the class name) and no other '{...}' field"
    return None


def prompt_words(prompt: str) -> list[str]:
    """Distinct lower-case alphanumeric words of a prompt, in order of first appearance."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(prompt.lower()):
        seen.setdefault(word, None)
    return list(seen)


class HashedTextEncoder:
    """Offline stand-in for CLIP's text tower: prompt -> normalised sum of per-word random unit vectors.

    dim: embedding width D; seed: selects the word vectors (a fixed part of the offline text space, not the
    run's randomness: every stage embedding text must use the same seed). Deterministic across processes.
    """

    def __init__(self, dim: int = 512, seed: int = 0):
        if int(dim) != dim or dim < 2:
            raise EconsgError(f"dim: got {dim!r}, expected an integer >= 2")
        if int(seed) != seed or seed < 0:
            raise EconsgError(f"seed: got {seed!r}, expected a non-negative integer")
        self.dim = int(dim)
        self.seed = int(seed)
        self._word_vectors: dict[str, np.ndarray] = {}

    def word_vector(self, word: str) -> np.ndarray:
        """[D] float32 unit vector of one word, drawn from a generator seeded by sha256(seed, word)."""
        vector = self._word_vectors.get(word)
        if vector is None:
            digest = hashlib.sha256(f"{self.seed}\x00{word}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:16], "little"))
            vector = normalize_rows(rng.standard_normal(self.dim))
            self._word_vectors[word] = vector
        return vector

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """[P, D] float32 unit embeddings of the prompts (normalised sum of their distinct words' vectors)."""
        if isinstance(prompts, str):
            raise EconsgError(f"prompts: got a single string {prompts!r}, expected a sequence of prompts")
        out = np.zeros((len(prompts), self.dim), dtype=np.float32)
        for i, prompt in enumerate(prompts):
            words = prompt_words(prompt)
            if not words:
                raise EconsgError(f"prompts[{i}]: {prompt!r} has no words; expected text such as 'a photo of a chair.'")
            out[i] = np.sum([self.word_vector(w) for w in words], axis=0)
        return normalize_rows(out)


def encode_vocabulary(
    encoder: TextEncoder, class_names: Sequence[str], templates: Sequence[str] = PROMPT_TEMPLATES
) -> np.ndarray:
    """Class embeddings t_c, [C, D] float32: encode every template per class, average, renormalise.

    Each template must contain one '{}' where the class name goes.
    """
    names = list(class_names)
    if not names:
        raise EconsgError("class_names: empty; expected at least one class name")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise EconsgError(f"class_names: got {name!r}, expected non-empty strings")
        if isinstance(encoder, HashedTextEncoder) and not prompt_words(name):
            # Its prompts would hold the templates' words only: every such text embeds alike and names nothing.
            raise EconsgError(f"class_names: {name!r} has no words the offline text encoder reads; "
                              "expected letters or digits, such as 'chair'")
    templates = list(templates)
    if not templates:
        raise EconsgError("templates: empty; expected at least one prompt template containing '{}'")
    for template in templates:
        if (why := template_error(template)) is not None:
            raise EconsgError(f"templates: {template!r}: {why}")
    prompts = [template.format(name) for name in names for template in templates]
    embeddings = np.asarray(encoder.encode(prompts), dtype=np.float32)
    if embeddings.shape != (len(prompts), encoder.dim):
        raise EconsgError(f"encoder: returned shape {embeddings.shape}, expected {(len(prompts), encoder.dim)}")
    per_class = normalize_rows(embeddings).reshape(len(names), len(templates), encoder.dim).mean(axis=1)
    return normalize_rows(per_class)
