"""What "a service is briefly away" means in an exception, in one place (imports no app).

The database restarting or a connection cut off under a query (DATABASE_AWAY), Redis restarting (CACHE_AWAY),
an S3-compatible image store that cannot be reached or answers 5xx (storage_away, EVALSITE_STORAGE=s3): not bugs,
but outages that a wait and a retry get through. The web side answers them with a 503 and
Retry-After (evalsite.views.server_error), the rater API runs a request again on a fresh connection
(evalsite.rating.api), and caches that only hold hints or counts let a request through (evalsite.cache,
evalsite.throttles).
"""

from __future__ import annotations

from django.db.utils import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

DATABASE_AWAY = (OperationalError, InterfaceError)
CACHE_AWAY = (RedisConnectionError, RedisTimeoutError)


def storage_away(exc: BaseException | None) -> bool:
    """Whether the error is the image store (S3 through botocore) unreachable, timing out or failing on its side
    (5xx, throttling). A refusal (a missing object, refused credentials) is not an outage."""
    try:  # botocore comes with the s3 extra only
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError
    except ImportError:
        return False
    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
    return isinstance(exc, ConnectionError | HTTPClientError)


def storage_missing(exc: BaseException | None) -> bool:
    """Whether the error says the stored file is not there: a local file that is gone, or an S3 object that the
    store answers 404 for. Not an outage: waiting will not bring it back."""
    if isinstance(exc, FileNotFoundError):
        return True
    try:
        from botocore.exceptions import ClientError
    except ImportError:
        return False
    return isinstance(exc, ClientError) and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404


def is_outage(exc: BaseException | None) -> bool:
    """Whether the error is a service that is briefly away, rather than a bug."""
    return isinstance(exc, DATABASE_AWAY + CACHE_AWAY) or storage_away(exc)
