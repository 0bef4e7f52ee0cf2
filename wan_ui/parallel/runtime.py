"""This process's part in one video on several GPUs: `ParallelRuntime` holds the config, the process group and the
device meshes, brings a pipeline to the plan of each request (`sync`, called by the model manager after the
run-time families so the parallel hooks stay outermost) and, in a serving app, announces each job to the other
ranks (`start_job`)."""

from __future__ import annotations

from torch.distributed.device_mesh import init_device_mesh

from wan_ui.optim.state import state_of
from wan_ui.parallel.dist import DistInfo, SyncedCancel, announce
from wan_ui.parallel.hooks import ParallelUndo, apply_parallel, remove_parallel
from wan_ui.parallel.plan import ParallelConfig, ParallelPlan, check_parallel, resolve_plan


class ParallelRuntime:
    """This process's part in a parallel run: the config, the process group, the device meshes built so far."""

    def __init__(self, config: ParallelConfig, dist_info: DistInfo, serving: bool = False):
        self.config, self.dist, self.serving = config, dist_info, serving
        self._meshes: dict[tuple[int, int], object] = {}  # (ring, ulysses) -> DeviceMesh (building one is collective)

    def plan(self, transformer, request=None) -> ParallelPlan:
        tokens = request.tokens_per_forward() if request is not None else None
        return resolve_plan(self.config, self.dist.world_size, transformer.config.num_attention_heads, tokens)

    def check(self, opts) -> None:
        """Before any model work: the combinations this config certainly cannot run."""
        check_parallel(opts, self.config.kinds())

    def sync(self, pipe, opts, request=None, runtime_changed: bool = False) -> dict:
        """Bring `pipe` to this runtime's plan for `request`; return the plan (+ rank) as a dict."""
        plan = self.plan(pipe.transformer, request)
        check_parallel(opts, plan.kinds())
        st, wanted = state_of(pipe), ParallelUndo(plan, opts.attention_backend)
        if st.parallel != wanted or runtime_changed:  # run-time hooks were re-stacked: go outermost
            remove_parallel(pipe)
            apply_parallel(pipe, plan, self)
            st.parallel = wanted
        return {**plan.to_dict(), "rank": self.dist.rank, "backend": self.dist.backend}

    def mesh(self, ring: int, ulysses: int):
        if (ring, ulysses) not in self._meshes:
            self._meshes[(ring, ulysses)] = init_device_mesh(self.dist.device.split(":")[0], (ring, ulysses),
                                                             mesh_dim_names=("ring", "ulysses"))
        return self._meshes[(ring, ulysses)]

    # ---- serving: rank 0 runs the UI, the other ranks run every job with it -----------------------------
    def start_job(self, model, request, opts, cancel):
        """Called by generate() on every rank. Serving leader: tell the followers what to run. Serving: a cancel
        flag all ranks read together. Otherwise (CLI under torchrun, every rank runs the same command): as is."""
        if not self.serving:
            return cancel
        if self.dist.leader:
            announce(self.dist, (model, request, opts))
        return cancel if isinstance(cancel, SyncedCancel) else SyncedCancel(cancel, self.dist.control)

    def stop_followers(self) -> None:
        if self.serving and self.dist.leader:
            announce(self.dist, None)
