"""derive's warnings and pictures: an unsearched supernet is said to give a random
architecture, a one-shot search's plot is its fitness against MAdds, every picture says
where it went, and a plain spec draws its diagram."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fnacli.search import arch as A
from fnacli.search.evolution import Encoding
from tests.test_derive import hand_logits, small_space, write_supernet

pytest.importorskip("matplotlib")


def test_an_unsearched_supernet_is_a_random_architecture(tmp_path: Path, run_cli) -> None:
    space = small_space()
    enc = Encoding(space)
    alpha, beta = A.init_logits(space) if hasattr(A, "init_logits") else hand_logits(
        space, {(s, i): c[0] for s, i, c in enc.ops}, {s: o[0] for s, o in enc.widths})
    sup = write_supernet(tmp_path / "s.safetensors", space, alpha, beta)
    code, out, err = run_cli(["derive", sup])
    assert code == 0 and json.loads(out)["schema"] == "fnacli/arch@1"
    assert "has not been searched" in err and "random" in err
    searched = write_supernet(tmp_path / "d.safetensors", space, alpha, beta,
                              search={"strategy": "differentiable", "task": "ssdlite"})
    code, out, err = run_cli(["derive", searched])
    assert code == 0 and "has not been searched" not in err


def test_a_one_shot_plot_is_fitness_against_madds(tmp_path: Path, run_cli) -> None:
    space = small_space()
    enc = Encoding(space)
    g = enc.cheapest(lambda a: float(sum(st.out * st.depth for st in a.stages)))
    alpha, beta = hand_logits(space, {(s, i): c[0] for s, i, c in enc.ops},
                              {s: o[0] for s, o in enc.widths})
    top = [{"rank": 1, "fitness": 0.31, "madds": 2.0e6, "arch": enc.arch(g).to_dict()}]
    ck = write_supernet(tmp_path / "e.safetensors", space, alpha, beta,
                        search={"strategy": "evolution", "task": "ssdlite", "metric": "AP",
                                "max_madds": 3e6, "top": top})
    history = Path(f"{ck}.history.jsonl")
    history.write_text("".join(json.dumps(r) + "\n" for r in [
        {"event": "candidate", "fitness": 0.2, "madds": 1.5e6, "generation": 0},
        {"event": "candidate", "fitness": 0.31, "madds": 2.0e6, "generation": 1},
        {"event": "generation", "generation": 1, "best": 0.31}]))
    plot = tmp_path / "e.svg"
    code, out, err = run_cli(["derive", ck, "--plot", plot])
    assert code == 0, err
    svg = plot.read_text()
    assert "MAdds (M)" in svg and ">AP<" in svg and "α/β" not in svg
    assert f"wrote the search plot to {plot}" in err
    history.unlink()
    code, out, err = run_cli(["derive", ck, "--plot", tmp_path / "f.svg"])
    assert code == 2 and "history" in err and not (tmp_path / "f.svg").exists()


def test_a_plain_spec_draws_its_diagram(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "fna.svg"
    code, stdout, err = run_cli(["derive", "fna-ssdlite", "--diagram", out, "-o",
                                 tmp_path / "a.json"])
    assert code == 0 and stdout == "", err
    assert out.is_file() and f"wrote the architecture diagram to {out}" in err
    assert ">k3_e1<" in out.read_text() and ">K3E1<" not in out.read_text()  # ops as specs
    code, stdout, err = run_cli(["derive", "fna-ssdlite", "--plot", tmp_path / "p.svg"])
    assert code == 2 and "--plot: fna-ssdlite is an architecture, not a search" in err


def test_a_relative_window_is_taken_of_the_seeds_madds(tmp_path: Path, run_cli) -> None:
    import torch

    from fnacli.checkpoint import read_checkpoint, save_checkpoint
    from fnacli.cost.lut import load_or_build_lut
    from fnacli.tasks import get_task
    from tests.test_derive import detector_supernet

    ck = read_checkpoint(detector_supernet(tmp_path))
    space = ck.space
    seed = space.max_arch()
    path = tmp_path / "seeded.safetensors"
    save_checkpoint(path, ck.tensors, "supernet", {**ck.meta, "seed_spec": seed.to_dict()})
    lut = load_or_build_lut(space, get_task("ssdlite"), (64, 64), 80)
    seed_madds = lut.arch_cost(seed, "backbone")
    code, out, err = run_cli(["derive", path, "--json", "--task", "ssdlite", "--size", "64",
                              "--max-madds", "90%"])
    assert code == 0, err
    window = json.loads(out)["window"]
    assert window["seed_madds"] == seed_madds
    assert window["max_madds"] == pytest.approx(0.9 * seed_madds)
    assert window["madds"] <= 0.9 * seed_madds
    del torch
