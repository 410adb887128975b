"""Evaluation: confusion matrices, metrics with bootstrap intervals, inference, analysis tools."""
