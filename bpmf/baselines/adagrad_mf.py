"""Biased matrix factorisation trained on mini-batches with AdaGrad (sparse row updates)."""

import numpy as np

from bpmf._estimator import RatingEstimator
from bpmf.baselines._features import (
    check_positive,
    minibatches,
    progress,
    warn_not_converged,
)
from bpmf.baselines.optimizers import make_optimizer

# consecutive epochs whose training loss rose before the fit gives up (step size too noisy)
_MAX_INCREASES = 3


def mf_predict(params, user_codes, item_codes):
    """``mu + b_u + b_i + p_u . q_i`` for known codes (all >= 0)."""
    return (
        params["mu"][0]
        + params["user_bias"][user_codes]
        + params["item_bias"][item_codes]
        + np.einsum(
            "ij,ij->i", params["user_factors"][user_codes], params["item_factors"][item_codes]
        )
    )


def mf_loss_and_grads(params, user_codes, item_codes, ratings, reg, reg_bias):
    r"""Batch objective and its gradients, the embedding ones row-sparse.

    .. math::

        J_B = \frac{1}{|B|}\sum_{(u,i)\in B} \Big[(\hat r_{ui} - r_{ui})^2
              + \lambda_b (b_u^2 + b_i^2) + \lambda (\lVert p_u\rVert^2 + \lVert q_i\rVert^2)\Big]

    Returns ``(loss, grads, rows)``: ``grads[name]`` has one row per rating of the batch for the
    four embedding tables (``rows[name]`` gives the table rows) and is dense for ``mu``.
    """
    n = len(ratings)
    p = params["user_factors"][user_codes]
    q = params["item_factors"][item_codes]
    b_u = params["user_bias"][user_codes]
    b_i = params["item_bias"][item_codes]
    error = params["mu"][0] + b_u + b_i + np.einsum("ij,ij->i", p, q) - ratings
    loss = (
        float(
            np.sum(error**2)
            + reg_bias * (np.sum(b_u**2) + np.sum(b_i**2))
            + reg * (np.sum(p * p) + np.sum(q * q))
        )
        / n
    )
    scale = 2.0 / n
    grads = {
        "mu": np.array([scale * np.sum(error)]),
        "user_bias": scale * (error + reg_bias * b_u),
        "item_bias": scale * (error + reg_bias * b_i),
        "user_factors": scale * (error[:, None] * q + reg * p),
        "item_factors": scale * (error[:, None] * p + reg * q),
    }
    rows = {
        "user_bias": user_codes,
        "item_bias": item_codes,
        "user_factors": user_codes,
        "item_factors": item_codes,
    }
    return loss, grads, rows


class AdaGradMF(RatingEstimator):
    r"""Matrix factorisation with biases, L2-regularised, trained by mini-batch AdaGrad.

    Parameters
    ----------
    n_factors : int, default 50
        Dimension :math:`k` of the user and item factors.
    reg : float, default 0.12
        L2 weight :math:`\lambda` on the factors (per rating, see Notes).
    reg_bias : float, default 0.01
        L2 weight :math:`\lambda_b` on the biases.
    learning_rate : float, default 0.1
        AdaGrad base step size.
    batch_size : int, default 1024
        Ratings per mini-batch.
    max_iter : int, default 100
        Maximum number of epochs (passes over the training ratings).
    tol : float, default 1e-4
        Stop when an epoch lowers the full training objective by less than ``tol`` (relative).
        Epochs that raise it do not count as convergence; after 3 in a row the fit stops with a
        :class:`ConvergenceWarning`.
    init_sd : float, default 0.1
        Standard deviation of the Gaussian initial factors (biases start at 0, ``mu`` at the mean).
    optimizer : {"adagrad", "sgd"} or AdaGrad or SGD, default "adagrad"
        ``"sgd"`` (momentum 0.9) is available for comparison.
    random_state : int or None, default None
        Seeds the initial factors and the mini-batch order.
    progressbar : bool or None, default None
        Show a tqdm bar over epochs; ``None`` follows :func:`bpmf.set_config`.
    on_unseen : {"ignore", "warn", "raise"}, default "ignore"
        Unseen users or items get a zero bias and zero factors.

    Attributes
    ----------
    global_mean_ : float
        The learned :math:`\mu`.
    user_bias_, item_bias_ : ndarray
    user_factors_, item_factors_ : ndarray of shape (n_users, k), (n_items, k)
    loss_curve_ : list of float
        The full training objective after each epoch (the first entry is at initialisation).
    n_iter_ : int
        Number of epochs run.

    Notes
    -----
    The model and the objective minimised (the MAP estimate under Gaussian noise and Gaussian
    priors, with the prior weight spread over each user's and item's ratings):

    .. math::

        \hat r_{ui} = \mu + b_u + b_i + p_u^\top q_i,

    .. math::

        J = \frac{1}{n} \sum_{(u, i)} \Big[(r_{ui} - \hat r_{ui})^2
            + \lambda_b (b_u^2 + b_i^2) + \lambda (\lVert p_u \rVert^2 + \lVert q_i \rVert^2)\Big].

    Each mini-batch gradient touches only the rows of the users and items in the batch; AdaGrad
    updates only those rows and their accumulators, so rarely rated users and items keep larger
    step sizes.
    """

    def __init__(
        self,
        n_factors=50,
        reg=0.12,
        reg_bias=0.01,
        learning_rate=0.1,
        batch_size=1024,
        max_iter=100,
        tol=1e-4,
        init_sd=0.1,
        optimizer="adagrad",
        random_state=None,
        progressbar=None,
        on_unseen="ignore",
    ):
        self.n_factors = n_factors
        self.reg = reg
        self.reg_bias = reg_bias
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.init_sd = init_sd
        self.optimizer = optimizer
        self.random_state = random_state
        self.progressbar = progressbar
        self.on_unseen = on_unseen

    def _init_params(self, n_users, n_items, mean, rng):
        k = check_positive("n_factors", self.n_factors, integer=True)
        sd = check_positive("init_sd", self.init_sd, allow_zero=True)
        return {
            "mu": np.array([mean]),
            "user_bias": np.zeros(n_users),
            "item_bias": np.zeros(n_items),
            "user_factors": sd * rng.standard_normal((n_users, k)),
            "item_factors": sd * rng.standard_normal((n_items, k)),
        }

    def fit(self, train):
        """Fit on a :class:`~bpmf.datasets.Ratings` or DataFrame of ratings; returns ``self``."""
        reg = check_positive("reg", self.reg, allow_zero=True)
        reg_bias = check_positive("reg_bias", self.reg_bias, allow_zero=True)
        learning_rate = check_positive("learning_rate", self.learning_rate)
        batch_size = check_positive("batch_size", self.batch_size, integer=True)
        max_iter = check_positive("max_iter", self.max_iter, integer=True)
        tol = check_positive("tol", self.tol, allow_zero=True)
        optimizer = make_optimizer(self.optimizer, learning_rate)
        train = self._start_fit(train)
        rng = np.random.default_rng(self.random_state)
        users, items, ratings = train.user_codes, train.item_codes, train.values
        params = self._init_params(train.n_users, train.n_items, ratings.mean(), rng)

        def full_loss():
            return mf_loss_and_grads(params, users, items, ratings, reg, reg_bias)[0]

        losses = [full_loss()]
        converged = False
        n_epochs = stalled = 0
        # overflow shows up as a non-finite loss, reported below with advice
        with (
            np.errstate(over="ignore", invalid="ignore"),
            progress(max_iter, self.progressbar, type(self).__name__) as bar,
        ):
            for n_epochs in range(1, max_iter + 1):
                for batch in minibatches(len(ratings), batch_size, rng):
                    _, grads, rows = mf_loss_and_grads(
                        params, users[batch], items[batch], ratings[batch], reg, reg_bias
                    )
                    optimizer.step(params, grads, rows)
                losses.append(full_loss())
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if not np.isfinite(losses[-1]):
                    raise FloatingPointError(
                        f"AdaGradMF diverged (training loss {losses[-1]}) in epoch {n_epochs}; "
                        "use a smaller learning_rate."
                    )
                decrease = losses[-2] - losses[-1]
                if 0 <= decrease < tol * abs(losses[-2]):
                    converged = True  # a small but genuine decrease: the optimum is reached
                    break
                # a loss that went up is noise from the step size, not convergence: allow a few
                stalled = stalled + 1 if decrease < 0 else 0
                if stalled >= _MAX_INCREASES:
                    break
        if not converged and tol > 0:
            warn_not_converged(self, max_iter, " (relative loss decrease per epoch)")
        self.global_mean_ = float(params["mu"][0])
        self.user_bias_ = params["user_bias"]
        self.item_bias_ = params["item_bias"]
        self.user_factors_ = params["user_factors"]
        self.item_factors_ = params["item_factors"]
        self.loss_curve_ = losses
        self.n_iter_ = n_epochs
        return self

    def predict(self, pairs):
        """Predicted ratings for (user, item) pairs, clipped to the training scale."""
        user_codes, item_codes = self._encode_pairs(pairs)
        self._handle_unseen(user_codes, item_codes, self.on_unseen)
        known_u, known_i = user_codes >= 0, item_codes >= 0
        u, i = np.maximum(user_codes, 0), np.maximum(item_codes, 0)
        prediction = (
            self.global_mean_
            + np.where(known_u, self.user_bias_[u], 0.0)
            + np.where(known_i, self.item_bias_[i], 0.0)
            + np.where(
                known_u & known_i,
                np.einsum("ij,ij->i", self.user_factors_[u], self.item_factors_[i]),
                0.0,
            )
        )
        return self._clip(prediction)
