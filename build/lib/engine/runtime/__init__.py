"""The imperative shell around the pure core: shards, durability waits, timers, snapshots, recovery.

`Runtime` (runtime.py) is the facade net/ uses; `RuntimeConfig` its one configuration value.
"""

from engine.runtime.runtime import ADMIN, Admin, Runtime, RuntimeConfig

__all__ = ["ADMIN", "Admin", "Runtime", "RuntimeConfig"]
