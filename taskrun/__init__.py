"""taskrun: background jobs, delays and periodic tasks inside your gevent web server.

Importing taskrun has no side effects and never monkey-patches.
"""

from __future__ import annotations

from taskrun.clock import ManualClock as ManualClock
from taskrun.current import current_job as current_job
from taskrun.errors import BrokerError as BrokerError
from taskrun.errors import ConfigError as ConfigError
from taskrun.errors import InvalidSchedule as InvalidSchedule
from taskrun.errors import JobCancelled as JobCancelled
from taskrun.errors import JobLost as JobLost
from taskrun.errors import JobNotFinished as JobNotFinished
from taskrun.errors import JobTimeout as JobTimeout
from taskrun.errors import NoCurrentJob as NoCurrentJob
from taskrun.errors import NotSerializable as NotSerializable
from taskrun.errors import QueueFull as QueueFull
from taskrun.errors import RunnerNotRunning as RunnerNotRunning
from taskrun.errors import StoreError as StoreError
from taskrun.errors import TaskrunError as TaskrunError
from taskrun.errors import WaitTimeout as WaitTimeout
from taskrun.jobs import Job as Job
from taskrun.jobs import JobState as JobState
from taskrun.options import Retry as Retry
from taskrun.periodic.policy import PeriodicInfo as PeriodicInfo
from taskrun.runner import TaskRunner as TaskRunner
from taskrun.schedules import crontab as crontab
from taskrun.schedules import every as every
from taskrun.tasks import Task as Task

__version__ = "0.1.0"
