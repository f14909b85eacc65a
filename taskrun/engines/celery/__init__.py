"""The Celery engine: a runner's jobs carried by Celery through Redis, run by ``taskrun worker``.

Selected by ``TaskRunner(broker="redis://...")`` (or ``TASKRUN_BROKER_URL``)
and imported only then; needs ``pip install 'taskrun-gevent[celery]'``.

* :mod:`.engine` -- the web side: publish, look up, cancel, claim periodic slots;
* :mod:`.worker` -- the worker side: each job through taskrun's own executor;
* :mod:`.records` -- the jobs' records, cancel tombstones and slot claims in Redis;
* :mod:`.codec` -- jobs, errors and messages as JSON (pure);
* :mod:`.limits` -- what Celery cannot carry safely, refused (pure);
* :mod:`.app` -- the Celery app and its settings.

Example::

    runner = TaskRunner(name="shop", broker="redis://127.0.0.1:6379/0")

    # then, beside the web processes:
    #   taskrun worker 'shop:create_app()' --concurrency 100
"""
