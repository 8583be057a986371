"""The benchmark (bench/, `python -m bench`) still runs: its --smoke mode, on the embedded default.

Tiny sizes, a few seconds; no timing is asserted (CI machines vary), only that every section ran
and printed sane figures. The real run and its table are in bench/README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    "1. Codec limit",
    "2. End to end",
    "2b. Unchanged catalog again",
    "3. Slow hosts",
    "4. Big CSV",
    "5. Status under load",
    "6. Status beside uploads",
    "7. Compression",
    "8. Small beside huge",
)


def test_the_benchmark_runs_and_prints_every_section(tmp_path):
    figures = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--modes", "embedded", "--json", str(figures)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    table = done.stdout
    for section in SECTIONS:
        assert f"| {section} |" in table, table
    assert "embedded default" in table and "n/a" not in table and "nan" not in table

    r = json.loads(figures.read_text())
    for kind in ("jpeg", "png"):
        assert r["codec"][kind]["images_per_s"] > 0
        e2e = r["embedded"][f"e2e_{kind}"]
        assert e2e["done"] == e2e["images"] > 0, e2e["failed"]
        assert 0 < e2e["images_per_s"] and 0 < e2e["cpu_ms_per_image"]
        assert all(0 < ratio <= 0.5 for ratio in e2e["ratios"])
        assert all(1 <= n <= 12 for n in e2e["encodes"])
    assert {d["format"] for d in r["direct"].values()} == {"JPEG", "WEBP"}

    slow = r["embedded"]["slow"]
    assert slow["done"] == slow["images"] and slow["seconds"] > 0 and slow["max_in_flight"] > 1

    big = r["embedded"]["big_csv"]
    assert [m["rows"] for m in big["memory"]] == list(r["sizes"]["big_rows"])
    assert all(m["peak_kib"] >= m["rss_before_kib"] > 0 and m["csv_bytes"] > 0 for m in big["memory"])
    assert big["latency_median_s"] > 0

    status = r["embedded"]["status"]
    for phase in ("during", "idle", "closed"):
        assert status[phase]["requests"] > 0 and status[phase]["errors"] == 0, status[phase]
        assert 0 < status[phase]["p50_ms"] <= status[phase]["p99_ms"]
    assert status["response_bytes"] > status["per_page_1_bytes"] > 0

    crowd = r["embedded"]["crowd"]
    assert crowd["polls"]["requests"] > 0 and crowd["polls"]["errors"] == 0, crowd["polls"]
    assert crowd["uploads"]["accepted"] == crowd["uploads"]["uploads"] == crowd["uploaders"], crowd["uploads"]

    fair = r["embedded"]["fair"]
    for label in ("turns", "one_queue"):
        assert fair[label]["huge_state"] in ("cancelled", "completed"), fair[label]  # it may finish first
    assert fair["turns"]["small_done"] == fair["small_images"], fair["turns"]

    rerun = r["embedded"]["rerun"]
    assert rerun["first"]["full_downloads"] == rerun["images"] == rerun["first"]["done"], rerun["first"]
    assert rerun["again"]["full_downloads"] == 0 and rerun["again"]["not_modified"] == rerun["images"], rerun["again"]
    assert rerun["again"]["reused"] == rerun["images"] and rerun["again"]["encodes"] == 0, rerun["again"]
    assert rerun["no_validators"]["full_downloads"] == rerun["images"] == rerun["no_validators"]["reused"]
