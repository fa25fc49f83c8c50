"""Two processes (torchrun + accelerate on CPU, gloo) give the same per-token advantages as one.

`accelerate launch --cpu --num_processes 2` wants mpirun for several CPU processes, which
these machines lack; torchrun sets the same WORLD_SIZE/RANK environment, and accelerate's
state (ACCELERATE_USE_CPU=1) then picks MULTI_CPU with the gloo backend.

Each process holds half of every group, so this checks that advantages are computed on
the gathered rewards and that each process applies its own slice of them.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent / "mp_advantages.py"
REPO = SCRIPT.parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Infrastructure failures of a local gloo rendezvous (a port taken between picking and binding
# it, a slow start on a loaded machine); only these are retried, with a fresh port.
_RENDEZVOUS_ERRORS = ("Address already in use", "EADDRINUSE", "DistNetworkError", "timed out")


def _run(cmd, out: Path, attempts: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "FGRPO_TEST_OUT": str(out),
           "ACCELERATE_USE_CPU": "1"}
    for attempt in range(attempts):
        result = subprocess.run(cmd(), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode == 0 or not any(e in result.stderr for e in _RENDEZVOUS_ERRORS):
            break
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def _load(out: Path, n: int):
    parts = [torch.load(out / f"rank{r}.pt") for r in range(n)]
    assert all(p["num_processes"] == n for p in parts)
    return parts


def test_two_processes_give_the_same_advantages_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _run(lambda: [sys.executable, str(SCRIPT), str(one), "8"], one)
    _run(lambda: [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                  "--master_port", str(_free_port()), str(SCRIPT), str(two), "4"], two, attempts=3)

    (single,) = _load(one, 1)
    rank0, rank1 = _load(two, 2)
    # Per generation batch the global order is rank 0's rows, then rank 1's (TRL's process slice).
    merged = []
    for b in range(2):
        merged += rank0["rows"][4 * b: 4 * b + 4] + rank1["rows"][4 * b: 4 * b + 4]
    assert len(merged) == len(single["rows"]) == 16
    for got, want in zip(merged, single["rows"]):
        assert (got["prompt"], got["ids"]) == (want["prompt"], want["ids"])
        assert got["advantages"] == want["advantages"]
    assert any(a != 0 for row in single["rows"] for a in row["advantages"])
    # Globally reduced metrics agree too, and both ranks log the same values.
    for key, values in single["metrics"].items():
        assert rank0["metrics"][key] == rank1["metrics"][key]
        torch.testing.assert_close(torch.tensor(rank0["metrics"][key]), torch.tensor(values))
