"""Session-wide test set-up: CPU only, 8 simulated devices for the sharding tests, one persistent
XLA compilation cache for the tests and every process they start."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A program already compiled (same HLO, devices and flags) is loaded from disk instead of compiled
# again: trainer tests build the same train step several times, and most console-script tests
# start `stiv-train` / `stiv-sample` / `stiv-eval` on the same tiny config (a tiny stiv-train run:
# 38 s cold, 16 s warm). Subprocesses inherit the setting through the environment. The folder
# outlives the run (warm re-runs); time the suite with it removed.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "stiv_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
)
