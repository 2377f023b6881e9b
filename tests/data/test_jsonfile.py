"""The one JSON reader: each failure names the file, its role and what to do."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from anatssl.data.jsonfile import read_json
from anatssl.errors import DataError


def test_reads_a_document(tmp_path: Path) -> None:
    p = tmp_path / "dataset.json"
    p.write_text('{"training": [{"image": "a.nii.gz"}]}')
    assert read_json(p, "dataset") == {"training": [{"image": "a.nii.gz"}]}


def test_syntax_error_gives_line_column_and_fix(tmp_path: Path) -> None:
    p = tmp_path / "dataset.json"
    p.write_text('{\n  "training": [,]\n}')
    with pytest.raises(DataError) as e:
        read_json(p, "manifest", fix="re-export it")
    msg = str(e.value)
    assert str(p) in msg and "manifest" in msg and "line 2, column 16" in msg and msg.endswith("re-export it")


def test_a_compressed_image_is_not_json(tmp_path: Path) -> None:
    p = tmp_path / "ct.nii.gz"
    p.write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + bytes(range(256))))
    with pytest.raises(DataError, match=r"is not a JSON text file .*is it an image\?") as e:
        read_json(p, "dataset")
    assert str(p) in str(e.value)


def test_missing_file_names_it(tmp_path: Path) -> None:
    p = tmp_path / "nope.json"
    with pytest.raises(DataError, match=r"cannot read landmarks .*nope\.json: No such file"):
        read_json(p, "landmarks")
