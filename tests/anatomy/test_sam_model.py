"""SAMNet shapes, unit norm, the block-centred grid convention and coordinate round trips."""

import numpy as np
import pytest
import torch

from anatssl.anatomy.embedding import EmbeddingMap
from anatssl.anatomy.sam_model import SAMNet, embed_tensor, grid_affine, grid_shape, pad_to_multiple
from anatssl.data.volume import Volume


def _oblique_affine() -> np.ndarray:
    """Rotated, anisotropic, shifted voxel -> world affine (LPS-like flips included)."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag([-1.0, 1.0, -1.0])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.8, 1.1, 2.5])
    a[:3, 3] = [12.0, -40.5, 7.25]
    return a


@pytest.mark.parametrize("stride", [2, 8, 16])
def test_voxel_grid_voxel_round_trip(stride: int) -> None:
    vol = Volume(np.zeros((1, 37, 21, 15), np.float32), _oblique_affine())
    g_aff = grid_affine(vol.affine, stride)
    vox = np.stack(np.meshgrid(*[np.arange(n) for n in vol.spatial_shape], indexing="ij"), -1).reshape(-1, 3)
    # voxel -> world -> grid: exactly (v - (s-1)/2) / s
    frac = EmbeddingMap.world_to_grid(g_aff, vol.voxel_to_world(vox))
    np.testing.assert_allclose(frac, (vox - (stride - 1) / 2) / stride, atol=1e-9)
    # -> nearest grid cell -> world -> voxel: within half a stride of where we started
    cell = np.clip(np.rint(frac), 0, np.asarray(grid_shape(vol.spatial_shape, stride)) - 1)
    back = vol.world_to_voxel(EmbeddingMap.grid_to_world(g_aff, cell))
    assert np.abs(back - vox).max() <= stride / 2 + 1e-9
    # the cell whose block holds voxel v is floor(v / s), and it is the nearest cell centre
    np.testing.assert_array_equal(np.floor(vox / stride), np.floor(frac + 0.5 * (stride - 1) / stride + 1e-9))
    # grid -> voxel -> grid is exact
    g = np.array([[0, 0, 0], [3, 2, 1], [4, 2, 0]], dtype=np.float64)
    vox_g = vol.world_to_voxel(EmbeddingMap.grid_to_world(g_aff, g))
    np.testing.assert_allclose(vox_g, stride * g + (stride - 1) / 2, atol=1e-9)
    np.testing.assert_allclose(EmbeddingMap.world_to_grid(g_aff, vol.voxel_to_world(vox_g)), g, atol=1e-9)


def test_shapes_and_unit_norm() -> None:
    torch.manual_seed(0)
    net = SAMNet(width=4, blocks=(1, 0, 1), embed_dim=8).eval()
    out = net(torch.rand(2, 1, 16, 24, 32))
    assert out["fine"].shape == (2, 8, 8, 12, 16)
    assert out["coarse"].shape == (2, 8, 2, 3, 4)
    for t in out.values():
        np.testing.assert_allclose(t.norm(dim=1).detach().numpy(), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.rand(1, 1, 12, 16, 16))


def test_shift_equivariance_matches_grid_convention() -> None:
    """Shifting the input by one coarse stride shifts fine maps by stride/2 cells and coarse maps by 1 cell
    (interior), as the block-centred convention of ``grid_affine`` says."""
    torch.manual_seed(0)
    net = SAMNet(width=4, blocks=(1, 1, 1), embed_dim=8).eval()
    x = torch.rand(1, 1, 96, 16, 16)
    with torch.no_grad():
        a, b = net(x[:, :, :88]), net(x[:, :, 8:])
    # original voxels 40..55, >= 32 voxels (the receptive field) from either crop's end along x
    np.testing.assert_allclose(a["fine"][:, :, 20:28], b["fine"][:, :, 16:24], atol=1e-4)
    np.testing.assert_allclose(a["coarse"][:, :, 5:7], b["coarse"][:, :, 4:6], atol=1e-4)


def test_pad_and_tiled_embedding_shapes() -> None:
    torch.manual_seed(0)
    net = SAMNet(width=4, blocks=(1, 1), embed_dim=8).eval()
    x = torch.rand(1, 1, 23, 17, 30)
    xp, shape = pad_to_multiple(x, 4)
    assert xp.shape[2:] == (24, 20, 32) and shape == (23, 17, 30)
    fine, coarse = embed_tensor(net, x, window=None)
    assert fine.shape == (8, 12, 9, 15) and coarse.shape == (8, 6, 5, 8)
    tf, tc = embed_tensor(net, x, window=16, overlap=0.5)
    assert tf.shape == fine.shape and tc.shape == coarse.shape
    np.testing.assert_allclose(tf.norm(dim=0).numpy(), 1.0, atol=1e-5)
    # the tiled and whole-volume embeddings agree in direction on most of the volume
    cos = (tf * fine).sum(0)
    assert float(cos.median()) > 0.9
