"""The explorer's HTTP side: a Starlette application over an :class:`~convscope.serve.explorer.Explorer`.

Routes (JSON unless said otherwise; every error is ``{"error": MESSAGE}`` with a 4xx
status, never a traceback):

=======================  ==========================================================
``GET /``                the explorer page (HTML; its JS and CSS under ``/static/``)
``GET /api/health``      ``{"status": "ok", "model", "version", "forward_processes"}``
``GET /api/model``       the spec, the layers (shapes, receptive fields), methods, dataset, atlas
``POST /api/forward``    an image file as the body (``?layers=all&encoding=list``), or JSON
                         ``{"pixels" | "image" | "png", "layers", "encoding"}`` → probabilities
                         and activations
``POST /api/explain``    JSON ``{input…, "method", "target", "options"}`` → one attribution map
``GET /api/pick``        ``?how=random|class|misclassified&class=&seed=`` → ``{"image": "test:N", …}``
``GET /api/card``        ``?layer=&map=`` → filters, OIP and top-k when known
``POST /api/oip``        JSON ``{"layer", "map"}`` → a job computing the map's OIP
``POST /api/topk``       JSON ``{"layer", "map"}`` → a job ranking the dataset for the layer
``GET /api/jobs/{id}``   a job's status, progress and result; ``DELETE`` cancels it
=======================  ==========================================================

Computation runs in a bounded thread pool (``workers`` threads, at most ``queue``
requests waiting; more get 503); forward passes in forked worker processes when the
server has them (:mod:`convscope.serve.processes`), else in one compute thread that
batches the requests waiting (:mod:`convscope.serve.batcher`); long jobs in one more
thread. Request bodies are read with a size limit and a time limit; each computation
has a time limit (504).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from convscope.serve.explorer import Base64Text, Explorer, RequestError
from convscope.tracing_gate import GATE

LOG = logging.getLogger("convscope.serve")
#: Seconds a client may take to send its request body.
BODY_TIMEOUT = 30.0
#: Content security policy of the page: nothing from anywhere but this server.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
STATIC = {"explorer.js": "application/javascript", "explorer.css": "text/css", "forward.js": "application/javascript"}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


@functools.lru_cache(maxsize=8)
def _static(name: str) -> bytes:
    if name == "forward.js":
        from convscope.report.html import asset

        return asset("forward.js").encode("utf-8")
    return (resources.files("convscope.serve") / "static" / name).read_bytes()


class _Pool:
    """The bounded pools: interactive work (``workers`` threads, ``queue`` waiting at
    most) and long jobs (one thread, ``max_jobs`` waiting at most)."""

    def __init__(self, workers: int, queue: int, timeout: float, max_jobs: int = 16) -> None:
        self.work = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="convscope-work")
        self.jobs = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="convscope-job")
        self.slots = threading.BoundedSemaphore(max(1, workers) + max(0, queue))
        self.job_slots = threading.BoundedSemaphore(max_jobs)
        self.timeout = timeout

    def _take_slot(self) -> None:
        if not self.slots.acquire(blocking=False):
            raise RequestError("the explorer is busy (too many requests waiting); try again in a moment", 503)

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._take_slot()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.work, functools.partial(self._guarded, fn, *args, **kwargs))
        return await self._wait(future)

    def _counted(self, submit: Callable[[], Any]) -> Any:
        """``submit()``'s future, counted against the same ``queue`` limit as the pool's
        work until it is done."""
        self._take_slot()
        try:
            pending = submit()
        except BaseException:
            self.slots.release()
            raise
        pending.add_done_callback(lambda _: self.slots.release())
        return pending

    def start_forward(self, batcher: Any, image: Any) -> Any:
        """Submit one image to the forward batcher (its thread computes it in a batched
        pass); await the answer with :meth:`wait`."""
        return asyncio.wrap_future(self._counted(lambda: batcher.submit(image)))

    async def wait(self, future: Any) -> Any:
        """``future``'s result, or 504 after the time limit."""
        return await self._wait(future)

    async def _wait(self, future: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:
            raise RequestError(f"the computation took longer than {self.timeout:g} s and was abandoned", 504) from None

    def _guarded(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with GATE.shared():  # forward passes never meet a torch.fx trace in another thread
                return fn(*args, **kwargs)
        finally:
            self.slots.release()

    def start_in_processes(self, processes: Any, source: str, payload: Any, names: list[str], encoding: str) -> Any:
        """Queue a forward request for the worker processes
        (:class:`~convscope.serve.processes.ForwardProcesses`); await the answer's bytes with :meth:`wait`."""
        return self._counted(lambda: processes.submit(source, payload, names, encoding))

    def submit_job(self, explorer: Explorer, job: Any) -> None:
        if job.status != "queued":
            return
        if not self.job_slots.acquire(blocking=False):
            job.status, job.error = "failed", "too many jobs waiting; try again when some have finished"
            return

        def run() -> None:
            try:
                with GATE.shared():
                    explorer.run_job(job)
            finally:
                self.job_slots.release()

        self.jobs.submit(run)

    def close(self) -> None:
        self.work.shutdown(wait=False, cancel_futures=True)
        self.jobs.shutdown(wait=False, cancel_futures=True)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) or a client slower
    than :data:`BODY_TIMEOUT` (408)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError("Content-Length must be a whole number of bytes")
        if int(length) > limit:
            raise RequestError(f"the request body is {int(length):,} bytes, more than the {limit:,}-byte limit", 413)

    async def collect() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise RequestError(f"the request body is more than the {limit:,}-byte limit", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), BODY_TIMEOUT)
    except asyncio.TimeoutError:
        raise RequestError(f"the request body did not arrive within {BODY_TIMEOUT:g} s", 408) from None


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    data = await read_body(request, limit)
    if not data:
        raise RequestError("the request body is empty; send a JSON object")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"the request body is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


_SWAPPED = "\x00"  # JSON writes it as \u0000, which base64 text never holds


def json_bytes(content: Any) -> bytes:
    """``content`` as :class:`~starlette.responses.JSONResponse` renders it, byte for
    byte, but without scanning long base64 strings
    (:class:`~convscope.serve.explorer.Base64Text`) character by character: they are
    swapped for a marker, the rest is rendered, and they are put back (base64 text
    needs no JSON escaping). Falls back to the plain rendering when the marker occurs
    elsewhere."""
    swapped: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, list) and value and isinstance(value[0], (dict, list, str)):
            return [swap(item) for item in value]
        if type(value) is Base64Text and len(value) >= 1024:
            swapped.append(value)
            return _SWAPPED
        return value

    def render(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))

    skeleton = swap(content)
    if not swapped:
        return render(content).encode("utf-8")
    parts = render(skeleton).split('"\\u0000"')
    if len(parts) != len(swapped) + 1:
        return render(content).encode("utf-8")
    out = [parts[0]]
    for value, part in zip(swapped, parts[1:]):
        out.extend(('"', value, '"', part))
    return "".join(out).encode("utf-8")


def _answer(explorer: Explorer, item: Any, names: list[str], encoding: str, values: Any) -> bytes:
    return json_bytes(explorer.forward_answer(item, names, encoding, values))


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() in ("application/json", "text/json")


def _int(value: Any, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a whole number") from None


def create_app(
    explorer: Explorer, *, workers: int = 2, queue: int = 32, timeout: float = 120.0, allowed_hosts: list[str] | None = None,
    processes: Any = None,
) -> Starlette:
    """The explorer's web application.

    Args:
        explorer: the model and what it answers.
        workers: threads computing requests (the model is shared read-only).
        queue: requests that may wait for a thread; more are answered 503.
        timeout: seconds one computation may take before the request gets 504.
        allowed_hosts: accepted ``Host`` headers (default: the loopback names only,
            which also stops DNS-rebinding pages from reaching the server); ``["*"]`` for any.
        processes: started :class:`~convscope.serve.processes.ForwardProcesses` that
            answer ``/api/forward`` (closed with the app); ``None``: forward passes run
            in this process, batched (:mod:`convscope.serve.batcher`).
    """
    pool = _Pool(workers, queue, timeout)

    async def page(request: Request) -> Response:
        html = (resources.files("convscope.serve") / "static" / "explorer.html").read_text(encoding="utf-8")
        return Response(html, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": CSP})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise RequestError(f"no static file {name[:60]!r}", 404)
        return Response(_static(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    async def health(request: Request) -> Response:
        from convscope import __version__

        return JSONResponse({"status": "ok", "model": explorer.label, "name": explorer.spec.name, "version": __version__,
                             "forward_processes": processes.alive if processes is not None else 0})

    async def model_info(request: Request) -> Response:
        return JSONResponse(await pool.run(explorer.model_info))

    async def forward(request: Request) -> Response:
        in_processes = processes is not None and processes.alive > 0
        if _is_json(request):
            body = await read_json(request, explorer.max_body)
            layers, encoding = body.get("layers", "all"), body.get("encoding", "list")
            names = explorer.check_forward(layers, encoding)
            if in_processes:  # the whole request in a worker process: input, forward pass, answer
                data = await pool.wait(pool.start_in_processes(processes, "json", body, names, encoding))
                return Response(data, media_type="application/json")
            with explorer.batcher.expecting():  # a burst of requests becomes one batched pass
                item = await pool.run(explorer.input_from_json, body)
                pending = pool.start_forward(explorer.batcher, item.image)
        else:
            data = await read_body(request, explorer.max_body)
            if not data:
                raise RequestError("send an image file as the request body (or JSON with \"pixels\" / \"image\")")
            layers, encoding = request.query_params.get("layers", "all"), request.query_params.get("encoding", "list")
            names = explorer.check_forward(layers, encoding)
            if in_processes:
                answer = await pool.wait(pool.start_in_processes(processes, "bytes", data, names, encoding))
                return Response(answer, media_type="application/json")
            with explorer.batcher.expecting():
                item = await pool.run(explorer.input_from_bytes, data, "the uploaded image")
                pending = pool.start_forward(explorer.batcher, item.image)
        values = await pool.wait(pending)  # this request's row of a batched pass
        return Response(await pool.run(_answer, explorer, item, names, encoding, values), media_type="application/json")

    async def explain(request: Request) -> Response:
        body = await read_json(request, explorer.max_body)
        item = await pool.run(explorer.input_from_json, body)
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise RequestError('"options" must be a JSON object')
        return JSONResponse(await pool.run(explorer.explain, item, body.get("method", "saliency"), body.get("target"),
                                           options, body.get("encoding", "list")))

    async def pick(request: Request) -> Response:
        q = request.query_params
        return JSONResponse(await pool.run(explorer.pick, q.get("how", "random"), q.get("class"), _int(q.get("seed"), "seed")))

    async def card(request: Request) -> Response:
        q = request.query_params
        return JSONResponse(await pool.run(explorer.card, q.get("layer", ""), q.get("map", "0")))

    async def start_job(request: Request, kind: str) -> Response:
        body = await read_json(request, 64 * 1024)
        starter = explorer.oip_job if kind == "oip" else explorer.topk_job
        job = await pool.run(starter, str(body.get("layer", "")), body.get("map", 0))
        pool.submit_job(explorer, job)
        return JSONResponse(job.to_json(), status_code=202 if job.status in ("queued", "running") else 200)

    async def job_status(request: Request) -> Response:
        job = explorer.job(request.path_params["job_id"])
        if request.method == "DELETE":
            job = explorer.cancel_job(job.id)
        return JSONResponse(job.to_json())

    async def on_request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: f"no such page or API route: {request.url.path[:100]}",
                   405: f"{request.method} is not allowed on {request.url.path[:100]}"}.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code)

    async def on_error(request: Request, exc: Exception) -> Response:
        LOG.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"},
                            status_code=500)

    routes = [
        Route("/", page), Route("/static/{name}", static), Route("/api/health", health),
        Route("/api/model", model_info), Route("/api/forward", forward, methods=["POST"]),
        Route("/api/explain", explain, methods=["POST"]), Route("/api/pick", pick), Route("/api/card", card),
        Route("/api/oip", functools.partial(start_job, kind="oip"), methods=["POST"]),
        Route("/api/topk", functools.partial(start_job, kind="topk"), methods=["POST"]),
        Route("/api/jobs/{job_id}", job_status, methods=["GET", "DELETE"]),
    ]
    hosts = allowed_hosts or LOOPBACK_HOSTS

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        # traces the receptive fields (and measures the batcher's padding when it computes forward passes)
        explorer.warm(batcher=processes is None)
        try:
            yield
        finally:
            pool.close()
            explorer.close()
            if processes is not None:
                processes.close()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
        exception_handlers={RequestError: on_request_error, HTTPException: on_http_error, Exception: on_error},
        lifespan=lifespan,
    )
    app.state.explorer = explorer
    app.state.pool = pool
    app.state.processes = processes
    return app


__all__ = ["BODY_TIMEOUT", "CSP", "create_app", "json_bytes", "read_body"]
