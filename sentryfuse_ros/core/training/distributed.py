"""Data-parallel training with PyTorch DDP (gloo on CPU, NCCL on CUDA), as launched by ``torchrun``.

What the train loop needs from it (``core/training/train.py`` takes an optional :class:`DistContext`):

- the model's forward runs through ``DistributedDataParallel``, which averages the backbone's
  gradients across ranks during backward (so the clipped step is identical on every rank);
- the SentryGate table's gradients are averaged too (they come only from the alignment loss, which
  is already identical on every rank; averaging keeps it so by construction);
- the saliency teacher's EMA is fed the saliency of the *global* batch: the gate probes' gradients
  are all-reduced before the saliency is read, so every rank folds the same value into the same EMA
  and the teacher (and the gate it calibrates) never diverges across ranks;
- only rank 0 writes files and logs.

Each rank sees its own shard of every batch (``core/training/bagsource.py``); all ranks draw the same
live modality set and pruning decision, from the same seed, every step.
"""
import dataclasses
from typing import List, Sequence, Tuple

import torch
import torch.distributed as dist

from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.pruning.gate import read_saliency


@dataclasses.dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run (one process per device)."""
    rank: int           # global rank, 0 writes files and logs
    world_size: int     # processes in the run
    local_rank: int     # rank on this node (selects the CUDA device)
    backend: str        # 'gloo' (CPU) | 'nccl' (CUDA)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` under DDP; unused parameters allowed (an absent modality's tokenizer gets no gradient)."""
        from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415
        device_ids = [self.local_rank] if self.backend == 'nccl' else None
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

    def average_grads(self, module: torch.nn.Module) -> None:
        """Average the gradients of ``module``'s parameters across ranks (one flat all-reduce)."""
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]) / self.world_size
        dist.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def global_saliency(self, gates: Sequence[Tuple[torch.Tensor, torch.Tensor]], *, kind: str,
                        skipped_blocks_zero: bool = True) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """The saliency of the global batch, the same on every rank (what one process would read).

        Shared gates (G,): their gradients are averaged first (d mean-loss / dg of the global batch).
        Per-sample gates (B, G): each rank's per-sample gradients are scaled by 1/world (the global mean
        loss), read, then summed (fisher) or averaged (taylor) across ranks.
        """
        per_sample = any(g.dim() == 2 for pair in gates for g in pair)
        probes = []
        for pair in gates:
            probes.append(tuple(_probe(g) for g in pair))
        grads = [p.grad for pair in probes for p in pair if p.grad is not None]
        if per_sample:
            for g in grads:
                g.div_(self.world_size)
            sal = read_saliency(probes, kind=kind, skipped_blocks_zero=skipped_blocks_zero)
            flat = torch.cat([s.reshape(-1) for pair in sal for s in pair])
            dist.all_reduce(flat)
            if kind != 'fisher':
                flat /= self.world_size
        else:
            flat = torch.cat([g.reshape(-1) for g in grads]) if grads else torch.zeros(0)
            # a block skipped on this rank is skipped on all (same live set), so the layouts match
            flat = flat / self.world_size
            dist.all_reduce(flat)
            for g, part in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(part.view_as(g))
            return read_saliency(probes, kind=kind, skipped_blocks_zero=skipped_blocks_zero)
        out, k = [], 0
        for a, f in sal:
            out.append((flat[k:k + a.numel()].view_as(a), flat[k + a.numel():k + a.numel() + f.numel()].view_as(f)))
            k += a.numel() + f.numel()
        return out

    def barrier(self) -> None:
        dist.barrier()


def _probe(g: torch.Tensor) -> torch.Tensor:
    """A detached stand-in for a gate with a copy of its gradient (the original is left untouched)."""
    p = g.detach().clone()
    if g.grad is not None:
        p.grad = g.grad.detach().clone()
    return p


def init_distributed(rank: int, world_size: int, local_rank: int, device: str) -> DistContext:
    """Join the process group ``torchrun`` set up (rendezvous from its MASTER_ADDR/MASTER_PORT).

    Args:
        rank, world_size, local_rank: as torchrun gives them (RANK, WORLD_SIZE, LOCAL_RANK).
        device: 'cpu' (gloo) or 'cuda' (NCCL, one GPU per process: cuda:local_rank).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f'rank={rank}, world_size={world_size}: expected 0 <= rank < world_size')
    kind = torch.device(device).type
    if kind not in ('cpu', 'cuda'):
        raise ConfigError(f'--device={device!r}: distributed training runs on cpu (gloo) or cuda (nccl)')
    backend = 'nccl' if kind == 'cuda' else 'gloo'
    if kind == 'cuda':
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method='env://', rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def shutdown() -> None:
    """Leave the process group (no-op outside a distributed run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


class LocalContext:
    """The single-process stand-in for :class:`DistContext`: the same calls, no communication."""
    rank, world_size, is_main = 0, 1, True

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def average_grads(self, module: torch.nn.Module) -> None:
        """Nothing to average over one process."""

    def global_saliency(self, gates: Sequence[Tuple[torch.Tensor, torch.Tensor]], *, kind: str,
                        skipped_blocks_zero: bool = True) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        return read_saliency(gates, kind=kind, skipped_blocks_zero=skipped_blocks_zero)

    def barrier(self) -> None:
        """Nothing to wait for."""
