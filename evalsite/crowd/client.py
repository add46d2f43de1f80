"""One simulated rater, speaking HTTP to the site exactly as a person's browser and the rater page do.

    rater = SimulatedRater("http://127.0.0.1:8000/join/<token>", profile, seed=3)
    rater.join()                      # GET + POST the invite page, read the instructions, open the rating page
    rater.run(deadline=time.monotonic() + 60)
    rater.report                      # pairs answered, retries, refusals ...

What it does per pair, as rater.js does: GET /api/assignments/next?campaign=<id>, download both image files
from the URLs it was given, look at them (generation.demo_judge, from the pixels and the prompt only), think,
then POST one answer per criterion asked with a fresh idempotency key that every retry of that answer reuses.
Network errors and 5xx answers are retried with backoff, 429 after Retry-After; 403/404/409/410 (expired,
already answered...) move on to the next pair. A prompt it cannot judge from pixels makes it stop and say
so (`report.refused`), never vote at random.
"""

from __future__ import annotations

import io
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin, urlparse

import numpy as np
import requests
from PIL import Image

from evalsite.crowd.behaviour import RaterProfile, decide, think_time
from generation.demo_judge import CannotJudge, ImageScores, judge_picture, parse_judgeable

REQUEST_TIMEOUT = 30.0  # seconds for one HTTP request
MAX_ATTEMPTS = 8  # per request, as the rater page
NO_PAIR_WAIT = 3.0  # seconds between polls when no pair is left (images may still be generating)
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_NEXT_URL = re.compile(r'data-next-url="([^"]+)"')


class _PlainHopCookieJar(requests.cookies.RequestsCookieJar):
    """Keeps every cookie as not Secure, so it is sent over the plain-HTTP hop behind a TLS proxy. (A cookie
    policy would not do: requests copies the session's cookies into a fresh jar with the default policy for
    every request and every redirect.)"""

    def set_cookie(self, cookie, *args, **kwargs):
        cookie.secure = False
        return super().set_cookie(cookie, *args, **kwargs)


def behind_tls_proxy(session: requests.Session, host: str) -> requests.Session:
    """Speak plain HTTP to `host` as a TLS-terminating proxy would (X-Forwarded-Proto: https), so a site in
    its production settings (Secure cookies, HTTPS-only CSRF checks) can be driven from the same machine."""
    session.headers["X-Forwarded-Proto"] = "https"
    jar = _PlainHopCookieJar()
    jar.update(session.cookies)
    session.cookies = jar
    return session


def _as_seen_by_site(url: str, proxied: bool) -> str:
    """The URL the site believes it serves (https behind a TLS proxy), for Referer headers."""
    return "https://" + url.split("://", 1)[1] if proxied and url.startswith("http://") else url


class RaterStopped(RuntimeError):
    """The rater cannot go on (the site refuses it, or the invite is not valid)."""


class PairWithdrawn(RuntimeError):
    """An image of the pair answers 404: the site withdrew the pair, and the rater asks for another."""


@dataclass
class RaterReport:
    """What one simulated rater did, from its own side of the wire."""

    kind: str
    pairs_answered: int = 0  # answers the site stored (201) or confirmed (200 replay)
    replays: int = 0  # answers the site said it already had (a retry after a lost response)
    moved_on: int = 0  # answers refused with 403/404/409/410 (expired, taken...), or withdrawn pairs: moved on
    retries: int = 0  # requests sent again after a network error, a 5xx or a 429
    server_errors: int = 0  # 5xx responses seen
    refused: str = ""  # why the rater stopped of its own accord (a prompt it cannot judge)
    stopped: str = ""  # why the site stopped it (invite not valid, campaign closed ...)
    seconds_per_pair: list[float] = field(default_factory=list)


class SimulatedRater:
    """A rater with its own HTTP session (cookies), traits and random stream."""

    def __init__(
        self,
        invite_url: str,
        profile: RaterProfile,
        seed: int,
        think_scale: float = 1.0,
        stop: threading.Event | None = None,
        participant: str = "",
        proxied: bool = False,
    ):
        # A participant id travels in the invite link, as rater panels send theirs; it names the rater's kind.
        if participant:
            invite_url += ("&" if "?" in invite_url else "?") + urlencode({"participant": participant})
        self.invite_url, self.profile, self.think_scale = invite_url, profile, think_scale
        self.rng = np.random.default_rng(seed)
        self.stop = stop or threading.Event()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "t2i-arena simulated rater"
        self.proxied = proxied  # plain HTTP to a site that believes it serves HTTPS (see behind_tls_proxy)
        if proxied:
            behind_tls_proxy(self.session, invite_url)
        self.report = RaterReport(kind=profile.kind)
        self.csrf_token = ""
        self.next_url = ""
        self.campaign_id: int | None = None

    # ------------------------------------------------------------------ HTTP with the page's retry rules

    def _request(self, method: str, url: str, **kwargs) -> requests.Response:
        """Send, retrying network errors, 5xx and 429 like the rater page (the same body every time)."""
        url = urljoin(self.invite_url, url)
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                self.report.retries += 1
            try:
                response = self.session.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs)
            except requests.RequestException:
                self._sleep(min(8.0, 0.5 * 2**attempt))
                continue
            if response.status_code >= 500:
                self.report.server_errors += 1
                self._sleep(min(8.0, 0.5 * 2**attempt))
                continue
            if response.status_code == 429:
                self._sleep(_retry_after(response))
                continue
            return response
        raise RaterStopped(f"{method} {url}: no answer after {MAX_ATTEMPTS} attempts")

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _post_form(self, url: str, page: str) -> requests.Response:
        token = _CSRF_INPUT.search(page)
        if token is None:
            raise RaterStopped(f"no form on {url}")
        referer = _as_seen_by_site(url, self.proxied)
        return self._request("POST", url, data={"csrfmiddlewaretoken": token.group(1)}, headers={"Referer": referer})

    # ------------------------------------------------------------------ joining

    def join(self) -> None:
        """Open the invite link, press Join, read the instructions, and land on the rating page."""
        page = self._request("GET", self.invite_url)
        if page.status_code != 200:
            raise RaterStopped(f"the invite link answered {page.status_code}")
        response = self._post_form(self.invite_url, page.text)  # redirects to the instructions, then the page
        if "/instructions" in urlparse(response.url).path:
            response = self._post_form(response.url, response.text)
        meta, next_url = _CSRF_META.search(response.text), _NEXT_URL.search(response.text)
        if response.status_code != 200 or meta is None or next_url is None:
            raise RaterStopped(f"did not reach the rating page (status {response.status_code} at {response.url})")
        self.csrf_token, self.next_url = meta.group(1), next_url.group(1).replace("&amp;", "&")
        self.campaign_id = int(re.search(r"campaign=(\d+)", self.next_url).group(1))  # type: ignore[union-attr]

    # ------------------------------------------------------------------ rating

    def _api(self, method: str, url: str, body: dict | None = None) -> requests.Response:
        headers = {
            "Accept": "application/json",
            "X-CSRFToken": self.csrf_token,
            "Referer": _as_seen_by_site(self.invite_url, self.proxied),
        }
        return self._request(method, url, json=body, headers=headers)

    def next_assignment(self) -> dict | None:
        response = self._api("GET", self.next_url)
        if response.status_code != 200:
            raise RaterStopped(f"next pair refused: {response.status_code} {_detail(response)}")
        return response.json()["assignment"]

    def look(self, assignment: dict) -> tuple[ImageScores, ImageScores]:
        """Download both images and score them against the prompt (CannotJudge for a prompt outside the domain)."""
        spec = parse_judgeable(assignment["prompt"]["text"])
        scores = []
        for side in ("left", "right"):
            response = self._request("GET", assignment["images"][side]["url"])
            if response.status_code == 404:  # the site withdrew the pair (its file is gone or broken): move on
                raise PairWithdrawn(f"the {side} image cannot be shown")
            if response.status_code != 200:
                raise RaterStopped(f"the {side} image answered {response.status_code}")
            picture = Image.open(io.BytesIO(response.content)).convert("RGB")
            scores.append(judge_picture(picture, spec))  # a picture, or a 3D model's turntable
        return scores[0], scores[1]

    def answer(self, assignment: dict, left: ImageScores, right: ImageScores, seconds: float) -> None:
        choices = {c["key"]: decide(self.profile, left, right, c["key"], self.rng) for c in assignment["criteria"]}
        body = {"idempotency_key": uuid.uuid4().hex, "choices": choices, "time_taken_ms": int(seconds * 1000)}
        response = self._api("POST", assignment["votes_url"], body)
        if response.status_code in (200, 201):
            self.report.pairs_answered += 1
            self.report.replays += int(response.json().get("replayed", False))
            self.report.seconds_per_pair.append(seconds)
        elif response.status_code in (403, 404, 409, 410):
            self.report.moved_on += 1
        else:
            raise RaterStopped(f"answer refused: {response.status_code} {_detail(response)}")

    def rate_one(self) -> bool:
        """Answer one pair; False when no pair is left right now."""
        assignment = self.next_assignment()
        if assignment is None:
            return False
        shown = time.monotonic()
        try:
            left, right = self.look(assignment)
        except PairWithdrawn:
            self.report.moved_on += 1
            return True
        self._sleep(max(0.0, think_time(self.profile, self.rng, self.think_scale) - (time.monotonic() - shown)))
        if self.stop.is_set():
            return True
        self.answer(assignment, left, right, time.monotonic() - shown)
        return True

    def run(self, deadline: float, max_pairs: int | None = None) -> RaterReport:
        """Join (if not yet) and rate until the deadline (time.monotonic()), max_pairs, or the stop event."""
        try:
            if not self.next_url:
                self.join()
            while not self.stop.is_set() and time.monotonic() < deadline:
                if max_pairs is not None and self.report.pairs_answered >= max_pairs:
                    break
                if not self.rate_one():
                    self._sleep(NO_PAIR_WAIT)
        except CannotJudge as e:
            self.report.refused = str(e)
        except RaterStopped as e:
            self.report.stopped = str(e)
        finally:
            self.session.close()
        return self.report


def _retry_after(response: requests.Response) -> float:
    try:
        return max(0.5, float(response.headers.get("Retry-After", "2")))
    except ValueError:
        return 2.0


def _detail(response: requests.Response) -> str:
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return response.text[:200]
