"""The ``pclandscape`` command: one-line errors (exit 2), run / reproduce / report, resuming after
an interruption, atomic outputs, and the report built from saved results."""

import json
import os
import subprocess
import sys

import pytest

from pclandscape import cli
from pclandscape.experiments import runner
from pclandscape.experiments import report as rep

# The two cheapest experiments, shrunk to one small case each (toy data, float64 maths).
TINY = [
    "--set", "fig3.depths=1", "--set", "fig3.chain_depths=1", "--set", "fig3.variants=y=-x",
    "--set", "fig9_10.depths=2", "--set", "fig9_10.datasets=toy", "--set", "fig9_10.variants=y=-x",
]


def _main(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "fig99"], "unknown experiment 'fig99'"),
        (["run", "fig3", "--set", "nope=1"], "--set nope: unknown key for fig3"),
        (["run", "fig3", "--set", "batch=abc"], "--set batch=abc: expected a value of type int"),
        (["run", "fig3", "--set", "batch"], "expected key=value"),
        (["run", "fig3", "--seeds", "4-1"], "--seeds '4-1'"),
        (["run", "fig4", "--no-fallback", "--set", "mnist_depths=1", "--set", "mnist1d_depths=1", "--set", "wide_depths=1",
          "--data-dir", "/nonexistent-pcl"], "mnist not found: place"),
        (["run", "fig9_10", "--set", "datasets=imagenet"], "unknown data set 'imagenet'"),
        (["reproduce", "--only", "fig3,figX"], "--only: unknown experiment 'figX'"),
        (["reproduce", "--only", "fig3", "--set", "bogus=2"], "--set bogus: no selected experiment has this key"),
        (["report", "/nonexistent-pcl-results"], "does not exist"),
        # issue 12, case 9: config values are checked before anything runs
        (["run", "fig3", "--set", "seeds=abc"], "seeds=abc: must hold non-negative integers"),
        (["run", "fig3", "--set", "seeds=1.5"], "seeds=1.5: must hold non-negative integers"),
        (["run", "fig3", "--set", "seeds="], "seeds=: must be a non-empty comma-separated list"),
        (["run", "fig5", "--set", "dt=0"], "dt=0.0: must be a positive number (fig5 config)"),
        (["run", "fig5", "--set", "T=0"], "T=0: must be a positive integer"),
        (["run", "fig5", "--set", "until_fraction=1.5"], "until_fraction=1.5: must be a fraction"),
        (["run", "fig3", "--set", "unrolled_dt=0"], "unrolled_dt=0.0: must be a positive number"),
        (["run", "fig3", "--set", "depths="], "depths=: must be a non-empty comma-separated list"),
        (["run", "fig5", "--set", "stop=foo"], "stop=foo: must be one of epochs, loss (fig5 config)"),
        (["run", "fig12", "--set", "init=bar"], "init=bar: must be one of origin, zero_rank (fig12 config)"),
        (["run", "fair", "--set", "lrs=0.1,-1"], "lrs=0.1,-1: must hold positive finite numbers"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(capsys, monkeypatch, tmp_path, argv, needle):
    monkeypatch.setenv("PCLANDSCAPE_DOWNLOAD", "0")
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached data sets
    monkeypatch.delenv("PCLANDSCAPE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    if argv[0] in ("run", "reproduce"):
        argv = [*argv, "--out", str(tmp_path / "out")]
    rc, out, err = _main(capsys, *argv)
    assert rc == 2
    assert needle in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pclandscape: error:") and "Traceback" not in err


def test_list_names_every_experiment(capsys):
    rc, out, _ = _main(capsys, "list")
    assert rc == 0
    assert [line.split()[0] for line in out.strip().splitlines()] == list(runner.EXPERIMENTS)


def test_seed_ranges():
    assert cli.parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert cli.parse_seeds("0,2,5") == (0, 2, 5)
    assert cli.parse_seeds("7") == (7,)


def test_reproduce_resumes_after_an_interruption_and_writes_the_report(capsys, monkeypatch, tmp_path):
    out = tmp_path / "res"
    fig9 = runner.get("fig9_10")
    real_run = fig9.run

    def interrupted(cfg, progress=None):
        raise KeyboardInterrupt

    # 1. interrupted during the second experiment: the first is complete, the second left nothing
    monkeypatch.setattr(fig9, "run", interrupted)
    rc, _, err = _main(capsys, "reproduce", "--quick", "--only", "fig3,fig9_10", "--out", str(out), *TINY)
    assert rc == 130 and "interrupted" in err
    assert (out / "fig3" / "results.json").is_file()
    assert not (out / "fig9_10" / "results.json").exists()
    assert not [p for p in out.rglob("*.tmp")]  # no half-written files
    first = (out / "fig3" / "results.json").stat().st_mtime_ns

    # 2. rerun: fig3 is skipped (same config hash), fig9_10 runs, the report is written
    monkeypatch.setattr(fig9, "run", real_run)
    rc, stdout, _ = _main(capsys, "reproduce", "--quick", "--only", "fig3,fig9_10", "--out", str(out), *TINY)
    assert rc == 0, stdout
    assert "fig3: results for this config exist" in stdout
    assert (out / "fig3" / "results.json").stat().st_mtime_ns == first
    res = json.loads((out / "fig9_10" / "results.json").read_text())
    assert res["quick"] and res["config"]["datasets"] == ["toy"] and res["config_hash"] == runner.config_hash(
        runner.make_config("fig9_10", quick=True, overrides=["depths=2", "datasets=toy", "variants=y=-x"])
    )
    assert res["claims"] and all(c["passed"] for c in res["claims"] if c["category"] == "paper")
    for name in ("fig3", "fig9_10"):
        r = json.loads((out / name / "results.json").read_text())
        for fig in r["figures"]:
            assert (out / name / fig).is_file() and (out / name / fig.replace(".png", ".pdf")).is_file()
        assert {"python", "jax", "pclandscape"} <= set(r["versions"]) and r["wall_time_s"] > 0

    # 3. a changed config is not skipped; --force reruns an unchanged one, here in two worker
    # processes, which reproduce the one-process results claim by claim
    assert not runner.is_done(out, "fig3", runner.make_config("fig3", quick=True, overrides=["depths=2"]))
    before = {n: json.loads((out / n / "results.json").read_text()) for n in ("fig3", "fig9_10")}
    rc, stdout, _ = _main(capsys, "reproduce", "--quick", "--only", "fig3,fig9_10", "--force", "--jobs", "2",
                          "--out", str(out), *TINY)
    assert rc == 0 and "in 2 worker processes" in stdout and "fig3: running" in stdout and "fig9_10: done" in stdout
    assert (out / "fig3" / "results.json").stat().st_mtime_ns != first
    for name, old in before.items():
        new = json.loads((out / name / "results.json").read_text())
        assert new["config_hash"] == old["config_hash"]
        key = lambda c: (c["id"], c["measured"], c["passed"])  # noqa: E731
        assert [key(c) for c in new["claims"]] == [key(c) for c in old["claims"]]

    # 4. the report, rebuilt from the saved results alone
    (out / "report.md").unlink()
    (out / "report.html").unlink()
    rc, stdout, _ = _main(capsys, "report", str(out))
    assert rc == 0
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    results = rep.collect(out)
    assert list(results) == ["fig3", "fig9_10"]
    for row in rep.summary_rows(results):
        n = sum(c["category"] == "paper" for c in results[row["name"]]["claims"])
        assert f"| {row['name']} | quick | {n}/{n} |" in md
    # three parts with their own counts, the quick run labelled, the deviations listed
    assert "QUICK run" in md.splitlines()[0]
    counts = rep.section_counts(results)
    n_theory = sum(c["category"] == "paper" for r in results.values() for c in r["claims"])
    assert (counts["theory"]["passed"], counts["theory"]["total"]) == (n_theory, n_theory)
    assert counts["paper_code"]["total"] == 0 and counts["fair"]["total"] == 0
    assert f"**{runner.SECTIONS['theory']}: paper claims passed {n_theory}/{n_theory}" in md
    for key in ("paper_code", "fair", "beyond"):  # parts without a run say so, with no "0/0" and no empty table
        assert f"**{runner.SECTIONS[key]}: not run in this report (its experiments: " in md
        assert f"## {runner.SECTIONS[key]}\n\nNot run in this report (its experiments: " in md
    assert "Shrunk: depths" in md or "Deviations from the paper's settings" in md
    n_figs = sum(len(r["figures"]) for r in results.values())
    assert page.count("src='data:image/png;base64,") == n_figs and "<img alt='fig3" in page
    assert "src='fig" not in page  # self-contained: no links to files
    first_claim = results["fig3"]["claims"][0]
    assert first_claim["statement"][:40].replace("&", "&amp;") in page.replace("&#x27;", "'")
    assert md.index("## Summary") < md.index("## fig3")


def test_failed_plot_leaves_no_results_json(monkeypatch, tmp_path):
    """results.json is written last: a run that fails after computing leaves no completed marker."""
    mod = runner.get("fig3")

    def broken_plot(res):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(mod, "plot", broken_plot)
    cfg = runner.make_config("fig3", quick=True, overrides=["depths=1", "chain_depths=1", "variants=y=-x"])
    with pytest.raises(RuntimeError):
        runner.run_experiment("fig3", cfg, tmp_path, progress=False)
    assert not (tmp_path / "fig3" / "results.json").exists()
    assert not runner.is_done(tmp_path, "fig3", cfg)


def test_set_converts_every_config_field_by_its_resolved_type():
    """--set of every field of every experiment config gives a value of the field's type,
    None defaults included (postponed annotations such as ``float | None``)."""
    import dataclasses
    import types
    import typing

    from pclandscape.experiments.solvers import SolverSpec

    samples = {int: "3", float: "0.5", bool: "true", str: "abc", tuple: "1,2", SolverSpec: "newton(tol=1e-6)"}
    for name in runner.EXPERIMENTS:
        cfg = runner.make_config(name)
        hints = typing.get_type_hints(type(cfg))
        for f in dataclasses.fields(cfg):
            typ = hints[f.name]
            args = [a for a in typing.get_args(typ) if a is not type(None)]
            base = args[0] if typing.get_origin(typ) in (typing.Union, types.UnionType) else typ
            base = typing.get_origin(base) or base
            new = runner.parse_overrides(cfg, [f"{f.name}={samples[base]}"])
            assert isinstance(getattr(new, f.name), base), (name, f.name, getattr(new, f.name))
            if base is not typ:  # optional: "none" gives None
                assert getattr(runner.parse_overrides(cfg, [f"{f.name}=none"]), f.name) is None


def test_solver_specs_are_set_whole_or_by_option_and_checked(capsys, tmp_path):
    """Experiment configs name their inference solver: --set solver=NAME(...) replaces it,
    --set solver.KEY=VALUE changes one option; results.json records the spec as text and a bad
    name or option is one line before anything runs."""
    import json

    import pclandscape as pcl
    from pclandscape.experiments.solvers import SolverSpec

    cfg = runner.make_config("fig1", overrides=["solver.tol=1e-6", "solver.t1=50"])
    heun = cfg.solver.build()
    assert isinstance(heun, pcl.Heun) and (heun.tol, heun.t1, heun.rtol, heun.error_norm) == (1e-6, 50, 1e-3, "max")
    cfg = runner.make_config("fig1", overrides=["solver=newton(tol=1e-7, linear_solve=block)"])
    assert cfg.solver.build() == pcl.Newton(tol=1e-7, linear_solve=pcl.BlockTridiagonal())
    assert str(SolverSpec.parse("euler(dt=0.05, steps=20)")) == "euler(dt=0.05, steps=20)"
    fair = runner.make_config("fair", overrides=["pc_solver.tol=1e-7"])
    assert fair.pc_solver.build(linear=True) == pcl.ExactLinear(tol=1e-7)
    assert fair.pc_solver.build(linear=False) == pcl.Newton(tol=1e-7)
    for bad, needle in (("solver=lbfgs", "unknown solver 'lbfgs'"), ("solver.speed=2", "speed"),
                        ("solver.tol=-1", "tol")):
        with pytest.raises(ValueError, match=needle):
            runner.make_config("fig1", overrides=[bad])
    out = tmp_path / "o"
    rc, _, err = _main(capsys, "run", "fig1", "--quick", "--out", str(out), "--set", "solver=lbfgs")
    assert rc == 2 and "unknown solver 'lbfgs'" in err and "Traceback" not in err
    changes = runner.quick_changes("fig1", runner.make_config("fig1", overrides=["solver.tol=1e-6"]))
    assert changes == [{"field": "solver", "default": "heun(t1=300, rtol=0.001, atol=0.001, tol=0.001, error_norm=max)",
                        "value": "heun(t1=300, rtol=0.001, atol=0.001, tol=1e-06, error_norm=max)", "kind": "deviation"}]
    assert json.loads(json.dumps(runner.config_dict(cfg)))["solver"] == "newton(tol=1e-07, linear_solve=block)"


def test_run_exits_1_when_a_paper_claim_fails(capsys, monkeypatch, tmp_path):
    from pclandscape.experiments import base

    mod = runner.get("fig3")

    def failing(cfg, progress=None):
        res = base.Results("fig3", cfg)
        res.add(base.claim("fig3.x", "a statement", "an expectation", "a measurement", False))
        return res

    monkeypatch.setattr(mod, "run", failing)
    monkeypatch.setattr(mod, "plot", lambda res: {})
    rc, _, err = _main(capsys, "run", "fig3", "--out", str(tmp_path), *TINY[:6])
    assert rc == 1 and "paper claims failed in fig3" in err
    # make demo's form: the failure is still reported, the exit status is 0
    rc, out, err = _main(capsys, "reproduce", "--only", "fig3", "--out", str(tmp_path / "r"), "--exit-zero", *TINY[:6])
    assert rc == 0 and "paper claims failed in: fig3" in err and "FAIL" in out


def test_every_default_and_quick_config_is_valid():
    from pclandscape.experiments.base import validate_config

    for name in runner.EXPERIMENTS:
        validate_config(runner.get(name).Config())
        validate_config(runner.get(name).quick_config())


@pytest.mark.parametrize("content, needle", [
    ("[]", "holds a JSON list, not an object"),
    ("null", "holds a JSON NoneType, not an object"),
    ("{}", "the key 'name' is missing"),
    ('{"name": "fig3", "claims": [], "data": [], "wall_time_s": 1}', "holds no claims"),
    ('{"name": "fig3", "claims": [{"statement": "s", "expected": "e", "measured": "m", "passed": true}], "data": [], '
     '"wall_time_s": 1}', "claim 0 has no string 'id'"),
    ('{"name": "fig3", "claims": [{"id": "a", "statement": "s", "expected": "e", "measured": "m", "passed": "yes"}], '
     '"data": [], "wall_time_s": 1}', "claim a: 'passed' must be true, false or null"),
    ("\u00ff not json", "is not valid JSON"),
])
def test_report_validates_the_results_schema(capsys, tmp_path, content, needle):
    """Issue case 13: [] / null / claims without id gave tracebacks; {} reported "0/0, all pass"."""
    (tmp_path / "fig3").mkdir()
    (tmp_path / "fig3" / "results.json").write_text(content)
    rc, out, err = _main(capsys, "report", str(tmp_path))
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "report.md").exists()


# --------------------------------------------------------------------------- output folders (issue 12, cases 8, 14-16)

FIG3 = ["--quick", "--set", "depths=1", "--set", "chain_depths=1", "--set", "variants=y=-x"]


@pytest.mark.parametrize("layout, needle", [
    ("out_is_file", "is a file, not a folder"),
    ("out_under_file", "cannot be created"),
    ("name_is_file", "fig3 is a file; remove it"),
    ("unwritable", "is not writable"),
])
def test_out_is_checked_before_any_compute(capsys, monkeypatch, tmp_path, layout, needle):
    """Case 8: before, the whole experiment ran and then failed at the first write."""
    import tempfile

    mod = runner.get("fig3")
    monkeypatch.setattr(mod, "run", lambda *a, **k: pytest.fail("computed before checking --out"))
    out = tmp_path / "out"
    if layout == "out_is_file":
        out.write_text("x")
    elif layout == "out_under_file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
    elif layout == "name_is_file":
        out.mkdir()
        (out / "fig3").write_text("x")
    else:  # this suite may run as root, for whom permissions do not bind: simulate the refusal
        (out / "fig3").mkdir(parents=True)
        real = tempfile.mkstemp

        def refuse(*a, dir=None, **k):
            if dir is not None and str(dir).endswith("fig3"):
                raise PermissionError(13, "Permission denied")
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    rc, _, err = _main(capsys, "run", "fig3", "--out", str(out), *FIG3)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_an_interrupted_rerun_leaves_the_old_generation_whole(capsys, monkeypatch, tmp_path):
    """Case 15: SIGINT while re-running into an existing folder left new figures beside the
    old results.json; now the new generation replaces the old one only when complete."""
    out = tmp_path / "out"
    assert _main(capsys, "run", "fig3", "--out", str(out), *FIG3)[0] == 0
    before = {p.name: p.read_bytes() for p in (out / "fig3").iterdir()}
    mod = runner.get("fig3")
    real_plot = mod.plot

    def plot_then_interrupt(res):
        figs = real_plot(res)
        first = dict(list(figs.items())[:1])
        return {**first, "boom": _Boom()}

    class _Boom:
        def savefig(self, *a, **k):
            raise KeyboardInterrupt

    monkeypatch.setattr(mod, "plot", plot_then_interrupt)
    rc, _, err = _main(capsys, "run", "fig3", "--out", str(out), *FIG3)
    assert rc == 130
    after = {p.name: p.read_bytes() for p in (out / "fig3").iterdir()}
    assert after == before  # byte for byte the old generation
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".fig3")) == []


def test_a_generation_displaced_by_a_killed_swap_is_restored(tmp_path):
    out = tmp_path / "out"
    (out / ".fig3.old-123-456").mkdir(parents=True)
    (out / ".fig3.old-123-456" / "results.json").write_text("{}")
    (out / ".fig3.tmp-abc").mkdir()
    runner.recover(out / "fig3")
    assert (out / "fig3" / "results.json").read_text() == "{}"
    assert [p.name for p in out.iterdir()] == ["fig3"]


def test_a_second_run_into_the_same_folder_is_refused(capsys, tmp_path):
    """Case 16: two runs with the same --out both computed."""
    out = tmp_path / "out"
    with runner.OutputLock(out):
        rc, _, err = _main(capsys, "run", "fig3", "--out", str(out), *FIG3)
    assert rc == 2 and f"{out} is in use by pclandscape pid" in err
    assert _main(capsys, "run", "fig3", "--out", str(out), *FIG3)[0] == 0  # released


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_swallowed_by_a_gc_callback_is_raised_again(monkeypatch):
    """CI saw SIGINT land in JAX's ``_xla_gc_callback``: Python printed "Exception ignored",
    dropped the KeyboardInterrupt, and the run finished with exit 0. The request is recorded
    by the handler, raised again at the next progress tick, and the entry exits with 130."""
    import gc

    from pclandscape import _interrupt
    from pclandscape._progress import Progress

    class _Swallower:  # a finaliser that takes the signal, as a gc callback does
        def __del__(self):
            _interrupt.handler(2, None)

    monkeypatch.setattr(_interrupt, "_requested", False)
    _Swallower()
    gc.collect()  # the KeyboardInterrupt raised in __del__ is dropped by Python
    assert _interrupt.requested()
    bar = Progress(10, enabled=False)
    with pytest.raises(KeyboardInterrupt):
        bar.update(1)
    assert bar.n == 0

    exits = []
    monkeypatch.setattr(cli, "main", lambda argv=None: 0)  # the run went on to the end
    monkeypatch.setattr(cli.os, "_exit", lambda rc: exits.append(rc))
    import signal

    monkeypatch.setattr(signal, "signal", lambda *a: None)  # leave pytest's own handlers alone
    with pytest.raises(SystemExit):  # os._exit is stubbed, so the entry falls through to sys.exit
        cli.entry()
    assert exits == [130]


def test_sigint_exits_130_every_time(tmp_path):
    """Case 14: 3 of 28 interrupts segfaulted in jaxlib's teardown (exit -11). The console
    entry leaves through os._exit(130) after flushing. Each try interrupts a real experiment
    once it has started computing (its "running" line is printed), whatever the machine's load."""
    import os
    import signal
    import subprocess
    import sys
    import time

    for attempt in range(3):
        p = subprocess.Popen([sys.executable, "-m", "pclandscape", "reproduce", "--quick", "--only", "fig1",
                              "--out", str(tmp_path / f"out{attempt}")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                             env={**os.environ, "PCLANDSCAPE_DOWNLOAD": "0"})
        line = p.stdout.readline()
        assert b"fig1: running" in line, line
        time.sleep(2 + attempt)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 130, (p.returncode, err.decode()[-500:])
        assert b"interrupted" in err


def test_an_experiment_version_changes_the_config_hash():
    """Results computed by an experiment's old code are not resumed from: fig12 (VERSION 2)
    hashes its config with its version; fig3 (VERSION 1, the default) hashes the config alone."""
    import dataclasses
    import hashlib

    def plain(cfg):
        return hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]

    f12, f3 = runner.make_config("fig12", quick=True), runner.make_config("fig3", quick=True)
    assert runner.get("fig12").VERSION == 2
    assert runner.config_hash(f12) == runner.config_hash(f12) != plain(f12)
    assert runner.config_hash(f3) == plain(f3)


def test_markdown_and_html_reports_are_one_model(tmp_path):
    """Both files are renderings of one document: every claim's text, every table cell and
    every note appears in each (escaped for its format), including characters that each
    format must escape."""
    import html

    payload = {
        "name": "fig3", "description": "d <b>", "quick": True, "wall_time_s": 1.5, "device": "cpu", "seeds": [0],
        "config_hash": "abc", "config": {"x": 1}, "data": ["toy (generated)"], "notes": ["a note with `code`"],
        "config_changes": [{"field": "lr", "default": 0.1, "value": 1.0, "kind": "deviation"}],
        "tables": [{"title": "T", "columns": ["a|b", "c"], "rows": [["1 < 2", "x"]]}],
        "claims": [{"id": "fig3.k", "statement": "s | t", "expected": "e <= 1", "measured": "m & n", "passed": True,
                    "category": "paper"}],
    }
    (tmp_path / "fig3").mkdir()
    md_path, html_path = rep.write_report(tmp_path, {"fig3": payload})
    md, page = md_path.read_text(), html_path.read_text()
    for text in ("s | t", "e <= 1", "m & n", "a|b", "1 < 2", "d <b>", "toy (generated)", "lr = 1.0 (paper: 0.1)"):
        assert html.escape(text) in page, text
        assert text.replace("|", "\\|") in md, text
    assert "<code>code</code>" in page and "`code`" in md
    assert "**PASS**" in md and "class='PASS'>PASS<" in page


def test_a_worker_reports_bad_input_as_one_line_and_anything_else_with_its_traceback(monkeypatch, tmp_path):
    """The loop of a ``--jobs`` worker (run here in this process): an error an experiment raises
    on bad input becomes the one-line message the CLI prints (exit 2); any other exception
    comes back with its traceback."""
    import os
    import queue

    from pclandscape.experiments import parallel
    from pclandscape.errors import DataNotFoundError

    def fake(name, cfg, out, quick, progress):
        if name == "fig3":
            raise DataNotFoundError("mnist not found\nsecond line")
        if name == "fig4":
            raise ZeroDivisionError("inside")
        return {}

    monkeypatch.setattr(runner, "run_experiment", fake)
    tasks, events = queue.Queue(), queue.Queue()
    for item in (("fig3", None), ("fig4", None), ("fig12", None), None):
        tasks.put(item)
    parallel._serve(tasks, events, str(tmp_path), True)
    got = [events.get_nowait() for _ in range(events.qsize())]
    pid = str(os.getpid())
    assert got[:2] == [("start", "fig3", pid), ("error", "fig3", "mnist not found")]
    assert got[2] == ("start", "fig4", pid) and got[3][:2] == ("crash", "fig4")
    assert "ZeroDivisionError: inside" in got[3][2] and "Traceback" in got[3][2]
    assert got[4:] == [("start", "fig12", pid), ("done", "fig12", "")]


class _KillsItsWorker:
    """A config whose unpickling ends the worker process at once (exit code 9)."""

    def __reduce__(self):
        import os

        return os._exit, (9,)


def test_a_worker_that_dies_is_reported_instead_of_waited_for(tmp_path):
    from pclandscape.experiments import parallel

    with pytest.raises(parallel.WorkerError, match=r"died \(exit code 9\) while running no experiment"):
        list(parallel.run_in_workers([("fig3", _KillsItsWorker())], str(tmp_path), quick=True, workers=2))
    with pytest.raises(ValueError, match="cannot be sent to a worker"):
        list(parallel.run_in_workers([("fig3", lambda: None)], str(tmp_path), quick=True, workers=2))


class _RecordsItsCpus:
    """A config whose unpickling, in the worker, writes the CPUs the worker may run on into
    ``folder``; it is then fig3's config with ``seeds=()``, which the experiment refuses (an
    error event, before any compute)."""

    def __init__(self, folder):
        self.folder = str(folder)

    def __reduce__(self):
        record = (f"__import__('pathlib').Path({self.folder!r}, str(__import__('os').getpid()))"
                  ".write_text(','.join(map(str, sorted(__import__('os').sched_getaffinity(0)))))")
        config = "__import__('pclandscape.experiments.fig3', fromlist=['Config']).Config(seeds=())"
        return eval, (f"({record}, {config})[1]",)


def test_workers_are_bound_to_disjoint_shares_of_the_cpus(monkeypatch, tmp_path):
    """``reproduce --jobs N`` binds worker i to every N-th CPU from the i-th (one each, round
    robin, when there are fewer CPUs than workers), so that the workers' XLA thread pools do
    not compete for the same cores."""
    import os

    from pclandscape.experiments import parallel

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 5}, raising=False)
    assert parallel._cpu_shares(2) == [{0, 2, 5}, {1, 3}]
    assert parallel._cpu_shares(1) == [{0, 1, 2, 3, 5}]
    assert parallel._cpu_shares(7) == [{0}, {1}, {2}, {3}, {5}, {0}, {1}]
    monkeypatch.setenv("PCLANDSCAPE_BIND_WORKERS", "0")
    assert parallel._cpu_shares(2) is None
    monkeypatch.undo()
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("this platform cannot bind processes to CPUs")
    shares = parallel._cpu_shares(2)
    jobs = [("fig3", _RecordsItsCpus(tmp_path)) for _ in range(2)]
    events = list(parallel.run_in_workers(jobs, str(tmp_path / "out"), quick=True, workers=2))
    assert [kind for kind, _, _ in events].count("error") == 2
    recorded = [{int(c) for c in f.read_text().split(",")} for f in tmp_path.iterdir() if f.is_file()]
    assert recorded and all(cpus in shares for cpus in recorded), (recorded, shares)
    assert all(cpus != set(os.sched_getaffinity(0)) for cpus in recorded) or len(os.sched_getaffinity(0)) == 1


def test_reproduce_hands_out_the_longest_experiments_first(monkeypatch, tmp_path):
    """``reproduce --jobs N`` gives its workers the experiments in decreasing order of their
    cost hint (``mupc``, the longest quick run, first); one process keeps the registry order."""
    import types

    from pclandscape.experiments import parallel

    assert set(runner.COST_HINT_S) == set(runner.EXPERIMENTS)
    handed = []

    def fake_workers(jobs, out, *, quick, workers):
        handed.extend(name for name, _ in jobs)
        return iter(())

    monkeypatch.setattr(parallel, "run_in_workers", fake_workers)
    args = types.SimpleNamespace(jobs=2, quick=True, out=str(tmp_path))
    cli._run_many([(name, None) for name in runner.EXPERIMENTS], args, bar=None)
    assert handed[0] == "mupc" and sorted(handed) == sorted(runner.EXPERIMENTS)
    hints = [runner.COST_HINT_S[name] for name in handed]
    assert hints == sorted(hints, reverse=True)


def test_the_command_keeps_a_persistent_compilation_cache(monkeypatch, tmp_path):
    import jax

    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "chosen"))
    assert cli.compile_cache_dir() == str(tmp_path / "chosen")  # the user's folder
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")
    assert cli.compile_cache_dir() is None  # empty: off
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cli.compile_cache_dir() == str(tmp_path / "xdg" / "pclandscape" / "xla")
    assert (tmp_path / "xdg" / "pclandscape" / "xla").is_dir()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # cannot hold a folder: no cache, no error
    assert cli.compile_cache_dir() is None
    # the command turns it on for itself and, through the environment, for the processes it starts
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_MAX_SIZE", raising=False)
    path = str(tmp_path / "xdg" / "pclandscape" / "xla")
    # an entry an uncapped process wrote (no access-time file: JAX's LRU bookkeeping then fails on
    # every later write) gets one, its modification time
    (tmp_path / "xdg" / "pclandscape" / "xla" / "jit_f-123-cache").write_bytes(b"x")
    os.utime(os.path.join(path, "jit_f-123-cache"), ns=(5, 1234567))
    before = jax.config.jax_compilation_cache_dir, jax.config.jax_compilation_cache_max_size
    try:
        cli._use_compile_cache()
        assert os.environ["JAX_COMPILATION_CACHE_DIR"] == path == jax.config.jax_compilation_cache_dir
        assert jax.config.jax_compilation_cache_max_size == 4 << 30  # our own folder is capped
        stamp = (tmp_path / "xdg" / "pclandscape" / "xla" / "jit_f-123-atime").read_bytes()
        assert int.from_bytes(stamp, "little") == 1234567
        # ... and so is it in the processes the command starts (reproduce --jobs workers, Ray workers)
        child = subprocess.run([sys.executable, "-c", "import jax; print(jax.config.jax_compilation_cache_dir, "
                                "jax.config.jax_compilation_cache_max_size)"], capture_output=True, text=True, check=True)
        assert child.stdout.split() == [path, str(4 << 30)]
        jax.config.update("jax_compilation_cache_max_size", before[1])
        monkeypatch.delenv("JAX_COMPILATION_CACHE_MAX_SIZE")
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "chosen"))
        cli._use_compile_cache()  # a folder the user chose is left uncapped
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "chosen")
        assert jax.config.jax_compilation_cache_max_size == before[1]
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_compilation_cache_max_size", before[1])


def test_progress_in_a_log_is_one_line_per_tenth_when_asked(monkeypatch, capsys):
    from pclandscape._progress import Progress, progress_enabled

    for env, expected in (("1", True), ("0", False), ("", False)):  # stderr is captured: not a terminal
        monkeypatch.setenv("PCLANDSCAPE_PROGRESS", env)
        assert progress_enabled(None) is expected
    assert progress_enabled(True) and not progress_enabled(False)
    monkeypatch.setenv("PCLANDSCAPE_PROGRESS", "1")
    bar = Progress(40, desc="work")
    for _ in range(40):
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    # the first update (it started), then one line as each tenth is reached
    assert len(lines) == 11 and all(line.startswith("work [") for line in lines)
    assert [line.split()[2] for line in lines] == ["1/40"] + [f"{4 * k}/40" for k in range(1, 11)]
    # a slow unit of work still shows that it moves: a line after log_every seconds without one,
    # if the work advanced (a heartbeat of updates that add nothing prints nothing)
    slow = Progress(1000, desc="slow", log_every=0.0)
    for n in (1, 1, 0, 1):
        slow.update(n)
    assert [line.split()[2] for line in capsys.readouterr().err.splitlines()] == ["1/1000", "2/1000", "3/1000"]
