"""Fault injection for tests/test_ray_executor.py. Kept tiny: Ray workers import it by name.

``KillingRayExecutor`` runs ``run_shard_then_maybe_die`` as its Ray task: when the file named in
$RDP_BENCH_TEST_KILL_MARKER exists, the first worker to finish a task removes it, notes its pid in
``<marker>.killed``, and SIGKILLs itself before returning its results: the "worker died mid-run" case
that Ray must retry.
"""

import os
import signal

from rdp_bench.bench.ray_executor import RayExecutor, run_shard

KILL_MARKER_ENV = "RDP_BENCH_TEST_KILL_MARKER"


def run_shard_then_maybe_die(task, reused_bitstreams):
    results = run_shard(task, reused_bitstreams)
    marker = os.environ.get(KILL_MARKER_ENV)
    if marker:
        try:
            os.unlink(marker)  # only one worker can win this
        except FileNotFoundError:
            pass
        else:
            with open(marker + ".killed", "a") as f:
                f.write(f"{os.getpid()} {task.codec} {task.rate_label} {len(task.items)}\n")
            os.kill(os.getpid(), signal.SIGKILL)
    return results


class KillingRayExecutor(RayExecutor):
    task_function = staticmethod(run_shard_then_maybe_die)
