"""Human studies of the paper's section 5, run on your own models and photos.

* :mod:`~gradcam.study.create`: render a class-discrimination study (5.1) or a trust study
  (5.2) into one SQLite study file;
* :mod:`~gradcam.study.store`: the study file (items, pictures, participants, answers);
* :mod:`~gradcam.study.server`: the participants' web pages (``gradcam study serve``);
* :mod:`~gradcam.study.report`: accuracy with Wilson intervals, Fleiss' kappa, trust scores;
* :mod:`~gradcam.study.simulate`: simulated participants who answer from the maps.

Examples:
    A class-discrimination study of 4 scenes, answered by 9 simulated participants:

    >>> from gradcam.study import (
    ...     create_class_discrimination, load_study_model, report, simulate, study_images)
    >>> shapes = load_study_model("shapes")
    >>> study = create_class_discrimination(
    ...     "study.db", study_images("synthetic", shapes, count=4), shapes, ["gradcam"])
    >>> len(study.items()), len(study.invite(20))  # 4 questions; 20 personal links for people
    (4, 20)
    >>> simulate(study, 9)  # answers stored
    36
    >>> scores = report(study, simulated=True).methods[0]
    >>> scores.method, scores.correct, scores.answers
    ('gradcam', 27, 36)
"""

from gradcam.study.create import (
    Category,
    StudyImage,
    create_class_discrimination,
    create_trust,
    load_study_model,
    study_images,
)
from gradcam.study.report import StudyReport, fleiss_kappa, report, wilson_interval, write_csv
from gradcam.study.simulate import simulate
from gradcam.study.store import AnswerNotSaved, StudyError, StudyStore, open_study

__all__ = [
    "AnswerNotSaved",
    "Category",
    "StudyError",
    "StudyImage",
    "StudyReport",
    "StudyStore",
    "create_class_discrimination",
    "create_trust",
    "fleiss_kappa",
    "load_study_model",
    "open_study",
    "report",
    "simulate",
    "study_images",
    "wilson_interval",
    "write_csv",
]
