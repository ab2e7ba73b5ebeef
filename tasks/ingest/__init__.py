"""Sources to a validated, versioned document dataset; every input unit ends with one recorded fate.

- `collect` (folders, files, `fetch` for http(s) URLs, Hugging Face datasets) reads units through `readers`,
  which dispatch to `formats/` (Office, CSV, e-mail, code, HTML, ...); `watch` notices changes in a folder.
- `clean` applies the small named filters of `filters` and `content` per cleaning profile, with `pii` redaction
  and `dedup` (exact and MinHash near-duplicates).
- `validate` runs the Great Expectations suites and quarantines failing rows; `publish` writes the
  content-addressed dataset version, its manifest and stats, then moves `latest`.
- `config`: CollectConfig, CleanConfig, ValidateConfig, IngestConfig."""
