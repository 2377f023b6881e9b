"""``anatssl data check PATH``: a dataset's fingerprint and integrity check (:mod:`anatssl.data.check`).

Exit status: 0 nothing would fail a run (warnings are printed), 1 something would (an unreadable scan,
a channel file or label on another grid, label values outside the table, a channel-count mismatch, a
scan where the preset finds no body), 2 nothing could be checked (no such path, a bad option).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from anatssl.cli.args import FORMATS, add_config_layers, command_parser

CHECK_EPILOG = """\
examples:
  anatssl synth --out data --n 3 --size 32 && anatssl data check data
  anatssl data check /data/Task01_BrainTumour --modality mri model.in_channels=4
  anatssl data check /data/ct --method s2dc --preset base --workers 4 --out ct_check.json
  anatssl data check /data/ct data.spacing=[1.5,1.5,2.0] data.hu_window=[-125,225]

--method / --preset / --config / key=value name the run the data is meant for: the check applies its
data.* settings (modality, HU window or MRI percentiles, spacing, body crop) and compares each scan,
after preprocessing, with the method's crop (a smaller scan is zero-padded: a warning).

The JSON report goes to --out, by default DATA/.anatssl_check.json (the folder of a dataset.json or
CSV given as DATA); when that folder is read-only, ./anatssl_check_<name>.json, else the system temp
folder; the last line says where.

exit status: 0 nothing would fail a run (warnings may be listed), 1 something would (unreadable scan,
channel file or label on another grid, label values outside the table, channel-count mismatch, no body
found), 2 nothing could be checked (no such path, bad option).
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = command_parser(
        sub,
        "data",
        help="inspect a dataset: `anatssl data check PATH`",
        description="Dataset tools. `anatssl data check PATH` reads every case as a run would and says "
        "what would fail it (docs/data-check.md).",
        epilog="examples:\n  anatssl data check data\n",
    )
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=IntermixedParser)
    add_check_parser(actions)
    p.set_defaults(func=_no_action(p))
    return p


class IntermixedParser(argparse.ArgumentParser):
    """``check PATH --method s2dc data.spacing=[2,2,2]``: plain argparse gives PATH and the trailing
    ``key=value`` list their values at the first run of positionals (PATH only) and then refuses the
    override after the options; intermixed parsing collects the positionals from anywhere."""

    _inside = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inside:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _no_action(p: argparse.ArgumentParser) -> Any:
    def run(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    return run


def add_check_parser(sub: Any) -> argparse.ArgumentParser:
    from anatssl.methods import METHODS

    p = command_parser(
        sub,
        "check",
        help="fingerprint and integrity check of a dataset (table on screen, JSON on disk)",
        description="Read every case of a dataset (headers first, then each file once) and report: scans "
        "readable or not and why, a modality guess, shape / spacing / intensity distributions, label "
        "values against the label table, image/label and channel grid mismatches, and the preprocessing "
        "a run would apply (data.* settings, the method's crop against the scan shapes).",
        epilog=CHECK_EPILOG,
    )
    p.add_argument("path", metavar="PATH", help="dataset folder, dataset.json, CSV or scan file")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="the layout of PATH (default: detected from the files; docs/layouts.md)",
    )
    p.add_argument(
        "--modality",
        choices=["ct", "mri"],
        help="shortcut for data.modality: which intensity preset to check (default: the preset's)",
    )
    p.add_argument(
        "--method",
        default="swinssl",
        choices=METHODS.names(),
        help="the method whose preset holds the data settings and crop (default swinssl)",
    )
    add_config_layers(
        p, "the preset the run will use (tiny or base; default tiny)", "data.* / model.* overrides"
    )
    p.add_argument("--out", help="the JSON report (default DATA/.anatssl_check.json; see below)")
    p.add_argument(
        "--workers", type=int, default=0, metavar="N", help="processes reading scans (default 0: this one)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-case table")
    p.set_defaults(func=run_check)
    return p


def run_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from anatssl.data.check import check_dataset, read_cases
    from anatssl.data.progress import progress_bar
    from anatssl.errors import ConfigError
    from anatssl.methods import build_method
    from anatssl.runs import load_pretrain_config

    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    overrides = list(args.overrides)
    if args.modality:
        overrides.append(f"data.modality={args.modality}")
    cfg = load_pretrain_config(args.method, args.preset, args.config, overrides)
    crop = build_method(cfg).min_volume_shape  # the tiny presets build in ~0.1 s
    files = read_cases(args.path, args.format)
    with progress_bar(not args.quiet, len(files.cases), "checking scans") as advance:
        report = check_dataset(
            args.path,
            cfg.data,
            in_channels=cfg.model.in_channels,
            min_shape=crop,
            workers=args.workers,
            on_case=advance,
            files=files,
        )
    report.settings["method"] = args.method
    report.settings["preset"] = args.preset
    # prose lines are not hard-wrapped (a terminal wraps them; a log keeps each message on one line)
    console = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=True)
    print_report(console, report, show_cases=not args.quiet)
    where, note = write_report(report.to_json(), args.path, args.out)
    if note:
        console.print(note)
    console.print(f"report: {where}")
    return 0 if report.ok else 1


def write_report(doc: dict[str, Any], data: str, out: str | None) -> tuple[Path, str]:
    """Write the JSON report atomically -> (where, a note if it is not where it was asked for)."""
    from anatssl.data.check import default_report_path

    if out is not None:
        _write_json(Path(out), doc)  # an explicit path that fails is the user's error (exit 2)
        return Path(out), ""
    default = default_report_path(data)
    name = default.parent.name or "data"
    candidates = [
        default,
        Path.cwd() / f"anatssl_check_{name}.json",
        Path(tempfile.gettempdir()) / f"anatssl_check_{name}.json",
    ]
    for c in candidates:
        try:
            _write_json(c, doc)
        except OSError:
            continue
        note = "" if c == default else f"note: {default.parent} is not writable; the report went to {c}"
        return c, note
    raise OSError(f"cannot write the report to any of {[str(c) for c in candidates]}; pass --out FILE")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _shape(v: Any) -> str:
    return "x".join(str(int(s)) for s in v) if v else "-"


def _spacing(v: Any) -> str:
    return "x".join(f"{s:.3g}" for s in v) if v else "-"


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 3, 5, 7, 8] -> '0-3,5,7-8' (label values in a table cell)."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and runs[-1][1] == v - 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(str(a) if a == b else f"{a}..{b}" if a < 0 else f"{a}-{b}" for a, b in runs)


def _spread_row(d: dict[str, list[float]] | None, fmt: Any) -> tuple[str, str, str]:
    if not d:
        return ("-", "-", "-")
    return (fmt(d["min"]), fmt(d["median"]), fmt(d["max"]))


def _short(path: str) -> str:
    """``/data/ds/labelsTr/a.nii.gz`` -> ``labelsTr/a.nii.gz``: an image and its label often share a name."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def error_rows(report: Any) -> list[tuple[str, str, str]]:
    """(case, file name, message) per error: each case's own first (the file is the one of the case's
    files that its message names), then the dataset's (case ``-``)."""
    rows, own = [], set()
    for c in report.cases:
        files = [*c.images, *([c.label] if c.label else [])]
        for e in c.errors:
            named = sorted((e.find(f), f) for f in files if f in e)  # the first file the message names
            rows.append((c.name, _short(named[0][1]) if named else "-", e))
            own.add(e)
    rows += [("-", "-", e) for e in report.errors if e not in own]
    return rows


def print_report(console: Any, report: Any, show_cases: bool = True) -> None:
    """The check on screen: a per-case table, the distributions, the preprocessing, errors, warnings."""
    from rich.table import Table
    from rich.text import Text

    from anatssl.data.check import fmt_number

    doc = report.to_json()
    counts = doc["counts"]
    console.print(
        f"[bold]{report.path}[/bold]: format {report.format}, {counts['cases']} cases, "
        f"{counts['readable']} readable, {counts['with_errors']} with errors"
    )
    if show_cases and report.cases:
        t = Table(title="cases", title_justify="left")
        for col in (
            "case",
            "status",
            "shape",
            "spacing mm",
            "ch",
            "min / p50 / max",
            "guess",
            "labels",
            "after prep.",
        ):
            t.add_column(col, overflow="fold")
        style = {"ok": "green", "warning": "yellow", "error": "red"}
        for c in report.cases:
            it = c.intensity[0] if c.intensity else None
            inten = "-" if it is None else " / ".join(fmt_number(it[k]) for k in ("min", "p50", "max"))
            guess = "-" if not c.modality else f"{c.modality['modality']} ({c.modality['confidence']})"
            labels = "-" if c.label_values is None else _ranges(c.label_values)
            t.add_row(
                c.name,
                f"[{style[c.status]}]{c.status}[/]",
                _shape(c.shape),
                _spacing(c.spacing),
                str(c.channels or "-"),
                inten,
                guess,
                labels,
                _shape(c.preprocessed_shape),
            )
        console.print(t)
    s = report.summary
    if s.get("shape"):
        t = Table(title="over readable scans", title_justify="left")
        for col in ("", "min", "median", "max"):
            t.add_column(col)
        t.add_row("shape", *_spread_row(s["shape"], _shape))
        t.add_row("spacing mm", *_spread_row(s["spacing"], _spacing))
        t.add_row("after preprocessing", *_spread_row(s.get("preprocessed_shape"), _shape))
        console.print(t)
        t = Table(
            title="intensity over scans (percentiles pooled from a sample of each)", title_justify="left"
        )
        for col in ("channel", "min", "p0.5", "p50", "p99.5", "max"):
            t.add_column(col)
        names = report.channel_names
        for i, st in enumerate(s.get("intensity", [])):
            name = f"{i} {names[i]}" if i < len(names) else str(i)
            t.add_row(name, *(fmt_number(st[k]) for k in ("min", "p0.5", "p50", "p99.5", "max")))
        console.print(t)
    m = report.modality
    guess = f"[bold]{m['modality'].upper()}[/bold] ({m['confidence']} confidence)"
    console.print(f"modality guess: {guess}: {m['evidence']}")
    if report.label_table:
        present = [v for v in s.get("label_values_present", []) if v in report.label_table]
        outside = sorted(
            {v for c in report.cases for v in (c.label_values or []) if v not in report.label_table}
        )
        console.print(
            f"labels: {len(report.label_table)} values in the table, {len(present)} of them present"
            + (f", [red]outside the table: {outside}[/red]" if outside else "")
        )
    console.print("preprocessing a run would apply: " + describe_settings(report.settings))
    if report.errors:
        t = Table(
            title=f"{len(report.errors)} error(s): a run would fail or drop the case",
            title_justify="left",
            title_style="bold red",
        )
        t.add_column("case", no_wrap=True)
        t.add_column("file", no_wrap=True)
        t.add_column("error", overflow="fold")
        for case, where, text in error_rows(report):
            t.add_row(Text(case), Text(where), Text(text))
        console.print(t)
    if report.warnings:
        console.print(f"[yellow]{len(report.warnings)} warning(s)[/]:")
        for w in report.warnings:
            console.print(f"  ! {w}", markup=False, highlight=False)
    if report.ok:
        console.print("[green]ok[/]: nothing found that would fail a run")


def describe_settings(st: dict[str, Any]) -> str:
    """The resolved data.* settings in one line, e.g. ``swinssl tiny: CT, HU window [-1000, 1000] ...``."""
    parts = [f"{st.get('method', '?')} {st.get('preset', '')}:".replace(" :", ":")]
    if st["modality"] == "ct":
        lo, hi = st["hu_window"]
        parts.append(f"CT, clip to the HU window [{lo:g}, {hi:g}] and scale to [0, 1];")
    else:
        lo, hi = st["mri_percentiles"]
        parts.append(f"MRI, per-scan percentiles {lo:g} / {hi:g} -> 0 / 1, clipped;")
    sp = st["spacing"]
    parts.append("native spacing (no resampling);" if sp is None else f"resample to {_spacing(sp)} mm;")
    parts.append("crop to the body box;" if st["foreground_crop"] else "no body crop;")
    parts.append(f"{st['in_channels']} channel(s);")
    parts.append(
        "no fixed crop"
        if not st.get("crop")
        else f"crop {_shape(st['crop'])} (smaller scans are zero-padded)"
    )
    return " ".join(parts)
