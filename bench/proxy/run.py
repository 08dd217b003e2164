#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Side-by-side proxy benchmark: lbkit's example proxies against HAProxy and nginx.

Starts three nginx backends (one nginx, three ports) and, for the chosen --mode, one proxy per
target in front of the same backends, each with one thread/worker: --mode l4 compares
lbkit_l4_proxy with HAProxy mode tcp and nginx stream, --mode l7 compares lbkit_l7_router with
nginx proxy_pass (upstream keepalive) and HAProxy mode http. wrk then drives every target in
turn with keep-alive HTTP, in interleaved rounds, for each body size. Per run it records
requests/s, latency p50/p99 (wrk's histogram, via report.lua), the CPU time per request of the
proxy's own processes (utime+stime from /proc), connects and new TIME_WAIT sockets towards the
backends (connection churn). A run with any wrk error or non-2xx answer fails. It prints
markdown tables: medians over rounds with ratios to the mode's baseline (HAProxy for l4, nginx
for l7), the l7 targets met or not, then every round.

On a 2-core machine wrk is pinned to one core and every server to the other, for all
targets alike, and each run waits (bounded) for both cores to be idle first.

Only the standard library is used. See docs/benchmarks.md for method and results.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CONF = HERE / "conf"
REPORT_LUA = HERE / "report.lua"
NGINX_MODULES = Path("/usr/lib/nginx/modules")
DEFAULT_LBKIT_L4 = REPO / "build/release/examples/lbkit_l4_proxy"
DEFAULT_LBKIT_L7 = REPO / "build/release/examples/lbkit_l7_router"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Body name -> contents. The name is also the URL path on the backends.
BODIES = {
    "13B": b"hello, world\n",
    "64KiB": bytes(ord("a") + i % 26 for i in range(64 * 1024)),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Skip(Exception):
    """A target that cannot run here (e.g. binary not built); the others still run."""


# --------------------------------------------------------------------------- processes


def read_ticks(pid: int) -> int | None:
    """utime+stime of one process (all its threads), in clock ticks; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # comm may contain spaces
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def descendants(root: int) -> list[int]:
    """root and all its live descendants (e.g. an nginx master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


@dataclasses.dataclass
class Server:
    """One started server process (with its children) listening on 127.0.0.1:port."""

    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path

    def cpu_ticks(self) -> int:
        return sum(t for pid in descendants(self.proc.pid) if (t := read_ticks(pid)) is not None)

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Every process the benchmark starts; all are stopped by pid in stop_all()."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def start(self, name: str, cmd: list[str], port: int, tmp: Path, timeout: float = 10.0,
              discard_stdout: bool = False) -> Server:
        """Starts cmd and waits until it accepts on port. stdout and stderr go to a log file,
        or stdout to /dev/null with discard_stdout (a per-request access log)."""
        log_path = tmp / f"{name}.log"
        with open(log_path, "wb") as out:
            # A new session keeps a terminal ^C away from the servers: we stop them ourselves.
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL if discard_stdout else out,
                                    stderr=out if discard_stdout else subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        server = Server(name, proc, port, log_path)
        self.started.append(server)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {' '.join(cmd)}\n"
                                   f"{server.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return server
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not listen on port {port} within {timeout} s\n"
                                       f"{server.log_tail()}")
                time.sleep(0.05)

    def stop_all(self) -> None:
        for server in reversed(self.started):
            tree = descendants(server.proc.pid) if server.proc.poll() is None else []
            if server.proc.poll() is None:
                server.proc.terminate()
                try:
                    server.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    server.proc.kill()
                    server.proc.wait(timeout=5)
            for pid in tree[1:]:  # children the root left behind (e.g. after a SIGKILL)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.started.clear()


# --------------------------------------------------------------------------- environment


def free_ports(base: int, count: int) -> list[int]:
    """count ports >= base on 127.0.0.1 that nothing is bound to right now."""
    ports, port = [], base
    while len(ports) < count:
        if port > 65535:
            raise RuntimeError(f"no {count} free ports at or above {base}")
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                ports.append(port)
            except OSError:
                pass
        port += 1
    return ports


def cpu_times() -> dict[str, tuple[int, int]]:
    """Per /proc/stat cpu line: (idle+iowait, total) jiffies. Steal counts as busy."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu"):
            name, *vals = line.split()
            v = [int(x) for x in vals[:8]]
            out[name] = (v[3] + v[4], sum(v))
    return out


def wait_for_idle(cpus: list[int], min_idle: float, max_wait: float) -> float:
    """Wait until every cpu in cpus was >= min_idle idle over 1 s, at most max_wait seconds.

    Returns the lowest idle fraction of the last sample; the caller notes a busy start.
    """
    names = [f"cpu{c}" for c in cpus] or ["cpu"]
    deadline = time.monotonic() + max_wait
    while True:
        a = cpu_times()
        time.sleep(1.0)
        b = cpu_times()
        idle = min((b[n][0] - a[n][0]) / max(1, b[n][1] - a[n][1]) for n in names)
        if idle >= min_idle or time.monotonic() >= deadline:
            return idle


def tcp_active_opens() -> int:
    """System-wide count of connect()s so far (Tcp: ActiveOpens); its delta shows churn."""
    lines = [l.split() for l in Path("/proc/net/snmp").read_text().splitlines() if l.startswith("Tcp:")]
    return int(lines[1][lines[0].index("ActiveOpens")])


def time_wait_sockets(ports: set[int]) -> set[tuple[str, str]]:
    """IPv4 TCP sockets in TIME_WAIT with one of ports at either end, as (local, remote).

    The same list `ss -tan state time-wait` prints, read from /proc/net/tcp. A proxy that
    closes its upstream connection after a request leaves one here per request (on its side;
    on the backend's if the backend closes), for 60 s.
    """
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if len(f) > 3 and f[3] == "06":  # TCP_TIME_WAIT
            if int(f[1].rsplit(":", 1)[1], 16) in ports or int(f[2].rsplit(":", 1)[1], 16) in ports:
                out.add((f[1], f[2]))
    return out


def tool_version(cmd: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else "unknown"


def machine_description(args: argparse.Namespace) -> list[str]:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    os_name = "unknown OS"
    try:
        os_name = re.search(r'PRETTY_NAME="(.*)"', Path("/etc/os-release").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    haproxy = tool_version(["haproxy", "-v"], r"version (\S+)")
    nginx = tool_version(["nginx", "-v"], r"nginx/(\S+)")
    wrk = tool_version(["wrk", "-v"], r"wrk (\S+)")
    lines = [
        f"- date: {time.strftime('%Y-%m-%d')}",
        f"- machine: {os.cpu_count()} vCPU ({model}), {os_name}, Linux {platform.release()}",
        f"- haproxy {haproxy}, nginx {nginx}, wrk {wrk}",
        f"- wrk: {args.connections} connections, {args.wrk_threads} thread, "
        f"{args.duration} s per run, rounds: {args.rounds} (interleaved); "
        + (f"wrk on CPU {args.client_cpu}, backends and proxies on CPU {args.server_cpu}"
           if args.pin else "no CPU pinning"),
    ]
    if args.mode == "l7" and any(t.name == "lbkit" for t in args.target_list):
        lines.append("- lbkit: `--no-access-log`, as nginx and HAProxy run with no log")
    return lines


# --------------------------------------------------------------------------- targets


def render(template: Path, out: Path, values: dict[str, object]) -> Path:
    """Fill @name@ placeholders; an unknown or leftover placeholder is an error."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise RuntimeError(f"{template}: no value for @{m.group(1)}@")
        return str(values[m.group(1)])
    out.write_text(re.sub(r"@([a-z0-9_]+)@", sub, template.read_text()))
    return out


@dataclasses.dataclass
class Bench:
    """What a target's start function needs: where to put files, ports, how to pin."""

    args: argparse.Namespace
    tmp: Path
    backend_ports: list[int]
    procs: Processes

    def server_cmd(self, cmd: list[str]) -> list[str]:
        return (["taskset", "-c", str(self.args.server_cpu)] if self.args.pin else []) + cmd

    def values(self, listen_port: int) -> dict[str, object]:
        v: dict[str, object] = {"tmp": self.tmp, "listen_port": listen_port,
                                "nginx_modules": NGINX_MODULES}
        for i, port in enumerate(self.backend_ports, 1):
            v[f"backend{i}_port"] = port
        return v


def start_nginx(bench: Bench, name: str, conf: Path) -> list[str]:
    return bench.server_cmd(["nginx", "-p", str(bench.tmp), "-e", str(bench.tmp / f"{name}.error.log"),
                             "-c", str(conf)])


def start_haproxy_l4(bench: Bench, port: int, name: str = "haproxy", options: str = "") -> Server:
    if not shutil.which("haproxy"):
        raise Skip("haproxy not installed")
    cfg = render(CONF / "l4/haproxy.cfg", bench.tmp / f"{name}-l4.cfg",
                 bench.values(port) | {"haproxy_options": options})
    return bench.procs.start(name, bench.server_cmd(["haproxy", "-db", "-f", str(cfg)]),
                             port, bench.tmp)


def start_haproxy_splice_l4(bench: Bench, port: int) -> Server:
    return start_haproxy_l4(bench, port, "haproxy_splice", "option splice-auto")


def start_nginx_l4(bench: Bench, port: int) -> Server:
    if not (NGINX_MODULES / "ngx_stream_module.so").exists():
        raise Skip(f"{NGINX_MODULES}/ngx_stream_module.so missing (Debian: libnginx-mod-stream)")
    conf = render(CONF / "l4/nginx-stream.conf", bench.tmp / "nginx-l4.conf", bench.values(port))
    return bench.procs.start("nginx", start_nginx(bench, "nginx-l4", conf), port, bench.tmp)


def lbkit_binary(path: str, target: str, flag: str, env: str) -> Path:
    binary = Path(path)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise Skip(f"{binary} not found; build it (cmake --preset release && cmake --build "
                   f"--preset release --target {target}) or pass {flag} / set {env}")
    return binary


def start_l4_proxy(bench: Bench, port: int, name: str, path: str) -> Server:
    binary = lbkit_binary(path, "lbkit_l4_proxy", "--lbkit-l4", "LBKIT_L4_PROXY")
    cmd = [str(binary), "--listen", f"127.0.0.1:{port}"]
    for b in bench.backend_ports:
        cmd += ["--backend", f"127.0.0.1:{b}"]
    cmd += ["--policy", "round_robin", "--threads", "1", "--health", "none"]
    return bench.procs.start(name, bench.server_cmd(cmd), port, bench.tmp)


def start_lbkit_l4(bench: Bench, port: int) -> Server:
    return start_l4_proxy(bench, port, "lbkit", bench.args.lbkit_l4)


def start_lbkit_b_l4(bench: Bench, port: int) -> Server:
    if not bench.args.lbkit_l4_b:
        raise Skip("no second proxy build: pass --lbkit-l4-b")
    return start_l4_proxy(bench, port, "lbkit_b", bench.args.lbkit_l4_b)


def start_router(bench: Bench, port: int, name: str, path: str) -> Server:
    binary = lbkit_binary(path, "lbkit_l7_router", "--lbkit-l7", "LBKIT_L7_ROUTER")
    cmd = [str(binary), "--listen", f"127.0.0.1:{port}"]
    for b in bench.backend_ports:
        cmd += ["--backend", f"127.0.0.1:{b}"]
    cmd += ["--threads", "1", "--no-access-log"]
    return bench.procs.start(name, bench.server_cmd(cmd), port, bench.tmp, discard_stdout=True)


def start_lbkit_l7(bench: Bench, port: int) -> Server:
    return start_router(bench, port, "lbkit", bench.args.lbkit_l7)


def start_lbkit_b_l7(bench: Bench, port: int) -> Server:
    if not bench.args.lbkit_l7_b:
        raise Skip("no second router build: pass --lbkit-l7-b")
    return start_router(bench, port, "lbkit_b", bench.args.lbkit_l7_b)


def start_nginx_l7(bench: Bench, port: int) -> Server:
    conf = render(CONF / "l7/nginx-http.conf", bench.tmp / "nginx-l7.conf", bench.values(port))
    return bench.procs.start("nginx", start_nginx(bench, "nginx-l7", conf), port, bench.tmp)


def start_haproxy_l7(bench: Bench, port: int) -> Server:
    if not shutil.which("haproxy"):
        raise Skip("haproxy not installed")
    cfg = render(CONF / "l7/haproxy.cfg", bench.tmp / "haproxy-l7.cfg", bench.values(port))
    return bench.procs.start("haproxy", bench.server_cmd(["haproxy", "-db", "-f", str(cfg)]),
                             port, bench.tmp)


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    description: str
    # Starts the proxy on the given port; None means wrk talks to backend 1 directly.
    start: Callable[[Bench, int], Server] | None
    default: bool = True  # run without --targets


# Targets per mode, in the order of round 1. REFERENCE names each mode's baseline for ratios.
TARGETS: dict[str, list[Target]] = {
    "l4": [
        Target("direct", "wrk straight to backend 1 (reference only, no proxy)", None),
        Target("haproxy", "HAProxy mode tcp, balance roundrobin, nbthread 1", start_haproxy_l4),
        Target("nginx", "nginx stream, worker_processes 1, round robin", start_nginx_l4),
        Target("lbkit", "lbkit_l4_proxy --policy round_robin --threads 1 --health none",
               start_lbkit_l4),
        # HAProxy does not splice(2) by default; lbkit_l4_proxy does for bulk transfers.
        Target("haproxy_splice", "as haproxy, plus option splice-auto", start_haproxy_splice_l4,
               default=False),
        # Another build of the proxy, run as lbkit is: to compare a change within one run.
        Target("lbkit_b", "as lbkit, the build given by --lbkit-l4-b", start_lbkit_b_l4,
               default=False),
    ],
    "l7": [
        Target("direct", "wrk straight to backend 1 (reference only, no proxy)", None),
        Target("nginx", "nginx proxy_pass, upstream keepalive 1024, worker_processes 1",
               start_nginx_l7),
        Target("haproxy", "HAProxy mode http, http-reuse always, nbthread 1", start_haproxy_l7),
        Target("lbkit", "lbkit_l7_router --listen … --backend ×3 --threads 1 --no-access-log",
               start_lbkit_l7),
        # Another build of the router, run as lbkit is: to compare a change within one run.
        Target("lbkit_b", "as lbkit, the build given by --lbkit-l7-b", start_lbkit_b_l7,
               default=False),
    ],
}
REFERENCE = {"l4": "haproxy", "l7": "nginx"}
LABEL = {"haproxy": "HAProxy", "nginx": "nginx"}

# Per mode: what lbkit targets must reach against the baseline, as (Run field, label,
# lowest ratio, highest ratio). Checked on the medians of the per-round ratios.
GOALS: dict[str, list[tuple[str, str, float | None, float | None]]] = {
    "l7": [("rps", "req/s", 0.9, None), ("proxy_us_per_req", "CPU/req", None, 1.1),
           ("p99_us", "p99", None, 1.2)],
}


# --------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class Run:
    body: str
    round: int
    target: str
    rps: float
    p50_us: float
    p99_us: float
    proxy_us_per_req: float | None
    backend_us_per_req: float
    requests: int
    errors: int
    non2xx: int  # wrk's "Non-2xx or 3xx responses" (also counted in errors)
    conns_opened: int
    time_wait: int  # TIME_WAIT sockets towards the backends that appeared during the run
    idle_before: float
    other_load: float  # cores busy with something else during the run
    bytes_per_req: float
    failed: str = ""  # why this run does not count ("" if it does)


def run_wrk(args: argparse.Namespace, port: int, body: str, duration: int, procs_to_kill: list) -> dict:
    cmd = (["taskset", "-c", str(args.client_cpu)] if args.pin else []) + [
        "wrk", "-t", str(args.wrk_threads), "-c", str(args.connections), "-d", f"{duration}s",
        "--timeout", "5s", "-s", str(REPORT_LUA), f"http://127.0.0.1:{port}/{body}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs_to_kill.append(proc)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"wrk did not finish: {' '.join(cmd)}")
    finally:
        procs_to_kill.remove(proc)
    result = None
    for line in out.splitlines():
        if line.startswith("LBKIT_WRK "):
            result = json.loads(line[len("LBKIT_WRK "):])
    if result is None:
        raise RuntimeError(f"no result from wrk ({' '.join(cmd)}):\n{out}")
    # wrk's own summary, next to report.lua's counters (both should agree).
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = max(result["status"], int(m.group(1)) if m else 0)
    result["socket_errors"] = next((l.strip() for l in out.splitlines() if "Socket errors" in l), "")
    return result


def own_seconds() -> float:
    """CPU time of this script plus its reaped children (wrk), in seconds."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def busy_ticks(cpus: list[int]) -> int:
    """Non-idle jiffies (user, system, irq, softirq, steal) summed over cpus."""
    times = cpu_times()
    return sum(times[n][1] - times[n][0] for n in ([f"cpu{c}" for c in cpus] or ["cpu"]))


def measure(bench: Bench, target: str, server: Server | None, backends: Server, port: int,
            body: str, rnd: int, wrk_procs: list) -> Run:
    args = bench.args
    cpus = [args.client_cpu, args.server_cpu] if args.pin else []
    idle = wait_for_idle(cpus, args.idle_min, args.idle_wait)
    if idle < args.idle_min:
        log(f"  note: machine still busy after {args.idle_wait:g} s (idle {idle:.0%}), running anyway")

    def snapshot() -> tuple[int, int, int, float, int, float]:
        return ((server.cpu_ticks() if server else 0), backends.cpu_ticks(), tcp_active_opens(),
                own_seconds(), busy_ticks(cpus), time.monotonic())

    tw_ports = set(bench.backend_ports)
    tw_before = time_wait_sockets(tw_ports)
    before = snapshot()
    try:
        r = run_wrk(args, port, body, args.duration, wrk_procs)
    except RuntimeError as e:  # e.g. the proxy is gone: this run fails, the others go on
        r = {k: 0 for k in ("requests", "bytes", "p50_us", "p99_us", "connect", "read", "write",
                            "status", "timeout", "non2xx")}
        r |= {"duration_us": 1, "socket_errors": str(e).splitlines()[-1]}
    after = snapshot()
    # Closes at the end of the run (wrk's for direct, or a proxy closing upstream connections
    # as its clients go) finish their FIN exchange on the busy server CPU: give them a moment.
    time.sleep(args.time_wait_delay)
    time_wait = len(time_wait_sockets(tw_ports) - tw_before)
    proxy, backend, opens, own, busy, wall = (b - a for a, b in zip(before, after))
    n = max(1, r["requests"])
    us_per_tick = 1e6 / CLK_TCK
    # Whatever kept the measured CPUs busy besides wrk, this script and the servers.
    other = max(0.0, (busy - proxy - backend) / CLK_TCK - own) / wall
    run = Run(
        body=body, round=rnd, target=target,
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_us=r["p50_us"], p99_us=r["p99_us"],
        proxy_us_per_req=proxy * us_per_tick / n if server else None,
        backend_us_per_req=backend * us_per_tick / n,
        requests=r["requests"],
        errors=sum(r[k] for k in ("connect", "read", "write", "status", "timeout")),
        non2xx=r["non2xx"], conns_opened=opens, time_wait=time_wait, idle_before=idle,
        other_load=other, bytes_per_req=r["bytes"] / n)
    problems = []
    if run.non2xx:
        problems.append(f"{run.non2xx} non-2xx answers")
    if run.errors > r["status"]:
        problems.append(r["socket_errors"] or f"{run.errors - r['status']} socket errors")
    if not r["requests"]:
        problems.append(r["socket_errors"] if r["duration_us"] == 1 else "no requests")
    if server and server.proc.poll() is not None:
        tail = " / ".join(server.log_tail(3).splitlines())
        problems.append(f"{server.name} exited with {server.proc.returncode}"
                        + (f": {tail}" if tail else ""))
    run.failed = "; ".join(dict.fromkeys(problems))
    log(f"  round {rnd} {body:>5} {target:<14} {run.rps:9.0f} req/s  p50 {run.p50_us:6.0f} µs  "
        f"p99 {run.p99_us:6.0f} µs  proxy {fmt(run.proxy_us_per_req, 2):>6} µs/req  "
        f"errors {run.errors}  connects {run.conns_opened}  TIME_WAIT {run.time_wait}  "
        f"other load {other:.2f} cores" + (f"  FAILED: {run.failed}" if run.failed else ""))
    return run


def check_body(port: int, body: str) -> None:
    """One plain GET through the target; a proxy that mangles bytes fails here, not later."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", f"/{body}")
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or data != BODIES[body]:
        raise RuntimeError(f"GET /{body} on port {port}: status {resp.status}, {len(data)} bytes")


# --------------------------------------------------------------------------- report


def fmt(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def paired_ratio(runs: list[Run], target: str, field: str, reference: str) -> float | None:
    """Median over rounds of target/reference, each ratio taken within one round.

    Failed runs do not count (nor, in their round, do the other targets' ratios to them).
    """
    ok = [r for r in runs if not r.failed]
    ref = {r.round: getattr(r, field) for r in ok if r.target == reference}
    vals = [getattr(r, field) / ref[r.round] for r in ok
            if r.target == target and getattr(r, field) is not None and ref.get(r.round)]
    return median(vals)


def goal_rows(args: argparse.Namespace, targets: list[Target], runs: list[Run]) -> list[str]:
    """The lbkit targets' ratios against GOALS[mode], one row per body and target."""
    goals, reference = GOALS.get(args.mode), REFERENCE[args.mode]
    if not goals or not any(r.target.startswith("lbkit") for r in runs):
        return []
    label = LABEL.get(reference, reference)
    bounds = ", ".join(f"{name} {'≥ ' + format(lo, 'g') if lo is not None else '≤ ' + format(hi, 'g')}×"
                       for _, name, lo, hi in goals)
    out = [f"**Against the targets** ({bounds} {label}, medians of the per-round ratios):", "",
           "| body | target | " + " | ".join(f"{name} vs {label}" for _, name, _, _ in goals)
           + " | met |", "|---|---|" + "---:|" * len(goals) + "---|"]
    for body in args.body_list:
        body_runs = [r for r in runs if r.body == body]
        for t in targets:
            if not t.name.startswith("lbkit") or not any(r.target == t.name for r in body_runs):
                continue
            cells, missed = [], []
            for field, name, lo, hi in goals:
                v = paired_ratio(body_runs, t.name, field, reference)
                cells.append(ratio(v))
                if v is None or (lo is not None and v < lo) or (hi is not None and v > hi):
                    missed.append(name)
            out.append(f"| {body} | {t.name} | " + " | ".join(cells) + " | "
                       + ("yes" if not missed else "no: " + ", ".join(missed)) + " |")
    return out + [""]


def report(args: argparse.Namespace, targets: list[Target], skipped: dict[str, str],
           runs: list[Run]) -> str:
    reference = REFERENCE[args.mode]
    label = LABEL.get(reference, reference)
    out = machine_description(args)
    out += [f"- command: `{' '.join(['bench/proxy/run.py'] + sys.argv[1:])}`", ""]
    for body in args.body_list:
        out += [f"#### {body} body (`GET /{body}`)", "",
                f"Medians over rounds; ratios are to {label} in the same round (median of the "
                "per-round ratios). CPU is the proxy's own processes only. TIME_WAIT is the "
                "most new TIME_WAIT sockets towards the backends in one run. Failed runs do "
                "not count.", "",
                f"| target | req/s | p50 µs | p99 µs | proxy CPU µs/req | req/s vs {label} "
                f"| CPU/req vs {label} | p99 vs {label} | TIME_WAIT |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        body_runs = [r for r in runs if r.body == body]
        for t in targets:
            if t.name in skipped:
                out.append(f"| {t.name} | *skipped: {skipped[t.name].split(';')[0]}* "
                           "| | | | | | | |")
                continue
            mine = [r for r in body_runs if r.target == t.name and not r.failed]
            failed = sum(1 for r in body_runs if r.target == t.name and r.failed)
            cpu = [r.proxy_us_per_req for r in mine if r.proxy_us_per_req is not None]
            out.append(
                f"| {t.name}{f' ({failed} runs failed)' if failed else ''} "
                f"| {fmt(median([r.rps for r in mine]))} "
                f"| {fmt(median([r.p50_us for r in mine]))} | {fmt(median([r.p99_us for r in mine]))} "
                f"| {fmt(median(cpu), 2)} | {ratio(paired_ratio(body_runs, t.name, 'rps', reference))} "
                f"| {ratio(paired_ratio(body_runs, t.name, 'proxy_us_per_req', reference))} "
                f"| {ratio(paired_ratio(body_runs, t.name, 'p99_us', reference))} "
                f"| {max((r.time_wait for r in mine), default='—')} |")
        out.append("")
    out += goal_rows(args, targets, runs)
    churn = ("65 from wrk (64 + one probe) and as many again from an L4 proxy means no "
             "connection churn" if args.mode == "l4" else
             "65 from wrk (64 + one probe); a proxy that reuses upstream connections adds "
             "few or none once its pool is warm")
    out += ["#### Every run", "",
            "Backend CPU is the three nginx backends together. Connects is the system-wide "
            f"count of `connect()` calls during the run: {churn}. TIME_WAIT counts the "
            "sockets towards the backend ports that entered TIME_WAIT during the run (for "
            "`direct`, up to 64 from wrk's own closes at the end"
            + (", for an L4 proxy up to 64 as it closes each upstream connection after its "
               "client's" if args.mode == "l4" else "") + "). Idle is the lower of the two CPUs' idle "
            "share in the second before the run; other is the CPU time (in cores) that "
            "something else used on the two CPUs during the run. A run with any wrk error "
            "or non-2xx answer is marked failed and left out of the medians.", "",
            "| body | round | target | req/s | p50 µs | p99 µs | proxy CPU µs/req "
            "| backend CPU µs/req | errors | connects | TIME_WAIT | idle | other |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: (args.body_list.index(r.body), r.round)):
        out.append(f"| {r.body} | {r.round} | {r.target} | {r.rps:.0f} | {r.p50_us:.0f} "
                   f"| {r.p99_us:.0f} | {fmt(r.proxy_us_per_req, 2)} | {r.backend_us_per_req:.2f} "
                   f"| {r.errors}{f' (failed: {r.failed})' if r.failed else ''} "
                   f"| {r.conns_opened} | {r.time_wait} | {r.idle_before:.0%} | {r.other_load:.2f} |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=sorted(TARGETS), default="l4",
                   help="target set: l4 proxies (baseline HAProxy) or l7 HTTP proxies "
                   "(baseline nginx)")
    p.add_argument("--targets", default=None,
                   help="comma-separated targets, in this order (default: all but "
                   "haproxy_splice for l4)")
    p.add_argument("--bodies", default=",".join(BODIES), help="comma-separated body names")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--warmup", type=int, default=1,
                   help="seconds of unmeasured wrk per target and body before round 1 (0: none)")
    p.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    p.add_argument("--client-cpu", type=int, default=0, help="CPU for wrk")
    p.add_argument("--server-cpu", type=int, default=1, help="CPU for backends and proxies")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not use taskset")
    p.add_argument("--idle-min", type=float, default=0.90,
                   help="idle share each pinned CPU needs over 1 s before a run")
    p.add_argument("--idle-wait", type=float, default=5.0,
                   help="longest wait for an idle machine before a run, seconds")
    p.add_argument("--time-wait-delay", type=float, default=1.0,
                   help="seconds after wrk before new TIME_WAIT sockets are counted")
    p.add_argument("--port-base", type=int, default=18100,
                   help="first port tried for servers (below the ephemeral range)")
    p.add_argument("--lbkit-l4", default=os.environ.get("LBKIT_L4_PROXY", str(DEFAULT_LBKIT_L4)),
                   help="lbkit_l4_proxy binary (env LBKIT_L4_PROXY)")
    p.add_argument("--lbkit-l7", default=os.environ.get("LBKIT_L7_ROUTER", str(DEFAULT_LBKIT_L7)),
                   help="lbkit_l7_router binary (env LBKIT_L7_ROUTER)")
    p.add_argument("--lbkit-l4-b", default=None,
                   help="a second lbkit_l4_proxy build, run as target lbkit_b (A/B of a change)")
    p.add_argument("--lbkit-l7-b", default=None,
                   help="a second lbkit_l7_router build, run as target lbkit_b (A/B of a change)")
    p.add_argument("--json", type=Path, help="also write every run as JSON to this file")
    args = p.parse_args()
    known = {t.name: t for t in TARGETS[args.mode]}
    names = (args.targets.split(",") if args.targets
             else [t.name for t in TARGETS[args.mode] if t.default])
    if unknown := [n for n in names if n not in known]:
        p.error(f"unknown target(s) {unknown}; {args.mode} has {list(known)}")
    args.target_list = [known[n] for n in names]
    args.body_list = args.bodies.split(",")
    if unknown := [b for b in args.body_list if b not in BODIES]:
        p.error(f"unknown body {unknown}; have {list(BODIES)}")
    if args.pin and (os.cpu_count() or 1) < 2:
        p.error("CPU pinning needs 2 CPUs; use --no-pin")
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds and --duration must be positive")
    return args


def server_log_notes(tmp: Path, lines: int = 5) -> None:
    """Shows on stderr what the servers logged (errors, warnings), which should be nothing."""
    for path in sorted(tmp.glob("*.log")):
        text = path.read_text(errors="replace").strip()
        if not text:
            continue
        tail = text.splitlines()[-lines:]
        log(f"note: {path.name} ({len(text.splitlines())} lines), last:\n    " + "\n    ".join(tail))
        if "temporary file" in text:
            log("note: nginx buffered upstream responses to temporary files (disk I/O)")


def main() -> int:
    args = parse_args()
    for tool in ["nginx", "wrk"] + (["taskset"] if args.pin else []):
        if not shutil.which(tool):
            sys.exit(f"error: {tool} not found in PATH")
    lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if lo <= args.port_base <= hi:
        log(f"warning: --port-base {args.port_base} is inside the ephemeral range {lo}-{hi}")

    targets: list[Target] = args.target_list
    n_runs = len(targets) * len(args.body_list)
    bound = n_runs * (args.rounds * (args.duration + args.idle_wait + args.time_wait_delay + 2)
                      + (args.warmup + args.idle_wait + 2 if args.warmup else 0))
    log(f"{args.rounds} rounds × {n_runs} runs of {args.duration:g} s; "
        f"at most ~{bound / 60:.1f} min if the machine never goes idle")

    procs = Processes()
    wrk_procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="lbkit-proxy-bench-"))

    def on_signal(signum, _frame):
        log(f"{signal.Signals(signum).name}: stopping")
        raise SystemExit(128 + signum)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    try:
        # nginx workers run as nobody when started as root: the docroot must be readable.
        tmp.chmod(0o755)
        docroot = tmp / "docroot"
        docroot.mkdir(mode=0o755)
        (tmp / "backends-temp").mkdir()
        for name, data in BODIES.items():
            (docroot / name).write_bytes(data)
            (docroot / name).chmod(0o644)

        ports = free_ports(args.port_base, 3 + len(targets))
        backend_ports, target_ports = ports[:3], dict(zip((t.name for t in targets), ports[3:]))
        bench = Bench(args, tmp, backend_ports, procs)
        values = bench.values(0) | {"docroot": docroot}
        backends = procs.start("backends", start_nginx(bench, "backends", render(
            CONF / "backends.nginx.conf", tmp / "backends.conf", values)), backend_ports[0], tmp)

        servers: dict[str, Server | None] = {}
        skipped: dict[str, str] = {}
        for t in targets:
            if t.start is None:
                servers[t.name] = None
                target_ports[t.name] = backend_ports[0]
                continue
            try:
                servers[t.name] = t.start(bench, target_ports[t.name])
            except Skip as e:
                skipped[t.name] = str(e)
                log(f"skipping {t.name}: {e}")
        active = [t for t in targets if t.name not in skipped]
        for t in active:
            for body in args.body_list:
                check_body(target_ports[t.name], body)
        log("targets: " + ", ".join(f"{t.name} :{target_ports[t.name]}" for t in active))

        if args.warmup:
            log("warm-up")
            for body in args.body_list:
                for t in active:
                    wait_for_idle([args.client_cpu, args.server_cpu] if args.pin else [],
                                  args.idle_min, args.idle_wait)
                    run_wrk(args, target_ports[t.name], body, args.warmup, wrk_procs)

        runs: list[Run] = []
        for rnd in range(1, args.rounds + 1):
            # Rotate the order each round so no target always runs first or last.
            shift = (rnd - 1) % len(active)
            order = active[shift:] + active[:shift]
            for body in args.body_list:
                for t in order:
                    runs.append(measure(bench, t.name, servers[t.name], backends,
                                        target_ports[t.name], body, rnd, wrk_procs))

        print(report(args, targets, skipped, runs))
        if args.json:
            args.json.write_text(json.dumps([dataclasses.asdict(r) for r in runs], indent=1))
        server_log_notes(tmp)
        if failed := [r for r in runs if r.failed]:
            log(f"error: {len(failed)} of {len(runs)} runs failed: " + "; ".join(
                f"round {r.round} {r.body} {r.target}: {r.failed}" for r in failed))
            return 1
        return 0
    finally:
        for proc in wrk_procs:
            proc.kill()
            proc.wait()
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as e:
        sys.exit(f"error: {e}")
