"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N ...`` starts N processes and sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`init_from_env`
joins them into one process group (gloo on the CPU, nccl on CUDA, one GPU
per process: ``cuda:LOCAL_RANK``). Without those variables everything here
is a no-op and code runs as one process.

How a run with N processes relates to the one-process run (what "the same
result within tolerance" rests on):

* data: :func:`shard_loader` gives rank r the slice ``perm[r::N]`` of the
  permutation the one-process loader would draw (same generator, same
  seed), with batch size B/N, so the N batches of step t together are the
  one-process batch of step t (exactly, when the epoch length is a multiple
  of B; otherwise the tail is padded by wrapping, like
  ``DistributedSampler``, so all ranks take the same number of steps);
* gradients: DDP averages them across ranks, which equals the gradient of
  the mean loss over the whole batch for a loss that is a mean over
  samples (FBNet's CE · α · (log LAT)^β is: the latency factor is the same
  on every rank);
* random draws: every rank seeds the same, so the Gumbel-softmax noise of a
  step and a network's initial weights are the same on every rank, as in
  the one-process run; per-image augmentation is seeded by the image's
  index (nas_core.train.fit), so a rank augments its images as one process
  would;
* the latency table is measured once, on rank 0, and broadcast;
* evaluation: each rank scores its share of the set (:func:`rank_share`,
  no padding) with rank 0's BatchNorm statistics (:func:`sync_buffers`), and
  the sums are combined (:func:`sum_over_ranks`), so every rank reports the
  one-process numbers of the same weights;
* what differs: BatchNorm normalises training batches with per-rank
  statistics (SyncBatchNorm needs CUDA; on GPUs :func:`wrap_ddp` converts to
  it); per-sample random draws inside a network (P-DARTS's skip dropout)
  come from the same stream on every rank, so a rank's masks are not the
  ones the one-process run gives those images; and float sums are taken in
  another order. Hence "within tolerance", not bit-identical, on the CPU.

Weights and architecture parameters θ stay identical on all ranks: DDP
all-reduces their gradients and every rank applies the same optimiser step;
:func:`same_on_all_ranks` checks it. Only rank 0 (:func:`is_main`) writes
checkpoints, files and logs. Users: supernet pre-training (each one-shot
strategy's ``data_parallel()`` variant, built by ``create_strategy`` under
torchrun), and the training of child networks in the evaluate and retrain
stages (nas_core.train.fit).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, Subset

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when torchrun's variables say this is one of several processes."""
    return all(v in os.environ for v in TORCHRUN_VARS) and int(os.environ["WORLD_SIZE"]) > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or a plain single process): the one that writes outputs."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join torchrun's process group. Returns the device this rank trains
    on: ``cuda:LOCAL_RANK`` when ``device`` is CUDA (backend nccl), else
    ``device`` (backend gloo). Without torchrun's variables: ``device``."""
    if not launched_by_torchrun():
        return device
    device = rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def rank_device(device: torch.device) -> torch.device:
    """This rank's GPU ``cuda:LOCAL_RANK`` when ``device`` is CUDA and the
    process was started by torchrun (one GPU per process), else ``device``."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s value."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s (picklable) ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def same_on_all_ranks(tensor: torch.Tensor) -> bool:
    """True when every rank holds exactly this tensor (checked on all ranks)."""
    if not is_distributed():
        return True
    gathered = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(gathered, tensor.detach().contiguous())
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


class ShardedSampler(Sampler[int]):
    """Rank ``rank``'s share of a (shuffled) epoch: ``perm[rank::world]``
    where ``perm`` is what a one-process shuffled loader draws from the same
    ``generator`` (its ``RandomSampler``), padded by wrapping to
    a multiple of ``world``. Reseeding the generator (``loop.reseed``)
    fixes an epoch's order on every rank at once. Without a generator the
    order comes from the global torch RNG, as in the one-process loader;
    every rank seeds it the same."""

    def __init__(self, n: int, rank: int, world: int, generator: torch.Generator | None, shuffle: bool) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside 0..{world - 1}")
        self.n, self.rank, self.world, self.generator, self.shuffle = n, rank, world, generator, shuffle

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)

    def __iter__(self) -> Iterator[int]:
        # RandomSampler itself, run to its end: it draws from the generator
        # exactly as the one-process loader's sampler does (an epoch takes
        # more than one randperm), so later epochs stay in step too
        order = (torch.tensor(list(RandomSampler(range(self.n), generator=self.generator))) if self.shuffle
                 else torch.arange(self.n))
        total = len(self) * self.world
        padded = torch.cat([order, order[: total - self.n]]) if total > self.n else order
        return iter(padded[self.rank::self.world].tolist())


def shard_loader(loader: DataLoader, rank: int | None = None, world: int | None = None) -> DataLoader:
    """The per-rank loader for a one-process ``loader`` (built by
    ``loop.make_loader``): same dataset, batch size ``B / world`` (B must be
    divisible by the number of processes), rank's slice of each epoch. The
    returned loader shares ``loader``'s generator, so ``reseed`` works on
    either. Returns ``loader`` itself for one process."""
    rank = globals()["rank"]() if rank is None else rank
    world = world_size() if world is None else world
    if world == 1:
        return loader
    batch = loader.batch_size
    if batch is None or batch % world:
        raise ValueError(f"batch size {batch} cannot be split over {world} processes: "
                         f"use a multiple of {world}")
    shuffle = not isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    sampler = ShardedSampler(len(loader.dataset), rank, world, loader.generator, shuffle)
    return DataLoader(loader.dataset, batch_size=batch // world, sampler=sampler, num_workers=loader.num_workers,
                      drop_last=loader.drop_last, generator=loader.generator, persistent_workers=False)


class LossModule(nn.Module):
    """Puts a strategy's loss ``loss(model, x, y) -> (loss, logits)`` behind
    ``forward`` so DDP sees every parameter the loss touches (its hooks
    only fire for a forward through the DDP wrapper)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loss is None:
            raise RuntimeError("LossModule.loss is not set")
        return self.loss(self.model, x, y)


def wrap_ddp(module: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP around ``module`` (already on ``device``): rank 0's parameters
    and buffers are broadcast at construction and its buffers before every
    training forward; on CUDA BatchNorm becomes SyncBatchNorm (in place, the
    parameters stay the same objects) and each process drives its own GPU."""
    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics: each
    rank's last training forward updated its own copy)."""
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def average_over_ranks(tensors: list[Optional[torch.Tensor]]) -> list[Optional[torch.Tensor]]:
    """Each tensor averaged over the ranks, in one all-reduce (the tensors
    are flattened into one buffer); None entries stay None (every rank must
    pass Nones at the same places). For gradients DDP cannot reach, such as
    DARTS's unrolled architecture gradient."""
    present = [t for t in tensors if t is not None]
    if not is_distributed() or not present:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in present])
    dist.all_reduce(flat)
    flat /= world_size()
    out, offset = [], 0
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        out.append(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over the ranks (the ranks' shares of an epoch
    are equally long, so the mean of per-rank means is the epoch mean)."""
    return {k: v / world_size() for k, v in sum_over_ranks(values).items()}


def rank_share(dataset: Dataset) -> Dataset:
    """Rank r's items ``r, r + N, r + 2N, ...`` of ``dataset`` (no padding:
    for evaluation, where every item must count once)."""
    if not is_distributed():
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))  # type: ignore[arg-type]


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over the ranks (every rank gets the sums)."""
    if not is_distributed():
        return values
    keys = sorted(values)
    box = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(box)
    return dict(zip(keys, box.tolist()))


def quiet_progress(iterable: Any, desc: str | None = None, total: int | None = None) -> Any:
    """A progress hook that shows nothing (ranks other than 0)."""
    return iterable
