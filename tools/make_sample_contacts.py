"""Writes the synthetic sample contacts in contacts/ (deterministic; output is committed).

Every person is invented and every address is on a reserved example domain.
Run: python tools/make_sample_contacts.py
"""

from __future__ import annotations

import csv
import random
import re
import unicodedata
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "contacts"
rng = random.Random(20140905)

# country code, name as written in the sheet, language, zone when the country has several
COUNTRIES = [
    ("TR", "Türkiye", "tr", ""),
    ("CH", "Switzerland", "fr", ""),
    ("US", "United States", "en", "America/New_York"),
    ("GB", "United Kingdom", "en", ""),
    ("FR", "France", "fr", ""),
    ("DE", "Germany", "de", ""),
    ("ES", "Spain", "es", "Europe/Madrid"),
    ("IT", "Italy", "it", ""),
    ("BR", "Brazil", "pt-BR", "America/Sao_Paulo"),
    ("MX", "Mexico", "es", "America/Mexico_City"),
    ("IN", "India", "en", ""),
    ("CN", "China", "zh", "Asia/Shanghai"),
    ("JP", "Japan", "ja", ""),
    ("KR", "South Korea", "ko", ""),
    ("ZA", "South Africa", "en", ""),
    ("NG", "Nigeria", "en", ""),
    ("KE", "Kenya", "en", ""),
    ("EG", "Egypt", "ar", ""),
    ("AE", "United Arab Emirates", "ar", ""),
    ("SA", "Saudi Arabia", "ar", ""),
    ("RU", "Russia", "ru", "Europe/Moscow"),
    ("CA", "Canada", "fr-CA", "America/Toronto"),
    ("AU", "Australia", "en", "Australia/Sydney"),
    ("NZ", "New Zealand", "en", "Pacific/Auckland"),
    ("SG", "Singapore", "en", ""),
    ("MY", "Malaysia", "ms", "Asia/Kuala_Lumpur"),
    ("ID", "Indonesia", "id", "Asia/Jakarta"),
    ("PH", "Philippines", "en", ""),
    ("TH", "Thailand", "th", ""),
    ("SE", "Sweden", "sv", ""),
    ("SN", "Senegal", "fr", ""),
    ("CI", "Côte d'Ivoire", "fr", ""),
    # Pacific Island countries (national roll-outs)
    ("FJ", "Fiji", "en", ""),
    ("WS", "Samoa", "sm", ""),
    ("TO", "Tonga", "to", ""),
    ("VU", "Vanuatu", "bi", ""),
    ("SB", "Solomon Islands", "en", ""),
    ("PG", "Papua New Guinea", "en", "Pacific/Port_Moresby"),
    ("KI", "Kiribati", "en", "Pacific/Tarawa"),
    ("CK", "Cook Islands", "en", ""),
    ("NU", "Niue", "en", ""),
    ("TV", "Tuvalu", "en", ""),
]
PACIFIC = {"FJ", "WS", "TO", "VU", "SB", "PG", "KI", "CK", "NU", "TV"}

NAMES = {
    "tr": (
        ["Ayşe", "Mehmet", "Zeynep", "Emre", "Elif", "Barış", "Çağla", "Oğuz"],
        ["Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Öztürk"],
    ),
    "fr": (
        ["Amélie", "Jérôme", "Célia", "François", "Hélène", "Aurélien", "Noémie"],
        ["Lefèvre", "Dubois", "Girard", "Moreau", "Béranger", "Fontaine"],
    ),
    "fr-CA": (
        ["Geneviève", "Étienne", "Maxime", "Chloé"],
        ["Tremblay", "Gagnon", "Côté", "Bélanger"],
    ),
    "en": (
        ["Sarah", "James", "Priya", "Daniel", "Grace", "Michael", "Aisha", "Tom"],
        ["Smith", "Patel", "O'Brien", "Okafor", "Nguyen", "Taylor", "Walker"],
    ),
    "de": (["Jürgen", "Anna", "Lukas", "Sophie", "Jörg"], ["Müller", "Schröder", "Weiß", "Becker"]),
    "es": (["José", "María", "Lucía", "Andrés", "Sofía"], ["García", "Martínez", "Núñez", "Peña"]),
    "it": (["Giulia", "Marco", "Niccolò", "Chiara"], ["Rossi", "Bianchi", "Ricci", "Colombo"]),
    "pt-BR": (["João", "Ana", "Luíza", "Thiago"], ["Silva", "Gonçalves", "Araújo", "Pereira"]),
    "zh": (["伟", "芳", "娜", "强"], ["王", "李", "张", "刘"]),
    "ja": (["太郎", "花子", "健", "美咲"], ["佐藤", "鈴木", "高橋", "田中"]),
    "ko": (["민준", "서연", "지훈", "하은"], ["김", "이", "박", "최"]),
    "ar": (["محمد", "فاطمة", "أحمد", "ليلى"], ["الحسن", "منصور", "السيد", "حداد"]),
    "ru": (["Алексей", "Мария", "Дмитрий", "Ольга"], ["Иванов", "Смирнова", "Кузнецов", "Попова"]),
    "ms": (["Ahmad", "Nurul", "Siti", "Hafiz"], ["Ismail", "Rahman", "Hassan"]),
    "id": (["Budi", "Dewi", "Putri", "Agus"], ["Santoso", "Wijaya", "Lestari"]),
    "th": (["สมชาย", "สุดา", "ประยุทธ", "มาลี"], ["ศรีสุข", "วงศ์ใหญ่", "ทองดี"]),
    "sv": (["Åsa", "Björn", "Linnéa", "Göran"], ["Andersson", "Lindqvist", "Öberg"]),
    "sm": (["Sina", "Tavita", "Lagi", "Malia"], ["Tuilagi", "Leota", "Faleolo", "Aiono"]),
    "to": (["Sione", "Mele", "Viliami", "Lupe"], ["Taufa", "Havili", "Fifita", "Tuʻipulotu"]),
    "bi": (["Jean-Pierre", "Marie", "Kalo", "Serah"], ["Tabi", "Molisa", "Kalsakau"]),
}
SECTORS = [
    "mobile operator",
    "ISP",
    "content provider",
    "device maker",
    "broadcaster",
    "social network",
    "app developer",
    "payment provider",
    "cloud provider",
    "games publisher",
    "satellite operator",
    "equipment vendor",
]
ORG_WORDS = {
    "mobile operator": ["Mobile", "Telecom", "Cellular", "Wireless"],
    "ISP": ["Net", "Broadband", "Online", "Fibre"],
    "content provider": ["Media", "Studios", "Content"],
    "device maker": ["Devices", "Electronics", "Handsets"],
    "broadcaster": ["Broadcasting", "TV", "Radio"],
    "social network": ["Social", "Connect", "Circle"],
    "app developer": ["Apps", "Labs", "Software"],
    "payment provider": ["Pay", "Wallet"],
    "cloud provider": ["Cloud", "Data Centres"],
    "games publisher": ["Games", "Play"],
    "satellite operator": ["Satellite", "Orbit"],
    "equipment vendor": ["Networks", "Systems"],
}
PREFIXES = [
    "Blue",
    "Coral",
    "Lagoon",
    "Summit",
    "Harbour",
    "Nova",
    "Atlas",
    "Southern",
    "Meridian",
    "Anchor",
    "Horizon",
    "Reef",
    "Island",
    "Bosphorus",
    "Pacific",
    "Delta",
    "Zenith",
    "Unity",
]


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "contact"


def person(lang: str, index: int) -> tuple[str, str, str, str]:
    """(first, last, display name, email local part) for a made-up person."""
    firsts, lasts = NAMES.get(lang, NAMES["en"])
    first, last = rng.choice(firsts), rng.choice(lasts)
    name = f"{last}{first}" if lang in ("zh", "ja", "ko") else f"{first} {last}"
    first_slug, last_slug = slug(first), slug(last)
    if "contact" in (first_slug, last_slug):  # a script with no Latin letters
        return first, last, name, f"contact{index}"
    return first, last, name, f"{first_slug}.{last_slug}"


def pick_country():  # type: ignore[no-untyped-def]
    # Pacific countries are over-represented: they have their own roll-out.
    if rng.random() < 0.12:
        return rng.choice([c for c in COUNTRIES if c[0] in PACIFIC])
    return rng.choice(COUNTRIES)


def industry() -> None:
    rows = []
    seen = set()
    for i in range(700):
        code, cname, lang, zone = pick_country()
        sector = rng.choice(SECTORS)
        org = f"{rng.choice(PREFIXES)} {rng.choice(ORG_WORDS[sector])} {cname}"
        _first, _last, name, local = person(lang, i)
        email = f"{local}@{slug(org)}.example.com"
        if email.lower() in seen:
            email = f"{local}{i}@{slug(org)}.example.com"
        seen.add(email.lower())
        tags = ["itu-member", "cop-2014"]
        if code in PACIFIC:
            tags.append("pacific-rollout")
        if rng.random() < 0.12:
            tags.append("responded")
        handle = f"@{slug(org).replace('-', '_')[:15]}" if rng.random() < 0.3 else ""
        rows.append(
            {
                "Email Address": email,
                "Full Name": name,
                "Organisation": org,
                "Type": "Industry member" if rng.random() < 0.5 else "industry",
                "Sector": sector,
                "Country": cname if rng.random() < 0.5 else code,
                "Language": lang,
                "Time Zone": zone,
                "X Handle": handle,
                "Tags": ", ".join(tags),
                "Membership": rng.choice(
                    ["itu-sector", "itu-sector", "itu-associate", "itu-academia"]
                ),
                "Member Since": str(rng.randint(1995, 2014)),
            }
        )
    write("industry-members.csv", rows, ",")


PARTNERS = [
    ("UNICEF", "un-agency", "US", "en"),
    ("UNICEF Pacific", "un-agency", "FJ", "en"),
    ("UNESCO", "un-agency", "FR", "fr"),
    ("UNODC", "un-agency", "AT", "de"),
    ("UNICRI", "un-agency", "IT", "it"),
    ("UN Women", "un-agency", "US", "en"),
    ("ITU Regional Office for Asia and the Pacific", "un-agency", "TH", "en"),
    ("ECPAT International", "partner", "TH", "en"),
    ("ECPAT France", "partner", "FR", "fr"),
    ("Child Helpline International", "partner", "NL", "en"),
    ("INHOPE", "partner", "NL", "en"),
    ("Internet Watch Foundation", "partner", "GB", "en"),
    ("Save the Children", "civil-society", "GB", "en"),
    ("Terre des Hommes", "civil-society", "CH", "fr"),
    ("Family Online Safety Institute", "civil-society", "US", "en"),
    ("eNACSO", "civil-society", "IT", "it"),
    ("Childnet International", "civil-society", "GB", "en"),
    ("Insafe", "civil-society", "BE", "fr"),
    ("Pacific Youth Council", "youth", "FJ", "en"),
    ("Samoa Victim Support Group", "civil-society", "WS", "sm"),
    ("Tonga Women and Children Crisis Centre", "civil-society", "TO", "to"),
    ("Vanuatu Young People's Project", "youth", "VU", "bi"),
    ("University of the South Pacific", "academia", "FJ", "en"),
    ("London School of Economics, EU Kids Online", "academia", "GB", "en"),
    ("Université de Genève", "academia", "CH", "fr"),
    ("GSMA", "partner", "GB", "en"),
    ("Internet Society", "partner", "CH", "en"),
    ("World Childhood Foundation", "partner", "SE", "sv"),
    ("Fundación ANAR", "civil-society", "ES", "es"),
    ("SaferNet Brasil", "civil-society", "BR", "pt-BR"),
    ("Association e-Enfance", "civil-society", "FR", "fr"),
    ("Child Rights Connect", "civil-society", "CH", "fr"),
    ("Plan International", "civil-society", "GB", "en"),
    ("World Vision Pacific", "civil-society", "PG", "en"),
    ("Fiji Women's Rights Movement", "civil-society", "FJ", "en"),
    ("Kiribati Red Cross", "civil-society", "KI", "en"),
    ("Cook Islands Family Welfare", "civil-society", "CK", "en"),
    ("Tuvalu Youth Council", "youth", "TV", "en"),
    ("Niue Community Trust", "civil-society", "NU", "en"),
    ("Solomon Islands Child Rights Network", "civil-society", "SB", "en"),
]


def partners() -> None:
    rows = []
    for i, (org, kind, code, lang) in enumerate(PARTNERS):
        _first, _last, name, local = person(lang, 1000 + i)
        rows.append(
            {
                "email": f"{local}@{slug(org)}.example.org",
                "name": name,
                "organization": org,
                "kind": kind,
                "country": code,
                "language": lang,
                "timezone": "Pacific/Tarawa" if code == "KI" else "",
                "tags": "partner, cop-2014"
                + (
                    ", pacific-rollout"
                    if code in ("FJ", "WS", "TO", "VU", "PG", "KI", "CK", "TV", "NU", "SB")
                    else ""
                ),
                "x": f"@{slug(org).replace('-', '_')[:15]}" if i % 3 == 0 else "",
            }
        )
    write("partners.csv", rows, ";")


OUTLETS = [
    "Daily",
    "Times",
    "Tribune",
    "Herald",
    "Post",
    "Observer",
    "Tech Review",
    "Radio",
    "TV News",
    "Wire",
]


def media() -> None:
    rows = []
    for i in range(60):
        code, cname, lang, zone = pick_country()
        first, last, _name, local = person(lang, 2000 + i)
        outlet = f"{cname.split()[0]} {rng.choice(OUTLETS)}"
        rows.append(
            {
                "E-mail": f"{local}@{slug(outlet)}.example.net",
                "First Name": first,
                "Last Name": last,
                "Outlet": outlet,
                "Type": rng.choice(["press", "media", "journalist"]),
                "Country": code,
                "Language": lang,
                "Time Zone": zone,
                "Twitter": f"{slug(outlet).replace('-', '')[:15]}" if i % 2 == 0 else "",
                "Beat": rng.choice(["technology", "children and youth", "development", "business"]),
            }
        )
    write("media.csv", rows, ",")


def governments() -> None:
    rows = []
    chosen = [c for c in COUNTRIES if c[0] in PACIFIC] + rng.sample(
        [c for c in COUNTRIES if c[0] not in PACIFIC], 20
    )
    for i, (code, cname, lang, zone) in enumerate(chosen):
        _first, _last, name, local = person(lang, 3000 + i)
        ministry = f"Ministry of Communications, {cname}"
        rows.append(
            {
                "email": f"{local}@ict.{slug(cname)}.example.org",
                "name": name,
                "ministry": ministry,
                "type": "government",
                "country": cname,
                "language": lang,
                "timezone": zone,
                "tags": "cop-2014" + (", pacific-rollout" if code in PACIFIC else ""),
            }
        )
    write("governments.csv", rows, ",")


def write(name: str, rows: list[dict], delimiter: str) -> None:
    path = OUT / name
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    industry()
    partners()
    media()
    governments()
