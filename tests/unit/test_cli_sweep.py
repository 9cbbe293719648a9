"""The sweep commands' word on a best split within the noise, through the real CLI."""

from __future__ import annotations

from pathlib import Path

from support import clusterctl

from cluster.store import Store

HOSTS = """[cluster]
head = "a"

[hosts.a]
transport = "local"
link_address = "127.0.0.2"
link_interface = "lo"
llama_bin_dir = "{root}/bin"
run_dir = "{root}/run/a"

[hosts.b]
transport = "local"
link_address = "127.0.0.3"
link_interface = "lo"
llama_bin_dir = "{root}/bin"
run_dir = "{root}/run/b"
"""


def test_applying_a_best_within_the_noise_warns(tmp_path: Path) -> None:
    """One request per split, 2% apart: applied as asked, with a warning that it is noise."""
    (tmp_path / "hosts.toml").write_text(HOSTS.format(root=tmp_path))
    profile = tmp_path / "playbooks" / "p.toml"
    profile.parent.mkdir()
    profile.write_text('model = "/m.gguf"\nrpc_hosts = ["a", "b"]\ntensor_split = "1/1"\n')
    env = {"CLUSTERCTL_CONFIG": str(tmp_path / "hosts.toml")}
    env["CLUSTERCTL_STATE_DIR"] = str(tmp_path / "state")
    with Store(tmp_path / "state") as store:
        run_id = store.start_run("sweep", "p", {"objective": {"metric": "tg_tps"}})
        for split, tg in (("1/1", 10.0), ("1.2/0.8", 10.2)):
            one = {"n": 1, "median": tg, "min": tg, "max": tg, "cv": None, "noisy": False}
            summary = {"tg_tps": one, "pp_tps": {**one, "median": 100.0}}
            metrics = {"summary": summary, "objective": tg}
            key = f"split={split}"
            store.record_result(run_id, key, "pass", spec={"split": split}, metrics=metrics)
        best = {"split": "1.2/0.8", "objective": 10.2}
        store.finish_run(run_id, "ok", {"best": best, "baseline": {"split": "1/1"}})
    out = tmp_path / "report"
    result = clusterctl("report", str(run_id), "--out", str(out), "--apply", env=env)
    assert result.returncode == 0, result.stderr
    assert (
        "warning: no split is better than the noise; applying the highest, 1.2/0.8, as asked"
        in result.stderr
    )
    assert 'tensor_split = "1.2/0.8"' in profile.read_text()
    report = (out / "report.md").read_text()
    assert "No split is better than the noise: `1.2/0.8` scored highest" in report
