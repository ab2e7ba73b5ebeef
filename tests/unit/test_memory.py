"""tasks/core/memory.py: freed heap memory goes back to the operating system when a step ends."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

# Runs in a fresh interpreter: inside the test session the heap already holds gigabytes that earlier tests freed,
# so new blocks reuse pages that are resident already and the measurement says nothing.
_PROBE = """
import json
import os
from tasks.core.memory import release_memory, resident_bytes
base = resident_bytes()
# 400 MB in 100 kB blocks: below glibc's mmap threshold, so they live in the heap and stay resident when freed
blocks = [bytearray(100_000) for _ in range(4000)]
for b in blocks:
    b[::4096] = b"\\x01" * len(b[::4096])  # touch every page
held = resident_bytes()
keep = blocks[-1]  # one live block at the top of the heap: a plain free cannot shrink it, a trim can
del blocks
import gc; gc.collect()
freed = resident_bytes()
trimmed = release_memory()
print(json.dumps({"base": base, "held": held, "freed": freed, "after": resident_bytes(), "trimmed": trimmed,
                  "kept": keep[0]}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc on Linux")
def test_release_memory_returns_freed_heap_pages():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=300)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["held"] - m["base"] > 300e6, m
    assert m["freed"] - m["base"] > 300e6, m  # a plain free keeps the pages: the trim is what hands them back
    assert m["trimmed"] is True
    assert m["after"] - m["base"] < 100e6, m
    assert m["kept"] == 1


_BIG_BLOCKS = """
import gc, json, sys
from tasks.core.memory import resident_bytes, return_big_blocks
fixed = return_big_blocks() if sys.argv[1] == "on" else False
first = bytearray(8 << 20)
del first  # freeing a mapped block raises glibc's sliding threshold past it: later ones come from the heap
base = resident_bytes()
blocks, pins = [], []
for _ in range(40):  # 320 MB of 8 MB blocks, each followed by a small live block so they cannot coalesce
    b = bytearray(8 << 20)
    b[::4096] = b"\\x01" * len(b[::4096])
    blocks.append(b)
    pins.append(bytearray(64))
del blocks
gc.collect()
print(json.dumps({"fixed": fixed, "kept": resident_bytes() - base}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc on Linux")
def test_big_blocks_go_back_to_the_os_as_soon_as_they_are_freed():
    def kept(mode: str) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
        out = subprocess.run([sys.executable, "-c", _BIG_BLOCKS, mode], capture_output=True, text=True, check=True,
                             timeout=300, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    sliding, fixed = kept("off"), kept("on")
    assert sliding["kept"] > 250e6, sliding  # glibc's default keeps the freed 8 MB blocks in its heap
    assert fixed["fixed"] is True
    assert fixed["kept"] < 50e6, fixed
