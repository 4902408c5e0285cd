"""``convscope serve``: the interactive explorer in the browser (thin: load the model
and the data, build :class:`convscope.serve.Explorer`, run the web server)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import click

from convscope.cli.common import (
    data_dir_option,
    dataset_option,
    device_option,
    echo_err,
    fail,
    model_option,
    model_split_or_fail,
    open_model_or_fail,
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def start_forward_processes(explorer, count: int | None):
    """Fork the worker processes that answer ``/api/forward``
    (:class:`~convscope.serve.processes.ForwardProcesses`), before the server starts any
    thread; ``None`` for none. ``count=None``: the number of cores (at most 4) when the
    platform and the model allow it; a count the user asked for that cannot be honoured
    is an error."""
    from convscope.device import usable_cores
    from convscope.serve.processes import ForwardProcesses, fork_available

    why = fork_available(explorer.model)
    if count is None:
        count = 0 if why else min(4, usable_cores())
    if count == 0:
        return None
    if why:
        fail(f"--processes {count}: {why}; use --processes 0")
    processes = ForwardProcesses(explorer, count)
    try:
        processes.start()
    except (OSError, RuntimeError) as exc:
        fail(f"could not start {count} forward worker process(es): {' '.join(str(exc).split())[:300]} "
             "(use --processes 0 to compute in the server process)")
    return processes


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), or a clear failure."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on the accepted connections only for sockets
    # that say so; without it Nagle's algorithm held the last small piece of each answer until the client's
    # delayed ACK (~40 ms for every small answer)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port, or 0 for a free one)")
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@click.command("serve")
@model_option
@dataset_option
@data_dir_option
@device_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but this machine (127.0.0.1, ::1, localhost) needs --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port; the URL printed says which).")
@click.option("--allow-remote", is_flag=True,
              help="Allow a --host other than this machine: anyone who reaches it can use the explorer (no login).")
@click.option("--open", "open_browser", is_flag=True, help="Open the explorer in the default web browser.")
@click.option("--atlas", "atlas_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="An atlas folder (convscope report --out DIR) of the same model: its stored OIPs and top-k "
                   "examples are shown instead of computed.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Threads computing requests (the model is shared read-only).")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="PyTorch threads per computation.")
@click.option("--processes", type=click.IntRange(0, 64), default=None,
              help="Worker processes answering /api/forward (each holds a copy of the model; live drawing from "
                   "several clients then uses every core). 0: forward passes run in the server process, batched. "
                   "[default: the number of cores, at most 4; 0 for a model on a GPU]")
@click.option("--oip-profile", type=click.Choice(["full", "quick"]), default="full", show_default=True,
              help="The atlas profile whose OIP parameters on-demand OIPs use (quick: fewer, larger steps).")
@click.option("--max-upload-mb", type=click.FloatRange(0.01, 1024), default=10.0, show_default=True,
              help="Largest request body (an uploaded image or JSON), in megabytes.")
def serve(model_path, dataset, data_dir, device, host, port, allow_remote, open_browser, atlas_dir, workers, threads,
          processes, oip_profile, max_upload_mb) -> None:
    """The interactive explorer: draw a digit (or upload / pick an image) and watch
    every layer respond; open any map's card (OIP, top-k examples, filters,
    deconvnet); explain the input with any method; compare two inputs layer by
    layer. State lives in the URL, so a link reproduces the view.

    Everything runs on this machine: the page, its scripts and styles come from
    this server, nothing is fetched from the internet. The HTTP API the page uses
    (/api/health, /api/model, /api/forward, /api/explain, …) is documented in the
    README.

    \b
    Examples:
      convscope serve --open
      convscope serve --model runs/fast-seed0/seed_cnn.json --atlas convscope-out/atlas
      convscope serve --model model.h5 --preprocess standardize --port 0
    """
    import os

    # MKL's sgemm may take alignment-dependent paths that change float32 rounding between calls; the batched
    # forward passes promise the same bits for the same input whatever else is in the batch, so ask MKL for
    # reproducible results (before its first call; a value the user set wins)
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    import torch

    from convscope.device import resolve_device

    remote = not is_loopback(host)
    if remote and not allow_remote:
        fail(f"refusing to listen on {host}: the explorer has no login, so it listens on this machine only "
             "(127.0.0.1) unless you also pass --allow-remote")
    torch.set_num_threads(threads)
    loaded = open_model_or_fail(model_path, str(resolve_device(device)))
    model = loaded.model.eval()
    split, note = None, None
    if dataset is not None:
        split = model_split_or_fail(model, "test", dataset, data_dir)
    else:
        from convscope.data import DataNotFoundError, DatasetError, IdxError
        from convscope.data.catalog import split_for_model
        from convscope.spec import SpecError, spec_of

        try:
            split = split_for_model(spec_of(model), "test", None, data_dir)
        except (DataNotFoundError, DatasetError, IdxError, SpecError, OSError) as exc:
            note = f"no dataset: {' '.join(str(exc).split())[:300]} (start with --dataset to pick one)"
            echo_err(f"warning: {note}; drawing and uploads still work")

    import uvicorn

    from convscope.serve import Explorer, create_app

    explorer = Explorer(model, split=split, label=loaded.label, atlas_dir=atlas_dir,
                        max_body=int(max_upload_mb * 1024 * 1024), split_note=note, oip_profile=oip_profile)
    if explorer.atlas is not None:
        echo_err(("" if explorer.atlas.usable else "warning: ") + explorer.atlas.note)
    sock = bind_socket(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    url = f"http://{shown}:{actual}/"
    if remote:
        echo_err(f"warning: listening on {host}, reachable from other machines: anyone who can reach port {actual} can "
                 "use the explorer and its model (there is no login)")
    forward_processes = start_forward_processes(explorer, processes)
    app = create_app(explorer, workers=workers, allowed_hosts=["*"] if remote else None, processes=forward_processes)
    click.echo(f"convscope explorer: {url}  ({loaded.label}; Ctrl-C stops it)", nl=True)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(0.5, lambda: webbrowser.open(url)).start()
    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=5, limit_concurrency=256,
                            h11_max_incomplete_event_size=64 * 1024)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
