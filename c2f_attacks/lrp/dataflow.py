"""What the engine learns from the forward pass itself, rather than from the module tree.

:class:`DeferredLinear` is a torch function mode active while the model runs under an
explanation. A linear layer's output is *pending* until some operation first uses it:

* ``batch_norm`` in eval mode with running statistics: the pair is folded (one rule with merged
  parameters, applied to the BatchNorm's output), whatever container holds the two modules
  (should the raw output be used again elsewhere, that use gets the layer's own rule);
* anything else (an activation, an addition, padding, the caller): the layer's own rule is
  applied first, and every later use of the raw tensor gets the ruled one.

Shape and dtype queries do not count as uses. A layer's weight used by a functional ``F.linear``
outside the layer's own forward (torchvision's Swin calls ``F.linear(x, self.qkv.weight, ...)``)
counts as a call of that layer, with the weight and bias of that call.

:class:`InputLayers` decides, from the autograd graph, which linear layers are *input layers*:
those whose input comes from the image (or the model's ``Normalize`` output) with no linear
layer in between, whatever else happens on the way (padding, channel repeats, functional
normalization).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import GetSetDescriptorType

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

_METADATA = {
    "shape", "ndim", "dtype", "device", "requires_grad", "is_cuda", "layout", "is_leaf",
    "grad_fn", "is_sparse", "is_quantized", "is_meta", "names", "_version", "output_nr",
    "is_nested", "itemsize", "nbytes", "size", "dim", "numel", "stride", "is_contiguous",
    "__len__", "is_floating_point", "is_complex", "element_size", "get_device", "data_ptr",
    "nelement", "ndimension", "storage_offset",
}  # fmt: skip
_BATCH_NORM_SIGNATURE = inspect.signature(F.batch_norm)
_LINEAR_SIGNATURE = inspect.Signature(
    [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("input", "weight")]
    + [inspect.Parameter("bias", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
)  # F.linear is a builtin without a signature
_CONTAINERS = (list, tuple, dict)  #: arguments that may hold tensors (``torch.cat``'s list)


def _is_metadata(func) -> bool:
    owner = getattr(func, "__self__", None)
    if isinstance(owner, GetSetDescriptorType):  # a property getter such as Tensor.shape
        return owner.__name__ in _METADATA
    return getattr(func, "__name__", None) in _METADATA


@dataclass
class Pending:
    """A linear layer's call whose rule waits for the first use of its output."""

    layer: nn.Module
    a: torch.Tensor  #: the layer's input
    z: torch.Tensor  #: its raw output
    weight: torch.Tensor  #: the weight and bias of the call (the layer's own, for a module call)
    bias: torch.Tensor | None
    #: ``op(input, weight, bias)`` of a functional call; None: the layer's own linear map
    op: Callable | None = None
    folded: bool = False  #: a BatchNorm used (and saved) ``z`` already


class DeferredLinear(TorchFunctionMode):
    """Defer each linear layer's rule to the first use of its output (see the module docstring).

    Args:
        finalize: ``finalize(pending) -> tensor``: the output with the layer's own rule.
        fold: ``fold(pending, bn_arguments, bn_output) -> tensor``: the BatchNorm's output with
            the rule of the folded pair; ``bn_arguments`` are ``F.batch_norm``'s bound arguments.
    """

    def __init__(
        self,
        finalize: Callable[[Pending], torch.Tensor],
        fold: Callable[[Pending, dict, torch.Tensor], torch.Tensor],
    ):
        super().__init__()
        self._finalize, self._fold = finalize, fold
        self.pending: dict[int, Pending] = {}
        self.replaced: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(raw) -> (raw, new)
        self.folds = 0  #: number of BatchNorms folded so far
        self._owners: dict[int, nn.Linear] = {}  # id(weight) -> its Linear layer
        self._running: set[nn.Module] = set()  # layers inside their own forward

    def watch(self, layer: nn.Linear) -> None:
        """Count functional uses of ``layer.weight`` as calls of ``layer``."""
        self._owners[id(layer.weight)] = layer

    def enter(self, layer: nn.Module) -> None:
        """``layer``'s own forward starts: its ``F.linear`` is the module call (hooked)."""
        self._running.add(layer)

    def leave(self, layer: nn.Module) -> None:
        self._running.discard(layer)

    def defer(
        self, layer: nn.Module, a: torch.Tensor, z: torch.Tensor, weight=None, bias=None, op=None
    ) -> None:
        if weight is None:
            weight, bias = layer.weight, layer.bias
        self.pending[id(z)] = Pending(layer, self.resolve(a), z, weight, bias, op)

    def resolve(self, t):
        """The ruled tensor for a raw linear output (finalizing it if still pending)."""
        if not isinstance(t, torch.Tensor):
            return t
        key = id(t)
        if key in self.pending:
            new = self._finalize(self.pending.pop(key))
            self.replaced[key] = (t, new)
            return new
        hit = self.replaced.get(key)
        return hit[1] if hit is not None and hit[0] is t else t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (self.pending or self.replaced) and not _is_metadata(func):
            if func is F.batch_norm and self.pending:
                folded = self._try_fold(args, kwargs)
                if folded is not None:
                    return folded
            if any(isinstance(v, _CONTAINERS) for v in (*args, *kwargs.values())):
                args, kwargs = tree_map(self.resolve, (args, kwargs))
            else:  # the common case, without the cost of a pytree walk
                args = tuple(self.resolve(v) for v in args)
                kwargs = {k: self.resolve(v) for k, v in kwargs.items()}
        if func is F.linear and self._owners:
            return self._functional_linear(args, kwargs)
        return func(*args, **kwargs)

    def _functional_linear(self, args, kwargs):
        bound = _LINEAR_SIGNATURE.bind(*args, **kwargs)
        a, weight, bias = (bound.arguments.get(k) for k in ("input", "weight", "bias"))
        z = F.linear(*args, **kwargs)
        layer = self._owners.get(id(weight))
        if layer is not None and layer.weight is weight and layer not in self._running:
            self.defer(layer, a, z, weight, bias, F.linear)
        return z

    def _try_fold(self, args, kwargs):
        bound = _BATCH_NORM_SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        bn = bound.arguments
        pending = self.pending.get(id(bn["input"]))
        if pending is None or bn["training"] or bn["running_mean"] is None:
            return None
        # it stays pending: a later use of the raw output (a skip path) gets the layer's own rule
        pending.folded = True
        self.folds += 1
        return self._fold(pending, bn, F.batch_norm(**bn))


class InputLayers:
    """Which tensors count as "the image" for the input rules.

    Roots are the explained input ``x`` and the output of every ``Normalize`` module applied to
    it. :meth:`root_of` returns the root a linear layer's input comes from when no linear layer
    lies in between (an input layer), else None. One walk over the autograd graph per pass
    (results are memoized per node).
    """

    def __init__(self, x: torch.Tensor):
        self.roots: list[tuple[torch.Tensor, nn.Module | None]] = [(x, None)]
        self._root_nodes: dict[object, int] = {}
        self._linear_nodes: set[object] = set()
        self._memo: dict[object, object] = {}
        self._keep: list[object] = []  # graph nodes we key on stay alive (ids stay unique)
        if x.grad_fn is not None:
            self._root_nodes[x.grad_fn] = 0

    def add_root(self, t: torch.Tensor, normalize: nn.Module) -> None:
        self.roots.append((t, normalize))
        if t.grad_fn is not None:
            self._root_nodes[t.grad_fn] = len(self.roots) - 1
            self._keep.append(t.grad_fn)

    def add_linear_output(self, z: torch.Tensor) -> None:
        if z.grad_fn is not None:
            self._linear_nodes.add(z.grad_fn)
            self._keep.append(z.grad_fn)

    def root_of(self, a: torch.Tensor) -> tuple[torch.Tensor, nn.Module | None] | None:
        for root in self.roots:
            if root[0] is a:
                return root
        index = self._walk(a.grad_fn)
        return self.roots[index] if isinstance(index, int) else None

    _BLOCKED = "blocked"

    def _walk(self, start) -> object:
        """Root index reached from ``start`` without passing a linear output; ``_BLOCKED`` if
        a linear output lies on some path; None if no root is reached."""
        if start is None:
            return None
        x = self.roots[0][0]
        stack = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if node in self._memo:
                continue
            if node in self._linear_nodes:
                self._memo[node] = self._BLOCKED
            elif node in self._root_nodes:
                self._memo[node] = self._root_nodes[node]
            elif getattr(node, "variable", None) is x:
                self._memo[node] = 0
            elif not expanded:
                stack.append((node, True))
                stack += [(n, False) for n, _ in node.next_functions if n is not None]
            else:
                found = [self._memo[n] for n, _ in node.next_functions if n is not None]
                if self._BLOCKED in found:
                    self._memo[node] = self._BLOCKED
                else:
                    self._memo[node] = next((f for f in found if f is not None), None)
        return self._memo[start]
