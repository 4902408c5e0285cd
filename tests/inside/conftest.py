"""Close every matplotlib figure a test left open (renderers return Figures)."""

import pytest


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
