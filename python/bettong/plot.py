"""ex.plot(): a PNG timeline of calls, one row per worker (needs matplotlib)."""


def plot_timeline(fs, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("ex.plot() needs matplotlib (pip install matplotlib, or "
                          "apt-get install python3-matplotlib)") from e
    rows = [f.stats for f in fs if f.done()]
    rows = [s for s in rows if s and s.get("started")]
    if not rows:
        raise ValueError("none of the futures has finished: nothing to plot")
    t0 = min(s["submitted"] or s["started"] for s in rows)
    workers = sorted({s["worker"] for s in rows})
    ypos = {w: i for i, w in enumerate(workers)}
    fig_h = max(2.5, min(12, 0.35 * len(workers) + 1.5))
    fig, ax = plt.subplots(figsize=(10, fig_h))
    spans = {True: [], False: []}
    for f in fs:
        s = f.stats if f.done() else None
        if not s or not s.get("started"):
            continue
        good = f.succeeded()
        spans[good].append((ypos[s["worker"]], s["started"] - t0, max(s["finished"] - s["started"], 1e-6)))
    for good, color, label in ((True, "tab:blue", "ok"), (False, "tab:red", "failed")):
        by_row = {}
        for y, x, w in spans[good]:
            by_row.setdefault(y, []).append((x, w))
        for y, xs in by_row.items():
            ax.broken_barh(xs, (y - 0.4, 0.8), facecolors=color, edgecolor="white",
                           linewidth=0.5, label=label)
            label = None
    ax.set_yticks(range(len(workers)))
    ax.set_yticklabels([f"worker {w}" for w in workers])
    ax.set_xlabel("seconds since the first submission")
    ax.set_title(f"{len(rows)} calls on {len(workers)} workers")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
