"""`fnacli expand` and the differentiable `fnacli search` on tiny synthetic data (CPU):
α/β move, a larger λ derives a cheaper network, --resume continues exactly, the minimum-depth
guard, and `expand | search | derive | remap` end to end."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import torchvision_seed

from fnacli.nn.backbone import Backbone
from fnacli.search import arch as A
from fnacli.search.supernet_io import read_supernet
from fnacli.spec import ArchSpec, SpaceSpec

CANDS = ["k3_e3", "k3_e6", "k5_e6", "skip"]
# MobileNetV2's seven stages (so a torchvision seed remaps onto it), tiny widths.
SPACE = {"schema": "fnacli/space@1", "name": "tiny", "stem": {"out": 16, "stride": 2},
         "stages": [{"out": 8, "stride": 1, "ops": ["k3_e1"]},
                    {"out": [8, 12], "stride": 2, "layers": 2, "ops": CANDS},
                    {"out": [16, 24], "stride": 2, "layers": 3, "ops": CANDS},
                    {"out": [24, 32], "stride": 2, "layers": 3, "ops": CANDS},
                    {"out": 32, "stride": 1, "layers": 2, "ops": CANDS},
                    {"out": [48, 56], "stride": 2, "layers": 2, "ops": CANDS},
                    {"out": 112, "stride": 1, "layers": 1, "ops": ["k3_e6", "k5_e3"]}],
         "head": {"out": 256}}
# 6 weight steps (3 of warm-up) and 3 α/β steps; a large α/β lr so 3 steps move them
RUN = ["--task", "ssdlite", "--size", "64", "--epochs", "2", "--warmup-epochs", "1",
       "--batch-size", "4", "--arch-every", "1", "--arch-lr", "0.1", "--workers", "0",
       "--device", "cpu", "--seed", "0"]
LAMBDA = "3000"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    import os

    from fnacli.detection.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("search")
    generate(root / "data", SynthConfig(train=24, val=4, size=64, classes=2, seed=0))
    seed = root / "mbv2_035.pth"
    torch.save(torchvision_seed(0.35).state_dict(), seed)
    space = root / "space.json"
    space.write_text(json.dumps(SPACE))
    threads, cache = torch.get_num_threads(), os.environ.get("FNACLI_CACHE_DIR")
    torch.set_num_threads(1)  # tiny tensors: threads only contend with the other workers
    os.environ["FNACLI_CACHE_DIR"] = str(root / "cache")
    yield {"root": root, "data": root / "data", "seed": seed, "space": space}
    torch.set_num_threads(threads)
    if cache is None:
        os.environ.pop("FNACLI_CACHE_DIR", None)
    else:
        os.environ["FNACLI_CACHE_DIR"] = cache


@pytest.fixture(scope="module")
def supernet(env: dict) -> Path:
    from fnacli.checkpoint import save_checkpoint
    from fnacli.search.supernet_io import expand

    out = env["root"] / "super.safetensors"
    tensors, meta = expand(str(env["seed"]), SpaceSpec.from_dict(SPACE), "non-overlapping", 0)
    save_checkpoint(out, tensors, "supernet", meta)
    return out


def test_expand_cli(env: dict, run_cli, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "s.safetensors"
    code, stdout, err = run_cli(["expand", env["seed"], "--space", env["space"], "-o", out,
                                 "--json"])
    assert code == 0, err
    info = json.loads(stdout)
    space = SpaceSpec.from_dict(SPACE)
    assert info["architectures"] == space.num_architectures() and info["params"] > 0
    ck = read_supernet(out)
    assert ck.kind == "supernet" and ck.masks == "non-overlapping" and ck.space == space
    assert ck.mask_scope == "output" and ck.meta["mask_scope"] == "output"  # Jung's eq. 2
    assert ck.seed_spec is not None and ck.seed_spec.stages[1].out == 8
    logits = torch.cat([*ck.alpha.values(), *ck.beta.values()])
    assert 0 < logits.abs().max() < 0.01  # near zero, seeded noise
    code, _, err = run_cli(["expand", env["seed"], "--space", env["space"], "-o", out])
    assert code == 2 and "--force" in err
    code, stdout, err = run_cli(["expand", env["seed"], "--space", env["space"], "-o", out,
                                 "--force", "--init-std", "0", "--masks", "overlapping",
                                 "--mask-scope", "block"])
    # the result is a file: without --json stdout stays empty, the summary goes to stderr
    assert code == 0 and stdout == "" and "candidate architectures" in err
    ck = read_supernet(out)
    assert ck.masks == "overlapping" and ck.mask_scope == "block"
    assert all(t.abs().sum() == 0 for t in ck.alpha.values())
    assert ck.meta["widen"] == {"rule": "noise", "noise": 0.01, "seed": 0}  # the default
    code, _, err = run_cli(["expand", env["seed"], "--masks", "partial", "-o", tmp_path / "x"])
    assert code == 2 and "--masks" in err
    code, _, err = run_cli(["expand", env["seed"], "--mask-scope", "hidden", "-o", tmp_path / "x"])
    assert code == 2 and "--mask-scope" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["expand", env["seed"], "--widen", "copy", "-o", tmp_path / "x"])
    assert code == 2 and "--widen" in err
    code, _, err = run_cli(["expand", env["seed"], "--space", env["space"], "-o", out,
                            "--force", "--widen", "split"])
    assert code == 0, err
    assert read_supernet(out).meta["widen"]["rule"] == "split"
    # a binary checkpoint cannot go to stdout: refused, and no file named '-' appears
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(["expand", env["seed"], "--space", env["space"], "-o", "-"])
    assert code == 2 and "stdout" in err and stdout == "" and not Path("-").exists()


def search(run_cli, env: dict, supernet: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["search", supernet, "--data", env["data"], "-o", out, *RUN, *extra])


@pytest.fixture(scope="module")
def runs(env: dict, supernet: Path) -> dict:
    """Two searches from the same supernet and seed, λ = 0 and λ = 3000 (log form: at this
    toy scale the task gradient on α is large next to λ·∂log C/∂α)."""
    import io
    import sys

    from fnacli.cli.app import main

    results = {}
    for name, lam in (("flat", "0"), ("costly", LAMBDA)):
        out = env["root"] / f"{name}.safetensors"
        argv, stderr = sys.argv, sys.stderr
        sys.argv = ["fnacli", "search", str(supernet), "--data", str(env["data"]), "-o",
                    str(out), *RUN, "--lambda", lam, "--json",
                    "--tensorboard", str(env["root"] / f"tb-{name}")]
        sys.stderr = io.StringIO()
        stdout = sys.stdout
        sys.stdout = io.StringIO()
        try:
            try:
                main()
            except SystemExit as e:
                assert e.code in (0, None), sys.stderr.getvalue()
            results[name] = {"out": out, "summary": json.loads(sys.stdout.getvalue()),
                             "err": sys.stderr.getvalue()}
        finally:
            sys.argv, sys.stderr, sys.stdout = argv, stderr, stdout
    return results


def test_search_writes_tensorboard_scalars(runs: dict, env: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(env["root"] / "tb-costly"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "arch/cost_term", "arch/arch_loss",
            "arch/expected_madds", "epoch/expected_madds", "epoch/argmax_madds"} <= tags, tags
    space = SpaceSpec.from_dict(SPACE)
    alpha = {t for t in tags if t.startswith("alpha/")}
    beta = {t for t in tags if t.startswith("beta/")}
    # one scalar per candidate of every searchable layer, per width of every searched stage
    from fnacli.nn.supernet import op_choices, width_choices

    assert len(alpha) == sum(len(c) for *_, c in op_choices(space))
    assert len(beta) == sum(len(w) for _, w in width_choices(space))
    assert "beta/stage 1/12" in beta and "alpha/layer 1.1/skip" in alpha
    assert [e.step for e in acc.Scalars("epoch/expected_madds")] == [3, 6]
    p = [e.value for e in acc.Scalars("alpha/layer 1.1/skip")]
    assert len(p) == 2 and all(0 < v < 1 for v in p)


def test_search_moves_alpha_beta_and_logs_them(runs: dict, supernet: Path) -> None:
    start = read_supernet(supernet)
    ck = read_supernet(runs["flat"]["out"])
    assert ck.kind == "searched" and ck.meta["search"]["finished"]
    # the cost counted what is searched (the papers' scope), at the SSDLite input size
    assert ck.meta["search"]["cost_scope"] == "blocks"
    assert ck.meta["search"]["cost_size"] == [64, 64]
    moved = max((ck.alpha[k] - start.alpha[k]).abs().max().item() for k in start.alpha)
    moved_b = max((ck.beta[k] - start.beta[k]).abs().max().item() for k in start.beta)
    assert moved > 0.05 and moved_b > 0.05  # 3 Adam steps of lr 0.1 from ~1e-3 noise
    s = runs["flat"]["summary"]
    assert s["steps"] == 6 and s["arch_steps"] == 3 and s["finished"]
    lines = [json.loads(x) for x in Path(f"{runs['flat']['out']}.metrics.jsonl").read_text()
             .splitlines()]
    steps = [r for r in lines if r["event"] in ("train", "arch_step")]
    assert steps and all(r["expected_madds"] > 0 and r["argmax_madds"] > 0 for r in steps)
    epochs = [r for r in lines if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]  # counted from 1, as on screen
    # stderr was not a terminal: plain log lines (every 10 steps and each epoch's last)
    log = [x for x in runs["flat"]["err"].splitlines() if x.startswith("search ssdlite: epoch")]
    assert [x.split(" step ")[1].split()[0] for x in log if " step " in x and "done" not in x] \
        == ["3/6", "6/6"]
    assert all(re.search(r" E\[MAdds\] [\d.]+M argmax [\d.]+M lr [\d.e+-]+ .* eta \d", x)
               for x in log if "done" not in x)
    assert sum(" done at step " in x for x in log) == 2
    for probs in [*epochs[-1]["alpha"].values(), *epochs[-1]["beta"].values()]:
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert not Path(f"{runs['flat']['out']}.ckpt").exists()  # finished: no state left


def test_larger_lambda_derives_a_cheaper_network(runs: dict) -> None:
    flat, costly = runs["flat"]["summary"], runs["costly"]["summary"]
    assert costly["madds"] < flat["madds"]
    assert costly["expected_madds"] < flat["expected_madds"]


def test_resume_continues_exactly(env: dict, supernet: Path, runs: dict, run_cli) -> None:
    out = env["root"] / "resumed.safetensors"
    code, stdout, err = search(run_cli, env, supernet, out, "--lambda", LAMBDA, "--stop-after",
                               "4")
    assert code == 0 and stdout == "" and "--resume" in err, err
    assert Path(f"{out}.ckpt").exists()
    code, _, err = search(run_cli, env, supernet, out, "--lambda", LAMBDA)
    assert code == 2 and "--resume" in err  # the state of the stopped run is not clobbered
    code, _, err = search(run_cli, env, supernet, out, "--lambda", LAMBDA, "--resume")
    assert code == 0, err
    a, b = read_supernet(out), read_supernet(runs["costly"]["out"])
    assert a.weights.keys() == b.weights.keys()
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert all(torch.equal(a.alpha[k], b.alpha[k]) for k in a.alpha)
    assert all(torch.equal(a.beta[k], b.beta[k]) for k in a.beta)
    code, _, err = search(run_cli, env, supernet, out, "--lambda", "5", "--resume")
    assert code == 2 and "no search state" in err


def test_min_depth_guards_against_collapse(env: dict, supernet: Path, run_cli) -> None:
    out = env["root"] / "deep.safetensors"
    code, stdout, err = search(run_cli, env, supernet, out, "--lambda", LAMBDA, "--min-depth",
                               "2", "--json")
    assert code == 0, err
    spec = ArchSpec.from_dict(json.loads(stdout)["derived"])
    for st, sp in zip(spec.stages[1:], SPACE["stages"][1:], strict=True):
        assert st.depth >= min(2, sp.get("layers", 1))
    assert "collapse" not in err
    ck = read_supernet(out)
    assert ck.min_depth == 2
    derived, _, _ = A.derive(ck.space, ck.alpha, ck.beta, ck.min_depth)
    assert derived == spec


def test_expand_search_derive_remap(env: dict, runs: dict, run_cli, tmp_path: Path) -> None:
    code, spec_text, err = run_cli(["derive", runs["flat"]["out"]])
    assert code == 0, err
    target = tmp_path / "target.safetensors"
    code, _, err = run_cli(["remap", env["seed"], "--spec", "-", "-o", target], stdin=spec_text)
    assert code == 0, err
    from fnacli.checkpoint import read_checkpoint

    ck = read_checkpoint(target)
    spec = ArchSpec.from_dict(json.loads(spec_text))
    assert ck.spec == spec
    net = Backbone(spec)
    net.load_state_dict(ck.tensors)
    with torch.no_grad():
        feats = net.eval()(torch.randn(1, 3, 64, 64))
    assert feats["head"].shape[1] == spec.head_out


def test_search_refuses_options_of_the_other_strategy(env: dict, supernet: Path, run_cli,
                                                      tmp_path: Path) -> None:
    code, _, err = search(run_cli, env, supernet, tmp_path / "x.safetensors", "--population",
                          "8")
    assert code == 2 and "--population" in err and "differentiable" in err
    code, _, err = run_cli(["search", supernet, "--strategy", "random", "--min-depth", "2",
                            "-o", tmp_path / "y.safetensors"])
    assert code == 2 and "--min-depth" in err
    code, _, err = search(run_cli, env, supernet, tmp_path / "z.safetensors", "--cost-form",
                          "quadratic")
    assert code == 2 and "--cost-form" in err


def test_default_warm_up_is_fnas_share_of_the_epochs() -> None:
    from fnacli.search.differentiable import default_warmup_epochs

    assert default_warmup_epochs("ssdlite", 30) == 15
    assert default_warmup_epochs("retinanet", 14) == 8
    # a shorter search keeps α/β epochs (it used to warm up for all of them: nothing searched)
    assert default_warmup_epochs("ssdlite", 10) == 5 and default_warmup_epochs("retinanet", 7) == 4
    for task in ("ssdlite", "retinanet"):
        assert all(default_warmup_epochs(task, n) < n for n in range(1, 60))


def test_cheap_arch_steps(env: dict, supernet: Path, runs: dict, run_cli) -> None:
    """--checkpoint-activations reproduces the full search; --arch-step sampled searches too
    (α/β move, recorded in the metadata); a bad --arch-step is refused before any work."""
    out = env["root"] / "ckpt_acts.safetensors"
    code, _, err = search(run_cli, env, supernet, out, "--lambda", LAMBDA,
                          "--checkpoint-activations")
    assert code == 0, err
    a, b = read_supernet(out), read_supernet(runs["costly"]["out"])
    for k in a.alpha:
        assert torch.allclose(a.alpha[k], b.alpha[k], atol=1e-5), k
    for k in a.beta:
        assert torch.allclose(a.beta[k], b.beta[k], atol=1e-5), k
    out = env["root"] / "sampled.safetensors"
    code, _, err = search(run_cli, env, supernet, out, "--lambda", LAMBDA, "--arch-step",
                          "sampled")
    assert code == 0, err
    ck, start = read_supernet(out), read_supernet(supernet)
    assert ck.meta["search"]["arch_step"] == "sampled"
    assert max((ck.alpha[k] - start.alpha[k]).abs().max().item() for k in start.alpha) > 0.05
    code, _, err = search(run_cli, env, supernet, env["root"] / "bad.safetensors",
                          "--arch-step", "all")
    assert code == 2 and "--arch-step" in err
