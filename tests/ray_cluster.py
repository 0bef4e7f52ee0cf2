"""A Ray cluster for tests, on this machine's loopback address only (the workplace allows test traffic to
127.0.0.0/8 alone). Ray takes the machine's network address as its node's unless clustering is off: then it uses
127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which the workers inherit; Ray's constant is set too in case another
test imported ray before the variable was set). Ray's driver also replaces `builtins.print` with its own (its tqdm
support, RAY_TQDM_PATCH_PRINT); the original is put back after the cluster, so no later test sees Ray's.

One cluster serves every module that asks for the `ray_cluster` fixture (tests/conftest.py): starting one takes
~10 s on 2 busy cores. `SHARED` starts it for the first such test; conftest.py runs those modules one after the
other and stops it once the next test is in a module that does not use it (or at the end of the session)."""

from __future__ import annotations

import builtins
import contextlib
import os

import pytest

from wan_ui.cluster.serving import code_env

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
FIXTURE = "ray_cluster"  # the fixture name (tests/conftest.py) that marks a module as one of the cluster's


@contextlib.contextmanager
def loopback_cluster(**init_kwargs):
    """`with loopback_cluster(runtime_env=...) as ray:` — ray.init(num_cpus=2) on 127.0.0.1, shut down after."""
    os.environ[LOOPBACK_ENV] = "0"
    plain_print = builtins.print
    ray = pytest.importorskip("ray")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, **init_kwargs)
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        yield ray
    finally:
        ray.shutdown()
        os.environ.pop(LOOPBACK_ENV, None)
        builtins.print = plain_print


class SharedCluster:
    """The session's loopback cluster, started on first use and stopped on request. Its runtime environment is the
    app's (`code_env`: this package shipped to the workers, as `python app.py --ray` and `python -m wan_ui.bench
    --ray` ship it), which suits every user: the app's pool, the tuner's and the benchmark's tasks."""

    def __init__(self):
        self._stack: contextlib.ExitStack | None = None
        self.modules: set = set()  # the paths of the test modules that use it (set at collection)

    def start(self):
        """The `ray` module connected to the cluster; starts it unless it runs."""
        if self._stack is None:
            stack = contextlib.ExitStack()
            ray = stack.enter_context(loopback_cluster(runtime_env=code_env()))
            self._stack, self.ray = stack, ray
        return self.ray

    def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()


SHARED = SharedCluster()
