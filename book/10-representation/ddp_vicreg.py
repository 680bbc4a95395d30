"""One VICReg step of a small encoder under data parallelism (chapter 10).

Run on two CPU processes (gloo) or on GPUs (nccl), e.g.::

    torchrun --standalone --nproc_per_node=2 ddp_vicreg.py result.pt

Every rank builds the same encoder and the same global batch of two augmented views, keeps
its own slice of rows, and takes one SGD step under ``DistributedDataParallel``. Rank 0
saves the updated parameters for the loss computed on the full batch (``group``) and, for
comparison, for the loss computed on each rank's rows alone.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from regref.representation import vicreg_loss


def make_encoder(seed=0, p_in=64, hidden=64, p=16):
    """A two-layer MLP in float64, the same on every rank."""
    torch.manual_seed(seed)
    f64 = torch.float64  # explicit, so the draws do not depend on the default dtype
    return torch.nn.Sequential(torch.nn.Linear(p_in, hidden, dtype=f64), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, p, dtype=f64))


def make_views(seed=1, n=64, p_in=64):
    """A global batch and two noisy, masked views of it (the same on every rank)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, p_in, generator=g, dtype=torch.float64)
    views = [x * (torch.rand(x.shape, generator=g, dtype=torch.float64) > 0.25)
             + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)
             for _ in range(2)]
    return views[0], views[1]


def ddp_step(full_batch_loss: bool, lr=0.1):
    """One SGD step on this rank's rows; returns the updated parameters."""
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{rank}" if torch.cuda.is_available() else "cpu")
    model = DistributedDataParallel(make_encoder().to(device))
    x1, x2 = make_views()
    rows = slice(rank * len(x1) // world, (rank + 1) * len(x1) // world)
    z = model(torch.cat([x1[rows], x2[rows]]).to(device))  # one forward for both views
    z1, z2 = z.chunk(2)
    group = dist.group.WORLD if full_batch_loss else None
    loss = vicreg_loss(z1, z2, group=group)
    loss.backward()  # DDP all-reduces and averages the parameter gradients
    with torch.no_grad():
        for param in model.parameters():
            param -= lr * param.grad
    return [param.detach().cpu() for param in model.module.parameters()], loss.detach()


def main(out):
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(dist.get_rank())
    full, loss_full = ddp_step(full_batch_loss=True)
    local, loss_local = ddp_step(full_batch_loss=False)
    if dist.get_rank() == 0:
        torch.save({"full": full, "local": local, "loss_full": loss_full,
                    "loss_rank0": loss_local, "world": dist.get_world_size()}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
