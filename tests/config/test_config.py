from pathlib import Path

import pytest
import yaml

from anatssl.config import parse_overrides, pretrain_config_to_dict
from anatssl.errors import ConfigError
from anatssl.runs import build_pretrain_config, load_pretrain_config


def test_preset_then_overrides_resolve_in_order(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("train:\n  batch_size: 3\n  max_steps: 7\n")
    cfg = load_pretrain_config(
        "swinssl", "tiny", user, ["train.max_steps=20", "seed=5", "swinssl.temperature=0.2"]
    )
    assert cfg.train.batch_size == 3  # from the user file
    assert cfg.train.max_steps == 20  # override beats the file
    assert cfg.seed == 5
    assert cfg.model.feature_size == 12  # from the tiny preset
    assert cfg.params.crop_size == (64, 64, 64)  # preset list -> tuple
    assert cfg.params.temperature == pytest.approx(0.2)


def test_resolved_config_round_trips_through_yaml() -> None:
    cfg = load_pretrain_config("swinssl", "tiny", None, ["optim.lr=3e-4"])
    text = yaml.safe_dump(pretrain_config_to_dict(cfg))
    again = build_pretrain_config(yaml.safe_load(text))
    assert again == cfg


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as e:
        load_pretrain_config("swinssl", "tiny", None, ["train.max_step=20"])
    msg = str(e.value)
    assert "train.max_step" in msg or "'max_step'" in msg
    assert "max_steps" in msg and "batch_size" in msg


def test_unknown_top_level_and_method_keys() -> None:
    with pytest.raises(ConfigError, match="valid top-level keys"):
        load_pretrain_config("swinssl", "tiny", None, ["trian.max_steps=3"])
    with pytest.raises(ConfigError, match="temperature"):
        load_pretrain_config("swinssl", "tiny", None, ["swinssl.temprature=0.1"])


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.max_steps=abc", "train.max_steps must be an integer"),
        ("train.max_steps=0", "train.max_steps must be >= 1"),
        ("train.amp=fp8", "train.amp"),
        ("swinssl.crop_size=[64,64]", "needs 3 values"),
        ("model.backbone=resnet", "unknown backbone"),
        ("optim.lr=-1", "optim.lr must be > 0"),
    ],
)
def test_bad_values_are_named(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        cfg = load_pretrain_config("swinssl", "tiny", None, [override])
        from anatssl.methods import build_method

        build_method(cfg)  # backbone names are checked when built


def test_missing_preset_lists_available() -> None:
    with pytest.raises(ConfigError, match="available presets: .*tiny"):
        load_pretrain_config("swinssl", "huge")


def test_parse_overrides_types_and_errors() -> None:
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=true", "e=x"]) == {
        "a": {"b": 1, "c": [1, 2]},
        "d": True,
        "e": "x",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.max_steps"])


def test_crop_not_fitting_backbone_stride_is_rejected() -> None:
    from anatssl.methods import build_method

    cfg = load_pretrain_config(
        "swinssl", "tiny", None, ["model.backbone=conv", "swinssl.crop_size=[48,48,40]"]
    )
    with pytest.raises(ConfigError, match="divisible by 32"):
        build_method(cfg)


def test_setting_declares_a_range_the_loader_checks() -> None:
    """A method's own section declares ranges the same way (``config.loader.setting``)."""
    from dataclasses import dataclass

    from anatssl.config.loader import from_dict, setting

    @dataclass
    class Params:
        crop: tuple[int, ...] = setting((64, 64, 64), ge=32)
        momentum: float = setting(0.996, ge=0, le=1)
        queue: int | None = setting(None, gt=0)

    assert from_dict(Params, {"crop": [32, 96, 64], "momentum": 1, "queue": None}).crop == (32, 96, 64)
    assert from_dict(Params, {}).momentum == 0.996  # defaults are not re-checked
    with pytest.raises(ConfigError, match=r"every value of ssl.crop must be >= 32, got \[64, 16, 64\]"):
        from_dict(Params, {"crop": [64, 16, 64]}, "ssl")
    with pytest.raises(ConfigError, match=r"ssl.momentum must be >= 0 and <= 1, got 1.5"):
        from_dict(Params, {"momentum": 1.5}, "ssl")
    with pytest.raises(ConfigError, match=r"ssl.queue must be > 0, got 0"):
        from_dict(Params, {"queue": 0}, "ssl")
