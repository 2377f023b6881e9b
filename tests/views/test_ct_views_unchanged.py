"""CT views are what they were before MRI became a modality of its own (issue 14 item 4).

``FINGERPRINTS`` holds, per method and output, the float64 sum and sum of squares of every method's views
(tiny preset, the small overrides below, CT, two fixed-seed samples of CT-like blob volumes), computed
with the code of commit dc82779, the last one before the MRI augmentation: ``PYTHONPATH=<that commit's
src> python tests/views/test_ct_views_unchanged.py`` prints them. Any change in what a CT view holds or
in the order of its random draws moves these numbers far beyond the tolerance (float64 sums of float32
values; the tolerance only absorbs last-bit differences between CPUs). A deliberate change of a tiny
preset's view settings or of a views module regenerates them with the same command on the new code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from anatssl.methods import METHODS, build_method
from anatssl.runs import load_pretrain_config
from engine_fixtures import SMALL_VIEWS, BlobSource

SMALL = SMALL_VIEWS


def fingerprints(name: str) -> dict[str, list[float]]:
    """``{"<sample>/<key>": [sum, sum of squares]}`` of one method's CT views."""
    torch.manual_seed(0)
    method = build_method(load_pretrain_config(name, "tiny", None, SMALL[name]))
    src = BlobSource()
    out: dict[str, list[float]] = {}
    for i in range(2):
        views: dict[str, Any] = method.views(src.load(i), np.random.default_rng([7, i]), src)
        for key in sorted(views):
            v = views[key]
            a = (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)).astype(np.float64)
            out[f"{i}/{key}"] = [float(a.sum()), float((a**2).sum())]
    return out


# fmt: off
FINGERPRINTS: dict[str, dict[str, list[float]]] = {'alice': {'0/k': [7546.913127040025, 3190.1418075950914],
           '0/k_mask': [24576.0, 24576.0],
           '0/p_a': [111.0, 4793.0],
           '0/p_b': [93.0, 3233.0],
           '0/pair_accepted': [1.0, 1.0],
           '0/pair_score': [math.nan, math.nan],
           '0/q': [11002.918803729117, 5153.75342197662],
           '0/q_mask': [24576.0, 24576.0],
           '1/k': [5670.661037743092, 1557.6706280740102],
           '1/k_mask': [24576.0, 24576.0],
           '1/p_a': [117.0, 4889.0],
           '1/p_b': [129.0, 5781.0],
           '1/pair_accepted': [1.0, 1.0],
           '1/pair_score': [math.nan, math.nan],
           '1/q': [6192.625596639351, 1924.96121012408],
           '1/q_mask': [24576.0, 24576.0]},
 'modelsgenesis': {'0/applied': [3.0, 3.0],
                   '0/target': [8375.664564046077, 3548.233207976164],
                   '0/x': [19722.97013735771, 14937.083905670086],
                   '1/applied': [1.0, 1.0],
                   '1/target': [5744.9408058822155, 1731.2116145205118],
                   '1/x': [6522.7585769439465, 1902.6129440324025]},
 's2dc': {'0/aug_crop': [10693.47858791612, 6722.516768077783],
          '0/aug_full': [3193.7589246220887, 4046.2970532658155],
          '0/crop_k': [3.0, 9.0],
          '0/match': [140.0, 1380.0],
          '0/matrix': [10.200787872076035, 63.31122265327645],
          '0/src': [21368.978137510618, 8668.088372760423],
          '1/aug_crop': [26411.569217618555, 11173.477126973652],
          '1/aug_full': [41731.109074793756, 19029.495066140622],
          '1/crop_k': [0.0, 0.0],
          '1/match': [168.0, 1732.0],
          '1/matrix': [8.149832963943481, 221.52876823331428],
          '1/src': [33438.901483627254, 13909.004070847248]},
 'sam': {'0/grid2mm': [11.807172580622137, 46.47321573897935],
         '0/pts1': [358.0, 3596.0],
         '0/pts2': [310.20141896791756, 2709.3293792390104],
         '0/valid': [16.0, 16.0],
         '0/view1': [3915.2704602613926, 1455.3118731965524],
         '0/view2': [1839.3244130638527, 596.1528712656062],
         '1/grid2mm': [12.034020848572254, 49.18776467033572],
         '1/pts1': [377.0, 3647.0],
         '1/pts2': [337.7703859806061, 3058.9633257037144],
         '1/valid': [16.0, 16.0],
         '1/view1': [2446.6431565015346, 475.61558861465755],
         '1/view2': [2360.774830917362, 258.7315443607898]},
 'simmim': {'0/mask': [24576.0, 24576.0],
            '0/x': [8375.664564046077, 3548.233207976164],
            '1/mask': [20480.0, 20480.0],
            '1/x': [5744.9408058822155, 1731.2116145205118]},
 'swinssl': {'0/rot1': [3.0, 9.0],
             '0/rot2': [2.0, 4.0],
             '0/target1': [8375.664564046077, 3548.2332079761636],
             '0/target2': [10642.685558799887, 5173.512371679662],
             '0/x1': [8329.085042822175, 3583.3908488667767],
             '0/x2': [10673.496519051725, 5213.613829603555],
             '1/rot1': [0.0, 0.0],
             '1/rot2': [3.0, 9.0],
             '1/target1': [5744.9408058822155, 1731.2116145205118],
             '1/target2': [9665.247303476557, 3852.026480466353],
             '1/x1': [5729.551711162087, 1745.3292854297383],
             '1/x2': [9589.490360107273, 3848.34741745893]},
 'voco': {'0/bases': [21368.978137510618, 8668.088372760423],
          '0/crop_starts': [100.0, 2556.0],
          '0/crops': [16499.7127905963, 7208.3928284104695],
          '0/targets': [2.0, 0.9274673461914062],
          '1/bases': [33438.901483627254, 13909.004070847248],
          '1/crop_starts': [24.0, 158.0],
          '1/crops': [20809.254457028583, 7906.542356880869],
          '1/targets': [2.0, 0.9885406494140625]}}
# fmt: on


@pytest.mark.parametrize("name", sorted(SMALL))
def test_ct_views_are_unchanged(name: str) -> None:
    assert sorted(SMALL) == METHODS.names(), "a new method: add it to SMALL and regenerate FINGERPRINTS"
    got, want = fingerprints(name), FINGERPRINTS[name]
    assert got.keys() == want.keys()
    for key, (s, q) in want.items():
        gs, gq = got[key]
        if math.isnan(s):
            assert math.isnan(gs), key
            continue
        assert gs == pytest.approx(s, rel=1e-6, abs=1e-6), f"{name} {key}: sum {gs} != {s}"
        assert gq == pytest.approx(q, rel=1e-6, abs=1e-6), f"{name} {key}: sum of squares {gq} != {q}"


if __name__ == "__main__":
    import pprint

    pprint.pprint({n: fingerprints(n) for n in sorted(SMALL)}, width=110, sort_dicts=True)
