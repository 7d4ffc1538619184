"""``augtrain augment preview`` on real shards, and the preview grid itself."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from augtrain.augment.image.preview import render_preview


def _images(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (28, 28, 1), dtype=np.uint8) for _ in range(n)]


def test_grid_holds_originals_and_views() -> None:
    images = _images(3)
    grid = render_preview(images, "none", per_sample=2, columns=1, tile=28)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    top = 28  # title band
    first = grid[top : top + 28, 0:28, 0]
    assert (first[2:-2, 2:-2] == images[0][2:-2, 2:-2, 0]).all()  # original (inside its frame)
    view = grid[top : top + 28, 28 + 4 : 28 + 4 + 28, 0]
    np.testing.assert_array_equal(view, images[0][:, :, 0])  # 'none' leaves it as it is
    changed = render_preview(images, "rand-n2-m9", per_sample=2, columns=1, tile=28)
    assert not np.array_equal(changed[top:], grid[top:])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        render_preview([], "mae")
    with pytest.raises(ValueError, match="per_sample"):
        render_preview(_images(1), "mae", per_sample=0)


@pytest.mark.timeout(120)
def test_preview_command_writes_png(tmp_path) -> None:
    from augtrain.cluster.cli import main
    from augtrain.pipelines.data.writer import WriteOptions, write_shards
    from augtrain.pipelines.data.sources import digits

    shards = tmp_path / "shards"
    write_shards(digits("train"), str(shards), "train", WriteOptions(samples_per_shard=20, limit=40), progress=lambda m: None)
    out = tmp_path / "grid.png"
    assert main(["augment", "preview", "--policy", "simclr", "--shards", str(shards), "--out", str(out), "--n", "5"]) == 0
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape[0] > 3 * 96 and os.path.getsize(out) > 1000
    assert main(["augment", "preview", "--policy", "warp-9", "--shards", str(shards), "--out", str(out)]) == 2


def test_series_preview_cli_writes_a_png_of_curves(tmp_path, capsys) -> None:
    from augtrain.cluster.cli import main
    from augtrain.pipelines.data.series_sources import ucr
    from augtrain.pipelines.data.writer import WriteOptions, write_shards

    shards = tmp_path / "gunpoint"
    write_shards(ucr("GunPoint", "train"), str(shards), "train", WriteOptions(limit=6))
    out = tmp_path / "series.png"
    assert main(["augment", "preview", "--shards", str(shards), "--policy", "series-basic", "--n", "3",
                 "--per-sample", "2", "--out", str(out)]) == 0
    assert "3 samples x 2 views" in capsys.readouterr().out
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] > 300 and picture.std() > 10  # curves drawn, not a blank
    assert main(["augment", "preview", "--shards", str(shards), "--policy", "none"]) != 0  # no --out
    assert "a preview of series samples is a PNG" in capsys.readouterr().err
