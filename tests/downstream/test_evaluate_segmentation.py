"""``anatssl evaluate segmentation`` re-scores a fine-tuned model exactly as fine-tuning scored it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from anatssl.downstream.config import load_finetune_config
from anatssl.downstream.segmentation import finetune_segmentation
from anatssl.errors import CheckpointError

FAST = [
    "model.backbone=conv",
    "model.feature_size=4",
    "train.max_steps=2",
    "train.batch_size=1",
    "segmentation.samples_per_volume=1",
    "segmentation.sw_batch_size=1",
    "split.n_test=2",
    "train.progress=false",
    "optim.warmup_steps=0",
    "train.device=cpu",
]


def _evaluate(argv: list[str]) -> int:
    from anatssl.cli import evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "segmentation", *argv])
    return int(args.func(args))


def test_not_a_finetune_dir(tmp_path: Path, labelled_dataset: Path) -> None:
    with pytest.raises(CheckpointError, match="is not an `anatssl finetune` output"):
        _evaluate(["--model", str(tmp_path), "--data", str(labelled_dataset), "--out", str(tmp_path / "e")])


@pytest.mark.slow
def test_rescoring_reproduces_finetune_metrics(tmp_path: Path, labelled_dataset: Path) -> None:
    cfg = load_finetune_config("segmentation", "tiny", overrides=FAST)
    ft = tmp_path / "ft"
    finetune_segmentation(cfg, labelled_dataset, "scratch", ft)
    assert _evaluate(["--model", str(ft), "--data", str(labelled_dataset), "--out", str(tmp_path / "e")]) == 0
    a = json.loads((ft / "metrics.json").read_text())
    b = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert b["cases"] == a["test_cases"] and b["per_case"] == a["per_case"]
    assert (
        _evaluate(
            [
                "--model",
                str(ft),
                "--data",
                str(labelled_dataset),
                "--out",
                str(tmp_path / "all"),
                "--cases",
                "all",
            ]
        )
        == 0
    )
    assert len(json.loads((tmp_path / "all" / "metrics.json").read_text())["cases"]) == 5
