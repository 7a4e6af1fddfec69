"""Time txt2img with and without the leak over the same seeds and print the ratio.

Requests alternate (plain, leak) seed by seed after one warm-up of each, so drift of a busy
machine hits both sides alike; the ratio of the medians is printed. The tiny model makes a
step far cheaper than a real UNet step, so this ratio overstates the leak's share of a real
generation. The assertion only catches a gross slowdown, and only on an otherwise idle
machine: alternating does not cancel bursts of another process that land on one side (2.72
seen once with a second WebUI suite and a pip install sharing the two cores; 1.04 idle, 0.97
with two busy loops, 0.65 with a disk writer in the background).
"""

from __future__ import annotations

import statistics
import time

from slb_webui import SEED, infotexts, txt2img_request

SEEDS = [SEED + 1000 + i for i in range(8)]
STEPS = 10


def test_time_txt2img_with_and_without_the_leak(webui_server, presets):
    def timed(seed: int, leak: object) -> float:
        request = txt2img_request(leak, seed=seed, steps=STEPS)
        started = time.perf_counter()
        answer = webui_server.post("/sdapi/v1/txt2img", request)
        elapsed = time.perf_counter() - started
        assert ("Signal leak: test-sd1," in infotexts(answer)[0]) == (leak is not None)
        return elapsed

    timed(SEEDS[0], None)
    timed(SEEDS[0], {"preset": "test-sd1"})
    plain, leak = [], []
    for seed in SEEDS:
        plain.append(timed(seed, None))
        leak.append(timed(seed, {"preset": "test-sd1"}))
    plain_median, leak_median = statistics.median(plain), statistics.median(leak)
    ratio = leak_median / plain_median
    print(f"\n[timing] 64x64, {STEPS} Euler steps, {len(SEEDS)} seeds, median per request: "
          f"without leak {plain_median * 1000:.1f} ms, with leak {leak_median * 1000:.1f} ms, "
          f"ratio {ratio:.3f}")
    assert ratio < 2.0
