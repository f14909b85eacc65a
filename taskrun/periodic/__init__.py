"""Periodic jobs: the pure policies, the timer that applies them, and leader election.

:mod:`~taskrun.periodic.policy` (slots, misfire, overlap, jitter, takeover;
pure), :mod:`~taskrun.periodic.timer` (arms each slot on the scheduler's
heap and runs it while leading), :mod:`~taskrun.periodic.leader` (one
leader among the processes sharing a lock file) and
:mod:`~taskrun.periodic.lock_paths` (which lock file a runner uses).
"""
