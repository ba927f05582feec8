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
import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rlhf.harness.runtime import pick_device


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
        _joined[0] = True
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


_joined = [False]  # whether this process ever joined a process group (`exit_process`)


def joined() -> bool:
    """This process joined a process group (a torchrun rank), even one since left."""
    return _joined[0]


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


def finish(ok: bool = True) -> None:
    """Leave the process group: every rank, once, at the end of a command (`rlhf.cli.main`,
    in a `finally`); nothing in a single process or once left. `ok` (the command returned):
    a barrier first, so no rank tears down while another still sends (rank 0 writing the
    loop's report while rank 1 is done); after an error, none (the other ranks may wait in
    another collective: the barrier would hang until the timeout; torchrun stops them once
    this rank exits non-zero)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if ok and dist.get_world_size() > 1:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def exit_process(code) -> None:
    """End the process with `code` (as `sys.exit`). A process that joined a process group
    (`joined`, after `finish`) ends without Python's finalization: `os._exit` once stdout,
    stderr and logging are flushed (every file of a run is written and closed by then, and
    the run-folder locks are released by their `finally`).

    Why: gloo's worker threads (torch 2.x `ProcessGroupGloo`) outlive `destroy_process_group`:
    `shutdown`/`abort` leave them running, and they stop only when the C++ group is destroyed,
    which torch's own references (DDP's, 10 of them after the DDP module is freed) delay to
    interpreter exit. A worker that is still releasing the last collective's work (a barrier
    holding an all_gather_object's tensors, owned by Python objects) then needs the GIL while
    the interpreter finalises; CPython ends such a thread with pthread_exit inside a noexcept
    C++ frame: std::terminate, "terminate called without an active exception", SIGABRT after
    a finished run (core dump: ProcessGroupGloo::runLoop -> ~AsyncBarrierWork ->
    ~AsyncAllgatherWork -> decref -> take_gil -> PyThread_exit_thread). Measured with two gloo
    ranks: 4 of 50 runs aborted with a barrier and destroy_process_group before a normal exit,
    0 of 50 with this exit; `torchrun -m rlhf loop`: 1 run in 30 aborted before."""
    if not joined():
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # as sys.exit: a message, status 1
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
