"""The sweep's report, from the study and the runs' results.json: ``<dir>/report/`` holds report.md
(the protocol, the trials, the winner, its test, the confirmation on fresh seeds), report.json
(everything, every run), history.png (dev per trial, the running best), one score_<key>.png per
searched key, and winner.yaml (the chosen configuration as a ready run config: ``--config``).

The protocol it states and follows: trials are ranked by dev only (the mean over seeds and folds);
the table shows no test score of any trial; the chosen configuration's test is reported once it is
chosen, and again from the confirmation runs on seeds the search never saw; LAST (the model after
the last step) and BEST-DEV (the model at the best dev step) stay apart everywhere."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from deepprompt.fileio import atomic_write
from deepprompt.sweep import runs as R

LABEL = {"last": "LAST", "best_dev": "BEST-DEV"}


def _trial_row(t) -> dict:
    runs = t.user_attrs.get("runs") or []
    complete = t.state.name == "COMPLETE"  # Optuna gives a pruned trial its last intermediate value: not a score
    return {"number": t.number, "state": t.state.name.lower(), "params": t.params, "value": t.value if complete else None,
            "config_id": t.user_attrs.get("config_id"), "runs": runs,
            "scores": R.aggregate([r["scores"] for r in runs]) if runs else None,
            "pruned_at": t.user_attrs.get("pruned_at"), "error": t.user_attrs.get("error"),
            "note": t.user_attrs.get("note"),
            "best_intermediate": max(t.intermediate_values.values()) if t.intermediate_values else None}


def gather(sweep) -> dict:
    """Everything the report says, as one JSON-able dict."""
    from deepprompt.sweep.study import config_id, run_name

    cfg = sweep.cfg
    rows = [_trial_row(t) for t in sweep.trials() if not t.user_attrs.get("handed_back")
            and t.state.name != "WAITING"]
    complete = sorted((r for r in rows if r["state"] == "complete"), key=lambda r: (-r["value"], r["number"]))
    confirmed = []
    for r in complete[:cfg.confirm_top] if cfg.confirm_seeds else []:
        per_run = []
        for fold, seed in cfg.plan(cfg.confirm_seeds):
            path = sweep.dir / "confirm" / config_id(r["params"]) / run_name(fold, seed) / "results.json"
            if path.is_file():
                res = R.read_results(path)
                per_run.append({"fold": fold, "seed": seed, "dir": str(path.parent), "scores": R.scores(res)})
        confirmed.append({"number": r["number"], "params": r["params"], "runs": per_run,
                          "expected_runs": len(cfg.plan(cfg.confirm_seeds)),
                          "scores": R.aggregate([x["scores"] for x in per_run]) if per_run else None})
    final, final_by = None, None
    # chosen among the confirmed (by their dev on the fresh seeds) only once ALL of them are: until
    # then one that is done, or partly done, would be compared with one that has not run yet
    have, planned = sum(len(c["runs"]) for c in confirmed), sum(c["expected_runs"] for c in confirmed)
    if confirmed and have == planned:
        chosen = max(confirmed, key=lambda c: (c["scores"][cfg.select]["dev"][0], -c["number"]))
        final, final_by = chosen["number"], "confirmation"
        # how far the choice rests on noise: the chosen minus each other confirmed trial, paired by
        # (fold, seed) on the fresh seeds (None with fewer than 2 pairs)
        for c in confirmed:
            if c is not chosen:
                c["chosen_minus_this_dev_paired"] = R.paired_difference(chosen["runs"], c["runs"], cfg.select, "dev")
    elif complete:
        final, final_by = complete[0]["number"], "search"
    return {"dir": str(sweep.dir), "definition": cfg.definition(), "trials_asked": cfg.trials,
            "select": cfg.select, "sampler": cfg.sampler, "pruner": _pruner(cfg.prune_percentile) if cfg.prune else None,
            "counts": {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")},
            "trials": rows, "ranking": [r["number"] for r in complete], "search_winner":
            complete[0]["number"] if complete else None, "confirmed": confirmed, "final": final, "final_by": final_by,
            "confirmation_runs": {"done": have, "planned": planned}, "provisional": bool(confirmed) and have < planned}


def _fmt(ms, n: int) -> str:
    return "—" if ms is None else R.fmt(tuple(ms), n)


def _pruner(percentile: float) -> str:
    return "median" if percentile == 50 else f"{percentile:g}th-percentile"


def markdown(data: dict, keys: list[str]) -> str:
    d, sel = data["definition"], data["select"]
    n_runs = len(d["seeds"]) * (d["folds"] or 1)
    folds = f"{d['folds']} folds (task.folds)" if d["folds"] else "the task's own splits"
    lines = [f"# Sweep `{data['dir']}`", "",
             f"Base config `{d['config'] or 'embedded default'}`" + (f" + `{' '.join(d['overrides'])}`" if d["overrides"] else "") +
             f"; searched: {', '.join(f'`{s}`' for s in d['space'])}; seeds {d['seeds']} × {folds} = {n_runs} run(s) per "
             f"trial; {data['sampler']} sampler, {data['pruner'] + ' pruner' if data['pruner'] else 'no pruning'}; "
             f"{data['counts']['complete']} complete, {data['counts']['pruned']} pruned, {data['counts']['fail']} failed "
             f"of {data['trials_asked']} trials asked.", "",
             "**Protocol.** Trials are ranked by dev only: the mean over seeds and folds of the "
             f"{LABEL[sel]} dev score (the trial's value). No trial's test score is looked at to choose; the chosen "
             "configuration's test is reported after the choice, and again from re-runs on seeds the search never "
             "saw (confirmation). LAST = the model after the last step; BEST-DEV = the model at the step with the "
             "best dev score (its test is the test at that step). The two are kept apart.", "",
             "## Trials (dev only)", "",
             "| trial | state | " + " | ".join(f"`{k}`" for k in keys) + f" | value ({LABEL[sel]} dev) | LAST dev | "
             "BEST-DEV dev | runs |", "|" + "---|" * (len(keys) + 6)]
    for r in data["trials"]:
        s = r["scores"] or {}
        n = len(r["runs"])
        value = f"{r['value']:.2f}" if r["value"] is not None else (
            f"pruned at step {r['pruned_at']['step']} of run {r['pruned_at']['run']} by the "
            f"{_pruner(r['pruned_at'].get('percentile', 50.0))} (best so far {r['best_intermediate']:.2f})"
            if r["state"] == "pruned" and r["best_intermediate"] is not None and r["pruned_at"] else r["state"])
        lines.append(f"| {r['number']} | {r['state']} | " + " | ".join(_val(r["params"].get(k)) for k in keys) +
                     f" | {value} | {_fmt(s.get('last', {}).get('dev'), n)} | {_fmt(s.get('best_dev', {}).get('dev'), n)}"
                     f" | {n} |")
    notes = [f"- Trial {r['number']}: {r['note']}" for r in data["trials"] if r.get("note")]
    lines += ["", "Notes (a trial queued by hand with `user_attrs={\"note\": ...}`):", "", *notes] if notes else []
    win = next((r for r in data["trials"] if r["number"] == data["search_winner"]), None)
    lines += ["", "## The search's choice and its test", ""]
    if win is None:
        lines.append("No trial completed yet.")
    else:
        n, s = len(win["runs"]), win["scores"]
        lines += [f"Trial {win['number']} (`{' '.join(f'{k}={_val(v)}' for k, v in win['params'].items())}`), "
                  f"chosen by {LABEL[sel]} dev {win['value']:.2f}; mean ± std over its {n} search run(s):", "",
                  "| | dev | test |", "|---|---|---|"]
        for w in R.WHICH:
            lines.append(f"| {LABEL[w]} | {_fmt(s[w].get('dev'), n)} | {_fmt(s[w].get('test'), n)} |")
    lines += ["", "## Confirmation on fresh seeds", ""]
    if not data["confirmed"]:
        lines.append("Not run (no `--confirm-seeds`): the numbers above come from the seeds the search chose on.")
    for c in data["confirmed"]:
        n, s = len(c["runs"]), c["scores"]
        lines += [f"Trial {c['number']} on seeds {d['confirm_seeds']}" + (f" with `{' '.join(d['confirm_overrides'])}`"
                  if d["confirm_overrides"] else "") + f": {n} of {c['expected_runs']} run(s) done.", ""]
        if s:
            lines += ["| | dev | test |", "|---|---|---|"] + [
                f"| {LABEL[w]} | {_fmt(s[w].get('dev'), n)} | {_fmt(s[w].get('test'), n)} |" for w in R.WHICH] + [""]
    if data["final"] is not None:
        runs = data["confirmation_runs"]
        how = ("by dev on the fresh seeds among the confirmed" if data["final_by"] == "confirmation" else "by search dev"
               + (f"; provisional: the confirmation has {runs['done']} of its {runs['planned']} runs"
                  if data["provisional"] else ""))
        lines += ["", f"**Chosen: trial {data['final']}** ({how}); its run config: `winner.yaml`."]
        for c in data["confirmed"]:
            p = c.get("chosen_minus_this_dev_paired")
            if p:
                lo, hi = p["ci95"]
                lines.append(f"- Trial {data['final']} − trial {c['number']}, {LABEL[sel]} dev on the fresh seeds, paired "
                             f"over {p['n']} (fold, seed) runs: {p['mean']:+.2f} (95 % interval {lo:+.2f} … {hi:+.2f})" +
                             ("; the interval holds 0: the two are not told apart at this size" if lo <= 0 <= hi else ""))
    lines += ["", "Plots: `history.png` (value per trial and the running best), " +
              ", ".join(f"`score_{_safe(k)}.png`" for k in keys) + " (value against each searched key).", ""]
    return "\n".join(lines)


def _val(v) -> str:
    return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v))


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


def plots(data: dict, dims, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    made = []
    done = [r for r in data["trials"] if r["state"] == "complete"]
    pruned = [r for r in data["trials"] if r["state"] == "pruned" and r["best_intermediate"] is not None]

    def save(name, draw):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        draw(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        made.append(out / name)

    label = f"{LABEL[data['select']]} dev (mean over seeds × folds)"

    def history(ax):
        ax.plot([r["number"] for r in done], [r["value"] for r in done], "o", label="complete")
        ax.plot([r["number"] for r in pruned], [r["best_intermediate"] for r in pruned], "x", color="grey",
                label="pruned (best dev before the stop)")
        best, xs, ys = None, [], []
        for r in sorted(done, key=lambda r: r["number"]):
            best = r["value"] if best is None else max(best, r["value"])
            xs.append(r["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", label="best so far")
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered, not measured
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    save("history.png", history)
    for d in dims:
        def vs(ax, d=d):
            cats = [str(v) for v in d.args] if d.kind == "choice" else None
            pos = (lambda v: cats.index(str(v))) if cats else (lambda v: v)
            ax.plot([pos(r["params"][d.key]) for r in done], [r["value"] for r in done], "o", label="complete")
            ax.plot([pos(r["params"][d.key]) for r in pruned if d.key in r["params"]],
                    [r["best_intermediate"] for r in pruned if d.key in r["params"]], "x", color="grey", label="pruned")
            if cats:
                ax.set_xticks(range(len(cats)), cats)
            elif d.kind in ("loguniform", "intlog"):
                ax.set_xscale("log")
            ax.set_xlabel(d.key)
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        save(f"score_{_safe(d.key)}.png", vs)
    return made


def winner_config(sweep, number: int) -> dict:
    """The chosen configuration as a run config: the base file's sections, the overrides, the
    trial's values (and the confirmation's overrides, when it was confirmed), nested; its output_dir
    is ``runs/<sweep dir name>-trial<number>``."""
    from deepprompt.config import parse_overrides, read_config_file
    from deepprompt.sweep.study import param_overrides

    cfg = sweep.cfg
    params = next(t.params for t in sweep.trials() if t.number == number)
    data = read_config_file(cfg.config) if cfg.config else {}
    extra = [*cfg.overrides, *param_overrides(sweep.dims, params), *(cfg.confirm_overrides if cfg.confirm_seeds else [])]
    # its own output_dir: the base config's would make a run of the winner resume (or be refused by) the base run's
    return {**_deep_merge(data, parse_overrides(extra)), "output_dir": f"runs/{sweep.dir.name}-trial{number}"}


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_report(sweep) -> Path:
    from deepprompt.config import load_config

    out = sweep.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    data = gather(sweep)
    keys = [d.key for d in sweep.dims]
    _write(out / "report.json", json.dumps(data, indent=2, default=str))
    _write(out / "report.md", markdown(data, keys))
    if data["final"] is not None:
        cfg = winner_config(sweep, data["final"])
        row = next(r for r in data["trials"] if r["number"] == data["final"])
        confirmed = next((c for c in data["confirmed"] if c["number"] == data["final"]), None)
        if data["final_by"] == "confirmation" and confirmed is not None:
            value, n, how = confirmed["scores"][data["select"]]["dev"][0], len(confirmed["runs"]), " on fresh seeds"
        else:
            value, n, how = row["value"], len(row["runs"]), ""
        head = (f"# deepprompt sweep {sweep.dir}: trial {data['final']}, chosen on {LABEL[data['select']]} dev "
                f"{value:.2f} (mean of {n} run(s){how})"
                f"{', provisional until the confirmation is done' if data['provisional'] else ''}; report: {out / 'report.md'}\n")
        _write(out / "winner.yaml", head + yaml.safe_dump(cfg, sort_keys=False))
        load_config(str(out / "winner.yaml"))  # it loads as it stands
    plots(data, sweep.dims, out)
    print((out / "report.md").read_text())
    return out


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))
