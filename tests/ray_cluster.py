"""A Ray cluster for tests, on this machine's loopback address only (the workplace allows test traffic to
127.0.0.0/8 alone). Ray takes the machine's network address as its node's unless clustering is off: then it uses
127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which the workers inherit; Ray's constant is set too in case another
test imported ray before the variable was set). Ray's driver also replaces `builtins.print` with its own (its tqdm
support, RAY_TQDM_PATCH_PRINT); the original is put back after the cluster, so no later test sees Ray's."""

from __future__ import annotations

import builtins
import contextlib
import os

import pytest

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


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
