"""Queued DVC experiments run in temporary workspaces under `.dvc/tmp/exps/`; their MLflow
runs must still land in the project's own store (`<root>/mlflow.db`)."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sh(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None,
                    reason="dvc and git are needed")
def test_queued_experiments_log_into_the_project_store(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "params.yaml").write_text("k: 1\n")
    (repo / "log.py").write_text(textwrap.dedent(f"""
        import sys, yaml
        sys.path.insert(0, {str(ROOT)!r})
        from drseg import tracking
        k = yaml.safe_load(open("params.yaml"))["k"]
        with tracking.start_run("toy", f"k{{k}}", params={{"k": k}}):
            tracking.log_metrics({{"k": k}})
        open("out.txt", "w").write(str(k))
    """))
    (repo / "dvc.yaml").write_text(textwrap.dedent(f"""
        stages:
          toy:
            cmd: {sys.executable} log.py
            deps: [log.py]
            params: [k]
            outs: [out.txt]
    """))
    _sh("git init -q && dvc init -q && dvc config core.analytics false && git add -A "
        "&& git commit -qm init", repo, env)
    _sh("dvc exp run --queue -S k=2 && dvc exp run --queue -S k=3", repo, env)
    _sh("dvc exp run --run-all", repo, env)  # executes the queue in .dvc/tmp/exps workspaces

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("drseg")
    names = sorted(r.info.run_name for r in client.search_runs([exp.experiment_id]))
    assert names == ["toy@k2", "toy@k3"]
    # nothing was left behind in the temporary workspaces
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))
