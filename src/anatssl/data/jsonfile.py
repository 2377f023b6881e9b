"""The one reader of a JSON file a user supplies or a run wrote (manifests, label tables, landmarks,
cache manifests): every failure is a :class:`DataError` that names the file, says where the syntax
breaks, and what to do, instead of a ``UnicodeDecodeError`` or a ``JSONDecodeError`` traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anatssl.errors import DataError


def read_json(path: str | Path, what: str, fix: str = "fix the syntax") -> Any:
    """-> the parsed document of ``path``. ``what`` names the file's role in messages ("manifest",
    "landmarks"); ``fix`` says what to do when it is not valid JSON.

    A binary file (e.g. a ``.nii.gz`` passed where a ``dataset.json`` belongs) is reported as not JSON,
    with its path, not as a decoding traceback."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{what} {path} is not a JSON text file (byte {e.start} is not UTF-8: is it an image?); "
            f"pass the JSON file"
        ) from e
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{what} {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); {fix}"
        ) from e
