"""Bayesian Probabilistic Matrix Factorization (Salakhutdinov & Mnih, 2008): the model and the
dispatch to its samplers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bpmf._config import resolve_progressbar
from bpmf._exceptions import DataError
from bpmf._validation import check_n_factors, check_positive
from bpmf.datasets import Ratings, as_pairs, as_ratings
from bpmf.inference.day_bias import day_groups, days_of
from bpmf.inference.diagnostics import diagnose
from bpmf.inference.hyperpriors import WISHART_DEFAULTS
from bpmf.inference.ordinal import cutpoint_prior_means, rating_categories
from bpmf.models._features import encode_features, restore_tables, saved_config
from bpmf.models._graph import build_graph, factor_means, initial_point
from bpmf.models._io import coord_values
from bpmf.models._posterior import POSTERIOR_DIMS, PosteriorModel, make_datatree, split_moments
from bpmf.models.pmf import merge_config

_METHODS = ("gibbs", "nuts")
_PRIORS = ("lkj", "wishart")
_LIKELIHOODS = ("gaussian", "ordinal")
#: keys of every model, then the keys of each covariance prior (with their defaults)
_COMMON = {
    "covariance_prior": "lkj",
    "biases": True,
    "mu_sd": 1.0,
    "sigma": None,
    # the MAP that starts the chains: on ML-100K u1, from factor_sd 0.2 (an underfit MAP)
    # the Gibbs chains' sigma took ~300 sweeps to settle; from 0.3 or 0.5, none
    "map_config": {"factor_sd": 0.3},
    # side features (bpmf.models._features, bpmf.inference.features)
    "user_features": None,
    "item_features": None,
    "missing_features": "raise",
    "link_precision_shape": 1.0,
    "link_precision_rate": 1.0,
    # the rating model: Gaussian, or ordered probit on whole ratings (cut-points, unit noise)
    "likelihood": "gaussian",
    "cutpoint_sd": 1.0,
    # implicit feedback (Bayesian SVD++, Gibbs only): Y_j ~ N(0, diag(s_Y^2)),
    # s_Y ~ HalfNormal(implicit_scale_sd); implicit_pairs: further (user, item) pairs of N(u)
    "implicit": False,
    "implicit_scale_sd": 1.0,
    "implicit_pairs": None,
    # centred offsets: o_u less the users' mean of the plain sums (averages zero over users)
    "implicit_centered": False,
    # day-specific user biases d_(u, day) ~ N(0, s_d^2), s_d ~ HalfNormal(day_bias_scale_sd)
    # (the ratings need times)
    "user_day_bias": False,
    "day_bias_scale_sd": 1.0,
    # per-user and per-item noise weights a_u, c_i ~ Gamma(nu/2, nu/2): the noise sd of
    # rating (u, i) is sigma / sqrt(a_u c_i) (Gibbs only)
    "noise_weights": False,
}
_PRIOR_KEYS = {
    "lkj": {
        "factor_mean_sd": 1.0,
        "lkj_eta": 2.0,
        "factor_scale_sd": 1.0,
        "bias_scale_sd": 1.0,
        "sigma_sd": 1.0,
        "factor_means": "auto",
        "correlated_biases": "auto",
        # how the joint NUTS graph is written (the model is the same whatever they are)
        "parameterization": "noncentered",
        "bias_parameterization": "auto",
        "bias_center_min": 5,
        "fused_likelihood": True,
    },
    "wishart": dict(WISHART_DEFAULTS),
}


class BPMF(PosteriorModel):
    r"""Bayesian Probabilistic Matrix Factorization with biases and hierarchical priors.

    The model is set by ``model_config`` (``covariance_prior``: LKJ, the default, or the
    paper's conjugate Normal-Wishart); ``method`` chooses only the sampler, and both
    samplers draw from the same posterior.

    Parameters
    ----------
    n_factors : int, default 10
        Number of latent factors ``D``.
    model_config : dict, optional
        Priors, merged over the defaults. For every model:

        - ``covariance_prior`` ("lkj"): ``"lkj"`` or ``"wishart"`` (see Notes);
        - ``biases`` (True): user and item biases with hierarchical scales (False gives the
          classic BPMF of the paper);
        - ``mu_sd`` (1.0): prior sd of the intercept ``mu`` around the training mean;
        - ``sigma`` (None): fixed observation noise sd, or None to estimate it;
        - ``map_config`` ({"factor_sd": 0.3}): ``model_config`` of the :class:`PMF` whose
          MAP (by alternating least squares) starts the chains;
        - ``user_features``, ``item_features`` (None): side features, a DataFrame indexed by
          user (item) id with numeric, boolean or categorical columns
          (:class:`bpmf.datasets.FeatureEncoder` standardises the numbers and one-hot
          encodes the categories), or ``"ml-100k"`` for
          :func:`bpmf.datasets.load_movielens_features`; rows for ids without ratings are
          allowed and predict them (the cold start);
        - ``missing_features`` ("raise"): an id of the ratings without a feature row raises,
          ``"zero"`` gives it zero features;
        - ``link_precision_shape``, ``link_precision_rate`` (1.0, 1.0): the Gamma prior of
          the links' precisions ``lambda_U``, ``lambda_V`` (see Notes).
        - ``likelihood`` ("gaussian"): or ``"ordinal"``, an ordered probit on whole ratings
          ``low..high`` (``rating_scale``, else the range of the training ratings), with unit
          latent noise (``sigma`` must stay None or 1) and learned cut-points (see Notes);
        - ``cutpoint_sd`` (1.0): prior sd of each ordinal cut-point about the midpoint
          between its two ratings.
        - ``implicit`` (False): implicit feedback (Bayesian SVD++, see Notes): with True
          or ``"user"`` a user's ratings see ``U_u + |N(u)|^{-1/2} sum_{j in N(u)} Y_j``,
          ``N(u)`` the items the user rated in training; ``"item"`` gives the items the
          same, ``V_i + |N(i)|^{-1/2} sum_{u in N(i)} Z_u`` over the users who rated item
          ``i``; ``"both"`` both; ``method="gibbs"`` and ``keep="all"`` only;
        - ``implicit_scale_sd`` (1.0): half-normal prior scale of each factor's ``s_Y``
          (and ``s_Z``);
        - ``implicit_pairs`` (None): with ``implicit``, further ``(user, item)`` pairs (a
          DataFrame with columns ``user``, ``item``, a dict of two such lists, or a Ratings,
          whose ratings are not used) that join ``N(u)`` and ``N(i)``, e.g. the pairs to be
          predicted (as in Koren's SVD++). **Predictions then use test-time information**:
          that the user rated those items. Pairs of users or items absent from the training
          data are left out.
        - ``implicit_centered`` (False): centre the implicit offsets, ``o_u - mean_v o_v``
          over the training users (items for ``"item"``), so that they average zero and
          the effective rows' mean is the rows' own, pinned by their prior (see Notes); the
          subtracted mean is kept per draw as ``offset_mean_U`` (``offset_mean_V``). Needs
          ``sampler_config["implicit_step"]="rows"``.
        - ``user_day_bias`` (False): day-specific user biases (see Notes): each rating also
          sees ``d_(u, t)``, one bias per user and UTC day ``t`` on which the user rated in
          training; the training ratings need times (``Ratings(..., time=)``, a ``time``
          column, MovieLens's timestamps); the Gaussian likelihood only (joint NUTS takes
          the plain likelihood graph: the fused Op has no per-rating offset);
          :meth:`fold_in` takes new users only (with their days' biases);
        - ``day_bias_scale_sd`` (1.0): half-normal prior scale of their sd ``s_d``.
        - ``noise_weights`` (False): heteroscedastic noise (see Notes): each user and each
          item has a precision weight, ``a_u, c_i ~ Gamma(nu/2, nu/2)``, and rating
          ``(u, i)`` the noise sd ``sigma / sqrt(a_u c_i)``; the degrees of freedom ``nu``
          (one for the users, one for the items) have a uniform prior on a grid from 1 to
          128; ``method="gibbs"``, ``keep="all"`` and the Gaussian likelihood only.

        With ``covariance_prior="lkj"``: ``factor_mean_sd`` (1.0), ``lkj_eta`` (2.0),
        ``factor_scale_sd`` (1.0), ``bias_scale_sd`` (1.0), ``sigma_sd`` (1.0),
        ``factor_means`` ("auto": ``mu_U``, ``mu_V`` free without biases, fixed at zero with
        them; True, False; or "U" / "V" to free one side only: "U" improves the test RMSE on
        ML-100K u1 by ~0.003 but leaves ``item_bias_sd`` weakly identified),
        ``correlated_biases`` ("auto": True where allowed, that is with biases, zero factor
        means, the Gaussian likelihood and neither side features nor implicit feedback;
        True puts one LKJ prior on each row's factors and bias together, ``(U_u, b_u) ~
        N(0, Sigma')`` of size ``D + 1``, so that a bias correlates with its row's factors:
        ML-100K u1 test RMSE 0.9050-0.9054 over seeds 0-5, against 0.9091-0.9095 with
        independent biases; False: independent biases with half-normal scales), and,
        for the joint
        NUTS graph only (they rewrite the same model), ``parameterization`` ("noncentered" or
        "centered" factors), ``bias_parameterization`` ("auto": biases of rows with at least
        ``bias_center_min`` (5) ratings centred, the others non-centred; or "centered",
        "noncentered") and ``fused_likelihood`` (True: the fused likelihood Op).

        With ``covariance_prior="wishart"``: ``beta0`` (2.0), ``nu0`` (None: ``D``), ``W0``
        (None: identity), ``mu0`` (0.0), ``noise_shape``, ``noise_rate`` (1.0, 1.0),
        ``bias_precision_shape``, ``bias_precision_rate`` (1.0, 0.1).

        A key of the other prior raises ``ValueError``.
    sampler_config : dict, optional
        ``draws`` (None: 900 for Gibbs, 550 for NUTS), ``tune`` (None: 250 for Gibbs, 300
        for NUTS), ``chains`` (2),
        ``cores`` (None: one per chain, up to the CPUs), ``log_likelihood`` (False),
        ``posterior_predictive`` (False). Gibbs: ``lkj_target_accept`` (0.9),
        ``lkj_max_treedepth`` (8), ``lkj_tune_transitions`` (3) for the NUTS step of the LKJ
        block, ``init_jitter`` (0.01), ``threads`` (None: every CPU, shared by the chains
        that run at once; the draws do not depend on it), ``thin`` (1: keep every sweep),
        ``keep`` ("all"; "moments" keeps every draw of the scalars and hyperparameters, the
        running mean and variance of the rows and ``factor_draws`` (100) evenly spaced joint
        draws of the rows, which predictions use: the memory of ``chains x (factor_draws +
        2)`` copies of the factors instead of ``chains x draws``), ``overrelax`` (-0.7: each
        row is drawn as ``m + a (x - m) + sqrt(1 - a^2) P^-1/2 z`` about its conditional mean
        ``m``, Adler's overrelaxation, exact for every ``a`` in (-1, 1); 0 is the plain draw),
        ``noise_overrelax`` (15: Neal's ordered overrelaxation of the noise precision with 15
        independent candidates from its conditional; 0 is the plain draw),
        ``implicit_step`` ("rows": with implicit feedback, the implicit factors are drawn
        given the effective rows, which move with them; "collapsed": with the rows
        integrated out, about ``D / 2`` times the cost per rated pair; both exact).
        NUTS: ``target_accept``
        (0.9), ``max_treedepth`` (10),
        ``nuts_sampler`` (nutpie when installed, else "pymc"; also "numpyro", "blackjax"),
        ``adaptation`` ("diag", nutpie's), ``init`` ("gibbs": each chain starts from the MAP
        moved into the posterior by ``init_sweeps`` (100) Gibbs sweeps; "map": from the MAP
        jittered by ``init_jitter``).
    random_state : int, optional
        The same seed gives the same draws.
    method : {"gibbs", "nuts"}, default "gibbs"
        ``"gibbs"``: the blocked Gibbs sampler (:mod:`bpmf.inference.gibbs`); ``"nuts"``:
        joint NUTS over every parameter of the PyMC graph (LKJ prior only).
    progressbar : bool, optional
        Show progress; None uses the package-wide setting.
    rating_scale : tuple of float, optional
        ``(low, high)`` of the ratings, used to clip predictions and intervals; None infers it
        from the training data (with a warning when they do not span a plausible scale).

    Attributes
    ----------
    idata_ : xarray.DataTree
        ``posterior`` (``U``, ``V``, ``mu_U``, ``mu_V``, ``Sigma_U``, ``Sigma_V``, ``mu``,
        ``sigma`` and the biases and their scales, with dims ``user``, ``item``, ``factor``
        whose coordinates are the original ids), ``sample_stats``, ``observed_data``,
        ``map_estimate`` and on request ``log_likelihood`` and ``posterior_predictive``.
    map_ : dict of str -> ndarray
        The MAP the chains started from.
    diagnostics_ : dict
        Divergences, R-hat and bulk ESS of every scalar parameter and the R-hat of 200
        training predictions (:func:`bpmf.inference.diagnostics.diagnose`); ``fit`` emits a
        :class:`bpmf.ConvergenceWarning` for each problem.

    Notes
    -----
    With :math:`\bar r` the training mean, for the observed pairs:

    .. math::

        U_i &\sim \mathcal N(\mu_U, \Sigma_U), \qquad V_j \sim \mathcal N(\mu_V, \Sigma_V),
        \qquad b_i \sim \mathcal N(0, s_b^2), \qquad c_j \sim \mathcal N(0, s_c^2) \\
        \mu &\sim \mathcal N(\bar r, s_\mu^2), \qquad
        r_{ij} \sim \mathcal N(\mu + b_i + c_j + U_i^\top V_j, \sigma^2).

    ``covariance_prior="lkj"``: :math:`\mu_U, \mu_V \sim \mathcal N(0, s_m^2 I)`,
    :math:`\Sigma = L L^\top` with :math:`L \sim \mathrm{LKJCholeskyCov}(\eta,
    \mathcal N^+(0, s_f^2))`, :math:`s_b, s_c \sim \mathcal N^+(0, s_s^2)`,
    :math:`\sigma \sim \mathcal N^+(0, s_\sigma^2)`.
    With ``correlated_biases`` (the default where allowed: biases, factor means fixed at
    zero, the Gaussian likelihood, neither side features nor implicit feedback) each row's
    factors and bias share one prior instead, :math:`(U_i, b_i) \sim \mathcal N(0,
    \Sigma'_U)` with :math:`\Sigma'_U = L' L'^\top` of size :math:`D + 1` and
    :math:`L' \sim \mathrm{LKJCholeskyCov}(\eta, \mathcal N^+(0, s_f^2))`, the bias's
    scale :math:`\mathcal N^+(0, s_s^2)` (items likewise); ``user_bias_sd`` is the bias's
    marginal sd and ``user_bias_factor_cov`` its covariance with the factors.
    ``covariance_prior="wishart"``: :math:`\Sigma^{-1} \sim \mathcal W(W_0, \nu_0)`,
    :math:`\mu_U \mid \Sigma_U \sim \mathcal N(\mu_0, \Sigma_U / \beta_0)`, and Gamma
    priors on :math:`\sigma^{-2}, s_b^{-2}, s_c^{-2}`.

    With side features :math:`x_i \in \mathbb R^{F_U}` of the users (and :math:`y_j` of the
    items, symmetrically), the factor means and the biases regress on them (Macau; Porteous,
    Asuncion & Welling, 2010):

    .. math::

        U_i &\sim \mathcal N(\mu_U + B_U^\top x_i, \Sigma_U), \qquad
        b_i \sim \mathcal N(\beta_U^\top x_i, s_b^2), \\
        [B_U, \beta_U] &\sim \mathcal{MN}\big(0,\ I_{F_U} / \lambda_U,\
        \mathrm{diag}(\Sigma_U, s_b^2)\big), \qquad
        \lambda_U \sim \mathrm{Gamma}(a_\lambda, b_\lambda),

    i.e. each row of the link :math:`[B_U, \beta_U]` is :math:`\mathcal N(0,
    \mathrm{diag}(\Sigma_U, s_b^2) / \lambda_U)`. Gibbs draws the link and
    :math:`\lambda_U` from their conjugate conditionals
    (:mod:`bpmf.inference.features`); joint NUTS samples them with the rest. A user without
    ratings but with features is predicted from :math:`N(\mu_U + B_U^\top x_i, \Sigma_U)`
    and :math:`N(\beta_U^\top x_i, s_b^2)` per draw.
    ``likelihood="ordinal"`` replaces the Gaussian rating by an ordered probit on the whole
    ratings :math:`\ell, \dots, h` (:math:`K = h - \ell + 1` of them), with the same priors
    on everything else and unit noise on the latent scale:

    .. math::

        z_{ij} &\sim \mathcal N(\mu + b_i + c_j + U_i^\top V_j, 1), \qquad
        r_{ij} = \ell + \#\{k : \kappa_k < z_{ij}\}, \\
        p(\kappa) &\propto \prod_{k=1}^{K-1} \mathcal N(\kappa_k \mid \ell + k - \tfrac12,
        s_\kappa^2)\, \mathbb 1[\kappa_1 < \dots < \kappa_{K-1}],

    so :math:`P(r_{ij} = \ell + k - 1) = \Phi(\kappa_k - \eta_{ij}) - \Phi(\kappa_{k-1} -
    \eta_{ij})` with :math:`\kappa_0 = -\infty`, :math:`\kappa_K = +\infty`. The common
    level of :math:`\mu` and the cut-points :math:`\kappa` (posterior variable
    ``cutpoints``, dim ``cutpoint`` labelled by the midpoints) is identified by their priors
    only; predictions do not depend on it. Gibbs draws the cut-points with the latent scores
    integrated out and then the latent scores (:mod:`bpmf.inference.ordinal`); joint NUTS
    uses the fused ordered-probit log-density. ``predict`` gives the expected rating,
    :meth:`predict_proba` the probability of every rating, intervals are sets of whole
    ratings and ``recommend`` reports the exact :math:`P(r \ge t)`.

    ``implicit=True`` (Bayesian SVD++; Koren 2008, Rendle, Zhang & Koren 2019): with
    :math:`N(i)` the items user :math:`i` rated in training (plus those of
    ``implicit_pairs``),

    .. math::

        Y_k &\sim \mathcal N(0, \mathrm{diag}(s_Y^2)), \qquad
        s_{Y,d} \sim \mathcal N^+(0, s_y^2), \\
        r_{ij} &\sim \mathcal N\Big(\mu + b_i + c_j + \big(U_i + |N(i)|^{-1/2}
        \textstyle\sum_{k \in N(i)} Y_k\big)^\top V_j, \sigma^2\Big).

    The Gibbs sampler draws each :math:`Y_k` from its Gaussian conditional given the
    effective user rows (or, with ``sampler_config["implicit_step"]="collapsed"``, with the
    user rows integrated out; :mod:`bpmf.inference.implicit`); ``posterior`` gets ``Y``,
    ``Y_sd`` and ``offset_U`` (the sums :math:`|N(i)|^{-1/2} \sum_k Y_k`), and
    predictions use the effective user vectors ``U + offset_U``. ``implicit="item"`` (or
    ``"both"``) is the same with the roles swapped: each user has a factor :math:`Z_i`
    (scales ``Z_sd``), an item's ratings see :math:`V_j + |N(j)|^{-1/2} \sum_{i \in N(j)}
    Z_i` over the users :math:`N(j)` who rated it in training (``offset_V``), as the
    items' implicit block of myFM's ML-100K example.

    The plain offsets do not average zero: their mean over the users, ``sum_j w_j Y_j`` with
    ``w_j = sum_{i in N(j)} |N(i)|^{-1/2} / n_users``, is a free mean of the effective user
    rows, and its product with ``V_j`` a second item effect that trades with the item biases
    (slow mixing of ``item_bias_sd``; with both sides the product of the two means trades
    with ``mu``). ``implicit_centered=True`` subtracts that mean from every offset, so the
    effective rows' mean is the rows' own, near zero under their prior. On MovieLens 100K u1
    (bpmf 0.1.0) that brought every R-hat of ``mu``, ``sigma`` and the bias scales to
    1.013 or below for ``implicit=True`` (1.003 with side features) but raised the test RMSE
    by 0.003 (0.0017 with side features); with ``"both"`` (u1-u3) R-hat of ``mu`` fell from
    1.02-1.22 to 1.01 or below, while ``sigma`` and ``item_bias_sd`` still mixed slowly.

    A user (item) unseen in training has an
    unknown implicit set: its population-level prediction takes the fitted rows' mean offset
    in each draw (a fitted row's offset at random for predictive draws and intervals), and
    :meth:`fold_in` gives it the set of its new ratings.

    **Day-specific user biases** (``user_day_bias=True``; Koren's :math:`b_{u,t}` of
    timeSVD++): a user's ratings on one day share a bias on top of the user's own,
    :math:`r \sim N(\mu + b_u + c_j + U_u \cdot V_j + d_{u,t}, \sigma^2)` with
    :math:`d_{u,t} \sim N(0, s_d^2)`, :math:`s_d \sim \mathrm{HalfNormal}` (posterior
    ``day_bias`` along dim ``user_day``, whose coordinates ``user_day_user`` and
    ``user_day_day`` give each group's user id and UTC day number, and ``day_bias_sd``). The
    Gibbs sampler draws the day biases from their Gaussian conditionals (then their scale,
    and the two scaled together), regresses the rest
    on the ratings less them, and shifts each user's bias against their day biases
    (:mod:`bpmf.inference.day_bias`). Pairs to predict carry their times (a ``time`` column,
    a Ratings with times): a pair on a day its user rated in training adds that day's bias;
    on another day, or without a time, the day bias is a new draw from its prior (mean 0;
    its variance widens the predictive intervals). :meth:`recommend` ranks without it.

    **Noise weights** (``noise_weights=True``; the row- and column-specific noise of robust
    Bayesian matrix factorisation, Lakshminarayanan, Bouchard & Archambeau 2011): rating
    :math:`(u, j)` has the noise sd :math:`\sigma / \sqrt{a_u c_j}` with
    :math:`a_u \sim \mathrm{Gamma}(\nu_U / 2, \nu_U / 2)` and
    :math:`c_j \sim \mathrm{Gamma}(\nu_V / 2, \nu_V / 2)`, mean one, and the degrees of
    freedom uniform on :data:`bpmf.inference.noise_weights.DF_GRID` (1 to 128); posterior
    ``user_noise_weight``, ``item_noise_weight``, ``noise_df_user``, ``noise_df_item``. The
    Gibbs sampler draws the weights from their Gamma conditionals and ``nu`` from its
    discrete conditional, and weights each rating in the other steps
    (:mod:`bpmf.inference.noise_weights`). Predictive draws and intervals use each pair's
    own noise sd; an unseen user or item draws its weight from the prior.

    ``fit`` finds the MAP of the matching :class:`PMF` by alternating least squares and
    starts every chain from it. The Gibbs sampler draws every row of factors with its bias
    from its Gaussian conditional, the intercept and the factor means from theirs, the
    scales exactly (generalised inverse Gaussian precisions under the half-normal priors),
    the LKJ Cholesky factors by NUTS on their conditional given the rows' scatter, the
    noise precision by ordered overrelaxation, and shifts the level, the biases and the
    factor means together (moves that keep the likelihood and make ``mu`` mix).
    ``predict`` averages the predictions over draws.

    The factors are identified only up to a rotation (``U R``, ``V R^{-T}`` give the same
    ratings), so R-hat of raw ``U``, ``V``, ``mu_U`` or ``Sigma_U`` says nothing;
    :meth:`summary` and the diagnostics report the identified quantities (``sigma``,
    ``mu``, the bias scales and predicted ratings).
    """

    default_model_config = {**_COMMON, **_PRIOR_KEYS["lkj"]}
    default_sampler_config = {
        # None: per sampler, sized so that the diagnostics pass on MovieLens 100K u1 (Gibbs:
        # bulk ESS of sigma >= 400 and R-hat <= 1.01 on 99% of the held-out predictions over
        # seeds 0-2; from the MAP, sigma settles within about 100 sweeps, and the warm-up
        # of 250 leaves a margin)
        "draws": None,
        "tune": None,
        "chains": 2,
        "cores": None,
        "log_likelihood": False,
        "posterior_predictive": False,
        "lkj_target_accept": 0.9,
        "lkj_max_treedepth": 8,
        "lkj_tune_transitions": 3,
        "init_jitter": None,
        # joint NUTS; 0.85 left 16-96 divergences on ML-100K u1 in 4 of 4 seeded runs and
        # 0.9 left 2-3 for ~8% more gradients
        "target_accept": 0.9,
        "max_treedepth": 10,
        "nuts_sampler": None,
        "adaptation": "diag",
        "init": "gibbs",
        "init_sweeps": 100,
        # Gibbs at scale: threads for the whole fit (None: every CPU), thinning, and what is
        # kept ("all" draws, or "moments": running moments of the rows plus factor_draws
        # joint draws of them for predictions)
        "threads": None,
        "thin": 1,
        "keep": "all",
        "factor_draws": 100,
        # Adler's overrelaxation of the row draws: on ML-100K u1 it tripled the 5% quantile
        # of the held-out predictions' bulk ESS (160 -> 471 per 1,000 draws); closer to -1
        # the noise and bias scales, even functions of the rows, mix slower (sigma stuck at
        # -0.9 in one of two seeds)
        "overrelax": -0.7,
        # ordered overrelaxation of the noise precision with this many candidates: on
        # ML-100K u1 (seeds 0-5) bulk ESS of sigma 598-944, against 415-710 with plain draws
        "noise_overrelax": 15,
        # implicit feedback: the implicit factors given the effective rows ("rows"), or
        # with the rows integrated out ("collapsed"); alike in diagnostics on ML-100K u1,
        # "rows" 2.7x faster a sweep
        "implicit_step": "rows",
    }

    def __init__(
        self,
        n_factors=10,
        model_config=None,
        sampler_config=None,
        random_state=None,
        method="gibbs",
        progressbar=None,
        rating_scale=None,
    ):
        self.n_factors = n_factors
        self.rating_scale = rating_scale
        self.model_config = model_config
        self.sampler_config = sampler_config
        self.random_state = random_state
        self.method = method
        self.progressbar = progressbar

    # ------------------------------------------------------------------ configuration
    def _model_config(self):
        given = dict(self.model_config or {})
        prior = given.get("covariance_prior", "lkj")
        if prior not in _PRIORS:
            raise ValueError(
                f"model_config['covariance_prior'] must be one of {_PRIORS}, got {prior!r}."
            )
        other = "wishart" if prior == "lkj" else "lkj"
        foreign = sorted(set(given) & set(_PRIOR_KEYS[other]))
        if foreign:
            raise ValueError(
                f"model_config key(s) {foreign} belong to covariance_prior="
                f"{other!r}, not {prior!r}; remove them or set covariance_prior."
            )
        config = merge_config({**_COMMON, **_PRIOR_KEYS[prior]}, given, "model_config")
        if config["missing_features"] not in ("raise", "zero"):
            raise ValueError("model_config['missing_features'] must be 'raise' or 'zero', got "
                             f"{config['missing_features']!r}.")
        for key in ("link_precision_shape", "link_precision_rate"):
            config[key] = check_positive(f"model_config[{key!r}]", config[key])
        features = config["user_features"] is not None or config["item_features"] is not None
        if features and config.get("correlated_biases") is True:
            raise ValueError("model_config['correlated_biases'] cannot be combined with side "
                             "features (user_features, item_features); set it to False.")
        if config["sigma"] is not None and not config["sigma"] > 0:
            raise ValueError(f"model_config['sigma'] must be > 0 or None, got {config['sigma']!r}.")
        if config["likelihood"] not in _LIKELIHOODS:
            raise ValueError(f"model_config['likelihood'] must be one of {_LIKELIHOODS}, got "
                             f"{config['likelihood']!r}.")
        if config["likelihood"] == "ordinal":
            if config["sigma"] not in (None, 1, 1.0):
                raise ValueError("model_config['sigma'] is fixed at 1 (the latent scale) with "
                                 "likelihood='ordinal'; leave it None.")
            config["sigma"] = 1.0
            config["cutpoint_sd"] = check_positive("model_config['cutpoint_sd']",
                                                   config["cutpoint_sd"])
        _check_implicit(config)
        if config["user_day_bias"] not in (True, False):
            raise ValueError("model_config['user_day_bias'] must be True or False, got "
                             f"{config['user_day_bias']!r}.")
        config["day_bias_scale_sd"] = check_positive("model_config['day_bias_scale_sd']",
                                                     config["day_bias_scale_sd"])
        if config["user_day_bias"] and config["likelihood"] != "gaussian":
            raise ValueError("model_config['user_day_bias'] needs likelihood='gaussian'.")
        if config["noise_weights"] not in (True, False):
            raise ValueError("model_config['noise_weights'] must be True or False, got "
                             f"{config['noise_weights']!r}.")
        if config["noise_weights"] and config["likelihood"] != "gaussian":
            raise ValueError("model_config['noise_weights'] needs likelihood='gaussian'.")
        if prior == "lkj":
            if config["factor_means"] not in (True, False, "auto", "U", "V"):
                raise ValueError("model_config['factor_means'] must be True, False, 'auto', 'U' "
                                 f"or 'V', got {config['factor_means']!r}.")
            config["factor_means"] = factor_means(config)
            if config["correlated_biases"] not in (True, False, "auto"):
                raise ValueError("model_config['correlated_biases'] must be True, False or "
                                 f"'auto', got {config['correlated_biases']!r}.")
            if config["correlated_biases"] == "auto":
                # the extensions (side features, implicit feedback, ordinal likelihood) are
                # written for independent biases
                config["correlated_biases"] = bool(
                    config["biases"] and config["factor_means"] is False and not features
                    and not config["implicit"] and config["likelihood"] == "gaussian"
                )
            if config["correlated_biases"] and not (config["biases"]
                                                    and config["factor_means"] is False):
                raise ValueError("model_config['correlated_biases'] needs biases=True and "
                                 "factor means fixed at zero (factor_means=False or 'auto').")
            for key, allowed in (
                ("parameterization", ("noncentered", "centered")),
                ("bias_parameterization", ("auto", "noncentered", "centered")),
            ):
                if config[key] not in allowed:
                    raise ValueError(
                        f"model_config[{key!r}] must be one of {allowed}, got {config[key]!r}."
                    )
        return config

    def _sampler_config(self):
        from bpmf.inference.nuts import check_backend, default_backend

        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}.")
        config = merge_config(self.default_sampler_config, self.sampler_config, "sampler_config")
        gibbs = self.method == "gibbs"
        if config["draws"] is None:
            config["draws"] = 900 if gibbs else 550
        if config["tune"] is None:
            config["tune"] = 250 if gibbs else 300
        if config["init_jitter"] is None:
            config["init_jitter"] = 0.01 if gibbs else 0.05
        if config["cores"] is None:
            config["cores"] = min(int(config["chains"]), _cpu_count())
        if config["keep"] not in ("all", "moments"):
            raise ValueError(
                f"sampler_config['keep'] must be 'all' or 'moments', got {config['keep']!r}."
            )
        for key, allow_zero in (("draws", False), ("chains", False), ("tune", True),
                                ("cores", False), ("thin", False), ("factor_draws", True),
                                ("threads", False)):
            config[key] = check_positive(f"sampler_config[{key!r}]", config[key], integer=True,
                                         allow_zero=allow_zero, allow_none=key == "threads")
        if not gibbs:
            if config["nuts_sampler"] is None:
                config["nuts_sampler"] = default_backend()
            check_backend(config["nuts_sampler"])
        return config

    def build_model(self, train):
        """The PyMC model that joint NUTS samples (LKJ prior; dims user, item, factor, obs)."""
        config = self._model_config()
        if config["implicit"]:
            raise ValueError("build_model: implicit feedback is sampled by method='gibbs' only.")
        if config["noise_weights"]:
            raise ValueError("build_model: noise weights are sampled by method='gibbs' only.")
        if config["covariance_prior"] != "lkj":
            raise ValueError(
                "build_model builds the LKJ model; covariance_prior='wishart' "
                "is sampled by method='gibbs' only."
            )
        train = as_ratings(train) if not isinstance(train, Ratings) else train
        designs, _ = encode_features(train, config)
        groups = _day_groups(train, config)
        return build_graph(train, check_n_factors(self.n_factors), config, designs,
                           self._ordinal_scale(train, config),
                           None if groups is None else groups[0])

    def _ordinal_scale(self, train, model_config):
        """``(low, high)`` of an ordinal model's whole ratings (None for a Gaussian model):
        ``rating_scale`` when given, else the range of the training ratings."""
        if model_config["likelihood"] != "ordinal":
            return None
        if self.rating_scale is not None:
            low, high = (float(x) for x in self.rating_scale)
            if not (low.is_integer() and high.is_integer()):
                raise ValueError(f"likelihood='ordinal' needs a rating_scale of whole numbers, "
                                 f"got {tuple(self.rating_scale)!r}.")
        else:
            low, high = float(np.min(train.values)), float(np.max(train.values))
        rating_categories(train.values, low, high)  # whole ratings on the scale, or raise
        if high <= low:
            raise ValueError(f"likelihood='ordinal' needs at least two rating levels; the "
                             f"ratings span [{low:g}, {high:g}].")
        return low, high

    # ------------------------------------------------------------------ fitting
    def fit(self, train):
        """Find the MAP, then sample the posterior from it; returns self."""
        n_factors = check_n_factors(self.n_factors)
        model_config = self._model_config()
        sampler_config = self._sampler_config()
        if self.method == "nuts" and model_config["covariance_prior"] == "wishart":
            raise ValueError(
                "method='nuts' samples the LKJ model only; use method='gibbs' "
                "for covariance_prior='wishart'."
            )
        if model_config["implicit"] and self.method != "gibbs":
            raise ValueError("implicit feedback (model_config['implicit']) needs method='gibbs'.")
        if model_config["noise_weights"] and self.method != "gibbs":
            raise ValueError("noise weights (model_config['noise_weights']) need "
                             "method='gibbs'.")
        if model_config["noise_weights"] and sampler_config["keep"] != "all":
            raise ValueError("noise weights keep every draw: use sampler_config['keep']='all'.")
        if model_config["noise_weights"] and sampler_config["implicit_step"] != "rows":
            raise ValueError("noise weights are sampled with sampler_config['implicit_step']="
                             "'rows' only.")
        if model_config["implicit"] and sampler_config["keep"] != "all":
            raise ValueError(
                "implicit feedback keeps every draw: use sampler_config['keep']='all'."
            )
        if (model_config["implicit"] and model_config["implicit_centered"]
                and sampler_config["implicit_step"] != "rows"):
            raise ValueError(
                "model_config['implicit_centered']=True is sampled by "
                "sampler_config['implicit_step']='rows' only."
            )
        train = self._start_fit(train)
        self._day_groups = _day_groups(train, model_config)
        self._designs, features = encode_features(train, model_config)
        self.__dict__.pop("features_", None)
        if features is not None:
            self.features_ = features
        self._scale_levels = self._ordinal_scale(train, model_config)
        progressbar = resolve_progressbar(self.progressbar)
        seeds = np.random.SeedSequence(self.random_state).generate_state(3)
        self.map_ = self._fit_map(
            train, n_factors, model_config, int(seeds[0]), sampler_config["threads"]
        )
        sample = self._sample_gibbs if self.method == "gibbs" else self._sample_nuts
        posterior, stats, groups = sample(
            train, model_config, sampler_config, int(seeds[2]), progressbar
        )
        if "sigma" not in posterior:
            posterior["sigma"] = np.full(posterior["mu"].shape, float(model_config["sigma"]))
        extra = {
            **groups,
            "map_estimate": xr.Dataset(
                {name: (POSTERIOR_DIMS[name], value) for name, value in self.map_.items()}
            ),
        }
        coords = {f"{dim}_feature": value["names"] for dim, value in (features or {}).items()}
        if self._scale_levels is not None:
            coords["cutpoint"] = cutpoint_prior_means(*self._scale_levels)
        if self._day_groups is not None:
            coords["user_day"] = np.arange(len(self._day_groups[1]))
        self.idata_ = make_datatree(
            posterior, train, n_factors=n_factors, sample_stats=stats, extra=extra, coords=coords
        )
        if "user_day" in self.idata_["posterior"].dims:  # each group's user id and UTC day
            group_users, group_days = self._day_groups[1:]
            self.idata_["posterior"] = self.idata_["posterior"].ds.assign_coords(
                user_day_user=("user_day", coord_values(train.user_ids)[group_users]),
                user_day_day=("user_day", group_days),
            )
        self._add_requested_groups(
            train, sampler_config["log_likelihood"], sampler_config["posterior_predictive"],
            np.random.default_rng(seeds[1]),
        )
        self.diagnostics_ = self._diagnose(train)
        return self

    def _fit_map(self, train, n_factors, model_config, seed, threads=None):
        from bpmf.inference.map import alternating_least_squares
        from bpmf.models.pmf import PMF

        config = merge_config(PMF.default_model_config, model_config["map_config"], "map_config")
        point, _ = alternating_least_squares(
            train.user_codes,
            train.item_codes,
            train.values,
            train.n_users,
            train.n_items,
            n_factors=n_factors,
            biases=bool(model_config["biases"]),
            factor_sd=config["factor_sd"],
            bias_sd=config["bias_sd"],
            mu_sd=config["mu_sd"],
            sigma=model_config["sigma"],
            sigma_sd=config["sigma_sd"],
            init_sd=config["init_sd"],
            random_state=seed,
            threads=threads,
        )
        return point

    def _gibbs(
        self,
        train,
        model_config,
        sampler_config,
        seed,
        progressbar,
        *,
        init,
        draws,
        tune,
        chains,
        keep="all",
        thin=1,
    ):
        from bpmf.inference.gibbs import sample_gibbs

        return sample_gibbs(
            train.user_codes,
            train.item_codes,
            train.values,
            train.n_users,
            train.n_items,
            n_factors=int(self.n_factors),
            draws=draws,
            tune=tune,
            chains=chains,
            biases=bool(model_config["biases"]),
            covariance_prior=model_config["covariance_prior"],
            model_config=model_config,
            init=init,
            random_state=seed,
            progressbar=progressbar,
            cores=int(sampler_config["cores"]),
            init_jitter=float(sampler_config["init_jitter"]),
            nuts={
                "target_accept": sampler_config["lkj_target_accept"],
                "max_treedepth": sampler_config["lkj_max_treedepth"],
                "tune_transitions": sampler_config["lkj_tune_transitions"],
            },
            threads=sampler_config["threads"],
            thin=thin,
            keep=keep,
            factor_draws=int(sampler_config["factor_draws"]) if keep == "moments" else None,
            overrelax=float(sampler_config["overrelax"]),
            noise_overrelax=sampler_config["noise_overrelax"],
            implicit_step=sampler_config["implicit_step"],
            features=getattr(self, "_designs", None),
            ordinal=self._scale_levels,
            implicit=_implicit_sets(train, model_config),
            day_groups=None if self._day_groups is None else self._day_groups[:2],
            noise_weights=bool(model_config["noise_weights"]),
        )

    def _sample_gibbs(self, train, model_config, sampler_config, seed, progressbar):
        draws = self._gibbs(
            train,
            model_config,
            sampler_config,
            seed,
            progressbar,
            init=self.map_,
            draws=int(sampler_config["draws"]),
            tune=int(sampler_config["tune"]),
            chains=int(sampler_config["chains"]),
            keep=sampler_config["keep"],
            thin=int(sampler_config["thin"]),
        )
        if sampler_config["keep"] == "moments":
            posterior, stats, groups = split_moments(draws, train, n_factors=int(self.n_factors))
            return posterior, (stats or None), groups
        stats = {name: value for name, value in draws.items() if name not in POSTERIOR_DIMS}
        posterior = {name: value for name, value in draws.items() if name in POSTERIOR_DIMS}
        return posterior, (stats or None), {}

    def _sample_nuts(self, train, model_config, sampler_config, seed, progressbar):
        from bpmf.inference.nuts import sample_nuts

        groups = None if self._day_groups is None else self._day_groups[0]
        model = build_graph(train, int(self.n_factors), model_config, self._designs,
                            self._scale_levels, groups)
        map_point = dict(self.map_)
        if self._scale_levels is not None:  # the MAP is Gaussian: cut-points at their means
            map_point["cutpoints"] = cutpoint_prior_means(*self._scale_levels)

        def start(chain_seed):
            rng = np.random.default_rng(chain_seed)
            if sampler_config["init"] == "map" or int(sampler_config["init_sweeps"]) == 0:
                return initial_point(
                    map_point, train, model_config, rng, float(sampler_config["init_jitter"]),
                    self._designs, groups,
                )
            state = self._gibbs(
                train,
                model_config,
                {**sampler_config, "cores": 1},
                int(chain_seed) % 2**63,
                False,
                init=self.map_,
                draws=1,
                tune=int(sampler_config["init_sweeps"]) - 1,
                chains=1,
            )
            names = [*self.map_, *[name for name in ("cutpoints", "day_bias", "day_bias_sd")
                                   if name in state]]
            point = {name: np.asarray(state[name])[0, -1] for name in names}
            point.update({name: np.asarray(state[name])[0, -1] for name in state
                          if name.startswith(("B_", "link_precision_")) or
                          name.endswith("_bias_link")})
            return initial_point(point, train, model_config, features=self._designs,
                                 day_groups=groups)

        var_names = [n for n in POSTERIOR_DIMS if n in model.named_vars]
        template = initial_point(map_point, train, model_config, features=self._designs,
                                 day_groups=groups)
        posterior, stats = sample_nuts(
            model, template, start, sampler_config, var_names, seed, progressbar
        )
        return posterior, stats, {}

    # ------------------------------------------------------------------ persistence
    def _saved_params(self):
        """Constructor arguments to save: feature tables travel in ``features_`` instead."""
        params = self.get_params()
        params["model_config"] = saved_config(params.get("model_config"))
        return params

    def _restore_state(self, state):
        super()._restore_state(state)
        self.model_config = restore_tables(self.model_config, state.get("features_"))

    def _diagnose(self, train, n_pairs=200):
        n_chains, n_draws = self._sample_shape()
        rng = np.random.default_rng(0)
        rows = rng.choice(train.n_ratings, min(n_pairs, train.n_ratings), replace=False)
        days = self._day_codes(None if train.times is None else train.times[rows],
                               train.user_codes[rows])
        predictions = self._expected_draws(train.user_codes[rows], train.item_codes[rows],
                                           days=days)
        # every kept draw: a keep="moments" fit has them in "trace" and "trace_stats"
        children = self.idata_.children
        stats_group = "trace_stats" if "trace_stats" in children else "sample_stats"
        stats = self.idata_[stats_group].ds if stats_group in children else None
        label = f"BPMF ({self.method}, {self._model_config()['covariance_prior']})"
        trace = "trace" if "trace" in children else "posterior"
        return diagnose(
            self.idata_[trace].ds,
            stats,
            predictions.reshape(n_chains, n_draws, -1),
            label=label,
        )


#: ``model_config["implicit"]`` and the sides whose effective factors get implicit offsets
_IMPLICIT_SIDES = {False: (), True: ("U",), "user": ("U",), "item": ("V",), "both": ("U", "V")}


def _check_implicit(config):
    """One-line errors for the implicit-feedback keys of ``model_config``."""
    value = config["implicit"]
    if isinstance(value, np.bool_):
        value = config["implicit"] = bool(value)
    if not isinstance(value, bool | str) or value not in _IMPLICIT_SIDES:
        raise ValueError("model_config['implicit'] must be False, True (= 'user'), 'user', "
                         f"'item' or 'both', got {config['implicit']!r}.")
    check_positive("model_config['implicit_scale_sd']", config["implicit_scale_sd"])
    if not isinstance(config["implicit_centered"], bool | np.bool_):
        raise ValueError("model_config['implicit_centered'] must be True or False, got "
                         f"{config['implicit_centered']!r}.")
    if config["implicit_pairs"] is not None and not config["implicit"]:
        raise ValueError("model_config['implicit_pairs'] needs model_config['implicit']=True.")


def _implicit_sets(train, model_config):
    """``{side: sets}`` of an implicit-feedback fit (None without implicit feedback): the
    users' sets N(u) of items (``"U"``) and the items' sets N(i) of users (``"V"``)."""
    from bpmf.inference.implicit import implicit_sets

    sides = _IMPLICIT_SIDES[model_config["implicit"]]
    if not sides:
        return None
    extra = None
    pairs = model_config["implicit_pairs"]
    if pairs is not None:
        if isinstance(pairs, dict):
            pairs = pd.DataFrame(pairs)
        users, items = as_pairs(pairs)
        user_codes, item_codes = train.encode_users(users), train.encode_items(items)
        known = (user_codes >= 0) & (item_codes >= 0)
        extra = (user_codes[known], item_codes[known])
    sets = {}
    if "U" in sides:
        sets["U"] = implicit_sets(train.user_codes, train.item_codes, train.n_users,
                                  train.n_items, extra)
    if "V" in sides:
        sets["V"] = implicit_sets(train.item_codes, train.user_codes, train.n_items,
                                  train.n_users, None if extra is None else extra[::-1])
    return sets


def _day_groups(train, model_config):
    """``(groups, group_users, group_days)`` of the day-specific user biases (None without
    them): each rating's (user, UTC day) group, and each group's user code and day."""
    if not model_config["user_day_bias"]:
        return None
    if train.times is None:
        raise DataError(
            "model_config['user_day_bias'] needs the time of each rating, and these ratings "
            "have none: build the Ratings with time= (or from_frame(..., time_col=...))."
        )
    return day_groups(train.user_codes, days_of(train.times))


def _cpu_count():
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
