"""Worker health: a task round trip recorded in the database."""

import socket


def record_worker_heartbeat(payload: str) -> None:
    from evalsite.runs.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(payload=payload[:200], hostname=socket.gethostname())
