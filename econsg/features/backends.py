"""Choose the extract backend and its text encoder from ExtractParams (the one place that switches)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from econsg.config import ExtractParams
from econsg.errors import EconsgError
from econsg.features.base import TextEncoder
from econsg.features.text import encode_vocabulary

# The hashed encoder's seed is part of the method's definition of the offline text space, not of the
# run's randomness: every stage that embeds text (extract, evaluate, query) must get the same vectors.
HASHED_TEXT_SEED = 0


def check_names_case(words: Sequence[str], scene_classes: Sequence[str], field: str) -> None:
    """Refuse a word that names one of the scene's classes in another case only ('Bed' for 'bed'): the text towers
    lower-case it into the class's own embedding, while its pixels would be matched to the ground truth by exact
    name, so the class would be trained on or scored under a name the scene does not have."""
    exact, folded = set(scene_classes), {name.casefold(): name for name in scene_classes}
    mismatched = [(word, folded[word.casefold()]) for word in words if word not in exact and word.casefold() in folded]
    if mismatched:
        pairs = ", ".join(f"{word!r} for {name!r}" for word, name in mismatched)
        raise EconsgError(f"{field}: {pairs}: the scene's class in another case; write each as the scene's class list "
                          "does (texts are matched to ground-truth classes by their exact name)")


def training_vocabulary(params: ExtractParams, scene_classes: Sequence[str]) -> list[str]:
    """The closed-set vocabulary: `extract.vocabulary`, else the scene's classes minus `open_set_classes`."""
    if params.vocabulary is not None:
        vocabulary = list(params.vocabulary)
        check_names_case(vocabulary, scene_classes, "extract.vocabulary")
    else:
        if not scene_classes:
            raise EconsgError("extract.vocabulary: the scene has no class list, so the vocabulary must be given (and a "
                              "scene without labels extract.backend: openclip_sam, since the synthetic teacher needs them)")
        vocabulary = [name for name in scene_classes if name not in set(params.open_set_classes)]
    if not vocabulary:
        raise EconsgError("extract.vocabulary: empty vocabulary; expected at least one class name")
    if len(set(vocabulary)) != len(vocabulary):
        raise EconsgError(f"extract.vocabulary: class names repeat in {vocabulary}")
    return vocabulary


def one_class_warning(vocabulary: Sequence[str]) -> str | None:
    """A warning for a one-class vocabulary: its softmax is 1 at every pixel, so every pixel takes that class at full
    confidence and crr's thresholds cannot tell anything apart."""
    if len(vocabulary) != 1:
        return None
    return (f"extract: warning: the vocabulary holds one class, {vocabulary[0]!r}: every pixel takes it at confidence 1; "
            "add the classes around it (wall, floor, table...) to extract.vocabulary")


def coarse_grid_warning(params: ExtractParams, height: int, width: int) -> str | None:
    """A warning when the synthetic teacher's patch is as large as the image's shorter side: its feature grid then has
    one cell across that side, and a view's pixels share one or two features whatever they show."""
    if params.backend != "synthetic" or params.synthetic.patch_size < min(height, width):
        return None
    return (f"extract: warning: extract.synthetic.patch_size {params.synthetic.patch_size} is not below the images' "
            f"shorter side ({min(height, width)} of {width} x {height}): one teacher feature spans the view; use a "
            "smaller patch (the default 8 suits 256 x 192)")


def absent_open_set_warning(params: ExtractParams, scene_classes: Sequence[str]) -> str | None:
    """A warning when `open_set_classes` names classes the scene lacks (the default 'plant' on a scene of your own, or
    a misspelt name): nothing is then held out of training for them, and evaluate scores no open-set class for them."""
    if params.vocabulary is not None or not scene_classes:
        return None
    known = set(scene_classes)
    absent = [name for name in params.open_set_classes if name not in known]
    if not absent:
        return None
    return (f"extract: warning: extract.open_set_classes {absent} not among the scene's classes {list(scene_classes)}, "
            "so nothing is held out for them; set it to classes of that list, or [] for no open-set class")


def build_text_encoder(params: ExtractParams, device: str = "cpu") -> TextEncoder:
    """The text tower matching the backend: a hashed stand-in offline, CLIP's for openclip_sam."""
    if params.backend == "synthetic":
        from econsg.features.text import HashedTextEncoder

        return HashedTextEncoder(dim=params.feature_dim, seed=HASHED_TEXT_SEED)
    from econsg.features.openclip_sam import load_openclip_text_encoder

    return load_openclip_text_encoder(params.openclip_sam, device)


def embed_classes(encoder: TextEncoder, class_names: Sequence[str], params: ExtractParams) -> np.ndarray:
    """[C, D] normalised text embeddings averaged over the prompt templates."""
    return np.asarray(encode_vocabulary(encoder, list(class_names), params.templates), dtype=np.float32)
