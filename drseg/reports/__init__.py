"""drseg.reports: the paper's tables, figures and the report page (docs/reports.md).

- :mod:`drseg.reports.tables`: Tables 1-6 as LaTeX (booktabs), Markdown and CSV.
- :mod:`drseg.reports.figures`: training curves, per-class IoU, Fig. 5 and Fig. 7 from arrays.
- :mod:`drseg.reports.html`: the offline page ``reports/index.html``.
- :mod:`drseg.reports.mlflow_source`: the tables' numbers from the MLflow runs alone.
- :mod:`drseg.reports.report`: options from params and the whole report in one call.
- :mod:`drseg.reports.cli`: ``python -m drseg report``.
- :mod:`drseg.reports.dvc_template`: the offline ``dvc plots show`` template.
- :mod:`drseg.reports.spsd_figures`: the SPSD figures (Fig. 2 and Fig. 6; SPSD issue).

Reads metrics files or MLflow, never models.
"""
