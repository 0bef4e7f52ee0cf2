"""Beyond one machine: the app's jobs on the GPUs of a Ray cluster (`python app.py --ray ADDRESS`; docs/SCALING.md).

- `worker`: `GenerationWorker`, the Ray actor that holds one model manager on one GPU of some node and runs core
  `generate()` for one job at a time; `WorkerReply`, what a job sends back; `import_ray`;
- `pool`: `RemoteWorker` (the app's side of one actor: the object a lease hands to `generate()`, whose
  `run_remote` runs the whole job there) and `RayPool`, a `ManagerPool` over them;
- `serving`: `--ray` and `--ray-workers`: connect to the cluster and start one worker per GPU.

Ray is optional at run time: only this package uses it, and it imports `ray` when `--ray` is given
(`worker.import_ray`), never at import time, so `python app.py` without `--ray` does not load it. The core never
imports this package: `generate()` hands a job to any leased object that has a `run_remote` method.
"""
