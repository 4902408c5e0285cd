"""``convscope report``: build the self-contained HTML atlas of the whole network."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from convscope.cli.common import (
    data_dir_option, device_option, echo_err, emit_json, fail, json_option, model_option, out_option,
)


@click.command("report")
@model_option
@data_dir_option
@click.option("--layers", default=None, metavar="LIST",
              help="Comma-separated layers that get a section (default: every conv layer and hidden dense layer).")
@out_option("convscope-out/atlas")
@click.option("--quick", is_flag=True, help="Reduced profile for CI: fewer OIP steps and examples, smaller dreams; every section still present.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random start (OIPs, class visualisations, dreams).")
@device_option
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="PyTorch CPU threads (default 1: the atlas runs many small batches, where more threads mostly spin).")
@json_option
def report(model_path: Path | None, data_dir: Path | None, layers: str | None, out_dir: Path, quick: bool, seed: int,
           device: str, threads: int | None, as_json: bool) -> None:
    """Build the atlas: one index.html that opens offline from disk.

    \b
    It holds the model card (architecture, parameters, training recipe and
    curves, test and per-class accuracy, confusion matrix); per layer the raw
    filters, activation grids for one digit per class, the OIP of every map
    (dead maps marked, precursor coverage) and top-k test images; a card per map
    (#Conv2D_3-120: OIP, evolution strip, top-k with receptive fields,
    deconvnet); class visualisations 0-9; 4 versus 9; mistakes explained; a
    DeepDream of the default photo; provenance and per-stage timings.

    \b
    Finished stages are kept in OUT/.stages; run the same command again to
    resume an interrupted build (nothing finished is recomputed).

    \b
    Examples:
      convscope report
      convscope report --quick --out /tmp/atlas
      convscope report --model runs/fast-seed0/seed_cnn.json --layers Conv2D_3,Dense_1
    """
    from convscope.address import AddressError
    from convscope.data import DataNotFoundError, DatasetError
    from convscope.models import ModelFileError
    from convscope.report import AtlasOptions, build_atlas
    from convscope.report.build import command_line

    layer_list = [part.strip() for part in layers.split(",") if part.strip()] if layers else None
    options = AtlasOptions(
        out_dir=out_dir, model_path=model_path, data_dir=data_dir, layers=layer_list,
        profile="quick" if quick else "full", seed=seed, device=device, command=command_line(), threads=threads,
    )
    try:
        result = build_atlas(options)
    except KeyboardInterrupt:
        echo_err(f"\nInterrupted. Finished stages are kept in {out_dir / '.stages'}; run the same command again to resume.")
        sys.exit(130)
    except (ModelFileError, DataNotFoundError, DatasetError, AddressError) as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        emit_json({
            "index": str(result.index),
            "summary": str(result.summary),
            "total_seconds": round(result.total_seconds, 3),
            "timings": [{"stage": t.name, "seconds": round(t.seconds, 3), "cached": t.cached} for t in result.timings],
        })
        return
    click.echo(f"Atlas written to {result.index} ({result.total_seconds:.1f} s; "
               f"{len(result.executed)} stages computed, {len(result.cached)} reused).")
    click.echo(f"Open it: file://{result.index.resolve()}")
