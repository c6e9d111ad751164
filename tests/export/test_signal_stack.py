"""OpenVINO and the thread's alternate signal stack (st_oblique._compat hook 13).

OpenVINO's CPU plugin moves the calling thread onto signal stacks of its own; graphs freed out of order leave it on
unmapped memory, and the next signal (``SIGCHLD`` from a DataLoader worker) kills the process with SIGSEGV. Each
check runs in a fresh process: the broken state would otherwise outlive the test and crash a later one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino")

TWO_GRAPHS = """
import gc
from pathlib import Path

import numpy as np
import openvino
import openvino.opset13 as ops
import torch
from torch.utils.data import DataLoader

from st_oblique._compat import current_signal_stack
from st_oblique.modules.graph_runtimes import GraphInfo, OpenVINOGraph

folder = Path({folder!r})
parameter = ops.parameter([1, 2, 3], np.float32, name="x")
openvino.save_model(openvino.Model([ops.relu(parameter)], [parameter]), str(folder / "graph.xml"))
info = GraphInfo(path=folder / "graph.xml", input_names=["x"], input_dtypes={{"x": np.float32}}, output_shape=[1, 2, 3])

before = current_signal_stack()
first, second = OpenVINOGraph(info), OpenVINOGraph(info)
for graph in (first, second):
    assert graph.run({{"x": np.ones((1, 2, 3), np.float32)}}).shape == (1, 2, 3)
    assert current_signal_stack() == before, "an OpenVINO call left the thread on another signal stack"
del first  # freed in the order they were made: OpenVINO alone would leave the thread on the first's freed stack
gc.collect()
del second
gc.collect()
assert current_signal_stack() == before, (before, current_signal_stack())
for _ in range(3):  # workers exiting send SIGCHLD, handled on the thread's signal stack
    batches = DataLoader(list(range(8)), batch_size=2, num_workers=2, collate_fn=torch.tensor)
    assert sum(batch.sum().item() for batch in batches) == 28
print("ok")
"""

OPENVINO_ALONE = """
import numpy as np
import openvino
import openvino.opset13 as ops

from st_oblique._compat import current_signal_stack, kept_signal_stack

parameter = ops.parameter([2, 3], np.float32)
before = current_signal_stack()
with kept_signal_stack():
    compiled = openvino.Core().compile_model(openvino.Model([ops.relu(parameter)], [parameter]), "CPU")
    compiled(np.ones((2, 3), np.float32))
    during = current_signal_stack()
    del compiled
print("changed" if during != before else "kept")
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_openvino_graphs_freed_out_of_order_keep_the_threads_signal_stack(tmp_path):
    result = run_python(TWO_GRAPHS.format(folder=str(tmp_path)))
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), (
        f"exit {result.returncode} (-11 or 139: SIGSEGV)\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


def test_hook_13_openvino_still_moves_the_thread_to_its_own_signal_stack():
    """The canary of st_oblique._compat hook 13: when OpenVINO stops switching signal stacks, the guard can go."""
    result = run_python(OPENVINO_ALONE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "changed", (
        "OpenVINO no longer moves the calling thread onto a signal stack of its own (st_oblique._compat hook 13, "
        "kept_signal_stack): remove the guard from st_oblique/modules/graph_runtimes.py and export/quantization.py."
    )
