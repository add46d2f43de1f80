"""Rating campaigns: who rates which image pairs, and the votes they give.

A vote records which model was on which side, so position bias can be measured and the anonymous
left/right presentation can be undone in analysis. The database makes duplicates impossible: one vote
per assignment and criterion; a rater never holds the same image pair twice (unless it expired unanswered).
"""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from evalsite.catalog.models import ImageModel, Prompt
from evalsite.runs.models import ComparisonRun, Image


class Criterion(models.TextChoices):
    PROMPT_FOLLOWING = "prompt_following", "Prompt following"
    AESTHETICS = "aesthetics", "Visual aesthetics"
    TYPOGRAPHY = "typography", "Typography"
    MULTIVIEW_CONSISTENCY = "multiview_consistency", "Multi-view consistency"  # text-to-3D runs only


# What a campaign asks, by the kind of run: images (typography only for prompts that ask for text), or 3D assets
# shown as turntables (issue 17: prompt following, visual quality and multi-view consistency).
IMAGE_CRITERIA = (Criterion.PROMPT_FOLLOWING, Criterion.AESTHETICS, Criterion.TYPOGRAPHY)
THREED_CRITERIA = (Criterion.PROMPT_FOLLOWING, Criterion.AESTHETICS, Criterion.MULTIVIEW_CONSISTENCY)


# The SD3 paper's wording (Esser et al. 2024, section 5.3 / appendix).
CRITERION_QUESTIONS = {
    Criterion.PROMPT_FOLLOWING: (
        "Which image looks more representative to the text shown above and faithfully follows it?"
    ),
    Criterion.AESTHETICS: "Given the prompt, which image is of higher-quality and aesthetically more pleasing?",
    Criterion.TYPOGRAPHY: (
        "Which image more accurately shows/displays the text specified in the above description? "
        "More accurate spelling is preferred! Ignore other aspects."
    ),
    Criterion.MULTIVIEW_CONSISTENCY: (
        "Turning all the way round, which object stays one solid, consistent object from every side "
        "(no parts that appear, vanish or change colour as it turns)?"
    ),
}
# The same questions about two turntables: the aesthetics question is asked as visual quality of the object.
THREED_QUESTIONS = {
    **CRITERION_QUESTIONS,
    Criterion.PROMPT_FOLLOWING: (
        "Seen from all sides, which object looks more representative to the text shown above and faithfully follows it?"
    ),
    Criterion.AESTHETICS: "Given the prompt, which object is of higher visual quality, seen from all sides?",
}
THREED_LABELS = {Criterion.AESTHETICS: "Visual quality"}


def criterion_text(key: str, is_3d: bool) -> tuple[str, str]:
    """(label, question) of a criterion as raters of an image run or of a text-to-3D run read it."""
    criterion = Criterion(key)
    if is_3d:
        return THREED_LABELS.get(criterion, criterion.label), THREED_QUESTIONS[criterion]
    return criterion.label, CRITERION_QUESTIONS[criterion]


class Choice(models.TextChoices):
    LEFT = "left"
    RIGHT = "right"
    TIE = "tie"
    BOTH_BAD = "both_bad"


class PairPolicy(models.TextChoices):
    ACTIVE = "active", "Active: shrink the Bradley-Terry intervals fastest"
    UNIFORM = "uniform", "Uniform over model pairs"


def new_invite_token() -> str:
    return secrets.token_urlsafe(18)


def default_criteria() -> list[str]:
    return [c.value for c in IMAGE_CRITERIA]


def default_assignment_ttl() -> int:
    return settings.EVALSITE_ASSIGNMENT_TTL_SECONDS


def default_min_gold_accuracy() -> float:
    return settings.EVALSITE_MIN_GOLD_ACCURACY


class Rater(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rater")
    instructions_seen_at = models.DateTimeField(null=True, blank=True)
    # Set by quality control (gold accuracy under the threshold) or by a researcher.
    flagged = models.BooleanField(default=False)
    flagged_reason = models.CharField(max_length=300, blank=True)
    # Joined through a campaign's simulation invite link: a simulated rater (evalsite/crowd), not a person.
    # Its votes are labelled simulated wherever votes are shown or exported.
    simulated = models.BooleanField(default=False)
    # The id a rater brought in the invite link (?participant=...), as rater panels send theirs.
    participant_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.user.get_username()


class JoinMode(models.TextChoices):
    LINK = "link", "The campaign's invite link (anyone who has it)"
    PERSONAL = "personal", "One-time personal invites only"


class Campaign(models.Model):
    """A rating campaign over the images of one comparison run."""

    name = models.CharField(max_length=200)
    run = models.ForeignKey(ComparisonRun, on_delete=models.PROTECT, related_name="campaigns")
    criteria = models.JSONField(default=default_criteria)
    raters = models.ManyToManyField(Rater, blank=True, related_name="campaigns")
    invite_token = models.CharField(max_length=40, unique=True, default=new_invite_token)
    # A second invite link for a simulated crowd (manage.py simulate_raters): accounts made through it are
    # marked simulated, so a dress rehearsal or the demo crowd never passes for people.
    simulation_token = models.CharField(max_length=40, unique=True, default=new_invite_token)
    # --- who may join (Sybil resistance; the simulation link is exempt) ---
    invite_join_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Raters the invite link may bring in at most; empty means no cap.",
    )
    require_participant_id = models.BooleanField(
        default=False,
        help_text="Only links carrying ?participant=<id> (a rater panel's) may join; one account per participant.",
    )
    join_mode = models.CharField(
        max_length=20,
        choices=JoinMode.choices,
        default=JoinMode.LINK,
        help_text="Personal: only one-time personal invites (PersonalInvite) make accounts; the invite link refuses.",
    )
    votes_per_pair = models.PositiveIntegerField(default=3, help_text="Target votes per image pair.")
    gold_rate = models.FloatField(default=0.1, help_text="Share of assignments that are gold checks.")
    min_gold_accuracy = models.FloatField(default=default_min_gold_accuracy, help_text="Raters below this are flagged.")
    assignment_ttl_seconds = models.PositiveIntegerField(
        default=default_assignment_ttl, help_text="How long a rater holds a pair before it goes to someone else."
    )
    is_open = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # --- pair choice (see evalsite/rating/engine.py) ---
    pair_policy = models.CharField(
        max_length=20,
        choices=PairPolicy.choices,
        default=PairPolicy.ACTIVE,
        help_text="How the next model pair is chosen once every model pair has its minimum of votes.",
    )
    min_votes_per_model_pair = models.PositiveIntegerField(
        default=10,
        help_text="Votes every model pair gets (round robin) before active sampling starts.",
    )
    pairs_per_rater = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Pairs one rater answers in this campaign; empty means no limit.",
    )
    # --- quality control (see evalsite/rating/quality.py) ---
    min_gold_answers = models.PositiveIntegerField(
        default=5,
        help_text="Gold answers a rater needs before the accuracy threshold can flag them.",
    )
    # Number of finished images the image pairs were last built from (the engine rebuilds when it changes).
    paired_image_count = models.PositiveIntegerField(default=0, editable=False)

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        # A new campaign on a text-to-3D run left at the image questions asks the 3D ones instead.
        if self._state.adding and self.criteria == default_criteria() and self.run.is_3d:
            self.criteria = [c.value for c in THREED_CRITERIA]
        super().save(*args, **kwargs)

    def asked_criteria(self) -> list[str]:
        """The campaign's criteria that fit its run: the 3D ones for turntables, the image ones otherwise."""
        fitting = THREED_CRITERIA if self.run.is_3d else IMAGE_CRITERIA
        return [c for c in self.criteria if c in fitting]

    def criteria_for(self, prompt: Prompt) -> list[str]:
        """The questions asked for a pair of this prompt: typography only when the prompt asks for text."""
        return [c for c in self.asked_criteria() if c != Criterion.TYPOGRAPHY or prompt.needs_text]


class GoldCheck(models.Model):
    """An attention check whose right answer is known, e.g. an image made for the prompt against an
    image made for a different prompt (the right prompt-following answer is the first)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="gold_checks")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    correct_image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    wrong_image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    criterion = models.CharField(max_length=30, choices=Criterion.choices, default=Criterion.PROMPT_FOLLOWING)
    description = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "correct_image", "wrong_image"], name="unique_gold_pair"),
        ]


class ImagePair(models.Model):
    """Two images of one prompt from two different models that a campaign asks raters to compare.

    Built from the run's finished images (same prompt and seed; another seed only where a model lacks
    that seed). `assigned` counts assignments that are open or answered, so `assigned < votes_per_pair`
    is the test for "still needs votes"; it is changed only under a row lock (engine.py).
    """

    # Only the indexes below: a campaign has ~10^5 pairs, and every index slows building them down.
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="image_pairs", db_index=False)
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+", db_index=False)
    # image_a belongs to the model with the smaller id: (model_a, model_b) names the model pair once.
    image_a = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+", db_index=False)
    image_b = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+", db_index=False)
    model_a = models.ForeignKey(ImageModel, on_delete=models.CASCADE, related_name="+", db_index=False)
    model_b = models.ForeignKey(ImageModel, on_delete=models.CASCADE, related_name="+", db_index=False)
    pair_key = models.CharField(max_length=50)
    assigned = models.PositiveIntegerField(default=0)
    answered = models.PositiveIntegerField(default=0)
    # Random tie-break among pairs with equally few votes, so raters spread over prompts.
    shuffle = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "pair_key"], name="unique_image_pair_per_campaign"),
            models.CheckConstraint(condition=Q(model_a__lt=models.F("model_b")), name="image_pair_models_ordered"),
        ]
        indexes = [models.Index(fields=["campaign", "model_a", "model_b", "assigned", "shuffle"])]


class Assignment(models.Model):
    """A pair of images of one prompt given to one rater, valid until it expires."""

    class Status(models.TextChoices):
        OPEN = "open"
        ANSWERED = "answered"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="assignments")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="+")
    image_left = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="+")
    image_right = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="+")
    # "small-large" image ids: the same pair in either order has one key.
    pair_key = models.CharField(max_length=50)
    gold = models.ForeignKey(GoldCheck, null=True, blank=True, on_delete=models.SET_NULL, related_name="assignments")
    # The campaign pair this assignment counts towards (empty for gold checks).
    image_pair = models.ForeignKey(
        ImagePair, null=True, blank=True, on_delete=models.SET_NULL, related_name="assignments"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rater", "pair_key"], condition=~Q(status="expired"), name="rater_never_gets_pair_twice"
            ),
            models.CheckConstraint(condition=~Q(image_left=models.F("image_right")), name="pair_of_two_images"),
        ]
        indexes = [models.Index(fields=["campaign", "status"]), models.Index(fields=["rater", "status"])]

    @staticmethod
    def make_pair_key(image_a_id: int, image_b_id: int) -> str:
        low, high = sorted((image_a_id, image_b_id))
        return f"{low}-{high}"

    def save(self, *args, **kwargs):
        self.pair_key = self.make_pair_key(self.image_left_id, self.image_right_id)
        super().save(*args, **kwargs)


class RaterTally(models.Model):
    """What one rater's assignments in one campaign add up to, so that /next reads a few rows instead of the
    rater's whole history (engine._history). Expired assignments count nowhere.

    Kept by database triggers on rating_assignment (migration 0009, evalsite/rating/tally.py), in the transaction
    of every insert, update and delete of an assignment, whoever writes it: the hand-out, the vote, the expiry
    sweep, the admin. Row model_id 0 holds the answered count and the gold sides; a row per image model holds
    that model's lean (times on the left minus times on the right, in real pairs). The triggers lock the rater's
    row first, so the writers of one rater's tally queue behind the same lock as /next."""

    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="+", db_index=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+", db_index=False)
    model_id = models.BigIntegerField()  # 0: answered and gold sides; otherwise an ImageModel id (its lean)
    answered = models.IntegerField(default=0)  # assignments answered
    lean = models.IntegerField(default=0)  # left minus right, in real pairs
    gold_left = models.IntegerField(default=0)  # gold checks shown with the correct image on the left
    gold_right = models.IntegerField(default=0)  # ... on the right

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rater", "campaign", "model_id"], name="one_tally_row_per_model"),
        ]


class Vote(models.Model):
    """One answer to one criterion for one assignment."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="votes")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="votes")
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="votes")
    criterion = models.CharField(max_length=30, choices=Criterion.choices)
    choice = models.CharField(max_length=20, choices=Choice.choices)
    # Which model was shown on which side, copied from the assignment so analysis needs no joins.
    model_left = models.ForeignKey(ImageModel, on_delete=models.PROTECT, related_name="+")
    model_right = models.ForeignKey(ImageModel, on_delete=models.PROTECT, related_name="+")
    time_taken_ms = models.PositiveIntegerField(null=True, blank=True)
    # Client-supplied; the same submission sent twice carries the same key and is stored once.
    idempotency_key = models.CharField(max_length=80)
    is_gold = models.BooleanField(default=False)
    gold_correct = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["assignment", "criterion"], name="one_vote_per_assignment_criterion"),
            models.CheckConstraint(condition=Q(choice__in=[c.value for c in Choice]), name="vote_choice_is_valid"),
        ]
        indexes = [models.Index(fields=["campaign", "criterion"]), models.Index(fields=["rater", "idempotency_key"])]


class RaterStats(models.Model):
    """Quality figures of one rater in one campaign, recomputed by quality.update_rater_quality."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="rater_stats")
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="stats")
    pairs_answered = models.PositiveIntegerField(default=0)
    gold_answered = models.PositiveIntegerField(default=0)
    gold_correct = models.PositiveIntegerField(default=0)
    gold_accuracy = models.FloatField(null=True, blank=True)
    median_seconds_per_pair = models.FloatField(null=True, blank=True)
    # Share of decisive (left or right) answers that chose the left image; 0.5 means no position bias.
    left_share = models.FloatField(null=True, blank=True)
    flagged = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "rater"], name="one_stats_row_per_rater")]
        verbose_name_plural = "rater stats"


class PersonalInvite(models.Model):
    """A one-time invite: its link makes one account (or lets one logged-in user join) and is then used up."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="personal_invites")
    token = models.CharField(max_length=40, unique=True, default=new_invite_token)
    # Whom the researcher sent it to, for their own records (never shown to raters).
    label = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    used_by = models.ForeignKey(Rater, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.label or f"personal invite {self.pk}"


SIMULATION_LINK = "simulation link"  # CampaignJoin.link of the simulated crowd's joins


class CampaignJoin(models.Model):
    """When a rater joined a campaign and through which link (for join-burst detection)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="joins")
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="joins")
    # "invite link", "simulation link" or "personal invite <id>"
    link = models.CharField(max_length=60)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "rater"], name="one_join_per_rater_and_campaign")]


class RaterReview(models.Model):
    """A rater the suspicion checks picked out in a campaign (analysis.suspicion), and the researcher's verdict.

    held: their votes are left out of every count until a researcher reviews them; accepted: counted like
    anyone's (the checks never hold them again in this campaign); rejected: left out for good."""

    class State(models.TextChoices):
        HELD = "held"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="rater_reviews")
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="reviews")
    state = models.CharField(max_length=20, choices=State.choices, default=State.HELD)
    reasons = models.TextField(blank=True)
    detected_at = models.DateTimeField(auto_now_add=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "rater"], name="one_review_per_rater_and_campaign")]
