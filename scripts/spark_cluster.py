"""Start and stop a Spark standalone cluster on this machine: one master, N workers.

pyspark's pip package carries ``bin/spark-class`` but not ``sbin/start-master.sh``, so the
master and the workers are started here as ``spark-class`` processes, each in a session
of its own (they outlive the shell command that started them), with its log and the
cluster's state file (``cluster.json``: master URL, process ids) in ``--dir``. A start
returns once the master's web UI lists every worker as ALIVE.

    python scripts/spark_cluster.py start --workers 1 --cores 2 --memory 2g
    shelflife batch forecasts --master spark://127.0.0.1:7077
    python scripts/spark_cluster.py status
    python scripts/spark_cluster.py stop

From Python (the tests do)::

    with standalone_cluster(tmp_path, cores=2, memory="2g") as cluster:
        spark_session(master=cluster.master_url)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """The cluster could not be started (no Java, a process died, or no workers came)."""


@dataclass
class Cluster:
    """A running standalone cluster started by :func:`start_cluster`."""

    master_url: str
    web_url: str
    work_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    """Process id of ``master`` and of each ``worker-<i>``."""

    def status(self) -> dict:
        """The master's web UI state (workers, cores, applications), as JSON."""
        return master_state(self.web_url)

    def log(self, name: str) -> Path:
        return Path(self.work_dir) / f"{name}.log"


def spark_home() -> Path:
    """The Spark that pyspark ships (its jars and ``bin/spark-class``)."""
    import pyspark  # the cluster runs the Spark this environment's drivers use

    return Path(pyspark.__file__).resolve().parent


def find_java() -> str:
    """The ``java`` Spark will run, or a ClusterError saying how to get one."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise ClusterError("Java is missing: Spark's master and workers are JVM processes "
                           "(apt-get install openjdk-17-jre-headless, or set JAVA_HOME)")
    return java


def master_state(web_url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(f"{web_url}/json/", timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(name: str, args: list[str], work: Path, env: dict[str, str]) -> int:
    out = open(work / f"{name}.log", "w")  # noqa: SIM115 - handed to the child
    with out:
        proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=work, start_new_session=True)
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by another command): ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _is_spark_daemon(pid: int) -> bool:
    """Whether ``pid`` is still a master or worker (a stale cluster.json's ids may have
    been given to other processes since)."""
    try:
        return b"org.apache.spark.deploy." in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc: trust the state file
    except OSError:
        return False


def start_cluster(work_dir: str | os.PathLike[str], *, workers: int = 1, cores: int = 2,
                  memory: str = "2g", host: str = "127.0.0.1", port: int = 7077,
                  webui_port: int = 8080, worker_webui_ports: list[int] | None = None,
                  timeout_s: float = 90.0) -> Cluster:
    """Start a master and ``workers`` workers of ``cores`` cores and ``memory`` each, and
    wait until the master lists them ALIVE; on failure stop what started and raise
    ClusterError with the logs' last lines."""
    find_java()
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": host,
           "SPARK_NO_DAEMONIZE": "1"}
    master_url, web_url = f"spark://{host}:{port}", f"http://{host}:{webui_port}"
    cluster = Cluster(master_url, web_url, str(work))
    cluster.pids["master"] = _spawn("master", [
        "org.apache.spark.deploy.master.Master", "--host", host, "--port", str(port),
        "--webui-port", str(webui_port)], work, env)
    ui_ports = worker_webui_ports or [webui_port + 1 + i for i in range(workers)]
    for i in range(workers):
        name = f"worker-{i + 1}"
        (work / name).mkdir(exist_ok=True)
        cluster.pids[name] = _spawn(name, [
            "org.apache.spark.deploy.worker.Worker", master_url, "--host", host,
            "--cores", str(cores), "--memory", memory, "--webui-port", str(ui_ports[i]),
            "--work-dir", str(work / name)], work, env)
    (work / STATE_FILE).write_text(json.dumps(asdict(cluster), indent=1))
    deadline = time.monotonic() + timeout_s
    alive = 0
    while True:
        dead = [n for n, pid in cluster.pids.items() if not _alive(pid)]
        if dead:
            stop_cluster(cluster)
            raise ClusterError(f"Spark {dead[0]} exited while starting; the end of "
                               f"{cluster.log(dead[0])}:\n{_tail(cluster.log(dead[0]))}")
        with contextlib.suppress(OSError, ValueError):
            state = master_state(web_url)
            alive = sum(w.get("state") == "ALIVE" for w in state.get("workers", []))
            if alive >= workers:
                return cluster
        if time.monotonic() > deadline:
            stop_cluster(cluster)
            logs = "\n".join(f"--- {n}.log:\n{_tail(cluster.log(n))}" for n in cluster.pids)
            raise ClusterError(f"the master at {web_url} showed {alive} of {workers} "
                               f"worker(s) ALIVE after {timeout_s:.0f} s\n{logs}")
        time.sleep(0.5)


def load_cluster(work_dir: str | os.PathLike[str]) -> Cluster | None:
    """The cluster whose state ``work_dir`` holds, or None."""
    path = Path(work_dir) / STATE_FILE
    if not path.exists():
        return None
    return Cluster(**json.loads(path.read_text()))


def stop_cluster(cluster: Cluster, timeout_s: float = 20.0) -> None:
    """Stop the workers, then the master (SIGTERM, SIGKILL after ``timeout_s``); each
    was started in a session of its own, so its process group is exactly its JVM."""
    order = [n for n in cluster.pids if n != "master"] + ["master"]
    order = [n for n in order if _is_spark_daemon(cluster.pids[n])]
    for name in order:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(cluster.pids[name], signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for name in order:
        pid = cluster.pids[name]
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        (Path(cluster.work_dir) / STATE_FILE).unlink()


@contextlib.contextmanager
def standalone_cluster(work_dir: str | os.PathLike[str], **options) -> Iterator[Cluster]:
    """A cluster for the length of a ``with`` block (options as :func:`start_cluster`)."""
    cluster = start_cluster(work_dir, **options)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@dataclass
class StageTimes:
    """What one stage's tasks cost, summed from a Spark event log."""

    stage: int
    name: str
    tasks: int = 0
    executor_run_s: float = 0.0
    """Wall time of the tasks in the executors (Python workers' time included)."""
    executor_cpu_s: float = 0.0
    """CPU of the executors' task threads (the JVM's; not the Python workers')."""
    executors: set[str] = field(default_factory=set)


def stage_times(event_log: str | os.PathLike[str]) -> list[StageTimes]:
    """Per stage, the tasks, executors, run and CPU time of every application logged in
    ``event_log`` (a folder of Spark event logs, or one log file), in stage order."""
    path = Path(event_log)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stages: dict[tuple[int, int], StageTimes] = {}
    for i, log in enumerate(files):
        for line in log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a log still being written ends in a partial line
            kind = event.get("Event")
            if kind in ("SparkListenerStageSubmitted", "SparkListenerStageCompleted"):
                info = event["Stage Info"]
                key = (i, info["Stage ID"])
                stages.setdefault(key, StageTimes(info["Stage ID"], ""))
                stages[key].name = info.get("Stage Name", "").split(" at ")[0]
            elif kind == "SparkListenerTaskEnd":
                key = (i, event["Stage ID"])
                stage = stages.setdefault(key, StageTimes(event["Stage ID"], ""))
                metrics = event.get("Task Metrics") or {}
                stage.tasks += 1
                stage.executor_run_s += metrics.get("Executor Run Time", 0) / 1e3
                stage.executor_cpu_s += metrics.get("Executor CPU Time", 0) / 1e9
                stage.executors.add(str(event["Task Info"]["Executor ID"]))
    return [stages[k] for k in sorted(stages)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("start", "stop", "status"))
    ap.add_argument("--dir", default="./var/spark-cluster",
                    help="logs, workers' folders and cluster.json (default ./var/spark-cluster)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cores", type=int, default=2, help="cores per worker")
    ap.add_argument("--memory", default="2g", help="memory per worker (executors' total)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7077, help="master port")
    ap.add_argument("--webui-port", type=int, default=8080,
                    help="master web UI port (workers take the next ones)")
    args = ap.parse_args(argv)
    running = load_cluster(args.dir)
    if args.command == "stop":
        if running is None:
            print(f"no cluster state in {args.dir}")
            return 1
        stop_cluster(running)
        print(f"stopped {running.master_url}")
        return 0
    if args.command == "status":
        if running is None:
            print(f"no cluster state in {args.dir}")
            return 1
        try:
            state = running.status()
        except OSError as exc:
            print(f"{running.master_url}: web UI unreachable ({exc})")
            return 1
        print(json.dumps({k: state.get(k) for k in ("url", "status", "aliveworkers", "cores",
                                                    "coresused", "memory", "activeapps")}))
        return 0
    if running is not None and all(_alive(p) for p in running.pids.values()):
        print(f"already running: {running.master_url} (stop it first)")
        return 1
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        print(f"warning: the master on {args.host} runs jobs for anyone who reaches port "
              f"{args.port}; a standalone cluster has no login unless spark.authenticate "
              "and a shared secret are set on every node and driver", file=sys.stderr)
    try:
        cluster = start_cluster(args.dir, workers=args.workers, cores=args.cores,
                                memory=args.memory, host=args.host, port=args.port,
                                webui_port=args.webui_port)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"master {cluster.master_url} (web UI {cluster.web_url}), {args.workers} worker(s) "
          f"of {args.cores} cores and {args.memory}; logs in {cluster.work_dir}")
    print(cluster.master_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
