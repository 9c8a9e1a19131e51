"""Bayesian Probabilistic Matrix Factorization (Salakhutdinov & Mnih, 2008), sampled by NUTS."""

from __future__ import annotations

import importlib.util
import logging

import arviz as az
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from threadpoolctl import threadpool_limits

from bpmf._config import resolve_progressbar
from bpmf.kernels.likelihood import rating_likelihood
from bpmf.models._posterior import POSTERIOR_DIMS, PosteriorModel, make_datatree
from bpmf.models.pmf import PMF, _check_n_factors, merge_config

_log = logging.getLogger("bpmf.models")

#: NUTS backends of ``pm.sample`` and the modules (and bpmf extra) each one needs.
NUTS_BACKENDS = {
    "pymc": ((), None),
    "nutpie": (("nutpie",), "nutpie"),
    "numpyro": (("numpyro", "jax"), "numpyro"),
    "blackjax": (("blackjax", "jax"), "blackjax"),
}
_METHODS = ("nuts", "gibbs")
_RHAT_WARN = 1.01  # R-hat of sigma above which fit() logs a warning


def _default_backend():
    return "nutpie" if importlib.util.find_spec("nutpie") is not None else "pymc"


class BPMF(PosteriorModel):
    r"""Bayesian Probabilistic Matrix Factorization with biases, sampled by NUTS (or Gibbs).

    Parameters
    ----------
    n_factors : int, default 10
        Number of latent factors ``D``.
    model_config : dict, optional
        Priors, merged over :attr:`default_model_config`:

        - ``biases`` (True): include user and item biases with hierarchical scales
          (False gives the classic BPMF of the paper);
        - ``mu_sd`` (1.0): prior sd of the intercept ``mu`` around the training mean;
        - ``factor_mean_sd`` (1.0): prior sd of the entries of ``mu_U`` and ``mu_V``;
        - ``lkj_eta`` (2.0): LKJ shape of the factor correlation matrices;
        - ``factor_scale_sd`` (1.0): ``HalfNormal`` scale of the factor standard deviations;
        - ``bias_scale_sd`` (1.0): ``HalfNormal`` scale of ``user_bias_sd``, ``item_bias_sd``;
        - ``sigma`` (None): fixed observation noise sd (the paper fixes the precision), or None
          to estimate it under a ``HalfNormal(sigma_sd)`` prior;
        - ``sigma_sd`` (1.0);
        - ``parameterization`` ("noncentered"): ``"noncentered"`` samples standard-normal
          ``U_z``, ``V_z`` and scales them by the Cholesky factors; ``"centered"`` samples
          ``U``, ``V`` from their ``MvNormal`` directly;
        - ``bias_parameterization`` ("auto"): ``"auto"`` samples the bias of a user or item
          with at least ``bias_center_min`` (5) training ratings centred (``user_bias_c``)
          and the others non-centred (``user_bias_z``, scaled by ``user_bias_sd``);
          ``"centered"`` or ``"noncentered"`` use one form for all;
        - ``factor_means`` (True): whether ``mu_U``, ``mu_V`` are free parameters with
          ``Normal(0, factor_mean_sd)`` priors; False fixes them at zero (they stay in the
          posterior as zeros), "auto" frees them only without biases. With biases,
          ``mu_U . V_j`` acts as a second, structured item bias: the split between the two
          mixes slowly (R-hat of ``item_bias_sd`` 1.6 on ML-100K u1) though their sum and the
          predictions do not; fixing the means halves the leapfrog steps but cost 0.005 test
          RMSE on u1 (``bench/results_nuts_settings.md``);
        - ``fused_likelihood`` (True): evaluate the Gaussian likelihood and its gradient with
          the fused :class:`~bpmf.models._likelihood.GaussianPairLogp` Op, as a
          ``pm.Potential`` named ``rating``; False builds the textbook
          ``pm.Normal("rating", ..., observed=...)`` graph (same density, slower);
        - ``map_config`` ({"factor_sd": 0.2}): ``model_config`` of the :class:`PMF` whose MAP
          starts the chains.
    sampler_config : dict, optional
        Merged over :attr:`default_sampler_config`; keys mirror ``pm.sample``: ``draws`` (500),
        ``tune`` (300), ``chains`` (2), ``cores`` (2), ``target_accept`` (0.9),
        ``max_treedepth`` (10), ``nuts_sampler`` ("nutpie" when installed, else "pymc"; also
        "numpyro", "blackjax"), plus ``init`` ("gibbs": each chain starts from the MAP moved
        into the posterior by ``init_sweeps`` (100) sweeps of the conjugate Gibbs sampler,
        seeded per chain; "map": from the MAP jittered by ``init_jitter`` (0.05, relative to
        each variable's spread)), ``adaptation`` ("diag": nutpie's mass-matrix adaptation,
        e.g. "low_rank"), ``log_likelihood`` (False) and ``posterior_predictive`` (False) to
        add those groups to ``idata_``.
    random_state : int, optional
        Seeds the MAP start, the jitter and the sampler: the same seed gives the same draws.
    method : {"nuts", "gibbs"}, default "nuts"
        ``"gibbs"`` runs the conjugate Gibbs sampler of the paper (``bpmf.models._gibbs``):
        the same likelihood, with conjugate Normal-Wishart / Gamma hyperpriors in place of the
        LKJ and HalfNormal ones (their keys, e.g. ``beta0``, ``nu0``, are then accepted in
        ``model_config``); ``draws``, ``tune``, ``chains`` come from ``sampler_config``.
    progressbar : bool, optional
        Show MAP and sampling progress; None uses the package-wide setting.

    Attributes
    ----------
    idata_ : xarray.DataTree
        Groups ``posterior`` (``U``, ``V``, ``mu_U``, ``mu_V``, ``Sigma_U``, ``Sigma_V``, ``mu``,
        ``sigma`` and the biases, with dims ``user``, ``item``, ``factor`` whose coordinates
        are the original ids), ``sample_stats``, ``observed_data`` (``rating`` over ``obs``),
        ``map_estimate`` and on request ``log_likelihood`` and ``posterior_predictive``.
    map_ : dict of str -> ndarray
        The PMF MAP the chains started from.
    diagnostics_ : dict
        Divergences, max-treedepth hits, R-hat and bulk ESS of ``sigma`` after sampling;
        ``fit`` logs a warning (logger ``bpmf.models``) for divergences, max-depth hits and
        R-hat above 1.01.

    Notes
    -----
    The generative model, with :math:`\bar r` the training mean, for observed pairs only:

    .. math::

        \mu_U, \mu_V &\sim \mathcal N(0, s_m^2 I_D), \qquad
        \Sigma_U = L_U L_U^\top,\ \Sigma_V = L_V L_V^\top, \quad
        L \sim \mathrm{LKJCholeskyCov}(\eta, \mathcal N^+(0, s_f^2)) \\
        U_i &\sim \mathcal N(\mu_U, \Sigma_U), \qquad V_j \sim \mathcal N(\mu_V, \Sigma_V) \\
        s_b, s_c &\sim \mathcal N^+(0, s_s^2), \qquad
        b_i \sim \mathcal N(0, s_b^2), \qquad c_j \sim \mathcal N(0, s_c^2) \\
        \mu &\sim \mathcal N(\bar r, s_\mu^2), \qquad \sigma \sim \mathcal N^+(0, s_\sigma^2) \\
        r_{ij} &\sim \mathcal N(\mu + b_i + c_j + U_i^\top V_j, \sigma^2)

    Non-centred: :math:`U_i = \mu_U + L_U z_i` with :math:`z_i \sim \mathcal N(0, I_D)` (same for
    ``V``). Biases are partially centred: :math:`b_i` itself is sampled for a user with at least
    ``bias_center_min`` ratings (its likelihood dominates its prior), :math:`b_i = s_b z^b_i`
    for the others (their prior dominates). On synthetic data from the model (400 x 300, 20%
    observed, 4 chains) this took the R-hat of ``user_bias_sd`` / ``item_bias_sd`` from
    1.05 / 1.05 (all non-centred) to 1.002 / 1.002 (``bench/results_nuts_settings.md``).

    ``fit`` starts each chain from the MAP moved into the posterior bulk by a short run of the
    conjugate Gibbs sampler (``init="gibbs"``): from the MAP itself (shrunk factors, noise
    underestimated) chains on ML-100K u1 settled in different states (R-hat of ``sigma``
    1.03 to 1.8 in five 2-chain runs of model variants started from the MAP, against 1.005
    to 1.014 in the three started from Gibbs).
    Classic BPMF (``biases=False``) drops :math:`b, c`.

    ``fit`` first finds the MAP of the matching :class:`PMF`, starts every chain from it
    (see above) and samples with NUTS (nutpie directly, so that every chain gets its own
    start, or ``pm.sample`` for the other backends). ``predict`` averages the
    predictions over draws (Eq. 10 of the paper), not the factors.

    The factor matrices are identified only up to a rotation (``U R``, ``V R^{-T}`` give the
    same ratings), so R-hat and ESS of raw ``U``, ``V``, ``mu_U`` or ``Sigma_U`` are not
    meaningful; :meth:`summary` reports the identifiable quantities (``sigma``, ``mu``, bias
    scales and predicted ratings).
    """

    default_model_config = {
        "biases": True,
        "mu_sd": 1.0,
        "factor_mean_sd": 1.0,
        "lkj_eta": 2.0,
        "factor_scale_sd": 1.0,
        "bias_scale_sd": 1.0,
        "sigma": None,
        "sigma_sd": 1.0,
        "parameterization": "noncentered",
        "bias_parameterization": "auto",
        "factor_means": True,
        "fused_likelihood": True,
        "bias_center_min": 5,
        # a MAP regularised more than PMF's own default starts the chains nearer the
        # posterior bulk (its sigma is less underestimated), which shortens the warm-up
        "map_config": {"factor_sd": 0.2},
    }
    default_sampler_config = {
        "draws": 500,
        "tune": 300,
        "chains": 2,
        "cores": 2,
        # 0.85 left 16-96 divergences on ML-100K u1 in 4 of 4 seeded runs; 0.9 left 2-3 for
        # ~8% more gradients (bench/results_nuts_settings.md, session 3)
        "target_accept": 0.9,
        "max_treedepth": 10,
        "nuts_sampler": None,  # None: nutpie when installed, else pymc
        "adaptation": "diag",  # nutpie's mass-matrix adaptation ("diag", "low_rank", ...)
        "init": "gibbs",
        "init_sweeps": 100,
        "init_jitter": 0.05,
        "log_likelihood": False,
        "posterior_predictive": False,
    }

    def __init__(
        self,
        n_factors=10,
        model_config=None,
        sampler_config=None,
        random_state=None,
        method="nuts",
        progressbar=None,
    ):
        self.n_factors = n_factors
        self.model_config = model_config
        self.sampler_config = sampler_config
        self.random_state = random_state
        self.method = method
        self.progressbar = progressbar

    # ------------------------------------------------------------------ configuration
    def _model_config(self):
        defaults = dict(self.default_model_config)
        if self.method == "gibbs":
            # The Gibbs sampler has its own conjugate hyperpriors (Normal-Wishart, Gamma).
            from bpmf.inference.wishart_gibbs import DEFAULT_GIBBS_CONFIG

            defaults = {**DEFAULT_GIBBS_CONFIG, **defaults}
        config = merge_config(defaults, self.model_config, "model_config")
        if config["parameterization"] not in ("noncentered", "centered"):
            raise ValueError(
                "model_config['parameterization'] must be 'noncentered' or 'centered', got "
                f"{config['parameterization']!r}."
            )
        if config["bias_parameterization"] not in ("auto", "noncentered", "centered"):
            raise ValueError(
                "model_config['bias_parameterization'] must be 'auto', 'noncentered' or "
                f"'centered', got {config['bias_parameterization']!r}."
            )
        if config["sigma"] is not None and not config["sigma"] > 0:
            raise ValueError(f"model_config['sigma'] must be > 0 or None, got {config['sigma']!r}.")
        return config

    def _sampler_config(self):
        config = merge_config(self.default_sampler_config, self.sampler_config, "sampler_config")
        if config["nuts_sampler"] is None:
            config["nuts_sampler"] = _default_backend()
        for key in ("draws", "chains"):
            if int(config[key]) != config[key] or config[key] < 1:
                raise ValueError(f"sampler_config[{key!r}] must be a positive integer.")
        if int(config["tune"]) != config["tune"] or config["tune"] < 0:
            raise ValueError("sampler_config['tune'] must be a non-negative integer.")
        return config

    # ------------------------------------------------------------------ the PyMC graph
    def build_model(self, train):
        """Build the ``pm.Model`` of the Notes (dims user, item, factor, factor_, obs)."""
        config = self._model_config()
        n_factors = _check_n_factors(self.n_factors)
        noncentered = config["parameterization"] == "noncentered"
        coords = {
            "user": np.arange(train.n_users),
            "item": np.arange(train.n_items),
            "factor": np.arange(n_factors),
            "factor_": np.arange(n_factors),
            "obs": np.arange(train.n_ratings),
        }
        with pm.Model(coords=coords) as model:
            mu = pm.Normal("mu", float(train.values.mean()), config["mu_sd"])
            factors = {}
            for side, dim in (("U", "user"), ("V", "item")):
                if _factor_means(config):
                    mean = pm.Normal(f"mu_{side}", 0.0, config["factor_mean_sd"], dims="factor")
                else:  # the biases carry the mean effects; a zero mean keeps the layout
                    mean = pm.Deterministic(f"mu_{side}", pt.zeros(n_factors), dims="factor")
                chol = _cholesky_prior(f"chol_{side}", n_factors, config)
                pm.Deterministic(f"Sigma_{side}", chol @ chol.T, dims=("factor", "factor_"))
                if noncentered:
                    z = pm.Normal(f"{side}_z", 0.0, 1.0, dims=(dim, "factor"))
                    factors[side] = pm.Deterministic(side, mean + z @ chol.T, dims=(dim, "factor"))
                else:
                    factors[side] = pm.MvNormal(side, mean, chol=chol, dims=(dim, "factor"))
            biases = {}
            if config["biases"]:
                for name, dim, counts in (
                    ("user_bias", "user", _counts(train.user_codes, train.n_users)),
                    ("item_bias", "item", _counts(train.item_codes, train.n_items)),
                ):
                    scale = pm.HalfNormal(f"{name}_sd", config["bias_scale_sd"])
                    biases[name] = _bias_block(name, dim, scale, _centred_rows(counts, config))
            if config["sigma"] is None:
                sigma = pm.HalfNormal("sigma", config["sigma_sd"])
            else:
                sigma = float(config["sigma"])
            rating_likelihood(
                train, mu, factors["U"], factors["V"], biases.get("user_bias"),
                biases.get("item_bias"), sigma, fused=config["fused_likelihood"],
            )
        return model

    # ------------------------------------------------------------------ fitting
    def fit(self, train):
        """Fit PMF by MAP, then sample the posterior from it; returns self."""
        n_factors = _check_n_factors(self.n_factors)
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}.")
        model_config = self._model_config()
        sampler_config = self._sampler_config()
        if self.method == "nuts":
            _check_backend(sampler_config["nuts_sampler"])
        train = self._start_fit(train)
        progressbar = resolve_progressbar(self.progressbar)
        seeds = np.random.SeedSequence(self.random_state).generate_state(3)
        pmf = PMF(
            n_factors,
            model_config={
                **model_config["map_config"],
                "biases": model_config["biases"],
                "sigma": model_config["sigma"],
            },
            random_state=int(seeds[0]),
            progressbar=progressbar,
        ).fit(train)
        self.map_ = pmf.map_
        rng = np.random.default_rng(seeds[1])
        if self.method == "nuts":
            posterior, sample_stats = self._sample_nuts(
                train, model_config, sampler_config, int(seeds[2]), progressbar
            )
        else:
            posterior, sample_stats = self._sample_gibbs(
                train, model_config, sampler_config, int(seeds[2]), progressbar
            )
        if "sigma" not in posterior:
            shape = posterior["mu"].shape
            posterior["sigma"] = np.full(shape, float(model_config["sigma"]))
        extra = {"map_estimate": xr.Dataset(
            {name: (POSTERIOR_DIMS[name], value) for name, value in self.map_.items()}
        )}
        self.idata_ = make_datatree(
            posterior, train, n_factors=n_factors, sample_stats=sample_stats, extra=extra
        )
        self._add_requested_groups(train, sampler_config, rng)
        self.diagnostics_ = self._diagnose()
        return self

    def _initial_point(self, train, model_config, rng=None, jitter=0.0, point=None):
        """A state (the MAP by default) as a PyMC initial point (constrained values)."""
        point = self.map_ if point is None else point
        point = {name: np.array(value, dtype=np.float64) for name, value in point.items()}
        if rng is not None and jitter > 0:
            for name, value in point.items():
                spread = float(np.std(value)) if value.size > 1 else abs(float(value)) * 0.1
                point[name] = value + rng.normal(0.0, jitter * max(spread, 1e-3), value.shape)
            point["sigma"] = np.abs(point["sigma"])
        init = {"mu": point["mu"]}
        if model_config["sigma"] is None:
            init["sigma"] = point["sigma"]
        n_factors = point["U"].shape[1]
        noncentered = model_config["parameterization"] == "noncentered"
        for side in ("U", "V"):
            factors = point[side]
            if _factor_means(model_config):
                mean = factors.mean(0)
                init[f"mu_{side}"] = mean
                cov = np.atleast_2d(np.cov(factors, rowvar=False))
            else:  # second moments about the model's fixed zero mean
                mean = np.zeros(n_factors)
                cov = factors.T @ factors / len(factors)
            cov = cov + 1e-3 * np.eye(n_factors)
            chol = np.linalg.cholesky(cov)
            init[f"chol_{side}"] = (
                np.sqrt(cov[0, 0:1]) if n_factors == 1 else chol[np.tril_indices(n_factors)]
            )
            if noncentered:
                init[f"{side}_z"] = np.linalg.solve(chol, (factors - mean).T).T
            else:
                init[side] = factors
        if model_config["biases"]:
            for name, counts in (
                ("user_bias", _counts(train.user_codes, train.n_users)),
                ("item_bias", _counts(train.item_codes, train.n_items)),
            ):
                bias = point[name]
                scale = max(float(np.sqrt(np.mean(bias**2))), 1e-2)
                init[f"{name}_sd"] = np.asarray(scale)
                centred = _centred_rows(counts, model_config)
                if centred.all():
                    init[name] = bias
                elif not centred.any():
                    init[f"{name}_z"] = bias / scale
                else:
                    init[f"{name}_c"] = bias[centred]
                    init[f"{name}_z"] = bias[~centred] / scale
        return init

    def _chain_start(self, train, model_config, sampler_config, seed):
        """The start of one NUTS chain: the MAP, moved into the posterior bulk by Gibbs sweeps.

        The MAP of a model with ~30,000 parameters sits far from the typical set (its factors
        are shrunk and its noise underestimated); NUTS warm-up then spends most of its time
        travelling, and a chain can settle with one factor still shrunk (a slow mode that left
        R-hat(sigma) at 1.3-1.8 on ML-100K). ``init="gibbs"`` runs ``init_sweeps`` sweeps of
        the conjugate Gibbs sampler from the MAP, seeded per chain, so every chain starts from
        its own draw near the posterior; ``init="map"`` starts from the MAP itself.
        """
        if sampler_config["init"] == "map" or int(sampler_config["init_sweeps"]) == 0:
            jitter = float(sampler_config["init_jitter"])
            return self._initial_point(train, model_config, np.random.default_rng(seed), jitter)
        from bpmf.inference.wishart_gibbs import DEFAULT_GIBBS_CONFIG, sample_gibbs

        state = sample_gibbs(
            train.user_codes, train.item_codes, train.values, train.n_users, train.n_items,
            n_factors=int(self.n_factors), draws=1, tune=int(sampler_config["init_sweeps"]) - 1,
            chains=1, biases=bool(model_config["biases"]),
            model_config={**DEFAULT_GIBBS_CONFIG, "noise_sd": model_config["sigma"]},
            init=dict(self.map_), random_state=seed, progressbar=False,
        )
        point = {name: np.asarray(state[name])[0, -1] for name in self.map_ if name in state}
        if "sigma" not in point:
            point["sigma"] = self.map_["sigma"]
        return self._initial_point(train, model_config, point=point)

    def _sample_nuts(self, train, model_config, sampler_config, seed, progressbar):
        model = self.build_model(train)
        backend = sampler_config["nuts_sampler"]
        chains = int(sampler_config["chains"])
        var_names = [n for n in POSTERIOR_DIMS if n in model.named_vars]
        chain_seeds = np.random.SeedSequence(seed).generate_state(chains)

        def start(chain_seed):
            return self._chain_start(train, model_config, sampler_config, int(chain_seed))

        if backend == "nutpie":
            # the MAP point fixes the layout nutpie compiles for; each chain then asks start()
            template = self._initial_point(train, model_config)
            tree = _sample_nutpie(
                model, template, start, sampler_config, var_names, seed, progressbar
            )
        else:
            kwargs = {"nuts": {"max_treedepth": int(sampler_config["max_treedepth"])}}
            if backend == "pymc":
                kwargs["init"] = "adapt_diag"
            with model, threadpool_limits(limits=1, user_api="blas"):
                tree = pm.sample(
                    draws=int(sampler_config["draws"]),
                    tune=int(sampler_config["tune"]),
                    chains=chains,
                    cores=int(sampler_config["cores"]),
                    target_accept=float(sampler_config["target_accept"]),
                    nuts_sampler=backend,
                    initvals=[start(s) for s in chain_seeds],
                    random_seed=seed,
                    progressbar=progressbar,
                    var_names=var_names,
                    compute_convergence_checks=False,
                    **kwargs,
                )
        posterior = {
            name: tree["posterior"][name].values for name in var_names if name in tree["posterior"]
        }
        stats = tree["sample_stats"].to_dataset() if "sample_stats" in tree.children else None
        if stats is not None:
            keep = [
                v
                for v in stats.data_vars
                if set(stats[v].dims) <= {"chain", "draw"} and stats[v].dtype != object
            ]
            stats = stats[keep].drop_vars(
                [c for c in stats.coords if c not in ("chain", "draw")], errors="ignore"
            )
            stats = stats.assign_coords(
                chain=np.arange(stats.sizes["chain"]), draw=np.arange(stats.sizes["draw"])
            )
        return posterior, stats

    def _sample_gibbs(self, train, model_config, sampler_config, seed, progressbar):
        from bpmf.inference.wishart_gibbs import sample_gibbs

        posterior = sample_gibbs(
            train.user_codes,
            train.item_codes,
            train.values,
            train.n_users,
            train.n_items,
            n_factors=int(self.n_factors),
            draws=int(sampler_config["draws"]),
            tune=int(sampler_config["tune"]),
            chains=int(sampler_config["chains"]),
            biases=bool(model_config["biases"]),
            model_config={**model_config, "noise_sd": model_config["sigma"]},
            init=dict(self.map_),
            random_state=seed,
            progressbar=progressbar,
        )
        posterior = {name: np.asarray(value) for name, value in posterior.items()}
        stats = {
            name: value
            for name, value in posterior.items()
            if name not in POSTERIOR_DIMS and value.ndim == 2
        }
        return posterior, (stats or None)

    def _add_requested_groups(self, train, sampler_config, rng):
        """Pointwise log-likelihood and posterior predictive at the training pairs, on request."""
        if not (sampler_config["log_likelihood"] or sampler_config["posterior_predictive"]):
            return
        n_chains, n_draws = self._sample_shape()
        expected = self._expected_draws(train.user_codes, train.item_codes)
        sigma = self._draws()["sigma"][:, None]
        coords = self.idata_["observed_data"].ds.coords
        groups = {}
        if sampler_config["log_likelihood"]:
            z = (train.values[None, :] - expected) / sigma
            loglik = -0.5 * z**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
            groups["log_likelihood"] = _obs_dataset(loglik, n_chains, n_draws, coords)
        if sampler_config["posterior_predictive"]:
            draws = expected + rng.standard_normal(expected.shape) * sigma
            groups["posterior_predictive"] = _obs_dataset(draws, n_chains, n_draws, coords)
        for name, ds in groups.items():
            self.idata_[name] = xr.DataTree(ds)

    # ------------------------------------------------------------------ diagnostics
    def _diagnose(self):
        stats = self.idata_["sample_stats"].ds if "sample_stats" in self.idata_.children else {}
        diagnostics = {"divergences": None, "max_treedepth_hits": None}
        if "diverging" in stats:
            diagnostics["divergences"] = int(stats["diverging"].values.sum())
        for name in ("reached_max_treedepth", "maxdepth_reached"):
            if name in stats:
                diagnostics["max_treedepth_hits"] = int(stats[name].values.sum())
        n_chains, n_draws = self._sample_shape()
        if n_chains > 1 and n_draws >= 4:
            sigma = self.idata_["posterior"].ds[["sigma"]]
            diagnostics["rhat_sigma"] = float(az.rhat(sigma)["sigma"])
            diagnostics["ess_bulk_sigma"] = float(az.ess(sigma, method="bulk")["sigma"])
        if diagnostics["divergences"]:
            _log.warning(
                "%d divergent transitions after tuning; consider a higher target_accept.",
                diagnostics["divergences"],
            )
        if diagnostics["max_treedepth_hits"]:
            _log.warning(
                "%d draws hit the maximum tree depth; consider more tuning or max_treedepth.",
                diagnostics["max_treedepth_hits"],
            )
        if diagnostics.get("rhat_sigma", 1.0) > _RHAT_WARN:
            # on ML-100K the 2 x 500 default draws gave R-hat(sigma) 1.000-1.034 by seed
            _log.warning(
                "R-hat of sigma is %.3f (> %.2f): the chains disagree; sample more draws or "
                "chains (sampler_config) before trusting intervals.",
                diagnostics["rhat_sigma"], _RHAT_WARN,
            )
        return diagnostics

    def summary(self, n_pairs=10, random_state=0, **kwargs):
        """Posterior summary (arviz-stats) of the identifiable quantities.

        ``sigma``, ``mu``, the bias scales and the expected rating of ``n_pairs`` training pairs
        drawn at random. Raw factors are left out: they are identified only up to a rotation,
        so their R-hat says nothing about convergence.

        Parameters
        ----------
        n_pairs : int, default 10
        random_state : int, default 0
            Chooses the pairs.
        **kwargs
            Passed to :func:`arviz.summary` (e.g. ``kind="diagnostics"``).
        """
        self._check_is_fitted()
        observed = self.idata_["observed_data"].ds
        rng = np.random.default_rng(random_state)
        rows = np.sort(rng.choice(observed.sizes["obs"], min(n_pairs, observed.sizes["obs"]),
                                  replace=False))
        users = self.user_index_.get_indexer(
            _as_index_values(observed["obs_user"].values[rows], self.user_index_)
        )
        items = self.item_index_.get_indexer(
            _as_index_values(observed["obs_item"].values[rows], self.item_index_)
        )
        n_chains, n_draws = self._sample_shape()
        predicted = self._expected_draws(users, items).reshape(n_chains, n_draws, -1)
        posterior = self.idata_["posterior"].ds
        names = [n for n in ("sigma", "mu", "user_bias_sd", "item_bias_sd") if n in posterior]
        ds = posterior[names].drop_vars(
            [c for c in posterior.coords if c not in ("chain", "draw")], errors="ignore"
        )
        labels = [f"{u}, {i}" for u, i in zip(observed["obs_user"].values[rows],
                                               observed["obs_item"].values[rows], strict=True)]
        ds["rating_pred"] = (("chain", "draw", "pair"), predicted)
        ds = ds.assign_coords(pair=labels)
        return az.summary(xr.DataTree.from_dict({"posterior": ds}), **kwargs)


def _as_index_values(values, index):
    from bpmf.models._posterior import _ids_like

    return _ids_like(values, index)


def _obs_dataset(values, n_chains, n_draws, coords):
    return xr.Dataset(
        {"rating": (("chain", "draw", "obs"), values.reshape(n_chains, n_draws, -1))},
        coords={"chain": np.arange(n_chains), "draw": np.arange(n_draws), **coords},
    )


def _factor_means(config):
    """Whether ``mu_U``, ``mu_V`` are free parameters (by default only without biases)."""
    choice = config["factor_means"]
    return (not config["biases"]) if choice == "auto" else bool(choice)


def _counts(codes, n):
    return np.bincount(np.asarray(codes), minlength=n)


def _centred_rows(counts, config):
    """Boolean mask of the rows (users or items) whose bias is sampled centred."""
    choice = config["bias_parameterization"]
    if choice == "centered":
        return np.ones(counts.shape, dtype=bool)
    if choice == "noncentered":
        return np.zeros(counts.shape, dtype=bool)
    return counts >= int(config["bias_center_min"])


def _bias_block(name, dim, scale, centred):
    """Biases ``b ~ Normal(0, scale)``, centred on the rows in ``centred``, non-centred elsewhere.

    A bias informed by many ratings is sampled directly (non-centring it would tie its
    standard-normal coordinate to ``scale`` and slow ``scale`` down); one informed by a few is
    sampled as ``scale * z`` (centring it would make a funnel with ``scale``).
    """
    if centred.all():
        return pm.Normal(name, 0.0, scale, dims=dim)
    if not centred.any():
        return pm.Deterministic(name, scale * pm.Normal(f"{name}_z", 0.0, 1.0, dims=dim), dims=dim)
    rich, poor = np.flatnonzero(centred), np.flatnonzero(~centred)
    bias = pt.zeros(centred.size)
    bias = pt.set_subtensor(bias[rich], pm.Normal(f"{name}_c", 0.0, scale, shape=rich.size))
    bias = pt.set_subtensor(bias[poor], scale * pm.Normal(f"{name}_z", 0.0, 1.0, shape=poor.size))
    return pm.Deterministic(name, bias, dims=dim)


def _cholesky_prior(name, n_factors, config):
    """Cholesky factor of a covariance with an LKJ correlation and HalfNormal scales."""
    if n_factors == 1:  # LKJ needs two dimensions; a 1 x 1 covariance is just a variance
        scale = pm.HalfNormal(name, config["factor_scale_sd"], shape=1)
        return pt.reshape(scale, (1, 1))
    packed = pm.LKJCholeskyCov(
        name,
        n=n_factors,
        eta=config["lkj_eta"],
        sd_dist=pm.HalfNormal.dist(config["factor_scale_sd"], shape=n_factors),
        compute_corr=False,
    )
    return _unpack_lower(packed, n_factors)


def _unpack_lower(packed, n):
    """The ``n x n`` lower-triangular matrix whose row-major lower triangle is ``packed``.

    Built as a product with a constant 0/1 matrix rather than PyMC's ``set_subtensor``
    unpacking, so the gradient is a matrix-vector product. Through the index, PyTensor's
    ``local_advanced_subtensor_of_dot`` rewrites the gradient of ``z @ chol.T`` into gathers
    of ``n (n + 1) / 2`` transposed columns of ``z`` and of its cotangent: on ML-100K u1 the
    log-density + gradient took 1.65 ms (numba) and 3.39 ms (C) that way, 1.48 and 2.60 ms
    this way, measured side by side.
    """
    rows, cols = np.tril_indices(n)
    selector = np.zeros((n * n, rows.size))
    selector[rows * n + cols, np.arange(rows.size)] = 1.0
    return pt.dot(pt.constant(selector), packed).reshape((n, n))


def _sample_nutpie(model, template, start, sampler_config, var_names, seed, progressbar):
    """``pm.sample(nuts_sampler="nutpie")`` with a start of its own for every chain.

    ``pm.sample`` hands nutpie one initial point for all chains. nutpie asks for each chain's
    start through ``initial_point_func(chain_seed)`` (the seeds are a fixed function of
    ``seed``), so replacing that function with ``start(chain_seed)`` gives every chain its own
    reproducible start. ``template`` is any initial point of the model (it only fixes the
    variables' shapes for compilation).
    """
    import dataclasses
    import threading

    import nutpie
    import pytensor
    from nutpie.compile_pymc import _rv_dict_to_flat_array_wrapper
    from pymc.initial_point import make_initial_point_fn
    from pymc.progress_bar import NutpieProgressBarManager

    shared = {name: pytensor.shared(np.asarray(value, dtype=np.float64))
              for name, value in template.items()}
    point_fn = make_initial_point_fn(
        model=model, overrides=shared, jitter_rvs=set(), return_transformed=True
    )
    compiled = nutpie.compile_pymc_model(model, var_names=var_names, initial_points=template,
                                         jitter_rvs=set())
    values = [model.rvs_to_values[rv] for rv in model.free_RVs]
    ip = point_fn(0)
    flat_fn = _rv_dict_to_flat_array_wrapper(
        point_fn, [v.name for v in values], [np.shape(ip[v.name]) for v in values]
    )
    lock = threading.Lock()

    def initial_point(chain_seed):
        with lock:
            for name, value in start(int(chain_seed) % 2**63).items():
                shared[name].set_value(np.asarray(value, dtype=np.float64))
            return flat_fn(None)

    compiled = dataclasses.replace(compiled, initial_point_func=initial_point)
    chains = int(sampler_config["chains"])
    draws = int(sampler_config["draws"])
    # One BLAS thread per chain: the chains are the parallelism, and OpenBLAS choosing between
    # its threaded and serial paths by timing makes the draws depend on the machine's load.
    with (
        threadpool_limits(limits=1, user_api="blas"),
        NutpieProgressBarManager(chains=chains, draws=draws, progressbar=progressbar) as bar,
    ):
        tree = nutpie.sample(
            compiled,
            draws=draws,
            tune=max(int(sampler_config["tune"]), 1),
            chains=chains,
            cores=int(sampler_config["cores"]),
            seed=int(seed),
            target_accept=float(sampler_config["target_accept"]),
            maxdepth=int(sampler_config["max_treedepth"]),
            adaptation=sampler_config["adaptation"],
            progress_bar=False,
            progress_callback=bar.update,
        )
    return tree


def _check_backend(backend):
    if backend not in NUTS_BACKENDS:
        raise ValueError(
            f"Unknown nuts_sampler {backend!r}; choose one of {sorted(NUTS_BACKENDS)}."
        )
    modules, extra = NUTS_BACKENDS[backend]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"nuts_sampler={backend!r} needs {', '.join(missing)}, which is not installed; "
            f"install it with `pip install {' '.join(missing)}` (or `pip install bpmf[{extra}]`)."
        )
