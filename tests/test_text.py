"""Text side: the hashed offline text encoder and prompt-template averaging."""

import numpy as np
import pytest

from econsg.errors import EconsgError
from econsg.features.text import PROMPT_TEMPLATES, HashedTextEncoder, encode_vocabulary, prompt_words


def test_hashed_encoder_is_deterministic_across_instances_and_seed_dependent():
    prompts = ["a photo of a chair.", "a sofa in a room."]
    a = HashedTextEncoder(dim=64, seed=3).encode(prompts)
    b = HashedTextEncoder(dim=64, seed=3).encode(prompts)
    c = HashedTextEncoder(dim=64, seed=4).encode(prompts)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 64) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert np.abs(a - c).max() > 0.1


def test_prompt_embedding_is_normalised_sum_of_distinct_word_vectors():
    enc = HashedTextEncoder(dim=32, seed=0)
    expected = enc.word_vector("red") + enc.word_vector("chair")
    expected /= np.linalg.norm(expected)
    got = enc.encode(["Red chair, red!"])[0]  # case, punctuation and repeats do not matter
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert prompt_words("a photo of a chair.") == ["a", "photo", "of", "chair"]


def test_words_of_any_script_are_words_and_ascii_splits_as_before():
    assert prompt_words("стол") != prompt_words("стул") and prompt_words("télé") == ["télé"]
    assert prompt_words("Coffee_table, bed-side TV2") == ["coffee", "table", "bed", "side", "tv2"]
    enc = HashedTextEncoder(dim=32, seed=0)
    assert float(enc.encode(["стол"])[0] @ enc.encode(["стул"])[0]) < 0.9


def test_vocabulary_cosines_have_a_shared_template_component():
    enc = HashedTextEncoder(dim=512, seed=0)
    names = ["wall", "floor", "chair", "sofa", "lamp", "plant"]
    t = encode_vocabulary(enc, names, PROMPT_TEMPLATES)
    cos = t @ t.T
    off = cos[~np.eye(len(names), dtype=bool)]
    assert 0.4 < off.min() and off.max() < 0.9  # clearly related, clearly distinct (CLIP-like)
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-5)
    # a shared word brings classes closer
    t2 = encode_vocabulary(enc, ["table", "coffee table", "chair"], PROMPT_TEMPLATES)
    assert t2[0] @ t2[1] > t2[0] @ t2[2]


class _TableEncoder:
    """Known vectors per prompt, to check the averaging arithmetic."""

    dim = 2

    def __init__(self, table):
        self.table = table

    def encode(self, prompts):
        return np.array([self.table[p] for p in prompts], dtype=np.float32)


def test_encode_vocabulary_averages_templates_then_renormalises():
    table = {"x cat": [1.0, 0.0], "y cat": [0.0, 1.0], "x dog": [1.0, 0.0], "y dog": [1.0, 0.0]}
    t = encode_vocabulary(_TableEncoder(table), ["cat", "dog"], ["x {}", "y {}"])
    np.testing.assert_allclose(t[0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    np.testing.assert_allclose(t[1], [1.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    "names, templates, match",
    [([], ["a {}"], "class_names"), (["cat"], ["no slot"], "templates"), (["cat"], [], "templates"), ([""], ["a {}"], "class_names"),
     (["cat"], ["a {} in the {room}"], "no other"), (["cat"], ["a {} {"], "not a format string")],
)
def test_encode_vocabulary_rejects_bad_input(names, templates, match):
    with pytest.raises(EconsgError, match=match):
        encode_vocabulary(HashedTextEncoder(dim=8), names, templates)


def test_a_name_without_words_is_refused_by_the_offline_encoder_only():
    # Templated, '!!!' would embed as the templates' own words: the same vector as any other wordless text.
    with pytest.raises(EconsgError, match="'!!!' has no words"):
        encode_vocabulary(HashedTextEncoder(dim=8), ["chair", "!!!"], ["a photo of a {}."])
    table = {"a !!!": [1.0, 0.0], "a chair": [0.0, 1.0]}  # an encoder with its own tokens may read it
    np.testing.assert_allclose(encode_vocabulary(_TableEncoder(table), ["!!!"], ["a {}"]), [[1.0, 0.0]])


def test_encoder_rejects_empty_prompt_and_bare_string():
    enc = HashedTextEncoder(dim=8)
    with pytest.raises(EconsgError, match="prompts"):
        enc.encode(["..."])
    with pytest.raises(EconsgError, match="prompts"):
        enc.encode("a chair")
    with pytest.raises(EconsgError, match="dim"):
        HashedTextEncoder(dim=1)
