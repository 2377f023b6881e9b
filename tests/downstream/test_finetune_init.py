"""Fine-tuning from a pretraining run: the run fixes the model, the load is reported, mismatches refused."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from downstream_fixtures import fabricate_run

from anatssl.downstream.config import load_finetune_config
from anatssl.errors import CheckpointError, ConfigError

CONV4 = ("model.backbone=conv", "model.feature_size=4")
FAST = [
    "train.max_steps=2",
    "train.batch_size=1",
    "segmentation.samples_per_volume=1",
    "segmentation.sw_batch_size=1",
    "split.n_test=2",
    "train.progress=false",
    "optim.warmup_steps=0",
]


def _finetune(argv: list[str]) -> int:
    from anatssl.cli import finetune

    parser = argparse.ArgumentParser()
    finetune.add_parser(parser.add_subparsers())
    args = parser.parse_args(["finetune", *argv])
    return int(args.func(args))


def test_run_sections_replace_preset_and_overrides_win() -> None:
    init = {
        "model": {"backbone": "conv", "feature_size": 24},
        "data": {"hu_window": [-500.0, 500.0], "num_workers": 3},
    }
    cfg = load_finetune_config("segmentation", "tiny", from_init=init)
    assert cfg.model.backbone == "conv" and cfg.model.feature_size == 24
    assert cfg.data.hu_window == (-500.0, 500.0) and cfg.data.num_workers == 0  # only intensity settings kept
    cfg = load_finetune_config("segmentation", "tiny", overrides=["model.feature_size=36"], from_init=init)
    assert cfg.model.feature_size == 36


def test_bad_finetune_config_values() -> None:
    with pytest.raises(
        ConfigError, match=r"segmentation.roi_size = \(48, 64, 64\): every size must be a positive"
    ):
        load_finetune_config("segmentation", "tiny", overrides=["segmentation.roi_size=[48,64,64]"])
    with pytest.raises(ConfigError, match="unknown config key segmentation.'roi'; valid keys"):
        load_finetune_config("segmentation", "tiny", overrides=["segmentation.roi=1"])
    with pytest.raises(ConfigError, match="no fine-tuning preset 'huge'"):
        load_finetune_config("segmentation", "huge")


@pytest.mark.slow
def test_finetune_from_run_reports_load(labelled_dataset: Path, tmp_path: Path) -> None:
    run = fabricate_run(tmp_path / "run", overrides=CONV4)
    out = tmp_path / "ft"
    assert (
        _finetune(
            [
                "--task",
                "segmentation",
                "--data",
                str(labelled_dataset),
                "--init",
                str(run),
                "--out",
                str(out),
                "--labeled",
                "2",
                *FAST,
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["init"]["kind"] == "run" and m["init"]["method"] == "swinssl" and m["init"]["step"] == 3
    assert m["init"]["load"]["n_loaded"] > 0 and m["init"]["load"]["n_missing"] == 0
    assert m["labeled"] == 2
    assert "feature_size: 4" in (out / "config.yaml").read_text()


def test_finetune_from_run_with_other_size_is_refused(labelled_dataset: Path, tmp_path: Path) -> None:
    run = fabricate_run(tmp_path / "run", overrides=CONV4)
    with pytest.raises(
        CheckpointError, match=r"another model size: \d+ tensors differ in shape, e\.g\. down\.0"
    ):
        _finetune(
            [
                "--task",
                "segmentation",
                "--data",
                str(labelled_dataset),
                "--init",
                str(run),
                "--out",
                str(tmp_path / "ft"),
                *FAST,
                "model.feature_size=8",
            ]
        )
