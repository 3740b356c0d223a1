"""``dicelab symmetry``: count, canonicalize, align, barrier, spectrum (thin layer over ``dicelab.symmetry``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dicelab.symmetry.errors import SymmetryError

app = typer.Typer(
    help="Permutation redundancy: count copies, canonical forms, alignment, barriers, curvature and noise.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this new file.")]
SeedOpt = Annotated[int, typer.Option(help="Root seed of the symmetry.* random streams.")]
ArchOpt = Annotated[str | None, typer.Option(help="Architecture of a bare state dict, e.g. mlp:64-32-10.")]
DataOpt = Annotated[str | None, typer.Option(help="Dataset (default: the run config in the checkpoint).")]


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    from dicelab.symmetry.io import refuse_existing
    from dicelab.train.record import write_json_atomic

    refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, payload)
    typer.echo(f"json: {path}")


def _seeds(seed: int):
    if seed < 0:
        raise SymmetryError(f"--seed must be >= 0, got {seed}")
    from dicelab.seeding import SeedBank

    return SeedBank(seed)


def _loaded(path: Path, arch: str | None):
    from dicelab.symmetry.io import load_model

    return load_model(path, arch=arch)


def _spec(loaded: Any):
    from dicelab.symmetry import PermSpec

    return PermSpec.from_module(loaded.model, loaded.example_input())


@app.command(epilog=(
    "Examples:\n\n"
    "  dicelab symmetry count mlp:784-512-512-512-10 --exact\n\n"
    "  dicelab symmetry count mlp:64-32-32-10:tanh\n\n"
    "  dicelab symmetry count resnet20:32\n\n"
    "  dicelab symmetry count transformer:d_model=768,layers=12,heads=12,d_ff=3072\n\n"
    "  dicelab symmetry count runs/digits-s0/checkpoint.pt --atol 1e-6 --json count.json"))
def count(
    model: Annotated[str, typer.Argument(help="Checkpoint, run folder or architecture string.")],
    exact: Annotated[bool, typer.Option("--exact", help="Also the exact integer count.")] = False,
    no_stabilizer: Annotated[bool, typer.Option("--no-stabilizer", help="Skip the duplicate-unit correction.")] = False,
    atol: Annotated[float, typer.Option(help="Units within this max |difference| count as duplicates.")] = 0.0,
    arch: ArchOpt = None,
    data: Annotated[str | None, typer.Option(help="Also list units never active on this dataset.")] = None,
    as_json: JsonOpt = None,
) -> None:
    """Count the permutation-equivalent copies of a model: a table per group and the total (log10)."""
    from rich.table import Table

    from dicelab.symmetry import PermSpec, count_equivalent
    from dicelab.symmetry.io import LoadedModel, data_for, resolve_model

    obj = resolve_model(model, arch=arch)
    if isinstance(obj, LoadedModel):
        bundle = data_for(data, obj) if data else None
        res = count_equivalent(obj.model, exact=exact, stabilizer=not no_stabilizer, atol=atol,
                               data=bundle.train.x if bundle is not None else None, example_input=obj.example_input())
    elif isinstance(obj, PermSpec):
        res = count_equivalent(obj, exact=exact)
    else:
        res = count_equivalent(obj, exact=exact, stabilizer=not no_stabilizer, atol=atol)
    t = Table(title=f"permutation copies of {model}")
    for col in ("group", "kind", "n", "classes", "log10 perm", "log10 signs", "stabilizer", "continuous"):
        t.add_column(col)
    for r in res.per_group:
        classes = "1" if r["classes"] is None else f"{len(r['classes'])} ({min(r['classes'])}..{max(r['classes'])})"
        t.add_row(r["group"], r["kind"], str(r["n"]), classes, f"{r['log10_perm']:.4f}", f"{r['log10_signs']:.4f}",
                  f"{r['stabilizer_log10']:.4f}", str(r["continuous"]))
    con = _console()
    con.print(t)
    typer.echo(f"log10 copies: {res.log10:.4f}")
    if res.exact is not None:
        digits = str(res.exact)
        typer.echo(f"exact: {digits if len(digits) <= 60 else digits[:20] + '…' + digits[-20:]} ({len(digits)} digits)")
    if res.continuous_dims:
        typer.echo(f"continuous symmetry dimensions (not counted): {res.continuous_dims}")
    if res.redundant_pairs:
        typer.echo(f"redundant pairs (same incoming side, different outgoing): {len(res.redundant_pairs)}")
    for note in res.notes:
        typer.echo(f"note: {note}")
    _write_json(as_json, res.to_dict())


@app.command(epilog=(
    "Examples:\n\n"
    "  dicelab symmetry canonicalize runs/a/checkpoint.pt runs/b/checkpoint.pt --out canon/\n\n"
    "  dicelab symmetry canonicalize a.pt b.pt c.pt --out canon/ --dedup --tol 0.1\n\n"
    "  dicelab symmetry canonicalize teacher.pt --out canon/ --sign-ref out_sum --key out"))
def canonicalize(
    models: Annotated[list[Path], typer.Argument(help="Checkpoints or run folders.")],
    out: Annotated[Path, typer.Option(help="Folder for the canonical checkpoints (new files only).")],
    key: Annotated[str, typer.Option(help="Sort key: influence, in_l1 or out.")] = "influence",
    sign_ref: Annotated[str, typer.Option(help="Sign reference: in_max or out_sum.")] = "in_max",
    dedup: Annotated[bool, typer.Option("--dedup", help="Also cluster the models into distinct solutions.")] = False,
    tol: Annotated[float, typer.Option(help="Dedup: L2 distance under which canonical forms are one solution.")] = 0.0,
    arch: ArchOpt = None,
    as_json: JsonOpt = None,
) -> None:
    """Write the canonical copy of each model (units re-ordered and sign-fixed); optionally dedup them."""
    from dicelab.symmetry import canonicalize as canon
    from dicelab.symmetry import dedup as dedup_models
    from dicelab.symmetry.io import refuse_existing, save_model

    loaded = [_loaded(p, arch) for p in models]
    names = []
    for p in models:
        stem = p.name if p.is_dir() else p.stem
        if stem == "checkpoint":
            stem = p.parent.name if not p.is_dir() else p.name
        names.append(stem)
    targets = [out / (f"{n}.canonical.pt" if names.count(n) == 1 else f"{n}-{i}.canonical.pt")
               for i, n in enumerate(names)]
    for t in targets:
        refuse_existing(t)
    result: dict[str, Any] = {"files": []}
    for lm, target in zip(loaded, targets, strict=True):
        spec = _spec(lm)
        model, g = canon(lm.model, spec, key=key, sign_ref=sign_ref)
        save_model(target, lm, model, {"canonical_of": lm.source, "key": key, "sign_ref": sign_ref})
        typer.echo(f"canonical: {target}")
        result["files"].append(str(target))
    if dedup:
        clusters = dedup_models([lm.model for lm in loaded], tol=tol, spec=_spec(loaded[0]), key=key, sign_ref=sign_ref)
        result["clusters"] = clusters
        typer.echo(f"distinct solutions at tol {tol:g}: {len(clusters)} " +
                   " ".join("{" + ",".join(str(models[i]) for i in c) + "}" for c in clusters))
    _write_json(as_json, result)


@app.command(epilog=(
    "Examples:\n\n"
    "  dicelab symmetry align runs/a runs/b --out b_aligned.pt\n\n"
    "  dicelab symmetry align a.pt b.pt --out b_act.pt --method activation --data digits"))
def align(
    model_a: Annotated[Path, typer.Argument(help="Reference model A (checkpoint or run folder).")],
    model_b: Annotated[Path, typer.Argument(help="Model B, aligned to A.")],
    out: Annotated[Path, typer.Option(help="New checkpoint for the aligned B.")],
    method: Annotated[str, typer.Option(help="weight (no data) or activation (needs data).")] = "weight",
    data: DataOpt = None,
    max_iter: Annotated[int, typer.Option(help="Weight matching: most sweeps.")] = 100,
    seed: SeedOpt = 0,
    arch: ArchOpt = None,
    as_json: JsonOpt = None,
) -> None:
    """Align B to A by weight or activation matching and write the aligned B (same function as B)."""
    from dicelab.symmetry import align as align_models
    from dicelab.symmetry.io import data_for, refuse_existing, save_model

    refuse_existing(out)
    la, lb = _loaded(model_a, arch), _loaded(model_b, arch)
    seeds = _seeds(seed)
    spec = _spec(la)
    kw: dict[str, Any] = {"generator": seeds.generator("symmetry.match")}
    inputs = None
    if method == "weight":
        kw["max_iter"] = max_iter
    else:
        inputs = data_for(data, la).train.x
    aligned, info = align_models(la.model, lb.model, method=method, inputs=inputs, spec=spec, **kw)
    save_model(out, lb, aligned, {"aligned_to": str(model_a), "aligned_from": str(model_b), "method": method})
    typer.echo(f"{method} matching: {info.sweeps} sweeps ({info.improving_sweeps} improving), "
               f"L2 distance {info.l2_before:.4f} -> {info.l2_after:.4f}, {info.seconds:.3f} s")
    typer.echo(f"aligned: {out}")
    _write_json(as_json, info.to_dict())


@app.command(epilog=(
    "Examples:\n\n"
    "  dicelab symmetry barrier runs/a runs/b --align weight --plot curves.png\n\n"
    "  dicelab symmetry barrier a.pt b.pt --data digits --align both --repair --kind max_minus_mean\n\n"
    "  dicelab symmetry barrier a.pt b.pt --bn none --points 11 --json barrier.json"))
def barrier(
    model_a: Annotated[Path, typer.Argument(help="Model A (checkpoint or run folder).")],
    model_b: Annotated[Path, typer.Argument(help="Model B.")],
    data: DataOpt = None,
    align: Annotated[str, typer.Option(help="none, weight, activation or both.")] = "none",
    kind: Annotated[str, typer.Option(help="sup_linear, max_minus_mean or midpoint.")] = "sup_linear",
    points: Annotated[int, typer.Option(help="Evenly spaced t in [0, 1].")] = 25,
    bn: Annotated[str, typer.Option(help="BatchNorm statistics: auto, reset or none.")] = "auto",
    repair: Annotated[bool, typer.Option("--repair", help="Add REPAIR on the (aligned) path.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write the interpolation curves to this new PNG.")] = None,
    seed: SeedOpt = 0,
    arch: ArchOpt = None,
    as_json: JsonOpt = None,
) -> None:
    """Loss and error barriers along the linear path from A to B, before and after alignment."""
    from rich.table import Table

    from dicelab.symmetry import barrier as run_barrier
    from dicelab.symmetry.io import data_for, refuse_existing
    from dicelab.symmetry.plots import plot_interpolation

    if plot is not None:
        refuse_existing(plot)
    la, lb = _loaded(model_a, arch), _loaded(model_b, arch)
    bundle = data_for(data, la)
    seeds = _seeds(seed)
    res = run_barrier(la.model, lb.model, bundle, points=points, kind=kind, align=None if align == "none" else align,
                      bn=bn, repair=repair, spec=_spec(la) if (align != "none" or repair) else None,
                      generator=seeds.generator("symmetry.match"))
    t = Table(title=f"{kind} barriers ({len(res.t)} points, bn={res.bn})")
    metrics = list(next(iter(res.barriers.values())))
    t.add_column("path")
    for m in metrics:
        t.add_column(m)
    t.add_column("L2 to A")
    for name, vals in res.barriers.items():
        t.add_row(name, *(f"{vals[m]:.4f}" for m in metrics), f"{res.l2.get(name, float('nan')):.3f}")
    _console().print(t)
    if plot is not None:
        typer.echo(f"plot: {plot_interpolation(res, plot)}")
    _write_json(as_json, res.to_dict())


@app.command(epilog=(
    "Examples:\n\n"
    "  dicelab symmetry spectrum runs/a --k 8 --trace --noise --plot-dir figs/\n\n"
    "  dicelab symmetry spectrum a.pt --data digits --n-samples 1000 --minimize --weight-decay 1e-3 \\\n"
    "      --sgd-law --eta-rel 0.1 --batch 32 --chains 32 --steps 3000 --plot-dir figs/\n\n"
    "  dicelab symmetry spectrum a.pt --method power --k 4"))
def spectrum(
    model: Annotated[Path, typer.Argument(help="Checkpoint or run folder.")],
    data: DataOpt = None,
    k: Annotated[int, typer.Option(help="Number of top Hessian directions.")] = 8,
    method: Annotated[str, typer.Option(help="lanczos, dense or power.")] = "lanczos",
    trace: Annotated[bool, typer.Option("--trace", help="Hutchinson estimate of tr(H).")] = False,
    noise: Annotated[bool, typer.Option("--noise", help="Gradient noise s_i along the top directions.")] = False,
    sgd_law: Annotated[bool, typer.Option("--sgd-law", help="SGD chains: measured vs predicted variance.")] = False,
    eta_rel: Annotated[float, typer.Option(help="SGD step as a fraction of 1/lambda_max.")] = 0.1,
    batch: Annotated[int, typer.Option(help="Minibatch size B.")] = 32,
    chains: Annotated[int, typer.Option(help="SGD chains run at once.")] = 32,
    steps: Annotated[int, typer.Option(help="SGD steps per chain.")] = 3000,
    burn_in: Annotated[int, typer.Option(help="SGD steps discarded before measuring.")] = 500,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the sample reading (0: off).")] = 0,
    weight_decay: Annotated[float, typer.Option(help="L2 term of the objective.")] = 0.0,
    minimize: Annotated[bool, typer.Option("--minimize", help="First minimise the full-batch objective (LBFGS).")] = False,
    n_samples: Annotated[int | None, typer.Option(help="Use the first N training samples.")] = None,
    plot_dir: Annotated[Path | None, typer.Option(help="Folder for spectrum.png / variance_per_direction.png.")] = None,
    seed: SeedOpt = 0,
    arch: ArchOpt = None,
    as_json: JsonOpt = None,
) -> None:
    """Top Hessian eigenvalues (Lanczos), trace, gradient noise, and measured vs predicted variance."""
    from rich.table import Table

    from dicelab.data import Split
    from dicelab.symmetry import (
        bootstrap_minimizer_test,
        grad_noise_projection,
        hessian_topk,
        hutchinson_trace,
        minimize_full_batch,
        sgd_stationary_test,
    )
    from dicelab.symmetry.io import data_for
    from dicelab.symmetry.plots import plot_spectrum, plot_variance

    if plot_dir is not None:
        for name in ("spectrum.png", "variance_per_direction.png"):
            from dicelab.symmetry.io import refuse_existing

            refuse_existing(plot_dir / name)
    lm = _loaded(model, arch)
    train = data_for(data, lm).train
    if n_samples is not None:
        if n_samples < 2:
            raise SymmetryError(f"--n-samples must be >= 2, got {n_samples}")
        train = Split(train.x[:n_samples], train.y[:n_samples])
    seeds = _seeds(seed)
    net = lm.model
    out: dict[str, Any] = {"N": len(train)}
    if minimize:
        net = minimize_full_batch(net, None, train, weight_decay=weight_decay)
        out["minimize"] = net.minimize_info
        typer.echo(f"minimised: {net.minimize_info['iterations']} LBFGS iterations, "
                   f"|grad| = {net.minimize_info['grad_norm']:.2e}")
    spec = hessian_topk(net, None, train, k=k, method=method, weight_decay=weight_decay,
                        generator=seeds.generator("symmetry.lanczos"))
    out["spectrum"] = spec.to_dict()
    tr = None
    if trace:
        tr = hutchinson_trace(net, None, train, weight_decay=weight_decay, generator=seeds.generator("symmetry.hutchinson"))
        out["trace"] = tr.to_dict()
        typer.echo(f"tr(H) = {tr.mean:.5g} ± {tr.stderr:.2g} (Hutchinson, {tr.n_samples} samples)")
    s = None
    if noise:
        proj = grad_noise_projection(net, None, train, spec.eigvecs, batch_size=batch)
        s = proj.s.tolist()
        out["noise"] = proj.to_dict()
    t = Table(title=f"top-{k} Hessian eigenvalues ({method})")
    t.add_column("i")
    t.add_column("lambda_i")
    if s is not None:
        t.add_column("s_i")
    for i, lam in enumerate(spec.eigvals.tolist()):
        t.add_row(str(i), f"{lam:.6g}", *([f"{s[i]:.4g}"] if s is not None else []))
    _console().print(t)
    tables = []
    if sgd_law:
        tab = sgd_stationary_test(net, None, train, eta_rel=eta_rel, batch_size=batch, k=k, n_chains=chains, steps=steps,
                                  burn_in=burn_in, weight_decay=weight_decay, spectrum=spec,
                                  generator=seeds.generator("symmetry.sgd"))
        tables.append(tab)
        out["sgd_law"] = tab.to_dict()
        _print_table(tab, ("i", "lambda", "s_B", "sigma2_measured", "sigma2_B2", "ratio_B2"))
        typer.echo(f"excess loss: measured {tab.summary['excess_loss_measured']:.4g}, predicted "
                   f"{tab.summary['excess_loss_pred_trace']:.4g} (eta tr(S_B)/4)")
    if bootstrap:
        tab = bootstrap_minimizer_test(net, None, train, resamples=bootstrap, k=k, weight_decay=weight_decay,
                                       spectrum=spec, generator=seeds.generator("symmetry.bootstrap"))
        tables.append(tab)
        out["bootstrap"] = tab.to_dict()
        _print_table(tab, ("i", "lambda", "var_B1_measured", "var_B1_pred", "ratio_B1", "beta_B1"))
    if plot_dir is not None:
        typer.echo(f"plot: {plot_spectrum(spec.eigvals.tolist(), plot_dir / 'spectrum.png', s=s, trace=(tr.mean, tr.stderr) if tr else None)}")
        if tables:
            typer.echo(f"plot: {plot_variance(tables, plot_dir / 'variance_per_direction.png')}")
    _write_json(as_json, out)


def _print_table(tab: Any, cols: tuple[str, ...]) -> None:
    from rich.table import Table

    t = Table(title=f"reading {tab.reading}: measured vs predicted per direction")
    for c in cols:
        t.add_column(c)
    for r in tab.rows:
        t.add_row(*(str(r[c]) if isinstance(r[c], int) else f"{r[c]:.4g}" for c in cols))
    _console().print(t)
