"""The segment language: parsing, canonical printing, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outreach.domain.audience import EVERYONE, And, Not, Or, Term, and_, fields_used, or_, parse
from outreach.domain.errors import SegmentError


def test_issue_examples_parse_to_the_expected_tree() -> None:
    expr = parse('kind:industry sector:"mobile operator",isp country:FJ,WS,TO -tag:responded')
    assert expr == And(
        (
            Term("kind", ("industry",)),
            Term("sector", ("mobile operator", "isp")),
            Term("country", ("FJ", "WS", "TO")),
            Not(Term("tag", ("responded",))),
        )
    )
    assert parse("(kind:partner OR kind:un-agency) lang:fr") == And(
        (
            Or((Term("kind", ("partner",)), Term("kind", ("un-agency",)))),
            Term("language", ("fr",)),
        )
    )
    assert parse("attr.membership:itu-sector") == Term("attr.membership", ("itu-sector",))


def test_values_are_normalised_like_contact_fields() -> None:
    assert parse("country:fiji,tur") == Term("country", ("FJ", "TR"))
    assert parse("type:NGO") == Term("kind", ("civil-society",))
    assert parse("lang:fr_ca") == Term("language", ("fr-CA",))
    assert parse("x:@ITU") == Term("x_handle", ("ITU",))
    assert parse("tz:pacific/fiji") == Term("timezone", ("Pacific/Fiji",))


def test_operators_precedence_and_keywords() -> None:
    a, b, c = (Term("tag", (t,)) for t in "abc")
    assert parse("tag:a tag:b OR tag:c") == Or((And((a, b)), c))
    assert parse("tag:a AND (tag:b OR tag:c)") == And((a, Or((b, c))))
    assert parse("NOT tag:a") == Not(a)
    assert parse("not tag:a or tag:b") == Or((Not(a), b))
    assert parse("-(tag:a OR tag:b)") == Not(Or((a, b)))
    assert parse("") == EVERYONE
    assert parse("   ") == EVERYONE


def test_printing_is_canonical() -> None:
    text = '(org:"Blue Telecom" OR org:*Mobile*) -tag:responded lang:fr name:"say \\"hi\\""'
    expr = parse(text)
    assert (
        str(expr)
        == '(org:"Blue Telecom" OR org:*Mobile*) -tag:responded lang:fr name:"say \\"hi\\""'
    )
    assert parse(str(expr)) == expr
    assert fields_used(expr) == {"organization", "tag", "language", "name"}


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("kind:industry country:", 22, "expected a value"),
        ("kind:industri", 5, "unknown kind 'industri'"),
        ("colour:blue", 0, "unknown field 'colour'"),
        ("country:FJ (tag:x", 17, "expected ')'"),
        ("tag:x)", 5, "unexpected ')'"),
        ("fiji", 4, "expected ':' after 'fiji'"),
        ("tag:a OR", 8, "the expression ended"),
        ("OR tag:a", 0, "expected a term before OR"),
        ('name:"open', 5, "unclosed quote"),
        ("()", 1, "empty parentheses"),
        ("- tag:a", 1, "right after '-'"),
        ("country:Atlantis", 8, "unknown country 'Atlantis'"),
        ("has:colour", 4, "has: takes one of"),
        ("attr.Bad-Key:x", 0, "attribute name"),
    ],
)
def test_errors_name_the_position_and_what_was_expected(
    text: str, position: int, words: str
) -> None:
    with pytest.raises(SegmentError) as info:
        parse(text)
    assert info.value.position == position
    assert words in str(info.value)
    assert text in str(info.value)  # the expression is quoted back with a caret under it


# -- property tests ------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
        blacklist_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    ),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() == s and s != "")
_tag = st.from_regex(r"[a-z0-9][a-z0-9.:/+-]{0,10}", fullmatch=True)
_terms = st.one_of(
    st.builds(
        lambda v: Term("kind", tuple(v)),
        st.lists(
            st.sampled_from(["industry", "partner", "media", "un-agency", "civil-society"]),
            min_size=1,
            max_size=3,
        ),
    ),
    st.builds(
        lambda v: Term("country", tuple(v)),
        st.lists(st.sampled_from(["FJ", "WS", "TO", "TR", "KI", "US"]), min_size=1, max_size=3),
    ),
    st.builds(
        lambda v: Term("language", tuple(v)),
        st.lists(st.sampled_from(["en", "fr", "fr-CA", "sm", "to"]), min_size=1, max_size=2),
    ),
    st.builds(lambda v: Term("tag", tuple(v)), st.lists(_tag, min_size=1, max_size=3)),
    st.builds(lambda v: Term("sector", tuple(v)), st.lists(_text, min_size=1, max_size=3)),
    st.builds(lambda v: Term("name", tuple(v)), st.lists(_text, min_size=1, max_size=2)),
    st.builds(
        lambda k, v: Term(f"attr.{k}", tuple(v)),
        st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True),
        st.lists(_text, min_size=1, max_size=2),
    ),
    st.builds(
        lambda v: Term("has", (v,)),
        st.sampled_from(["x_handle", "timezone", "tag", "attr.membership"]),
    ),
)
_exprs = st.recursive(
    _terms,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(lambda items: and_(*items), st.lists(inner, min_size=2, max_size=4)),
        st.builds(lambda items: or_(*items), st.lists(inner, min_size=2, max_size=4)),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_exprs)
def test_print_then_parse_gives_the_same_tree(expr) -> None:  # type: ignore[no-untyped-def]
    assert parse(str(expr)) == expr


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='kindtagcountry:FJ,-"() ORANDNOT\\x.', max_size=40))
def test_any_input_parses_or_fails_with_a_segment_error(text: str) -> None:
    try:
        expr = parse(text)
    except SegmentError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert parse(str(expr)) == expr
