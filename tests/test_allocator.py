"""keep_freed_memory: large blocks freed by one decoding step are reused by the next, without page faults."""

import json
import os
import subprocess
import sys
import textwrap


def glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, OSError, ValueError):
        return False


# Each step: four ~10 MB tensors alive at once, then freed, a little larger at every step (beam search's
# temporaries, and its histories that grow by a column per step). With glibc's own settings the freed
# blocks go back to the kernel and the next step faults their pages in again (~98k faults over 10 steps
# here). Run in child processes: the setting is process-wide.
STEPS = textwrap.dedent("""
    import json, resource, sys
    import torch
    from core.console import keep_freed_memory
    kept = keep_freed_memory() and keep_freed_memory() if sys.argv[1] == "keep" else None  # repeatable
    def step(s):
        blocks = [torch.ones(2_500_000 + 2_000 * s) for _ in range(4)]
        del blocks
    def faults_of(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for s in steps:
            step(s)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    faults_of(range(4))  # the first blocks come from the kernel in any case
    print(json.dumps({"kept": kept, "faults": faults_of(range(4, 14))}))
""")


def faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_freed_blocks_are_reused_without_page_faults():
    kept = faults("keep")
    assert kept["kept"] == glibc(), kept  # takes effect with glibc (and elsewhere says it did not)
    if not glibc():
        return
    default = faults("default")
    assert default["faults"] > 20_000, default  # precondition: without it, the pages go back and forth
    assert kept["faults"] < 1_000, kept
