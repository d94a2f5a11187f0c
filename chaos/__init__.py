"""The chaos runner: proves, against a real broker, that nothing is lost under faults.

``python -m chaos.runner`` (``make chaos``) runs ``chaos.stages`` as several worker processes,
publishes a keyed load with poison records in it, and meanwhile kills (``kill -9``), stops
(SIGTERM), adds and removes workers and restarts the broker, on a seeded schedule. Once the
load is drained it reads back what happened and checks it: the last stdout line is a JSON
object of figures, and the exit status is 0 only if nothing was lost or applied twice, the
dead-letter topic holds exactly the poison, the exactly-once copy has one committed output per
input and every SIGTERM exit was clean.

Modules, in the order a run uses them:

- ``runner``    the command line and the orchestration (``python -m chaos.runner --help``)
- ``scenario``  options, settings, worker environment, store and topic names of a run
- ``stages``    the pipeline under test (Effects: at least once + idempotency store;
                EosCopy: exactly once)
- ``load``      the events (pure plan) and the publisher thread that sends them at a rate
- ``faults``    the fault schedule (pure, seeded)
- ``workers``   worker processes: start, kill -9, SIGTERM, reap
- ``broker``    which broker, and restarting it
- ``inject``    carries out the schedule against the workers and the broker
- ``observe``   draining (lag 0) and reading back topics
- ``effects``   the side-effect table and the delivery files
- ``history``   the checks: recorded history → figures (pure)
- ``report``    the table and the final JSON line
"""
