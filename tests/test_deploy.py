"""The launch templates under deploy/ (docker compose, a Kubernetes Job, a Slurm array) stay
valid: each against its pinned schema (deploy/schemas/, deploy/README.md says whence), a
misspelt copy rejected to show that the check bites, each worker command read by the suite's
own parser, the Slurm script run for real, and, where Docker can, the compose stack brought up.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from processes import free_port
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SCHEMAS = DEPLOY / "schemas"
KUBERNETES = SCHEMAS / "kubernetes-v1.34.0-local-strict"
KIND_SCHEMAS = {"Job": "job-batch-v1.json", "Secret": "secret-v1.json"}
WORKER = "python -m tracking.study"
TINY = "--models concat_cnn --epochs 1 --limit 200 --promote false"


# --- schemas --------------------------------------------------------------------------------

def validator(schema: dict[str, Any], registry: Registry | None = None) -> jsonschema.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # the pinned copy is itself a valid schema
    return cls(schema, registry=registry) if registry is not None else cls(schema)


def errors(check: jsonschema.Validator, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in check.iter_errors(document)]


def compose_errors(document: Any) -> list[str]:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    return errors(validator(schema), document)


def kubernetes_errors(document: dict[str, Any]) -> list[str]:
    """Errors of one manifest against the pinned strict schema of its kind (an unknown key is
    an error: additionalProperties false all the way down)."""
    kind = document.get("kind")
    if kind not in KIND_SCHEMAS:
        return [f"(top): no pinned schema for kind {kind!r}"]
    definitions = json.loads((KUBERNETES / "_definitions.json").read_text())
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    schema = json.loads((KUBERNETES / KIND_SCHEMAS[kind]).read_text())
    return errors(validator(schema, registry), document)


# --- the templates, read as docker compose and Kubernetes read them --------------------------

def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}"
                      r"|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every string value: $$ -> $, ${VAR}, ${VAR:-default},
    ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return VARIABLE.sub(one, value)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """deploy/compose.yaml as written, or interpolated with `env`."""
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document if env is None else interpolate(document, env)


def manifests(path: Path = DEPLOY / "k8s-job.yaml") -> dict[str, dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return {d["kind"]: d for d in documents}


def study_args(argv: list[str]) -> Any:
    """The worker's flags read by the suite's own parser (exits 2 on an unknown flag or a bad
    value, which fails the test with argparse's message)."""
    from tracking.study import build_parser

    return build_parser().parse_args(argv)


def shell_words(command: str, env: dict[str, str]) -> list[str]:
    """The words `sh` makes of a compose command after WORKER (quotes, $VAR, splitting)."""
    prefix = f"exec {WORKER} "
    assert command.startswith(prefix), command
    out = subprocess.run(["sh", "-c", "printf '%s\\0' " + command[len(prefix):]],
                         env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                         check=True).stdout
    return out.decode().split("\0")[:-1]


# --- docker compose -------------------------------------------------------------------------

def test_compose_file_follows_the_compose_specification() -> None:
    document = compose()
    assert compose_errors(document) == []
    # and once interpolated with .env.example, as `docker compose config` sees it
    assert compose_errors(compose(env_example())) == []
    services = document["services"]
    assert set(services) == {"postgres", "mlflow", "worker"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["postgres"]["healthcheck"]["test"]
    assert services["mlflow"]["build"] == services["worker"]["build"]  # one image, built here
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert {name: dep["condition"] for name, dep in services["worker"]["depends_on"].items()} \
        == {"postgres": "service_healthy", "mlflow": "service_healthy"}
    assert services["worker"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "replicas" in services["worker"]["deploy"]
    server = services["mlflow"]["command"]
    assert server[:2] == ["mlflow", "server"]
    assert server[server.index("--artifacts-destination") + 1] == "/artifacts"
    assert server[server.index("--host") + 1] == "0.0.0.0"
    # the workers reach the server as mlflow:5000, a Host header MLflow refuses by default
    assert "mlflow:5000" in server[server.index("--allowed-hosts") + 1].split(",")


def test_a_misspelt_compose_file_is_rejected(tmp_path: Path) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace("    healthcheck:", "    healtcheck:", 1)
                      .replace("    depends_on:", "    depend_on:", 1))
    found = compose_errors(yaml.safe_load(broken.read_text()))
    assert any("healtcheck" in e for e in found), found
    assert any("depend_on" in e for e in found), found
    wrong_type = compose()
    wrong_type["services"]["worker"]["deploy"]["replicas"] = [2]
    assert any("replicas" in e for e in compose_errors(wrong_type))


def test_compose_settings_come_from_the_environment_with_an_example() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    used = {m.group(1) or m.group(4) for m in VARIABLE.finditer(text) if m.group(0) != "$$"}
    container_side = {"POSTGRES_USER", "POSTGRES_DB", "SUITE_TUNE_BUDGET", "SUITE_SEEDS",
                      "SUITE_STORAGE", "SUITE_WORKER_ARGS"}  # also $$VAR, seen by sh / psql
    example = env_example()
    assert used - container_side - {"POSTGRES_PASSWORD"} <= set(example), used
    assert "POSTGRES_PASSWORD" in example
    # no password written into the file: every use of it is ${POSTGRES_PASSWORD:?...}
    assert re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}", text)
    assert all(rest.startswith(":?") for rest in re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}",
                                                            text))
    assert example["POSTGRES_PASSWORD"] not in text
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        compose({k: v for k, v in example.items() if k != "POSTGRES_PASSWORD"})
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()
    assert "CREATE DATABASE optuna" in (DEPLOY / "initdb" / "optuna.sql").read_text()


def test_compose_worker_runs_the_fair_study_on_the_second_database() -> None:
    env = {**env_example(), "POSTGRES_PASSWORD": "s3cret"}
    worker = compose(env)["services"]["worker"]
    assert worker["command"][:2] == ["sh", "-c"]
    args = study_args(shell_words(worker["command"][2], worker["environment"]))
    assert args.tune_budget == (6, 8) and args.seeds == 3
    assert args.storage == f"postgresql://{env['POSTGRES_USER']}:s3cret@postgres/optuna"
    server = compose(env)["services"]["mlflow"]["command"]
    assert server[server.index("--backend-store-uri") + 1] == \
        f"postgresql+psycopg2://{env['POSTGRES_USER']}:s3cret@postgres/mlflow"
    extra = study_args(shell_words(worker["command"][2], {
        **worker["environment"], "SUITE_WORKER_ARGS": "--dataset fashion_mnist --seeds 5"}))
    assert extra.dataset == "fashion_mnist" and extra.seeds == 5


# --- Kubernetes -----------------------------------------------------------------------------

def test_job_and_secret_follow_the_kubernetes_api() -> None:
    found = manifests()
    assert set(found) == {"Job", "Secret"}
    for kind, document in found.items():
        assert kubernetes_errors(document) == [], kind
    job, secret = found["Job"], found["Secret"]
    spec = job["spec"]
    assert spec["parallelism"] == spec["completions"] >= 2
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    assert container["resources"]["requests"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(refs) == {"MLFLOW_TRACKING_URI", "SUITE_STORAGE"}
    for ref in refs.values():  # every key the Job reads is in the Secret
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    # $(VAR) in args is expanded by Kubernetes only for variables the container defines
    for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(container["args"])):
        assert name in refs, name
    assert " ".join(container["command"]) == WORKER
    values = {name: secret["stringData"][ref["key"]] for name, ref in refs.items()}
    argv = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in container["args"]]
    args = study_args(argv)
    assert args.tune_budget == (6, 8)
    assert args.storage == values["SUITE_STORAGE"].strip()
    assert values["MLFLOW_TRACKING_URI"].startswith("http")


def test_a_misspelt_job_or_secret_is_rejected(tmp_path: Path) -> None:
    text = (DEPLOY / "k8s-job.yaml").read_text()
    broken = tmp_path / "k8s-job.yaml"
    broken.write_text(text.replace("  parallelism:", "  paralellism:", 1)
                      .replace("          resources:", "          resource:", 1)
                      .replace("stringData:", "stringdata:", 1))
    found = manifests(broken)
    job = kubernetes_errors(found["Job"])
    assert any("paralellism" in e for e in job), job
    assert any("resource" in e and "unexpected" in e for e in job), job
    assert any("stringdata" in e for e in kubernetes_errors(found["Secret"]))
    wrong = manifests()["Job"]
    wrong["spec"]["parallelism"] = "four"
    wrong["spec"]["template"]["spec"]["containers"][0].pop("name")  # a required field
    messages = kubernetes_errors(wrong)
    assert any(e.startswith("spec/parallelism") for e in messages), messages
    assert any("'name' is a required property" in e for e in messages), messages


# --- Slurm ----------------------------------------------------------------------------------

def slurm(env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUITE_"))}
    return subprocess.run(["bash", str(DEPLOY / "slurm-array.sh")], cwd=cwd, text=True,
                          env={**base, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                               "SUITE_PYTHON": sys.executable, **env},
                          capture_output=True, timeout=timeout)


def test_slurm_script_is_valid_bash_for_an_array_of_gpu_tasks() -> None:
    script = DEPLOY / "slurm-array.sh"
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    text = script.read_text()
    directives = re.findall(r"^#SBATCH (\S+)", text, flags=re.M)
    assert "--array=0-3" in directives and "--gres=gpu:1" in directives
    # sbatch reads #SBATCH lines only above the first command
    first_command = next(i for i, line in enumerate(text.splitlines()[1:], 1)
                         if line.strip() and not line.startswith("#"))
    assert max(i for i, line in enumerate(text.splitlines())
               if line.startswith("#SBATCH")) < first_command
    assert "set -euo pipefail" in text


def test_slurm_script_starts_the_worker_and_refuses_outside_an_array(tmp_path: Path) -> None:
    stores = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
              "SUITE_STORAGE": f"sqlite:///{tmp_path / 'optuna.db'}"}
    outside = slurm(stores, tmp_path, timeout=60)
    assert outside.returncode != 0 and "SLURM_ARRAY_TASK_ID" in outside.stderr
    missing = slurm({"SLURM_ARRAY_TASK_ID": "0"}, tmp_path, timeout=60)
    assert missing.returncode != 0 and "MLFLOW_TRACKING_URI" in missing.stderr
    helped = slurm({**stores, "SLURM_ARRAY_TASK_ID": "0", "SUITE_WORKER_ARGS": "--help"},
                   tmp_path, timeout=300)
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "array task 0" in helped.stdout and "usage: python -m tracking.study" in helped.stdout


@pytest.mark.slow
def test_slurm_array_task_runs_a_tiny_fair_study(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = slurm({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "42",
                  "MLFLOW_TRACKING_URI": uri, "SUITE_STORAGE": f"sqlite:///{tmp_path / 'o.db'}",
                  "SUITE_TUNE_BUDGET": "1x1", "SUITE_SEEDS": "1",
                  "SUITE_WORKER_ARGS": f"{TINY} --study-name t --experiment t "
                                       f"--output {tmp_path / 'out'}"},
                 tmp_path, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "array task 0 of job 42" in done.stdout
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("t")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.run_kind = 'study'")
    assert parent.info.status == "FINISHED"
    assert (tmp_path / "out" / "comparison.md").exists()


# --- docker compose, for real where Docker can ----------------------------------------------

def compose_cli() -> list[str] | None:
    """`docker compose` (the plugin) or the standalone `docker-compose` v2, else None."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def docker_daemon_missing() -> str:
    """Why the stack cannot come up here ("" when a Docker daemon answers)."""
    if not shutil.which("docker"):
        return "docker is not installed"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 60 s"
    if info.returncode == 0:
        return ""
    said = (info.stderr or info.stdout).strip().splitlines() or ["(nothing)"]
    return (f"no Docker daemon answers (docker info: {said[-1][:200]}); the stack also needs "
            "the postgres and python images, which cannot be pulled from the internet here")


def container_states(cli: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    out = subprocess.run([*cli, "ps", "-a", "--format", "json", "worker"], env=env, text=True,
                         capture_output=True, check=True).stdout.strip()
    if out.startswith("["):
        return json.loads(out)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.slow
def test_compose_stack_brings_up_a_study() -> None:
    daemon = docker_daemon_missing()
    cli = compose_cli()
    if cli is None:
        pytest.skip("docker compose is not installed here (neither the docker compose plugin "
                    f"nor docker-compose){'; ' + daemon if daemon else ''}; compose.yaml is "
                    "checked against the pinned Compose schema by the fast tests")
    port = free_port()
    env = {**os.environ, "POSTGRES_PASSWORD": secrets.token_hex(12), "MLFLOW_PORT": str(port),
           "SUITE_TUNE_BUDGET": "1x1", "SUITE_SEEDS": "1", "SUITE_WORKERS": "2",
           "SUITE_WORKER_ARGS": f"{TINY} --study-name compose --experiment compose"}
    cli = [*cli, "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(DEPLOY / ".env.example"),
           "-p", f"suite-deploy-test-{os.getpid()}"]
    config = subprocess.run([*cli, "config"], env=env, text=True, capture_output=True)
    assert config.returncode == 0, config.stderr
    resolved = yaml.safe_load(config.stdout)
    assert set(resolved["services"]) == {"postgres", "mlflow", "worker"}
    assert int(resolved["services"]["worker"]["deploy"]["replicas"]) == 2
    if daemon:
        pytest.skip(f"docker compose config passed, but {daemon}")
    try:
        up = subprocess.run([*cli, "up", "--build", "--detach"], env=env, text=True,
                            capture_output=True, timeout=3600)
        assert up.returncode == 0, up.stderr[-4000:]
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            states = container_states(cli, env)
            if len(states) == 2 and all(s["State"] == "exited" for s in states):
                break
            time.sleep(10)
        else:
            pytest.fail(f"workers still running after 30 min: {states}")
        logs = subprocess.run([*cli, "logs", "worker"], env=env, text=True,
                              capture_output=True).stdout
        assert all(int(s["ExitCode"]) == 0 for s in states), logs[-4000:]
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("compose")
        (parent,) = client.search_runs([experiment.experiment_id], "tags.run_kind = 'study'")
        assert parent.info.status == "FINISHED"
    finally:
        subprocess.run([*cli, "down", "--volumes", "--remove-orphans"], env=env,
                       capture_output=True, timeout=600)
