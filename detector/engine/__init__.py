"""Training, validation and prediction engine."""
