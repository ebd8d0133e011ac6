"""Dependencies point one way: apps -> edge_mqtt / ingest / spark_jobs -> lakehouse.

Every import of every module of the five packages is read with ``ast``, function bodies
included, so a layer cannot be crossed by an import hidden inside a function. The store
agent gets less than the rest of ``lakehouse``: it runs on a store's small machine with
the standard library and paho-mqtt alone, and a subprocess checks that importing it (or
the dashboard, or ingest) loads no Spark.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lakehouse", "edge_mqtt", "ingest", "spark_jobs", "apps")
MAY_IMPORT = {
    "lakehouse": {"lakehouse"},
    "edge_mqtt": {"edge_mqtt", "lakehouse"},
    "ingest": {"ingest", "lakehouse"},
    "spark_jobs": {"spark_jobs", "lakehouse"},
    "apps": set(PACKAGES),
}
AGENT_LAKEHOUSE = {"lakehouse.contract", "lakehouse.mqtt", "lakehouse.movements",
                   "lakehouse.credentials", "lakehouse.durable", "lakehouse.options",
                   "lakehouse.ratelimit", "lakehouse.shutdown"}
"""The lakehouse modules the store agent may use: each needs the standard library and
paho-mqtt alone (checked below)."""
AGENT_THIRD_PARTY = {"paho"}
MAX_LOCAL_IMPORTS = 9
"""Imports inside functions: seven in the decision jobs, where Prophet, LightGBM and
pyspark are heavy and optional where their module is used (the pandas-only jobs must load
no JVM), and boto3 and botocore's client config in ``lakehouse.storage``, which the
agent's CLI imports for paths and which reaches S3 only for an ``s3://`` lakehouse.
Each says so in a comment on its line. The ``shelflife`` command defers its server
packages by naming handlers (``apps.lazy``), not by local imports. Lower this when one
goes; never raise it to dodge a cycle."""


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "ingest.orders"
    target: str  # the imported module, absolute, e.g. "lakehouse.decisions"
    line: int
    local: bool  # inside a function body
    text: str  # the statement's first source line


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[Import]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                        | ast.Lambda)
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import mod`` imports pkg.mod when mod is a module
                targets = [f"{base}.{a.name}" if (REPO / base.replace(".", "/") / a.name)
                           .with_suffix(".py").exists() else base for a in child.names]
            else:
                visit(child, inner)
                continue
            for target in dict.fromkeys(targets):
                out.append(Import(module, target, child.lineno, local,
                                  lines[child.lineno - 1]))
    visit(ast.parse(source, filename=str(path)), False)
    return out


ALL = [imp for pkg in PACKAGES for path in sorted((REPO / pkg).rglob("*.py"))
       for imp in _imports(path)]


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_scan_sees_every_package_and_function_bodies():
    assert {_top(i.module) for i in ALL} == set(PACKAGES)
    assert any(i.local for i in ALL)  # the walk reaches inside functions


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_the_layers(package):
    wrong = [f"{i.module}:{i.line} imports {i.target}" for i in ALL
             if _top(i.module) == package and _top(i.target) in PACKAGES
             and _top(i.target) not in MAY_IMPORT[package]]
    assert not wrong, "\n".join(wrong)


def test_the_agent_uses_only_the_lakehouse_modules_a_store_machine_can_run():
    used = {i.target for i in ALL
            if _top(i.module) == "edge_mqtt" and _top(i.target) == "lakehouse"}
    assert used <= AGENT_LAKEHOUSE, used - AGENT_LAKEHOUSE
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for imp in ALL:
        if imp.module in AGENT_LAKEHOUSE and not imp.local:
            top = _top(imp.target)
            assert (top in stdlib or top in AGENT_THIRD_PARTY
                    or imp.target in AGENT_LAKEHOUSE), \
                f"{imp.module}:{imp.line} imports {imp.target}, which a store lacks"


def test_function_local_imports_are_few_and_each_says_why():
    local = [i for i in ALL if i.local]
    silent = [f"{i.module}:{i.line}: {i.text.strip()}" for i in local if "#" not in i.text]
    assert not silent, "a function-local import without a comment saying why:\n" + \
        "\n".join(silent)
    assert len(local) <= MAX_LOCAL_IMPORTS, "\n".join(
        f"{i.module}:{i.line}: {i.text.strip()}" for i in local)


def _loaded_after_import(modules: list[str], tmp_path: Path) -> set[str]:
    """Top-level names in ``sys.modules`` after importing ``modules`` in a fresh
    interpreter (run where no lakehouse exists, so nothing is read)."""
    code = ("import json, sys\n"
            + "".join(f"import {m}\n" for m in modules)
            + "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "SHELFLIFE_LAKEHOUSE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_agent_dashboard_and_ingest_start_no_spark(tmp_path):
    loaded = _loaded_after_import(
        ["edge_mqtt.agent", "edge_mqtt.publisher", "edge_mqtt.http_api",
         "apps.streamlit.dashboard", "apps.streamlit.views",
         "apps.streamlit.decision_views", "apps.streamlit.login",
         "ingest.worker", "ingest.orders"], tmp_path)
    assert "pyspark" not in loaded and "spark_jobs" not in loaded


def test_the_pandas_decision_jobs_load_no_spark(tmp_path):
    assert "pyspark" not in _loaded_after_import(["spark_jobs.decisions.jobs"], tmp_path)


def test_the_agent_loads_no_tables_library(tmp_path):
    loaded = _loaded_after_import(["edge_mqtt.agent", "edge_mqtt.publisher",
                                   "edge_mqtt.http_api"], tmp_path)
    assert not loaded & {"pyspark", "pyarrow", "pandas", "deltalake", "numpy"}


def test_the_shelflife_command_starts_with_no_server_package(tmp_path):
    """A store runs ``shelflife agent ...`` from a package installed with no extras."""
    loaded = _loaded_after_import(["apps.cli"], tmp_path)
    server = {"pyspark", "pyarrow", "pandas", "deltalake", "numpy", "prometheus_client",
              "streamlit", "bcrypt", "yaml"}
    assert not loaded & server, loaded & server
