"""Checkable instructions (`checks`): IFEval's verifiable instruction types as hard constraints."""

from aligner.checks.spec import MAX_CHECKS, Check, validate_checks

__all__ = ["MAX_CHECKS", "Check", "validate_checks"]
