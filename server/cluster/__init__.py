"""`speakdraw cluster`: one front door in front of many `speakdraw serve` workers, placed and restarted by Ray.

Read in this order: `cli.py` (the command), `front_door.py` (routes and dispatch), `fleet.py` (each worker's
state and room), `proxy.py` (forwarding, streamed), `fleet_metrics.py`, `ray_directory.py` and `actor.py`
(the workers as Ray actors), `worker_side.py` (what runs inside a worker's own server). Importing this package
imports no Ray: only the command needs the `cluster` extra.
"""
