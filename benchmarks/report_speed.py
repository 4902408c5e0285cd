"""How long the atlas takes: a fresh build of the whole atlas for Model A, stage by
stage (wall and CPU seconds), then the same build again from the stored stages.

Target (issue 15): the whole (full-profile) atlas in ≤ 15 s on a 2-core CPU, its second build ≤ 1 s. On a shared
machine the wall time depends on what else runs; the CPU column and the load
average printed before and after say how busy it was.

    python benchmarks/report_speed.py            # full profile
    python benchmarks/report_speed.py --quick    # the CI profile
    python benchmarks/report_speed.py --out DIR  # keep the atlas (default: a temp folder)
    python benchmarks/report_speed.py --workers 1,2   # one stage at a time vs two at once, side by side

With several ``--workers`` counts the fresh builds run one after another in this
one process (each in its own folder) and the script checks that their
``atlas.json`` numbers are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from convscope.report import AtlasOptions, build_atlas

TARGET_SECONDS = 15.0
SECOND_TARGET_SECONDS = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the reduced CI profile")
    parser.add_argument("--out", type=Path, default=None, help="build here (must not hold an atlas already)")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: the atlas's choice, 1)")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts to compare (e.g. 1,2)")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("CONVSCOPE_DATA"))
    args = parser.parse_args()

    counts = [int(part) for part in args.workers.split(",") if part.strip()]
    fresh_times: dict[int, float] = {}
    summaries: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        for workers in counts:
            out = (args.out or Path(tmp) / "atlas") / f"workers-{workers}" if len(counts) > 1 else (args.out or Path(tmp) / "atlas")
            options = AtlasOptions(out_dir=out, data_dir=args.data_dir, profile="quick" if args.quick else "full",
                                   threads=args.threads, workers=workers, command="python benchmarks/report_speed.py")
            load_before = os.getloadavg()
            cpu0 = time.process_time()
            first = build_atlas(options)
            cpu_first = time.process_time() - cpu0
            second = build_atlas(options)
            load_after = os.getloadavg()
            fresh_times[workers] = first.total_seconds
            summaries[workers] = _numbers(json.loads(first.summary.read_text()))

            print(f"profile: {'quick' if args.quick else 'full'}   workers: {workers}   cores: {os.cpu_count()}   "
                  f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
            print(f"{'stage':<24}{'wall s':>9}{'CPU s':>9}{'cached run s':>14}")
            for fresh, cached in zip(first.timings, second.timings):
                print(f"{fresh.name:<24}{fresh.seconds:>9.2f}{fresh.cpu_seconds:>9.2f}{cached.seconds:>14.2f}")
            html_fresh = first.total_seconds - sum(t.seconds for t in first.timings) if workers == 1 else float("nan")
            print(f"{'load + html':<24}{html_fresh:>9.2f}{'':>9}"
                  f"{second.total_seconds - sum(t.seconds for t in second.timings):>14.2f}")
            print(f"{'total':<24}{first.total_seconds:>9.2f}{cpu_first:>9.2f}{second.total_seconds:>14.2f}")
            verdict = "within" if first.total_seconds <= TARGET_SECONDS else "OVER"
            print(f"fresh build {first.total_seconds:.1f} s wall ({verdict} the {TARGET_SECONDS:.0f} s target), "
                  f"{cpu_first:.1f} CPU s; resumed build {second.total_seconds:.2f} s "
                  f"({'within' if second.total_seconds <= SECOND_TARGET_SECONDS else 'OVER'} the "
                  f"{SECOND_TARGET_SECONDS:.0f} s target) ({first.total_seconds / max(second.total_seconds, 1e-9):.0f}× faster); "
                  f"page {first.index.stat().st_size / 1e6:.1f} MB")
            print()
    if len(counts) > 1:
        base = counts[0]
        for workers in counts[1:]:
            same = summaries[workers] == summaries[base]
            print(f"workers {workers} vs {base}: {fresh_times[base] / fresh_times[workers]:.2f}× faster "
                  f"({fresh_times[base]:.1f} s → {fresh_times[workers]:.1f} s); atlas.json numbers "
                  f"{'identical' if same else 'DIFFERENT'}")


def _numbers(summary: dict) -> dict:
    """``atlas.json`` without what differs between identical builds (timings, paths, dates)."""
    volatile = {"timings", "seconds", "total_seconds", "created", "out_dir", "command", "build", "provenance", "workers"}
    if isinstance(summary, dict):
        return {key: _numbers(value) for key, value in summary.items() if key not in volatile}
    if isinstance(summary, list):
        return [_numbers(value) for value in summary]
    return summary


if __name__ == "__main__":
    main()
