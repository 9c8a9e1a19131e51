"""Probabilistic Matrix Factorization (Salakhutdinov & Mnih, 2007) with biases, fitted by MAP."""

from __future__ import annotations

import numpy as np
import pymc as pm

from bpmf._config import resolve_progressbar
from bpmf._validation import check_n_factors
from bpmf.inference.map import fit_map
from bpmf.kernels.likelihood import rating_likelihood
from bpmf.models._posterior import PosteriorModel, make_datatree


def merge_config(defaults, overrides, what):
    """``defaults`` updated with ``overrides``; unknown keys raise ``ValueError``."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"Unknown {what} key(s) {unknown}; valid keys: {sorted(defaults)}.")
    return {**defaults, **overrides}


class PMF(PosteriorModel):
    r"""Probabilistic Matrix Factorization with user and item biases, fitted by MAP.

    Parameters
    ----------
    n_factors : int, default 10
        Number of latent factors ``D``.
    model_config : dict, optional
        Prior settings merged over :attr:`default_model_config`:

        - ``factor_sd`` (0.25): prior sd of every entry of ``U`` and ``V`` (precision
          ``lambda_U = lambda_V = 1 / factor_sd**2``);
        - ``bias_sd`` (1.0): prior sd of the user and item biases;
        - ``biases`` (True): include the bias terms;
        - ``mu_sd`` (1.0): prior sd of the intercept around the training mean;
        - ``sigma`` (None): fixed observation noise sd, or None to estimate it under a
          ``HalfNormal(sigma_sd)`` prior;
        - ``sigma_sd`` (1.0);
        - ``init_sd`` (0.1): sd of the random starting point of the factors;
        - ``maxiter`` (2000): L-BFGS iterations;
        - ``fused_likelihood`` (True): the likelihood and its gradient as one fused Op
          (a ``pm.Potential`` named ``rating``); False builds ``pm.Normal(observed=...)``.
    random_state : int, optional
        Seeds the random starting point; the same seed gives the same MAP.
    progressbar : bool, optional
        Show the optimiser's progress bar; None uses the package-wide setting.
    rating_scale : tuple of float, optional
        ``(low, high)`` of the ratings, used to clip predictions; None infers it from the
        training data (with a warning when they do not span a plausible scale).

    Attributes
    ----------
    map_ : dict of str -> ndarray
        The MAP estimate (``U``, ``V``, ``mu``, ``sigma``, ``user_bias``, ``item_bias``).
    idata_ : xarray.DataTree
        The MAP as a one-draw ``posterior`` group, plus ``observed_data`` and
        ``optimizer_result`` (iterations, final negative log posterior, convergence message).

    Notes
    -----
    The generative model, for observed pairs :math:`(i, j)` only:

    .. math::

        U_{ik}, V_{jk} &\sim \mathcal N(0, s_f^2), \qquad
        b_i, c_j \sim \mathcal N(0, s_b^2), \qquad
        \mu \sim \mathcal N(\bar r, s_\mu^2), \qquad
        \sigma \sim \mathcal N^+(0, s_\sigma^2) \\
        r_{ij} &\sim \mathcal N(\mu + b_i + c_j + U_i^\top V_j, \sigma^2)

    ``fit`` maximises the log posterior with L-BFGS (``pm.find_MAP``) from a small random
    point: ``U = V = 0`` is a saddle point where the optimiser would stall at the
    global-mean solution. The MAP is a point estimate: :meth:`predict_interval` and
    :meth:`recommend` treat it as a one-draw posterior (only the noise is uncertain).
    """

    default_model_config = {
        "factor_sd": 0.25,
        "bias_sd": 1.0,
        "biases": True,
        "mu_sd": 1.0,
        "sigma": None,
        "sigma_sd": 1.0,
        "init_sd": 0.1,
        "maxiter": 2000,
        "fused_likelihood": True,
    }

    def __init__(self, n_factors=10, model_config=None, random_state=None, progressbar=None,
                 rating_scale=None):
        self.n_factors = n_factors
        self.rating_scale = rating_scale
        self.model_config = model_config
        self.random_state = random_state
        self.progressbar = progressbar

    # ------------------------------------------------------------------ the PyMC graph
    def build_model(self, train):
        """The ``pm.Model`` of the Notes, with coords ``user``, ``item``, ``factor``, ``obs``."""
        config = merge_config(self.default_model_config, self.model_config, "model_config")
        n_factors = check_n_factors(self.n_factors)
        coords = {
            "user": np.arange(train.n_users),
            "item": np.arange(train.n_items),
            "factor": np.arange(n_factors),
            "obs": np.arange(train.n_ratings),
        }
        with pm.Model(coords=coords) as model:
            mu = pm.Normal("mu", float(train.values.mean()), config["mu_sd"])
            U = pm.Normal("U", 0.0, config["factor_sd"], dims=("user", "factor"))
            V = pm.Normal("V", 0.0, config["factor_sd"], dims=("item", "factor"))
            user_bias = item_bias = None
            if config["biases"]:
                user_bias = pm.Normal("user_bias", 0.0, config["bias_sd"], dims="user")
                item_bias = pm.Normal("item_bias", 0.0, config["bias_sd"], dims="item")
            if config["sigma"] is None:
                sigma = pm.HalfNormal("sigma", config["sigma_sd"])
            else:
                if not config["sigma"] > 0:
                    raise ValueError(f"model_config['sigma'] must be > 0, got {config['sigma']!r}.")
                sigma = float(config["sigma"])
            rating_likelihood(
                train, mu, U, V, user_bias, item_bias, sigma, fused=config["fused_likelihood"]
            )
        return model

    # ------------------------------------------------------------------ fitting
    def fit(self, train):
        """Find the MAP of the model on ``train`` (a Ratings or a DataFrame); returns self."""
        check_n_factors(self.n_factors)
        config = merge_config(self.default_model_config, self.model_config, "model_config")
        train = self._start_fit(train)
        self.map_, result = fit_map(
            self.build_model(train),
            train,
            n_factors=int(self.n_factors),
            config=config,
            random_state=self.random_state,
            progressbar=resolve_progressbar(self.progressbar),
        )
        posterior = {name: value[None, None] for name, value in self.map_.items()}
        self.idata_ = make_datatree(
            posterior, train, n_factors=int(self.n_factors), extra={"optimizer_result": result}
        )
        return self
