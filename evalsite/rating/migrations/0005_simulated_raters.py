import secrets

from django.db import migrations, models

import evalsite.rating.models


def give_every_campaign_a_simulation_token(apps, schema_editor):
    Campaign = apps.get_model("rating", "Campaign")
    for campaign in Campaign.objects.filter(simulation_token__isnull=True):
        campaign.simulation_token = secrets.token_urlsafe(18)
        campaign.save(update_fields=["simulation_token"])


class Migration(migrations.Migration):
    dependencies = [
        ("rating", "0004_campaign_defaults_from_settings"),
    ]

    operations = [
        migrations.AddField(
            model_name="rater",
            name="simulated",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="rater",
            name="participant_id",
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name="campaign",
            name="simulation_token",
            field=models.CharField(max_length=40, null=True),
        ),
        migrations.RunPython(give_every_campaign_a_simulation_token, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="campaign",
            name="simulation_token",
            field=models.CharField(default=evalsite.rating.models.new_invite_token, max_length=40, unique=True),
        ),
    ]
