#!/usr/bin/env python3
"""Runtime load balancing and failover on the emulated phone cluster (issue 5's benchmarks).

Starts bench/cluster/phones-3.toml (as assign_bench.py does: TinyLlama-1.1B Q4_0, workers map a local
copy) and runs `lingua run --cluster` as the emulated origin, repeating:

  (a) a device slows down mid-run: `--split optimal` (latency), one sequence of -n tokens. --cut-at
      seconds after generation starts, the CPU quota of the worker holding the most units is cut to a
      quarter (cgroup v1 cpu.cfs_quota_us of the running emulation), and restored afterwards.
        balance   balancing on (the default)
        static    --no-balance: the first plan to the end
        fresh     the quota cut before the start: `--split optimal` profiles the slow device and solves
                  for it — "a freshly optimal plan for the new speeds" (its decode tok/s)
      Reports the time from the cut to the switch ("rebalance N: now running"), the time from the cut
      until the decode rate (from the monitor lines, over blocks of --block tokens) stays >= 90 % of
      `fresh`'s over the same token positions (decode slows as the context grows), and static /
      balance for the time from the cut to the end and for the whole decode. A second fresh run
      (the control; --no-control skips it) is read against the first in the same way, from --cut-at
      seconds after its start: how far two runs of one plan differ on this machine, the floor of
      the readings above.
  (b) kill -9 of a worker while 4 sequences generate (`--objective throughput --parallel 4`): the
      worker holding the most units is killed --kill-at seconds after generation starts; all four
      outputs must equal an undisturbed run's; reports the time from the kill to the new plan running
      and to the end, against the undisturbed run.

usage: sudo bench/cluster/balance_bench.py [--build build] [--reps 2] [-n 160] [--cut-at 5] [--json]
Needs root (network namespaces, tc, cgroups), like emulate.py.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import assign_bench  # noqa: E402  (model generation, paths, prompts)

EMULATE = assign_bench.EMULATE
CLUSTER_FILE = assign_bench.CLUSTER_FILE
STATE_FILE = "/tmp/ll-emulate/state.json"


def node_cpu_cgroup(name):
    with open(STATE_FILE) as f:
        state = json.load(f)
    for n in state.get("nodes", []):
        if n["name"] == name:
            return n["cgroups"]["cpu"]
    sys.exit(f"no emulated device {name} in {STATE_FILE}")


def read_int(path):
    with open(path) as f:
        return int(f.read().strip())


def write_int(path, v):
    with open(path, "w") as f:
        f.write(str(v))


class Run:
    """`lingua run` as the emulated origin; stderr lines are timestamped as they arrive."""

    def __init__(self, build, model, extra, prompts_file=None, n=160):
        args = [os.path.join(build, "lingua"), "run", "-m", model, "--temp", "0", "-n", str(n), "--json", "-v",
                "--cluster", CLUSTER_FILE, "--insecure", "--origin-memory", "320MB", "-t", "1", "-c", "512"] + extra
        args += ["-f", prompts_file] if prompts_file else ["-p", assign_bench.PROMPT]
        self.t_start = time.monotonic()
        self.p = subprocess.Popen([sys.executable, EMULATE, "exec", "origin", "--"] + args, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, errors="replace")
        self.lines = []  # (t, line)
        self.cv = threading.Condition()
        self.out = []
        threading.Thread(target=self._pump_err, daemon=True).start()
        threading.Thread(target=self._pump_out, daemon=True).start()

    def _pump_err(self):
        for line in self.p.stderr:
            with self.cv:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def _pump_out(self):
        self.out.append(self.p.stdout.read())

    def wait_for(self, needle, timeout=600):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for t, line in self.lines:
                    if needle in line:
                        return t, line
                if self.p.poll() is not None and not any(needle in l for _, l in self.lines):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(min(left, 0.2))

    def save(self, path):
        """The run's stderr, each line with its seconds since the start."""
        with open(path, "w") as f:
            for t, line in self.lines:
                f.write(f"{t - self.t_start:9.3f} {line}\n")

    def finish(self):
        self.p.wait()
        time.sleep(0.2)
        t_end = time.monotonic()
        if self.p.returncode != 0:
            sys.exit("lingua run failed:\n" + "\n".join(l for _, l in self.lines[-40:]))
        return t_end, json.loads("".join(self.out).strip().splitlines()[-1])

    def busiest_worker(self):
        best, most = None, -1
        for _, line in self.lines:
            m = re.match(r"\s+stage \d+\s+(\S+)\s+units\s+(\d+)-\s*(\d+)", line)
            if m and m.group(1) != "origin":
                n = int(m.group(3)) - int(m.group(2)) + 1
                if n > most:
                    best, most = m.group(1), n
        return best

    def monitor(self):
        """[(t, tokens generated)] from the monitor lines."""
        out = []
        for t, line in self.lines:
            m = re.search(r"monitor: [0-9.]+ s, (\d+) tokens generated", line)
            if m:
                out.append((t, int(m.group(1))))
        return out


def rate_at(mon, n0, n1):
    """Tokens/s of a run (monitor points) between its token counts n0 and n1 (interpolated)."""
    def t_of(n):
        for (ta, na), (tb, nb) in zip(mon, mon[1:]):
            if na <= n <= nb and nb > na:
                return ta + (tb - ta) * (n - na) / (nb - na)
        return None
    ta, tb = t_of(n0), t_of(n1)
    if ta is None or tb is None or tb <= ta:
        return None
    return (n1 - n0) / (tb - ta)


def recovery_time(mon, t_cut, fresh_mon, block, share=0.9):
    """Seconds from the cut until the decode rate, over every later block of `block` tokens, stays
    >= share x the fresh optimum's rate over the same token positions (decode slows as the context
    grows, so positions must match; blocks of ~25 tokens keep the quantisation of the monitor points
    — every ~0.5 s, a token every ~0.25 s — to a few %)."""
    pts = [(t, n) for t, n in mon if t >= t_cut]
    if len(pts) < 2:
        return None

    def t_of(series, n):
        for (ta, na), (tb, nb) in zip(series, series[1:]):
            if na <= n <= nb and nb > na:
                return ta + (tb - ta) * (n - na) / (nb - na)
        return None
    starts = list(range(pts[0][1], pts[-1][1] - block + 1, block))
    oks = []
    for n0 in starts:
        rate = rate_at(pts, n0, n0 + block)
        ref = rate_at(fresh_mon, n0, n0 + block)
        oks.append(rate is None or ref is None or rate >= share * ref)
    for k in range(len(starts)):
        if all(oks[k:]):
            return t_of(pts, starts[k]) - t_cut
    return None


def block_ratios(mon, t_cut, fresh_mon, block):
    """Per block of `block` tokens from the cut on: the run's decode rate / the fresh optimum's over
    the same token positions."""
    pts = [(t, n) for t, n in mon if t >= t_cut]
    out = []
    if len(pts) < 2:
        return out
    for n0 in range(pts[0][1], pts[-1][1] - block + 1, block):
        rate, ref = rate_at(pts, n0, n0 + block), rate_at(fresh_mon, n0, n0 + block)
        if rate is not None and ref:
            out.append(round(rate / ref, 3))
    return out


def share_after(mon, t_cut, fresh_mon, after_s):
    """The decode rate from `after_s` seconds after the cut to the end of the run, as a share of the
    fresh optimum's rate over the same token positions (one figure over the rest of the run, so a
    single slow block of either run does not decide it)."""
    pts = [(t, n) for t, n in mon if t >= t_cut]
    if len(pts) < 2:
        return None
    start = None
    for (ta, na), (tb, nb) in zip(pts, pts[1:]):
        if ta <= t_cut + after_s <= tb and tb > ta:
            start = int(na + (nb - na) * (t_cut + after_s - ta) / (tb - ta))
    end = min(pts[-1][1], fresh_mon[-1][1] if fresh_mon else 0)
    if start is None or end - start < 10:
        return None
    rate, ref = rate_at(pts, start, end), rate_at(fresh_mon, start, end)
    return None if rate is None or not ref else rate / ref


def quota_cut(build, model, a, rep):
    res = {}
    # fresh: the cut before the start.
    probe = Run(build, model, ["--split", "optimal", "--objective", "latency"], n=8)
    probe.wait_for("transmission map")
    victim = probe.busiest_worker()
    probe.finish()
    cg = node_cpu_cgroup(victim)
    quota_path = os.path.join(cg, "cpu.cfs_quota_us")
    full = read_int(quota_path)
    cut = max(1000, full // 4)
    res["victim"] = victim
    res["quota_us"] = [full, cut, read_int(os.path.join(cg, "cpu.cfs_period_us"))]
    try:
        write_int(quota_path, cut)
        fresh_runs = []
        for k in range(2 if a.control else 1):
            r = Run(build, model, ["--split", "optimal", "--objective", "latency"], n=a.n)
            t_gen = r.wait_for("transmission map")
            _, j = r.finish()
            if a.save_logs:
                os.makedirs(a.save_logs, exist_ok=True)
                r.save(os.path.join(a.save_logs, f"a-rep{rep + 1}-fresh{'' if k == 0 else k + 1}.log"))
            fresh_runs.append((r, j, t_gen[0] if t_gen else r.t_start))
        r, j, _ = fresh_runs[0]
        fresh_mon = r.monitor()
        res["fresh_monitor"] = [(round(t - fresh_mon[0][0], 3), n) for t, n in fresh_mon] if fresh_mon else []
        res["fresh_tok_s"] = j["decode_tok_s"]
        # A reference that switched plans is no fresh optimum (and is slower than one): said below.
        res["fresh_rebalances"] = [jj.get("rebalances", 0) for _, jj, _ in fresh_runs]
        res["fresh_plan"] = [(d["name"], d["units"]) for d in j["devices"] if d.get("units")]
        if a.control:
            # The noise floor of the readings below: a second fresh run, read against the first as
            # the balanced run is, from --cut-at seconds after its generation started.
            r2, j2, t_gen2 = fresh_runs[1]
            mon2 = r2.monitor()
            t_mark = t_gen2 + a.cut_at
            res["control"] = {"decode_tok_s": j2["decode_tok_s"],
                              "recover_90_s": recovery_time(mon2, t_mark, fresh_mon, a.block),
                              "share_after_10s": share_after(mon2, t_mark, fresh_mon, 10.0),
                              "block_ratios": block_ratios(mon2, t_mark, fresh_mon, a.block)}
    finally:
        write_int(quota_path, full)
    for name, extra in (("balance", []), ("static", ["--no-balance"])):
        r = Run(build, model, ["--split", "optimal", "--objective", "latency"] + extra, n=a.n)
        got = r.wait_for("transmission map")
        if got is None:
            sys.exit("no plan:\n" + "\n".join(l for _, l in r.lines[-40:]))
        t_gen = got[0]
        time.sleep(max(0.0, t_gen + a.cut_at - time.monotonic()))
        try:
            write_int(quota_path, cut)
            t_cut = time.monotonic()
            t_end, j = r.finish()
        finally:
            write_int(quota_path, full)
        if a.save_logs:
            os.makedirs(a.save_logs, exist_ok=True)
            r.save(os.path.join(a.save_logs, f"a-rep{rep + 1}-{name}.log"))
        rec = {"after_cut_s": t_end - t_cut, "decode_tok_s": j["decode_tok_s"], "rebalances": j.get("rebalances", 0),
               "tokens": len(j["tokens"])}
        sw = r.wait_for("rebalance 1: now running", timeout=0)
        if sw:
            rec["switch_s"] = sw[0] - t_cut
            rec["new_plan"] = sw[1].split("now running ", 1)[1]
        mon = r.monitor()
        rec["monitor"] = [(round(t - t_cut, 3), n) for t, n in mon]  # (s after the cut, tokens)
        if name == "balance":
            rec["recover_90_s"] = recovery_time(mon, t_cut, fresh_mon, a.block)
            rec["share_after_10s"] = share_after(mon, t_cut, fresh_mon, 10.0)
            rec["block_ratios"] = block_ratios(mon, t_cut, fresh_mon, a.block)
        res[name] = rec
    res["speedup_after_cut"] = res["static"]["after_cut_s"] / res["balance"]["after_cut_s"]
    res["speedup_decode"] = res["balance"]["decode_tok_s"] / res["static"]["decode_tok_s"]
    b = res["balance"]
    print(f"rep {rep + 1} (a) {victim} quota {full} -> {cut} us: fresh optimum {res['fresh_tok_s']:.2f} tok/s "
          f"{res['fresh_plan']}; switch {b.get('switch_s', float('nan')):.1f} s after the cut "
          f"(to {b.get('new_plan', '-')}); >= 90 % of fresh from {b['recover_90_s']} s (every later "
          f"{a.block}-token block); from 10 s after the cut to the end "
          f"{(b['share_after_10s'] or float('nan')) * 100:.0f} % of fresh; after the cut: "
          f"balance {b['after_cut_s']:.1f} s, static {res['static']['after_cut_s']:.1f} s "
          f"({res['speedup_after_cut']:.2f}x); decode tok/s {b['decode_tok_s']:.2f} vs "
          f"{res['static']['decode_tok_s']:.2f} ({res['speedup_decode']:.2f}x); per block vs fresh "
          f"{b['block_ratios']}", file=sys.stderr, flush=True)
    if any(res["fresh_rebalances"]):
        print(f"rep {rep + 1} (a) WARNING: the fresh run(s) switched plans {res['fresh_rebalances']} times: "
              "that reference is slower than a fresh optimum, so the readings against it flatter the balancer",
              file=sys.stderr, flush=True)
    if "control" in res:
        c = res["control"]
        print(f"rep {rep + 1} (a) control, a second fresh run read the same way: {c['decode_tok_s']:.2f} tok/s; "
              f">= 90 % of the first from {c['recover_90_s']} s; from 10 s on "
              f"{(c['share_after_10s'] or float('nan')) * 100:.0f} %; per block {c['block_ratios']}",
              file=sys.stderr, flush=True)
    return res


def kill_worker(build, model, a, rep, prompts_file):
    extra = ["--split", "optimal", "--objective", "throughput", "--parallel", "4"]
    ref = Run(build, model, extra, prompts_file=prompts_file, n=a.n)
    t0 = ref.wait_for("transmission map")[0]
    t_end, want = ref.finish()
    r = Run(build, model, extra, prompts_file=prompts_file, n=a.n)
    t_gen = r.wait_for("transmission map")[0]
    victim = r.busiest_worker()
    time.sleep(max(0.0, t_gen + a.kill_at - time.monotonic()))
    pid = None
    for line in subprocess.run(["pgrep", "-a", "-f", f"lingua worker.*--name {victim}"], capture_output=True,
                               text=True).stdout.splitlines():
        pid = int(line.split()[0])
    if pid is None:
        sys.exit(f"cannot find the process of {victim}")
    os.kill(pid, signal.SIGKILL)
    t_kill = time.monotonic()
    t_done, got = r.finish()
    back = r.wait_for("failover 1: now running", timeout=0)
    same = [g["tokens"] == w["tokens"] for g, w in zip(got["results"], want["results"])]
    res = {"victim": victim, "failovers": got.get("failovers", 0), "outputs_equal": same,
           "recover_s": back[0] - t_kill if back else None, "new_plan": back[1].split("now running ", 1)[1] if back else None,
           "run_s": t_done - t_gen, "undisturbed_run_s": t_end - t0}
    print(f"rep {rep + 1} (b) kill -9 {victim}: {res['failovers']} failover(s), new plan running "
          f"{res['recover_s']:.2f} s after the kill ({res['new_plan']}); outputs equal: {same}; "
          f"run {res['run_s']:.1f} s vs {res['undisturbed_run_s']:.1f} s undisturbed", file=sys.stderr, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(assign_bench.ROOT, "build"))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("-n", type=int, default=160, help="tokens to generate per sequence")
    ap.add_argument("--cut-at", type=float, default=5.0, help="seconds after generation starts")
    ap.add_argument("--kill-at", type=float, default=5.0, help="seconds after generation starts")
    ap.add_argument("--block", type=int, default=25, help="tokens of decode a rate is taken over")
    ap.add_argument("--only", choices=["a", "b"])
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="(a): skip the second fresh run that shows how far two runs of one plan differ")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--save-logs", metavar="DIR", help="write each run's timestamped stderr (--verbose) to DIR")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("balance_bench.py needs root (network namespaces, tc, cgroups): run it with sudo")
    build = os.path.abspath(a.build)
    model = assign_bench.model_path(build)
    prompts = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    prompts.write("\n".join(assign_bench.PROMPTS4) + "\n")
    prompts.close()
    results = {"a": [], "b": []}
    up = assign_bench.start_cluster(build, model)
    try:
        for rep in range(a.reps):
            if a.only != "b":
                results["a"].append(quota_cut(build, model, a, rep))
            if a.only != "a":
                # A killed worker is gone: bring the cluster up again for the next repetition.
                results["b"].append(kill_worker(build, model, a, rep, prompts.name))
                subprocess.run([sys.executable, EMULATE, "down"], capture_output=True)
                up.wait(timeout=60)
                if rep + 1 < a.reps:
                    up = assign_bench.start_cluster(build, model)
    finally:
        subprocess.run([sys.executable, EMULATE, "down"], capture_output=True)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
        os.unlink(prompts.name)
    if results["a"]:
        ra = results["a"]
        print(f"\n(a) quota cut to a quarter, median of {len(ra)}: switch "
              f"{statistics.median(r['balance'].get('switch_s', float('nan')) for r in ra):.1f} s after the cut; "
              f">= 90 % of a fresh optimum after {[r['balance']['recover_90_s'] for r in ra]} s (every later "
              f"block; target <= 10); from 10 s after the cut to the end "
              f"{[round((r['balance']['share_after_10s'] or float('nan')) * 100) for r in ra]} % of fresh (target >= 90); "
              f"static / balance after the cut {statistics.median(r['speedup_after_cut'] for r in ra):.2f}x, "
              f"decode {statistics.median(r['speedup_decode'] for r in ra):.2f}x (target >= 1.3)")
        print(f"    fresh / control runs' plan switches (0 = a clean reference): {[r['fresh_rebalances'] for r in ra]}")
        if all("control" in r for r in ra):
            print(f"    control (a second fresh run against the first, read the same way): >= 90 % after "
                  f"{[r['control']['recover_90_s'] for r in ra]} s; from 10 s on "
                  f"{[round((r['control']['share_after_10s'] or float('nan')) * 100) for r in ra]} %; lowest block "
                  f"{[min(r['control']['block_ratios'], default=None) for r in ra]} (balance: "
                  f"{[min(r['balance']['block_ratios'], default=None) for r in ra]})")
    if results["b"]:
        rb = results["b"]
        print(f"(b) kill -9 with 4 sequences: outputs equal {[all(r['outputs_equal']) for r in rb]}; new plan running "
              f"{[round(r['recover_s'], 2) if r['recover_s'] is not None else None for r in rb]} s after the kill")
    if a.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
