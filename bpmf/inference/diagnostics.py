"""Convergence diagnostics of a fit's draws: divergences, R-hat and bulk ESS (arviz-stats).

:func:`diagnose` checks every scalar parameter of the posterior and the expected ratings of
a set of pairs (held-out or training pairs): the quantities that are identified, unlike the
raw factors, which are only defined up to a rotation. Each problem becomes one line in the
returned ``warnings`` and a :class:`bpmf.ConvergenceWarning` attributed to the caller's line.
"""

import arviz as az
import numpy as np
import xarray as xr

from bpmf._exceptions import ConvergenceWarning
from bpmf._validation import warn

__all__ = ["RHAT_MAX", "diagnose"]

#: R-hat above this is reported (Vehtari et al., 2021).
RHAT_MAX = 1.01
#: Bulk ESS below this many draws per chain is reported.
ESS_PER_CHAIN_MIN = 50
#: Share of the predictions whose R-hat may exceed :data:`RHAT_MAX` before it is reported.
PREDICTION_RHAT_SHARE = 0.01

def diagnose(posterior, sample_stats=None, predictions=None, label=None):
    """Divergences, R-hat and bulk ESS of a fit; returns a dict and warns about problems.

    Parameters
    ----------
    posterior : xarray.Dataset
        The posterior group; its scalar variables (dims ``chain``, ``draw``) are checked.
    sample_stats : xarray.Dataset, optional
        With a ``diverging`` variable where the sampler reports divergences.
    predictions : ndarray, shape (chain, draw, pairs), optional
        Expected ratings of some pairs per draw.
    label : str, optional
        Names the fit in the messages (e.g. ``"BPMF (gibbs, lkj)"``).

    Returns
    -------
    dict
        ``divergences``, ``max_treedepth_hits``, ``rhat`` and ``ess_bulk`` (dicts by scalar
        name), ``rhat_predictions_max`` and ``rhat_predictions_share`` (the share above
        :data:`RHAT_MAX`), and ``warnings``, the list of messages.
    """
    result = {"divergences": None, "max_treedepth_hits": None, "rhat": {}, "ess_bulk": {}}
    stats = sample_stats if sample_stats is not None else {}
    if "diverging" in stats:
        result["divergences"] = int(np.asarray(stats["diverging"]).sum())
    for name in ("reached_max_treedepth", "maxdepth_reached"):
        if name in stats:
            result["max_treedepth_hits"] = int(np.asarray(stats[name]).sum())
    n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    messages = []
    prefix = f"{label}: " if label else ""
    if result["divergences"]:
        messages.append(
            f"{prefix}{result['divergences']} divergent transitions after tuning; "
            "consider a higher target_accept."
        )
    if result["max_treedepth_hits"]:
        messages.append(
            f"{prefix}{result['max_treedepth_hits']} draws hit the maximum tree depth; "
            "consider more tuning or a larger max_treedepth."
        )
    if n_chains > 1 and n_draws >= 4:
        scalars = [
            name
            for name, var in posterior.data_vars.items()
            if set(var.dims) == {"chain", "draw"} and np.ptp(var.values) > 0
        ]
        ds = posterior[scalars].drop_vars(
            [c for c in posterior.coords if c not in ("chain", "draw")], errors="ignore"
        )
        rhat = az.rhat(ds)
        ess = az.ess(ds, method="bulk")
        for name in scalars:
            result["rhat"][name] = float(rhat[name])
            result["ess_bulk"][name] = float(ess[name])
        bad = [n for n in scalars if result["rhat"][n] > RHAT_MAX]
        if bad:
            listed = ", ".join(f"{n} {result['rhat'][n]:.4f}" for n in bad)
            messages.append(
                f"{prefix}R-hat above {RHAT_MAX} ({listed}): the chains disagree; sample more "
                "draws or chains (sampler_config) before trusting intervals."
            )
        low = [n for n in scalars if result["ess_bulk"][n] < ESS_PER_CHAIN_MIN * n_chains]
        if low:
            listed = ", ".join(f"{n} {result['ess_bulk'][n]:.0f}" for n in low)
            messages.append(
                f"{prefix}bulk ESS below {ESS_PER_CHAIN_MIN} per chain ({listed}); "
                "sample more draws."
            )
        if predictions is not None and predictions.shape[-1]:
            pred = xr.Dataset({"rating": (("chain", "draw", "pair"), predictions)})
            values = np.asarray(az.rhat(pred)["rating"].values, dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                share = float(np.mean(values > RHAT_MAX))
                result["rhat_predictions_max"] = float(values.max())
                result["rhat_predictions_share"] = share
                if share > PREDICTION_RHAT_SHARE:
                    messages.append(
                        f"{prefix}R-hat above {RHAT_MAX} for {share:.1%} of "
                        f"{values.size} predicted ratings (max {values.max():.4f}); "
                        "sample more draws."
                    )
    for message in messages:
        warn(message, ConvergenceWarning)
    result["warnings"] = messages
    # sigma, the quantity users check first, also under keys of its own
    if "sigma" in result["rhat"]:
        result["rhat_sigma"] = result["rhat"]["sigma"]
        result["ess_bulk_sigma"] = result["ess_bulk"]["sigma"]
    return result
