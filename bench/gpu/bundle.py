"""Prepare an offline GPU worker from a checkout: `python -m bench.gpu.bundle` writes `.gpu/` (git-ignored), which
travels with the code to a CUDA machine that has PyTorch, PEFT and accelerate but no package index, and prints
the one command that runs `bench/gpu_check.py` there.

`.gpu/` holds:
- `site.txz`: the packages such an image lacks (`bench/gpu/bundle-requirements.txt`, pinned), downloaded as wheels
  for the worker's Python and extracted into one xz archive; bitsandbytes keeps only its CUDA 13 and CPU libraries
  (the whole wheel is 42 MB of a 64 MiB budget). `--extra` adds requirements (e.g. the embedding-model wheel and
  qdrant for `gpu_check.py --workload rag`, if they fit).
- `smol/`: the default model's config and tokenizer, from the converted base model in the workspace (run the demo
  once). The weights (98 MB) cannot travel: `make_models.py` builds random-initialised models of the same
  architectures on the worker, since throughput and memory do not depend on weight values (loss and answers do:
  do not report those).
- `sft/`: the workspace's latest SFT dataset when it holds retrieved passages (the demo's): `gpu_check.py
  --workload rag --sft-dataset .gpu/sft` trains on what `ragtune train` feeds the model without embedding
  anything on the worker (the embedding model cannot travel).
- `preflight.py`, `make_models.py`, `gpupatch.py` (copied from this folder): versions and a 4-bit layer on the
  GPU; the random-initialised models; a pytest plugin that resolves the packaged default model to the
  random-initialised one.

    python -m bench.gpu.bundle [--out .gpu] [--python-version 3.12] [--extra REQ ...] [--limit-mib 60]

Needs a package index (or pip's configured local one) on this machine, and `.ragtune/models/base/...` from a demo.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from bench.gpu import ROOT
from tasks.core.offline import SWITCHES

HERE = Path(__file__).resolve().parent
HELPERS = ("preflight.py", "make_models.py", "gpupatch.py")
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "any")
KEEP_CUDA = ("cuda130", "cuda132", "cpu")  # bitsandbytes libraries kept: the worker image's CUDA 13, and CPU


def keep_member(wheel: str, member: str, keep_cuda: tuple[str, ...] = KEEP_CUDA) -> bool:
    """Whether a file of a wheel goes into the site archive: not byte code, and of bitsandbytes' native libraries
    only those built for `keep_cuda`."""
    if "__pycache__/" in member or member.endswith((".pyc", "/")):
        return False
    if wheel.lower().startswith("bitsandbytes") and member.endswith(".so"):
        return any(tag in member for tag in keep_cuda)
    return True


def pack_site(wheels: list[Path], keep_cuda: tuple[str, ...] = KEEP_CUDA) -> bytes:
    """The kept files of `wheels` as one xz-compressed tar, laid out as a site-packages folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
        for wheel in sorted(wheels):
            with zipfile.ZipFile(wheel) as z:
                for info in z.infolist():
                    if not keep_member(wheel.name, info.filename, keep_cuda):
                        continue
                    entry = tarfile.TarInfo(info.filename)
                    entry.size, entry.mode = info.file_size, 0o755 if info.filename.endswith(".so") else 0o644
                    tar.addfile(entry, z.open(info))
    return buf.getvalue()


SFT_FILES = ("train.jsonl", "validation.jsonl", "meta.json")


def device_command(results: str = "RESULTS", budget_s: int = 470, rag: bool = False) -> str:
    """The one command to run from the checkout's root on the CUDA machine (`.gpu` next to the code); `rag`: train
    on the bundled SFT dataset with retrieved passages (`.gpu/sft`)."""
    workload = "--workload rag --sft-dataset .gpu/sft " if rag else ""
    return ("export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/.gpu PYTEST_ADDOPTS='-p gpupatch' "
            f"HF_HUB_OFFLINE=1 {' '.join(f'{k}={v}' for k, v in SWITCHES.items())} "
            "GPU_BASE_135=/tmp/gc/ws/models/base/SmolLM2-135M-Instruct; "
            "mkdir -p /tmp/site && tar xJf .gpu/site.txz -C /tmp/site || exit 3; "
            "python3 .gpu/preflight.py && python3 .gpu/make_models.py .gpu/smol && "
            f"timeout {budget_s + 20} python3 bench/gpu_check.py --work-dir /tmp/gc --model-dir /tmp/models "
            f"{workload}--budget-s {budget_s} --out {results}/gpu-check.json")


def download(requirements: list[str], dest: Path, python_version: str) -> list[Path]:
    """Wheels for the worker's Python and platform, without dependencies (the list is complete and pinned)."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps", "--python-version",
           python_version, "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run([*cmd, *requirements], check=True)
    return sorted(dest.glob("*.whl"))


def requirement_lines(path: Path) -> list[str]:
    return [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines() if ln.split("#", 1)[0].strip()]


def find_base_model(workspace: Path) -> Path:
    d = workspace / "models" / "base" / "SmolLM2-135M-Instruct"
    if not (d / "config.json").is_file():
        raise SystemExit(f"no converted base model under {workspace}: run `make demo` (or `ragtune train`) once")
    return d


def find_rag_sft_dataset(workspace: Path) -> Path | None:
    """The workspace's latest SFT dataset when it was built with retrieved passages (the demo's), else None."""
    import json

    base = workspace / "datasets" / "sft"
    pointer = base / "latest"
    if not pointer.is_file():
        return None
    d = base / pointer.read_text().strip()
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return d if meta.get("config", {}).get("rag_context") and (d / "train.jsonl").is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu")
    ap.add_argument("--workspace", type=Path, default=ROOT / ".ragtune", help="where the demo converted the model")
    ap.add_argument("--requirements", type=Path, default=HERE / "bundle-requirements.txt")
    ap.add_argument("--extra", action="append", default=[], help="another requirement to bundle (repeatable)")
    ap.add_argument("--python-version", default="3.12", help="the worker's Python (default %(default)s)")
    ap.add_argument("--limit-mib", type=float, default=60.0, help="fail above this size: the code travels too")
    args = ap.parse_args()

    base = find_base_model(args.workspace)
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "smol").mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="ragtune-gpu-bundle-") as tmp:
        wheels = download([*requirement_lines(args.requirements), *args.extra], Path(tmp), args.python_version)
        (args.out / "site.txz").write_bytes(pack_site(wheels))
    for name in MODEL_FILES:
        if (base / name).is_file():
            shutil.copy(base / name, args.out / "smol" / name)
    for name in HELPERS:
        shutil.copy(HERE / name, args.out / name)
    sft = find_rag_sft_dataset(args.workspace)
    if sft is not None:  # the rag workload's examples, so the worker trains on them without embedding anything
        (args.out / "sft").mkdir()
        for name in SFT_FILES:
            shutil.copy(sft / name, args.out / "sft" / name)
    else:
        print(f"no SFT dataset with retrieved passages under {args.workspace}: the worker measures the closed "
              "workload (run `make demo` first for the rag one)")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()) / 2**20
    print(f"{args.out}: {len(wheels)} wheels, {size:.1f} MiB")
    if size > args.limit_mib:
        raise SystemExit(f"{size:.1f} MiB is over --limit-mib {args.limit_mib}: drop --extra requirements")
    print("on the CUDA machine, from the checkout's root:\n  " + device_command(rag=sft is not None))


if __name__ == "__main__":
    main()
