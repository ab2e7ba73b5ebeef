"""tasks/core/memory.py: freed heap memory goes back to the operating system when a step ends."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# Runs in a fresh interpreter: inside the test session the heap already holds gigabytes that earlier tests freed,
# so new blocks reuse pages that are resident already and the measurement says nothing.
_PROBE = """
import json
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
