"""Everything the campaign dashboard and the results API show, computed from the votes by `analysis/`.

`campaign_results(campaign, criterion=...)` returns a JSON-friendly dict:
  criteria           the campaign's criteria with their vote counts
  raters             rater quality table (analysis.rater_quality.rater_report + the platform's own flags)
  excluded_raters    raters left out of every number (when exclude_flagged)
  leaderboard        fit_bradley_terry on the chosen criterion, with each model's metric values
  win_rates          win_rate_matrix: rates and counts, in leaderboard order
  sd3                sd3_win_rates of one model against every other model on every criterion
  breakdowns         {"category": rows, "challenge": rows}, analysis.breakdowns.breakdown(method="win_rate")
  metrics            MetricResult values per model and their Spearman correlation with the human scores
  typography_ocr     OCR typography metrics per model beside the human typography scores, with their correlations
  progress           votes so far, image pairs answered, votes still needed to separate the top two
  decisions          analysis.decisions.campaign_decisions for every criterion, in plain words too
  style_control      the leaderboard with and without per-image style covariates, and their effects
  held_out           raters held for review and the leaderboard with and without their votes (held_out.py)
  fragility          per criterion, the fewest votes whose removal changes each decision (evalsite.dashboards.style);
                     "certified best" under the site's replayed rule comes from the Celery task
                     dashboards.refresh_fragility, with its state in "refresh" (current, stale or computing)
Numbers are exactly those of the analysis functions; nothing is recomputed here.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from django.core.cache import cache
from django.db.models import Count, Sum

from analysis.breakdowns import breakdown
from analysis.confidence_sequences import DEFAULT_ALPHA, MIXTURE_PRECISION
from analysis.decisions import (
    TOP_EVIDENCE_LOOK_EVERY,
    TOP_RULES,
    TopEvidenceReplay,
    campaign_decisions,
    top_rule_settings,
)
from analysis.leaderboard import fit_bradley_terry
from analysis.rater_quality import rater_report
from analysis.votes import count_pairs, vote_sequence
from analysis.win_rates import sd3_win_rates, win_rate_matrix
from evalsite.dashboards.data import counted_votes, quality_frame, votes_frame
from evalsite.dashboards.held_out import held_out_effect, with_reviews
from evalsite.dashboards.models import MetricResult
from evalsite.dashboards.style import fragility_for, fragility_in_request, fragility_latest_key, style_control_for
from evalsite.rating.models import Campaign, Criterion, ImagePair

BREAKDOWN_COLUMNS = ("category", "challenge")
CAMPAIGN_TOP_RULE = "rebalanced_ties_rho8"  # how a campaign's "top model certified" is decided (docs/dashboards.md)

DECISIONS_MEANING = (
    'A decision is a claim the votes already support at the stated confidence. "Top model certified" '
    'means the named model beats every other model; "ranking settled" means the higher of two neighbours '
    "in the ranking is truly the better one. With confidence {level}, the chance that the top-model claim "
    "is ever wrong is at most {alpha}, and the chance that any of the ranking claims together is ever wrong "
    "is at most {alpha}. These error rates hold although the rating engine chooses which pairs to show "
    "and this page is looked at after every vote (anytime-valid confidence sequences, not a fixed-sample "
    "test). An open decision shows the estimated votes still needed, assuming today's estimates are right. "
    'The top model is decided by the "{rule}" rule: one test of "this model is the best" per model, '
    "computed by replaying the counted votes in the order they were cast and looking after every "
    "{look_every}th of them, each vote's variance taken from the observed ties, so it needs no split of "
    "{alpha} over the rivals; the older Bonferroni rule (each "
    "rival at {alpha} divided by the number of rivals) is shown beside it for comparison. When a rater is "
    "flagged later, their votes leave the replayed history and the decision is computed again without them."
)


@dataclass
class ResultOptions:
    criterion: str  # criterion of the leaderboard, heat map and breakdowns
    exclude_flagged: bool = True  # leave flagged raters' votes out of every number
    alpha: float = DEFAULT_ALPHA  # error rate of the campaign decisions
    sd3_model: str | None = None  # model of the SD3-style chart (default: the leader)
    bootstrap_rounds: int = 100  # fit_bradley_terry bootstrap rounds
    project: bool = True  # estimate votes still needed (a simulation; slower)


def _clean(value):
    """numpy / pandas scalars -> JSON-friendly Python values (NaN -> None)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def win_rates_of(counted: pd.DataFrame, models: list[str]) -> dict:
    """win_rate_matrix as the heat map and the API show it: models, rates (None where no votes), counts."""
    rates, counts = win_rate_matrix(counted, models=models)
    return {
        "models": models,
        "rates": [[_clean(v) for v in row] for row in rates.to_numpy()],
        "counts": counts.to_numpy().astype(int).tolist(),
    }


def criteria_of(campaign: Campaign, votes: pd.DataFrame) -> list[str]:
    """The campaign's criteria in its own order, then any other criterion that has votes."""
    listed = [c for c in campaign.criteria if c in Criterion.values]
    extra = sorted(set(votes["criterion"]) - set(listed))
    return listed + extra


def _with_known_times(votes: pd.DataFrame) -> pd.DataFrame:
    """rater_report needs a time for every vote. A vote stored without one gets its rater's median time
    (which leaves the rater's median unchanged); if some rater has no time at all, speed is left out."""
    seconds = votes["seconds"]
    if not seconds.isna().any():
        return votes
    filled = seconds.fillna(seconds.groupby(votes["rater"]).transform("median"))
    if filled.isna().any():
        return votes.drop(columns="seconds")
    return votes.assign(seconds=filled)


def rater_table(campaign: Campaign, votes: pd.DataFrame) -> pd.DataFrame:
    """One row per rater: rater_report's measures and flags, plus the platform's flag (Rater.flagged) and the
    review of the suspicion checks (held and rejected raters count as flagged)."""
    return with_reviews(campaign, rater_table_of(votes, min_gold_accuracy=campaign.min_gold_accuracy))


def rater_table_of(votes: pd.DataFrame, *, min_gold_accuracy: float) -> pd.DataFrame:
    """rater_table for votes in the votes_frame schema from anywhere (a campaign, an imported votes export)."""
    if votes.empty:
        return pd.DataFrame(columns=["rater", "n_votes", "flagged", "reasons"])
    report = rater_report(_with_known_times(quality_frame(votes)), min_gold_accuracy=min_gold_accuracy).reset_index()
    platform = votes.groupby("rater")["rater_flagged"].any()
    report["platform_flagged"] = report["rater"].map(platform).fillna(False).astype(bool)
    report["analysis_flagged"] = report["flagged"].astype(bool)
    report["flagged"] = report["platform_flagged"] | report["analysis_flagged"]
    report["reasons"] = [
        ", ".join(filter(None, [r, "flagged on the platform" if p else ""]))
        for r, p in zip(report["reasons"], report["platform_flagged"], strict=True)
    ]
    report["median_seconds"] = report["rater"].map(votes.groupby("rater")["seconds"].median())
    report["simulated"] = report["rater"].map(votes.groupby("rater")["rater_simulated"].any()).astype(bool)
    report["participant"] = report["rater"].map(votes.groupby("rater")["participant"].first()).fillna("")
    return report.sort_values(["flagged", "rater"], ascending=[False, True])


def metric_values(campaign: Campaign) -> dict[str, dict[str, dict]]:
    """metric -> model name -> {value, n, details} for the campaign's run."""
    out: dict[str, dict[str, dict]] = {}
    for row in MetricResult.objects.filter(run=campaign.run).select_related("model"):
        out.setdefault(row.metric, {})[row.model.name] = {"value": row.value, "n": row.n, "details": row.details}
    return out


def _allowed_pairs(campaign: Campaign, models: list[str]) -> np.ndarray | None:
    """(K, K) bool: model pairs that still have image pairs under the votes-per-pair target.

    None (every pair allowed) when the campaign has no image pairs yet."""
    rows = list(
        ImagePair.objects.filter(campaign=campaign).values_list("model_a__name", "model_b__name", "assigned").order_by()
    )
    if not rows:
        return None
    index = {m: i for i, m in enumerate(models)}
    allowed = np.zeros((len(models), len(models)), dtype=bool)
    for a, b, assigned in rows:
        if a in index and b in index and assigned < campaign.votes_per_pair:
            allowed[index[a], index[b]] = allowed[index[b], index[a]] = True
    return allowed


def decisions_for(campaign: Campaign, counted: pd.DataFrame, options: ResultOptions) -> dict | None:
    """campaign_decisions on one criterion's counted votes (None when fewer than 2 models have votes); the top
    model by CAMPAIGN_TOP_RULE, replaying the counted votes in the order they were cast."""
    return decisions_of(
        counted,
        options.alpha,
        project=options.project,
        policy=campaign.pair_policy,
        allowed=lambda models: _allowed_pairs(campaign, models),
        min_votes_per_pair=campaign.min_votes_per_model_pair,
        top_rule=CAMPAIGN_TOP_RULE,
        resume_key=f"campaign-{campaign.pk}",
    )


def replayed_top_evidence(
    in_order: pd.DataFrame, models: list[str], top_rule: str, look_every: int, resume_key: str | None
) -> np.ndarray:
    """analysis.decisions.replay_top_evidence on counted votes in their order, resumed where it can be.

    With a resume_key the replay's state after its last look is kept in the default cache (under the key, the
    criterion, the models and the rule), with a fingerprint of the votes it had seen: ids, models and answers.
    A later call whose history starts with exactly those votes feeds only the new ones; any other history
    (a rater flagged, votes removed) is replayed from the start. Either way the result is bit-for-bit the full
    replay's (tested), so the cache only saves time: 1.2 s per criterion at 40,000 votes."""
    a, b, score = vote_sequence(in_order, models)
    ids = in_order["vote_id"].to_numpy(dtype=np.int64) if "vote_id" in in_order.columns else np.arange(len(a))

    def fingerprint(n: int) -> str:
        digest = hashlib.sha256()
        for column in (ids, a, b, score):
            digest.update(np.ascontiguousarray(column[:n]).tobytes())
        return digest.hexdigest()

    fresh = TopEvidenceReplay(len(models), look_every=look_every, **top_rule_settings(top_rule))
    if resume_key is None:
        return fresh.run(a, b, score)[0]
    criterion = str(in_order["criterion"].iloc[0]) if "criterion" in in_order.columns and len(in_order) else ""
    named = repr((resume_key, criterion, models, top_rule, look_every))
    key = "top-evidence:v1:" + hashlib.sha256(named.encode()).hexdigest()  # v1: the stored class's layout
    stored = cache.get(key)
    replay = fresh
    if stored is not None and stored["looked"] <= len(a) and stored["fingerprint"] == fingerprint(stored["looked"]):
        replay = stored["replay"]
    evidence = replay.run(a, b, score)[0]
    cache.set(key, {"looked": replay.looked, "fingerprint": fingerprint(replay.looked), "replay": replay}, 24 * 3600)
    return evidence


def decisions_of(
    counted: pd.DataFrame,
    alpha: float,
    *,
    project: bool = False,
    policy: str = "uniform",
    allowed=None,
    min_votes_per_pair: int = 0,
    top_rule: str = "bonferroni",
    look_every: int = TOP_EVIDENCE_LOOK_EVERY,
    resume_key: str | None = None,
) -> dict | None:
    """campaign_decisions on counted votes of one criterion from anywhere (None when fewer than 2 models).

    allowed: None, or a function of the model names giving campaign_decisions' `allowed` matrix.
    top_rule: "bonferroni" (the stateless rule, from today's counts) or "rebalanced" (one e-process per
    model, replayed over the counted votes in the order they were cast, by vote_id when the table has it,
    looking after every `look_every`-th counted vote: analysis.decisions.replay_top_evidence) or
    "rebalanced_ties" (the same, each vote's variance from the observed ties) or "rebalanced_ties_rho8" (the
    same with the mixtures' prior precision 8, analysis.decisions.top_rule_settings). The top
    model's "bonferroni" entry always gives the stateless rule's answer beside it. resume_key: keep the
    replay's state in the cache under this name (replayed_top_evidence); the numbers are the same without."""
    if top_rule not in TOP_RULES:
        raise ValueError(f"top_rule must be one of {TOP_RULES}, got {top_rule!r}")
    if counted.empty:
        return None
    pairs = count_pairs(counted)
    if pairs.n_models < 2:
        return None
    top_evidence, kept = None, {"tie_variance": False, "rho": MIXTURE_PRECISION}
    if top_rule != "bonferroni":
        kept = top_rule_settings(top_rule)
        in_order = counted.sort_values("vote_id", kind="stable") if "vote_id" in counted.columns else counted
        top_evidence = replayed_top_evidence(in_order, list(pairs.models), top_rule, look_every, resume_key)
    out = campaign_decisions(
        pairs.half_wins(),
        alpha,
        model_names=list(pairs.models),
        project=project,
        policy=policy,
        allowed=None if allowed is None else allowed(list(pairs.models)),
        min_votes_per_pair=min_votes_per_pair,
        top_evidence=top_evidence,
        ties=pairs.dense()[1] if kept["tie_variance"] else None,
        top_rho=kept["rho"],
    )
    out["top_rule"] = out["top_model"]["rule"] = top_rule
    out["top_evidence_look_every"] = None if top_rule == "bonferroni" else look_every
    out.pop("intervals", None)
    out["models"] = list(pairs.models)
    out["models_in_order"] = [out["models"][i] for i in out["order"]]
    return out


def progress_for(
    campaign: Campaign,
    votes: pd.DataFrame,
    counted_by_criterion: dict[str, pd.DataFrame],
    decisions: dict[str, dict | None],
) -> dict:
    pairs = ImagePair.objects.filter(campaign=campaign).aggregate(n=Count("id"), answered=Sum("answered"))
    per_criterion = []
    for criterion, counted in counted_by_criterion.items():
        decision = decisions.get(criterion)
        top_two = decision["neighbours"][0] if decision and decision["neighbours"] else None
        per_criterion.append(
            {
                "criterion": criterion,
                "votes": int((votes["criterion"] == criterion).sum()),
                "counted_votes": len(counted),
                "top_two": None
                if top_two is None
                else {
                    "higher": top_two["higher_name"],
                    "lower": top_two["lower_name"],
                    "settled": top_two["settled"],
                    "votes_still_needed": top_two["votes_still_needed"],
                },
                "top_model_votes_still_needed": None
                if decision is None
                else decision["top_model"]["votes_still_needed"],
            }
        )
    return {
        "votes": len(votes),
        "gold_votes": int(votes["is_gold"].astype(bool).sum()) if len(votes) else 0,
        "simulated_votes": int(votes["rater_simulated"].sum()) if len(votes) else 0,
        "raters": int(votes["rater"].nunique()) if len(votes) else 0,
        "image_pairs": pairs["n"] or 0,
        "image_pair_votes_target": (pairs["n"] or 0) * campaign.votes_per_pair,
        "image_pairs_answered": pairs["answered"] or 0,
        "per_criterion": per_criterion,
    }


def correlations(metrics: dict[str, dict[str, dict]], fit: pd.DataFrame | None) -> list[dict]:
    if fit is None or not metrics:
        return []
    from analysis.metrics import spearman_with_human  # imports torch: only when there are metrics to show

    human = fit["score"].to_dict()
    out = []
    for metric, by_model in metrics.items():
        corr = spearman_with_human(
            {m: v["value"] for m, v in by_model.items()},
            human,
            metric=metric,
            higher_is_better=MetricResult.HIGHER_IS_BETTER.get(metric, True),
        )
        out.append(
            {
                **corr.as_dict(),
                "label": MetricResult.Metric(metric).label if metric in MetricResult.Metric.values else metric,
            }
        )
    return out


def typography_ocr(
    metrics: dict[str, dict[str, dict]], typography_votes: pd.DataFrame | None, fit: pd.DataFrame | None = None
) -> dict | None:
    """The OCR metrics (MetricResult.TYPOGRAPHY) per model beside the human typography scores, and their
    Spearman correlations with them; None when the run has no OCR values. `fit`: the typography leaderboard
    when the page already fitted it; otherwise the typography votes are fitted here (point scores only)."""
    ocr = {m: metrics[m] for m in MetricResult.TYPOGRAPHY if m in metrics}
    if not ocr:
        return None
    if fit is None and typography_votes is not None and len(typography_votes):
        if count_pairs(typography_votes).n_models >= 2:
            fit = fit_bradley_terry(typography_votes, intervals="fisher")
    human = {} if fit is None else fit["score"].to_dict()
    models = sorted(
        {m for by_model in ocr.values() for m in by_model} | set(human), key=lambda m: (-human.get(m, -math.inf), m)
    )
    rows = [
        {
            "model": model,
            "score": _clean(human.get(model)),
            "votes": _clean(fit.loc[model, "votes"]) if fit is not None and model in fit.index else 0,
            **{m: (by_model[model]["value"] if model in by_model else None) for m, by_model in ocr.items()},
            "images": max((by_model[model]["n"] for by_model in ocr.values() if model in by_model), default=0),
        }
        for model in models
    ]
    return {"rows": rows, "correlations": correlations(ocr, fit) if fit is not None else []}


def campaign_results(campaign: Campaign, options: ResultOptions, votes: pd.DataFrame | None = None) -> dict:
    """The dashboard's numbers for one campaign (see the module docstring)."""
    votes = votes_frame(campaign) if votes is None else votes
    criteria = criteria_of(campaign, votes)
    raters, excluded, counted_by_criterion = counted_by_criterion_of(campaign, votes, options.exclude_flagged)
    counted = counted_by_criterion.get(options.criterion, votes.iloc[0:0])
    metrics = metric_values(campaign)

    fit = None
    leaderboard: list[dict] = []
    win_rates = None
    breakdowns: dict[str, list[dict]] = {}
    if len(counted) and count_pairs(counted).n_models >= 2:
        fit = fit_bradley_terry(counted, rounds=options.bootstrap_rounds)
        for entry in records(fit.reset_index()):
            model = entry["model"]
            entry["metrics"] = {m: by_model[model]["value"] for m, by_model in metrics.items() if model in by_model}
            leaderboard.append(entry)
        win_rates = win_rates_of(counted, list(fit.index))
        for column in BREAKDOWN_COLUMNS:
            breakdowns[column] = records(breakdown(counted, by=column, method="win_rate"))

    decisions = {c: decisions_for(campaign, counted_by_criterion[c], options) for c in criteria}

    sd3 = None
    sd3_model = options.sd3_model or (leaderboard[0]["model"] if leaderboard else None)
    if sd3_model is not None:
        per_criterion = {
            c: v
            for c, v in counted_by_criterion.items()
            if ((v["model_a"] == sd3_model) | (v["model_b"] == sd3_model)).any()
        }
        if per_criterion:
            sd3 = {"model": sd3_model, "rows": records(sd3_win_rates(per_criterion, sd3_model))}

    level = 1 - options.alpha
    return {
        "campaign": {"id": campaign.pk, "name": campaign.name, "run": campaign.run.name, "run_id": campaign.run_id},
        "criterion": options.criterion,
        "criteria": [
            {
                "criterion": c,
                "label": Criterion(c).label if c in Criterion.values else c,
                "votes": len(counted_by_criterion[c]),
            }
            for c in criteria
        ],
        "exclude_flagged": options.exclude_flagged,
        "excluded_raters": excluded,
        "raters": records(raters),
        "leaderboard": leaderboard,
        "fit": None if fit is None else {k: _clean(v) for k, v in fit.attrs.items()},
        "win_rates": win_rates,
        "sd3": sd3,
        "breakdowns": breakdowns,
        "metrics": {"values": metrics, "correlations": correlations(metrics, fit)},
        "typography_ocr": typography_ocr(
            metrics,
            counted_by_criterion.get(Criterion.TYPOGRAPHY),
            fit if options.criterion == Criterion.TYPOGRAPHY else None,
        ),
        "progress": progress_for(campaign, votes, counted_by_criterion, decisions),
        "decisions": {
            "alpha": options.alpha,
            "level": level,
            "meaning": DECISIONS_MEANING.format(
                level=f"{100 * level:.0f}%",
                alpha=f"{100 * options.alpha:.0f}%",
                look_every=TOP_EVIDENCE_LOOK_EVERY,
                rule=CAMPAIGN_TOP_RULE,
            ),
            "top_rule": CAMPAIGN_TOP_RULE,
            "by_criterion": [
                {"criterion": c, "label": Criterion(c).label if c in Criterion.values else c, "decision": decisions[c]}
                for c in criteria
            ],
        },
        "style_control": style_control_for(counted) if fit is not None else None,
        "held_out": held_out_effect(campaign, votes, raters, options.criterion, options.bootstrap_rounds),
        "fragility": [fragility_block(campaign, c, counted_by_criterion[c], options) for c in criteria],
    }


def fragility_block(campaign: Campaign, criterion: str, counted: pd.DataFrame, options: ResultOptions) -> dict:
    """One criterion's fragility as a request shows it: never the replay itself (see fragility_in_request)."""
    decisions, refresh = fragility_in_request(
        counted,
        options.alpha,
        CAMPAIGN_TOP_RULE,
        campaign_id=campaign.pk,
        criterion=criterion,
        exclude_flagged=options.exclude_flagged,
    )
    return {
        "criterion": criterion,
        "label": Criterion(criterion).label if criterion in Criterion.values else criterion,
        "decisions": decisions,
        "refresh": refresh,
    }


def refresh_fragility(campaign: Campaign, criterion: str, alpha: float, exclude_flagged: bool) -> list[dict] | None:
    """The Celery task `dashboards.refresh_fragility`'s body: the fragility of one criterion's decisions on the
    votes counted now (the replay of the site's rule included), kept in the shared cache for the next request."""
    votes = votes_frame(campaign, for_export=False)
    known = set(criteria_of(campaign, votes))
    if criterion not in known:
        raise ValueError(f"campaign {campaign.pk} has no criterion {criterion!r} (it has {', '.join(sorted(known))})")
    _, _, counted = counted_by_criterion_of(campaign, votes, exclude_flagged)
    latest_key = fragility_latest_key(campaign.pk, criterion, alpha, CAMPAIGN_TOP_RULE, exclude_flagged)
    return fragility_for(counted[criterion], alpha, CAMPAIGN_TOP_RULE, latest_key=latest_key)


def counted_by_criterion_of(
    campaign: Campaign, votes: pd.DataFrame, exclude_flagged: bool
) -> tuple[pd.DataFrame, list, dict[str, pd.DataFrame]]:
    """(rater table, excluded raters, counted votes per criterion) as every number of the campaign uses them."""
    raters = rater_table(campaign, votes)
    excluded = sorted(raters.loc[raters["flagged"], "rater"]) if exclude_flagged and len(raters) else []
    counted = {
        c: counted_votes(votes[votes["criterion"] == c], exclude_raters=excluded) for c in criteria_of(campaign, votes)
    }
    return raters, excluded, counted


def campaign_decisions_now(campaign: Campaign, options: ResultOptions, votes: pd.DataFrame | None = None) -> dict:
    """Only what is decided (the decisions of every criterion, without projections), the progress and the
    raters' flags: cheap enough to poll while a campaign runs."""
    votes = votes_frame(campaign, for_export=False) if votes is None else votes
    options = replace(options, project=False)
    raters, excluded, counted = counted_by_criterion_of(campaign, votes, options.exclude_flagged)
    decisions = {c: decisions_for(campaign, v, options) for c, v in counted.items()}
    return {
        "campaign": campaign.pk,
        "alpha": options.alpha,
        "top_rule": CAMPAIGN_TOP_RULE,
        "exclude_flagged": options.exclude_flagged,
        "excluded_raters": excluded,
        "by_criterion": [{"criterion": c, "decision": d} for c, d in decisions.items()],
        "progress": progress_for(campaign, votes, counted, decisions),
        "raters": records(raters[["rater", "participant", "simulated", "flagged", "reasons"]]) if len(raters) else [],
    }


def results_table(campaign: Campaign, *, exclude_flagged: bool = True, rounds: int = 100) -> pd.DataFrame:
    """The flat results export: one row per criterion and model with the leaderboard and metric values."""
    votes = votes_frame(campaign)
    _, _, counted_by_criterion = counted_by_criterion_of(campaign, votes, exclude_flagged)
    metrics = metric_values(campaign)
    blocks = []
    for criterion, counted in counted_by_criterion.items():
        if counted.empty or count_pairs(counted).n_models < 2:
            continue
        fit = fit_bradley_terry(counted, rounds=rounds).reset_index()
        fit.insert(0, "criterion", criterion)
        for metric, by_model in metrics.items():
            fit[metric] = fit["model"].map({m: v["value"] for m, v in by_model.items()})
        blocks.append(fit)
    columns = ["criterion", "model", "score", "lower", "upper", "rank", "votes", "win_rate", *metrics]
    if not blocks:
        return pd.DataFrame(columns=columns)
    return pd.concat(blocks, ignore_index=True)[columns]
