"""Evaluation: metrics per task protocol, robustness perturbations, reports and plots."""
