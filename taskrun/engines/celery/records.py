"""Jobs' records in Redis: one JSON value per job, a cancel tombstone, periodic slot claims.

Celery keeps no state for a job that has not started and calls every
unknown id PENDING, so taskrun keeps its own record of each job, written
before the job is published: ``runner.job(unknown)`` is then ``None`` and a
countdown job reads SCHEDULED.  Every write by a worker goes through a
script that first looks for the job's cancel tombstone, so a job cancelled
while no worker was online never starts, and a cancelled job's record is
never overwritten by its late outcome.

Keys (``<prefix>`` is ``taskrun:<runner name>:``): ``<prefix>job:<id>`` the
record; ``<prefix>cancel:<id>`` the tombstone; ``<prefix>slot:<task>:<slot>``
a periodic slot's claim (``SET NX``); ``<prefix>worker:<host>:<pid>`` a live
worker's heartbeat.  All of them expire.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from taskrun.engines.celery.codec import from_json, to_json
from taskrun.errors import BrokerError

__all__ = ["Records", "redacted"]

#: How long a periodic slot's claim is kept (seconds): longer than any catch-up.
SLOT_TTL = 7 * 24 * 3600

# KEYS: record, tombstone. ARGV: record JSON, ttl. Returns 0 if cancelled, else 1.
_START = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# KEYS: record, tombstone. ARGV: record JSON, ttl, state. Writes unless cancelled.
_WRITE = """
if ARGV[3] ~= 'CANCELLED' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# KEYS: record, tombstone. ARGV: now, tombstone ttl, record ttl.
# Returns 1 if the job was unfinished (now CANCELLED), 0 if finished, -1 if unknown.
_CANCEL = """
local raw = redis.call('GET', KEYS[1])
if not raw then return -1 end
local record = cjson.decode(raw)
local state = record['state']
if state == 'SUCCESS' or state == 'FAILURE' or state == 'CANCELLED' then return 0 end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
record['state'] = 'CANCELLED'
record['finished'] = tonumber(ARGV[1])
redis.call('SET', KEYS[1], cjson.encode(record), 'EX', ARGV[3])
return 1
"""


def redacted(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))


class Records:
    """Reads and writes jobs' records in one Redis database, on one shared connection pool.

    Any greenlet or thread may call it.  Every method raises
    :class:`~taskrun.errors.BrokerError` naming the URL when Redis cannot be reached.

    :param url: the Redis URL.
    :param prefix: the key prefix, ``taskrun:<name>:``.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        #: The URL as messages show it (no password).
        self.url_shown = redacted(url)
        self.prefix = prefix
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._start = self._client.register_script(_START)
        self._write = self._client.register_script(_WRITE)
        self._cancel = self._client.register_script(_CANCEL)

    def _keys(self, job_id: str) -> list[str]:
        return [f"{self.prefix}job:{job_id}", f"{self.prefix}cancel:{job_id}"]

    def fail(self, error: Exception) -> BrokerError:
        """Return the error to raise for ``error`` from Redis: what failed, where, the fix."""
        return BrokerError(
            f"cannot reach the broker at {redacted(self.url)}: {error}; start Redis there, "
            "or point TaskRunner(broker=...) / TASKRUN_BROKER_URL at a running one"
        )

    def ping(self) -> None:
        """Check that Redis answers."""
        try:
            self._client.ping()
        except redis.RedisError as error:
            raise self.fail(error) from None

    def push(
        self,
        queue: str,
        envelope: str,
        job_id: str,
        record: tuple[dict[str, Any], float] | None = None,
    ) -> None:
        """Push a message onto ``queue``'s list, with the job's record in the same transaction.

        :param record: the record to write first and its ttl (seconds), if any.
        """
        try:
            pipe = self._client.pipeline(transaction=True)
            if record is not None:
                pipe.set(self._keys(job_id)[0], to_json(record[0]), ex=max(int(record[1]), 1))
            pipe.lpush(queue, envelope)
            pipe.execute()
        except redis.RedisError as error:
            raise self.fail(error) from None

    def read(self, job_id: str) -> dict[str, Any] | None:
        """Return the job's record, or ``None`` if unknown or expired."""
        try:
            raw = self._client.get(self._keys(job_id)[0])
        except redis.RedisError as error:
            raise self.fail(error) from None
        return None if raw is None else from_json(raw)

    def start(self, job_id: str, record: dict[str, Any], ttl: float) -> bool:
        """Write the STARTED record unless the job is cancelled; ``False`` if it is."""
        try:
            done = self._start(self._keys(job_id), [to_json(record), max(int(ttl), 1)])
        except redis.RedisError as error:
            raise self.fail(error) from None
        return bool(done)

    def write(self, job_id: str, record: dict[str, Any], ttl: float) -> bool:
        """Write the job's record unless it is cancelled (CANCELLED itself always is written)."""
        args = [to_json(record), max(int(ttl), 1), record["state"]]
        try:
            return bool(self._write(self._keys(job_id), args))
        except redis.RedisError as error:
            raise self.fail(error) from None

    def cancel(self, job_id: str, now: float, ttl: float) -> int:
        """Leave a tombstone and mark the record CANCELLED, if the job is unfinished.

        :returns: 1 if it was unfinished (now CANCELLED), 0 if it had finished,
            -1 if the record is unknown or expired.
        """
        try:
            return int(self._cancel(self._keys(job_id), [now, max(int(ttl), 1), max(int(ttl), 1)]))
        except redis.RedisError as error:
            raise self.fail(error) from None

    def is_cancelled(self, job_id: str) -> bool:
        """Return whether the job's tombstone exists."""
        try:
            return bool(self._client.exists(self._keys(job_id)[1]))
        except redis.RedisError as error:
            raise self.fail(error) from None

    def length(self, queue: str) -> int:
        """Return how many messages wait in ``queue``'s list (eta messages held by workers not)."""
        try:
            return int(self._client.llen(queue))
        except redis.RedisError as error:
            raise self.fail(error) from None

    def claim_slot(self, task_name: str, slot: float) -> bool:
        """Claim a periodic slot with ``SET NX``: ``True`` for the one process that gets it."""
        key = f"{self.prefix}slot:{task_name}:{slot!r}"
        try:
            return bool(self._client.set(key, "1", nx=True, ex=SLOT_TTL))
        except redis.RedisError as error:
            raise self.fail(error) from None

    def beat(self, worker: str, info: dict[str, Any], ttl: float) -> None:
        """Write a worker's heartbeat, ``info``, which Redis forgets ``ttl`` s after the last."""
        try:
            self._client.set(f"{self.prefix}worker:{worker}", to_json(info), ex=max(int(ttl), 1))
        except redis.RedisError as error:
            raise self.fail(error) from None

    def forget(self, worker: str) -> None:
        """Remove a worker's heartbeat (it stops)."""
        try:
            self._client.delete(f"{self.prefix}worker:{worker}")
        except redis.RedisError as error:
            raise self.fail(error) from None

    def workers(self) -> list[dict[str, Any]]:
        """Return the heartbeats of the workers seen lately, in no particular order."""
        try:
            keys = list(self._client.scan_iter(match=f"{self.prefix}worker:*", count=100))
            values = self._client.mget(keys) if keys else []
        except redis.RedisError as error:
            raise self.fail(error) from None
        return [from_json(raw) for raw in values if raw is not None]

    def close(self) -> None:
        """Close the connection pool's connections."""
        self._client.close()
