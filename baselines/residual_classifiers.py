"""Naive Bayes and SVM age classifiers on the residuals at identified defect locations.

Jöchl & Uhl (IWDW 2020) treat dating as multi-class classification of the vector of
median-filter residuals at the defect locations. Each estimator here fits an ordinary
scikit-learn pipeline (``impute → standardise → classifier``) and exposes it as ``pipeline_``;
a residual that could not be measured (clipped neighbourhood, NaN) is imputed with 0, the
healthy-pixel mean.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["ResidualNaiveBayes", "ResidualSVM", "SVM_PARAM_GRID"]

#: C and γ searched by inner cross-validation on the training split only.
SVM_PARAM_GRID = {"svc__C": [0.1, 1.0, 10.0, 100.0], "svc__gamma": ["scale", 0.01, 0.1, 1.0]}


def _imputer():
    return SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True)


class _ResidualClassifier(ClassifierMixin, BaseEstimator):
    """Shared fit/predict plumbing: validate, fit ``self._make_pipeline(y)``, delegate."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X, y):
        """Fit on residuals ``X`` (n_images, n_defects) and age classes ``y``."""
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        self.pipeline_ = self._make_pipeline(y).fit(X, y)
        return self

    def _X(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        # libsvm's predict_proba rejects read-only buffers (e.g. memory-mapped inputs)
        return np.require(X, requirements="W")

    def predict(self, X):
        """Predicted age class per image: the class of highest :meth:`predict_proba`.

        For the SVM this deliberately differs from ``SVC.predict`` (which votes on the decision
        function, and can disagree with its Platt-scaled probabilities): a report's predicted
        class always agrees with the probabilities printed beside it.
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def predict_proba(self, X):
        """Class probabilities, columns ordered as ``classes_``."""
        X = self._X(X)
        return self.pipeline_.predict_proba(X)


class ResidualNaiveBayes(_ResidualClassifier):
    """Gaussian Naive Bayes on defect residuals, with scaling.

    Parameters
    ----------
    var_smoothing : float, default 1e-9
        Passed to :class:`sklearn.naive_bayes.GaussianNB`.

    Attributes
    ----------
    classes_ : ndarray
    pipeline_ : sklearn.pipeline.Pipeline
        The fitted ``impute → StandardScaler → GaussianNB`` pipeline.

    Examples
    --------
    Residuals at five defect positions in 80 trusted images of two age classes; the first two
    defects appear between the classes, and one residual could not be measured (NaN):

    >>> import numpy as np
    >>> from sklearn.model_selection import cross_val_score
    >>> from baselines import ResidualNaiveBayes
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 40)
    >>> def residuals():
    ...     return rng.normal(size=(80, 5)) + 3.0 * y[:, None] * (np.arange(5) < 2)
    >>> X = residuals()
    >>> X[0, 3] = np.nan
    >>> nb = ResidualNaiveBayes().fit(X, y)
    >>> X_new = residuals()
    >>> proba = nb.predict_proba(X_new)
    >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1.0))
    ((80, 2), True)
    >>> float((nb.predict(X_new) == y).mean())
    1.0
    >>> cross_val_score(ResidualNaiveBayes(), X, y, cv=5).round(2)
    array([1., 1., 1., 1., 1.])
    """

    def __init__(self, var_smoothing: float = 1e-9):
        self.var_smoothing = var_smoothing

    def _make_pipeline(self, y):
        return Pipeline([("impute", _imputer()), ("scale", StandardScaler()),
                         ("nb", GaussianNB(var_smoothing=self.var_smoothing))])


class ResidualSVM(_ResidualClassifier):
    """RBF SVM on defect residuals, with scaling; C and γ chosen by inner cross-validation.

    Parameters
    ----------
    inner_folds : int, default 3
        Folds of the stratified inner cross-validation, run on the training split only;
        lowered to the smallest class size when a class has fewer images.
    param_grid : dict, optional
        Grid over the pipeline's ``svc__C`` and ``svc__gamma``; default :data:`SVM_PARAM_GRID`.
    random_state : int or None, default 0
        Seeds the inner folds' shuffling.
    n_jobs : int, optional
        Parallel jobs of the grid search (joblib; callers may select a Dask backend).

    Attributes
    ----------
    classes_ : ndarray
    best_params_ : dict
        The C and γ chosen by the inner cross-validation (empty when a class was too small
        for any inner CV and the defaults were used).
    pipeline_ : sklearn.calibration.CalibratedClassifierCV or sklearn.pipeline.Pipeline
        The chosen ``impute → StandardScaler → SVC`` pipeline refit on the whole training
        split, with Platt (sigmoid) probabilities from cross-validated decision values
        (``ensemble=False``). When a class has a single training image no calibration is
        possible: the bare pipeline is used and :meth:`predict_proba` is one-hot.

    Examples
    --------
    Residuals at five defect positions in 80 trusted images of two age classes; the first two
    defects appear between the classes:

    >>> import numpy as np
    >>> from baselines import ResidualSVM
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 40)
    >>> def residuals():
    ...     return rng.normal(size=(80, 5)) + 3.0 * y[:, None] * (np.arange(5) < 2)
    >>> svm = ResidualSVM(inner_folds=3).fit(residuals(), y)
    >>> sorted(svm.best_params_)                        # chosen by inner cross-validation
    ['svc__C', 'svc__gamma']
    >>> X_new = residuals()
    >>> proba = svm.predict_proba(X_new)                # Platt-calibrated
    >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1.0))
    ((80, 2), True)
    >>> float((svm.predict(X_new) == y).mean())
    1.0
    """

    def __init__(self, inner_folds: int = 3, param_grid: dict | None = None, random_state: int | None = 0,
                 n_jobs: int | None = None):
        self.inner_folds = inner_folds
        self.param_grid = param_grid
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X, y):
        """Choose C and γ by inner CV on ``(X, y)``, refit, and calibrate probabilities."""
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        pipe = Pipeline([("impute", _imputer()), ("scale", StandardScaler()), ("svc", SVC(kernel="rbf"))])
        folds = min(self.inner_folds, int(np.unique(y, return_counts=True)[1].min()))
        if folds < 2:
            self.best_params_ = {}
            self.pipeline_ = pipe.fit(X, y)
            return self
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        search = GridSearchCV(pipe, self.param_grid or SVM_PARAM_GRID, cv=cv, n_jobs=self.n_jobs).fit(X, y)
        self.best_params_ = search.best_params_
        chosen = clone(pipe).set_params(**search.best_params_)
        self.pipeline_ = CalibratedClassifierCV(chosen, method="sigmoid", cv=cv, ensemble=False).fit(X, y)
        return self

    def predict_proba(self, X):
        """Class probabilities (Platt-calibrated), columns ordered as ``classes_``."""
        X = self._X(X)
        if isinstance(self.pipeline_, Pipeline):
            return (self.pipeline_.predict(X)[:, None] == self.classes_[None, :]).astype(float)
        return self.pipeline_.predict_proba(X)
