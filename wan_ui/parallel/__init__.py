"""Several GPUs.

- `plan`: the user's `--parallel` config, the plan it resolves to for a world size, and the option conflicts;
- `dist`: the process group (torchrun) and the messages a serving app's ranks exchange;
- `hooks`: apply/remove context parallelism and the CFG-parallel hook on a pipeline;
- `runtime`: `ParallelRuntime`, this process's part in one video across GPUs (the model manager holds one);
- `pool`: `ManagerPool`, one model manager per GPU and each job on a free one (throughput);
- `serving`: the app's GPU setup (`--gpus`, `--gpu-mode`) and the followers of a serving parallel app.

The core never imports this package: the manager holds a runtime or a pool through duck-typed calls.
"""
