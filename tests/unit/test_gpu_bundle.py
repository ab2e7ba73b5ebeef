"""bench/gpu/bundle.py and its worker helpers: what goes into the bundle for an offline GPU worker."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from bench.gpu.bundle import device_command, keep_member, pack_site, requirement_lines


def test_bitsandbytes_keeps_only_the_cuda_13_and_cpu_libraries():
    bnb = "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    assert keep_member(bnb, "bitsandbytes/libbitsandbytes_cuda130.so")
    assert keep_member(bnb, "bitsandbytes/libbitsandbytes_cpu.so")
    assert not keep_member(bnb, "bitsandbytes/libbitsandbytes_cuda121.so")
    assert keep_member(bnb, "bitsandbytes/nn/modules.py")
    assert keep_member("tokenizers-0.22-cp39-abi3-manylinux.whl", "tokenizers/tokenizers.abi3.so")  # others whole
    assert not keep_member("trl-1.16.0-py3-none-any.whl", "trl/__pycache__/x.cpython-312.pyc")


def _wheel(path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_pack_site_lays_the_kept_files_out_as_site_packages(tmp_path):
    _wheel(tmp_path / "bitsandbytes-0.50.2-py3-none-any.whl",
           {"bitsandbytes/__init__.py": b"x = 1\n", "bitsandbytes/libbitsandbytes_cuda130.so": b"\0" * 100,
            "bitsandbytes/libbitsandbytes_cuda118.so": b"\0" * 100})
    _wheel(tmp_path / "trl-1.16.0-py3-none-any.whl", {"trl/__init__.py": b"", "trl-1.16.0.dist-info/METADATA": b"m"})
    data = pack_site(sorted(tmp_path.glob("*.whl")))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
        names = set(tar.getnames())
        assert tar.extractfile("bitsandbytes/__init__.py").read() == b"x = 1\n"
    assert names == {"bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cuda130.so", "trl/__init__.py",
                     "trl-1.16.0.dist-info/METADATA"}


def test_the_pinned_requirements_and_the_device_command():
    from bench.gpu.bundle import HERE

    reqs = requirement_lines(HERE / "bundle-requirements.txt")
    assert reqs and all("==" in r for r in reqs)
    assert {r.split("==")[0] for r in reqs} >= {"trl", "bitsandbytes", "transformers", "prefect", "datasets"}
    cmd = device_command()
    assert "tar xJf .gpu/site.txz" in cmd and "bench/gpu_check.py" in cmd and "-p gpupatch" in cmd
    assert "--workload" not in cmd and "--workload rag --sft-dataset .gpu/sft" in device_command(rag=True)


def test_the_rag_sft_dataset_is_the_latest_one_built_with_passages(tmp_path):
    import json

    from bench.gpu.bundle import find_rag_sft_dataset

    assert find_rag_sft_dataset(tmp_path) is None  # no demo run: the closed workload
    base = tmp_path / "datasets" / "sft"
    for version, rag in (("v1", True), ("v2", False)):
        (base / version).mkdir(parents=True)
        (base / version / "train.jsonl").write_text("{}\n")
        (base / version / "meta.json").write_text(json.dumps({"config": {"rag_context": rag}}))
    (base / "latest").write_text("v1\n")
    assert find_rag_sft_dataset(tmp_path) == base / "v1"
    (base / "latest").write_text("v2\n")
    assert find_rag_sft_dataset(tmp_path) is None  # closed-book examples are not the rag workload


def test_the_large_random_model_has_smollm2_1_7b_parameters():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bench.gpu.make_models import large_config

    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(large_config(cfg))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(1.711e9, rel=0.01)
