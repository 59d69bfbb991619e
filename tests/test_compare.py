"""`fnacli compare`: its statistics against closed forms, a tiny end-to-end run (CLI), the
content-keyed cache (every input invalidates it, a file name does not) and resuming an
interrupted fine-tune exactly."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from fnacli.stats import betainc, paired, sign_test_p, t_two_sided_p

SPACE = Path(__file__).resolve().parents[1] / "recipes" / "spaces" / "fna-mbv2-0.5-demo.json"
RECIPE = ["--task", "ssdlite", "--epochs", "1", "--batch-size", "4", "--size", "64",
          "--workers", "0", "--threads", "1", "--device", "cpu"]
RANDOM = ["--target-madds", "6e6", "--window", "0.5"]


# -- statistics ---------------------------------------------------------------------------------
def test_a_group_pools_its_arms_per_seed_and_over_arms() -> None:
    """--group: the members' mean per fine-tuning seed paired against the seed's arm, and the
    members' means against the seed's mean over the members (search seeds)."""
    from fnacli.pipeline.compare import ArmResult, pool

    def arm(name: str, values: dict[int, float]) -> ArmResult:
        return ArmResult(name, {}, 1.0, values)

    seed = arm("seed", {0: 0.30, 1: 0.32, 2: 0.31})
    a = arm("a-s0", {0: 0.33, 1: 0.34, 2: 0.32})
    b = arm("a-s1", {0: 0.31, 1: 0.36, 2: 0.35, 3: 0.9})  # seed 3: not every member has it
    rnd = arm("random-0", {0: 0.29, 1: 0.33, 2: 0.30})
    g = pool("a", [a, b], seed, rnd, 0.05)
    assert g.values == pytest.approx({0: 0.32, 1: 0.35, 2: 0.335}) and g.runs == 6
    assert g.mean == pytest.approx(0.335)
    assert g.std == pytest.approx(math.sqrt(sum((v - 0.335) ** 2 for v in
                                                [0.33, 0.34, 0.32, 0.31, 0.36, 0.35]) / 5))
    assert g.std_members == pytest.approx(math.sqrt(2) * 0.005)  # means 0.33 and 0.34
    # over fine-tuning seeds: differences 0.02, 0.03, 0.025 -> t = 0.025 / (0.005 / sqrt 3)
    assert g.vs_seed.n == 3 and g.vs_seed.mean == pytest.approx(0.025)
    assert g.vs_seed.t == pytest.approx(0.025 / (0.005 / math.sqrt(3)))
    assert g.vs_seed.p_t == pytest.approx(t_two_sided_p(g.vs_seed.t, 2))
    # over the members: 0.33 - 0.31 and 0.34 - 0.31 -> t = 0.025 / (0.00707 / sqrt 2) = 5
    assert g.vs_seed_members.n == 2 and g.vs_seed_members.t == pytest.approx(5.0)
    assert g.vs_best_random.mean == pytest.approx((0.03 + 0.02 + 0.035) / 3)

@pytest.mark.parametrize("t", [0.1, 1.0, 2.5, 12.706])
def test_t_distribution_matches_closed_forms(t: float) -> None:
    # df = 1 is Cauchy, df = 2 has a closed form; both independent of the incomplete beta
    assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-12)
    assert t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert t_two_sided_p(-t, 4) == t_two_sided_p(t, 4)


def test_t_distribution_table_values_and_beta_symmetry() -> None:
    # two-sided 5% critical values of printed t tables
    for df, crit in ((4, 2.776), (10, 2.228), (30, 2.042)):
        assert t_two_sided_p(crit, df) == pytest.approx(0.05, abs=2e-4)
    assert t_two_sided_p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)  # the normal limit
    for a, b, x in ((2.0, 3.0, 0.3), (0.5, 7.0, 0.9), (5.0, 0.5, 0.2)):
        assert betainc(a, b, x) + betainc(b, a, 1 - x) == pytest.approx(1.0, abs=1e-12)
    assert betainc(1.0, 1.0, 0.37) == pytest.approx(0.37)  # the uniform distribution


def test_sign_test_exact_binomial() -> None:
    assert sign_test_p(5, 0) == pytest.approx(2 / 32)
    assert sign_test_p(4, 1) == pytest.approx(2 * 6 / 32)
    assert sign_test_p(3, 3) == 1.0 and sign_test_p(0, 0) == 1.0


def test_paired_verdicts() -> None:
    p = paired([1, 2, 3, 4, 5.5], [0, 1, 1, 2, 2])
    diffs = [1, 1, 2, 2, 3.5]
    m = sum(diffs) / 5
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / 4)
    assert p.mean == pytest.approx(m) and p.t == pytest.approx(m / (sd / math.sqrt(5)))
    assert p.verdict == "better" and (p.wins, p.losses) == (5, 0)
    assert paired([0, 1, 2], [1, 2, 3.1]).verdict == "worse"
    assert paired([0.3, 0.1, 0.2], [0.1, 0.3, 0.2]).verdict == "no significant difference"
    assert paired([1.0], [0.0]).verdict == "too few seeds"


# -- the command ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fnacli.detection.synthetic import SynthConfig, generate
    from fnacli.spec import ArchSpec, Op, Stage, mobilenetv2

    root = tmp_path_factory.mktemp("compare")
    generate(root / "data", SynthConfig(train=8, val=4, size=96, classes=3, seed=0))
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v2(width_mult=0.35).state_dict(), root / "seed.pth")
    base = mobilenetv2(0.35)
    for op in ("k5_e3", "k3_e3"):
        stages = [base.stages[0]] + [Stage(s.out, s.stride, (Op.parse(op),) * s.depth)
                                     for s in base.stages[1:]]
        (root / f"{op}.json").write_text(
            ArchSpec(base.stem_out, base.stem_stride, tuple(stages), base.head_out).to_json())
    return root


def _compare(run_cli, world: Path, work: Path, *extra: object) -> dict:
    code, out, err = run_cli(["compare", world / "seed.pth", f"small={world / 'arch.json'}",
                              "-w", work, "--data", world / "data", *RECIPE, *extra, "--json"])
    assert code == 0, err
    return json.loads(out)


def test_compare_end_to_end_cached_and_invalidated_by_content(world: Path, tmp_path: Path,
                                                              run_cli) -> None:
    shutil.copy(world / "k5_e3.json", world / "arch.json")
    work = tmp_path / "work"
    res = _compare(run_cli, world, work, "--seeds", 2, "--random", 1, "--space", SPACE,
                   *RANDOM, "--plot", tmp_path / "cmp.png")
    assert [a["name"] for a in res["arms"]] == ["seed", "small", "random-0"]
    assert res["trained"] == 6 and res["reused"] == 0 and not res["missing"]
    arms = {a["name"]: a for a in res["arms"]}
    assert res["best_random"] == "random-0" and arms["random-0"]["vs_best_random"] is None
    small, seed = arms["small"]["values"], arms["seed"]["values"]
    assert set(small) == {"0", "1"}
    diffs = [small[s] - seed[s] for s in ("0", "1")]
    assert arms["small"]["vs_seed"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert arms["small"]["madds"] < arms["seed"]["madds"]  # k5_e3 everywhere: fewer MAdds
    assert (tmp_path / "cmp.png").stat().st_size > 0

    # the same inputs: nothing is trained again, the numbers are the same
    again = _compare(run_cli, world, work, "--seeds", 2, "--random", 1, "--space", SPACE,
                     *RANDOM)
    assert (again["trained"], again["reused"]) == (0, 6) and again["arms"] == res["arms"]

    # the same file name with another architecture in it: only that arm is made again (the
    # random arm's target is fixed here; by default it follows the given architectures)
    shutil.copy(world / "k3_e3.json", world / "arch.json")
    changed = _compare(run_cli, world, work, "--seeds", 2, "--random", 1, "--space", SPACE,
                       *RANDOM)
    assert (changed["trained"], changed["reused"]) == (2, 4)


def _keys(world: Path, **over: object) -> tuple[str, str]:
    """The run key and the remap key of the k5_e3 architecture, seed 0, with ``over``."""
    from fnacli.pipeline.common import Reporter
    from fnacli.pipeline.compare import CompareConfig, Runs
    from fnacli.spec import load_arch
    from fnacli.train import DistEnv

    arch = over.pop("arch", world / "k5_e3.json")
    cfg = CompareConfig(**{"seed_checkpoint": str(world / "seed.pth"), "archs": [],
                           "workdir": str(world / "w"), "task": "ssdlite",
                           "data": str(world / "data"), "epochs": 1, "lr": 0.01, **over})
    runs = Runs(cfg, DistEnv(), Reporter())
    runs.work = world / "keys"  # the remapped weights are made for the key
    spec = load_arch(str(arch)).to_dict()
    return runs.run_key(spec, 0), runs.remap_key(spec)


def test_cache_key_changes_with_every_input_and_not_with_names(world: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    import fnacli

    base_run, base_remap = _keys(world)
    # the same bytes under another name: the same key (the bench's old stamp used names)
    shutil.copy(world / "seed.pth", tmp_path / "renamed.pth")
    assert _keys(world, seed_checkpoint=str(tmp_path / "renamed.pth")) == (base_run, base_remap)

    state = torch.load(world / "seed.pth")
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 1e-3
    torch.save(state, tmp_path / "other.pth")
    assert _keys(world, seed_checkpoint=str(tmp_path / "other.pth"))[1] != base_remap
    # the seed's own architecture remaps to the same weights under any rule: one run for all
    seed_arch = dict(arch="mobilenetv2-0.35")
    assert _keys(world, **seed_arch)[0] == _keys(world, width="l1", **seed_arch)[0]

    changed = {
        "arch": _keys(world, arch=world / "k3_e3.json")[0],
        "seed": _keys(world, seed_checkpoint=str(tmp_path / "other.pth"))[0],
        "recipe": _keys(world, lr=0.02)[0],
        "remap rule": _keys(world, width="l1")[0],
        "eval split": _keys(world, split="train")[0],
    }
    data = tmp_path / "data"
    shutil.copytree(world / "data", data)
    assert _keys(world, data=str(data))[0] == base_run  # a copy is the same data
    ann = data / "annotations" / "instances_train.json"
    coco = json.loads(ann.read_text())
    coco["annotations"][0]["bbox"][0] += 1
    ann.write_text(json.dumps(coco))
    changed["training data"] = _keys(world, data=str(data))[0]
    monkeypatch.setattr(fnacli, "__version__", "999.0")
    changed["fnacli version"] = _keys(world)[0]
    assert all(k != base_run for k in changed.values()), changed
    assert len(set(changed.values())) == len(changed)


def test_compare_resumes_an_interrupted_fine_tune_exactly(world: Path, tmp_path: Path,
                                                         run_cli) -> None:
    shutil.copy(world / "k5_e3.json", world / "arch.json")
    fresh = _compare(run_cli, world, tmp_path / "fresh", "--seeds", 1)
    stopped = _compare(run_cli, world, tmp_path / "resumed", "--seeds", 1, "--stop-after", 1)
    assert stopped["trained"] == 0 and len(stopped["missing"]) == 2
    resumed = _compare(run_cli, world, tmp_path / "resumed", "--seeds", 1)
    assert resumed["trained"] == 2 and not resumed["missing"]
    report = _compare(run_cli, world, tmp_path / "resumed", "--seeds", 2, "--report-only")
    assert (report["trained"], report["reused"]) == (0, 2)  # seed 1 was never made
    assert sorted(map(tuple, report["missing"])) == [("seed", 1), ("small", 1)]
    # bit-exact continuation: the same AP
    assert [a["values"] for a in resumed["arms"]] == [a["values"] for a in fresh["arms"]]


@pytest.mark.parametrize("args, message", [
    (["--random", "2"], "--random: give --space"),
    (["--random", "2", "--space", str(SPACE)], "--random: give --target-madds"),
    (["nosuch.json"], "nosuch.json"),
    (["seed=mobilenetv2-0.35"], "compare's own"),
    (["small=mobilenetv2-0.35", "--group", "g=small,nosuch"], "no arm named 'nosuch'"),
    (["small=mobilenetv2-0.35", "--group", "g"], "expected NAME=ARM,ARM"),
])
def test_bad_input_is_one_line_and_exit_2(world: Path, tmp_path: Path, run_cli,
                                          args: list[str], message: str) -> None:
    code, out, err = run_cli(["compare", world / "seed.pth", *args, "-w", tmp_path,
                              "--data", world / "data", "--task", "ssdlite"])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_compare_under_torchrun(world: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    shutil.copy(world / "k5_e3.json", world / "arch.json")
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2", "-m", "fnacli", "compare", str(world / "seed.pth"),
                        f"small={world / 'arch.json'}", "-w", str(tmp_path / "w"), "--data",
                        str(world / "data"), *RECIPE, "--seeds", "1", "--json"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)  # rank 0 alone prints
    assert res["trained"] == 2 and not res["missing"]
    assert all(len(a["values"]) == 1 for a in res["arms"])
