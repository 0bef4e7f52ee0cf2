"""Several GPUs: one video across GPUs (plan, hooks, runtime), serving with followers, a pool of managers."""
