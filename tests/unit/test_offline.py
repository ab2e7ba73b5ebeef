"""Hub kernels stay off unless asked for: a GPU worker without network must not fetch kernels at the first
training step, and importing bitsandbytes on a CPU must not ask the Hub for one. Checked in fresh processes,
because the switches act when transformers, kernels and bitsandbytes are imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tasks.core.workspace import PROJECT_ROOT

PROBE = """
import json, os
import tasks.train.train  # what a training run imports first
before = {k: os.environ.get(k) for k in ("USE_HUB_KERNELS", "DISABLE_KERNEL_MAPPING")}
from transformers.integrations import hub_kernels
out = {"env": before, "transformers_hub_kernels": hub_kernels._kernels_enabled()}
try:
    from kernels._internals.layer import globals as kernel_globals
    out["kernel_mapping_disabled"] = kernel_globals._DISABLE_KERNEL_MAPPING
except ImportError:  # the kernels package is optional for transformers
    out["kernel_mapping_disabled"] = None
print(json.dumps(out))
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("USE_HUB_KERNELS", "DISABLE_KERNEL_MAPPING",
                                                              "RAGTUNE_HUB_KERNELS")}
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=PROJECT_ROOT,
                         env={**clean, **env}, timeout=300, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_hub_kernels_are_off_before_transformers_is_imported():
    out = probe()
    assert out["env"] == {"USE_HUB_KERNELS": "0", "DISABLE_KERNEL_MAPPING": "1"}
    assert out["transformers_hub_kernels"] is False
    assert out["kernel_mapping_disabled"] in (True, None)


def test_a_user_can_opt_in_and_their_own_setting_wins():
    assert probe(RAGTUNE_HUB_KERNELS="1")["transformers_hub_kernels"] is True
    assert probe(USE_HUB_KERNELS="yes")["env"]["USE_HUB_KERNELS"] == "yes"


NETWORK_PROBE = """
import json, socket, sys
tried = []
def refuse(*args, **kwargs):
    tried.append(repr(args[:2])[:120])
    raise OSError("no network in this test")
socket.getaddrinfo = refuse
socket.socket.connect = refuse
import tasks.train.train
import bitsandbytes  # its CPU backend asks the Hub for a kernel at import, on CPUs with AVX-512 BF16
from bitsandbytes.backends.cpu import ops
print(json.dumps({"tried": tried, "kernels_hidden": sys.modules.get("kernels", 0) is None}))
"""


def test_importing_bitsandbytes_asks_the_network_for_nothing():
    clean = {k: v for k, v in os.environ.items() if k not in ("USE_HUB_KERNELS", "DISABLE_KERNEL_MAPPING",
                                                              "RAGTUNE_HUB_KERNELS", "HF_HUB_OFFLINE")}
    res = subprocess.run([sys.executable, "-c", NETWORK_PROBE], capture_output=True, text=True, cwd=PROJECT_ROOT,
                         env=clean, timeout=300, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"tried": [], "kernels_hidden": True}, out
    assert "gemm_4bit_forward" not in res.stderr  # the fallback is silent


def test_bench_scripts_turn_hub_kernels_off_before_importing_the_ml_libraries():
    """A bench script runs as `python bench/x.py`: unless it imports `tasks` at module level, a function that
    imports peft or transformers first loads `kernels` with Hub kernels on (the rotary-kernel crash on an offline
    GPU worker, and a Hub request from bitsandbytes on CPU)."""
    import ast

    ml = {"peft", "transformers", "trl", "bitsandbytes", "datasets", "sentence_transformers"}

    def imported(nodes) -> set[str]:
        out = set()
        for n in nodes:
            if isinstance(n, ast.Import):
                out |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                out.add(n.module.split(".")[0])
        return out

    late = []
    for script in sorted((PROJECT_ROOT / "bench").glob("*.py")):
        tree = ast.parse(script.read_text())
        if imported(ast.walk(tree)) & ml and "tasks" not in imported(tree.body):
            late.append(script.name)
    assert late == []
