from pathlib import Path

import pytest

from clpau.config import ConfigError, Params, PretrainParams, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


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


def test_the_codes_defaults_are_params_yamls():
    # one source of truth: a section built from its code defaults is the shipped params.yaml, key for key
    shipped = load_params(ROOT / "params.yaml").model_dump(mode="json")
    coded = Params().model_dump(mode="json")

    def differences(a, b, path=""):
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
        return [] if a == b else [f"{path.lstrip('.')}: params.yaml {a!r}, code {b!r}"]

    assert not differences(shipped, coded), differences(shipped, coded)


def test_the_method_registry_is_the_one_list_of_methods():
    from clpau import cli
    from clpau.methods import METHODS, SECTIONS

    assert set(PretrainParams.model_fields["method"].annotation.__args__) == set(METHODS)
    assert {name for name, f in PretrainParams.model_fields.items() if f.annotation in SECTIONS.values()} == set(SECTIONS)
    assert all(set(m.sections) <= set(SECTIONS) for m in METHODS.values())
    pretrain = cli.build_parser()._subparsers._group_actions[0].choices["pretrain"]
    assert next(a for a in pretrain._actions if a.dest == "method").choices == list(METHODS)
    with pytest.raises(ConfigError, match="pretrain.method"):
        parse_params({"pretrain": {"method": "byol"}})


def test_a_methods_section_is_validated_and_a_misspelt_key_named():
    with pytest.raises(ConfigError, match=r"pretrain\.tcl\.tua: unknown key"):
        parse_params({"pretrain": {"tcl": {"tua": 0.2}}}, "params.yaml")
    with pytest.raises(ConfigError, match=r"pretrain\.cir\.every"):
        parse_params({"pretrain": {"cir": {"every": 0}}}, "params.yaml")


def test_a_flag_is_validated_as_the_file_is(tmp_path, capsys):
    from clpau import cli

    assert cli.main(["--params", str(tmp_path / "none.yaml"), "pretrain", "--max-steps", "0"]) == cli.EXIT_CONFIG
    assert "command line (pretrain): max_steps: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert cli.main(["--params", str(tmp_path / "none.yaml"), "evaluate", "--encoder", str(tmp_path / "no.pt"),
                     "--quiet"]) == cli.EXIT_INPUT
    assert "clpau evaluate: error: " in capsys.readouterr().err  # a missing input, named
