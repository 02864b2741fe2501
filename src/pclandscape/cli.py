"""The ``pclandscape`` command."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from ._version import __version__


class UsageError(Exception):
    """A user error reported as one line on stderr with exit code 2."""


def _cmd_demo(args) -> int:
    import jax
    import jax.numpy as jnp
    import optax

    import pclandscape as pcl

    key = jax.random.key(args.seed)
    kx, kw, kn = jax.random.split(key, 3)
    d = 4
    x = 1.0 + jnp.sqrt(0.1) * jax.random.normal(kx, (512, d))
    w_true = jax.random.normal(kw, (d, d)) / jnp.sqrt(d)
    y = x @ w_true.T
    net0 = pcl.MLP(kn, [d, 16, 16, d], "tanh", init_std=0.1)
    histories = {}
    for rule in ("bp", "pc"):
        solver = pcl.Euler(dt=0.1, steps=30) if rule == "pc" else None
        _, hist = pcl.train(
            net0,
            (x, y),
            rule=rule,
            optimizer=optax.sgd(0.05),
            solver=solver,
            steps=args.steps,
            batch_size=64,
            key=jax.random.key(args.seed + 1),
            progress=None,
        )
        histories[rule] = hist.loss
    print(f"toy regression y = W x, MLP {[d, 16, 16, d]} tanh, SGD lr 0.05, batch 64, PC: Euler dt=0.1 T=30")
    print(f"{'step':>6} {'BP loss':>12} {'PC loss':>12}")
    for s in list(range(0, args.steps, max(1, args.steps // 10))) + [args.steps - 1]:
        print(f"{s:>6} {histories['bp'][s]:>12.5f} {histories['pc'][s]:>12.5f}")
    return 0


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-4' -> (0, 1, 2, 3, 4); '0,2,5' -> (0, 2, 5); '3' -> (3,)."""
    from .experiments.base import seeds_from_text

    try:
        return seeds_from_text(text)
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected a range like 0-4 or a list like 0,1,2.") from None


def _check_name(name: str, what: str = "") -> None:
    from .experiments import runner

    if name not in runner.EXPERIMENTS:
        raise UsageError(f"{what}unknown experiment {name!r}; choose from: {', '.join(runner.EXPERIMENTS)} (see 'pclandscape list').")


def _config(name: str, args):
    """The config for ``name`` from the command line (quick, seeds, data dir, --set)."""
    import dataclasses

    from .experiments import runner

    _check_name(name)
    seeds = None
    if getattr(args, "seed", None) is not None:
        seeds = (args.seed,)
    elif getattr(args, "seeds", None):
        seeds = parse_seeds(args.seeds)
    overrides = []
    fields = {f.name for f in dataclasses.fields(runner.get(name).Config)}
    for item in getattr(args, "set", None) or []:
        key = item.split("=", 1)[0]
        if "." in key and key.split(".", 1)[0] not in fields:  # NAME.key=value: only for experiment NAME
            target, _, rest = item.partition(".")
            _check_name(target, f"--set {item}: ")
            if target == name:
                overrides.append(rest)
        elif getattr(args, "command", "") != "reproduce" or key.split(".", 1)[0] in fields:  # solver.tol: a field's option
            overrides.append(item)
    try:
        cfg = runner.make_config(name, quick=args.quick, seeds=seeds, overrides=overrides)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if getattr(args, "data_dir", None) and "data_dir" in fields:
        cfg = dataclasses.replace(cfg, data_dir=str(args.data_dir))
    if getattr(args, "no_fallback", False) and "data_fallback" in fields:
        cfg = dataclasses.replace(cfg, data_fallback=False)
    return cfg


def _print_claims(payload: dict) -> None:
    from .experiments.report import verdict

    for c in payload["claims"]:
        tag = "" if c.get("category", "paper") == "paper" else f" [{c['category']}]"
        print(f"  {verdict(c):7s} {c['id']}{tag}: {c['measured']} (expected {c['expected']})")


def _usage_error(name: str, message: str) -> UsageError:
    return UsageError(f"{name}: {message} (PCLANDSCAPE_DEBUG=1 shows the traceback)")


def _run_one(name: str, cfg, out: str, quick: bool) -> dict:
    from .errors import INPUT_ERRORS, first_line
    from .experiments import runner

    try:
        return runner.run_experiment(name, cfg, out, quick=quick)
    except INPUT_ERRORS as e:
        if os.environ.get("PCLANDSCAPE_DEBUG", "") == "1":
            raise
        raise _usage_error(name, first_line(e)) from None


def _report_done(name: str, payload: dict) -> None:
    print(f"{name}: done in {payload['wall_time_s']:.1f} s", flush=True)
    _print_claims(payload)


def _run_many(todo, args, bar) -> None:
    """``todo`` (``(name, config)`` pairs) one after another, or in ``--jobs`` worker processes."""
    mode = "quick" if args.quick else "full"
    if args.jobs == 1 or len(todo) < 2:
        for name, cfg in todo:
            print(f"{name}: running ({mode} config)", flush=True)
            _report_done(name, _run_one(name, cfg, args.out, args.quick))
            bar.update(1, last=name)
        return
    from .experiments import runner
    from .experiments.parallel import WorkerError, run_in_workers

    todo = sorted(todo, key=lambda job: -runner.COST_HINT_S.get(job[0], 0))  # longest first
    print(f"running {len(todo)} experiments in {min(args.jobs, len(todo))} worker processes", flush=True)
    try:
        for kind, name, text in run_in_workers(todo, args.out, quick=args.quick, workers=args.jobs):
            if kind == "start":
                print(f"{name}: running ({mode} config)", flush=True)
            elif kind == "error":
                raise _usage_error(name, text)
            else:
                _report_done(name, runner.load_results(args.out, name))
                bar.update(1, last=name)
    except (WorkerError, ValueError) as e:
        raise UsageError(str(e)) from None


def _cmd_list(args) -> int:
    from .experiments import runner

    for name in runner.EXPERIMENTS:
        print(f"{name:8s} {runner.get(name).DESCRIPTION}")
    return 0


@contextlib.contextmanager
def _claim_output(out: str, names):
    """Check ``out`` (and each ``out/NAME``) before any compute, and hold its lock meanwhile."""
    from .experiments import runner

    try:
        for name in names:
            runner.check_output_dir(out, name)
        lock = runner.OutputLock(out)
        lock.__enter__()
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _cmd_run(args) -> int:
    from .experiments.report import summary_rows, write_report

    cfg = _config(args.name, args)
    with _claim_output(args.out, [args.name]):
        payload = _run_one(args.name, cfg, args.out, args.quick)
        print(f"{args.name}: {payload['wall_time_s']:.1f} s, results in {args.out}/{args.name}/")
        _print_claims(payload)
        md, page = write_report(args.out)
    print(f"report: {page}")
    if not summary_rows({args.name: payload})[0]["all_paper_pass"]:  # as reproduce: a failed paper claim is exit 1
        print(f"pclandscape: paper claims failed in {args.name} (see the report)", file=sys.stderr)
        return 0 if args.exit_zero else 1
    return 0


def _cmd_reproduce(args) -> int:
    import dataclasses

    from ._progress import Progress
    from .experiments import runner
    from .experiments.report import summary_rows, write_report, collect

    names = list(runner.EXPERIMENTS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        for n in names:
            _check_name(n, "--only: ")
    configs = {n: _config(n, args) for n in names}
    for item in args.set or []:  # an unprefixed key must belong to at least one experiment
        key = item.split("=", 1)[0].split(".", 1)[0]
        if key not in runner.EXPERIMENTS and not any(key in {f.name for f in dataclasses.fields(c)} for c in configs.values()):
            raise UsageError(f"--set {key}: no selected experiment has this key (use NAME.key=value for one experiment).")
    with _claim_output(args.out, names):
        bar = Progress(len(names), desc="reproduce", enabled=None)
        todo = []
        for name in names:
            cfg = configs[name]
            if not args.force and runner.is_done(args.out, name, cfg):
                print(f"{name}: results for this config exist in {args.out}/{name}/ -- skipped (use --force to rerun)",
                      flush=True)
                bar.update(1, last=name)
            else:
                todo.append((name, cfg))
        _run_many(todo, args, bar)
        bar.close()
        results = collect(args.out)
        md, page = write_report(args.out, results)
    rows = [r for r in summary_rows(results) if r["name"] in names]
    print()
    print(f"{'experiment':10s} {'paper claims':>12s} {'findings':>9s} {'wall (s)':>9s}  data")
    for r in rows:
        print(f"{r['name']:10s} {r['paper']:>12s} {r['findings']:>9s} {r['wall']:>9.1f}  {r['data']}")
    print(f"\nreport: {page}\n        {md}")
    failed = [r["name"] for r in rows if not r["all_paper_pass"]]
    if failed:
        print(f"pclandscape: paper claims failed in: {', '.join(failed)} (see the report)", file=sys.stderr)
        return 0 if args.exit_zero else 1
    return 0


def _cmd_report(args) -> int:
    from .experiments.report import write_report

    try:
        md, page = write_report(args.dir)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    print(f"report: {page}\n        {md}")
    return 0


def _cmd_sweep(args) -> int:
    from pathlib import Path

    from .experiments import sweep

    try:
        spec = sweep.load_spec(args.spec)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.dry_run:
        cells = spec.cells()
        for i, c in enumerate(cells):
            print(f"{i + 1:4d}  {c.id:40s} {c.describe()}" + (f"  INVALID: {c.problem}" if c.problem else ""))
        bad = sum(1 for c in cells if c.problem)
        print(f"{len(cells)} cells" + (f" ({bad} invalid: they would be recorded as failed)" if bad else ""))
        return 0
    out = args.out or str(Path("sweeps") / Path(args.spec).stem)  # run_sweep's default for a spec file
    try:
        outcome = sweep.run_sweep(spec, out, address=args.address, max_retries=args.max_retries, num_cpus=args.num_cpus,
                                  force=args.force, log=lambda line: print(line, flush=True))
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"\n{len(outcome.cells)} cells: {outcome.count('done')} run, {outcome.count('skipped')} done earlier, "
          f"{outcome.count('failed')} failed; {outcome.wall_s:.1f} s")
    for c in outcome.failed:
        print(f"  FAILED {c.describe()}: {outcome.status[c.id].get('error')} (see {sweep.cell_dir(out, c)}/error.json)")
    md, page = outcome.report
    print(f"results: {Path(out) / 'sweep.json'}\nreport: {page}\n        {md}")
    return 1 if outcome.failed else 0


def _positive_jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pclandscape",
        description="Train predictive coding networks and study their energy landscape.",
    )
    p.add_argument("--version", action="version", version=f"pclandscape {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="train a PC and a BP network on a toy regression task")
    d.add_argument("--steps", type=int, default=200)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    sub.add_parser("list", help="list the experiments (one per figure group of the paper)").set_defaults(func=_cmd_list)

    def common(q):
        q.add_argument("--quick", action="store_true", help="the quick configs, sized for a 2-core laptop CPU")
        q.add_argument("--out", default="results", help="results folder (default: results)")
        q.add_argument("--data-dir", help="folder holding MNIST / Fashion-MNIST / CIFAR-10 files")
        q.add_argument("--no-fallback", action="store_true", help="fail when a data set is missing instead of using a fallback")
        q.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field (repeatable); with reproduce, NAME.KEY=VALUE targets one experiment")
        q.add_argument("--exit-zero", action="store_true",
                       help="exit 0 when a paper claim fails (the report and the FAIL lines still say so); "
                            "default: exit 1")

    r = sub.add_parser("run", help="run one experiment: writes OUT/NAME/{results.json, figures, arrays.npz}")
    r.add_argument("name", help="experiment name (see 'pclandscape list')")
    common(r)
    g = r.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, help="one seed")
    g.add_argument("--seeds", help="seeds, e.g. 0-4 or 0,1,2")
    r.set_defaults(func=_cmd_run)

    rep = sub.add_parser("reproduce", help="run every experiment (resuming), then write the report")
    common(rep)
    rep.add_argument("--force", action="store_true", help="rerun experiments whose results exist for the same config")
    rep.add_argument("--only", help="comma-separated subset of experiments")
    rep.add_argument("--jobs", type=_positive_jobs, default=1, metavar="N",
                     help="run up to N experiments at once, each in its own process (default 1; make demo uses 2: "
                          "the quick experiments are mostly single-core compilation)")
    rep.set_defaults(func=_cmd_reproduce)

    sw = sub.add_parser("sweep", help="run a grid of experiment runs (a TOML spec) on Ray, resumable; then aggregate",
                        description="Run every cell of a sweep spec (experiments x grid of --set overrides x seeds) as "
                                    "Ray tasks, skipping cells whose results exist, then write OUT/sweep.json and "
                                    "OUT/sweep_report.{md,html}. Exit 1 if a cell failed.")
    sw.add_argument("spec", help="the sweep spec (TOML; see docs/guide/sweeps.md)")
    sw.add_argument("--out", help="sweep folder (default: sweeps/<spec name>)")
    sw.add_argument("--address", help="join a running Ray cluster ('auto' or ray://host:port); default: an embedded "
                                      "local Ray on this machine's cores")
    sw.add_argument("--num-cpus", type=int, help="cores of the embedded local Ray (default: all)")
    sw.add_argument("--max-retries", type=int, help="retries of a cell whose worker died (default: the spec's, else 2)")
    sw.add_argument("--force", action="store_true", help="rerun cells whose results exist")
    sw.add_argument("--dry-run", action="store_true", help="print the cells and their count; run nothing")
    sw.set_defaults(func=_cmd_sweep)

    rp = sub.add_parser("report", help="write DIR/report.md and DIR/report.html from saved results")
    rp.add_argument("dir", help="results folder")
    rp.set_defaults(func=_cmd_report)
    return p


_CACHE_MAX_BYTES = 4 << 30


def _own_cache_dir() -> str:
    """``$XDG_CACHE_HOME/pclandscape/xla`` (``~/.cache/pclandscape/xla``): the command's own folder."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "pclandscape", "xla")


def _restore_access_times(path: str) -> None:
    """Give every entry of a capped cache folder the access-time file JAX's LRU bookkeeping
    reads (its modification time): an entry written without one (by a process that kept no
    bookkeeping) made every later write to the folder fail with a warning."""
    try:
        names = set(os.listdir(path))
    except OSError:
        return
    for name in names:
        key = name.removesuffix("-cache")
        if key != name and key + "-atime" not in names:
            try:
                stamp = os.stat(os.path.join(path, name)).st_mtime_ns
                with open(os.path.join(path, key + "-atime"), "wb") as f:
                    f.write(stamp.to_bytes(8, "little"))
            except OSError:
                pass


def compile_cache_dir() -> str | None:
    """The persistent XLA compilation cache of the ``pclandscape`` command, or None when off.

    ``$JAX_COMPILATION_CACHE_DIR`` when set (empty: off), else
    ``$XDG_CACHE_HOME/pclandscape/xla`` (``~/.cache/pclandscape/xla``), None where that
    folder cannot be created or written."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return os.environ["JAX_COMPILATION_CACHE_DIR"] or None
    path = _own_cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _use_compile_cache() -> None:
    """Turn the persistent compilation cache on for this process and the ones it starts
    (``reproduce --jobs`` workers and Ray sweep workers inherit the environment): a program
    that took over a second to compile (same code, shapes and JAX version) is loaded from disk
    by every later run instead of compiled again. The default folder is capped at 4 GiB
    (least recently used entries go first), in this process and, through
    ``JAX_COMPILATION_CACHE_MAX_SIZE``, in the ones it starts; a folder chosen by
    ``JAX_COMPILATION_CACHE_DIR`` is left as JAX's settings have it."""
    path = compile_cache_dir()
    if path is None:
        return
    import jax

    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    jax.config.update("jax_compilation_cache_dir", path)
    # the cap (JAX's LRU bookkeeping) on our own folder only: a folder the user chose may be
    # shared with processes that keep no such bookkeeping (JAX then warns on every eviction).
    # Every process writing to a capped folder must keep it, the workers too: they inherit the
    # folder as JAX_COMPILATION_CACHE_DIR, and an entry one of them wrote uncapped broke the
    # parent's later writes ("Error writing persistent compilation cache entry").
    if path == _own_cache_dir() and jax.config.jax_compilation_cache_max_size == -1:
        os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(_CACHE_MAX_BYTES)
        jax.config.update("jax_compilation_cache_max_size", _CACHE_MAX_BYTES)
        _restore_access_times(path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _use_compile_cache()
    try:
        return args.func(args)
    except UsageError as e:
        print(f"pclandscape: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pclandscape: interrupted (finished experiments are kept; rerun to resume)", file=sys.stderr)
        return 130


def entry() -> None:
    """The console script: ``main()``, then exit. After an interrupt (Ctrl-C, or SIGTERM,
    which is turned into one so that cleanups run) it flushes and leaves with status 130
    through ``os._exit``: the interpreter's teardown of JAX's runtime, half way through
    interrupted work, can crash (a segfault instead of 130). An interrupt that Python
    swallowed (delivered inside a garbage-collection callback) is raised again at the next
    progress tick, and still ends the process with 130."""
    import signal

    from ._interrupt import handler, requested

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        rc = main()
    except KeyboardInterrupt:  # raised again after main's own handler, e.g. during its cleanup
        rc = 130
    if requested() and rc != 130:
        print("pclandscape: interrupted (finished experiments are kept; rerun to resume)", file=sys.stderr)
        rc = 130
    if rc == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
