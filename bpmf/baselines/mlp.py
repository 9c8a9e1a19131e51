"""A multilayer perceptron on user and item embeddings, with batch normalisation, in numpy.

Every layer has a hand-written forward and backward pass; :class:`MLPRegressor` chains them.
"""

import copy

import numpy as np
from threadpoolctl import threadpool_limits

from bpmf._estimator import RatingEstimator
from bpmf.baselines._features import (
    check_choice,
    check_positive,
    minibatches,
    progress,
    warn_not_converged,
)
from bpmf.baselines.optimizers import make_optimizer


# ---------------------------------------------------------------------- layers
class Dense:
    """Affine layer ``x W + b`` (``b`` omitted when ``bias=False``, e.g. before BatchNorm)."""

    def __init__(self, n_in, n_out, rng, *, bias=True, gain=2.0):
        self.params = {"W": rng.standard_normal((n_in, n_out)) * np.sqrt(gain / n_in)}
        if bias:
            self.params["b"] = np.zeros(n_out)
        self.grads = {}

    def forward(self, x, training=True):
        self._x = x
        out = x @ self.params["W"]
        return out + self.params["b"] if "b" in self.params else out

    def backward(self, grad_out):
        self.grads["W"] = self._x.T @ grad_out
        if "b" in self.params:
            self.grads["b"] = grad_out.sum(axis=0)
        return grad_out @ self.params["W"].T


class BatchNorm:
    r"""Batch normalisation of each feature over the batch axis.

    Training: :math:`\hat x = (z - \bar z_B) / \sqrt{s^2_B + \epsilon}` with the per-feature batch
    mean and (biased) variance, output :math:`\gamma \hat x + \beta`, and the running statistics
    move toward the batch ones, :math:`m \leftarrow (1 - \rho) m + \rho \bar z_B`,
    :math:`v \leftarrow (1 - \rho) v + \rho s^2_B` (``momentum`` :math:`= \rho`; they start at
    :math:`m = 0`, :math:`v = 1`). Inference normalises with :math:`m` and :math:`v` instead.
    """

    def __init__(self, n_features, momentum=0.1, eps=1e-5):
        self.params = {"gamma": np.ones(n_features), "beta": np.zeros(n_features)}
        self.running_mean = np.zeros(n_features)
        self.running_var = np.ones(n_features)
        self.momentum = momentum
        self.eps = eps
        self.grads = {}

    def normalize(self, z, training=True):
        """The normalised :math:`\\hat x` (before gamma/beta); updates running stats in training."""
        if training:
            if z.shape[0] < 2:
                raise ValueError(
                    "BatchNorm needs at least 2 samples per batch in training mode; "
                    "use batch_size >= 2."
                )
            mean, var = z.mean(axis=0), z.var(axis=0)
            self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var = (1 - self.momentum) * self.running_var + self.momentum * var
        else:
            mean, var = self.running_mean, self.running_var
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._x_hat = (z - mean) * self._inv_std
        return self._x_hat

    def forward(self, z, training=True):
        return self.params["gamma"] * self.normalize(z, training) + self.params["beta"]

    def backward(self, grad_out):
        x_hat, inv_std = self._x_hat, self._inv_std
        self.grads["gamma"] = (grad_out * x_hat).sum(axis=0)
        self.grads["beta"] = grad_out.sum(axis=0)
        g = grad_out * self.params["gamma"]
        n = g.shape[0]
        # d/dz of the batch-normalised output, through the batch mean and variance
        return inv_std / n * (n * g - g.sum(axis=0) - x_hat * (g * x_hat).sum(axis=0))


class Activation:
    """Elementwise ``relu`` or ``tanh``."""

    def __init__(self, name):
        self.name = check_choice("activation", name, ("relu", "tanh"))
        self.params, self.grads = {}, {}

    def forward(self, z, training=True):
        self._out = np.maximum(z, 0.0) if self.name == "relu" else np.tanh(z)
        return self._out

    def backward(self, grad_out):
        if self.name == "relu":
            return grad_out * (self._out > 0)
        return grad_out * (1.0 - self._out**2)


# ---------------------------------------------------------------------- the network
class _Network:
    """Embeddings -> [Dense -> BatchNorm -> activation]* -> Dense(1); forward and backward."""

    def __init__(
        self,
        n_users,
        n_items,
        n_factors,
        hidden,
        activation,
        batch_norm,
        bn_momentum,
        mean,
        rng,
        biases=True,
        init_sd=0.1,
    ):
        self.embeddings = {
            "user_embedding": init_sd * rng.standard_normal((n_users, n_factors)),
            "item_embedding": init_sd * rng.standard_normal((n_items, n_factors)),
        }
        if biases:
            self.embeddings["user_bias"] = np.zeros(n_users)
            self.embeddings["item_bias"] = np.zeros(n_items)
        self.layers = []
        width = 2 * n_factors
        for size in hidden:
            gain = 2.0 if activation == "relu" else 1.0
            self.layers.append(Dense(width, size, rng, bias=not batch_norm, gain=gain))
            if batch_norm:
                self.layers.append(BatchNorm(size, momentum=bn_momentum))
            self.layers.append(Activation(activation))
            width = size
        output = Dense(width, 1, rng, gain=1.0)
        # start as the constant mean-rating predictor: with BatchNorm the hidden features have
        # unit variance, so random output weights would add noise of the size of the ratings' sd
        output.params["W"][:] = 0.0
        output.params["b"][:] = mean
        self.layers.append(output)

    def parameters(self):
        """Flat dict of every trainable array (views, updated in place by the optimiser)."""
        params = dict(self.embeddings)
        for k, layer in enumerate(self.layers):
            params.update({f"{k}.{name}": value for name, value in layer.params.items()})
        return params

    def embed(self, user_codes, item_codes):
        """Concatenated embeddings; unseen ids (code -1) get zero vectors."""
        user = np.where(
            (user_codes >= 0)[:, None],
            self.embeddings["user_embedding"][np.maximum(user_codes, 0)],
            0.0,
        )
        item = np.where(
            (item_codes >= 0)[:, None],
            self.embeddings["item_embedding"][np.maximum(item_codes, 0)],
            0.0,
        )
        return np.hstack([user, item])

    def bias(self, user_codes, item_codes):
        """``b_u + b_i`` (zero for unseen ids, and when the network has no bias terms)."""
        if "user_bias" not in self.embeddings:
            return 0.0
        user = np.where(
            user_codes >= 0, self.embeddings["user_bias"][np.maximum(user_codes, 0)], 0.0
        )
        item = np.where(
            item_codes >= 0, self.embeddings["item_bias"][np.maximum(item_codes, 0)], 0.0
        )
        return user + item

    def forward(self, user_codes, item_codes, training=True):
        x = self.embed(user_codes, item_codes)
        for layer in self.layers:
            x = layer.forward(x, training)
        return x[:, 0] + self.bias(user_codes, item_codes)

    def loss_and_grads(self, user_codes, item_codes, ratings, reg, weight_decay, reg_bias=0.0):
        r"""Batch objective, dense gradients and row-sparse embedding gradients (training mode).

        .. math:: J_B = \frac{1}{B}\sum_{b}\big[(\hat r_b - r_b)^2 + \lambda(\lVert e_{u_b}\rVert^2
                  + \lVert e_{i_b}\rVert^2) + \lambda_b (b_{u_b}^2 + b_{i_b}^2)\big]
                  + \omega \sum_l \lVert W_l \rVert^2
        """
        n = len(ratings)
        x = self.embed(user_codes, item_codes)
        k = x.shape[1] // 2
        out = x
        for layer in self.layers:
            out = layer.forward(out, True)
        has_bias = "user_bias" in self.embeddings
        if has_bias:
            b_u = self.embeddings["user_bias"][user_codes]
            b_i = self.embeddings["item_bias"][item_codes]
            error = out[:, 0] + b_u + b_i - ratings
        else:
            error = out[:, 0] - ratings
        weights = [layer.params["W"] for layer in self.layers if isinstance(layer, Dense)]
        loss = float(
            np.sum(error**2) / n
            + reg * np.sum(x * x) / n
            + weight_decay * sum(np.sum(W * W) for W in weights)
        )
        if has_bias:
            loss += reg_bias * float(np.sum(b_u**2) + np.sum(b_i**2)) / n
        grad = (2.0 / n) * error[:, None]
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        grad_x = grad + (2.0 * reg / n) * x
        grads, rows = {}, {}
        for j, layer in enumerate(self.layers):
            for name, value in layer.grads.items():
                if name == "W":
                    value = value + 2.0 * weight_decay * layer.params["W"]
                grads[f"{j}.{name}"] = value
        grads["user_embedding"], rows["user_embedding"] = grad_x[:, :k], user_codes
        grads["item_embedding"], rows["item_embedding"] = grad_x[:, k:], item_codes
        if has_bias:
            grads["user_bias"] = (2.0 / n) * (error + reg_bias * b_u)
            grads["item_bias"] = (2.0 / n) * (error + reg_bias * b_i)
            rows["user_bias"], rows["item_bias"] = user_codes, item_codes
        return loss, grads, rows


class MLPRegressor(RatingEstimator):
    r"""Rating regression by a multilayer perceptron on learned user and item embeddings.

    Parameters
    ----------
    n_factors : int, default 32
        Size of each of the user and item embeddings.
    hidden_layer_sizes : tuple of int, default (64,)
        Widths of the hidden layers (affine -> BatchNorm -> activation each).
    activation : {"relu", "tanh"}, default "relu"
    batch_norm : bool, default True
        Put a BatchNorm between each hidden affine map and its activation.
    bn_momentum : float, default 0.1
        Weight of the current batch in the BatchNorm running statistics.
    biases : bool, default True
        Add learned user and item biases :math:`b_u + b_i` to the network output (a "wide"
        linear part next to the "deep" one). Without them BatchNorm's scale invariance leaves
        the per-user and per-item offsets to the network, which fits them worse (about 0.02
        RMSE on MovieLens 100K).
    reg : float, default 0.05
        L2 weight :math:`\lambda` on the embeddings (per rating, see Notes).
    reg_bias : float, default 0.01
        L2 weight :math:`\lambda_b` on the biases (per rating).
    weight_decay : float, default 0.01
        L2 weight :math:`\omega` on the dense weight matrices.
    optimizer : {"adagrad", "sgd"} or AdaGrad or SGD, default "adagrad"
    learning_rate : float, default 0.05
    batch_size : int, default 512
    max_iter : int, default 30
        Maximum number of epochs.
    tol : float, default 1e-3
        An epoch counts as an improvement when it lowers the monitored quantity (validation
        RMSE with ``early_stopping``, else the mean training batch loss) by more than ``tol``
        (relative).
    early_stopping : bool, default True
        Hold out ``validation_fraction`` of the training ratings (seeded), stop after
        ``n_iter_no_change`` epochs without improvement of their RMSE, and keep the best epoch.
        BatchNorm makes the network invariant to the scale of the embeddings, so the L2 penalty
        alone does not stop it from memorising the training ratings; early stopping does.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 3
    random_state : int or None, default None
        Seeds the initial weights and the mini-batch order.
    progressbar : bool or None, default None
    on_unseen : {"ignore", "warn", "raise"}, default "ignore"
        Unseen users or items get a zero embedding.

    Attributes
    ----------
    network_ : object
        The fitted layers (``network_.layers``) and embeddings (``network_.embeddings``).
    loss_curve_ : list of float
        Mean training batch objective per epoch.
    validation_scores_ : list of float
        Validation RMSE per epoch (empty without early stopping).
    best_iter_ : int
        The epoch whose weights were kept.
    n_iter_ : int
        Number of epochs run.

    Notes
    -----
    With :math:`x_{ui} = [e_u; e_i]` and, per hidden layer :math:`l`,
    :math:`h_l = \phi(\mathrm{BN}(W_l h_{l-1}))`, :math:`h_0 = x_{ui}`,

    .. math::

        \hat r_{ui} = w_{out}^\top h_L + c + b_u + b_i, \qquad
        \mathrm{BN}(z) = \gamma \frac{z - \bar z_B}{\sqrt{s^2_B + \epsilon}} + \beta,

    trained on mini-batches :math:`B` by minimising

    .. math::

        J_B = \frac{1}{|B|} \sum_{(u,i) \in B} \Big[(\hat r_{ui} - r_{ui})^2
              + \lambda (\lVert e_u\rVert^2 + \lVert e_i\rVert^2) + \lambda_b (b_u^2 + b_i^2)\Big]
              + \omega \sum_l \lVert W_l \rVert^2 .

    At prediction time BatchNorm uses its running mean and variance, so a prediction does not
    depend on the other pairs predicted with it.
    """

    def __init__(
        self,
        n_factors=32,
        hidden_layer_sizes=(64,),
        activation="relu",
        batch_norm=True,
        bn_momentum=0.1,
        biases=True,
        reg=0.05,
        reg_bias=0.01,
        weight_decay=0.01,
        optimizer="adagrad",
        learning_rate=0.05,
        batch_size=512,
        max_iter=30,
        tol=1e-3,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=3,
        random_state=None,
        progressbar=None,
        on_unseen="ignore",
    ):
        self.n_factors = n_factors
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.batch_norm = batch_norm
        self.bn_momentum = bn_momentum
        self.biases = biases
        self.reg = reg
        self.reg_bias = reg_bias
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.progressbar = progressbar
        self.on_unseen = on_unseen

    def _validate(self):
        hidden = tuple(self.hidden_layer_sizes)
        for size in hidden:
            check_positive("hidden_layer_sizes entries", size, integer=True)
        check_choice("activation", self.activation, ("relu", "tanh"))
        momentum = check_positive("bn_momentum", self.bn_momentum)
        if momentum > 1:
            raise ValueError(f"bn_momentum must be in (0, 1], got {momentum!r}.")
        batch_size = check_positive("batch_size", self.batch_size, integer=True)
        if self.batch_norm and hidden and batch_size < 2:
            raise ValueError("batch_size must be >= 2 with batch_norm=True (batch statistics).")
        return {
            "n_factors": check_positive("n_factors", self.n_factors, integer=True),
            "hidden": hidden,
            "momentum": momentum,
            "reg": check_positive("reg", self.reg, allow_zero=True),
            "reg_bias": check_positive("reg_bias", self.reg_bias, allow_zero=True),
            "weight_decay": check_positive("weight_decay", self.weight_decay, allow_zero=True),
            "learning_rate": check_positive("learning_rate", self.learning_rate),
            "batch_size": batch_size,
            "max_iter": check_positive("max_iter", self.max_iter, integer=True),
            "tol": check_positive("tol", self.tol, allow_zero=True),
            "patience": check_positive("n_iter_no_change", self.n_iter_no_change, integer=True),
            "validation_fraction": _check_fraction(self.validation_fraction),
        }

    def _build(self, n_users, n_items, mean, rng, settings):
        return _Network(
            n_users,
            n_items,
            settings["n_factors"],
            settings["hidden"],
            self.activation,
            bool(self.batch_norm),
            settings["momentum"],
            mean,
            rng,
            biases=bool(self.biases),
        )

    def fit(self, train):
        """Fit on a :class:`~bpmf.datasets.Ratings` or DataFrame of ratings; returns ``self``."""
        settings = self._validate()
        optimizer = make_optimizer(self.optimizer, settings["learning_rate"])
        train = self._start_fit(train)
        rng = np.random.default_rng(self.random_state)
        users, items, ratings = train.user_codes, train.item_codes, train.values
        fit_rows, valid_rows = np.arange(len(ratings)), None
        if self.early_stopping:
            order = rng.permutation(len(ratings))
            n_valid = int(round(settings["validation_fraction"] * len(ratings)))
            if n_valid < 1 or n_valid >= len(ratings) - 1:
                raise ValueError(
                    f"early_stopping needs a validation set: validation_fraction="
                    f"{self.validation_fraction} of {len(ratings)} ratings leaves none; use more "
                    "data or early_stopping=False."
                )
            valid_rows, fit_rows = np.sort(order[:n_valid]), np.sort(order[n_valid:])
        network = self._build(train.n_users, train.n_items, ratings.mean(), rng, settings)
        params = network.parameters()
        batch_size = settings["batch_size"]
        if self.batch_norm and len(fit_rows) % batch_size == 1:
            batch_size += 1  # never leave a last batch of one sample for BatchNorm
        losses, scores = [], []
        best, best_network, since_best, n_epochs = np.inf, None, 0, 0
        stopped = False
        # mini-batch matrices are small: BLAS threads only add overhead (and thrash when the
        # cores are shared), so the fit runs single-threaded
        # (overflow shows up as a non-finite loss, reported below with advice)
        with (
            threadpool_limits(limits=1, user_api="blas"),
            np.errstate(over="ignore", invalid="ignore"),
            progress(settings["max_iter"], self.progressbar, type(self).__name__) as bar,
        ):
            for n_epochs in range(1, settings["max_iter"] + 1):
                total = 0.0
                for batch in minibatches(len(fit_rows), batch_size, rng):
                    rows_b = fit_rows[batch]
                    loss, grads, rows = network.loss_and_grads(
                        users[rows_b],
                        items[rows_b],
                        ratings[rows_b],
                        settings["reg"],
                        settings["weight_decay"],
                        settings["reg_bias"],
                    )
                    optimizer.step(params, grads, rows)
                    total += loss * len(batch)
                losses.append(total / len(fit_rows))
                if not np.isfinite(losses[-1]):
                    raise FloatingPointError(
                        f"MLPRegressor diverged (training loss {losses[-1]}) in epoch {n_epochs}; "
                        "use a smaller learning_rate."
                    )
                if valid_rows is not None:
                    predicted = network.forward(users[valid_rows], items[valid_rows], False)
                    scores.append(float(np.sqrt(np.mean((predicted - ratings[valid_rows]) ** 2))))
                monitored = scores[-1] if scores else losses[-1]
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.4f}", monitored=f"{monitored:.4f}")
                if monitored < best * (1 - settings["tol"]):
                    since_best = 0
                    if valid_rows is not None:
                        best_network, self.best_iter_ = copy.deepcopy(network), n_epochs
                else:
                    since_best += 1
                best = min(best, monitored)
                if since_best >= settings["patience"]:
                    stopped = True
                    break
        if not stopped and settings["tol"] > 0 and valid_rows is None:
            warn_not_converged(self, settings["max_iter"], " (relative loss decrease per epoch)")
        if best_network is None:
            best_network, self.best_iter_ = network, n_epochs
        self.network_ = best_network
        self.loss_curve_ = losses
        self.validation_scores_ = scores
        self.n_iter_ = n_epochs
        return self

    def predict(self, pairs, batch_size=65536):
        """Predicted ratings, clipped to the scale (BatchNorm uses its running statistics)."""
        user_codes, item_codes = self._encode_pairs(pairs)
        self._handle_unseen(user_codes, item_codes, self.on_unseen)
        out = np.empty(len(user_codes))
        with threadpool_limits(limits=1, user_api="blas"):
            for start in range(0, len(user_codes), batch_size):
                part = slice(start, start + batch_size)
                out[part] = self.network_.forward(user_codes[part], item_codes[part], False)
        return self._clip(out)


def _check_fraction(value):
    if isinstance(value, bool) or not isinstance(value, float | int) or not 0 < value < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {value!r}.")
    return float(value)
