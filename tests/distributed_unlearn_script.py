"""Run by tests/test_distributed.py under torchrun: PSG unlearning on 2 processes (gloo), rank 0 saves the weights."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from monai_unlearn import PSGConfig, unlearn
from monai_unlearn.distributed import finish_distributed
from monai_unlearn.metrics import collect_outputs

CONFIG = PSGConfig(eps=0.3, num_steps=2, lam=0.1, phi=1.0)
PER_RANK_BATCH = 4


def data():
    torch.manual_seed(0)
    x, y = torch.rand(48, 1, 4, 4), torch.randint(0, 3, (48,))
    return TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:])


def model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    forget, remain = data()
    loaders = [DataLoader(d, PER_RANK_BATCH, sampler=DistributedSampler(d, shuffle=False)) for d in (forget, remain)]
    # fixed passes: the same as the default here (the calibrated stop gives way to them under torch.distributed)
    revised, result = unlearn(model(), *loaders, config=CONFIG, epochs=3, lr=0.05, evaluate=False, progress=False,
                              regime="fixed")
    # evaluation on a shuffled, padded shard of an odd-sized set: every rank gets all outputs in dataset order
    odd = TensorDataset(*remain[:31])
    sampler = DistributedSampler(odd, shuffle=True, seed=3)
    sampler.set_epoch(1)
    logits, labels = collect_outputs(revised, DataLoader(odd, 5, sampler=sampler))
    if dist.get_rank() == 0:
        torch.save({"state": revised.state_dict(), "history": result.history, "logits": logits, "labels": labels}, out)
    # every rank waits for rank 0's save before the group is torn down (gloo aborts a rank whose peer closed first)
    finish_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
    # leave without interpreter finalisation: gloo's worker threads can still hold tensors then, and releasing them
    # while Python shuts down aborts the process now and then ("terminate called without an active exception",
    # pytorch/pytorch#179291) after all the work is done and saved; the test checks the saved results
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
