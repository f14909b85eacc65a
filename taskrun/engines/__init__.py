"""Where jobs run: in this process (the default) or on Celery workers (``broker=``).

The runner hands every job it does not run inline (eager mode) to one
:class:`~taskrun.engines.base.Engine`: :class:`~taskrun.engines.local.LocalEngine`
runs them in this process's pool and timer; the Celery engine
(:mod:`taskrun.engines.celery`, imported only when a broker is configured)
publishes them to Redis for ``taskrun worker`` processes to run.
"""
