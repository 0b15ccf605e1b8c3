"""What `peers.py` and its workers measure about the machine, with the standard library alone (the workers run
other toolkits and must not import this project's packages): how busy the other processes keep the CPUs,
waiting until they are quiet, and how far a call raises the peak resident memory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> tuple[int, int]:
    """All CPUs' (total, busy) ticks from /proc/stat (busy: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    total = sum(ticks[:8])  # user .. steal; guest time is already counted in user
    return total, total - ticks[3] - ticks[4]


def own_ticks() -> float:
    """CPU ticks this process has used, all its threads."""
    t = os.times()
    return (t.user + t.system) * TICKS


class OthersShare:
    """Percent of all CPUs that other processes kept busy between `start()` and `stop()`: the machine's busy
    ticks less this process's own."""

    def start(self) -> OthersShare:
        self.total, self.busy = cpu_ticks()
        self.own = own_ticks()
        return self

    def stop(self) -> float | None:
        total, busy = cpu_ticks()
        elapsed = total - self.total
        if elapsed <= 0:
            return None
        others = (busy - self.busy) - (own_ticks() - self.own)
        return round(max(0.0, 100.0 * others / elapsed), 1)


def others_pct(seconds: float = 1.0) -> float | None:
    """The others' share over `seconds` while this process sleeps (`benchmarks/common.py`'s cpu_busy_pct, less
    this process's own ticks)."""
    try:
        meter = OthersShare().start()
        time.sleep(seconds)
        return meter.stop()
    except OSError:
        return None


def wait_quiet(threshold: float, max_wait: float, window: float = 1.0) -> dict:
    """Sleep until the others' share over `window` seconds is under `threshold` percent, or `max_wait` seconds
    have passed; the last share seen and the seconds waited."""
    started = time.perf_counter()
    share = others_pct(window)
    while share is not None and share >= threshold and time.perf_counter() - started < max_wait:
        share = others_pct(window)
    return {"others_cpu_pct_before": share, "waited_s": round(time.perf_counter() - started, 1)}


def status_bytes(field: str) -> int:
    """VmRSS or VmHWM of this process, in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def peak_rss_growth(fn: Callable[[], Any]) -> tuple[Any, dict]:
    """fn's result and how far it raised the peak RSS above the RSS before it. Writing 5 to
    /proc/self/clear_refs resets the peak (VmHWM) to the present RSS first, so earlier peaks (the model's
    construction) do not hide this one."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = status_bytes("VmRSS")
    peak_before = status_bytes("VmHWM")
    out = fn()
    peak = status_bytes("VmHWM")
    grown = peak - (before if reset else max(before, peak_before))
    return out, {"rss_before_mb": before / 2**20, "peak_growth_mb": max(0, grown) / 2**20, "hwm_reset": reset}
