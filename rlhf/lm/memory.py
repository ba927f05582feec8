"""Memory savers for training a bigger model on the same memory: gradient checkpointing and
weights kept in bf16. Every training stage's `model` section carries the two settings
(`MemoryConfig`); gradient accumulation is each stage's own (`train.micro_batch_size`,
the policy stage's `algo.accumulation_steps`). Measured: benchmarks/memory.py,
docs/your-model.md ("How do I fit a bigger model in memory").

- Gradient checkpointing (Chen et al. 2016, "Training deep nets with sublinear memory
  cost"): the forward pass keeps only each transformer block's input; the tensors a block's
  backward needs are recomputed from it during the backward pass (`torch.utils.checkpoint`,
  non-reentrant: the same random numbers, so dropout masks, and the same autocast state).
  The gradients are those of the plain pass; the price is one more forward pass per block.
  It applies where gradients are taken (training mode, grad enabled, no KV cache).
- bf16 weights: every *frozen* parameter (requires_grad false: a reference model, a frozen
  reward backbone, a LoRA base) is cast to bfloat16 and kept so, half its memory; a
  frozen model then computes in bf16. What trains stays fp32 (weights, gradients and AdamW's
  moments): bf16 keeps 8 significant bits, so an update below about 2^-9 of a weight would
  round away. A reference in bf16 is a rounded copy of an fp32 policy: their KL at step 0 is
  small but not 0 (a LoRA policy sharing its bf16 base with the reference starts at 0).
- Freed memory given back (`return_freed_memory`, with gradient checkpointing on): glibc's
  malloc keeps freed tensors of up to 32 MiB in its heap once its dynamic mmap threshold has
  risen, so a training step's short-lived tensors pile up in the resident size. Giving them
  back costs a page fault per fresh page, so time, as the recomputation does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from rlhf.lm.encoders.model import Encoder
from rlhf.lm.hf_backend import HFBackend
from rlhf.lm.model import Transformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class MemoryConfig:
    """The memory settings of a stage's model section (docs/your-model.md)."""

    gradient_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass instead of keeping
    them (causal models and encoders): less memory for about one more forward pass of time.
    The gradients equal those without it. With it on, freed tensors' memory also goes back to
    the system at once (glibc; costs page faults)."""
    dtype: Literal["fp32", "bf16"] = "fp32"
    """'bf16': the frozen weights (the reference model, a frozen reward backbone, a LoRA base)
    are kept in bfloat16, half their memory, and run in bf16; what trains stays fp32
    (weights, gradients, optimiser state). Distinct from runtime.precision, which autocasts
    the computation and keeps every weight as loaded."""


def set_checkpointing(model: nn.Module, on: bool) -> int:
    """Per-block gradient checkpointing on or off in every causal model and encoder inside
    `model` (a reward model's backbone, a wrapped model); returns how many were switched."""
    n = 0
    for m in model.modules():
        if isinstance(m, (Transformer, Encoder)):
            m.checkpointing = on
            n += 1
        elif isinstance(m, HFBackend):  # a transformers model (backend "transformers")
            if on:
                m.hf.gradient_checkpointing_enable({"use_reentrant": False})
            else:
                m.hf.gradient_checkpointing_disable()
            n += 1
    return n


def keep_frozen_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast every frozen floating-point parameter of `model` (requires_grad false) to `dtype`,
    in place; trainable parameters and buffers keep theirs. Tied parameters stay tied (one
    Parameter object). Returns `model`."""
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 128 * 1024
"""Bytes from which glibc serves an allocation with pages of its own, unmapped (given back to
the system) when freed: glibc's initial value, fixed. Left alone, glibc raises the threshold to
the size of each mapped block freed, up to 32 MiB, and from then on keeps freed tensors below
it in its heap, where fragmentation holds them resident. Measured (benchmarks/memory.py's
policy step, LoRA + checkpointing + bf16, 4 steps, 1 thread): peak 1,426 MiB and 9.4 s/step
left dynamic; 826 MiB and 15.3 s fixed at 128 KiB; 1,265 MiB and 10.3 s at 4 MiB. The tensors
saved for backward are 187 MiB of it."""


def return_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc malloc's mmap threshold at `threshold` bytes for this process, so the memory
    of a freed tensor above it goes back to the system at once (see MMAP_THRESHOLD). Changes
    no result, only where the memory lives. Returns False where the C library is not glibc
    (nothing is done)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError outside glibc)
    except (OSError, AttributeError, TypeError):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))


def apply_memory(model: nn.Module, cfg: MemoryConfig) -> nn.Module:
    """The savers `cfg` asks for, on a model a stage is about to train or hold frozen. Call it
    after the stage has frozen what it freezes (a reference, a probe's backbone, a LoRA
    base): under dtype=bf16 those parameters are cast; checkpointing is switched as set, and
    with it on, freed tensors' memory is given back to the system from then on, for the whole
    process (`return_freed_memory`: memory bought with time, as the recomputation is)."""
    if cfg.gradient_checkpointing:
        return_freed_memory()
    set_checkpointing(model, cfg.gradient_checkpointing)
    if cfg.dtype != "fp32":
        keep_frozen_in(model, DTYPES[cfg.dtype])
    return model


def weight_bytes(model: nn.Module, trainable: bool | None = None) -> int:
    """Bytes of `model`'s parameters (each shared tensor once); `trainable` True / False:
    only those that do / do not require grad."""
    return sum(p.numel() * p.element_size() for p in model.parameters()
               if trainable is None or p.requires_grad == trainable)
