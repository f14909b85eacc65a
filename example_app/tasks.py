"""The example app's runner and its tasks: a welcome email, thumbnails, cache warming.

Tasks take plain data (a sign-up id, an image id) and load the rest
themselves: each job runs in an app context, so ``current_app.config`` and
:func:`example_app.db.get_db` work here as in a view, but there is no request.
"""

from __future__ import annotations

import logging
import os
import smtplib
import tempfile
import time
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import requests
from flask import current_app
from PIL import Image, ImageOps

from example_app.db import get_db
from taskrun import TaskRunner, every

logger = logging.getLogger(__name__)

#: The app's runner; ``create_app`` attaches it with ``runner.init_app(app)``.
runner = TaskRunner(name="example_app")

#: Seconds a claim on a welcome email holds; longer than a job may run.
CLAIM_LEASE = 300.0
#: Paths of the app's own pages, warmed when ``WARM_URLS`` is not set.
OWN_PAGES = ("/",)
#: The most URLs one warming run fetches.
MAX_WARM_URLS = 50
#: (connect, read) timeouts of one page fetch, in seconds.
WARM_TIMEOUT = (3.05, 10.0)


class UndeliverableEmail(Exception):
    """The SMTP server refused the message for good (a 5xx reply): retrying will not help."""


@runner.task(
    retries=5,
    retry_delay=0.5,
    retry_backoff=2.0,
    retry_on=(OSError, smtplib.SMTPException),
    timeout=60,
)
def send_welcome(signup_id: int) -> str:
    """Send the welcome email of sign-up ``signup_id`` once, through the configured SMTP server.

    Connection errors and temporary SMTP errors are retried with back-off
    (0.5 s doubling, five times); a permanent refusal raises
    :class:`UndeliverableEmail` at once.

    Idempotency.  taskrun runs a job at least once: a retry, a second
    ``delay()`` for the same sign-up, or a durable store replaying the job
    after a crash can all run it again.  So the job keeps its own record in
    ``welcome_emails`` (one row per sign-up, its primary key) and:

    1. claims the sign-up in a transaction: if the email was already sent,
       or another job claimed it less than :data:`CLAIM_LEASE` seconds ago,
       it stops here;
    2. sends the message; on any error it drops its claim, so a retry can
       try again at once;
    3. marks the sign-up sent, in a transaction, only after the SMTP server
       accepted the message.

    If the process dies between 2 and 3, the claim expires and a later run
    sends again: the email may then arrive twice, but it is never lost.
    That is at-least-once delivery, the right trade for a welcome email;
    the message has a stable ``Message-ID`` so mail software can drop the
    rare duplicate.

    :returns: ``"sent"``, ``"already sent"`` or ``"claimed by another job"``.
    :raises LookupError: if there is no such sign-up (not retried).
    """
    db = get_db()
    row = db.execute("SELECT email FROM signups WHERE id = ?", (signup_id,)).fetchone()
    if row is None:
        raise LookupError(f"no sign-up with id {signup_id!r}")
    outcome = _claim(signup_id)
    if outcome is not None:
        logger.info("welcome email of sign-up %d not sent: %s", signup_id, outcome)
        return outcome
    try:
        _deliver(_welcome_message(signup_id, row["email"]))
    except BaseException:
        db.execute(
            "UPDATE welcome_emails SET claimed_at = NULL WHERE signup_id = ? AND sent_at IS NULL",
            (signup_id,),
        )
        raise
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "UPDATE welcome_emails SET sent_at = ? WHERE signup_id = ?", (time.time(), signup_id)
        )
    return "sent"


def _claim(signup_id: int) -> str | None:
    """Claim the sign-up's email for this job; return why not, or ``None`` if claimed."""
    db = get_db()
    now = time.time()
    with db:
        db.execute("BEGIN IMMEDIATE")  # no other writer between the check and the claim
        row = db.execute(
            "SELECT claimed_at, sent_at FROM welcome_emails WHERE signup_id = ?", (signup_id,)
        ).fetchone()
        if row is not None and row["sent_at"] is not None:
            return "already sent"
        if row is not None and row["claimed_at"] is not None:
            if now - row["claimed_at"] < CLAIM_LEASE:
                return "claimed by another job"
        db.execute(
            "INSERT INTO welcome_emails (signup_id, claimed_at) VALUES (?, ?) "
            "ON CONFLICT (signup_id) DO UPDATE SET claimed_at = excluded.claimed_at",
            (signup_id, now),
        )
    return None


def _welcome_message(signup_id: int, email: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = email
    message["Subject"] = "Welcome!"
    domain = current_app.config["MAIL_FROM"].rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<welcome-{signup_id}@{domain}>"
    message.set_content(f"Hello {email},\n\nthanks for signing up.\n")
    return message


def _deliver(message: EmailMessage) -> None:
    config = current_app.config
    try:
        with smtplib.SMTP(
            config["SMTP_HOST"], config["SMTP_PORT"], timeout=config["SMTP_TIMEOUT"]
        ) as smtp:
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        raise UndeliverableEmail(f"recipient refused: {error.recipients!r}") from error
    except smtplib.SMTPResponseException as error:
        if 500 <= error.smtp_code < 600:
            raise UndeliverableEmail(f"{error.smtp_code} {error.smtp_error!r}") from error
        raise


@runner.task(executor="thread", timeout=60)
def make_thumbnail(image_id: str) -> dict[str, int]:
    """Make the PNG thumbnail of uploaded image ``image_id``, at most ``THUMBNAIL_SIZE`` px a side.

    Runs on taskrun's thread pool: Pillow's decoding and resizing hold the
    CPU (partly without the GIL), and requests keep being served meanwhile.
    The thumbnail is written to a temporary file in the same folder, then
    renamed over the final name (``os.replace`` is atomic), so a reader sees
    no thumbnail or a whole one, never half of one.

    :returns: the thumbnail's ``width`` and ``height``.
    :raises OSError: if the upload is missing or is not an image Pillow reads.
    """
    folder = Path(current_app.config["UPLOAD_FOLDER"])
    size = current_app.config["THUMBNAIL_SIZE"]
    with Image.open(folder / f"{image_id}.upload") as original:
        image = ImageOps.exif_transpose(original)
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            image = image.convert("RGB")
        image.thumbnail((size, size))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{image_id}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            image.save(out, format="PNG")
        os.replace(temporary, folder / f"{image_id}.thumb.png")
    except BaseException:
        os.unlink(temporary)
        raise
    return {"width": image.width, "height": image.height}


def warm_urls(config: Mapping[str, Any]) -> list[str]:
    """Return the URLs to warm: ``WARM_URLS``, else the app's own pages under ``BASE_URL``."""
    urls = config.get("WARM_URLS")
    if urls is None:
        base = config.get("BASE_URL")
        urls = [base.rstrip("/") + path for path in OWN_PAGES] if base else []
    if len(urls) > MAX_WARM_URLS:
        logger.warning("warming only the first %d of %d URLs", MAX_WARM_URLS, len(urls))
    return list(urls[:MAX_WARM_URLS])


@runner.periodic(every(minutes=5), timeout=120)
def warm_cache() -> dict[str, int | str]:
    """Fetch every page of :func:`warm_urls` once, so caches in front of them stay warm.

    One ``requests.Session`` per run reuses connections between pages; each
    fetch has (connect, read) timeouts.  A page that fails is reported, not
    raised, so one bad URL does not stop the others.

    :returns: each URL's HTTP status code, or the error that stopped its fetch.
    """
    results: dict[str, int | str] = {}
    with requests.Session() as session:
        session.headers["User-Agent"] = "example_app cache warmer"
        for url in warm_urls(current_app.config):
            try:
                with session.get(url, timeout=WARM_TIMEOUT) as response:
                    results[url] = response.status_code
            except requests.RequestException as error:
                logger.warning("warming %s failed: %s", url, error)
                results[url] = f"{type(error).__name__}: {error}"
    return results
