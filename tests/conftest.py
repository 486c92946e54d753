"""Shared fixtures. Importing dmi_tf first sets TF_USE_LEGACY_KERAS for every test."""

import dmi_tf  # noqa: F401
