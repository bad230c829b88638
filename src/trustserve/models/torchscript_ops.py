"""Which TorchScript ops a model may use: tensor math, and the control flow around it.

A TorchScript program may call any operator registered with torch, and some touch
the world: ``aten::from_file`` maps (and with ``shared=True`` creates or
overwrites) a file, ``prim::Print`` writes, ``prim::fork`` starts work elsewhere.
Before a loaded module is run (the export traces and runs ``forward``), every
method of every module in it is inlined and walked, nested blocks and subgraphs
included, and an op that is not on :data:`ALLOWED` is refused by name. A call
that inlining cannot follow (an interface method) is refused too, since what it
runs cannot be checked.

The list holds arithmetic, comparisons, reductions, linear algebra, convolution,
pooling, normalization, activations, shape and indexing ops, tensor creation
from sizes, and the ``prim::``/``aten::`` ops TorchScript emits for constants,
lists, tuples, dicts, strings (error messages), ``if``, loops and ``raise``.
Ops that read raw memory (``as_strided``, ``set_``) or files are not on it.
"""

from __future__ import annotations

from typing import Any

from trustserve.errors import ArchiveError

_ARITHMETIC = """
abs absolute add add_ addcdiv addcmul sub sub_ rsub mul mul_ multiply div div_ divide
true_divide floor_divide floordiv remainder fmod neg negative pow pow_ sqrt rsqrt exp exp2
expm1 log log2 log10 log1p reciprocal sign sgn square floor ceil round trunc frac clamp
clamp_ clamp_min clamp_max clip lerp erf erfc erfinv sin cos tan asin acos atan atan2 sinh
cosh tanh tanh_ asinh acosh atanh hypot minimum maximum fmin fmax nan_to_num copysign
bitwise_and bitwise_or bitwise_xor bitwise_not logical_and logical_or logical_xor logical_not
__and__ __or__ __xor__ __not__ __iand__ __ior__ __lshift__ __rshift__ eq ne lt le gt ge
isnan isinf isfinite where masked_fill masked_fill_ relu relu_ relu6 gelu silu silu_ sigmoid
sigmoid_ hardtanh hardtanh_ hardswish hardswish_ hardsigmoid hardsigmoid_ leaky_relu
leaky_relu_ elu elu_ selu celu softplus softsign mish prelu glu logsigmoid threshold
threshold_ softmax log_softmax _softmax _log_softmax
"""
_LINEAR_ALGEBRA = """
linear matmul mm bmm addmm addmv baddbmm dot mv einsum bilinear t outer
_convolution conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d
convolution max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
adaptive_max_pool1d adaptive_max_pool2d lp_pool1d lp_pool2d batch_norm layer_norm group_norm
instance_norm native_layer_norm rms_norm embedding embedding_bag dropout dropout_
feature_dropout alpha_dropout scaled_dot_product_attention _native_multi_head_attention
_transformer_encoder_layer_fwd lstm gru rnn_tanh rnn_relu lstm_cell gru_cell rnn_tanh_cell
upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_bilinear2d
upsample_linear1d upsample_bicubic2d upsample_trilinear3d __interpolate _upsample_bicubic2d_aa
_upsample_bilinear2d_aa _upsample_lanczos2d_aa _upsample_nearest_exact1d
_upsample_nearest_exact2d _upsample_nearest_exact3d pixel_shuffle
pixel_unshuffle channel_shuffle pad constant_pad_nd reflection_pad1d reflection_pad2d
replication_pad1d replication_pad2d grid_sampler affine_grid_generator cosine_similarity
pairwise_distance cdist normalize
"""
_REDUCTIONS = """
sum mean prod max min amax amin argmax argmin std var norm frobenius_norm logsumexp all any
cumsum cumprod topk sort argsort median count_nonzero
"""
_SHAPES = """
view view_as reshape reshape_as flatten unflatten squeeze squeeze_ unsqueeze unsqueeze_
permute transpose transpose_ contiguous expand expand_as repeat repeat_interleave tile cat
concat concatenate stack hstack vstack split split_with_sizes chunk unbind slice select
narrow index_select gather take_along_dim index masked_select flip roll tril triu diag
diagonal movedim size dim numel len __getitem__ _set_item __setitem__ detach clone copy_
to type_as float double half int long bool contiguous is_floating_point is_contiguous
zeros zeros_like ones ones_like full full_like empty empty_like arange linspace eye
tensor scalar_tensor one_hot new_zeros new_ones new_full new_empty fill_ zero_
"""
_SCRIPT = """
Int Float Bool IntImplicit FloatImplicit ScalarImplicit __is__ __isnot__ __contains__
append extend insert pop list format str warn is_grad_enabled is_autocast_enabled
floordiv __range_length __derive_index dict keys values items get
"""
_PRIM = """
Constant GetAttr SetAttr If Loop ListConstruct ListUnpack TupleConstruct TupleUnpack
TupleIndex DictConstruct RaiseException Uninitialized unchecked_cast isinstance device
dtype layout requires_grad is_nested type NumToTensor min max abs data shape
"""

ALLOWED: frozenset[str] = frozenset(
    [f"aten::{op}" for block in (_ARITHMETIC, _LINEAR_ALGEBRA, _REDUCTIONS, _SHAPES, _SCRIPT)
     for op in block.split()] + [f"prim::{op}" for op in _PRIM.split()]
)  # fmt: skip
_UNFOLLOWED_CALLS = ("prim::CallMethod", "prim::CallFunction")


def refused_ops(module: Any) -> dict[str, str]:
    """Each op outside :data:`ALLOWED` in ``module`` (a loaded ScriptModule), with one method
    that uses it (``Class.method``)."""
    import torch

    found: dict[str, str] = {}
    for sub in module.modules():
        cls = sub.original_name if hasattr(sub, "original_name") else type(sub).__name__
        for name in sub._c._method_names():
            graph = sub._c._get_method(name).graph.copy()
            torch._C._jit_pass_inline(graph)
            for kind in _kinds(graph):
                if kind not in ALLOWED:
                    found.setdefault(kind, f"{cls}.{name}")
    return found


def check(module: Any, what: str) -> None:
    """Refuse ``module`` unless every op it can run is tensor math."""
    refused = refused_ops(module)
    if not refused:
        return
    kind, where = sorted(refused.items())[0]
    more = f" (and {len(refused) - 1} more: {', '.join(sorted(refused)[1:4])})" if len(
        refused
    ) > 1 else ""  # fmt: skip
    if kind in _UNFOLLOWED_CALLS:
        reason = f"{where} makes a call ({kind}) that cannot be checked; refusing"
    else:
        reason = f"op {kind} (in {where}) is not tensor math; refusing"
    raise ArchiveError(f"{what}: {reason}{more}")


def _kinds(block: Any) -> set[str]:
    kinds: set[str] = set()
    for node in block.nodes():
        kinds.add(node.kind())
        for inner in node.blocks():
            kinds |= _kinds(inner)
        for attr in node.attributeNames():
            if node.kindOf(attr) == "g":
                kinds |= _kinds(node.g(attr))
    return kinds
