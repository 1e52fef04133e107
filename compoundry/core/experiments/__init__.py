"""A/B experiments: two-sample statistics, the decision, which variants to deploy, the evaluation artifact."""
