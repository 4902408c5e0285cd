"""convscope never changes matplotlib's backend and never uses pyplot state: a
Jupyter user's ``%matplotlib inline`` keeps working after importing convscope,
and convscope's figures still show in a notebook and save to disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Runs in a fresh interpreter whose backend is the notebook one (not Agg).
_SCRIPT = r'''
import importlib, json, pkgutil, sys
import matplotlib

before = matplotlib.get_backend()
import convscope

failed = {}
modules = []
for info in pkgutil.walk_packages(convscope.__path__, "convscope."):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue  # running the CLI is not importing a module
    try:
        importlib.import_module(info.name)
        modules.append(info.name)
    except Exception as exc:  # reported, and the test fails on it
        failed[info.name] = repr(exc)
after_import = matplotlib.get_backend()

# Draw and save figures the way the CLI and a notebook do.
import numpy as np
from convscope.io import save_figure
from convscope.render.inside import activation_grid_figure
from convscope.render.training import training_curves_figure
from convscope.training.loop import EpochRecord

records = [EpochRecord(e, 0.5 / e, 0.9 + e / 100, 0.4 / e, 0.92 + e / 100, 1e-3, 1e-3, 1.0, 100.0) for e in (1, 2, 3)]
curves = training_curves_figure(records, [1e-3] * 30, "t")
grid = activation_grid_figure(np.random.default_rng(0).random((8, 5, 5)), layer="Conv2D_x", image=np.zeros((28, 28), np.uint8))
save_figure(sys.argv[1], curves)
png = grid._repr_png_()
try:
    from IPython.core.formatters import DisplayFormatter
    mimetypes = sorted(DisplayFormatter().format(grid)[0])
except ImportError:
    mimetypes = None

pyplot_figures = None
if "matplotlib.pyplot" in sys.modules:
    from matplotlib._pylab_helpers import Gcf
    pyplot_figures = len(Gcf.get_all_fig_managers())
print(json.dumps({
    "before": before, "after_import": after_import, "after_drawing": matplotlib.get_backend(),
    "modules": modules, "failed": failed, "pyplot_figures": pyplot_figures,
    "repr_png_signature": png[:8].hex(), "ipython_mimetypes": mimetypes,
}))
'''

INLINE = "module://matplotlib_inline.backend_inline"


def test_importing_and_drawing_leave_the_backend_and_pyplot_alone(tmp_path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": INLINE, "OMP_NUM_THREADS": "1"}
    saved = tmp_path / "curves.png"
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(saved)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    # every area of the package was imported, not just a few modules
    for module in ("convscope.render.inside", "convscope.render.oip", "convscope.render.dream",
                   "convscope.render.confusion", "convscope.render.explain", "convscope.render.training",
                   "convscope.report.images", "convscope.cli.train_cmd", "convscope.training.live"):
        assert module in report["modules"]
    assert report["before"] == INLINE
    assert report["after_import"] == INLINE
    assert report["after_drawing"] == INLINE
    assert report["pyplot_figures"] in (None, 0)  # pyplot never imported, or holds no figure
    # the figures still save and display: a PNG file, PNG bytes for IPython
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["repr_png_signature"] == b"\x89PNG\r\n\x1a\n".hex()
    if report["ipython_mimetypes"] is not None:
        assert "image/png" in report["ipython_mimetypes"]
