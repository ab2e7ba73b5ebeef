"""Serving, monitoring and feedback: the end of the loop after promotion (`ask` answers one question from the
CLI with the same retrieval, prompt and guardrails).

- `app.create_app` / `app.run`: the ASGI server (`ragtune serve`) that keeps the champion and the served index loaded,
  answers `/v1/ask`, takes `/v1/feedback`, reports `/v1/whoami`, `/healthz`, `/readyz`, `/metrics`, serves the chat
  page, and hot swaps model and index when their aliases move (`engine`, with batched generation; `service`, the
  answer path of one question; `api`, the OpenAPI contract).
- `keys` and `access`: API keys with roles, anonymous clients, CSRF checks, per-client rate limits and the bound on
  questions in progress; `inputs`: request bodies read as an attacker sends them; `protocol`: connection deadlines.
- `guardrails`: input limits, the refusal of abusive requests, PII redaction, prompt-injection flags, the safety
  blocklist and the "not found in the documents" threshold (`calibrate` chooses it).
- `requestlog`: the append-only request log and feedback inbox, rotated into versioned datasets.
- `monitor` and `clients`: the figures of a monitoring window, per-client caps, and the rules that make it degraded
  (`flows/monitor.py`).
- `feedback`: votes and corrections turned into reviewed Q/A pairs for the next training run.
- `config`: the typed settings of all of the above."""
