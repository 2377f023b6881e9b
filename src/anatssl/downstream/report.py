"""The one writer of a downstream run's ``metrics.json`` (fine-tuning, evaluation, probes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anatssl.downstream.metrics import json_safe


def write_metrics_json(metrics: dict[str, Any], out_dir: str | Path, name: str = "metrics.json") -> Path:
    """``out_dir/name``: ``metrics`` as strict JSON (NaN / inf -> null), indented; -> the path."""
    path = Path(out_dir) / name
    path.write_text(json.dumps(json_safe(metrics), indent=2))
    return path
