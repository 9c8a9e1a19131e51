"""Shared machinery of the models whose fit is a posterior (or a MAP point) in a DataTree.

Every model here stores its result as an ArviZ 1.x ``DataTree`` in ``idata_`` whose
``posterior`` group holds the variables of the rating model

.. math::

    r_{ui} = \\mu + b_u + c_i + U_u^\\top V_i + \\varepsilon, \\qquad
    \\varepsilon \\sim \\mathcal N(0, \\sigma^2)

under the names ``mu``, ``user_bias``, ``item_bias``, ``U``, ``V``, ``sigma`` (plus the
population-level ``mu_U``, ``mu_V``, ``Sigma_U``, ``Sigma_V``, ``user_bias_sd``,
``item_bias_sd`` where the model has them). :class:`PosteriorModel` turns such a tree into
predictions, predictive intervals, predictive draws and recommendations, and persists it.
The NUTS and Gibbs samplers of :class:`bpmf.models.BPMF` and the MAP of
:class:`bpmf.models.PMF` (a single "draw") all go through it.
"""

from __future__ import annotations

import copy
import numbers

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from scipy import special

from bpmf._estimator import RatingEstimator
from bpmf._exceptions import DataError
from bpmf._validation import check_prob, check_threshold, default_threshold, describe
from bpmf.datasets import Ratings, as_pairs, as_ratings, pair_times
from bpmf.datasets._features import frame_from_state
from bpmf.inference.day_bias import day_groups, days_of
from bpmf.inference.features import LINK_DIMS
from bpmf.kernels.predict import column_quantiles, expected_means, expected_ratings
from bpmf.models import ordinal_predictive as ordinal
from bpmf.models._features import FEATURE_KEYS, cold_codes, cold_start_links, extend_features
from bpmf.models._io import ModelIO
from bpmf.models._io import coord_values as _coord_values
from bpmf.models._io import ids_like as _ids_like

#: dims (after chain, draw) of every posterior variable the prediction code understands.
POSTERIOR_DIMS = {
    "U": ("user", "factor"),
    "V": ("item", "factor"),
    "mu_U": ("factor",),
    "mu_V": ("factor",),
    "Sigma_U": ("factor", "factor_"),
    "Sigma_V": ("factor", "factor_"),
    "mu": (),
    "sigma": (),
    "user_bias": ("user",),
    "item_bias": ("item",),
    "user_bias_sd": (),
    "item_bias_sd": (),
    # correlated biases: each bias's covariance with its row's factors
    "user_bias_factor_cov": ("factor",),
    "item_bias_factor_cov": ("factor",),
    **LINK_DIMS,  # side features: links B_U, B_V, user_bias_link, ... and their precisions
    "cutpoints": ("cutpoint",),
    # implicit feedback: the users' ratings see U + offset_U
    "Y": ("item", "factor"),
    "Y_sd": ("factor",),
    "offset_U": ("user", "factor"),
    "offset_mean_U": ("factor",),
    # and the items' (implicit="item" or "both"): V + offset_V
    "Z": ("user", "factor"),
    "Z_sd": ("factor",),
    "offset_V": ("item", "factor"),
    "offset_mean_V": ("factor",),
    # day-specific user biases: one per (user, day) group
    "day_bias": ("user_day",),
    "day_bias_sd": (),
    # noise weights: rating (u, i) has the noise sd sigma / sqrt(a_u c_i)
    "user_noise_weight": ("user",),
    "item_noise_weight": ("item",),
    "noise_df_user": (),
    "noise_df_item": (),
}

# Pairs per block when averaging over draws: bounds memory at about draws x block floats.
_BLOCK = 20_000
#: Predictive draws per block of pairs in ``predict_quantiles`` (draws x pairs): 16 MB
#: arrays stay in the allocator's reused memory and near the caches; larger blocks were
#: slower (fresh pages for every block's draws, noise, sums and their transposed copy).
_PREDICTIVE_BLOCK = 2_000_000
#: Predictive intervals use at least this many draws per pair: with few posterior draws (PMF's
#: single MAP "draw"), each draw's noise is replicated so the quantiles describe the
#: predictive distribution rather than a handful of noisy values.
_MIN_PREDICTIVE_SAMPLES = 1_000


# ---------------------------------------------------------------------- building the tree
def make_datatree(posterior, train, *, n_factors, sample_stats=None, extra=None, coords=None):
    """Wrap posterior arrays into a DataTree with named dims and the original ids as coords.

    Parameters
    ----------
    posterior : dict of str -> ndarray
        Arrays with leading ``(chain, draw)`` axes; names and trailing dims as in
        :data:`POSTERIOR_DIMS` (unknown names are ignored).
    train : Ratings
        The training data (its ids become the ``user``/``item`` coordinates; its ratings the
        ``observed_data`` group).
    n_factors : int
    sample_stats : xarray.Dataset or dict, optional
        Sampler statistics with ``(chain, draw)`` leading dims.
    extra : dict of str -> xarray.Dataset, optional
        Further groups (``log_likelihood``, ``posterior_predictive``, ``map_estimate``, ...).
    coords : dict, optional
        Further coordinates of the posterior (e.g. ``user_feature``: the names of the side
        features; ``cutpoint`` of an ordinal model).
    """
    coords = {
        **(coords or {}),
        "user": _coord_values(train.user_ids),
        "item": _coord_values(train.item_ids),
        "factor": np.arange(n_factors),
        "factor_": np.arange(n_factors),
        **(coords or {}),
    }
    variables = {}
    for name, values in posterior.items():
        if name not in POSTERIOR_DIMS:
            continue
        values = np.asarray(values, dtype=np.float64)
        dims = ("chain", "draw", *POSTERIOR_DIMS[name])
        if values.ndim != len(dims):
            raise ValueError(f"posterior[{name!r}] has shape {values.shape}; expected dims {dims}.")
        variables[name] = (dims, values)
    first = next(iter(variables.values()))[1]
    n_chains, n_draws = first.shape[:2]
    used = {d for dims, _ in variables.values() for d in dims}
    posterior_ds = xr.Dataset(
        variables,
        coords={
            "chain": np.arange(n_chains),
            "draw": np.arange(n_draws),
            **{k: v for k, v in coords.items() if k in used},
        },
    )
    groups = {"posterior": posterior_ds,
              "observed_data": observed_dataset(train, times="user_day" in used)}
    if sample_stats is not None:
        if isinstance(sample_stats, dict):
            sample_stats = xr.Dataset(
                {k: (("chain", "draw"), np.asarray(v)) for k, v in sample_stats.items()},
                coords={"chain": np.arange(n_chains), "draw": np.arange(n_draws)},
            )
        groups["sample_stats"] = sample_stats
    groups.update(extra or {})
    return xr.DataTree.from_dict(groups)


def split_moments(draws, train, *, n_factors, pairs=None):
    """DataTree pieces of a Gibbs fit that kept moments (``sample_gibbs(keep="moments")``).

    The ``posterior`` group must hold joint draws, so that predictions average ``U_u . V_i``
    over draws of both sides: it gets every variable at the retained row draws (the scalars
    and hyperparameters taken at the same positions). Every kept draw of the scalars and
    hyperparameters goes to a ``trace`` group and of the sampler statistics to
    ``trace_stats`` (for diagnostics), the rows' running moments to ``posterior_moments``
    (dims ``chain``, ``user``/``item``, ``factor``) and, when ``pairs``
    (the ``(user_codes, item_codes)`` given as ``predict_pairs``) is given, the running
    moments of their expected ratings to ``pair_moments``.

    Returns
    -------
    posterior : dict for :func:`make_datatree` (empty of ``U``, ``V`` and the biases when no
        row draw was retained)
    sample_stats : dict of the sampler statistics at the same draws
    extra : dict of str -> xarray.Dataset, the further groups
    """
    retained = np.asarray(draws["retained"])
    row_names = ("U", "V", "user_bias", "item_bias", "day_bias")
    n_chains, n_kept = np.asarray(draws["mu"]).shape[:2]
    chain_draw = {"chain": np.arange(n_chains), "draw": np.arange(n_kept)}
    posterior, sample_stats, trace, trace_stats = {}, {}, {}, {}
    for name, values in draws.items():
        if name in row_names:
            posterior[name] = values
        elif name in POSTERIOR_DIMS:
            trace[name] = (("chain", "draw", *POSTERIOR_DIMS[name]), values)
            posterior[name] = values[:, retained] if len(retained) else values
        elif name in ("diverging", "n_steps_U", "n_steps_V"):
            trace_stats[name] = (("chain", "draw"), values)
            sample_stats[name] = values[:, retained] if len(retained) else values
    ids = {"user": _coord_values(train.user_ids), "item": _coord_values(train.item_ids)}
    moments = {}
    for name in row_names:
        if f"{name}_mean" in draws:
            dims = ("chain", *POSTERIOR_DIMS[name])
            moments[f"{name}_mean"] = (dims, draws[f"{name}_mean"])
            moments[f"{name}_var"] = (dims, draws[f"{name}_var"])
    extra = {
        "trace": xr.Dataset(trace, coords=chain_draw),
        "trace_stats": xr.Dataset(trace_stats, coords=chain_draw),
        "posterior_moments": xr.Dataset(
            moments,
            coords={"chain": chain_draw["chain"], **ids, "factor": np.arange(n_factors)},
        ),
    }
    if pairs is not None and "pair_mean" in draws:
        users, items = (np.asarray(codes, dtype=np.int64) for codes in pairs)
        extra["pair_moments"] = xr.Dataset(
            {
                "expected_mean": (("chain", "pair"), draws["pair_mean"]),
                "expected_var": (("chain", "pair"), draws["pair_var"]),
                "user_code": (("pair",), users),
                "item_code": (("pair",), items),
            },
            coords={"chain": chain_draw["chain"], "pair": np.arange(len(users))},
        )
    return posterior, sample_stats, extra


def observed_dataset(train, times=False):
    """The training ratings as the ``observed_data`` group (dim ``obs``, ids as coords; with
    ``times``, their Unix times as ``obs_time``)."""
    coords = {
        "obs": np.arange(train.n_ratings),
        "obs_user": (("obs",), _coord_values(train.user_ids)[train.user_codes]),
        "obs_item": (("obs",), _coord_values(train.item_ids)[train.item_codes]),
    }
    if times:
        coords["obs_time"] = (("obs",), train.times)
    return xr.Dataset({"rating": (("obs",), train.values)}, coords=coords)


# ---------------------------------------------------------------------- the model base class
def _effective_draws(post):
    """The draws ``post`` with implicit feedback's effective vectors ``U + offset_U`` as
    ``U`` and ``V + offset_V`` as ``V`` (``post`` itself without implicit feedback)."""
    effective = {side: post[side] + post[f"offset_{side}"] for side in ("U", "V")
                 if f"offset_{side}" in post}
    return {**post, **effective} if effective else post


def _linear_terms(post):
    """``U, V, mu, user_bias, item_bias`` of the expected rating from the (effective) draws
    ``post``, with ``(draws, 1)`` zeros for a model without biases
    (:func:`bpmf.kernels.predict.expected_ratings`)."""
    no_bias = np.zeros((len(post["mu"]), 1))
    return (post["U"], post["V"], post["mu"], post.get("user_bias", no_bias),
            post.get("item_bias", no_bias))


class PosteriorModel(ModelIO, RatingEstimator):
    """Predictions, intervals, recommendations and persistence from ``idata_``.

    Subclasses set ``idata_`` (and call ``_start_fit``) in ``fit``; everything here reads only
    ``idata_``, the id maps and the scale, so a loaded model behaves like the saved one.
    """

    def _kept_draws(self):
        """Copies of the factors kept by ``fit``: chains x draws of ``_sampler_config()``, or,
        with ``keep="moments"``, chains x (``factor_draws`` + 2: the running mean and
        variance); 1 for a MAP. The base class checks before fitting that they fit in memory."""
        config = getattr(self, "_sampler_config", None)
        if config is None:
            return 1
        settings = config()
        per_chain = int(settings.get("draws", 1))
        if settings.get("keep", "all") == "moments":
            per_chain = min(per_chain, int(settings.get("factor_draws") or 0)) + 2
        return int(settings.get("chains", 1)) * per_chain

    # ------------------------------------------------------------------ posterior access
    def _draws(self):
        """Posterior variables as arrays with one flat leading ``sample`` axis (cached)."""
        self._check_is_fitted()
        key = id(self.idata_)
        cache = getattr(self, "_draws_cache", None)
        if cache is None or cache[0] != key:
            posterior = self.idata_["posterior"].ds
            n_samples = posterior.sizes["chain"] * posterior.sizes["draw"]
            arrays = {
                name: np.asarray(posterior[name].values, dtype=np.float64).reshape(
                    n_samples, *posterior[name].shape[2:]
                )
                for name in POSTERIOR_DIMS
                if name in posterior
            }
            self._draws_cache = (key, arrays)
        return self._draws_cache[1]

    def _noise_sd(self, user_codes, item_codes, rng=None):
        """Each draw's observation noise sd, ``(samples, 1)`` (``sigma``), or per pair
        ``(samples, pairs)`` for a model with noise weights: ``sigma / sqrt(a_u c_i)``.
        An unseen user's (item's) weight is drawn from its Gamma prior per draw with ``rng``,
        and is its prior mean 1 without."""
        post = self._draws()
        sigma = post["sigma"][:, None]
        if "user_noise_weight" not in post:
            return sigma
        weight = np.ones((sigma.shape[0], len(user_codes)))
        for name, df, codes in (("user_noise_weight", "noise_df_user", user_codes),
                                ("item_noise_weight", "noise_df_item", item_codes)):
            codes = np.asarray(codes)
            seen = codes >= 0
            weight[:, seen] *= post[name][:, codes[seen]]
            unseen = int((~seen).sum())
            if unseen and rng is not None:
                half = 0.5 * post[df][:, None]
                weight[:, ~seen] *= rng.gamma(half, 1.0 / half, size=(sigma.shape[0], unseen))
        return sigma / np.sqrt(weight)

    def _sample_shape(self):
        posterior = self.idata_["posterior"].ds
        return posterior.sizes["chain"], posterior.sizes["draw"]

    @property
    def classes_(self):
        """The whole ratings of an ordinal fit: the columns of :meth:`predict_proba`, as a
        scikit-learn classifier's ``classes_``. A Gaussian fit has none (AttributeError)."""
        categories = self._ordinal_categories() if hasattr(self, "idata_") else None
        if categories is None:
            raise AttributeError("classes_ exists for ordinal fits only (whole ratings).")
        return categories

    def _ordinal_categories(self):
        """The whole ratings of an ordinal (ordered-probit) fit, or None for a Gaussian one."""
        posterior = self.idata_["posterior"].ds
        if "cutpoints" not in posterior:
            return None
        return ordinal.categories_from_cutpoints(posterior["cutpoint"].values)

    def _expected_draws(self, user_codes, item_codes, rng=None, days=None):
        """Expected rating ``mu + b_u + c_i + U_u . V_i`` per draw, shape ``(samples, pairs)``,
        plus the pair's day bias for a model with day biases (``days``: the pairs' (user, day)
        groups from :meth:`_pair_days`, see :meth:`_day_effects`).

        Unseen users/items (code -1) get their factor and bias from the population: the
        population means when ``rng`` is None (exact for the posterior mean, the model being
        linear in each of them), fresh draws from ``N(mu_U, Sigma_U)`` / ``N(0, sd^2)`` per
        posterior draw otherwise (for predictive draws and intervals).
        """
        post = self._draws()
        if "U" not in post:
            raise ValueError(
                "This fit kept no draws of the factors (keep='moments' with factor_draws=0): "
                "only predict() of the pairs streamed during the fit (predict_pairs) is "
                "available; refit with factor_draws >= 1 for intervals and recommendations."
            )
        user_codes = np.asarray(user_codes, dtype=np.int64)
        item_codes = np.asarray(item_codes, dtype=np.int64)
        features = getattr(self, "features_", None)
        post = _effective_draws(post)
        expected = expected_ratings(*_linear_terms(post), user_codes, item_codes)
        unseen = (user_codes < 0) | (item_codes < 0)
        if unseen.any():  # population rows (means, or draws with rng) for the unseen ids
            users, items = user_codes[unseen], item_codes[unseen]
            # codes <= -2: unseen ids with side features, predicted from their link means
            user_links = cold_start_links(features, post, "user", users)
            item_links = cold_start_links(features, post, "item", items)
            U, user_biases = side_rows(post, "U", users, rng, user_links)
            V, item_biases = side_rows(post, "V", items, rng, item_links)
            fill = np.einsum("snk,snk->sn", U, V) + post["mu"][:, None]
            for biases in (user_biases, item_biases):
                if biases is not None:
                    fill += biases
            expected[:, unseen] = fill
        day_effects = self._day_effects(days, len(user_codes), rng)
        if day_effects is not None:
            expected += day_effects
        return expected

    # ------------------------------------------------------------------ day biases
    def _pair_days(self, pairs, user_codes):
        """The (user, day) group of each pair for a model with day biases (-1: a user's day
        unseen in training, or no times given), None for a model without them."""
        return self._day_codes(pair_times(pairs), user_codes)

    def _day_codes(self, times, user_codes):
        """:meth:`_pair_days` of pairs at Unix ``times`` (None: no times)."""
        posterior = self.idata_["posterior"].ds
        if "day_bias" not in posterior:
            return None
        if times is None:
            return np.full(len(user_codes), -1, dtype=np.int64)
        users = pd.Index(posterior["user"].values).get_indexer(posterior["user_day_user"].values)
        days = posterior["user_day_day"].values.astype(np.int64)
        groups = pd.MultiIndex.from_arrays([users, days])
        return groups.get_indexer(
            pd.MultiIndex.from_arrays([np.asarray(user_codes, dtype=np.int64), days_of(times)])
        ).astype(np.int64)

    def _day_effects(self, days, n_pairs, rng=None):
        """Each pair's day bias per draw, ``(samples, pairs)`` (None for a model without day
        biases): the draws of its (user, day) group; for a pair of an unseen day (or
        ``days`` None) the prior mean 0 when ``rng`` is None, else fresh draws from
        ``N(0, s_d^2)`` per posterior draw (for predictive draws and intervals)."""
        post = self._draws()
        if "day_bias" not in post:
            return None
        days = np.full(n_pairs, -1, dtype=np.int64) if days is None else np.asarray(days)
        effects = np.zeros((len(post["mu"]), n_pairs))
        known = days >= 0
        effects[:, known] = post["day_bias"][:, days[known]]
        if rng is not None and not known.all():
            noise = rng.standard_normal((len(post["mu"]), int((~known).sum())))
            effects[:, ~known] = noise * post["day_bias_sd"][:, None]
        return effects

    def _day_means(self, days):
        """The posterior mean day bias of each pair (0 for unseen days); 0 without them."""
        if days is None:
            return 0.0
        known = days >= 0
        means = np.zeros(len(days))
        means[known] = self._draws()["day_bias"].mean(0)[days[known]]
        return means

    def _streamed_means(self, user_codes, item_codes):
        """Posterior means of the expected ratings streamed during the fit (``pair_moments``),
        averaged over chains; for fits that kept no draws of the factors."""
        if "pair_moments" not in self.idata_.children:
            raise ValueError(
                "This fit kept no draws of the factors and streamed no pairs: it cannot "
                "predict; refit with keep='moments' and factor_draws >= 1 (or predict_pairs)."
            )
        streamed = self.idata_["pair_moments"].ds
        known = pd.Series(
            np.arange(streamed.sizes["pair"]),
            index=pd.MultiIndex.from_arrays(
                [streamed["user_code"].values, streamed["item_code"].values]
            ),
        )
        known = known[~known.index.duplicated()]
        positions = known.reindex(pd.MultiIndex.from_arrays([user_codes, item_codes]))
        if positions.isna().any():
            raise ValueError(
                f"{int(positions.isna().sum())} pair(s) were not streamed during the fit "
                "(predict_pairs), and this fit kept no draws of the factors to predict them; "
                "refit with factor_draws >= 1."
            )
        means = streamed["expected_mean"].values.mean(0)
        return means[positions.to_numpy(dtype=np.int64)]

    def _prepare_pairs(self, pairs, on_unseen):
        self._check_is_fitted()
        users, items = _pair_ids(pairs)
        features = getattr(self, "features_", None)
        # unseen ids with a side-feature row get codes <= -2 and are not reported as unseen
        user_codes = cold_codes(features, "user", users, self.user_index_.get_indexer(users))
        item_codes = cold_codes(features, "item", items, self.item_index_.get_indexer(items))
        self._handle_unseen(np.where(user_codes <= -2, 0, user_codes),
                            np.where(item_codes <= -2, 0, item_codes), on_unseen, users, items)
        return user_codes, item_codes

    def _add_requested_groups(self, train, log_likelihood, posterior_predictive, rng):
        """Pointwise log-likelihood and posterior predictive at the training pairs, on request."""
        if not (log_likelihood or posterior_predictive):
            return
        n_chains, n_draws = self._sample_shape()
        expected = self._expected_draws(train.user_codes, train.item_codes,
                                        days=self._pair_days(train, train.user_codes))
        sigma = self._noise_sd(train.user_codes, train.item_codes)
        coords = self.idata_["observed_data"].ds.coords
        groups = {}
        categories = self._ordinal_categories()
        if categories is not None:  # ordered probit: whole ratings
            cutpoints = self._draws()["cutpoints"]
            if log_likelihood:
                groups["log_likelihood"] = ordinal.pointwise_log_likelihood(
                    expected, cutpoints, train.values, categories[0]
                )
            if posterior_predictive:
                groups["posterior_predictive"] = ordinal.predictive_draws(
                    expected, cutpoints, categories, rng
                )
        if log_likelihood and categories is None:
            z = (train.values[None, :] - expected) / sigma
            groups["log_likelihood"] = -0.5 * z**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
        if posterior_predictive and categories is None:
            groups["posterior_predictive"] = expected + rng.standard_normal(expected.shape) * sigma
        for name, values in groups.items():
            self.idata_[name] = xr.DataTree(
                xr.Dataset(
                    {"rating": (("chain", "draw", "obs"), values.reshape(n_chains, n_draws, -1))},
                    coords={"chain": np.arange(n_chains), "draw": np.arange(n_draws), **coords},
                )
            )

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
        rows = np.sort(
            rng.choice(observed.sizes["obs"], min(n_pairs, observed.sizes["obs"]), replace=False)
        )
        # the posterior's coordinates list the ids in code order, in the form obs_* uses
        posterior = self.idata_["posterior"].ds
        users = pd.Index(posterior["user"].values).get_indexer(observed["obs_user"].values[rows])
        items = pd.Index(posterior["item"].values).get_indexer(observed["obs_item"].values[rows])
        n_chains, n_draws = self._sample_shape()
        times = observed["obs_time"].values[rows] if "obs_time" in observed.coords else None
        predicted = self._expected_draws(
            users, items, days=self._day_codes(times, users)
        ).reshape(n_chains, n_draws, -1)
        names = [n for n in ("sigma", "mu", "user_bias_sd", "item_bias_sd") if n in posterior]
        ds = posterior[names].drop_vars(
            [c for c in posterior.coords if c not in ("chain", "draw")], errors="ignore"
        )
        labels = [
            f"{u}, {i}"
            for u, i in zip(
                observed["obs_user"].values[rows], observed["obs_item"].values[rows], strict=True
            )
        ]
        ds["rating_pred"] = (("chain", "draw", "pair"), predicted)
        ds = ds.assign_coords(pair=labels)
        return az.summary(xr.DataTree.from_dict({"posterior": ds}), **kwargs)

    # ------------------------------------------------------------------ predictions
    def predict(self, pairs, *, clip=True, on_unseen="warn"):
        """Posterior mean of the expected rating of each pair (the average of the predictions).

        Parameters
        ----------
        pairs : DataFrame with columns ``user``, ``item`` (or a Ratings)
        clip : bool, default True
            Clip to the training rating scale (no effect when the scale is ``None``).
        on_unseen : {"warn", "raise", "ignore"}, default "warn"
            Users or items unseen in training are predicted from the population level
            (hierarchical means, zero bias); ``"warn"`` says how many, ``"raise"`` refuses.

        Returns
        -------
        ndarray of float, aligned with the rows of ``pairs``. For an ordinal model, the
        expected rating under the predictive distribution (:meth:`predict_proba`).
        """
        user_codes, item_codes = self._prepare_pairs(pairs, on_unseen)
        days = self._pair_days(pairs, user_codes)
        categories = self._ordinal_categories()
        if "U" not in self._draws():
            if categories is not None:
                raise ValueError("An ordinal fit needs retained factor draws to predict; "
                                 "refit with factor_draws >= 1.")
            streamed = self._streamed_means(user_codes, item_codes) + self._day_means(days)
            return self._clip(streamed, clip)
        means = np.empty(len(user_codes))
        rest = np.arange(len(user_codes))
        if categories is None:  # the mean of a linear function: accumulated draw by draw
            user_codes = np.asarray(user_codes, dtype=np.int64)
            item_codes = np.asarray(item_codes, dtype=np.int64)
            seen = (user_codes >= 0) & (item_codes >= 0)
            means[seen] = expected_means(
                *_linear_terms(_effective_draws(self._draws())), user_codes[seen],
                item_codes[seen],
            )
            if days is not None:  # the mean of a sum: the day biases' posterior means
                means[seen] += self._day_means(days[seen])
            rest = np.flatnonzero(~seen)
        for start in range(0, len(rest), _BLOCK):
            block = rest[start:start + _BLOCK]
            expected = self._expected_draws(user_codes[block], item_codes[block],
                                            days=None if days is None else days[block])
            if categories is None:
                means[block] = expected.mean(0)
            else:
                cdf = ordinal.mean_cdf(expected, self._draws()["cutpoints"])
                means[block] = ordinal.expected_rating(cdf, categories[0])
        return self._clip(means, clip)

    def predict_proba(self, pairs, *, on_unseen="warn"):
        """Posterior predictive probability of every whole rating, per pair (ordinal models).

        ``P(r = k) = mean over draws of Phi(c_k - eta) - Phi(c_{k-1} - eta)``, with ``eta`` the
        latent score ``mu + b_u + c_i + U_u . V_i`` and ``c`` the cut-points of each draw.

        Parameters
        ----------
        pairs : DataFrame with columns ``user``, ``item`` (or a Ratings)
        on_unseen : {"warn", "raise", "ignore"}, default "warn"

        Returns
        -------
        DataFrame
            One column per rating (``low..high``), rows summing to 1, with the index of
            ``pairs``.
        """
        self._check_is_fitted()
        categories = self._ordinal_categories()
        if categories is None:
            raise ValueError("predict_proba needs an ordinal model: fit BPMF with "
                             "model_config={'likelihood': 'ordinal'}.")
        user_codes, item_codes = self._prepare_pairs(pairs, on_unseen)
        probs = np.empty((len(user_codes), len(categories)))
        for start in range(0, len(user_codes), _BLOCK):
            block = slice(start, start + _BLOCK)
            expected = self._expected_draws(user_codes[block], item_codes[block])
            probs[block] = ordinal.probabilities(
                ordinal.mean_cdf(expected, self._draws()["cutpoints"])
            )
        names = [int(k) if float(k).is_integer() else float(k) for k in categories]
        frame = pd.DataFrame(probs, columns=names)
        if isinstance(pairs, pd.DataFrame):
            frame.index = pairs.index
        return frame

    def predict_posterior(self, pairs, *, kind="predictive", random_state=None, on_unseen="warn"):
        """Posterior draws of the rating of each pair.

        Parameters
        ----------
        pairs : DataFrame with columns ``user``, ``item`` (or a Ratings)
        kind : {"predictive", "expected"}, default "predictive"
            ``"predictive"`` adds the observation noise ``N(0, sigma^2)`` of each draw (draws of
            a new rating); ``"expected"`` gives the noise-free ``mu + b_u + c_i + U_u . V_i``.
        random_state : int or numpy Generator, optional
            Seeds the noise (and the population draws of unseen users/items).
        on_unseen : {"warn", "raise", "ignore"}, default "warn"

        Returns
        -------
        xarray.DataArray
            Dims ``(chain, draw, pair)``; ``user`` and ``item`` are coordinates along ``pair``.
            Not clipped to the rating scale.
        """
        if kind not in ("predictive", "expected"):
            raise ValueError(f"kind must be 'predictive' or 'expected', got {kind!r}.")
        user_codes, item_codes = self._prepare_pairs(pairs, on_unseen)
        rng = np.random.default_rng(random_state)
        draws = self._expected_draws(user_codes, item_codes, rng,
                                     self._pair_days(pairs, user_codes))
        categories = self._ordinal_categories()
        if kind == "predictive" and categories is not None:  # whole ratings
            draws = ordinal.predictive_draws(
                draws, self._draws()["cutpoints"], categories, rng
            ).astype(float)
        elif kind == "predictive":
            draws = draws + rng.standard_normal(draws.shape) * self._noise_sd(user_codes,
                                                                              item_codes, rng)
        n_chains, n_draws = self._sample_shape()
        users, items = _pair_ids(pairs)
        return xr.DataArray(
            draws.reshape(n_chains, n_draws, -1),
            dims=("chain", "draw", "pair"),
            coords={
                "chain": np.arange(n_chains),
                "draw": np.arange(n_draws),
                "pair": np.arange(len(user_codes)),
                "user": ("pair", _coord_values(pd.Index(users))),
                "item": ("pair", _coord_values(pd.Index(items))),
            },
            name="rating",
        )

    def predict_interval(self, pairs, prob=0.9, *, clip=True, random_state=0, on_unseen="warn",
                         discrete="nearest"):
        """Posterior predictive interval of each pair's rating (noise included).

        Parameters
        ----------
        pairs : DataFrame with columns ``user``, ``item`` (or a Ratings)
        prob : float in (0, 1), default 0.9
        clip : bool, default True
            Clip ``mean``, ``lower`` and ``upper`` to the training rating scale.
        random_state : int or numpy Generator, default 0
            Seeds the predictive noise draws, so that the interval is reproducible.
        on_unseen : {"warn", "raise", "ignore"}, default "warn"
        discrete : {"nearest", "cover"}, default "nearest"
            How an ordinal model, whose predictions are whole ratings, picks its range (a
            Gaussian model's interval is the central one either way):

            - ``"nearest"``: the range of whole ratings that contains the predictive median
              and whose predictive probability is closest to ``prob``
              (:func:`~bpmf.models.ordinal_predictive.nearest_sets`). Its probability is
              close to ``prob`` on average, so the ranges cover about ``prob`` of new
              ratings;
            - ``"cover"``: the range between the whole-rating ``(1 - prob) / 2`` and
              ``(1 + prob) / 2`` quantiles (:meth:`predict_quantiles`), which holds at least
              ``prob`` and so covers more (about 97% of MovieLens ratings at 90%).

        Returns
        -------
        DataFrame
            Columns ``mean`` (as :meth:`predict`), ``lower`` and ``upper``, with the index of
            ``pairs``.
        """
        if discrete not in ("nearest", "cover"):
            raise ValueError(f"discrete must be 'nearest' or 'cover', got {discrete!r}.")
        tail = (1.0 - check_prob(prob)) / 2.0
        self._check_is_fitted()
        if discrete == "nearest" and self._ordinal_categories() is not None:
            user_codes, item_codes = self._prepare_pairs(pairs, on_unseen)
            return self._ordinal_frame(
                pairs, user_codes, item_codes, clip, np.random.default_rng(random_state),
                ("lower", "upper"), lambda cdf, levels: ordinal.nearest_sets(cdf, prob, levels),
            )
        frame = self.predict_quantiles(
            pairs, [tail, 1.0 - tail], clip=clip, random_state=random_state, on_unseen=on_unseen
        )
        frame.columns = ["mean", "lower", "upper"]
        return frame

    def predict_quantiles(self, pairs, quantiles, *, clip=True, random_state=0,
                          on_unseen="warn"):
        """Quantiles of each pair's posterior predictive distribution (noise included).

        One pass over the draws serves every quantile (several intervals at once, as for a
        calibration curve, cost about as much as one).

        Parameters
        ----------
        pairs : DataFrame with columns ``user``, ``item`` (or a Ratings)
        quantiles : sequence of float in (0, 1)
        clip : bool, default True
            Clip to the training rating scale.
        random_state : int or numpy Generator, default 0
            Seeds the predictive noise draws.
        on_unseen : {"warn", "raise", "ignore"}, default "warn"

        Returns
        -------
        DataFrame
            Column ``mean`` (as :meth:`predict`), then one column per quantile (named by
            it), with the index of ``pairs``. An ordinal model's quantiles are whole ratings
            (the smallest whose predictive CDF reaches the quantile); for ranges that cover
            their nominal probability see :meth:`predict_interval`.
        """
        quantiles = [check_prob(q, "quantile") for q in np.atleast_1d(quantiles).tolist()]
        user_codes, item_codes = self._prepare_pairs(pairs, on_unseen)
        days = self._pair_days(pairs, user_codes)
        rng = np.random.default_rng(random_state)
        if self._ordinal_categories() is not None:
            return self._ordinal_frame(
                pairs, user_codes, item_codes, clip, rng, quantiles,
                lambda cdf, levels: ordinal.quantiles(cdf, quantiles, levels),
            )
        sigma = self._draws()["sigma"][:, None]
        replicates = -(-_MIN_PREDICTIVE_SAMPLES // len(sigma))
        block_size = max(1, _BLOCK // replicates)
        # the noisy draws in narrower runs of pairs (16 MB arrays, reused by the allocator)
        run = max(1, _PREDICTIVE_BLOCK // (len(sigma) * replicates))
        scale = np.tile(sigma, (replicates, 1)) if replicates > 1 else sigma
        weighted = "user_noise_weight" in self._draws()
        mean = np.empty(len(user_codes))
        values = np.empty((len(quantiles), len(user_codes)))
        for start in range(0, len(user_codes), block_size):
            block = slice(start, start + block_size)
            users, items = user_codes[block], item_codes[block]
            block_days = None if days is None else days[block]
            seen = ((users >= 0) & (items >= 0)).all() and (
                block_days is None or (block_days >= 0).all()
            )
            if seen:  # the draws of seen pairs do not depend on rng: one gather serves both
                expected = self._expected_draws(users, items, days=block_days)
                mean[block] = expected.mean(0)
            else:  # unseen ids (or days): fresh population draws for every replicate
                mean[block] = self._expected_draws(users, items, days=block_days).mean(0)
                expected = np.concatenate(
                    [self._expected_draws(users, items, rng, block_days)
                     for _ in range(replicates)]
                )
            for first in range(0, len(users), run):
                columns = slice(first, first + run)
                noisy = rng.standard_normal((len(scale), len(users[columns])))
                if weighted:  # a noise sd per pair (and per replicate, for unseen ids)
                    noisy *= np.concatenate([
                        self._noise_sd(users[columns], items[columns], rng)
                        for _ in range(replicates)
                    ])
                else:
                    noisy *= scale
                part = expected[:, columns]
                noisy += np.tile(part, (replicates, 1)) if seen and replicates > 1 else part
                values[:, start + first:start + first + noisy.shape[1]] = column_quantiles(
                    noisy, quantiles
                )
        frame = pd.DataFrame({"mean": self._clip(mean, clip)})
        for q, column in zip(quantiles, values, strict=True):
            frame[q] = self._clip(column, clip)
        if isinstance(pairs, pd.DataFrame):
            frame.index = pairs.index
        return frame

    def _ordinal_frame(self, pairs, user_codes, item_codes, clip, rng, columns, summarise):
        """The mean and the ``columns`` of the ordinal predictive distribution (exact, no noise
        draws; unseen ids average over population draws of their rows): ``summarise(cdf,
        categories)`` gives one row of whole ratings per column, such as quantiles or the
        ranges of :func:`~bpmf.models.ordinal_predictive.nearest_sets`."""
        categories = self._ordinal_categories()
        cutpoints = self._draws()["cutpoints"]
        mean = np.empty(len(user_codes))
        values = np.empty((len(columns), len(user_codes)))
        for start in range(0, len(user_codes), _BLOCK):
            block = slice(start, start + _BLOCK)
            users, items = user_codes[block], item_codes[block]
            seen = ((users >= 0) & (items >= 0)).all()
            expected = self._expected_draws(users, items, None if seen else rng)
            cdf = ordinal.mean_cdf(expected, cutpoints)
            mean[block] = ordinal.expected_rating(cdf, categories[0])
            values[:, block] = summarise(cdf, categories)
        frame = pd.DataFrame({"mean": self._clip(mean, clip)})
        for name, column in zip(columns, values, strict=True):
            frame[name] = column
        if isinstance(pairs, pd.DataFrame):
            frame.index = pairs.index
        return frame

    # ------------------------------------------------------------------ recommendations
    def recommend(self, user, k=10, *, exclude_seen=True, threshold=None):
        """The ``k`` items with the highest posterior mean rating for ``user``.

        Parameters
        ----------
        user : id
            A user id from training, of the type the model was trained with (an unseen user
            gets the population-level ranking, with a warning).
        k : int, default 10
        exclude_seen : bool, default True
            Leave out the items the user rated in training.
        threshold : float, optional
            Also report ``P(r >= threshold)``, the posterior predictive probability (noise
            included) that the user's rating of the item reaches the threshold. It must lie
            on the rating scale. By default three quarters of the way up the scale (4 on a
            1-5 scale, 0.75 on 0-1); for a model without a scale, the posterior mean of
            ``mu`` (the probability of an above-average rating).

        Returns
        -------
        DataFrame
            Columns ``item``, ``mean`` (unclipped posterior mean), ``prob_at_least``
            (``P(r >= threshold)``) and ``rank`` (1 = best), sorted by ``mean``; the threshold
            used is in ``frame.attrs["threshold"]``.
        """
        self._check_is_fitted()
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {describe(k)}.")
        if threshold is None:
            threshold = (
                float(self._draws()["mu"].mean())
                if self.scale_ is None
                else default_threshold(self.scale_)
            )
        threshold = check_threshold(threshold, self.scale_)
        user_code = int(self.user_index_.get_indexer(_as_user_list(user))[0])
        # an unseen user with side features is ranked from them (code <= -2)
        user_code = int(cold_codes(getattr(self, "features_", None), "user",
                                   _as_user_list(user), np.array([user_code]))[0])
        self._handle_unseen(
            np.array([-1 if user_code == -1 else 0]), np.array([0]), "warn",
            np.array([user], dtype=object)
        )
        item_codes = np.arange(len(self.item_index_))
        if exclude_seen and user_code >= 0:
            seen = self._seen_items(user_code)
            item_codes = np.setdiff1d(item_codes, seen)
        if len(item_codes) == 0:
            frame = pd.DataFrame({"item": [], "mean": [], "prob_at_least": [], "rank": []})
            frame.attrs["threshold"] = threshold
            return frame
        expected = self._expected_draws(np.full(len(item_codes), user_code), item_codes)
        categories = self._ordinal_categories()
        if categories is None:
            users = np.full(len(item_codes), user_code)
            post = self._draws()
            if user_code < 0 and "user_noise_weight" in post:
                # the unseen user's Gamma weight integrated out: Student-t noise with the
                # users' degrees of freedom, scaled by the item's noise sd
                scale = post["sigma"][:, None] / np.sqrt(post["item_noise_weight"][:, item_codes])
                prob = special.stdtr(post["noise_df_user"][:, None],
                                     (expected - threshold) / scale).mean(0)
            else:
                prob = special.ndtr((expected - threshold) / self._noise_sd(users, item_codes))
                prob = prob.mean(0)
            mean = expected.mean(0)
        else:  # exact P(r >= threshold) and expected rating of the ordinal model
            cdf = ordinal.mean_cdf(expected, self._draws()["cutpoints"])
            prob = ordinal.prob_at_least(cdf, threshold, categories[0])
            mean = ordinal.expected_rating(cdf, categories[0])
        order = np.lexsort((item_codes, -mean))[: int(k)]
        frame = pd.DataFrame(
            {
                "item": self.item_index_[item_codes[order]].to_numpy(),
                "mean": mean[order],
                "prob_at_least": prob[order],
                "rank": np.arange(1, len(order) + 1),
            }
        )
        frame.attrs["threshold"] = threshold
        return frame

    # ------------------------------------------------------------------ new users and items
    def fold_in(self, new_ratings, *, user_features=None, item_features=None, random_state=0):
        """A fitted copy of the model that also covers the users and items of ``new_ratings``.

        For every posterior draw, each new user's factor vector and bias are drawn from their
        exact Gaussian conditional given that draw's items (factors and biases), ``mu``,
        ``sigma`` and user-level hyperparameters (``mu_U``, ``Sigma_U``, ``user_bias_sd``);
        new items likewise given the users (:mod:`bpmf.inference.fold_in`). Nothing is
        refitted: the fitted draws are kept as they are, and the new ratings inform only the
        new rows. ``predict``, ``predict_interval`` and ``recommend`` of the returned model
        treat the new users and items as known; the model it is called on is not changed.

        With side features, a new row's prior mean is its link mean (``mu_U + B_U^T x``, and
        ``beta_U^T x`` for the bias) from its row in the fitted feature table. With implicit
        feedback on the users' side (``implicit=True`` or ``"user"``), a new user's implicit
        set is the fitted items of its new ratings; the offset ``|N(u)|^-1/2 sum Y_j`` of
        each draw is appended to ``offset_U`` and the effective row ``U_u + o_u`` is drawn.
        Models with implicit feedback take new users only, and none on the items' side.
        With day-specific user biases (``user_day_bias=True``), a new user's days are new
        groups: the row is drawn with their biases integrated out, then each day's bias given
        the row (:func:`bpmf.inference.fold_in.fold_in_rows_with_days`), and the groups are
        appended along ``user_day``; such a model takes new users only, and the new ratings
        need their times.

        Parameters
        ----------
        new_ratings : Ratings or DataFrame with columns ``user``, ``item``, ``rating``
            Each rating pairs a new user with a fitted item, or a fitted user with a new
            item. Ratings between a fitted user and a fitted item (they would change the
            fitted rows: refit instead) or between a new user and a new item (neither side
            is known given a draw) raise ``ValueError``, as does a new id without a row in
            the fitted feature table of a model with side features (unless it was fitted with
            ``missing_features="zero"``).
        user_features, item_features : DataFrame or None
            With side features, the feature rows of new ids that the fitted feature table
            lacks (indexed by id, the fitted table's columns and levels); they are encoded as
            the fitted table was and appended to the model's tables.
        random_state : int or numpy Generator, default 0
            Seeds the draws of the new rows.

        Returns
        -------
        A model of the same class. Its ``idata_`` holds the posterior with the new rows
        appended along ``user``/``item`` and the new ratings appended to ``observed_data``;
        the pointwise ``log_likelihood`` and ``posterior_predictive`` groups of the training
        pairs, if any, are left out.
        """
        from bpmf.inference.fold_in import (
            fold_in_rows,
            fold_in_rows_with_days,
            new_implicit_offsets,
        )

        self._check_is_fitted()
        if self._ordinal_categories() is not None:
            raise ValueError("fold_in draws Gaussian conditionals and does not support an "
                             "ordinal model (likelihood='ordinal'); refit with the new ratings.")
        post = self._draws()
        # the draws say which bias prior a fit had (every fit with correlated biases records
        # user_bias_factor_cov); only a model that asked for them by name and lacks them
        # (fitted by an earlier development version) is refused. A file from before the
        # "auto" default has independent biases and no such key.
        given = getattr(self, "model_config", None) or {}
        if given.get("correlated_biases") is True and "user_bias_factor_cov" not in post:
            raise ValueError(
                "fold_in needs the posterior draws of user_bias_factor_cov and "
                "item_bias_factor_cov for a model with correlated_biases=True, which this "
                "model (fitted by an earlier version of bpmf) lacks; refit it."
            )
        if "user_noise_weight" in post:
            raise ValueError(
                "fold_in does not support noise weights (model_config['noise_weights']): a new "
                "row's weight would be drawn from its ratings jointly with the row; refit with "
                "the new ratings instead."
            )
        if "offset_V" in post:
            raise ValueError(
                "fold_in does not support implicit feedback on the items' side "
                "(implicit='item' or 'both': a new user changes the items' implicit offsets); "
                "refit with the new ratings instead."
            )
        needed = [n for n in ("U", "V", "Sigma_U", "Sigma_V") if n not in post]
        if needed:
            raise ValueError(
                f"fold_in needs posterior draws of {needed}, which this model lacks; it needs "
                "a hierarchical model fitted with retained factor draws (BPMF)."
            )
        new = (
            new_ratings
            if isinstance(new_ratings, Ratings)
            else as_ratings(new_ratings, scale=self.scale_)
        )
        users, items, values = new.users, new.items, new.values
        user_codes = self.user_index_.get_indexer(users)
        item_codes = self.item_index_.get_indexer(items)
        known = (user_codes >= 0) & (item_codes >= 0)
        if known.any():
            raise ValueError(
                f"{int(known.sum())} new rating(s) pair a fitted user with a fitted item (e.g. "
                f"user {users[known][0]!r}, item {items[known][0]!r}); fold-in adds new users "
                "and items only, so refit to use them."
            )
        if "offset_U" in post and (item_codes < 0).any():
            raise ValueError(
                "fold_in adds new users only to a model with implicit feedback (a new item "
                f"such as {items[item_codes < 0].tolist()[0]!r} changes the implicit offsets "
                "of the users who rate it); refit with the new ratings instead."
            )
        days = "day_bias" in post
        if days and (item_codes < 0).any():
            raise ValueError(
                "fold_in adds new users only to a model with day-specific user biases (a new "
                f"item such as {items[item_codes < 0].tolist()[0]!r} would share the day biases "
                "of fitted users' new days); refit with the new ratings instead."
            )
        if days and new.times is None:
            raise DataError(
                "fold_in of a model with day-specific user biases needs the time of each new "
                "rating: give the ratings with times (a 'time' column or Ratings(time=))."
            )
        both_new = (user_codes < 0) & (item_codes < 0)
        if both_new.any():
            raise ValueError(
                f"{int(both_new.sum())} new rating(s) pair a new user with a new item (e.g. "
                f"user {users[both_new][0]!r}, item {items[both_new][0]!r}); fold-in draws a new "
                "row given the fitted other side, so drop them or refit."
            )
        features = getattr(self, "features_", None)
        for dim, table in (("user", user_features), ("item", item_features)):
            if table is not None:
                features = extend_features(features, dim, table, f"fold_in {dim}_features")
        rng = np.random.default_rng(random_state)
        n_chains, n_draws = self._sample_shape()
        posterior = self.idata_["posterior"].ds
        indexes = {"user": self.user_index_, "item": self.item_index_}
        appended = {}
        for side, dim, codes, partner_codes in (
            ("U", "user", user_codes, item_codes),
            ("V", "item", item_codes, user_codes),
        ):
            rows = codes < 0
            if not rows.any():
                continue
            ids = users[rows] if dim == "user" else items[rows]
            new_codes, new_ids = pd.factorize(ids)
            offsets = None
            if f"offset_{side}" in post:  # implicit feedback on the users' side
                offsets = new_implicit_offsets(post, new_codes, partner_codes[rows],
                                               len(new_ids))
                appended[f"offset_{side}"] = offsets
            links = self._fold_in_links(post, features, dim, new_ids)
            if days:  # new users with their new (user, day) groups
                groups, group_users, group_days = day_groups(new_codes,
                                                             days_of(new.times[rows]))
                factors, biases, day_biases = fold_in_rows_with_days(
                    post, new_codes, partner_codes[rows], values[rows], groups, len(new_ids),
                    len(group_users), rng, links=links, offsets=offsets,
                )
                appended["day_bias"] = day_biases
                new_groups = (np.asarray(new_ids)[group_users], group_days)
            else:
                factors, biases = fold_in_rows(
                    post, side, new_codes, partner_codes[rows], values[rows], len(new_ids), rng,
                    links=links, offsets=offsets,
                )
            indexes[dim] = (
                self.user_index_.append(pd.Index(new_ids))
                if dim == "user"
                else (self.item_index_.append(pd.Index(new_ids)))
            )
            appended[side] = factors
            if biases is not None:
                appended[f"{dim}_bias"] = biases
        grown = {"user"} if "U" in appended else set()
        grown |= {"item"} if "V" in appended else set()
        variables = {}
        for name, array in posterior.data_vars.items():
            if name in appended:
                new_rows = appended[name].reshape(n_chains, n_draws, *appended[name].shape[1:])
                values_all = np.concatenate([array.values, new_rows], axis=2)
                variables[name] = (array.dims, values_all)
            elif any(len(indexes[dim]) > posterior.sizes[dim] for dim in grown & set(array.dims)):
                continue  # a per-row variable that fold-in does not draw
            else:
                variables[name] = (array.dims, array.values)
        coords = {
            name: coord.values
            for name, coord in posterior.coords.items()
            if name not in ("user", "item")
        }
        coords["user"] = _coord_values(indexes["user"])
        coords["item"] = _coord_values(indexes["item"])
        if "user_day" in posterior.coords:  # the groups, with the new users' appended
            group_users = posterior["user_day_user"].values
            group_days = posterior["user_day_day"].values
            if "day_bias" in appended:
                group_users = _coord_values(pd.Index(np.concatenate([group_users,
                                                                     new_groups[0]])))
                group_days = np.concatenate([group_days, new_groups[1]])
            coords["user_day"] = np.arange(len(group_days))
            coords["user_day_user"] = ("user_day", group_users)
            coords["user_day_day"] = ("user_day", group_days)
        groups = {"posterior": xr.Dataset(variables, coords=coords).assign_attrs(posterior.attrs)}
        observed = self.idata_["observed_data"].ds
        groups["observed_data"] = xr.Dataset(
            {"rating": (("obs",), np.concatenate([observed["rating"].values, values]))},
            coords={
                "obs": np.arange(observed.sizes["obs"] + len(values)),
                "obs_user": (
                    ("obs",),
                    np.concatenate([observed["obs_user"].values, _coord_values(pd.Index(users))]),
                ),
                "obs_item": (
                    ("obs",),
                    np.concatenate([observed["obs_item"].values, _coord_values(pd.Index(items))]),
                ),
            },
        )
        if "obs_time" in observed.coords:  # a model with day biases: the ratings' times
            groups["observed_data"] = groups["observed_data"].assign_coords(
                obs_time=("obs", np.concatenate([observed["obs_time"].values, new.times]))
            )
        for name, child in self.idata_.children.items():
            if name not in groups and name not in ("log_likelihood", "posterior_predictive"):
                groups[name] = child.to_dataset()
        tree = xr.DataTree.from_dict(groups)
        tree.attrs = dict(self.idata_.attrs)
        folded = copy.copy(self)
        folded.__dict__.pop("_draws_cache", None)
        if features is not getattr(self, "features_", None):  # new feature rows appended
            folded.features_ = features
            folded.model_config = {
                **(self.model_config or {}),
                **{FEATURE_KEYS[dim]: frame_from_state(features[dim]["table"])
                   for dim, table in (("user", user_features), ("item", item_features))
                   if table is not None},
            }
        folded.idata_ = tree
        folded.user_index_, folded.item_index_ = indexes["user"], indexes["item"]
        return folded

    def _fold_in_links(self, post, features, dim, new_ids):
        """The side features' link means of new rows per draw (``(None, None)`` without
        features on ``dim``); a new id needs a row in the feature tables ``features``, unless
        the model was fitted with ``missing_features="zero"``."""
        if not features or dim not in features:
            return None, None
        codes = cold_codes(features, dim, np.asarray(new_ids, dtype=object),
                           np.full(len(new_ids), -1, dtype=np.int64))
        absent = codes == -1
        config = getattr(self, "model_config", None) or {}
        if absent.any() and config.get("missing_features", "raise") != "zero":
            examples = ", ".join(repr(v) for v in np.asarray(new_ids, dtype=object)[absent][:3])
            raise DataError(
                f"fold_in: the {dim} feature table has no row for {int(absent.sum())} new "
                f"{dim} id(s) (e.g. {examples}); give their rows ({dim}_features=, or "
                f"--given-{dim}-features on the command line), or fit with "
                "model_config['missing_features']='zero'."
            )
        return cold_start_links(features, post, dim, codes)

    def _seen_items(self, user_code):
        observed = self.idata_["observed_data"].ds
        user_id = _coord_values(self.user_index_)[user_code]
        items = observed["obs_item"].values[observed["obs_user"].values == user_id]
        return self.item_index_.get_indexer(_ids_like(items, self.item_index_))


# ---------------------------------------------------------------------- helpers
def side_rows(post, side, codes, rng, links=(None, None)):
    """The factor rows and the biases (None without biases) of one side per draw,
    ``(samples, pairs, factors)`` and ``(samples, pairs)``, for ``codes`` of that side;
    unseen codes (negative) from the population: the prior means (plus the side features'
    ``links``), or with ``rng`` draws from the prior, the bias given the factors when they
    are correlated."""
    factors = _rows(post, side, f"mu_{side}", f"Sigma_{side}", codes, rng, links[0])
    bias = "user_bias" if side == "U" else "item_bias"
    if bias not in post:
        return factors, None
    return factors, _bias_rows(post, bias, codes, rng, links[1], factors, side)


def _rows(post, name, mean_name, cov_name, codes, rng, link=None):
    """Factor rows per draw ``(samples, pairs, factors)``; unseen codes from the population
    (plus ``link``, the side features' link means of the unseen codes, when given).

    With implicit feedback on that side (``offset_<name>`` in ``post``) an unseen row's
    implicit set is unknown, not empty: its offset is that of a fitted row taken at random,
    per draw and pair with ``rng``, and the fitted rows' mean offset without it."""
    factors = post[name]
    rows = factors[:, np.maximum(codes, 0), :]
    unseen = codes < 0
    if unseen.any():
        n_samples, n_factors = factors.shape[0], factors.shape[2]
        n_unseen = int(unseen.sum())
        mean = post.get(mean_name, np.zeros((n_samples, n_factors)))
        fill = np.broadcast_to(mean[:, None, :], (n_samples, n_unseen, n_factors))
        if link is not None:
            fill = fill + link
        offsets = post.get(f"offset_{name}")
        if offsets is not None and rng is None:
            fill = fill + offsets.mean(axis=1)[:, None, :]
        elif offsets is not None:
            picks = rng.integers(offsets.shape[1], size=(n_samples, n_unseen))
            fill = fill + np.take_along_axis(offsets, picks[:, :, None], axis=1)
        if rng is not None and cov_name in post:
            chol = np.linalg.cholesky(post[cov_name] + 1e-12 * np.eye(n_factors))
            noise = rng.standard_normal((n_samples, n_unseen, n_factors))
            fill = fill + np.einsum("skl,snl->snk", chol, noise)
        rows[:, unseen, :] = fill
    return rows


def _bias_rows(post, name, codes, rng, link=None, factors=None, side=None):
    """Biases per draw ``(samples, pairs)``; unseen codes from the population. With
    correlated biases (``<name>_factor_cov`` in ``post``) and the pairs' drawn factor rows
    ``factors`` of ``side``, an unseen row's bias is drawn given its factors."""
    biases = post[name][:, np.maximum(codes, 0)]
    unseen = codes < 0
    if unseen.any():
        biases[:, unseen] = 0.0 if link is None else link
        if rng is not None and f"{name}_sd" in post:
            variance = post[f"{name}_sd"][:, None] ** 2
            cross = post.get(f"{name}_factor_cov")
            if cross is not None and factors is not None:
                # (U, b) jointly Gaussian: b | U ~ N(c^T S^-1 (U - m), s^2 - c^T S^-1 c)
                coef = np.linalg.solve(post[f"Sigma_{side}"], cross[:, :, None])[:, :, 0]
                mean = post.get(f"mu_{side}", np.zeros_like(coef))
                deviation = factors[:, unseen, :] - mean[:, None, :]
                biases[:, unseen] += np.einsum("snk,sk->sn", deviation, coef)
                variance = np.maximum(variance - np.sum(coef * cross, axis=1)[:, None], 0.0)
            noise = rng.standard_normal((len(variance), int(unseen.sum())))
            biases[:, unseen] += noise * np.sqrt(variance)
    return biases


def _pair_ids(pairs):
    return as_pairs(pairs)


def _as_user_list(user):
    """``[user]`` for ``get_indexer``; a list or array is not one user id."""
    if isinstance(user, list | tuple | np.ndarray | pd.Series | pd.Index | dict | set):
        raise ValueError(f"user must be one user id, got {describe(user)}.")
    return pd.Index([user], dtype=object)
