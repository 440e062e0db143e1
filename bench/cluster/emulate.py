#!/usr/bin/env python3
"""Emulate a heterogeneous cluster of devices (phones, laptops) on this one Linux machine.

Each device of a spec file becomes one `lingua worker` process in its own network namespace, joined to
the host by a veth pair with its own subnet, its link shaped with tbf in both directions, its CPU
time capped by a cgroup v1 quota, its memory by `--memory-limit`. Link latency is added by a TCP proxy
in the host namespace (latency_proxy.py): the generated cluster file lists the proxies' addresses.

  emulate.py check                          what this machine supports (netns, veth, tbf, htb, netem,
                                            cgroup v1 cpu/cpuacct/memory, routing namespace -> host)
  emulate.py up SPEC [--out cluster.toml]   start the cluster, write the cluster file, print a table,
                                            stay in the foreground until Ctrl-C / SIGTERM / `down`
  emulate.py down                           remove everything `up` created (idempotent; after a crash
                                            too: it reads /tmp/ll-emulate/state.json, then sweeps)
  emulate.py status [--json]                the running cluster's table and counters (tc, cgroups, proxies)
  emulate.py run SPEC [--report] -- ARGS    up, `lingua run ARGS --cluster FILE`, report, down
  emulate.py probe SPEC                     up with echo servers instead of workers; measures each
                                            link's round trip and throughput against the spec
  emulate.py exec NAME -- CMD...            run CMD as device NAME of the running cluster (its namespace
                                            and cgroups); `origin -- CMD` = `exec origin -- CMD`

Needs root, iproute2 (ip, tc) and Python 3.11+ (tomllib). See README.md next to this file.
"""
import argparse
import ctypes
import ipaddress
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROXY_PY = os.path.join(HERE, "latency_proxy.py")
DEFAULT_LINGUA = os.path.join(REPO, "build", "lingua")
DEFAULT_SPEC = os.path.join(HERE, "default.toml")

STATE_DIR = "/tmp/ll-emulate"
STATE_FILE = os.path.join(STATE_DIR, "state.json")
LOG_DIR = os.path.join(STATE_DIR, "logs")
PREFIX = "ll-emu"                      # network namespaces ll-emu-NAME, cgroups .../ll-emu/NAME
LINK_RE = re.compile(r"^lle(\d+|chk)[hd]$")  # veth ends: lle<i>h (host side), lle<i>d (device side)
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ORIGIN_INDEX = 0                       # the origin's subnet index; devices are 1..N

DEVICE_KEYS = {"name", "cpu", "threads", "memory", "bandwidth", "bandwidth_up", "bandwidth_down", "latency_ms",
               "cpus", "hard_memory", "worker_args"}
ORIGIN_KEYS = {"cpu", "threads", "memory", "bandwidth", "bandwidth_up", "bandwidth_down", "latency_ms", "cpus",
               "hard_memory"}


def log(msg):
    print(f"emulate: {msg}", file=sys.stderr, flush=True)


class Failure(Exception):
    pass


def sh(cmd, check=True, quiet=False, capture=True):
    """Run an argv list. Returns CompletedProcess; raises Failure with the command's stderr when check."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise Failure(f"`{' '.join(cmd)}` failed ({p.returncode}): {p.stderr.strip()}")
    if not check and p.returncode != 0 and not quiet:
        log(f"note: `{' '.join(cmd)}`: {p.stderr.strip()}")
    return p


# ------------------------------------------------------------------------------------------ spec


def parse_rate(text, where):
    """'40mbit' -> 40000000 (bits per second). Only bit units: tc's 'mbps' means megaBYTES per second."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(bit|kbit|mbit|gbit)\s*", str(text), re.IGNORECASE)
    if not m:
        raise Failure(f"{where}: '{text}' is not a rate; use e.g. 500kbit, 40mbit, 1gbit (bits per second)")
    bits = float(m.group(1)) * {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}[m.group(2).lower()]
    if bits < 8000:
        raise Failure(f"{where}: '{text}' is below 8kbit")
    return int(bits)


def parse_size(text, where):
    """The same units as `lingua worker --memory-limit` (1600MB, 1.5GiB, 800M, 123456)."""
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text).strip())
    units = {"": 1, "B": 1, "K": 1024, "KB": 1e3, "KIB": 1024, "M": 1 << 20, "MB": 1e6, "MIB": 1 << 20,
             "G": 1 << 30, "GB": 1e9, "GIB": 1 << 30, "T": 1 << 40, "TB": 1e12, "TIB": 1 << 40}
    if not m or m.group(2).upper() not in units:
        raise Failure(f"{where}: '{text}' is not a size (examples: 1600MB, 1.5GiB, 800M)")
    return int(float(m.group(1)) * units[m.group(2).upper()])


def fmt_rate(bits):
    if bits is None:
        return "-"
    for unit, f in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bits >= f:
            return f"{bits / f:g}{unit}"
    return f"{bits}bit"


def check_node(d, where, keys, is_origin):
    unknown = set(d) - keys
    if unknown:
        raise Failure(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(keys))})")
    node = {"origin": is_origin, "given": sorted(d)}
    node["name"] = "origin" if is_origin else d.get("name")
    if not isinstance(node["name"], str) or not NAME_RE.match(node["name"]):
        raise Failure(f"{where}: name must be 1-64 characters of A-Z a-z 0-9 . _ -")
    cpu = d.get("cpu", None)
    if cpu is not None and (not isinstance(cpu, (int, float)) or isinstance(cpu, bool) or cpu < 0.001 or cpu > 1024):
        raise Failure(f"{where}: cpu must be a number of cores, 0.001-1024 (e.g. 0.5), got {cpu!r}")
    node["cpu"] = float(cpu) if cpu is not None else None
    threads = d.get("threads", max(1, math.ceil(cpu)) if cpu else 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 256:
        raise Failure(f"{where}: threads must be an integer 1-256")
    node["threads"] = threads
    mem = d.get("memory")
    if mem is not None:
        if not isinstance(mem, (str, int)) or isinstance(mem, bool):
            raise Failure(f"{where}: memory must be a size like \"600MB\"")
        parse_size(mem, where + ".memory")
        mem = str(mem)
    node["memory"] = mem
    node["hard_memory"] = d.get("hard_memory", False)
    if not isinstance(node["hard_memory"], bool):
        raise Failure(f"{where}: hard_memory must be true or false")
    if node["hard_memory"] and mem is None:
        raise Failure(f"{where}: hard_memory needs memory")
    both = d.get("bandwidth")
    node["rate_up"] = parse_rate(d["bandwidth_up"], where + ".bandwidth_up") if "bandwidth_up" in d else (
        parse_rate(both, where + ".bandwidth") if both is not None else None)
    node["rate_down"] = parse_rate(d["bandwidth_down"], where + ".bandwidth_down") if "bandwidth_down" in d else (
        parse_rate(both, where + ".bandwidth") if both is not None else None)
    lat = d.get("latency_ms", 0)
    if not isinstance(lat, (int, float)) or isinstance(lat, bool) or lat < 0 or lat > 60000:
        raise Failure(f"{where}: latency_ms must be a number of milliseconds >= 0")
    node["latency_ms"] = float(lat)
    cpus = d.get("cpus")
    if cpus is not None and (not isinstance(cpus, str) or not re.fullmatch(r"[0-9,\-]+", cpus)):
        raise Failure(f"{where}: cpus must be a CPU list like \"0\" or \"0-1\"")
    if cpus is not None:
        try:
            missing = parse_cpu_list(cpus) - os.sched_getaffinity(0)
        except Failure as e:
            raise Failure(f"{where}: cpus: {e}") from None
        if missing:
            raise Failure(f"{where}: cpus \"{cpus}\" names CPU(s) {', '.join(map(str, sorted(missing)))} this "
                          f"machine does not let us use (allowed: {sorted(os.sched_getaffinity(0))})")
    node["cpus"] = cpus
    wa = d.get("worker_args", [])
    if not isinstance(wa, list) or not all(isinstance(a, str) for a in wa):
        raise Failure(f"{where}: worker_args must be a list of strings")
    node["worker_args"] = wa
    return node


def load_spec(path):
    if not os.path.exists(path):
        raise Failure(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".json"):
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise Failure(f"{path}: {e}")
    else:
        try:
            import tomllib
        except ImportError:
            raise Failure("TOML specs need Python 3.11+ (tomllib); write the spec as JSON instead")
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise Failure(f"{path}: {e}")
    if not isinstance(data, dict) or set(data) - {"device", "origin"}:
        raise Failure(f"{path}: expected [[device]] tables and an optional [origin] table")
    devices = data.get("device", [])
    if not isinstance(devices, list) or not devices:
        raise Failure(f"{path}: no [[device]] entries")
    if len(devices) > 250:
        raise Failure(f"{path}: at most 250 devices")
    nodes = [check_node(d, f"{path}: device {i + 1}", DEVICE_KEYS, False) for i, d in enumerate(devices)]
    names = [n["name"] for n in nodes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise Failure(f"{path}: duplicate device name(s) {', '.join(sorted(dup))}")
    if "origin" in names:
        raise Failure(f"{path}: 'origin' is reserved for the [origin] table")
    origin = None
    if "origin" in data:
        if not isinstance(data["origin"], dict):
            raise Failure(f"{path}: [origin] must be a table")
        origin = check_node(data["origin"], f"{path}: [origin]", ORIGIN_KEYS, True)
    return nodes, origin


# ------------------------------------------------------------------------------------ cgroups v1


def cgroup_v1_mounts():
    """controller -> mount point of the cgroup v1 hierarchy that has it (cpu, cpuacct, memory, ...)."""
    out = {}
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and parts[2] == "cgroup":
                for opt in parts[3].split(","):
                    if opt in ("cpu", "cpuacct", "memory", "cpuset"):
                        out.setdefault(opt, parts[1])
    return out


def write_file(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def read_file(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def cgroup_pids(cg_dir):
    text = read_file(os.path.join(cg_dir, "cgroup.procs"), "") or ""
    return [int(x) for x in text.split()]


# --------------------------------------------------------------------------------- processes


def proc_starttime(pid):
    """Field 22 of /proc/PID/stat: identifies a process across pid reuse."""
    text = read_file(f"/proc/{pid}/stat")
    if not text:
        return None
    try:
        return int(text[text.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def alive(pid, starttime=None):
    st = proc_starttime(pid)
    if st is None:
        return False
    state = (read_file(f"/proc/{pid}/stat", "") or "").rsplit(")", 1)[-1].split()[:1]
    if state == ["Z"]:
        return False
    return starttime is None or st == starttime


def stop_pids(entries, grace_s=5.0, children=None):
    """entries: [(pid, starttime|None, label)]. SIGTERM, wait, SIGKILL — only the processes recorded."""
    live = [(p, s, l) for p, s, l in entries if alive(p, s)]
    for p, s, l in live:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        for c in (children or []):
            c.poll()
        live = [(p, s, l) for p, s, l in live if alive(p, s)]
        if not live:
            return
        time.sleep(0.05)
    for p, s, l in live:
        log(f"{l} (pid {p}) did not stop on SIGTERM; killing it")
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for c in (children or []):
        try:
            c.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass


_libc = None


def parse_cpu_list(text):
    """'0-1,3' -> {0, 1, 3} (the kernel's CPU list format, as taskset -c and `lingua worker --cpus`)."""
    cpus = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise Failure(f"'{text}' is not a CPU list like \"0\" or \"0-1,3\"")
        a, b = int(lo), int(hi or lo)
        if a > b or b >= 4096:
            raise Failure(f"'{text}' is not a CPU list like \"0\" or \"0-1,3\"")
        cpus.update(range(a, b + 1))
    return cpus


def child_setup(task_files, cpus=None):
    """preexec_fn: join the device's cgroups (and pin to its CPUs) before exec, and die with the
    emulator (PR_SET_PDEATHSIG)."""
    def fn():
        for path in task_files:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
        if cpus:
            os.sched_setaffinity(0, cpus)
        if _libc is not None:
            _libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    return fn


try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


# ----------------------------------------------------------------------------------------- state


class State:
    """What `up` created, written before each step so that `down` can undo a half-finished `up`."""

    def __init__(self, data=None):
        self.data = data or {"owner_pid": os.getpid(), "owner_starttime": proc_starttime(os.getpid()),
                             "created": time.strftime("%Y-%m-%d %H:%M:%S"), "netns": [], "links": [],
                             "cgroups": [], "processes": [], "nodes": [], "files": []}

    @staticmethod
    def load():
        text = read_file(STATE_FILE)
        if text is None:
            return None
        try:
            return State(json.loads(text))
        except ValueError:
            log(f"{STATE_FILE} is not valid JSON; sweeping by name instead")
            return State({"netns": [], "links": [], "cgroups": [], "processes": [], "nodes": [], "files": []})

    def save(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = STATE_FILE + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, STATE_FILE)

    def add(self, key, value):
        if value not in self.data[key]:
            self.data[key].append(value)
        self.save()


# --------------------------------------------------------------------------------------- cluster


class Cluster:
    def __init__(self, nodes, origin, args, state, role="worker"):
        self.nodes = nodes
        self.origin = origin
        self.args = args
        self.state = state
        self.role = role  # "worker" or "echo" (probe)
        self.children = []
        self.octet = args.subnet
        self.cg = cgroup_v1_mounts()

    def host_addr(self, idx):
        return f"10.{self.octet}.{idx}.1"

    def dev_addr(self, idx):
        return f"10.{self.octet}.{idx}.2"

    # One node: namespace, veth pair, addresses, route, tbf on both ends, cgroups.
    def setup_node(self, node, idx):
        ns = f"{PREFIX}-{node['name']}"
        h, d = f"lle{idx}h", f"lle{idx}d"
        node.update(index=idx, netns=ns, link_host=h, link_dev=d, host_addr=self.host_addr(idx),
                    dev_addr=self.dev_addr(idx), cgroups={})
        self.state.add("netns", ns)
        sh(["ip", "netns", "add", ns])
        self.state.add("links", h)
        sh(["ip", "link", "add", h, "type", "veth", "peer", "name", d])
        sh(["ip", "link", "set", d, "netns", ns])
        sh(["ip", "addr", "add", f"{node['host_addr']}/30", "dev", h])
        sh(["ip", "link", "set", h, "up"])
        sh(["ip", "-n", ns, "addr", "add", f"{node['dev_addr']}/30", "dev", d])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        sh(["ip", "-n", ns, "link", "set", d, "up"])
        # Every other device's proxy listens on a host-side address 10.X.j.1: reach them via our host end.
        # (No default route, no forwarding: the namespace reaches the host's addresses and nothing else.)
        sh(["ip", "-n", ns, "route", "add", f"10.{self.octet}.0.0/16", "via", node["host_addr"]])
        # tbf on the host end shapes what the device receives, on the device end what it sends.
        for rate, extra in ((node["rate_down"], []), (node["rate_up"], ["-n", ns])):
            if rate is None:
                continue
            dev = h if not extra else d
            rate_bytes = rate / 8
            burst = max(16 * 1024, int(rate_bytes * 0.004))  # 4 ms at full rate, at least a few packets
            limit = max(4 * burst, int(rate_bytes * 0.1))      # up to 100 ms queued before drops
            sh(["tc", *extra, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate}bit",
                "burst", str(burst), "limit", str(limit)])
        # CPU: a CFS quota (cores = quota / period); cpuacct to measure the time used; memory optional.
        period = self.args.cfs_period_us
        for ctl in ("cpu", "cpuacct") + (("memory",) if node["hard_memory"] else ()):
            if node["cpu"] is None and ctl == "cpu":
                continue
            root = self.cg.get(ctl)
            if root is None:
                if ctl == "cpuacct":
                    continue
                raise Failure(f"no cgroup v1 '{ctl}' hierarchy is mounted (see `emulate.py check`)")
            parent = os.path.join(root, PREFIX)
            cg = os.path.join(parent, node["name"])
            self.state.add("cgroups", parent)
            os.makedirs(parent, exist_ok=True)
            self.state.add("cgroups", cg)
            os.makedirs(cg, exist_ok=True)
            if ctl == "cpu":
                quota = int(round(node["cpu"] * period))
                if quota < 1000:  # the kernel's minimum quota: lengthen the period instead
                    quota, period = 1000, min(1000000, math.ceil(1000 / node["cpu"]))
                write_file(os.path.join(cg, "cpu.cfs_period_us"), period)
                write_file(os.path.join(cg, "cpu.cfs_quota_us"), quota)
            if ctl == "memory":
                write_file(os.path.join(cg, "memory.limit_in_bytes"),
                           parse_size(node["memory"], node["name"] + ".memory"))
            node["cgroups"][ctl] = cg
        self.state.add("nodes", {k: node[k] for k in ("name", "origin", "index", "netns", "link_host", "link_dev",
                                                       "host_addr", "dev_addr", "cgroups", "cpu", "cpus",
                                                       "threads", "memory", "rate_up", "rate_down", "latency_ms")})

    def task_files(self, node):
        return [os.path.join(cg, "tasks") for cg in node["cgroups"].values()]

    def spawn(self, node, role, argv, log_path, in_ns, cgroups):
        logf = open(log_path, "w")
        cmd = (["ip", "netns", "exec", node["netns"]] if in_ns else []) + argv
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             preexec_fn=child_setup(self.task_files(node) if cgroups else []),
                             start_new_session=True, close_fds=True)
        logf.close()
        self.children.append(p)
        self.state.add("processes", {"pid": p.pid, "starttime": proc_starttime(p.pid), "role": role,
                                     "name": node["name"]})
        return p

    def start(self):
        os.makedirs(LOG_DIR, exist_ok=True)
        self.check_addresses_free()
        all_nodes = ([self.origin] if self.origin else []) + self.nodes
        for i, node in enumerate(self.nodes):
            self.setup_node(node, i + 1)
        if self.origin:
            self.setup_node(self.origin, ORIGIN_INDEX)
        port = self.args.port
        waits = []
        for node in self.nodes:
            node["worker_endpoint"] = f"{node['dev_addr']}:{port}"
            node["proxy_endpoint"] = f"{node['host_addr']}:{port}"
            if self.role == "worker":
                # Plain TCP: the emulated links live in this machine's own network namespaces. (Workers
                # are CURVE-secured by default; the cluster's `lingua run` gets --insecure to match.)
                argv = [self.args.lingua, "worker", "--listen", f"tcp://{node['worker_endpoint']}", "--name",
                        node["name"], "-t", str(node["threads"]), "--insecure"]
                if node["memory"]:
                    argv += ["--memory-limit", node["memory"]]
                if node["cpus"]:
                    argv += ["--cpus", node["cpus"]]
                argv += node["worker_args"] + list(self.args.worker_arg or [])
                ready = "listening on"
            else:
                argv = [sys.executable, PROXY_PY, "echo", "--listen", node["worker_endpoint"]]
                ready = "echo listening on"
            wlog = os.path.join(LOG_DIR, f"{node['name']}.{self.role}.log")
            p = self.spawn(node, self.role, argv, wlog, in_ns=True, cgroups=True)
            waits.append((node["name"] + " " + self.role, p, wlog, ready))
            # The proxy: host namespace, on the device's host-side address, delaying by its latency plus,
            # for connections from another emulated device, that device's latency (--latency-mode sum).
            pargv = [sys.executable, PROXY_PY, "proxy", "--listen", node["proxy_endpoint"], "--target",
                     node["worker_endpoint"], "--delay-ms", f"{node['latency_ms']:g}",
                     "--stats-file", os.path.join(LOG_DIR, f"{node['name']}.proxy.json")]
            if self.args.latency_mode == "sum":
                for other in all_nodes:
                    if other is not node and other["latency_ms"] > 0:
                        pargv += ["--src-delay", f"{other['dev_addr']}/32={other['latency_ms']:g}"]
            plog = os.path.join(LOG_DIR, f"{node['name']}.proxy.log")
            p = self.spawn(node, "proxy", pargv, plog, in_ns=False, cgroups=False)
            waits.append((node["name"] + " proxy", p, plog, "latency_proxy listening on"))
        deadline = time.monotonic() + self.args.ready_timeout
        for label, p, path, ready in waits:
            while True:
                text = read_file(path, "") or ""
                if ready in text:
                    break
                if p.poll() is not None:
                    raise Failure(f"{label} exited ({p.returncode}) before it was ready; its log ({path}):\n"
                                  + text[-2000:])
                if time.monotonic() > deadline:
                    raise Failure(f"{label} not ready after {self.args.ready_timeout:g} s; log {path}:\n"
                                  + text[-2000:])
                time.sleep(0.05)

    def check_addresses_free(self):
        block = ipaddress.ip_network(f"10.{self.octet}.0.0/16")
        out = sh(["ip", "-o", "-4", "addr", "show"]).stdout
        for m in re.finditer(r"inet (\S+)/\d+", out):
            if ipaddress.ip_address(m.group(1)) in block:
                raise Failure(f"address {m.group(1)} of 10.{self.octet}.0.0/16 is already in use on this host; "
                              f"run `emulate.py down` or choose another block with --subnet")

    def write_cluster_file(self, path, spec_path):
        lines = [f"# Generated by bench/cluster/emulate.py from {spec_path} at {time.strftime('%Y-%m-%d %H:%M:%S')}.",
                 "# Addresses are the latency proxies in the host namespace; each forwards to the device's worker.",
                 ""]
        for node in self.nodes:
            lines += ["[[device]]", f'name = "{node["name"]}"', f'address = "tcp://{node["proxy_endpoint"]}"',
                      f"threads = {node['threads']}", ""]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write("\n".join(lines))
        self.state.data["cluster_file"] = os.path.abspath(path)
        self.state.save()

    def table(self):
        rows = [("device", "netns", "cluster address", "worker", "cpu", "thr", "memory", "up", "down", "lat ms",
                 "pid")]
        pids = {(pr["name"], pr["role"]): pr["pid"] for pr in self.state.data["processes"]}
        for n in ([self.origin] if self.origin else []) + self.nodes:
            rows.append((n["name"], n["netns"], f"tcp://{n['proxy_endpoint']}" if not n["origin"] else "(origin)",
                         n.get("worker_endpoint", "-"), (f"{n['cpu']:g}" if n["cpu"] else "host") + (f" @{n['cpus']}" if n["cpus"] else ""),
                         str(n["threads"]), (n["memory"] or "-") + (" hard" if n["hard_memory"] else ""),
                         fmt_rate(n["rate_up"]), fmt_rate(n["rate_down"]), f"{n['latency_ms']:g}",
                         str(pids.get((n["name"], self.role), "-"))))
        return format_table(rows)


def format_table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# -------------------------------------------------------------------------------------- teardown


def teardown(state, children=None, quiet=False):
    """Undo everything recorded in state (any order of partial completion), then sweep by name."""
    # A second Ctrl-C must not leave half the cluster behind (`down` would still clean up, but later).
    old_handlers = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _teardown(state, children, quiet)
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)


def _teardown(state, children, quiet):
    removed = []
    data = state.data if state else {"processes": [], "netns": [], "links": [], "cgroups": []}
    entries = [(p["pid"], p.get("starttime"), f"{p.get('name')} {p.get('role')}") for p in data["processes"]]
    # Anything else inside our namespaces or cgroups was started by us too (e.g. `emulate.py origin`).
    for ns in set(data["netns"]) | set(our_netns()):
        out = sh(["ip", "netns", "pids", ns], check=False, quiet=True).stdout or ""
        entries += [(int(x), proc_starttime(int(x)), f"process in {ns}") for x in out.split()]
    for cg in set(data["cgroups"]) | set(our_cgroups()):
        entries += [(pid, proc_starttime(pid), f"process in {cg}") for pid in cgroup_pids(cg)]
    seen, uniq = set(), []
    for e in entries:
        if e[0] not in seen and e[0] != os.getpid():
            seen.add(e[0])
            uniq.append(e)
    n_live = sum(1 for p, s, _ in uniq if alive(p, s))
    stop_pids(uniq, children=children)
    if n_live:
        removed.append(f"{n_live} process(es)")
    for ns in list(dict.fromkeys(data["netns"] + our_netns())):
        if os.path.exists(f"/run/netns/{ns}"):
            sh(["ip", "netns", "del", ns], check=False)
            removed.append(f"netns {ns}")
    # Deleting a namespace deletes its veth end and so the host end, but asynchronously; make sure.
    for link in list(dict.fromkeys(data["links"] + our_links())):
        for _ in range(50):
            if not os.path.exists(f"/sys/class/net/{link}"):
                break
            sh(["ip", "link", "del", link], check=False, quiet=True)
            time.sleep(0.05)
        else:
            log(f"could not delete link {link}")
    for cg in sorted(set(data["cgroups"]) | set(our_cgroups()), key=len, reverse=True):  # children first
        for _ in range(100):
            if not os.path.isdir(cg):
                break
            try:
                os.rmdir(cg)
                removed.append(f"cgroup {cg}")
                break
            except OSError:
                time.sleep(0.05)  # tasks that just exited are still being reaped
        else:
            log(f"could not remove cgroup {cg} (tasks: {cgroup_pids(cg)})")
    for path in data.get("files", []):
        try:
            os.unlink(path)
        except OSError:
            pass
    try:
        os.unlink(STATE_FILE)
    except FileNotFoundError:
        pass
    if not quiet:
        log("removed " + (", ".join(removed) if removed else "nothing (no emulated cluster was up)"))
    return removed


def our_netns():
    out = sh(["ip", "netns", "list"], check=False, quiet=True).stdout or ""
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(PREFIX + "-")]


def our_links():
    try:
        return [n for n in os.listdir("/sys/class/net") if LINK_RE.match(n)]
    except OSError:
        return []


def our_cgroups():
    out = []
    for root in set(cgroup_v1_mounts().values()):
        for top in (PREFIX, PREFIX + "-check"):
            base = os.path.join(root, top)
            if os.path.isdir(base):
                for dirpath, dirnames, _ in os.walk(base):
                    out.append(dirpath)
    return out


# ------------------------------------------------------------------------------------------ stats


def tc_stats(netns, dev):
    cmd = ["tc"] + (["-n", netns] if netns else []) + ["-s", "-j", "qdisc", "show", "dev", dev]
    p = sh(cmd, check=False, quiet=True)
    try:
        for q in json.loads(p.stdout or "[]"):
            if q.get("kind") == "tbf":
                return {"bytes": q.get("bytes"), "packets": q.get("packets"), "drops": q.get("drops"),
                        "overlimits": q.get("overlimits"), "requeues": q.get("requeues")}
    except ValueError:
        pass
    return None


def node_stats(node):
    s = {"name": node["name"]}
    s["tc_down"] = tc_stats(None, node["link_host"])       # host end egress = device receives
    s["tc_up"] = tc_stats(node["netns"], node["link_dev"])  # device end egress = device sends
    cg = node.get("cgroups", {})
    if "cpu" in cg:
        stat = dict(line.split() for line in (read_file(os.path.join(cg["cpu"], "cpu.stat"), "") or "").splitlines()
                    if len(line.split()) == 2)
        s["cpu"] = {k: int(stat[k]) for k in ("nr_periods", "nr_throttled", "throttled_time") if k in stat}
    if "cpuacct" in cg:
        usage = read_file(os.path.join(cg["cpuacct"], "cpuacct.usage"))
        if usage:
            s["cpu_seconds"] = int(usage) / 1e9
    if "memory" in cg:
        mx = read_file(os.path.join(cg["memory"], "memory.max_usage_in_bytes"))
        if mx:
            s["memory_max_bytes"] = int(mx)
    px = read_file(os.path.join(LOG_DIR, f"{node['name']}.proxy.json"))
    if px and not node["origin"]:
        try:
            s["proxy"] = json.loads(px)
        except ValueError:
            pass
    return s


def stats_table(stats):
    rows = [("device", "sent B", "recv B", "drops", "throttled", "of periods", "throttled s", "cpu s", "proxy conns")]
    for s in stats:
        up, down, cpu, px = s.get("tc_up") or {}, s.get("tc_down") or {}, s.get("cpu") or {}, s.get("proxy") or {}
        rows.append((s["name"], str(up.get("bytes", "-")), str(down.get("bytes", "-")),
                     f"{up.get('drops', 0) + down.get('drops', 0)}" if up or down else "-",
                     str(cpu.get("nr_throttled", "-")), str(cpu.get("nr_periods", "-")),
                     f"{cpu['throttled_time'] / 1e9:.3f}" if "throttled_time" in cpu else "-",
                     f"{s['cpu_seconds']:.3f}" if "cpu_seconds" in s else "-", str(px.get("connections", "-"))))
    return format_table(rows)


def flush_proxy_stats(state):
    """Ask the running proxies to write their counters now (SIGUSR1) and wait until they have."""
    waits = []
    for p in state.data.get("processes", []):
        if p["role"] == "proxy" and alive(p["pid"], p.get("starttime")):
            path = os.path.join(LOG_DIR, f"{p['name']}.proxy.json")
            before = os.stat(path).st_mtime_ns if os.path.exists(path) else 0
            try:
                os.kill(p["pid"], signal.SIGUSR1)
            except OSError:
                continue
            waits.append((path, before))
    deadline = time.monotonic() + 1.0
    for path, before in waits:
        while time.monotonic() < deadline:
            if os.path.exists(path) and os.stat(path).st_mtime_ns != before:
                break
            time.sleep(0.01)


def collect_stats(state):
    flush_proxy_stats(state)
    return [node_stats(n) for n in state.data.get("nodes", [])]


# ------------------------------------------------------------------------------------- commands


def require_root():
    if os.geteuid() != 0:
        raise Failure("needs root (network namespaces, tc, cgroups)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise Failure(f"`{tool}` not found (apt-get install iproute2)")


def claim_state():
    """Refuse to start while another emulated cluster is up; clean up after one that crashed."""
    old = State.load()
    if old is not None:
        pid, st = old.data.get("owner_pid"), old.data.get("owner_starttime")
        if pid and alive(pid, st):
            raise Failure(f"an emulated cluster is already up (emulate.py pid {pid}); run `emulate.py down` first")
        log("cleaning up after an emulated cluster whose emulate.py is gone")
        teardown(old)
    elif our_netns() or our_links() or our_cgroups():
        log("cleaning up leftovers of an earlier run")
        teardown(None)
    state = State()
    state.save()
    return state


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def bring_up(args, role="worker"):
    require_root()
    nodes, origin = load_spec(args.spec)
    if not os.access(args.lingua, os.X_OK) and role == "worker":
        raise Failure(f"{args.lingua}: not an executable (build it first, or pass --lingua)")
    state = claim_state()
    state.data["spec"] = os.path.abspath(args.spec)
    state.save()
    cluster = Cluster(nodes, origin, args, state, role)
    return cluster


def cmd_up(args):
    signal.signal(signal.SIGTERM, on_signal)
    cluster = None
    try:
        cluster = bring_up(args)
        if os.path.abspath(args.out) == os.path.join(STATE_DIR, "cluster.toml"):
            cluster.state.add("files", os.path.abspath(args.out))
        cluster.start()
        cluster.write_cluster_file(args.out, args.spec)
        print(cluster.table(), flush=True)
        print(f"\ncluster file: {os.path.abspath(args.out)}", flush=True)
        print(f"run:  {args.lingua} run -m MODEL -p PROMPT --cluster {os.path.abspath(args.out)} --insecure", flush=True)
        if cluster.origin:
            print(f"      (as the emulated origin: {sys.argv[0]} origin -- {args.lingua} run ...)", flush=True)
        print("logs: " + LOG_DIR + "    stop: Ctrl-C or `emulate.py down`", flush=True)
        reported = set()
        while True:
            time.sleep(0.5)
            for p in cluster.children:
                if p.poll() is not None and p.pid not in reported:
                    reported.add(p.pid)
                    who = next((f"{e['name']} {e['role']}" for e in cluster.state.data["processes"]
                                if e["pid"] == p.pid), str(p.pid))
                    log(f"{who} exited with {p.returncode}; see {LOG_DIR}")
    except (KeyboardInterrupt, Interrupted):
        log("stopping")
    except Failure as e:
        log(f"error: {e}")
        return 1
    finally:
        if cluster is not None:
            teardown(cluster.state, cluster.children)
    return 0


def cmd_down(args):
    require_root()
    state = State.load()
    asked = None
    if state is not None:
        pid, st = state.data.get("owner_pid"), state.data.get("owner_starttime")
        if pid and pid != os.getpid() and alive(pid, st):
            asked = pid
            log(f"asking the running emulate.py (pid {pid}) to stop")
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while alive(pid, st) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid, st):
                log(f"emulate.py pid {pid} still running; removing its resources anyway")
        state = State.load()
    removed = teardown(state, quiet=asked is not None)
    if asked is not None:
        log(f"emulate.py (pid {asked}) stopped" + (" and removed its cluster" if not removed else
                                                   "; removed what it left: " + ", ".join(removed)))
    left = our_netns() + our_links() + our_cgroups()
    if left:
        log("still present: " + ", ".join(left))
        return 1
    return 0


def cmd_status(args):
    state = State.load()
    if state is None:
        print("no emulated cluster is up")
        return 1
    stats = collect_stats(state)
    if args.json:
        print(json.dumps({"state": state.data, "stats": stats}, indent=1))
        return 0
    d = state.data
    print(f"emulated cluster from {d.get('spec')} (emulate.py pid {d.get('owner_pid')}, since {d.get('created')})")
    print(f"cluster file: {d.get('cluster_file', '-')}")
    live = [(p["name"], p["role"], p["pid"], "running" if alive(p["pid"], p.get("starttime")) else "EXITED")
            for p in d["processes"]]
    print(format_table([("device", "role", "pid", "state")] + [(a, b, str(c), e) for a, b, c, e in live]))
    print()
    print(stats_table(stats))
    return 0


def cmd_run(args):
    lingua_args = list(args.lingua_args)
    if not lingua_args:
        log("error: give the arguments of `lingua run` after --, e.g. run SPEC -- -m MODEL -p PROMPT")
        return 2
    if any(a in ("--cluster", "--local") or a.startswith("--cluster=") for a in lingua_args):
        log("error: do not pass --cluster or --local; the emulated cluster's file is added")
        return 2
    signal.signal(signal.SIGTERM, on_signal)
    cluster = None
    proc = None
    rc = 1
    try:
        cluster = bring_up(args)
        cluster_file = os.path.join(STATE_DIR, "cluster.toml")
        cluster.state.add("files", cluster_file)
        cluster.start()
        cluster.write_cluster_file(cluster_file, args.spec)
        print(cluster.table(), file=sys.stderr, flush=True)
        cmd = [args.lingua, "run"] + lingua_args + ["--cluster", cluster_file, "--insecure"]
        if cluster.origin and "threads" in cluster.origin["given"] and not any(
                a in ("-t", "--threads") or a.startswith("--threads=") for a in lingua_args):
            cmd[2:2] = ["-t", str(cluster.origin["threads"])]
        log("running: " + " ".join(cmd))
        if cluster.origin:
            o = cluster.origin
            proc = subprocess.Popen(["ip", "netns", "exec", o["netns"]] + cmd,
                                    preexec_fn=child_setup(cluster.task_files(o),
                                                           parse_cpu_list(o["cpus"]) if o["cpus"] else None))
        else:
            proc = subprocess.Popen(cmd)
        rc = proc.wait()
        if rc != 0:
            log(f"lingua run exited with {rc}")
        if args.report or args.report_json:
            stats = collect_stats(cluster.state)
            print(stats_table(stats), file=sys.stderr, flush=True)
            if args.report_json:
                with open(args.report_json, "w") as f:
                    json.dump({"nodes": cluster.state.data["nodes"], "stats": stats, "exit_code": rc}, f, indent=1)
    except (KeyboardInterrupt, Interrupted):
        log("interrupted; stopping")
        rc = 130
    except Failure as e:
        log(f"error: {e}")
        rc = 1
    finally:
        if proc is not None and proc.poll() is None:
            stop_pids([(proc.pid, None, "lingua run")], children=[proc])
        if cluster is not None:
            teardown(cluster.state, cluster.children, quiet=not args.verbose)
    return rc


def cmd_probe(args):
    signal.signal(signal.SIGTERM, on_signal)
    cluster = None
    rc = 0
    try:
        cluster = bring_up(args, role="echo")
        cluster.start()
        print(cluster.table(), flush=True)
        ping = [sys.executable, PROXY_PY, "ping", "--count", str(args.count), "--bytes", str(args.bytes), "--json"]
        rows = [("path", "rtt ms (median)", "expected", "to device mbit/s", "expected", "from device mbit/s",
                 "expected")]

        def measure(prefix, src, dst):
            p = sh(prefix + ping + ["--target", dst["proxy_endpoint"]])
            r = json.loads(p.stdout.strip().splitlines()[-1])
            lat = dst["latency_ms"] + (src["latency_ms"] if src and args.latency_mode == "sum" else 0)
            up = [x for x in (dst["rate_down"], src["rate_up"] if src else None) if x]
            down = [x for x in (dst["rate_up"], src["rate_down"] if src else None) if x]
            rows.append((f"{src['name'] if src else 'host'} -> {dst['name']}", f"{r['rtt_ms_median']:.2f}",
                         f"{2 * lat:g}", f"{r.get('upload_mbit_s', 0):.1f}", fmt_rate(min(up)) if up else "-",
                         f"{r.get('download_mbit_s', 0):.1f}", fmt_rate(min(down)) if down else "-"))

        src_node = cluster.origin
        for dst in cluster.nodes:
            measure(["ip", "netns", "exec", src_node["netns"]] if src_node else [], src_node, dst)
        for a, b in zip(cluster.nodes, cluster.nodes[1:]):
            measure(["ip", "netns", "exec", a["netns"]], a, b)
        print()
        print(format_table(rows))
        print("(throughput is minus one round trip; 'expected' rtt is 2 x the latencies the proxy adds)")
    except (KeyboardInterrupt, Interrupted):
        log("interrupted")
        rc = 130
    except Failure as e:
        log(f"error: {e}")
        rc = 1
    finally:
        if cluster is not None:
            teardown(cluster.state, cluster.children, quiet=True)
    return rc


def cmd_exec(args):
    """exec CMD as one node of the running cluster: inside its network namespace and its cgroups."""
    cmd = list(args.command)
    if not cmd:
        log("error: no command given (exec NAME -- CMD...)")
        return 2
    state = State.load()
    nodes = state.data.get("nodes", []) if state else []
    node = next((n for n in nodes if n["name"] == args.name), None)
    if node is None:
        log(f"error: no emulated device '{args.name}' is up" +
            (f" (devices: {', '.join(n['name'] for n in nodes)})" if nodes else ""))
        return 1
    for cg in node["cgroups"].values():
        write_file(os.path.join(cg, "tasks"), os.getpid())
    if node.get("cpus"):
        os.sched_setaffinity(0, parse_cpu_list(node["cpus"]))
    os.execvp("ip", ["ip", "netns", "exec", node["netns"]] + cmd)


def cmd_check(args):
    rows = [("feature", "result", "detail")]
    ok_all = True

    def row(name, ok, detail="", required=True):
        nonlocal ok_all
        if required and ok is False:
            ok_all = False
        rows.append((name, {True: "yes", False: "NO" if required else "no", None: "-"}[ok], detail))

    row("root", os.geteuid() == 0, f"euid {os.geteuid()}")
    for tool in ("ip", "tc"):
        row(f"`{tool}` command", shutil.which(tool) is not None, shutil.which(tool) or "apt-get install iproute2")
    row("cgexec (cgroup-tools)", shutil.which("cgexec") is not None,
        "not needed: workers join their cgroup before exec" if not shutil.which("cgexec") else shutil.which("cgexec"),
        required=False)
    try:
        import tomllib  # noqa: F401
        row("python tomllib", True, sys.version.split()[0])
    except ImportError:
        row("python tomllib", False, "Python < 3.11: write specs as JSON", required=False)
    row("lingua binary", os.access(args.lingua, os.X_OK), args.lingua)
    ns, h, d = f"{PREFIX}-check", "llechkh", "llechkd"
    ha, da = f"10.{args.subnet}.255.1", f"10.{args.subnet}.255.2"
    try:
        r = sh(["ip", "netns", "add", ns], check=False, quiet=True)
        row("network namespaces", r.returncode == 0, r.stderr.strip() or "ip netns add")
        r = sh(["ip", "link", "add", h, "type", "veth", "peer", "name", d], check=False, quiet=True)
        ok = r.returncode == 0 and sh(["ip", "link", "set", d, "netns", ns], check=False, quiet=True).returncode == 0
        row("veth pairs", ok, r.stderr.strip() or "ip link add ... type veth; moved into the namespace")
        if ok:
            sh(["ip", "addr", "add", f"{ha}/30", "dev", h], check=False)
            sh(["ip", "link", "set", h, "up"], check=False)
            sh(["ip", "-n", ns, "addr", "add", f"{da}/30", "dev", d], check=False)
            sh(["ip", "-n", ns, "link", "set", d, "up"], check=False)
            sh(["ip", "-n", ns, "link", "set", "lo", "up"], check=False)
            sh(["ip", "-n", ns, "route", "add", f"10.{args.subnet}.0.0/16", "via", ha], check=False)
            for kind, extra in (("tbf", ["rate", "20mbit", "burst", "16384", "limit", "65536"]),
                                ("htb", ["default", "1"]), ("netem", ["delay", "5ms"])):
                r = sh(["tc", "qdisc", "replace", "dev", h, "root", "handle", "1:", kind] + extra, check=False, quiet=True)
                row(f"tc qdisc {kind}", r.returncode == 0,
                    (r.stderr.strip() or "works") + (" (latency comes from latency_proxy.py instead)"
                                                    if kind == "netem" and r.returncode else ""),
                    required=(kind == "tbf"))
                sh(["tc", "qdisc", "del", "dev", h, "root"], check=False, quiet=True)
            # The namespace must reach host-side addresses (where the proxies listen).
            srv = socket.socket()
            srv.bind((ha, 0))
            srv.listen(1)
            port = srv.getsockname()[1]
            r = sh(["ip", "netns", "exec", ns, sys.executable, "-c",
                    f"import socket; socket.create_connection(('{ha}', {port}), timeout=3).close()"],
                   check=False, quiet=True)
            srv.close()
            row("namespace -> host address", r.returncode == 0,
                r.stderr.strip().splitlines()[-1] if r.returncode else f"tcp {da} -> {ha}:{port}")
    finally:
        sh(["ip", "netns", "del", ns], check=False, quiet=True)
        sh(["ip", "link", "del", h], check=False, quiet=True)
    mounts = cgroup_v1_mounts()
    for ctl, required, what in (("cpu", True, "cpu.cfs_quota_us"), ("cpuacct", False, "cpuacct.usage"),
                                ("memory", False, "memory.limit_in_bytes (hard_memory = true)")):
        root = mounts.get(ctl)
        if not root:
            row(f"cgroup v1 {ctl}", False, "not mounted", required=required)
            continue
        cg = os.path.join(root, PREFIX + "-check")
        try:
            os.makedirs(cg, exist_ok=True)
            if ctl == "cpu":
                write_file(os.path.join(cg, "cpu.cfs_period_us"), 10000)
                write_file(os.path.join(cg, "cpu.cfs_quota_us"), 3000)
                ok = (read_file(os.path.join(cg, "cpu.cfs_quota_us")) or "").strip() == "3000"
            elif ctl == "memory":
                write_file(os.path.join(cg, "memory.limit_in_bytes"), 1 << 30)
                ok = True
            else:
                ok = os.path.exists(os.path.join(cg, "cpuacct.usage"))
            row(f"cgroup v1 {ctl}", ok, f"{root} ({what})", required=required)
        except OSError as e:
            row(f"cgroup v1 {ctl}", False, f"{root}: {e}", required=required)
        finally:
            try:
                os.rmdir(cg)
            except OSError:
                pass
    unified = [l.split()[1] for l in (read_file("/proc/mounts", "") or "").splitlines() if l.split()[2:3] == ["cgroup2"]]
    row("cgroup v2", None, ("mounted at " + ", ".join(unified) + " (not used)") if unified else "not mounted",
        required=False)
    row("ip_forward", None, (read_file("/proc/sys/net/ipv4/ip_forward", "?") or "?").strip() +
        " (not needed: traffic between devices goes through the proxies on the host)", required=False)
    st = State.load()
    row("emulated cluster up now", None, f"yes (pid {st.data.get('owner_pid')})" if st else "no", required=False)
    print(format_table(rows))
    return 0 if ok_all else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lingua", default=DEFAULT_LINGUA, help="the lingua binary (default: REPO/build/lingua)")
    ap.add_argument("--subnet", type=int, default=77, help="use 10.N.0.0/16 for the links (default 77)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def cluster_opts(p):
        p.add_argument("spec", nargs="?", default=DEFAULT_SPEC, help="device spec, TOML or .json (default: default.toml)")
        p.add_argument("--port", type=int, default=5601, help="TCP port of every worker and proxy (own addresses)")
        p.add_argument("--cfs-period-us", type=int, default=10000,
                       help="CFS period of the CPU quotas; shorter = smoother throttling (default 10000)")
        p.add_argument("--latency-mode", choices=("sum", "dest"), default="sum",
                       help="sum: a connection from device A to B is delayed by A's + B's latency_ms (default); "
                            "dest: by B's only")
        p.add_argument("--ready-timeout", type=float, default=30.0)
        p.add_argument("--worker-arg", action="append", help="extra argument for every worker (repeatable)")

    sub.add_parser("check")
    p = sub.add_parser("up")
    cluster_opts(p)
    p.add_argument("--out", default=os.path.join(STATE_DIR, "cluster.toml"),
                   help="cluster file to write (default /tmp/ll-emulate/cluster.toml, removed by down)")
    sub.add_parser("down")
    p = sub.add_parser("status")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("run")
    cluster_opts(p)
    p.add_argument("--report", action="store_true", help="print link/CPU counters after the run (stderr)")
    p.add_argument("--report-json", help="write the counters as JSON to this file")
    p.add_argument("-v", "--verbose", action="store_true")
    p.epilog = "After the options: -- then the arguments of `lingua run` (without --cluster)."
    p = sub.add_parser("probe")
    cluster_opts(p)
    p.add_argument("--count", type=int, default=50, help="round trips per path")
    p.add_argument("--bytes", type=int, default=2_000_000, help="bytes per throughput measurement")
    p = sub.add_parser("exec")
    p.add_argument("name", help="a device of the running cluster, or 'origin'")
    p.epilog = "After the name: -- then the command to run as that device (its namespace and cgroups)."
    p = sub.add_parser("origin")
    p.epilog = "Same as `exec origin`: after the options, -- then the command."
    argv = sys.argv[1:]
    rest = []
    if "--" in argv:  # everything after the first -- belongs to the command we run
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    args = ap.parse_args(argv)
    args.lingua_args = args.command = rest
    if args.cmd == "origin":
        args.name = "origin"
    if not 0 <= args.subnet <= 255:
        ap.error("--subnet must be 0-255")
    args.lingua = os.path.abspath(args.lingua)
    if args.cmd in ("up", "run", "probe"):
        if args.cfs_period_us < 1000 or args.cfs_period_us > 1000000:
            ap.error("--cfs-period-us must be 1000-1000000")
    if args.cmd != "check" and args.cmd != "status":
        try:
            require_root()
        except Failure as e:
            log(f"error: {e}")
            return 1
    try:
        return {"check": cmd_check, "up": cmd_up, "down": cmd_down, "status": cmd_status, "run": cmd_run,
                "probe": cmd_probe, "origin": cmd_exec, "exec": cmd_exec}[args.cmd](args)
    except Failure as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
