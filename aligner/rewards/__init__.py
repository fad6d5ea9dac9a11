"""Reward objectives and models; see catalog.ObjectiveCatalog for the merged view."""

from aligner.rewards.base import BlockingRewardModel, Objective, RewardError, RewardModel
from aligner.rewards.catalog import ObjectiveCatalog, RewardsConfig, build_catalog

__all__ = [
    "BlockingRewardModel",
    "Objective",
    "ObjectiveCatalog",
    "RewardError",
    "RewardModel",
    "RewardsConfig",
    "build_catalog",
]
