"""The peak memory a run records is its own, not the process that started it."""

import subprocess
import sys

import psutil

CHILD = (
    "import torch; from loraplex.trainer.monitor import peak_memory_bytes; "
    "print(peak_memory_bytes(torch.device('cpu')))"
)


def test_a_trainer_started_by_a_big_process_records_its_own_peak():
    # Linux keeps ru_maxrss across fork and exec: a child of a 1.5 GB parent read
    # 1.5 GB at start. The fresh-clone test run showed it (1.86 GB for a 0.55 GB run).
    ballast = bytearray(1024 * 2**20)
    ballast[::4096] = b"\1" * len(ballast[::4096])  # touch every page: really resident
    parent = psutil.Process().memory_info().rss
    child = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
    )
    peak = int(child.stdout.split()[-1])
    assert peak < parent - 512 * 2**20, (peak, parent)
    del ballast
