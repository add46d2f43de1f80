"""Statistics for pairwise human-preference votes: plain numpy / scipy / pandas, no Django, Celery or model
code (numbers in, numbers out, usable from a notebook). Import each function from its module, e.g.
``from analysis.leaderboard import fit_bradley_terry``.

Where things live, lowest layer first (a module imports only modules above it in this list):

  votes.py                 the vote table: schema, checks (check_votes, require_columns), select_votes,
                           count_pairs -> PairCounts
  newton.py                the solver: batched damped Newton, constrained inverse, BLAS on one thread
  bradley_terry.py         the BT numerics on count matrices: bt_mle, bt_covariance, davidson_mle, ...,
                           check_wins, difference_information, the Elo scale (elo_score, ELO_PER_NAT)
  intervals.py             wilson_interval; Wald (Fisher / sandwich) and Poisson-bootstrap intervals
  leaderboard.py           fit_bradley_terry (the leaderboard of one criterion), predict_win_probability
  image_style.py           pixel covariates of one image: brightness, saturation, colourfulness, sharpness, text
  style_control.py         fit_style_control: the leaderboard with and without per-image covariates, their effects
  win_rates.py             win_rate_matrix, sd3_win_rates (empirical, no model)
  breakdowns.py            breakdown: results per prompt category, challenge or any column
  rater_quality.py         gold accuracy, speed, position bias, agreement, rater_report, flagged_raters
  suspicion.py             suspicious raters: join bursts, identical answer streams, one model favoured
  confidence_sequences.py  the anytime-valid boundary: log_evidence, confidence_radius, family_alphas
  pair_choice.py           which pair a rater sees next: choose_model_pair (the site's engine)
  votes_needed.py          how many more votes each open decision needs (project_votes_needed)
  decisions.py             what a campaign can claim now: campaign_decisions, explain (plain words)
  fragility.py             decision_fragility: the fewest votes whose removal changes each decision
  simulate.py              the one vote model (vote_model), simulated votes / raters / whole campaigns
  metrics.py               CLIP score, FID, rank agreement with humans (the only module that imports torch)
  typography.py            OCR typography: Tesseract reads images (read_text), character error rate,
                           exact-word match against the requested text (typography_scores)

tests/analysis/test_layers.py checks the import rules and that the module graph has no cycle.
"""
