"""The HTML report's small multiples: fixed margins keep every panel's title, ticks and
labels inside the image and apart from the next panel's (they replaced tight_layout
and a cropped save, most of a large report's time)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (1, 4), (2, 3), (4, 4)])
def test_small_multiples_keep_every_label_inside_the_figure_and_apart(rows: int,
                                                                      cols: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.html import PANEL_INCHES, _grid_margins

    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES[0] * cols,
                                                  PANEL_INCHES[1] * rows), squeeze=False)
    try:
        for ax in axes.flat:  # the longest title and tick labels a smoke report has
            ax.plot([0.0, 1.75], [0.0, 12000.5])
            ax.set_title("malloc:tcmalloc-debug (40 of 208)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("s", fontsize=7)
            ax.set_ylabel("M ops/s", fontsize=7)
        _grid_margins(fig, rows, cols)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        page = fig.bbox
        boxes = [ax.get_tightbbox(renderer) for ax in axes.flat]
        for box in boxes:
            assert (box.x0 >= page.x0 - 1 and box.y0 >= page.y0 - 1
                    and box.x1 <= page.x1 + 1 and box.y1 <= page.y1 + 1), (box, page)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)
    finally:
        plt.close(fig)
