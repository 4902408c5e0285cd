"""Renderers: draw results as matplotlib Figures / PIL images. They never run a
model and never write files (the CLI and the report save what they return).

Figures are built with :func:`convscope.render.figure.new_figure` — plain
``matplotlib.figure.Figure`` objects outside pyplot — so importing or using a
renderer never changes matplotlib's backend or pyplot's figure list."""
