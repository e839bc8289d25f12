"""tunefarm's HTTP API: teams upload models, run jobs on the farm and share tuning records."""
