"""torch.distributed glue for runs launched with `torchrun` (never a home-made launcher).

A training loop stays one loop: every rank builds the same *global* batch from the same seed,
takes its slice with `shard`, and gradients are averaged over ranks. Because the data position
is counted in global batches, a run saved with N processes resumes with M (as long as M divides
the global batch). Only rank 0 writes metrics and checkpoints (`is_main`).

Two ways to spread a model (`runtime.parallel`):
- 'ddp': DistributedDataParallel, a full replica per process, gradients all-reduced;
- 'fsdp': FSDP2 (`fully_shard` on every transformer block (each element of a
  `ModuleList`), then the whole model): parameters,
  gradients and optimiser state sharded over the processes, for models that do not fit one
  device. Every forward pass is then collective, so every rank runs the same passes
  (validation and statistics on all ranks, generation without early stop), and checkpoints
  gather full tensors (`full_tensor`), so a state written under FSDP loads anywhere.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rlhf.runtime import pick_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device_name: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else single process.
    Backend: nccl on CUDA, gloo on CPU. Each rank uses GPU `LOCAL_RANK` when on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=pick_device(device_name))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def shard(items, info: DistInfo):
    """This rank's contiguous slice of a global batch (sizes must divide evenly)."""
    n = len(items)
    if n % info.world_size:
        raise ValueError(f"global batch of {n} does not divide over {info.world_size} processes")
    per = n // info.world_size
    return items[info.rank * per:(info.rank + 1) * per]


def wrap(model: torch.nn.Module, info: DistInfo, parallel: str = "ddp",
         trainable: bool = True) -> torch.nn.Module:
    """One process: the model itself. 'ddp': DistributedDataParallel (frozen models, with
    `trainable` False, stay plain replicas). 'fsdp': the model sharded in place by FSDP2, one
    unit per transformer block plus the root (the same object is returned)."""
    if not info.enabled:
        return model
    if parallel == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        blocks = [b for m in model.modules() if isinstance(m, torch.nn.ModuleList) for b in m]
        for block in blocks:  # the transformer blocks: every model keeps them in a ModuleList
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    if not trainable:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def is_sharded(model: torch.nn.Module) -> bool:
    """True for a model sharded by `wrap(..., "fsdp")`: its forward passes are collective."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP shard (collective: every rank calls it), else `t`."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def sharded_like(full: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """A full tensor laid out like `ref`: this rank's shard where `ref` is an FSDP DTensor
    (every rank holds `full`, so no communication), else `full` itself."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(ref, DTensor):
        return full
    return distribute_tensor(full.to(ref.device, ref.dtype), ref.device_mesh, ref.placements,
                             src_data_rank=None)


@contextlib.contextmanager
def no_grad_sync(model: torch.nn.Module, skip: bool):
    """Skip the gradient reduction of this backward (an accumulation micro-batch)."""
    if skip and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif skip and is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging metrics computed on each shard)."""
    if not info.enabled:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def all_gather_list(x: list, info: DistInfo) -> list:
    """Concatenate python lists from all ranks, in rank order."""
    if not info.enabled:
        return list(x)
    out: list = [None] * info.world_size
    dist.all_gather_object(out, x)
    return [v for part in out for v in part]


def from_main(obj, info: DistInfo):
    """Rank 0's value of `obj` on every rank (other ranks pass anything, e.g. None)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def finish(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
