"""What every use case returns: a result object with its JSON, figures and arrays.

Front ends never compute: the CLI parses, calls one ``convscope.app`` function,
and writes the result (:func:`convscope.cli.output.write_result`); the atlas and
the explorer call the same functions and read the same result objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure


class Result:
    """Base of the use-case results.

    Subclasses implement:

    * :meth:`to_json` — every number a user may script against, with the
      parameters used (plain JSON types only);
    * :meth:`figures` — ``{file stem: () -> Figure}``, drawn lazily (a front end
      that does not need a figure never pays for it);
    * :meth:`arrays` — ``{file stem: ndarray}`` the raw numbers (``.npy``);
    * :meth:`summary` — a few human-readable lines.
    """

    kind: str = "result"

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def figures(self) -> dict[str, Callable[[], Figure]]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def summary(self) -> list[str]:
        return []


__all__ = ["Result"]
