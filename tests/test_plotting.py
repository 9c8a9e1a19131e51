"""Plots: the numbers they draw, labelled axes and titles, PNG output."""

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

from bpmf import plotting  # noqa: E402


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    rows = []
    for model, base, has_intervals in (("good", 0.8, True), ("plain", 0.9, False)):
        for k in range(4):
            rows.append(
                {
                    "model": model,
                    "fold": f"fold{k + 1}",
                    "rmse": base + rng.normal(0, 0.01),
                    "mae": base - 0.2 + rng.normal(0, 0.01),
                    "coverage": 0.88 + 0.01 * k if has_intervals else np.nan,
                    "coverage_50": 0.52 if has_intervals else np.nan,
                    "coverage_80": 0.79 if has_intervals else np.nan,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def posterior_tree():
    rng = np.random.default_rng(1)
    corr = np.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.1], [-0.3, 0.1, 1.0]])
    sd = np.array([0.5, 1.0, 2.0])
    cov = corr * np.outer(sd, sd)
    chains, draws = 2, 50
    return (
        az.from_dict(
            {
                "posterior": {
                    "sigma": rng.normal(0.9, 0.02, (chains, draws)),
                    "user_bias_sd": rng.gamma(5, 0.05, (chains, draws)),
                    "item_bias_sd": rng.gamma(5, 0.05, (chains, draws)),
                    "Sigma_U": np.broadcast_to(cov, (chains, draws, 3, 3)).copy(),
                    "Sigma_V": np.broadcast_to(np.eye(3), (chains, draws, 3, 3)).copy(),
                }
            },
            dims={"Sigma_U": ["factor", "factor_"], "Sigma_V": ["factor", "factor_"]},
        ),
        corr,
        sd,
    )


def _check_labelled(fig):
    visible = [
        ax
        for ax in fig.axes
        if ax.get_visible() and ax.has_data() and ax.get_label() != "<colorbar>"
    ]
    assert visible
    for ax in visible:
        assert ax.get_xlabel() and ax.get_ylabel()
    assert any(ax.get_title() for ax in fig.axes) or (fig._suptitle and fig._suptitle.get_text())


def test_metric_bars_are_fold_means_with_sd_error_bars(results, tmp_path):
    fig = plotting.plot_metric(results, "rmse")
    _check_labelled(fig)
    ax = fig.axes[0]
    widths = {
        label.get_text(): patch.get_width()
        for label, patch in zip(ax.get_yticklabels(), ax.patches, strict=True)
    }
    expected = results.groupby("model")["rmse"].mean()
    assert widths == pytest.approx(expected.to_dict())
    # best model on top: the last bar drawn is the lowest mean
    assert ax.get_yticklabels()[-1].get_text() == expected.idxmin()
    (errorbar,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = errorbar.lines[2][0].get_segments()
    half_widths = sorted((seg[1][0] - seg[0][0]) / 2 for seg in segments)
    assert half_widths == pytest.approx(sorted(results.groupby("model")["rmse"].std(ddof=1)))
    path = plotting.save_figure(fig, tmp_path / "rmse.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_points_are_mean_observed_coverage(results, tmp_path):
    fig = plotting.plot_calibration(results)
    _check_labelled(fig)
    ax = fig.axes[0]
    (container,) = [c for c in ax.containers if c.get_label() == "good"]
    line = container.lines[0]
    np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), [0.5, 0.8, 0.9])
    expected = [0.52, 0.79, results["coverage"].iloc[:4].mean()]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), expected)
    assert "plain" not in [text.get_text() for text in ax.get_legend().get_texts()]
    plotting.save_figure(fig, tmp_path / "calibration.png")
    with pytest.raises(ValueError, match="No model in the results has predictive intervals"):
        plotting.plot_calibration(results[results["model"] == "plain"])


def test_factor_correlation_recovers_the_correlation_matrix(posterior_tree, tmp_path):
    tree, corr, _ = posterior_tree
    np.testing.assert_allclose(plotting.factor_correlation(tree, "Sigma_U"), corr, atol=1e-12)
    fig = plotting.plot_factor_correlation(tree)
    _check_labelled(fig)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), corr, atol=1e-12)
    plotting.save_figure(fig, tmp_path / "corr.png")


def test_factor_correlation_of_map_uses_factor_means():
    rng = np.random.default_rng(2)
    factors = rng.normal(size=(200, 3))
    factors[:, 1] += factors[:, 0]
    tree = az.from_dict({"posterior": {"U": factors[None, None]}}, dims={"U": ["user", "factor"]})
    np.testing.assert_allclose(
        plotting.factor_correlation(tree), np.corrcoef(factors, rowvar=False), atol=1e-12
    )


def test_scale_variables_are_square_roots_of_the_covariance_diagonal(posterior_tree):
    tree, _, sd = posterior_tree
    scales = plotting.scale_variables(tree)["posterior"].to_dataset()
    assert set(scales.data_vars) == {
        "sigma",
        "user_bias_sd",
        "item_bias_sd",
        "user_factor_sd",
        "item_factor_sd",
    }
    np.testing.assert_allclose(scales["user_factor_sd"].values[0, 0], sd)
    np.testing.assert_allclose(scales["item_factor_sd"].values, 1.0)
    assert "Sigma_U" in tree["posterior"].to_dataset()  # the input is untouched


def test_trace_and_rank_plots(posterior_tree, tmp_path):
    tree, _, _ = posterior_tree
    for plot in (plotting.plot_trace, plotting.plot_rank):
        fig = plot(tree)
        assert fig._suptitle.get_text()
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
        assert all(ax.get_xlabel() for ax in panels)
        assert any(ax.get_ylabel() for ax in panels)
        path = plotting.save_figure(fig, tmp_path / f"{plot.__name__}.png")
        assert path.stat().st_size > 10_000


def test_posterior_plots_need_a_posterior():
    with pytest.raises(ValueError, match="posterior"):
        plotting.scale_variables(pd.DataFrame())


def test_predictive_histograms_use_the_draws_of_each_pair(tmp_path):
    rng = np.random.default_rng(3)
    centres = np.array([1.5, 3.0, 4.5, 2.0])
    draws = xr.DataArray(rng.normal(centres, 0.3, size=(2, 100, 4)), dims=("chain", "draw", "pair"))
    fig = plotting.plot_predictive(draws, [2, 3, 5, 1], scale=(1, 5))
    _check_labelled(fig)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    for ax, centre, observed in zip(panels, centres, [2, 3, 5, 1], strict=True):
        vertical = [line.get_xdata()[0] for line in ax.get_lines()]
        assert observed in vertical
        assert min(abs(v - centre) for v in vertical) < 0.1  # the predictive mean line
    plotting.save_figure(fig, tmp_path / "predictive.png")
    with pytest.raises(ValueError, match="pairs on the last axis"):
        plotting.plot_predictive(np.zeros((10, 3)), [1, 2])


def test_results_must_be_a_frame_with_the_metric(results):
    with pytest.raises(ValueError, match="lack column"):
        plotting.plot_metric(results, "ndcg")
    with pytest.raises(ValueError, match="compare"):
        plotting.plot_metric([1, 2], "rmse")
