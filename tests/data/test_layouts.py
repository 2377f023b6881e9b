"""The downloaded layouts (anatssl.data.layouts): detection, cases, label tables, channel stacking, and
the bad cases, each on a tiny fake copy of the layout written as real NIfTI files."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
from layout_fixtures import (
    AFFINE,
    SHAPE,
    abdomenatlas,
    boxes,
    btcv,
    image,
    msd_4d,
    nnunet,
    save,
    totalsegmentator,
)

from anatssl.data import layouts
from anatssl.data.layouts import (
    KNOWN_FORMATS,
    MaskSet,
    detect_format,
    discover,
    mask_table,
    merge_masks,
    read_dataset,
    write_merged_label,
)
from anatssl.data.manifest import DataItem
from anatssl.errors import DataError


# -- detection -----------------------------------------------------------------------------------------
def test_detection_of_every_layout(tmp_path):
    assert detect_format(nnunet(tmp_path / "Dataset001_X")) == "nnunet"
    assert detect_format(tmp_path / "Dataset001_X" / "dataset.json") == "nnunet"
    assert detect_format(msd_4d(tmp_path / "Task01_BrainTumour", n=1)) == "msd"
    assert detect_format(btcv(tmp_path / "btcv", n=1)) == "btcv"
    assert detect_format(totalsegmentator(tmp_path / "ts", n=1)) == "totalsegmentator"
    assert detect_format(abdomenatlas(tmp_path / "atlas", n=1)) == "abdomenatlas"
    save(tmp_path / "plain" / "a.nii.gz", image(0))
    assert detect_format(tmp_path / "plain") == "folder"
    assert detect_format(tmp_path / "plain" / "a.nii.gz") == "file"


def test_totalsegmentator_named_by_case_folders_without_meta_csv(tmp_path):
    root = totalsegmentator(tmp_path / "ts", n=2)
    (root / "meta.csv").unlink()
    assert detect_format(root) == "totalsegmentator"  # s0000, s0001
    (root / "s0001").rename(root / "patient7")
    assert detect_format(root) == "abdomenatlas"  # same structure, other names: the generic reading


def test_unknown_layout_lists_the_known_ones(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as e:
        detect_format(tmp_path / "empty")
    for name in KNOWN_FORMATS:
        assert name in str(e.value)
    with pytest.raises(DataError, match="unknown dataset format 'nnunet3'.*totalsegmentator"):
        read_dataset(tmp_path / "empty", "nnunet3")
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "dataset.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(DataError, match="neither a 'training' list.*known layouts are nnunet, msd"):
        detect_format(tmp_path / "j")


# -- nnU-Net v2 ----------------------------------------------------------------------------------------
def test_nnunet_cases_channels_labels_and_test_set(tmp_path):
    root = nnunet(tmp_path / "Dataset002_Brain", n=3, channels=("T1", "T2", "FLAIR"), n_test=2)
    ds = read_dataset(root)
    assert ds.format == "nnunet"
    assert ds.channel_names == ("T1", "T2", "FLAIR") and ds.num_channels == 3
    assert ds.labels == {0: "background", 1: "liver", 2: "spleen", 3: "aorta"}
    assert [c.name for c in ds.cases] == ["case_000", "case_001", "case_002"]
    c = ds.cases[1]
    assert [p.name for p in c.images] == [f"case_001_{k:04d}.nii.gz" for k in range(3)]
    assert c.label == root / "labelsTr" / "case_001.nii.gz"
    assert c.problems == ()
    assert [t.name for t in ds.test_cases] == ["test_000", "test_001"]
    assert all(t.label is None and len(t.images) == 3 for t in ds.test_cases)
    items = discover(root)
    assert [it.name for it in items] == ["case_000", "case_001", "case_002"]
    assert items[0].files == ds.cases[0].images and items[0].image == ds.cases[0].images[0]
    assert items[0].label_values == (0, 1, 2, 3)


def test_nnunet_channel_stacking_gives_the_channel_arrays_in_order(tmp_path):
    from anatssl.data.io import read_scan

    root = nnunet(tmp_path / "d", n=1)
    item = discover(root)[0]
    vol = read_scan(item.files, item.label, channels=2, case=item.name, label_values=item.label_values)
    assert vol.image.shape == (2, *SHAPE) and vol.image.dtype == np.float32
    # the fixture's affine is already RAS: voxels come back as written, channel c = image(c, 1000 c)
    np.testing.assert_allclose(vol.image[0], image(0), rtol=1e-6)
    np.testing.assert_allclose(vol.image[1], image(1, offset=1000.0), rtol=1e-6)
    assert vol.label is not None and vol.label.shape == (1, *SHAPE)
    np.testing.assert_allclose(vol.spacing, (2.0, 2.0, 2.0))


def test_nnunet_missing_channel_file_is_a_problem_naming_case_and_file(tmp_path):
    from anatssl.data.io import read_scan

    root = nnunet(tmp_path / "d", n=3)
    gone = root / "imagesTr" / "case_001_0001.nii.gz"
    gone.unlink()
    ds = read_dataset(root)
    assert [c.name for c in ds.cases] == ["case_000", "case_001", "case_002"]
    (msg,) = ds.cases[1].problems
    assert "case case_001" in msg and "channel 1 (T2)" in msg and str(gone) in msg
    item = discover(root)[1]
    with pytest.raises(DataError, match=rf"case case_001: .*{gone.name} does not exist"):
        read_scan(item.files, None, channels=2, case=item.name)


def test_nnunet_channel_files_on_different_grids(tmp_path):
    from anatssl.data.io import read_scan

    root = nnunet(tmp_path / "d", n=2)
    bad = root / "imagesTr" / "case_000_0001.nii.gz"
    save(bad, image(5), affine=np.diag([2.0, 2.0, 3.0, 1.0]))
    item = discover(root)[0]
    with pytest.raises(
        DataError, match=rf"case case_000: channel 1 file {bad} .* not on the grid of .*_0000"
    ):
        read_scan(item.files, None, channels=2, case=item.name)
    save(bad, image(5, shape=(24, 24, 20)))
    with pytest.raises(DataError, match=r"case case_000: channel 1 file .*spatial shape \(24, 24, 20\)"):
        read_scan(item.files, None, channels=2, case=item.name)


def test_nnunet_label_values_outside_the_table(tmp_path):
    from anatssl.data.io import read_scan

    root = nnunet(tmp_path / "d", n=2)
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:5, 2:5, 2:5] = 7
    save(root / "labelsTr" / "case_001.nii.gz", lab)
    item = discover(root)[1]
    with pytest.raises(
        DataError, match=r"case case_001: label .*case_001.nii.gz holds values \[7\].*\[0, 1, 2, 3\]"
    ):
        read_scan(item.files, item.label, channels=2, case=item.name, label_values=item.label_values)


def test_nnunet_extra_channel_file_disagrees_with_channel_names(tmp_path):
    root = nnunet(tmp_path / "d", n=2)
    save(root / "imagesTr" / "case_000_0002.nii.gz", image(3))
    (msg,) = read_dataset(root).cases[0].problems
    assert "case case_000" in msg and "case_000_0002.nii.gz" in msg and "lists 2 channel(s)" in msg


def test_nnunet_region_labels_are_refused(tmp_path):
    root = nnunet(tmp_path / "d", n=1)
    doc = json.loads((root / "dataset.json").read_text())
    doc["labels"] = {"background": 0, "whole_tumor": [1, 2, 3]}
    (root / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="region-based nnU-Net labels are not supported"):
        read_dataset(root)


# -- MSD ---------------------------------------------------------------------------------------------
def test_msd_4d_still_reads_and_gives_channel_names(tmp_path):
    from anatssl.data.io import read_scan

    root = msd_4d(tmp_path / "Task01", n=2, channels=4)
    ds = read_dataset(root)
    assert ds.format == "msd" and ds.channel_names == ("FLAIR", "T1w", "t1gd", "T2w")
    assert ds.labels is not None and ds.labels[3] == "enhancing"
    items = discover(root)
    assert items[0].channels == () and items[0].case is None  # exactly manifest.discover's items
    vol = read_scan(items[0].files, items[0].label, channels=4)
    assert vol.image.shape == (4, *SHAPE)
    np.testing.assert_allclose(vol.image[2], image(2, offset=200.0), rtol=1e-6)


def test_msd_4d_channel_count_disagreeing_with_modality(tmp_path):
    from anatssl.data.io import read_scan

    root = msd_4d(tmp_path / "Task01", n=2, channels=4)
    arr = np.stack([image(c) for c in range(3)], axis=-1)  # 3 channels where modality lists 4
    bad = save(root / "imagesTr" / "BRATS_001.nii.gz", arr)
    item = discover(root)[1]
    with pytest.raises(DataError, match=rf"case BRATS_001: {bad} has 3 channels .* but 4 expected"):
        read_scan(item.files, None, channels=4, case="BRATS_001")


# -- BTCV ----------------------------------------------------------------------------------------------
def test_btcv_cases_and_table(tmp_path):
    root = btcv(tmp_path / "RawData" / "Training", n=3)
    (root / "label" / "label0003.nii.gz").unlink()
    ds = read_dataset(root)
    assert ds.format == "btcv" and [c.name for c in ds.cases] == ["img0001", "img0002", "img0003"]
    assert ds.cases[0].label == root / "label" / "label0001.nii.gz"
    assert ds.labels is not None and ds.labels[1] == "spleen" and ds.labels[13] == "left_adrenal_gland"
    assert "case img0003: label file" in ds.cases[2].problems[0]


# -- TotalSegmentator / AbdomenAtlas ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "build,fmt", [(totalsegmentator, "totalsegmentator"), (abdomenatlas, "abdomenatlas")]
)
def test_mask_layouts_table_and_merge(tmp_path, build, fmt):
    root = build(tmp_path / "d", n=2)
    ds = read_dataset(root)
    assert ds.format == fmt
    assert ds.labels == {0: "background", 1: "aorta", 2: "liver", 3: "spleen"}  # sorted names, ids 1..K
    case = ds.cases[1]
    assert isinstance(case.label, MaskSet) and case.label.names == ("aorta", "liver", "spleen")
    merged, affine = merge_masks(case)
    expected = np.zeros(SHAPE, np.int16)
    for name, m in boxes(1).items():
        expected[m > 0] = {"aorta": 1, "liver": 2, "spleen": 3}[name]
    np.testing.assert_array_equal(merged, expected)
    np.testing.assert_allclose(affine, AFFINE)
    items = discover(root)  # pretraining: the CT only
    assert [it.name for it in items] == [c.name for c in ds.cases]
    assert all(it.label is None and it.image.name == "ct.nii.gz" for it in items)


def test_mask_table_is_sorted_and_stable():
    assert mask_table(["spleen", "aorta", "liver", "aorta"]) == {
        0: "background",
        1: "aorta",
        2: "liver",
        3: "spleen",
    }


def test_merged_label_written_once_and_rebuilt_when_a_mask_changes(tmp_path, caplog):
    root = totalsegmentator(tmp_path / "ts", n=2)
    ds = read_dataset(root)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.DEBUG, logger="anatssl"):
        out = write_merged_label(ds, ds.cases[0], cache)
    assert "case s0000: merged 3 masks into" in caplog.text
    assert out.parent.parent == cache and out.name == "s0000.nii.gz"
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), merge_masks(ds.cases[0])[0])
    mtime = out.stat().st_mtime_ns
    assert write_merged_label(ds, ds.cases[0], cache) == out and out.stat().st_mtime_ns == mtime
    m = boxes(0)["liver"].copy()
    m[:] = 0
    save(root / "s0000" / "segmentations" / "liver.nii.gz", m)
    write_merged_label(ds, ds.cases[0], cache)
    assert not (np.asarray(nib.load(str(out)).dataobj) == 2).any()


def test_totalsegmentator_missing_mask(tmp_path):
    root = totalsegmentator(tmp_path / "ts", n=3)
    gone = root / "s0001" / "segmentations" / "spleen.nii.gz"
    gone.unlink()
    ds = read_dataset(root)
    assert ds.labels == {0: "background", 1: "aorta", 2: "liver", 3: "spleen"}  # the others still have it
    (msg,) = ds.cases[1].problems
    assert "case s0001" in msg and str(gone) in msg
    with pytest.raises(DataError, match=rf"case s0001: mask {gone} \('spleen'\) is missing"):
        merge_masks(ds.cases[1])


def test_totalsegmentator_misshaped_or_nonbinary_mask(tmp_path):
    root = totalsegmentator(tmp_path / "ts", n=2)
    bad = root / "s0000" / "segmentations" / "liver.nii.gz"
    save(bad, np.zeros((24, 24, 20), np.uint8))
    case = read_dataset(root).cases[0]
    with pytest.raises(DataError, match=rf"case s0000: mask {bad} has shape \(24, 24, 20\) but its CT"):
        merge_masks(case)
    save(bad, np.zeros(SHAPE, np.uint8), affine=np.diag([2.0, 2.0, 2.5, 1.0]))
    with pytest.raises(DataError, match=rf"case s0000: mask {bad} and its CT .* different voxel->world"):
        merge_masks(case)
    m = np.zeros(SHAPE, np.uint8)
    m[0, 0, 0] = 5
    save(bad, m)
    with pytest.raises(DataError, match=rf"case s0000: mask {bad} holds values \[5\]"):
        merge_masks(case)


# -- plain inputs unchanged ----------------------------------------------------------------------------
def test_plain_inputs_give_manifest_discover_items(tmp_path):
    from anatssl.data.manifest import discover as plain

    save(tmp_path / "f" / "a.nii.gz", image(0))
    save(tmp_path / "f" / "b.nii.gz", image(1))
    assert (
        discover(tmp_path / "f")
        == plain(tmp_path / "f")
        == [
            DataItem(image=tmp_path / "f" / "a.nii.gz"),
            DataItem(image=tmp_path / "f" / "b.nii.gz"),
        ]
    )
    ds = read_dataset(tmp_path / "f")
    assert ds.format == "folder" and [c.name for c in ds.cases] == ["a", "b"] and ds.labels is None
    assert layouts.read_dataset(tmp_path / "f", "folder").cases == ds.cases
