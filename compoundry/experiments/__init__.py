"""Component-level A/B experiments: observations, statistics and the decision (pure), used by the flows."""
