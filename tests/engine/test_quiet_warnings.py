"""The CLI keeps library deprecation notices off the console, not the user's warnings."""

from __future__ import annotations

import logging
import warnings

import pytest

from anatssl.engine.logger import quiet_library_warnings


def test_deprecations_are_quiet_and_user_warnings_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANATSSL_SHOW_WARNINGS", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_library_warnings()
        warnings.warn("`foo` has been deprecated since version 1.3", FutureWarning, stacklevel=1)
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
        warnings.warn(
            "NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register", UserWarning, stacklevel=1
        )
        warnings.warn("3 scans are smaller than the crop", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["3 scans are smaller than the crop"]
    assert logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").getEffectiveLevel() == logging.ERROR


def test_an_environment_variable_shows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANATSSL_SHOW_WARNINGS", "1")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_library_warnings()
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    assert len(seen) == 1
