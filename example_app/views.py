"""The example app's pages: sign-up, image upload and thumbnails, a background report.

Each view answers at once; the slow part runs as a job and the response
points at its status (``202 Accepted`` with a ``Location`` header).
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from flask import Blueprint, Response, current_app, jsonify, render_template, request, send_file
from flask.typing import ResponseReturnValue
from PIL import Image, UnidentifiedImageError

from example_app.db import count, get_db
from example_app.tasks import make_thumbnail, runner, send_welcome
from taskrun import QueueFull, current_job
from taskrun.flask import RequestData, accepted_response, job_status, status_url

bp = Blueprint("example", __name__)

# Good enough to catch typos; the SMTP server has the last word.
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
IMAGE_ID = re.compile(r"[0-9a-f]{32}")
BUSY = {"error": "the server is busy; try again in a few seconds"}
#: The parts the report is built in; it reports its progress after each.
REPORT_STEPS = 4


@bp.get("/")
def index() -> str:
    """The page a person tries the app on."""
    return render_template("index.html", mail_dir=current_app.config["MAIL_DIR"])


@bp.post("/signup")
def signup() -> ResponseReturnValue:
    """Record a sign-up (form or JSON field ``email``) and send its welcome email as a job."""
    email = _field("email").strip()
    if not EMAIL.fullmatch(email) or len(email) > 254:
        return {"error": f"not an email address: {email!r}; send e.g. email=ada@example.com"}, 400
    db = get_db()
    try:
        cursor = db.execute(
            "INSERT INTO signups (email, created_at) VALUES (?, ?)", (email, time.time())
        )
    except sqlite3.IntegrityError:
        return {"error": f"{email!r} has already signed up"}, 409
    signup_id = int(cursor.lastrowid or 0)
    try:
        # After the insert has committed: the job may start at once.
        job = send_welcome.delay(signup_id)
    except QueueFull:
        db.execute("DELETE FROM signups WHERE id = ?", (signup_id,))
        return BUSY, 503, {"Retry-After": "5"}
    return accepted_response(job, signup_id=signup_id)


def _field(name: str) -> str:
    payload = request.get_json(silent=True)
    value = request.form.get(name)
    if value is None and isinstance(payload, dict):
        value = payload.get(name)
    return value if isinstance(value, str) else ""


@bp.post("/images")
def upload_image() -> ResponseReturnValue:
    """Store an uploaded image (multipart field ``file``) and make its thumbnail as a job."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return {"error": "attach an image file as the multipart field 'file'"}, 400
    image_id = uuid.uuid4().hex
    path = _folder() / f"{image_id}.upload"
    upload.save(path)
    try:
        with Image.open(path):  # reads the header only: cheap, and refuses non-images now
            pass
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        path.unlink()
        return {"error": f"{upload.filename!r} is not an image we can read: {error}"}, 400
    try:
        job = make_thumbnail.delay(image_id)
    except QueueFull:
        path.unlink()
        return BUSY, 503, {"Retry-After": "5"}
    get_db().execute(
        "INSERT INTO images (id, job_id, created_at) VALUES (?, ?, ?)",
        (image_id, job.id, time.time()),
    )
    return accepted_response(job, image_id=image_id, thumbnail_url=f"/images/{image_id}")


@bp.get("/images/<image_id>")
def thumbnail(image_id: str) -> ResponseReturnValue:
    """The thumbnail (PNG) once made; until then its job's status with ``202``."""
    if not IMAGE_ID.fullmatch(image_id):
        return {"error": f"no image {image_id!r}"}, 404
    made = _folder() / f"{image_id}.thumb.png"
    if made.exists():
        return send_file(made, mimetype="image/png", max_age=0)
    row = get_db().execute("SELECT job_id FROM images WHERE id = ?", (image_id,)).fetchone()
    job = runner.job(row["job_id"]) if row is not None else None
    if job is None:
        return {"error": f"no thumbnail of image {image_id!r}; upload it again"}, 404
    response: Response = jsonify(job_status(job))
    if job.ready():
        response.status_code = 422  # the job ended without a thumbnail: the error says why
    else:
        response.status_code = 202
        response.headers["Location"] = status_url(job.id)
    return response


def _folder() -> Path:
    return Path(current_app.config["UPLOAD_FOLDER"])


@bp.post("/report")
@runner.background
def report(request_data: RequestData) -> dict[str, Any]:
    """Count sign-ups, sent emails and images of the last ``?days=`` days (1-365, default 7).

    Runs as a job (``@runner.background``): the request gets ``202`` and the
    page polls the status endpoint for the result.  The job reports its
    progress, ``{"current": i, "total": REPORT_STEPS}`` in the status's
    ``meta``, which the page shows as a progress bar.
    """
    days = min(max(request_data.args.get("days", default=7, type=int), 1), 365)
    job = current_job()
    for step in range(REPORT_STEPS):
        job.update(current=step, total=REPORT_STEPS)
        # Stands for a slow query, in REPORT_STEPS parts.
        gevent.sleep(current_app.config["REPORT_DELAY"] / REPORT_STEPS)
    job.update(current=REPORT_STEPS, total=REPORT_STEPS)
    since = time.time() - days * 86400
    return {
        "days": days,
        "signups": count("SELECT count(*) FROM signups WHERE created_at >= ?", since),
        "welcome_emails_sent": count(
            "SELECT count(*) FROM welcome_emails WHERE sent_at >= ?", since
        ),
        "images": count("SELECT count(*) FROM images WHERE created_at >= ?", since),
        "jobs": runner.stats()["states"],
    }
