"""Renderers: draw results as matplotlib Figures / PIL images. They never run a
model and never write files (the CLI and the report save what they return)."""

import matplotlib

matplotlib.use("Agg")
