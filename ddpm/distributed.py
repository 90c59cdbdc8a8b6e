"""Training on several processes with torchrun: PyTorch's DistributedDataParallel, one process per device.

    torchrun --nproc_per_node=N -m ddpm train ...                         N processes on this machine
    torchrun --nnodes=M --nproc_per_node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT -m ddpm train ...

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each process's environment; `setup` joins the process group
(gloo on CPU, nccl on CUDA). Every rank holds the whole model; DistributedDataParallel averages the gradients
in backward, so the weights stay identical on all ranks (`check_replicas` verifies it). Logging, EMA and
checkpoints happen on rank 0 only.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self):
        return self.rank == 0


def shard():
    """(rank, world size) of this process: (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup(device):
    """Join torchrun's process group when WORLD_SIZE > 1, on `device` (for CUDA: cuda:LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(device=device)
    if not dist.is_available():
        raise RuntimeError("this build of torch has no torch.distributed; train on one process")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"process {local} of this machine has no GPU: it has {torch.cuda.device_count()}; "
                             f"start at most that many processes per machine (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"--device {device}: several processes train on cpu (gloo) or cuda (nccl)")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(rank, world, device)


def teardown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_replicas(module):
    """Raise unless every rank holds exactly the weights of rank 0 (a per-tensor float64 sum, gathered)."""
    rank, world = shard()
    if world == 1:
        return
    mine = torch.stack([p.detach().double().sum() for p in module.state_dict().values()])
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    differ = [r for r in range(world) if not torch.equal(every[r], every[0])]
    if differ:
        raise RuntimeError(f"the weights of rank(s) {differ} differ from rank 0's: the replicas drifted apart")
