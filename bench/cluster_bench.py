#!/usr/bin/env python3
"""Pipeline benchmarks of `lingua run --local N` against one process, measured side by side.

  speed   TinyLlama-1.1B-shaped Q8_0 model (gen-model): single-stream decode, decode with 2 sequences
          in flight (with --split's options, and again with lingua's default for several prompts),
          and prefill of a ~256-token prompt, for one process with 1 thread and for `--local 2 -t 1`
          (two worker processes with 1 thread each). Runs are interleaved and repeated; the median
          of each is reported with the ratios. For scale, each repetition also runs two one-process
          decodes at once (pinned to CPUs 0 and 1): what the machine itself gives two streams.
  memory  llama-2-7b-shaped Q4_0 model (~3.8 GB) over `--local 3 --memory-limit 1600MB`; reports each
          worker's peak resident memory (its own getrusage, via STATS) against the limit, and shows a
          1000MB limit refused with a clear error.

usage: bench/cluster_bench.py speed|memory|all [--build build] [--reps 3] [--json]
Models are generated once into BUILD/bench-models. Prints a table, and JSON with --json.
Every --local run but one passes --split even unless --split says otherwise: these measure the pipeline
itself (the default, optimal, keeps every unit on the origin of a one-machine cluster for one prompt;
bench/cluster/assign_bench.py measures it). The exception is the second two-sequence run, which passes
no split option: lingua's default for several prompts.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(ROOT, "..", "shared", "vocab", "ggml-vocab-llama-spm.gguf")

# llama.cpp figures recorded in the issue on this machine class (TinyLlama Q8_0): RPC backend with two
# rpc-server processes on loopback (1 thread each), and one process with 1 thread.
LLAMA_CPP_RPC = {"decode_tok_s": 6.5, "prefill_tok_s": 39.0}
LLAMA_CPP_ONE = {"decode_tok_s": 7.1, "prefill_tok_s": 37.1}


def model_path(build, preset, qtype):
    d = os.path.join(build, "bench-models")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{preset}-{qtype}.gguf")
    if not os.path.exists(path):
        cmd = [os.path.join(build, "lingua"), "gen-model", "--preset", preset, "--type", qtype, "-o", path]
        if os.path.exists(VOCAB):
            cmd += ["--vocab", VOCAB]
        subprocess.run(cmd, check=True)
    return path


def run(build, args):
    cmd = [os.path.join(build, "lingua"), "run"] + args + ["--json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if out.get("failovers") or out.get("rebalances"):
        # A plan change mid-run measures something else than the split asked for: say so.
        print(f"warning: {out.get('failovers', 0)} failover(s), {out.get('rebalances', 0)} rebalance(s) in: "
              f"{' '.join(cmd)}", file=sys.stderr)
    return out


def run_two_at_once(build, args):
    """Two one-process runs at the same time, pinned to the first two CPUs (when there are two): what this
    machine gives two streams that share nothing but the hardware. Returns their decode tok/s."""
    cpus = sorted(os.sched_getaffinity(0))
    cmd = [os.path.join(build, "lingua"), "run"] + args + ["--json"]
    procs = []
    for k in range(2):
        pin = (lambda c=cpus[k]: os.sched_setaffinity(0, {c})) if len(cpus) >= 2 else None
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      preexec_fn=pin))
    rates = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{err}")
        rates.append(json.loads(out.strip().splitlines()[-1])["decode_tok_s"])
    return rates


def in_flight_rate(out):
    """The 2-sequence run's decode rate while both were in flight; the whole span's when they never
    were at once (one stopped at its first token), said so."""
    if "concurrent_decode_tok_s" in out:
        return out["concurrent_decode_tok_s"]
    print("warning: the two sequences never decoded at once; counting the whole span", file=sys.stderr)
    return out["aggregate_decode_tok_s"]


def speed(build, reps, split):
    m = model_path(build, "tinyllama-1.1b", "q8_0")
    base = ["-m", m, "--temp", "0", "-t", "1"]
    short = "Once upon a time, in a small village by the sea, there lived"
    long_prompt = " ".join(["the quick brown fox jumps over the lazy dog"] * 23)  # 254 tokens with the llama vocabulary
    tmp = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    tmp.write(short + "\n" + "A long time ago in a land far away, a young girl\n")
    tmp.close()
    samples = {k: [] for k in ["one_decode", "pipe_decode", "pipe_decode_2seq", "pipe_decode_2seq_default",
                               "pipe_decode_2seq_span", "pipe_decode_2seq_default_span", "one_prefill",
                               "pipe_prefill", "two_one_process_runs_at_once"]}
    n_prompt_long = 0
    for r in range(reps):
        j = run(build, base + ["-p", short, "-n", "64"])
        samples["one_decode"].append(j["decode_tok_s"])
        j = run(build, base + ["-p", short, "-n", "64", "--local", "2"] + split)
        samples["pipe_decode"].append(j["decode_tok_s"])
        # For scale: the machine's own limit for two streams (memory bandwidth, the host's other load).
        samples["two_one_process_runs_at_once"].append(sum(run_two_at_once(build, base + ["-p", short, "-n", "64"])))
        j = run(build, base + ["-f", tmp.name, "-n", "64", "--local", "2", "--parallel", "2"] + split)
        # Two sequences: the decode rate while both are in flight (concurrent_decode_tok_s), and over
        # the whole span from the first one's first token (the other still runs its prompt at first,
        # and one may end before the other).
        samples["pipe_decode_2seq"].append(in_flight_rate(j))
        samples["pipe_decode_2seq_span"].append(j["aggregate_decode_tok_s"])
        # The same with no split option: what `lingua run` does by default with several prompts
        # (--split optimal, objective throughput).
        j = run(build, base + ["-f", tmp.name, "-n", "64", "--local", "2", "--parallel", "2"])
        samples["pipe_decode_2seq_default"].append(in_flight_rate(j))
        samples["pipe_decode_2seq_default_span"].append(j["aggregate_decode_tok_s"])
        j = run(build, base + ["-p", long_prompt, "-n", "1"])
        samples["one_prefill"].append(j["prefill_tok_s"])
        n_prompt_long = len(j["prompt_tokens"])
        j = run(build, base + ["-p", long_prompt, "-n", "1", "--local", "2"] + split)
        samples["pipe_prefill"].append(j["prefill_tok_s"])
        print(f"rep {r + 1}/{reps}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in samples.items()), file=sys.stderr)
    os.unlink(tmp.name)
    med = {k: statistics.median(v) for k, v in samples.items()}

    def paired(a, b):
        return statistics.median(x / y for x, y in zip(samples[a], samples[b]))

    res = {
        "model": os.path.basename(m),
        "reps": reps,
        "prefill_prompt_tokens": n_prompt_long,
        "median_tok_s": med,
        "samples_tok_s": samples,
        # Ratios of runs taken next to each other (same repetition), then the median over repetitions:
        # the machine's speed drifts by tens of percent between minutes, much less within one.
        "ratios": {
            "pipe_decode_vs_one": paired("pipe_decode", "one_decode"),
            "pipe_decode_vs_llama_cpp_rpc": med["pipe_decode"] / LLAMA_CPP_RPC["decode_tok_s"],
            "two_sequences_vs_single_stream": paired("pipe_decode_2seq", "pipe_decode"),
            "two_sequences_default_plan_vs_single_stream": paired("pipe_decode_2seq_default", "pipe_decode"),
            "two_sequences_whole_span_vs_single_stream": paired("pipe_decode_2seq_span", "pipe_decode"),
            "two_sequences_default_whole_span_vs_single_stream": paired("pipe_decode_2seq_default_span", "pipe_decode"),
            "two_one_process_runs_at_once_vs_one": paired("two_one_process_runs_at_once", "one_decode"),
            "pipe_prefill_vs_one": paired("pipe_prefill", "one_prefill"),
            "pipe_prefill_vs_llama_cpp_rpc": med["pipe_prefill"] / LLAMA_CPP_RPC["prefill_tok_s"],
        },
        "targets": {
            "pipe_decode_vs_one": 0.95,
            "pipe_decode_vs_llama_cpp_rpc": 1.1,
            "two_sequences_vs_single_stream": 1.8,
            "two_sequences_default_plan_vs_single_stream": 1.8,
            "pipe_prefill_vs_one": 1.6,
        },
    }
    print(f"\nspeed: {res['model']}, median of {reps} (tok/s); ratios: median of per-repetition ratios")
    print(f"  one process -t 1      decode {med['one_decode']:7.2f}   prefill({n_prompt_long}) {med['one_prefill']:7.2f}")
    print(f"  --local 2 -t 1        decode {med['pipe_decode']:7.2f}   prefill({n_prompt_long}) {med['pipe_prefill']:7.2f}")
    print(f"  2 one-process runs    decode {med['two_one_process_runs_at_once']:7.2f} (at once, pinned to CPUs 0 and 1: "
          f"the machine's own limit for two streams)")
    print(f"  --local 2, 2 seqs     decode {med['pipe_decode_2seq']:7.2f} (both sequences, while both decode; "
          f"{med['pipe_decode_2seq_span']:.2f} from the first one's first token to the end)")
    print(f"    the same, default   decode {med['pipe_decode_2seq_default']:7.2f} (no split option: optimal, throughput; "
          f"{med['pipe_decode_2seq_default_span']:.2f} over the whole span)")
    for k, v in res["ratios"].items():
        t = res["targets"].get(k)
        print(f"  {k:44s} {v:5.2f}x" + (f"  (target >= {t}x: {'ok' if v >= t else 'MISSED'})" if t else ""))
    return res


def memory(build):
    m = model_path(build, "llama-2-7b", "q4_0")
    limit = 1600 * 1000 * 1000
    t0 = time.time()
    j = run(build, ["-m", m, "-p", "Once upon a time", "-n", "16", "--temp", "0", "-t", "1", "--local", "3",
                    "--memory-limit", "1600MB", "-c", "256", "--split", "even"])
    wall = time.time() - t0
    workers = j["devices"][1:]
    res = {
        "model": os.path.basename(m),
        "model_bytes": os.path.getsize(m),
        "limit_bytes": limit,
        "run_wall_s": wall,
        "decode_tok_s": j["decode_tok_s"],
        "tokens": len(j["tokens"]),
        "devices": j["devices"],
        "all_within_limit": all(d["peak_rss_bytes"] <= limit for d in workers),
    }
    mib = 1 << 20
    print(f"\nmemory: {res['model']} ({res['model_bytes'] / mib:.0f} MiB) over --local 3 --memory-limit 1600MB "
          f"({limit / mib:.0f} MiB each)")
    for d in workers:
        print(f"  {d['name']}: units {d['units'][0]}-{d['units'][1]}, weights {d['weight_bytes'] / mib:7.1f} MiB, "
              f"RSS at end {d['rss_bytes'] / mib:7.1f} MiB, peak {d['peak_rss_bytes'] / mib:7.1f} MiB")
    o = j["devices"][0]
    print(f"  origin: units 0-0, RSS at end {o['rss_bytes'] / mib:.1f} MiB, peak {o['peak_rss_bytes'] / mib:.1f} MiB")
    print(f"  generated {res['tokens']} tokens at {res['decode_tok_s']:.2f} tok/s; whole run (hash, stream 3.5 GB, "
          f"generate) {wall:.1f} s; every worker's peak within its limit: {res['all_within_limit']}")
    # A limit the head's worker cannot meet is refused with a clear error.
    p = subprocess.run([os.path.join(build, "lingua"), "run", "-m", m, "-p", "Hi", "-n", "1", "--local", "3",
                        "--memory-limit", "1000MB", "--split", "even"], capture_output=True, text=True)
    res["refused_1000MB"] = {"exit_code": p.returncode, "stderr": p.stderr.strip().splitlines()[-1:]}
    print(f"  with --memory-limit 1000MB: exit {p.returncode}: {' '.join(res['refused_1000MB']['stderr'])}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "memory", "all"])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--split", default="--split even",
                    help="split options of the --local 2 runs (default: %(default)s; e.g. '--split optimal "
                         "--objective throughput' splits by the measured speeds of the two vCPUs)")
    a = ap.parse_args()
    out = {}
    if a.what in ("speed", "all"):
        out["speed"] = speed(a.build, a.reps, a.split.split())
    if a.what in ("memory", "all"):
        out["memory"] = memory(a.build)
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
