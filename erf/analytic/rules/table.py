"""The dispatch table: which rule follows each op, matched by the name torch dispatches.

The one place where op names meet rules: ``RULES`` (op name -> rule), ``POINTWISE``
(ops that act on each position alone), ``IGNORED`` (ops that return no traced tensor),
``LEAKS`` (ops that take values out of torch) and ``TREAT_AS`` (the kinds a user may
declare for an op erf does not know).
"""

from __future__ import annotations

from erf.analytic.rules.attention import attention, einsum, linear, matmul, recurrent
from erf.analytic.rules.core import Rule, pointwise
from erf.analytic.rules.mixing import batch_norm, global_op, group_norm, identity, layer_norm, reduce_dims
from erf.analytic.rules.resample import conv_transpose, fold, interpolate, pixel_shuffle, pixel_unshuffle
from erf.analytic.rules.shape import (cat, expand, flatten, getitem, permute, repeat_interleave, reshape, split,
                                      squeeze_like, stack)
from erf.analytic.rules.window import adaptive_pool, conv, pad, pool, unfold

POINTWISE = set("""
abs absolute neg negative exp exp2 expm1 log log2 log10 log1p sqrt rsqrt sin cos tan sinh cosh tanh asin acos atan
sigmoid relu relu6 elu selu celu gelu silu mish softplus softsign hardtanh hardswish hardsigmoid hardshrink
softshrink tanhshrink leaky_relu prelu rrelu threshold logsigmoid glu clamp clamp_min clamp_max clip pow
add sub subtract mul multiply div divide true_divide floor_divide remainder fmod maximum minimum fmax fmin where
lerp addcmul addcdiv erf erfc erfinv square reciprocal sign sgn round floor ceil trunc frac nan_to_num
contiguous clone detach to float double half bfloat16 type type_as cuda cpu requires_grad_ dropout dropout1d
dropout2d dropout3d alpha_dropout feature_alpha_dropout eq ne lt le gt ge logical_and logical_or logical_not
logical_xor bitwise_and bitwise_or bitwise_xor masked_fill atan2 hypot xlogy copysign heaviside isnan isinf
isfinite __add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__ __rtruediv__
__itruediv__ __div__ __idiv__ __floordiv__ __rfloordiv__ __mod__ __rmod__ __pow__ __rpow__ __ipow__ __neg__
__abs__ __and__ __or__ __xor__ __invert__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __iand__ __ior__ __ixor__
local_response_norm sub_ mul_ div_ add_ relu_ clamp_ sigmoid_ tanh_ copy_ fill_ zero_ masked_fill_ pow_
gelu_ silu_ hardtanh_ leaky_relu_ elu_ celu_ selu_ threshold_ detach_ abs_ neg_ exp_ square_ sqrt_ rsqrt_
float_power softmax2d view_as reshape_as expand_as broadcast_to real imag conj angle
""".split())

IGNORED = set("""
size dim numel __len__ __get__ __bool__ __format__ __repr__ __hash__ __contains__ item tolist is_contiguous
stride data_ptr element_size nelement ndimension is_floating_point is_complex __reduce_ex__ __setstate__
storage_offset get_device __index__ __int__ __float__ __array_priority__ __iter__ __deepcopy__ new_zeros new_ones
new_empty new_full new_tensor zeros_like ones_like empty_like full_like rand_like randn_like randint_like
argmax argmin allclose equal isclose any all register_hook retain_grad backward __dlpack__ __dlpack_device__
""".split())

LEAKS = {"numpy", "__array__", "untyped_storage", "data_ptr"}

RULES: dict[str, Rule] = {}
for _n in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution"):
    RULES[_n] = conv
for _n in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
    RULES[_n] = conv_transpose
for _nd in "123":
    for _n in (f"max_pool{_nd}d", f"avg_pool{_nd}d", f"lp_pool{_nd}d", f"max_pool{_nd}d_with_indices"):
        RULES[_n] = pool
    for _n in (f"adaptive_avg_pool{_nd}d", f"adaptive_max_pool{_nd}d", f"adaptive_max_pool{_nd}d_with_indices"):
        RULES[_n] = adaptive_pool
RULES.update({
    "interpolate": interpolate, "upsample": interpolate, "upsample_nearest": interpolate,
    "upsample_bilinear": interpolate,
    "pad": pad, "__getitem__": getitem, "narrow": None, "unfold": unfold, "im2col": unfold,
    "view": reshape, "reshape": reshape, "flatten": flatten, "unflatten": reshape, "squeeze": squeeze_like,
    "unsqueeze": squeeze_like, "view_as": None,
    "permute": permute, "transpose": permute, "swapaxes": permute, "swapdims": permute, "t": permute,
    "T": permute, "mT": permute, "movedim": permute, "moveaxis": permute,
    "layer_norm": layer_norm, "rms_norm": layer_norm, "group_norm": group_norm, "instance_norm": group_norm,
    "batch_norm": batch_norm,
    "linear": linear, "bilinear": linear, "matmul": matmul, "bmm": matmul, "mm": matmul, "__matmul__": matmul,
    "scaled_dot_product_attention": attention, "multi_head_attention_forward": attention,
    "einsum": einsum, "fold": fold, "col2im": fold,
    "lstm": recurrent, "gru": recurrent, "rnn_tanh": recurrent, "rnn_relu": recurrent,
    "cat": cat, "concat": cat, "concatenate": cat, "stack": stack,
    "split": split, "chunk": split, "tensor_split": split, "unbind": split, "split_with_sizes": split,
    "pixel_shuffle": pixel_shuffle, "pixel_unshuffle": pixel_unshuffle,
    "expand": expand, "broadcast_to": expand, "expand_as": expand, "repeat_interleave": repeat_interleave,
})
for _n in ("mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod", "median",
           "nansum", "nanmean", "std_mean", "var_mean", "softmax", "log_softmax", "softmin", "cumsum",
           "cumprod", "logcumsumexp", "normalize", "count_nonzero"):
    RULES[_n] = reduce_dims
RULES = {k: v for k, v in RULES.items() if v is not None}
for _n in ("view_as", "reshape_as"):
    RULES[_n] = reshape
RULES["expand_as"] = expand
RULES["broadcast_to"] = expand

TREAT_AS = {"pointwise": pointwise, "global": global_op, "identity": identity}


def canonical(name: str) -> str:
    """Name of an op as matched against the rules (``_max_pool2d`` -> ``max_pool2d``).

    Args:
        name: the ``__name__`` of the function torch dispatched.

    Returns:
        ``name`` without its leading underscores (dunder names are kept as they are).
    """
    if name.startswith("_") and not name.startswith("__"):
        name = name.lstrip("_")
    return name


def find_rule(name: str, treat_as: dict[str, str]) -> Rule | None:
    """The rule for op ``name``: a ``treat_as`` entry first, then ``RULES``, then ``POINTWISE``.

    Args:
        name: a canonical op name (see ``canonical``).
        treat_as: op name -> ``"pointwise"``, ``"global"`` or ``"identity"``, given by the user.

    Returns:
        The rule, or None when erf knows no rule for the op.
    """
    if name in treat_as:
        return TREAT_AS[treat_as[name]]
    if name in RULES:
        return RULES[name]
    if name in POINTWISE:
        return pointwise
    return None
