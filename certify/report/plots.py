"""Report figures as PNG bytes (matplotlib's Agg renderer through `Figure`: no pyplot, no global state)."""

from __future__ import annotations

import io

from matplotlib.figure import Figure  # renders without pyplot: no backend is chosen or switched (notebooks keep theirs)

from ..checker.spec import read_spec

BLUE, ORANGE, RED, GREY = "#2b6cb0", "#dd6b20", "#c53030", "#718096"
GREEN, AMBER = "#2f855a", "#b7791f"
DPI = 110


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color="#e2e8f0", linewidth=0.8)
    ax.set_axisbelow(True)


def outputs_chart(entry) -> bytes | None:
    """Per output: the certified bound on |f_i - g_i| over the domain vs |f_i - g_i| at the witness."""
    rows = entry.outputs
    if not rows:
        return None
    fig = Figure(layout="constrained", figsize=(max(5.0, 0.55 * len(rows) + 2.5), 3.3))
    ax = fig.subplots()
    _style(ax)
    xs = range(len(rows))
    width = 0.38 if any(r.diff is not None for r in rows) else 0.6
    ax.bar([x - width / 2 for x in xs], [float(r.certified) for r in rows], width, color=BLUE, label="certified bound on |f_i - g_i|")
    if any(r.diff is not None for r in rows):
        ax.bar([x + width / 2 for x in xs], [abs(float(r.diff)) if r.diff is not None else 0 for r in rows], width,
               color=ORANGE, label="|f_i - g_i| at the witness (exact)")
    tol = entry.tolerance
    if tol is not None:
        ax.axhline(float(tol), color=RED, linestyle="--", linewidth=1.2, label=f"tolerance {float(tol):.4g}")
    ax.set_xticks(list(xs), [str(r.index) for r in rows])
    ax.set_xlabel("output i")
    ax.set_ylabel("deviation")
    fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncol=3)
    fig.suptitle("Where the deviation is: per output", fontsize=10, x=0.02, ha="left", fontweight="bold")
    return _png(fig)


def layers_chart(entry) -> bytes | None:
    """ReLU phases per hidden layer of the joint network, from the certificate's verified bounds."""
    rows = [r for r in entry.layers if r.unstable is not None]
    if not rows:
        return None
    fig = Figure(layout="constrained", figsize=(6.0, 0.45 * len(rows) + 1.4))
    ax = fig.subplots()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ys = list(range(len(rows)))[::-1]
    left = [0] * len(rows)
    for attr, colour, label in (("inactive", "#a0aec0", "inactive (z <= 0)"), ("active", GREEN, "active (z >= 0)"),
                                ("unstable", ORANGE, "unstable (sign unknown)")):
        vals = [getattr(r, attr) for r in rows]
        ax.barh(ys, vals, left=left, color=colour, label=label, height=0.6)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(ys, [f"layer {r.layer} ({r.role})" for r in rows], fontsize=8)
    ax.set_xlabel("neurons")
    fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncol=3)
    fig.suptitle("ReLU phases over the whole domain (verified bounds)", fontsize=10, x=0.02, ha="left", fontweight="bold")
    return _png(fig)


def witness_images(entry) -> bytes | None:
    """The witness as an image (64 inputs: 8x8; 784: 28x28) and its offset from the domain's centre."""
    x = entry.witness
    if x is None or len(x) not in (64, 784) or entry.domain is None:
        return None
    side = 8 if len(x) == 64 else 28
    lo, up = entry.domain
    img = [[float(x[r * side + c]) for c in range(side)] for r in range(side)]
    mid = [[float(x[r * side + c] - (lo[r * side + c] + up[r * side + c]) / 2) for c in range(side)] for r in range(side)]
    fig = Figure(layout="constrained", figsize=(4.4, 2.15))
    a, b = fig.subplots(1, 2)
    vmin, vmax = float(min(lo)), float(max(up))
    im = a.imshow(img, cmap="gray_r", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1, interpolation="nearest")
    a.set_title("witness input", fontsize=9)
    fig.colorbar(im, ax=a, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    span = max(max(abs(v) for row in mid for v in row), 1e-12)
    im2 = b.imshow(mid, cmap="RdBu_r", vmin=-span, vmax=span, interpolation="nearest")
    b.set_title("offset from the domain's centre", fontsize=9)
    fig.colorbar(im2, ax=b, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig)


def summary_chart(entries) -> bytes | None:
    """Every accepted certificate: the bracket [attained lower, certified upper] against its tolerance."""
    rows = [e for e in entries if e.bound is not None]
    if len(rows) < 2:
        return None
    fig = Figure(layout="constrained", figsize=(7.2, 0.5 * len(rows) + 1.5))
    ax = fig.subplots()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="x", color="#e2e8f0", linewidth=0.8, which="major")
    ax.set_axisbelow(True)
    values = [float(v) for e in rows for v in (e.bound, e.lower, e.tolerance) if v is not None]
    log = all(v > 0 for v in values) and max(values) / min(values) > 20
    ys = list(range(len(rows)))[::-1]
    colours = {"CERTIFIED": GREEN, "VIOLATED": RED, "UNKNOWN": AMBER}
    for y, e in zip(ys, rows):
        lo = float(e.lower) if e.lower is not None else (min(values) if log else 0.0)
        hi = float(e.bound)
        ax.plot([lo, hi], [y, y], color=colours.get(e.status, GREY), linewidth=5, solid_capstyle="butt", alpha=0.35)
        if e.lower is not None:
            ax.plot([lo], [y], "o", color=ORANGE, markersize=7)
        ax.plot([hi], [y], "D", color=BLUE, markersize=7)
        ax.plot([float(e.tolerance)], [y], marker="|", color=RED, markersize=18, markeredgewidth=2.5)
    ax.plot([], [], "o", color=ORANGE, label="attained lower (witness)")
    ax.plot([], [], "D", color=BLUE, label="certified upper")
    ax.plot([], [], "|", color=RED, markersize=12, markeredgewidth=2.5, label="tolerance")
    if log:
        ax.set_xscale("log")
    ax.set_yticks(ys, [e.name for e in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("sup over the domain of max_i |f_i - g_i|" + (" (log scale)" if log else ""))
    fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncol=3)
    fig.suptitle("All specs: the true worst case lies between the dot and the diamond", fontsize=10, x=0.02, ha="left", fontweight="bold")
    return _png(fig)


def flow_chart(spec_path, level_entries) -> bytes | None:
    """The scale-flow plot of a spec with levels, from the level certificates the report has already
    checked (none re-checked, nothing bounded); None when no level was accepted."""
    from ..flow import flow_figure, flow_of_checked

    checked = [(e.level, e.check, e.cert_path) for e in level_entries if e.accepted and e.level is not None]
    spec = next((e.spec for e in level_entries if e.spec is not None), None)
    if not checked or spec is None:
        return None
    return _png(flow_figure([flow_of_checked(read_spec(spec_path), checked)]))  # read_spec: all the levels


def attach(entries) -> dict:
    """Render every figure; per-entry plots go into entry.plots, the summary is returned."""
    for e in entries:
        for name, fn in (("outputs", outputs_chart), ("layers", layers_chart), ("witness", witness_images)):
            if e.accepted:
                png = fn(e)
                if png:
                    e.plots[name] = png
    out = {}
    summary = summary_chart(entries)
    if summary:
        out["summary"] = summary
    return out

