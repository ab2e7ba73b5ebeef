"""tasks/evaluate/generations.py: a kept answer set is reused only for exactly the inputs that decide it."""

from __future__ import annotations

from tasks.evaluate.generations import generation_key


def test_the_key_changes_with_every_input_that_decides_the_answers(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    for d in (base, adapter):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"weights")
    prompts = [[{"role": "user", "content": "How many days?"}]]
    args = dict(base_path=str(base), adapter_dir=str(adapter), prompts=prompts, references=["28"],
                max_new_tokens=32, batch_size=16, device="cpu", dtype="bfloat16")
    key = generation_key(**args)
    assert generation_key(**args) == key  # stable
    changed = [generation_key(**{**args, **c}) for c in (
        {"adapter_dir": None}, {"prompts": [[{"role": "user", "content": "How many weeks?"}]]},
        {"references": ["27"]}, {"max_new_tokens": 33}, {"batch_size": 8}, {"device": "cuda"},
        {"dtype": "float32"})]
    assert key not in changed and len(set(changed)) == len(changed)
    (adapter / "model.safetensors").write_bytes(b"retrained")  # same folder, new weights: a new key
    assert generation_key(**args) != key
