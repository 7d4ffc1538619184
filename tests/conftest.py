"""Shared fixtures: a real local Ray for the session, tiny real shards and a tiny SimCLR checkpoint
made with the project's own engine and checkpoint code, GPU detection."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session (4 logical CPUs: data tasks need spare CPU)."""
    import ray

    from augtrain.cluster.connect import connect

    if not ray.is_initialized():
        connect(num_cpus=4, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def session_tmp():
    with tempfile.TemporaryDirectory(prefix="augtrain-test-") as d:
        yield d


def make_tiny_checkpoint(root: str) -> str:
    """SimCLR on a 2-stage cnn-tiny, three DeepSpeed (ZeRO 0, CPU) steps, saved as a checkpoint."""
    import torch

    from augtrain.models import create_objective
    from augtrain.pipelines.train.checkpoint import save_checkpoint
    from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

    torch.manual_seed(0)
    objective = create_objective("simclr", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1, "widths": [8, 16]},
                                 proj_hidden_dim=16, proj_dim=8)
    engine = build_engine(objective, EngineConfig(zero_stage=0, device="cpu", micro_batch_size=16, total_steps=3,
                                                  base_lr=1e-3, lr_base_batch_size=16))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        train_step(engine, [torch.randn(16, 1, 8, 8, generator=generator), torch.randn(16, 1, 8, 8, generator=generator)])
    return str(save_checkpoint(engine, root, 3))


def write_digits(root: str) -> tuple[str, str]:
    from augtrain.pipelines.data.writer import WriteOptions, write_shards
    from augtrain.pipelines.data.sources import open_source

    paths = []
    for split in ("train", "test"):
        out = os.path.join(root, f"digits-{split}")
        write_shards(open_source("digits", split), out, split, WriteOptions(samples_per_shard=400),
                     progress=lambda _: None)
        paths.append(out)
    return paths[0], paths[1]


@pytest.fixture(scope="session")
def tiny_checkpoint(session_tmp) -> str:
    return make_tiny_checkpoint(os.path.join(session_tmp, "tune-pretrain"))


@pytest.fixture(scope="session")
def digits_splits(session_tmp) -> tuple[str, str]:
    return write_digits(os.path.join(session_tmp, "tune-digits"))


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")

_IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""


def render_in_chromium(html_path, screenshot=None) -> dict:
    """Open a page in headless Chromium (Debian's package; `make test` installs it): the count of
    its images and of those that loaded, its rendered text, and a screenshot when asked.
    The page is opened from a copy with a script that counts the images after the load event."""
    import re
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    html_path = Path(html_path)
    probe = html_path.with_name(".probe-" + html_path.name)
    probe.write_text(html_path.read_text().replace("</body>", _IMAGE_CHECK + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000"]
        dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
        if screenshot is not None:
            subprocess.run([*flags, "--window-size=1200,1600", f"--screenshot={screenshot}", html_path.as_uri()],
                           capture_output=True, timeout=120)
    probe.unlink()
    counts = {k: int(v) for k, v in re.findall(r'data-(images|loaded)="(\d+)"', dom)}
    assert "images" in counts, f"Chromium did not finish loading {html_path}: {dom[:300]!r}"
    return {"images": counts["images"], "loaded": counts.get("loaded", 0), "dom": dom}


@pytest.fixture()
def chromium():
    """``render_in_chromium``: skips the test where Chromium is not installed."""
    return render_in_chromium
