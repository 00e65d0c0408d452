"""Checkpointed layers' saved inputs held in pinned host memory, copied on a side stream and brought back one layer
ahead of the backward (the `_offload` checkpointing plans, peftbench/regional.py).

Why not `torch.autograd.graph.save_on_cpu(pin_memory=True)`, which the plans used before: its pack is a blocking
`copy_` on the compute stream, so every layer's forward waits for its input to reach the host, and its unpack copies
back on the compute stream when the recompute asks, so the GPU waits again. On one H200 (run 24, LoRA r16 on
Llama-2-7B, seq 2048 x 2) that cost 13% of `all`'s tokens/s for 0.9 GiB. Here both copies run on one side stream
and overlap the layers' compute:

- pack (forward): the side stream waits for the compute stream, copies the tensor into a pinned host buffer
  (non-blocking) and the GPU tensor is marked used on the side stream (`record_stream`), so the caching allocator
  hands its memory out again only after the copy, with no host synchronisation;
- unpack (backward, top layer first): the layer's copy back was issued when the layer above it was unpacked (or is
  issued now, for the first one); the compute stream waits for that copy's event only, then the copy back of the
  layer below is issued on the side stream, to run during this layer's recompute and backward.

A layer is one `Offloader.layer()` context (one checkpointed decoder layer's call): the tensors packed in it are one
group, and groups are linked to the one packed before (weakly, so a finished step's groups are freed with its graph).
Without CUDA (the CPU tests) the same bookkeeping runs with synchronous copies and no streams.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch


class _Group:
    """The saved inputs of one checkpointed layer call: host copies, and the GPU copies while they are brought back."""

    def __init__(self, previous: _Group | None) -> None:
        self.host: list[torch.Tensor] = []
        self.devices: list[torch.device] = []
        self.back: list[torch.Tensor] | None = None  # on the GPU again (prefetched), until each is handed out once
        self.handed: set[int] = set()
        self.event: Any = None  # the copy back's event (CUDA)
        self.previous = weakref.ref(previous) if previous is not None else None


class _Packed:
    __slots__ = ("group", "index")

    def __init__(self, group: _Group, index: int) -> None:
        self.group, self.index = group, index


class Offloader:
    """One per model (regional.apply makes it): `with offloader.layer(): checkpoint(...)` for each checkpointed
    layer. `stats` counts the tensors packed, and the layers whose copies back were prefetched (issued before the
    recompute asked) or fetched on demand (the first the backward reaches)."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.stream = torch.cuda.Stream() if self.cuda else None
        self._last: _Group | None = None
        self.stats = {"packed": 0, "prefetched": 0, "fetched_on_demand": 0}

    def layer(self) -> torch.autograd.graph.saved_tensors_hooks:
        group = _Group(self._last)
        self._last = group
        return torch.autograd.graph.saved_tensors_hooks(lambda t: self._pack(group, t), self._unpack)

    def _pack(self, group: _Group, tensor: torch.Tensor) -> Any:
        if tensor.device.type == "cpu" and self.cuda:  # nothing to offload (a CPU-side scalar or index)
            return tensor
        self.stats["packed"] += 1
        if self.cuda:
            host = torch.empty(tensor.size(), dtype=tensor.dtype, layout=tensor.layout, pin_memory=True)
            self.stream.wait_stream(torch.cuda.current_stream(tensor.device))
            with torch.cuda.stream(self.stream):
                host.copy_(tensor, non_blocking=True)
            tensor.record_stream(self.stream)
        else:
            host = tensor.detach().clone()  # no GPU: a copy stands for the host buffer (the tests' path)
        group.host.append(host)
        group.devices.append(tensor.device)
        return _Packed(group, len(group.host) - 1)

    def _bring_back(self, group: _Group) -> None:
        if group.back is not None or not group.host:
            return
        if self.cuda:
            with torch.cuda.stream(self.stream):
                group.back = [h.to(d, non_blocking=True) for h, d in zip(group.host, group.devices, strict=True)]
                group.event = torch.cuda.Event()
                group.event.record(self.stream)
        else:
            group.back = [h.to(d) for h, d in zip(group.host, group.devices, strict=True)]

    def _unpack(self, packed: Any) -> torch.Tensor:
        if not isinstance(packed, _Packed):
            return packed
        group = packed.group
        if not group.handed:  # the group's first tensor asked for: was its copy back issued ahead?
            self.stats["fetched_on_demand" if group.back is None else "prefetched"] += 1
        self._bring_back(group)
        out = group.back[packed.index]
        if self.cuda:
            compute = torch.cuda.current_stream(out.device)
            compute.wait_event(group.event)
            out.record_stream(compute)  # made on the side stream, used on the compute stream
        group.handed.add(packed.index)
        if len(group.handed) == len(group.host):
            group.back = None  # the recompute holds what it needs; a second unpack (retain_graph) fetches again
            group.handed = set()
        previous = group.previous() if group.previous is not None else None
        if previous is not None:
            self._bring_back(previous)  # the layer below, during this layer's recompute and backward
        return out
