"""HTML to text: the main content of a page as Markdown, without navigation, banners and footers (trafilatura)."""

from __future__ import annotations

import re


def html_to_text(html: str) -> tuple[str, str]:
    """Main text of an HTML page as markdown (navigation, banners and footers removed), and its title."""
    import trafilatura
    from trafilatura.settings import use_config

    cfg = _trafilatura_config(use_config)
    if not re.search(r"<body|<html", html[:4096], re.I):  # a fragment: trafilatura extracts only from documents
        html = f"<html><body>{html}</body></html>"
    text = trafilatura.extract(
        html, output_format="markdown", include_tables=True, include_comments=False, include_links=False,
        include_images=False, favor_recall=True, deduplicate=False, config=cfg,
    ) or ""
    meta = trafilatura.extract_metadata(html)
    title = (meta.title or "").strip() if meta is not None else ""
    if text and _only_page_chrome(html, text):
        text = ""  # favor_recall fell back to the navigation: the page has no main content
    return text, title


_CHROME = "//nav|//header|//footer|//aside|//*[@role='navigation' or @role='banner' or @role='contentinfo']"


def _only_page_chrome(html: str, text: str) -> bool:
    """Whether every word of the extracted text is a word of the page's navigation, header, footer or aside."""
    import lxml.html
    from lxml.etree import ParserError

    words = set(re.findall(r"[^\W_]+", text.lower()))
    if not words:
        return True
    try:
        root = lxml.html.fromstring(html)
    except (ParserError, ValueError):
        return False
    chrome = " ".join(el.text_content() for el in root.xpath(_CHROME))
    return words <= set(re.findall(r"[^\W_]+", chrome.lower()))


_TRAF_CFG = None


def _trafilatura_config(use_config):
    global _TRAF_CFG
    if _TRAF_CFG is None:
        _TRAF_CFG = use_config()
        # short pages are still pages: trafilatura's defaults (250/200 chars) drop them entirely
        _TRAF_CFG.set("DEFAULT", "MIN_EXTRACTED_SIZE", "1")
        _TRAF_CFG.set("DEFAULT", "MIN_OUTPUT_SIZE", "1")
        _TRAF_CFG.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")
    return _TRAF_CFG
