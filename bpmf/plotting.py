"""Thin plotting wrappers: comparison results with matplotlib, posteriors with arviz-plots.

Every function returns a :class:`matplotlib.figure.Figure` with labelled axes and a title;
:func:`save_figure` writes it as PNG and closes it. Nothing here selects a matplotlib
backend: scripts that run without a display (the command line) call ``matplotlib.use("Agg")``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bpmf.compare import calibration_table, require_results

__all__ = [
    "plot_calibration",
    "plot_factor_correlation",
    "plot_metric",
    "plot_predictive",
    "plot_rank",
    "plot_trace",
    "save_figure",
    "scale_variables",
]

#: Scalar scale parameters shown in trace and rank plots when the posterior has them.
SCALE_VARIABLES = ("sigma", "user_bias_sd", "item_bias_sd", "user_factor_sd", "item_factor_sd")

_METRIC_LABELS = {
    "rmse": "RMSE",
    "mae": "MAE",
    "coverage": "interval coverage",
    "fit_seconds": "fit time (s)",
    "predict_seconds": "predict time (s)",
}


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi=110):
    """Write ``fig`` to ``path`` (PNG by default), close it and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    return path


# ---------------------------------------------------------------------- comparison plots
def plot_metric(results, metric="rmse", title=None):
    """Mean of ``metric`` per model with error bars of one standard deviation over folds.

    Parameters
    ----------
    results : pandas.DataFrame
        The output of :func:`bpmf.compare`.
    metric : str, default "rmse"
        A numeric column of ``results``.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Horizontal bars, best (lowest) model at the top.
    """
    require_results(results, ["model", "fold", metric])
    grouped = results.groupby("model", sort=False)[metric]
    stats = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()})
    stats = stats.dropna(subset=["mean"]).sort_values("mean", ascending=False, kind="stable")
    if stats.empty:
        raise ValueError(f"No model has a value for {metric!r}.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(stats) + 1.6), layout="constrained")
    positions = np.arange(len(stats))
    ax.barh(
        positions,
        stats["mean"],
        xerr=stats["std"].fillna(0.0),
        color="#4C72B0",
        ecolor="black",
        capsize=4,
    )
    for y, (mean, std) in enumerate(zip(stats["mean"], stats["std"], strict=True)):
        label = f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"
        ax.text(mean + (0 if np.isnan(std) else std), y, "  " + label, va="center", fontsize=9)
    ax.set_yticks(positions, stats.index)
    low = stats["mean"].min() - 2 * stats["std"].fillna(0).max()
    high = stats["mean"].max() + 2 * stats["std"].fillna(0).max()
    span = max(high - low, 1e-9)
    ax.set_xlim(max(0.0, low - 0.35 * span), high + 0.45 * span)
    n_folds = int(stats["n"].max())
    name = _METRIC_LABELS.get(metric, metric)
    ax.set_xlabel(f"{name} on held-out ratings (mean ± sd over {n_folds} folds; lower is better)")
    ax.set_ylabel("model")
    ax.set_title(title or f"Held-out {name} by model")
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_calibration(results, title=None):
    """Observed coverage of central predictive intervals against their nominal probability.

    Uses the ``coverage`` and ``coverage_XX`` columns of :func:`bpmf.compare` output; the
    mean over folds is drawn with the min-max range over folds as error bars. A
    well-calibrated model lies on the diagonal.
    """
    table = calibration_table(results)
    if table.empty:
        raise ValueError(
            "No model in the results has predictive intervals (all coverage columns are NaN)."
        )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 5.2), layout="constrained")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="ideal (observed = nominal)")
    for model, rows in table.groupby("model", sort=False):
        per_level = rows.groupby("nominal")["observed"]
        mean, low, high = per_level.mean(), per_level.min(), per_level.max()
        ax.errorbar(
            mean.index,
            mean.to_numpy(),
            yerr=[mean - low, high - mean],
            marker="o",
            capsize=3,
            label=str(model),
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal probability of the central predictive interval")
    ax.set_ylabel("observed coverage of held-out ratings")
    ax.set_title(title or "Calibration of predictive intervals")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------- posterior plots
def _posterior(idata):
    if hasattr(idata, "children") and "posterior" in idata.children:
        return idata["posterior"].to_dataset()
    if hasattr(idata, "posterior"):
        posterior = idata.posterior
        return posterior.to_dataset() if hasattr(posterior, "to_dataset") else posterior
    raise ValueError("Expected an ArviZ DataTree with a posterior group (a fitted BPMF's idata_).")


def scale_variables(idata):
    """A DataTree with the scalar scale parameters of ``idata``'s posterior.

    Holds ``sigma``, ``user_bias_sd``, ``item_bias_sd`` where present, plus the per-factor
    prior scales ``user_factor_sd`` and ``item_factor_sd`` (square roots of the diagonals of
    ``Sigma_U`` and ``Sigma_V``). ``idata`` is not modified.
    """
    import xarray as xr

    posterior = _posterior(idata)
    variables = {name: posterior[name] for name in SCALE_VARIABLES if name in posterior}
    for side in ("U", "V"):
        name = f"Sigma_{side}"
        if name in posterior:
            cov = posterior[name]
            sd = np.sqrt(np.diagonal(cov.to_numpy(), axis1=-2, axis2=-1))
            factor_dim = cov.dims[-2]
            coords = {d: cov.coords[d] for d in ("chain", "draw") if d in cov.coords}
            if factor_dim in cov.coords:
                coords[factor_dim] = cov.coords[factor_dim].to_numpy()
            label = "user_factor_sd" if side == "U" else "item_factor_sd"
            variables[label] = xr.DataArray(sd, dims=(*cov.dims[:-2], factor_dim), coords=coords)
    if not variables:
        raise ValueError(
            f"The posterior has none of the scale parameters {SCALE_VARIABLES} or Sigma_U/Sigma_V."
        )
    return xr.DataTree.from_dict({"posterior": xr.Dataset(variables)})


def _arviz_figure(plot_collection):
    figure = plot_collection.viz["figure"]
    return figure.item() if hasattr(figure, "item") else figure


def plot_trace(idata, var_names=None, title=None):
    """Trace and marginal posterior of the noise and bias/factor scales (arviz-plots).

    Parameters
    ----------
    idata : DataTree
        A fitted model's ``idata_``.
    var_names : list of str, optional
        Variables of :func:`scale_variables` to show; all by default.
    """
    import arviz_plots as azp

    tree = scale_variables(idata)
    pc = azp.plot_trace_dist(tree, var_names=var_names, backend="matplotlib")
    fig = _arviz_figure(pc)
    for ax in fig.axes:
        if not ax.get_ylabel():
            ax.set_ylabel("posterior density")
    fig.suptitle(title or "Posterior traces of the noise and scale parameters (one line per chain)")
    return fig


def plot_rank(idata, var_names=None, title=None):
    """Rank plots of the noise and bias/factor scales: flat curves mean well-mixed chains."""
    import arviz_plots as azp

    tree = scale_variables(idata)
    pc = azp.plot_rank(tree, var_names=var_names, backend="matplotlib")
    fig = _arviz_figure(pc)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    n_cols = len({round(ax.get_position().x0, 3) for ax in panels}) or 1
    n_rows = int(np.ceil(len(panels) / n_cols))
    fig.set_size_inches(3.6 * n_cols, 2.9 * n_rows + 0.6)
    left = min(round(ax.get_position().x0, 3) for ax in panels)
    for ax in panels:
        ax.set_title(" ".join(ax.get_title().split()))  # "user_factor_sd\n0" -> one line
        if round(ax.get_position().x0, 3) == left:
            ax.set_ylabel("ECDF - uniform")
    if fig.get_layout_engine() is None:
        fig.subplots_adjust(hspace=0.75, top=1 - 0.9 / fig.get_figheight())
    fig.suptitle(title or "Rank plots of the scale parameters (flat = chains agree)")
    return fig


def factor_correlation(idata, var_name="Sigma_U"):
    """Posterior mean of the correlation matrix implied by the covariance ``var_name``.

    Falls back to the correlation of the posterior mean factors (``U`` or ``V``) when the
    posterior has no covariance (e.g. a MAP fit).
    """
    posterior = _posterior(idata)
    if var_name in posterior:
        cov = posterior[var_name].to_numpy()
        cov = cov.reshape(-1, *cov.shape[-2:])
        sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        return (cov / (sd[:, :, None] * sd[:, None, :])).mean(axis=0)
    factors = "U" if var_name.endswith("U") else "V"
    if factors in posterior:
        values = posterior[factors].to_numpy()
        mean = values.reshape(-1, *values.shape[-2:]).mean(axis=0)
        return np.corrcoef(mean, rowvar=False)
    raise ValueError(f"The posterior has neither {var_name!r} nor {factors!r}.")


def plot_factor_correlation(idata, var_name="Sigma_U", title=None):
    """Heat map of the posterior mean correlation between latent factors (user by default)."""
    corr = factor_correlation(idata, var_name)
    who = "user" if var_name.endswith("U") else "item"
    plt = _pyplot()
    n = corr.shape[0]
    size = min(2.5 + 0.5 * n, 9)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), layout="constrained")
    image = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    fig.colorbar(image, ax=ax, label="posterior mean correlation")
    ticks = np.arange(n)
    ax.set_xticks(ticks, [str(k + 1) for k in ticks])
    ax.set_yticks(ticks, [str(k + 1) for k in ticks])
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{corr[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if abs(corr[i, j]) > 0.6 else "black",
                )
    ax.set_xlabel(f"{who} factor")
    ax.set_ylabel(f"{who} factor")
    ax.set_title(title or f"Posterior correlation of {who} factors ({var_name})")
    return fig


def _draw_matrix(draws, n_pairs):
    """Predictive draws as an array ``(n_samples, n_pairs)`` from an array, DataArray or tree."""
    if hasattr(draws, "children"):
        group = "posterior_predictive" if "posterior_predictive" in draws.children else None
        if group is None:
            raise ValueError("The DataTree has no posterior_predictive group.")
        dataset = draws[group].to_dataset()
        draws = dataset[next(iter(dataset.data_vars))]
    if hasattr(draws, "dims") and hasattr(draws, "to_numpy"):
        sample_dims = [d for d in ("chain", "draw", "sample") if d in draws.dims]
        other = [d for d in draws.dims if d not in sample_dims]
        draws = draws.transpose(*sample_dims, *other).to_numpy()
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim < 2 or draws.shape[-1] != n_pairs:
        raise ValueError(
            f"Expected predictive draws with the pairs on the last axis ({n_pairs} pairs), "
            f"got shape {draws.shape}."
        )
    return draws.reshape(-1, n_pairs)


def plot_predictive(draws, y_true, labels=None, scale=None, title=None):
    """Posterior predictive distributions of a few held-out pairs against their true rating.

    Parameters
    ----------
    draws : array-like, DataArray or DataTree
        Predictive draws with the pairs on the last axis (e.g. ``(chain, draw, pair)``).
    y_true : array-like
        The observed rating of each pair.
    labels : list of str, optional
        One label per pair (e.g. ``"user 12 / item 7"``).
    scale : (float, float), optional
        The rating scale, drawn as the x range.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    matrix = _draw_matrix(draws, len(y_true))
    labels = labels or [f"pair {k + 1}" for k in range(len(y_true))]
    n = len(y_true)
    n_cols = min(3, n)
    n_rows = int(np.ceil(n / n_cols))
    plt = _pyplot()
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.6 * n_cols, 2.7 * n_rows), squeeze=False, layout="constrained"
    )
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_visible(False)
            continue
        values = matrix[:, k]
        ax.hist(values, bins=30, density=True, color="#4C72B0", alpha=0.75, label="predictive")
        ax.axvline(y_true[k], color="#C44E52", linewidth=2, label=f"observed {y_true[k]:g}")
        ax.axvline(values.mean(), color="black", linestyle=":", label=f"mean {values.mean():.2f}")
        if scale is not None:
            ax.set_xlim(scale[0] - 0.5, scale[1] + 0.5)
        ax.set_title(labels[k], fontsize=10)
        ax.set_xlabel("rating")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title or "Posterior predictive distributions of held-out ratings")
    return fig
