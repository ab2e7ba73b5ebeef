"""Readers for what knowledge bases are made of beyond plain text: Office files, CSV exports, e-mails,
reStructuredText, logs, config files and source code, each turned into Markdown-ish text whose headings
become sections and whose tables stay Markdown tables (so chunks keep their structure).

`convert(data, fmt, doc_id)` is the one entry; it raises `UnitError` (quarantined or filtered, with a reason)
for a unit it cannot read. Heavy parsers are imported only by the converter that needs them."""

from __future__ import annotations

from tasks.ingest.formats import mail, office, text
from tasks.ingest.formats.base import Converted, UnitError

# language tag of the fenced block a code or config file is wrapped in (so '#' comments are not headings)
CODE_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "jsx", ".ts": "typescript", ".tsx": "tsx", ".java": "java", ".kt": "kotlin", ".kts": "kotlin",
    ".scala": "scala", ".go": "go", ".rs": "rust", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".cs": "csharp", ".swift": "swift", ".m": "objectivec",
    ".rb": "ruby", ".php": "php", ".pl": "perl", ".lua": "lua", ".r": "r", ".jl": "julia", ".dart": "dart",
    ".sh": "bash", ".bash": "bash", ".zsh": "zsh", ".fish": "fish", ".ps1": "powershell", ".bat": "batch",
    ".sql": "sql", ".graphql": "graphql", ".gql": "graphql", ".proto": "protobuf", ".tf": "hcl",
    ".hcl": "hcl", ".css": "css", ".scss": "scss", ".less": "less", ".vue": "vue", ".svelte": "svelte",
    ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".hs": "haskell", ".clj": "clojure",
    ".groovy": "groovy", ".gradle": "groovy", ".cmake": "cmake", ".mk": "make",
}
CONFIG_LANGUAGES = {
    ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".conf": "ini",
    ".properties": "properties", ".xml": "xml",
}
# files known by their whole name, without an extension: build files are code, the rest plain text
NAMED_CODE = {"dockerfile": "dockerfile", "makefile": "make", "jenkinsfile": "groovy", "vagrantfile": "ruby",
              "gemfile": "ruby", "procfile": "text", "containerfile": "dockerfile"}
NAMED_TEXT = frozenset({"readme", "changelog", "changes", "authors", "contributing", "notice", "todo", "install"})

SUFFIXES = {
    ".docx": "docx", ".docm": "docx", ".pptx": "pptx", ".pptm": "pptx", ".xlsx": "xlsx", ".xlsm": "xlsx", ".csv": "csv", ".tsv": "tsv",
    ".tab": "tsv", ".rst": "rst", ".log": "log", ".eml": "eml",
    **{s: "code" for s in CODE_LANGUAGES}, **{s: "config" for s in CONFIG_LANGUAGES},
}
CONTENT_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/csv": "csv", "text/tab-separated-values": "tsv", "text/x-rst": "rst", "message/rfc822": "eml",
    "application/yaml": "config", "text/yaml": "config", "application/toml": "config",
}
FORMATS = frozenset(SUFFIXES.values())


def language_of(name: str) -> str:
    low = name.lower().rsplit("/", 1)[-1]
    for table in (CONFIG_LANGUAGES, CODE_LANGUAGES):
        for suffix, lang in table.items():
            if low.endswith(suffix):
                return lang
    return NAMED_CODE.get(low, "")


def format_for_name(name: str) -> str | None:
    """The format of a file known by its whole name (Dockerfile, README), or None."""
    low = name.lower().rsplit("/", 1)[-1]
    if low in NAMED_CODE:
        return "code"
    return "txt" if low in NAMED_TEXT else None


def convert(data: bytes, fmt: str, doc_id: str) -> Converted:
    """`data` in format `fmt` (one of FORMATS) as text; raises UnitError, and only UnitError, when the unit
    cannot be read: a parser's own exception on a broken file becomes the unit's quarantine reason instead of
    stopping the run."""
    try:
        return _convert(data, fmt, doc_id)
    except UnitError:
        raise
    except Exception as exc:  # zip, lxml, openpyxl, email: each library raises its own types on broken input
        raise UnitError(f"{fmt}: unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None


def _convert(data: bytes, fmt: str, doc_id: str) -> Converted:
    if fmt in ("docx", "pptx", "xlsx"):
        return getattr(office, f"convert_{fmt}")(data)
    if fmt == "eml":
        return mail.convert_eml(data)
    if fmt in ("csv", "tsv"):
        return text.convert_delimited(data, "\t" if fmt == "tsv" else None)
    if fmt == "rst":
        return text.convert_rst(data)
    if fmt == "log":
        return text.convert_plain(data)
    return text.convert_code(data, language_of(doc_id.split("#", 1)[0]))
