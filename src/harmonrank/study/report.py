"""The benchmark report: Markdown tables, the verdict, and the plots (trade-off, attention, curves)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write, write_json, write_text
from ..summary import markdown_table

__all__ = ["benchmark_markdown", "plot_attention", "plot_curves", "plot_trade_off", "verdict",
           "write_benchmark_report"]


def _save_fig(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_trade_off(results: dict[str, Any], path: Path) -> None:
    """Buy AUC against each other trade-off objective's AUC, per ranker, plus HarmonRank's weight sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = [o for o in results["config"]["trade_off"] if o in results["objectives"]]
    if len(objs) < 2:
        return
    main, others = objs[0], objs[1:]
    # rankers are told apart by a legend (colour + marker), not by text next to points that collide
    fig, axes = plt.subplots(1, len(others), figsize=(4.6 * len(others) + 2.4, 4.6), squeeze=False,
                             layout="constrained")
    markers = "osD^v<>ph"
    for ax, other in zip(axes[0], others, strict=True):
        for k, row in enumerate(results["summary"]):
            star = row["ranker"] == "harmonrank"
            ax.scatter(row[f"auc_{other}"], row[f"auc_{main}"], s=140 if star else 40, zorder=3,
                       marker="*" if star else markers[k % len(markers)], label=row["ranker"],
                       edgecolors="black" if star else "none", linewidths=0.5)
        if results["sweep"]:
            xs = [r[f"auc_{other}"] for r in results["sweep"]]
            ys = [r[f"auc_{main}"] for r in results["sweep"]]
            ax.plot(xs, ys, "-", color="grey", lw=1, zorder=2, label="HarmonRank, weight sweep")
            for r, x, y in zip(results["sweep"], xs, ys, strict=True):
                ax.annotate(f"{r['weight']:g}", (x, y), fontsize=6, color="dimgrey", xytext=(4, -8),
                            textcoords="offset points")
        ax.margins(0.12)
        ax.set_xlabel(f"{other} AUC")
        ax.set_ylabel(f"{main} AUC")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    title = "Trade-off on the test slice (mean over seeds)"
    if results["sweep"]:
        title += (f"\ngrey: HarmonRank retrained with the {results['config']['sweep_objective']} objective weight "
                  "at each labelled value (first seed)")
    fig.suptitle(title, fontsize=9)
    _save_fig(fig, path)


def plot_attention(results: dict[str, Any], path: Path) -> None:
    """Label correlation matrix beside HarmonRank's step-1 attention, averaged per user segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    att = results["attention"]
    if not att:
        return
    names = results["objectives"]
    panels = [("label correlation (test)", np.array(results["label_correlation"]))]
    panels += [(f"attention: {k}", np.array(v)) for k, v in att.items()]
    # one colour scale for all attention panels (one colorbar at the right), its own for the correlations;
    # constrained layout keeps every colorbar clear of the next panel's labels
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels) + 1.2, 3.8), squeeze=False,
                             layout="constrained")
    att_max = max(float(np.max(m)) for _, m in panels[1:])
    for k, (ax, (title, mat)) in enumerate(zip(axes[0], panels, strict=True)):
        im = ax.imshow(mat, cmap="viridis", vmin=0 if k else -1, vmax=att_max if k else 1)
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        ax.set_yticks(range(len(names)), names if k == 0 or k == 1 else [""] * len(names), fontsize=7)
        ax.set_title(title, fontsize=8)
        if k == 0:
            fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
        elif k == len(panels) - 1:
            fig.colorbar(im, ax=list(axes[0][1:]), shrink=0.8, label="attention weight")
    fig.suptitle("Rows attend to columns: what the alignment step learned", fontsize=9)
    _save_fig(fig, path)


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """Validation AUC-sum per epoch of each neural ranker (first seed), the kept (best) epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not results["histories"]:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    for name, hist in results["histories"].items():
        pts = [(h["epoch"], h["valid_auc_sum"]) for h in hist if "valid_auc_sum" in h]
        if not pts:
            continue
        line, = ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=name)
        best = max(pts, key=lambda p: p[1])
        ax.plot(*best, marker="*", ms=11, color=line.get_color(), markeredgecolor="black", markeredgewidth=0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation AUC-sum")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    seed = results["config"]["seeds"][0]
    ax.set_title(f"Validation AUC-sum per epoch, seed {seed} (star: the epoch kept)", fontsize=9)
    _save_fig(fig, path)


def verdict(results: dict[str, Any]) -> list[str]:
    """Plain statements computed from the numbers: what wins, what does not."""
    out: list[str] = []
    summ = {r["ranker"]: r for r in results["summary"]}
    base = results["config"]["baseline"]
    if "harmonrank" not in summ:
        return out
    hr = summ["harmonrank"]["auc_sum"]
    above = [n for n, r in summ.items() if n != "harmonrank" and r["auc_sum"] >= hr]
    if above:
        out.append(f"- HarmonRank's mean test AUC-sum ({hr:.4f}) is **not** above every other ranker: "
                   + ", ".join(f"{n} ({summ[n]['auc_sum']:.4f})" for n in above) + " match or beat it.")
    else:
        out.append(f"- HarmonRank has the highest mean test AUC-sum of all {len(summ)} rankers ({hr:.4f}).")
    b = results["bootstrap_vs_baseline"].get("harmonrank")
    if b:
        ci_says = "excludes zero" if b["excludes_zero"] else "does **not** exclude zero"
        out.append(f"- vs {base}: AUC-sum difference {b['difference']:+.4f} (mean over {b.get('n_seeds', 1)} seeds), "
                   f"95% CI [{b['low']:+.4f}, {b['high']:+.4f}] ({ci_says}; {b['n_boot']} request resamples "
                   "pooled over the seeds).")
    ora = results["oracle"]
    if ora and "formula" in summ:
        f = summ["formula"]["auc_sum"]
        full = ora["auc_sum_oracle"]["auc_sum"]
        out.append(f"- Gap closed between the tuned formula ({f:.4f}) and the AUC-sum oracle ({full:.4f}): "
                   f"{(hr - f) / (full - f):.1%}.")
        if "observable_oracle" in ora:
            obs = ora["observable_oracle"]["auc_sum"]
            out.append(f"  The best ranking reachable from the ensemble's inputs (observable oracle) scores {obs:.4f}, "
                       f"i.e. {(obs - f) / (full - f):.1%} of that gap is reachable at all; HarmonRank closes "
                       f"{(hr - f) / (obs - f):.1%} of the reachable part.")
    rep = {r["ranker"]: r for r in results["replay"]}
    if "harmonrank" in rep and "gain_buy" in rep["harmonrank"]:
        r = rep["harmonrank"]
        parts = [f"{o} {r[f'gain_{o}']:+.2%}" for o in results["objectives"] if f"gain_{o}" in r]
        out.append(f"- Replay (top-{results['config']['replay_k']}, first seed) vs {base}: " + ", ".join(parts) + ".")
    for abl, what in (("harmonrank_bce", "the rank loss"), ("one_step_rank", "the two-step structure"),
                      ("harmonrank_no_user", "personalisation")):
        if abl in summ:
            d = hr - summ[abl]["auc_sum"]
            b = results.get("harmonrank_vs", {}).get(abl)
            ci = f" (95% CI [{b['low']:+.4f}, {b['high']:+.4f}])" if b else ""
            out.append(f"- Ablation without {what} ({abl}): AUC-sum {summ[abl]['auc_sum']:.4f}, "
                       f"so {what} buys {d:+.4f}{ci}; both at their best validation epoch.")
    return out


def benchmark_markdown(results: dict[str, Any]) -> str:
    objs = results["objectives"]
    cfg = results["config"]
    base = cfg["baseline"]
    data = results["data"]
    if "simulator" in data:
        sim = data["simulator"]
        src = (f"simulated: {sim['rows']:,} impressions, simulator seed {sim['seed']}, base rates "
               + ", ".join(f"{k} {v:g}" for k, v in sim["rates"].items()))
    else:
        src = f"file `{Path(data['path']).name}`"
    sr = results["split_rows"]
    lines = [
        "# Benchmark report",
        "",
        f"Data: {src}. Split by time: train {sr['train']:,} / valid {sr['valid']:,} / test {sr['test']:,} rows. "
        f"Seeds {', '.join(map(str, cfg['seeds']))}; neural rankers: AdamW, learning rate chosen per ranker on "
        f"valid from {{{', '.join(f'{x:g}' for x in cfg['lr_grid'])}}} (first seed; chosen: "
        + ", ".join(f"{k} {v:g}" for k, v in results.get("chosen_lr", {}).items()) + f"), batch "
        f"{cfg['batch_size']:,}, up to {cfg['max_epochs']} epochs, early stopping when an EMA (weight "
        f"{cfg.get('smoothing', 1.0):g}) of the validation AUC-sum has not risen by {cfg.get('min_delta', 1e-6):g} "
        f"for {cfg['patience']} epochs, the best epoch kept. Formula: {cfg['formula_trials']} Optuna TPE trials. "
        f"Objective weights: {', '.join(f'{o} {w:g}' for o, w in zip(objs, results['weights'], strict=True))}. "
        f"Run time {results['seconds'] / 60:.1f} min.",
        "",
        "Test positives: " + ", ".join(f"{o} {n:,}" for o, n in results["test_positives"].items()) + ".",
        "",
        "**Definitions.** *AUC-sum*: the sum over objectives of the objective weight times the AUC of the ONE "
        "ensemble score against that objective's labels (ties count 1/2). *GAUC*: the AUC inside each user, "
        "averaged with impression weights over users having both classes. *Δ [95% CI]*: the mean over seeds of "
        "a ranker's test AUC-sum minus the baseline's; the interval pools the paired bootstrap resamples of test "
        "requests run within each seed, so it is the interval of one seed's difference, holding both request "
        "sampling and seed-to-seed spread (wider than an interval for the mean over seeds). *Oracle* "
        "(simulated data): ranking by the true probabilities; the *observable oracle* estimates the best "
        "ranking reachable from the ensemble's own inputs. *Replay*: each request's top "
        f"{cfg['replay_k']} are exposed with 1/log2(1 + position) decay and the expected outcomes summed from "
        "the true probabilities (a simulated A/B test). *Gap closed*: (ranker - formula) / (oracle - formula) "
        "in AUC-sum. Neural rankers are evaluated at their best validation epoch (column *best epoch*).",
        "",
        "## Verdict",
        "",
        *verdict(results),
        "",
        "## Test AUC per objective (mean over seeds) and AUC-sum (mean ± std over seeds)",
        "",
    ]
    rows = []
    boot = results["bootstrap_vs_baseline"]
    for r in results["summary"]:
        row: dict[str, Any] = {"ranker": r["ranker"]}
        row.update({o: r[f"auc_{o}"] for o in objs})
        spread = "deterministic" if r.get("deterministic") else f"± {r['auc_sum_std']:.4f}"
        row["AUC-sum"] = f"{r['auc_sum']:.4f} {spread}"
        row["GAUC-sum"] = r["gauc_sum"]
        b = boot.get(r["ranker"])
        row[f"Δ vs {base} [95% CI]"] = (f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"
                                        if b else "—")
        row["best epoch"] = ("/".join(f"{e}" for e in r["best_epochs"]) + " of " +
                             "/".join(f"{e}" for e in r["epochs_run"])) if "best_epochs" in r else "—"
        row["fit s"] = f"{r['fit_seconds']:.0f}"
        rows.append(row)
    ora = results["oracle"]
    if ora:
        rows.append({"ranker": "oracle, per objective (true_m for each m)",
                     **{o: ora["per_objective"][f"auc_{o}"] for o in objs},
                     "AUC-sum": f"{ora['per_objective']['auc_sum']:.4f} (bound)", "GAUC-sum": "", "best epoch": "",
                     "fit s": ""})
        for key, label in (("auc_sum_oracle", "oracle, AUC-sum optimal single score"),
                           ("observable_oracle", "observable oracle (from the ensemble's inputs)")):
            if key in ora:
                o_row = ora[key]
                rows.append({"ranker": label, **{o: o_row[f"auc_{o}"] for o in objs},
                             "AUC-sum": f"{o_row['auc_sum']:.4f}", "GAUC-sum": o_row["gauc_sum"], "best epoch": "",
                             "fit s": ""})
    lines.append(markdown_table(rows))
    versus = results.get("harmonrank_vs", {})
    if versus:
        lines += ["", "## HarmonRank against each ranker (paired bootstrap over test requests, all seeds pooled)",
                  ""]
        vrows = []
        for name, b in versus.items():
            if b["low"] > 0:
                said = "HarmonRank better"
            elif b["high"] < 0:
                said = "HarmonRank worse"
            else:
                said = "no significant difference"
            vrows.append({"vs": name, "Δ AUC-sum": b["difference"], "95% CI low": b["low"],
                          "95% CI high": b["high"], "p": b.get("p_text", b["p_value"]), "verdict": said})
        lines.append(markdown_table(vrows))
    focus = results.get("focus", {})
    if focus.get("rankers"):
        obj = focus["objective"]
        lines += ["", f"## {obj} on its own against {focus['vs']} (paired bootstrap over test requests, all seeds "
                  "pooled)", "", f"Δ {obj} AUC and, on simulated data, the relative gain in replayed {obj} "
                  f"(top {cfg['replay_k']}), each with its 95% CI; {results['test_positives'].get(obj, 0):,} test "
                  f"{obj} positives.", ""]
        frows = []
        for name, f in focus["rankers"].items():
            row = {"ranker": name, f"Δ {obj} AUC": f"{f['auc']['difference']:+.4f} [{f['auc']['low']:+.4f}, "
                   f"{f['auc']['high']:+.4f}]"}
            if "replay_gain" in f:
                rg = f["replay_gain"]
                row[f"replay {obj} gain"] = f"{rg['difference']:+.2%} [{rg['low']:+.2%}, {rg['high']:+.2%}]"
            frows.append(row)
        lines.append(markdown_table(frows))
    selection = results.get("selection", [])
    if selection:
        lines += ["", "## What `auto` would keep (its rules on these runs: `gain` keeps HarmonRank if its valid "
                  "AUC-sum is higher than one_step_rank's, `ci` only if the paired request-bootstrap 95% interval of "
                  "that gain is above zero)", "",
                  "Each candidate here ran at the learning rate the benchmark tuned for it; `--ranker auto` trains "
                  "both at the one `--lr` it is given.", ""]
        lines.append(markdown_table([{
            "seed": r["seed"], "valid gain [95% CI]": f"{r['gain']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]",
            "kept (gain)": r["chosen"], "kept (ci)": r.get("chosen_ci", "—"),
            "test AUC-sum harmonrank": r["test_auc_sum"]["harmonrank"],
            "test AUC-sum one_step_rank": r["test_auc_sum"]["one_step_rank"]} for r in selection]))
    lines += ["", "## Test GAUC per objective (by user, mean over seeds)", ""]
    lines.append(markdown_table([{"ranker": r["ranker"], **{o: r[f"gauc_{o}"] for o in objs},
                                  "GAUC-sum": r["gauc_sum"]} for r in results["summary"]]))
    if results["replay"]:
        lines += ["", f"## Replay: expected outcomes with the top {cfg['replay_k']} exposed (first seed)", "",
                  "Expected counts over the test requests; gain relative to " + base + ".", ""]
        rep_rows = []
        for r in results["replay"]:
            row = {"ranker": r["ranker"]}
            for o in objs:
                row[o] = f"{r[o]:,.1f}" + (f" ({r[f'gain_{o}']:+.2%})" if f"gain_{o}" in r else "")
            rep_rows.append(row)
        lines.append(markdown_table(rep_rows))
    if results["sweep"]:
        lines += ["", f"## HarmonRank across {cfg['sweep_objective']} weights (first seed; others at 1)", ""]
        lines.append(markdown_table([{"weight": r["weight"], **{o: r[f"auc_{o}"] for o in objs},
                                      "AUC-sum (equal weights)": r["auc_sum"]} for r in results["sweep"]]))
    lines += ["", "## Plots", "", "![trade-off](trade_off.png)", "", "![attention](attention.png)", "",
              "![training curves](curves.png)", ""]
    return "\n".join(lines)


def write_benchmark_report(results: dict[str, Any], out: Path) -> None:
    """results.json, report.md and the PNG plots, each written atomically."""
    write_json(results, out / "results.json", indent=1)
    plot_trade_off(results, out / "trade_off.png")
    plot_attention(results, out / "attention.png")
    plot_curves(results, out / "curves.png")
    write_text(out / "report.md", benchmark_markdown(results))
