import pytest

from clpau.config import ConfigError, load_params, parse_params


def test_repo_params_are_valid():
    params = load_params("params.yaml")
    assert params.extract.clip_len >= params.extract.clip_stride


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("extract:\n  clip_lenght: 16\n")
    with pytest.raises(ConfigError, match=r"extract\.clip_lenght: unknown key"):
        load_params(f)


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"extract\.crop_size: .*(greater|less)"):
        parse_params({"extract": {"crop_size": 8}})
    with pytest.raises(ConfigError, match=r"extract\.workers"):
        parse_params({"extract": {"workers": "many"}})


def test_cross_field_rule():
    with pytest.raises(ConfigError, match="clip_stride"):
        parse_params({"extract": {"clip_len": 4, "clip_stride": 8}})


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"pretrian: unknown key"):
        parse_params({"pretrian": {}})


def test_every_section_converts_to_a_dict():
    """Prefect copies parameters with `dict(model)`, which calls `.keys()` when the model has it: a field named like a
    mapping method (`keys`, `items`, `values`) breaks every flow that receives that section."""
    params = load_params("params.yaml")
    for name in type(params).model_fields:
        section = getattr(params, name)
        assert dict(section).keys() == dict(section.model_dump()).keys(), name
