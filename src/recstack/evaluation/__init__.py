"""Evaluation: metrics (vectorised over sparse matrices), the protocol runner and the HTML report."""

from recstack.evaluation.metrics import (
    RANKING_METRICS,
    RankingResult,
    auc,
    catalog_coverage,
    factorized_topk_accuracy,
    hits_matrix,
    intra_list_diversity,
    logloss,
    novelty,
    ranking_metrics,
)
from recstack.evaluation.protocols import (
    PROTOCOLS,
    evaluate_retriever,
    protocol_names,
    register_protocol,
    run_protocol,
)

__all__ = [
    "PROTOCOLS",
    "RANKING_METRICS",
    "RankingResult",
    "auc",
    "catalog_coverage",
    "evaluate_retriever",
    "factorized_topk_accuracy",
    "hits_matrix",
    "intra_list_diversity",
    "logloss",
    "novelty",
    "protocol_names",
    "ranking_metrics",
    "register_protocol",
    "run_protocol",
]
