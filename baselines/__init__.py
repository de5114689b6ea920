"""The classical image-age estimators, with scikit-learn's API.

* :class:`FridrichGoljanClassifier`: maximum-likelihood age from the residuals at known defects
  (Fridrich & Goljan, SPIE 7880, 2011), taking each image's noise level (``sigma``), exposure
  time and ISO as metadata;
* :class:`ResidualNaiveBayes`, :class:`ResidualSVM`: Naive Bayes and an RBF SVM on the same
  residuals (Jöchl & Uhl, IWDW 2020);
* :class:`DefectIdentifier`: finds the defects, and their onsets, from a device's trusted images
  (Jöchl & Uhl, ICIP 2021), returning a :class:`DefectTable`.

They need numpy, scipy, scikit-learn and :mod:`kernels` only: importing :mod:`baselines` loads
neither torch nor :mod:`pipeline`.
"""

from baselines.defects import DefectIdentifier, DefectTable
from baselines.fridrich_goljan import FridrichGoljanClassifier
from baselines.residual_classifiers import ResidualNaiveBayes, ResidualSVM

__all__ = [
    "DefectIdentifier",
    "DefectTable",
    "FridrichGoljanClassifier",
    "ResidualNaiveBayes",
    "ResidualSVM",
]
