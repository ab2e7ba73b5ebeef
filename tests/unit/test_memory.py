"""tasks/core/memory.py: freed heap memory goes back to the operating system when a step ends."""

from __future__ import annotations

import platform

import pytest

from tasks.core.memory import release_memory, resident_bytes


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc on Linux")
def test_release_memory_returns_freed_heap_pages():
    base = resident_bytes()
    # 400 MB in 100 kB blocks: below glibc's mmap threshold, so they live in the heap and stay resident when freed
    blocks = [bytearray(100_000) for _ in range(4000)]
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])  # touch every page
    held = resident_bytes()
    assert held - base > 300e6
    keep = blocks[-1]  # one live block at the top of the heap: a plain free cannot shrink it, a trim can
    del blocks
    assert release_memory() is True
    assert resident_bytes() - base < 100e6, (base, held, resident_bytes())
    assert keep[0] == 1
