"""One layering of settings for every command and flow: defaults < the workspace's config.yaml < a --config file
< the flags given (or the parameters a caller set explicitly)."""

from __future__ import annotations

import pytest
import yaml

from flows.cli import build_parser
from flows.cli.models import train_config
from flows.cli.serve import serve_config
from tasks.core.config import deep_merge, load_section, with_workspace, workspace_section
from tasks.core.workspace import Workspace
from tasks.train.config import TrainConfig


@pytest.fixture
def ws(tmp_path, monkeypatch):
    home = tmp_path / "ws"
    monkeypatch.setenv("RAGTUNE_HOME", str(home))
    w = Workspace(home).ensure()
    (home / "config.yaml").write_text(yaml.safe_dump({
        "train": {"max_steps": 3, "learning_rate": 0.0005, "data": {"context_k": 1, "rag_context": False}},
        "serve": {"port": 8123}}))
    return w


def test_a_train_section_of_the_workspace_config_reaches_ragtune_train(ws):
    cfg = train_config(build_parser().parse_args(["train"]))
    assert (cfg.max_steps, cfg.learning_rate, cfg.data.context_k, cfg.data.rag_context) == (3, 0.0005, 1, False)
    assert cfg.lora_r == TrainConfig().lora_r  # everything else stays at its default


def test_a_config_file_overrides_the_workspace_and_flags_override_both(ws, tmp_path):
    extra = tmp_path / "run.yaml"
    extra.write_text(yaml.safe_dump({"train": {"max_steps": 7, "data": {"context_k": 4}}}))
    cfg = train_config(build_parser().parse_args(["train", "--config", str(extra)]))
    assert (cfg.max_steps, cfg.learning_rate, cfg.data.context_k, cfg.data.rag_context) == (7, 0.0005, 4, False)
    cfg = train_config(build_parser().parse_args(["train", "--config", str(extra), "--max-steps", "9"]))
    assert (cfg.max_steps, cfg.data.context_k) == (9, 4)
    flat = tmp_path / "flat.yaml"  # a file of one stage's fields, without sections, works too
    flat.write_text(yaml.safe_dump({"max_steps": 11}))
    assert train_config(build_parser().parse_args(["train", "--config", str(flat)])).max_steps == 11


def test_other_commands_read_their_own_section(ws):
    assert serve_config(build_parser().parse_args(["serve"])).port == 8123
    assert serve_config(build_parser().parse_args(["serve", "--port", "9000"])).port == 9000


def test_a_flow_parameter_is_completed_from_the_workspace_config(ws):
    """What a deployment or the UI sets explicitly wins; every other field takes the workspace's value."""
    given = TrainConfig.model_validate({"max_steps": 20, "data": {"context_k": 5}})
    cfg = with_workspace(ws, "train", given)
    assert (cfg.max_steps, cfg.learning_rate, cfg.data.context_k, cfg.data.rag_context) == (20, 0.0005, 5, False)
    assert with_workspace(ws, "train", TrainConfig()).max_steps == 3


def test_bad_workspace_config_is_a_clear_error(ws):
    (ws.root / "config.yaml").write_text(yaml.safe_dump({"train": {"max_stepz": 3}}))
    with pytest.raises(ValueError, match="max_stepz"):
        load_section("train", TrainConfig, ws=ws)
    (ws.root / "config.yaml").write_text("train: [1, 2]\n")
    with pytest.raises(ValueError, match="section 'train' must be a mapping"):
        workspace_section(ws, "train")


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    assert deep_merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}, "e": 2}) == {"a": {"b": 1, "c": [2]},
                                                                                       "d": 1, "e": 2}


def test_values_assigned_inside_a_nested_config_count_as_explicit(ws):
    cfg = TrainConfig()
    cfg.data.context_k = 6  # set on the nested model: the outer model does not record `data` as set
    done = with_workspace(ws, "train", cfg)
    assert (done.data.context_k, done.data.rag_context, done.max_steps) == (6, False, 3)
