"""Typed config: YAML < CLI overrides, errors that name the key and where it came from."""

import pytest

from rlhf.config import ConfigError, describe, field_docs, load_config
from rlhf.lm.config import GenerateConfig


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_yaml_and_overrides(tmp_path):
    p = write(tmp_path, "n: 3\nsampling:\n  temperature: 0.7\n  top_k: 5\n")
    cfg = load_config(GenerateConfig, p, ["sampling.top_k=9", "runtime.seed=4", "model=x"])
    assert cfg.n == 3 and cfg.sampling.temperature == 0.7
    assert cfg.sampling.top_k == 9 and cfg.runtime.seed == 4 and cfg.model == "x"
    assert cfg.sampling.max_new_tokens == 64  # default kept


def test_scientific_notation_and_int_to_float(tmp_path):
    p = write(tmp_path, "sampling:\n  top_p: 1\n  temperature: 5e-1\n")
    cfg = load_config(GenerateConfig, p)
    assert cfg.sampling.top_p == 1.0 and isinstance(cfg.sampling.top_p, float)
    assert cfg.sampling.temperature == 0.5


def test_unknown_key_names_key_file_and_line(tmp_path):
    p = write(tmp_path, "n: 2\nsampling:\n  temprature: 0.7\n")
    with pytest.raises(ConfigError, match=r"sampling\.temprature: unknown key.*c\.yaml:3"):
        load_config(GenerateConfig, p)


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "sampling:\n  max_new_tokens: many\n")
    with pytest.raises(ConfigError, match=r"sampling\.max_new_tokens: expected an integer.*:2"):
        load_config(GenerateConfig, p)
    with pytest.raises(ConfigError, match=r"sampling\.greedy: expected true or false"):
        load_config(GenerateConfig, None, ["sampling.greedy=3"])


def test_impossible_value_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"sampling\.top_p: must be in \(0, 1\].*override"):
        load_config(GenerateConfig, None, ["sampling.top_p=1.5"])
    p = write(tmp_path, "runtime:\n  threads: -1\n")
    with pytest.raises(ConfigError, match=r"runtime\.threads: must be >= 0.*c\.yaml:2"):
        load_config(GenerateConfig, p)


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(GenerateConfig, None, ["sampling.top_p"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(GenerateConfig, tmp_path / "nope.yaml")


def test_every_field_is_documented():
    from rlhf.config import RuntimeConfig
    from rlhf.lm.config import SamplingConfig

    for cls in (GenerateConfig, SamplingConfig, RuntimeConfig):
        docs = field_docs(cls)
        missing = [f for f in cls.__dataclass_fields__ if not docs.get(f)]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
    assert "Softmax temperature" in describe(GenerateConfig)


def test_nested_section_keeps_parent_defaults(tmp_path):
    """A section given in YAML starts from the parent's default_factory, not the bare class."""
    from dataclasses import dataclass, field

    from rlhf.lm.config import SamplingConfig

    @dataclass
    class Outer:
        sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(top_k=7))
        """Sampling with a non-default top_k."""

    p = write(tmp_path, "sampling:\n  temperature: 0.5\n")
    cfg = load_config(Outer, p)
    assert cfg.sampling.top_k == 7 and cfg.sampling.temperature == 0.5
    assert load_config(Outer, None, ["sampling.greedy=true"]).sampling.top_k == 7
