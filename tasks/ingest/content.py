"""Is it content at all? Checks for text that no one wrote on purpose: mis-decoded bytes, encoded blobs,
minified bundles, keyboard mash, placeholder filler and consent banners.

Each check returns None (keep) or a drop reason. They judge what the text *is*, never how repetitive or short
it is, so they are safe for a knowledge base (tables, changelogs, FAQs, logs, one-line notes). Their
thresholds are keyword arguments; the false-positive rates behind the defaults are measured by
bench/keep_rate.py on the labelled set in data/cleaning_eval/. Imported by worker processes: stdlib only."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# --- mis-decoded bytes -------------------------------------------------------------------------

_SAMPLE = 20_000  # characters judged: garbage is garbage from its first page
_C0 = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# Codepoints that text written by a person almost never holds, but bytes decoded with the wrong codec often do
_RARE_BLOCKS = (
    (0x0080, 0x009F),    # C1 controls: cp1252 bytes decoded as Latin-1
    (0x2060, 0x206F),    # invisible operators and unassigned format codepoints: ASCII read as UTF-16
    (0x3400, 0x4DBF),    # CJK extension A: rare ideographs, a third of the codepoints ASCII pairs land on
    (0xA000, 0xA4CF),    # Yi syllables
    (0xD800, 0xDFFF),    # surrogates
    (0xE000, 0xF8FF),    # private use
    (0xFFF0, 0xFFFF),    # specials, the replacement character included
    (0xF0000, 0x10FFFF),  # supplementary private use planes (rare ideographs of planes 2-3 are real names)
)
_EMOJI = (0x1F000, 0x1FAFF)  # emoji live in the supplementary planes too, and people write them


def _script(ch: str) -> str:
    """A coarse script name for a letter: the first word of its Unicode name, with Japanese merged."""
    name = unicodedata.name(ch, "")
    word = name.split(" ", 1)[0]
    if word in ("CJK", "HIRAGANA", "KATAKANA", "FULLWIDTH", "BOPOMOFO", "IDEOGRAPHIC"):
        return "LATIN" if "LATIN" in name else "CJ"
    if word == "HALFWIDTH":  # legacy half-width kana come in runs of their own, not between kanji
        return "HANGUL" if "HANGUL" in name else "HALFWIDTH"
    return word or "?"


def _rare(cp: int) -> bool:
    if _EMOJI[0] <= cp <= _EMOJI[1]:
        return False
    return any(lo <= cp <= hi for lo, hi in _RARE_BLOCKS)


_JOINERS = frozenset("-\u2010\u2011\u2013\u2014'\u2018\u2019.,:_/&+@")  # what may sit between letters of a word


def _odd(ch: str) -> bool:
    """A symbol or punctuation mark that people do not put between two letters (CJK punctuation aside)."""
    if ch in _JOINERS or 0x3000 <= ord(ch) <= 0x303F or 0xFF00 <= ord(ch) <= 0xFF65 or ch == "\u30fb":
        return False
    return unicodedata.category(ch)[0] in "SP" or unicodedata.category(ch) == "No"


def misdecoded(text: str, *, max_bad_fraction: float = 0.03, max_script_switches: float = 0.3,
               max_jumble: float = 0.1, min_run_share: float = 0.5, code: bool = False) -> str | None:
    """Bytes decoded with the wrong codec. Four signs, each measured on the first 20,000 characters:
    control, private-use, unassigned and rare codepoints beyond `max_bad_fraction` of the visible characters;
    letters switching script inside words more than `max_script_switches` of the time (random bytes read as
    UTF-16 mix Hangul, Han, Yi, ...); non-ASCII letters jumbled with symbols and stray capitals ("Лє‹э–РИъ",
    legacy code pages) beyond `max_jumble` of them; and Hangul or Han without a break for 20 / 40 characters
    in a row holding more than `min_run_share` of those letters (Korean separates its words with spaces,
    Japanese mixes in kana, Chinese punctuates). In `code` only the first sign counts: test strings mix
    scripts and put symbols between letters ("á|é") on purpose."""
    sample = text[:_SAMPLE]
    visible = sum(map(len, sample.split()))
    if visible == 0:
        return None
    bad = len(_C0.findall(sample))
    if sample.isascii():
        return _bad_reason(bad, visible, max_bad_fraction)
    pairs = switches = jumble = non_ascii = 0
    hangul = han = long_hangul = long_han = run_hangul = run_han = 0
    prev = ""
    last = len(sample) - 1
    for i, ch in enumerate(sample):
        cp = ord(ch)
        if 0xAC00 <= cp <= 0xD7A3:
            hangul += 1
            run_hangul += 1
            long_hangul += 20 if run_hangul == 20 else run_hangul > 20
        else:
            run_hangul = 0
        if 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF:
            han += 1
            run_han += 1
            long_han += 40 if run_han == 40 else run_han > 40
        else:
            run_han = 0
        alpha = ch.isalpha()
        if not alpha and 0 < i < last and _odd(ch):
            a, b = sample[i - 1], sample[i + 1]
            if a.isalpha() and b.isalpha() and (ord(a) >= 0x80 or ord(b) >= 0x80):
                jumble += 1  # a symbol between two letters, one of them non-ASCII
        if cp < 0x80:
            prev = "LATIN" if alpha else ""
            continue
        cat = unicodedata.category(ch)
        if cat in ("Co", "Cn", "Cs", "Cc") or _rare(cp) or (cat == "Cf" and cp not in (0xAD, 0x200D)):
            bad += 1
        if not alpha or cat == "Lm":  # modifier letters (tone marks, length marks) belong to no script
            prev = "" if not alpha else prev
            continue
        non_ascii += 1
        if ch.isupper() and i and sample[i - 1].isalpha() and sample[i - 1].islower():
            jumble += 1  # a capital straight after a small letter
        script = _script(ch)
        if prev and prev != "LATIN" and script != "LATIN":  # Latin next to any script is normal: "API를", "APIキー"
            pairs += 1
            switches += prev != script
        prev = script
    reason = _bad_reason(bad, visible, max_bad_fraction)
    if reason or code:
        return reason
    # one sign is enough in a scrap of a dozen characters (20 random bytes read as UTF-16 are 10 letters)
    short = visible < 20
    if (switches >= 2 or (switches and short)) and switches / max(pairs, 1) > max_script_switches:
        return f"misdecoded: letters switch script {switches} times in {pairs} letter pairs (mixed-up codec)"
    if (jumble >= 3 or (jumble and short)) and jumble / max(non_ascii, 1) > max_jumble:
        return f"misdecoded: {jumble} symbols or stray capitals inside {non_ascii} non-ASCII letters (legacy code page)"
    if hangul >= 20 and long_hangul > min_run_share * hangul:
        return f"misdecoded: {long_hangul} of {hangul} Hangul syllables in runs of 20+ without a space (random syllables)"
    if han >= 40 and long_han > min_run_share * han:
        return f"misdecoded: {long_han} of {han} ideographs in runs of 40+ without kana or punctuation"
    return None


def _bad_reason(bad: int, visible: int, limit: float) -> str | None:
    if bad and bad / visible > limit:
        return (f"misdecoded: {bad} of {visible} characters are control, private-use or unassigned codepoints "
                f"(> {limit:.0%}): bytes decoded with the wrong codec")
    return None


# --- encoded blobs and minified bundles --------------------------------------------------------

_BLOB = re.compile(r"(?:data:[\w.+-]+/[\w.+-]+;base64,)?[A-Za-z0-9+/_-]{40,}={0,2}")
_CODE_PUNCT = re.compile(r"[{}()\[\];,=:<>!&|?+*]")


def _is_base64(token: str) -> bool:
    body = token.split(",", 1)[-1]
    return (token.startswith("data:") or (any(c.isupper() for c in body) and any(c.islower() for c in body)
                                          and any(c.isdigit() for c in body)))


_SYMBOL = re.compile(r"[^\w\s\-./:]")


def _char_class(ch: str) -> int:
    return 0 if ch.islower() else 1 if ch.isupper() else 2 if ch.isdigit() else 3 if not ch.isalpha() else 4


def _random_chars(token: str) -> bool:
    """A token typed by a random generator: the kind of character (small, capital, digit, symbol) changes at
    almost every step and symbols other than separators are sprinkled in. Codes like A7F3-K9P2 (no small
    letters) and identifiers (few symbols) are not."""
    if len(_SYMBOL.findall(token)) < 2:  # the cheap test first: most long tokens are words or paths
        return False
    classes = [_char_class(c) for c in token]
    if len(set(classes)) < 3:
        return False
    changes = sum(a != b for a, b in zip(classes, classes[1:], strict=False))
    return changes / (len(token) - 1) > 0.6


def encoded_blob(text: str, *, max_blob_fraction: float = 0.8, max_random_fraction: float = 0.6,
                 min_line_chars: int = 1000, max_space_fraction: float = 0.05,
                 min_punct_fraction: float = 0.12, code: bool = False) -> str | None:
    """Base64 (and data: URIs) holding more than `max_blob_fraction` of the visible characters, random
    character soup (tokens of 10+ characters from a generator) holding more than `max_random_fraction`, or
    minified code: lines of `min_line_chars` or more with almost no spaces and dense code punctuation holding more than
    `max_blob_fraction` of them. A base64 key inside an API reference is a small share and stays."""
    sample = text[:_SAMPLE * 10]
    visible = sum(map(len, sample.split()))
    if visible == 0:
        return None
    blob = sum(len(m.group()) for m in _BLOB.finditer(sample) if _is_base64(m.group()))
    if blob / visible > max_blob_fraction:
        return f"encoded_blob: base64 is {blob / visible:.0%} of the text (> {max_blob_fraction:.0%})"
    tokens = [] if code else sample.split()  # escapes and tables in code look random and are not
    if len(tokens) == 1 and 16 <= len(tokens[0]) < 40 and re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", tokens[0]) \
            and _is_base64(tokens[0]):
        return f"encoded_blob: the whole text is one base64-like token of {len(tokens[0])} characters"  # (shorter
        # than the 40 the pattern above needs: a short key or hash saved on its own)
    soup = sum(len(t) for t in tokens if len(t) >= 10 and _random_chars(t))
    if soup / visible > max_random_fraction:
        return f"encoded_blob: {soup / visible:.0%} of the text is random characters (letters, digits and symbols mixed)"
    minified = 0
    for line in sample.split("\n"):
        n = len(line)
        if n >= min_line_chars and line.count(" ") / n < max_space_fraction \
                and len(_CODE_PUNCT.findall(line)) / n > min_punct_fraction:
            minified += n - line.count(" ")
    if minified / visible > max_blob_fraction:
        return (f"minified_code: {minified / visible:.0%} of the text is in lines of {min_line_chars}+ characters "
                "with code punctuation and no spaces (a minified bundle)")
    return None


# --- keyboard mash -----------------------------------------------------------------------------

_LATIN_WORD = re.compile(r"[A-Za-z]+")
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_VOWELS = set("aeiouy")
_NO_VOWEL_WORDS = {"html", "http", "https", "ctrl", "sftp", "pnpm", "scss", "xmlns", "nginx", "bpm", "gmbh",
                   "crwth", "cwm", "tsk", "hmm", "hmmm", "shh", "pssst", "brr", "zzz", "psst", "nth", "mkdn"}
_JAMO = re.compile(r"[\u3131-\u318e]")
_HANGUL = re.compile(r"[\u3131-\u318e\uac00-\ud7a3]")
_SAME_RUN = re.compile(r"([^\W_])\1{4,}")
_HEXISH = re.compile(r"\b(?:0x)?(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{6,}\b")
_KANA = re.compile(r"[\u3041-\u30ff]")


_KEY = {ch: (r, i) for r, row in enumerate(_ROWS) for i, ch in enumerate(row)}


def _row_run(word: str) -> int:
    """Longest walk along one keyboard row in one direction ("asdf", "lkjh"; not "were", which turns back)."""
    best = run = 1
    step = 0
    for a, b in zip(word, word[1:], strict=False):
        ka, kb = _KEY.get(a), _KEY.get(b)
        d = kb[1] - ka[1] if ka and kb and ka[0] == kb[0] else 0
        if abs(d) == 1 and (run == 1 or d == step):
            run, step = run + 1, d
        else:
            run, step = (2, d) if abs(d) == 1 else (1, 0)
        best = max(best, run)
    return best


@lru_cache(maxsize=65_536)  # prose repeats its words: judge each once
def mash_word(word: str) -> bool:
    """A lowercase Latin word of 4+ letters that no language spells: no vowel, 5 consonants in a row, a
    keyboard-row walk, or a short stem typed over and over ("sdfgsdfg", "jkljkl")."""
    if len(word) < 4 or word in _NO_VOWEL_WORDS:
        return False
    if not _VOWELS & set(word):
        return True
    if re.search(r"[^aeiouy]{5}", word):
        return True
    walk = _row_run(word)
    if walk >= 5 or walk == len(word):
        return True
    return len(word) >= 6 and any(word == (word[:p] * (len(word) // p + 1))[:len(word)] for p in (2, 3, 4))


def keyboard_mash(text: str, *, max_mash_fraction: float = 0.5, max_vowel_share: float = 0.28) -> str | None:
    """Hands on a keyboard, not a language: more than `max_mash_fraction` of the lowercase Latin words are
    unspellable, or fewer than `max_vowel_share` of their letters are vowels with a quarter unspellable
    (random letters), or Korean typed as loose jamo (ㅁㄴㅇㄹ), or kana split by spaces (Japanese is not
    written with spaces), or one letter held down. Words with capitals (acronyms, names, identifiers) are
    not judged."""
    sample = text[:_SAMPLE]
    # full-width ｓｄｆｇ (IME left on) is sdfg; hex ids and hashes (0x7ab4ea94, a3f9c2d1) are not words
    latin = _LATIN_WORD.findall(_HEXISH.sub(" ", unicodedata.normalize("NFKC", sample)))
    words = [w for w in latin if w.islower() and len(w) >= 4]
    if words:
        mash = sum(map(mash_word, words))
        # one or two odd words (a package name such as "xlsxwriter") are not enough; a keyboard walk is
        if (len(words) >= 3 or all(_row_run(w) >= min(len(w), 5) for w in words)) and mash / len(words) > max_mash_fraction:
            return f"keyboard_mash: {mash} of {len(words)} words are unspellable ({', '.join(words[:3])}...)"
        # random letters carry ~23% vowels; European languages 35-50%, code identifiers rarely under 30%
        if len(words) >= 8 and mash / len(words) > max_mash_fraction / 2:
            letters = "".join(w for w in latin if w.islower())
            vowels = sum(letters.count(v) for v in "aeiouy")
            if vowels / len(letters) < max_vowel_share:
                return (f"keyboard_mash: {vowels / len(letters):.0%} vowels and {mash} of {len(words)} words "
                        "unspellable (random letters)")
    kana = len(_KANA.findall(sample))
    if kana >= 10 and kana > 0.9 * sum(c.isalpha() for c in sample) and len(sample.split()) >= 5:
        return "keyboard_mash: kana split by spaces with no kanji or punctuation (typed at random)"
    jamo = len(_JAMO.findall(sample))
    hangul = len(_HANGUL.findall(sample)) if jamo >= 4 else 0
    if jamo >= 4 and jamo / hangul > max_mash_fraction:
        return f"keyboard_mash: {jamo} of {hangul} Korean letters are loose jamo, not syllables"
    visible = sum(map(len, sample.split()))
    held = sum(len(m.group()) for m in _SAME_RUN.finditer(sample))
    if visible and held / visible > max_mash_fraction:
        return f"keyboard_mash: {held / visible:.0%} of the text is one character held down"
    return None


# --- placeholders ------------------------------------------------------------------------------

LOREM = frozenset(["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "consectetuer", "adipiscing", "adipisicing", "elit", "sed", "eiusmod", "tempor", "incididunt", "labore", "dolore", "magna", "aliqua", "enim", "minim", "veniam", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi", "aliquip", "commodo", "consequat", "duis", "aute", "irure", "reprehenderit", "voluptate", "velit", "esse", "cillum", "fugiat", "nulla", "pariatur", "excepteur", "sint", "occaecat", "cupidatat", "proident", "sunt", "culpa", "officia", "deserunt", "mollit", "anim", "laborum", "vestibulum", "maecenas", "nunc", "donec", "integer", "aenean", "pellentesque", "curabitur", "phasellus", "mauris", "nullam", "etiam", "fusce", "praesent", "quisque", "cras", "vivamus", "morbi", "suspendisse", "proin", "aliquam", "tellus", "lectus", "risus", "augue", "mattis", "ligula", "tortor", "turpis", "felis", "massa", "neque", "eros", "urna", "nibh", "odio", "purus", "justo", "lacus", "nisl", "libero", "metus", "magna", "arcu", "diam", "eget", "vitae", "ante", "erat", "semper", "tincidunt", "ultrices", "ultricies", "porttitor", "sapien", "accumsan", "viverra", "faucibus", "vulputate", "volutpat", "sollicitudin"])
_LOREM_HINT = re.compile(r"\b(?:lorem|ipsum|dolor|amet|consectetur|adipiscing|eiusmod|tempor|vestibulum)\b", re.I)
PLACEHOLDERS = frozenset({
    "todo", "tbd", "tba", "tbc", "fixme", "wip", "n/a", "na", "none", "null", "test", "testing", "test test",
    "xxx", "placeholder", "coming soon", "lorem ipsum", "untitled", "draft", "delete me", "to do", "...",
    "asdf", "sample text", "your text here", "text goes here", "insert text here", "작성 중", "준비 중", "테스트",
    "내용 없음", "準備中", "作成中", "テスト", "未定", "工事中",
})


# filler that templates and mock-ups print in place of text, in the languages of the corpora we see
FILLER = re.compile("|".join([
    r"lorem ipsum", r"(?:here|this) is (?:some )?(?:sample|dummy|placeholder) text", r"(?:your|sample) text here",
    r"text goes here", r"ここに(?:テキスト|文章|本文)が入ります", r"ダミーテキスト(?:です)?", r"テキストテキスト",
    r"가나다라마바사", r"아자차카타파하", r"(?:여기에 )?(?:내용|텍스트)을 입력(?:하세요|해 주세요)", r"샘플 텍스트",
    r"(?:you need to |please )?enable javascript to (?:run|view|use) this (?:app|site|page)",
    r"javascript is (?:required|disabled)",
]), re.I)


_FILLER_HINTS = ("lorem", "sample", "dummy", "placeholder", "text here", "text goes", "ここに", "ダミー", "テキストテキスト",
                 "가나다라", "아자차카", "입력", "샘플", "javascript")


def placeholder(text: str, *, max_lorem_fraction: float = 0.5, max_rest: float = 0.1) -> str | None:
    """Filler, not content: a document that is only a placeholder word ("TODO", "TBD", "Coming soon"); whose
    words are mostly lorem ipsum (more than `max_lorem_fraction`); or which is filler phrases ("ここにテキスト
    が入ります", "가나다라마바사", "enable JavaScript to run this app") and less than `max_rest` of anything else."""
    if len(text) < 200:
        bare = re.sub(r"[\s.!:;\-_*#>]+$", "", re.sub(r"^[\s\-_*#>\[\]]+", "", text.strip())).strip().lower()
        if len(bare) <= 40 and re.sub(r"\s+", " ", bare) in PLACEHOLDERS:
            return f"placeholder: the whole text is {bare!r}"
    sample = text[:_SAMPLE]
    low = sample.lower()
    if any(k in low for k in _FILLER_HINTS) and FILLER.search(sample):  # the regex is slow: look for a word first
        rest = re.sub(r"[\W_]+", "", FILLER.sub("", sample))
        if len(rest) < max_rest * len(re.sub(r"[\W_]+", "", sample)):
            return "placeholder: filler text (" + FILLER.search(sample).group() + ") and nothing else"
    words = [w.lower() for w in _LATIN_WORD.findall(sample) if len(w) >= 3] if _LOREM_HINT.search(sample) else []
    if words:
        lorem = sum(w in LOREM for w in words)
        if lorem >= 3 and lorem / len(words) > max_lorem_fraction:
            return f"placeholder: {lorem} of {len(words)} words are lorem ipsum filler"
    return None


# --- consent banners ---------------------------------------------------------------------------

_CONSENT_TOPIC = re.compile(r"cookie|consent|쿠키|クッキー|gdpr|tracking technolog", re.I)
# what a banner says, beyond mentioning cookies: it asks for agreement or announces the site's use of them
_BANNER_PHRASE = re.compile("|".join([
    r"(?:this|our) (?:web)?site uses cookies", r"we use cookies (?:and similar technologies )?to\b",
    r"by (?:continuing|clicking|using|browsing)", r"continu(?:e|ing) to (?:use|browse)",
    r"you (?:agree|consent) to", r"accept (?:all|cookies|the use)", r"use of cookies",
    r"improve your (?:browsing )?experience", r"manage (?:your )?(?:cookie )?(?:preferences|cookies|consent|choices|settings)",
    r"(?:allow|accept|reject) all",
    r"change your (?:choice|mind|preferences|settings) at any time", r"withdraw (?:your )?consent",
    r"wir verwenden cookies", r"diese website (?:verwendet|nutzt) cookies", r"nous utilisons des cookies",
    r"utilizamos cookies", r"utilizziamo (?:i )?cookie", r"cookie ?を(?:使用|利用)", r"閲覧を続ける",
    r"同意したものとみなし", r"쿠키를 (?:사용|이용)", r"동의하는 것으로 간주",
]), re.I)
# the buttons and links of a banner, in the languages we see; a line made of these alone is a button row
_BUTTON_WORDS = frozenset(["ok", "okay", "accept", "all", "reject", "decline", "deny", "allow", "only", "necessary", "essential", "selected", "manage", "preferences", "settings", "options", "customize", "customise", "cookie", "cookies", "learn", "more", "read", "details", "privacy", "policy", "notice", "got", "it", "close", "agree", "i", "save", "choices", "consent", "continue", "without", "accepting", "yes", "no", "thanks", "confirm", "my", "always", "active", "on", "off", "strictly", "performance", "functional", "targeting", "analytics", "marketing", "advertising", "alle", "akzeptieren", "ablehnen", "nur", "notwendige", "einstellungen", "zustimmen", "mehr", "erfahren", "tout", "accepter", "refuser", "paramètres", "personnaliser", "aceptar", "rechazar", "configurar", "todas", "aceitar", "recusar", "同意する", "拒否する", "詳細設定", "設定", "閉じる", "詳細", "すべて許可", "모두", "허용", "거부", "설정", "동의", "닫기", "확인", "자세히", "보기", "수락", "관리"])


def _segments(text: str) -> list[str]:
    parts = re.split(r"\n+|\s*[|·•]\s*| {3,}|\t+|(?<=[.!?。！？])\s+|(?<=[。！？])", text)
    return [p.strip(" \t-*>#[]()") for p in parts if p and p.strip(" \t-*>#[]()")]


def consent_banner(text: str, *, max_words: int = 120, max_chars: int = 800) -> str | None:
    """A cookie or consent banner and nothing else: short (`max_words` words, `max_chars` characters), it
    says what banners say ("This site uses cookies", "By continuing to browse you agree", "Cookie を使用し
    ています"), and every sentence or line either speaks of cookies or consent or is a row of buttons
    ("Accept all | Manage preferences"). "We use cookies only for sign-in sessions." alone is a fact and stays."""
    if len(text) > max_chars or not _CONSENT_TOPIC.search(text) or not _BANNER_PHRASE.search(text):
        return None
    if len(re.findall(r"[^\W\d_]+", text)) > max_words:
        return None
    for seg in _segments(text):
        if _CONSENT_TOPIC.search(seg) or _BANNER_PHRASE.search(seg):
            continue
        words = re.findall(r"[^\W\d_]+", seg.lower())
        if len(words) <= 5 and all(w in _BUTTON_WORDS for w in words):
            continue
        return None
    return "consent_banner: a cookie or consent banner and nothing else"
