"""Model Breadcrumbs with TIES's sign consensus (mergekit `breadcrumbs_ties`): breadcrumbs' sparsification (drop the
largest `gamma` share, then the smallest, keeping `density`), then the sign election of TIES. No fast kernel:
mergekit merges every candidate."""
from __future__ import annotations

from evomerge.crossover.methods.breadcrumbs import Breadcrumbs


class BreadcrumbsTies(Breadcrumbs):
    mergekit_method = "breadcrumbs_ties"
    color = "#7B3F00"
