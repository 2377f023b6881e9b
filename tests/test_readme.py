"""The README is a test (issue 19): every command README.md and docs/*.md, docs/methods/*.md show runs.

The commands are parsed from the pages, never copied here: every fenced shell block (```bash, ```sh or
a bare ```) whose lines are commands is a recipe. Each recipe runs in order, at tiny sizes, in a fresh
directory, through the real entry points (``anatssl.cli.main.main`` in this process; ``torchrun`` as a
subprocess), and every command must exit 0 and leave the files it says it writes (``WRITES``). A
command is made tiny by appending the overrides of ``TINY`` for its subcommand (argparse and the
``key=value`` overrides take the last value given, so the page's own sizes are replaced, the rest of the
command runs as written). A command that is not run says why in ``NOT_RUN``; one that is neither run nor
listed fails ``test_every_documented_command_is_run_or_listed`` (default suite), which also parses every
command that is run with the CLI's own parser and resolves its config, so a wrong flag, key or value in
the docs fails in CI. The recipes themselves run in ``test_recipe_runs`` (slow: minutes each).

Inputs a recipe uses without making them (``--data d`` in docs/engine.md, ``--init RUN``) come from
``PLACEHOLDERS`` and ``provide_inputs`` (a copy of the session's synthetic dataset, a tiny pretraining).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from anatssl.bench.suites import SUITES, Suite
from anatssl.cli.main import COMMANDS, build_parser, main
from anatssl.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "docs/methods").glob("*.md")),
]
SHELL_INFO = {"", "bash", "sh", "shell", "console"}
EXECUTABLES = {"anatssl", "torchrun", "python", "python3", "pip", "."}
"""First words that make a line of a shell block a command (a block without one is not a recipe: e.g.
README's folder layout)."""


# ------------------------------------------------------------------------------------------------------
# parsing

UNPARSABLE = "<not shell>"
"""First word of a line that ``shlex`` cannot split (an unclosed quote: prose or program output)."""


@dataclass(frozen=True)
class Command:
    page: str
    """Page path relative to the repository root."""
    line: int
    """1-based line of the command's first line on the page."""
    argv: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def text(self) -> str:
        return shlex.join(self.argv)

    @property
    def env(self) -> dict[str, str]:
        """Leading ``NAME=value`` words (the shell's per-command environment)."""
        return dict(w.split("=", 1) for w in self.argv[: len(self.argv) - len(self.words)])

    @property
    def words(self) -> tuple[str, ...]:
        """The command without its leading environment assignments."""
        i = 0
        while i < len(self.argv) - 1 and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", self.argv[i]):
            i += 1
        return self.argv[i:]


@dataclass(frozen=True)
class Recipe:
    page: str
    line: int
    """Line of the opening fence."""
    commands: tuple[Command, ...]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def shell_blocks(text: str) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """Fenced blocks with a shell (or no) info string -> (line of the fence, [(line, text), ...])."""
    fence: str | None = None
    start, body = 0, list[tuple[int, str]]()
    for i, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if fence is None:
            m = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if m:
                fence, info, start, body = m.group(1), m.group(2).lower(), i, []
                if info not in SHELL_INFO:
                    fence = "skip:" + fence
        elif stripped.startswith(fence.removeprefix("skip:")) and stripped.strip("`~") == "":
            if not fence.startswith("skip:"):
                yield start, body
            fence = None
        else:
            body.append((i, raw))


def commands_of(lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Shell lines -> commands: backslash continuations joined, ``#`` comments dropped, ``&&`` split."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for n, raw in lines:
        if pending is not None:
            n, raw = pending[0], pending[1] + " " + raw.strip()
            pending = None
        if raw.rstrip().endswith("\\"):
            pending = (n, raw.rstrip()[:-1])
            continue
        joined.append((n, raw))
    if pending is not None:
        joined.append(pending)
    out: list[tuple[int, list[str]]] = []
    for n, raw in joined:
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as e:  # not shell (prose, output): kept, so a recipe holding it is reported
            words = [UNPARSABLE, f"{e}: {raw.strip()}"]
        cmd: list[str] = []
        for w in [*words, "&&"]:
            if w == "&&":
                if cmd:
                    out.append((n, cmd))
                cmd = []
            else:
                cmd.append(w)
    return out


def recipes_of(page: Path) -> list[Recipe]:
    rel = page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.as_posix()
    recipes = []
    for start, body in shell_blocks(page.read_text()):
        cmds = tuple(Command(rel, n, tuple(argv)) for n, argv in commands_of(body))
        if any(c.words[0] in EXECUTABLES for c in cmds):
            recipes.append(Recipe(rel, start, cmds))
    return recipes


def all_recipes() -> list[Recipe]:
    return [r for page in PAGES for r in recipes_of(page)]


# ------------------------------------------------------------------------------------------------------
# what is run, how small, and what is not run


def _subcommand(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The ``anatssl`` part of a command: ``anatssl X ...`` and ``torchrun ... -m anatssl.cli.main X``."""
    if argv[0] == "anatssl":
        return argv[1:]
    if argv[0] == "torchrun" and "anatssl.cli.main" in argv:
        return argv[argv.index("anatssl.cli.main") + 1 :]
    return ()


def _value(argv: tuple[str, ...], flag: str) -> str | None:
    """The last value given to ``flag`` (argparse's rule)."""
    vals = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
    return vals[-1] if vals else None


def _override(argv: tuple[str, ...], key: str) -> str | None:
    vals = [a.split("=", 1)[1] for a in argv if a.startswith(key + "=")]
    return vals[-1] if vals else None


def _suite_steps(suite: Suite) -> int:
    return max(int(o.split("=")[1]) for o in suite.pretrain if o.startswith("train.max_steps="))


CHECK_SUITE_MAX_STEPS = 10
"""A benchmark suite of at most this many pretraining steps is a pipeline check (``smoke``): it runs as
written. Longer suites are measurements (``NOT_RUN``)."""


def _is_synopsis(argv: tuple[str, ...]) -> bool:
    return any("|" in a or a.startswith("[") for a in argv)


NOT_RUN: list[tuple[str, Callable[[tuple[str, ...]], bool], Callable[[tuple[str, ...]], str]]] = [
    (
        "install",
        lambda a: (
            a[0] in (".", "pip") or list(a[:3]) in (["python3", "-m", "venv"], ["python", "-m", "venv"])
        ),
        lambda a: "installs the package; .ci/run does exactly this from a clean clone on every CI run",
    ),
    (
        "test suite",
        lambda a: a[0] in ("python", "python3") and list(a[1:3]) == ["-m", "pytest"],
        lambda a: "the test suite itself; .ci/run runs it (this test is part of it)",
    ),
    (
        "benchmark script",
        lambda a: a[0] in ("python", "python3") and len(a) > 1 and a[1].startswith("benchmarks/"),
        lambda a: (
            "speed / memory benchmark: minutes to hours; its figures are recorded in "
            "benchmarks/results/ and the docs, and timings on a shared CI machine would mean nothing"
        ),
    ),
    (
        "nnU-Net command",
        lambda a: a[0].startswith("nnUNetv2_"),
        lambda a: (
            "nnU-Net v2 is not installed here; tests/downstream/test_nnunet_export.py builds the network "
            "from the exported plan fragment and loads the export as nnU-Net's load_pretrained_weights does"
        ),
    ),
    (
        "synopsis",
        _is_synopsis,
        lambda a: "usage synopsis with placeholders (`A|B`, `[--opt]`); the page's concrete examples run",
    ),
    (
        "paper-scale preset",
        lambda a: _value(_subcommand(a), "--preset") in ("base", "official"),
        lambda a: (
            f"--preset {_value(_subcommand(a), '--preset')}: paper scale (feature size 48, 96^3 "
            "crops), a GPU job; the same code runs here at the tiny preset"
        ),
    ),
    (
        "measurement suite",
        lambda a: (
            _subcommand(a)[:1] == ("benchmark",)
            and (s := SUITES.get(_value(a, "--suite") or "")) is not None
            and _suite_steps(s) > CHECK_SUITE_MAX_STEPS
        ),
        lambda a: (
            f"--suite {_value(a, '--suite')}: a measurement, not a check "
            f"({_suite_steps(SUITES[_value(a, '--suite') or ''])} pretraining steps per method and seed: "
            "hours of compute); the pipeline it runs is checked by the smoke suites"
        ),
    ),
]
"""(name, applies to argv, reason): commands not run, and why."""

TINY_PRETRAIN = ["train.max_steps=1", "train.batch_size=1", "train.progress=false", "train.tensorboard=false"]
TINY: dict[str, list[str]] = {
    "synth": ["--n", "6", "--size", "64", "--quiet"],
    "pretrain": TINY_PRETRAIN,  # + TINY_METHOD, and see tiny_argv for --resume / train.stop_after
    "finetune": [
        "train.max_steps=1",
        "train.batch_size=1",
        "train.progress=false",
        "optim.warmup_steps=0",
        "split.n_test=2",
        "segmentation.samples_per_volume=1",
        "segmentation.sw_batch_size=1",
        "segmentation.overlay_cases=1",
        "dense.steps=2",
    ],
    "evaluate correspondence": ["--max-subjects", "3", "--no-progress"],
    "evaluate label-transfer": ["split.n_test=2", "dense.steps=2"],
    "evaluate": [],
    "embed": ["--no-progress"],
    "match": [],
    "views": ["--n", "1"],
    "export": [],
    "benchmark": [],  # check suites only (see NOT_RUN): tiny by design
    "quickstart": ["--fast"],
    "preprocess": ["--quiet"],
    "data check": ["--quiet"],
}
"""Overrides appended per subcommand (``evaluate TASK`` may have its own row). 6 phantoms of 64^3 hold a
4-volume labelled pool (``--labeled 4``) plus a 2-volume test split; 1 step of batch 1 per training."""
TINY_METHOD = {"alice": ["alice.sam_steps=2"]}
"""Per pretraining method: Alice's stage 0 (a SAM) for 2 steps instead of its preset's 200."""

PLACEHOLDERS = {
    ("--a", "A.nii.gz"): "data/imagesTr/synth_000.nii.gz",
    ("--b", "B.nii.gz"): "data/imagesTr/synth_001.nii.gz",
    ("--init", "RUN"): "scratch",
    ("--data", "DATA"): "data",
}
"""(flag, placeholder) -> the value used; ``--out DIR`` becomes ``out_L<line>``."""


def _tiny_row(sub: tuple[str, ...]) -> list[str]:
    if len(sub) > 1 and f"{sub[0]} {sub[1]}" in TINY:
        return TINY[f"{sub[0]} {sub[1]}"]
    if sub[0] not in TINY:
        raise KeyError(sub[0])
    return TINY[sub[0]]


def tiny_argv(cmd: Command) -> list[str]:
    """The command as run: placeholders replaced, TINY overrides appended to its ``anatssl`` part."""
    argv = list(cmd.words)
    for i in range(1, len(argv)):
        if (argv[i - 1], argv[i]) in PLACEHOLDERS:
            argv[i] = PLACEHOLDERS[(argv[i - 1], argv[i])]
        elif argv[i - 1] == "--out" and argv[i] == "DIR":
            argv[i] = f"out_L{cmd.line}"
    sub = _subcommand(tuple(argv))
    extra = list(_tiny_row(sub))
    if sub[0] == "pretrain":
        extra += TINY_METHOD.get(_value(sub, "--method") or "", [])
        if "--resume" in sub:
            extra.append("train.max_steps=2")  # one step more than the run it resumes
        elif _override(sub, "train.stop_after") is not None:
            extra += ["train.max_steps=2", "train.stop_after=1"]  # stops half-way, as the page's does
    return argv + extra


def plan(cmd: Command) -> tuple[list[str] | None, str]:
    """-> (argv to run, without the command's environment: ``Command.env``, "") or (None, reason it is
    not run). KeyError: neither run nor listed."""
    for _name, applies, reason in NOT_RUN:
        if applies(cmd.words):
            return None, reason(cmd.words)
    sub = _subcommand(cmd.words)
    if not sub or sub[0] not in COMMANDS:
        raise KeyError(f"{cmd.where}: `{cmd.text}` is not an anatssl command")
    return tiny_argv(cmd), ""


# ------------------------------------------------------------------------------------------------------
# what each command says it writes


def _out(sub: tuple[str, ...]) -> Path:
    out = _value(sub, "--out")
    assert out, f"no --out in {sub}"
    return Path(out)


def _check_pretrain(sub: tuple[str, ...]) -> None:
    out = _out(sub)
    for f in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt"):
        assert (out / f).is_file(), f"pretrain did not write {out / f}"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    want = int(_override(sub, "train.stop_after") or _override(sub, "train.max_steps") or 0)
    assert rows and rows[-1]["step"] == want, (rows[-1:], want)
    pairing = _value(sub, "--pairing") or _override(sub, "alice.pairing") or "sam"
    given = {"--embeddings", "--sam", "--resume"} & set(sub)
    if _value(sub, "--method") == "alice" and pairing == "sam" and not given:
        # docs/methods/alice.md: stage 0 trains SAM into RUN/sam and caches its embeddings in RUN/embeddings
        assert (out / "sam/checkpoints/last.pt").is_file() and any((out / "embeddings").iterdir())


def _check_finetune(sub: tuple[str, ...]) -> None:
    out = _out(sub)
    task = _value(sub, "--task")
    files = ["config.yaml", "metrics.json"]
    files += {"segmentation": ["metrics.jsonl", "model.pt"], "classification": ["metrics.jsonl"]}.get(
        task or "", []
    )
    for f in files:
        assert (out / f).is_file(), f"finetune --task {task} did not write {out / f}"
    if task == "segmentation":
        assert any((out / "predictions").glob("*.nii.gz")) and any((out / "report").glob("overlay_*.png"))


def _nonempty_dir(p: Path) -> None:
    assert p.is_dir() and any(p.iterdir()), f"{p} is missing or empty"


def _nonempty_file(p: Path) -> None:
    assert p.is_file() and p.stat().st_size > 0, f"{p} is missing or empty"


def _check_synth(sub: tuple[str, ...]) -> None:
    out = _out(sub)
    doc = json.loads((out / "dataset.json").read_text())
    n = int(_value(sub, "--n") or 0)
    assert len(doc["training"]) == n and len(list((out / "imagesTr").glob("*.nii.gz"))) == n
    _nonempty_dir(out / "labelsTr")
    _nonempty_dir(out / "landmarks")


def _check_match(sub: tuple[str, ...]) -> None:
    if "--png" in sub:
        _nonempty_file(Path(_value(sub, "--png") or ""))


def _check_views(sub: tuple[str, ...]) -> None:
    assert any(_out(sub).glob("**/*.png")), f"views wrote no PNG in {_out(sub)}"


def _check_benchmark(sub: tuple[str, ...]) -> None:
    _nonempty_file(_out(sub) / "results.md")
    assert not json.loads((_out(sub) / "results.json").read_text())["failures"]


WRITES: dict[str, Callable[[tuple[str, ...]], None]] = {
    "synth": _check_synth,
    "pretrain": _check_pretrain,
    "finetune": _check_finetune,
    "evaluate": lambda sub: _nonempty_file(_out(sub) / "metrics.json"),
    "embed": lambda sub: _nonempty_dir(_out(sub)),
    "match": _check_match,
    "views": _check_views,
    "export": lambda sub: _nonempty_file(_out(sub)),
    "benchmark": _check_benchmark,
    "quickstart": lambda sub: _nonempty_dir(_out(sub) / "report"),
    "preprocess": lambda sub: _nonempty_file(
        next(Path(_value(sub, "--data") or ".").glob(".anatssl_cache/packed-*/report.json"), Path("-"))
    ),
    "data": lambda sub: _nonempty_file(Path(_value(sub, "--out") or Path(sub[2]) / ".anatssl_check.json")),
}
"""Per subcommand: the files it says it writes (its --help / docs), checked after it exits 0."""


# ------------------------------------------------------------------------------------------------------
# default suite: parsing and coverage


def test_parser_reads_commands_from_markdown(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n"
        "```bash\n"
        "# 1. a comment line\n"
        "python3 -m venv .venv && . .venv/bin/activate && anatssl synth --out d   # trailing comment\n"
        "anatssl pretrain --method swinssl --data d --out r \\\n"
        "    train.max_steps=3 model.backbone=conv\n"
        'pip install -e ".[dev]"\n'
        "```\n"
        "```python\n"
        "anatssl = 1\n"
        "```\n"
        "```\n"
        "src/anatssl/config     dataclass schemas\n"
        "src/anatssl/runs       a run folder's one reader\n"
        "```\n"
        "````\n"
        "```\n"
        "anatssl export --run r --format safetensors --out f\n"
        "````\n"
    )
    blocks = list(shell_blocks(page.read_text()))
    assert [start for start, _ in blocks] == [2, 12, 16]
    cmds = [argv for _, body in blocks for _, argv in commands_of(body)]
    assert cmds == [
        ["python3", "-m", "venv", ".venv"],
        [".", ".venv/bin/activate"],
        ["anatssl", "synth", "--out", "d"],
        ["anatssl", "pretrain", "--method", "swinssl", "--data", "d", "--out", "r", "train.max_steps=3",
         "model.backbone=conv"],
        ["pip", "install", "-e", ".[dev]"],
        ["src/anatssl/config", "dataclass", "schemas"],
        [UNPARSABLE, "No closing quotation: src/anatssl/runs       a run folder's one reader"],
        ["```"],
        ["anatssl", "export", "--run", "r", "--format", "safetensors", "--out", "f"],
    ]  # fmt: skip
    lines = [n for _, body in blocks for n, _ in commands_of(body)]
    assert lines == [4, 4, 4, 5, 7, 13, 14, 17, 18]
    assert [r.line for r in recipes_of(page)] == [2, 16]  # the folder layout is not a recipe
    page.write_text(page.read_text() + "```\nanatssl synth --out d\nit's output, not a command\n```\n")
    (recipe,) = [r for r in recipes_of(page) if r.line == 20]
    with pytest.raises(KeyError, match="not an anatssl command"):
        plan(recipe.commands[1])


def test_tiny_overrides_replace_the_pages_sizes() -> None:
    cmd = Command("README.md", 7, ("anatssl", "pretrain", "--method", "swinssl", "--data", "data", "--out",
                                   "runs/s", "--resume", "train.max_steps=400"))  # fmt: skip
    argv = tiny_argv(cmd)
    ns = build_parser().parse_args(argv[1:])
    assert ns.resume and ns.overrides[-1] == "train.max_steps=2" and ns.out == "runs/s"
    synth = build_parser().parse_args(
        tiny_argv(Command("x.md", 1, ("anatssl", "synth", "--out", "d", "--n", "24")))[1:]
    )
    assert (synth.n, synth.size) == (6, [64])
    match = tiny_argv(
        Command("x.md", 1, ("anatssl", "match", "--model", "m", "--a", "A.nii.gz", "--b", "B.nii.gz"))
    )
    assert match[-4:] == ["--a", PLACEHOLDERS[("--a", "A.nii.gz")], "--b", PLACEHOLDERS[("--b", "B.nii.gz")]]
    with pytest.raises(KeyError):
        plan(Command("x.md", 1, ("make", "all")))
    env = Command("x.md", 1, ("OMP_NUM_THREADS=1", "anatssl", "synth", "--out", "d"))
    assert env.env == {"OMP_NUM_THREADS": "1"} and (plan(env)[0] or [])[:4] == [
        "anatssl",
        "synth",
        "--out",
        "d",
    ]
    assert (
        plan(Command("x.md", 1, ("anatssl", "benchmark", "--suite", "synthetic-small", "--out", "b")))[0]
        is None
    )
    assert plan(Command("x.md", 1, ("anatssl", "benchmark", "--suite", "smoke", "--out", "b")))[0] is not None


def _resolve(argv: list[str]) -> None:
    """Parse with the CLI's parser and resolve the config the command would run with (no training)."""
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:
            raise AssertionError(err.getvalue().strip()) from e
    if args.command == "pretrain" and not args.resume:
        from anatssl.cli.pretrain import resolve_config

        resolve_config(args)
    elif args.command == "finetune":
        from anatssl.downstream.config import load_finetune_config

        load_finetune_config(args.task, args.preset, args.config, list(args.overrides))


def coverage_table() -> list[tuple[Command, list[str] | None, str]]:
    return [(c, *plan(c)) for r in all_recipes() for c in r.commands]


def test_every_documented_command_is_run_or_listed() -> None:
    """Every command of README.md and docs/ is run by test_recipe_runs (with its TINY overrides) or
    listed in NOT_RUN with the reason; each one that runs parses and resolves its config."""
    problems, rows = [], []
    for r in all_recipes():
        for c in r.commands:
            try:
                argv, reason = plan(c)
            except KeyError as e:
                problems.append(
                    f"{c.where}: `{c.text}` is neither run (add its subcommand to TINY in "
                    f"tests/test_readme.py) nor listed (NOT_RUN, with the reason): {e}"
                )
                continue
            rows.append(
                f"{c.where:32s} {'RUN ' if argv else 'SKIP'} {c.text}" + (f"  -- {reason}" if reason else "")
            )
            if argv:
                sub = list(_subcommand(tuple(argv)))
                try:
                    _resolve(sub)
                except Exception as e:
                    problems.append(
                        f"{c.where}: `{c.text}` does not parse or resolve: {type(e).__name__}: {e}"
                    )
    print("\n".join(rows))
    assert not problems, "\n".join(problems)
    readme = [c for c, _, _ in coverage_table() if c.page == "README.md"]
    words = {c.words[1] for c in readme if c.words[0] == "anatssl"}
    assert {"quickstart", "synth", "pretrain", "finetune", "export", "benchmark"} <= words, words
    assert any(c.words[0] == "torchrun" for c in readme)


# ------------------------------------------------------------------------------------------------------
# slow: the recipes, run


RECIPES = [r for r in all_recipes() if any(plan(c)[0] for c in r.commands)]


def provide_inputs(argv: list[str], dataset: Path) -> None:
    """Inputs a page's recipe uses but does not make: a missing ``--data`` directory is a copy of the
    session's synthetic dataset; a missing ``--model`` / ``--init`` / ``--run`` named ``runs/<method>``
    is a tiny pretraining of that method (docs/methods/sam.md evaluates `runs/swinssl`)."""
    sub = _subcommand(tuple(argv))
    data = _value(sub, "--data")
    if data and not Path(data).exists():
        shutil.copytree(dataset, data)
    for flag in ("--model", "--init", "--run"):
        run = _value(sub, flag)
        if run and not Path(run).exists() and Path(run).name in METHODS:
            pre = [
                "pretrain",
                "--method",
                Path(run).name,
                "--data",
                data or "data",
                "--out",
                run,
                *TINY_PRETRAIN,
            ]
            assert main(pre) == 0, pre


def _run(argv: list[str], cmd_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    if argv[0] == "torchrun":
        exe = Path(sys.executable).with_name("torchrun")
        env = {**os.environ, "OMP_NUM_THREADS": "1", **cmd_env}
        proc = subprocess.run([str(exe), *argv[1:]], capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, f"{shlex.join(argv)} exited {proc.returncode}\n{proc.stderr[-4000:]}"
        return
    for k, v in cmd_env.items():  # e.g. OMP_NUM_THREADS=1 (torch's threads are set per test anyway)
        monkeypatch.setenv(k, v)
    try:
        code = main(argv[1:])
    except SystemExit as e:  # argparse errors
        code = int(e.code or 0)
    assert code == 0, f"{shlex.join(argv)} exited with {code}"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.id for r in RECIPES])
def test_recipe_runs(
    recipe: Recipe, synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe's commands in order, in a fresh directory: exit 0 and the files each says it writes."""
    monkeypatch.chdir(tmp_path)
    for cmd in recipe.commands:
        argv, _reason = plan(cmd)
        if argv is None:
            continue
        provide_inputs(argv, synthetic_dataset)
        _run(argv, cmd.env, monkeypatch)
        sub = _subcommand(tuple(argv))
        WRITES[sub[0]](sub)
