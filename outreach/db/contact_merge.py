"""The statement that merges a staged part of an import into the contacts on
PostgreSQL (see ``contact_copy``): the rules every store keeps (given values replace
stored ones, blanks keep them, attributes merge with the stored keys first in their
order, tags add, status never returns to active nor leaves ``complained``), set-based.
"""

from __future__ import annotations

ROWS = "outreach_import_rows"  # temporary: a part that meets stored addresses
TAGS = "outreach_import_tags"  # and its tags (pos, tag)
FIELDS = ("name", "organization", "kind", "sector", "country", "language", "timezone",
          "x_handle")  # fmt: skip
# the COPY's columns; in the temporary table, pos (the row's place, from 1) for id
COLUMNS = ("id", "email", "email_key", *FIELDS, "status", "attrs", "created_at", "updated_at")
KIND_GIVEN, STATUS_GIVEN = 1, 2  # a row's flags: what it gives (a new row gets defaults)


def merge_sql(mode: str, seq: str) -> str:
    """The statement that merges the staged part into the contacts (``mode``: upsert
    or insert-only) and gives (new, met stored, updated). Parameters: blocked (the
    positions of erased addresses), flags (each row's, an array literal), now (the
    updates' time). ``seq``: the ids' sequence, as SQL."""
    fields = ("email", *FIELDS, "status")
    stored = "".join(f", c.{c} AS o_{c}" for c in (*fields, "attrs")) if mode == "upsert" else ""
    # s: each row with its tags, what it gives, and the stored contact it meets (a
    # lookup per row in the unique index, whatever the planner thinks of the sizes);
    # n: the new ones with their ids, drawn in file order
    sql = f"""
WITH f AS (SELECT %(flags)s::int[] AS a),
s AS MATERIALIZED (
    SELECT r.*, t.tags, c.id AS cid{stored},
           CASE WHEN f.a[r.pos] & {KIND_GIVEN} <> 0 THEN r.kind END AS given_kind,
           CASE WHEN f.a[r.pos] & {STATUS_GIVEN} <> 0 THEN r.status END AS given_status
    FROM {ROWS} r CROSS JOIN f
    LEFT JOIN (SELECT pos, array_agg(tag) AS tags FROM {TAGS} GROUP BY pos) t ON t.pos = r.pos
    LEFT JOIN LATERAL (SELECT * FROM contacts c WHERE c.email_key = r.email_key LIMIT 1) c ON true
    WHERE r.pos <> ALL(%(blocked)s::int[])
),
n AS MATERIALIZED (
    SELECT nextval({seq}) AS id, q.* FROM (SELECT * FROM s WHERE cid IS NULL ORDER BY pos) q
),
ins AS (
    INSERT INTO contacts ({", ".join(COLUMNS)})
    SELECT {", ".join(f"{c}::json" if c == "attrs" else c for c in COLUMNS)} FROM n
)"""
    if mode != "upsert":
        return sql + """,
tags AS (INSERT INTO contact_tags (contact_id, tag) SELECT id, unnest(tags) FROM n)
SELECT (SELECT count(*) FROM n), (SELECT count(*) FROM s), 0"""
    merged = ", ".join("coalesce(given_kind, o_kind) AS kind" if c == "kind" else
                       f"coalesce({c}, o_{c}) AS {c}" for c in FIELDS)  # fmt: skip
    # m: the stored ones merged, with the tags they gain
    return sql + f""",
m AS MATERIALIZED (
    SELECT cid, email, {merged},
           CASE WHEN given_status IS NULL OR o_status = 'complained'
                     OR (o_status <> 'active' AND given_status = 'active')
                THEN o_status ELSE given_status END AS status,
           {", ".join(f"o_{c}" for c in fields)}, o_attrs, attrs::json AS given,
           (o_attrs::text = attrs OR o_attrs::jsonb @> attrs::jsonb) AS same_attrs,
           ARRAY(SELECT t FROM unnest(tags) t
                 WHERE NOT EXISTS (SELECT FROM contact_tags WHERE contact_id = cid AND tag = t)) AS added
    FROM s WHERE cid IS NOT NULL
),
upd AS (
    UPDATE contacts c
    SET {", ".join(f"{f} = m.{f}" for f in fields)},
        attrs = CASE WHEN m.same_attrs THEN m.o_attrs ELSE (
            SELECT json_object_agg(k, v ORDER BY g, o) FROM (
                SELECT e.key AS k, coalesce(m.given -> e.key, e.value) AS v, 0 AS g, e.o
                FROM json_each(m.o_attrs) WITH ORDINALITY e(key, value, o)
                UNION ALL
                SELECT e.key, e.value, 1, e.o
                FROM json_each(m.given) WITH ORDINALITY e(key, value, o)
                WHERE NOT m.o_attrs::jsonb ? e.key
            ) a) END,
        updated_at = %(now)s
    FROM m
    WHERE c.id = m.cid
      AND (cardinality(m.added) > 0 OR NOT m.same_attrs
           OR ({", ".join(f"m.{f}" for f in fields)}) IS DISTINCT FROM ({", ".join(f"m.o_{f}" for f in fields)}))
    RETURNING 1
),
tags AS (
    INSERT INTO contact_tags (contact_id, tag)
    SELECT id, unnest(tags) FROM n UNION ALL SELECT cid, unnest(added) FROM m
)
SELECT (SELECT count(*) FROM n), (SELECT count(*) FROM s), (SELECT count(*) FROM upd)"""
