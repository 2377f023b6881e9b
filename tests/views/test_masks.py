"""Block masks: exact ratio, block structure, tube through the depth, seeded, readable errors."""

from __future__ import annotations

import numpy as np
import pytest

from anatssl.views.masks import apply_mask, block_mask


def test_cube_mask_ratio_and_blocks() -> None:
    m = block_mask((64, 64, 32), 16, 0.75, "cube", np.random.default_rng(0))
    assert m.shape == (64, 64, 32) and m.dtype == bool
    blocks = m.reshape(4, 16, 4, 16, 2, 16)
    # each 16^3 block is all masked or all visible
    per_block = blocks.mean(axis=(1, 3, 5))
    assert set(np.unique(per_block)) <= {0.0, 1.0}
    assert per_block.sum() == 24  # 0.75 * 32 blocks
    assert m.mean() == pytest.approx(0.75)


def test_tube_mask_runs_through_depth() -> None:
    m = block_mask((64, 64, 48), 16, 0.75, "tube", np.random.default_rng(1))
    assert (m == m[:, :, :1]).all()  # constant along Z
    assert m[:, :, 0].reshape(4, 16, 4, 16).mean(axis=(1, 3)).sum() == 12  # 0.75 * 16 columns


def test_seeded_and_independent_draws() -> None:
    a = block_mask((32, 32, 32), 16, 0.5, "cube", np.random.default_rng(3))
    b = block_mask((32, 32, 32), 16, 0.5, "cube", np.random.default_rng(3))
    assert (a == b).all()
    rng = np.random.default_rng(4)
    draws = {block_mask((64, 64, 64), 16, 0.75, "cube", rng).tobytes() for _ in range(5)}
    assert len(draws) > 1


def test_at_least_one_block_visible_below_ratio_one() -> None:
    m = block_mask((32, 32, 32), 16, 0.99, "cube", np.random.default_rng(0))
    assert 0 < (~m).sum() and m.any()
    assert block_mask((32, 32, 32), 16, 1.0, "cube", np.random.default_rng(0)).all()


def test_apply_mask_zeroes_masked_voxels() -> None:
    img = np.ones((1, 32, 32, 32), dtype=np.float32)
    m = block_mask((32, 32, 32), 16, 0.5, "cube", np.random.default_rng(0))
    out = apply_mask(img, m)
    assert out.dtype == np.float32 and (out[0][m] == 0).all() and (out[0][~m] == 1).all()
    assert (img == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"shape": (40, 32, 32)}, "multiple of the mask patch"),
        ({"kind": "sphere"}, "mask shape"),
        ({"ratio": 1.5}, "ratio"),
    ],
)
def test_bad_arguments(kwargs: dict, msg: str) -> None:
    args = {
        "shape": (32, 32, 32),
        "patch": 16,
        "ratio": 0.75,
        "kind": "cube",
        "rng": np.random.default_rng(0),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        block_mask(**args)
