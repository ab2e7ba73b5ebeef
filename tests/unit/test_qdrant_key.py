"""The Qdrant API key comes from the argument, QDRANT_API_KEY, or a Prefect Secret block — in that order."""

from __future__ import annotations

import pytest

import flows  # noqa: F401  (registers Prefect Secret blocks as the store QDRANT_API_KEY_BLOCK names)
from tasks.index.qdrant import resolve_api_key

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_key_order_and_secret_block(monkeypatch):
    from prefect.blocks.system import Secret

    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    monkeypatch.delenv("QDRANT_API_KEY_BLOCK", raising=False)
    assert resolve_api_key() is None
    Secret(value="key-from-block").save("ragtune-test-qdrant-key", overwrite=True)
    monkeypatch.setenv("QDRANT_API_KEY_BLOCK", "ragtune-test-qdrant-key")
    assert resolve_api_key() == "key-from-block"
    monkeypatch.setenv("QDRANT_API_KEY", "key-from-env")
    assert resolve_api_key() == "key-from-env"
    assert resolve_api_key("explicit") == "explicit"


def test_missing_secret_block_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    monkeypatch.setenv("QDRANT_API_KEY_BLOCK", "no-such-block")
    with pytest.raises(RuntimeError, match="Prefect Secret block 'no-such-block'"):
        resolve_api_key()
