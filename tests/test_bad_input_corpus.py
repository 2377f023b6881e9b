"""The bad-input corpus (issue 18): each case builds one bad input on disk and runs the real command.

Every case runs ``anatssl.cli.main.main([...])`` in-process on real NIfTI / JSON / YAML / torch files
and asserts: the exit status; that the error names the file or the config key at fault; that no
traceback is printed; and that nothing half-written is left (no temporary files, no checkpoint,
model or metrics from a refused run). A few cases are *accepted* inputs that must not end the run: a
bad scan among good ones is skipped with a warning naming it and listed at the end of the run.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

import anatssl.engine.checkpoint as checkpoint_mod
from anatssl.cli.main import main

FAST_PRETRAIN = [
    "model.backbone=conv",
    "model.feature_size=8",
    "swinssl.crop_size=[32,32,32]",
    "train.progress=false",
    "train.tensorboard=false",
    "train.device=cpu",
    "optim.warmup_steps=1",
    "train.max_steps=2",
    "train.batch_size=2",
]
FAST_FINETUNE = [
    "model.backbone=conv",
    "model.feature_size=4",
    "train.max_steps=1",
    "train.batch_size=1",
    "train.device=cpu",
    "train.progress=false",
    "segmentation.roi_size=[32,32,32]",
    "segmentation.samples_per_volume=1",
    "split.n_test=1",
]
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SIZE = 40


# -- builders of good and bad files ----------------------------------------------------------------
def scan(
    path: Path, seed: int = 0, shape: tuple[int, ...] = (SIZE,) * 3, affine: np.ndarray = AFFINE
) -> Path:
    """A CT-like scan: air (-1000 HU) around a noisy soft-tissue box."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, -1000.0, np.float32)
    inner = tuple(slice(6, s - 6) if s > 12 else slice(None) for s in shape[:3])
    img[inner] = 30.0 + 15.0 * rng.standard_normal(img[inner].shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    if np.isfinite(affine).all() and abs(np.linalg.det(affine[:3, :3])) > 1e-9:
        nib.save(nib.Nifti1Image(img, affine), str(path))
    else:  # nibabel cannot derive a qform from it: write the sform alone, as a broken exporter would
        bad = nib.Nifti1Image(img, None)
        bad.header.set_sform(affine, code=1)
        nib.save(bad, str(path))
    return path


def label(
    path: Path, shape: tuple[int, ...] = (SIZE,) * 3, affine: np.ndarray = AFFINE, value: float = 1
) -> Path:
    lab = np.zeros(shape, np.float32 if value % 1 else np.int16)
    lab[12:28, 12:28, 12:28] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(lab, affine), str(path))
    return path


def huge_header(path: Path, shape: tuple[int, int, int]) -> Path:
    """A NIfTI header claiming ``shape`` followed by a few bytes: NIfTI-2 when a size exceeds int16."""
    cls = nib.Nifti2Header if max(shape) > 32767 else nib.Nifti1Header
    h = cls()
    h.set_data_dtype(np.int16)
    h.set_data_shape(shape)
    h.set_sform(AFFINE, code=1)
    h.set_qform(AFFINE, code=1)
    block = h.binaryblock
    offset = int(h["vox_offset"]) or len(block) + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    data = block + b"\0" * (offset - len(block)) + b"\0" * 64
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def scans(folder: Path, n: int = 2) -> Path:
    for i in range(n):
        scan(folder / f"good_{i}.nii.gz", seed=i)
    return folder


def labelled(root: Path, n: int = 4, entries: list[dict] | None = None) -> Path:
    """``root/dataset.json`` with ``n`` image/label pairs on one grid (labels 0 and 1)."""
    out = []
    for i in range(n):
        scan(root / "imagesTr" / f"case_{i}.nii.gz", seed=i)
        label(root / "labelsTr" / f"case_{i}.nii.gz")
        out.append(
            {"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz", "lesion": i % 2}
        )
    doc = {"labels": {"0": "background", "1": "organ"}, "training": entries if entries is not None else out}
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


def pretrain(data: Path | str, out: Path, *overrides: str) -> list[str]:
    return [
        "pretrain",
        "--method",
        "swinssl",
        "--data",
        str(data),
        "--out",
        str(out),
        *FAST_PRETRAIN,
        *overrides,
    ]


def finetune(data: Path | str, out: Path, *extra: str, init: str = "scratch") -> list[str]:
    return [
        "finetune",
        "--task",
        "segmentation",
        "--data",
        str(data),
        "--init",
        init,
        "--out",
        str(out),
        *FAST_FINETUNE,
        *extra,
    ]


def evaluate(model: Path, data: Path, out: Path) -> list[str]:
    return ["evaluate", "segmentation", "--model", str(model), "--data", str(data), "--out", str(out)]


def finetune_dir(root: Path, model_pt: Callable[[Path], None]) -> Path:
    """An ``anatssl finetune`` output folder with a valid config.yaml and the given model.pt."""
    from anatssl.config import save_yaml
    from anatssl.downstream.config import finetune_config_to_dict, load_finetune_config

    root.mkdir(parents=True)
    cfg = load_finetune_config("segmentation", "tiny", overrides=FAST_FINETUNE)
    save_yaml(finetune_config_to_dict(cfg), root / "config.yaml")
    model_pt(root / "model.pt")
    return root


class Opaque:
    """A class a checkpoint file must not make anatssl unpickle."""


def write_pickled_object(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Opaque()}, path)


def write_text(path: Path) -> None:
    path.write_text("epoch 10: loss 0.1\n")


# -- the corpus --------------------------------------------------------------------------------------
@dataclass
class Case:
    """``build(tmp) -> (argv, texts the error must contain)``; ``code`` 0 = the input must be accepted."""

    name: str
    build: Callable[[Path], tuple[list[str], list[str]]]
    code: int = 2
    forbidden: list[str] = field(default_factory=list)
    """Texts the output must not contain (e.g. torch's advice to unpickle)."""


def cfg_case(name: str, overrides: list[str], says: list[str]) -> Case:
    def build(tmp: Path) -> tuple[list[str], list[str]]:
        return pretrain(scans(tmp / "data"), tmp / "run", *overrides), says

    return Case(name, build)


def ft_cfg_case(name: str, extra: list[str], says: list[str]) -> Case:
    def build(tmp: Path) -> tuple[list[str], list[str]]:
        return finetune(labelled(tmp / "data"), tmp / "ft", *extra), says

    return Case(name, build)


def only_scan_case(name: str, make: Callable[[Path], Path | None], says: list[str]) -> Case:
    """Pretraining on a folder whose only scan is bad: refused, naming the file."""

    def build(tmp: Path) -> tuple[list[str], list[str]]:
        folder = tmp / "data"
        folder.mkdir()
        bad = make(folder / "bad.nii.gz")
        return pretrain(folder, tmp / "run"), [str(bad or folder / "bad.nii.gz"), *says]

    return Case(name, build)


def ft_data_case(name: str, corrupt: Callable[[Path], Path], says: list[str]) -> Case:
    """Fine-tuning on a labelled set where ``corrupt(root)`` broke one file (returned): refused, naming it."""

    def build(tmp: Path) -> tuple[list[str], list[str]]:
        root = labelled(tmp / "data")
        bad = corrupt(root)
        return finetune(root, tmp / "ft"), [bad.name, *says]

    return Case(name, build)


def shifted(mm: float) -> np.ndarray:
    a = AFFINE.copy()
    a[0, 3] += mm
    return a


def rank_deficient() -> np.ndarray:
    a = AFFINE.copy()
    a[:3, 1] = a[:3, 0]  # two equal columns
    return a


def nan_affine() -> np.ndarray:
    a = AFFINE.copy()
    a[1, 3] = np.nan
    return a


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def truncated(path: Path) -> Path:
    scan(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def nan_voxels(path: Path) -> Path:
    img = np.full((SIZE,) * 3, 40.0, np.float32)
    img[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(img, AFFINE), str(path))
    return path


def constant(path: Path) -> Path:
    nib.save(nib.Nifti1Image(np.full((SIZE,) * 3, 40.0, np.float32), AFFINE), str(path))
    return path


def bad_label(root: Path, **kw: object) -> Path:
    return label(root / "labelsTr" / "case_0.nii.gz", **kw)  # type: ignore[arg-type]


def bad_image(root: Path, make: Callable[[Path], Path]) -> Path:
    return make(root / "imagesTr" / "case_0.nii.gz")


def edit_entries(root: Path, edit: Callable[[list[dict]], None]) -> None:
    doc = json.loads((root / "dataset.json").read_text())
    edit(doc["training"])
    (root / "dataset.json").write_text(json.dumps(doc))


def _ft_no_label(tmp: Path) -> tuple[list[str], list[str]]:
    root = labelled(tmp / "data")
    edit_entries(root, lambda e: e[0].pop("label"))
    return finetune(root, tmp / "ft"), ["training[0]", "case_0", "no 'label'"]


def _ft_label_file_missing(tmp: Path) -> tuple[list[str], list[str]]:
    root = labelled(tmp / "data")
    (root / "labelsTr" / "case_1.nii.gz").unlink()
    return finetune(root, tmp / "ft"), ["labelsTr/case_1.nii.gz", "does not exist"]


def _ft_data_is_a_scan(tmp: Path) -> tuple[list[str], list[str]]:
    root = labelled(tmp / "data")
    f = root / "imagesTr" / "case_0.nii.gz"
    return finetune(f, tmp / "ft"), [str(f), "not a JSON text file"]


def _ft_labeled_too_many(tmp: Path) -> tuple[list[str], list[str]]:
    return finetune(labelled(tmp / "data"), tmp / "ft", "--labeled", "50"), ["--labeled 50"]


def _init_case(name: str, write: Callable[[Path], None], says: list[str]) -> Case:
    def build(tmp: Path) -> tuple[list[str], list[str]]:
        weights = tmp / "weights.pt"
        write(weights)
        return finetune(labelled(tmp / "data"), tmp / "ft", init=str(weights)), [str(weights), *says]

    return Case(name, build, forbidden=["weights_only=False", "will likely succeed", ": 101"])


def _init_run_corrupt(tmp: Path) -> tuple[list[str], list[str]]:
    run = tmp / "pretrained"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "swinssl"}))
    write_text(run / "checkpoints" / "last.pt")
    return finetune(labelled(tmp / "data"), tmp / "ft", init=str(run)), ["last.pt"]


def _eval_case(name: str, write: Callable[[Path], None], says: list[str]) -> Case:
    def build(tmp: Path) -> tuple[list[str], list[str]]:
        model = finetune_dir(tmp / "model", write)
        return evaluate(model, labelled(tmp / "data"), tmp / "eval"), [str(model / "model.pt"), *says]

    return Case(name, build, forbidden=["weights_only=False", "will likely succeed"])


def _eval_not_finetune(tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "nothing").mkdir()
    return evaluate(tmp / "nothing", labelled(tmp / "data"), tmp / "eval"), [str(tmp / "nothing")]


def _out_under_a_file(tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "notes.txt").write_text("a file, not a folder")
    return pretrain(scans(tmp / "data"), tmp / "notes.txt" / "run"), [str(tmp / "notes.txt")]


def _config_file(name: str, text: str, says: list[str]) -> Case:
    def build(tmp: Path) -> tuple[list[str], list[str]]:
        cfg = tmp / "my.yaml"
        cfg.write_text(text)
        return pretrain(scans(tmp / "data"), tmp / "run", "--config", str(cfg)), [str(cfg), *says]

    return Case(name, build)


def _config_binary(tmp: Path) -> tuple[list[str], list[str]]:
    cfg = tmp / "my.yaml"
    cfg.write_bytes(gzip.compress(b"train: {max_steps: 3}\n" * 50))
    return pretrain(scans(tmp / "data"), tmp / "run", "--config", str(cfg)), [
        str(cfg),
        "not a YAML text file",
    ]


def _classification_rank_deficient(tmp: Path) -> tuple[list[str], list[str]]:
    root = labelled(tmp / "data")
    bad = scan(root / "imagesTr" / "case_2.nii.gz", affine=rank_deficient())
    argv = finetune(root, tmp / "ft", "split.n_test=2", "classification.input_size=[32,32,32]")
    argv[argv.index("segmentation")] = "classification"
    return argv, [str(bad), "degenerate"]


def _config_file_missing(tmp: Path) -> tuple[list[str], list[str]]:
    cfg = tmp / "nope.yaml"
    return pretrain(scans(tmp / "data"), tmp / "run", "--config", str(cfg)), [str(cfg), "does not exist"]


def _manifest(name: str, write: Callable[[Path], Path], says: list[str]) -> Case:
    def build(tmp: Path) -> tuple[list[str], list[str]]:
        scans(tmp / "data")
        path = write(tmp / "data")
        return pretrain(path, tmp / "run"), [path.name, *says]

    return Case(name, build)


def _empty_folder(tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "empty").mkdir()
    return pretrain(tmp / "empty", tmp / "run"), [str(tmp / "empty"), "no scans"]


def _unsupported_only(tmp: Path) -> tuple[list[str], list[str]]:
    (tmp / "data").mkdir()
    (tmp / "data" / "scan.img").write_bytes(b"\0" * 10)
    return pretrain(tmp / "data", tmp / "run"), [str(tmp / "data"), "no scans found"]


def _skip_case(name: str, make: Callable[[Path], Path]) -> Case:
    """A bad scan among good ones: the run goes on (exit 0); checked in ``test_bad_scan_is_skipped``."""

    def build(tmp: Path) -> tuple[list[str], list[str]]:
        folder = scans(tmp / "data", n=2)
        bad = make(folder / "bad.nii.gz")
        return pretrain(folder, tmp / "run"), [str(bad)]

    return Case(name, build, code=0)


CASES = [
    # settings: ranges and relations, checked before any scan is read
    cfg_case("unknown-key", ["train.batch_sz=2"], ["batch_sz", "unknown config key"]),
    cfg_case("wrong-type", ["train.max_steps=many"], ["train.max_steps", "integer"]),
    cfg_case("enum-value", ["train.amp=fp8"], ["train.amp", "bf16"]),
    cfg_case("ckpt-every-zero", ["train.ckpt_every=0"], ["train.ckpt_every must be >= 1"]),
    cfg_case("batch-size-zero", ["train.batch_size=0"], ["train.batch_size must be >= 1"]),
    cfg_case("lr-negative", ["optim.lr=-1"], ["optim.lr must be > 0"]),
    cfg_case("lr-nan", ["optim.lr=.nan"], ["optim.lr must be > 0"]),
    cfg_case("betas-above-one", ["optim.betas=[0.9,1.5]"], ["optim.betas", "< 1"]),
    cfg_case("drop-path-one", ["model.drop_path_rate=1.0"], ["model.drop_path_rate", "< 1"]),
    cfg_case("depth-zero", ["model.depths=[2,0,2,2]"], ["model.depths", ">= 1"]),
    cfg_case("heads-vs-depths", ["model.num_heads=[3,6]"], ["model.num_heads", "model.depths"]),
    cfg_case("max-voxels-zero", ["data.max_voxels=0"], ["data.max_voxels must be >= 1"]),
    cfg_case("workers-negative", ["data.num_workers=-1"], ["data.num_workers must be >= 0"]),
    cfg_case("log-every-zero", ["train.log_every=0"], ["train.log_every must be >= 1"]),
    cfg_case("grad-accum-zero", ["train.grad_accum=0"], ["train.grad_accum must be >= 1"]),
    cfg_case("max-minutes-zero", ["train.max_minutes=0"], ["train.max_minutes must be > 0"]),
    cfg_case("min-lr-above-lr", ["optim.lr=0.001", "optim.min_lr=0.1"], ["optim.min_lr", "optim.lr"]),
    cfg_case("device-unknown", ["train.device=foo"], ["train.device = 'foo' is not a device"]),
    cfg_case(
        "crop-not-multiple-of-32", ["swinssl.crop_size=[48,48,48]"], ["swinssl.crop_size", "multiple of 32"]
    ),
    cfg_case("spacing-zero", ["data.spacing=[0,1,1]"], ["data.spacing"]),
    cfg_case("hu-window-reversed", ["data.hu_window=[100,-100]"], ["data.hu_window"]),
    cfg_case("override-without-value", ["train.max_steps"], ["train.max_steps", "key=value"]),
    cfg_case("unknown-preset", ["--preset", "huge"], ["huge", "available presets"]),
    _config_file("config-not-yaml", "train: [max_steps: 3\n", ["not valid YAML"]),
    _config_file("config-not-mapping", "- 1\n- 2\n", ["mapping"]),
    Case("config-is-binary", _config_binary),
    Case("classification-image-rank-deficient", _classification_rank_deficient),
    Case("config-file-missing", _config_file_missing),
    ft_cfg_case("ft-n-test-zero", ["split.n_test=0"], ["split.n_test must be >= 1"]),
    ft_cfg_case("ft-roi-not-32", ["segmentation.roi_size=[48,48,48]"], ["segmentation.roi_size", "32"]),
    ft_cfg_case("ft-overlap-one", ["segmentation.sw_overlap=1.0"], ["segmentation.sw_overlap", "< 1"]),
    ft_cfg_case("ft-pos-fraction", ["segmentation.pos_fraction=2"], ["segmentation.pos_fraction", "<= 1"]),
    ft_cfg_case("ft-select-best-no-val", ["train.select=best"], ["train.select=best", "split.n_val"]),
    ft_cfg_case("ft-labeled-zero", ["--labeled", "0"], ["split.labeled"]),
    Case("ft-labeled-too-many", _ft_labeled_too_many),
    # data: one bad scan is all there is -> refused, naming it
    Case("data-missing", lambda t: (pretrain(t / "nope", t / "run"), [str(t / "nope")])),
    Case("data-empty-folder", _empty_folder),
    Case("data-unsupported-files-only", _unsupported_only),
    only_scan_case("empty-file", lambda p: write_file(p, b""), ["empty file"]),
    only_scan_case("truncated-gzip", truncated, ["corrupt, truncated"]),
    only_scan_case(
        "text-named-nifti", lambda p: write_file(p, b"patient notes, not an image\n" * 20), ["cannot read"]
    ),
    only_scan_case("2d-image", lambda p: scan(p, shape=(SIZE, SIZE, 1)), ["2D image"]),
    only_scan_case("4d-two-channels", lambda p: scan(p, shape=(SIZE, SIZE, SIZE, 2)), ["2 channels"]),
    only_scan_case("nan-voxels", nan_voxels, ["NaN/Inf voxels"]),
    only_scan_case("constant-image", constant, ["constant"]),
    only_scan_case(
        "header-30000-cubed", lambda p: huge_header(p.with_suffix(""), (30000,) * 3), ["data.max_voxels"]
    ),
    only_scan_case(
        "header-100000-cubed", lambda p: huge_header(p.with_suffix(""), (100000,) * 3), ["data.max_voxels"]
    ),
    only_scan_case(
        "affine-rank-deficient", lambda p: scan(p, affine=rank_deficient()), ["degenerate", "rank 2"]
    ),
    only_scan_case(
        "affine-zero-spacing", lambda p: scan(p, affine=np.diag([2.0, 0.0, 2.0, 1.0])), ["degenerate"]
    ),
    only_scan_case("affine-nan", lambda p: scan(p, affine=nan_affine()), ["NaN/Inf"]),
    _manifest(
        "manifest-entry-missing",
        lambda d: write_file(
            d / "dataset.json", json.dumps({"training": [{"image": "gone.nii.gz"}]}).encode()
        ),
        ["gone.nii.gz"],
    ),
    _manifest(
        "manifest-broken-json",
        lambda d: write_file(d / "dataset.json", b'{"training": [,]}'),
        ["not valid JSON"],
    ),
    _manifest(
        "csv-without-image-column", lambda d: write_file(d / "scans.csv", b"path\ngood_0.nii.gz\n"), ["image"]
    ),
    # fine-tuning: labels are checked against their images before anything is trained
    ft_data_case(
        "label-30mm-off-grid",
        lambda r: bad_label(r, affine=shifted(30.0)),
        ["not on its image's grid", "30 mm"],
    ),
    ft_data_case(
        "label-other-shape", lambda r: bad_label(r, shape=(SIZE, SIZE, SIZE - 8)), ["spatial shape"]
    ),
    ft_data_case("label-non-integer", lambda r: bad_label(r, value=0.5), ["non-integer"]),
    ft_data_case("label-unknown-value", lambda r: bad_label(r, value=7), ["[7]"]),
    ft_data_case(
        "ft-image-huge-header",
        lambda r: bad_image(r, lambda p: huge_header(p, (30000,) * 3)),
        ["data.max_voxels"],
    ),
    ft_data_case(
        "ft-image-rank-deficient",
        lambda r: bad_image(r, lambda p: scan(p, affine=rank_deficient())),
        ["degenerate"],
    ),
    Case("ft-entry-without-label", _ft_no_label),
    Case("ft-label-file-missing", _ft_label_file_missing),
    Case("ft-data-is-a-scan", _ft_data_is_a_scan),
    # weights and models that are not what they claim
    _init_case("init-text-file", write_text, ["not a PyTorch checkpoint"]),
    _init_case("init-pickled-object", write_pickled_object, ["pickled Python objects"]),
    _init_case(
        "init-random-bytes", lambda p: write_file(p, os.urandom(2048)).touch(), ["cannot read weights file"]
    ),
    Case(
        "init-missing",
        lambda t: (finetune(labelled(t / "data"), t / "ft", init=str(t / "w.pt")), [str(t / "w.pt")]),
    ),
    Case("init-run-corrupt-checkpoint", _init_run_corrupt, forbidden=["101"]),
    _eval_case("eval-model-text", write_text, ["not a PyTorch checkpoint"]),
    _eval_case("eval-model-pickled-object", write_pickled_object, ["pickled Python objects"]),
    _eval_case(
        "eval-model-no-state-dict", lambda p: torch.save({"w": torch.zeros(2)}, p), ["not a model written"]
    ),
    Case("eval-not-a-finetune-dir", _eval_not_finetune),
    # the file system
    Case("out-under-a-file", _out_under_a_file),
    # accepted: a bad scan among good ones is skipped and the run goes on
    _skip_case("skip-header-30000-cubed", lambda p: huge_header(p.with_suffix(""), (30000,) * 3)),
    _skip_case("skip-rank-deficient-affine", lambda p: scan(p, affine=rank_deficient())),
    _skip_case("skip-truncated", truncated),
]
REFUSED = [c for c in CASES if c.code != 0]
SKIPPED = [c for c in CASES if c.code == 0]


@pytest.fixture
def anatssl_log() -> Iterator[list[str]]:
    """Messages of the ``anatssl`` logger (it does not propagate, so caplog cannot see them)."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logger = logging.getLogger("anatssl")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def temp_leftovers(root: Path) -> list[Path]:
    """Half-written files: the temp names of atomic writes (checkpoints, cache arrays, metrics)."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


def run(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    monkeypatch.delenv("ANATSSL_DEBUG", raising=False)
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_bad_input_is_refused_with_one_clear_line(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, says = case.build(tmp_path)
    code, output = run(argv, capsys, monkeypatch)
    assert code == case.code, f"exit status {code}, expected {case.code}; output:\n{output}"
    assert "Traceback" not in output, output
    errors = [ln for ln in output.splitlines() if ln.startswith(f"anatssl {argv[0]}: error: ")]
    assert len(errors) == 1, f"expected one error line, got:\n{output}"
    for text in says:
        assert text in output, f"the error does not say {text!r}:\n{output}"
    for text in case.forbidden:
        assert text not in output, f"the error says {text!r}:\n{output}"
    assert not temp_leftovers(tmp_path)
    for product in (
        "run/checkpoints/last.pt",
        "run/metrics.jsonl",
        "ft/model.pt",
        "ft/metrics.json",
        "eval/metrics.json",
    ):
        assert not (tmp_path / product).exists(), f"{product} written by a refused run"


@pytest.mark.parametrize("case", SKIPPED, ids=[c.name for c in SKIPPED])
def test_bad_scan_is_skipped_and_the_run_goes_on(
    case: Case,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    anatssl_log: list[str],
) -> None:
    argv, (bad,) = case.build(tmp_path)
    code, output = run(argv, capsys, monkeypatch)
    assert code == 0, output
    assert "Traceback" not in output
    warnings = "\n".join(anatssl_log)
    assert f"skipping scan {bad}" in warnings, warnings
    summary = [m for m in anatssl_log if "skipped in this run" in m]
    assert len(summary) == 1 and bad in summary[0] and "good_0" not in summary[0], anatssl_log
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert not temp_leftovers(tmp_path)


def test_the_corpus_covers_every_class_of_issue_18() -> None:
    names = {c.name for c in CASES}
    assert len(CASES) >= 40 and len(names) == len(CASES)
    for needed in (
        "label-30mm-off-grid",
        "affine-rank-deficient",
        "header-100000-cubed",
        "header-30000-cubed",
        "skip-header-30000-cubed",
        "label-other-shape",
        "ckpt-every-zero",
        "ft-data-is-a-scan",
        "eval-model-pickled-object",
        "init-text-file",
    ):
        assert needed in names


# -- the disk fills up while a checkpoint is written -------------------------------------------------
class FullDisk:
    """A file whose writes fail with ENOSPC once 4 KiB have gone through, as on a disk that fills up."""

    def __init__(self, f: object) -> None:
        self._f = f
        self._n = 0

    def write(self, b: bytes) -> int:
        self._n += len(b)
        if self._n > 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(b)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._f, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()  # type: ignore[attr-defined]


def full_disk_on(monkeypatch: pytest.MonkeyPatch, fragment: str, nth: int = 1) -> None:
    """The ``nth`` file :func:`atomic_torch_save` opens whose temp name holds ``fragment`` fills the disk;
    torch.save itself runs for real (and wraps the failure in its RuntimeError)."""
    real_fdopen = os.fdopen
    seen = [0]

    def fdopen(fd: int, *args: object, **kwargs: object) -> object:
        f = real_fdopen(fd, *args, **kwargs)  # type: ignore[call-overload]
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            seen[0] += 1
            if seen[0] == nth:
                return FullDisk(f)
        return f

    monkeypatch.setattr(checkpoint_mod.os, "fdopen", fdopen)


def test_disk_full_keeps_the_previous_checkpoint_and_names_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second checkpoint write hits ENOSPC inside torch.save (a real torch.save into a file whose
    writes fail after 4 KiB, as on a full disk): the run ends with one line naming last.pt, and the
    first checkpoint is intact."""
    full_disk_on(monkeypatch, ".last.pt.", nth=2)
    run_dir = tmp_path / "run"
    code, output = run(
        pretrain(scans(tmp_path / "data"), run_dir, "train.max_steps=3", "train.ckpt_every=1"),
        capsys,
        monkeypatch,
    )
    last = run_dir / "checkpoints" / "last.pt"
    assert code == 2, output
    assert "Traceback" not in output and "unexpected pos" not in output
    assert f"{last}: no space left on the device" in output and "ENOSPC" in output, output
    assert torch.load(last, weights_only=True)["step"] == 1  # the previous checkpoint survived, whole
    assert not temp_leftovers(tmp_path)


def test_disk_full_during_export_names_the_file_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    swin = ("model.backbone=swin", "model.feature_size=12", "train.max_steps=1", "train.batch_size=1")
    assert run(pretrain(scans(tmp_path / "data"), run_dir, *swin), capsys, monkeypatch)[0] == 0
    full_disk_on(monkeypatch, ".encoder.pt.")
    target = tmp_path / "export" / "encoder.pt"
    code, output = run(
        ["export", "--run", str(run_dir), "--format", "safetensors", "--out", str(target)],
        capsys,
        monkeypatch,
    )
    assert code == 0 and target.is_file(), output  # safetensors does not go through torch.save
    target.unlink()
    code, output = run(
        ["export", "--run", str(run_dir), "--format", "monai-swinunetr", "--out", str(target)],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "Traceback" not in output, output
    assert f"{target}: no space left on the device" in output, output
    assert not target.exists() and not temp_leftovers(tmp_path)


def test_torch_writer_failure_without_an_errno_is_one_line() -> None:
    """torch.save(obj, path) writes from C++: a full disk surfaces only as this RuntimeError (seen with
    torch 2.13 writing to /dev/full), with no errno and no path."""
    from anatssl.errors import user_message

    e = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    e.__context__ = RuntimeError("basic_ios::clear: iostream error")
    message = user_message(e, fallback_path="runs/a")
    assert message is not None and message.startswith("writing a PyTorch file under runs/a failed part-way")
    assert user_message(RuntimeError("CUDA error: device-side assert triggered")) is None


def test_disk_full_while_logging_names_metrics_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """metrics.jsonl's writes fail with ENOSPC (the file object's own error names no file)."""
    from anatssl.engine.logger import RunLogger

    class FullDisk:
        def __init__(self, f: object) -> None:
            self._f = f

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self._f.close()  # type: ignore[attr-defined]

    real_enter = RunLogger.__enter__

    def enter(self: RunLogger) -> RunLogger:
        self._file = FullDisk(self._file)  # type: ignore[assignment]
        return real_enter(self)

    monkeypatch.setattr(RunLogger, "__enter__", enter)
    run_dir = tmp_path / "run"
    code, output = run(pretrain(scans(tmp_path / "data"), run_dir), capsys, monkeypatch)
    assert code == 2 and "Traceback" not in output, output
    assert f"{run_dir / 'metrics.jsonl'}: no space left on the device" in output, output
    assert not temp_leftovers(tmp_path)


# -- --debug and ANATSSL_DEBUG show the traceback; without them, none --------------------------------
@pytest.mark.parametrize("how", ["flag-after", "flag-before", "env"])
def test_debug_shows_the_traceback(
    how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = pretrain(scans(tmp_path / "data"), tmp_path / "run", "train.ckpt_every=0")
    if how == "flag-after":
        argv = [*argv, "--debug"]
    elif how == "flag-before":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("ANATSSL_DEBUG", "1")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" in err and "ConfigError" in err
    assert err.rstrip().splitlines()[-1] == "anatssl pretrain: error: train.ckpt_every must be >= 1, got 0"


def test_os_errors_without_a_path_name_the_output_folder() -> None:
    from anatssl.errors import user_message

    full = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    full.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert user_message(full, fallback_path="runs/a") == (
        "writing under runs/a: no space left on the device: free space there or write elsewhere (--out, "
        "data.cache_dir); checkpoints and cache entries are written atomically, so their previous versions "
        "are intact (ENOSPC)"
    )
    denied = user_message(PermissionError(errno.EACCES, "Permission denied", "/data/ct.nii.gz"))
    assert denied is not None and denied.startswith("/data/ct.nii.gz: permission denied")
    assert user_message(ValueError("a bug")) is None  # not the user's: keeps its traceback
    raw = pickle.UnpicklingError(
        "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will "
        "likely succeed"
    )
    assert "weights_only" not in (user_message(raw) or "weights_only")


def test_a_gzip_stream_that_is_not_nifti_is_a_bad_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "bad.nii.gz").write_bytes(gzip.compress(b"{'not': 'nifti'}" * 100))
    code, output = run(pretrain(folder, tmp_path / "run"), capsys, monkeypatch)
    assert code == 2 and str(folder / "bad.nii.gz") in output and "Traceback" not in output
