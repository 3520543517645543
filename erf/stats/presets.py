"""Map-definition presets: what the engine differentiates and what it keeps of the gradient.

The vocabularies are tables, defined once here and imported by the engine, the CLI and the
configs: ``PRESETS`` (name -> ``Preset``), ``SIGNALS`` (name -> what is kept of the input
gradient), ``REDUCTIONS`` (how channels are combined) and ``POSTS`` (post-processing of the
mean map). The functions work on numpy arrays and on torch tensors alike (gradients flow
through), so this module does not import torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike

from erf.errors import ErfError

if TYPE_CHECKING:  # annotations only: the functions never need torch itself
    import torch

__all__ = ["Preset", "PRESETS", "SIGNALS", "REDUCTIONS", "POSTS", "get_preset", "reduce_target", "reduce_gradient",
           "apply_post"]

Array = Union[np.ndarray, "torch.Tensor"]


def _is_torch(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "torch"


def _positive(a: Array) -> Array:
    return a.clamp(min=0) if _is_torch(a) else np.maximum(a, 0)


#: What is kept of an input gradient ``g`` (per element): ``abs`` |g|, ``positive`` max(g, 0),
#: ``signed`` g, ``square`` g**2.
SIGNALS: dict[str, Callable[[Array], Array]] = {
    "abs": lambda a: abs(a),
    "positive": _positive,
    "signed": lambda a: a,
    "square": lambda a: a * a,
}


def _sum(a: Array, axis: int) -> Array:
    return a.sum(dim=axis) if _is_torch(a) else a.sum(axis=axis)


def _mean(a: Array, axis: int) -> Array:
    return a.mean(dim=axis) if _is_torch(a) else a.mean(axis=axis)


#: How channels are combined: the target's output channels and the gradient's input channels.
REDUCTIONS: dict[str, Callable[[Array, int], Array]] = {"sum": _sum, "mean": _mean}


def _log1p_max(m: np.ndarray) -> np.ndarray:
    m = np.log10(1.0 + m)
    peak = np.max(m) if m.size else 0.0
    if not np.isfinite(peak) or peak <= 0:
        raise ErfError("cannot apply 'log1p_max': the map's maximum is not positive")
    return m / peak


def _sum1(m: np.ndarray) -> np.ndarray:
    total = m.sum()
    if not np.isfinite(total) or total <= 0:
        raise ErfError("cannot apply 'sum1': the map's sum is not positive")
    return m / total


#: Post-processing of a float64 mean map: ``None`` (as is), ``log1p_max`` = log10(1+x)/max
#: (RepLKNet), ``sum1`` = x/sum (a distribution over pixels).
POSTS: dict[str | None, Callable[[np.ndarray], np.ndarray]] = {
    None: lambda m: m,
    "log1p_max": _log1p_max,
    "sum1": _sum1,
}


@dataclass(frozen=True)
class Preset:
    """How an ERF map is defined, as data the engine applies.

    * ``target_reduce``/``target_relu``: the scalar whose gradient is taken -- the
      centre unit's activation vector over output channels, optionally ReLU'd, then
      summed or averaged over channels (``reduce_target``).
    * ``signal``: what is kept of the input gradient (a name of ``SIGNALS``): ``abs`` |g|,
      ``positive`` max(g, 0), ``signed`` g, ``square`` g**2.
    * ``channel_reduce``: how input channels are combined (``sum``/``mean``, ``REDUCTIONS``).
    * ``signal_first``: apply ``signal`` per channel before the channel reduction
      (True) or to the channel-reduced gradient (False) -- see ``reduce_gradient``.
    * ``post``: applied to the final mean map (``apply_post``, a name of ``POSTS``): ``None``,
      ``log1p_max`` = log10(1+x)/max, ``sum1`` = x/sum.
    * ``token_center_first``: on a token grid (``(N, L, C)``) with an even side, the measured unit
      is the first (upper-left) of the central tokens, ``(n - 1) // 2``, as OpenERF 0.6.1 takes it;
      otherwise (and on every conv map) the centre unit is ``n // 2`` (``center``).

    Raises:
        ErfError: a field names no entry of its table.
    """

    name: str
    target_reduce: str
    target_relu: bool
    signal: str
    channel_reduce: str
    post: str | None
    signal_first: bool = True
    description: str = field(default="", compare=False)
    token_center_first: bool = False

    def __post_init__(self) -> None:
        if self.target_reduce not in tuple(REDUCTIONS):
            raise ErfError(f"preset {self.name!r}: target_reduce must be 'sum' or 'mean', got {self.target_reduce!r}")
        if self.channel_reduce not in tuple(REDUCTIONS):
            raise ErfError(f"preset {self.name!r}: channel_reduce must be 'sum' or 'mean', got {self.channel_reduce!r}")
        if self.signal not in tuple(SIGNALS):
            raise ErfError(f"preset {self.name!r}: signal must be one of {tuple(SIGNALS)}, got {self.signal!r}")
        if self.post not in tuple(POSTS):
            raise ErfError(f"preset {self.name!r}: post must be one of {tuple(POSTS)}, got {self.post!r}")

    def to_dict(self) -> dict:
        """The preset's fields as a plain dict."""
        return asdict(self)

    def center(self, shape: Sequence[int], tokens: bool = False) -> tuple[int, ...]:
        """The unit this definition measures by default on a layer map of ``shape``.

        Args:
            shape: the layer's spatial map size.
            tokens: the positions are tokens of an ``(N, L, C)`` layer (a transformer's grid).

        Returns:
            ``n // 2`` per axis, or ``(n - 1) // 2`` on token grids with ``token_center_first``.
        """
        if tokens and self.token_center_first:
            return tuple((int(n) - 1) // 2 for n in shape)
        return tuple(int(n) // 2 for n in shape)


PRESETS: dict[str, Preset] = {
    # Luo et al. (NIPS 2016) back-propagate a 1 at the centre output unit (all channels: the
    # target is their sum). Their analysis of random weights is about the gradient's variance
    # (the `square` signal): with zero-mean weights the expected signed gradient is 0 and its
    # variance map is the uniform-kernel map. The paper does not say whether its figures show
    # variances, mean magnitudes or signed means. This preset averages |grad| (summed over input
    # channels): how strongly each pixel moves the unit whatever the sign. Its expected map for
    # random linear nets is the square root of the variance map (erf.linear_erf(signal="abs")),
    # wider than Luo's variance map; use signal="square" for the quantity their theory describes.
    "luo": Preset("luo", "sum", False, "abs", "sum", None, True,
                  "After Luo et al. 2016: d(sum of centre unit's channels)/d input; |grad| summed over input "
                  "channels, averaged over samples. Luo et al.'s random-weight theory is about the variance "
                  "(signal='square'); their figures do not say which signal they show."),
    # RepLKNet (Ding et al., CVPR 2022, erf/visualize_erf.py): target = sum over
    # channels of ReLU(centre activation); relu(grad) per element summed over input
    # channels and samples; analyze_erf.py then takes log10(1+x) and divides by the
    # max before the high-contribution area ratio and the heatmap. log10(1+x) is not
    # scale free: the same Gaussian scored 0.02 at 1e-4 and 0.07 at 1e4 (hcar_log1p_max_0.2),
    # so their area ratios compare only maps of one scale: trained ImageNet nets on real
    # images summed (not averaged) over their 50 images as in their script. With noise
    # inputs, other input counts or normalised draws the number is not the paper's.
    "replknet": Preset("replknet", "sum", True, "positive", "sum", "log1p_max", True,
                       "RepLKNet 2022: d(sum ReLU(centre activation))/d input, positive part summed over "
                       "input channels, averaged; then log10(1+x)/max (scale dependent: area ratios compare "
                       "only maps of one scale)."),
    # OpenERF 0.6.1: target = channel mean of the centre activation; the input
    # gradient is averaged over input channels *then* clipped at zero; the map is
    # normalised to sum 1 (a distribution over pixels). On token grids with an even
    # side it takes the upper-left of the four central tokens ((3, 3) on 8x8); on conv
    # maps the n // 2 unit (matches OpenERF to 1e-17).
    "openerf": Preset("openerf", "mean", False, "positive", "mean", "sum1", False,
                      "OpenERF 0.6.1: d(channel mean of centre activation)/d input, averaged over input "
                      "channels then clipped at 0, normalised to sum 1; upper-left central token on even "
                      "token grids.", True),
}


def get_preset(preset: Preset | str) -> Preset:
    """A preset by name (or the preset itself).

    Args:
        preset: a ``Preset`` (returned as is) or a name of ``PRESETS``.

    Returns:
        The ``Preset``.

    Raises:
        ErfError: an unknown name.
    """
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ErfError(f"unknown ERF preset {preset!r}; choose one of {sorted(PRESETS)}") from None


def reduce_target(center_activation: Array, preset: Preset | str = "luo") -> Array:
    """Per-sample scalar target from the centre unit's activations (..., C): channels last.

    Works on numpy arrays and torch tensors (gradients flow through).

    Args:
        center_activation: the centre unit's activations, output channels on the last axis.
        preset: a ``Preset`` or a name of ``PRESETS`` (``target_relu``, ``target_reduce``).

    Returns:
        The target per sample, shape ``center_activation.shape[:-1]``, same kind as the input.

    Raises:
        ErfError: an unknown preset name.
    """
    p = get_preset(preset)
    a = center_activation
    if p.target_relu:
        a = SIGNALS["positive"](a)
    return REDUCTIONS[p.target_reduce](a, -1)


def reduce_gradient(grad: Array, preset: Preset | str = "luo", channel_axis: int = 1) -> Array:
    """Per-sample map from an input gradient (e.g. (B, C, H, W)): signal + channel reduction.

    Order follows ``preset.signal_first``.  Works on numpy arrays and torch tensors.

    Args:
        grad: the input gradient.
        preset: a ``Preset`` or a name of ``PRESETS`` (``signal``, ``channel_reduce``, ``signal_first``).
        channel_axis: the axis of the input channels, reduced away.

    Returns:
        The per-sample map (``grad`` without ``channel_axis``), same kind as the input.

    Raises:
        ErfError: an unknown preset name.
    """
    p = get_preset(preset)
    signal, reduce = SIGNALS[p.signal], REDUCTIONS[p.channel_reduce]
    if p.signal_first:
        return reduce(signal(grad), channel_axis)
    return signal(reduce(grad, channel_axis))


def apply_post(m: ArrayLike, post: str | None) -> np.ndarray:
    """Post-process a mean map: ``None`` (copy), ``'log1p_max'`` (log10(1+x)/max), ``'sum1'`` (x/sum).

    Args:
        m: the mean map (any shape), converted to a float64 copy.
        post: a name of ``POSTS``.

    Returns:
        The post-processed float64 map (a new array).

    Raises:
        ErfError: an unknown ``post``, or a map whose maximum (``log1p_max``) or sum (``sum1``)
            is not positive.
    """
    m = np.array(m, dtype=np.float64)
    try:
        fn = POSTS[post]
    except (KeyError, TypeError):
        raise ErfError(f"unknown post-processing {post!r}; choose one of {tuple(POSTS)}") from None
    return fn(m)
