"""The downloaded layouts in the runs: pretraining's VolumeSource skips a bad case with a warning,
fine-tuning's dataset reader drops one, MONAI's loader stacks channel files, the CLI takes --format, and
(slow) ``anatssl pretrain`` + ``anatssl finetune`` run straight from every layout's download folder:
nnU-Net multi-channel, MSD 4D multi-channel, BTCV, TotalSegmentator, AbdomenAtlas."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from layout_fixtures import (
    SHAPE,
    abdomenatlas,
    btcv,
    image,
    label_map,
    msd_4d,
    nnunet,
    save,
    totalsegmentator,
)

from anatssl.config.schema import DataConfig
from anatssl.data.layouts import KNOWN_FORMATS
from anatssl.data.source import VolumeSource
from anatssl.downstream.labelled import check_channels, read_labelled_dataset
from anatssl.errors import DataError


def validate(root: Path, tmp_path: Path, channels: int, caplog: pytest.LogCaptureFixture) -> tuple:
    src = VolumeSource(root, DataConfig(), cache_dir=tmp_path / "cache", channels=channels)
    with caplog.at_level(logging.WARNING, logger="anatssl"):
        bad = src.validate(progress=False)
    return src, bad


# -- pretraining: a long run skips the bad case ---------------------------------------------------------
def _missing_channel(root: Path) -> Path:
    p = root / "imagesTr" / "case_001_0001.nii.gz"
    p.unlink()
    return p


def _other_grid(root: Path) -> Path:
    return save(root / "imagesTr" / "case_001_0001.nii.gz", image(7), affine=np.diag([2.0, 2.0, 3.0, 1.0]))


def _label_outside_table(root: Path) -> Path:
    lab = label_map(1)
    lab[0:3, 0:3, 0:3] = 9
    return save(root / "labelsTr" / "case_001.nii.gz", lab)


@pytest.mark.parametrize(
    "damage,words",
    [
        (_missing_channel, "does not exist"),
        (_other_grid, "is not on the grid of channel 0 file"),
        (_label_outside_table, "holds values [9] outside the dataset's label table [0, 1, 2, 3]"),
    ],
)
def test_pretraining_skips_a_bad_nnunet_case_with_a_warning(tmp_path, caplog, damage, words):
    root = nnunet(tmp_path / "d", n=3)
    bad_file = damage(root)
    src, bad = validate(root, tmp_path, 2, caplog)
    assert [it.name for it, _ in bad] == ["case_001"]
    reason = bad[0][1]
    assert reason.startswith("case case_001: ") and str(bad_file) in reason and words in reason
    assert [it.name for it in src.items] == ["case_000", "case_002"]
    assert "skipping scan" in caplog.text and str(bad_file) in caplog.text
    vol = src.load(0)
    assert vol.image.shape == (2, *SHAPE)  # the good cases train, with both channels


def test_pretraining_skips_a_4d_file_with_another_channel_count(tmp_path, caplog):
    root = msd_4d(tmp_path / "Task01", n=3, channels=4)
    bad_file = save(root / "imagesTr" / "BRATS_002.nii.gz", np.stack([image(c) for c in range(3)], -1))
    src, bad = validate(root, tmp_path, 4, caplog)
    assert len(bad) == 1 and str(bad_file) in bad[0][1] and "has 3 channels" in bad[0][1]
    assert "4 expected" in bad[0][1] and len(src) == 2


def test_pretraining_skips_a_dicom_folder_with_two_series(tmp_path, caplog):
    pytest.importorskip("pydicom")
    from test_io import write_dicom_series

    root = tmp_path / "dicom"
    rng = np.random.default_rng(0)
    write_dicom_series(root / "good", rng.integers(-500, 500, (8, 8, 6)).astype(np.int16))
    mixed = write_dicom_series(
        root / "mixed", rng.integers(-500, 500, (8, 8, 6)).astype(np.int16), series_uid="1.2.1"
    )
    for p in write_dicom_series(tmp_path / "b", np.ones((8, 8, 6), np.int16), series_uid="1.2.2").iterdir():
        p.rename(mixed / f"b_{p.name}")
    src, bad = validate(root, tmp_path, 1, caplog)
    assert [it.image for it, _ in bad] == [mixed]
    assert "holds 2 DICOM series" in bad[0][1] and str(mixed) in bad[0][1] and len(src) == 1


def test_in_channels_disagreeing_with_the_channel_files(tmp_path):
    root = nnunet(tmp_path / "d", n=2)
    with pytest.raises(
        DataError, match=r"2 channel files each .*model.in_channels is 1; set model.in_channels=2"
    ):
        VolumeSource(root, DataConfig(), cache_dir=tmp_path / "cache", channels=1)
    cases, _ = read_labelled_dataset(root, cache_dir=tmp_path / "cache")
    with pytest.raises(
        DataError, match=r"images have 2 \(e.g. case_000\) channel\(s\) but model.in_channels is 1"
    ):
        check_channels(cases, 1, root)
    check_channels(cases, 2, root)
    task = msd_4d(tmp_path / "Task01", n=2, channels=4)
    with pytest.raises(
        DataError, match=r"images are 4D with 4 channels \(e.g. .*BRATS_000.nii.gz\) .*in_channels=4"
    ):
        VolumeSource(task, DataConfig(), cache_dir=tmp_path / "cache", channels=1)
    with pytest.raises(
        DataError, match=r"images are 3D \(1 channel\) .*in_channels is 2; set model.in_channels=1"
    ):
        VolumeSource(
            totalsegmentator(tmp_path / "ts", n=1), DataConfig(), cache_dir=tmp_path / "c2", channels=2
        )
    msd_cases, _ = read_labelled_dataset(task)
    with pytest.raises(DataError, match="set model.in_channels=4"):
        check_channels(msd_cases, 1, tmp_path / "Task01")


# -- fine-tuning: cases read, merged, stacked ------------------------------------------------------------
def test_finetuning_reads_nnunet_and_drops_a_case_missing_a_channel(tmp_path, caplog):
    root = nnunet(tmp_path / "d", n=4)
    gone = _missing_channel(root)
    with caplog.at_level(logging.WARNING, logger="anatssl"):
        cases, labels = read_labelled_dataset(root, cache_dir=tmp_path / "cache")
    assert [c.name for c in cases] == ["case_000", "case_002", "case_003"]
    assert f"skipping case case_001: case case_001: channel 1 (T2) file {gone} is missing" in caplog.text
    assert labels == {0: "background", 1: "liver", 2: "spleen", 3: "aorta"}
    assert cases[0].files == (
        root / "imagesTr" / "case_000_0000.nii.gz",
        root / "imagesTr" / "case_000_0001.nii.gz",
    )


def test_finetuning_merges_totalsegmentator_masks_and_drops_a_bad_case(tmp_path, caplog):
    root = totalsegmentator(tmp_path / "ts", n=4)
    bad = save(root / "s0002" / "segmentations" / "liver.nii.gz", np.zeros((24, 24, 20), np.uint8))
    with caplog.at_level(logging.INFO, logger="anatssl"):
        cases, labels = read_labelled_dataset(root)
    assert labels == {0: "background", 1: "aorta", 2: "liver", 3: "spleen"}
    assert [c.name for c in cases] == ["s0000", "s0001", "s0003"]
    assert f"skipping case s0002: case s0002: mask {bad} has shape (24, 24, 20)" in caplog.text
    assert "masks merged into label maps under" in caplog.text
    merged = cases[0].label
    assert merged is not None and merged.parent.parent == root / ".anatssl_cache"


def test_monai_loader_stacks_channel_files(tmp_path):
    """Fine-tuning's MONAI transforms (LoadImaged with ensure_channel_first) on a multi-file case."""
    from anatssl.downstream.segmentation import load_cases
    from anatssl.runs.resolve import load_finetune_config

    root = nnunet(tmp_path / "d", n=1)
    cases, labels = read_labelled_dataset(root, cache_dir=tmp_path / "cache")
    cfg = load_finetune_config(
        "segmentation", "tiny", None, ["model.in_channels=2", "data.hu_window=[-2000,2000]"]
    )
    (item,) = load_cases(cfg, cases, sorted(labels))
    assert tuple(item["image"].shape) == (2, *SHAPE)
    # CT scaling [-2000, 2000] -> [0, 1], channel c holds image(c, 1000 c)
    np.testing.assert_allclose(
        np.asarray(item["image"][1]), (image(1, offset=1000.0) + 2000) / 4000, atol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(item["label"][0]), label_map(0))


def test_monai_loader_reads_msd_4d_channels(tmp_path):
    from anatssl.downstream.segmentation import load_cases
    from anatssl.runs.resolve import load_finetune_config

    root = msd_4d(tmp_path / "Task01", n=1, channels=4)
    cases, labels = read_labelled_dataset(root)
    cfg = load_finetune_config(
        "segmentation", "tiny", None, ["model.in_channels=4", "data.hu_window=[-2000,2000]"]
    )
    (item,) = load_cases(cfg, cases, sorted(labels))
    assert tuple(item["image"].shape) == (4, *SHAPE)
    np.testing.assert_allclose(
        np.asarray(item["image"][3]), (image(3, offset=300.0) + 2000) / 4000, atol=1e-5
    )


def test_finetuning_refuses_nnunet_label_values_outside_the_table(tmp_path):
    from anatssl.downstream.labelled import check_label_values

    root = nnunet(tmp_path / "d", n=3)
    bad = _label_outside_table(root)
    cases, labels = read_labelled_dataset(root, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=rf"label file {bad} holds values \[9\] that .* does not name"):
        check_label_values(cases, labels)


# -- CLI -------------------------------------------------------------------------------------------------
def test_cli_format_choices_are_the_known_formats(capsys):
    from anatssl.cli.args import FORMATS
    from anatssl.cli.main import main

    assert FORMATS == KNOWN_FORMATS
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--method", "simmim", "--data", "x", "--out", "y", "--format", "nnunet3"])
    assert e.value.code == 2 and "invalid choice: 'nnunet3'" in capsys.readouterr().err


def test_cli_format_names_a_layout_that_is_not_there(tmp_path, capsys):
    from anatssl.cli.main import main

    root = nnunet(tmp_path / "d", n=2)
    code = main(["preprocess", "--data", str(root), "--format", "btcv", "--quiet"])
    assert code == 2 and "img/ holds no imgXXXX.nii.gz files" in capsys.readouterr().err


PRETRAIN = [
    "--method", "simmim", "model.backbone=conv", "train.max_steps=2", "train.batch_size=1",
    "train.progress=false", "train.tensorboard=false", "simmim.crop_size=[32,32,32]",
]  # fmt: skip
FINETUNE = [
    "--task", "segmentation", "train.max_steps=2", "train.batch_size=1", "train.progress=false",
    "optim.warmup_steps=0", "segmentation.roi_size=[32,32,32]", "segmentation.samples_per_volume=1",
    "segmentation.sw_batch_size=1", "segmentation.overlay_cases=0", "split.n_test=1",
]  # fmt: skip


def _metrics_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_pretrain_and_finetune_straight_from_nnunet_multichannel(tmp_path):
    from anatssl.cli.main import main

    root = nnunet(tmp_path / "Dataset003_Two", n=3)
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(root), "--out", str(run), "--format", "nnunet", *PRETRAIN]
    assert main([*args, "model.in_channels=2"]) == 0
    assert [r["step"] for r in _metrics_rows(run)] == [1, 2]
    ft = tmp_path / "ft"
    assert main(["finetune", "--data", str(root), "--init", str(run), "--out", str(ft), *FINETUNE]) == 0
    m = json.loads((ft / "metrics.json").read_text())
    assert m["structures"] == ["liver", "spleen", "aorta"] and m["labeled"] == 2
    assert m["init"]["kind"] != "scratch" and np.isfinite(m["final_loss"])


BTCV_STRUCTURES = [
    "spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "inferior_vena_cava", "portal_and_splenic_vein", "pancreas", "right_adrenal_gland", "left_adrenal_gland",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "layout,fmt,channels,structures",
    [
        ("msd", "msd", 4, ["edema", "non-enhancing", "enhancing"]),
        ("btcv", None, 1, BTCV_STRUCTURES),  # detected
        ("abdomenatlas", "abdomenatlas", 1, ["aorta", "liver", "spleen"]),
    ],
)
def test_pretrain_and_finetune_straight_from_the_other_layouts(tmp_path, layout, fmt, channels, structures):
    """MSD 4D (4 channels), BTCV and AbdomenAtlas download folders -> anatssl pretrain (2 steps) ->
    anatssl finetune from that run (2 steps), as they come; with --format, or detected for BTCV."""
    from anatssl.cli.main import main

    build = {
        "msd": lambda p: msd_4d(p, n=3, channels=4),
        "btcv": btcv,
        "abdomenatlas": lambda p: abdomenatlas(p, n=3),
    }
    root = build[layout](tmp_path / layout)
    fmt_args = ["--format", fmt] if fmt else []
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(root), "--out", str(run), *fmt_args, *PRETRAIN]
    assert main([*args, f"model.in_channels={channels}"]) == 0
    assert [r["step"] for r in _metrics_rows(run)] == [1, 2]
    ft = tmp_path / "ft"
    args = ["finetune", "--data", str(root), *fmt_args, "--init", str(run), "--out", str(ft)]
    assert main([*args, *FINETUNE]) == 0
    m = json.loads((ft / "metrics.json").read_text())
    assert m["structures"] == structures and m["labeled"] == 2
    assert m["init"]["kind"] != "scratch" and np.isfinite(m["final_loss"])
    assert sorted(m["dice"]) == sorted([*structures, "mean"])


@pytest.mark.slow
def test_pretrain_and_finetune_straight_from_totalsegmentator(tmp_path):
    from anatssl.cli.main import main

    root = totalsegmentator(tmp_path / "TotalSegmentator", n=3)
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(root), "--out", str(run), *PRETRAIN]) == 0
    assert [r["step"] for r in _metrics_rows(run)] == [1, 2]
    ft = tmp_path / "ft"
    args = [
        "finetune",
        "--data",
        str(root),
        "--format",
        "totalsegmentator",
        "--init",
        "scratch",
        "--out",
        str(ft),
    ]
    assert main([*args, *FINETUNE, "model.backbone=conv"]) == 0
    m = json.loads((ft / "metrics.json").read_text())
    assert m["structures"] == ["aorta", "liver", "spleen"] and m["labeled"] == 2
    assert sorted(m["dice"]) == ["aorta", "liver", "mean", "spleen"]
    ev = tmp_path / "ev"  # the fine-tuned model scored again, its merged labels read from the cache
    args = ["evaluate", "segmentation", "--model", str(ft), "--data", str(root), "--out", str(ev)]
    assert main([*args, "--format", "totalsegmentator", "--device", "cpu"]) == 0
    e = json.loads((ev / "metrics.json").read_text())
    assert len(e["cases"]) == 1 and e["mean_dice"] == pytest.approx(m["mean_dice"], abs=1e-6)


def test_cache_keys_and_fingerprints_hold_every_channel_file(tmp_path):
    from anatssl.data.cache import VolumeCache
    from anatssl.data.layouts import discover
    from anatssl.data.packed import PackedCache

    root = nnunet(tmp_path / "d", n=1)
    item = discover(root)[0]
    other = type(item)(image=item.image, channels=(item.image, root / "imagesTr" / "x_0001.nii.gz"))
    cfg = DataConfig()
    packed, npy = PackedCache(tmp_path / "c", cfg, channels=2), VolumeCache(tmp_path / "c")
    assert packed.entry_dir(item) != packed.entry_dir(other)
    assert npy.entry_dir(item, cfg, 2) != npy.entry_dir(other, cfg, 2)
    assert packed.build(item).state == "ok" and packed.status(item).state == "ok"
    save(item.channels[1], image(99, offset=1000.0))  # channel 1 rewritten: the entry is stale
    assert packed.status(item).state == "todo"
    vol = packed.open(item, packed.build(item).meta)
    np.testing.assert_allclose(
        np.asarray(vol.image)[1], (np.clip(image(99, offset=1000.0), -1000, 1000) + 1000) / 2000, atol=1e-6
    )
