"""The dashboards' voted campaign (3 models, 5 raters, gold checks, one flagged rater) is the source of the
exports these tests carry to another 'instance'."""

from tests.dashboards.conftest import voted_campaign  # noqa: F401  (a fixture)
