"""Generate the PDF documents of the ragtune sample corpus.

The sample corpus ships the generated PDFs, so you only need this script if you
change the text below. The project itself does not depend on fpdf2; install it
into a throwaway virtual environment and run the script from the repository root:

    python3 -m venv /tmp/pdfvenv
    /tmp/pdfvenv/bin/pip install fpdf2 pypdf
    /tmp/pdfvenv/bin/python tools/sample_pdf.py

It writes:

    data/sample/corpus/whitepapers/tidewright-security-whitepaper.pdf
    data/sample/corpus/handbook/benefits-summary-2026.pdf

and then, if pypdf is importable, extracts the text back from each file and
checks that every page has text. Only the PDF core fonts (Helvetica) are used,
so all text must be Latin-1.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

CORPUS = Path(__file__).resolve().parent.parent / "data" / "sample" / "corpus"

# Each document is a title, a subtitle and a list of sections. A section is a
# heading followed by blocks; a block is either a paragraph (str) or a list of
# bullet points (list[str]).

SECURITY_WHITEPAPER = {
    "path": "whitepapers/tidewright-security-whitepaper.pdf",
    "title": "Tidewright Security and Resilience Whitepaper",
    "subtitle": "Marrowfield Software Ltd. - Version 3, January 2026 - Public",
    "sections": [
        (
            "1. Purpose",
            [
                "This whitepaper describes how Tidewright Cloud and Tidewright Relay are designed "
                "to protect customer data and to keep running when components fail. It is written "
                "for security reviewers, architects and procurement teams evaluating Tidewright. "
                "Certifications, audit reports and the responsible disclosure process are covered "
                "on the public security page and are not repeated here.",
            ],
        ),
        (
            "2. Architecture",
            [
                "Tidewright Cloud is split into a control plane and a data plane. The control plane "
                "hosts the web app, the API, the scheduler and the metadata store (flow definitions, "
                "run history, workspace settings). The data plane consists of managed workers that "
                "execute flow steps, plus the Relay gateway that customer-hosted Relays connect to.",
                "Each region (eu-central, us-east and ap-northeast) runs a complete, independent copy "
                "of both planes. No customer data is replicated between regions.",
            ],
        ),
        (
            "3. Tenant isolation",
            [
                "Every step runs in a short-lived, single-use sandbox that is destroyed when the step "
                "finishes. Sandboxes have no access to the network of other workspaces, and each "
                "sandbox receives credentials scoped to a single run.",
                [
                    "Shared plans run steps on a pooled worker fleet with per-step sandboxes.",
                    "Flagship workspaces run on dedicated managed workers that are never shared with "
                    "other customers.",
                    "Metadata is stored in a shared database with row-level security keyed on the "
                    "workspace identifier.",
                ],
            ],
        ),
        (
            "4. Encryption",
            [
                "All traffic to and from Tidewright Cloud uses TLS 1.2 or higher. Data at rest, "
                "including databases, object storage, run logs and backups, is encrypted with AES-256.",
                "Moorings (secrets) are encrypted with a data key that is unique to each workspace. "
                "Workspace keys are held in a hardware-backed key management service and are rotated "
                "automatically every 12 months. Rotation does not require any action from customers.",
            ],
        ),
        (
            "5. Relay security",
            [
                "Relays authenticate to the Relay gateway with mutual TLS. Each Relay has its own "
                "client certificate, which is valid for 1 year and is renewed automatically 30 days "
                "before it expires. Relays only make outbound connections; the gateway can never "
                "open a connection into the customer network.",
                "Work sent to a Relay is signed by the control plane, and the Relay refuses any task "
                "whose signature does not verify.",
            ],
        ),
        (
            "6. Backups and disaster recovery",
            [
                "The metadata store of each region is backed up every 6 hours. Backups are encrypted, "
                "stored in a separate availability zone within the same region, and retained for "
                "35 days. Restores are tested automatically every week.",
                "Our recovery objectives for a complete loss of an availability zone are:",
                [
                    "Recovery point objective (RPO): 6 hours",
                    "Recovery time objective (RTO): 4 hours",
                ],
                "A full disaster recovery exercise, in which a region is rebuilt from backups in an "
                "isolated environment, is carried out twice a year. Findings are tracked to closure "
                "by the Platform team.",
            ],
        ),
        (
            "7. Logging and monitoring",
            [
                "Security-relevant events (sign-ins, permission changes, token creation, Mooring "
                "access and administrative actions by Marrowfield staff) are written to an "
                "append-only log. Security logs are retained for 13 months. Alerts from the log are "
                "reviewed by the security on-call engineer around the clock.",
            ],
        ),
        (
            "8. Vulnerability management",
            [
                "Dependencies and container images are scanned on every build and daily in "
                "production. Critical vulnerabilities are patched within 14 days of confirmation, "
                "high-severity vulnerabilities within 30 days. Fixes for self-hosted components are "
                "shipped as Relay patch releases and announced to workspace owners by email.",
            ],
        ),
    ],
}

BENEFITS_SUMMARY = {
    "path": "handbook/benefits-summary-2026.pdf",
    "title": "Employee Benefits Summary 2026",
    "subtitle": "Marrowfield Software Ltd. - United Kingdom employees - Internal",
    "sections": [
        (
            "About this summary",
            [
                "This summary lists the benefits available to Marrowfield employees on UK contracts "
                "from 1 April 2026. Colleagues in Lisbon and Seoul receive a separate local summary, "
                "because pensions and health cover work differently in each country. Leave, "
                "learning and remote work allowances are described in the handbook and are not "
                "repeated here. If anything in this summary differs from your contract, your "
                "contract applies.",
            ],
        ),
        (
            "Pension",
            [
                "You are enrolled in the company pension scheme when you join. Marrowfield "
                "contributes 8% of your salary to your pension when you contribute at least 4%. "
                "You can contribute more through salary sacrifice, and you can change your "
                "contribution once a month in Crewlist.",
            ],
        ),
        (
            "Health",
            [
                [
                    "Private medical insurance for you, with the option to add a partner and "
                    "children at no extra cost to you.",
                    "A dental plan covering two check-ups a year.",
                    "Eye tests paid in full, plus up to GBP 150 towards glasses every two years.",
                    "An annual flu vaccination, offered in the office or at a local pharmacy.",
                ],
            ],
        ),
        (
            "Protection",
            [
                [
                    "Life assurance of 4 times your annual salary, from your first day.",
                    "Income protection paying 75% of your salary if you are unable to work through "
                    "illness or injury for more than 26 weeks.",
                ],
            ],
        ),
        (
            "Wellbeing",
            [
                "The Employee Assistance Programme offers a confidential helpline, open 24 hours a "
                "day, for you and anyone in your household. It also provides up to 6 counselling "
                "sessions per year, by video, phone or in person.",
                "Every employee can claim a wellbeing allowance of GBP 40 per month towards a gym, "
                "a sports club, classes or a meditation app. Claim it through Ledgerline with the tag "
                "WELL.",
            ],
        ),
        (
            "Getting around",
            [
                [
                    "Cycle to work scheme: buy a bike and accessories worth up to GBP 2,000 through "
                    "salary sacrifice, repaid over 12 months.",
                    "Season ticket loan: an interest-free loan for an annual public transport "
                    "ticket, repaid through payroll over 10 months.",
                ],
            ],
        ),
        (
            "Extras",
            [
                [
                    "Thursday lunch in the Edinburgh office, paid for by the company.",
                    "A birthday day off, to be taken within two weeks of your birthday.",
                    "A referral bonus of GBP 2,500 when someone you refer passes probation.",
                ],
            ],
        ),
        (
            "Questions",
            [
                "Questions about benefits go to the People team through the #ask-people channel. "
                "Changes to health cover can be made within 30 days of a life event such as "
                "marriage or the birth of a child, or otherwise at the annual renewal in April.",
            ],
        ),
    ],
}

DOCUMENTS = [SECURITY_WHITEPAPER, BENEFITS_SUMMARY]


class DocPDF(FPDF):
    def __init__(self, title: str):
        super().__init__(format="A4")
        self.doc_title = title
        self.set_margins(20, 20, 20)
        self.set_auto_page_break(auto=True, margin=20)
        self.set_title(title)
        self.set_author("Marrowfield Software Ltd.")
        # A fixed date keeps rebuilds byte-for-byte reproducible.
        self.set_creation_date(datetime(2026, 1, 15, tzinfo=UTC))

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", "I", 8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 10, f"{self.doc_title} - page {self.page_no()}", align="C")
        self.set_text_color(0, 0, 0)


def build(doc: dict) -> Path:
    pdf = DocPDF(doc["title"])
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.multi_cell(0, 9, doc["title"], new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    pdf.set_text_color(80, 80, 80)
    pdf.multi_cell(0, 6, doc["subtitle"], new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.ln(4)
    for heading, blocks in doc["sections"]:
        pdf.set_font("Helvetica", "B", 13)
        pdf.multi_cell(0, 8, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
        for block in blocks:
            pdf.set_font("Helvetica", "", 11)
            if isinstance(block, str):
                pdf.multi_cell(0, 6, block, new_x="LMARGIN", new_y="NEXT")
                pdf.ln(2)
            else:
                for item in block:
                    pdf.set_x(pdf.l_margin + 4)
                    pdf.multi_cell(0, 6, "- " + item, new_x="LMARGIN", new_y="NEXT")
                pdf.ln(2)
        pdf.ln(2)
    out = CORPUS / doc["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))
    return out


def verify(path: Path) -> None:
    try:
        from pypdf import PdfReader
    except ImportError:
        print(f"  (pypdf not installed; skipped text extraction check for {path.name})")
        return
    reader = PdfReader(str(path))
    for i, page in enumerate(reader.pages):
        text = page.extract_text() or ""
        if len(text.strip()) < 100:
            sys.exit(f"page {i + 1} of {path} has too little extractable text")
    print(f"  {len(reader.pages)} page(s), text extracted OK")


def main() -> None:
    for doc in DOCUMENTS:
        out = build(doc)
        print(f"wrote {out.relative_to(CORPUS.parent.parent.parent)}")
        verify(out)


if __name__ == "__main__":
    main()
