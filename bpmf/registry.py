"""Model names -> estimator classes, and named presets of their settings.

The command line and :func:`bpmf.compare` refer to models by short names (``"pmf"``,
``"bpmf"``, ``"user-mean"``, ...). Classes are given as dotted paths and imported only when a
model is built, so a model that is missing or broken gives a clear error at use time instead
of breaking ``import bpmf``.

A *preset* is a named set of settings per model: ``"default"`` uses each class's own
defaults, ``"quick"`` uses small sampler/optimiser budgets so that every model on five folds
of the embedded data finishes in minutes on two cores (for smoke runs, CI and ``make run``).
"""

from __future__ import annotations

import copy
import importlib
import inspect
from dataclasses import dataclass, field

__all__ = ["MODELS", "PRESETS", "ModelSpec", "list_models", "make_model", "model_class"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: where its class lives, fixed arguments and a one-line description."""

    name: str
    class_path: str
    description: str
    fixed_params: dict = field(default_factory=dict)


def _spec(name, class_path, description, **fixed_params):
    return ModelSpec(name, class_path, description, fixed_params)


MODELS = {
    spec.name: spec
    for spec in (
        _spec("bpmf", "bpmf.models.BPMF", "Bayesian PMF, LKJ priors, blocked Gibbs"),
        _spec(
            "bpmf-nuts",
            "bpmf.models.BPMF",
            "Bayesian PMF, LKJ priors, joint NUTS (PyMC/nutpie)",
            method="nuts",
        ),
        _spec(
            "bpmf-wishart",
            "bpmf.models.BPMF",
            "Bayesian PMF, conjugate Normal-Wishart priors (the paper's), Gibbs",
            model_config={"covariance_prior": "wishart"},
        ),
        _spec(
            "bpmf-features",
            "bpmf.models.BPMF",
            "Bayesian PMF with the ML-100K user and item side features, Gibbs",
            model_config={"user_features": "ml-100k", "item_features": "ml-100k"},
        ),
        _spec(
            "bpmf-ordinal",
            "bpmf.models.BPMF",
            "Bayesian PMF, LKJ priors, ordered-probit likelihood on whole ratings, Gibbs",
            model_config={"likelihood": "ordinal"},
        ),
        _spec(
            "bpmf-svdpp",
            "bpmf.models.BPMF",
            "Bayesian SVD++: BPMF with implicit feedback (the items each user rated), Gibbs",
            model_config={"implicit": True},
        ),
        _spec(
            "bpmf-svdpp-both",
            "bpmf.models.BPMF",
            "Bayesian SVD++ on both sides: the items each user rated and the users who rated "
            "each item, Gibbs",
            model_config={"implicit": "both"},
        ),
        _spec(
            "bpmf-day",
            "bpmf.models.BPMF",
            "Bayesian PMF with a bias per user and day of rating (needs rating times), Gibbs",
            model_config={"user_day_bias": True},
        ),
        _spec(
            "bpmf-noise",
            "bpmf.models.BPMF",
            "Bayesian PMF with per-user and per-item noise weights (heteroscedastic noise), "
            "Gibbs",
            model_config={"noise_weights": True},
        ),
        _spec("pmf", "bpmf.models.PMF", "Probabilistic matrix factorization, MAP"),
        _spec("adagrad", "bpmf.baselines.AdaGradMF", "Matrix factorization by AdaGrad (numpy)"),
        _spec("mlp", "bpmf.baselines.MLPRegressor", "Multi-layer perceptron on embeddings"),
        _spec("ols", "bpmf.baselines.OLSRegressor", "Least squares on user and item indicators"),
        _spec("softmax", "bpmf.baselines.SoftmaxRegression", "Softmax regression on rating levels"),
        _spec("user-item-mean", "bpmf.baselines.UserItemMean", "Average of user and item means"),
        _spec("item-mean", "bpmf.baselines.ItemMean", "Item's mean rating"),
        _spec("user-mean", "bpmf.baselines.UserMean", "User's mean rating"),
        _spec("global-mean", "bpmf.baselines.GlobalMean", "Mean training rating"),
        _spec("random", "bpmf.baselines.UniformRandom", "Uniform on the rating scale"),
    )
}

#: ``preset -> model name -> settings``; a ``sampler_config`` entry is merged into the model's.
#: The quick preset of every Gibbs-sampled BPMF variant.
_QUICK_GIBBS = {"n_factors": 3, "sampler_config": {"draws": 1500, "tune": 300, "chains": 2}}

#: Models absent from a preset use their class defaults.
PRESETS = {
    "default": {},
    "quick": {
        # Sized so that the samplers' diagnostics pass on the Food World Cup folds (two chains
        # of 1,000 Gibbs draws: a few seconds per fit); joint NUTS needs far more draws than a
        # quick run affords for R-hat(mu) <= 1.01, so `make run` leaves it out.
        "bpmf": _QUICK_GIBBS,
        "bpmf-nuts": {
            "n_factors": 3,
            "sampler_config": {"draws": 200, "tune": 200, "chains": 2},
        },
        "bpmf-wishart": _QUICK_GIBBS,
        "bpmf-features": _QUICK_GIBBS,
        "bpmf-ordinal": _QUICK_GIBBS,
        "bpmf-svdpp": _QUICK_GIBBS,
        "bpmf-svdpp-both": _QUICK_GIBBS,
        "bpmf-day": _QUICK_GIBBS,
        "bpmf-noise": _QUICK_GIBBS,
        "pmf": {"n_factors": 3},
        "adagrad": {"n_factors": 10},
        "softmax": {"max_iter": 3000},
    },
}

#: Settings the command line offers for every model; silently skipped by models without them.
SHARED_PARAMS = ("n_factors", "random_state")


def list_models():
    """Names of the registered models, most elaborate first."""
    return list(MODELS)


def _lookup(name):
    key = str(name).strip().lower()
    if key not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    return MODELS[key]


def model_class(name):
    """The estimator class registered as ``name`` (imported now).

    Raises
    ------
    ValueError
        If ``name`` is not registered.
    ImportError
        If the class cannot be imported (the message names the model and the missing class).
    """
    spec = _lookup(name)
    module_name, _, class_name = spec.class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"Model {spec.name!r} needs {spec.class_path}, which cannot be imported ({exc}). "
            "Check that bpmf is fully installed (pip install -e '.[test]')."
        ) from exc


def _accepted_params(cls):
    signature = inspect.signature(cls.__init__)
    return {
        name
        for name, p in signature.parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def make_model(name, *, preset="default", sampler_config=None, params=None, **shared):
    """Build a fresh, unfitted estimator from its registered name.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS` (case-insensitive), e.g. ``"bpmf"`` or ``"user-mean"``.
    preset : str, default "default"
        A key of :data:`PRESETS`; its settings for this model come first.
    sampler_config : dict, optional
        Sampler settings (``draws``, ``tune``, ``chains``, ``nuts_sampler``, ...) merged over
        the preset's; ignored by models without a ``sampler_config``.
    params : dict, optional
        Constructor arguments for this model; every key must be accepted by its class.
    **shared
        Settings offered to every model (``n_factors``, ``random_state``); passed only to
        classes that accept them, and only when not ``None``.

    Returns
    -------
    RatingEstimator
        An unfitted instance.

    Raises
    ------
    ValueError
        Unknown model or preset, or a ``params`` key the class does not accept.
    """
    spec = _lookup(name)
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    unknown_shared = set(shared) - set(SHARED_PARAMS)
    if unknown_shared:
        raise TypeError(
            f"make_model got unexpected keyword(s) {sorted(unknown_shared)}; put constructor "
            "arguments in params={...}."
        )
    cls = model_class(spec.name)
    accepted = _accepted_params(cls)
    kwargs = copy.deepcopy(PRESETS[preset].get(spec.name, {}))
    kwargs.update({k: v for k, v in shared.items() if v is not None and k in accepted})
    for key, value in (params or {}).items():
        if key not in accepted:
            raise ValueError(
                f"Model {spec.name!r} ({cls.__name__}) has no parameter {key!r}; "
                f"valid: {sorted(accepted)}."
            )
        kwargs[key] = value
    if sampler_config and "sampler_config" in accepted:
        kwargs["sampler_config"] = {**(kwargs.get("sampler_config") or {}), **sampler_config}
    for key, value in spec.fixed_params.items():  # a fixed dict (model_config) is merged in
        given = kwargs.get(key)
        kwargs[key] = {**given, **value} if isinstance(value, dict) and given else value
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return cls(**kwargs)
