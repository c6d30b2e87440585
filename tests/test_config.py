from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from econsg.config import ConfigError, Params, load_params, parse_params
from econsg.config.base import Section

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_file_is_valid_and_matches_defaults():
    params = load_params(ROOT / "params.yaml")
    assert params == Params(), "params.yaml drifted from the code defaults; regenerate it with `econsg params defaults`"


def test_unknown_keys_are_refused_with_section_field_location():
    with pytest.raises(ConfigError) as info:
        parse_params({"crr": {"tau_1": 0.5}, "splat": {"iterations": -3}, "bogus": 1})
    lines = info.value.lines
    assert any(line.startswith("crr.tau_1: unknown key") for line in lines)
    assert any(line.startswith("splat.iterations:") for line in lines)
    assert any(line.startswith("bogus: unknown key (not a section or top-level key of params.yaml; check the spelling)")
               for line in lines)


def test_a_misspelt_key_is_answered_with_the_nearest_field():
    with pytest.raises(ConfigError) as info:
        parse_params({"splat": {"iteration": 3}, "extract": {"synthetic": {"feature_nois": 1.0}}, "splt": {}})
    assert sorted(info.value.lines) == [
        "extract.synthetic.feature_nois: unknown key (not a field of this section; did you mean 'feature_noise'?)",
        "splat.iteration: unknown key (not a field of this section; did you mean 'iterations'?)",
        "splt: unknown key (not a section or top-level key of params.yaml; did you mean 'splat'?)",
    ]


def test_a_replaced_key_names_its_replacement():
    with pytest.raises(ConfigError) as info:
        parse_params({"splat": {"distill_ignored": True}})
    assert info.value.lines == [
        "splat.distill_ignored: replaced by splat.distill_pixels (true -> all, false -> labelled; default labelled_or_pooled)"
    ]
    with pytest.raises(ConfigError) as info:
        parse_params({"evaluate": {"consistency_pairs": 4096}})
    assert info.value.lines[0].startswith("evaluate.consistency_pairs: removed: nothing ever read it")


def test_sections_are_frozen_and_fully_described():
    def check(model: type[BaseModel], where: str):
        for name, field in model.model_fields.items():
            assert field.description, f"{where}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, Section):
                check(annotation, f"{where}.{name}")

    for name, field in Params.model_fields.items():
        assert field.description, f"{name} has no description"
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            assert field.annotation.model_config.get("extra") == "forbid"
            check(field.annotation, name)
    params = Params()
    with pytest.raises(ValidationError, match="frozen"):
        params.seed = 1
    for name in Params.model_fields:
        section = getattr(params, name)
        if isinstance(section, Section):
            first = next(iter(type(section).model_fields))
            with pytest.raises(ValidationError, match="frozen"):
                setattr(section, first, getattr(section, first))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("crr: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    twice = tmp_path / "twice.yaml"  # PyYAML alone would drop the first section's voxel size silently
    twice.write_text("fuse:\n  voxel_size: 0.5\nseed: 1\nfuse:\n  min_views: 2\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'fuse' \(first given on line 1\)"):
        load_params(twice)
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(listed)
    # a YAML merge key is a default the mapping may override, not a second key
    merged = tmp_path / "merged.yaml"
    merged.write_text("x-defaults: &d {voxel_size: 0.25, min_views: 3}\nfuse:\n  <<: *d\n  voxel_size: 0.5\n")
    with pytest.raises(ConfigError, match="x-defaults"):  # an anchor's own section is still an unknown section
        load_params(merged)
    merged.write_text("fuse:\n  <<: {voxel_size: 0.25, min_views: 3}\n  voxel_size: 0.5\n")
    assert (load_params(merged).fuse.voxel_size, load_params(merged).fuse.min_views) == (0.5, 3)
    # infinity and NaN are no setting: .inf voxels would thin the initial cloud to one point without a word
    infinite = tmp_path / "inf.yaml"
    infinite.write_text("fuse:\n  voxel_size: .inf\n")
    with pytest.raises(ConfigError, match=r"fuse.voxel_size"):
        load_params(infinite)


def test_a_bad_override_is_reported_with_the_override_that_set_it():
    assert load_params(ROOT / "params.yaml", ["crr.tau1=0.7"]).crr.tau1 == 0.7
    with pytest.raises(ConfigError) as info:
        load_params(ROOT / "params.yaml", ["synth.num_objects=12"])
    assert info.value.source.endswith("params.yaml --set synth.num_objects=12")
    assert any(line.startswith("synth:") and "num_objects (12)" in line for line in info.value.lines)


def test_a_value_no_member_of_a_union_takes_gets_one_line():
    with pytest.raises(ConfigError) as info:
        parse_params({"fuse": {"voxel_size": "big"}, "ingest": {"init_voxel_size": -1}})
    assert info.value.lines == [
        "ingest.init_voxel_size: Input should be greater than 0 or Input should be 'auto' (got -1)",
        "fuse.voxel_size: Input should be a valid number, unable to parse string as a number or Input should be "
        "'auto' (got 'big')",
    ]
    assert parse_params({"fuse": {"voxel_size": "auto"}}).fuse.voxel_size == "auto"


def test_a_sections_own_check_names_the_section_without_echoing_its_values():
    with pytest.raises(ConfigError) as info:
        parse_params({"synth": {"num_objects": 9}})
    (line,) = info.value.lines
    assert line.startswith("synth: ") and "num_objects (9) exceeds" in line and "(got {" not in line


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("evaluate", "vocabulary", ["chair", "wall", "chair"], "['chair'] listed more than once"),
    ("evaluate", "vocabulary", [], "expected at least one name, or null"),
    ("extract", "vocabulary", ["wall", "wall"], "['wall'] listed more than once"),
    ("extract", "open_set_classes", ["plant", "plant"], "['plant'] listed more than once"),
    ("extract", "vocabulary", ["wall", "", "bed"], "['']: blank or with spaces around it"),
    ("extract", "vocabulary", ["wall", " Wall", "bed"], "[' Wall']: blank or with spaces around it"),
    ("evaluate", "vocabulary", ["wall", "Wall", "bed"], "['Wall', 'wall'] listed more than once (case aside)"),
    ("evaluate", "vocabulary", ["bed"], "['bed']: one word; expected at least two"),
    ("extract", "templates", ["a {} in the {room}."], "no other '{...}' field"),
    ("extract", "templates", ["a {} {"], "not a format string"),
])
def test_a_vocabulary_with_a_repeated_or_no_name_is_refused(section, key, value, message):
    with pytest.raises(ConfigError) as info:
        parse_params({section: {key: value}})
    assert any(line.startswith(f"{section}.{key}:") and message in line for line in info.value.lines)


def test_an_open_set_class_in_the_vocabulary_is_refused_in_any_case():
    """CLIP's tokenizer lower-cases, as the offline encoder does: 'Plant' is the open-set 'plant', trained on."""
    with pytest.raises(ConfigError, match=r"\['plant'\] also listed in open_set_classes"):
        parse_params({"extract": {"vocabulary": ["wall", "Plant"], "open_set_classes": ["plant"]}})


def test_an_override_that_is_not_yaml_and_a_home_path_are_refused_in_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\n")
    with pytest.raises(ConfigError) as info:
        load_params(params, ("extract.vocabulary=[a, b",))
    assert info.value.lines[0].startswith("--set 'extract.vocabulary=[a, b': the value is not valid YAML")
    with pytest.raises(ConfigError) as info:
        load_params(params, ("paths.data=~/scenes/kitchen",))
    assert info.value.lines[0].startswith("paths.data:") and "'~' is not expanded" in info.value.lines[0]
    for boolean in ("seed=true", "crr.min_votes=true", "fuse.min_views=yes", "fuse.voxel_size=on"):
        with pytest.raises(ConfigError) as info:
            load_params(params, (boolean,))
        assert info.value.lines[0].startswith(boolean.split("=")[0] + ":") and "expected a number, not a boolean" in \
            info.value.lines[0]
    assert load_params(params, ("crr.enabled=false", "splat.near_plane=auto")).crr.enabled is False
    for blank in ("''", "."):
        with pytest.raises(ConfigError) as info:
            load_params(params, (f"paths.artifacts={blank}",))
        assert info.value.lines[0].startswith("paths.artifacts:") and "expected a folder path" in info.value.lines[0]
    params.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_params(params, ("seed=1",))


def test_the_softmax_temperature_follows_the_backend_unless_set():
    """CLIP's class cosines differ by ~0.05: at the hashed encoder's T = 0.05 its probabilities would be nearly flat."""
    assert parse_params({}).extract.softmax_temperature == 0.05
    assert parse_params({"extract": {"backend": "openclip_sam"}}).extract.softmax_temperature == 0.01
    assert parse_params({"extract": {"backend": "openclip_sam", "temperature": 0.02}}).extract.softmax_temperature == 0.02
    with pytest.raises(ConfigError) as info:
        parse_params({"extract": {"temperature": 0}})
    assert info.value.lines[0].startswith("extract.temperature:")


@pytest.mark.parametrize("section, key", [("extract", "temperature"), ("autoencode", "temperature"),
                                          ("splat", "temperature"), ("splat", "ce_temperature")])
def test_a_temperature_that_would_overflow_cos_over_t_is_refused_before_any_work(section, key):
    """At T = 1e-40 autoencode wrote a store of NaN and said done; 1e-3 is the floor, CLIP's 0.01 well above it."""
    assert getattr(getattr(parse_params({section: {key: 0.001}}), section), key) == 0.001
    with pytest.raises(ConfigError) as info:
        parse_params({section: {key: 1e-40}})
    assert info.value.lines[0].startswith(f"{section}.{key}")


def test_a_seed_torchs_generators_cannot_take_is_refused_before_any_work():
    """autoencode and splat seed torch with seed x 1000 + k, which must stay below 2^64: 2e16 failed halfway."""
    assert parse_params({"seed": 2**32 - 1}).seed == 2**32 - 1
    with pytest.raises(ConfigError) as info:
        parse_params({"seed": 2 * 10**16})
    assert info.value.lines[0].startswith("seed")


def test_timing_repeats_are_bounded_so_evaluate_cannot_spend_hours_timing():
    assert parse_params({"evaluate": {"timing_repeats": 100}}).evaluate.timing_repeats == 100
    with pytest.raises(ConfigError) as info:
        parse_params({"evaluate": {"timing_repeats": 10**6}})
    assert info.value.lines[0].startswith("evaluate.timing_repeats")
