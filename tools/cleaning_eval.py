"""Generate the labelled cleaning evaluation set: legitimate documents vs garbage inputs.

Everything is fictional: Quillfern Systems Ltd. and its products Driftnote (note-taking and sync),
Tallyloom (billing and invoicing) and Watchkeel (uptime monitoring, with Watchkeel Probe hardware).
E-mail addresses use the reserved `.example` domain and phone numbers use 555-xxxx.

Run from the repository root:

    .venv/bin/python tools/cleaning_eval.py

It deletes and rewrites only `legit/`, `garbage/` and `labels.jsonl` in data/cleaning_eval/, and prints
a summary. Output is deterministic for a given Python and charset_normalizer version (fixed seed).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.header import Header
from pathlib import Path

import charset_normalizer

SEED = 20260512
HERE = Path(__file__).resolve().parent.parent / "data" / "cleaning_eval"  # where the labelled set is written
DOMAIN = "quillfern.example"


@dataclass
class Item:
    path: str
    data: bytes
    label: str
    shape: str
    lang: str
    note: str


class Builder:
    """Collects items in memory; `write` puts them on disk with labels.jsonl."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self._paths: set[str] = set()

    def _add(self, path: str, data: str | bytes, label: str, shape: str, lang: str, note: str) -> None:
        if path in self._paths:
            raise ValueError(f"duplicate path {path}")
        self._paths.add(path)
        raw = data.encode("utf-8") if isinstance(data, str) else data
        self.items.append(Item(path, raw, label, shape, lang, note))

    def legit(self, shape: str, name: str, text: str | bytes, note: str, lang: str | None = None) -> None:
        self._add(f"legit/{shape}/{name}", text, "legit", shape, lang or lang_of(name), note)

    def garbage(self, kind: str, name: str, data: str | bytes, note: str, lang: str = "und") -> None:
        self._add(f"garbage/{kind}/{name}", data, "garbage", kind, lang, note)

    def legit_dict(self, shape: str, docs: dict[str, tuple[str, str]]) -> None:
        for name, (note, text) in docs.items():
            self.legit(shape, name, text, note)

    def write(self, root: Path) -> None:
        for sub in ("legit", "garbage"):
            if (root / sub).exists():
                shutil.rmtree(root / sub)
        labels = root / "labels.jsonl"
        if labels.exists():
            labels.unlink()
        with labels.open("w", encoding="utf-8") as fh:
            for it in self.items:
                target = root / it.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(it.data)
                rec = {
                    "path": it.path,
                    "label": it.label,
                    "shape": it.shape,
                    "lang": it.lang,
                    "note": it.note,
                }
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def lang_of(name: str) -> str:
    for code in ("ko", "ja"):
        if name.startswith(f"{code}-"):
            return code
    return "en"


def money(n: float) -> str:
    return f"{n:,.2f}"


def won(n: int) -> str:
    return f"{n:,}"


def phone(rng: random.Random) -> str:
    return f"555-{rng.randint(100, 9999):04d}"


# ---------------------------------------------------------------------------------------------
# 1. Markdown tables
# ---------------------------------------------------------------------------------------------

TABLES: dict[str, tuple[str, str]] = {
    "pricing-driftnote.md": (
        "Driftnote plan pricing table with repeated row pattern",
        """\
# Driftnote pricing (effective 1 March 2026)

All prices are in US dollars and exclude VAT. Paying annually gets you two months free.

| Plan | Price | Seats | Support |
|------|-------|-------|---------|
| Free | $0 per user per month | up to 3 seats | community forum |
| Starter | $6 per user per month | up to 10 seats | email support |
| Team | $11 per user per month | up to 50 seats | email support |
| Business | $19 per user per month | up to 250 seats | email and chat support |
| Enterprise | $32 per user per month | unlimited seats | 24/7 phone support |

## Add-ons

| Add-on | Price | Available on |
|--------|-------|--------------|
| Extra storage (100 GB) | $4 per month | Starter, Team, Business |
| Audit log export | $2 per user per month | Business, Enterprise |
| SAML single sign-on | $3 per user per month | Business |
| SAML single sign-on | included | Enterprise |

Notes:

- Seats are counted on the first day of each billing period.
- Registered nonprofits get 40% off Team and Business; write to sales@quillfern.example.
- Prices for existing Team customers stay at $10 until their next renewal after 1 September 2026.
""",
    ),
    "pricing-tallyloom.md": (
        "Tallyloom tiers priced by invoice volume",
        """\
## Tallyloom plans

Tallyloom is priced by the number of invoices you send per month, not by seats.

| Tier | Invoices per month | Monthly price | Overage | Payment methods |
|---|---|---|---|---|
| Solo | up to 50 | $15 | $0.40 per invoice | cards |
| Studio | up to 500 | $79 | $0.25 per invoice | cards, bank transfer |
| Company | up to 5,000 | $390 | $0.12 per invoice | cards, bank transfer, direct debit |
| Scale | up to 50,000 | $2,100 | $0.05 per invoice | all, plus custom remittance files |

Every tier includes multi-currency invoices (41 currencies), dunning emails and the REST API.
The Scale tier adds a named account manager and a 99.95% uptime commitment.
""",
    ),
    "feature-matrix-driftnote.md": (
        "feature matrix, features by plan with check marks",
        """\
# Driftnote feature matrix

| Feature | Free | Starter | Team | Business | Enterprise |
|---|:-:|:-:|:-:|:-:|:-:|
| Notes and notebooks | ✓ | ✓ | ✓ | ✓ | ✓ |
| Offline editing | ✓ | ✓ | ✓ | ✓ | ✓ |
| Devices per user | 2 | 5 | unlimited | unlimited | unlimited |
| Version history | 7 days | 30 days | 90 days | 1 year | unlimited |
| Shared notebooks | — | ✓ | ✓ | ✓ | ✓ |
| Guest access | — | — | ✓ | ✓ | ✓ |
| Admin console | — | — | ✓ | ✓ | ✓ |
| Audit log | — | — | — | ✓ | ✓ |
| SAML SSO | — | — | — | add-on | ✓ |
| Data residency (EU, KR, JP) | — | — | — | — | ✓ |
| Customer-managed encryption keys | — | — | — | — | ✓ |

"Unlimited" devices is subject to the fair-use policy (about 20 active devices per user).
""",
    ),
    "office-directory.md": (
        "office directory table with addresses, hours and phone numbers",
        """\
# Quillfern offices

| Office | Address | Hours (local) | Reception | Notes |
|---|---|---|---|---|
| Lisbon (HQ) | Rua das Gaivotas 41, 3rd floor | 08:30–19:00 Mon–Thu, –18:00 Fri | 555-0142 | Bike storage |
| Porto | Avenida do Douro 212 | 09:00–18:00 Mon–Fri | 555-0177 | Shared building, badge needed after 18:00 |
| Seoul | Teheran-ro 88, 14F | 09:00–18:00 Mon–Fri | 555-0219 | Visitors sign in at the lobby desk |
| Osaka | Umeda 2-chome 7-3, 9F | 09:30–18:30 Mon–Fri | 555-0264 | Closed during Obon week |
| Denver | 1650 Larkspur St, Suite 400 | 08:00–17:00 Mon–Fri | 555-0388 | Parking validation at reception |

Mail for all offices goes through the Lisbon mailroom first unless it is marked urgent.
""",
    ),
    "sla-targets.md": (
        "support severity table with response and resolution targets",
        """\
# Support response targets

| Severity | Example | First response | Target resolution | Channels |
|---|---|---|---|---|
| S1 – critical | Driftnote sync down for all users | 30 minutes, 24/7 | 4 hours | phone, chat |
| S2 – major | Tallyloom invoices failing in one region | 2 hours, 24/7 | 1 business day | phone, chat |
| S3 – minor | Export to PDF cuts off long tables | 1 business day | 10 business days | chat, email |
| S4 – question | How to move a notebook between workspaces | 2 business days | best effort | email |

Business days follow the customer's contract region (EU, APAC or Americas).
Enterprise customers get the S1 and S2 targets on weekends as well; other plans get them on weekdays.
""",
    ),
    "supported-browsers.md": (
        "browser and OS support table",
        """\
## Supported browsers and operating systems (Driftnote web and desktop 5.x)

| Platform | Minimum version | Tested on | Status |
|---|---|---|---|
| Chrome | 118 | 124 | supported |
| Firefox | 115 ESR | 125 | supported |
| Safari | 16.4 | 17.4 | supported |
| Edge | 118 | 124 | supported |
| Windows | 10 22H2 | 11 23H2 | supported |
| macOS | 12 Monterey | 14 Sonoma | supported |
| Ubuntu | 22.04 | 24.04 | supported (AppImage and .deb) |
| Windows 8.1 | — | — | not supported since 4.0 |
| Internet Explorer 11 | — | — | never supported |
""",
    ),
    "ko-pricing.md": (
        "Korean pricing table for Driftnote plans",
        """\
# 드리프트노트 요금제 안내 (2026년 3월 1일 기준)

모든 가격은 부가세 별도이며, 연간 결제 시 2개월분이 무료입니다.

| 요금제 | 가격 | 사용 인원 | 지원 |
|---|---|---|---|
| 무료 | 사용자당 월 0원 | 최대 3명 | 커뮤니티 포럼 |
| 스타터 | 사용자당 월 8,000원 | 최대 10명 | 이메일 지원 |
| 팀 | 사용자당 월 14,500원 | 최대 50명 | 이메일 지원 |
| 비즈니스 | 사용자당 월 25,000원 | 최대 250명 | 이메일·채팅 지원 |
| 엔터프라이즈 | 사용자당 월 42,000원 | 무제한 | 24시간 전화 지원 |

참고 사항:

- 사용 인원은 매 결제 주기의 첫날을 기준으로 계산합니다.
- 교육기관과 비영리 단체는 팀·비즈니스 요금제를 40% 할인된 가격에 이용할 수 있습니다.
- 세금계산서 발행은 서울 사무소 재무팀(finance-kr@quillfern.example)으로 문의해 주세요.
""",
    ),
    "ko-meeting-rooms.md": (
        "Korean table of Seoul meeting rooms",
        """\
# 서울 사무소 회의실 현황

| 회의실 | 층 | 수용 인원 | 장비 | 비고 |
|---|---|---|---|---|
| 한강 | 14층 | 12명 | 75인치 TV, 화상회의 카메라 | 외부 손님 응대 우선 |
| 북한산 | 14층 | 6명 | 화이트보드, 모니터 | |
| 남산 | 14층 | 4명 | 모니터 | 1:1 면담용 |
| 청계 | 15층 | 20명 | 프로젝터, 마이크 2대 | 전사 회의 시 사용, 최소 3일 전 예약 |
| 폰부스 A·B | 15층 | 1명 | — | 예약 없이 30분까지 사용 |

예약은 사내 캘린더에서 하며, 회의가 취소되면 반드시 예약도 함께 취소해 주세요.
""",
    ),
    "ja-pricing.md": (
        "Japanese pricing table for Tallyloom tiers",
        """\
# Tallyloom 料金プラン

Tallyloom はユーザー数ではなく、毎月の請求書発行件数に応じて料金が決まります。

| プラン | 月間発行件数 | 月額料金（税抜） | 超過料金 | 対応している決済方法 |
|---|---|---|---|---|
| ソロ | 50件まで | 2,200円 | 1件あたり60円 | クレジットカード |
| スタジオ | 500件まで | 11,800円 | 1件あたり38円 | クレジットカード、銀行振込 |
| カンパニー | 5,000件まで | 58,000円 | 1件あたり18円 | クレジットカード、銀行振込、口座振替 |
| スケール | 50,000件まで | 310,000円 | 1件あたり8円 | すべて（全銀フォーマット出力を含む） |

どのプランでも、インボイス制度の適格請求書の形式で発行できます。
スケールプランには専任の担当者がつき、稼働率 99.95% を保証します。
""",
    ),
    "ja-office-hours.md": (
        "Japanese table of office hours per location",
        """\
## 拠点別の営業時間

| 拠点 | 営業時間 | 休業日 | 代表電話 |
|---|---|---|---|
| 大阪オフィス | 9:30〜18:30 | 土日祝、お盆休み（8月13日〜16日） | 555-0264 |
| 東京サテライト | 10:00〜17:00 | 土日祝、毎月第3金曜日 | 555-0291 |
| ソウルオフィス | 9:00〜18:00（日本時間も同じ） | 土日、韓国の祝日 | 555-0219 |
| リスボン本社 | 16:30〜翌3:00（日本時間） | 土日、ポルトガルの祝日 | 555-0142 |

年末年始は12月29日から1月3日まで全拠点が休業します。
急ぎのお問い合わせは support@quillfern.example までメールでご連絡ください。
""",
    ),
}

ENGINEERS = [
    "Mira Okafor",
    "Tomasz Lindqvist",
    "Priya Castellano",
    "Jonah Whitfield",
    "Inês Carvalho",
    "Daniel Achterberg",
    "Soo-ah Baek",
    "Kenji Morimoto",
    "Amara Nwosu",
    "Lucas Ferreira",
]


def oncall_rota(rng: random.Random) -> str:
    people = ENGINEERS[:]
    rng.shuffle(people)
    lines = [
        "# Sync platform on-call rota, Q3 2026",
        "",
        "Hand-over is every Monday at 10:00 Lisbon time in #sync-oncall. Swap shifts with a peer and",
        "update this table; do not swap without telling the escalation manager.",
        "",
        "| Week starting | Primary | Secondary | Escalation manager |",
        "|---|---|---|---|",
    ]
    managers = ["Rosa Delgado", "Henrik Aalto"]
    start = date(2026, 6, 29)
    for w in range(13):
        d = start + timedelta(weeks=w)
        lines.append(
            f"| {d.isoformat()} | {people[w % 10]} | {people[(w + 3) % 10]} | {managers[(w // 4) % 2]} |"
        )
    lines += ["", "Public holidays: the primary on duty gets a day off in lieu for each holiday worked.", ""]
    return "\n".join(lines)


def ko_oncall(rng: random.Random) -> str:
    names = ["김도현", "이서연", "박지훈", "최유나", "정민재", "한소희"]
    rng.shuffle(names)
    lines = [
        "# 결제 플랫폼 당직표 (2026년 9월)",
        "",
        "당직 교대는 매주 월요일 오전 10시에 진행합니다. 일정 변경은 팀장에게 먼저 알려 주세요.",
        "",
        "| 주차 | 기간 | 1차 당직 | 2차 당직 |",
        "|---|---|---|---|",
    ]
    start = date(2026, 8, 31)
    for w in range(5):
        a = start + timedelta(weeks=w)
        b = a + timedelta(days=6)
        lines.append(
            f"| {w + 1}주차 | {a.month}/{a.day}~{b.month}/{b.day} | {names[w % 6]} | {names[(w + 2) % 6]} |"
        )
    lines += ["", "추석 연휴(9월 24일~26일) 당직자에게는 대체 휴가 1일이 주어집니다.", ""]
    return "\n".join(lines)


def build_tables(b: Builder, rng: random.Random) -> None:
    b.legit_dict("tables", TABLES)
    b.legit("tables", "oncall-rota-q3-2026.md", oncall_rota(rng), "weekly on-call rota table")
    b.legit("tables", "ko-oncall-2026-09.md", ko_oncall(rng), "Korean on-call rota table")


# ---------------------------------------------------------------------------------------------
# 2. HTML pages whose main content is a table
# ---------------------------------------------------------------------------------------------

NAV_EN = (
    '<nav><a href="/">Home</a> | <a href="/products">Products</a> | <a href="/pricing">Pricing</a> | '
    '<a href="/support">Support</a></nav>'
)


def html_table_page(
    title: str,
    intro: str,
    headers: list[str],
    rows: list[list[str]],
    *,
    lang: str = "en",
    nav: str = "",
    footer: str = "",
    outro: str = "",
    style: bool = False,
) -> str:
    head_cells = "".join(f"<th>{h}</th>" for h in headers)
    body_rows = "\n".join("      <tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    css = (
        "  <style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>\n"
        if style
        else ""
    )
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{lang}">',
        "<head>",
        '  <meta charset="utf-8">',
        f"  <title>{title}</title>",
        css.rstrip("\n"),
        "</head>",
        "<body>",
        f"  {nav}" if nav else "",
        "  <main>",
        f"    <h1>{title}</h1>",
        f"    <p>{intro}</p>",
        "    <table>",
        f"      <thead><tr>{head_cells}</tr></thead>",
        "      <tbody>",
        body_rows,
        "      </tbody>",
        "    </table>",
        f"    <p>{outro}</p>" if outro else "",
        "  </main>",
        f"  <footer>{footer}</footer>" if footer else "",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(p for p in parts if p != "") + "\n"


def build_html_tables(b: Builder, rng: random.Random) -> None:
    # incident history
    causes = [
        ("Driftnote sync", "Elevated sync latency in eu-west after a database failover", "S2"),
        ("Tallyloom API", "HTTP 502 errors on /v2/invoices during a load balancer upgrade", "S2"),
        ("Watchkeel dashboard", "Charts not loading because of an expired CDN certificate", "S3"),
        ("Driftnote sync", "Attachments failed to upload for users on the Seoul cluster", "S2"),
        ("Tallyloom payouts", "Bank transfer payouts delayed by one day (partner bank outage)", "S1"),
        ("Driftnote web", "Login loop for SAML users after an identity provider metadata change", "S2"),
        ("Watchkeel alerts", "Duplicate SMS alerts sent for the same incident", "S3"),
        ("Tallyloom API", "Rate limiter rejected valid requests from 3 enterprise tenants", "S3"),
    ]
    rows = []
    day = date(2026, 1, 9)
    for svc, what, sev in causes:
        day += timedelta(days=rng.randint(6, 19))
        mins = rng.choice([14, 22, 37, 48, 63, 95, 140])
        rows.append([day.isoformat(), svc, what, sev, "1 day" if "payouts" in svc else f"{mins} min"])
    b.legit(
        "html_tables",
        "status-history-2026.html",
        html_table_page(
            "Incident history, January–May 2026",
            "All customer-facing incidents this year. Times are UTC; durations are from detection to "
            "full recovery.",
            ["Date", "Service", "Summary", "Severity", "Duration"],
            rows,
            nav=NAV_EN,
            footer="© 2026 Quillfern Systems Ltd. · status@quillfern.example",
            style=True,
        ),
        "status page with an incident history table",
    )
    # price list
    items = [
        ("Watchkeel Probe P2 (indoor)", 149),
        ("Watchkeel Probe P2 (outdoor, IP67)", 229),
        ("PoE injector", 24),
        ("Wall mount kit", 12),
        ("Replacement antenna", 9),
        ("Probe warranty extension, 2 years", 39),
        ("On-site installation (per site)", 350),
    ]
    b.legit(
        "html_tables",
        "hardware-price-list.html",
        html_table_page(
            "Watchkeel hardware price list",
            "List prices in euros, excluding VAT and shipping. Volume discounts start at 25 probes.",
            ["Item", "SKU", "Unit price (EUR)", "Lead time"],
            [
                [n, f"WK-{1000 + i * 37}", f"{p:.2f}", rng.choice(["in stock", "2 weeks", "3–4 weeks"])]
                for i, (n, p) in enumerate(items)
            ],
            nav=NAV_EN,
            footer="Prices valid until 30 June 2026.",
        ),
        "hardware price list table on a full HTML page",
    )
    # training schedule
    courses = [
        ("Driftnote for admins", "Lisbon", "Inês Carvalho"),
        ("Tallyloom API basics", "online", "Lucas Ferreira"),
        ("Writing good Watchkeel checks", "online", "Jonah Whitfield"),
        ("Security awareness (mandatory)", "all offices", "Security team"),
        ("Incident commander training", "Porto", "Rosa Delgado"),
        ("Tallyloom dunning workflows", "Seoul", "Soo-ah Baek"),
    ]
    sched = []
    d0 = date(2026, 9, 7)
    for i, (c, where, who) in enumerate(courses):
        d1 = d0 + timedelta(days=7 * i + rng.randint(0, 3))
        sched.append([d1.strftime("%a %d %b %Y"), c, where, who, str(rng.choice([8, 12, 15, 20, 40]))])
    b.legit(
        "html_tables",
        "training-schedule-autumn.html",
        html_table_page(
            "Internal training schedule, autumn 2026",
            "Sign up in the Learning portal at least one week ahead. Sessions run 10:00–12:30 local time.",
            ["Date", "Course", "Location", "Trainer", "Seats"],
            sched,
            footer="Questions: learning@quillfern.example",
            outro="Security awareness must be completed by 31 October by everyone who joined before July.",
        ),
        "training schedule table",
    )
    # supported OS matrix
    b.legit(
        "html_tables",
        "agent-support-matrix.html",
        html_table_page(
            "Watchkeel agent support matrix",
            "Operating systems on which the Watchkeel agent 3.x is tested and supported.",
            ["Operating system", "Architectures", "Agent 3.4", "Agent 3.5", "End of support"],
            [
                ["Ubuntu 20.04", "x86_64, arm64", "yes", "yes", "2026-04-30"],
                ["Ubuntu 22.04", "x86_64, arm64", "yes", "yes", "2027-04-30"],
                ["Ubuntu 24.04", "x86_64, arm64", "no", "yes", "2029-04-30"],
                ["Debian 12", "x86_64, arm64", "yes", "yes", "2028-06-30"],
                ["RHEL 8", "x86_64", "yes", "yes", "2029-05-31"],
                ["RHEL 9", "x86_64, arm64", "yes", "yes", "2032-05-31"],
                ["Windows Server 2019", "x86_64", "yes", "yes", "2029-01-09"],
                ["Windows Server 2022", "x86_64", "yes", "yes", "2031-10-14"],
                ["macOS 14", "arm64", "no", "beta", "—"],
            ],
            nav=NAV_EN,
            style=True,
        ),
        "OS support matrix table",
    )
    # exchange rates used for invoicing
    rates = [
        ["EUR", "1.0000"],
        ["USD", "1.0842"],
        ["GBP", "0.8531"],
        ["KRW", "1467.20"],
        ["JPY", "163.41"],
        ["BRL", "5.8830"],
        ["CHF", "0.9712"],
    ]
    b.legit(
        "html_tables",
        "invoice-fx-rates-2026-05.html",
        html_table_page(
            "Exchange rates for May 2026 invoices",
            "Tallyloom converts invoices issued in May 2026 at these fixed monthly rates (1 EUR = x).",
            ["Currency", "Rate", "Rounding"],
            [[c, r, "0 decimals" if c in ("KRW", "JPY") else "2 decimals"] for c, r in rates],
            footer="Finance operations · finance@quillfern.example",
        ),
        "monthly exchange-rate table",
    )
    b.legit(
        "html_tables",
        "ko-holidays-2026.html",
        html_table_page(
            "2026년 서울 사무소 휴무일",
            "아래 날짜에는 서울 사무소가 문을 닫습니다. 고객 지원은 리스본 본사에서 영어로 진행됩니다.",
            ["날짜", "요일", "휴일", "비고"],
            [
                ["1월 1일", "목", "신정", ""],
                ["2월 16일~18일", "월~수", "설날 연휴", ""],
                ["3월 2일", "월", "삼일절 대체공휴일", ""],
                ["5월 5일", "화", "어린이날", ""],
                ["5월 25일", "월", "부처님오신날 대체공휴일", ""],
                ["8월 17일", "월", "광복절 대체공휴일", ""],
                ["9월 24일~26일", "목~토", "추석 연휴", "25일 금요일 당직자 있음"],
                ["10월 5일", "월", "개천절 대체공휴일", ""],
                ["10월 9일", "금", "한글날", ""],
                ["12월 25일", "금", "성탄절", ""],
            ],
            lang="ko",
            footer="문의: seoul-office@quillfern.example · 555-0219",
        ),
        "Korean holiday calendar table page",
    )
    b.legit(
        "html_tables",
        "ja-release-schedule.html",
        html_table_page(
            "Driftnote 2026年度 リリース予定",
            "今年度のリリース予定です。日付は目安であり、品質確認の結果によって前後することがあります。",
            ["バージョン", "リリース予定日", "主な内容", "担当"],
            [
                ["5.5", "2026年7月14日", "ノートブックの一括移動、検索の高速化", "森本"],
                ["5.6", "2026年9月8日", "表の列幅調整、PDF 書き出しの改善", "佐々木"],
                ["5.7", "2026年11月10日", "共有リンクの有効期限設定", "森本"],
                ["6.0", "2027年2月中旬", "新しい同期エンジン（段階的に展開）", "大西"],
            ],
            lang="ja",
            nav='<nav><a href="/ja/">トップ</a> | <a href="/ja/releases">リリース情報</a></nav>',
            footer="© 2026 Quillfern Systems 大阪オフィス",
            style=True,
        ),
        "Japanese release schedule table page",
    )


# ---------------------------------------------------------------------------------------------
# 3. Changelogs
# ---------------------------------------------------------------------------------------------

SYNC_FIXES = [
    "duplicated notes when two devices edited the same notebook offline",
    "left attachments stuck at 99% after the network changed",
    "ignored deletions made while the app was in the background",
    "forced a full resync after every upgrade",
    "kept retrying a rejected change forever instead of showing a conflict",
    "reordered checklist items after a merge",
    "dropped the last paragraph of a note when the device went to sleep mid-upload",
    "uploaded the same image twice when it was pasted into two notes",
    'showed "Sync complete" while changes were still queued',
    "restored a deleted notebook from another device's cache",
    "used the device clock instead of the server clock for conflict timestamps",
    "stalled for 10 minutes after a proxy returned HTTP 407",
    "lost tags added while a note was open on another device",
    'created empty "Untitled" notes after a failed merge',
    "ran the initial sync twice on first login",
    "doubled the storage count for shared notebooks",
    "did not pick up changes from a restored backup",
    "blocked the UI thread while hashing large PDFs",
]
DRIFT_OTHER_FIXES = [
    "Fixed a crash when pasting images larger than 20 MB.",
    "Fixed the cursor jumping to the start of the line after undo.",
    "Fixed a memory leak in the search indexer on libraries with more than 50,000 notes.",
    "Fixed wrong word counts for notes that contain tables.",
    "Fixed the tray icon staying visible after quitting on Windows 11.",
    "Fixed printing of notes with embedded spreadsheets.",
    "Fixed spell check ignoring the language set on the note.",
    "Fixed a crash on launch when the library path contained an emoji.",
    "Fixed dark mode colours in the export dialog.",
    "Fixed the share sheet not appearing on iPadOS in Stage Manager.",
]
DRIFT_ADDED = [
    "Added export to PDF with page numbers and a table of contents.",
    'Added "Pin to top" for notebooks.',
    "Added Ctrl+Shift+K (Cmd+Shift+K on macOS) to insert a checklist.",
    "Added support for Markdown footnotes.",
    "Added a high-contrast dark theme.",
    'Added a per-notebook "Pause sync" switch.',
    "Added a Korean and Japanese spell-check dictionary.",
    'Added a "Recently deleted" view that keeps notes for 30 days.',
    "Added the option to open links in the in-app browser.",
]
DRIFT_CHANGED = [
    "Changed the default sync interval from 60 to 30 seconds.",
    "Improved startup time by about 25% on large libraries.",
    "Updated the bundled Chromium runtime to 124.",
    "Search now matches accented characters without the accent.",
    'Moved "Import ENEX file" to File > Import.',
    "Reduced the size of the installer by 18 MB.",
    "The conflict dialog now shows both versions side by side.",
]

TALLY_LINES = {
    "Added": [
        "`GET /v2/invoices` accepts a `status` filter with several values (`status=open,overdue`).",
        "Webhooks for `credit_note.created` and `credit_note.voided`.",
        "Support for the Korean e-tax invoice number on customer records.",
        "`POST /v2/invoices/{id}/send` takes an optional `cc` list.",
        "Idempotency keys on every POST endpoint (header `Idempotency-Key`).",
        "The `due_date_policy` field on customers (`net_15`, `net_30`, `end_of_month`).",
        "CSV export of payouts from the dashboard.",
    ],
    "Fixed": [
        "Rounding error of one cent on invoices with more than 40 lines in JPY.",
        "`next_cursor` was missing on the last page of `/v2/customers`.",
        "Webhook retries stopped after the third attempt instead of the eighth.",
        "Tax was calculated twice on discounted lines when the discount was a percentage.",
        "Dunning emails used the account language instead of the customer language.",
        "Timeouts on `/v2/reports/aging` for accounts with more than 200,000 invoices.",
        "The API returned 500 instead of 422 for an unknown currency code.",
        "Voided invoices still appeared in the overdue report.",
    ],
    "Changed": [
        "Rate limit raised from 50 to 100 requests per second per API key.",
        "`amount` fields are now strings in minor units in all responses.",
        "PDF invoices use the customer's locale for dates.",
        "Deprecated `GET /v1/invoices`; it will be removed on 1 March 2027.",
    ],
    "Security": [
        "API keys created before 2024 must be rotated; old keys stop working on 30 November 2026.",
        "Webhook signatures now use HMAC-SHA256 with a timestamp to prevent replays.",
    ],
}

AGENT_LINES = [
    "Fixed a bug in the HTTP check that treated a 304 response as a failure.",
    "Fixed a bug in the DNS check that cached NXDOMAIN answers for too long.",
    "Fixed a bug in the scheduler that ran every check twice after a config reload.",
    "Fixed a bug in the TLS check that reported the wrong expiry date for chained certificates.",
    "Fixed a bug in the updater that left the old binary in /tmp.",
    "Fixed a bug in the ping check that ignored the configured packet count.",
    "Fixed high CPU use when more than 500 checks were configured.",
    "New: TCP check with optional banner match.",
    "New: `watchkeel-agent doctor` prints the effective configuration and connectivity tests.",
    "New: checks can be tagged and tags are sent with each result.",
    "Changed: results are now batched every 5 seconds instead of sent one by one.",
    "Changed: the agent refuses to start if the config file is world-writable.",
    "Changed: the default log level is now INFO (was DEBUG on Windows).",
    "Removed: the deprecated `--legacy-ping` flag.",
]

CLI_LINES = [
    "`qf notes export` gained `--since` and `--until`.",
    "`qf login` opens the browser instead of asking for a password.",
    "Fixed `qf sync status` printing a negative queue length.",
    "Fixed shell completion for notebook names that contain spaces.",
    "`qf invoices list` prints amounts with the invoice currency symbol.",
    "Fixed `qf config set` silently ignoring unknown keys; it now fails with exit code 2.",
    "New `qf checks run <id>` to trigger a Watchkeel check on demand.",
    "Windows builds are now signed.",
    "Fixed a crash in `qf notes import` when the folder held a symlink loop.",
    "Output of `--json` is stable and documented; fields will only be added, never removed.",
]


def changelog_driftnote(rng: random.Random, product: str, major: int, releases: int, start: date) -> str:
    sync = SYNC_FIXES[:]
    other = DRIFT_OTHER_FIXES[:]
    added = DRIFT_ADDED[:]
    changed = DRIFT_CHANGED[:]
    for pool in (sync, other, added, changed):
        rng.shuffle(pool)
    lines = [f"# Changelog — {product}", "", "All notable changes to this app are listed here.", ""]
    minor, patch = releases // 3, 0
    day = start
    entries = []
    for _ in range(releases):
        entries.append((f"{major}.{minor}.{patch}", day))
        if rng.random() < 0.55:
            patch += 1
        else:
            minor += 1
            patch = 0
        day += timedelta(days=rng.randint(9, 30))
    for ver, d in reversed(entries):
        lines += [f"## [{ver}] - {d.isoformat()}", ""]
        if ver.endswith(".0") and added:
            lines += ["### Added", ""] + [
                f"- {added.pop()}" for _ in range(min(len(added), rng.randint(1, 2)))
            ]
            lines.append("")
        if changed and rng.random() < 0.4:
            lines += ["### Changed", "", f"- {changed.pop()}", ""]
        fixes = [
            f"Fixed a bug in the sync engine that {sync.pop()}."
            for _ in range(min(len(sync), rng.randint(1, 3)))
        ]
        if other and rng.random() < 0.6:
            fixes.append(other.pop())
        if fixes:
            lines += ["### Fixed", ""] + [f"- {f}" for f in fixes] + [""]
    return "\n".join(lines)


def changelog_tallyloom(rng: random.Random) -> str:
    pools = {k: v[:] for k, v in TALLY_LINES.items()}
    for v in pools.values():
        rng.shuffle(v)
    out = ["Tallyloom API changelog", "=======================", ""]
    d = date(2026, 5, 19)
    ver = [2, 14, 0]
    for _ in range(8):
        out.append(f"v{ver[0]}.{ver[1]}.{ver[2]} ({d.strftime('%d %B %Y')})")
        fallback = "Fixed" if pools["Fixed"] else "Added"
        chosen = [
            s
            for s in ("Security", "Changed", "Added", "Fixed")
            if pools[s] and rng.random() < (0.3 if s == "Security" else 0.55)
        ] or [fallback]
        for section in chosen:
            if pools[section]:
                out.append(f"  {section}:")
                for _ in range(min(len(pools[section]), rng.randint(1, 2))):
                    out.append(f"    - {pools[section].pop()}")
        out.append("")
        d -= timedelta(days=rng.randint(12, 40))
        if ver[2] > 0:
            ver[2] -= 1
        else:
            ver[1] -= 1
            ver[2] = rng.randint(0, 2)
    return "\n".join(out)


def changelog_simple(rng: random.Random, title: str, pool: list[str], first: tuple[int, int], n: int) -> str:
    items = pool[:]
    rng.shuffle(items)
    out = [f"# {title}", ""]
    major, minor = first
    d = date(2026, 4, 28)
    for _ in range(n):
        out.append(f"## {major}.{minor} — {d.strftime('%B %Y')}")
        out.append("")
        for _ in range(min(len(items), rng.randint(1, 3))):
            out.append(f"- {items.pop()}")
        out.append("")
        minor -= 1
        d -= timedelta(days=rng.randint(20, 50))
        if minor < 0:
            break
    return "\n".join(out)


KO_SYNC_FIXES = [
    "오프라인 상태에서 두 기기가 같은 노트북을 수정하면 노트가 중복 생성되던 "
    "동기화 엔진 버그를 수정했습니다.",
    "네트워크가 바뀐 뒤 첨부 파일 업로드가 99%에서 멈추던 동기화 엔진 버그를 수정했습니다.",
    "앱이 백그라운드에 있을 때 삭제한 노트가 다른 기기에서 지워지지 않던 동기화 엔진 버그를 수정했습니다.",
    "업데이트할 때마다 전체 동기화가 다시 실행되던 동기화 엔진 버그를 수정했습니다.",
    "체크리스트를 병합하면 항목 순서가 바뀌던 동기화 엔진 버그를 수정했습니다.",
    "절전 모드로 들어가면 마지막 문단이 저장되지 않던 동기화 엔진 버그를 수정했습니다.",
    "다른 기기에서 추가한 태그가 사라지던 동기화 엔진 버그를 수정했습니다.",
]
KO_OTHER = [
    "20MB가 넘는 이미지를 붙여넣으면 앱이 종료되던 문제를 수정했습니다.",
    "위젯에서 최근 노트가 갱신되지 않던 문제를 수정했습니다.",
    "다크 모드에서 표 테두리가 보이지 않던 문제를 수정했습니다.",
    "한글 입력 중 커서가 줄 맨 앞으로 이동하던 문제를 수정했습니다.",
    "노트북별 동기화 일시 정지 기능을 추가했습니다.",
    "PDF 내보내기에 쪽 번호를 추가했습니다.",
    "최근 삭제한 노트를 30일 동안 보관하는 '휴지통' 화면을 추가했습니다.",
    "앱 용량을 약 12MB 줄였습니다.",
]

JA_SYNC_FIXES = [
    "オフラインで2台の端末が同じノートブックを編集すると、ノートが重複して作成される同期エンジンの不具合を修正しました。",
    "ネットワークが切り替わった後、添付ファイルのアップロードが99%で止まる同期エンジンの不具合を修正しました。",
    "バックグラウンドで削除したノートが他の端末で削除されない同期エンジンの不具合を修正しました。",
    "アップデートのたびに全件の再同期が走る同期エンジンの不具合を修正しました。",
    "チェックリストをマージすると項目の順番が入れ替わる同期エンジンの不具合を修正しました。",
    "プロキシが407を返した後、同期が10分間止まる同期エンジンの不具合を修正しました。",
    "他の端末で追加したタグが消えてしまう同期エンジンの不具合を修正しました。",
]
JA_OTHER = [
    "20MBを超える画像を貼り付けるとアプリが終了する問題を修正しました。",
    "日本語入力の変換中にカーソルが行頭に移動する問題を修正しました。",
    "縦書きのノートを PDF に書き出すと文字が欠ける問題を修正しました。",
    "ノートブックごとに同期を一時停止できるようにしました。",
    "検索で全角・半角を区別せずに一致させるようにしました。",
    "削除したノートを30日間保存する「最近削除した項目」を追加しました。",
    "起動時間を約2割短縮しました。",
]


def changelog_cjk(rng: random.Random, lang: str) -> str:
    sync = (KO_SYNC_FIXES if lang == "ko" else JA_SYNC_FIXES)[:]
    other = (KO_OTHER if lang == "ko" else JA_OTHER)[:]
    rng.shuffle(sync)
    rng.shuffle(other)
    if lang == "ko":
        out = ["# 드리프트노트 안드로이드 변경 이력", ""]
        d, ver = date(2026, 5, 11), [5, 4, 2]
    else:
        out = ["# Driftnote iOS 版 更新履歴", ""]
        d, ver = date(2026, 5, 20), [5, 4, 3]
    for _ in range(6):
        if lang == "ko":
            out.append(f"## {ver[0]}.{ver[1]}.{ver[2]} ({d.year}년 {d.month}월 {d.day}일)")
        else:
            out.append(f"## {ver[0]}.{ver[1]}.{ver[2]}（{d.year}年{d.month}月{d.day}日）")
        out.append("")
        for _ in range(rng.randint(1, 2)):
            if sync:
                out.append(f"- {sync.pop()}")
        if other and rng.random() < 0.7:
            out.append(f"- {other.pop()}")
        out.append("")
        d -= timedelta(days=rng.randint(10, 28))
        if ver[2] > 0:
            ver[2] -= 1
        else:
            ver[1] -= 1
            ver[2] = 2
    return "\n".join(out)


def build_changelogs(b: Builder, rng: random.Random) -> None:
    b.legit(
        "changelogs",
        "CHANGELOG-driftnote-desktop.md",
        changelog_driftnote(rng, "Driftnote for desktop", 5, 11, date(2025, 10, 2)),
        "Keep-a-Changelog style, repeated sync-engine fix lines",
    )
    b.legit(
        "changelogs",
        "CHANGELOG-driftnote-ios.md",
        changelog_driftnote(rng, "Driftnote for iOS and iPadOS", 4, 9, date(2025, 6, 17)),
        "mobile app changelog with repeated fix pattern",
    )
    b.legit(
        "changelogs",
        "tallyloom-api-changelog.txt",
        changelog_tallyloom(rng),
        "plain-text API changelog grouped by section",
    )
    b.legit(
        "changelogs",
        "watchkeel-agent-changelog.md",
        changelog_simple(rng, "Watchkeel agent changelog", AGENT_LINES, (3, 5), 6),
        "monitoring agent changelog, 'Fixed a bug in the X check' lines",
    )
    b.legit(
        "changelogs",
        "qf-cli-changelog.md",
        changelog_simple(rng, "qf command-line tool: changes", CLI_LINES, (1, 9), 5),
        "CLI tool changelog",
    )
    b.legit(
        "changelogs",
        "ko-changelog-android.md",
        changelog_cjk(rng, "ko"),
        "Korean Android app changelog with repeated fix sentences",
    )
    b.legit(
        "changelogs",
        "ja-changelog-ios.md",
        changelog_cjk(rng, "ja"),
        "Japanese iOS app changelog with repeated fix sentences",
    )
    b.legit(
        "changelogs",
        "ko-changelog-tallyloom-short.md",
        """\
# Tallyloom 대시보드 변경 이력

## 2026-04-22
- 미수금 보고서에 고객 담당자 열을 추가했습니다.
- 원화 청구서에서 1원 단위 반올림 오류를 수정했습니다.

## 2026-03-30
- 전자세금계산서 승인번호를 고객 상세 화면에서 볼 수 있습니다.
- 독촉 메일이 고객 언어가 아닌 계정 언어로 발송되던 문제를 수정했습니다.

## 2026-03-02
- 지급 내역을 CSV로 내려받을 수 있습니다.
""",
        "short Korean dashboard changelog",
    )
    b.legit(
        "changelogs",
        "ja-changelog-watchkeel.md",
        """\
# Watchkeel エージェント 変更履歴

## 3.5.1（2026-04-09）
- HTTP チェックで 304 応答を失敗と判定していた不具合を修正しました。
- Windows での既定のログレベルを INFO に変更しました。

## 3.5.0（2026-03-18）
- TCP チェックを追加しました（バナーの一致確認にも対応）。
- `watchkeel-agent doctor` コマンドを追加しました。
- 設定ファイルが誰でも書き込める状態の場合、起動しないようにしました。

## 3.4.4（2026-02-25）
- 設定の再読み込み後にすべてのチェックが2回実行される不具合を修正しました。
""",
        "short Japanese agent changelog",
    )


# ---------------------------------------------------------------------------------------------
# 4. Release notes
# ---------------------------------------------------------------------------------------------

RELEASE_NOTES: dict[str, tuple[str, str]] = {
    "driftnote-5.4-release-notes.md": (
        "major desktop release notes with highlights and upgrade notes",
        """\
# Driftnote 5.4 release notes

Released 3 February 2026 for Windows, macOS and Linux. Mobile apps follow on 10 February.

## Highlights

**Side-by-side conflicts.** When the same note is changed on two devices while offline, Driftnote
now opens both versions next to each other and lets you pick paragraphs from either side. Before
5.4 the newer copy won and the older one was saved as "Conflicted copy".

**Faster search.** The search index was rebuilt on a new storage format. Searching a library of
100,000 notes takes about 180 ms instead of 1.1 s on our reference laptop.

**Pinned notebooks.** Right-click a notebook and choose *Pin to top*. Pins are per device.

## Breaking changes

- The `driftnote://open?id=` link format is replaced by `driftnote://note/<id>`. Old links keep
  working until 6.0 but show a warning.
- Plugins built against the 4.x API no longer load. See the plugin migration guide.

## Upgrade notes

The first start after upgrading rebuilds the search index. On large libraries this can take up to
15 minutes; notes can be edited meanwhile but search results will be incomplete.

## Known issues

- On Ubuntu 24.04 with Wayland, the window can open off-screen on multi-monitor setups.
  Workaround: start with `--ozone-platform=x11`.
""",
    ),
    "tallyloom-2026-q2-release.md": (
        "quarterly product release notes for billing product",
        """\
# What's new in Tallyloom — Q2 2026

### Credit notes you can edit before sending
Draft credit notes can now be changed until they are sent. Once sent they are locked, as before.

### Smarter dunning
Reminder emails now wait for the customer's local business day. A reminder that would go out on a
Saturday in Seoul is held until Monday 09:00 KST. You can switch this off per reminder step.

### Korean e-tax invoices
Customers in Korea can be given a business registration number and an e-tax invoice approval number.
Both appear on the PDF and in the API (`tax_ids` on the customer object).

### Other improvements
- Payout CSV export from the dashboard.
- The aging report loads in under 3 seconds for accounts with up to 500,000 invoices.
- Invoice PDFs print dates in the customer's locale.

If anything looks wrong after the update, contact support@quillfern.example with your account ID.
""",
    ),
    "watchkeel-probe-firmware-2.8.txt": (
        "hardware firmware release notes in plain text",
        """\
WATCHKEEL PROBE P2 — FIRMWARE 2.8.0 RELEASE NOTES
Release date: 14 April 2026
Applies to: Probe P2 indoor (WK-1000) and outdoor (WK-1037), hardware revisions B and C

NEW
  * Dual-stack IPv4/IPv6. The probe now prefers IPv6 when the network offers it.
  * Local status page at http://<probe-ip>/status (read-only, can be disabled).
  * Scheduled reboots: set a weekly maintenance window in the dashboard.

IMPROVED
  * Boot time reduced from 41 s to 17 s.
  * Clock drift correction every 15 minutes instead of every hour.

FIXED
  * Probes on PoE switches that negotiate 802.3at could reboot under load.
  * The LED stayed amber after a successful firmware update.

HOW TO UPDATE
  Probes update automatically during their maintenance window. To update now, open the probe
  in the dashboard and choose Firmware > Update now. Do not remove power during the update
  (about 4 minutes). Revision A hardware stays on 2.7.x and will receive security fixes only.
""",
    ),
    "qf-cli-1.9-release-notes.md": (
        "short CLI release notes",
        """\
# qf 1.9

`qf` 1.9 is out. Highlights:

- `qf checks run <id>` triggers a Watchkeel check immediately and waits for the result.
- `--json` output is now stable: fields may be added but will not be removed or renamed.
- Windows binaries are signed, so SmartScreen no longer warns on first run.

Upgrade with `brew upgrade qf`, `scoop update qf`, or download from the releases page.
Version 1.7 and older stop working against the API on 1 October 2026.
""",
    ),
    "driftnote-mobile-5.3.2-hotfix.md": (
        "hotfix release note",
        """\
## Driftnote mobile 5.3.2 (hotfix)

This hotfix addresses a single problem introduced in 5.3.1: on Android 14, notes created from the
home-screen widget were saved without a notebook and did not sync. After updating, those notes are
moved to your default notebook automatically and sync normally. No action is needed.

iOS is not affected and stays on 5.3.1.
""",
    ),
    "ko-release-notes-5.4.md": (
        "Korean release notes for Driftnote 5.4",
        """\
# 드리프트노트 5.4 출시 안내

2026년 2월 3일, 윈도우·맥·리눅스용 드리프트노트 5.4를 출시했습니다. 모바일 앱은 2월 10일에 배포됩니다.

## 주요 변경 사항

**충돌 비교 화면**
오프라인 상태에서 두 기기가 같은 노트를 수정한 경우, 이제 두 버전을 나란히 보여 주고 문단 단위로
골라 합칠 수 있습니다. 이전에는 나중에 저장된 쪽이 남고 다른 쪽은 '충돌 사본'으로 저장되었습니다.

**검색 속도 개선**
검색 색인 형식을 새로 바꿔 노트 10만 개 기준으로 검색 시간이 약 1.1초에서 0.18초로 줄었습니다.

## 업데이트 시 유의 사항

업데이트 후 처음 실행하면 검색 색인을 다시 만듭니다. 노트가 많으면 최대 15분 정도 걸리며,
그동안 노트 편집은 가능하지만 검색 결과가 일부 빠질 수 있습니다.

4.x 버전용으로 만든 플러그인은 더 이상 불러오지 않습니다. 플러그인 이전 가이드를 참고해 주세요.
""",
    ),
    "ja-release-notes-firmware-2.8.md": (
        "Japanese firmware release notes",
        """\
# Watchkeel Probe P2 ファームウェア 2.8.0 リリースノート

公開日：2026年4月14日
対象：Probe P2 屋内用（WK-1000）・屋外用（WK-1037）、ハードウェアリビジョン B および C

## 新機能
- IPv4/IPv6 のデュアルスタックに対応しました。ネットワークが IPv6 を提供している場合は IPv6 を優先します。
- プローブ本体に読み取り専用のステータスページを追加しました（無効にすることもできます）。
- ダッシュボードから毎週のメンテナンス時間帯を設定し、定期的に再起動できるようになりました。

## 改善
- 起動時間を41秒から17秒に短縮しました。

## 修正
- 802.3at で給電する PoE スイッチに接続した場合、高負荷時に再起動することがある問題を修正しました。

## 更新方法
メンテナンス時間帯に自動で更新されます。すぐに更新する場合は、ダッシュボードでプローブを開き
「ファームウェア」→「今すぐ更新」を選んでください。更新中（約4分）は電源を抜かないでください。
""",
    ),
}


def build_release_notes(b: Builder, rng: random.Random) -> None:
    b.legit_dict("release_notes", RELEASE_NOTES)


# ---------------------------------------------------------------------------------------------
# 5. FAQs
# ---------------------------------------------------------------------------------------------

PASSWORD_ANSWERS = [
    (
        "VPN",
        'Open Settings > Security in the Quillfern portal, choose "VPN password" and click Reset. '
        "The new password is sent to your phone by SMS and works within 5 minutes.",
    ),
    (
        "email",
        "Go to https://mail.quillfern.example/reset, enter your work address and follow the link "
        "sent to your recovery address. If you never set a recovery address, call the helpdesk.",
    ),
    (
        "Tallyloom admin",
        "Only another Tallyloom owner can reset it: they open Team > Members, pick your "
        'name and choose "Send reset link". Finance has two owners for this reason.',
    ),
    (
        "Wi-Fi (QF-Staff)",
        "QF-Staff uses your normal login, so reset your main password in the portal. "
        "Your laptop will ask for the new password the next time it reconnects.",
    ),
    (
        "Watchkeel dashboard",
        'Click "Forgot password" on the login page. SSO users cannot reset here; '
        "their password is the company password.",
    ),
    (
        "payroll portal",
        'The payroll portal is run by our payroll provider. Use the "Forgotten details" link '
        "on its login page; HR cannot see or reset this password.",
    ),
    (
        "build server",
        "Ask in #dev-infra; an admin will expire your password and you will be asked for a new "
        "one at the next login. Build server passwords expire every 180 days anyway.",
    ),
    (
        "shared printer",
        "The printers do not have passwords. If the printer asks for a PIN, it is the last "
        "four digits of your badge number.",
    ),
]


def it_faq() -> str:
    out = ["IT helpdesk — frequently asked questions", "Last reviewed: 12 March 2026", ""]
    for system, answer in PASSWORD_ANSWERS:
        out.append(f"Q: How do I reset the password for the {system} account?")
        out.append(f"A: {answer}")
        out.append("")
    out += [
        "Q: How do I get a second monitor?",
        'A: Request one in the IT portal under Hardware. Standard is one 27" monitor per person; a second',
        "   one needs your manager's approval.",
        "",
        "Q: What are the helpdesk hours?",
        "A: 08:00–20:00 Lisbon time on weekdays. Outside those hours, call 555-0199 for urgent issues only.",
        "",
    ]
    return "\n".join(out)


FAQS: dict[str, tuple[str, str]] = {
    "billing-faq.md": (
        "customer billing FAQ",
        """\
# Billing FAQ

**Q: When am I charged?**
A: On the same day each month as the day you upgraded. If you upgraded on the 31st, you are charged
on the last day of shorter months.

**Q: Can I get an invoice with my company's VAT number?**
A: Yes. Add the VAT number under Admin > Billing > Tax details before the next charge. Invoices that
were already issued cannot be changed, but we can issue a credit note and a new invoice on request.

**Q: How do I change the card we pay with?**
A: Admin > Billing > Payment method > Replace card. The new card is used from the next charge.

**Q: How do I change the billing email for the Business plan?**
A: Admin > Billing > Billing contact. Up to three addresses can receive invoices.

**Q: How do I change the billing email for the Enterprise plan?**
A: Enterprise billing contacts are set in your contract. Ask your account manager to update them.

**Q: What happens if a payment fails?**
A: We retry after 3, 5 and 7 days and email the billing contacts each time. After 21 days without
payment the workspace becomes read-only. Nothing is deleted.

**Q: Do you offer refunds?**
A: Annual plans can be refunded pro rata within 30 days of purchase. Monthly plans are not refunded,
but you can cancel at any time and keep access until the end of the paid month.
""",
    ),
    "driftnote-sync-faq.md": (
        "product FAQ about sync behaviour",
        """\
# Driftnote sync FAQ

Q: Why does a note show "Waiting to sync"?
A: The device has changes it has not uploaded yet. This usually clears within 30 seconds of the
device coming online. If it stays for more than 10 minutes, open Help > Sync diagnostics.

Q: Why does a notebook show "Waiting to sync" on only one device?
A: The notebook may be paused on that device (right-click > Resume sync), or the device may be
over its plan's device limit.

Q: Can two people edit the same note at the same time?
A: Yes, when both are online changes merge live. When one of them is offline, Driftnote shows a
side-by-side comparison after they reconnect (version 5.4 and later).

Q: Does Driftnote sync over mobile data?
A: By default, text syncs over mobile data and attachments over 5 MB wait for Wi-Fi. You can change
this in Settings > Sync > Use mobile data for attachments.

Q: Where are my notes stored?
A: On each of your devices and on our servers in the region your workspace was created in (EU,
Korea or Japan for Enterprise; EU for other plans).

Q: How do I force a full resync?
A: Settings > Sync > Advanced > Rebuild local copy. Unsynced changes are uploaded first.
""",
    ),
    "travel-faq.txt": (
        "internal travel FAQ, plain text",
        """\
TRAVEL FAQ

Who books my flights?
Book through the travel desk (travel@quillfern.example) at least 14 days before departure. Bookings made
later need your director's approval in the request.

Can I fly business class?
Only for flights longer than 8 hours, and only with approval from your department head.

What is the daily meal allowance?
EUR 45 in Portugal, EUR 60 elsewhere in Europe, KRW 80,000 in Korea, JPY 9,000 in Japan and USD 70 in
the United States. Receipts are not needed for the allowance itself.

Can I extend a business trip for holiday?
Yes, if the flight price does not go up by more than EUR 100. Hotel nights for the holiday part are
on you.

What if my flight is cancelled?
Call the travel desk's 24-hour line, 555-0123. Keep all receipts for extra hotel nights and meals.
""",
    ),
    "watchkeel-faq.md": (
        "monitoring product FAQ",
        """\
## Watchkeel — common questions

**How often do checks run?**
Every 60 seconds on all paid plans, every 5 minutes on Free. Enterprise can go down to 15 seconds.

**From where?**
From 14 public regions plus any Watchkeel Probe you install on your own network.

**Why did I get an alert when my site looked fine?**
An alert fires only when at least two regions fail the same check within 2 minutes. If that happened
while the site looked fine to you, the problem was probably regional (DNS or a CDN edge). The alert
detail page lists the failing regions and the raw responses.

**Can I silence alerts during a deploy?**
Yes: create a maintenance window in the dashboard or call `POST /v1/maintenance` from your pipeline.

**How long are results kept?**
Raw results for 30 days; hourly aggregates for 2 years.
""",
    ),
    "benefits-faq.md": (
        "HR benefits FAQ",
        """\
# Benefits — questions we get a lot

**Q: When does health insurance start?**
A: On your first working day. Family members can be added within 30 days of joining or of a life
event (marriage, birth, adoption).

**Q: How much is the learning budget?**
A: EUR 1,200 per calendar year (or the local equivalent), for courses, books and conferences. Unused
budget does not carry over.

**Q: Is there a home-office allowance?**
A: A one-off EUR 400 for furniture when you join, and EUR 25 per month towards internet costs.

**Q: How many holiday days do I get?**
A: 25 working days plus public holidays in your office's country. In Korea and Japan the statutory
minimum applies if it is higher for your length of service.
""",
    ),
    "ko-it-faq.md": (
        "Korean IT helpdesk FAQ with repeated question pattern",
        """\
# IT 헬프데스크 자주 묻는 질문

Q: VPN 계정 비밀번호는 어떻게 재설정하나요?
A: 사내 포털에서 설정 > 보안 > VPN 비밀번호를 선택하고 '재설정'을 누르세요. 새 비밀번호는 문자로 전송되며
5분 안에 적용됩니다.

Q: 메일 계정 비밀번호는 어떻게 재설정하나요?
A: https://mail.quillfern.example/reset 에서 회사 메일 주소를 입력하면 복구용 주소로 링크가 발송됩니다.
복구용 주소를 등록하지 않았다면 헬프데스크로 전화해 주세요.

Q: Tallyloom 관리자 계정 비밀번호는 어떻게 재설정하나요?
A: 다른 소유자만 재설정할 수 있습니다. 재무팀에는 소유자가 두 명 있으니 그중 한 분께 요청하세요.

Q: 사무실 와이파이(QF-Staff) 비밀번호는 어떻게 바꾸나요?
A: QF-Staff는 회사 계정 비밀번호를 그대로 씁니다. 포털에서 비밀번호를 바꾸면 다음 접속 때 새 비밀번호를
입력하라는 창이 뜹니다.

Q: 모니터를 하나 더 받을 수 있나요?
A: IT 포털의 '장비 요청'에서 신청하세요. 기본 지급은 27인치 모니터 한 대이며,
추가 지급은 팀장 승인이 필요합니다.

Q: 헬프데스크 운영 시간은 어떻게 되나요?
A: 평일 오전 9시부터 오후 6시까지입니다. 그 외 시간에 긴급한 문제가 생기면 555-0199로 전화해 주세요.
""",
    ),
    "ko-billing-faq.md": (
        "Korean customer billing FAQ",
        """\
# 결제 관련 자주 묻는 질문

**결제일은 언제인가요?**
요금제를 업그레이드한 날과 같은 날짜에 매달 결제됩니다. 31일에 업그레이드했다면
31일이 없는 달에는 말일에 결제됩니다.

**세금계산서를 받을 수 있나요?**
네. 관리자 > 결제 > 세금 정보에 사업자등록번호를 입력하면 다음 결제부터 전자세금계산서가 발행됩니다.

**결제에 실패하면 어떻게 되나요?**
3일, 5일, 7일 뒤에 다시 결제를 시도하고 그때마다 결제 담당자에게 메일을 보냅니다. 21일이 지나도 결제되지
않으면 워크스페이스가 읽기 전용으로 바뀌지만, 데이터는 삭제되지 않습니다.

**연간 요금제도 환불되나요?**
구매 후 30일 이내라면 남은 기간만큼 환불해 드립니다. 월간 요금제는 환불되지 않으며, 언제든 해지할 수 있고
이미 결제한 달의 마지막 날까지는 계속 이용할 수 있습니다.
""",
    ),
    "ja-it-faq.md": (
        "Japanese IT helpdesk FAQ with repeated question pattern",
        """\
# 情報システム よくある質問

Q. VPN アカウントのパスワードを再設定するにはどうすればよいですか？
A. 社内ポータルの「設定」→「セキュリティ」→「VPN パスワード」から「再設定」を押してください。
新しいパスワードは SMS で届き、5分ほどで使えるようになります。

Q. メールアカウントのパスワードを再設定するにはどうすればよいですか？
A. https://mail.quillfern.example/reset で会社のメールアドレスを入力すると、予備のアドレスにリンクが届きます。
予備のアドレスを登録していない場合は、ヘルプデスクまでお電話ください。

Q. 経費精算システムのパスワードを再設定するにはどうすればよいですか？
A. 経費精算システムは会社のアカウントでログインするため、個別のパスワードはありません。ポータルで会社の
パスワードを変更してください。

Q. 貸与 PC を紛失した場合はどうすればよいですか？
A. すぐにヘルプデスク（555-0199、24時間対応）へ連絡してください。遠隔でロックとデータ消去を行います。
警察への届け出の受理番号も後で必要になります。

Q. 私物のスマートフォンで社内チャットを使ってもよいですか？
A. 端末管理アプリを入れれば利用できます。入れない場合はブラウザ版のみ利用可能です。
""",
    ),
    "ja-product-faq.md": (
        "Japanese product FAQ for Watchkeel",
        """\
# Watchkeel よくあるご質問

**監視の間隔はどれくらいですか？**
有料プランでは60秒ごと、無料プランでは5分ごとです。エンタープライズプランでは最短15秒まで短縮できます。

**誤ったアラートが届いたのはなぜですか？**
アラートは、2つ以上の地域から2分以内に同じチェックが失敗した場合にのみ送信されます。サイトが正常に見えていた
場合は、DNS や CDN など特定の地域だけで起きた問題の可能性があります。アラートの詳細画面で、失敗した地域と
実際の応答内容を確認できます。

**デプロイ中のアラートを止められますか？**
はい。ダッシュボードでメンテナンス時間を設定するか、パイプラインから
`POST /v1/maintenance` を呼び出してください。

**データはどのくらいの期間保存されますか？**
個々の結果は30日間、1時間ごとの集計値は2年間保存されます。
""",
    ),
}


def build_faqs(b: Builder, rng: random.Random) -> None:
    b.legit(
        "faq", "it-helpdesk-faq.txt", it_faq(), "IT FAQ, same 'reset the password for X' question pattern"
    )
    b.legit_dict("faq", FAQS)


# ---------------------------------------------------------------------------------------------
# 6. API references
# ---------------------------------------------------------------------------------------------

API_DOCS: dict[str, tuple[str, str]] = {
    "tallyloom-invoices-api.md": (
        "REST endpoint reference with parameter table and example request",
        """\
# Invoices API (v2)

Base URL: `https://api.tallyloom.example/v2`
Authentication: `Authorization: Bearer <api key>`

## Endpoints

| Method | Path | Description |
|---|---|---|
| GET | /invoices | List invoices, newest first |
| POST | /invoices | Create a draft invoice |
| GET | /invoices/{id} | Retrieve one invoice |
| PATCH | /invoices/{id} | Update a draft invoice |
| POST | /invoices/{id}/send | Finalise and email the invoice |
| POST | /invoices/{id}/void | Void a sent invoice |

## GET /invoices

| Parameter | Type | Default | Description |
|---|---|---|---|
| status | string | all | Comma-separated: `draft`, `open`, `paid`, `overdue`, `void` |
| customer_id | string | — | Only invoices for this customer |
| created_after | date | — | ISO 8601 date, inclusive |
| limit | integer | 25 | 1 to 100 |
| cursor | string | — | Value of `next_cursor` from the previous page |

### Example

```bash
curl -s "https://api.tallyloom.example/v2/invoices?status=open,overdue&limit=2" \\
  -H "Authorization: Bearer $TALLYLOOM_KEY"
```

```json
{
  "data": [
    {"id": "inv_8Kq2", "number": "QF-2026-00419", "status": "overdue", "currency": "EUR",
     "amount_due": "184000", "due_date": "2026-04-30", "customer_id": "cus_41b"},
    {"id": "inv_8Kq9", "number": "QF-2026-00426", "status": "open", "currency": "KRW",
     "amount_due": "2350000", "due_date": "2026-05-31", "customer_id": "cus_77c"}
  ],
  "next_cursor": "eyJpZCI6Imludl84S3E5In0"
}
```

Amounts are strings in minor units (cents for EUR, whole won for KRW).

## Errors

`422` if a parameter is invalid, `404` if the invoice does not exist or belongs to another account,
`429` when you exceed 100 requests per second.
""",
    ),
    "watchkeel-checks-api.md": (
        "monitoring API reference, endpoints and JSON bodies",
        """\
# Watchkeel API: checks

All requests go to `https://api.watchkeel.example/v1` and need an API token in the
`X-Watchkeel-Token` header.

## List checks

`GET /checks`

Returns all checks in the workspace. Query parameters:

- `tag` (string, optional): only checks with this tag
- `state` (string, optional): `up`, `down`, `paused`

## Create a check

`POST /checks`

Body fields:

| Field | Type | Required | Notes |
|---|---|---|---|
| name | string | yes | Shown in alerts |
| type | string | yes | `http`, `tcp`, `dns`, `tls`, `ping` |
| target | string | yes | URL, host:port or hostname depending on type |
| interval_s | integer | no | Default 60, minimum 15 on Enterprise |
| regions | array | no | Region codes; default is all regions |
| expect_status | integer | no | HTTP only; default 200 |

Example:

```http
POST /v1/checks HTTP/1.1
Host: api.watchkeel.example
X-Watchkeel-Token: wk_live_xxxxxxxx
Content-Type: application/json

{"name": "Checkout page", "type": "http", "target": "https://shop.example/checkout",
 "interval_s": 30, "regions": ["eu-west", "ap-northeast"], "expect_status": 200}
```

Response: `201 Created` with the check object, including its `id`.

## Pause and resume

`POST /checks/{id}/pause` and `POST /checks/{id}/resume`. Both return `204 No Content`.
""",
    ),
    "driftnote-sync-protocol.md": (
        "internal sync API reference with message formats",
        """\
# Driftnote sync API (internal, v3)

The desktop and mobile clients talk to the sync service over HTTPS. This page documents the three
calls the clients make. It is internal; third parties should use the public Notes API.

## POST /sync/v3/pull

Request:

| Field | Type | Description |
|---|---|---|
| device_id | string | Stable per installation |
| since | integer | Last server revision the device has seen (0 for a fresh install) |
| max_changes | integer | Upper bound on changes returned, default 500 |

Response: `{"revision": 88213, "changes": [...], "more": true}`. Clients call pull again while
`more` is true.

## POST /sync/v3/push

Request: `{"device_id": "...", "base_revision": 88213, "changes": [...]}`.
If `base_revision` is older than the server's, the server answers `409` with the conflicting
note ids and the client must pull before pushing again.

## GET /sync/v3/blob/{sha256}

Downloads an attachment by content hash. Supports `Range` requests. Blobs are deduplicated per
workspace, so uploading the same image twice stores it once.

## Limits

- At most 5 push requests per second per device.
- A single change may not exceed 2 MB; larger content must be uploaded as a blob.
""",
    ),
    "tallyloom-webhooks.md": (
        "webhook event reference and signature verification",
        """\
# Tallyloom webhooks

Tallyloom sends an HTTP POST to your endpoint when something happens in your account.

## Events

| Event | Sent when |
|---|---|
| invoice.created | A draft invoice is created |
| invoice.sent | An invoice is finalised and emailed |
| invoice.paid | Payment for the full amount is received |
| invoice.overdue | The due date passes without full payment |
| credit_note.created | A credit note is issued |
| credit_note.voided | A credit note is voided |
| payout.completed | Money reaches your bank account |

## Verifying signatures

Each request carries `Tallyloom-Signature: t=<unix time>,v1=<hex hmac>`. Compute
HMAC-SHA256 over `"<t>.<raw body>"` with your endpoint secret and compare it in constant time.
Reject requests where `t` is more than 5 minutes old.

```python
import hashlib, hmac, time

def verify(header: str, body: bytes, secret: str) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(","))
    if abs(time.time() - int(parts["t"])) > 300:
        return False
    mac = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, parts["v1"])
```

## Retries

Failed deliveries (non-2xx or no answer within 10 s) are retried 8 times over 24 hours with
exponential back-off.
""",
    ),
    "api-errors.md": (
        "error code reference table",
        """\
# API error codes (all Quillfern APIs)

Errors use the same JSON shape everywhere:

```json
{"error": {"code": "rate_limited", "message": "Too many requests", "retry_after": 2}}
```

| HTTP | code | Meaning | What to do |
|---|---|---|---|
| 400 | bad_request | The body is not valid JSON | Fix the request |
| 401 | unauthenticated | Missing or expired token | Get a new token |
| 403 | forbidden | The token lacks the needed scope | Ask an admin for the scope |
| 404 | not_found | No such object in this workspace | Check the id |
| 409 | conflict | The object changed since you read it | Re-read and retry |
| 422 | invalid_parameter | A field has the wrong type or value | See `error.field` |
| 429 | rate_limited | Too many requests | Wait `retry_after` seconds |
| 500 | internal | Our fault | Retry with back-off; contact support if it persists |
| 503 | maintenance | Planned maintenance | Retry after the window on the status page |
""",
    ),
    "auth-tokens.md": (
        "authentication API reference (OAuth endpoints, scopes)",
        """\
# Authentication

Quillfern APIs accept two kinds of credentials.

## API keys

Created in Admin > Developers > API keys. Keys start with `qf_live_` or `qf_test_` and never expire,
but can be revoked. Use them for server-to-server calls.

## OAuth 2.0 access tokens

For apps acting on behalf of a user.

| Endpoint | Purpose |
|---|---|
| `GET https://auth.quillfern.example/oauth/authorize` | Start the authorization code flow |
| `POST https://auth.quillfern.example/oauth/token` | Exchange a code or refresh token |
| `POST https://auth.quillfern.example/oauth/revoke` | Revoke a token |

Access tokens last 1 hour; refresh tokens last 60 days and rotate on every use.

### Scopes

| Scope | Grants |
|---|---|
| `notes:read` | Read notes and notebooks |
| `notes:write` | Create and change notes |
| `invoices:read` | Read Tallyloom invoices and customers |
| `invoices:write` | Create, send and void invoices |
| `checks:admin` | Manage Watchkeel checks and maintenance windows |

Example token request:

```bash
curl -X POST https://auth.quillfern.example/oauth/token \\
  -d grant_type=authorization_code -d code=$CODE \\
  -d client_id=$CLIENT_ID -d client_secret=$CLIENT_SECRET \\
  -d redirect_uri=https://app.example/callback
```
""",
    ),
    "ja-api-maintenance.md": (
        "Japanese API reference for maintenance windows endpoint",
        """\
# メンテナンス時間 API

デプロイ作業中などにアラートを止めたい場合は、メンテナンス時間を API で登録します。

## エンドポイント

| メソッド | パス | 説明 |
|---|---|---|
| GET | /v1/maintenance | 登録済みのメンテナンス時間の一覧 |
| POST | /v1/maintenance | メンテナンス時間を登録 |
| DELETE | /v1/maintenance/{id} | メンテナンス時間を取り消し |

## POST /v1/maintenance のパラメータ

| 名前 | 型 | 必須 | 説明 |
|---|---|---|---|
| starts_at | 文字列 | はい | 開始日時（ISO 8601、タイムゾーン付き） |
| duration_min | 整数 | はい | 長さ（分）。最大 720 |
| check_ids | 配列 | いいえ | 対象のチェック。省略するとすべてのチェックが対象 |
| reason | 文字列 | いいえ | ダッシュボードに表示されるメモ |

## リクエスト例

```bash
curl -X POST https://api.watchkeel.example/v1/maintenance \\
  -H "X-Watchkeel-Token: $WK_TOKEN" -H "Content-Type: application/json" \\
  -d '{"starts_at": "2026-06-02T22:00:00+09:00", "duration_min": 45, "reason": "DB 移行"}'
```

成功すると `201 Created` と登録内容が返ります。開始時刻を過ぎたメンテナンス時間は削除できません。
""",
    ),
}


def build_api(b: Builder, rng: random.Random) -> None:
    b.legit_dict("api_reference", API_DOCS)


# ---------------------------------------------------------------------------------------------
# 7. Log excerpts
# ---------------------------------------------------------------------------------------------


def log_sync_worker(rng: random.Random) -> str:
    t = datetime(2026, 5, 4, 3, 12, 7, 418000)
    out = []
    workspaces = [f"ws_{rng.randint(0x100, 0xFFF):x}" for _ in range(7)]
    for i in range(70):
        t += timedelta(milliseconds=rng.randint(150, 4200))
        ts = t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"
        ws = rng.choice(workspaces)
        r = rng.random()
        if i == 52:
            out += [
                f"{ts} ERROR sync.worker [pid 4121] push failed for {ws}, will retry in 30s",
                "Traceback (most recent call last):",
                '  File "/srv/sync/worker/push.py", line 118, in apply_batch',
                "    rev = self.store.commit(batch, base_revision=base)",
                '  File "/srv/sync/store/postgres.py", line 244, in commit',
                "    cur.execute(INSERT_CHANGES, rows)",
                '  File "/srv/sync/.venv/lib/python3.11/site-packages/psycopg/cursor.py", '
                "line 732, in execute",
                "    raise ex.with_traceback(None)",
                "psycopg.errors.SerializationFailure: could not serialize access due to concurrent update",
            ]
        elif r < 0.62:
            out.append(
                f"{ts} INFO sync.worker [pid 4121] pulled {rng.randint(1, 480)} changes for {ws} "
                f"in {rng.randint(12, 140)} ms"
            )
        elif r < 0.85:
            out.append(
                f"{ts} INFO sync.worker [pid 4121] pushed {rng.randint(1, 60)} changes for {ws}, "
                f"revision {rng.randint(88000, 89999)}"
            )
        elif r < 0.95:
            out.append(
                f"{ts} WARN sync.worker [pid 4121] slow push for {ws}: {rng.randint(900, 4000)} ms "
                "(threshold 800 ms)"
            )
        else:
            out.append(f"{ts} WARN sync.blob [pid 4121] blob upload retried ({rng.randint(1, 3)}/5) for {ws}")
    return "\n".join(out) + "\n"


def log_tallyloom_api(rng: random.Random) -> str:
    t = datetime(2026, 5, 4, 10, 15, 32, 114000)
    out = []
    paths = [
        ("GET", "/v2/invoices", 200),
        ("GET", "/v2/customers", 200),
        ("POST", "/v2/invoices", 201),
        ("POST", "/v2/invoices/inv_8Kq2/send", 200),
        ("GET", "/v2/reports/aging", 200),
        ("GET", "/v2/invoices/inv_0000", 404),
    ]
    for i in range(60):
        t += timedelta(milliseconds=rng.randint(20, 2500))
        ts = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
        thread = f"http-nio-8080-exec-{rng.randint(1, 12)}"
        if i == 41:
            out += [
                f"{ts} ERROR [{thread}] c.q.t.api.ReportController - "
                "Unhandled exception on GET /v2/reports/aging",
                "java.lang.NullPointerException: Cannot invoke "
                '"java.time.LocalDate.isBefore(java.time.chrono.'
                'ChronoLocalDate)" because "dueDate" is null',
                "\tat com.quillfern.tallyloom.reports.AgingBucket.classify(AgingBucket.java:57)",
                "\tat com.quillfern.tallyloom.reports.AgingReport.lambda$build$2(AgingReport.java:112)",
                "\tat java.base/java.util.stream.ReferencePipeline$3$1.accept(ReferencePipeline.java:197)",
                "\tat java.base/java.util.ArrayList$ArrayListSpliterator"
                ".forEachRemaining(ArrayList.java:1625)",
                "\tat com.quillfern.tallyloom.reports.AgingReport.build(AgingReport.java:118)",
                "\tat com.quillfern.tallyloom.api.ReportController.aging(ReportController.java:64)",
                "\t... 48 common frames omitted",
            ]
            continue
        if rng.random() < 0.1:
            out.append(
                f"{ts} WARN  [{thread}] c.q.t.api.RateLimiter - key qf_live_…{rng.randint(1000, 9999)} "
                f"at {rng.randint(85, 99)}% of its limit"
            )
            continue
        m, p, s = rng.choice(paths)
        out.append(f"{ts} INFO  [{thread}] c.q.t.api.AccessLog - {m} {p} {s} {rng.randint(6, 380)}ms")
    return "\n".join(out) + "\n"


def log_nginx(rng: random.Random) -> str:
    t = datetime(2026, 5, 11, 14, 2, 11)
    agents = [
        '"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Driftnote/5.4.1"',
        '"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15"',
        '"Watchkeel-Agent/3.5.1"',
        '"curl/8.5.0"',
    ]
    reqs = [
        ("GET /api/health HTTP/1.1", 200, 17),
        ("GET /app/ HTTP/2.0", 200, 5123),
        ("GET /app/static/main.4f1c2a.js HTTP/2.0", 304, 0),
        ("POST /sync/v3/pull HTTP/2.0", 200, 18422),
        ("POST /sync/v3/push HTTP/2.0", 200, 311),
        ("GET /favicon.ico HTTP/2.0", 404, 153),
        ("POST /sync/v3/push HTTP/2.0", 409, 96),
    ]
    out = []
    for _ in range(55):
        t += timedelta(seconds=rng.randint(0, 9))
        ip = f"198.51.100.{rng.randint(2, 254)}"
        r, s, size = rng.choice(reqs)
        size = size if size in (0, 17, 153, 96) else size + rng.randint(-400, 400)
        if "/api/health" in r:
            agent = agents[2]
        elif "/sync/" in r:
            agent = agents[0]
        else:
            agent = rng.choice([agents[0], agents[1], agents[1], agents[3]])
        out.append(f'{ip} - - [{t.strftime("%d/%b/%Y:%H:%M:%S")} +0000] "{r}" {s} {size} "-" {agent}')
    return "\n".join(out) + "\n"


def log_watchkeel_agent(rng: random.Random) -> str:
    t = datetime(2026, 4, 27, 22, 40, 0)
    checks = ["http-checkout", "http-login", "dns-quillfern", "tls-api", "tcp-postgres"]
    out = [
        f'level=info ts={t.isoformat()}Z msg="agent starting" version=3.5.0 checks=5 '
        "config=/etc/watchkeel/agent.yaml"
    ]
    for i in range(45):
        t += timedelta(seconds=rng.choice([5, 5, 5, 10]))
        c = rng.choice(checks)
        if i == 38:
            out.append(f'level=warn ts={t.isoformat()}Z msg="config reloaded" checks=5 source=SIGHUP')
            continue
        if rng.random() < 0.12:
            out.append(
                f'level=warn ts={t.isoformat()}Z msg="check failed" check={c} region=probe-osaka-2 '
                f'error="context deadline exceeded" attempt={rng.randint(1, 3)}'
            )
        else:
            out.append(
                f'level=info ts={t.isoformat()}Z msg="check ok" check={c} latency_ms={rng.randint(8, 420)}'
            )
    out += [
        "panic: runtime error: invalid memory address or nil pointer dereference",
        "[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x7a3f12]",
        "",
        "goroutine 214 [running]:",
        "github.com/quillfern/watchkeel-agent/internal/scheduler.(*Scheduler).reschedule(0xc0001b2000, 0x0)",
        "\t/build/internal/scheduler/scheduler.go:187 +0x52",
        "github.com/quillfern/watchkeel-agent/internal/scheduler.(*Scheduler).Reload("
        "0xc0001b2000, {0xc00042a000, 0x5, 0x8})",
        "\t/build/internal/scheduler/scheduler.go:143 +0x1c5",
        "main.handleSignals.func1()",
        "\t/build/cmd/watchkeel-agent/main.go:96 +0x138",
        "created by main.handleSignals in goroutine 1",
        "\t/build/cmd/watchkeel-agent/main.go:88 +0xa5",
    ]
    return "\n".join(out) + "\n"


def log_deploy(rng: random.Random) -> str:
    t = datetime(2026, 5, 12, 16, 4, 51)
    steps = [
        "Checking out tallyloom-api@9c41e7b (branch release/2.14)",
        "Restoring Gradle cache (412 MB)",
        "Running ./gradlew test --parallel",
        "BUILD SUCCESSFUL in 4m 12s; 1,318 tests, 0 failures, 6 skipped",
        "Building image registry.quillfern.example/tallyloom-api:2.14.0",
        "Pushing image (7 layers, 3 already present)",
        "Applying database migrations V2026_05_10_1__add_tax_ids.sql, V2026_05_11_1__index_due_date.sql",
        "Rolling out to eu-west-1: 0/6 pods updated",
    ]
    out = []
    for s in steps:
        t += timedelta(seconds=rng.randint(3, 250))
        out.append(f"[{t:%H:%M:%S}] INFO  {s}")
    for n in range(1, 7):
        t += timedelta(seconds=rng.randint(20, 45))
        out.append(f"[{t:%H:%M:%S}] INFO  Rolling out to eu-west-1: {n}/6 pods updated")
        if n == 4:
            out.append(
                f"[{t:%H:%M:%S}] WARN  Pod tallyloom-api-7f9c-x2kq readiness probe failed "
                "(attempt 1/3), retrying"
            )
    t += timedelta(seconds=31)
    out += [
        f"[{t:%H:%M:%S}] INFO  Smoke tests: 12/12 passed",
        f"[{t:%H:%M:%S}] INFO  Rolling out to ap-northeast-2: starting",
    ]
    for n in range(1, 5):
        t += timedelta(seconds=rng.randint(20, 45))
        out.append(f"[{t:%H:%M:%S}] INFO  Rolling out to ap-northeast-2: {n}/4 pods updated")
    t += timedelta(seconds=9)
    out.append(f"[{t:%H:%M:%S}] INFO  Deploy finished: tallyloom-api 2.14.0 live in 2 regions")
    return "\n".join(out) + "\n"


def log_backup(rng: random.Random) -> str:
    out = []
    d = date(2026, 4, 20)
    for i in range(16):
        day = d + timedelta(days=i)
        size = 38.2 + i * 0.21 + rng.random() * 0.1
        start = f"{day.isoformat()} 02:00:0{rng.randint(1, 9)}"
        out.append(f"{start} backup[8812]: starting nightly backup of driftnote-db-primary")
        if i == 9:
            out.append(
                f"{day.isoformat()} 02:41:17 backup[8812]: ERROR upload to s3://qf-backups-eu failed: "
                "RequestTimeout (part 311 of 612)"
            )
            out.append(f"{day.isoformat()} 02:41:17 backup[8812]: WARN retrying in 300 seconds")
            out.append(
                f"{day.isoformat()} 03:19:02 backup[8812]: backup finished after retry, "
                f"{size:.2f} GiB, checksum ok"
            )
        else:
            mins = rng.randint(31, 44)
            out.append(
                f"{day.isoformat()} 02:{mins}:{rng.randint(10, 59)} backup[8812]: backup finished, "
                f"{size:.2f} GiB, checksum ok"
            )
        out.append(
            f"{day.isoformat()} 02:{rng.randint(45, 59)}:{rng.randint(10, 59)} backup[8812]: pruned "
            f"{1 if i else 0} backup(s) older than 35 days"
        )
    return "\n".join(out) + "\n"


def log_auth_json(rng: random.Random) -> str:
    t = datetime(2026, 5, 6, 8, 58, 3)
    users = [f"u_{rng.randint(10000, 99999)}" for _ in range(9)]
    out = []
    for i in range(40):
        t += timedelta(seconds=rng.randint(1, 40))
        u = rng.choice(users)
        if i in (17, 18, 19, 20, 21):
            ev = {
                "ts": t.isoformat() + "Z",
                "level": "warn",
                "event": "login_failed",
                "user": users[0],
                "reason": "bad_password",
                "ip": "203.0.113.77",
                "attempt": i - 16,
            }
        elif i == 22:
            ev = {
                "ts": t.isoformat() + "Z",
                "level": "warn",
                "event": "account_locked",
                "user": users[0],
                "minutes": 15,
            }
        else:
            ev = {
                "ts": t.isoformat() + "Z",
                "level": "info",
                "event": rng.choice(["login_ok", "login_ok", "token_refreshed", "logout"]),
                "user": u,
                "method": rng.choice(["password+totp", "saml", "saml", "passkey"]),
            }
        out.append(json.dumps(ev))
    return "\n".join(out) + "\n"


def build_logs(b: Builder, rng: random.Random) -> None:
    b.legit("logs", "sync-worker-2026-05-04.log", log_sync_worker(rng), "Python worker log with a traceback")
    b.legit(
        "logs", "tallyloom-api-2026-05-04.log", log_tallyloom_api(rng), "Java service log with stack trace"
    )
    b.legit("logs", "nginx-access-excerpt.log", log_nginx(rng), "web server access log excerpt")
    b.legit("logs", "watchkeel-agent.log", log_watchkeel_agent(rng), "logfmt agent log ending in a Go panic")
    b.legit(
        "logs", "deploy-tallyloom-2.14.0.log", log_deploy(rng), "CI deploy log with repeated rollout lines"
    )
    b.legit("logs", "backup-cron.log", log_backup(rng), "nightly backup log, 16 days, one failure")
    b.legit("logs", "auth-service-events.log", log_auth_json(rng), "JSON-lines auth log with a lockout")


# ---------------------------------------------------------------------------------------------
# 8. Source code and Markdown with code snippets
# ---------------------------------------------------------------------------------------------

CODE: dict[str, tuple[str, str]] = {
    "sync_conflicts.py": (
        "Python module with docstrings and comments",
        r'''"""Detect and describe edit conflicts between two versions of a Driftnote note.

Used by the desktop client before showing the side-by-side conflict dialog.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Version:
    note_id: str
    revision: int
    device: str
    paragraphs: tuple[str, ...]


@dataclass
class Conflict:
    index: int
    ours: str | None
    theirs: str | None


def find_conflicts(base: Version, ours: Version, theirs: Version) -> list[Conflict]:
    """Return paragraphs changed on both sides since `base`.

    A paragraph changed on only one side is not a conflict; the merge takes that side.
    """
    if not (base.note_id == ours.note_id == theirs.note_id):
        raise ValueError("versions belong to different notes")
    ours_changed = _changed_indexes(base.paragraphs, ours.paragraphs)
    theirs_changed = _changed_indexes(base.paragraphs, theirs.paragraphs)
    both = sorted(ours_changed & theirs_changed)
    out = []
    for i in both:
        a = ours.paragraphs[i] if i < len(ours.paragraphs) else None
        b = theirs.paragraphs[i] if i < len(theirs.paragraphs) else None
        if a != b:  # identical edits on both devices are not a conflict
            out.append(Conflict(i, a, b))
    return out


def _changed_indexes(old: tuple[str, ...], new: tuple[str, ...]) -> set[int]:
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    changed: set[int] = set()
    for tag, i1, i2, _j1, _j2 in matcher.get_opcodes():
        if tag != "equal":
            # a pure insertion has i1 == i2; count it against the paragraph it precedes
            changed.update(range(i1, max(i2, i1 + 1)))
    return changed
''',
    ),
    "invoiceTotals.js": (
        "JavaScript module computing invoice totals",
        r"""// Invoice total calculation shared by the Tallyloom dashboard and the PDF renderer.
// All amounts are integers in minor units (cents, whole yen, whole won) to avoid float rounding.

'use strict';

const ZERO_DECIMAL = new Set(['JPY', 'KRW']);

/**
 * Round half away from zero, the rule our tax authorities expect.
 * @param {number} value
 */
function roundHalfAway(value) {
  return Math.sign(value) * Math.round(Math.abs(value));
}

/**
 * @param {{lines: Array<{quantity: number, unitPrice: number, taxRate: number, discountPct?: number}>,
 *          currency: string}} invoice
 */
function computeTotals(invoice) {
  let subtotal = 0;
  let tax = 0;
  for (const line of invoice.lines) {
    const gross = line.quantity * line.unitPrice;
    const discount = roundHalfAway(gross * (line.discountPct || 0) / 100);
    const net = gross - discount;
    subtotal += net;
    // tax is computed per line, then summed (not on the subtotal), see finance ticket FIN-212
    tax += roundHalfAway(net * line.taxRate);
  }
  return {
    currency: invoice.currency,
    subtotal,
    tax,
    total: subtotal + tax,
    decimals: ZERO_DECIMAL.has(invoice.currency) ? 0 : 2,
  };
}

function formatAmount(minor, currency, locale = 'en-GB') {
  const decimals = ZERO_DECIMAL.has(currency) ? 0 : 2;
  return new Intl.NumberFormat(locale, { style: 'currency', currency })
    .format(minor / 10 ** decimals);
}

module.exports = { computeTotals, formatAmount, roundHalfAway };
""",
    ),
    "retry.ts": (
        "TypeScript retry helper with back-off",
        r"""// Retry an async operation with exponential back-off and full jitter.
// Used by the Driftnote web client for sync pushes and blob uploads.

export interface RetryOptions {
  attempts: number;        // total tries, including the first one
  baseDelayMs: number;     // delay before the second try
  maxDelayMs: number;      // cap for any single delay
  retryOn?: (err: unknown) => boolean;
}

const defaults: RetryOptions = { attempts: 5, baseDelayMs: 250, maxDelayMs: 8000 };

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function withRetry<T>(op: () => Promise<T>, opts: Partial<RetryOptions> = {}): Promise<T> {
  const o = { ...defaults, ...opts };
  let lastError: unknown;
  for (let attempt = 1; attempt <= o.attempts; attempt++) {
    try {
      return await op();
    } catch (err) {
      lastError = err;
      if (o.retryOn && !o.retryOn(err)) throw err;
      if (attempt === o.attempts) break;
      const cap = Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** (attempt - 1));
      await sleep(Math.random() * cap); // full jitter: spreads retries from many clients
    }
  }
  throw lastError;
}

// A 409 from /sync/v3/push means "pull first"; retrying blindly would never succeed.
export const isRetryableHttp = (err: unknown): boolean =>
  typeof err === 'object' && err !== null && 'status' in err &&
  [429, 500, 502, 503, 504].includes((err as { status: number }).status);
""",
    ),
    "healthcheck.go": (
        "Go HTTP health check handler",
        r"""// Package health exposes /healthz and /readyz for the Watchkeel ingest service.
package health

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Pinger is anything we depend on that can say whether it is reachable.
type Pinger interface {
	Ping(ctx context.Context) error
}

type Handler struct {
	Deps    map[string]Pinger
	Timeout time.Duration
}

type status struct {
	OK     bool              `json:"ok"`
	Checks map[string]string `json:"checks"`
}

// Healthz only says the process is alive; it never touches dependencies,
// so a database outage does not make Kubernetes restart every pod.
func (h *Handler) Healthz(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("ok\n"))
}

// Readyz pings every dependency and returns 503 if any of them fails.
func (h *Handler) Readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.Timeout)
	defer cancel()
	st := status{OK: true, Checks: map[string]string{}}
	for name, dep := range h.Deps {
		if err := dep.Ping(ctx); err != nil {
			st.OK = false
			st.Checks[name] = err.Error()
			continue
		}
		st.Checks[name] = "ok"
	}
	w.Header().Set("Content-Type", "application/json")
	if !st.OK {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(st)
}
""",
    ),
    "monthly_revenue.sql": (
        "SQL report query with comments",
        r"""-- Monthly recognised revenue per plan, used by the finance dashboard.
-- Annual invoices are spread evenly over the 12 months they cover.
-- Owner: finance-data@quillfern.example

WITH invoice_months AS (
    SELECT
        i.id,
        i.plan_code,
        i.currency,
        i.amount_minor,
        CASE WHEN i.period = 'annual' THEN 12 ELSE 1 END AS months,
        generate_series(
            date_trunc('month', i.period_start),
            date_trunc('month', i.period_start)
                + (CASE WHEN i.period = 'annual' THEN 11 ELSE 0 END) * interval '1 month',
            interval '1 month'
        ) AS revenue_month
    FROM invoices i
    WHERE i.status = 'paid'
      AND i.period_start >= DATE '2025-01-01'
)
SELECT
    revenue_month::date                     AS month,
    plan_code,
    currency,
    SUM(amount_minor / months)              AS recognised_minor,
    COUNT(DISTINCT id)                      AS invoices
FROM invoice_months
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;
""",
    ),
    "rotate-logs.sh": (
        "shell script for log rotation",
        r"""#!/usr/bin/env bash
# Compress sync-worker logs older than one day and delete compressed logs older than 30 days.
# Runs from cron on every sync host: 15 3 * * * /opt/sync/bin/rotate-logs.sh
set -euo pipefail

LOG_DIR="${LOG_DIR:-/var/log/sync}"
KEEP_DAYS="${KEEP_DAYS:-30}"

if [[ ! -d "$LOG_DIR" ]]; then
  echo "log dir $LOG_DIR does not exist" >&2
  exit 1
fi

# gzip yesterday's and older plain logs (the current one is still being written)
find "$LOG_DIR" -maxdepth 1 -name '*.log.*' ! -name '*.gz' -mtime +0 -print0 |
  xargs -0 -r gzip -9

# delete old archives
deleted=$(find "$LOG_DIR" -maxdepth 1 -name '*.gz' -mtime +"$KEEP_DAYS" -print -delete | wc -l)
logger -t rotate-logs "compressed old logs, deleted $deleted archive(s) older than $KEEP_DAYS days"
""",
    ),
    "RateLimiter.java": (
        "Java token-bucket rate limiter class",
        r"""package com.quillfern.tallyloom.api;

import java.time.Clock;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Token bucket per API key. Each key may burst up to {@code capacity} requests and is refilled
 * at {@code ratePerSecond}. This runs in each API pod, so the effective limit is per pod;
 * the load balancer pins keys to pods to keep that close to the documented limit.
 */
public final class RateLimiter {

    private static final class Bucket {
        double tokens;
        long lastRefillNanos;
    }

    private final ConcurrentHashMap<String, Bucket> buckets = new ConcurrentHashMap<>();
    private final double capacity;
    private final double ratePerSecond;
    private final Clock clock;

    public RateLimiter(double capacity, double ratePerSecond, Clock clock) {
        this.capacity = capacity;
        this.ratePerSecond = ratePerSecond;
        this.clock = clock;
    }

    /** Returns true if the request may proceed, false if it should get HTTP 429. */
    public boolean tryAcquire(String apiKey) {
        long now = clock.instant().toEpochMilli() * 1_000_000L;
        Bucket b = buckets.computeIfAbsent(apiKey, k -> {
            Bucket nb = new Bucket();
            nb.tokens = capacity;
            nb.lastRefillNanos = now;
            return nb;
        });
        synchronized (b) {
            double elapsed = (now - b.lastRefillNanos) / 1e9;
            b.tokens = Math.min(capacity, b.tokens + elapsed * ratePerSecond);
            b.lastRefillNanos = now;
            if (b.tokens >= 1.0) {
                b.tokens -= 1.0;
                return true;
            }
            return false;
        }
    }
}
""",
    ),
    "how-to-paginate.md": (
        "Markdown guide with Python and JS code snippets",
        r"""# How to page through results in the Tallyloom API

List endpoints return at most `limit` items (default 25, maximum 100) and a `next_cursor`.
Keep calling with `cursor=<next_cursor>` until `next_cursor` is `null`.

## Python

```python
import requests

def all_invoices(api_key: str, **filters):
    params = {"limit": 100, **filters}
    while True:
        r = requests.get("https://api.tallyloom.example/v2/invoices",
                         headers={"Authorization": f"Bearer {api_key}"}, params=params, timeout=30)
        r.raise_for_status()
        page = r.json()
        yield from page["data"]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
```

## JavaScript

```js
async function* allInvoices(apiKey, filters = {}) {
  let cursor;
  do {
    const qs = new URLSearchParams({ limit: '100', ...filters, ...(cursor ? { cursor } : {}) });
    const res = await fetch(`https://api.tallyloom.example/v2/invoices?${qs}`, {
      headers: { Authorization: `Bearer ${apiKey}` },
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const page = await res.json();
    yield* page.data;
    cursor = page.next_cursor;
  } while (cursor);
}
```

Do not build your own offsets: cursors stay correct when invoices are created while you page.
""",
    ),
    "local-dev-setup.md": (
        "developer setup guide with shell snippets",
        r"""# Setting up the Driftnote sync service locally

You need Docker, Python 3.11 and `make`.

1. Clone the repository and create a virtual environment:

   ```sh
   git clone git@git.quillfern.example:sync/driftnote-sync.git
   cd driftnote-sync
   python3.11 -m venv .venv && . .venv/bin/activate
   pip install -e '.[dev]'
   ```

2. Start Postgres and MinIO (the local stand-in for blob storage):

   ```sh
   docker compose up -d postgres minio
   make migrate
   ```

3. Run the service and a worker in two terminals:

   ```sh
   make run        # API on http://localhost:8700
   make worker     # background jobs
   ```

4. Point a desktop client at it by starting it with `--sync-url http://localhost:8700`.

If `make migrate` fails with "role sync does not exist", the Postgres volume predates the
2025 schema change; run `docker compose down -v` and start again.
""",
    ),
    "ja-watchkeel-check-guide.md": (
        "Japanese Markdown guide with YAML and shell snippets",
        r"""# Watchkeel チェックの書き方

新しいサービスを公開するときは、少なくとも HTTP チェックと TLS 証明書のチェックを登録してください。

## 1. 設定ファイルに追加する

エージェントの設定ファイル（`/etc/watchkeel/agent.yaml`）に次のように追記します。

```yaml
checks:
  - name: 予約ページ
    type: http
    target: https://reserve.example/healthz
    interval_s: 60
    expect_status: 200
  - name: 予約ページの証明書
    type: tls
    target: reserve.example:443
    warn_days: 21
```

## 2. 設定を確認する

```sh
sudo watchkeel-agent doctor
sudo systemctl reload watchkeel-agent
```

`doctor` で接続テストがすべて `ok` になることを確認してから再読み込みしてください。
証明書の期限が `warn_days` 日を切ると、担当チームのチャンネルに通知が届きます。
""",
    ),
}


def build_code(b: Builder, rng: random.Random) -> None:
    b.legit_dict("code", CODE)


# ---------------------------------------------------------------------------------------------
# 9. CSV / TSV exports
# ---------------------------------------------------------------------------------------------


def rows_to_text(rows: list[list[str]], sep: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


def csv_assets(rng: random.Random) -> str:
    models = [
        ("laptop", "Framewise 14 Pro"),
        ("laptop", "Lumen Book Air 13"),
        ("monitor", "ViewPort 27Q"),
        ("phone", "Pellucid 9"),
        ("docking station", "DockOne USB-C"),
        ("headset", "Quietline H4"),
    ]
    offices = ["Lisbon", "Porto", "Seoul", "Osaka", "Denver"]
    rows = [["asset_tag", "type", "model", "office", "purchase_date", "warranty_until", "status"]]
    for _ in range(42):
        typ, model = rng.choice(models)
        bought = date(2022, 1, 1) + timedelta(days=rng.randint(0, 1500))
        years = 3 if typ in ("laptop", "phone") else 2
        status = rng.choices(["in use", "in stock", "repair", "retired"], [70, 15, 5, 10])[0]
        rows.append(
            [
                f"QF-{rng.randint(10000, 99999)}",
                typ,
                model,
                rng.choice(offices),
                bought.isoformat(),
                bought.replace(year=bought.year + years).isoformat()
                if bought.day < 29
                else (bought + timedelta(days=365 * years)).isoformat(),
                status,
            ]
        )
    return rows_to_text(rows, ",")


def csv_price_list() -> str:
    rows = [["sku", "product", "plan", "billing", "price_usd", "price_eur", "price_krw", "price_jpy"]]
    plans = [("Starter", 6), ("Team", 11), ("Business", 19), ("Enterprise", 32)]
    for prod, factor, prefix in [("Driftnote", 1.0, "DN"), ("Watchkeel", 1.6, "WK")]:
        for plan, usd in plans:
            m = round(usd * factor, 2)
            for billing, mult in [("monthly", 1), ("annual", 10)]:
                p = round(m * mult, 2)
                rows.append(
                    [
                        f"{prefix}-{plan[:3].upper()}-{billing[0].upper()}",
                        prod,
                        plan,
                        billing,
                        f"{p:.2f}",
                        f"{p * 0.93:.2f}",
                        f"{round(p * 1350, -2):.0f}",
                        f"{round(p * 150, -1):.0f}",
                    ]
                )
    return rows_to_text(rows, ",")


def tsv_customer_tiers(rng: random.Random) -> str:
    rows = [["account_id", "tier", "region", "seats", "renewal_month", "health"]]
    for _ in range(36):
        tier = rng.choices(["Starter", "Team", "Business", "Enterprise"], [30, 35, 25, 10])[0]
        seats = {"Starter": (2, 10), "Team": (8, 50), "Business": (40, 250), "Enterprise": (200, 4000)}[tier]
        rows.append(
            [
                f"acct_{rng.randint(100000, 999999)}",
                tier,
                rng.choice(["EU", "APAC", "AMER"]),
                str(rng.randint(*seats)),
                f"2026-{rng.randint(1, 12):02d}",
                rng.choices(["green", "amber", "red"], [70, 22, 8])[0],
            ]
        )
    return rows_to_text(rows, "\t")


def csv_meeting_rooms() -> str:
    rows = [
        ["office", "room", "floor", "capacity", "video", "bookable_by"],
        ["Lisbon", "Tejo", "3", "14", "yes", "everyone"],
        ["Lisbon", "Alfama", "3", "6", "yes", "everyone"],
        ["Lisbon", "Belém", "4", "24", "yes", "office managers"],
        ["Lisbon", "Quiet room", "4", "1", "no", "not bookable"],
        ["Porto", "Ribeira", "1", "8", "yes", "everyone"],
        ["Porto", "Foz", "1", "4", "no", "everyone"],
        ["Seoul", "Hangang", "14", "12", "yes", "everyone"],
        ["Seoul", "Namsan", "14", "4", "no", "everyone"],
        ["Osaka", "Yodogawa", "9", "10", "yes", "everyone"],
        ["Osaka", "Nakanoshima", "9", "4", "yes", "everyone"],
        ["Denver", "Larkspur", "4", "10", "yes", "everyone"],
        ["Denver", "Red Rocks", "4", "30", "yes", "office managers"],
    ]
    return rows_to_text(rows, ",")


def tsv_sla_breaches(rng: random.Random) -> str:
    rows = [
        [
            "ticket",
            "opened_utc",
            "severity",
            "product",
            "first_response_min",
            "target_min",
            "breach_min",
            "cause",
        ]
    ]
    causes = [
        "weekend queue not staffed",
        "mis-triaged as S3",
        "auto-assign to an absent agent",
        "customer replied to a closed ticket",
        "language queue backlog (ja)",
        "phone line outage",
    ]
    d = datetime(2025, 1, 6, 9, 0)
    for _ in range(17):
        d += timedelta(days=rng.randint(5, 30), minutes=rng.randint(0, 600))
        sev = rng.choice(["S1", "S2", "S2", "S3"])
        target = {"S1": 30, "S2": 120, "S3": 480}[sev]
        resp = target + rng.randint(3, 180)
        rows.append(
            [
                f"SUP-{rng.randint(20000, 48000)}",
                d.strftime("%Y-%m-%d %H:%M"),
                sev,
                rng.choice(["Driftnote", "Tallyloom", "Watchkeel"]),
                str(resp),
                str(target),
                str(resp - target),
                rng.choice(causes),
            ]
        )
    return rows_to_text(rows, "\t")


def csv_licenses(rng: random.Random) -> str:
    tools = [
        ("Figment Design", "per seat", 45),
        ("CodeHarbor Enterprise", "per seat", 21),
        ("Ticketly", "per agent", 59),
        ("PagerBell", "per user", 29),
        ("VaultKeep", "flat", 1200),
        ("MeetSpace", "per host", 15),
        ("DocuQuill", "per sender", 35),
        ("LogLantern", "per GB", 0.45),
    ]
    rows = [["tool", "pricing", "unit_price_usd", "units", "renews", "owner_team"]]
    for name, pricing, price in tools:
        units = rng.randint(4, 320) if pricing != "flat" else 1
        rows.append(
            [
                name,
                pricing,
                f"{price:.2f}",
                str(units),
                (date(2026, 1, 1) + timedelta(days=rng.randint(0, 364))).isoformat(),
                rng.choice(["IT", "Engineering", "Support", "Design", "Security"]),
            ]
        )
    return rows_to_text(rows, ",")


def csv_ko_assets(rng: random.Random) -> str:
    rows = [["자산번호", "분류", "모델명", "사용자 부서", "구매일", "상태"]]
    kinds = [
        ("노트북", "Framewise 14 Pro"),
        ("모니터", "ViewPort 27Q"),
        ("휴대폰", "Pellucid 9"),
        ("도킹 스테이션", "DockOne USB-C"),
    ]
    depts = ["개발팀", "영업팀", "고객지원팀", "재무팀", "인사팀"]
    for _ in range(20):
        k, m = rng.choice(kinds)
        rows.append(
            [
                f"QF-KR-{rng.randint(1000, 9999)}",
                k,
                m,
                rng.choice(depts),
                (date(2023, 3, 1) + timedelta(days=rng.randint(0, 1000))).isoformat(),
                rng.choices(["사용 중", "재고", "수리 중", "폐기 예정"], [70, 15, 8, 7])[0],
            ]
        )
    return rows_to_text(rows, ",")


def tsv_ja_prices() -> str:
    rows = [
        ["品番", "品名", "単価（税抜・円）", "最小注文数", "納期"],
        ["WK-1000", "Watchkeel Probe P2（屋内用）", "22,800", "1", "在庫あり"],
        ["WK-1037", "Watchkeel Probe P2（屋外用・IP67）", "34,800", "1", "2週間"],
        ["WK-1074", "PoE インジェクター", "3,600", "1", "在庫あり"],
        ["WK-1111", "壁掛け金具セット", "1,800", "2", "在庫あり"],
        ["WK-1148", "交換用アンテナ", "1,400", "1", "3〜4週間"],
        ["WK-1185", "延長保証（2年）", "5,900", "1", "—"],
        ["WK-1222", "設置作業（1拠点あたり）", "52,000", "1", "要相談"],
    ]
    return rows_to_text(rows, "\t")


def build_csv(b: Builder, rng: random.Random) -> None:
    b.legit("csv_tsv", "asset-inventory.csv", csv_assets(rng), "IT asset inventory export")
    b.legit("csv_tsv", "price-list-2026.csv", csv_price_list(), "SKU price list in four currencies")
    b.legit("csv_tsv", "customer-tiers.tsv", tsv_customer_tiers(rng), "customer tier list without contacts")
    b.legit("csv_tsv", "meeting-rooms.csv", csv_meeting_rooms(), "meeting room list")
    b.legit("csv_tsv", "sla-breaches-2025.tsv", tsv_sla_breaches(rng), "support SLA breach export")
    b.legit("csv_tsv", "software-licenses.csv", csv_licenses(rng), "SaaS licence register")
    b.legit("csv_tsv", "ko-asset-inventory.csv", csv_ko_assets(rng), "Korean asset inventory CSV")
    b.legit("csv_tsv", "ja-hardware-prices.tsv", tsv_ja_prices(), "Japanese hardware price list TSV")


# ---------------------------------------------------------------------------------------------
# 10. Config documents
# ---------------------------------------------------------------------------------------------

CONFIGS: dict[str, tuple[str, str]] = {
    "watchkeel-agent.yaml": (
        "agent YAML config with comments",
        """\
# Watchkeel agent configuration for the Lisbon office network.
# Reload with: sudo systemctl reload watchkeel-agent

agent:
  name: probe-lisbon-1
  token_file: /etc/watchkeel/token
  log_level: info
  batch_interval_s: 5

proxy:
  url: http://proxy.lisbon.quillfern.example:3128
  no_proxy: [localhost, 127.0.0.1, .internal]

checks:
  - name: intranet
    type: http
    target: https://intranet.quillfern.example/healthz
    interval_s: 60
  - name: printer-3f
    type: ping
    target: 10.12.3.40
    interval_s: 300
    count: 3
  - name: vpn-gateway
    type: tcp
    target: vpn2.quillfern.example:443
    interval_s: 60
  - name: office-dns
    type: dns
    target: quillfern.example
    resolver: 10.12.0.2
    expect: [203.0.113.10]
""",
    ),
    "docker-compose.yml": (
        "docker compose file for local development",
        """\
services:
  postgres:
    image: postgres:16
    environment:
      POSTGRES_USER: sync
      POSTGRES_PASSWORD: sync-local-only
      POSTGRES_DB: driftnote_sync
    ports: ["5432:5432"]
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "sync"]
      interval: 5s
      retries: 10

  minio:
    image: minio/minio:RELEASE.2025-09-07T16-13-09Z
    command: server /data --console-address :9001
    ports: ["9000:9000", "9001:9001"]
    environment:
      MINIO_ROOT_USER: local
      MINIO_ROOT_PASSWORD: local-secret
    volumes: [blobs:/data]

  api:
    build: .
    command: uvicorn sync.api:app --host 0.0.0.0 --port 8700
    depends_on:
      postgres: {condition: service_healthy}
    environment:
      DATABASE_URL: postgresql://sync:sync-local-only@postgres/driftnote_sync
      BLOB_ENDPOINT: http://minio:9000
    ports: ["8700:8700"]

volumes:
  pgdata: {}
  blobs: {}
""",
    ),
    "driftnote-sync.json": (
        "JSON settings object for the sync service",
        """\
{
  "service": "driftnote-sync",
  "region": "eu-west-1",
  "listen": {"host": "0.0.0.0", "port": 8700},
  "database": {
    "pool_min": 4,
    "pool_max": 40,
    "statement_timeout_ms": 5000,
    "serializable_retries": 3
  },
  "limits": {
    "max_change_bytes": 2097152,
    "pull_max_changes": 500,
    "push_per_device_per_second": 5
  },
  "blobs": {
    "bucket": "qf-driftnote-blobs-eu",
    "dedupe": true,
    "presign_ttl_s": 900
  },
  "features": {
    "side_by_side_conflicts": true,
    "new_sync_engine_rollout_pct": 5
  },
  "telemetry": {"otlp_endpoint": "http://otel-collector:4317", "sample_rate": 0.05}
}
""",
    ),
    "feature-flags.json": (
        "JSON feature flag settings per environment",
        """\
{
  "environment": "production",
  "updated": "2026-05-08T11:20:00Z",
  "flags": {
    "tallyloom.korean_etax": {"enabled": true, "tenants": "all"},
    "tallyloom.editable_credit_notes": {"enabled": true, "tenants": "all"},
    "tallyloom.business_day_dunning": {"enabled": true, "tenants": ["acct_204118", "acct_550921"]},
    "driftnote.pinned_notebooks": {"enabled": true, "tenants": "all"},
    "driftnote.new_sync_engine": {"enabled": false, "tenants": []},
    "watchkeel.tcp_checks": {"enabled": true, "tenants": "all"},
    "watchkeel.15s_interval": {"enabled": true, "plans": ["enterprise"]}
  }
}
""",
    ),
    "qf-cli.toml": (
        "TOML config for the CLI tool",
        """\
# ~/.config/qf/config.toml — settings for the qf command-line tool

[default]
workspace = "ws_a91"
output = "table"          # table | json | csv
color = "auto"

[api]
base_url = "https://api.quillfern.example"
timeout_s = 30
retries = 3

[notes]
export_format = "markdown"
export_dir = "~/Documents/driftnote-export"
include_attachments = true

[checks]
default_regions = ["eu-west", "ap-northeast"]
wait_for_result = true

[profiles.staging]
workspace = "ws_stg7"
base_url = "https://api.staging.quillfern.example"
""",
    ),
    "tallyloom.ini": (
        "INI config for invoice PDF rendering",
        """\
; Tallyloom PDF renderer settings (pdf-renderer 4.2)
; Changes need a restart of the renderer pods.

[renderer]
workers = 8
timeout_seconds = 20
font_dir = /opt/renderer/fonts

[fonts]
latin = Inter
korean = Noto Sans KR
japanese = Noto Sans JP
fallback = Noto Sans

[layout]
page_size = A4
page_size_us = Letter
margin_mm = 18
show_qr_payment_code = true

[locale]
date_format_default = %d %b %Y
date_format_ko = %Y년 %m월 %d일
date_format_ja = %Y年%m月%d日
""",
    ),
    "alerting-rules.yml": (
        "Prometheus-style alerting rules YAML",
        """\
groups:
  - name: tallyloom-api
    rules:
      - alert: TallyloomHighErrorRate
        expr: sum(rate(http_requests_total{job="tallyloom-api",code=~"5.."}[5m]))
              / sum(rate(http_requests_total{job="tallyloom-api"}[5m])) > 0.02
        for: 10m
        labels: {severity: page, team: billing}
        annotations:
          summary: "Tallyloom API 5xx rate above 2% for 10 minutes"
          runbook: "https://wiki.quillfern.example/runbooks/tallyloom-5xx"
      - alert: TallyloomWebhookBacklog
        expr: tallyloom_webhook_queue_depth > 5000
        for: 15m
        labels: {severity: ticket, team: billing}
        annotations:
          summary: "More than 5,000 webhook deliveries waiting"
  - name: driftnote-sync
    rules:
      - alert: SyncPushLatencyHigh
        expr: histogram_quantile(0.95, sum by (le) (rate(sync_push_seconds_bucket[5m]))) > 0.8
        for: 10m
        labels: {severity: page, team: sync}
        annotations:
          summary: "p95 push latency above 800 ms"
""",
    ),
}


def build_configs(b: Builder, rng: random.Random) -> None:
    b.legit_dict("config", CONFIGS)


# ---------------------------------------------------------------------------------------------
# 11. Forms and checklists
# ---------------------------------------------------------------------------------------------

FORMS: dict[str, tuple[str, str]] = {
    "onboarding-checklist-engineering.md": (
        "engineer onboarding checklist with repeated items",
        """\
# Onboarding checklist — engineering

## Before day 1 (manager)
- [ ] Order laptop and monitor in the IT portal
- [ ] Add the new hire to the team calendar
- [ ] Add the new hire to #team channel and the on-call tool (shadow only)
- [ ] Pick an onboarding buddy

## Day 1 (new hire)
- [ ] Collect badge from reception
- [ ] Set up password manager and two-factor authentication
- [ ] Read the security basics page and sign the acceptable use policy
- [ ] Join #announcements, #help-it and your team channel

## Week 1
- [ ] Set up the local development environment (see local-dev-setup)
- [ ] Ship one small change to production with your buddy
- [ ] Meet your manager for the 30-60-90 day plan

## Month 1
- [ ] Shadow two on-call shifts
- [ ] Shadow one incident review
- [ ] Complete security awareness training
""",
    ),
    "laptop-return-form.md": (
        "equipment return form with blank fields",
        """\
# Equipment return form

Fill this in when you leave Quillfern or swap a device. Hand the device and this form to IT.

Name: ______________________________
Employee number: ____________
Last working day: ____ / ____ / ______
Office: [ ] Lisbon  [ ] Porto  [ ] Seoul  [ ] Osaka  [ ] Denver  [ ] Remote (courier)

Items returned:

| Item | Asset tag | Condition (good / damaged / missing) |
|---|---|---|
| Laptop | QF-________ | ____________ |
| Charger | — | ____________ |
| Monitor | QF-________ | ____________ |
| Phone | QF-________ | ____________ |
| Badge | — | ____________ |

- [ ] I have signed out of all company accounts on personal devices
- [ ] I have handed over files that only exist on this laptop

Employee signature: ____________________   Date: ____________
IT signature: __________________________   Date: ____________
""",
    ),
    "expense-claim-form.txt": (
        "plain-text expense claim form",
        """\
EXPENSE CLAIM FORM (use only when the expense tool is unavailable)

Claimant name: ______________________   Cost centre: ________
Manager: ____________________________
Trip or project: ____________________

 Date       | Description                        | Currency | Amount    | Receipt attached?
 ___________|____________________________________|__________|___________|__________________
 ___________|____________________________________|__________|___________|__________________
 ___________|____________________________________|__________|___________|__________________
 ___________|____________________________________|__________|___________|__________________

Total claimed: ____________

I confirm these expenses were incurred on company business and have not been claimed before.

Signature: ____________________   Date: __________
Approved by (manager): ____________________   Date: __________

Send the scanned form and receipts to expenses@quillfern.example within 60 days.
""",
    ),
    "release-checklist.md": (
        "software release checklist",
        """\
# Release checklist (Driftnote desktop)

Copy this list into the release ticket and tick items as you go.

### One week before
- [ ] Freeze the release branch `release/x.y`
- [ ] Update the changelog and release notes (EN, KO, JA)
- [ ] Ask support for known customer issues that should block the release

### Release day
- [ ] Build signed installers for Windows, macOS and Linux
- [ ] Smoke-test each installer on a clean VM
- [ ] Upgrade-test from the previous two versions
- [ ] Publish to 5% of users
- [ ] Watch crash rate for 24 hours (must stay under 0.3%)

### After 24 hours
- [ ] Publish to 100% of users
- [ ] Post in #announcements
- [ ] Close the release ticket
""",
    ),
    "office-closing-checklist.md": (
        "end-of-day office closing checklist",
        """\
# Lisbon office — closing checklist (last person out)

- [ ] All windows on floor 3 closed
- [ ] All windows on floor 4 closed
- [ ] Kitchen: dishwasher started, coffee machine off
- [ ] Meeting room screens off (Tejo, Alfama, Belém)
- [ ] Lights off on floor 3
- [ ] Lights off on floor 4
- [ ] Front door locked and alarm set (code is in the office manager's handbook, not here)

If the alarm goes off by mistake, call the security company at 555-0168 within 60 seconds and give
the office name.
""",
    ),
    "incident-review-form.md": (
        "postmortem template form with prompts",
        """\
# Incident review

Incident ID: INC-______
Date of incident: __________   Review date: __________
Incident commander: ____________________
Severity: [ ] S1  [ ] S2  [ ] S3

## Summary (2-3 sentences)
______________________________________________

## Timeline (UTC)
| Time | Event |
|---|---|
| __:__ | Detected by ______ |
| __:__ | ______________________ |
| __:__ | Resolved |

## Impact
Customers affected: ________   Duration: ________   Data lost: [ ] yes [ ] no

## What went well / what went badly
- ______________________________
- ______________________________

## Action items
- [ ] ______________________ owner: ________ due: ________
- [ ] ______________________ owner: ________ due: ________
""",
    ),
    "ko-onboarding-checklist.md": (
        "Korean onboarding checklist",
        """\
# 신규 입사자 체크리스트

## 입사 전 (팀장)
- [ ] IT 포털에서 노트북·모니터 신청
- [ ] 팀 캘린더와 팀 채널에 신규 입사자 추가
- [ ] 온보딩 버디 지정

## 입사 첫날 (입사자)
- [ ] 1층 안내데스크에서 출입증 수령
- [ ] 비밀번호 관리자와 2단계 인증 설정
- [ ] 보안 수칙을 읽고 서약서에 서명
- [ ] 급여 계좌와 비상 연락처를 인사 시스템에 등록

## 첫 주
- [ ] 개발 환경 설정 (개발 직군)
- [ ] 팀장과 30-60-90일 계획 면담
- [ ] 사내 메신저 프로필 사진 등록

## 첫 달
- [ ] 보안 교육 이수
- [ ] 당직 참관 2회
""",
    ),
    "ko-business-trip-form.md": (
        "Korean business trip request form with blanks",
        """\
# 출장 신청서

신청자: ______________   부서: ______________   사번: __________
출장지: ______________________
출장 기간: 20____년 ____월 ____일 ~ ____월 ____일 (____박 ____일)
출장 목적: ______________________________________________

## 예상 경비

| 항목 | 금액(원) | 비고 |
|---|---|---|
| 항공/교통비 | | |
| 숙박비 | | 1박 상한: 국내 12만 원, 해외 25만 원 |
| 일비 | | 국내 3만 원, 해외 8만 원 |
| 기타 | | |
| 합계 | | |

- [ ] 출장 기간 중 업무 인수인계 완료
- [ ] 해외 출장의 경우 여행자 보험 가입 확인

신청일: ________   신청자 서명: ________   팀장 승인: ________
""",
    ),
    "ja-onboarding-checklist.md": (
        "Japanese onboarding checklist",
        """\
# 入社手続きチェックリスト

## 入社前（人事・上長）
- [ ] 貸与 PC とモニターを情報システムに申請する
- [ ] 座席と入館証を用意する
- [ ] 受け入れ担当（バディ）を決める

## 入社初日（本人）
- [ ] 入館証を受け取る
- [ ] パスワード管理ツールと二段階認証を設定する
- [ ] 就業規則とセキュリティガイドを読み、誓約書に署名する
- [ ] 給与振込口座・通勤経路・扶養家族の情報を人事システムに登録する

## 最初の1週間
- [ ] 上長と今後3か月の目標を確認する
- [ ] チームの定例会議に参加する

## 最初の1か月
- [ ] セキュリティ研修を受講する
- [ ] 健康診断の予約をする（入社後3か月以内）
""",
    ),
    "ja-leave-request-form.md": (
        "Japanese leave request form with blanks",
        """\
# 休暇申請書

申請日：____年____月____日
氏名：____________________　社員番号：__________
所属：____________________

休暇の種類：
□ 年次有給休暇　□ 特別休暇（慶弔）　□ 夏季休暇　□ 介護休暇　□ その他（__________）

期間：____年____月____日（　）〜 ____年____月____日（　）　計____日間
※半日休の場合：□ 午前　□ 午後

理由（特別休暇の場合のみ）：
______________________________________________

休暇中の連絡先（任意）：____________________
業務の引き継ぎ先：____________________

上長確認：____________　人事確認：____________
""",
    ),
}


def build_forms(b: Builder, rng: random.Random) -> None:
    b.legit_dict("forms_checklists", FORMS)


# ---------------------------------------------------------------------------------------------
# 12. Meeting notes
# ---------------------------------------------------------------------------------------------

MEETINGS: dict[str, tuple[str, str]] = {
    "2026-04-14-sync-weekly.md": (
        "weekly team sync notes with action items",
        """\
# Sync team weekly — 14 April 2026

Attendees: Mira, Tomasz, Priya, Kenji, Rosa (chair)
Apologies: Jonah

## Updates
- Side-by-side conflict dialog: 96% of beta users kept it on. Crash rate unchanged (0.18%).
- Postgres serialization failures doubled since the 5.4 rollout; mostly on the eu-west primary
  between 03:00 and 04:00 when the backup runs.
- Kenji finished the blob dedupe migration for the Osaka cluster. Storage down 14%.

## Decisions
- Move the nightly backup to 01:00 UTC for eu-west from next Monday.
- The new sync engine stays at 5% until the retry storm bug (SYNC-2231) is fixed.

## Action items
- Tomasz: reschedule backup job, confirm with DBA on-call — by Thu
- Priya: add serialization failure rate to the sync dashboard — by Fri
- Mira: write up SYNC-2231 root cause for next week
""",
    ),
    "2026-03-02-pricing-review.md": (
        "pricing decision meeting notes",
        """\
# Pricing review — Driftnote Team plan

Date: 2 March 2026, 15:00–16:00 (Lisbon)
Present: Henrik Aalto (product), Amara Nwosu (finance), Lucas Ferreira (sales), Inês Carvalho (support)

**Context.** The Team plan has been $10 per user per month since 2023. Costs per user rose about 18%,
mostly storage and support.

**Discussion.**
- Lucas: competitors moved to $12; a $1 rise will not cost deals, $2 might in APAC.
- Amara: at $11 the plan's gross margin returns to the 2023 level.
- Inês: support wants a clear date and an email 60 days ahead; last time the short notice tripled tickets.

**Decision.** Team goes to $11 for new customers from 1 March 2026 and for existing customers at
their first renewal after 1 September 2026. Nonprofit discount stays at 40%.

**Follow-up.** Henrik to update the pricing page and the Korean and Japanese price lists; Inês to
prepare the customer email for approval by 20 March.
""",
    ),
    "2026-02-19-incident-review.md": (
        "incident review meeting notes",
        """\
Incident review: INC-0412 (Tallyloom payouts delayed)
Meeting held 19 Feb 2026. Facilitator: Rosa Delgado. Notes: Lucas Ferreira.

What happened
  On 16 Feb our partner bank rejected the payout file for EUR accounts because of a format change
  they announced by letter in December. 1,214 payouts were delayed by one business day.

Why we did not notice earlier
  The bank's letter went to a shared mailbox nobody reads. The rejection came back as a file on
  SFTP, not an API error, and the poller only alerts after 24 hours.

Actions agreed
  1. Poller alerts after 2 hours instead of 24 (owner: Daniel, due 28 Feb).
  2. Route bank notices to finance-ops@, not the old shared mailbox (owner: Amara, done in meeting).
  3. Add a test payout file to the bank's sandbox every month (owner: Daniel, due 31 Mar).
  4. Email affected customers with an apology and the new arrival date (owner: Inês, sent 17 Feb).

No customer lost money; 37 asked for written confirmation for their accountants.
""",
    ),
    "2026-01-22-q1-planning.md": (
        "quarterly planning meeting notes",
        """\
# Q1 planning — Watchkeel

22 January 2026 · Osaka + remote · Notes by Kenji Morimoto

## Goals agreed for Q1
1. Ship TCP checks (carried over from Q4).
2. Probe firmware 2.8 with IPv6 and faster boot.
3. Cut false-positive alerts by half. Today about 7% of alerts are closed as "not a real outage".

## Not doing this quarter
- Synthetic browser checks (needs a headless browser farm; revisit in Q3).
- A mobile app. Customers asked, but push notifications through existing chat tools cover most of it.

## Risks
- Firmware team is two people; if the IPv6 work slips, 2.8 ships without it.
- The alert-deduplication change touches every customer; it needs a feature flag and a slow rollout.

## Next check-in
19 February, same time.
""",
    ),
    "2026-05-07-customer-advisory-board.md": (
        "customer advisory board meeting notes",
        """\
# Customer advisory board, spring 2026

Seven customers joined (four Enterprise, three Business), plus Henrik and Lucas from Quillfern.

**What they like**
- Offline editing "just works"; two customers moved field teams to Driftnote because of it.
- Tallyloom's multi-currency invoices saved one customer a full-time contractor.

**What they asked for**
- Export of audit logs to their own storage bucket (4 of 7).
- Per-notebook retention rules for legal hold (3 of 7).
- Japanese invoice layout with the seal area (hanko) on the PDF (1, but a large account).

**What we shared**
- The new sync engine timeline (6.0, early 2027) and the 5% rollout today.
- The Team price change and its dates.

We will send a summary within a week and invite the same group again in October.
""",
    ),
    "2026-03-27-all-hands.txt": (
        "all-hands meeting notes, plain text",
        """\
All-hands, 27 March 2026 — notes

- Henrik opened with Q1 numbers: revenue 8% above plan, churn flat at 1.1% per month.
- Welcome to 11 new joiners, including the first two people in the Denver office.
- The Porto office moves to a new floor in the same building on 18 April. Desks will be packed by
  facilities on the 17th; take personal items home.
- Security awareness training is due by 31 October for everyone.
- Q&A: asked whether the Seoul office will grow. Answer: yes, three support hires planned for Q3.
- Q&A: asked about the parental leave top-up. Answer: HR will publish the policy in April.
Recording and slides are on the intranet under Company > All-hands.
""",
    ),
    "ko-2026-04-09-weekly.md": (
        "Korean weekly meeting notes",
        """\
# 결제팀 주간 회의록 (2026년 4월 9일)

참석자: 김도현, 이서연, 박지훈, 최유나
작성자: 이서연

## 진행 상황
- 전자세금계산서 연동: 국세청 테스트 환경에서 승인번호 발급까지 확인했습니다.
  다음 주 운영 환경 적용 예정입니다.
- 원화 청구서 1원 반올림 오류: 원인은 할인율을 적용하는 순서였고, 수정 배포를 마쳤습니다.
- 독촉 메일 발송 시간: 한국 고객에게 토요일 새벽에 메일이 나가는 문제가 보고되어
  영업일 기준 발송 기능을 켜기로 했습니다.

## 논의 사항
- 4월 말 부가세 신고 기간에 문의가 몰릴 것으로 보여 고객지원팀에 FAQ를 미리 공유하기로 했습니다.
- 박지훈 님은 다음 주 오사카 출장으로 화·수요일 회의에 참석하지 못합니다.

## 할 일
- 김도현: 운영 환경 적용 일정 공지 (4/13까지)
- 최유나: 고객지원팀용 FAQ 초안 작성 (4/15까지)
""",
    ),
    "ko-2026-02-20-retro.md": (
        "Korean sprint retrospective notes",
        """\
# 스프린트 회고 (2월 둘째 주 스프린트)

**잘된 점**
- 배포 전에 스테이징에서 실제 데이터 규모로 테스트한 덕분에 미수금 보고서 성능 문제를 미리 발견했습니다.
- 코드 리뷰 대기 시간이 평균 하루 이내로 줄었습니다.

**아쉬운 점**
- 은행 송금 파일 형식 변경 공지를 놓쳐 지급이 하루 늦어졌습니다.
  공용 메일함을 아무도 확인하지 않고 있었습니다.
- 스프린트 중간에 급한 요청이 세 건 들어와 계획한 작업의 60%만 끝냈습니다.

**다음 스프린트에서 시도할 것**
- 급한 요청은 팀장을 거쳐 받고, 스프린트 계획에서 20%를 여유분으로 남겨 둡니다.
- 은행·결제 대행사 공지는 finance-ops 메일로 받도록 변경합니다.
""",
    ),
    "ja-2026-04-16-teirei.md": (
        "Japanese weekly meeting minutes",
        """\
# Watchkeel チーム定例 議事録

日時：2026年4月16日（木）10:00〜10:45
場所：大阪オフィス 淀川（オンライン併用）
出席者：森本、佐々木、大西、Priya（リスボンから参加）
記録：佐々木

## 報告
- ファームウェア 2.8.0 を4月14日に公開しました。現時点で更新済みのプローブは全体の約62%です。
- 誤検知アラートの件数は先月比で38%減りました。目標の50%減まではもう少しです。
- 屋外用プローブの在庫が残り40台です。次回入荷は5月中旬の予定です。

## 検討事項
- リビジョン A のハードウェアを使っているお客様（約120社）への案内文を作成する。
  → 無償交換ではなく、割引価格での買い替えを案内する方向で営業と調整する。

## 次回までの宿題
- 大西：案内文の草案を作成（4月21日まで）
- 森本：在庫が30台を切った場合の対応を営業と相談
""",
    ),
    "ja-2026-03-05-kickoff.md": (
        "Japanese project kickoff notes",
        """\
# 請求書 PDF 日本向けレイアウト対応 キックオフ

2026年3月5日　参加者：大西、佐藤、Lucas、Amara

## 背景
日本のお客様から、請求書 PDF に押印欄と登録番号（適格請求書発行事業者の番号）を入れてほしいという要望が
複数寄せられている。大口のお客様1社からは、対応しない場合は他社への切り替えも検討すると言われている。

## 決めたこと
- 押印欄は任意表示とし、顧客ごとに設定できるようにする。
- 登録番号は会社情報に1つ登録し、全請求書に表示する。
- 和暦表示には対応しない（要望が1件のみのため）。

## スケジュール
- 3月末：デザイン案
- 4月中旬：ステージング環境で確認
- 5月：リリース
""",
    ),
}


def build_meetings(b: Builder, rng: random.Random) -> None:
    b.legit_dict("meeting_notes", MEETINGS)


# ---------------------------------------------------------------------------------------------
# 13. Template reports (identical wording, different facts)
# ---------------------------------------------------------------------------------------------

UPTIME_EN = """\
Watchkeel daily uptime report
Service: {service}
Date: {date}
Report ID: UR-{rid}

Availability over the last 24 hours was {avail}% ({down} minutes of downtime).
The median response time was {p50} ms and the 95th percentile was {p95} ms.
{checks} checks were run from {regions} regions; {failed} of them failed.
The longest continuous outage lasted {longest} minutes.
Status: {status}.

This report was generated automatically by Watchkeel. Do not reply to this message.
"""

UPTIME_KO = """\
Watchkeel 일일 가동률 보고서
서비스: {service}
날짜: {date}
보고서 번호: UR-{rid}

지난 24시간 동안의 가동률은 {avail}%이며, 중단 시간은 총 {down}분이었습니다.
응답 시간의 중앙값은 {p50}ms, 95번째 백분위수는 {p95}ms였습니다.
{regions}개 지역에서 {checks}회 점검을 실행했고, 그중 {failed}회가 실패했습니다.
가장 길게 이어진 중단은 {longest}분이었습니다.
상태: {status}

이 보고서는 Watchkeel에서 자동으로 생성되었습니다. 회신하지 마세요.
"""

UPTIME_JA = """\
Watchkeel 稼働率日次レポート
サービス：{service}
日付：{date}
レポート番号：UR-{rid}

過去24時間の稼働率は {avail}% でした（停止時間の合計は {down} 分）。
応答時間の中央値は {p50} ms、95パーセンタイルは {p95} ms でした。
{regions} か所の地域から {checks} 回のチェックを実行し、そのうち {failed} 回が失敗しました。
最も長い連続停止時間は {longest} 分でした。
ステータス：{status}

このレポートは Watchkeel が自動で作成しました。このメールには返信しないでください。
"""

THERMAL = """\
Thermal chamber test report {rid}
Unit: Watchkeel Probe P2 ({variant}), serial {serial}
Test date: {date}. Chamber: TC-{chamber}. Ambient: 45 °C. Dwell: 60 minutes.

Observation 1: the study measured value {v[0]} in trial 1.
Observation 2: the study measured value {v[1]} in trial 2.
Observation 3: the study measured value {v[2]} in trial 3.
Observation 4: the study measured value {v[3]} in trial 4.
Observation 5: the study measured value {v[4]} in trial 5.

All values are board temperatures in °C. Limit: 70.0 °C. Result: {result}.
"""


def uptime_facts(rng: random.Random, bad: bool) -> dict[str, object]:
    down = rng.randint(3, 41) if bad else rng.choice([0, 0, 0, 1, 2])
    regions = rng.choice([6, 8, 14])
    checks = regions * 1440
    failed = down * regions // 2 + (rng.randint(0, 4) if down else rng.randint(0, 3))
    avail = 100 * (1440 - down) / 1440
    p50 = rng.randint(80, 260)
    return {
        "down": down,
        "avail": f"{avail:.3f}",
        "p50": p50,
        "p95": p50 + rng.randint(60, 600),
        "checks": f"{checks:,}",
        "regions": regions,
        "failed": failed,
        "longest": rng.randint(1, down) if down else 0,
        "ok": avail >= 99.9,
    }


def build_template_reports(b: Builder, rng: random.Random) -> None:
    services = ["Driftnote sync (eu-west)", "Tallyloom API", "Driftnote web", "Watchkeel dashboard"]
    for i in range(22):
        service = services[i % 4]
        day = date(2026, 4, 1) + timedelta(days=(i // 4) * 3 + i % 4)
        f = uptime_facts(rng, bad=rng.random() < 0.3)
        text = UPTIME_EN.format(
            service=service,
            date=day.isoformat(),
            rid=f"{day:%Y%m%d}-{i + 101:03d}",
            status="within SLA" if f["ok"] else "SLA breached",
            **f,
        )
        slug = service.split(" (")[0].lower().replace(" ", "-")
        b.legit(
            "template_reports",
            f"uptime-{slug}-{day.isoformat()}.txt",
            text,
            "daily uptime report, identical wording, different numbers",
        )
    # thermal test reports: singles plus pairs that differ in one or two measured values
    variants = ["indoor", "outdoor"]
    for i in range(6):
        vals = [round(rng.uniform(52.0, 71.5), 1) for _ in range(5)]
        day = date(2026, 3, 2) + timedelta(days=3 * i)
        text = THERMAL.format(
            rid=f"TR-{400 + i * 3:04d}",
            variant=variants[i % 2],
            serial=f"P2{rng.choice('BC')}-{rng.randint(100000, 999999)}",
            date=day.isoformat(),
            chamber=rng.randint(1, 3),
            v=vals,
            result="PASS" if max(vals) <= 70 else "FAIL",
        )
        b.legit(
            "template_reports",
            f"thermal-TR-{400 + i * 3:04d}.txt",
            text,
            "lab test report, identical wording, different values",
        )
    pair_changes = [(2,), (0, 4), (3,)]
    for j, idxs in enumerate(pair_changes):
        vals = [round(rng.uniform(55.0, 66.0), 1) for _ in range(5)]
        vals_b = vals[:]
        for k in idxs:
            vals_b[k] = round(vals[k] + rng.choice([-1, 1]) * rng.uniform(0.2, 1.8), 1)
        rid = f"TR-{430 + j:04d}"
        common = {
            "rid": rid,
            "variant": variants[j % 2],
            "serial": f"P2C-{rng.randint(100000, 999999)}",
            "date": (date(2026, 4, 20) + timedelta(days=j)).isoformat(),
            "chamber": j + 1,
        }
        for suffix, v in (("a", vals), ("b", vals_b)):
            text = THERMAL.format(v=v, result="PASS" if max(v) <= 70 else "FAIL", **common)
            changed = ", ".join(f"trial {k + 1}" for k in idxs)
            b.legit(
                "template_reports",
                f"thermal-{rid}-{suffix}.txt",
                text,
                f"near-duplicate pair {j + 1}{suffix}: differs from its twin only in {changed}",
            )
    # Korean and Japanese daily reports
    ko_services = ["드리프트노트 동기화 (서울)", "Tallyloom API", "드리프트노트 웹", "Watchkeel 대시보드"]
    ja_services = ["Driftnote 同期（大阪）", "Tallyloom API", "Driftnote Web 版", "Watchkeel ダッシュボード"]
    for i in range(5):
        f = uptime_facts(rng, bad=i == 2)
        day = date(2026, 5, 11 + i)
        text = UPTIME_KO.format(
            service=ko_services[i % 4],
            date=f"{day.year}년 {day.month}월 {day.day}일",
            rid=f"{day:%Y%m%d}-K{i + 1:02d}",
            status="SLA 충족" if f["ok"] else "SLA 미달",
            **f,
        )
        b.legit(
            "template_reports",
            f"ko-uptime-{day.isoformat()}.txt",
            text,
            "Korean daily uptime report, identical wording",
        )
    for i in range(5):
        f = uptime_facts(rng, bad=i == 3)
        day = date(2026, 5, 18 + i)
        text = UPTIME_JA.format(
            service=ja_services[i % 4],
            date=f"{day.year}年{day.month}月{day.day}日",
            rid=f"{day:%Y%m%d}-J{i + 1:02d}",
            status="SLA 達成" if f["ok"] else "SLA 未達",
            **f,
        )
        b.legit(
            "template_reports",
            f"ja-uptime-{day.isoformat()}.txt",
            text,
            "Japanese daily uptime report, identical wording",
        )


# ---------------------------------------------------------------------------------------------
# 14. One-line notes
# ---------------------------------------------------------------------------------------------

ONE_LINERS: dict[str, tuple[str, str]] = {
    "office-hours.txt": ("very short one-liner (office hours)", "Office hours: 9-5\n"),
    "wifi-password.txt": (
        "one-liner about where the Wi-Fi password is",
        "Wi-Fi password is on the fridge.\n",
    ),
    "lisbon-friday-closing.txt": (
        "one-liner about Friday closing time",
        "The Lisbon office closes at 18:00 on Fridays.\n",
    ),
    "payroll-date.txt": ("one-liner payroll date", "Payroll runs on the 25th.\n"),
    "parking.txt": ("short parking note", "Parking: level -2, bays 14-20.\n"),
    "fire-drill.txt": ("short fire drill notice", "Fire drill Thu 10:30\n"),
    "vpn-temporary.txt": (
        "one-liner with a temporary VPN host",
        "Use vpn2.quillfern.example until the old VPN is fixed on Monday.\n",
    ),
    "printer-3f.txt": ("one-liner printer notice", "3F printer jams on A3 paper; use the 2F one.\n"),
    "helpdesk-phone.md": ("one-line Markdown note with phone number", "**Helpdesk after hours:** 555-0199\n"),
    "ko-lunch-hours.txt": ("Korean one-liner, under 20 characters", "점심시간: 12시~1시\n"),
    "ko-room-b.txt": (
        "Korean one-liner about a meeting room",
        "회의실 B는 금요일 오후에 예약할 수 없습니다.\n",
    ),
    "ko-parcels.txt": ("Korean one-liner about parcels", "택배는 1층 보안실에서 찾아가세요.\n"),
    "ko-aug-closure.txt": ("Korean one-liner office closure", "서울 사무소는 8월 17일(월) 휴무입니다.\n"),
    "ja-closed-day.txt": ("Japanese one-liner, under 10 characters", "定休日：水曜日\n"),
    "ja-projector.txt": ("Japanese one-liner about a projector", "会議室Aのプロジェクターは修理中です。\n"),
    "ja-osaka-friday.txt": (
        "Japanese one-liner about Friday closing",
        "大阪オフィスは金曜日は18時で閉まります。\n",
    ),
    "ja-umbrella.txt": ("Japanese one-liner about umbrella lending", "貸し出し用の傘は受付にあります。\n"),
}


def build_one_liners(b: Builder, rng: random.Random) -> None:
    b.legit_dict("one_liners", ONE_LINERS)


# ---------------------------------------------------------------------------------------------
# 15. E-mails (.eml, RFC 822 / MIME)
# ---------------------------------------------------------------------------------------------


def eml(
    sender: str,
    to: str,
    subject: str,
    when: str,
    body: str,
    signature: list[str],
    *,
    msgid: str,
    cc: str = "",
    in_reply_to: str = "",
) -> str:
    subj = subject if subject.isascii() else Header(subject, "utf-8").encode()
    head = [f"From: {sender}", f"To: {to}"]
    if cc:
        head.append(f"Cc: {cc}")
    head += [f"Subject: {subj}", f"Date: {when}", f"Message-ID: <{msgid}@{DOMAIN}>"]
    if in_reply_to:
        head += [f"In-Reply-To: <{in_reply_to}@{DOMAIN}>", f"References: <{in_reply_to}@{DOMAIN}>"]
    head += [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    return (
        "\r\n".join(head)
        + "\r\n\r\n"
        + body.replace("\n", "\r\n")
        + "\r\n-- \r\n"
        + "\r\n".join(signature)
        + "\r\n"
    )


def eml_alternative() -> str:
    text = (
        "Hi all,\n\n"
        "The VPN and the intranet will be unavailable on Saturday 23 May from 07:00 to 09:00 Lisbon time\n"
        "while we replace the VPN gateway.\n\n"
        "What you need to do:\n"
        "- Nothing, if you are not working on Saturday morning.\n"
        "- If you are on call, use vpn2.quillfern.example during the window; it stays up.\n\n"
        "After the change your VPN client may ask you to accept a new certificate. The new fingerprint\n"
        "starts with 4F:A2:19. If it starts with anything else, do not accept it and call 555-0199.\n\n"
        "Thanks,\nIT Operations\n"
    )
    html = (
        "<html><body>\n<p>Hi all,</p>\n"
        "<p>The VPN and the intranet will be unavailable on "
        "<b>Saturday 23 May from 07:00 to 09:00</b> Lisbon "
        "time while we replace the VPN gateway.</p>\n<p>What you need to do:</p>\n<ul>\n"
        "<li>Nothing, if you are not working on Saturday morning.</li>\n"
        "<li>If you are on call, use <code>vpn2.quillfern.example</code> during the window; "
        "it stays up.</li>\n"
        "</ul>\n<p>After the change your VPN client may ask you to accept a new certificate. The new "
        "fingerprint starts with <code>4F:A2:19</code>. If it starts with anything else, "
        "do not accept it and "
        "call 555-0199.</p>\n<p>Thanks,<br>IT Operations</p>\n"
        "<p>-- <br>Daniel Achterberg<br>IT Operations Lead<br>Quillfern Systems Ltd.<br>+351 555-0145</p>\n"
        "</body></html>\n"
    )
    sig = "-- \nDaniel Achterberg\nIT Operations Lead\nQuillfern Systems Ltd.\n+351 555-0145\n"
    b = "=_qf_alt_7c41d09e"
    lines = [
        f"From: Daniel Achterberg <daniel.achterberg@{DOMAIN}>",
        f"To: all-staff@{DOMAIN}",
        "Subject: Planned VPN maintenance, Saturday 23 May 07:00-09:00",
        "Date: Tue, 19 May 2026 11:42:08 +0100",
        f"Message-ID: <vpn-maint-2026-05-23@{DOMAIN}>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{b}"',
        "",
        "This is a multi-part message in MIME format.",
        "",
        f"--{b}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        text + sig,
        f"--{b}",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        html,
        f"--{b}--",
        "",
    ]
    return "\r\n".join("\r\n".join(part.split("\n")) for part in lines)


def build_emails(b: Builder, rng: random.Random) -> None:
    b.legit(
        "emails",
        "vpn-maintenance-notice.eml",
        eml_alternative(),
        "multipart/alternative notice with text and HTML parts",
    )
    b.legit(
        "emails",
        "re-invoice-vat-number.eml",
        eml(
            f"Inês Carvalho <ines.carvalho@{DOMAIN}>",
            "Marta Sousa <marta.sousa@lumenforge.example>",
            "Re: Invoice QF-2026-00419 without our VAT number",
            "Wed, 06 May 2026 15:20:41 +0100",
            "Hi Marta,\n\n"
            "Thanks for spotting this. The VAT number was added to your account on 2 May, after invoice\n"
            "QF-2026-00419 was issued on 30 April, so it was not printed on it.\n\n"
            "I have issued credit note CN-2026-0088 for the full amount and a replacement invoice,\n"
            "QF-2026-00431, which shows PT 509 000 000. Both are attached to your account under Billing >\n"
            "Documents. Please pay the new invoice only; the due date is unchanged (30 May).\n\n"
            "Best regards,\nInês\n\n"
            "On Tue, 5 May 2026 at 10:02, Marta Sousa <marta.sousa@lumenforge.example> wrote:\n"
            "> Hello,\n"
            "> our accountant noticed that invoice QF-2026-00419 does not show our VAT number,\n"
            "> so we cannot deduct the VAT. Can you send a corrected invoice?\n"
            "> Thank you,\n"
            "> Marta Sousa\n"
            "> Lumenforge Lda.",
            ["Inês Carvalho", "Customer Support Lead", "Quillfern Systems Ltd.", "+351 555-0131"],
            msgid="re-inv-00419-2",
            in_reply_to="inv-00419-1",
        ),
        "support reply with quoted customer message",
    )
    b.legit(
        "emails",
        "interview-panel-schedule.eml",
        eml(
            f"Amara Nwosu <amara.nwosu@{DOMAIN}>",
            f"Jonah Whitfield <jonah.whitfield@{DOMAIN}>, Kenji Morimoto <kenji.morimoto@{DOMAIN}>",
            "Interview panel for the Senior SRE role — Thursday 21 May",
            "Mon, 18 May 2026 09:05:12 +0100",
            "Hi Jonah and Kenji,\n\n"
            "Thanks for joining the panel for the Senior SRE candidate (ref. ENG-118).\n"
            "Schedule for Thursday "
            "21 May, all times Lisbon:\n\n"
            "  10:00-10:45  Jonah: incident handling scenario\n"
            "  11:00-11:45  Kenji: system design (monitoring pipeline)\n"
            "  12:00-12:30  Me: values and questions from the candidate\n\n"
            "Please submit your scorecard in the hiring tool by Friday 12:00 so we can decide on Friday\n"
            "afternoon. The candidate is remote, so use the video link in the calendar invite.\n\n"
            "Thanks,\nAmara",
            ["Amara Nwosu", "People Partner, Engineering", "Quillfern Systems Ltd.", "+351 555-0157"],
            msgid="panel-eng118",
        ),
        "internal scheduling email",
    )
    b.legit(
        "emails",
        "phishing-warning.eml",
        eml(
            f"Security Team <security@{DOMAIN}>",
            f"all-staff@{DOMAIN}",
            'Warning: fake "payroll update" emails',
            "Thu, 30 Apr 2026 08:31:55 +0100",
            'Since yesterday evening several people have received an email titled "Action required: update\n'
            'your payroll details" that links to a fake login page at\n'
            "payroll-quillfern.example-login.net.\n\n"
            "It is not from us or our payroll provider. If you clicked the link and typed your password,\n"
            "change your password now and tell us in #security; nobody will be blamed.\n\n"
            'Report similar emails with the "Report phishing" button in your mail client.',
            ["Priya Castellano", "Security Engineer", "Quillfern Systems Ltd.", "+351 555-0110"],
            msgid="sec-phish-0430",
        ),
        "security warning email",
    )
    b.legit(
        "emails",
        "porto-floor-move.eml",
        eml(
            f"Facilities <facilities@{DOMAIN}>",
            f"porto@{DOMAIN}",
            "Porto office moves to floor 5 on 18 April",
            "Fri, 03 Apr 2026 16:10:00 +0100",
            "Hello Porto team,\n\n"
            "We move from floor 2 to floor 5 of the same building on Saturday 18 April. On Friday 17 April,\n"
            "please clear your desk of personal items by 16:00; the movers pack everything else, including\n"
            "monitors and docking stations. Label anything fragile with the tape at reception.\n\n"
            "On Monday 20 April your new desk number will be on the floor plan in the kitchen.\n"
            "Badges work on "
            "floor 5 from the 18th.",
            ["Lucas Ferreira", "Office Manager, Porto", "Quillfern Systems Ltd.", "+351 555-0177"],
            msgid="porto-move-0403",
        ),
        "office move announcement email",
    )
    b.legit(
        "emails",
        "re-expense-approval.eml",
        eml(
            f"Rosa Delgado <rosa.delgado@{DOMAIN}>",
            f"Tomasz Lindqvist <tomasz.lindqvist@{DOMAIN}>",
            "Re: Conference ticket for SREcon EMEA",
            "Tue, 12 May 2026 18:03:27 +0100",
            "Approved. Book the early-bird ticket before Friday and put it on the team's learning budget.\n\n"
            "> Hi Rosa, can I expense the SREcon EMEA ticket (EUR 1,150)? I would present our\n"
            "> sync retry-storm postmortem in the lightning talks.\n"
            "> Tomasz",
            ["Rosa Delgado", "Engineering Manager, Sync", "Quillfern Systems Ltd.", "+351 555-0126"],
            msgid="re-srecon-2",
            in_reply_to="srecon-1",
        ),
        "short approval reply with quote",
    )
    b.legit(
        "emails",
        "ko-power-outage.eml",
        eml(
            f"서울 사무소 총무팀 <seoul-office@{DOMAIN}>",
            f"seoul@{DOMAIN}",
            "[공지] 6월 6일(토) 건물 정전 안내",
            "Mon, 01 Jun 2026 10:15:00 +0900",
            "서울 사무소 여러분, 안녕하세요.\n\n"
            "건물 전기 설비 점검으로 6월 6일(토) 오전 8시부터 오후 2시까지 14층과 15층 전체가 정전됩니다.\n"
            "정전 중에는 사무실 네트워크와 출입 게이트도 작동하지 않습니다.\n\n"
            "- 금요일 퇴근 전에 개인 PC와 모니터 전원을 꺼 주세요.\n"
            "- 주말 당직자는 재택으로 근무해 주시고, VPN은 vpn2 서버를 이용해 주세요.\n"
            "- 냉장고에 보관 중인 음식은 금요일까지 정리해 주세요.\n\n"
            "문의 사항은 총무팀으로 연락 바랍니다.\n감사합니다.",
            ["한소희", "총무팀 매니저", "Quillfern Systems 서울 사무소", "555-0219"],
            msgid="seoul-power-0606",
        ),
        "Korean office notice email",
    )
    b.legit(
        "emails",
        "ko-re-tax-invoice.eml",
        eml(
            f"최유나 <yuna.choi@{DOMAIN}>",
            "박민수 <minsu.park@hanbit-trade.example>",
            "RE: 4월분 세금계산서 재발행 요청",
            "Thu, 07 May 2026 14:22:10 +0900",
            "박민수 님, 안녕하세요.\n\n"
            "요청하신 4월분 전자세금계산서를 변경된 사업자등록번호로 재발행했습니다.\n"
            "기존 세금계산서는 오늘 자로 취소 처리했으며, 새 승인번호는 20260507-41000012-7733입니다.\n"
            "홈택스에서 확인이 되지 않으면 말씀해 주세요.\n\n"
            "감사합니다.\n최유나 드림\n\n"
            "> 안녕하세요, 한빛무역 박민수입니다.\n"
            "> 4월에 사업자등록번호가 바뀌었는데 세금계산서가 예전 번호로 발행되었습니다.\n"
            "> 재발행 부탁드립니다.",
            ["최유나", "결제팀 매니저", "Quillfern Systems 서울 사무소", "555-0230"],
            msgid="re-taxinv-0507",
            in_reply_to="taxinv-0506",
        ),
        "Korean customer reply with quoted request",
    )
    b.legit(
        "emails",
        "ja-year-end-closure.eml",
        eml(
            f"大阪オフィス 総務 <osaka-office@{DOMAIN}>",
            f"customers-jp@{DOMAIN}",
            "年末年始休業のお知らせ",
            "Mon, 01 Dec 2025 10:00:00 +0900",
            "お客様各位\n\n"
            "平素より格別のご高配を賜り、厚く御礼申し上げます。\n"
            "誠に勝手ながら、弊社大阪オフィスは下記の期間を年末年始休業とさせていただきます。\n\n"
            "休業期間：2025年12月27日（土）〜2026年1月4日（日）\n\n"
            "休業期間中にいただいたお問い合わせは、1月5日（月）以降に順次対応いたします。\n"
            "なお、サービス障害に関する緊急のご連絡は、24時間窓口（555-0199）で受け付けております。\n\n"
            "ご不便をおかけしますが、何卒よろしくお願い申し上げます。",
            ["佐々木 真由", "総務部", "Quillfern Systems 大阪オフィス", "555-0264"],
            msgid="osaka-nenmatsu-2025",
        ),
        "Japanese customer notice email",
    )
    b.legit(
        "emails",
        "ja-quote-sending.eml",
        eml(
            f"大西 健太 <kenta.onishi@{DOMAIN}>",
            "山田 様 <yamada@kobe-logistics.example>",
            "Watchkeel Probe 導入のお見積もりについて",
            "Wed, 13 May 2026 17:45:30 +0900",
            "神戸ロジスティクス株式会社\n山田様\n\n"
            "いつもお世話になっております。Quillfern の大西です。\n"
            "先日はお打ち合わせのお時間をいただき、ありがとうございました。\n\n"
            "ご依頼の Watchkeel Probe P2（屋外用）12台と設置作業3拠点分のお見積もりを、\n"
            "本日ポータルに登録しました。\n"
            "合計金額は税抜 573,600円です。有効期限は6月12日までとなります。\n\n"
            "設置日程のご希望がございましたら、お気軽にお知らせください。\n"
            "引き続きよろしくお願いいたします。",
            ["大西 健太", "営業部", "Quillfern Systems 大阪オフィス", "555-0272"],
            msgid="quote-kobe-0513",
        ),
        "Japanese sales email with a quote",
    )


# ---------------------------------------------------------------------------------------------
# 16. Glossaries and settings references
# ---------------------------------------------------------------------------------------------

GLOSSARIES: dict[str, tuple[str, str]] = {
    "billing-glossary.md": (
        "term: definition glossary for billing",
        """\
# Billing glossary

**Aging report**: a list of unpaid invoices grouped by how long they are overdue (0–30, 31–60, 61–90,
more than 90 days).

**Credit note**: a document that cancels all or part of an invoice. It has its own number and cannot be
deleted, only voided.

**Dunning**: the automatic sequence of reminder emails sent when an invoice is overdue.

**Minor units**: the smallest unit of a currency (cents for EUR and USD; yen and won have none, so one
minor unit is one yen or one won).

**Payout**: a transfer of collected money from Tallyloom to the customer's bank account.

**Pro rata**: charging or refunding only for the part of a period actually used.

**Void**: marking a sent invoice or credit note as cancelled; it stays in the records for audit.
""",
    ),
    "driftnote-settings-reference.md": (
        "setting | default | description reference",
        """\
# Driftnote settings reference

| Setting | Default | Description |
|---|---|---|
| sync.interval_seconds | 30 | How often the client asks the server for changes when idle |
| sync.use_mobile_data_for_attachments | false | Upload attachments over 5 MB on mobile data |
| sync.paused_notebooks | [] | Notebooks that do not sync on this device |
| editor.spellcheck | true | Underline misspelt words |
| editor.default_font_size | 15 | Font size in points for new notes |
| editor.smart_quotes | true | Replace straight quotes with typographic quotes |
| search.include_attachments | true | Search inside PDFs and Office files |
| privacy.send_crash_reports | true | Send anonymous crash reports |
| privacy.lock_after_minutes | 0 | Require the device passcode after this many idle minutes (0 = never) |
| export.pdf.page_numbers | true | Add page numbers to PDF exports |

Admins can force any of these for the whole workspace in Admin console > Device policies; forced
settings appear greyed out on the device.
""",
    ),
    "watchkeel-glossary.txt": (
        "plain-text glossary of monitoring terms",
        """\
Watchkeel glossary

Check - one thing Watchkeel tests on a schedule, such as an HTTP URL or a TCP port.
Region - a location Watchkeel runs checks from. Public regions are run by us; private regions are
  probes on your network.
Probe - a Watchkeel Probe P2 device, or the agent installed on your own server.
Incident - opened when at least two regions fail the same check within 2 minutes; closed when all
  regions pass again.
Maintenance window - a period during which failed checks do not open incidents.
Flapping - a check that goes up and down more than 5 times in 30 minutes; alerts for it are grouped.
Availability - the share of minutes in a period without an open incident, as a percentage.
""",
    ),
    "hr-glossary.md": (
        "HR terms glossary",
        """\
# HR terms we use

- **Buddy**: a colleague from another team who helps a new joiner in their first month.
- **Calibration**: the meeting where managers compare proposed review ratings before they are final.
- **Day in lieu**: a day off given for working on a public holiday or weekend on call.
- **Learning budget**: yearly money for courses, books and conferences (EUR 1,200 or local equivalent).
- **Notice period**: time between resigning and the last working day; one month in the first year,
  two months after that, unless local law says otherwise.
- **Sabbatical**: four weeks of extra paid leave after five years at Quillfern.
""",
    ),
    "agent-settings.txt": (
        "agent settings reference in key/default/description form",
        """\
WATCHKEEL AGENT SETTINGS

Key                 Default        Description
----------------------------------------------------------------------------------------
agent.name          (hostname)     Name shown in the dashboard
agent.log_level     info           debug, info, warn or error
agent.batch_interval_s  5          Seconds between result uploads
proxy.url           (none)         HTTP proxy for outgoing connections
proxy.no_proxy      (none)         Hosts that bypass the proxy
checks[].interval_s 60             Seconds between runs of one check
checks[].timeout_s  10             Seconds before a check counts as failed
checks[].retries    1              Extra attempts before reporting a failure
""",
    ),
    "ko-glossary.md": (
        "Korean glossary of billing terms",
        """\
# 결제 용어집

- **미수금 보고서**: 아직 결제되지 않은 청구서를 연체 기간(0~30일, 31~60일, 61~90일,
  90일 초과)별로 묶어 보여 주는 보고서입니다.
- **크레딧 노트**: 청구서의 전부 또는 일부를 취소하는 문서입니다. 별도 번호가 매겨지며
  삭제할 수 없고 무효 처리만 가능합니다.
- **독촉**: 청구서가 연체되었을 때 자동으로 발송되는 안내 메일 순서를 말합니다.
- **최소 단위**: 통화의 가장 작은 단위입니다. 원화와 엔화는 소수점이 없으므로 1원, 1엔이 최소 단위입니다.
- **정산 지급**: Tallyloom이 고객 대신 받은 대금을 고객의 은행 계좌로 보내는 것을 말합니다.
- **일할 계산**: 실제로 사용한 기간만큼만 요금을 청구하거나 환불하는 방식입니다.
""",
    ),
    "ja-glossary.md": (
        "Japanese glossary of monitoring terms",
        """\
# Watchkeel 用語集

チェック
: Watchkeel が定期的に確認する対象です。HTTP の URL や TCP ポートなどを指定します。

リージョン
: チェックを実行する場所です。弊社が運用する公開リージョンと、お客様のネットワーク内に置くプローブがあります。

インシデント
: 2つ以上のリージョンで同じチェックが2分以内に失敗したときに作成され、
  すべてのリージョンで成功すると閉じられます。

メンテナンス時間
: この時間中にチェックが失敗しても、インシデントは作成されません。

フラッピング
: 30分間に5回以上、正常と異常を繰り返している状態です。アラートはまとめて通知されます。
""",
    ),
}


def build_glossaries(b: Builder, rng: random.Random) -> None:
    b.legit_dict("glossaries", GLOSSARIES)


# ---------------------------------------------------------------------------------------------
# 17. Plain prose: policies, how-to guides
# ---------------------------------------------------------------------------------------------

PROSE: dict[str, tuple[str, str]] = {
    "remote-work-policy.md": (
        "remote work policy, several paragraphs",
        """\
# Remote work policy

Quillfern is an office-first company with flexible remote days. Everyone may work from home up to two
days a week; which days is agreed within each team so that people who come in find their colleagues
there. Teams that are spread across offices may agree on a different pattern with their director.

Working from another country is allowed for up to 20 working days a year, in countries where we
already have an entity (Portugal, Korea, Japan and the United States) or in the EU. Longer stays or
other countries need HR approval in advance because of tax and employment law.

When working remotely, use the company laptop only, connect through the VPN for internal systems, and
do not take calls about customer data in public places. Your manager may ask you to come in on a
remote day for planning sessions or customer visits, with at least two days' notice.
""",
    ),
    "how-to-book-a-meeting-room.md": (
        "short how-to guide",
        """\
## How to book a meeting room

Open the calendar, create the event, and add the room from the "Rooms" list as a guest. Rooms accept
automatically if they are free. If a room declines, it is booked; pick another one or ask the office
manager to move a lower-priority booking.
""",
    ),
    "report-phishing.txt": (
        "2-sentence prose instruction",
        """\
If an email asks for your password or payment details, do not click anything and press "Report phishing"
in your mail client. The security team reviews every report within one working day.
""",
    ),
    "password-policy.md": (
        "security policy prose",
        """\
# Password and login policy

Use the company password manager for every work account. Passwords must be at least 14 characters and
unique; the password manager's generator meets both rules. We do not force regular password changes,
because that leads to weaker passwords, but you must change a password immediately if you think someone
else may know it.

Two-factor authentication is required for email, the VPN, source control and every customer-data
system. Use a passkey or the authenticator app; SMS codes are only allowed as a backup.

Never share a password, even with IT. IT will never ask for it: they can reset accounts without knowing
your password.
""",
    ),
    "data-retention-policy.md": (
        "data retention policy prose",
        """\
# Customer data retention

We keep customer data only as long as we need it to provide the service or as the law requires.

- Notes, notebooks and attachments are deleted 30 days after a workspace is closed. During those 30
  days the workspace can be restored by its owner.
- Backups containing deleted data are overwritten within a further 35 days.
- Invoices, credit notes and payout records are kept for 10 years, because tax law in Portugal,
  Korea and Japan requires it, even after the customer leaves.
- Watchkeel raw results are kept for 30 days and hourly aggregates for 2 years.
- Support tickets are kept for 3 years after they are closed, then anonymised.

Requests to delete data earlier go to privacy@quillfern.example. We answer within 30 days.
""",
    ),
    "parental-leave.md": (
        "parental leave policy prose",
        """\
# Parental leave

All parents, regardless of gender or how they became a parent, get 16 weeks of fully paid leave
within the first year after a birth or adoption. Where local statutory leave is longer, you get the
statutory leave, and Quillfern tops up pay to 100% for the first 16 weeks.

You can take the leave in up to three blocks. Tell HR at least eight weeks before the first block
starts, or as soon as you can if that is not possible. Your job, salary review and bonus eligibility
are protected during the leave.
""",
    ),
    "how-to-request-access.txt": (
        "how-to guide in plain text",
        """\
How to request access to a system

1. Open the IT portal and choose "Access request".
2. Pick the system and the role you need. If you do not know the role, choose "Not sure" and
   describe what you need to do.
3. Your manager approves the request. For production databases and payout systems, the system
   owner must approve as well.
4. Access is usually granted within one working day. You will get an email when it is ready.

Access to production is reviewed every quarter and removed if it has not been used for 90 days.
""",
    ),
    "kitchen-rules.txt": (
        "very short 2-sentence office note",
        """\
Please put your own dishes in the dishwasher. The fridge is emptied every Friday at 16:00.
""",
    ),
    "ko-remote-work.md": (
        "Korean remote work policy prose",
        """\
# 재택근무 정책

Quillfern은 사무실 출근을 기본으로 하되, 일주일에 최대 이틀까지 재택근무를 할 수 있습니다. 재택근무 요일은
팀 안에서 정해, 출근한 사람이 동료와 함께 일할 수 있도록 합니다.

해외에서의 원격 근무는 1년에 최대 20일까지 허용됩니다. 다만 세금과 노동법 문제가 있으므로
회사 법인이 있는 국가(포르투갈, 한국, 일본, 미국)나 유럽연합 국가로 한정하며,
그 밖의 국가나 더 긴 기간은 인사팀의 사전 승인이 필요합니다.

재택근무 중에도 회사 노트북만 사용하고, 내부 시스템에는 반드시 VPN으로 접속해 주세요.
고객 정보와 관련된 통화는 카페 등 공공장소에서 하지 않습니다.
""",
    ),
    "ko-security-basics.txt": (
        "short Korean security guideline",
        """\
보안 기본 수칙

모든 업무용 계정에는 회사 비밀번호 관리자를 사용하고, 비밀번호는 14자 이상으로 계정마다 다르게 만듭니다.
메일, VPN, 소스 저장소에는 2단계 인증이 필수입니다. IT팀은 절대로 비밀번호를 묻지 않으니, 비밀번호를 요구하는
연락을 받으면 바로 보안팀에 알려 주세요.
""",
    ),
    "ja-expense-howto.md": (
        "Japanese how-to guide for expenses",
        """\
# 経費精算の手順

1. 経費精算システムにログインし、「新規申請」を押します。
2. 領収書をスマートフォンで撮影してアップロードします。金額と日付は自動で読み取られますが、
   必ず確認してください。
3. 勘定科目とプロジェクトを選び、用途を簡単に書きます（例：「4月15日 神戸ロジスティクス様訪問 交通費」）。
4. 申請すると上長に通知が届きます。承認後、翌月25日の給与と一緒に振り込まれます。

領収書の原本は電子保存の要件を満たしているため、提出する必要はありません。ただし、インボイス制度の登録番号が
記載されていない領収書は、経理から確認の連絡がいくことがあります。
""",
    ),
    "ja-short-notice.txt": (
        "short Japanese prose notice (2 sentences)",
        """\
6月1日から、大阪オフィスの入館証は新しいカードに切り替わります。
古いカードは5月29日までに総務へ返却してください。
""",
    ),
}


def build_prose(b: Builder, rng: random.Random) -> None:
    b.legit_dict("prose", PROSE)


# ---------------------------------------------------------------------------------------------
# 18. reStructuredText
# ---------------------------------------------------------------------------------------------

RST: dict[str, tuple[str, str]] = {
    "qf-cli-install.rst": (
        "install guide in reStructuredText",
        """\
Installing qf
=============

``qf`` is the command-line tool for Driftnote, Tallyloom and Watchkeel.

Requirements
------------

* macOS 12 or later, Windows 10 or later, or Linux with glibc 2.31 or later
* A Quillfern account with API access enabled by an admin

Installing
----------

macOS (Homebrew)::

    brew install quillfern/tap/qf

Windows (Scoop)::

    scoop bucket add quillfern https://git.quillfern.example/scoop-bucket
    scoop install qf

Linux: download the ``.tar.gz`` for your architecture from the releases page and put ``qf`` on
your ``PATH``.

Logging in
----------

Run ``qf login``. A browser window opens; after you approve, the token is stored in your system
keychain. Use ``qf login --profile staging`` for a second environment.

.. note::

   Versions 1.7 and older stop working against the API on 1 October 2026.
""",
    ),
    "architecture-overview.rst": (
        "architecture overview in reStructuredText",
        """\
=====================================
Driftnote sync: architecture overview
=====================================

Components
==========

API service
-----------

Stateless Python service behind the load balancer. Handles ``pull``, ``push`` and blob
requests. Scales horizontally; each region runs 6 to 20 pods.

Change store
------------

PostgreSQL, one primary and two replicas per region. Every change gets a monotonically
increasing revision per workspace. Pushes run in ``SERIALIZABLE`` transactions and are retried
up to three times on serialization failures.

Blob store
----------

S3-compatible object storage. Blobs are addressed by SHA-256 and deduplicated per workspace.

Workers
-------

Background jobs: search indexing, thumbnail generation, workspace deletion after 30 days.

Data residency
==============

Enterprise workspaces can be pinned to EU, Korea or Japan. All three components then run only
in that region, and backups stay in the same country.
""",
    ),
    "contributing.rst": (
        "contributing guide in reStructuredText",
        """\
Contributing to the Watchkeel agent
===================================

Thank you for helping. This repository is open to everyone at Quillfern.

Before you start
----------------

Open an issue first for anything bigger than a bug fix, so that we can agree on the approach.

Making a change
---------------

1. Create a branch from ``main``.
2. Run ``make test lint`` before pushing. CI runs the same targets.
3. Add an entry to ``CHANGELOG.md`` under *Unreleased*.
4. Open a merge request and ask one reviewer from the agent team.

Code style
----------

We use ``gofmt`` and ``golangci-lint`` with the settings in ``.golangci.yml``. Exported functions
need a doc comment. Prefer small packages over one large one.
""",
    ),
    "probe-installation.rst": (
        "hardware installation guide in reStructuredText",
        """\
Installing a Watchkeel Probe P2
===============================

What is in the box
------------------

- Probe P2 (indoor or outdoor)
- Wall mount kit
- Quick start card with the claim code

Placement
---------

Mount the probe where it has wired Ethernet. The indoor model needs a dry room between 0 and 40 °C;
the outdoor model (IP67) works from -25 to 55 °C and must be mounted with the cable gland facing
down.

Power
-----

Use PoE (802.3af or 802.3at) or the optional PoE injector. The probe draws at most 6.5 W.

Claiming the probe
------------------

1. Connect the cable. The LED blinks amber while the probe gets an address.
2. In the dashboard, choose *Probes > Add probe* and type the claim code from the card.
3. The LED turns green when the probe is claimed and has its configuration.

.. warning::

   Do not unplug the probe while the LED blinks blue: it is updating its firmware.
""",
    ),
    "data-export.rst": (
        "data export how-to in reStructuredText",
        """\
Exporting your data
===================

Workspace owners can export everything at any time, on every plan.

Full export
-----------

*Admin console > Data > Export workspace* creates a ZIP file with:

- every note as Markdown, in folders named after notebooks
- attachments in their original format
- a ``manifest.json`` with note ids, creation dates and tags

Large workspaces can take several hours. You get an email with a download link, valid for 7 days.

Single notebook
---------------

Right-click the notebook and choose *Export*. Formats: Markdown, HTML or PDF.

Invoices
--------

Tallyloom invoices are exported from *Billing > Documents* as PDF files or as one CSV per year.
""",
    ),
}


def build_rst(b: Builder, rng: random.Random) -> None:
    b.legit_dict("rst", RST)


# =============================================================================================
# GARBAGE
# =============================================================================================


def decode_like_naive_ingester(raw: bytes) -> tuple[str, str] | None:
    """What an ingester that trusts charset_normalizer does: best guess, then str(match)."""
    best = charset_normalizer.from_bytes(raw).best()
    if best is None:
        return None
    text = str(best)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text, best.encoding


BYTE_SOURCES = {
    # uniform random bytes: charset_normalizer only accepts short ones (about 40 bytes or less);
    # for longer inputs best() is None and a naive ingester writes nothing, so longer inputs are drawn
    # from byte ranges that a legacy codec accepts (still random, just not uniform over 0..255)
    "uniform": "uniform random bytes",
    "high": "random bytes 0x80-0xFF",
    "hangul_pairs": "random EUC-KR Hangul-range byte pairs",
    "sjis_pairs": "random Shift_JIS kanji-range byte pairs",
    "printable": "random printable ASCII bytes",
}


def random_bytes(rng: random.Random, n: int, source: str) -> bytes:
    if source == "uniform":
        return rng.randbytes(n)
    if source == "high":
        return bytes(rng.randint(0x80, 0xFF) for _ in range(n))
    if source == "hangul_pairs":
        return b"".join(bytes([rng.randint(0xB0, 0xC8), rng.randint(0xA1, 0xFE)]) for _ in range(n // 2))
    if source == "sjis_pairs":
        return b"".join(bytes([rng.randint(0x88, 0x9F), rng.randint(0x40, 0x7E)]) for _ in range(n // 2))
    if source == "printable":
        return bytes(rng.randint(0x20, 0x7E) for _ in range(n))
    raise ValueError(source)


def random_decoded(rng: random.Random, n: int, source: str) -> tuple[str, str, int]:
    """Draw random bytes until charset_normalizer yields a result; return text, codec, rejected draws."""
    for attempt in range(500):
        got = decode_like_naive_ingester(random_bytes(rng, n, source))
        if got is not None and got[0].strip():
            return got[0], got[1], attempt
    raise RuntimeError(f"charset_normalizer never accepted {n} bytes from {source}")


def build_decoded_random(b: Builder, rng: random.Random) -> None:
    specs = [
        (20, "uniform"),
        (22, "uniform"),
        (24, "uniform"),
        (26, "uniform"),
        (28, "uniform"),
        (30, "uniform"),
        (32, "uniform"),
        (20, "high"),
        (25, "high"),
        (30, "high"),
        (36, "high"),
        (100, "hangul_pairs"),
        (700, "hangul_pairs"),
        (2048, "hangul_pairs"),
        (5000, "hangul_pairs"),
        (150, "sjis_pairs"),
        (900, "sjis_pairs"),
        (3100, "sjis_pairs"),
        (60, "printable"),
        (500, "printable"),
        (1600, "printable"),
        (4400, "printable"),
    ]
    for n, source in specs:
        text, enc, rejected = random_decoded(rng, n, source)
        tail = f" ({rejected} draws rejected)" if rejected else ""
        b.garbage(
            "decoded_random_bytes",
            f"random-{source}-{n:04d}b.txt",
            text,
            f"{n} {BYTE_SOURCES[source]} -> charset_normalizer: {enc}{tail}",
        )


def build_raw_binary(b: Builder, rng: random.Random) -> None:
    for n in (64, 300, 1024, 2500):
        b.garbage("raw_binary", f"binary-{n}.txt", rng.randbytes(n), f"{n} raw random bytes with a .txt name")
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x00\xc8\x08\x06\x00\x00\x00"
    b.garbage(
        "raw_binary",
        "screenshot.txt",
        png + rng.randbytes(1800),
        "binary PNG header plus random bytes saved as .txt",
    )


def build_base64(b: Builder, rng: random.Random) -> None:
    def wrap(s: str) -> str:
        return "\n".join(s[i : i + 76] for i in range(0, len(s), 76)) + "\n"

    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x02\x80\x00\x00\x01\xe0\x08\x02\x00\x00\x00"
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x01\x00H\x00H\x00\x00\xff\xdb\x00C\x00"
    gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
    e = base64.b64encode
    b.garbage(
        "base64_blob",
        "blob-600-unwrapped.txt",
        e(rng.randbytes(600)).decode() + "\n",
        "base64 of 600 random bytes, one line",
    )
    b.garbage(
        "base64_blob",
        "blob-2000-wrapped.txt",
        wrap(e(rng.randbytes(2000)).decode()),
        "base64 of 2000 random bytes wrapped at 76",
    )
    b.garbage(
        "base64_blob",
        "data-uri-png.txt",
        "data:image/png;base64," + e(png + rng.randbytes(1500)).decode() + "\n",
        "data:image/png;base64 URI, PNG header plus random bytes",
    )
    b.garbage(
        "base64_blob",
        "data-uri-jpeg.txt",
        "data:image/jpeg;base64," + e(jpeg + rng.randbytes(900)).decode() + "\n",
        "data:image/jpeg;base64 URI",
    )
    b.garbage(
        "base64_blob",
        "png-wrapped.txt",
        wrap(e(png + rng.randbytes(2400)).decode()),
        "base64 PNG-like blob wrapped at 76, no prefix",
    )
    b.garbage(
        "base64_blob",
        "gzip-wrapped.b64",
        wrap(e(gz + rng.randbytes(1200)).decode()),
        "base64 gzip-like blob wrapped at 76",
    )
    b.garbage(
        "base64_blob",
        "short-blob.txt",
        e(rng.randbytes(24)).decode() + "\n",
        "short base64 string (32 chars)",
    )
    b.garbage(
        "base64_blob",
        "data-uri-gif-1px.txt",
        "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7\n",
        "short data URI of a 1x1 transparent GIF",
    )
    b.garbage(
        "base64_blob",
        "data-uri-png-wrapped.txt",
        wrap("data:image/png;base64," + e(png + rng.randbytes(700)).decode()),
        "data:image/png;base64 URI wrapped at 76",
    )


JS_IDS = list("etnroiascul") + [
    "d",
    "f",
    "p",
    "h",
    "m",
    "g",
    "v",
    "y",
    "b",
    "_",
    "w",
    "x",
    "k",
    "E",
    "S",
    "O",
    "A",
    "T",
    "C",
    "N",
    "R",
    "I",
    "P",
    "L",
    "D",
    "M",
    "j",
    "q",
    "Y",
    "ee",
    "te",
    "ne",
    "re",
    "oe",
    "ie",
    "ae",
    "se",
    "ce",
    "ue",
    "le",
    "de",
    "fe",
    "pe",
    "he",
]
JS_WORDS = [
    "click",
    "change",
    "resize",
    "scroll",
    "keydown",
    "focus",
    "blur",
    "loading",
    "active",
    "open",
    "hidden",
    "selected",
    "disabled",
    "value",
    "items",
    "config",
    "state",
    "children",
    "className",
]
JS_SNIPPETS = [
    "function $A($B){return $B&&$B.__esModule?$B:{default:$B}}",
    "var $A=n($N),$B=n.n($A),$C=n($N)",
    "$A.prototype.$W=function($B){var $C=this;return this._$W2.filter((function($D){return $D.id!==$B}))}",
    'Object.defineProperty(t,"__esModule",{value:!0}),t.default=void 0',
    'var $A=($B,$C)=>$B.length>$C?$B.slice(0,$C)+"…":$B',
    'if(!($A instanceof $B))throw new TypeError("Cannot call a class as a function")',
    'e.exports=function($A){if(null==$A)throw TypeError("Can\'t call method on  "+$A);return $A}',
    "for(var $A=0,$B=$C.length;$A<$B;$A++)$D.push($C[$A])",
    "return $A.apply(this,arguments)",
    "try{$A=JSON.parse($B)}catch($C){$A={}}",
    'e.exports=n($N)("$W")',
    '$A.addEventListener("$W",$B,{passive:!0})',
    "var $A=Math.max(0,Math.min($B,$N))",
    'switch($A.type){case"$W":return{...$B,$W2:!0};case"$W2":return{...$B,$W2:!1};default:return $B}',
    "$A=$A||{},$A.$W=$A.$W||[],$A.$W.push([$N,$B])",
    '"undefined"!=typeof Symbol&&Symbol.toStringTag&&'
    'Object.defineProperty($A,Symbol.toStringTag,{value:"Module"})',
    "var $A=function($B,$C){return($A=Object.setPrototypeOf||"
    "function($B,$C){return $B.__proto__=$C,$B})($B,$C)}",
    '$A.$W=function(){return $B.createElement("div",{className:"$W2"},$C)}',
    "new Promise((function($A,$B){setTimeout($A,$N)}))",
    "$A.default=($B=>{var{$W:$C,$W2:$D}=$B;return $C?$D:null})",
    "$A[$B]=$A[$B]||[],$A[$B].push(arguments)",
    "var $A=/^(?:[a-z]+:)?\\/\\//i,$B=/\\s+/g",
    "void 0!==$A&&($B.$W=$A)",
    '$A.exports={$W:$B,$W2:$C,version:"$V"}',
]


def js_fill(rng: random.Random, tpl: str) -> str:
    out = tpl
    for tok, name in zip(("$A", "$B", "$C", "$D"), rng.sample(JS_IDS, 4), strict=True):
        out = out.replace(tok, name)
    out = out.replace("$V", f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}")
    while "$N" in out:
        out = out.replace("$N", str(rng.randint(0, 9999)), 1)
    out = out.replace("$W2", rng.choice(JS_WORDS)).replace("$W", rng.choice(JS_WORDS))
    return out


def minified_bundle(rng: random.Random, target_len: int, style: str) -> str:
    modules = []
    total = 0
    while total < target_len:
        body = ";".join(js_fill(rng, rng.choice(JS_SNIPPETS)) for _ in range(rng.randint(3, 12)))
        mod = f'{rng.randint(10, 99999)}:function(e,t,n){{"use strict";{body}}}'
        modules.append(mod)
        total += len(mod)
    if style == "webpack":
        return (
            f"(self.webpackChunkapp=self.webpackChunkapp||[]).push([[{rng.randint(100, 999)}],{{"
            + ",".join(modules)
            + "}]);\n"
        )
    umd = (
        '!function(e,t){"object"==typeof exports&&"undefined"!=typeof module?module.exports=t():'
        '"function"==typeof define&&define.amd?define(t):(e="undefined"!=typeof globalThis?globalThis:'
        'e||self).QfWidget=t()}(this,(function(){"use strict";var r={' + ",".join(modules) + "};"
        "function o(e){var t=i[e];if(void 0!==t)return t.exports;var n=i[e]={exports:{}};"
        "return r[e](n,n.exports,o),n.exports}var i={};return o(0)}));"
    )
    return umd + f"\n//# sourceMappingURL=widget.{rng.randbytes(4).hex()}.min.js.map\n"


def build_minified_js(b: Builder, rng: random.Random) -> None:
    specs = [
        ("vendor.3f9a1c.js", 30000, "umd"),
        ("main.7c2e91.js", 14000, "webpack"),
        ("chunk-482.js", 4000, "webpack"),
        ("bundle-copy.txt", 9000, "umd"),
        ("app.min.txt", 22000, "webpack"),
    ]
    for name, n, style in specs:
        b.garbage(
            "minified_js",
            name,
            minified_bundle(rng, n, style),
            f"minified JS bundle ({style} wrapper), one line of about {n // 1000}k chars",
        )


def build_symbol_runs(b: Builder, rng: random.Random) -> None:
    b.garbage("symbol_runs", "eq-dash.txt", "=-" * 400 + "=\n", "=-=-=- run, one long line")
    b.garbage(
        "symbol_runs",
        "stars.txt",
        "\n".join("*" * rng.randint(40, 80) for _ in range(12)) + "\n",
        "lines of asterisks",
    )
    b.garbage("symbol_runs", "shift-row.txt", "#$%^&*()_+" * 60 + "\n", "#$%^&*()_+ repeated")
    box = ["╔" + "═" * 58 + "╗"] + ["║" + " " * 58 + "║" for _ in range(6)] + ["╚" + "═" * 58 + "╝"]
    b.garbage("symbol_runs", "empty-box.txt", "\n".join(box) + "\n", "box-drawing frame with nothing inside")
    grid = []
    for _ in range(8):
        grid.append("+" + "+".join("-" * w for w in (12, 20, 9, 14)) + "+")
        grid.append("|" + "|".join(" " * w for w in (12, 20, 9, 14)) + "|")
    grid.append(grid[0])
    b.garbage(
        "symbol_runs", "empty-ascii-grid.txt", "\n".join(grid) + "\n", "empty ASCII table grid, no cells"
    )
    b.garbage(
        "symbol_runs",
        "box-chars-mix.txt",
        "".join(rng.choice("─│┌┐└┘├┤┬┴┼═║╬▀▄█▌▐░▒▓") for _ in range(900)) + "\n",
        "random box-drawing and block characters",
    )
    b.garbage(
        "symbol_runs",
        "tilde-lines.md",
        ("~" * 72 + "\n") * 5 + ("-" * 72 + "\n") * 5,
        "tilde and dash separator lines only",
    )
    b.garbage("symbol_runs", "bullets.txt", "• " * 150 + "\n", "run of bullet characters")
    b.garbage("symbol_runs", "geometric.txt", "■□" * 60 + "\n" + "◆◇" * 60 + "\n", "geometric symbol runs")
    b.garbage("symbol_runs", "short-double-line.txt", "═" * 16 + "\n", "short run of box-drawing characters")


COOKIE_BANNERS: dict[str, tuple[str, str, str]] = {
    "cookie-banner-en.txt": (
        "en",
        "cookie consent banner text only",
        """\
We use cookies to improve your experience, analyse traffic and personalise content. By clicking
"Accept all cookies" you agree to the storing of cookies on your device.

Accept all cookies    Reject    Manage preferences
""",
    ),
    "cookie-banner-short.txt": (
        "en",
        "one-line cookie notice with button labels",
        "This site uses cookies. OK  |  Learn more\n",
    ),
    "cookie-banner-only.html": (
        "en",
        "HTML page whose only content is a cookie banner",
        """\
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title></title></head>
<body>
<div id="cookie-consent" class="cc-banner" role="dialog" aria-label="Cookie consent">
  <p>We and our partners use cookies and similar technologies to improve your experience, measure
  performance and show relevant ads. You can change your choice at any time.</p>
  <button class="cc-accept">Accept all</button>
  <button class="cc-reject">Reject all</button>
  <a href="#" class="cc-settings">Cookie settings</a>
</div>
</body>
</html>
""",
    ),
    "cookie-preferences.txt": (
        "en",
        "cookie preference centre toggles",
        """\
Manage cookie preferences
Strictly necessary cookies   Always active
Performance cookies          [ On / Off ]
Functional cookies           [ On / Off ]
Targeting cookies            [ On / Off ]
Confirm my choices    Allow all
""",
    ),
    "cookie-banner-de.txt": (
        "de",
        "German cookie banner",
        """\
Wir verwenden Cookies, um Ihnen die bestmögliche Nutzung unserer Website zu ermöglichen.
Alle akzeptieren | Nur notwendige | Einstellungen
""",
    ),
    "cookie-banner-ko.txt": (
        "ko",
        "Korean cookie banner",
        """\
이 웹사이트는 더 나은 서비스 제공을 위해 쿠키를 사용합니다.
계속 이용하시면 쿠키 사용에 동의하는 것으로 간주됩니다.
모두 허용   거부   설정 관리
""",
    ),
    "cookie-banner-ja.html": (
        "ja",
        "Japanese cookie banner HTML fragment",
        """\
<div class="cookie-notice">
  <p>当サイトでは、利便性の向上とアクセス解析のために Cookie を使用しています。サイトの閲覧を続けることで、
  Cookie の使用に同意したものとみなされます。</p>
  <button>同意する</button> <button>拒否する</button> <a href="#">詳細設定</a>
</div>
""",
    ),
}


def build_cookie_banners(b: Builder, rng: random.Random) -> None:
    for name, (lang, note, text) in COOKIE_BANNERS.items():
        b.garbage("cookie_banner", name, text, note, lang=lang)


def mash(rng: random.Random, alphabet: str, n: int, space_every: tuple[int, int] | None = None) -> str:
    out = []
    k = rng.randint(*space_every) if space_every else 0
    for i in range(n):
        out.append(rng.choice(alphabet))
        if space_every and i and i % k == 0:
            out.append(" ")
            k = rng.randint(*space_every)
    return "".join(out)


def build_keyboard_mash(b: Builder, rng: random.Random) -> None:
    b.garbage(
        "keyboard_mash", "asdfjkl.txt", "asdfjkl;asdfjkl;asdfjkl asdfjkl;\n", "home-row mash", lang="und"
    )
    b.garbage("keyboard_mash", "qwerty.txt", "qwertyuiop qwerty qwertyuiop qwe\n", "top-row mash", lang="und")
    b.garbage(
        "keyboard_mash",
        "sdfg-hjk.txt",
        "sdfgsdfg hjkhjk sdfgsdfgsdfg hjkhjkhjk sdfg\n",
        "two-hand alternating mash",
        lang="und",
    )
    lines = [mash(rng, "asdfghjkl;qwertyuiopzxcvbnm", rng.randint(20, 90), (3, 9)) for _ in range(14)]
    b.garbage(
        "keyboard_mash",
        "mash-multiline.txt",
        "\n".join(lines) + "\n",
        "14 lines of random letter mash",
        lang="und",
    )
    b.garbage(
        "keyboard_mash",
        "mash-long.txt",
        mash(rng, "fjdksla;ghrueiwoqp", 1500, (4, 14)) + "\n",
        "1500-char letter mash",
        lang="und",
    )
    b.garbage(
        "keyboard_mash",
        "ko-jamo-home-row.txt",
        "ㅁㄴㅇㄹㅁㄴㅇㄹ ㅁㄴㅇㄹㅎㅓㅏㅣ ㅁㄴㅇㄹ\n",
        "Korean jamo home-row mash",
        lang="ko",
    )
    b.garbage(
        "keyboard_mash",
        "ko-jamo-random.txt",
        "\n".join(
            mash(rng, "ㅂㅈㄷㄱㅅㅛㅕㅑㅐㅔㅁㄴㅇㄹㅗㅓㅏㅣㅊㅍㅠㅜㅡ", rng.randint(15, 60), (4, 10))
            for _ in range(6)
        )
        + "\n",
        "random Korean jamo mash, 6 lines",
        lang="ko",
    )
    b.garbage(
        "keyboard_mash",
        "ja-aaa.txt",
        "ああああああああああああああああああ\n",
        "Japanese あああ mash",
        lang="ja",
    )
    b.garbage(
        "keyboard_mash",
        "ja-ime-mash.txt",
        "あｓｄｆｇｈｊｋｌ；あｓｄｆ　ｆｄさｓｄｆ\n",
        "Japanese IME-on keyboard mash (full-width letters)",
        lang="ja",
    )
    b.garbage(
        "keyboard_mash",
        "ja-kana-random.txt",
        mash(rng, "あいうえおかきくけこさしすせそたちつてとなにぬねのっー", 300, (6, 20)) + "\n",
        "random hiragana mash",
        lang="ja",
    )


LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut "
    "aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum "
    "dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui "
    "officia deserunt mollit anim id est laborum."
)


def build_lorem(b: Builder, rng: random.Random) -> None:
    b.garbage(
        "lorem_ipsum",
        "lorem-x50.txt",
        "\n\n".join([LOREM] * 50) + "\n",
        "standard lorem ipsum paragraph repeated 50 times",
    )
    b.garbage(
        "lorem_ipsum",
        "lorem-placeholder.txt",
        "Lorem ipsum dolor sit amet.\n",
        "short lorem ipsum placeholder alone",
    )
    words = LOREM.lower().replace(",", "").replace(".", "").split()
    paras = []
    for _ in range(4):
        sents = []
        for _ in range(rng.randint(4, 7)):
            s = " ".join(rng.choice(words) for _ in range(rng.randint(6, 15)))
            sents.append(s[0].upper() + s[1:] + ".")
        paras.append(" ".join(sents))
    b.garbage(
        "lorem_ipsum",
        "lorem-generated.md",
        "# Lorem ipsum\n\n" + "\n\n".join(paras) + "\n",
        "generated lorem ipsum paragraphs under a lorem heading",
    )
    b.garbage(
        "lorem_ipsum",
        "lorem-page.html",
        "<!DOCTYPE html>\n<html><head><title>Lorem ipsum</title></head><body>\n<h1>Lorem ipsum</h1>\n"
        + "".join(f"<p>{LOREM}</p>\n" for _ in range(3))
        + "</body></html>\n",
        "HTML page of lorem ipsum paragraphs",
    )
    b.garbage(
        "lorem_ipsum",
        "lorem-short-dolor.txt",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n",
        "one-sentence lorem ipsum placeholder",
    )
    b.garbage(
        "lorem_ipsum",
        "ja-dummy-text.txt",
        "ここにテキストが入ります。" * 40 + "\n",
        "Japanese placeholder 'text goes here' repeated 40 times",
        lang="ja",
    )
    b.garbage(
        "lorem_ipsum",
        "ko-dummy-text.txt",
        ("가나다라마바사 아자차카타파하 " * 30).strip() + "\n",
        "Korean alphabet placeholder text repeated 30 times",
        lang="ko",
    )


UTF16_SOURCES = [
    "This is a test of the emergency broadcast system.",
    "Quarterly report: revenue grew 8% and churn stayed flat at 1.1% per month. Hiring continues in Seoul.",
    "Please restart the sync service after applying the patch, then check the logs for errors.",
    "Meeting moved to Thursday at 3pm in room Tejo.",
]
UTF16_SOURCES_NONASCII = [
    "The café’s opening hours change on 1 June — we’ll open at 08:00 instead of 08:30.",
    "“Always lock your screen,” says the policy; it’s checked during the audit in Zürich.",
]


def build_misdecoded_utf16(b: Builder, rng: random.Random) -> None:
    for i, src in enumerate(UTF16_SOURCES):
        raw = src.encode("utf-8")
        text = raw.decode("utf-16-le", errors="replace")
        b.garbage(
            "misdecoded_utf16",
            f"utf8-read-as-utf16le-{i + 1}.txt",
            text + "\n",
            "UTF-8 English read as UTF-16-LE (wrong charset label): CJK-looking nonsense",
        )
    long_src = " ".join(UTF16_SOURCES) * 6
    b.garbage(
        "misdecoded_utf16",
        "utf8-read-as-utf16le-long.txt",
        long_src.encode("utf-8").decode("utf-16-le", errors="replace") + "\n",
        "longer UTF-8 text decoded as UTF-16-LE",
    )
    for i, src in enumerate(UTF16_SOURCES[:2]):
        raw = src.encode("utf-16-le")  # no BOM
        text = raw.decode("utf-8")  # valid UTF-8: every other char is NUL
        b.garbage(
            "misdecoded_utf16",
            f"utf16le-read-as-utf8-{i + 1}.txt",
            text + "\n",
            "BOM-less UTF-16-LE English read as UTF-8 (no error): NUL after every letter",
        )
    for i, src in enumerate(UTF16_SOURCES_NONASCII):
        raw = src.encode("utf-16-le")
        text = raw.decode("latin-1")  # UTF-8 decode fails on non-ASCII, naive fallback to latin-1
        b.garbage(
            "misdecoded_utf16",
            f"utf16le-read-as-latin1-{i + 1}.txt",
            text + "\n",
            "BOM-less UTF-16-LE text, UTF-8 failed, latin-1 fallback: NULs and control chars",
        )


def build_short_garbage(b: Builder, rng: random.Random) -> None:
    for n in (8, 12, 16, 22):
        text, enc, _ = random_decoded(rng, n, "high" if n % 8 == 4 else "uniform")
        b.garbage(
            "short_garbage",
            f"short-random-{n}b.txt",
            text,
            f"{n} random bytes via charset_normalizer ({enc})",
        )
    items = [
        ("asdf.txt", "asdf\n", "4-char mash"),
        ("jjjj.txt", "jjjjjjjjjjjj\n", "held-down key"),
        ("hjkl.txt", "hjkl hjkl jkjkjk\n", "short mash"),
        ("ko-jamo-short.txt", "ㅁㄴㅇㄹ\n", "short Korean jamo mash"),
        ("stars-short.txt", "***\n", "three asterisks"),
        ("eqdash-short.txt", "=-=-=-=-=-\n", "short =- run"),
        ("hash-bang.txt", "#!#!#!#!\n", "short symbol run"),
        ("xxx.txt", "xxxxxxxxxxxxxxxx\n", "run of x"),
    ]
    for name, text, note in items:
        b.garbage("short_garbage", name, text, note, lang="ko" if name.startswith("ko-") else "und")


def build_empty(b: Builder, rng: random.Random) -> None:
    items = [
        ("empty.txt", "", "zero-byte file"),
        ("empty.md", "", "zero-byte Markdown file"),
        ("newline.txt", "\n", "single newline"),
        ("spaces.txt", "     \n", "spaces only"),
        ("mixed-whitespace.txt", " \t \n\n\t\t\n   \n", "tabs, spaces and newlines"),
        ("crlf-only.txt", "\r\n\r\n\r\n", "CRLF line endings only"),
        ("ideographic-space.txt", "\u3000\u3000\u3000\n", "full-width (ideographic) spaces only"),
        ("nbsp.txt", "\u00a0\u00a0 \u00a0\n", "non-breaking spaces only"),
        ("dots.txt", "...\n", "three dots"),
        ("punct-lines.txt", "!!!\n???\n;;;\n,,,\n", "lines of punctuation"),
        ("ja-kuten.txt", "。。。、、、\n", "Japanese punctuation only"),
        ("dashes-spaces.md", "- - -\n\n* * *\n", "Markdown rules, nothing else"),
    ]
    for name, text, note in items:
        b.garbage("empty_whitespace", name, text, note)


HTML_EMPTY: dict[str, tuple[str, str]] = {
    "scripts-only.html": (
        "page with only analytics and bundle script tags",
        """\
<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<script async src="https://analytics.example/gtag/js?id=G-QF12345"></script>
<script>window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments)}
gtag("js",new Date());gtag("config","G-QF12345");</script>
</head>
<body>
<script src="/static/js/runtime.8a1f.js"></script>
<script src="/static/js/vendor.3f9a1c.js"></script>
<script src="/static/js/main.7c2e91.js"></script>
</body>
</html>
""",
    ),
    "spa-shell.html": (
        "single-page-app shell: empty root div and noscript",
        """\
<!doctype html><html lang="en"><head><meta charset="utf-8"/>
<meta name="viewport" content="width=device-width,initial-scale=1"/><title>App</title>
<link href="/static/css/main.2b7d.css" rel="stylesheet"></head><body>
<noscript>You need to enable JavaScript to run this app.</noscript><div id="root"></div>
<script src="/static/js/main.7c2e91.js"></script></body></html>
""",
    ),
    "nav-only.html": (
        "navigation links only",
        """\
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Quillfern</title></head>
<body>
<nav>
  <ul>
    <li><a href="/">Home</a></li>
    <li><a href="/products">Products</a></li>
    <li><a href="/pricing">Pricing</a></li>
    <li><a href="/blog">Blog</a></li>
    <li><a href="/careers">Careers</a></li>
    <li><a href="/contact">Contact</a></li>
  </ul>
</nav>
</body>
</html>
""",
    ),
    "empty-body.html": (
        "empty body",
        """\
<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title></title></head>
<body></body>
</html>
""",
    ),
    "footer-only.html": (
        "only a footer with legal links",
        """\
<html><head><meta charset="utf-8"><title>Untitled</title></head>
<body>
<footer>
  <a href="/privacy">Privacy</a> · <a href="/terms">Terms</a> ·
  <a href="/imprint">Imprint</a> · <a href="/cookies">Cookies</a>
</footer>
</body></html>
""",
    ),
    "redirect.html": (
        "meta refresh redirect with empty body",
        """\
<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=/en/">
<link rel="canonical" href="/en/"></head>
<body></body></html>
""",
    ),
    "tracking-pixel.html": (
        "tracking pixel image only",
        """\
<html><body><img src="https://t.example/p.gif?cid=8812&amp;e=open" width="1" height="1" alt=""></body></html>
""",
    ),
    "style-and-jsonld.html": (
        "CSS and JSON-LD only, no visible text",
        """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<style>
:root{--qf-blue:#1f4e79;--qf-sand:#f4ecd8}body{margin:0;font-family:Inter,sans-serif;background:var(--qf-sand)}
.hero{min-height:60vh;display:flex;align-items:center;justify-content:center}.hero img{max-width:100%}
</style>
<script type="application/ld+json">{"@context":"https://schema.org","@type":"WebPage","url":"https://quillfern.example/"}</script>
</head>
<body><div class="hero"><img src="/img/hero.webp" alt=""></div></body>
</html>
""",
    ),
    "ja-nav-only.html": (
        "Japanese navigation links only",
        """\
<!DOCTYPE html>
<html lang="ja">
<head><meta charset="utf-8"><title></title></head>
<body>
<header><nav><a href="/ja/">トップ</a> | <a href="/ja/products">製品</a> |
<a href="/ja/pricing">料金</a> | <a href="/ja/contact">お問い合わせ</a></nav></header>
</body>
</html>
""",
    ),
}


def build_html_empty(b: Builder, rng: random.Random) -> None:
    for name, (note, text) in HTML_EMPTY.items():
        b.garbage("html_no_content", name, text, note, lang="ja" if name.startswith("ja-") else "und")


# =============================================================================================
# main
# =============================================================================================

LEGIT_BUILDERS = [
    build_tables,
    build_html_tables,
    build_changelogs,
    build_release_notes,
    build_faqs,
    build_api,
    build_logs,
    build_code,
    build_csv,
    build_configs,
    build_forms,
    build_meetings,
    build_template_reports,
    build_one_liners,
    build_emails,
    build_glossaries,
    build_prose,
    build_rst,
]
GARBAGE_BUILDERS = [
    build_decoded_random,
    build_raw_binary,
    build_base64,
    build_minified_js,
    build_symbol_runs,
    build_cookie_banners,
    build_keyboard_mash,
    build_lorem,
    build_misdecoded_utf16,
    build_short_garbage,
    build_empty,
    build_html_empty,
]


def check(items: list[Item]) -> None:
    """Sanity checks on the set itself (not on any filter)."""
    legit = [it for it in items if it.label == "legit"]
    garbage = [it for it in items if it.label == "garbage"]
    assert len(legit) >= 170, len(legit)
    assert len(garbage) >= 110, len(garbage)
    assert len({it.shape for it in legit}) >= 17
    langs = Counter(it.lang for it in legit)
    assert langs["ko"] >= 25 and langs["ja"] >= 25, langs
    bodies = Counter(it.data for it in legit)
    dupes = [it.path for it in legit if bodies[it.data] > 1]
    assert not dupes, dupes
    for it in legit:
        if it.path.endswith(".json"):
            obj = json.loads(it.data)
            assert isinstance(obj, dict) and not {"text", "content", "body"} & set(obj), it.path
    assert sum(len(it.data) for it in items) < 1_500_000


def summary(items: list[Item]) -> str:
    lines = []
    for label in ("legit", "garbage"):
        sub = [it for it in items if it.label == label]
        by_shape: dict[str, Counter[str]] = {}
        for it in sub:
            by_shape.setdefault(it.shape, Counter())[it.lang] += 1
        lines.append(f"{label}: {len(sub)} files, {sum(len(it.data) for it in sub):,} bytes")
        for shape, langs in by_shape.items():
            detail = ", ".join(f"{k} {v}" for k, v in sorted(langs.items()))
            lines.append(f"  {shape:22s} {sum(langs.values()):4d}   ({detail})")
    lang_total = Counter(it.lang for it in items if it.label == "legit")
    lines.append("legit by language: " + ", ".join(f"{k} {v}" for k, v in sorted(lang_total.items())))
    lines.append(f"total: {len(items)} files, {sum(len(it.data) for it in items):,} bytes")
    return "\n".join(lines)


def main() -> None:
    b = Builder()
    for fn in LEGIT_BUILDERS + GARBAGE_BUILDERS:
        # one generator per section, so editing one section does not reshuffle the others
        fn(b, random.Random(f"{SEED}:{fn.__name__}"))
    check(b.items)
    b.write(HERE)
    print(summary(b.items))


if __name__ == "__main__":
    main()
