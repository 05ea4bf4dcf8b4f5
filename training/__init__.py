"""Training, cross-validation, evaluation and export for SlicerBrainBarriers (python -m brainbarriers_training)."""
