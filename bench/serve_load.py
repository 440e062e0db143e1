#!/usr/bin/env python3
"""Bounded load test of `lingua serve` on loopback (Python standard library only).

Starts `lingua serve --port 0 ...` itself (so it knows its PID), sends N completion requests from
C client threads (every other one streamed), checks every answer, and reports throughput, latency
percentiles, failures and the peak resident memory of the server (VmHWM in /proc/PID/status) and of
its --local workers, plus the server's resident memory after the warm-up and at the end (stable
memory: it should not grow with the number of requests served).

  bench/serve_load.py -m ../shared/models/stories260K.gguf --requests 200 --concurrency 8 -- --local 2

Arguments after `--` go to `lingua serve`. Exit status 1 if any request failed.
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

PROMPTS = [
    "Once upon a time",
    "The little dog",
    "Lily and Ben went to the park. They saw a big",
    "One day, a cat",
    "Tom had a red ball",
    "The sun was shining and",
]


def proc_status(pid, key):
    """A field of /proc/PID/status in bytes (VmRSS, VmHWM), or 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def percentile(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_request(port, i, max_tokens, stream):
    body = {
        "prompt": PROMPTS[i % len(PROMPTS)],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": i,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return {"ok": False, "error": f"HTTP {resp.status}: {resp.read()[:200]!r}"}
        if not stream:
            j = json.loads(resp.read())
            text = j["choices"][0]["text"]
            n = j["usage"]["completion_tokens"]
            t = time.perf_counter() - t0
            return {"ok": bool(text) or n == 0, "latency": t, "ttft": t, "tokens": n, "error": "empty text"}
        text, n, ttft, done, buf = "", 0, None, False, b""
        while True:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(4096)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                if not ev.startswith(b"data: "):
                    return {"ok": False, "error": f"bad event {ev[:80]!r}"}
                data = ev[6:]
                if data == b"[DONE]":
                    done = True
                    continue
                j = json.loads(data)
                if "error" in j:
                    return {"ok": False, "error": j["error"]["message"]}
                if j.get("usage"):
                    n = j["usage"]["completion_tokens"]
                for c in j.get("choices", []):
                    if c.get("text"):
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        text += c["text"]
        t = time.perf_counter() - t0
        ok = done and not buf and (bool(text) or n == 0)
        return {"ok": ok, "latency": t, "ttft": ttft if ttft is not None else t, "tokens": n,
                "error": "stream did not end with [DONE]" if not done else "empty text"}
    except Exception as e:  # a failure to report, not to crash on
        return {"ok": False, "error": repr(e)}
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lingua", default=os.path.join(os.path.dirname(__file__), "..", "build", "lingua"))
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=16, help="requests before the first memory reading")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("serve_args", nargs="*", help="after --: arguments of `lingua serve`")
    a = ap.parse_args()

    cmd = [a.lingua, "serve", "-m", a.model, "--port", "0"] + a.serve_args
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = srv.stdout.readline().strip()
        if "listening on http://" not in line:
            print(f"serve did not start: {line!r}", file=sys.stderr)
            return 1
        port = int(line.rsplit(":", 1)[1])
        results = [None] * a.requests
        next_i = [0]
        lock = threading.Lock()
        rss_samples = []
        warm_rss = [0]

        def client():
            while True:
                with lock:
                    i = next_i[0]
                    if i >= a.requests:
                        return
                    next_i[0] += 1
                results[i] = one_request(port, i, a.max_tokens, stream=(i % 2 == 1))
                with lock:
                    finished = sum(r is not None for r in results)
                    if finished == a.warmup and not warm_rss[0]:
                        warm_rss[0] = proc_status(srv.pid, "VmRSS")

        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                rss_samples.append(proc_status(srv.pid, "VmRSS"))
                stop.wait(0.1)

        st = threading.Thread(target=sampler)
        st.start()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(a.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        stop.set()
        st.join()
        end_rss = proc_status(srv.pid, "VmRSS")
        server_hwm = proc_status(srv.pid, "VmHWM")
        workers_hwm = [proc_status(c, "VmHWM") for c in children(srv.pid)]
        ok = [r for r in results if r and r["ok"]]
        failed = [r for r in results if not r or not r["ok"]]
        lat = [r["latency"] * 1000 for r in ok]
        ttft = [r["ttft"] * 1000 for r in ok]
        tokens = sum(r["tokens"] for r in ok)
        out = {
            "command": " ".join(cmd),
            "requests": a.requests,
            "concurrency": a.concurrency,
            "max_tokens": a.max_tokens,
            "ok": len(ok),
            "failed": len(failed),
            "wall_s": round(wall, 3),
            "requests_per_s": round(len(ok) / wall, 2) if wall > 0 else 0,
            "completion_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1) if wall > 0 else 0,
            "latency_ms": {"p50": round(percentile(lat, 50), 1), "p90": round(percentile(lat, 90), 1),
                           "p99": round(percentile(lat, 99), 1), "max": round(max(lat) if lat else 0, 1),
                           "mean": round(statistics.mean(lat), 1) if lat else 0},
            "first_text_ms": {"p50": round(percentile(ttft, 50), 1), "p90": round(percentile(ttft, 90), 1),
                              "p99": round(percentile(ttft, 99), 1)},
            "server_peak_rss_mib": round(server_hwm / 2**20, 1),
            "server_rss_after_warmup_mib": round(warm_rss[0] / 2**20, 1),
            "server_rss_end_mib": round(end_rss / 2**20, 1),
            "server_rss_max_sampled_mib": round(max(rss_samples) / 2**20, 1) if rss_samples else 0,
            "workers_peak_rss_mib": [round(x / 2**20, 1) for x in workers_hwm],
            "errors": sorted({r["error"] for r in failed if r})[:5],
        }
        if a.json:
            print(json.dumps(out))
        else:
            for k, v in out.items():
                print(f"{k:30} {v}")
        return 0 if not failed else 1
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()


if __name__ == "__main__":
    sys.exit(main())
