"""Settings are checked once, at start: a value PixShift cannot use stops the process with a message
naming the variable, instead of failing every image later (a bad PIXSHIFT_MIN_QUALITY used to fail
each image as internal_error)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.livestack import BIN, ROOT
from pixshift.config import Config, ConfigError


def test_every_unusable_setting_is_named_at_once(monkeypatch):
    monkeypatch.setenv("PIXSHIFT_MIN_QUALITY", "high")
    monkeypatch.setenv("PIXSHIFT_MAX_QUALITY", "120")
    monkeypatch.setenv("PIXSHIFT_JPEG_ENCODER", "mozjepg")
    monkeypatch.setenv("PIXSHIFT_WEBHOOK_RETRY_SCHEDULE", "5,soon")
    with pytest.raises(ConfigError) as refused:
        Config()
    message = str(refused.value)
    for name in (
        "PIXSHIFT_MIN_QUALITY",
        "PIXSHIFT_MAX_QUALITY",
        "PIXSHIFT_JPEG_ENCODER",
        "PIXSHIFT_WEBHOOK_RETRY_SCHEDULE",
    ):
        assert name in message, message


def test_settings_that_contradict_each_other_are_refused(monkeypatch):
    monkeypatch.setenv("PIXSHIFT_MIN_QUALITY", "90")
    monkeypatch.setenv("PIXSHIFT_MAX_QUALITY", "80")
    with pytest.raises(ConfigError, match="MIN_QUALITY must not be above"):
        Config()
    monkeypatch.delenv("PIXSHIFT_MIN_QUALITY")
    monkeypatch.delenv("PIXSHIFT_MAX_QUALITY")
    monkeypatch.setenv("PIXSHIFT_MEDIA_DELIVERY", "public")
    with pytest.raises(ConfigError, match="needs PIXSHIFT_MEDIA_PUBLIC_BASE_URL"):
        Config()


def test_unset_and_empty_mean_the_default(monkeypatch):
    monkeypatch.setenv("PIXSHIFT_MIN_QUALITY", "")
    assert Config().MIN_QUALITY == 30


@pytest.mark.parametrize(
    "argv",
    [[sys.executable, "-m", "pixshift"], [str(BIN / "huey_consumer"), "pixshift.worker.huey", "-k", "thread"]],
    ids=["python -m pixshift", "huey_consumer"],
)
def test_a_process_with_a_bad_setting_does_not_start(argv, tmp_path):
    env = {**os.environ, "PIXSHIFT_INSTANCE_PATH": str(tmp_path), "PORT": "0", "PIXSHIFT_MIN_QUALITY": "0"}
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "PIXSHIFT_MIN_QUALITY=0 must be from 1 to 100" in proc.stderr, proc.stderr[-2000:]
    assert "Listening at" not in proc.stderr
