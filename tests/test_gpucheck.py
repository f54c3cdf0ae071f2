"""gpu-check: the CPU dress rehearsal end to end, its file (which make plan ignores, and prices from once it is a
GPU's), a part that fails recorded while the others run, and the stops before any work."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sublora import bench, cli, config, gpucheck, rates, smol


def test_the_rehearsal_runs_every_part_on_the_cpu_into_a_file_plan_ignores(tmp_cache, tmp_path, capsys):
    out = tmp_path / "rehearsal.json"
    assert gpucheck.main(["--rehearse", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    found = json.loads(out.read_text())
    assert found["rehearsal"] is True and found["finished"] is True and found["device"] == "cpu (rehearsal)"
    assert set(found["versions"]) == {"python", "torch", "transformers", "peft", "sublora", "cuda"}
    assert found["shape"] == dataclasses.asdict(gpucheck.rehearsal().shape)
    assert set(found["rates"]) == set(rates.KINDS) and all(v > 0 for v in found["rates"].values())
    assert {k: p["status"] for k, p in found["parts"].items()} == dict.fromkeys(gpucheck.PARTS, "passed")
    assert all(p["seconds"] > 0 for p in found["parts"].values())
    assert found["parts"]["gpu-tests"]["counts"]["collected"] >= 6  # tests/test_gpu.py and the paper path on cuda
    work = tmp_cache.parent / "results" / "gpu-check-rehearsal"  # the notebooks' own cache, results and pages
    assert (work / "executed" / "00_model.ipynb").exists() and (work / "cache" / "organism").is_dir()
    assert not rates.gpu_check_file().exists()  # never the file make plan reads
    assert str(out) in printed and "make plan ignores" in printed
    assert rates.read_gpu_check(out) is None

    # the same file from a GPU: make plan reads it and prices a GPU profile from its rates, scaled to the model
    found["rehearsal"] = False
    gpu = tmp_path / "gpu-check.json"
    gpu.write_text(json.dumps(found))
    read = rates.read_gpu_check(gpu)
    assert read["shape"] == gpucheck.rehearsal().shape and read["rates"] == found["rates"]
    smol_profile = config.load_profile("smol")
    priced = rates.rates(smol_profile, gpu_check=gpu)
    assert {r.source for r in priced.values()} == {"gpu-check"}
    want, _ = rates.scaled(found["rates"]["sample_tps"], read["shape"], rates.shape(smol_profile))
    assert priced["sample_tps"].tps == pytest.approx(want)


def test_a_part_that_raises_is_recorded_as_failed_and_the_others_still_run(tmp_cache, tmp_path, monkeypatch):
    ran = []

    def broken(c, work):
        ran.append("measure")
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def skipped(c, work):
        ran.append("notebooks")
        raise gpucheck.Skipped("no weights: run make smol-weights")

    def fine(c, work):
        ran.append("gpu-tests")
        return {"detail": "3 passed", "counts": {"passed": 3}}
    monkeypatch.setattr(gpucheck, "PARTS", {"measure": broken, "notebooks": skipped, "gpu-tests": fine})
    out = tmp_path / "r.json"
    assert gpucheck.main(["--rehearse", "--out", str(out)]) == 1  # a failed part: exit 1, the file written
    assert ran == ["measure", "notebooks", "gpu-tests"]
    parts = json.loads(out.read_text())["parts"]
    assert parts["measure"]["status"] == "failed" and "OutOfMemoryError: CUDA out of memory" in parts["measure"]["detail"]
    assert "broken" in parts["measure"]["traceback"]
    assert parts["notebooks"] == {**parts["notebooks"], "status": "skipped", "detail": "no weights: run make smol-weights"}
    assert parts["gpu-tests"]["status"] == "passed" and parts["gpu-tests"]["counts"] == {"passed": 3}
    assert json.loads(out.read_text())["rates"] == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_cuda_it_stops_before_any_work_and_names_the_rehearsal(tmp_cache, capsys):
    assert gpucheck.main([]) == 2
    err = capsys.readouterr().err
    assert "torch sees none" in err and "--rehearse" in err
    assert not rates.gpu_check_file().exists() and not any((tmp_cache.parent / "results").iterdir())


def test_a_rehearsal_may_not_write_the_file_plan_reads(tmp_cache, capsys):
    assert gpucheck.main(["--rehearse", "--out", str(rates.gpu_check_file())]) == 2
    assert "make plan reads" in capsys.readouterr().err and not rates.gpu_check_file().exists()


def test_a_work_folder_holding_anothers_files_is_refused(tmp_cache, tmp_path, capsys):
    (tmp_path / "mine" / "cache").mkdir(parents=True)
    assert gpucheck.main(["--rehearse", "--work", str(tmp_path / "mine"), "--out", str(tmp_path / "r.json")]) == 2
    assert "new or empty folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "cache").is_dir() and not (tmp_path / "r.json").exists()


def test_the_dry_run_states_each_part_and_its_budget_within_15_minutes(tmp_cache, capsys):
    assert gpucheck.main(["--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "15 minutes on one H100" in text and str(rates.gpu_check_file()) in text
    for name, budget in gpucheck.GPU.budget.items():
        assert f"{name:<10} {budget:>4} s" in text
    assert sum(gpucheck.GPU.budget.values()) <= 13 * 60  # the rest of 15 minutes: Python's and CUDA's start
    assert not any((tmp_cache.parent / "results").iterdir())  # ran nothing
    assert cli.COMMANDS["gpu-check"] is gpucheck


def test_the_measured_model_is_the_anchors_shape():
    assert gpucheck.GPU.model is bench.QWEN7B and gpucheck.GPU.shape == rates.QWEN7B
    counted = gpucheck.shape_of(bench.QWEN7B)
    assert counted.n_params == pytest.approx(rates.QWEN7B.n_params, rel=0.01)
    assert dataclasses.replace(counted, n_params=rates.QWEN7B.n_params) == rates.QWEN7B


def test_the_smol_notebooks_run_a_shrunk_profile_of_their_own(tmp_path):
    p = config.load_profile(str(gpucheck.check_profile(gpucheck.GPU, tmp_path)))
    smol_profile = config.load_profile("smol")
    assert p.name == "smol-gpu-check" and p.model == smol_profile.model  # the same weights, on cuda, in bf16
    assert (p.data.prompts, p.teachers, p.transfer_replicates, p.eval.questions) == (1000, ("persona",), 1, 20)


def test_the_notebooks_are_skipped_with_the_fix_named_where_the_smol_weights_are_missing(tmp_path, monkeypatch):
    def missing(name):
        raise smol.GGUFError(f"the weights come from the package {name!r}, which is not installed: run {smol.INSTALL}")
    monkeypatch.setattr(smol, "locate", missing)
    record, found = gpucheck.one_part("notebooks", gpucheck.GPU, tmp_path)
    assert record["status"] == "skipped" and "make smol-weights" in record["detail"] and found == {}
    assert not (tmp_path / "smol-gpu-check.yaml").exists()  # nothing started


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the counts where the GPU tests skip")
def test_gpu_tests_that_all_skip_fail_the_part_with_their_counts(tmp_path):
    c = dataclasses.replace(gpucheck.rehearsal(), run_tests=True)
    record, _ = gpucheck.one_part("gpu-tests", c, tmp_path)
    assert record["status"] == "failed" and record["counts"]["passed"] == 0 and record["counts"]["skipped"] >= 6
    assert (tmp_path / "gpu-tests.xml").exists()
