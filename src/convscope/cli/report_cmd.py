"""``convscope report``: build the HTML atlas of the whole network."""

from __future__ import annotations

from pathlib import Path

import click

from convscope.cli.common import (
    SEED, checked_folder, data_dir_option, dataset_option, device_option, echo_err, emit_json, fail, json_option, model_args,
    model_option, out_option,
)


@click.command("report")
@model_option
@dataset_option
@data_dir_option
@click.option("--layers", default=None, metavar="LIST",
              help="Comma-separated layers that get a section (default: every conv layer and hidden dense layer).")
@out_option("convscope-out/atlas")
@click.option("--quick", is_flag=True, help="Reduced profile for CI: fewer OIP steps and examples, smaller dreams; every section still present.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of every random start (OIPs, class visualisations, dreams).")
@click.option("--pages", type=click.Choice(["auto", "single", "split"]), default="auto", show_default=True,
              help="single: one self-contained index.html; split: one page per layer with the pictures as files beside "
                   "it; auto: split above the profile's map count (1,024 conv maps).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, callback=checked_folder,
              help="Where stage results are kept (default OUT/.stages); may be a shared folder.")
@device_option
@click.option("--threads", type=click.IntRange(min=1, max=1024), default=None,
              help="PyTorch CPU threads (default 1: the atlas runs many small batches, where more threads mostly spin).")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=None,
              help="Local executor: stages computed at once (threads of this process, one PyTorch thread and one "
                   "copy of the model each; default: one per core, at most 4; 1 on a GPU). The same atlas for any "
                   "number; 2 on a 2-core machine is about 1.5-1.8x faster than 1.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help='Who computes the stages: this process, or Ray workers (pip install "convscope[ray]").')
@click.option("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
              help="With --executor ray: the cluster to use (default: start a local Ray instance).")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None,
              help="With --executor ray: worker actors (default: local, one per CPU; a cluster, its CPUs or GPUs).")
@click.option("--ray-gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --executor ray: GPUs each worker reserves (> 0: the workers compute on CUDA).")
@click.option("--ray-data", is_flag=True,
              help="With --executor ray: the top-k dataset examples as a Ray Data pipeline (map_batches on an actor pool).")
@json_option
def report(model_path: str | None, dataset: str | None, data_dir: Path | None, layers: str | None, out_dir: Path,
           quick: bool, seed: int, pages: str, cache_dir: Path | None, device: str, threads: int | None,
           workers: int | None, executor: str, ray_address: str | None, ray_workers: int | None, ray_gpus_per_worker: float, ray_data: bool,
           as_json: bool) -> None:
    """Build the atlas: index.html that opens offline from disk.

    \b
    It holds the model card (architecture, parameters, training recipe and
    curves, test and per-class accuracy, confusion matrix); per layer the raw
    filters, activation grids for one image per class, the OIP of every map
    (maps that never fire marked, precursor coverage) and top-k test images; a
    card per map (#Conv2D_3-120: OIP, evolution strip, top-k with receptive
    fields, deconvnet); class visualisations; the class pair the model confuses
    most; mistakes explained; a DeepDream of the default photo; provenance and
    per-stage timings. Any model convscope loads (--model) and any dataset
    (--dataset, default the model's own).

    \b
    Finished stages are kept in OUT/.stages; run the same command again to
    resume an interrupted build (nothing finished is recomputed).

    \b
    --executor ray spreads the stages (OIP chunks, top-k shards, deconvnet
    chunks, …) over Ray worker actors: a local Ray instance, or a cluster
    (--ray-address auto). Same numbers as the local build. On a cluster every
    node needs the same convscope version and the model and the data on paths
    it can read; this process alone writes OUT and the stage cache
    (docs/SCALING.md).

    \b
    Examples:
      convscope report
      convscope report --quick --out /tmp/atlas
      convscope report --model runs/fast-seed0/seed_cnn.json --layers Conv2D_3,Dense_1
      convscope report --model model.h5 --preprocess standardize
      convscope report --workers 2
      convscope report --executor ray --ray-workers 8
    """
    from convscope.address import AddressError
    from convscope.cli.output import WRITE_ERRNOS, terminal_progress, writing
    from convscope.data import DataNotFoundError, DatasetError
    from convscope.models import ModelFileError
    from convscope.optvis.core import Cancelled
    from convscope.report import AtlasOptions, build_atlas
    from convscope.report.build import command_line
    from convscope.report.ray_executor import RayExecutorError
    from convscope.spec import SpecError

    ray_given = [name for name, value in (("--ray-address", ray_address), ("--ray-workers", ray_workers),
                                          ("--ray-gpus-per-worker", ray_gpus_per_worker), ("--ray-data", ray_data))
                 if value]
    if executor != "ray" and ray_given:
        fail(f"{', '.join(ray_given)} only apply with --executor ray")
    if executor == "ray" and workers is not None:
        fail("--workers is the local executor's; with --executor ray use --ray-workers")
    if workers is None:
        from convscope.device import DeviceError, check_device, default_workers

        try:
            workers = default_workers(check_device(device))
        except DeviceError:
            workers = 1  # the build reports the bad device
    ray_options = None
    if executor == "ray":
        from convscope.report.ray_executor import INSTALL_HINT, RayOptions, ray_available

        if not ray_available():  # before the model and the data are loaded
            fail(INSTALL_HINT)
        ray_options = RayOptions(address=ray_address, workers=ray_workers, gpus_per_worker=ray_gpus_per_worker,
                                 data=ray_data)
    layer_list = [part.strip() for part in layers.split(",") if part.strip()] if layers else None
    args = model_args()
    model_options = {"weights": args.weights, "spec_fields": args.spec_fields} if (args.weights or args.spec_fields) else {}
    options = AtlasOptions(
        out_dir=out_dir, model=model_path, model_options=model_options, dataset=dataset, data_dir=data_dir,
        layers=layer_list, profile="quick" if quick else "full", seed=seed, device=device, command=command_line(),
        threads=threads, workers=workers, pages=pages, cache_dir=cache_dir, executor=executor, ray=ray_options,
    )
    stages = cache_dir or out_dir / ".stages"
    # a failure removes this run's pages; finished stages stay in the cache, so running again resumes
    with writing(out_dir, what="the atlas", keep_under=(stages,),
                 hint=f"Finished stages are kept in {stages}; run the same command again to resume."):
        try:
            with terminal_progress(disable=as_json, transient=True) as progress:
                result = build_atlas(options, progress=progress, log=None if as_json else echo_err)
        except (KeyboardInterrupt, Cancelled):
            fail(f"interrupted. Finished stages are kept in {stages}; run the same command again to resume.")
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise  # a full disk or a folder that became unwritable: one line from writing()
            fail(str(exc))
        except (ModelFileError, DataNotFoundError, DatasetError, AddressError, SpecError, ValueError,
                RayExecutorError) as exc:
            fail(str(exc))
    if as_json:
        emit_json({
            "index": str(result.index),
            "summary": str(result.summary),
            "pages": [str(p) for p in result.pages],
            "total_seconds": round(result.total_seconds, 3),
            "timings": [{"stage": t.name, "seconds": round(t.seconds, 3), "cached": t.cached} for t in result.timings],
        })
        return
    click.echo(f"Atlas written to {result.index} ({result.total_seconds:.1f} s; "
               f"{len(result.executed)} stages computed, {len(result.cached)} reused).")
    click.echo(f"Open it: file://{result.index.resolve()}")
