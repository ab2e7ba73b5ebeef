"""pytest plugin for an offline GPU worker prepared by `bench/gpu/bundle.py` (`-p gpupatch`): the packaged default
model resolves to the random-initialised copy that `make_models.py` put at GPU_BASE_135."""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    import tasks.train.model as model

    original = model.resolve_base_model

    def resolve(ws, name):
        return os.environ["GPU_BASE_135"] if name == model.PACKAGED_LLM else original(ws, name)

    model.resolve_base_model = resolve
