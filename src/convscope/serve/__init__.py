"""``convscope serve``: the interactive explorer.

A local web application over one model: draw (or upload, or pick) an input and see
the probabilities and every layer's activations; open any map's card (its OIP,
top-k dataset examples with receptive fields, raw filters, deconvnet on the
current input); explain the input with any method; compare two inputs. The page,
its JavaScript and CSS ship in this package (``serve/static``; the forward pass
and grid drawing are shared with the atlas: ``report/assets/forward.js``).

* :class:`Explorer` (:mod:`convscope.serve.explorer`) — the model and what the
  page asks, answered by the application layer; no HTTP.
* :func:`create_app` (:mod:`convscope.serve.app`) — the Starlette application and
  the HTTP API (documented in the README).
* :class:`~convscope.serve.atlas_source.AtlasSource` — OIPs and top-k from a
  built atlas' stored stages.

::

    import uvicorn
    from convscope.serve import Explorer, create_app
    app = create_app(Explorer(model, split=test_split))
    uvicorn.run(app, host="127.0.0.1", port=8765)
"""

from convscope.serve.app import create_app
from convscope.serve.explorer import Explorer, Job, RequestError

__all__ = ["Explorer", "Job", "RequestError", "create_app"]
