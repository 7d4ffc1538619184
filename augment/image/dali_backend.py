"""DALI backend: plans run as one DALI graph, on the GPU (nvJPEG ``mixed`` decode) or with CPU
operators (``device_id=None``).

Plans are sampled on the host (``augtrain.augment.plan``) and fed to the graph per sample
through ``fn.external_source``: for each step slot an op code (int32, -1 = no op) and a
float32 parameter vector. The graph holds, per slot, one conditional branch per op the
policy can use (DALI conditionals, ``enable_conditionals=True``), so the same sampled
parameters reach DALI and the CPU backends, which is what the parity tests compare.

``choose_dali_device`` is the one place that picks the DALI device: ``device_id`` is a CUDA
ordinal only when CUDA is present, otherwise ``None`` (DALI refuses ``device_id=0`` without a
driver, even for CPU-only graphs).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np

from augtrain.augment.image.ops import AFFINE, FILL, OPS, Params, hue_matrix
from augtrain.augment.plan import Step, check_size, max_plan_length, sample_plan, view_names
from augtrain.augment.policy import Policy, PolicyError

log = logging.getLogger(__name__)

PARAM_WIDTH = 12  # longest parameter vector fed per step (color_jitter: 3 factors + 3x3 hue matrix)
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class DaliDevice:
    """Where a DALI pipeline runs: ``device_id`` None means CPU operators only."""

    device_id: int | None

    @property
    def gpu(self) -> bool:
        """True when the pipeline runs GPU operators."""
        return self.device_id is not None

    @property
    def decoder(self) -> str:
        """``mixed`` (nvJPEG) on GPU, ``cpu`` otherwise."""
        return "mixed" if self.gpu else "cpu"


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def choose_dali_device(device: str = "auto", local_rank: int = 0) -> DaliDevice:
    """``auto``: GPU ``local_rank`` when CUDA is present, else CPU (logged); ``gpu`` without
    CUDA is an error; ``cpu`` always gives ``device_id=None``."""
    if device not in ("auto", "gpu", "cpu"):
        raise PolicyError(f"DALI device must be auto, gpu or cpu, got {device!r}")
    if device == "cpu":
        return DaliDevice(None)
    if cuda_available():
        return DaliDevice(int(local_rank))
    if device == "gpu":
        raise RuntimeError("DALI device 'gpu' was asked for but CUDA is not available on this machine")
    log.warning("DALI: no CUDA device, falling back to DALI CPU operators (device_id=None)")
    return DaliDevice(None)


# ---------------------------------------------------------------------------- host-side packing


def _affine_to_dali(params: Params) -> np.ndarray:
    """Our dst->src matrix has pixel centers at integers; DALI's at +0.5."""
    a = np.array([params[k] for k in AFFINE], dtype=np.float64).reshape(2, 3)
    a[:, 2] += 0.5 - 0.5 * (a[:, 0] + a[:, 1])
    return a.reshape(-1)


def pack_step(step: Step) -> np.ndarray:
    """The float32 ``[PARAM_WIDTH]`` vector DALI gets for one step."""
    if step.name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        values = _affine_to_dali(step.params)
    elif step.name == "posterize":
        bits = int(step.params["bits"])
        values = np.array([0xFF ^ ((1 << (8 - bits)) - 1)])
    elif step.name == "color_jitter":
        p = step.params
        values = np.concatenate([[p["brightness"], p["contrast"], p["saturation"]], hue_matrix(p["hue"]).reshape(-1)])
    else:
        values = OPS[step.name].pack(step.params)
    out = np.zeros(PARAM_WIDTH, dtype=np.float32)
    out[: len(values)] = values
    return out


def pack_plans(plans: list[list[Step]], names: list[str], slots: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per sample: op codes int32 ``[slots]`` (-1 = none) and params float32 ``[slots, PARAM_WIDTH]``."""
    codes, params = [], []
    for plan in plans:
        if len(plan) > slots:
            raise ValueError(f"a plan has {len(plan)} steps, the DALI graph has {slots} slots")
        c = np.full(slots, -1, dtype=np.int32)
        p = np.zeros((slots, PARAM_WIDTH), dtype=np.float32)
        for i, step in enumerate(plan):
            if step.name not in names:
                raise PolicyError(f"op {step.name!r} is not in this DALI graph (built for {names})")
            c[i] = names.index(step.name)
            p[i] = pack_step(step)
        codes.append(c)
        params.append(p)
    return codes, params


# ---------------------------------------------------------------------------- graph ops


class _Graph:
    """What every op's DALI graph builder needs: the operators, the image's channel count, the
    device, and small helpers (constants, luma, mean luma, parameter vectors)."""

    def __init__(self, channels: int, gpu: bool) -> None:
        from nvidia.dali import fn, types

        self.fn, self.types, self.channels, self.gpu = fn, types, channels, gpu

    def const(self, value, dtype=None):
        types = self.types
        dtype = types.FLOAT if dtype is None else dtype
        return types.Constant(np.asarray(value, dtype=np.float32 if dtype == types.FLOAT else np.uint8), dtype=dtype)

    def u8(self, value):
        return self.const(value, self.types.UINT8)

    def f32(self, x):
        return self.fn.cast(x, dtype=self.types.FLOAT)

    def to_u8(self, x):
        return self.fn.cast(x, dtype=self.types.UINT8)

    def luma(self, x):  # float [H, W, 1]
        xf = self.f32(x)
        if self.channels == 1:
            return xf
        return self.fn.reductions.sum(xf * self.const(_LUMA), axis_names="C", keep_dims=True)

    def mean_luma(self, x):  # float [1, 1, 1]
        m = self.fn.reductions.mean(self.f32(x), axis_names="HW", keep_dims=True)
        if self.channels == 1:
            return m
        return self.fn.reductions.sum(m * self.const(_LUMA), axis_names="C", keep_dims=True)

    def blend(self, base, x, factor):  # base + (x - base) * factor, back to uint8
        return self.to_u8(base + (self.f32(x) - base) * factor)


def _resize(g: _Graph, img, p):
    return g.fn.resize(img, size=g.fn.stack(p[0], p[1]), interp_type=g.types.INTERP_LINEAR, antialias=False)


def _random_resized_crop(g: _Graph, img, p):  # crop, then resize (no pixels from outside the crop)
    crop = g.fn.slice(img, g.fn.stack(p[0], p[1]), g.fn.stack(p[2], p[3]), axis_names="HW",
                      normalized_anchor=False, normalized_shape=False)
    return g.fn.resize(crop, size=g.fn.stack(p[4], p[5]), interp_type=g.types.INTERP_LINEAR, antialias=False)


def _affine(g: _Graph, img, p):  # rotate, shear and translate: the inverse map, as the numpy ops
    matrix = g.fn.reshape(g.fn.stack(*[p[i] for i in range(6)]), shape=[2, 3])
    return g.fn.warp_affine(img, matrix=matrix, inverse_map=True, fill_value=FILL, interp_type=g.types.INTERP_LINEAR)


def _auto_contrast(g: _Graph, img, p):
    lo = g.fn.reductions.min(img, axis_names="HW", keep_dims=True)
    hi = g.fn.reductions.max(img, axis_names="HW", keep_dims=True)
    diff = hi - lo
    scale_mask = diff > 0
    div_by = diff * scale_mask + g.u8(255) * (scale_mask ^ True)
    return g.to_u8((img - lo * scale_mask) * (255 / div_by))


def _solarize(g: _Graph, img, p):
    keep = img < p[0]
    return keep * img + (keep ^ True) * (g.u8(255) - img)


def _color(g: _Graph, img, p):
    return img if g.channels == 1 else g.blend(g.luma(img), img, p[0])


def _sharpness(g: _Graph, img, p):
    smoothing = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0
    kernel = g.types.Constant(smoothing, device="gpu" if g.gpu else "cpu")
    smooth = g.fn.filter(g.f32(img), kernel, border="reflect_101", dtype=g.types.FLOAT)
    return g.blend(smooth, img, p[0])


def _cutout(g: _Graph, img, p):
    anchor, shape = g.fn.stack(p[0], p[1]), g.fn.stack(p[2] - p[0], p[3] - p[1])
    return g.fn.erase(img, anchor=anchor, shape=shape, axis_names="HW", fill_value=FILL)


def _grayscale(g: _Graph, img, p):
    if g.channels == 1:
        return img
    gray = g.fn.color_space_conversion(img, image_type=g.types.RGB, output_type=g.types.GRAY)
    return g.fn.cat(gray, gray, gray, axis_name="C")


def _gaussian_blur(g: _Graph, img, p):
    import nvidia.dali.math as dmath

    window = g.fn.cast(dmath.ceil(p[0] * 3.0), dtype=g.types.INT32) * 2 + 1
    return g.fn.gaussian_blur(img, sigma=p[0], window_size=window)


def _color_jitter(g: _Graph, img, p):  # brightness, contrast, saturation, then the hue matrix
    out = g.to_u8(g.f32(img) * p[0])
    out = g.blend(g.mean_luma(out), out, p[1])
    if g.channels == 1:
        return out
    out = g.blend(g.luma(out), out, p[2])
    hue = g.fn.reshape(g.fn.stack(*[p[i] for i in range(3, 12)]), shape=[3, 3])
    return g.fn.coord_transform(out, M=hue, dtype=g.types.UINT8)


# op name -> graph builder ``(graph, img, p) -> img``: ``img`` a uint8 HWC node (on the GPU when
# the graph is), ``p`` the op's CPU float parameter vector (``pack_step``'s layout)
GRAPH_OPS = {
    "identity": lambda g, img, p: img,
    "resize": _resize,
    "random_resized_crop": _random_resized_crop,
    "hflip": lambda g, img, p: g.fn.flip(img, horizontal=1, vertical=0),
    "vflip": lambda g, img, p: g.fn.flip(img, horizontal=0, vertical=1),
    "rotate": _affine,
    "shear_x": _affine,
    "shear_y": _affine,
    "translate_x": _affine,
    "translate_y": _affine,
    "auto_contrast": _auto_contrast,
    "equalize": lambda g, img, p: g.fn.equalize(img),
    "invert": lambda g, img, p: g.u8(255) - img,
    "solarize": _solarize,
    "posterize": lambda g, img, p: img & g.to_u8(p[0]),
    "brightness": lambda g, img, p: g.to_u8(g.f32(img) * p[0]),
    "contrast": lambda g, img, p: g.blend(g.mean_luma(img), img, p[0]),
    "color": _color,
    "sharpness": _sharpness,
    "cutout": _cutout,
    "grayscale": _grayscale,
    "gaussian_noise": lambda g, img, p: g.fn.noise.gaussian(img, stddev=p[0]),
    "gaussian_blur": _gaussian_blur,
    "color_jitter": _color_jitter,
}


def _dali_op(name: str, img, p, channels: int, gpu: bool = False):
    """DALI graph for one op (``GRAPH_OPS``)."""
    if name not in GRAPH_OPS:
        raise PolicyError(f"op {name!r} has no DALI implementation")
    return GRAPH_OPS[name](_Graph(channels, gpu), img, p)


def apply_plan_graph(img, codes, params, names: list[str], slots: int, channels: int, gpu: bool = False):
    """Graph that runs, per sample, the op whose code is fed for each slot (DALI conditionals)."""
    for s in range(slots):
        code = codes[s]
        p = params[s]
        for index, name in enumerate(names):
            if code == index:
                img = _dali_op(name, img, p, channels, gpu)
    return img


# ---------------------------------------------------------------------------- pipelines


def _build_pipeline(
    names: list[str], slots: int, channels: int, views: int, device: DaliDevice, batch_size: int,
    encoded: bool, num_threads: int, seed: int,
):  # fmt: skip
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(enable_conditionals=True, exec_dynamic=True)
    def plan_pipeline():
        if encoded:
            data = fn.external_source(name="input", dtype=types.UINT8, ndim=1)
            image = fn.decoders.image(data, device=device.decoder, output_type=types.RGB if channels == 3 else types.GRAY)
        else:
            image = fn.external_source(name="input", dtype=types.UINT8, ndim=3, layout="HWC")
            if device.gpu:
                image = image.gpu()
        outs = []
        for v in range(views):
            codes = fn.external_source(name=f"codes{v}", dtype=types.INT32, ndim=1)
            params = fn.external_source(name=f"params{v}", dtype=types.FLOAT, ndim=2)
            outs.append(apply_plan_graph(image, codes, params, names, slots, channels, device.gpu))
        return tuple(outs)

    pipe = plan_pipeline(
        batch_size=batch_size, num_threads=num_threads, device_id=device.device_id, seed=seed,
        prefetch_queue_depth=1,
    )  # fmt: skip
    pipe.build()
    return pipe


class _PlanRunner:
    """One built pipeline: feed inputs and plans, run, return per-view TensorLists."""

    def __init__(self, names, slots, channels, views, device, batch_size, encoded, num_threads=1, seed=0):
        self.names, self.slots, self.views = list(names), slots, views
        self.batch_size = batch_size
        self.pipe = _build_pipeline(self.names, slots, channels, views, device, batch_size, encoded, num_threads, seed)

    def run(self, inputs: list[np.ndarray], plans_per_view: list[list[list[Step]]]):
        if not 0 < len(inputs) <= self.batch_size:
            raise ValueError(f"DALI batch must hold 1..{self.batch_size} samples, got {len(inputs)}")
        self.pipe.feed_input("input", inputs)
        for v, plans in enumerate(plans_per_view):
            codes, params = pack_plans(plans, self.names, self.slots)
            self.pipe.feed_input(f"codes{v}", codes)
            self.pipe.feed_input(f"params{v}", params)
        return self.pipe.run()


class DaliSampleBackend:
    """Per-sample plans through DALI CPU operators (``device_id=None``); for tests and
    comparisons: the batch path (``DaliBatchAugmenter``) is how DALI should be used."""

    name = "dali"

    def __init__(self) -> None:
        self._runners: dict[tuple[int, int], _PlanRunner] = {}

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._runners = {}

    def apply(self, image: np.ndarray, steps: list[Step]) -> np.ndarray:
        """uint8 ``[H, W, C]`` -> uint8 ``[H', W', C]`` after every step of the plan."""
        key = (image.shape[2], max(1, len(steps)))
        if key not in self._runners:
            self._runners[key] = _PlanRunner(sorted(OPS), key[1], key[0], 1, DaliDevice(None), 1, encoded=False)
        (out,) = self._runners[key].run([np.ascontiguousarray(image)], [[steps]])
        return np.array(out[0])


def image_shape_of(encoded: np.ndarray | bytes) -> tuple[int, int]:
    """``(height, width)`` from an encoded image's header, without decoding it."""
    from PIL import Image

    data = encoded.tobytes() if isinstance(encoded, np.ndarray) else encoded
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Exception as exc:  # PIL raises several types for bad headers
        raise ValueError(f"cannot read the image header ({len(data)} bytes): {exc}") from None
    return height, width


class DaliBatchAugmenter:
    """Built once per train worker: encoded image bytes -> augmented torch batches.

    ``augmenter(list of uint8 1-D arrays, rng)`` returns ``{"image": tensor}`` (or ``view0``,
    ``view1``): uint8 ``[B, size, size, C]``, or float32 ``[B, C, size, size]`` normalised
    with ``mean``/``std`` when given; on the GPU when CUDA is present (nvJPEG decode, GPU ops),
    else on the CPU (``device_id=None``).
    """

    def __init__(
        self, policy: Policy | str, *, size: int, views: int = 1, batch_size: int = 256, channels: int = 3,
        device: str = "auto", local_rank: int = 0, num_threads: int = 2, seed: int = 0,
        mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
    ):  # fmt: skip
        from augtrain.augment.policy import parse_policy

        self.policy = parse_policy(policy)
        check_size(self.policy, size)
        if size is None:
            raise PolicyError("DaliBatchAugmenter needs an output size (batches have one shape)")
        if channels not in (1, 3) or views not in (1, 2):
            raise PolicyError(f"channels must be 1 or 3 and views 1 or 2, got {channels} and {views}")
        self.size, self.views, self.channels = size, views, channels
        self.mean, self.std = mean, std
        self.device = choose_dali_device(device, local_rank)
        names = sorted({"resize"} | {op.name for op in self.policy.all_ops()})
        self._runner = _PlanRunner(
            names, max_plan_length(self.policy), channels, views, self.device, batch_size, True, num_threads, seed
        )

    def plans(self, shapes: list[tuple[int, int]], rng: np.random.Generator) -> list[list[list[Step]]]:
        """Per view, per sample: the sampled plan."""
        return [[sample_plan(self.policy, rng, h, w, self.size) for h, w in shapes] for _ in range(self.views)]

    def __call__(self, encoded: list[np.ndarray], rng: np.random.Generator) -> dict:
        """Encoded images (uint8 1-D arrays) -> dict of torch tensors (see class docstring)."""
        shapes = [image_shape_of(e) for e in encoded]
        return self.run_plans(encoded, self.plans(shapes, rng))

    def run_plans(self, encoded: list[np.ndarray], plans: list[list[list[Step]]]) -> dict:
        """Run given plans (one list per view) on encoded images; returns torch tensors."""
        outs = self._runner.run([np.frombuffer(e, dtype=np.uint8) if isinstance(e, bytes) else e for e in encoded], plans)
        return dict(zip(view_names(self.views, "image"), (self._to_torch(out) for out in outs)))

    def _to_torch(self, tensor_list):
        import torch

        from augtrain.augment.image.normalize import normalize_batch

        if self.device.gpu:
            from nvidia.dali.plugin.pytorch import feed_ndarray

            dense = tensor_list.as_tensor()
            out = torch.empty(dense.shape(), dtype=torch.uint8, device=torch.device("cuda", self.device.device_id))
            feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(out.device))
        else:
            out = torch.from_numpy(np.array(tensor_list.as_tensor()))
        if self.mean is not None and self.std is not None:
            return normalize_batch(out, self.mean, self.std)
        return out
