"""The security table: each input or attack against the live site in its production shape, what it must get,
and what it got.

    .venv/bin/python bench/security.py [--database-url postgres://postgres@127.0.0.1:5432/evalsite_security]

One command: a fresh PostgreSQL database, three outside systems' images imported (bench/anonymity.py's
makers: JPEG with EXIF, PNG with a text chunk, WebP; three sizes), campaigns with an open invite link, a capped
link, a panel link that requires participant ids, a campaign that takes personal invites only, two raters and
a researcher; gunicorn (3 workers, the
production settings shape, the real rate limits: 120/min per rater, 10 joins and 10 failed logins an hour
per address, counted in Redis when it runs, else in files every worker shares). Then each probe runs over
plain HTTP as a client behind the TLS proxy would (X-Forwarded-Proto: https), and the table prints
(probe, expected, observed, ok). Exits 1 if any probe is not ok. As in production the site trusts one proxy
hop (EVALSITE_PROXY_HOPS=1): the probes send X-Forwarded-For as that proxy would, the client's address last,
and a client's own X-Forwarded-For entries in front of it must count for nothing.

What is not here (tested elsewhere): schemathesis over the whole API (tests/rating/test_api_fuzz.py),
CSRF and session fixation (tests/rating/test_security.py), outage behaviour (bench/faults.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/evalsite_security"
RATER_PASSWORD = "pw-security-rater-1"
STAFF_PASSWORD = "pw-security-staff-1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from bench.databases import drop_database, recreate_database
    from bench.servers import django_step, prepare_site, redis_up, server_env, start_gunicorn, stop_server

    recreate_database(args.database_url)
    var_dir = tempfile.mkdtemp(prefix="security-")
    extra = {
        "EVALSITE_RATER_RATE": "120/min",
        "EVALSITE_JOIN_RATE": "10/hour",
        "EVALSITE_LOGIN_FAILURE_RATE": "10/hour",
        "EVALSITE_PROXY_HOPS": "1",  # the production default: one TLS proxy in front, which appends the client
    }
    if redis_up():
        extra["CACHE_URL"] = "redis://127.0.0.1:6379/9"
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-n", "9", "flushdb"], capture_output=True)
    env = server_env(args.database_url, var_dir, **extra)
    server = None
    try:
        prepare_site(env)
        seeded = django_step(__file__, env, "_seed")
        log = Path(var_dir) / "gunicorn.log"
        server, host = start_gunicorn(env, workers=3, threads=4, log_path=log)
        rows = Probes(host, seeded).run()
        # Refusals log tracebacks too (DisallowedHost, PermissionDenied); a server error logs this line.
        server_errors = log.read_text().count("Internal Server Error")
    finally:
        stop_server(server)
        if not args.keep:
            drop_database(args.database_url)
    print()
    print(f"site: gunicorn 3 workers, production settings shape, shared cache on {extra.get('CACHE_URL', 'files')}")
    print("| probe | expected | observed | ok |")
    print("|---|---|---|---|")
    for probe, expected, observed, ok in rows:
        print(f"| {probe} | {expected} | {observed} | {'yes' if ok else '**NO**'} |")
    bad = [r for r in rows if not r[3]]
    print(
        f"\n{len(rows) - len(bad)} of {len(rows)} probes as expected; {server_errors} server errors in the site's log"
    )
    if server_errors:
        print(f"site log: {log}")
    if bad or server_errors:
        raise SystemExit(1)


# --------------------------------------------------------------------------------------------------
# The probes (plain process, requests)


class Probes:
    def __init__(self, host: str, seeded: dict):
        self.host, self.seeded, self.rows = host, seeded, []
        self.origin = host.replace("http://", "https://")

    def session(self):
        import requests

        s = requests.Session()
        s.headers.update({"X-Forwarded-Proto": "https", "Origin": self.origin, "Referer": self.origin + "/"})
        return s

    def call(self, s, method: str, path: str, **kwargs):
        """One request; the session's Secure cookies are kept sendable over the plain-HTTP hop to gunicorn."""
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", 30)
        response = s.request(method, self.host + path, **kwargs)
        for cookie in s.cookies:
            cookie.secure = False
        return response

    def csrf(self, s) -> str:
        return s.cookies.get("csrftoken", "")

    def login(self, username: str, password: str):
        s = self.session()
        self.call(s, "GET", "/accounts/login/")
        form = {"username": username, "password": password, "csrfmiddlewaretoken": self.csrf(s)}
        r = self.call(s, "POST", "/accounts/login/", data=form)
        assert r.status_code == 302, f"login of {username} failed: {r.status_code}"
        return s

    def record(self, probe: str, expected: str, observed: str, ok: bool) -> None:
        self.rows.append((probe, expected, observed, ok))
        print(f"{'ok ' if ok else 'BAD'} {probe}: {observed}", flush=True)

    def api(self, s, method: str, path: str, **kwargs):
        headers = {"Accept": "application/json", "X-CSRFToken": self.csrf(s), **kwargs.pop("headers", {})}
        return self.call(s, method, path, headers=headers, **kwargs)

    def run(self) -> list:
        seeded = self.seeded
        open_campaign = seeded["campaigns"]["open"]
        rater = self.login("security-rater-1", RATER_PASSWORD)
        other = self.login("security-rater-2", RATER_PASSWORD)
        staff = self.login("security-staff", STAFF_PASSWORD)

        # --- Input the API must refuse with a 4xx JSON error, never a 500
        for label, value in (("superscript two", "²"), ("Arabic-Indic digit", "٣"), ("30 digits", "9" * 30)):
            r = self.api(rater, "GET", f"/api/assignments/next?campaign={value}")
            error = r.json().get("error") if r.headers.get("Content-Type", "").startswith("application/json") else "-"
            self.record(f"next?campaign= {label}", "400 bad_campaign", f"{r.status_code} {error}", r.status_code == 400)
        first = self.api(rater, "GET", f"/api/assignments/next?campaign={open_campaign}").json()["assignment"]
        deep = "[" * 100_000 + "]" * 100_000
        r = self.api(rater, "POST", first["votes_url"], data=deep, headers={"Content-Type": "application/json"})
        self.record(
            "vote body nested 100,000 deep",
            "400 malformed_body",
            f"{r.status_code} {r.json().get('error')}",
            r.status_code == 400,
        )
        r = self.api(rater, "POST", first["votes_url"], data="{not json", headers={"Content-Type": "application/json"})
        self.record(
            "vote body not JSON", "400 malformed_body", f"{r.status_code} {r.json().get('error')}", r.status_code == 400
        )
        answers = {c["key"]: "left" for c in first["criteria"]}
        r = self.api(other, "POST", first["votes_url"], json={"idempotency_key": "other-rater-01", "choices": answers})
        self.record("vote on another rater's assignment", "403 or 404", str(r.status_code), r.status_code in (403, 404))

        # --- Error pages and hosts
        r = self.call(self.session(), "GET", "/no-such-page/")
        leaks = any(word in r.text for word in ("URLconf", "Traceback", "settings", "DEBUG"))
        self.record(
            "unknown page",
            "404, nothing internal",
            f"{r.status_code}, internals shown: {leaks}",
            r.status_code == 404 and not leaks,
        )
        r = self.call(self.session(), "GET", "/healthz", headers={"Host": "attacker.example"})
        self.record("Host: attacker.example", "400", str(r.status_code), r.status_code == 400)

        # --- Images: through one's own assignments only, and all alike
        image = first["images"]["left"]["url"]
        r = self.call(rater, "GET", image)
        self.record("own assignment image", "200", str(r.status_code), r.status_code == 200)
        r = self.call(other, "GET", image)
        self.record("another rater's assignment image", "404", str(r.status_code), r.status_code == 404)
        token = seeded["image_tokens"][0]
        r = self.call(rater, "GET", f"/i/{token}.png")
        self.record("image by token, as a rater", "404", str(r.status_code), r.status_code == 404)
        r = self.call(staff, "GET", f"/i/{token}.png")
        self.record("image by token, as staff", "200", str(r.status_code), r.status_code == 200)
        lengths, header_sets, models = set(), set(), 0
        for _ in range(6):
            a = self.api(rater, "GET", f"/api/assignments/next?campaign={open_campaign}").json()["assignment"]
            for side in ("left", "right"):
                r = self.call(rater, "HEAD", a["images"][side]["url"])
                lengths.add(r.headers.get("Content-Length"))
                header_sets.add(tuple(sorted(k for k in r.headers if k.lower() not in ("date", "set-cookie"))))
                models += 1
            body = {"idempotency_key": f"sec-{a['id']}", "choices": {c["key"]: "left" for c in a["criteria"]}}
            self.api(rater, "POST", a["votes_url"], json=body)
        etag = any("ETag" in h or "Last-Modified" in h for h in header_sets)
        self.record(
            f"HEAD of {models} images of 3 outside systems",
            "one Content-Length, one header set, no ETag",
            f"{len(lengths)} length(s) {sorted(lengths)}, {len(header_sets)} header set(s), ETag: {etag}",
            len(lengths) == 1 and len(header_sets) == 1 and not etag,
        )

        # --- Pages carry a Content-Security-Policy; API docs load nothing from elsewhere
        for path, who in (
            ("/accounts/login/", self.session()),
            (f"/rate/{open_campaign}/", rater),
            ("/api/docs/", staff),
        ):
            r = self.call(who, "GET", path)
            csp = r.headers.get("Content-Security-Policy", "")
            outside = bool(re.search(r"""<(?:script|link)[^>]+(?:src|href)=["']https?://""", r.text))
            ok = r.status_code == 200 and "script-src 'self'" in csp and not outside
            self.record(
                f"GET {path}",
                "200, CSP script-src 'self', no outside origin",
                f"{r.status_code}, CSP: {bool(csp)}, outside URL: {outside}",
                ok,
            )

        # --- Staff pages closed to raters
        r = self.call(rater, "GET", "/runs/")
        self.record("researcher page as a rater", "403", str(r.status_code), r.status_code == 403)

        # --- Sybil: joins through an invite link
        invite = seeded["invites"]["open"]
        codes = [self.join(invite, "192.0.2.1", spoof=f"10.0.0.{i}") for i in range(12)]
        self.record(
            "12 joins from one address, each with its own X-Forwarded-For",
            "10 accounts, then 429",
            " ".join(map(str, codes)),
            codes[:10] == [302] * 10 and codes[10:] == [429, 429],
        )
        capped = [self.join(seeded["invites"]["capped"], f"192.0.2.{10 + i}") for i in range(3)]
        self.record(
            "3 joins through a link capped at 2", "302 302 403", " ".join(map(str, capped)), capped == [302, 302, 403]
        )
        panel = seeded["invites"]["panel"]
        codes = [
            self.join(panel, "192.0.2.20"),
            self.join(panel, "192.0.2.21", participant="worker-17"),
            self.join(panel, "192.0.2.22", participant="worker-17"),
        ]
        self.record(
            "panel link: no id, id, same id again", "400 302 409", " ".join(map(str, codes)), codes == [400, 302, 409]
        )

        # --- A campaign that takes raters by personal invite only
        personal = self.seeded["invites"]["personal"]
        one_time = self.seeded["personal_invite"]
        codes = [
            self.join(personal, "192.0.2.40"),
            self.join(one_time, "192.0.2.41"),
            # the page a second visitor of the used invite gets (it offers no join form to post)
            self.call(
                self.session(), "GET", f"/join/{one_time}", headers={"X-Forwarded-For": "192.0.2.42"}
            ).status_code,
        ]
        self.record(
            "personal-invite campaign: join by its link, by a one-time invite, open that invite again",
            "403 302 410",
            " ".join(map(str, codes)),
            codes == [403, 302, 410],
        )

        # --- Failed logins
        codes = []
        for _ in range(11):
            s = self.session()
            s.headers["X-Forwarded-For"] = "192.0.2.30"
            self.call(s, "GET", "/accounts/login/")
            form = {"username": "security-staff", "password": "guess", "csrfmiddlewaretoken": self.csrf(s)}
            r = self.call(s, "POST", "/accounts/login/", data=form)
            codes.append(r.status_code)
        self.record(
            "11 wrong passwords for one user name",
            "10 x 200 (form again), then 429",
            " ".join(map(str, codes)),
            codes[:10] == [200] * 10 and codes[10] == 429,
        )

        # --- The per-rater rate limit holds across the 3 gunicorn workers
        counts = {}
        fresh = self.login("security-rater-3", RATER_PASSWORD)
        for _ in range(150):
            r = self.api(fresh, "GET", f"/api/assignments/next?campaign={open_campaign}")
            counts[r.status_code] = counts.get(r.status_code, 0) + 1
        self.record(
            "150 API requests in a burst, limit 120/min, 3 processes",
            "at most 120 answered, the rest 429",
            json.dumps(counts),
            counts.get(200, 0) <= 120 and counts.get(429, 0) >= 30,
        )
        return self.rows

    def join(self, invite: str, address: str, spoof: str = "", participant: str = "") -> int:
        """A new visitor at `address` joins through the link (what the TLS proxy reports: the client's own
        X-Forwarded-For, if any, then its address); the status of the POST (302: an account was made)."""
        s = self.session()
        headers = {"X-Forwarded-For": f"{spoof}, {address}" if spoof else address}
        query = f"?participant={participant}" if participant else ""
        self.call(s, "GET", f"/join/{invite}{query}", headers=headers)
        r = self.call(s, "POST", f"/join/{invite}{query}", data={"csrfmiddlewaretoken": self.csrf(s)}, headers=headers)
        return r.status_code


# --------------------------------------------------------------------------------------------------
# Seeding (a Django process)


def seed() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    import io

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from bench.anonymity import make_outside_images
    from evalsite.rating import engine
    from evalsite.rating.models import Campaign, JoinMode, PersonalInvite, Rater
    from evalsite.runs.models import ComparisonRun, Image

    folder = Path(tempfile.mkdtemp(prefix="security-images-")) / "outside"
    manifest, _ = make_outside_images(folder, n_prompts=6, n_seeds=1)
    call_command("import_images", str(manifest), "--run", "security", "--prompt-set", "demo", stdout=io.StringIO())
    run = ComparisonRun.objects.get(name="security")
    users = get_user_model().objects
    users.create_user("security-staff", password=STAFF_PASSWORD, is_staff=True)
    campaigns = {
        "open": Campaign.objects.create(name="open", run=run, gold_rate=0.0, votes_per_pair=3),
        "capped": Campaign.objects.create(name="capped", run=run, invite_join_cap=2),
        "panel": Campaign.objects.create(name="panel", run=run, require_participant_id=True),
        "personal": Campaign.objects.create(name="personal", run=run, join_mode=JoinMode.PERSONAL),
    }
    personal_invite = PersonalInvite.objects.create(campaign=campaigns["personal"], label="bench")
    for campaign in campaigns.values():
        engine.prepare_campaign(campaign)
    for i in (1, 2, 3):
        user = users.create_user(f"security-rater-{i}", password=RATER_PASSWORD)
        rater = Rater.objects.create(user=user, instructions_seen_at=timezone.now())
        campaigns["open"].raters.add(rater)
    tokens = list(Image.objects.in_run(run).values_list("token", flat=True)[:3])
    print(
        json.dumps(
            {
                "campaigns": {k: c.pk for k, c in campaigns.items()},
                "invites": {k: c.invite_token for k, c in campaigns.items()},
                "image_tokens": tokens,
                "personal_invite": personal_invite.token,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_seed":
        seed()
    else:
        main()
