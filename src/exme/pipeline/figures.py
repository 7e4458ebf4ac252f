"""Figures are written to files only (rules run without a display), each atomically."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from exme.files import staged_file  # noqa: E402


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> None:
    """Save without leaving a partial PNG under the final name, then free the figure."""
    fig.tight_layout()
    with staged_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
