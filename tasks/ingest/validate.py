"""validate: the Great Expectations documents suite, quarantine of failing rows, Data Docs."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.core.records import Fate, read_fates, read_records, write_fates, write_records
from tasks.core.workspace import Workspace, write_jsonl
from tasks.ingest.config import ValidateConfig
from tasks.ingest.pii import PII_PATTERNS

log = logging.getLogger("ragtune.validate")

CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
HTML_TAG = (r"(?i)<\s*/?\s*(?:html|head|body|script|style|div|span|iframe|table|tr|td|p|br|img|a|meta|link)"
            r"(?:\s[^<>]*)?/?\s*>")
# formats whose text came out of HTML or out of records (where HTML bodies hide); Markdown, code, config and
# Office documents may show tags on purpose (an API reference's example), so they are not checked for leftovers
CONVERTED_FROM_MARKUP = ("html", "eml", "jsonl", "json", "parquet", "hf")
REQUIRED_COLUMNS = ("doc_id", "unit", "source_uri", "title", "text", "content_hash", "collected_at")
SUITE_NAME = "ragtune_documents"
SITE_NAME = "ragtune"


class QuarantineLimitExceeded(RuntimeError):
    """Too much of the input was quarantined: the run publishes nothing."""


@dataclass
class ValidateResult:
    records_path: str
    fates_path: str
    quarantine_path: str | None
    data_docs: str | None
    passed: int
    quarantined: int
    table_failures: list[str]
    checks: dict[str, int]


def documents_suite(cfg: ValidateConfig, check_pii: bool) -> list[Any]:
    """The documents expectations; each carries `meta.check`, the name quarantine reasons use."""
    import great_expectations.expectations as gxe

    def named(exp: Any, check: str) -> Any:
        exp.meta = {"check": check}
        return exp

    suite = [named(gxe.ExpectColumnValuesToNotBeNull(column=c), f"not_null_{c}") for c in REQUIRED_COLUMNS]
    suite += [
        named(gxe.ExpectColumnValuesToBeUnique(column="doc_id"), "unique_doc_id"),
        named(gxe.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=cfg.min_text_chars, max_value=cfg.max_text_chars), "text_length"),
        named(gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=CONTROL_CHARS), "no_control_chars"),
        named(gxe.ExpectColumnValuesToNotMatchRegex(column="title", regex=CONTROL_CHARS), "title_no_control_chars"),
        named(gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows), "min_rows"),
    ]
    if cfg.forbid_html:  # leftover markup means a failed conversion; authored text may show tags as examples
        suite.append(named(gxe.ExpectColumnValuesToNotMatchRegex(
            column="text", regex=HTML_TAG, row_condition=f"format in {list(CONVERTED_FROM_MARKUP)!r}",
            condition_parser="pandas"), "no_html"))
    if check_pii:
        suite += [
            named(gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=pattern), f"no_pii_{name}")
            for name, pattern in PII_PATTERNS.items()
        ]
    return suite


def _context(ws: Workspace):
    import great_expectations as gx

    ws.reports.mkdir(parents=True, exist_ok=True)
    ctx = gx.get_context(mode="file", project_root_dir=str(ws.reports))
    from great_expectations.data_context.types.base import ProgressBarsConfig

    bars = ctx.variables.progress_bars
    if bars is None or (bars.get("globally", True) if isinstance(bars, dict) else bars.globally):
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm noise on stderr
        ctx.variables.save()
    sites = ctx.get_site_names()
    if SITE_NAME not in sites:
        ctx.add_data_docs_site(SITE_NAME, {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(ws.reports / "data_docs")},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    for other in sites:
        if other != SITE_NAME:
            ctx.delete_data_docs_site(other)
    return ctx


SENSITIVE_COLUMNS = ("text",)
_VALUE_KEYS = ("unexpected_list", "partial_unexpected_list", "partial_unexpected_counts", "unexpected_index_list",
               "partial_unexpected_index_list", "unexpected_rows")


def _scrub(value: Any, sensitive: bool = False) -> Any:
    """Document text becomes its length and a hash: reports never carry bodies or the PII that failed."""
    if isinstance(value, dict):
        return {k: _scrub(v, sensitive or k in SENSITIVE_COLUMNS) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, sensitive) for v in value]
    if isinstance(value, str) and (sensitive or len(value) > 120):
        digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:12]
        return f"<{len(value)} characters, sha256 {digest}>"
    return value


def _scrub_result(res: dict[str, Any], column: str | None) -> None:
    for key in _VALUE_KEYS:
        if res.get(key) is not None:
            res[key] = _scrub(res[key], sensitive=column in SENSITIVE_COLUMNS)


def run_suite(
    df: Any, suite_items: list[Any], ws: Workspace, run_id: str, data_docs: bool, name: str = SUITE_NAME,
) -> tuple[list[tuple[Any, list[Any]]], str | None]:
    """Validate `df` (with a `row` column) in a file context: (result, failing rows) per expectation,
    and the Data Docs index. Stored results are scrubbed of document text."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    ctx = _context(ws)
    source = ctx.data_sources.add_or_update_pandas("ragtune")
    asset_name = "documents" if name == SUITE_NAME else name
    asset = next((a for a in source.assets if a.name == asset_name), None) or source.add_dataframe_asset(asset_name)
    batch_def = next((b for b in asset.batch_definitions if b.name == "all"), None) or \
        asset.add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name=name, expectations=suite_items)
    suite = ctx.suites.add_or_update(suite)
    vd = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=name, data=batch_def, suite=suite))
    checkpoint = ctx.checkpoints.add_or_update(gx.Checkpoint(
        name=name, validation_definitions=[vd], actions=[],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row"],
                       "partial_unexpected_count": 20},
    ))
    # run_time given: without it GE parses the run name as a date, and ids such as `...Z-5266ad` (AD!) read as a
    # UTC offset of 52 hours, which fails the run (about one run id in 2,000)
    run = RunIdentifier(run_name=run_id, run_time=datetime.now(UTC))
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run)
    outcomes: list[tuple[Any, list[Any]]] = []
    for key, vr in result.run_results.items():
        for r in vr.results:
            outcomes.append((r, list(r.result.get("unexpected_index_list") or [])))
            _scrub_result(r.result, getattr(r.expectation_config, "kwargs", {}).get("column"))
        ctx.validation_results_store.set(key, vr)  # replaces the stored copy with the scrubbed one
    docs = None
    if data_docs:
        urls = ctx.build_data_docs(site_names=[SITE_NAME])
        docs = str(ws.reports / "data_docs" / "index.html") if urls else None
    return outcomes, docs


def validate_records(
    in_path: Path, cfg: ValidateConfig, ws: Workspace, run_id: str, out_dir: Path,
    check_pii: bool = True, earlier_fates: list[Path] | None = None,
) -> ValidateResult:
    """Run the suite; rows that fail any row-level check go to `quarantine/<run_id>/` with the reasons."""
    import pandas as pd

    records = read_records(Path(in_path))
    cols = ["doc_id", "unit", "source_uri", "title", "text", "content_hash", "collected_at", "format"]
    df = pd.DataFrame({c: [r.get(c) for r in records] for c in cols})
    df.insert(0, "row", range(len(records)))
    outcomes, docs = run_suite(df, documents_suite(cfg, check_pii), ws, run_id, cfg.data_docs)
    failed_rows: dict[int, list[str]] = defaultdict(list)
    table_failures: list[str] = []
    checks: dict[str, int] = {}
    for r, rows in outcomes:
        check = (r.expectation_config.meta or {}).get("check", r.expectation_config.type)
        if r.success:
            continue
        if r.expectation_config.type.startswith("expect_table_"):
            observed = r.result.get("observed_value")
            table_failures.append(f"{check}: observed {observed}")
            continue
        checks[check] = len(rows)
        for entry in rows:
            failed_rows[int(entry["row"] if isinstance(entry, dict) else entry)].append(check)
    passing, fates, quarantined = [], [], []
    for i, rec in enumerate(records):
        if i in failed_rows:
            reason = f"validate: failed {', '.join(sorted(failed_rows[i]))}"
            if "text_length" in failed_rows[i]:
                reason += (f" ({len(rec.get('text') or ''):,} characters; validation.min_text_chars "
                           f"{cfg.min_text_chars:,} .. max_text_chars {cfg.max_text_chars:,})")
            fate = Fate(rec["unit"], "quarantined", reason, rec["source_uri"], rec["doc_id"], "validate")
            fates.append(fate)
            quarantined.append({**fate.manifest_line(), "checks": sorted(failed_rows[i]), "record": rec})
        else:
            passing.append(rec)
    for path in earlier_fates or []:
        quarantined.extend({**f.manifest_line(), "record": None} for f in read_fates(path) if f.fate == "quarantined")
    qpath = None
    if quarantined:
        qdir = ws.quarantine / run_id
        qdir.mkdir(parents=True, exist_ok=True)
        qpath = str(qdir / "quarantine.jsonl")
        write_jsonl(Path(qpath), sorted(quarantined, key=lambda q: q["unit"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(out_dir / "records.parquet", passing)
    write_fates(out_dir / "fates.jsonl", fates)
    log.info("validated %d records: %d passed, %d quarantined%s", len(records), len(passing), len(fates),
             f"; table checks failed: {table_failures}" if table_failures else "")
    return ValidateResult(str(out_dir / "records.parquet"), str(out_dir / "fates.jsonl"), qpath, docs,
                          len(passing), len(fates), table_failures, checks)


def check_quarantine_policy(seen: int, quarantined: int, cfg: ValidateConfig, table_failures: list[str],
                            passed: int) -> None:
    """Raise `QuarantineLimitExceeded` with a one-line reason when the run must not publish."""
    if table_failures:
        raise QuarantineLimitExceeded(f"validation failed for the whole table: {'; '.join(table_failures)}")
    fraction = quarantined / seen if seen else 0.0
    if fraction > cfg.max_quarantine_fraction:
        raise QuarantineLimitExceeded(
            f"{quarantined} of {seen} input units quarantined ({fraction:.1%}), above "
            f"max_quarantine_fraction {cfg.max_quarantine_fraction:g}"
        )
    if passed < cfg.min_rows:
        raise QuarantineLimitExceeded(f"only {passed} documents passed validation; at least {cfg.min_rows} required")
