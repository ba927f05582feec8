"""Every YAML file under configs/ loads into its config class and validates."""

from pathlib import Path

import pytest
import yaml

from rlhf.config import ConfigError, get_key, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_class(name: str):
    """configs/<kind>_*.yaml -> the config class of that kind of run."""
    if name.startswith("reward"):
        from rlhf.reward.config import RewardTrainConfig

        return RewardTrainConfig
    if name.startswith("dpo"):
        from rlhf.dpo.config import DPOTrainConfig

        return DPOTrainConfig
    if name.startswith("sft"):
        from rlhf.sft.config import SFTConfig

        return SFTConfig
    if name.startswith("kto"):
        from rlhf.kto.config import KTOTrainConfig

        return KTOTrainConfig
    if name.startswith("policy"):
        from rlhf.policy.config import PolicyTrainConfig

        return PolicyTrainConfig
    if name.startswith("pairs"):
        from rlhf.feedback.config import PairsConfig

        return PairsConfig
    if name.startswith(("demo", "loop")):
        from rlhf.loop.config import LoopConfig

        return LoopConfig
    from rlhf.lm.config import GenerateConfig

    return GenerateConfig


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_file_loads(path):
    """Every key written in the file took effect, with the value written."""
    cfg = load_config(config_class(path.name), path)

    def leaves(node, prefix=""):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]

    written = list(leaves(yaml.safe_load(path.read_text()) or {}))
    assert written, path
    for key, value in written:
        got = get_key(cfg, key)
        assert got == (float(value) if isinstance(got, float) else value), key


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_file_rejects_unknown_override(path):
    with pytest.raises(ConfigError, match="no_such_key: unknown key"):
        load_config(config_class(path.name), path, ["no_such_key=1"])


def test_there_are_configs():
    assert len(list(CONFIGS.glob("*.yaml"))) >= 5
