"""A simulated crowd: raters that vote through the public HTTP API, judging demo-domain images by their pixels.

    behaviour.py   who a simulated rater is (kind, reliability, position bias, ties, think time) and how it
                   turns two images' scores into an answer
    client.py      one simulated rater: joins through the invite link, fetches pairs and image files, answers
                   every question asked, with the rater page's session, CSRF token, idempotency key and retries
    crowd.py       many raters at once (threads), until a deadline or a stop signal, and what they did

It never touches the database: everything it knows comes from HTTP responses, as for a person with a browser.
Uses: a dress rehearsal of a campaign before paying raters, load, the demo, and the end-to-end proof
(bench/end_to_end.py). The management command is `manage.py simulate_raters`.
"""
