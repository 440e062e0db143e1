#!/usr/bin/env python3
"""Optimized model assignment on the emulated phone cluster (issue: optimal vs even vs memory).

Starts bench/cluster/phones-3.toml (origin 100 % of a core, phone-b 60 %, phone-c 25 %; 100 Mbit/s
with 3 ms and 20 Mbit/s with 15 ms; 450 MB per phone, --origin-memory 320MB on the origin, so that no
device holds the TinyLlama-1.1B Q4_0 model alone), then runs `lingua run --cluster` as the emulated
origin, interleaving the configurations and repeating them:

  even      --split even                       (LinguaLinked's baseline)  1 sequence
  memory    --split memory                     (llama.cpp RPC / exo)       1 sequence
  optimal   --split optimal (latency)                                      1 sequence
  optimal4  --split optimal --objective throughput --parallel 4            4 sequences
  optimal3  --split optimal --objective throughput --parallel 3 --decode-batches 3
                                                                 3 sequences, one per batch

and reports decode tok/s (median over --reps), the ratios the issue asks for, and the planner's
prediction against the measurement: predicted ms per token (latency: sum of stage costs; throughput:
the slowest stage) vs measured decode ms per token (1000 / tok/s; aggregate over the sequences).
The throughput prediction is checked on optimal3: every batch carries one token, so each stage works
on one token at a time, as the per-token cost model has it (three batches fill a plan of up to three
stages). optimal4 batches sequences (two share a batch, reading each weight once for both) and runs
ahead of that model: its prediction is `lingua run --verbose`'s figure for the batches it ran in
(plan::batched_ms_per_token, with the decode batch factors the profile timed on the origin).

usage: sudo bench/cluster/assign_bench.py [--build build] [--reps 3] [-n 48] [--json] [--save-logs DIR]
Workers map the model from a local copy (--model), as the weights of a 600 MB model would take minutes
over the emulated 20 Mbit/s link; the coordinator still checks it is the same model.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EMULATE = os.path.join(HERE, "emulate.py")
SPEC = os.path.join(HERE, "phones-3.toml")
CLUSTER_FILE = "/tmp/ll-emulate/cluster.toml"
PROMPT = "Once upon a time, in a small village by the sea, there lived"
PROMPTS4 = [PROMPT, "A long time ago in a land far away, a young girl",
            "The little robot looked at the stars and wondered", "Every morning the baker opened his shop and"]

CONFIGS = {
    "even": ["--split", "even"],
    "memory": ["--split", "memory"],
    "optimal": ["--split", "optimal", "--objective", "latency"],
    "optimal4": ["--split", "optimal", "--objective", "throughput", "--parallel", "4"],
    "optimal3": ["--split", "optimal", "--objective", "throughput", "--parallel", "3", "--decode-batches", "3"],
}
N_PROMPTS = {"optimal4": 4, "optimal3": 3}


def model_path(build):
    path = os.path.join(build, "bench-models", "tinyllama-1.1b-q4_0.gguf")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cmd = [os.path.join(build, "lingua"), "gen-model", "--preset", "tinyllama-1.1b", "--type", "q4_0", "-o", path]
        vocab = os.path.join(ROOT, "..", "shared", "vocab", "ggml-vocab-llama-spm.gguf")
        if os.path.exists(vocab):
            cmd += ["--vocab", vocab]
        subprocess.run(cmd, check=True)
    return os.path.abspath(path)


def start_cluster(build, model):
    """`emulate.py up` phones-3 with workers mapping `model`; returns the process once the cluster
    file exists (exits on failure or after 120 s)."""
    up = subprocess.Popen([sys.executable, EMULATE, "--lingua", os.path.join(build, "lingua"), "up", SPEC,
                           "--worker-arg=--model", f"--worker-arg={model}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    while not os.path.exists(CLUSTER_FILE):
        if up.poll() is not None:
            sys.exit("emulate.py up failed:\n" + up.stdout.read())
        if time.monotonic() - t0 > 120:
            sys.exit("the emulated cluster did not come up within 120 s")
        time.sleep(0.5)
    time.sleep(1)
    return up


def run_one(build, model, name, n_predict, prompts_files, log_path=None):
    args = [os.path.join(build, "lingua"), "run", "-m", model, "--temp", "0", "-n", str(n_predict), "--json", "-v",
            "--cluster", CLUSTER_FILE, "--insecure", "--origin-memory", "320MB", "-t", "1"] + CONFIGS[name]
    args += ["-f", prompts_files[name]] if name in N_PROMPTS else ["-p", PROMPT]
    p = subprocess.run([sys.executable, EMULATE, "exec", "origin", "--"] + args, capture_output=True, text=True,
                       errors="replace")  # a random-weight model writes arbitrary bytes
    if log_path:
        with open(log_path, "w") as f:
            f.write(p.stderr)
    if p.returncode != 0:
        sys.exit(f"failed ({name}): {' '.join(args)}\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    rec = {"config": name}
    if name in N_PROMPTS:
        rec["decode_tok_s"] = out["aggregate_decode_tok_s"]
    else:
        rec["decode_tok_s"] = out["decode_tok_s"]
    m = re.search(r"optimal plan by (\w+): ([0-9.]+) ms per token", p.stderr)
    if m:
        rec["predicted_ms"] = float(m.group(2))
    m = re.search(r"predicted for \d+ sequences in \d+ decode batches \(([0-9+]+) tokens\): ([0-9.]+) ms per token",
                  p.stderr)
    if m:
        rec["batches"] = m.group(1)
        rec["predicted_batched_ms"] = float(m.group(2))
    if name == "optimal4" and "predicted_batched_ms" in rec:
        rec["predicted_plan_ms"] = rec.pop("predicted_ms", None)  # the per-token cost, for the record
        rec["predicted_ms"] = rec["predicted_batched_ms"]
    rec["plan"] = [(d["name"], d["units"]) for d in out["devices"] if d.get("units")]
    stages = re.findall(r"stage \d+ (\S+)\s+units (\d+-\d+): measured ([0-9.]+) ms/token computing; "
                        r"predicted ([0-9.]+) ms computing \+ ([0-9.]+) ms transfer", p.stderr)
    rec["stages"] = [{"device": s[0], "units": s[1], "measured_compute_ms": float(s[2]),
                      "predicted_compute_ms": float(s[3]), "predicted_transfer_ms": float(s[4])} for s in stages]
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-n", type=int, default=48, help="tokens to generate per sequence")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--save-logs", metavar="DIR", help="write each run's --verbose log (profiling, plan) to DIR")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("assign_bench.py needs root (network namespaces, tc, cgroups): run it with sudo")
    build = os.path.abspath(a.build)
    model = model_path(build)
    prompts = {}
    for name, n in N_PROMPTS.items():
        f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        f.write("\n".join(PROMPTS4[:n]) + "\n")
        f.close()
        prompts[name] = f.name
    results = {k: [] for k in CONFIGS}
    up = start_cluster(build, model)
    try:
        for rep in range(a.reps):
            for name in CONFIGS:
                log_path = None
                if a.save_logs:
                    os.makedirs(a.save_logs, exist_ok=True)
                    log_path = os.path.join(a.save_logs, f"rep{rep + 1}-{name}.log")
                rec = run_one(build, model, name, a.n, prompts, log_path)
                results[name].append(rec)
                print(f"rep {rep + 1} {name:9s} {rec['decode_tok_s']:7.2f} tok/s"
                      + (f"  predicted {rec['predicted_ms']:.1f} ms/token, measured {1000 / rec['decode_tok_s']:.1f}"
                         if "predicted_ms" in rec else "") + f"  plan {rec['plan']}", file=sys.stderr, flush=True)
    finally:
        subprocess.run([sys.executable, EMULATE, "down"], capture_output=True)
        up.wait(timeout=60)
        for path in prompts.values():
            os.unlink(path)

    med = {k: statistics.median(r["decode_tok_s"] for r in v) for k, v in results.items()}
    # Ratios within each repetition (side by side), then their median.
    def ratio(x, y):
        return statistics.median(rx["decode_tok_s"] / ry["decode_tok_s"] for rx, ry in zip(results[x], results[y]))
    summary = {
        "decode_tok_s": med,
        "optimal_vs_even": ratio("optimal", "even"),
        "optimal_vs_memory": ratio("optimal", "memory"),
        "optimal4_vs_even1": ratio("optimal4", "even"),
        "prediction": {},
    }
    for k in ("optimal", "optimal3", "optimal4"):
        errs = [(1000 / r["decode_tok_s"]) / r["predicted_ms"] - 1 for r in results[k] if "predicted_ms" in r]
        pred = [r["predicted_ms"] for r in results[k] if "predicted_ms" in r]
        if errs:
            summary["prediction"][k] = {"predicted_ms": statistics.median(pred),
                                        "measured_ms": statistics.median(1000 / r["decode_tok_s"] for r in results[k]),
                                        "median_error": statistics.median(errs), "max_abs_error": max(abs(e) for e in errs)}
    print(f"\nphones-3, TinyLlama-1.1B Q4_0, {a.n} tokens, median of {a.reps}")
    print(f"{'config':10s} {'decode tok/s':>12s}")
    for k, v in med.items():
        print(f"{k:10s} {v:12.2f}")
    print(f"optimal / even   {summary['optimal_vs_even']:.2f}x   (target >= 1.6)")
    print(f"optimal / memory {summary['optimal_vs_memory']:.2f}x   (target >= 1.3)")
    print(f"optimal, 4 seqs (throughput) / even, 1 seq {summary['optimal4_vs_even1']:.2f}x   (target >= 2.6)")
    for k, v in summary["prediction"].items():
        target = "target within 15 %" + ("; batched prediction" if k == "optimal4" else "")
        print(f"{k}: predicted {v['predicted_ms']:.1f} ms/token, measured {v['measured_ms']:.1f} "
              f"(median error {100 * v['median_error']:+.1f} %, worst {100 * v['max_abs_error']:.1f} %; {target})")
    if a.json:
        print(json.dumps({"summary": summary, "runs": results}))


if __name__ == "__main__":
    main()
