#!/usr/bin/env python3
"""Smoke test of the emulated cluster (root; a few seconds of CPU). Checks, and prints PASS/FAIL for each:

  1. the latency proxy alone on loopback: round trip direct, through a 0 ms and a 5 ms proxy
  2. `emulate.py run SPEC -- -m MODEL -p PROMPT -n 32 --temp 0 --json` gives the tokens of a
     single-process `lingua run`, and every device's tbf qdiscs sent bytes in both directions
  3. `emulate.py up` in the background: `tc -s qdisc show` inside a namespace, a 1 s busy loop run as
     the slowest device gets about its cpu share and is throttled (cpu.stat nr_throttled > 0), a run
     against the generated cluster file gives the same tokens again
  4. `emulate.py down` leaves nothing behind: no ll-emu-* namespaces, lle* links, ll-emu cgroups,
     recorded processes or state file

usage: bench/cluster/smoke.py [--spec SPEC] [--model MODEL] [--lingua PATH]
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ next to the sources
import emulate  # noqa: E402
import latency_proxy  # noqa: E402

EMULATE = os.path.join(HERE, "emulate.py")
results = []


def check(name, ok, detail=""):
    results.append((name, ok))
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""), flush=True)


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def proxy_overhead():
    procs = []
    try:
        py = sys.executable
        procs.append(subprocess.Popen([py, latency_proxy.__file__, "echo", "--listen", "127.0.0.1:47101"],
                                      stdout=subprocess.DEVNULL))
        for port, delay in ((47102, 0), (47103, 5)):
            procs.append(subprocess.Popen([py, latency_proxy.__file__, "proxy", "--listen", f"127.0.0.1:{port}",
                                           "--target", "127.0.0.1:47101", "--delay-ms", str(delay)],
                                          stdout=subprocess.DEVNULL))
        time.sleep(0.8)
        r = {name: latency_proxy.ping(("127.0.0.1", port), 200, 0)["rtt_ms_median"]
             for name, port in (("direct", 47101), ("proxy 0 ms", 47102), ("proxy 5 ms", 47103))}
        detail = ", ".join(f"{k} {v:.3f} ms" for k, v in r.items())
        extra = r["proxy 5 ms"] - r["direct"] - 10.0
        check("latency proxy round trip", 10.0 <= r["proxy 5 ms"] - r["direct"] < 12.0,
              f"{detail}; 5 ms proxy adds 10 ms + {extra:.3f} ms per round trip")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def leftovers(state_pids):
    left = emulate.our_netns() + emulate.our_links() + emulate.our_cgroups()
    left += [f"pid {p}" for p, st in state_pids if emulate.alive(p, st)]
    if os.path.exists(emulate.STATE_FILE):
        left.append(emulate.STATE_FILE)
    return left


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=emulate.DEFAULT_SPEC)
    ap.add_argument("--model", default=os.path.join(emulate.REPO, "..", "shared", "models", "stories260K.gguf"))
    ap.add_argument("--lingua", default=emulate.DEFAULT_LINGUA)
    ap.add_argument("--prompt", default="Once upon a time")
    args = ap.parse_args()
    gen = ["-m", args.model, "-p", args.prompt, "-n", "32", "--temp", "0", "--json"]

    subprocess.run([EMULATE, "check"], check=False)
    print()
    proxy_overhead()

    local = last_json(subprocess.run([args.lingua, "run"] + gen, capture_output=True, text=True, check=True).stdout)
    report = "/tmp/ll-emulate-smoke-report.json"
    p = subprocess.run([EMULATE, "--lingua", args.lingua, "run", args.spec, "--report-json", report, "--"] + gen,
                       capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        check("emulate.py run", False, f"exit {p.returncode}")
        return 1
    dist = last_json(p.stdout)
    check("emulate.py run: tokens equal the single-process run", dist["tokens"] == local["tokens"],
          f"{len(dist['tokens'])} tokens, decode {dist['decode_tok_s']:.1f} tok/s emulated vs "
          f"{local['decode_tok_s']:.0f} tok/s local; devices " +
          ", ".join(f"{d['name']} units {d['units'][0]}-{d['units'][1]}" for d in dist["devices"]))
    print(f"      text: {dist['text']!r}")
    with open(report) as f:
        rep = json.load(f)
    os.unlink(report)
    shaped = all((s.get("tc_up") or {}).get("bytes", 0) > 0 and (s.get("tc_down") or {}).get("bytes", 0) > 0
                 for s in rep["stats"] if s["name"] != "origin")
    check("tbf qdiscs carried the traffic (both ends of every device link)", shaped,
          "; ".join(f"{s['name']}: sent {s['tc_up']['bytes']} B, received {s['tc_down']['bytes']} B, "
                    f"overlimits {s['tc_up']['overlimits'] + s['tc_down']['overlimits']}"
                    for s in rep["stats"] if s.get("tc_up") and s.get("tc_down")))

    # 3. up in the background.
    out_path = os.path.join(emulate.STATE_DIR, "cluster.toml")
    up = subprocess.Popen([EMULATE, "--lingua", args.lingua, "up", args.spec], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    state_pids = []
    try:
        table = []
        for line in up.stdout:
            table.append(line)
            if line.startswith("cluster file:"):
                break
        else:
            check("emulate.py up", False, up.stderr.read())
            return 1
        print("".join(table), end="")
        state = emulate.State.load()
        state_pids = [(pr["pid"], pr["starttime"]) for pr in state.data["processes"]]
        nodes = [n for n in state.data["nodes"] if not n["origin"]]
        r = subprocess.run([args.lingua, "run"] + gen + ["--cluster", out_path, "--insecure"], capture_output=True,
                           text=True)
        check("lingua run --cluster (file written by up): same tokens",
              r.returncode == 0 and last_json(r.stdout)["tokens"] == local["tokens"])
        n = nodes[-1]
        tc = subprocess.run(["ip", "netns", "exec", n["netns"], "tc", "-s", "qdisc", "show", "dev", n["link_dev"]],
                            capture_output=True, text=True).stdout
        print("      " + tc.strip().replace("\n", "\n      "))
        check(f"tc -s qdisc inside {n['netns']} shows tbf with bytes sent", "tbf" in tc and "Sent 0 bytes" not in tc)
        slow = min((x for x in nodes if x["cpu"]), key=lambda x: x["cpu"])
        burn = ("import time\nt0 = time.time(); c0 = time.process_time()\n"
                "while time.time() - t0 < 1.0: pass\nprint(time.process_time() - c0)")
        r = subprocess.run([EMULATE, "exec", slow["name"], "--", sys.executable, "-c", burn], capture_output=True,
                           text=True)
        got = float(r.stdout.strip() or "nan")
        stat = emulate.node_stats(slow)["cpu"]
        check(f"cgroup quota: 1 s busy loop as {slow['name']} (cpu = {slow['cpu']:g})",
              abs(got - slow["cpu"]) < 0.25 * slow["cpu"] + 0.02 and stat["nr_throttled"] > 0,
              f"got {got:.3f} CPU s; cpu.stat nr_throttled {stat['nr_throttled']} of {stat['nr_periods']} periods, "
              f"throttled {stat['throttled_time'] / 1e9:.3f} s")
    finally:
        d = subprocess.run([EMULATE, "down"], capture_output=True, text=True)
        sys.stderr.write(d.stderr)
        try:
            up.wait(timeout=20)
        except subprocess.TimeoutExpired:
            up.kill()
    left = leftovers(state_pids)
    check("down removed everything (namespaces, links, cgroups, processes, state)",
          not left and up.returncode is not None and d.returncode == 0, ", ".join(left) or "nothing left")
    failed = [n for n, ok in results if not ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
