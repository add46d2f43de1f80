"""RaterTally and the triggers that keep it: what a rater's assignments in a campaign add up to, so that /next
reads a few rows instead of the rater's whole history (issue 16).

A row version of rating_assignment contributes, unless its status is 'expired': 1 to `answered` when answered;
+1 to the lean of its left image's model and -1 to its right image's model when it is a real pair (image_pair
set); else, when it is a gold check, 1 to gold_left or gold_right by where the correct image is. An insert adds
the new version, a delete takes the old one away, an update does both. Additions upsert; subtractions only
update (a row to subtract from exists, and a delete cascading from a rater must not create one again). Before
touching a rater's rows the trigger locks the rater (PostgreSQL, FOR NO KEY UPDATE: it waits for /next's FOR UPDATE
of the rater but not for the KEY SHARE lock a vote's insert takes on it, so two votes of one rater cannot deadlock
upgrading it), so all writers of one rater's tally queue behind one lock and cannot take two of its rows in
opposite orders. The expiry sweep, which touches many raters, takes their locks in id order first.
"""

from django.db import migrations, models

# ----------------------------------------------------------------------------------------------------------------
# PostgreSQL: one plpgsql function; an update that moves nothing (a vote: open -> answered) touches one row.
# ----------------------------------------------------------------------------------------------------------------

PG_FORWARD = """
CREATE FUNCTION rating_tally_add(p_rater bigint, p_campaign bigint, p_model bigint, p_answered integer,
                                 p_lean integer, p_gold_left integer, p_gold_right integer, p_insert boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_answered = 0 AND p_lean = 0 AND p_gold_left = 0 AND p_gold_right = 0 THEN
        RETURN;
    END IF;
    IF p_insert THEN
        INSERT INTO rating_ratertally (rater_id, campaign_id, model_id, answered, lean, gold_left, gold_right)
        VALUES (p_rater, p_campaign, p_model, p_answered, p_lean, p_gold_left, p_gold_right)
        ON CONFLICT (rater_id, campaign_id, model_id) DO UPDATE SET
            answered = rating_ratertally.answered + EXCLUDED.answered,
            lean = rating_ratertally.lean + EXCLUDED.lean,
            gold_left = rating_ratertally.gold_left + EXCLUDED.gold_left,
            gold_right = rating_ratertally.gold_right + EXCLUDED.gold_right;
    ELSE
        UPDATE rating_ratertally SET answered = answered + p_answered, lean = lean + p_lean,
            gold_left = gold_left + p_gold_left, gold_right = gold_right + p_gold_right
        WHERE rater_id = p_rater AND campaign_id = p_campaign AND model_id = p_model;
    END IF;
END $$;

CREATE FUNCTION rating_assignment_tally() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o_answered integer := 0; o_gold_left integer := 0; o_gold_right integer := 0;
    o_left bigint; o_right bigint;
    n_answered integer := 0; n_gold_left integer := 0; n_gold_right integer := 0;
    n_left bigint; n_right bigint;
    correct bigint;
    same_keys boolean;
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status <> 'expired' THEN
        o_answered := (OLD.status = 'answered')::integer;
        IF OLD.image_pair_id IS NOT NULL THEN
            SELECT model_id INTO o_left FROM runs_image WHERE id = OLD.image_left_id;
            SELECT model_id INTO o_right FROM runs_image WHERE id = OLD.image_right_id;
        ELSIF OLD.gold_id IS NOT NULL THEN
            SELECT correct_image_id INTO correct FROM rating_goldcheck WHERE id = OLD.gold_id;
            IF correct IS NOT NULL THEN
                o_gold_left := (correct = OLD.image_left_id)::integer;
                o_gold_right := 1 - o_gold_left;
            END IF;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status <> 'expired' THEN
        n_answered := (NEW.status = 'answered')::integer;
        IF NEW.image_pair_id IS NOT NULL THEN
            SELECT model_id INTO n_left FROM runs_image WHERE id = NEW.image_left_id;
            SELECT model_id INTO n_right FROM runs_image WHERE id = NEW.image_right_id;
        ELSIF NEW.gold_id IS NOT NULL THEN
            SELECT correct_image_id INTO correct FROM rating_goldcheck WHERE id = NEW.gold_id;
            IF correct IS NOT NULL THEN
                n_gold_left := (correct = NEW.image_left_id)::integer;
                n_gold_right := 1 - n_gold_left;
            END IF;
        END IF;
    END IF;
    same_keys := TG_OP = 'UPDATE' AND OLD.rater_id = NEW.rater_id AND OLD.campaign_id = NEW.campaign_id;
    IF same_keys AND o_answered = n_answered AND o_gold_left = n_gold_left AND o_gold_right = n_gold_right
       AND o_left IS NOT DISTINCT FROM n_left AND o_right IS NOT DISTINCT FROM n_right THEN
        RETURN NULL;  -- nothing this tally counts has changed
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM 1 FROM rating_rater WHERE id = OLD.rater_id FOR NO KEY UPDATE;
    END IF;
    IF TG_OP <> 'DELETE' AND NOT same_keys THEN
        PERFORM 1 FROM rating_rater WHERE id = NEW.rater_id FOR NO KEY UPDATE;
    END IF;
    IF same_keys THEN
        PERFORM rating_tally_add(NEW.rater_id, NEW.campaign_id, 0, n_answered - o_answered, 0,
                                 n_gold_left - o_gold_left, n_gold_right - o_gold_right, true);
        IF o_left IS DISTINCT FROM n_left OR o_right IS DISTINCT FROM n_right THEN
            IF o_left IS NOT NULL THEN
                PERFORM rating_tally_add(OLD.rater_id, OLD.campaign_id, o_left, 0, -1, 0, 0, false);
                PERFORM rating_tally_add(OLD.rater_id, OLD.campaign_id, o_right, 0, 1, 0, 0, false);
            END IF;
            IF n_left IS NOT NULL THEN
                PERFORM rating_tally_add(NEW.rater_id, NEW.campaign_id, n_left, 0, 1, 0, 0, true);
                PERFORM rating_tally_add(NEW.rater_id, NEW.campaign_id, n_right, 0, -1, 0, 0, true);
            END IF;
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM rating_tally_add(OLD.rater_id, OLD.campaign_id, 0, -o_answered, 0, -o_gold_left, -o_gold_right,
                                 false);
        IF o_left IS NOT NULL THEN
            PERFORM rating_tally_add(OLD.rater_id, OLD.campaign_id, o_left, 0, -1, 0, 0, false);
            PERFORM rating_tally_add(OLD.rater_id, OLD.campaign_id, o_right, 0, 1, 0, 0, false);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM rating_tally_add(NEW.rater_id, NEW.campaign_id, 0, n_answered, 0, n_gold_left, n_gold_right, true);
        IF n_left IS NOT NULL THEN
            PERFORM rating_tally_add(NEW.rater_id, NEW.campaign_id, n_left, 0, 1, 0, 0, true);
            PERFORM rating_tally_add(NEW.rater_id, NEW.campaign_id, n_right, 0, -1, 0, 0, true);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER rating_assignment_tally
AFTER INSERT OR DELETE OR UPDATE OF status, image_pair_id, image_left_id, image_right_id, gold_id, rater_id, campaign_id
ON rating_assignment FOR EACH ROW EXECUTE FUNCTION rating_assignment_tally();
"""

PG_BACKWARD = """
DROP TRIGGER IF EXISTS rating_assignment_tally ON rating_assignment;
DROP FUNCTION IF EXISTS rating_assignment_tally();
DROP FUNCTION IF EXISTS rating_tally_add(bigint, bigint, bigint, integer, integer, integer, integer, boolean);
"""

# ----------------------------------------------------------------------------------------------------------------
# SQLite: no procedural code in triggers, so each adds or takes away a whole row version (writes serialise there).
# ----------------------------------------------------------------------------------------------------------------


def _sqlite_statements(row: str, sign: int, insert: bool) -> str:
    """The trigger body that adds (sign 1) or takes away (sign -1) the contribution of row version `row`."""
    where = f"rater_id = {row}.rater_id AND campaign_id = {row}.campaign_id"
    correct = f"(SELECT correct_image_id FROM rating_goldcheck WHERE id = {row}.gold_id)"
    model = "(SELECT model_id FROM runs_image WHERE id = {row}.{side})"
    left, right = model.format(row=row, side="image_left_id"), model.format(row=row, side="image_right_id")
    ensure = ""
    if insert:
        ensure = f"""
    INSERT OR IGNORE INTO rating_ratertally (rater_id, campaign_id, model_id, answered, lean, gold_left, gold_right)
    VALUES ({row}.rater_id, {row}.campaign_id, 0, 0, 0, 0, 0);
    INSERT OR IGNORE INTO rating_ratertally (rater_id, campaign_id, model_id, answered, lean, gold_left, gold_right)
    SELECT {row}.rater_id, {row}.campaign_id, model_id, 0, 0, 0, 0 FROM runs_image
    WHERE {row}.image_pair_id IS NOT NULL AND id IN ({row}.image_left_id, {row}.image_right_id);"""
    return f"""{ensure}
    UPDATE rating_ratertally SET
        answered = answered + {sign} * ({row}.status = 'answered'),
        gold_left = gold_left + {sign} * coalesce({row}.image_pair_id IS NULL AND {correct} = {row}.image_left_id, 0),
        gold_right = gold_right + {sign} * coalesce({row}.image_pair_id IS NULL AND {correct} <> {row}.image_left_id, 0)
    WHERE {where} AND model_id = 0;
    UPDATE rating_ratertally SET lean = lean + {sign}
    WHERE {where} AND {row}.image_pair_id IS NOT NULL AND model_id = {left};
    UPDATE rating_ratertally SET lean = lean - {sign}
    WHERE {where} AND {row}.image_pair_id IS NOT NULL AND model_id = {right};"""


_SQLITE_UPDATE_OF = "status, image_pair_id, image_left_id, image_right_id, gold_id, rater_id, campaign_id"
SQLITE_FORWARD = [
    f"""CREATE TRIGGER rating_assignment_tally_insert AFTER INSERT ON rating_assignment
    WHEN NEW.status <> 'expired' BEGIN{_sqlite_statements("NEW", 1, True)}
    END""",
    f"""CREATE TRIGGER rating_assignment_tally_delete AFTER DELETE ON rating_assignment
    WHEN OLD.status <> 'expired' BEGIN{_sqlite_statements("OLD", -1, False)}
    END""",
    f"""CREATE TRIGGER rating_assignment_tally_update_old AFTER UPDATE OF {_SQLITE_UPDATE_OF} ON rating_assignment
    WHEN OLD.status <> 'expired' BEGIN{_sqlite_statements("OLD", -1, False)}
    END""",
    f"""CREATE TRIGGER rating_assignment_tally_update_new AFTER UPDATE OF {_SQLITE_UPDATE_OF} ON rating_assignment
    WHEN NEW.status <> 'expired' BEGIN{_sqlite_statements("NEW", 1, True)}
    END""",
]
SQLITE_BACKWARD = [
    f"DROP TRIGGER IF EXISTS rating_assignment_tally_{name}" for name in ("insert", "delete", "update_old", "update_new")
]

# The tally of the assignments already stored (portable SQL).
BACKFILL = [
    """
    INSERT INTO rating_ratertally (rater_id, campaign_id, model_id, answered, lean, gold_left, gold_right)
    SELECT a.rater_id, a.campaign_id, 0,
           SUM(CASE WHEN a.status = 'answered' THEN 1 ELSE 0 END), 0,
           SUM(CASE WHEN a.image_pair_id IS NULL AND g.correct_image_id = a.image_left_id THEN 1 ELSE 0 END),
           SUM(CASE WHEN a.image_pair_id IS NULL AND g.correct_image_id <> a.image_left_id THEN 1 ELSE 0 END)
    FROM rating_assignment a LEFT JOIN rating_goldcheck g ON g.id = a.gold_id
    WHERE a.status <> 'expired'
    GROUP BY a.rater_id, a.campaign_id
    """,
    """
    INSERT INTO rating_ratertally (rater_id, campaign_id, model_id, answered, lean, gold_left, gold_right)
    SELECT rater_id, campaign_id, model_id, 0, SUM(side), 0, 0 FROM (
        SELECT a.rater_id, a.campaign_id, i.model_id, 1 AS side FROM rating_assignment a
        JOIN runs_image i ON i.id = a.image_left_id WHERE a.status <> 'expired' AND a.image_pair_id IS NOT NULL
        UNION ALL
        SELECT a.rater_id, a.campaign_id, i.model_id, -1 AS side FROM rating_assignment a
        JOIN runs_image i ON i.id = a.image_right_id WHERE a.status <> 'expired' AND a.image_pair_id IS NOT NULL
    ) sides
    GROUP BY rater_id, campaign_id, model_id
    """,
]


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD)
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)
    else:
        raise NotImplementedError(f"no rater tally triggers for {vendor}")
    for statement in BACKFILL:
        schema_editor.execute(statement)


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD)
    else:
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("rating", "0008_multiview_consistency"),
        # SQLite: a migration that rebuilds a table the triggers read (runs_image) must come before them, and one
        # that rebuilds rating_assignment drops them: such a migration must create them again (tests/rating/
        # test_history.py fails without them).
        ("runs", "0007_image_asset"),
    ]

    operations = [
        migrations.CreateModel(
            name="RaterTally",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("model_id", models.BigIntegerField()),
                ("answered", models.IntegerField(default=0)),
                ("lean", models.IntegerField(default=0)),
                ("gold_left", models.IntegerField(default=0)),
                ("gold_right", models.IntegerField(default=0)),
                (
                    "campaign",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="+",
                        to="rating.campaign",
                    ),
                ),
                (
                    "rater",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="+",
                        to="rating.rater",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("rater", "campaign", "model_id"), name="one_tally_row_per_model")
                ],
            },
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
