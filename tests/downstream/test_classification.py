"""Classification fine-tuning and the frozen-feature probe on a tiny lesion / no-lesion NIfTI set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from downstream_fixtures import write_labelled_dataset

from anatssl.downstream.classification import classification_scores, stratified_split
from anatssl.downstream.config import SplitConfig, load_finetune_config
from anatssl.downstream.runner import run_finetune
from anatssl.errors import DataError

FAST = [
    "model.backbone=conv",
    "model.feature_size=4",
    "train.max_steps=2",
    "train.batch_size=2",
    "classification.input_size=[64,64,64]",
    "split.n_test=4",
    "train.progress=false",
    "train.device=cpu",
]


def test_scores_hand_computed() -> None:
    y = np.array([0, 1, 1, 0])
    s = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, -1.0], [0.0, -2.0]])  # margins 1, 2, -1, -2
    m = classification_scores(y, s)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["auc"] == pytest.approx(0.75)  # positives (2, -1) vs negatives (1, -2): 3 of 4 pairs ordered


def test_stratified_split_holds_both_classes() -> None:
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    tr, te = stratified_split(y, SplitConfig(n_test=4, split_seed=0, labeled=2))
    assert sorted(y[te].tolist()) == [0, 0, 1, 1] or sorted(y[te].tolist()) == [0, 0, 0, 1]
    assert set(y[te]) == {0, 1} and set(y[tr]) == {0, 1} and not set(tr) & set(te)
    with pytest.raises(DataError, match="--labeled 9 is larger"):
        stratified_split(y, SplitConfig(n_test=4, labeled=9))


def test_single_class_refused(tmp_path: Path) -> None:
    data = write_labelled_dataset(tmp_path / "d", n=6, lesion=False)
    cfg = load_finetune_config("classification", "tiny", overrides=FAST)
    with pytest.raises(
        DataError, match="every volume has lesion=0; a classification dataset needs at least two"
    ):
        run_finetune(cfg, data, "scratch", tmp_path / "o")


def test_missing_class_field(tmp_path: Path) -> None:
    data = write_labelled_dataset(tmp_path / "d", n=6, lesion=True)
    cfg = load_finetune_config("classification", "tiny", overrides=[*FAST, "classification.label_key=class"])
    with pytest.raises(DataError, match="has no 'class' field"):
        run_finetune(cfg, data, "scratch", tmp_path / "o")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "probe"])
def test_classification_and_probe_end_to_end(tmp_path: Path, task: str) -> None:
    torch.set_num_threads(1)
    data = write_labelled_dataset(tmp_path / "d", n=10, size=40, lesion=True)
    cfg = load_finetune_config(task, "tiny", overrides=FAST)
    m = run_finetune(cfg, data, "scratch", tmp_path / "o")
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["task"] == task and saved["labeled"] == 6 and len(saved["test_cases"]) == 4
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["auc"] <= 1.0
