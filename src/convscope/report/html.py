"""The atlas pages from their view models (:mod:`convscope.report.views`), through
the Jinja templates in ``report/templates`` with the CSS and JavaScript of
``report/assets`` inlined: every page opens from disk, offline, with nothing
fetched from anywhere. Nothing here runs a model; every value is escaped.
"""

from __future__ import annotations

import functools
from importlib import resources

import jinja2

from convscope.report.views import AtlasView, LayerView, MapsView


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("convscope.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


@functools.lru_cache(maxsize=16)
def asset(name: str) -> str:
    """A package asset (``atlas.css``, ``atlas.js``, ``forward.js``, ``drawpad.js``) as text."""
    return (resources.files("convscope.report") / "assets" / name).read_text(encoding="utf-8")


def render_atlas(view: AtlasView) -> str:
    """The atlas' main page."""
    draw_js = (asset("forward.js") + "\n" + asset("drawpad.js")) if view.draw else ""
    return environment().get_template("atlas.html.j2").render(v=view, css=asset("atlas.css"), js=asset("atlas.js"),
                                                              draw_js=draw_js)


def render_layer_page(view: AtlasView, layer: LayerView, maps: MapsView | None, home: str) -> str:
    """One layer's own page (large models: the atlas is split into pages)."""
    return environment().get_template("layer.html.j2").render(
        v=view, layer=layer, maps=maps, home=home, css=asset("atlas.css"), js=asset("atlas.js"))


__all__ = ["asset", "environment", "render_atlas", "render_layer_page"]
